"""Trust: who wrote a file of the shared folder, checked before a byte of it is used.

Everyone in a swarm can write to the shared folder (and strangers can, in a Drive folder
shared with anyone who has the link), so a file's name and content prove nothing about
who wrote it. Every record is *sealed* by its writer and *opened* by its readers here, in
this one module (DESIGN.md, "Trust in one place").

Keys. Each node has an Ed25519 key pair (rgym_exp/node_keys.py), made at its first start
in KEY_DIR (``~/.config/rl-swarm/keys/{NODE_ID}.key``, beside ``node_id``), never on the
shared folder. The coordinator pins its public key in experiment.json. A worker registers
its key once, in a file of its own: ``keys/{NODE_ID}.{key id}.json`` (signed by that key;
the key id, 16 hex digits of the key's SHA-256, is in the name, so no one can write it
for a key they do not hold). The *first* registration of a NODE_ID wins (trust on first
use), and first means the oldest by the store's clock -- Drive's createdTime, a local
file's ctime -- which no writer can backdate: an impostor's registration made later loses
whatever it says. A reader keeps the key it found for each node and, for a node process,
remembers it on disk (``KEY_DIR/known/{NODE_ID}-{folder}.json``), so a later rewrite of
experiment.json, of keys/ or of a peer record cannot swap a key. Peer records, heartbeats
included, are signed like every other file and checked against the registered key.
Losing a key file means the node cannot continue under its NODE_ID in the experiments it
joined (README, "Keys").

Sealing. A sealed file is the record's JSON object with one more member at its end:

    {... the record ..., "signature": {"by": "w1", "key": "<32 bytes, base64>",
                                       "ed25519": "<64 bytes, base64>"}}

so it stays JSON a person can read. The signature covers the record's exact bytes (the
file without that member) and the file's path in the folder: a file copied to another
path (another round, another node's name, another claim in its name) no longer verifies.

Whose key. The path says who must have signed it (``signer_of``): experiment.json, the
state file and retired rounds: the coordinator (the key pinned in experiment.json); a
peer record, rollout file, submission or checkpoint manifest: the node its path names
(the key it registered, looked up once when first needed). A file that is
unsigned, signed by another node or key, badly signed, or from a node with no registered
key is *refused*: ``Refused`` (a ValueError, so every reader treats it as "not there
yet"), counted by the node it claims and why, and summed up in one log line per round
(``round_line``). Refusing an unsigned file costs no request: the seal is looked at
before any key is fetched. A file that is no whole JSON (a torn read: Drive serves them)
is a plain ValueError, not there yet, and not counted as refused.

Parsing (``parse_record``): one size, depth and UTF-8 check for every record type, so no
record can make a reader recurse (RecursionError) or load an unbounded file.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import time
import uuid
from collections import Counter
from typing import Optional

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from genrl.rollouts import NAME_PATTERN, parse_json
from rgym_exp.drive.layout import keys_dir, parse_registration, registration as registration_path
from rgym_exp.drive.store import StoreError
from rgym_exp.node_keys import Keys, fingerprint, key_id  # noqa: F401 - Keys: readers' one door
from rgym_exp.refusals import MAX_SIGNERS, Refusals  # noqa: F401 - status shows MAX_SIGNERS

log = logging.getLogger(__name__)

MAX_DEPTH = 16                      # nesting of any record (the deepest real one has 4)
DOMAIN = b"rl-swarm signed file 1\n"
COORDINATOR = "(coordinator)"       # signer_of's answer for the coordinator's files
LISTING_S = 10.0                    # keys/ listed at most this often for lookups
MAX_REGISTRATIONS = 8               # registrations of one NODE_ID read, oldest first
RETRY_UNKNOWN_S = 30.0              # a node with no registered key is looked up again after this
_KEY = r"[A-Za-z0-9+/]{43}="
_SIG = r"[A-Za-z0-9+/]{86}=="
_SEAL_RE = re.compile(rf', "signature": \{{"by": "({NAME_PATTERN})", "key": "({_KEY})", '
                      rf'"ed25519": "({_SIG})"\}}\}}\Z'.encode())
_N = NAME_PATTERN
_SIGNERS = [(re.compile(rf"^(experiments/[^/]+)/{pattern}$"), who) for pattern, who in (
    (r"experiment\.json", COORDINATOR), (r"state/current_state\.json", COORDINATOR),
    (r"retired/round_[0-9]+\.json", COORDINATOR), (rf"peers/({_N})\.json", 1),
    (rf"rollouts/round_[0-9]+/({_N})(?:\.[0-9]{{1,4}})?(?:\.s[0-9]{{1,3}})?\.json", 1),
    (rf"submissions/round_[0-9]+/({_N})\.json", 1), (rf"keys/({_N})\.[0-9a-f]{{16}}\.json", 1),
    (rf"checkpoints/({_N})/round_[0-9]+/manifest\.json", 1))]


class Refused(ValueError):
    """A file failed verification; ``reason`` is one of a few fixed phrases."""

    def __init__(self, path: str, signer: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.signer, self.reason = path, signer, reason


def parse_record(data: bytes, max_bytes: int, max_depth: int = MAX_DEPTH):
    """Strict JSON of a record: size cap, UTF-8, no NaN, nesting at most ``max_depth``
    (checked without recursion). ValueError says what is wrong."""
    doc = parse_json(data, max_bytes)
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > max_depth:
                raise ValueError(f"JSON nested deeper than {max_depth} levels")
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict)
                                                  else value))
    return doc


def signer_of(path: str) -> Optional[tuple[str, str]]:
    """(experiment root, node id or COORDINATOR) that must have signed ``path``; None for
    files that are not records (logs, checkpoint weights, claim markers)."""
    for rx, who in _SIGNERS:
        m = rx.match(path)
        if m:
            return m.group(1), (m.group(2) if who == 1 else COORDINATOR)
    return None


class Trust(Refusals):
    """Seals this node's records and opens everyone's (see the module doc).

    ``store``: where registrations are fetched from; ``keys``/``node``: this node's key
    pair and id (None: a reader that signs nothing, as status and report are); ``cache``:
    a local file where the keys seen are kept across restarts (None: memory only)."""

    def __init__(self, store, keys: Optional[Keys] = None, node: str = "",
                 cache: Optional[str] = None, clock=time.monotonic):
        self.store, self.keys, self.node, self.cache, self.clock = store, keys, node, cache, clock
        Refusals.__init__(self)
        self.known: dict[str, dict] = {}      # root -> {"coordinator": [id, key] | None,
        #                                        "nodes": {id: key}, "experiment": sealed text}
        self._listed: dict[str, tuple] = {}   # root -> (when, keys/ entries)
        self._unknown: dict[tuple, float] = {}  # (root, node) -> when a lookup found no key
        self.stats = Counter()                # signed, opened, seconds
        self._load()

    # --- the keys this node has seen --------------------------------------------------

    def _load(self) -> None:
        if not self.cache or not os.path.exists(self.cache):
            return
        try:
            with open(self.cache, "rb") as fh:
                doc = parse_record(fh.read(), 16 << 20)
            self.known = {root: {"coordinator": v.get("coordinator"),
                                 "nodes": dict(v.get("nodes") or {}),
                                 "experiment": v.get("experiment"),
                                 "claimed": v.get("claimed", -1)} for root, v in doc.items()}
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            raise ValueError(f"the keys this node has seen ({self.cache}) are unreadable "
                             f"({exc}); restore the file from your backup of KEY_DIR") from None

    def _save(self) -> None:
        if not self.cache:
            return
        tmp = f"{self.cache}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            os.makedirs(os.path.dirname(self.cache), mode=0o700, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(self.known, fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.cache)
        except OSError as exc:
            log.warning("keys seen not saved to %s: %s", self.cache, exc)
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _root(self, root: str) -> dict:
        return self.known.setdefault(root, {"coordinator": None, "nodes": {}, "experiment": None})

    def node_key(self, root: str, node: str) -> Optional[str]:
        """The key registered for ``node`` as this reader first saw it (or this node's own)."""
        if self.keys is not None and node == self.node:
            return self.keys.public
        with self._lock:
            return self._root(root)["nodes"].get(node)

    def coordinator(self, root: str) -> Optional[tuple[str, str]]:
        """(node id, key) pinned in this experiment's experiment.json, as first seen."""
        with self._lock:
            got = self._root(root)["coordinator"]
        return tuple(got) if got else None

    def pinned_experiment(self, root: str) -> Optional[bytes]:
        """experiment.json's sealed bytes as this node first verified them."""
        with self._lock:
            text = self._root(root)["experiment"]
        return text.encode() if isinstance(text, str) else None

    def _learn(self, root: str, node: str, key: str, experiment: Optional[bytes] = None) -> None:
        with self._lock:
            entry = self._root(root)
            if experiment is not None:
                entry["coordinator"], entry["experiment"] = [node, key], experiment.decode()
            elif node != self.node or self.keys is None:
                entry["nodes"][node] = key
            self._unknown.pop((root, node), None)
            self._save()

    def remember_own(self, root: str, beat: int) -> None:
        """Record that this node registered its key in ``root``, claiming it at ``beat`` (a
        restart on this machine then knows an impostor's record for what it is, and claims
        a later beat even when its own record was wiped)."""
        with self._lock:
            entry = self._root(root)
            entry["nodes"][self.node] = self.keys.public
            entry["claimed"] = beat
            self._save()

    def claimed(self, root: str) -> int:
        """The beat at which this node last claimed its NODE_ID in ``root`` here (-1: never)."""
        with self._lock:
            value = self._root(root).get("claimed", -1)
        return value if type(value) is int else -1

    def registered_here(self, root: str) -> bool:
        """Whether this node's key is the one this machine registered for it in ``root``."""
        with self._lock:
            return self._root(root)["nodes"].get(self.node) == self.keys.public

    # --- sealing and opening -----------------------------------------------------------

    def seal(self, path: str, body: bytes) -> bytes:
        """``body`` (a JSON object's bytes) with this node's signature over it and ``path``."""
        if self.keys is None:
            raise RuntimeError("this reader has no key: it cannot sign")
        if not (body.startswith(b"{") and body.endswith(b"}")) or body.strip() == b"{}":
            raise ValueError(f"{path}: only a non-empty JSON object can be sealed")
        t0 = time.perf_counter()
        sig = self.keys.sign(DOMAIN + path.encode() + b"\n" + body)
        sealed = body[:-1] + (f', "signature": {{"by": "{self.node}", "key": "{self.keys.public}", '
                              f'"ed25519": "{sig}"}}}}').encode()
        self.stats["signed"] += 1
        self.stats["seconds"] += time.perf_counter() - t0
        return sealed

    def open(self, path: str, data: bytes, key: Optional[str] = None) -> bytes:
        """The verified record bytes of the file at ``path``; raises Refused (counted).
        ``key``: verify with this key instead of the registered one (a registration, checked
        by its own key: ``first_registered``)."""
        t0 = time.perf_counter()
        try:
            return self._open(path, data, key)
        except Refused as exc:
            self.count(exc.signer, exc.reason)
            raise
        finally:
            self.stats["opened"] += 1
            self.stats["seconds"] += time.perf_counter() - t0

    def _open(self, path: str, data: bytes, key: Optional[str]) -> bytes:
        where = signer_of(path)
        if where is None:
            raise Refused(path, "-", "not a signed file's path")
        root, signer = where
        experiment = path == f"{root}/experiment.json"
        registration = experiment or path.startswith(keys_dir(root) + "/")
        pinned = self.coordinator(root)
        claimed = signer if signer != COORDINATOR else (pinned[0] if pinned else "coordinator")
        m = _SEAL_RE.search(data)
        if m is None:
            parse_json(data, len(data))   # ValueError: torn or no JSON, not there yet (uncounted)
            raise Refused(path, claimed, "unsigned")
        body, by, inline = data[:m.start()] + b"}", m.group(1).decode(), m.group(2).decode()
        if signer != COORDINATOR and by != signer:
            raise Refused(path, claimed, f"signed by another node ({by})")
        if key is None:
            key = self._expected(root, signer, fetch=not registration)
            if key is None and registration:
                key = inline                          # first use: the key it registers
        if key is None:
            raise Refused(path, claimed, "no key registered")
        if inline != key:
            raise Refused(path, claimed, "signed by another key")
        if registration and not experiment and not path.endswith(f".{key_id(key)}.json"):
            raise Refused(path, claimed, "registers another key than its name says")
        try:
            Ed25519PublicKey.from_public_bytes(base64.b64decode(key)).verify(
                base64.b64decode(m.group(3)), DOMAIN + path.encode() + b"\n" + body)
        except (InvalidSignature, ValueError):
            raise Refused(path, claimed, "bad signature") from None
        if experiment:
            try:
                doc = parse_record(body, len(body))
            except ValueError:
                doc = None
            if not isinstance(doc, dict) or doc.get("coordinator_key") != key \
                    or doc.get("coordinator") != by:
                raise Refused(path, claimed, "pins another key than it is signed with")
            if pinned is None or self.pinned_experiment(root) != data:
                self._learn(root, by, key, experiment=data)   # first seen, or made anew by the
                #                                               same coordinator (same key)
        elif registration and self.node_key(root, signer) is None:
            self._learn(root, signer, key)
        return body

    def _expected(self, root: str, signer: str, fetch: bool) -> Optional[str]:
        """The key ``signer``'s files must be signed with, as this reader knows it (looked up
        once if ``fetch``); None when it knows none."""
        pinned = self.coordinator(root)
        if signer == COORDINATOR and not fetch:      # experiment.json itself
            return pinned[1] if pinned else None
        if signer == COORDINATOR:   # no experiment.json (yet): only what this node signed
            pinned = pinned or self._fetch_coordinator(root)
            return pinned[1] if pinned else (self.keys.public if self.keys else None)
        key = self.node_key(root, signer)
        if key is None and pinned and pinned[0] == signer:
            return pinned[1]                          # the coordinator's own peer record
        return key or (self._fetch_node(root, signer) if fetch else None)

    def _fetch_node(self, root: str, node: str) -> Optional[str]:
        """``node``'s registered key: its oldest registration that verifies (one listing of
        keys/, not repeated for a while when there is none)."""
        with self._lock:
            if self.clock() - self._unknown.get((root, node), -1e18) < RETRY_UNKNOWN_S:
                return None
        key = self.first_registered(root, node)     # opening it learned the key
        if key is None:
            with self._lock:
                self._unknown[(root, node)] = self.clock()
        return key

    def _registrations(self, root: str, node: str) -> list[str]:
        """Paths of ``node``'s registrations, oldest first by the store's own clock (a writer
        can date a file's modification, not its creation: Drive's createdTime, a local
        file's ctime), at most MAX_REGISTRATIONS."""
        found = [e for e in self._keys_listing(root, node) if not e.is_dir
                 and (parse_registration(e.name) or ("",))[0] == node]
        found.sort(key=lambda e: (e.created or e.mtime, e.name))
        return [f"{keys_dir(root)}/{e.name}" for e in found[:MAX_REGISTRATIONS]]

    def _keys_listing(self, root: str, node: Optional[str] = None) -> list:
        """keys/ as listed at most LISTING_S ago (the first look at many peers costs one
        listing), listed again when ``node`` is not in it and it is older than a second."""
        with self._lock:
            at, entries = self._listed.get(root, (-1e18, []))
        age = self.clock() - at
        if age > LISTING_S or (node is not None and age > 1.0 and not any(
                e.name.startswith(node + ".") for e in entries)):
            entries = self.store.list(keys_dir(root))
            with self._lock:
                self._listed[root] = (self.clock(), entries)
        return entries

    def registered_nodes(self, root: str) -> set[str]:
        """NODE_IDs with a registration file in keys/ (not verified: ``first_registered``)."""
        return {got[0] for got in (parse_registration(e.name) for e in self._keys_listing(root)
                                   if not e.is_dir) if got}

    def first_registered(self, root: str, node: str) -> Optional[str]:
        """The key of ``node``'s oldest registration that verifies (None: none does),
        whatever this reader has cached: the first registration of a NODE_ID wins."""
        for path in self._registrations(root, node):
            try:
                data = self.store.read(path, 64 * 1024)
                m = _SEAL_RE.search(data or b"")
                if m is not None:
                    self.open(path, data, key=m.group(2).decode())
                    return m.group(2).decode()
            except (StoreError, ValueError):
                continue
        return None

    def register(self, root: str) -> str:
        """Register this node's key in ``root`` (keys/{NODE_ID}.{key id}.json, written once:
        rewriting it would make it younger than an impostor's) and return the key of the
        NODE_ID's first registration, this node's own or another machine's. A NODE_ID some
        other key registered first is not written to at all (the node is refused)."""
        with self._lock:
            self._listed.pop(root, None)          # a fresh listing: who registered first
        first = self.first_registered(root, self.node)
        if first is not None and first != self.keys.public:
            return first
        if first is None:                         # none verifies: ours is written (once)
            path = registration_path(root, self.node, key_id(self.keys.public))
            body = json.dumps({"node_id": self.node, "key": self.keys.public,
                               "registered_at": time.time()}).encode()
            self.store.write(path, self.seal(path, body))
            with self._lock:
                self._listed.pop(root, None)
            first = self.first_registered(root, self.node)   # two at once: the oldest wins
        return first or self.keys.public

    def _fetch_coordinator(self, root: str) -> Optional[tuple[str, str]]:
        with self._lock:
            if self.clock() - self._unknown.get((root, COORDINATOR), -1e18) < RETRY_UNKNOWN_S:
                return None
        self._peek_or_none(f"{root}/experiment.json")
        got = self.coordinator(root)
        if got is None:
            with self._lock:
                self._unknown[(root, COORDINATOR)] = self.clock()
        return got

    def _peek_or_none(self, path: str) -> None:
        try:
            data = self.store.read(path, 256 * 1024)
            if data is not None:
                self.open(path, data)
        except (StoreError, ValueError):
            pass

    # --- reading and writing through the store ---------------------------------------------

    def read(self, path: str, max_bytes: int) -> Optional[bytes]:
        """The verified record at ``path``, None if there is none; Refused or StoreError."""
        data = self.store.read(path, max_bytes)
        return None if data is None else self.open(path, data)

    def write(self, path: str, body: bytes) -> None:
        self.store.write(path, self.seal(path, body))
