"""Which store a GDRIVE_PATH names: one table from URL scheme to backend.

A plain path (``/content/drive/MyDrive/rl-swarm``, ``./swarm_data``) is a
folder: a mounted Drive, a network share or any local directory. Anything that
looks like a URL (``scheme://...``, or a known scheme with a slash missing, such
as ``gdrive:/x``) must name a backend in ``BACKENDS``; every other URL is
refused with one line that names the value and the supported forms. Without
that check ``s3://bucket/x`` would silently become a local folder named ``s3:``
and the user would train alone.

Buckets (``gs://bucket/prefix``, ``s3://bucket/prefix``) go through fsspec
(fsspec_store.py); ``memory://`` is that store inside one process, for tests, and
is refused as a swarm's GDRIVE_PATH.

Backends are imported only when used (as fsspec's registry does), so this
module and ``store.py`` import no client library. Adding a backend is one file
and one line in ``BACKENDS``.
"""

from __future__ import annotations

import importlib
import logging
import os
import re

from rgym_exp.drive.layout import ROUND_FOLDERS
from rgym_exp.drive.folder import FolderStore
from rgym_exp.drive.store import FolderWait, RetryingStore, Store

log = logging.getLogger(__name__)

# scheme -> "module:class"; the class has from_url(url, **options) -> Store
BACKENDS = {
    "gdrive": "rgym_exp.drive.drive_api:DriveApiStore",
    "gs": "rgym_exp.drive.fsspec_store:FsspecStore",
    "gcs": "rgym_exp.drive.fsspec_store:FsspecStore",
    "s3": "rgym_exp.drive.fsspec_store:FsspecStore",
    "memory": "rgym_exp.drive.fsspec_store:FsspecStore",
}
# backends with real folders: a write waits for a round folder instead of making it
FOLDERED = {"gdrive"}
# backends that live in one process: fine for tests, never a swarm's GDRIVE_PATH
PROCESS_LOCAL = {"memory": "memory:// lives inside one process, so nodes would not see each other"}
# schemes people type that are no path, even with a slash missing ("gdrive:/x", "s3:bucket")
KNOWN_SCHEMES = ("gdrive", "gs", "gcs", "s3", "s3a", "az", "abfs", "http", "https", "ftp", "sftp",
                 "file", "memory", "hf", "webdav", "dropbox")
_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
_KNOWN_RE = re.compile(rf"^({'|'.join(KNOWN_SCHEMES)}):", re.I)

SUPPORTED_FORMS = "a directory path (a mounted Drive folder or any local folder), " + ", ".join(
    f"{scheme}://..." for scheme in BACKENDS if scheme not in PROCESS_LOCAL)


def url_scheme(path: str) -> str | None:
    """The URL scheme ``path`` is written with (as typed), or None for a plain path."""
    m = _URL_RE.match(path) or _KNOWN_RE.match(path)
    return m.group(1) if m else None


def is_local(path: str) -> bool:
    """True when ``path`` is a directory on this machine rather than a URL."""
    return url_scheme(path) is None


def check_location(path: str, setting: str = "GDRIVE_PATH", shared: bool = True) -> str:
    """``path`` as a store location: a plain path made absolute, or a supported URL.
    ValueError (one line: the value and the supported forms) for any other URL, and,
    when the location is to be ``shared`` between processes, for a process-local one."""
    scheme = url_scheme(path)
    if scheme is None:
        return os.path.abspath(os.path.expanduser(path))
    if scheme in BACKENDS and path.startswith(f"{scheme}://"):
        if shared and scheme in PROCESS_LOCAL:
            raise ValueError(f"{setting}={path!r} cannot hold a swarm: {PROCESS_LOCAL[scheme]}; "
                             f"use {SUPPORTED_FORMS}")
        if not path.split("://", 1)[1].strip("/"):
            raise ValueError(f"{setting}={path!r} names no folder or bucket: use "
                             f"{scheme}://NAME/...")
        return path
    hint = ""
    if scheme.lower() in BACKENDS:
        hint = f" (did you mean {scheme.lower()}://{path.split(':', 1)[1].lstrip('/')}?)"
    else:
        hint = f" ({scheme}:// is not supported yet)"
    raise ValueError(f"{setting}={path!r} is not a supported location{hint}; use {SUPPORTED_FORMS}")


def open_store(location: str, credentials: str = "", endpoint: str = "", faults: str = "",
               salt: str = "", stop=None) -> Store:
    """The store a location names (see ``check_location``), wrapped in RetryingStore.
    ``credentials`` and ``endpoint`` go to URL backends (GDRIVE_CREDENTIALS,
    GDRIVE_API_ENDPOINT); ``faults`` (the FAULTS setting, testing only) puts a
    FaultyStore between the two, seeded with ``salt`` (the node id). Folders and
    Drive wait for the coordinator's round folders (layout.ROUND_FOLDERS). ``stop``: a
    threading.Event after which RetryingStore retries nothing (the node is stopping)."""
    location = check_location(location, shared=False)
    scheme = url_scheme(location)
    wait = FolderWait(ROUND_FOLDERS)
    if scheme is None:
        store = FolderStore(location, folder_wait=wait)
    else:
        module, _, name = BACKENDS[scheme].partition(":")
        backend = getattr(importlib.import_module(module), name)
        options = {"folder_wait": wait} if scheme in FOLDERED else {}
        store = backend.from_url(location, credentials=credentials, endpoint=endpoint, **options)
    if faults:
        from rgym_exp.drive.faults import FaultyStore, parse_faults
        log.warning("FAULTS=%s: injecting storage faults (testing only)", faults)
        store = FaultyStore(store, parse_faults(faults), salt=salt)
    return RetryingStore(store, stop=stop)
