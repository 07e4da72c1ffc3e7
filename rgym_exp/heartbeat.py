"""A node's peer record: registration, heartbeat, and one writer per NODE_ID.

The record ``peers/{node_id}.json`` carries a ``beat`` counter that grows at
every heartbeat. Others judge liveness by seeing it change on their own clock,
so a node whose clock is minutes off is still judged correctly. The record is
written once per heartbeat interval, never more often: a change of phase or
round waits for the next beat (every write costs a request, and Drive limits
them per minute).

Two processes with the same NODE_ID racing to start: each creates the marker
``.claims/{node_id}.{beat}`` with the store's exclusive create; the loser
refuses to start (atomic on buckets and local folders, best effort on Drive).
Otherwise, at start, a node that finds a running
record of another session watches it; if its beat advances, the newcomer
refuses to start (``DuplicateNode``). If it does not (the old process died),
the newcomer takes over. A running node checks its record before it writes a
shared file (``ensure_owner``) and before each beat; once another session has
taken the record over it stops and writes nothing more -- no rollout,
submission, checkpoint, log copy or final record -- so a file never keeps two
writers. The check reads the record only when it can have changed hands: a
takeover needs 2.5 intervals in which the newcomer saw no beat, so a process
whose own last beat was written less than 1.5 intervals ago still holds the
node. A frozen process (its last beat is old) therefore always reads first; and
every ``VERIFY_BEATS`` beats it reads anyway, in case the newcomer's view of
the folder was stale.

NODE_IDs are unique regardless of case (Drive matches names case-insensitively,
so ``Alice`` and ``alice`` would share files): a node whose NODE_ID differs from
a registered one only in case refuses to start.

Keys (rgym_exp/trust.py). At its start a worker registers its key in keys/ (once) and
looks which key registered its NODE_ID first: another machine's means the NODE_ID is
taken (exit 2) -- unless this machine's own trust file says it registered the NODE_ID
here, when the older registration is an impostor's made after ours was removed (counted,
warned, ignored). The record is signed with the node's key, and only records that verify
with it count: only a process holding the same key file can continue or take over the
NODE_ID. Anything else at the path (unsigned, forged, signed by another key, too deep) is
refused: it can neither keep a node from starting nor stop a running one. Names that
differ only in case count only when they are registered.

Every ``PRESENCE_BEATS`` beats, once experiment.json was checked, the heartbeat
looks at it: missing at ``GONE_LOOKS`` looks in a row, the experiment folder has
vanished, and the node stops (exit 5) without writing anything more; the
coordinator writes back an experiment.json (and a state file) replaced by one it did not
sign.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import replace

from rgym_exp.records import RECORD_MAX_BYTES, PeerRecord, write_record
from rgym_exp.drive.store import MountLost, StoreError
from rgym_exp.trust import fingerprint
from rgym_exp.waiting import Waiter

log = logging.getLogger(__name__)
MIN_WATCH = 5.0  # seconds a newcomer watches a running record before it may take it over
FRESH_BEATS = 1.5  # our last beat younger than this many intervals: no takeover can have happened
VERIFY_BEATS = 4   # ... but read the record at least every this many intervals anyway
PRESENCE_BEATS = 2  # experiment.json looked at every this many beats ...
GONE_LOOKS = 2      # ... missing at this many looks in a row: the experiment folder vanished
EXIT_GONE = 5


class DuplicateNode(RuntimeError):
    """Another live process uses this NODE_ID."""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


class Heartbeat:
    def __init__(self, experiment, node_id: str, role: str, interval: float, waiter: Waiter,
                 model: str = ""):
        self.exp, self.interval, self.waiter = experiment, interval, waiter
        self.path = experiment.layout.peer(node_id)
        self.record = PeerRecord(node_id=node_id, role=role, session=uuid.uuid4().hex[:12], beat=0,
                                 status="starting", host=socket.gethostname(), pid=os.getpid(),
                                 model=model, started_at=time.time(), interval=interval)
        self._lock = threading.RLock()
        self._written_at = -float("inf")     # monotonic: our last successful write
        self._verified_at = -float("inf")    # monotonic: our last read of the record
        self._thread = None
        self._done = threading.Event()
        self.taken_over = threading.Event()
        self.gone = False                    # the experiment folder vanished
        self._presence = [0, 0]              # beats since the last look, looks missing in a row
        self.on_presence = None              # coordinator: called at each look (its state file)

    def _read(self):
        """The record, if it is signed with this node's key (anything else reads as None)."""
        record = self.exp.reader.read(PeerRecord, self.path)
        self._verified_at = time.monotonic()
        return record

    def _first_key(self) -> str:
        """The key of this NODE_ID's first registration (this node's, written now if it was
        not there); the coordinator's is the one pinned in experiment.json."""
        trust, root = self.exp.trust, self.exp.layout.root
        if self.record.role == "coordinator":
            pinned = trust.coordinator(root)
            return pinned[1] if pinned else trust.keys.public
        return trust.register(root)

    def _check_case(self) -> None:
        """Refuse a NODE_ID that differs from a registered one only in case."""
        me, root = self.record.node_id, self.exp.layout.root
        for other in sorted(self.exp.trust.registered_nodes(root)):
            if other != me and other.casefold() == me.casefold() and \
                    self.exp.trust.first_registered(root, other) is not None:
                raise DuplicateNode(
                    f"NODE_ID {me} differs from the registered node {other} only in case; Drive "
                    "matches names ignoring case, so both would share files. Use another NODE_ID")

    def _watch(self, other: PeerRecord) -> None:
        """DuplicateNode if ``other``'s heartbeat advances while we watch it."""
        # long enough to see a live writer beat even when a write is being retried
        watch = max(2.5 * max(self.interval, other.interval), MIN_WATCH)
        log.info("NODE_ID %s has a running record (host %s, pid %d); watching its heartbeat "
                 "for %.0fs", other.node_id, other.host, other.pid, watch)
        end = time.monotonic() + watch
        while time.monotonic() < end:
            self.waiter.pause(min(1.0, self.interval / 4))
            now = self._read()
            if now is not None and now.session == other.session and now.beat != other.beat:
                raise DuplicateNode(
                    f"NODE_ID {other.node_id} is already in use by a running process (host "
                    f"{other.host}, pid {other.pid}): its heartbeat is advancing. Stop that "
                    "process, or give this one another NODE_ID")

    def _previous(self):
        """The record this process continues from (None: a first start), after refusing
        to start where another live process or another machine's key holds NODE_ID."""
        trust, root = self.exp.trust, self.exp.layout.root
        first = self._first_key()
        if first != trust.keys.public:
            if not trust.registered_here(root):
                raise DuplicateNode(
                    f"NODE_ID {self.record.node_id} is registered with another key "
                    f"({fingerprint(first)}...) than this machine's ({trust.keys.path}, "
                    f"{fingerprint(trust.keys.public)}...): copy the key file of the machine "
                    "that registered it here to continue that node, or use another NODE_ID")
            trust.count(self.record.node_id, "registered by another key")
            log.warning("keys/ holds an older registration of %s with another key (%s) than "
                        "the one this machine registered (%s): ours was removed; this node "
                        "goes on with its own key, which every node that saw it keeps",
                        self.record.node_id, fingerprint(first), fingerprint(trust.keys.public))
        other = self._read()              # this node's last record: signed with its key
        if other is None:
            return None
        running = other.session != self.record.session and other.status in ("starting", "running")
        if running:
            if other.host == self.record.host and not pid_alive(other.pid):
                log.info("NODE_ID %s: the previous process (pid %d) is gone; continuing as this "
                         "node", other.node_id, other.pid)
            else:
                self._watch(other)
                log.info("NODE_ID %s: the previous session stopped without closing; taking over",
                         other.node_id)
        return other

    def claim(self) -> None:
        """Register this process as the node's only writer (see module doc)."""
        self._check_case()
        other = self._previous()
        with self._lock:
            self.record.beat = max((other.beat + 1) if other is not None else 0,
                                   self.exp.trust.claimed(self.exp.layout.root) + 1)
            if other is not None and other.role == self.record.role:
                self.record.used_from = other.used_from   # credit tallies go on (credit.py)
            marker = self.exp.layout.claim(self.record.node_id, self.record.beat)
            if not self.exp.store.create_exclusive(marker, self.record.session.encode()):
                raise DuplicateNode(
                    f"NODE_ID {self.record.node_id} was claimed by another process at the same "
                    f"moment ({marker} exists). Stop that process, or give this one another "
                    "NODE_ID")
            self.record.status = "running"
            self.record.updated_at = time.time()
            write_record(self.exp.trust, self.path, self.record)
            self.exp.trust.remember_own(self.exp.layout.root, self.record.beat)
            self._written_at = time.monotonic()

    def update(self, **fields) -> None:
        """Change what the record says (phase, round, reward...); written at the next beat."""
        with self._lock:
            self.record = replace(self.record, **fields)

    def _lost(self, current) -> bool:
        """True (and a stop is requested) if ``current`` shows another session took over."""
        if self.taken_over.is_set():
            return True
        if current is not None and current.session != self.record.session \
                and current.beat >= self.record.beat:
            self.taken_over.set()
            self.waiter.request_stop(
                f"another process (host {current.host}, pid {current.pid}) took over NODE_ID "
                f"{current.node_id}; this one stops so the node keeps a single writer")
            self._done.set()
            return True
        return False

    def _may_have_lost(self) -> bool:
        """Whether the record can have changed hands since we last knew (module doc)."""
        now = time.monotonic()
        return (now - self._written_at >= FRESH_BEATS * self.interval
                or now - self._verified_at >= VERIFY_BEATS * self.interval)

    def owns(self) -> bool:
        """Whether this process still holds NODE_ID (a small read when it may not)."""
        with self._lock:
            if self.taken_over.is_set() or self.gone:
                return False
            return not (self._may_have_lost() and self._lost(self._read()))

    def ensure_owner(self) -> None:
        """Call before writing a shared file: raises Stopped if this NODE_ID was taken over."""
        if not self.owns():
            self.waiter.check()

    def _present(self) -> bool:
        """False once experiment.json was missing at GONE_LOOKS looks in a row (then the node
        is asked to stop, exit 5); looked at every PRESENCE_BEATS beats once it was checked."""
        exp = self.exp
        if getattr(exp, "info", None) is None or self.gone:
            return not self.gone
        self._presence[0] += 1
        if self._presence[0] < PRESENCE_BEATS and not self._presence[1]:
            return True
        self._presence[0] = 0
        try:
            data = exp.store.read(exp.layout.experiment_file, RECORD_MAX_BYTES)
        except StoreError:
            return True                            # cannot tell: a transient failure
        if data is not None:
            self._presence[1] = 0
            if self.record.role == "coordinator":
                exp.restore_info(data)
                if self.on_presence is not None:
                    self.on_presence()
            return True
        self._presence[1] += 1
        if self._presence[1] >= GONE_LOOKS:
            self.gone = True
            self.waiter.request_stop(
                f"the experiment folder {exp.layout.root} in {exp.store.description} vanished: "
                f"experiment.json is gone (deleted, moved or unmounted; missing at {GONE_LOOKS} "
                "looks in a row); this node stops and writes nothing more", code=EXIT_GONE)
            self._done.set()
        return False

    def beat(self) -> None:
        with self._lock:
            try:
                if not self._present() or not self.owns():
                    return
                self.record.beat += 1
                self.record.updated_at = time.time()
                self.record.refused = self.exp.trust.refused_by_signer()
                write_record(self.exp.trust, self.path, self.record)
                self._written_at = time.monotonic()
            except (StoreError, MountLost) as exc:   # the main thread stops on a lost mount
                log.warning("heartbeat not written: %s", exc)

    def start(self) -> None:
        def loop():
            while not self._done.wait(self.interval):
                self.beat()
        self._thread = threading.Thread(target=loop, name="heartbeat", daemon=True)
        self._thread.start()

    def close(self, status: str, phase: str = "") -> None:
        """Stop beating and record how the node ended (finished, stopped, failed)."""
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            if self.gone:
                return  # nothing is written into a vanished experiment folder
            try:
                current = self._read()
            except MountLost:
                return  # nothing can be written either; the node's error says why
            if self.taken_over.is_set() or (current is not None
                                            and current.session != self.record.session):
                return  # taken over: the file is no longer ours
            self.record.status, self.record.updated_at = status, time.time()
            self.record.phase = phase or status
            self.record.beat += 1
            self.record.refused = self.exp.trust.refused_by_signer()
            try:
                write_record(self.exp.trust, self.path, self.record)
            except StoreError as exc:
                log.warning("final peer record not written: %s", exc)
