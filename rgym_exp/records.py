"""The small JSON records of the folder protocol, and how they are read.

Each record has one writer (DESIGN.md invariant 1). Reading one never crashes:
a missing, torn, oversized or malformed file reads as None ("not there yet"),
and the reader counts it. ``StateTracker`` keeps the newest round state seen,
because Drive can serve a stale copy after a newer one (invariant 4).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Optional, TypeVar

from genrl.rollouts import parse_json
from rgym_exp.drive.store import Store, StoreError

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 2     # 2: namespaced metrics, one record per round, rollout signal claims
RECORD_MAX_BYTES = 256 * 1024


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
    return cls(**kwargs)  # a missing required field raises TypeError


class RecordReader:
    """Reads records, counting files it could not use (not there yet)."""

    def __init__(self, store: Store):
        self.store = store
        self.unreadable = 0

    def read(self, cls: type[R], path: str) -> Optional[R]:
        try:
            data = self.store.read(path, RECORD_MAX_BYTES)
        except StoreError as exc:
            self.unreadable += 1
            log.debug("cannot read %s: %s", path, exc)
            return None
        if data is None:
            return None
        try:
            return from_dict(cls, parse_json(data, RECORD_MAX_BYTES))
        except (ValueError, TypeError) as exc:
            self.unreadable += 1
            log.debug("ignoring unusable %s: %s", path, exc)
            return None


def write_record(store: Store, path: str, record) -> None:
    store.write(path, to_json(record))


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
