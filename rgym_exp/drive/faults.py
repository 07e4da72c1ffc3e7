"""FaultyStore: a Store that misbehaves the way a mounted Google Drive does.

Why it exists: the swarm promises to keep going on a folder that shows other
machines' writes late, serves stale copies, tears reads, throws EIO after hours
and makes ``name (1).json`` conflict copies. Those faults are rare and slow to
meet for real, so tests and ``bench/chaos.py`` inject them on purpose, seeded,
around any real store. It is wired in by the ``FAULTS`` setting (testing only),
inside RetryingStore, exactly where a real Drive failure would surface:

    FAULTS=io_error=0.1,delay=2,stale=0.2,partial=0.05,conflict=0.05,slow_list=0.5,seed=1

Faults that make another process's files look wrong (delay, stale, partial)
never touch files this process wrote itself: a mount sees its own writes.
"""

from __future__ import annotations

import errno
import os
import posixpath
import random
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, fields
from typing import Optional

from rgym_exp.drive.store import Entry, Store, TransientStoreError, classify

HISTORY_PATHS = 256            # replaced files whose previous content is remembered
HISTORY_MAX_BYTES = 256 * 1024


@dataclass(frozen=True)
class Faults:
    io_error: float = 0.0       # chance that an operation fails with a transient I/O error
    delay: float = 0.0          # seconds before another process's new file becomes visible
    stale: float = 0.0          # chance that a read of a replaced file returns its old content
    stale_for: float = 10.0     # ... for this many seconds after the new content first showed
    partial: float = 0.0        # chance that a read returns a truncated prefix
    conflict: float = 0.0       # chance that a write also leaves a 'name (1).ext' copy
    slow_list: float = 0.0      # seconds every listing takes
    full_after: int = -1        # writes that succeed before the folder is full (ENOSPC); -1: never
    readonly_after: int = -1    # writes that succeed before the folder turns read-only (EROFS)
    seed: int = 0
    journal: str = ""           # a local file: one line per change, "monotonic-time pid op path"


_RATES = ("io_error", "stale", "partial", "conflict")


def parse_faults(text: str) -> Faults:
    """``key=value,...`` -> Faults; ValueError naming the key on bad input."""
    known = {f.name: f for f in fields(Faults)}
    values = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, raw = (s.strip() for s in item.partition("="))
        if key not in known:
            raise ValueError(f"unknown fault {key!r} (known: {', '.join(known)})")
        if not sep or not raw:
            raise ValueError(f"fault {key!r} needs a value ({key}=...)")
        kind, top = known[key].type, 1 if key in _RATES else 3600
        try:
            value = raw if kind == "str" else int(raw) if kind == "int" else float(raw)
        except ValueError:
            what = "an integer" if kind == "int" else "a number"
            raise ValueError(f"{key}={raw!r} is not {what}") from None
        if kind == "float" and not 0 <= value <= top:
            raise ValueError(f"{key}={raw!r} must be between 0 and {top}")
        values[key] = value
    return Faults(**values)


def conflict_name(path: str) -> str:
    """Where Drive would put a conflict copy of ``path``: 'w1.json' -> 'w1 (1).json'."""
    folder, name = posixpath.split(path)
    stem, ext = posixpath.splitext(name)
    return posixpath.join(folder, f"{stem} (1){ext}")


