"""A fake Google Drive v3 server for tests: the real client talks HTTP to it.

In memory, thread-safe, on 127.0.0.1 at a random port. It is as strict as Drive where
DriveApiStore depends on it (and where a swarm meets Drive's limits first):

* files have ids, names, parents, owners, createdTime/modifiedTime, and one folder may
  hold several items with the same name;
* files.list understands the ``q`` terms the store uses (``name = '..'``, matched
  case-insensitively as Drive does, ``'<id>' in parents``, ``mimeType =``/``!=``,
  ``trashed = false``, and/or/not, parentheses, ``\\'`` and ``\\\\`` escapes),
  ``fields``, ``pageSize``/``pageToken``; pages are partial (any number of items up to
  pageSize, even none, with a next token while more remain) unless ``full_pages``;
* listing lag: files.list answers from an index that catches up ``list_lag`` seconds
  after each create, update, move, trash and delete (files.get by id is current at once);
* files.get (metadata, or ``alt=media`` with Range), files.create (metadata only,
  ``uploadType=media|multipart|resumable`` with Content-Range chunks and status
  queries), files.update (metadata, parents, media), files.delete, files.generateIds;
  a create with an id that exists answers 409;
* who may delete: each request acts as a user (``user_of``: node header -> user;
  default ``owner``). In My Drive only an item's owner deletes or trashes it, and
  deleting a folder deletes only the requester's items in it (others' are orphaned).
  With ``shared_drive=True`` the root is in a shared drive: ``roles`` gives each user
  organizer (deletes), fileOrganizer (content manager: trashes, moves) or writer, and
  every request on its items needs ``supportsAllDrives=true`` (else 404), a listing
  ``includeItemsFromAllDrives=true`` and ``corpora=drive`` with its ``driveId``;
* quotas: ``quota_per_minute`` (the project's) and ``user_quota_per_minute`` (each
  user's) over a sliding minute answer 429 rateLimitExceeded / 403
  userRateLimitExceeded past the limit (refused requests do not count);
* latency: each answer waits ``latency`` seconds (a number, or a (low, high) range);
* faults: ``fail(status, reason, count, kind, after)`` makes the next ``count``
  requests of a kind fail (``after=True``: do the work, then answer the error, as when
  a response is lost); ``fail_rate`` fails a fraction of requests.

Each request is counted per node (the ``x-rl-swarm-node`` header DriveApiStore sends
to a custom endpoint) and per kind (``files.list``, ``upload.chunk``..) in ``log``.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import socket
import string
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import parse_qs, urlsplit

FOLDER = "application/vnd.google-apps.folder"
ID_CHARS = string.ascii_letters + string.digits + "-_"
DEFAULT_FIELDS = {"kind": None, "id": None, "name": None, "mimeType": None}


def stamp(t: Optional[float] = None) -> str:
    t = time.time() if t is None else t
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


@dataclass
class Item:
    id: str
    name: str
    mime: str
    parents: list
    data: bytes = b""
    created: str = ""
    modified: str = ""
    trashed: bool = False
    owner: str = "owner"
    drive_id: str = ""                 # the shared drive it lives in ("" : My Drive)

    def resource(self) -> dict:
        doc = {"kind": "drive#file", "id": self.id, "name": self.name, "mimeType": self.mime,
               "parents": list(self.parents), "createdTime": self.created,
               "modifiedTime": self.modified, "trashed": self.trashed,
               "owners": [{"emailAddress": self.owner}]}
        if self.drive_id:
            doc["driveId"] = self.drive_id
        if self.mime != FOLDER:
            doc["size"] = str(len(self.data))
            doc["md5Checksum"] = hashlib.md5(self.data).hexdigest()
        return doc


@dataclass
class Fault:
    status: int
    reason: str
    count: float                       # requests left to fail
    kind: Optional[str] = None         # None: any request
    after: bool = False                # do the work first, then answer the error


@dataclass
class Session:
    create: Optional[dict]             # metadata of a new file, or None for an update
    file_id: str
    total: Optional[int]
    mime: str
    data: bytearray = field(default_factory=bytearray)
    result: Optional[dict] = None      # the file resource once the upload is complete
    fields: Optional[dict] = None
    user: str = "owner"


class DriveFault(Exception):
    def __init__(self, status: int, reason: str, message: str = ""):
        super().__init__(message or reason)
        self.status, self.reason, self.message = status, reason, message or reason


# --- the q language ------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<op>!=|=|\(|\))|(?P<word>[A-Za-z_]+))")


def _tokens(q: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(q.rstrip()):
        m = _TOKEN.match(q, pos)
        if not m:
            raise DriveFault(400, "invalid", f"Invalid Value: q near {q[pos:pos + 20]!r}")
        kind = m.lastgroup
        value = m.group(kind)
        if kind == "str":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out.append((kind, value))
        pos = m.end()
    return out


def parse_query(q: str):
    """A predicate over Items for a Drive ``q`` string (the subset the store uses)."""
    toks, pos = _tokens(q), [0]

    def peek():
        return toks[pos[0]] if pos[0] < len(toks) else ("end", "")

    def take(kind=None, value=None):
        tok = peek()
        if (kind and tok[0] != kind) or (value and tok[1].lower() != value):
            raise DriveFault(400, "invalid", f"Invalid Value: q at {tok[1]!r}")
        pos[0] += 1
        return tok[1]

    def expr():
        left = term()
        while peek()[0] == "word" and peek()[1].lower() == "or":
            take()
            right, prev = term(), left
            left = (lambda a, b: lambda it: a(it) or b(it))(prev, right)
        return left

    def term():
        left = factor()
        while peek()[0] == "word" and peek()[1].lower() == "and":
            take()
            right, prev = factor(), left
            left = (lambda a, b: lambda it: a(it) and b(it))(prev, right)
        return left

    def factor():
        kind, value = peek()
        if kind == "word" and value.lower() == "not":
            take()
            inner = factor()
            return lambda it: not inner(it)
        if (kind, value) == ("op", "("):
            take()
            inner = expr()
            take("op", ")")
            return inner
        if kind == "str":
            literal = take()
            take("word", "in")
            if take("word") != "parents":
                raise DriveFault(400, "invalid", "Invalid Value: only 'parents' supports in")
            return lambda it: literal in it.parents
        name = take("word")
        op = take("op")
        if op not in ("=", "!="):
            raise DriveFault(400, "invalid", f"Invalid Value: operator {op}")
        vkind, value = peek()
        take()
        if name == "trashed" and vkind == "word" and value in ("true", "false"):
            want = value == "true"
            return lambda it: (it.trashed == want) == (op == "=")
        if name == "name" and vkind == "str":  # Drive matches names ignoring case
            return lambda it: (it.name.casefold() == value.casefold()) == (op == "=")
        if name == "mimeType" and vkind == "str":
            return lambda it: (it.mime == value) == (op == "=")
        raise DriveFault(400, "invalid", f"Invalid Value: q term {name} {op} {value}")

    pred = expr()
    if peek()[0] != "end":
        raise DriveFault(400, "invalid", f"Invalid Value: q trailing {peek()[1]!r}")
    return pred


def parse_fields(text: Optional[str]) -> Optional[dict]:
    """'nextPageToken,files(id,name)' -> {'nextPageToken': None, 'files': {'id':..}}."""
    if not text:
        return None
    out, pos = {}, 0
    while pos < len(text):
        m = re.match(r"\s*([A-Za-z][A-Za-z0-9]*)\s*", text[pos:])
        if not m:
            raise DriveFault(400, "invalidParameter", f"Invalid field selection {text}")
        name, pos = m.group(1), pos + m.end()
        sub = None
        if pos < len(text) and text[pos] == "(":
            depth, end = 0, pos
            while True:
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                if depth == 0:
                    break
                end += 1
            sub, pos = parse_fields(text[pos + 1:end]), end + 1
        out[name] = sub
        if pos < len(text) and text[pos] == ",":
            pos += 1
    return out


def project(doc: dict, fields: Optional[dict]) -> dict:
    fields = DEFAULT_FIELDS if fields is None else fields
    return {k: doc[k] for k in fields if k in doc}


def parse_multipart(body: bytes, ctype: str) -> tuple[dict, bytes]:
    m = re.search(r'boundary="?([^";]+)"?', ctype)
    if not m:
        raise DriveFault(400, "badContent", "multipart body without a boundary")
    parts = []
    for chunk in body.split(b"--" + m.group(1).encode())[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk[1:]
        ends = [(i, sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := chunk.find(sep)) != -1]
        if not ends:
            raise DriveFault(400, "badContent", "multipart part without headers")
        at, sep = min(ends)
        payload = chunk[at + len(sep):]
        payload = payload[:-len(sep) // 2]  # the line break before the next boundary
        parts.append(payload)
    if len(parts) != 2:
        raise DriveFault(400, "badContent", f"multipart body with {len(parts)} parts")
    return json.loads(parts[0] or b"{}"), parts[1]


# --- the server ----------------------------------------------------------------------------

class FakeDrive:
    def __init__(self, list_lag: float = 0.0, max_page_size: int = 1000, *,
                 full_pages: bool = False, shared_drive: bool = False, latency=0.0,
                 quota_per_minute: Optional[int] = None,
                 user_quota_per_minute: Optional[int] = None, clock=time.monotonic,
                 sleep=time.sleep):
        self.list_lag, self.max_page_size, self.full_pages = list_lag, max_page_size, full_pages
        self.latency, self.clock, self.sleep = latency, clock, sleep
        self.quota_per_minute, self.user_quota_per_minute = quota_per_minute, user_quota_per_minute
        self.lock = threading.RLock()
        self.items: dict[str, Item] = {}
        self.index: dict[str, list] = {}   # id -> [(shown from, snapshot or None if deleted)]
        self.sessions: dict[str, Session] = {}
        self.faults: list[Fault] = []
        self.rate: tuple = (0.0, 500, "backendError", None)
        self.rng = random.Random(0)
        self.log: list[tuple] = []     # (time, node, kind, label, status)
        self.user_of: dict[str, str] = {}    # node header -> user; default "owner"
        self.roles: dict[str, str] = {}      # shared drive: user -> organizer|fileOrganizer|writer
        self.refused = Counter()             # quota refusals by reason
        self._window: deque = deque()        # (time, user) of requests in the last minute
        self.root_id = self.add("shared-root", None, folder=True)
        if shared_drive:
            self.items[self.root_id].drive_id = "0A" + self.root_id[:17]
            self.index[self.root_id] = [(0.0, replace(self.items[self.root_id]))]
        self._server: Optional[ThreadingHTTPServer] = None

    # --- test helpers --------------------------------------------------------------

    def new_id(self) -> str:
        while True:
            new = "".join(self.rng.choice(ID_CHARS) for _ in range(33))
            if new not in self.items:
                return new

    def add(self, name: str, parent: Optional[str], data: bytes = b"", folder: bool = False,
            modified: Optional[float] = None, file_id: Optional[str] = None,
            owner: str = "owner") -> str:
        """Put an item straight into the store (visible to listings at once)."""
        with self.lock:
            now = time.time() if modified is None else modified
            item = Item(file_id or self.new_id(), name, FOLDER if folder else "application/json",
                        [parent] if parent else [], bytes(data), stamp(now), stamp(now),
                        owner=owner, drive_id=self.items[parent].drive_id if parent else "")
            self.items[item.id] = item
            self.index[item.id] = [(0.0, replace(item, parents=list(item.parents)))]
            return item.id

    def children(self, parent: str) -> list[Item]:
        with self.lock:
            return [i for i in self.items.values() if parent in i.parents and not i.trashed]

    def find(self, path: str) -> list[Item]:
        """Every live item at this path (following every copy of each folder)."""
        level = [self.root_id]
        found: list[Item] = []
        for name in path.split("/"):
            found = [c for p in level for c in self.children(p) if c.name == name]
            level = [c.id for c in found]
        return found

    def path_of(self, item_id: str) -> str:
        """'a/b/c' from the root, by each item's first parent ('?' if it is gone)."""
        names = []
        with self.lock:
            while item_id != self.root_id:
                item = self.items.get(item_id)
                if item is None or not item.parents:
                    return "/".join(["?"] + names[::-1])
                names.append(item.name)
                item_id = item.parents[0]
        return "/".join(names[::-1])

    def fail(self, status: int, reason: str = "", count: int = 1, kind: Optional[str] = None,
             after: bool = False) -> None:
        with self.lock:
            self.faults.append(Fault(status, reason or _default_reason(status), count, kind, after))

    def fail_rate(self, rate: float, status: int = 500, reason: str = "backendError",
                  kind: Optional[str] = None) -> None:
        self.rate = (rate, status, reason, kind)

    def counts(self, node: Optional[str] = None) -> Counter:
        with self.lock:
            return Counter(k for _, n, k, _, _ in self.log if node is None or n == node)

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> "FakeDrive":
        fake = self

        class Handler(_Handler):
            drive = fake
        class Server(ThreadingHTTPServer):
            request_queue_size = 256   # a swarm's nodes connect at once (the default 5 drops
            #                            connections: the clients' retries, not Drive's)
        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-drive",
                         daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- faults, quotas, latency --------------------------------------------------------

    def take_fault(self, kind: str) -> Optional[Fault]:
        with self.lock:
            for fault in self.faults:
                if fault.count > 0 and fault.kind in (None, kind):
                    fault.count -= 1
                    if fault.count <= 0:
                        self.faults.remove(fault)
                    return fault
            rate, status, reason, only = self.rate
            if rate and only in (None, kind) and self.rng.random() < rate:
                return Fault(status, reason, 1)
        return None

    def admit(self, user: str) -> None:
        """Count a request against the per-minute quotas, or refuse it as Drive does."""
        if self.quota_per_minute is None and self.user_quota_per_minute is None:
            return
        with self.lock:
            now = self.clock()
            while self._window and now - self._window[0][0] >= 60:
                self._window.popleft()
            if self.quota_per_minute is not None and len(self._window) >= self.quota_per_minute:
                self.refused["rateLimitExceeded"] += 1
                raise DriveFault(429, "rateLimitExceeded", "Quota exceeded for quota metric "
                                 "'Queries' and limit 'Queries per minute'")
            if self.user_quota_per_minute is not None and sum(
                    u == user for _, u in self._window) >= self.user_quota_per_minute:
                self.refused["userRateLimitExceeded"] += 1
                raise DriveFault(403, "userRateLimitExceeded", "Quota exceeded for quota metric "
                                 "'Queries' and limit 'Queries per minute per user'")
            self._window.append((now, user))

    def wait(self) -> None:
        lat = self.latency
        delay = self.rng.uniform(*lat) if isinstance(lat, tuple) else float(lat)
        if delay > 0:
            self.sleep(delay)

    # --- the index listings answer from (it lags) ----------------------------------------

    def touch(self, item: Item, deleted: bool = False) -> None:
        """Record the item's new state for listings, shown ``list_lag`` seconds from now."""
        snap = None if deleted else replace(item, parents=list(item.parents))
        self.index.setdefault(item.id, []).append((self.clock() + self.list_lag, snap))

    def indexed(self, now: float) -> list[Item]:
        """What files.list sees now: each item as it was ``list_lag`` seconds ago."""
        out = []
        for iid in list(self.index):
            hist = self.index[iid]
            shown = [k for k, (t, _) in enumerate(hist) if t <= now]
            if not shown:
                continue
            del hist[:shown[-1]]             # older states are gone for good
            if hist[0][1] is None:
                if len(hist) == 1:
                    del self.index[iid]
                continue
            out.append(hist[0][1])
        return out

    # --- who may do what -----------------------------------------------------------------

    def check_drive_flags(self, item: Item, query: dict) -> None:
        """Shared-drive items are invisible to requests without supportsAllDrives."""
        if item.drive_id and query.get("supportsAllDrives") != "true":
            raise DriveFault(404, "notFound", f"File not found: {item.id}.")

    def may_remove(self, item: Item, user: str, trash: bool) -> None:
        if item.drive_id:
            role = self.roles.get(user, "organizer")
            allowed = ("organizer", "fileOrganizer") if trash else ("organizer",)
            if role not in allowed:
                raise DriveFault(403, "insufficientFilePermissions", "The user does not have "
                                 f"sufficient permissions for this file (role {role}).")
        elif item.owner != user:
            raise DriveFault(403, "insufficientFilePermissions", "The user does not have "
                             "sufficient permissions for this file (only its owner may "
                             f"{'trash' if trash else 'delete'} it).")

    # --- the API ------------------------------------------------------------------------

    def live(self, file_id: str, query: Optional[dict] = None) -> Item:
        item = self.items.get(file_id)
        if item is None:
            raise DriveFault(404, "notFound", f"File not found: {file_id}.")
        if query is not None:
            self.check_drive_flags(item, query)
        return item

    def new_item(self, meta: dict, data: bytes = b"", mime: str = "", user: str = "owner",
                 query: Optional[dict] = None) -> Item:
        new = meta.get("id") or self.new_id()
        if new in self.items:
            raise DriveFault(409, "duplicate", "A file already exists with the provided ID.")
        parents = meta.get("parents") or [self.root_id]
        for p in parents:
            if p not in self.items or self.items[p].mime != FOLDER:
                raise DriveFault(404, "notFound", f"File not found: {p}.")
            if query is not None:
                self.check_drive_flags(self.items[p], query)
        now = time.time()
        item = Item(new, meta.get("name", "Untitled"),
                    meta.get("mimeType") or mime or "application/octet-stream", list(parents),
                    bytes(data), stamp(now), stamp(now), owner=user,
                    drive_id=self.items[parents[0]].drive_id)
        self.items[new] = item
        self.touch(item)
        return item

    def set_content(self, item: Item, data: bytes) -> None:
        if item.mime == FOLDER:
            raise DriveFault(400, "badRequest", "folders have no content")
        item.data, item.modified = bytes(data), stamp()
        self.touch(item)

    def list_files(self, query: dict) -> dict:
        all_drives = query.get("includeItemsFromAllDrives") == "true"
        if all_drives and query.get("supportsAllDrives") != "true":
            raise DriveFault(403, "teamDriveSupportRequired", "includeItemsFromAllDrives "
                             "needs supportsAllDrives=true")
        corpora = query.get("corpora", "user")
        if corpora == "drive" and not (query.get("driveId") and all_drives):
            raise DriveFault(400, "invalid", "corpora=drive needs driveId and "
                             "includeItemsFromAllDrives=true")
        pred = parse_query(query.get("q", "trashed = false"))
        size = min(int(query.get("pageSize", 100)), self.max_page_size, 1000)
        hits = sorted((i for i in self.indexed(self.clock()) if pred(i)
                       and (not i.drive_id or all_drives)), key=lambda i: (i.name, i.id))
        start = int(query.get("pageToken", "0") or 0)
        take = size if self.full_pages else self.rng.randint(0, size)
        fields = parse_fields(query.get("fields")) or {"files": None, "nextPageToken": None}
        out = {"kind": "drive#fileList", "files": [project(i.resource(), fields.get("files"))
                                                   for i in hits[start:start + take]]}
        if start + take < len(hits):
            out["nextPageToken"] = str(start + take)
        return project(out, fields)

    def delete(self, file_id: str, user: str) -> None:
        """Delete an item; a folder takes with it the items below that ``user`` may delete
        (in My Drive: owns); others' items lose that parent (orphaned), as in Drive."""
        top = self.live(file_id)
        self.may_remove(top, user, trash=False)
        doomed = {top.id}
        while True:
            more = set()
            for i in self.items.values():
                if i.id in doomed or not i.parents or not all(p in doomed for p in i.parents):
                    continue
                try:
                    self.may_remove(i, user, trash=False)
                    more.add(i.id)
                except DriveFault:
                    i.parents = [p for p in i.parents if p not in doomed]
                    self.touch(i)
            if not more:
                break
            doomed |= more
        for d in doomed:
            self.touch(self.items.pop(d), deleted=True)


