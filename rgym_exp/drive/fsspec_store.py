"""FsspecStore: the Store protocol on an object store (GCS, S3) through fsspec.

``GDRIVE_PATH=gs://bucket/prefix`` or ``s3://bucket/prefix`` puts the experiment
folder in a bucket; ``memory://x`` (one process only) serves tests. The client
libraries are optional extras (``pip install .[gcs]`` or ``.[s3]``) and read their
own standard environment: ``GOOGLE_APPLICATION_CREDENTIALS`` (or gcloud's default
credentials) for gcsfs; ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_ENDPOINT_URL`` (or a profile) for s3fs. docs/OBJECT_STORES.md has the setup.

How the Store promises map onto objects:

* Whole or nothing: an object becomes visible only when its PUT (or the last part
  of a multipart/resumable upload) completes, so ``write`` is one PUT with no
  temporary name and no rename.
* Exclusive create: ``create_exclusive`` is one conditional PUT -- S3
  ``If-None-Match: *``, GCS ``ifGenerationMatch=0`` (fsspec's ``mode="create"``);
  memory:// takes a lock. Backends without a native one are not in the table.
* Reads are capped: one ranged GET of at most ``max_bytes + 1`` bytes.
* Listings are not cached (fsspec caches them by default; a swarm must see new
  files) and hide temporary names and conflict copies like every store.
* Folders do not exist on a bucket: ``makedirs`` does nothing, a folder appears
  with its first object; ``move`` copies each object then deletes it (only old
  rounds are moved, and no reader needs them whole).
"""

from __future__ import annotations

import errno
import importlib
import inspect
import logging
import os
import posixpath
import threading
from datetime import datetime
from typing import Optional

from rgym_exp.drive.store import (Entry, RetryingStore, StoreError, TooLarge, TransientStoreError,
                                  check_path, visible_name)

log = logging.getLogger(__name__)
COPY_CHUNK = 8 << 20     # bytes per read of a download

# URL scheme -> (fsspec protocol, package, extra, how exclusive create is done)
SCHEMES = {
    "gs": ("gcs", "gcsfs", "gcs", "GCS ifGenerationMatch=0"),
    "gcs": ("gcs", "gcsfs", "gcs", "GCS ifGenerationMatch=0"),
    "s3": ("s3", "s3fs", "s3", "S3 If-None-Match: *"),
    "memory": ("memory", "fsspec", "", "a lock in this process"),
}
_TRANSIENT_ERRNO = {errno.EIO, errno.EBUSY, errno.EAGAIN, errno.ETIMEDOUT, errno.ECONNRESET,
                    errno.ECONNREFUSED, errno.ECONNABORTED, errno.ENETDOWN, errno.ENETUNREACH,
                    errno.EHOSTUNREACH, errno.EREMOTEIO, errno.EPIPE}
# exceptions of botocore, aiohttp, asyncio, gcsfs and google-auth, by class name: a failure
# that may pass. Matched by name so this module imports none of those libraries.
_TRANSIENT_NAMES = {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                    "ConnectionClosedError", "ClientConnectionError", "ClientPayloadError",
                    "ServerDisconnectedError", "ClientOSError", "TimeoutError", "FSTimeoutError",
                    "TransportError", "IncompleteReadError", "ResponseStreamingError"}
_CREDENTIAL_NAMES = {"NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError",
                     "RefreshError", "NoAuthTokenError"}
_HOW = {"s3": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), and AWS_ENDPOINT_URL "
              "for a store other than AWS",
        "gcs": "GOOGLE_APPLICATION_CREDENTIALS to a service-account key, or `gcloud auth "
               "application-default login` (Colab: google.colab.auth.authenticate_user())"}
_MEMORY_LOCK = threading.Lock()


def _mtime(info: dict, keys=("LastModified", "updated", "mtime", "created")) -> float:
    for key in keys:
        value = info.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str) and value:
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return 0.0


