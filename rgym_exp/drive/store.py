"""Where bytes live: the Store interface and FolderStore.

A Store holds files at relative POSIX paths ("experiments/x/state/current_state.json").
Every backend keeps the same promises:

* ``write`` is all or nothing: a reader sees the old file or the new one, never
  a torn one (FolderStore: temp name in the same folder, flush, fsync, rename).
* ``read`` returns None for a missing file and raises ``TooLarge`` past its cap,
  so no peer can make us load an unbounded file.
* ``list`` hides temporary files and Drive's conflict copies (``name (1).json``).
* ``create_exclusive`` writes a file only if none has that name, for one-writer
  claims (a NODE_ID, experiment.json). How strong that is depends on the store
  (docs/OBJECT_STORES.md): atomic in one file system (FolderStore: a hard link
  that fails if the name exists) and on S3/GCS (conditional PUT); best effort on
  Drive, which has no such operation. It returns True when the file now holds
  exactly ``data`` (so a retried call whose first try landed still wins): callers
  put a unique session id in ``data``.
* Failures are ``TransientStoreError`` (retry: Drive's EIO, "Transport endpoint
  is not connected", rate limits) or ``StoreError`` with a message that names
  the path and the cause (disk full, read-only, permission).

``RetryingStore`` wraps any store with jittered, capped exponential backoff.
Which store a GDRIVE_PATH names is decided in ``backends.py``.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import re
import shutil
import stat
import time
import uuid
from dataclasses import dataclass
from typing import Optional, Protocol

log = logging.getLogger(__name__)

_CONFLICT_RE = re.compile(r".* \(\d+\)(\.[^.]*)?$")
_TRANSIENT = {errno.EIO, errno.ENOTCONN, errno.ESTALE, errno.EAGAIN, errno.ETIMEDOUT, errno.EBUSY,
              errno.ECONNABORTED, errno.ECONNRESET, errno.EINTR, errno.ENETDOWN, errno.EHOSTUNREACH}
_PERMANENT = {errno.ENOSPC: "the shared folder is full (no space left)",
              errno.EDQUOT: "the shared folder's quota is exceeded",
              errno.EROFS: "the shared folder is read-only",
              errno.EACCES: "permission denied on the shared folder",
              errno.EPERM: "operation not permitted on the shared folder"}
_NO_LINK = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV, errno.EMLINK,
            errno.EINVAL}


class StoreError(RuntimeError):
    """A storage failure that retrying will not fix; the message says why."""


class TransientStoreError(StoreError):
    """A failure that may pass (I/O error on a FUSE mount, rate limit, 5xx)."""


class TooLarge(StoreError):
    """A file is larger than the reader's cap."""


@dataclass(frozen=True)
class Entry:
    name: str
    size: int = 0
    is_dir: bool = False
    mtime: float = 0.0


def visible_name(name: str) -> bool:
    """False for temporary files (leading '.') and conflict copies ('x (1).json')."""
    return bool(name) and not name.startswith(".") and not _CONFLICT_RE.match(name)


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
    if exc.errno in _TRANSIENT:
        return TransientStoreError(f"{action} {path}: {exc.strerror or exc}")
    return StoreError(f"cannot {action} {path}: {exc.strerror or exc}")


