"""`python -m rgym_exp.status`: the swarm at a glance, from the shared folder alone.

Reads the round state and every peer record (rgym_exp/readers.py: one listing of
peers/ plus one read per node, one listing of the round's submissions) and prints the round,
its deadline and one row per node: role, model, round, heartbeat age, health,
last reward, latest held-out accuracy, external groups used, how many of its groups the
other nodes trained on and their mean reward (credit: the workers' running tallies in
their peer records, rgym_exp/credit.py; no extra request), how many files claiming to be
the node's were refused (unsigned, forged: rgym_exp/trust.py) by the nodes that read
them and by status itself, and phase; then one line per node with refused files, saying
why. Only signed records are shown. It never imports torch, so it starts in well under a
second.

Heartbeat age is measured on one clock where possible: the peer file's
modification time in the store listing (else the writer's ``updated_at``)
against this machine's clock. A node is *alive* while its heartbeat is younger
than 2 x HEARTBEAT_INTERVAL, *late* until PEER_TIMEOUT, *gone* after; a node
that recorded finished/stopped/failed shows that. The deadline is the
coordinator's: "deadline - updated_at" on its clock, minus the state file's
age on ours, so clocks that disagree do not matter (much).

``take_snapshot`` (folder -> Snapshot) and ``render`` (Snapshot -> text) are
separate so tests can check the rows without a terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

from rgym_exp.config import Config, default_gdrive_path
from rgym_exp.credit import from_peers
from rgym_exp.drive.layout import Layout
from rgym_exp.drive.backends import check_location, is_local, open_store
from rgym_exp.drive.store import Store, StoreError
from rgym_exp.readers import Peers, submitted
from rgym_exp.records import (ExperimentInfo, ExperimentMismatch, PeerRecord, RecordReader,
                              RoundState, read_info)
from rgym_exp.trust import MAX_SIGNERS, Trust

ENDED = ("finished", "stopped", "failed")
MAX_COUNT = 10 ** 9


@dataclass
class NodeRow:
    node_id: str
    role: str
    model: str
    round: int
    heartbeat_age: Optional[float]      # seconds since the peer file last changed
    health: str                         # alive | late | gone | finished | stopped | failed |
    #                                     unverified (registered; its record was refused)
    last_reward: Optional[float]
    external_used: Optional[int]
    phase: str
    host: str = ""
    last_eval: Optional[float] = None   # latest held-out accuracy
    used_by_peers: Optional[int] = None  # its groups other nodes trained on (credit.py)
    used_reward: Optional[float] = None  # their mean reward
    refused: int = 0                    # files claiming to be this node's that were refused


@dataclass
class Snapshot:
    experiment: str
    folder: str
    taken_at: float
    round: Optional[int] = None         # None: no round opened yet
    max_rounds: Optional[int] = None
    finished: bool = False
    deadline_in: Optional[float] = None  # seconds from now (negative: passed)
    waiting_for: list = field(default_factory=list)
    submitted: list = field(default_factory=list)  # node ids that submitted the current round
    nodes: list = field(default_factory=list)
    unreadable: int = 0                 # files that could not be parsed (not there yet)
    refused: dict = field(default_factory=dict)  # claimed node -> {reason: files refused}


def health(record: PeerRecord, age: Optional[float], heartbeat_interval: float,
           peer_timeout: float) -> str:
    if record.status in ENDED:
        return record.status
    if age is None:
        return "gone"
    if age < 2 * heartbeat_interval:
        return "alive"
    return "late" if age < peer_timeout else "gone"


def _registered(store: Store, layout: Layout, reader: RecordReader) -> set[str]:
    """Nodes with a key registration in keys/ that verifies (rgym_exp/trust.py)."""
    names = reader.trust.registered_nodes(layout.root)
    return {n for n in names if reader.trust.node_key(layout.root, n) or
            reader.trust.first_registered(layout.root, n)}


def _mtimes(store: Store, folder: str) -> dict[str, float]:
    return {e.name: e.mtime for e in store.list(folder) if not e.is_dir}


def take_snapshot(store: Store, experiment: str, heartbeat_interval: float = Config.HEARTBEAT_INTERVAL,
                  peer_timeout: float = Config.PEER_TIMEOUT, now: Optional[float] = None) -> Snapshot:
    """Everything the table shows, read from the folder. Raises StoreError."""
    layout, reader = Layout(experiment), RecordReader(store)
    now = time.time() if now is None else now
    snap = Snapshot(experiment=experiment, folder=store.description, taken_at=now)

    state = reader.read(RoundState, layout.state_file)
    if state is not None:
        snap.round, snap.max_rounds, snap.finished = state.round, state.max_rounds, state.finished
        snap.waiting_for = [n for n in state.waiting_for if isinstance(n, str)]
        state_mtime = _mtimes(store, os.path.dirname(layout.state_file)).get("current_state.json")
        if state_mtime and state.updated_at:
            snap.deadline_in = (state.deadline - state.updated_at) - (now - state_mtime)
        else:
            snap.deadline_in = state.deadline - now
        snap.submitted = sorted(submitted(store, layout, state.round))
        snap.waiting_for = [n for n in snap.waiting_for if n not in snap.submitted]  # state lags
    else:
        info = reader.read(ExperimentInfo, layout.experiment_file)
        snap.max_rounds = info.max_rounds if info else None

    views = Peers(store, layout, reader).refresh()
    for node, view in views.items():
        record = view.record
        changed = view.mtime or record.updated_at
        age = max(0.0, now - changed) if changed else None
        snap.nodes.append(NodeRow(
            node_id=node, role=record.role, model=record.model, round=record.round,
            heartbeat_age=age, health=health(record, age, heartbeat_interval, peer_timeout),
            last_reward=record.last_reward, external_used=record.external_used,
            phase=record.phase, host=record.host, last_eval=record.last_eval))
    for node in sorted(_registered(store, layout, reader) - set(views)):
        snap.nodes.append(NodeRow(      # registered, but its record read now was refused
            node_id=node, role="worker", model="", round=-1, heartbeat_age=None,
            health="unverified", last_reward=None, external_used=None,
            phase="its record failed verification"))
    snap.refused = refusals([v.record for v in views.values()], reader.trust.refused_by_signer())
    credit = from_peers({n: v.record for n, v in views.items()})
    for row in snap.nodes:
        row.refused = sum(snap.refused.get(row.node_id, {}).values())
        if row.role == "worker":
            got = credit.get(row.node_id)
            row.used_by_peers = got.used_by_others if got else 0
            row.used_reward = got.reward_mean if got else None
    snap.nodes.sort(key=lambda n: (n.role != "coordinator", n.node_id))
    snap.unreadable = reader.unreadable
    return snap


def refusals(records: list, own: dict) -> dict:
    """{claimed node: {reason: files}} refused by the nodes whose (signed) records say so,
    and by this reader (``own``); untrusted counts, bounded."""
    total: dict[str, dict] = {}
    for tally in [getattr(r, "refused", None) for r in records] + [own]:
        for node, reasons in list(tally.items())[:MAX_SIGNERS] if isinstance(tally, dict) else ():
            if not isinstance(node, str) or not isinstance(reasons, dict) or len(node) > 64:
                continue
            for reason, n in list(reasons.items())[:16]:
                if isinstance(reason, str) and type(n) is int and 0 < n <= MAX_COUNT:
                    mine = total.setdefault(node, {})
                    mine[reason[:60]] = min(mine.get(reason[:60], 0) + n, MAX_COUNT)
    return total


def refused_lines(snap: Snapshot, most: int = 8) -> list[str]:
    """One line per claimed node with refused files (the most first), saying why."""
    nodes = sorted(snap.refused, key=lambda n: (-sum(snap.refused[n].values()), n))
    lines = [f"refused files claiming to be {node}'s: {sum(snap.refused[node].values())} ("
             + ", ".join(f"{n} {why}" for why, n in sorted(snap.refused[node].items(),
                                                            key=lambda kv: -kv[1])) + ")"
             for node in nodes[:most]]
    if len(nodes) > most:
        lines.append(f"... and files claiming {len(nodes) - most} other name(s)")
    return lines


# --- text -------------------------------------------------------------------------------

def duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    s = int(round(abs(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def short_model(model: str) -> str:
    """'HuggingFaceTB/SmolLM2-135M-Instruct' -> 'SmolLM2-135M-Instruct'; paths -> last part."""
    return os.path.basename(model.rstrip("/")) or "-"


def round_line(snap: Snapshot) -> str:
    if snap.round is None:
        total = f" (of {snap.max_rounds})" if snap.max_rounds else ""
        return f"no round opened yet{total}: is the coordinator running?"
    total = f" of {snap.max_rounds}" if snap.max_rounds else ""
    if snap.finished:
        return f"round {snap.round}{total}: finished"
    when = (f"deadline in {duration(snap.deadline_in)}" if snap.deadline_in >= 0
            else f"deadline passed {duration(snap.deadline_in)} ago")
    return f"round {snap.round}{total}: running, {when} (coordinator's clock)"


def render(snap: Snapshot) -> str:
    """The snapshot as the text the CLI prints (a pure function; no blank lines, so
    --watch blocks in a log are separated by one)."""
    lines = [f"experiment {snap.experiment} in {snap.folder}", round_line(snap)]
    if snap.round is not None and not snap.finished:
        lines.append(f"submitted round {snap.round}: {', '.join(snap.submitted) or '-'}; "
                     f"waiting for: {', '.join(snap.waiting_for) or '-'}")
    header = ("NODE", "ROLE", "MODEL", "ROUND", "HEARTBEAT", "HEALTH", "REWARD", "HELD-OUT",
              "EXT USED", "USED BY PEERS", "THEIR REWARD", "REFUSED", "PHASE")
    rows = [header] + [(
        n.node_id, n.role, short_model(n.model) if n.model else "-",
        str(n.round) if n.round >= 0 else "-",
        f"{duration(n.heartbeat_age)} ago" if n.heartbeat_age is not None else "-", n.health,
        f"{n.last_reward:.3f}" if n.last_reward is not None else "-",
        f"{n.last_eval:.3f}" if n.last_eval is not None else "-",
        str(n.external_used) if n.external_used is not None else "-",
        str(n.used_by_peers) if n.used_by_peers is not None else "-",
        f"{n.used_reward:.3f}" if n.used_reward is not None else "-", str(n.refused),
        n.phase or "-") for n in snap.nodes]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]
    if not snap.nodes:
        lines.append("(no node has registered yet)")
    counts = {h: sum(n.health == h for n in snap.nodes) for h in ("alive", "late", "gone") + ENDED}
    lines.append(f"{len(snap.nodes)} node(s): " + ", ".join(f"{v} {k}" for k, v in counts.items()
                                                           if v or k in ("alive", "late", "gone"))
                 + (f"; {snap.unreadable} unreadable file(s) skipped" if snap.unreadable else ""))
    return "\n".join(lines + refused_lines(snap))


# --- command line ------------------------------------------------------------------------

class Usage(Exception):
    """A problem with the arguments or the folder; printed as one line, exit 2."""


def env_seconds(name: str) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        return float(raw) if raw else float(getattr(Config, name))
    except ValueError:
        raise Usage(f"{name}={raw!r} is not valid: expected a number of seconds") from None


def open_experiment(gdrive_path: str, experiment: str, credentials: str = "",
                    endpoint: str = "") -> Store:
    """The store of an existing experiment; Usage when the folder or experiment is missing."""
    if not gdrive_path:
        raise Usage("no folder given: set GDRIVE_PATH or pass --gdrive-path")
    try:
        layout = Layout(experiment)
    except ValueError as exc:
        raise Usage(str(exc)) from None
    try:
        gdrive_path = check_location(gdrive_path, "--gdrive-path")
    except ValueError as exc:
        raise Usage(str(exc)) from None
    if is_local(gdrive_path):
        if not os.path.isdir(gdrive_path):  # open_store would create it
            raise Usage(f"folder {gdrive_path} does not exist (set GDRIVE_PATH or --gdrive-path;"
                        " on Colab, mount Drive first)")
    try:
        store = open_store(gdrive_path, credentials, endpoint)
        names = [e.name for e in store.list(os.path.dirname(layout.root)) if e.is_dir]
    except (StoreError, ImportError, ValueError) as exc:
        raise Usage(f"cannot open {gdrive_path}: {exc}") from None
    if experiment not in names:
        raise Usage(f"no experiment {experiment!r} in {gdrive_path}; found: "
                    f"{', '.join(names) or 'none'}")
    try:
        read_info(store, layout, Trust(store))     # a folder of an older, unsigned protocol?
    except ExperimentMismatch as exc:
        raise Usage(str(exc)) from None
    return store


def add_folder_args(parser: argparse.ArgumentParser) -> None:
    """--gdrive-path, --experiment, --credentials, --endpoint (env vars as defaults)."""
    env = os.environ.get
    parser.add_argument("--gdrive-path", default=env("GDRIVE_PATH", "") or default_gdrive_path(),
                        help="shared folder, gdrive://<folder-id>, gs:// or s3://BUCKET/PREFIX "
                        "(default: $GDRIVE_PATH, else "
                        "the launcher's: the Colab Drive folder or ./swarm_data)")
    parser.add_argument("--experiment", default=env("EXPERIMENT_NAME", "") or Config.EXPERIMENT_NAME,
                        help="experiment name (default: $EXPERIMENT_NAME, else rl-swarm)")
    parser.add_argument("--credentials", default=env("GDRIVE_CREDENTIALS", ""),
                        help="for gdrive:// paths (default: $GDRIVE_CREDENTIALS)")
    parser.add_argument("--endpoint", default=env("GDRIVE_API_ENDPOINT", ""),
                        help="for gdrive:// paths (default: $GDRIVE_API_ENDPOINT)")


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rgym_exp.status", description=__doc__.split(
        "\n")[0])
    add_folder_args(parser)
    parser.add_argument("--watch", nargs="?", type=float, const=5.0, default=None, metavar="SECONDS",
                        help="refresh every SECONDS (default 5) until Ctrl-C")
    parser.add_argument("--count", type=int, default=0, help="with --watch: stop after this many "
                        "refreshes (0: until Ctrl-C)")
    parser.add_argument("--json", action="store_true", help="print a machine-readable snapshot")
    args = parser.parse_args(argv)
    try:
        beat, timeout = env_seconds("HEARTBEAT_INTERVAL"), env_seconds("PEER_TIMEOUT")
        store = open_experiment(args.gdrive_path, args.experiment, args.credentials, args.endpoint)
    except Usage as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tty, shown = sys.stdout.isatty(), 0
    try:
        while True:
            try:
                snap = take_snapshot(store, args.experiment, beat, timeout)
                text = (json.dumps(asdict(snap), indent=None if args.watch else 2) if args.json
                        else render(snap))
            except StoreError as exc:
                if args.watch is None:
                    print(f"error: {exc}", file=sys.stderr)
                    return 1
                text = f"(folder not readable this time: {exc})"
            if args.watch is None:
                print(text)
                return 0
            if tty and not args.json:
                sys.stdout.write("\x1b[H\x1b[2J" + text + "\n")
            else:
                sys.stdout.write(("" if shown == 0 or args.json else "\n") + text + "\n")
            sys.stdout.flush()
            shown += 1
            if args.count and shown >= args.count:
                return 0
            time.sleep(max(0.1, args.watch))
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `status | head`
        sys.stdout = open(os.devnull, "w")
        return 0


if __name__ == "__main__":
    sys.exit(main())
