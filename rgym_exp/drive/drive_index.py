"""How the Drive API store finds files: paths -> ids, and what it caches (drive_api.py
is the Store on top of it). Drive is not a file system; these rules make it act like one
for the folder protocol (DESIGN.md):

* Paths -> ids. Each folder path resolves by one ``files.list`` per level, cached. A
  cached folder is looked up again while it is young (after 1, 2, 4.. s, for
  ``settle_s``), because two nodes may create the same folder within Drive's listing lag
  -- except the coordinator's round folders, which no other node makes (``folder_wait``:
  a write waits for one to appear instead of creating it, and stops at once when the
  experiment folder above it is gone).
* Names. Drive matches ``name = '...'`` case-insensitively; every answer is filtered to
  the exact name, so nodes ``Alice`` and ``alice`` never read or delete each other's files.
* Duplicate names. Drive allows several items with one name in a folder. Folders: all
  of them count (a listing or lookup searches every copy; writers put new files in the
  oldest: smallest createdTime, then id). Files: readers use the one with the newest
  modifiedTime, ties broken by the larger id.
* Listing lag. A just-written file may be missing from files.list for a while. This
  process remembers the ids it created (files and folders), so it neither creates a
  second copy nor fails to read back what it just wrote.
* Cost. Reading a file: one request for its metadata (a files.get by id once the path is
  known, which sees updates at once; a files.list by name the first time; none when a
  listing of its folder in the last ``hint_s`` seconds showed it) + one download, and no
  download when its (id, md5Checksum) is one this process already holds (small files it
  read or wrote). A file polled again within ``poll_s`` seconds is answered from what the
  last look found (Drive shows other machines' writes seconds late anyway). ``calls``
  counts requests.
* Shortcuts (Drive's links) are never followed: a lookup asks for folders or files by
  kind, and a shortcut is neither.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Optional

from rgym_exp.drive.drive_auth import DriveError, classify, quote
from rgym_exp.drive.store import TooLarge, TransientStoreError, check_path

log = logging.getLogger(__name__)

FOLDER = "application/vnd.google-apps.folder"
META = "id,name,mimeType,size,md5Checksum,modifiedTime,createdTime,parents"
ALL_DRIVES = {"supportsAllDrives": True}
CACHE_FILE_BYTES, CACHE_FILES = 256 * 1024, 64
KNOWN_PATHS = 4096                     # paths whose file id is remembered


def split(path: str) -> tuple[str, str]:
    folder, _, name = check_path(path).rpartition("/")
    return folder, name


def newest(items: list[dict]) -> Optional[dict]:
    """The copy readers use among same-named files (see module docstring)."""
    return max(items, key=lambda f: (f.get("modifiedTime", ""), f["id"]), default=None)


@dataclass
class _Dir:
    ids: list
    first: float                        # when this process first resolved the path
    checked: float                      # when it last asked Drive
    mine: set = field(default_factory=set)  # ids of copies this process created


class DriveIndex:
    """Requests, and the path -> id resolution and caches of DriveApiStore (module doc)."""

    def __init__(self, service, root_id: str, http, who: str = "", *, attempts: int = 1,
                 backoff_s: float = 0.5, backoff_cap_s: float = 8.0, sleep=time.sleep,
                 resumable_over: int = 5 << 20, chunk_size: int = 32 << 20, page_size: int = 1000,
                 settle_s: float = 300.0, hint_s: float = 10.0, poll_s: float = 2.0,
                 clock=time.monotonic, folder_wait=None):
        self.files, self.root_id, self._http = service.files(), root_id, http
        self.description = f"Drive folder {root_id} via the API ({who or 'default credentials'})"
        self.attempts, self.backoff_s, self.backoff_cap_s, self._sleep = (
            attempts, backoff_s, backoff_cap_s, sleep)
        self.resumable_over, self.chunk_size, self.page_size = resumable_over, chunk_size, page_size
        self.settle_s, self.hint_s, self.poll_s = settle_s, hint_s, poll_s
        self._clock, self.folder_wait = clock, folder_wait
        self.calls: Counter = Counter()
        self.retries = 0
        self._corpora: dict = {}
        self._dirs: dict[str, _Dir] = {}
        self._own: dict[str, dict] = {}       # path -> metadata of the file this process wrote
        self._pending: dict[str, str] = {}    # path -> id of a create whose outcome is unknown
        self._ids: list[str] = []
        self._known: OrderedDict = OrderedDict()  # path -> (id, when fetched, metadata or None)
        self._latest: OrderedDict = OrderedDict()  # id -> newest modifiedTime seen ("" : gone)
        self._hints: dict[str, tuple] = {}    # folder -> (when listed, {name: metadata})
        self._uploads: dict[tuple, object] = {}  # (path, file, size, mtime) -> broken upload
        self._recent: OrderedDict = OrderedDict()  # (id, md5) -> content of small files
        self._lock = threading.RLock()       # caches and folder creation
        self._count_lock = threading.Lock()

    # --- requests, errors, retries ----------------------------------------------------

    def _call(self, what: str, method: str, make, execute: bool = True):
        """One request (``attempts`` > 1: retried here too, for tests of the client);
        ``make()`` builds it (or, if not execute, does it)."""
        for attempt in range(1, self.attempts + 1):
            self._count(method)
            try:
                return make().execute(http=self._http()) if execute else make()
            except Exception as exc:  # noqa: BLE001 - classify re-raises what is not ours
                err = classify(exc, what, method, self.description)
                if not isinstance(err, TransientStoreError) or attempt == self.attempts:
                    raise err from None
            self.retries += 1  # truncated exponential backoff, jittered
            delay = min(self.backoff_cap_s, self.backoff_s * 2 ** (attempt - 1))
            log.debug("%s %s: %s; retry %d", method, what, err, attempt)
            self._sleep(delay * random.uniform(0.5, 1.0))

    def _count(self, method: str) -> None:
        with self._count_lock:
            self.calls[method] += 1

    def _new_id(self) -> str:
        with self._lock:
            if not self._ids:
                got = self._call("(new ids)", "files.generateIds",
                                 lambda: self.files.generateIds(count=50, space="drive"))
                self._ids = list(got.get("ids", []))
            return self._ids.pop()

    def _query(self, parents: list[str], what: str, name: Optional[str] = None,
               folders: Optional[bool] = None) -> list[dict]:
        """Every item in any of ``parents`` (with this name / kind), all pages."""
        terms = ["(" + " or ".join(f"{quote(p)} in parents" for p in parents) + ")",
                 "trashed = false"]
        if name is not None:
            terms.append(f"name = {quote(name)}")
        if folders is not None:
            terms.append(f"mimeType {'=' if folders else '!='} {quote(FOLDER)}")
        q, items, token = " and ".join(terms), [], None
        while True:
            page = self._call(what, "files.list", lambda: self.files.list(
                q=q, fields=f"nextPageToken,files({META})", pageSize=self.page_size,
                pageToken=token, includeItemsFromAllDrives=True, **ALL_DRIVES, **self._corpora))
            items += page.get("files", [])
            token = page.get("nextPageToken")
            if not token:  # Drive's name match ignores case: keep the exact name only
                return [f for f in items if name is None or f.get("name") == name]

    # --- paths -> ids ---------------------------------------------------------------------

    def _folder(self, folder: str, create: bool = False, made_here: bool = False) -> list[str]:
        """Ids of every copy of this folder, the oldest first; [] if it does not exist.
        ``create``: make it if missing (a round folder only when ``made_here``, by makedirs;
        a write waits for it, see folder_wait)."""
        if folder == "":
            return [self.root_id]
        with self._lock:
            now, hit = self._clock(), self._dirs.get(folder)
            if hit is not None:
                age = hit.checked - hit.first
                one_maker = self.folder_wait is not None and self.folder_wait.pattern.search(folder)
                if one_maker or age >= self.settle_s or now - hit.checked < max(1.0, age):
                    return hit.ids
            parent, name = split(folder)
            waits = (create and not made_here and self.folder_wait is not None
                     and self.folder_wait.pattern.search(folder))
            parents = self._folder(parent, create and not waits)
            if waits and not parents:   # a round folder's parent: the coordinator makes it
                self.folder_wait.check(folder, lambda f: bool(self._folder(f)))
                parents, waits = self._folder(parent, create), False  # waited enough: make it
            found = self._query(parents, folder, name, folders=True) if parents else []
            found.sort(key=lambda f: (f.get("createdTime", ""), f["id"]))
            ids = [f["id"] for f in found]
            mine = hit.mine if hit is not None else set()
            ids += [i for i in sorted(mine) if i not in ids]  # ours, not listed yet
            if not ids and create:
                if waits:
                    self.folder_wait.check(folder, lambda f: bool(self._folder(f)))
                new = self._new_id()
                body = {"id": new, "name": name, "mimeType": FOLDER, "parents": [parents[0]]}
                self._call(folder, "files.create", lambda: self._create_ok(
                    lambda: self.files.create(body=body, fields="id", **ALL_DRIVES)), execute=False)
                ids, mine = [new], {new}
            if ids:
                self._dirs[folder] = _Dir(ids, hit.first if hit else now, now, mine)
            else:
                self._dirs.pop(folder, None)
            return ids

    def _create_ok(self, make):
        """Execute a create; 409 (our pre-generated id exists) means an earlier try landed."""
        from googleapiclient.errors import HttpError
        try:
            return make().execute(http=self._http())
        except HttpError as exc:
            if exc.resp.status == 409:
                return {}
            raise

    @staticmethod
    def _check_size(path: str, size: int, max_bytes: int) -> None:
        if size > max_bytes:
            raise TooLarge(f"{path} is larger than the {max_bytes}-byte cap")

    def _lookup(self, path: str, max_bytes: int) -> Optional[dict]:
        """Metadata of the copy of this file readers use (None if there is none), checked
        against the cap before anything is downloaded: from a fresh listing's hint, else
        a files.get of the id this path had (fresh: no listing lag), else a name query.
        A listed version older than one this process saw (the listing lags) is fetched
        again by id, and a file known deleted is not there: reads never go backwards."""
        hint = self._listed(path)
        found = [hint] if hint is not None else self._by_id(path)
        if found is None:
            folder, name = split(path)
            parents = self._folder(folder)
            found = self._query(parents, path, name, folders=False) if parents else []
        found = [m for m in (self._fresh(path, m) for m in found) if m is not None]
        own = self._own.get(path)
        if own is not None:  # ours, maybe not listed yet, or listed with older metadata (or as
            # old: two writes within Drive's millisecond clock; ours is then the later one)
            listed = [f for f in found if f["id"] == own["id"]]
            if not listed or own.get("modifiedTime", "") >= listed[0].get("modifiedTime", ""):
                found = [f for f in found if f["id"] != own["id"]] + [own]
        meta = newest(found)
        with self._lock:
            if meta is None:
                self._known.pop(path, None)
            else:
                prev = self._known.get(path)   # an answer reused within poll_s keeps its age
                when = prev[1] if prev is not None and prev[2] is meta else self._clock()
                self._known[path] = (meta["id"], when, meta)
                self._known.move_to_end(path)
                while len(self._known) > KNOWN_PATHS:
                    self._known.popitem(last=False)
        if meta is not None:
            self._check_size(path, int(meta.get("size") or 0), max_bytes)
        return meta

    def _fresh(self, path: str, meta: dict) -> Optional[dict]:
        """``meta``, or its current version if this process has seen a newer one (None if
        the file is gone)."""
        with self._lock:
            latest = self._latest.get(meta["id"])
        if latest is not None and (latest == "" or meta.get("modifiedTime", "") < latest):
            if latest == "":
                return None
            meta = self._get_live(path, meta["id"])
            if meta is None:
                return None
        self._saw(meta)
        return meta

    def _get_live(self, path: str, fid: str) -> Optional[dict]:
        """The metadata of file ``fid`` by one files.get (which sees changes at once), or
        None when it is deleted or trashed: then remembered as gone for good."""
        try:
            meta = self._call(path, "files.get", lambda: self.files.get(
                fileId=fid, fields=META + ",trashed", **ALL_DRIVES))
        except DriveError as exc:
            if exc.status != 404:
                raise
            meta = None
        if meta is None or meta.get("trashed"):
            self._saw(gone_id=fid)
            return None
        return meta

    def _saw(self, meta: Optional[dict] = None, gone_id: str = "") -> None:
        """Remember a file's newest modifiedTime, or that ``gone_id`` is gone for good (ids
        are never reused)."""
        with self._lock:
            if gone_id:
                key, value = gone_id, ""
            else:
                key, value = meta["id"], meta.get("modifiedTime", "")
                old = self._latest.get(key)
                if old == "" or (old is not None and old >= value):
                    return
            self._latest[key] = value
            self._latest.move_to_end(key)
            while len(self._latest) > KNOWN_PATHS:
                self._latest.popitem(last=False)

    def _listed(self, path: str) -> Optional[dict]:
        """The file's metadata from a listing of its folder made in the last hint_s seconds."""
        folder, name = split(path)
        with self._lock:
            hint = self._hints.get(folder)
        if hint is not None and self._clock() - hint[0] <= self.hint_s:
            return hint[1].get(name)
        return None

    def _by_id(self, path: str) -> Optional[list]:
        """[metadata] by a files.get of the id this path had ([] if it is gone), or None
        when that id is unknown or no longer at this path (then: a name query)."""
        with self._lock:
            fid, when, last = self._known.get(path, (None, 0.0, None))
        if fid is None:
            return None
        if self._clock() - when < self.poll_s:
            return [last]
        meta = self._get_live(path, fid)
        folder, name = split(path)
        if meta is None or meta.get("name") != name or not (
                set(meta.get("parents") or ()) & set(self._folder(folder))):
            with self._lock:
                self._known.pop(path, None)   # gone, trashed, renamed or moved
            return None
        return [meta]

    def _remember(self, meta: dict, data: bytes) -> None:
        """Keep a small file's content by (id, md5): an unchanged file is not fetched twice."""
        md5 = meta.get("md5Checksum")
        if md5 and len(data) <= CACHE_FILE_BYTES and hashlib.md5(data).hexdigest() == md5:
            with self._lock:
                self._recent[(meta["id"], md5)] = data
                while len(self._recent) > CACHE_FILES:
                    self._recent.popitem(last=False)

    def _forget(self, path: str) -> None:
        with self._lock:
            for cache in (self._dirs, self._own, self._pending, self._known, self._hints):
                for key in [k for k in list(cache) if k == path or k.startswith(path + "/")]:
                    del cache[key]
