"""The small JSON records of the folder protocol, and how they are read.

Each record has one writer (DESIGN.md invariant 1) and is signed by it: written through
``write_record`` (sealed by rgym_exp/trust.py) and read through ``RecordReader``, which
verifies the seal before it parses a byte. Reading one never crashes: a missing, torn,
oversized, too deeply nested, malformed or refused (unsigned, forged) file reads as None
("not there yet"), and the reader counts it. ``StateTracker`` keeps the newest round
state seen, because Drive can serve a stale copy after a newer one (invariant 4).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Optional, TypeVar

from rgym_exp.drive.layout import NAME_RE
from rgym_exp.drive.store import Store, StoreError
from rgym_exp.trust import Refused, Trust, parse_record

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 3     # 2: namespaced metrics, one record per round, rollout signal claims;
#                          3: every record signed (rgym_exp/trust.py)
RECORD_MAX_BYTES = 256 * 1024
MAX_ROUNDS_LIMIT = 10 ** 9


@dataclass
class ExperimentInfo:
    """experiment.json: written once by the coordinator; settings that every
    node must share, checked by each node at start."""
    name: str
    protocol: int
    created_at: float
    shared: dict                        # setting name -> value (see config.SHARED_SETTINGS)
    questions: dict                     # question source fingerprint
    max_rounds: int
    coordinator: str
    instance: str = ""                  # random at creation: this experiment, not another of its name
    coordinator_key: str = ""           # the coordinator's public key (Ed25519, base64): pinned

    @property
    def instance_id(self) -> str:
        """Tells this experiment from an earlier one of the same name (older files: created_at)."""
        return self.instance or repr(self.created_at)


@dataclass
class RoundState:
    """state/current_state.json: written by the coordinator only."""
    round: int
    started_at: float
    deadline: float                     # coordinator's clock; informational for others
    max_rounds: int
    finished: bool = False
    updated_at: float = 0.0
    coordinator: str = ""
    waiting_for: list = field(default_factory=list)  # live workers that have not submitted

    def newer_than(self, other: Optional["RoundState"]) -> bool:
        if other is None:
            return True
        return (self.round, self.finished, self.updated_at) > (other.round, other.finished,
                                                               other.updated_at)


@dataclass
class PeerRecord:
    """peers/{node_id}.json: each node's registration and heartbeat."""
    node_id: str
    role: str
    session: str                        # random per process: detects a second writer
    beat: int                           # +1 per heartbeat: liveness without trusting clocks
    status: str                         # starting | running | finished | stopped | failed
    updated_at: float = 0.0             # writer's clock; informational
    host: str = ""
    pid: int = 0
    model: str = ""
    round: int = -1                     # round the node is working on
    phase: str = ""                     # what it is doing now
    last_reward: Optional[float] = None
    external_used: Optional[int] = None
    last_eval: Optional[float] = None    # latest held-out accuracy
    started_at: float = 0.0
    interval: float = 0.0               # seconds between its heartbeats (others watch that long)
    used_from: dict = field(default_factory=dict)  # peer groups trained on: origin -> [groups,
    #                                     sum of their mean rewards] (rgym_exp/credit.py)
    refused: dict = field(default_factory=dict)    # files this node refused: the node each
    #                                     claimed -> {reason: count} (rgym_exp/trust.py)


@dataclass
class Submission:
    """submissions/round_R/{node_id}.json: a worker's round R: its metrics record (the same
    dict as its metrics.jsonl line) and the external groups it trained on."""
    round: int
    node_id: str
    model: str = ""
    finished_at: float = 0.0
    metrics: dict = field(default_factory=dict)
    external: list = field(default_factory=list)   # groups trained on: node, round, key, reward


# metric names of protocol 1 folders -> today's (readers of older folders translate)
LEGACY_METRICS = {
    "reward_mean": "reward/mean", "reward_std": "reward/std",
    "external_groups_received": "external/considered", "external_groups_used": "external/used",
    "external_zero_advantage": "external/zero_advantage", "external_rejected": "external/rejected",
    "local_groups": "local/groups", "local_groups_with_signal": "local/with_signal",
    "completions_ended_frac": "completions/ended_frac",
    "answer_tag_frac": "completions/answer_tag_frac", "round_seconds": "time/round_s",
}


def current_metrics(doc: dict) -> dict:
    """A metrics record under today's names, whichever protocol version wrote it."""
    return {LEGACY_METRICS.get(k, k): v for k, v in doc.items()}


R = TypeVar("R")


def to_json(record) -> bytes:
    return json.dumps(asdict(record), allow_nan=False, default=str).encode()


def from_dict(cls: type[R], doc) -> R:
    """Build a record from untrusted JSON: known fields only, types checked."""
    if not isinstance(doc, dict):
        raise ValueError("not an object")
    kwargs = {}
    for f in fields(cls):
        if f.name not in doc:
            continue
        value, kind = doc[f.name], str(f.type)
        ok = {"int": type(value) is int, "float": type(value) in (int, float),
              "bool": isinstance(value, bool), "str": isinstance(value, str),
              "dict": isinstance(value, dict), "list": isinstance(value, list),
              "Optional[float]": value is None or type(value) in (int, float),
              "Optional[int]": value is None or type(value) is int}.get(kind, True)
        if not ok:
            raise ValueError(f"field {f.name} has the wrong type")
        kwargs[f.name] = float(value) if kind == "float" else value
    return check(cls(**kwargs))  # a missing required field raises TypeError


