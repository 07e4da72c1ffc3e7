"""DriveApiStore: the Store protocol over the Google Drive v3 API.

For nodes that cannot mount Drive (a laptop, a cloud VM): ``GDRIVE_PATH=gdrive://<folder-id>``
names the shared folder; relative POSIX paths live below it, folders are made on demand.
Credentials: see drive_auth.py. Drive is not a file system, and these rules make it act
like one for the folder protocol (DESIGN.md):

* Paths -> ids. Each folder path resolves by one ``files.list`` per level, cached. A
  cached folder is looked up again while it is young (after 1, 2, 4.. s, for
  ``settle_s``), because two nodes may create the same folder within Drive's listing lag
  -- except the coordinator's round folders, which no other node makes (``folder_wait``:
  a write waits for one to appear instead of creating it).
* Names. Drive matches ``name = '...'`` case-insensitively; every answer is filtered to
  the exact name, so nodes ``Alice`` and ``alice`` never read or delete each other's files.
* Duplicate names. Drive allows several items with one name in a folder. Folders: all
  of them count (a listing or lookup searches every copy; writers put new files in the
  oldest: smallest createdTime, then id). Files: readers use the one with the newest
  modifiedTime, ties broken by the larger id; a writer that finds several copies of a
  path it writes (it is its single writer, invariant 1) updates that one and deletes
  the others (a new file in a round folder is created without that look: only a
  restarted node could have left a copy there, and readers take the newest).
* All or nothing. A new file is created in one request (multipart, or a resumable
  session that Drive commits at its last chunk); an existing file gets new content
  with files.update, which readers see whole.
* Retries. 429, 5xx, 403 rateLimitExceeded/userRateLimitExceeded and network errors
  raise TransientStoreError; RetryingStore is the one layer that retries them (with a
  bound on an operation's total time). Other 4xx raise StoreError at once. Creates carry
  an id from files.generateIds, so a retried create cannot make a second file: a 409 for
  our own id means an earlier attempt landed. A resumable upload that failed mid-way is
  continued by the next try of the same upload, from where Drive says it stands.
* Listing lag. A just-written file may be missing from files.list for a while. This
  process remembers the ids it created (files and folders), so it neither creates a
  second copy nor fails to read back what it just wrote.
* No exclusive create. ``create_exclusive`` looks, then writes: best effort (see there).
* Cost. Listing a folder: one paginated files.list. Reading a file: one request for its
  metadata (a files.get by id once the path is known, which sees updates at once; a
  files.list by name the first time; none when a listing of its folder in the last
  ``hint_s`` seconds showed it) + one download, and no download when its (id,
  md5Checksum) is one this process already holds (small files it read or wrote). A file
  polled again within ``poll_s`` seconds is answered from what the last look found
  (Drive shows other machines' writes seconds late anyway). ``calls`` counts requests.
"""

from __future__ import annotations

import hashlib
import io
import logging
import mimetypes
import os
import random
import re
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Optional

from rgym_exp.drive.drive_auth import (DriveError, Step, about, classify, connect, epoch, quote)
from rgym_exp.drive.store import (Entry, RetryingStore, StoreError, TooLarge, TransientStoreError,
                                  check_path, conflict_original, visible_entries)

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


