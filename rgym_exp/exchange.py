"""Publishing this node's rollouts and gathering peers' groups from the folder.

Publishing: one file per round (or one per generation batch) whose name carries how
many of its groups have reward signal: the sender's claim, untrusted, which lets a
receiver choose what to read from a listing alone.

Gathering, for a node that wants J groups (DESIGN.md, "One round", step 4):
* Every visible peer file offers one *slot* per group it claims has signal (a file
  without a claim offers one). Slots are taken in a seeded random order, so each
  claimed group has the same chance: sampling is uniform over the swarm's groups, not
  over its files. A file is read when one of its slots first comes up; its groups are
  validated, then judged by the ExternalSelector (re-scored, never used before...), and
  its slots take its usable groups in random order.
* Reading stops at J usable groups or when the read budget is spent. The budget is a
  small multiple of J, never of the swarm's size: one listing per look at a round plus
  at most ``budget`` reads, however many nodes publish.
* The current round comes first. While it offers fewer than J usable groups the node
  waits, up to ``wait_s``, polling the listing with jitter, for peers' files to appear
  (but not once every peer that published last round has published this one: nothing
  more is coming); then it falls back to up to ``max_staleness`` older rounds. Listings
  lag writes (Drive's by seconds), so last round is listed again after a wait: files it
  hid at the first look count too.
* A sender whose file holds fewer usable-or-used groups than its name claims loses its
  claims for the rest of the run (its files offer one slot), so lying buys nothing.
* Never twice: the selector remembers the groups this node trained on; after a restart
  ``recall_used`` reads them back from the node's own submissions (each lists them).

Every file is verified first (signed by the node its name says: rgym_exp/trust.py; a
refused file costs its read but never its claimed sender's claims), then validated
(genrl.rollouts.decode_rollouts); whatever is wrong is counted by reason, never raised.
The coordinator publishes no rollouts: files under its name are skipped.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from genrl.rollouts import DEFAULT_LIMITS, Limits, RolloutGroup, decode_rollouts, encode_rollouts
from genrl.sapo import ExternalSelector, ScoredGroup, has_signal
from rgym_exp.drive.layout import parse_rollout_name
from rgym_exp.drive.store import StoreError, TooLarge
from rgym_exp.records import Submission
from rgym_exp.trust import Refused

log = logging.getLogger(__name__)
READ_BUDGET_PER_GROUP = 2      # reads per wanted group, at most (bench/exchange.py)


@dataclass
class Gathered:
    groups: list[ScoredGroup] = field(default_factory=list)   # the chosen ones, <= J
    listings: int = 0
    files_listed: int = 0
    files_read: int = 0
    waited_s: float = 0.0
    rounds: list[int] = field(default_factory=list)            # rounds looked at
    rejected: Counter = field(default_factory=Counter)
    broken_claims: int = 0

    def ages(self, round_: int) -> list[int]:
        return [round_ - g.round for g in self.groups]

    def summary(self) -> str:
        why = "; ".join(f"{n} x {reason}" for reason, n in self.rejected.most_common(4))
        return (f"{len(self.groups)} group(s) from round(s) {sorted({g.round for g in self.groups})}"
                f" after {self.files_read} read(s) of {self.files_listed} peer file(s) listed"
                + (f", {self.waited_s:.0f}s waiting for peers" if self.waited_s >= 0.5 else "")
                + (f"; rejected: {why}" if why else ""))


@dataclass
class _File:
    path: str
    node: str
    round: int
    slots: int
    claimed: int | None
    groups: list[ScoredGroup] | None = None      # usable groups, once read


class RolloutExchange:
    def __init__(self, experiment, node_id: str, limits: Limits = DEFAULT_LIMITS,
                 clock=time.monotonic):
        self.exp, self.node_id, self.limits, self.clock = experiment, node_id, limits, clock
        self.distrusted: set[str] = set()       # nodes whose claims proved false
        self.recalled: set[int] = set()         # rounds whose used groups the selector knows

    def recall_used(self, round_: int, selector: ExternalSelector, max_staleness: int) -> None:
        """Make ``selector`` know every external group this node trained on that round
        ``round_`` could offer again: after a restart, from this node's own submissions of
        the last ``max_staleness`` rounds (each lists its groups); and forget older ones."""
        first = round_ - max_staleness
        for r in range(max(0, first), round_):
            if r in self.recalled:
                continue
            self.recalled.add(r)
            sub = self.exp.reader.read(Submission, self.exp.layout.submission(r, self.node_id))
            for item in (sub.external if sub is not None else []):
                if isinstance(item, dict) and isinstance(item.get("key"), str) \
                        and type(item.get("round")) is int:
                    selector.used[item["key"]] = item["round"]
        selector.forget_before(first)
        self.recalled = {r for r in self.recalled if r >= first}

    def publish(self, round_: int, groups: list[RolloutGroup], chunk: int | None = None) -> str:
        signal = sum(has_signal(g.rewards) for g in groups)
        path = self.exp.layout.rollout(round_, self.node_id, chunk, signal)
        self.exp.trust.write(path, encode_rollouts(groups, self.node_id, round_, chunk or 0))
        return path

    def gather(self, round_: int, want: int, selector: ExternalSelector, rng: np.random.Generator,
               waiter=None, wait_s: float = 0.0, max_staleness: int = 0,
               poll_s: float = 5.0) -> Gathered:
        """Up to ``want`` usable peer groups: current round first (waiting up to
        ``wait_s`` for it to fill), then older rounds; see the module doc."""
        out = Gathered()
        if want <= 0:
            return out
        selector.start_round()
        budget = READ_BUDGET_PER_GROUP * want
        known: dict[str, _File] = {}
        older = self._look(round_ - 1, known, out, rng) if round_ > 0 else []
        expected = {f.node for f in known.values()}   # who published last round
        if max_staleness < 1:
            older = []
        start = self.clock()
        delay = min(1.0, poll_s)
        while True:
            self._take(self._look(round_, known, out, rng), want, budget, selector, rng, out)
            left = start + wait_s - self.clock()
            published = {f.node for f in known.values() if f.round == round_}
            if (len(out.groups) >= want or out.files_read >= budget or left <= 0 or waiter is None
                    or (expected and expected <= published)):
                break          # enough, or nothing more to wait for: last round's peers are in
            waiter.pause(min(left, delay * random.uniform(0.6, 1.0)))
            delay = min(poll_s, delay * 1.6)
        out.waited_s = self.clock() - start
        if round_ > 0 and max_staleness >= 1 and out.waited_s > 0 and len(out.groups) < want:
            older += self._look(round_ - 1, known, out, rng)   # what the listing lag hid
        self._take(older, want, budget, selector, rng, out)
        for r in range(round_ - 2, max(-1, round_ - max_staleness - 1), -1):
            if len(out.groups) >= want or out.files_read >= budget:
                break
            self._take(self._look(r, known, out, rng), want, budget, selector, rng, out)
        selector.mark_used(out.groups)
        return out

    def _look(self, r: int, known: dict, out: Gathered, rng) -> list[tuple[_File, int]]:
        """List round r; the slots of files not seen before, in random order."""
        if r not in out.rounds:
            out.rounds.append(r)
        out.listings += 1
        try:
            entries = self.exp.store.list(self.exp.layout.rollouts_dir(r))
        except StoreError as exc:
            out.rejected["round folder could not be listed"] += 1
            log.debug("cannot list round %d: %s", r, exc)
            return []
        slots, info = [], getattr(self.exp, "info", None)
        for entry in entries:
            parsed = parse_rollout_name(entry.name)
            if parsed is None:
                out.rejected["not a rollout file name"] += 1
                continue
            node, chunk, claimed = parsed
            path = self.exp.layout.rollout(r, node, chunk, claimed)
            if node == self.node_id or entry.is_dir or path in known:
                continue
            if info is not None and node == info.coordinator:
                out.rejected["under the coordinator's name (it publishes none)"] += 1
                known[path] = _File(path, node, r, 0, claimed, [])
                continue
            if entry.size > self.limits.max_file_bytes:
                out.rejected["file over the size cap"] += 1
                known[path] = _File(path, node, r, 0, claimed, [])
                continue
            trusted = claimed is not None and node not in self.distrusted
            f = known[path] = _File(path, node, r, claimed if trusted else 1, claimed)
            out.files_listed += 1
            slots += [(f, k) for k in range(f.slots)]
        order = rng.permutation(len(slots))
        return [slots[int(i)] for i in order]

    def _take(self, slots, want: int, budget: int, selector: ExternalSelector, rng,
              out: Gathered) -> None:
        """Walk the slots: read each file at its first slot, take its usable groups."""
        for f, k in slots:
            if len(out.groups) >= want:
                return
            if f.groups is None:
                if out.files_read >= budget:
                    return
                f.groups = self._read(f, selector, rng, out)
            if k < len(f.groups):
                out.groups.append(f.groups[k])

    def _read(self, f: _File, selector: ExternalSelector, rng, out: Gathered) -> list[ScoredGroup]:
        out.files_read += 1          # every attempt counts: junk must not buy extra reads
        try:
            data = self.exp.store.read(f.path, self.limits.max_file_bytes)
        except TooLarge:
            out.rejected["file over the size cap"] += 1
            return []
        except StoreError as exc:
            out.rejected["unreadable"] += 1
            log.debug("cannot read %s: %s", f.path, exc)
            return []
        if data is None:
            return []  # vanished since the listing (cleanup): not an error
        try:
            data = self.exp.trust.open(f.path, data)
        except Refused as exc:
            out.rejected[f"refused: {exc.reason}"[:80]] += 1
            return []
        except ValueError as exc:       # torn, or no JSON at all
            out.rejected[str(exc)[:80]] += 1
            return []
        groups, reasons = decode_rollouts(data, expected_node=f.node, limits=self.limits)
        for reason in reasons:
            out.rejected[reason[:80]] += 1
        usable, accounted = [], 0
        for group in groups:
            if group.round != f.round:
                out.rejected["file's round differs from its folder"] += 1
                continue
            used_before = selector.used_before
            scored = selector.consider(group)
            accounted += scored is not None or selector.used_before > used_before
            if scored is not None:
                usable.append(scored)
        if f.claimed is not None and accounted < f.claimed and f.node not in self.distrusted:
            out.broken_claims += 1
            self.distrusted.add(f.node)
            log.info("peer %s's file %s claims %d group(s) with signal but holds %d: its claims "
                     "are ignored from now on", f.node, f.path.rsplit("/", 1)[-1], f.claimed,
                     accounted)
        return [usable[int(i)] for i in rng.permutation(len(usable))]
