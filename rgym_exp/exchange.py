"""Publishing this node's rollouts and gathering other nodes' from the folder.

Gathering costs one listing of the round's folder plus about J reads, however
many nodes the swarm has: files are visited in a seeded random order and
reading stops once enough groups are in hand. If the current round is thin,
up to MAX_STALENESS older rounds are looked at too. Every file is validated
(genrl.rollouts.decode_rollouts); whatever is wrong is counted by reason,
never raised.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from genrl.rollouts import DEFAULT_LIMITS, Limits, RolloutGroup, decode_rollouts, encode_rollouts
from rgym_exp.drive.layout import parse_rollout_name
from rgym_exp.drive.store import StoreError, TooLarge

log = logging.getLogger(__name__)


@dataclass
class Gathered:
    groups: list[RolloutGroup] = field(default_factory=list)
    files_listed: int = 0
    files_read: int = 0
    rounds: list[int] = field(default_factory=list)
    rejected: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        why = "; ".join(f"{n} x {reason}" for reason, n in self.rejected.most_common(4))
        return (f"{self.files_listed} peer file(s) listed, {self.files_read} read, "
                f"{len(self.groups)} valid group(s) from round(s) {self.rounds}"
                + (f"; rejected: {why}" if why else ""))


class RolloutExchange:
    def __init__(self, experiment, node_id: str, limits: Limits = DEFAULT_LIMITS):
        self.exp, self.node_id, self.limits = experiment, node_id, limits

    def publish(self, round_: int, groups: list[RolloutGroup], chunk: int | None = None) -> str:
        path = self.exp.layout.rollout(round_, self.node_id, chunk)
        self.exp.store.write(path, encode_rollouts(groups, self.node_id, round_, chunk or 0))
        return path

    def gather(self, round_: int, want: int, max_staleness: int,
               rng: np.random.Generator) -> Gathered:
        """Peer groups for a node that wants ``want`` of them (reads ~want files at most)."""
        out = Gathered()
        if want <= 0:
            return out
        max_reads = want + 2
        for r in range(round_, max(-1, round_ - max_staleness - 1), -1):
            out.rounds.append(r)
            entries = self.exp.store.list(self.exp.layout.rollouts_dir(r))
            files = []
            for entry in entries:
                parsed = parse_rollout_name(entry.name)
                if parsed is None:
                    out.rejected["not a rollout file name"] += 1
                elif parsed[0] != self.node_id and not entry.is_dir:
                    files.append((entry, parsed))
            out.files_listed += len(files)
            for k in rng.permutation(len(files)):
                if len(out.groups) >= 2 * want or out.files_read >= max_reads:
                    break
                entry, (node, chunk) = files[int(k)]
                if entry.size > self.limits.max_file_bytes:
                    out.rejected["file over the size cap"] += 1
                    continue
                self._read_one(r, node, chunk, out)
            if len(out.groups) >= want or out.files_read >= max_reads:
                break
        return out

    def _read_one(self, r: int, node: str, chunk, out: Gathered) -> None:
        path = self.exp.layout.rollout(r, node, chunk)
        out.files_read += 1          # every attempt counts: junk must not buy extra reads
        try:
            data = self.exp.store.read(path, self.limits.max_file_bytes)
        except TooLarge:
            out.rejected["file over the size cap"] += 1
            return
        except StoreError as exc:
            out.rejected["unreadable"] += 1
            log.debug("cannot read %s: %s", path, exc)
            return
        if data is None:
            return  # vanished since the listing (cleanup): not an error
        groups, reasons = decode_rollouts(data, expected_node=node, limits=self.limits)
        for reason in reasons:
            out.rejected[reason[:80]] += 1
        for group in groups:
            if group.round != r:
                out.rejected["file's round differs from its folder"] += 1
            else:
                out.groups.append(group)
