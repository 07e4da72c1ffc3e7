"""DriveApiStore: the Store protocol over the Google Drive v3 API.

For nodes that cannot mount Drive (a laptop, a cloud VM): ``GDRIVE_PATH=gdrive://<folder-id>``
names the shared folder; relative POSIX paths live below it, folders are made on demand.
Credentials: see drive_auth.py. How paths become ids, and what is cached: drive_index.py.
What the Store operations add (DESIGN.md):

* Single writers. A writer that finds several copies of a path it writes (it is its
  single writer, invariant 1) updates the newest and deletes the others (a new file in a
  round folder is created without that look: only a restarted node could have left a
  copy there, and readers take the newest).
* All or nothing. A new file is created in one request (multipart, or a resumable
  session that Drive commits at its last chunk); an existing file gets new content
  with files.update, which readers see whole.
* Retries. 429, 5xx, 403 rateLimitExceeded/userRateLimitExceeded and network errors
  raise TransientStoreError; RetryingStore is the one layer that retries them (with a
  bound on an operation's total time). Other 4xx raise StoreError at once. Creates carry
  an id from files.generateIds, so a retried create cannot make a second file: a 409 for
  our own id means an earlier attempt landed. A resumable upload that failed mid-way is
  continued by the next try of the same upload, from where Drive says it stands.
* Caps. A read asks for at most the cap + 1 bytes; a download stops past the cap.
* No exclusive create. ``create_exclusive`` looks, then writes: best effort (see there).
* Cost. Listing a folder: one paginated files.list; reading a file: drive_index.py.
"""

from __future__ import annotations

import io
import logging
import mimetypes
import os
import re
from typing import Optional

from rgym_exp.drive.drive_auth import DriveError, Step, about, connect, epoch
from rgym_exp.drive.drive_index import ALL_DRIVES, FOLDER, META, DriveIndex, newest, split
from rgym_exp.drive.store import (Entry, RetryingStore, StoreError, TooLarge,
                                  TransientStoreError, check_path, conflict_original,
                                  visible_entries)

log = logging.getLogger(__name__)


class DriveApiStore(DriveIndex):
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
                                         epoch(f.get("modifiedTime", "")),
                                         epoch(f.get("createdTime", "")))
                                   for n, f in by_name.items()])
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
