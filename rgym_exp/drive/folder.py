"""FolderStore: a mounted Google Drive folder, a network share or any local directory.

It keeps the Store promises of store.py with files: a write goes to a temporary name in
the same folder, is flushed, fsynced and renamed; a claim is a hard link that fails if
the name exists. Because anyone may write to a shared folder, it also keeps these:

* No link is followed below the experiment folder (``trusted_depth`` path components,
  ``experiments/{name}``: a user may link those). A read, listing, download, delete or
  move whose path goes through a symbolic link refuses it (``Linked``, a StoreError that
  names the link); a listing skips links, named pipes, devices and entries it cannot stat
  (a symlink loop), with one warning per entry, and goes on. So no file is read from, or
  written or deleted outside the experiment folder, and retention deletes only inside it.
* Whatever sits where a write puts its file or folders and is not a regular file (a
  directory planted at a node's own file path) or a real directory (a link, a file in a
  folder's place) is moved aside -- renamed to a hidden ``.NAME.moved-XXXXXXXX`` that no
  reader lists -- with a warning naming it, and the write goes on. Only a file's one
  writer writes it, so only its owner moves anything aside.
* Reads and downloads open with O_NOFOLLOW and O_NONBLOCK, accept only regular files, and
  stop copying at the cap: a named pipe cannot wedge a reader, nor /dev/zero fill a disk.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import uuid
from typing import Optional

from rgym_exp.drive.store import (Disconnected, Entry, FolderWait, StoreError, TooLarge,
                                  check_path, classify, conflict_original, visible_entries)

log = logging.getLogger(__name__)

_NO_LINK = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV, errno.EMLINK,
            errno.EINVAL}
_OPEN = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
COPY_CHUNK = 1 << 20
WARN_ONCE = 1000                 # entries warned about, at most (then: debug lines)


class Linked(StoreError):
    """A path goes through a symbolic link below the experiment folder: not followed."""


def _kind(mode: int) -> str:
    return ("a symbolic link" if stat.S_ISLNK(mode) else "a directory" if stat.S_ISDIR(mode)
            else "a named pipe" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode)
            or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "a file")


class FolderStore:
    """See the module doc. ``folder_wait``: folders a write waits for instead of making
    them (store.FolderWait); ``trusted_depth``: leading path components that may be links."""

    def __init__(self, root: str, folder_wait: Optional[FolderWait] = None,
                 trusted_depth: int = 2):
        self.root = os.path.abspath(os.path.expanduser(root))
        self.description = f"folder {self.root}"
        self.folder_wait, self.trusted_depth = folder_wait, trusted_depth
        self._warned_link = False
        self._warned: set[str] = set()
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            err = classify(exc, "create", self.root)
            if isinstance(err, Disconnected):
                raise StoreError(f"{err}: the mount is gone; remount it (Colab: drive.mount("
                                 "'/content/drive', force_remount=True)) and start again") from None
            raise err from None

    # --- paths: never through a link ---------------------------------------------------

    def _warn_once(self, key: str, message: str, *args) -> None:
        if key in self._warned or len(self._warned) >= WARN_ONCE:
            log.debug(message, *args)
            return
        self._warned.add(key)
        log.warning(message, *args)

    def _full(self, path: str, leaf_link: bool = False) -> str:
        """The local path of ``path``; Linked if an existing component below the trusted
        ones is a symbolic link (the last one may be, with ``leaf_link``: it is not followed)."""
        parts = check_path(path).split("/")
        full = self.root
        for depth, part in enumerate(parts, 1):
            full = os.path.join(full, part)
            if depth <= self.trusted_depth or (leaf_link and depth == len(parts)):
                continue
            try:
                mode = os.lstat(full).st_mode
            except (FileNotFoundError, NotADirectoryError):
                return os.path.join(self.root, *parts)
            except OSError as exc:
                raise classify(exc, "reach", path) from None
            if stat.S_ISLNK(mode):
                raise Linked(f"refusing {path}: {'/'.join(parts[:depth])} is a symbolic link, "
                             "and links in the shared folder are never followed (one could "
                             "lead out of the experiment folder)")
        return full

    def _move_aside(self, full: str, rel: str, what: str) -> None:
        folder, name = os.path.split(full)
        aside = os.path.join(folder, f".{name}.moved-{uuid.uuid4().hex[:8]}")
        os.rename(full, aside)
        log.warning("moved aside %s planted at %s (now %s): this node writes its own file "
                    "there", what, rel, os.path.basename(aside))

    def _clear_way(self, path: str, leaf_is_file: bool = True) -> str:
        """The local path of ``path`` once every entry in its way is moved aside: a link or
        non-directory where a folder belongs, anything but a regular file at the file."""
        parts = check_path(path).split("/")
        full = self.root
        for depth, part in enumerate(parts, 1):
            full = os.path.join(full, part)
            if depth <= self.trusted_depth:
                continue
            try:
                mode = os.lstat(full).st_mode
            except (FileNotFoundError, NotADirectoryError):
                break
            except OSError as exc:
                raise classify(exc, "reach", path) from None
            last = depth == len(parts) and leaf_is_file
            if (stat.S_ISREG(mode) if last else stat.S_ISDIR(mode)):
                continue
            try:
                self._move_aside(full, "/".join(parts[:depth]), _kind(mode))
            except OSError as exc:
                raise classify(exc, "move aside", "/".join(parts[:depth])) from None
            break
        return os.path.join(self.root, *parts)

    # --- reading ---------------------------------------------------------------------------

    def _only_copy(self, full: str) -> Optional[str]:
        """The newest conflict copy ('x (1).json') of a missing file, if there is one."""
        folder, name = os.path.split(full)
        best, best_mtime = None, -1.0
        try:
            with os.scandir(folder) as it:
                for e in it:
                    if conflict_original(e.name) == name and e.is_file(follow_symlinks=False):
                        mtime = e.stat(follow_symlinks=False).st_mtime
                        if mtime > best_mtime:
                            best, best_mtime = e.path, mtime
        except OSError:
            return None
        return best

    def _open(self, full: str, path: str):
        """A read-only file object of a regular file, None if there is none."""
        try:
            fd = os.open(full, _OPEN)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise Linked(f"refusing {path}: it is a symbolic link, and links in the shared "
                             "folder are never followed") from None
            raise classify(exc, "read", path) from None
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode):
            return os.fdopen(fd, "rb")
        os.close(fd)
        if stat.S_ISDIR(mode):
            return None
        raise StoreError(f"refusing to read {path}: {_kind(mode)}, not a regular file")

    def _copy(self, full: str, path: str, max_bytes: int, sink) -> bool:
        """Copy the file into ``sink(chunk)``, at most the cap (TooLarge past it)."""
        fh = self._open(full, path)
        if fh is None:
            return False
        with fh:
            copied = 0
            try:
                while True:
                    chunk = fh.read(min(COPY_CHUNK, max_bytes + 1 - copied))
                    if not chunk:
                        return True
                    copied += len(chunk)
                    if copied > max_bytes:
                        raise TooLarge(f"{path} is larger than the {max_bytes}-byte cap")
                    sink(chunk)
            except OSError as exc:
                raise classify(exc, "read", path) from None

    def read(self, path: str, max_bytes: int) -> Optional[bytes]:
        full, chunks = self._full(path), []
        if not self._copy(full, path, max_bytes, chunks.append):
            copy = self._only_copy(full)
            if copy is None or not self._copy(copy, path, max_bytes, chunks.append):
                return None
        return b"".join(chunks)

    def download(self, path: str, local_path: str, max_bytes: int) -> bool:
        full = self._full(path)
        if not os.path.lexists(full):
            full = self._only_copy(full) or full
        tmp = f"{local_path}.part-{uuid.uuid4().hex[:8]}"
        try:
            with open(tmp, "wb") as out:
                if not self._copy(full, path, max_bytes, out.write):
                    return False
            os.replace(tmp, local_path)
            return True
        except OSError as exc:
            raise classify(exc, "download", path) from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def list(self, folder: str) -> list[Entry]:
        try:
            full = self._full(folder)
        except Linked as exc:
            self._warn_once(folder, "not listing %s: %s", folder, exc)
            return []
        entries = []
        try:
            with os.scandir(full) as it:
                for e in it:
                    if e.name.startswith("."):
                        continue
                    try:
                        st = e.stat(follow_symlinks=False)
                    except FileNotFoundError:  # removed while listing
                        continue
                    except OSError as exc:
                        self._warn_once(f"{folder}/{e.name}", "skipping %s/%s in a listing: "
                                        "cannot stat it (%s)", folder, e.name, exc.strerror)
                        continue
                    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                        self._warn_once(f"{folder}/{e.name}", "skipping %s/%s in a listing: "
                                        "%s, not a file or folder", folder, e.name,
                                        _kind(st.st_mode))
                        continue
                    entries.append(Entry(e.name, st.st_size, stat.S_ISDIR(st.st_mode),
                                         st.st_mtime, st.st_ctime))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise classify(exc, "list", folder) from None
        return visible_entries(entries)

    # --- writing --------------------------------------------------------------------------

    def _atomic(self, path: str, fill, place=os.replace):
        try:
            full = self._clear_way(path)
            folder = os.path.dirname(full)
            if self.folder_wait is not None and not os.path.isdir(folder):
                self.folder_wait.check(path.rpartition("/")[0], self._is_dir)
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise classify(exc, "write", path) from None
        tmp = os.path.join(folder, f".{os.path.basename(full)}.tmp-{uuid.uuid4().hex[:8]}")
        try:
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

    def _is_dir(self, path: str) -> bool:
        return os.path.isdir(os.path.join(self.root, *check_path(path).split("/")))

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
                shutil.copyfileobj(src, fh, COPY_CHUNK)
        self._atomic(path, fill)

    def delete(self, path: str) -> None:
        full = self._full(path, leaf_link=True)
        try:
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full)     # never follows the links it finds inside
            else:
                os.unlink(full)         # a file, or a link itself (never its target)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise classify(exc, "delete", path) from None

    def makedirs(self, folder: str) -> None:
        try:
            os.makedirs(self._clear_way(folder, leaf_is_file=False), exist_ok=True)
        except OSError as exc:
            raise classify(exc, "create", folder) from None

    def move(self, src: str, dst: str) -> None:
        source = self._full(src)
        try:
            full_dst = self._clear_way(dst, leaf_is_file=False)
            os.makedirs(os.path.dirname(full_dst), exist_ok=True)
            os.replace(source, full_dst)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise classify(exc, "move", src) from None