class FaultyStore:
    """Wraps ``inner`` (any Store) and injects ``faults``; counts what it injected."""

    def __init__(self, inner: Store, faults: Faults = Faults(), salt: str = "", clock=time.time,
                 sleep=time.sleep):
        self.inner, self.faults, self.clock, self.sleep = inner, faults, clock, sleep
        self.description = f"{inner.description} with injected faults"
        self.injected: Counter = Counter()
        self._rng = random.Random(f"{faults.seed}/{salt}")
        self._lock = threading.Lock()        # the heartbeat and log threads share the store
        self._mine: set[str] = set()         # paths this process wrote
        self._listed: set[str] = set()       # paths a listing has shown (so no longer "new")
        self._history: OrderedDict[str, list] = OrderedDict()  # path -> [(content, first seen)]
        self._writes = 0

    # --- the dice -------------------------------------------------------------------

    def _chance(self, rate: float, kind: str) -> bool:
        with self._lock:
            hit = rate > 0 and self._rng.random() < rate
            if hit:
                self.injected[kind] += 1
            return hit

    def _io_error(self, op: str, path: str) -> None:
        if self._chance(self.faults.io_error, "io_error"):
            raise TransientStoreError(f"{op} {path}: Input/output error (injected)")

    def _may_change(self, op: str, path: str, grows: bool) -> None:
        f = self.faults
        if 0 <= f.readonly_after <= self._writes:
            self.injected["readonly"] += 1
            raise classify(OSError(errno.EROFS, "Read-only file system"), op, path)
        if grows and 0 <= f.full_after <= self._writes:
            self.injected["full"] += 1
            raise classify(OSError(errno.ENOSPC, "No space left on device"), op, path)

    def _changed(self, op: str, path: str, mine: str = "") -> None:
        with self._lock:
            self._mine.add(mine or path)
            self._writes += 1
        if self.faults.journal:
            with open(self.faults.journal, "a") as fh:
                fh.write(f"{time.monotonic():.6f} {os.getpid()} {op} {path}\n")

    # --- what another process's files look like ---------------------------------------

    def _too_new(self, path: str) -> bool:
        """True while another process's new or replaced file is younger than the delay."""
        folder, name = posixpath.split(path)
        if self.faults.delay <= 0 or path in self._mine or not folder:
            return False
        now = self.clock()
        return any(e.name == name and now - e.mtime < self.faults.delay
                   for e in self.inner.list(folder))

    def _remember(self, path: str, data: bytes) -> list:
        with self._lock:
            seen = self._history.setdefault(path, [])
            self._history.move_to_end(path)
            if len(data) <= HISTORY_MAX_BYTES and (not seen or seen[-1][0] != data):
                seen.append((data, self.clock()))
                del seen[:-2]
            while len(self._history) > HISTORY_PATHS:
                self._history.popitem(last=False)
            return list(seen)

    # --- the Store protocol ------------------------------------------------------------

    def read(self, path: str, max_bytes: int) -> Optional[bytes]:
        self._io_error("read", path)
        data = self.inner.read(path, max_bytes)
        if data is None or path in self._mine:
            return data
        seen = self._remember(path, data)
        older = seen[-2][0] if len(seen) > 1 and seen[-1][0] == data else None
        if self._too_new(path):
            self.injected["delay"] += 1
            return older                     # the old version, or "not there yet"
        if older is not None and self.clock() - seen[-1][1] < self.faults.stale_for \
                and self._chance(self.faults.stale, "stale"):
            return older
        if len(data) > 1 and self._chance(self.faults.partial, "partial"):
            with self._lock:
                return data[:self._rng.randrange(1, len(data))]
        return data

    def list(self, folder: str) -> list[Entry]:
        self._io_error("list", folder)
        if self.faults.slow_list > 0:
            self.sleep(self.faults.slow_list)
        entries = self.inner.list(folder)
        if self.faults.delay <= 0:
            return entries
        now, shown = self.clock(), []
        for e in entries:
            path = f"{folder}/{e.name}"
            known = path in self._mine or path in self._listed
            if e.is_dir or known or now - e.mtime >= self.faults.delay:
                self._listed.add(path)
                shown.append(e)
            else:
                self.injected["delay"] += 1
        return shown

    def download(self, path: str, local_path: str, max_bytes: int) -> bool:
        self._io_error("download", path)
        if self._too_new(path):
            self.injected["delay"] += 1
            return False
        return self.inner.download(path, local_path, max_bytes)

    def write(self, path: str, data: bytes) -> None:
        self._may_change("write", path, grows=True)
        fail = self._chance(self.faults.io_error, "io_error")
        with self._lock:
            before = fail and self._rng.random() < 0.5
        if before:                               # failed before anything reached the folder
            raise TransientStoreError(f"write {path}: Input/output error (injected)")
        self.inner.write(path, data)
        self._changed("write", path)
        if self._chance(self.faults.conflict, "conflict"):
            self.inner.write(conflict_name(path), data)
        if fail:                                 # written, but the client saw an error
            raise TransientStoreError(f"write {path}: Input/output error after writing (injected)")

    def create_exclusive(self, path: str, data: bytes) -> bool:
        self._may_change("create", path, grows=True)
        fail = self._chance(self.faults.io_error, "io_error")
        with self._lock:
            before = fail and self._rng.random() < 0.5
        if before:
            raise TransientStoreError(f"create {path}: Input/output error (injected)")
        created = self.inner.create_exclusive(path, data)
        if created:
            self._changed("create", path)
        if fail:                                 # the claim landed, but the client saw an error
            raise TransientStoreError(f"create {path}: Input/output error after writing (injected)")
        return created

    def upload(self, local_path: str, path: str) -> None:
        self._may_change("upload", path, grows=True)
        self._io_error("upload", path)
        self.inner.upload(local_path, path)
        self._changed("upload", path)

    def delete(self, path: str) -> None:
        self._may_change("delete", path, grows=False)
        self._io_error("delete", path)
        self.inner.delete(path)
        self._changed("delete", path)

    def move(self, src: str, dst: str) -> None:
        self._may_change("move", src, grows=False)
        self._io_error("move", src)
        self.inner.move(src, dst)
        self._changed("move", f"{src} {dst}", mine=dst)

    def makedirs(self, folder: str) -> None:
        self._may_change("makedirs", folder, grows=True)
        self._io_error("makedirs", folder)
        self.inner.makedirs(folder)
