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
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import replace

from rgym_exp.records import PeerRecord, write_record
from rgym_exp.drive.store import MountLost, StoreError
from rgym_exp.waiting import Waiter

log = logging.getLogger(__name__)
MIN_WATCH = 5.0  # seconds a newcomer watches a running record before it may take it over
FRESH_BEATS = 1.5  # our last beat younger than this many intervals: no takeover can have happened
VERIFY_BEATS = 4   # ... but read the record at least every this many intervals anyway


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

    def _read(self):
        record = self.exp.reader.read(PeerRecord, self.path)
        self._verified_at = time.monotonic()
        return record

    def _check_case(self) -> None:
        """Refuse a NODE_ID that differs from a registered one only in case."""
        me = self.record.node_id
        for entry in self.exp.store.list(self.exp.layout.peers_dir):
            other = entry.name[:-5] if entry.name.endswith(".json") else ""
            if other != me and other.casefold() == me.casefold():
                raise DuplicateNode(
                    f"NODE_ID {me} differs from the registered node {other} only in case; Drive "
                    "matches names ignoring case, so both would share files. Use another NODE_ID")

    def claim(self) -> None:
        """Register this process as the node's only writer (see module doc)."""
        self._check_case()
        other = self._read()
        if other is not None and other.session != self.record.session and other.status in (
                "starting", "running"):
            if other.host == self.record.host and not pid_alive(other.pid):
                log.info("NODE_ID %s: the previous process (pid %d) is gone; continuing as this "
                         "node", other.node_id, other.pid)
            else:
                # long enough to see a live writer beat even when a write is being retried
                watch = max(2.5 * max(self.interval, other.interval), MIN_WATCH)
                log.info("NODE_ID %s has a running record (host %s, pid %d); watching its "
                         "heartbeat for %.0fs", other.node_id, other.host, other.pid, watch)
                end = time.monotonic() + watch
                while time.monotonic() < end:
                    self.waiter.pause(min(1.0, self.interval / 4))
                    now = self._read()
                    if now is not None and now.session == other.session and now.beat != other.beat:
                        raise DuplicateNode(
                            f"NODE_ID {other.node_id} is already in use by a running process "
                            f"(host {other.host}, pid {other.pid}): its heartbeat is advancing. "
                            "Stop that process, or give this one another NODE_ID")
                log.info("NODE_ID %s: the previous session stopped without closing; taking over",
                         other.node_id)
        with self._lock:
            self.record.beat = (other.beat + 1) if other is not None else 0
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
            write_record(self.exp.store, self.path, self.record)
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
            if self.taken_over.is_set():
                return False
            return not (self._may_have_lost() and self._lost(self._read()))

    def ensure_owner(self) -> None:
        """Call before writing a shared file: raises Stopped if this NODE_ID was taken over."""
        if not self.owns():
            self.waiter.check()

    def beat(self) -> None:
        with self._lock:
            try:
                if not self.owns():
                    return
                self.record.beat += 1
                self.record.updated_at = time.time()
                write_record(self.exp.store, self.path, self.record)
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
            try:
                write_record(self.exp.store, self.path, self.record)
            except StoreError as exc:
                log.warning("final peer record not written: %s", exc)