class FolderStore:
    """A mounted Google Drive folder, a network share or any local directory."""

    def __init__(self, root: str):
        self.root = os.path.abspath(os.path.expanduser(root))
        self.description = f"folder {self.root}"
        self._warned_link = False
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise classify(exc, "create", self.root) from None

    def _full(self, path: str) -> str:
        return os.path.join(self.root, *check_path(path).split("/"))

    def read(self, path: str, max_bytes: int) -> Optional[bytes]:
        full = self._full(path)
        try:  # O_NONBLOCK: a named pipe planted in the folder must not wedge the reader
            fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as fh:
                mode = os.fstat(fd).st_mode
                if stat.S_ISDIR(mode):
                    return None
                if not stat.S_ISREG(mode):
                    raise StoreError(f"refusing to read {path}: not a regular file")
                data = fh.read(max_bytes + 1)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as exc:
            raise classify(exc, "read", path) from None
        if len(data) > max_bytes:
            raise TooLarge(f"{path} is larger than the {max_bytes}-byte cap")
        return data

    def _atomic(self, path: str, fill, place=os.replace):
        full = self._full(path)
        folder = os.path.dirname(full)
        tmp = os.path.join(folder, f".{os.path.basename(full)}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            os.makedirs(folder, exist_ok=True)
            with open(tmp, "wb") as fh:
                fill(fh)
                fh.flush()
                os.fsync(fh.fileno())
            placed = place(tmp, full)
        except OSError as exc:
            raise classify(exc, "write", path) from None
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        try:  # make the rename durable; not all filesystems allow it
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass
        return placed

    def write(self, path: str, data: bytes) -> None:
        self._atomic(path, lambda fh: fh.write(data))

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """The whole file appears under its name only if the name is free: a hard link
        from the fsynced temp file, which fails if the name exists. A mount that cannot
        link (some FUSE file systems) falls back to look-then-rename, which is not atomic."""
        def place(tmp, full):
            try:
                os.link(tmp, full)
                return True
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in _NO_LINK:
                    raise
                if not self._warned_link:
                    self._warned_link = True
                    log.warning("%s cannot make hard links (%s): one-writer claims there are "
                                "look-then-write, not atomic", self.description, exc.strerror)
                if os.path.lexists(full):
                    return False
                os.replace(tmp, full)
                return True
        if self._atomic(path, lambda fh: fh.write(data), place):
            return True
        try:
            return self.read(path, len(data)) == data
        except TooLarge:
            return False

    def upload(self, local_path: str, path: str) -> None:
        def fill(fh):
            with open(local_path, "rb") as src:
                shutil.copyfileobj(src, fh, 1 << 20)
        self._atomic(path, fill)

    def download(self, path: str, local_path: str, max_bytes: int) -> bool:
        full = self._full(path)
        try:
            if os.path.getsize(full) > max_bytes:
                raise TooLarge(f"{path} is larger than the {max_bytes}-byte cap")
            shutil.copyfile(full, local_path)
            return True
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise classify(exc, "download", path) from None

    def list(self, folder: str) -> list[Entry]:
        full = self._full(folder)
        try:
            with os.scandir(full) as it:
                entries = []
                for e in it:
                    if not visible_name(e.name):
                        continue
                    try:
                        st = e.stat()
                    except FileNotFoundError:  # removed while listing
                        continue
                    entries.append(Entry(e.name, st.st_size, e.is_dir(), st.st_mtime))
                return sorted(entries, key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise classify(exc, "list", folder) from None

    def delete(self, path: str) -> None:
        full = self._full(path)
        try:
            if os.path.isdir(full):
                shutil.rmtree(full)
            else:
                os.unlink(full)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise classify(exc, "delete", path) from None

    def makedirs(self, folder: str) -> None:
        try:
            os.makedirs(self._full(folder), exist_ok=True)
        except OSError as exc:
            raise classify(exc, "create", folder) from None

    def move(self, src: str, dst: str) -> None:
        full_dst = self._full(dst)
        try:
            os.makedirs(os.path.dirname(full_dst), exist_ok=True)
            os.replace(self._full(src), full_dst)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise classify(exc, "move", src) from None


class RetryingStore:
    """Retries transient failures with jittered exponential backoff (capped),
    logging each retry; gives up after ``attempts`` with the last error."""

    def __init__(self, inner: Store, attempts: int = 6, base: float = 0.5, cap: float = 15.0,
                 sleep=time.sleep):
        self.inner, self.attempts, self.base, self.cap, self.sleep = inner, attempts, base, cap, sleep
        self.description = inner.description
        self.retries = 0

    def _call(self, name: str, *args):
        for attempt in range(1, self.attempts + 1):
            try:
                return getattr(self.inner, name)(*args)
            except TransientStoreError as exc:
                if attempt == self.attempts:
                    raise
                delay = min(self.cap, self.base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
                self.retries += 1
                log.warning("storage %s failed (%s); retry %d/%d in %.1fs", name, exc, attempt,
                            self.attempts - 1, delay)
                self.sleep(delay)

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

