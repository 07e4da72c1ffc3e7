"""RolloutGroup: the unit nodes share, its JSON codec, and validation of what
peers send.

A group is one question with the G completions one node sampled for it. Nodes
share decoded text (never token ids, weights or gradients), so a receiver with a
different model and tokenizer can still train on it. The sender's rewards travel
along for information only: receivers re-score with their own verifier.

Everything decoded here came from another machine. ``decode_rollouts`` never
raises: it returns the groups that passed and, for each rejection, a reason.
Caps bound memory and time: file size, groups per file, completions per group,
characters per text, depth and size of the metadata.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass, field

SCHEMA_VERSION = 1
FILE_KIND = "rl-swarm/rollouts"
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"  # node ids: safe as file names
NODE_ID_RE = re.compile(f"^{NAME_PATTERN}$")


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 8 * 1024 * 1024
    max_groups_per_file: int = 256
    max_completions_per_group: int = 64
    max_completion_chars: int = 32_000
    max_question_chars: int = 32_000
    max_source_chars: int = 4_000       # task metadata, as JSON
    max_model_chars: int = 200


DEFAULT_LIMITS = Limits()


@dataclass
class RolloutGroup:
    node_id: str                     # who generated it
    round: int                       # the round it was generated in
    model: str                       # the sender's MODEL_NAME (informational)
    question: str                    # the question text, without any chat template
    source: dict                     # task metadata that regenerates question and answer
    completions: list[str]
    rewards: list[float]             # the sender's scores: informational only
    ended: list[bool] = field(default_factory=list)  # completion stopped at EOS (not cut off)

    def __post_init__(self):
        if not self.ended:
            self.ended = [True] * len(self.completions)


def encode_rollouts(groups: list[RolloutGroup], node_id: str, round_: int, chunk: int = 0) -> bytes:
    """One node's rollout file for one round (or one chunk of it)."""
    doc = {"schema": SCHEMA_VERSION, "kind": FILE_KIND, "node_id": node_id, "round": round_,
           "chunk": chunk, "created_at": time.time(),
           "groups": [{k: v for k, v in asdict(g).items() if k not in ("node_id", "round")}
                      for g in groups]}
    return json.dumps(doc, ensure_ascii=False, allow_nan=False).encode("utf-8")


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed")


def parse_json(data: bytes, max_bytes: int):
    """Strict JSON from untrusted bytes: size cap, UTF-8, no NaN/Infinity,
    nesting bounded by the interpreter (RecursionError is caught)."""
    if len(data) > max_bytes:
        raise ValueError(f"file is {len(data)} bytes, over the {max_bytes}-byte cap")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("file is not UTF-8 text") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except ValueError as exc:
        raise ValueError(f"not valid JSON ({str(exc)[:80]})") from None


def _check_text(value, name: str, cap: int) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} is {type(value).__name__}, not text")
    if len(value) > cap:
        raise ValueError(f"{name} has {len(value)} characters, over the cap of {cap}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name} holds invalid unicode (a lone surrogate)") from None
    return value


def _check_source(value, limits: Limits) -> dict:
    if not isinstance(value, dict):
        raise ValueError("source is not an object")
    if len(json.dumps(value)) > limits.max_source_chars:
        raise ValueError(f"source metadata is over {limits.max_source_chars} characters")
    return value


def _check_group(raw, limits: Limits, node_id: str, round_: int) -> RolloutGroup:
    if not isinstance(raw, dict):
        raise ValueError("group is not an object")
    completions = raw.get("completions")
    if not isinstance(completions, list) or not completions:
        raise ValueError("completions missing or empty")
    if len(completions) > limits.max_completions_per_group:
        raise ValueError(f"{len(completions)} completions, over the cap of "
                         f"{limits.max_completions_per_group}")
    completions = [_check_text(c, "completion", limits.max_completion_chars) for c in completions]
    rewards = raw.get("rewards")
    if (not isinstance(rewards, list) or len(rewards) != len(completions)
            or not all(type(r) in (int, float) and math.isfinite(r) for r in rewards)):
        raise ValueError("rewards must be one finite number per completion")
    ended = raw.get("ended", [True] * len(completions))
    if (not isinstance(ended, list) or len(ended) != len(completions)
            or not all(isinstance(e, bool) for e in ended)):
        raise ValueError("ended must be one true/false per completion")
    return RolloutGroup(node_id=node_id, round=round_,
                        model=_check_text(raw.get("model", ""), "model", limits.max_model_chars),
                        question=_check_text(raw.get("question"), "question",
                                             limits.max_question_chars),
                        source=_check_source(raw.get("source"), limits),
                        completions=completions, rewards=[float(r) for r in rewards], ended=ended)


def decode_rollouts(data: bytes, expected_node: str | None = None,
                    limits: Limits = DEFAULT_LIMITS) -> tuple[list[RolloutGroup], list[str]]:
    """(valid groups, rejection reasons) from one peer file; never raises.
    ``expected_node`` is the node id the file's name claims: the content must agree."""
    try:
        doc = parse_json(data, limits.max_file_bytes)
        if not isinstance(doc, dict) or doc.get("kind") != FILE_KIND:
            raise ValueError("not a rollout file")
        if doc.get("schema") != SCHEMA_VERSION:
            raise ValueError(f"schema {str(doc.get('schema'))[:20]} is not {SCHEMA_VERSION}")
        node_id, round_ = doc.get("node_id"), doc.get("round")
        if not isinstance(node_id, str) or not NODE_ID_RE.fullmatch(node_id):
            raise ValueError("node_id missing or malformed")
        if expected_node is not None and node_id != expected_node:
            raise ValueError(f"file of {expected_node} claims to be from {node_id}")
        if type(round_) is not int or not 0 <= round_ < 10**9:
            raise ValueError("round missing or malformed")
        groups = doc.get("groups")
        if not isinstance(groups, list):
            raise ValueError("groups missing")
        if len(groups) > limits.max_groups_per_file:
            raise ValueError(f"{len(groups)} groups, over the cap of {limits.max_groups_per_file}")
    except ValueError as exc:
        return [], [str(exc)]
    valid, reasons = [], []
    for raw in groups:
        try:
            valid.append(_check_group(raw, limits, node_id, round_))
        except (ValueError, TypeError, RecursionError) as exc:
            reasons.append(f"group rejected: {exc}")
    return valid, reasons