def _default_reason(status: int) -> str:
    return {403: "rateLimitExceeded", 429: "rateLimitExceeded", 400: "badRequest",
            404: "notFound"}.get(status, "backendError")


class _Handler(BaseHTTPRequestHandler):
    drive: FakeDrive
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def setup(self):
        super().setup()  # answer in one segment, without Nagle's delay (40 ms per request)
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self):
        self.handle_api("GET")

    def do_POST(self):
        self.handle_api("POST")

    def do_PATCH(self):
        self.handle_api("PATCH")

    def do_PUT(self):
        self.handle_api("PUT")

    def do_DELETE(self):
        self.handle_api("DELETE")

    def handle_api(self, method: str) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        override = self.headers.get("x-http-method-override", "").upper()
        if method == "POST" and override:
            # googleapiclient sends a GET whose URL would pass 2,048 characters (a listing
            # across many copies of a folder) as a POST with its query in a form body and the
            # real method in this header, as Google's APIs accept
            if self.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                query.update({k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace"),
                                                             keep_blank_values=True).items()})
                body = b""
            method = override
        kind, label, status = "unknown", "", 500
        node = self.headers.get("x-rl-swarm-node", "")
        user = self.drive.user_of.get(node, "owner")
        try:
            kind, work = self.route(method, url.path, query, body, user)
            drive = self.drive
            drive.admit(user)
            fault = drive.take_fault(kind)
            if fault is not None and not fault.after:
                raise DriveFault(fault.status, fault.reason, f"injected {fault.reason}")
            with drive.lock:
                status, headers, payload, label = work()
            if fault is not None:
                raise DriveFault(fault.status, fault.reason, f"injected {fault.reason} (after)")
        except DriveFault as exc:
            status, headers = exc.status, {"Content-Type": "application/json"}
            domain = "usageLimits" if exc.reason.endswith("LimitExceeded") else "global"
            payload = json.dumps({"error": {"code": exc.status, "message": exc.message, "errors": [
                {"domain": domain, "reason": exc.reason, "message": exc.message}]}}).encode()
        with self.drive.lock:
            self.drive.log.append((time.time(), node, kind, label, status))
        self.drive.wait()
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self._headers_buffer.extend([b"\r\n", payload])
        self.flush_headers()

    def route(self, method: str, path: str, query: dict, body: bytes, user: str):
        """(kind, work): work() runs under the drive's lock and returns
        (status, headers, payload, label)."""
        d = self.drive
        m = re.fullmatch(r"/(upload/)?drive/v3/files(?:/([^/]+))?", path)
        if not m:
            raise DriveFault(404, "notFound", f"no route {method} {path}")
        upload, file_id = bool(m.group(1)), m.group(2)
        fields = parse_fields(query.get("fields"))

        def reply(doc, status=200, headers=None):
            return status, {"Content-Type": "application/json", **(headers or {})}, \
                json.dumps(doc).encode()

        if method == "PUT" and upload and "upload_id" in query:
            return "upload.chunk", lambda: self.chunk(query["upload_id"], body)
        if method == "GET" and file_id == "generateIds":
            def ids():
                n = min(int(query.get("count", 10)), 1000)
                return (*reply({"kind": "drive#generatedIds", "space": "drive",
                                "ids": [d.new_id() for _ in range(n)]}), "")
            return "files.generateIds", ids
        if method == "GET" and file_id is None:
            def listing():
                q = query.get("q", "")
                name = re.search(r"name = '((?:[^'\\]|\\.)*)'", q)
                parent = re.search(r"'([^']*)' in parents", q)
                label = d.path_of(parent.group(1)) if parent else ""
                if name:
                    label = f"{label}/{name.group(1)}" if label else name.group(1)
                return (*reply(d.list_files(query)), label)
            return "files.list", listing
        if method == "GET" and query.get("alt") == "media":
            return "files.get_media", lambda: self.media(file_id, query)
        if method == "GET":
            return "files.get", lambda: (*reply(project(d.live(file_id, query).resource(),
                                                        fields)), d.path_of(file_id))
        if method == "DELETE":
            def delete():
                name = d.path_of(d.live(file_id, query).id)
                d.delete(file_id, user)
                return 204, {}, b"", name
            return "files.delete", delete
        kind = "files.create" if method == "POST" else "files.update"
        if method not in ("POST", "PATCH") or (method == "POST") != (file_id is None):
            raise DriveFault(404, "notFound", f"no route {method} {path}")
        upload_type = query.get("uploadType", "")
        if upload and upload_type == "resumable":
            return kind, lambda: self.open_session(file_id, body, fields, query, user)

        def change():
            meta, data = {}, None
            if upload and upload_type == "multipart":
                meta, data = parse_multipart(body, self.headers.get("content-type", ""))
            elif upload:
                data = body
            elif body:
                try:
                    meta = json.loads(body)
                except ValueError:
                    raise DriveFault(400, "parseError", f"body is not JSON: {body[:60]!r} "
                                     f"({self.headers.get('content-type')})") from None
            if file_id is None:
                item = d.new_item(meta, data or b"", self.headers.get("content-type", "")
                                  if upload_type == "media" else "", user, query)
                return (*reply(project(item.resource(), fields)), d.path_of(item.id))
            item = d.live(file_id, query)
            self.patch_meta(item, meta, query, user)
            if data is not None:
                d.set_content(item, data)
            return (*reply(project(item.resource(), fields)), d.path_of(item.id))
        return kind, change

    def patch_meta(self, item: Item, meta: dict, query: dict, user: str) -> None:
        d = self.drive
        add = [p for p in query.get("addParents", "").split(",") if p]
        remove = [p for p in query.get("removeParents", "").split(",") if p]
        if meta.get("trashed"):
            d.may_remove(item, user, trash=True)
        if (add or remove) and item.drive_id and d.roles.get(user, "organizer") == "writer":
            raise DriveFault(403, "insufficientFilePermissions", "a contributor cannot move "
                             "items in a shared drive")
        for p in add:
            d.live(p, query)
        if "name" in meta:
            item.name = meta["name"]
        if "trashed" in meta:
            item.trashed = bool(meta["trashed"])
        if add or remove:
            item.parents = [p for p in item.parents if p not in remove] + \
                [p for p in add if p not in item.parents]
        if meta or add or remove:
            item.modified = stamp()
            d.touch(item)

    def media(self, file_id: str, query: dict):
        item = self.drive.live(file_id, query)
        if item.mime == FOLDER:
            raise DriveFault(403, "fileNotDownloadable", "Only files with binary content "
                                                         "can be downloaded.")
        data, total = item.data, len(item.data)
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("range", "") or "")
        if m and total:
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else total - 1, total - 1)
            if start >= total:
                raise DriveFault(416, "requestedRangeNotSatisfiable", "range not satisfiable")
            return 206, {"Content-Type": item.mime,
                         "Content-Range": f"bytes {start}-{end}/{total}"}, \
                data[start:end + 1], self.drive.path_of(item.id)
        return 200, {"Content-Type": item.mime}, data, self.drive.path_of(item.id)

    def open_session(self, file_id: Optional[str], body: bytes, fields, query: dict, user: str):
        d = self.drive
        meta = json.loads(body) if body else {}
        if file_id is None:
            if meta.get("id") in d.items:
                raise DriveFault(409, "duplicate", "A file already exists with the provided ID.")
            for p in meta.get("parents") or [d.root_id]:
                d.live(p, query)
            target = meta.get("id") or d.new_id()
            meta = dict(meta, id=target)
        else:
            d.live(file_id, query)
            target = file_id
        total = self.headers.get("x-upload-content-length")
        sid = uuid.uuid4().hex
        d.sessions[sid] = Session(meta if file_id is None else None, target,
                                  int(total) if total else None,
                                  self.headers.get("x-upload-content-type", ""), fields=fields,
                                  user=user)
        host = self.headers.get("host")
        return 200, {"Location": f"http://{host}/upload/drive/v3/files?uploadType=resumable"
                                 f"&upload_id={sid}"}, b"", meta.get("name", target)

    def chunk(self, sid: str, body: bytes):
        d = self.drive
        s = d.sessions.get(sid)
        if s is None:
            raise DriveFault(404, "notFound", "upload session not found")
        label = d.path_of(s.file_id) if s.file_id in d.items else (s.create or {}).get("name", "")
        done = lambda: (200, {"Content-Type": "application/json"},  # noqa: E731
                        json.dumps(s.result).encode(), label)
        if s.result is not None:
            return done()
        rng = self.headers.get("content-range", "")
        m = re.fullmatch(r"bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)", rng.strip()) if rng else None
        if m and m.group(3) != "*":
            s.total = int(m.group(3))
        if m and m.group(1) is not None:
            start = int(m.group(1))
            if start > len(s.data):
                raise DriveFault(400, "badContent", "chunk does not continue the upload")
            s.data[start:] = body
        elif not rng:  # a single request with everything
            s.data[:] = body
        if s.total is not None and len(s.data) >= s.total:
            if s.create is not None:
                item = d.new_item(s.create, bytes(s.data[:s.total]), s.mime, s.user)
            else:
                item = d.live(s.file_id)
                d.set_content(item, bytes(s.data[:s.total]))
            s.result = project(item.resource(), s.fields)
            return done()
        headers = {"Range": f"bytes=0-{len(s.data) - 1}"} if s.data else {}
        return 308, headers, b"", label