def check(record):
    """``record`` if its values are in range, else ValueError (what types cannot say)."""
    if isinstance(record, RoundState) and not (
            0 <= record.round < record.max_rounds <= MAX_ROUNDS_LIMIT):
        raise ValueError(f"round {record.round} of {record.max_rounds} is out of range")
    if isinstance(record, (PeerRecord, Submission)) and not NAME_RE.fullmatch(record.node_id):
        raise ValueError("node_id is not a node name")
    if isinstance(record, PeerRecord) and record.beat < 0:
        raise ValueError("beat is negative")
    if isinstance(record, Submission) and not 0 <= record.round < MAX_ROUNDS_LIMIT:
        raise ValueError("round is out of range")
    return record


def parse(cls: type[R], body: bytes, max_bytes: int = RECORD_MAX_BYTES) -> R:
    """A record from verified bytes: one size and depth limit (trust.parse_record), then
    known fields, types and ranges. ValueError or TypeError when unusable."""
    return from_dict(cls, parse_record(body, max_bytes))


class RecordReader:
    """Reads records, verifying each (``trust``; default: a reader with no key of its own)
    and counting files it could not use: ``unreadable`` (not there yet) and ``refused``
    (failed verification: rgym_exp/trust.py counts them by claimed signer and reason)."""

    def __init__(self, store: Store, trust: Optional[Trust] = None):
        self.store = store
        self.trust = trust or Trust(store)
        self.unreadable = 0
        self.refused = 0

    def read(self, cls: type[R], path: str) -> Optional[R]:
        try:
            data = self.trust.read(path, RECORD_MAX_BYTES)
        except StoreError as exc:
            self.unreadable += 1
            log.debug("cannot read %s: %s", path, exc)
            return None
        except Refused as exc:
            self.refused += 1
            log.debug("refusing %s", exc)
            return None
        except ValueError as exc:          # torn, or no JSON: not there yet
            self.unreadable += 1
            log.debug("ignoring unusable %s: %s", path, exc)
            return None
        if data is None:
            return None
        try:
            return parse(cls, data)
        except (ValueError, TypeError) as exc:
            self.unreadable += 1
            log.debug("ignoring unusable %s: %s", path, exc)
            return None


class ExperimentMismatch(RuntimeError):
    """This node's shared settings (or protocol, or key) differ from the experiment's."""


def old_protocol(data: bytes) -> Optional[int]:
    """The protocol an unsigned experiment.json says wrote it, if an older one."""
    try:
        doc = json.loads(data[:RECORD_MAX_BYTES].decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    version = doc.get("protocol") if isinstance(doc, dict) else None
    return version if type(version) is int and 0 < version < PROTOCOL_VERSION else None


def read_info(store: Store, layout, trust: Trust, starting: bool = False
              ) -> Optional[ExperimentInfo]:
    """experiment.json, verified; the copy ``trust`` first verified when the folder's was
    replaced by another (counted as refused); None when there is none (or none usable).
    ExperimentMismatch for a folder written by an older protocol, without signatures, and,
    when ``starting``, for one signed by another coordinator key than this node first saw
    (the experiment made anew by another coordinator, or replaced: the node cannot tell)."""
    path = layout.experiment_file
    try:
        data = store.read(path, RECORD_MAX_BYTES)
    except StoreError as exc:
        log.debug("cannot read %s: %s", path, exc)
        return None
    if data is None:
        return None
    try:
        body = trust.open(path, data)
    except Refused as exc:
        pinned = trust.pinned_experiment(layout.root)
        if pinned is not None and starting and exc.reason == "signed by another key":
            raise ExperimentMismatch(
                f"{path} is signed by another coordinator key than the one this node first saw "
                f"there (kept in {trust.cache}): if the experiment was deleted and made anew by "
                "another coordinator, delete that file and start again; if not, someone "
                "replaced experiment.json -- the coordinator writes it back while it runs")
        if pinned is not None:
            body = trust.open(path, pinned)
        elif old_protocol(data) is not None:
            raise ExperimentMismatch(
                f"experiment {layout.experiment} was written by folder protocol "
                f"{old_protocol(data)}, without signatures; this code speaks protocol "
                f"{PROTOCOL_VERSION} and trusts only signed folders (rgym_exp/trust.py), so it "
                "refuses it: use a new EXPERIMENT_NAME (or the older code to finish that "
                "experiment)") from None
        else:
            log.debug("refusing %s", exc)
            return None
    except ValueError as exc:            # torn, or no JSON: not there yet
        log.debug("ignoring unusable %s: %s", path, exc)
        return None
    try:
        return parse(ExperimentInfo, body)
    except (ValueError, TypeError) as exc:
        log.debug("ignoring unusable %s: %s", path, exc)
        return None


def write_record(trust: Trust, path: str, record) -> None:
    """Write ``record`` at ``path``, sealed with ``trust``'s key."""
    trust.write(path, to_json(record))


class StateTracker:
    """The newest RoundState this process has seen; stale reads are ignored."""

    def __init__(self, reader: RecordReader, path: str):
        self.reader, self.path = reader, path
        self.state: Optional[RoundState] = None
        self.stale_reads = 0
        self.changed_at = time.monotonic()

    def refresh(self) -> Optional[RoundState]:
        seen = self.reader.read(RoundState, self.path)
        if seen is not None:
            if seen.newer_than(self.state):
                if self.state is None or (seen.round, seen.finished) != (self.state.round,
                                                                         self.state.finished):
                    self.changed_at = time.monotonic()
                self.state = seen
            elif (seen.round, seen.finished) < (self.state.round, self.state.finished):
                self.stale_reads += 1
                log.debug("ignoring stale state (round %d < %d)", seen.round, self.state.round)
        return self.state
