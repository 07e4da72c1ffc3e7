"""Where bytes live: the Store interface, its errors and its one retry layer.

A Store holds files at relative POSIX paths ("experiments/x/state/current_state.json").
Every backend keeps the same promises:

* ``write`` is all or nothing: a reader sees the old file or the new one, never
  a torn one (FolderStore: temp name in the same folder, flush, fsync, rename).
* ``read`` returns None for a missing file and raises ``TooLarge`` past its cap,
  so no peer can make us load an unbounded file.
* ``list`` hides temporary files, and Drive's conflict copies (``name (1).json``)
  of a file that is there under its own name. A conflict copy that is the only
  copy of a file (a mount that synced it under that name) is listed, and read,
  under the file's own name: hiding it would lose the file.
* ``create_exclusive`` writes a file only if none has that name, for one-writer
  claims (a NODE_ID, experiment.json). How strong that is depends on the store
  (docs/OBJECT_STORES.md): atomic in one file system (FolderStore, folder.py: a hard link
  that fails if the name exists) and on S3/GCS (conditional PUT); best effort on
  Drive, which has no such operation. It returns True when the file now holds
  exactly ``data`` (so a retried call whose first try landed still wins): callers
  put a unique session id in ``data``.
* Folders that many writers share and one creator makes (``FolderWait``: the
  coordinator's round folders) are never made by a write: a writer that cannot
  see one yet waits for it, because two machines that each make it within Drive's
  lag get two folders, and a mount shows the second as ``round_R (1)``.
* Failures are ``TransientStoreError`` (retry: Drive's EIO, "Transport endpoint
  is not connected", rate limits) or ``StoreError`` with a message that names
  the path and the cause (disk full, read-only, permission).

``RetryingStore`` wraps any store: the one retry layer, with jittered, capped
exponential backoff and a bound on the time one operation may take. A mount whose
transport stays gone past that bound raises ``MountLost``, which stops the node with
one line that says how to remount and resume. Which store a GDRIVE_PATH names is
decided in ``backends.py``.
"""

from __future__ import annotations

import errno
import logging
import random
import re
import time
from dataclasses import dataclass
from typing import Optional, Protocol

log = logging.getLogger(__name__)

_CONFLICT_RE = re.compile(r"^(.+) \(([0-9]+)\)(\.[^.]*)?$")
_TRANSIENT = {errno.EIO, errno.ENOTCONN, errno.ESTALE, errno.EAGAIN, errno.ETIMEDOUT, errno.EBUSY,
              errno.ECONNABORTED, errno.ECONNRESET, errno.EINTR, errno.ENETDOWN, errno.EHOSTUNREACH}
_PERMANENT = {errno.ENOSPC: "the shared folder is full (no space left)",
              errno.EDQUOT: "the shared folder's quota is exceeded",
              errno.EROFS: "the shared folder is read-only",
              errno.EACCES: "permission denied on the shared folder",
              errno.EPERM: "operation not permitted on the shared folder"}


class StoreError(RuntimeError):
    """A storage failure that retrying will not fix; the message says why."""


class TransientStoreError(StoreError):
    """A failure that may pass (I/O error on a FUSE mount, rate limit, 5xx)."""


class TooLarge(StoreError):
    """A file is larger than the reader's cap."""


class Disconnected(TransientStoreError):
    """A mount's transport is gone ("Transport endpoint is not connected")."""


class ExperimentGone(StoreError):
    """The experiment folder vanished (deleted, moved or unmounted) while a node ran."""


class MountLost(RuntimeError):
    """The mount stayed disconnected for longer than an operation may retry: the node
    stops (not a StoreError, so no reader mistakes it for a missing file)."""


@dataclass(frozen=True)
class Entry:
    name: str
    size: int = 0
    is_dir: bool = False
    mtime: float = 0.0
    created: float = 0.0    # when the store made it, by the store's clock (not the writer's
    #                         say: Drive's createdTime, a local file's ctime); 0.0: unknown


def visible_name(name: str) -> bool:
    """False for temporary files (leading '.') and conflict copies ('x (1).json')."""
    return bool(name) and not name.startswith(".") and not _CONFLICT_RE.match(name)


def conflict_original(name: str) -> Optional[str]:
    """'w1 (2).json' -> 'w1.json', 'round_3 (1)' -> 'round_3'; None if no conflict copy."""
    m = _CONFLICT_RE.match(name)
    if not m or name.startswith("."):
        return None
    return m.group(1) + (m.group(3) or "")


def visible_entries(entries: list[Entry]) -> list[Entry]:
    """A listing as readers see it, sorted by name: no temporary files; a file's conflict
    copies hidden while the file itself is there, else its newest copy shown under the
    file's own name (folders' copies are always hidden)."""
    shown = {e.name: e for e in entries if visible_name(e.name)}
    orphans: dict[str, Entry] = {}
    for e in entries:
        original = None if e.is_dir else conflict_original(e.name)
        if original and original not in shown and (
                original not in orphans or e.mtime > orphans[original].mtime):
            orphans[original] = Entry(original, e.size, False, e.mtime, e.created)
    shown.update(orphans)
    return [shown[name] for name in sorted(shown)]