class DriveApiStore:
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

    @classmethod
    def from_url(cls, url: str, credentials: str = "", endpoint: str = "", **options):
        root = url[len("gdrive://"):].strip("/") if url.startswith("gdrive://") else ""
        if not re.fullmatch(r"[A-Za-z0-9_-]{5,}", root):
            raise StoreError(f"GDRIVE_PATH={url!r}: expected gdrive://<folder-id>, the id at the "
                             "end of the folder's address (drive.google.com/drive/folders/<id>)")
        service, http, who = connect(credentials, endpoint)
        store = cls(service, root, http, who, **options)
        RetryingStore(store).check_root()   # the first request is retried like all others
        return store

    def check_root(self) -> None:
        """One files.get: the folder exists, is a folder, and where it lives (shared drive?)."""
        try:
            meta = self._call(f"gdrive://{self.root_id}", "files.get", lambda: self.files.get(
                fileId=self.root_id, fields="id,name,mimeType,driveId", **ALL_DRIVES))
        except DriveError as exc:
            if exc.status in (403, 404):
                raise StoreError(f"Drive folder {self.root_id} not found or not shared with "
                                 f"{self.description}: share it (Editor) with that account "
                                 f"({exc})") from None
            raise
        if meta.get("mimeType") != FOLDER:
            raise StoreError(f"gdrive://{self.root_id} is a file, not a folder")
        if meta.get("driveId"):
            self._corpora = {"corpora": "drive", "driveId": meta["driveId"]}

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
            parents = self._folder(parent, create)
            found = self._query(parents, folder, name, folders=True) if parents else []
            found.sort(key=lambda f: (f.get("createdTime", ""), f["id"]))
            ids = [f["id"] for f in found]
            mine = hit.mine if hit is not None else set()
            ids += [i for i in sorted(mine) if i not in ids]  # ours, not listed yet
            if not ids and create:
                if self.folder_wait is not None and not made_here:
                    self.folder_wait.check(folder)
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

    # --- the Store protocol -------------------------------------------------------------

    @about("read")
    def read(self, path: str, max_bytes: int) -> Optional[bytes]:
        meta = self._lookup(path, max_bytes)
        if meta is None:
            return None
        with self._lock:
            cached = self._recent.get((meta["id"], meta.get("md5Checksum")))
        if cached is not None or meta.get("size") == "0":
            return cached or b""

        def get():
            request = self.files.get_media(fileId=meta["id"], **ALL_DRIVES)
            request.headers["range"] = f"bytes=0-{max_bytes}"  # never more than the cap + 1
            return request
        try:
            data = self._call(path, "files.get_media", get)
        except DriveError as exc:
            if exc.status == 404:  # deleted since the lookup
                self._saw(gone_id=meta["id"])
                self._forget(path)
                return None
            raise
        self._check_size(path, len(data), max_bytes)
        self._remember(meta, data)
        return data

    @about("download")
    def download(self, path: str, local_path: str, max_bytes: int) -> bool:
        from googleapiclient.http import MediaIoBaseDownload
        meta = self._lookup(path, max_bytes)
        if meta is None:
            return False
        tmp = f"{local_path}.part"
        try:
            with open(tmp, "wb") as fh:
                request = self.files.get_media(fileId=meta["id"], **ALL_DRIVES)
                request.http = self._http()
                loader, done = MediaIoBaseDownload(fh, request, chunksize=self.chunk_size), False
                while not done:
                    _, done = self._call(path, "media.chunk", loader.next_chunk, execute=False)
                    self._check_size(path, fh.tell(), max_bytes)
            os.replace(tmp, local_path)
            return True
        except DriveError as exc:
            if exc.status == 404:
                return False
            raise
        except OSError as exc:
            raise StoreError(f"cannot save {path} to {local_path}: {exc}") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @about("write")
    def write(self, path: str, data: bytes) -> None:
        def media(resumable):
            from googleapiclient.http import MediaIoBaseUpload
            return MediaIoBaseUpload(io.BytesIO(data), mimetype=_mime(path),
                                     chunksize=self.chunk_size, resumable=resumable)
        self._put(path, media, len(data))
        self._remember(self._own.get(path, {}), data)

    @about("create")
    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Drive has no create-if-absent: this looks, then writes. Two processes racing
        within Drive's listing lag can both win (the heartbeat's takeover check settles a
        NODE_ID later); buckets and local folders make the claim atomic."""
        try:
            if self._lookup(path, len(data)) is not None:
                return self.read(path, len(data)) == data
        except TooLarge:
            return False
        self.write(path, data)
        return True

    @about("upload")
    def upload(self, local_path: str, path: str) -> None:
        try:
            size = os.path.getsize(local_path)
        except OSError as exc:
            raise StoreError(f"cannot upload {local_path} to {path}: {exc}") from None

        def media(resumable):
            from googleapiclient.http import MediaFileUpload
            return MediaFileUpload(local_path, mimetype=_mime(path), chunksize=self.chunk_size,
                                   resumable=resumable)
        self._put(path, media, size, resume=(path, local_path, size, os.stat(local_path).st_mtime_ns))

    def _put(self, path: str, media, size: int, again: bool = True, resume=None) -> None:
        """Create or update the file; ``resume``: a key under which a resumable upload that
        fails half-way is kept, so the next try of the same upload continues it."""
        folder, name = split(path)
        resumable = size > self.resumable_over
        fid = self._own.get(path, {}).get("id")
        if fid is None and path not in self._pending:
            parents = self._folder(folder, create=True)
            # no older copy to look for in a folder this process made, nor in a round folder:
            # only a restarted node could have left one there, and readers take the newest
            hit = self._dirs.get(folder)
            round_file = self.folder_wait is not None and self.folder_wait.pattern.search(folder)
            found = [] if round_file or (hit and set(hit.ids) <= hit.mine) else sorted(
                self._query(parents, path, name, folders=False),
                key=lambda f: (f.get("modifiedTime", ""), f["id"]))
            for extra in found[:-1]:  # duplicates of a file we are the single writer of
                log.info("removing duplicate %s (id %s)", path, extra["id"])
                self._remove(extra["id"], path)
            fid = found[-1]["id"] if found else None
        for known in (fid, self._pending.get(path)):
            if known is None:
                continue
            try:  # an existing file: new content in place
                meta = self._send(path, "files.update", lambda: self.files.update(
                    fileId=known, media_body=media(resumable), fields=META, **ALL_DRIVES),
                    resumable, resume and (*resume, known))
                self._own[path] = meta or {"id": known}
                if meta:
                    self._saw(meta)
                self._pending.pop(path, None)
                return
            except DriveError as exc:
                if exc.status != 404:
                    raise
                self._own.pop(path, None)  # gone (or the pending create never landed)
        parent = self._folder(folder, create=True)[0]
        new = self._pending.get(path) or self._new_id()
        self._pending[path] = new
        try:
            meta = self._send(path, "files.create", lambda: self.files.create(
                body={"id": new, "name": name, "parents": [parent]}, media_body=media(resumable),
                fields=META, **ALL_DRIVES), resumable, resume and (*resume, new))
        except DriveError as exc:
            if exc.status != 404 or not again:
                raise
            self._forget(folder)  # the cached folder was deleted: resolve it again, once
            return self._put(path, media, size, again=False, resume=resume)
        self._own[path] = meta or {"id": new}
        if meta:
            self._saw(meta)
        self._pending.pop(path, None)

    def _send(self, path: str, method: str, make, resumable: bool, resume=None) -> dict:
        """One create/update with media; a resumable one step by step. A resumable upload
        that fails transiently is kept under ``resume`` and continued by the next call."""
        if not resumable:
            return self._call(path, method, lambda: self._create_ok(make), execute=False)
        with self._lock:
            request = self._uploads.pop(resume, None) if resume else None
        if request is not None:
            log.info("continuing the upload of %s from where Drive has it", path)
        request, restarts = request or make(), 0
        while True:
            step = method if request.resumable_uri is None else "upload.chunk"
            try:
                done = self._call(path, step, lambda: self._create_ok(
                    lambda: Step(request, self._http(), self._count)), execute=False)
            except DriveError as exc:
                if exc.status not in (404, 410) or request.resumable_uri is None or restarts > 2:
                    raise
                request, restarts = make(), restarts + 1  # the upload session expired
                continue
            except TransientStoreError:
                if resume and request.resumable_uri is not None:
                    with self._lock:
                        self._uploads[resume] = request
                        while len(self._uploads) > 4:
                            self._uploads.pop(next(iter(self._uploads)))
                raise
            if done is not None:
                return done

    @about("list")
    def list(self, folder: str) -> list[Entry]:
        parents = self._folder(check_path(folder))
        by_name: dict[str, dict] = {}
        for item in (self._query(parents, folder) if parents else []):
            name, seen = item.get("name", ""), by_name.get(item.get("name", ""))
            if name and not name.startswith(".") and (seen is None or newest([seen, item]) is item):
                by_name[name] = item
        entries = visible_entries([Entry(n, int(f.get("size") or 0), f.get("mimeType") == FOLDER,
                                         epoch(f.get("modifiedTime", ""))) for n, f in by_name.items()])
        hints = {}
        for e in entries:  # a conflict copy shown under its file's name is read by that name
            hints[e.name] = by_name.get(e.name) or max(
                (f for n, f in by_name.items() if conflict_original(n) == e.name),
                key=lambda f: (f.get("modifiedTime", ""), f["id"]))
        with self._lock:
            now = self._clock()
            self._hints[folder] = (now, {n: f for n, f in hints.items()
                                         if f.get("mimeType") != FOLDER})
            for old in [k for k, (t, _) in self._hints.items() if now - t > self.hint_s]:
                del self._hints[old]
        return entries

    def _remove(self, file_id: str, path: str) -> None:
        try:
            self._call(path, "files.delete",
                       lambda: self.files.delete(fileId=file_id, **ALL_DRIVES))
            self._saw(gone_id=file_id)
            return
        except DriveError as exc:
            if exc.status == 404:
                self._saw(gone_id=file_id)
                return
            if exc.status != 403:
                raise
        # shared drives: only organizers delete for good; content managers can trash
        try:
            self._call(path, "files.update", lambda: self.files.update(
                fileId=file_id, body={"trashed": True}, fields="id", **ALL_DRIVES))
        except DriveError as exc:
            if exc.status != 403:
                raise
            raise DriveError(f"{exc} -- in My Drive only a file's owner may delete it, in a "
                             "shared drive only a manager (a content manager may trash): run "
                             "the coordinator as the folder's owner or a manager "
                             "(docs/DRIVE_API.md)", exc.status, exc.reason) from None
        self._saw(gone_id=file_id)

    def _items(self, path: str) -> list[dict]:
        """Files and folders at this path (every copy), including ours not listed yet."""
        folder, name = split(path)
        parents = self._folder(folder)
        found = self._query(parents, path, name) if parents else []
        known = {f["id"] for f in found}
        hit, own = self._dirs.get(path), self._own.get(path)
        extra = (hit.mine if hit else set()) | ({own["id"]} if own else set())
        return found + [{"id": i} for i in sorted(extra - known)]

    @about("makedirs")
    def makedirs(self, folder: str) -> None:
        """Create a folder ahead of its writers: the coordinator makes round R's folders
        before opening R, so workers find them instead of each creating a copy within
        Drive's listing lag."""
        self._folder(check_path(folder), create=True, made_here=True)

    @about("delete")
    def delete(self, path: str) -> None:
        for item in self._items(path):
            self._remove(item["id"], path)
        self._forget(path)

    @about("move")
    def move(self, src: str, dst: str) -> None:
        check_path(dst)
        items = self._items(src)
        if not items:
            return
        folder, name = split(dst)
        target = self._folder(folder, create=True)[0]
        for item in items:
            old = ",".join(item.get("parents") or self._folder(split(src)[0]))
            try:
                self._call(src, "files.update", lambda: self.files.update(
                    fileId=item["id"], addParents=target, removeParents=old, body={"name": name},
                    fields="id", **ALL_DRIVES))
            except DriveError as exc:
                if exc.status != 404:
                    raise
        self._forget(src)
        self._forget(dst)


def _mime(path: str) -> str:
    return mimetypes.guess_type(path)[0] or "application/octet-stream"