class FsspecStore:
    def __init__(self, fs, url: str, root: str, protocol: str):
        self.fs, self.url, self.root, self.protocol = fs, url, root.strip("/"), protocol
        self.exclusive = next(s[3] for s in SCHEMES.values() if s[0] == protocol)
        self.description = f"bucket {url}" if protocol != "memory" else f"memory {url} (this process)"

    @classmethod
    def from_url(cls, url: str, credentials: str = "", endpoint: str = "", **options):
        """The store at ``url``; ``credentials`` and ``endpoint`` are the Drive API's
        (GDRIVE_CREDENTIALS, GDRIVE_API_ENDPOINT) and are not used: each client reads its
        own standard environment. ``options`` go to the fsspec file system."""
        scheme, _, rest = url.partition("://")
        protocol, package, extra, _ = SCHEMES[scheme]
        root = rest.strip("/")
        if protocol != "memory" and not root.split("/")[0]:
            raise StoreError(f"GDRIVE_PATH={url!r} names no bucket: use {scheme}://BUCKET/PREFIX")
        try:
            importlib.import_module(package)
            import fsspec
            fs_class = fsspec.get_filesystem_class(protocol)
        except ImportError:
            raise StoreError(f"GDRIVE_PATH={scheme}://... needs the {extra} extra: "
                             f"pip install .[{extra}] (or pip install {package})") from None
        if "mode" not in inspect.signature(fs_class.pipe_file).parameters:
            raise StoreError(f"GDRIVE_PATH={scheme}://... needs a {package} with exclusive "
                             f"writes (pipe_file mode='create'): pip install -U .[{extra or 's3'}]")
        options.setdefault("use_listings_cache", False)   # a swarm must see new files at once
        options.setdefault("skip_instance_cache", True)
        store = cls(fs_class(**options) if protocol != "memory" else fs_class(), url, root,
                    protocol)
        RetryingStore(store).check_root()   # the first request is retried like all others
        return store

    def check_root(self) -> None:
        """The bucket exists and the credentials open it (one request)."""
        if self.protocol == "memory":
            return
        bucket = self.root.split("/")[0]
        try:
            self.fs.info(bucket)
        except FileNotFoundError:
            raise StoreError(f"bucket {bucket} of {self.url} does not exist (or these credentials "
                             f"cannot see it): create it first, see docs/OBJECT_STORES.md") from None
        except Exception as exc:  # noqa: BLE001 - _failure re-raises what is not ours
            raise self._failure(exc, "open", bucket) from None

    # --- paths and errors ----------------------------------------------------------------

    def _full(self, path: str) -> str:
        """The object name of ``path``, as the file system's listings spell it."""
        full = posixpath.join(self.root, check_path(path)) if self.root else check_path(path)
        return self.fs._strip_protocol(full)

    def _failure(self, exc: BaseException, action: str, path: str) -> StoreError:
        """What a client exception means: retry (TransientStoreError) or not (StoreError)."""
        if isinstance(exc, StoreError):
            return exc
        where = f"{self.description}: cannot {action} {path}"
        names = {t.__name__ for t in type(exc).__mro__}
        if names & _CREDENTIAL_NAMES or isinstance(exc, PermissionError):
            how = _HOW.get(self.protocol, "the client's credentials")
            return StoreError(f"{where}: access denied or no credentials ({exc}); set {how}")
        status = getattr(exc, "code", None) or getattr(exc, "status", None)
        if isinstance(status, int) and (status in (408, 429) or status >= 500):
            return TransientStoreError(f"{where}: HTTP {status} ({exc})")
        if names & _TRANSIENT_NAMES or isinstance(exc, (ConnectionError, TimeoutError)):
            return TransientStoreError(f"{where}: {type(exc).__name__}: {exc}")
        if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNO:
            return TransientStoreError(f"{where}: {exc.strerror or exc}")
        return StoreError(f"{where}: {type(exc).__name__}: {exc}")

    def _call(self, action: str, path: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (FileNotFoundError, FileExistsError, TooLarge):
            raise
        except Exception as exc:  # noqa: BLE001 - every client error becomes a StoreError
            raise self._failure(exc, action, path) from None

    # --- the Store protocol --------------------------------------------------------------

    def read(self, path: str, max_bytes: int) -> Optional[bytes]:
        full = self._full(path)
        try:  # one ranged GET: never more than the cap + 1 bytes
            data = self._call("read", path, self.fs.cat_file, full, start=0, end=max_bytes + 1)
        except FileNotFoundError:
            return None
        except StoreError:  # S3 and GCS refuse a range on an empty object (416)
            size = self._size(path, full)
            if size is None:
                return None
            if size != 0:
                raise
            data = b""
        if len(data) > max_bytes:
            raise TooLarge(f"{path} is larger than the {max_bytes}-byte cap")
        return data

    def _size(self, path: str, full: str) -> Optional[int]:
        try:
            info = self._call("read", path, self.fs.info, full)
        except FileNotFoundError:
            return None
        return int(info.get("size") or 0) if info.get("type") != "directory" else None

    def write(self, path: str, data: bytes) -> None:
        self._call("write", path, self.fs.pipe_file, self._full(path), data)

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Write ``path`` only if no object has that name (see module doc). True when this
        call made it, or when it already holds exactly ``data`` (an earlier try whose answer
        was lost landed: callers put a unique session id in ``data``)."""
        full = self._full(path)
        try:
            if self.protocol == "memory":
                with _MEMORY_LOCK:
                    self._call("create", path, self.fs.pipe_file, full, data, mode="create")
            else:
                self._call("create", path, self.fs.pipe_file, full, data, mode="create")
            return True
        except FileExistsError:
            try:
                return self.read(path, len(data)) == data
            except TooLarge:
                return False

    def upload(self, local_path: str, path: str) -> None:
        if not os.path.isfile(local_path):
            raise StoreError(f"cannot upload {local_path} to {path}: no such file")
        self._call("upload", path, self.fs.put_file, local_path, self._full(path))

    def download(self, path: str, local_path: str, max_bytes: int) -> bool:
        full = self._full(path)
        size = self._size(path, full)
        if size is None:
            return False
        if size > max_bytes:
            raise TooLarge(f"{path} is larger than the {max_bytes}-byte cap")
        tmp = f"{local_path}.part"

        def copy():    # capped while it copies: an object replaced by a bigger one meanwhile
            with self.fs.open(full, "rb") as src, open(tmp, "wb") as out:   # stops at the cap
                copied = 0
                while chunk := src.read(min(COPY_CHUNK, max_bytes + 1 - copied)):
                    copied += len(chunk)
                    if copied > max_bytes:
                        raise TooLarge(f"{path} is larger than the {max_bytes}-byte cap")
                    out.write(chunk)
        try:
            self._call("download", path, copy)
            os.replace(tmp, local_path)
            return True
        except FileNotFoundError:
            return False
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def list(self, folder: str) -> list[Entry]:
        full = self._full(folder)
        try:
            found = self._call("list", folder, self.fs.ls, full, detail=True)
        except FileNotFoundError:
            return []
        entries = {}
        for info in found:
            name = info.get("name", "").rstrip("/")
            if name == full or posixpath.dirname(name) != full:
                continue  # the folder itself (a marker object), or a key that is no child
            base = posixpath.basename(name)
            if visible_name(base):
                entries[base] = Entry(base, int(info.get("size") or 0),
                                      info.get("type") == "directory", _mtime(info),
                                      _mtime(info, ("timeCreated", "created", "LastModified")))
        return [entries[n] for n in sorted(entries)]

    def _objects(self, action: str, path: str) -> list[str]:
        """Every object at ``path`` or below it ('round_1' never matches 'round_10')."""
        full = self._full(path)
        try:
            found = self._call(action, path, self.fs.find, full + "/")
        except FileNotFoundError:
            found = []
        if self._size(path, full) is not None:
            found = [full] + list(found)
        return sorted(set(found))

    def delete(self, path: str) -> None:
        objects = self._objects("delete", path)
        if objects:
            try:
                self._call("delete", path, self.fs.rm, objects)
            except FileNotFoundError:
                pass

    def move(self, src: str, dst: str) -> None:
        full_src, full_dst = self._full(src), self._full(dst)
        objects = self._objects("move", src)
        for obj in objects:
            target = full_dst + obj[len(full_src):]
            self._call("move", src, self.fs.copy, obj, target)
        if objects:
            self._call("move", src, self.fs.rm, objects)

    def makedirs(self, folder: str) -> None:
        check_path(folder)  # a bucket has no folders: one appears with its first object