class FolderWait:
    """Which folders a write must not create (``pattern``: the round folders the
    coordinator makes when it opens a round), and for how long a writer waits for one
    to appear before it makes it after all (a duplicate beats a lost round): until
    then ``check`` raises TransientStoreError, which RetryingStore retries."""

    def __init__(self, pattern: str, wait_s: float = 90.0, clock=time.monotonic):
        self.pattern, self.wait_s, self.clock = re.compile(pattern), wait_s, clock
        self._missing: dict[str, float] = {}
        self._seen: set[str] = set()           # experiment folders seen to exist

    def check(self, folder: str, is_dir=None) -> None:
        """Call when ``folder`` is missing and a write needs it. ``is_dir(path)``: whether a
        folder exists; an experiment folder above a round folder that was seen here and is
        gone now raises ExperimentGone at once (no round folder is coming)."""
        m = self.pattern.search(folder)
        if not m:
            return
        experiment = folder[:m.start()]
        if experiment and is_dir is not None:
            if is_dir(experiment):
                self._seen.add(experiment)
            elif experiment in self._seen:
                raise ExperimentGone(f"the experiment folder {experiment} is gone (deleted, moved "
                                     f"or unmounted) while this node was writing into {folder}")
        first = self._missing.setdefault(folder, self.clock())
        waited = self.clock() - first
        if waited < self.wait_s:
            raise TransientStoreError(f"folder {folder} is not visible yet (the coordinator "
                                      f"makes it when it opens the round; waited {waited:.0f}s)")
        log.warning("folder %s still not visible after %.0fs: creating it (Drive may show a "
                    "second copy)", folder, waited)
        del self._missing[folder]


def check_path(path: str) -> str:
    """Refuse paths that could leave the store's root."""
    parts = path.split("/")
    if (not path or path.startswith("/") or "\\" in path or "\x00" in path
            or any(p in ("", ".", "..") for p in parts)):
        raise StoreError(f"refusing unsafe storage path {path!r}")
    return path


class Store(Protocol):
    description: str

    def read(self, path: str, max_bytes: int) -> Optional[bytes]: ...
    def write(self, path: str, data: bytes) -> None: ...
    def create_exclusive(self, path: str, data: bytes) -> bool: ...
    def list(self, folder: str) -> list[Entry]: ...
    def delete(self, path: str) -> None: ...
    def move(self, src: str, dst: str) -> None: ...
    def makedirs(self, folder: str) -> None: ...
    def upload(self, local_path: str, path: str) -> None: ...
    def download(self, path: str, local_path: str, max_bytes: int) -> bool: ...


def classify(exc: OSError, action: str, path: str) -> StoreError:
    if exc.errno in _PERMANENT:
        return StoreError(f"{_PERMANENT[exc.errno]}: cannot {action} {path} ({exc.strerror})")
    if exc.errno == errno.ENOTCONN:
        return Disconnected(f"{action} {path}: {exc.strerror or exc}")
    if exc.errno in _TRANSIENT:
        return TransientStoreError(f"{action} {path}: {exc.strerror or exc}")
    return StoreError(f"cannot {action} {path}: {exc.strerror or exc}")


class RetryingStore:
    """The one retry layer: retries transient failures with jittered exponential backoff
    (``base`` doubling up to ``cap`` seconds), logging each retry, for at most
    ``attempts`` tries and ``budget_s`` seconds per operation (no try starts after
    that; stores bound a single try by their own timeouts, the Drive API's at 60 s).
    The defaults back off for at least 80 s in all, so an operation outlasts a spent
    per-minute quota (Drive's 429 / 403 userRateLimitExceeded) and a short outage.
    Then it gives up with the last error, or with ``MountLost`` when that error says
    the mount's transport is gone."""

    def __init__(self, inner: Store, attempts: int = 10, base: float = 1.0, cap: float = 32.0,
                 budget_s: float = 180.0, sleep=time.sleep, clock=time.monotonic, stop=None):
        self.inner, self.attempts, self.base, self.cap = inner, attempts, base, cap
        self.budget_s, self.sleep, self.clock = budget_s, sleep, clock
        self.stop = stop                   # a threading.Event: once set, nothing is retried
        self.description = inner.description
        self.retries = 0

    def _call(self, name: str, *args):
        start = self.clock()
        for attempt in range(1, self.attempts + 1):
            try:
                return getattr(self.inner, name)(*args)
            except TransientStoreError as exc:
                delay = min(self.cap, self.base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
                spent = self.clock() - start
                stopping = self.stop is not None and self.stop.is_set()
                if attempt == self.attempts or spent + delay > self.budget_s or stopping:
                    if isinstance(exc, Disconnected):
                        raise MountLost(
                            f"the shared folder ({self.description}) is disconnected ({exc}) "
                            f"and did not come back in {spent:.0f}s: remount it (Colab: "
                            "drive.mount('/content/drive', force_remount=True)), then start "
                            "this node again with the same NODE_ID; it continues from its "
                            "checkpoint") from None
                    raise
                self.retries += 1
                log.warning("storage %s failed (%s); retry %d/%d in %.1fs", name, exc, attempt,
                            self.attempts - 1, delay)
                self.sleep(delay)

    def check_root(self):
        """The backend's start-up check (the folder or bucket is there), retried like any
        operation: one 503 on the very first request must not stop a node."""
        return self._call("check_root")

    def read(self, path, max_bytes):
        return self._call("read", path, max_bytes)

    def write(self, path, data):
        return self._call("write", path, data)

    def create_exclusive(self, path, data):
        return self._call("create_exclusive", path, data)

    def list(self, folder):
        return self._call("list", folder)

    def delete(self, path):
        return self._call("delete", path)

    def move(self, src, dst):
        return self._call("move", src, dst)

    def makedirs(self, folder):
        return self._call("makedirs", folder)

    def upload(self, local_path, path):
        return self._call("upload", local_path, path)

    def download(self, path, local_path, max_bytes):
        return self._call("download", path, local_path, max_bytes)


def __getattr__(name: str):
    """``FolderStore`` lives in folder.py; imported from here, as it always was, on first use
    (so importing this module imports no other of the project)."""
    if name == "FolderStore":
        from rgym_exp.drive.folder import FolderStore
        return FolderStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
