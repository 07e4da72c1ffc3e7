"""Rewards: turn any completion text into a number, never an exception.

A reward is the task verifier's score of the extracted answer (0..1), plus an
optional format bonus. Completions come from our own sampler and, re-scored,
from peers, so every function here treats its input as arbitrary text.

Answer extraction: the content of the *last* ``<answer>...</answer>`` pair.
Fallback when no complete pair exists (``ANSWER_FALLBACK``):
  * ``last_line`` (default): the last non-empty line; if it says "answer is X",
    "answer: X" or "answer = X", just X; a trailing period removed. Many
    reasoning-gym prompts ask for "only the final value", and a small model
    often obeys without tags; this keeps its correct answers.
  * ``none``: no tags, no answer (reward 0) -- strict, as in the paper.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Optional

MAX_ANSWER_CHARS = 2_000  # verifiers see at most this much: bounds their run time
FALLBACKS = ("last_line", "none")

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
_SAYS_RE = re.compile(r"\banswer\s*(?:is|:|=)\s*(.+)$", re.I)
_FORMAT_RE = re.compile(r"^\s*(?:<think>.*?</think>\s*)?(?:[^<]*?)<answer>\s*\S.*?</answer>\s*$",
                        re.S | re.I)


def extract_answer(text: str, fallback: str = "last_line") -> Optional[str]:
    """The answer a completion gives, or None when it gives none."""
    if not isinstance(text, str):
        return None
    matches = _ANSWER_RE.findall(text)
    if matches:
        return matches[-1].strip()[:MAX_ANSWER_CHARS]
    if fallback != "last_line":
        return None
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    said = _SAYS_RE.findall(lines[-1])
    answer = (said[-1] if said else lines[-1]).strip()
    if answer.endswith(".") and not answer.endswith(".."):
        answer = answer[:-1].strip()
    return answer[:MAX_ANSWER_CHARS] or None


def format_reward(text: str) -> float:
    """1.0 when the completion is (optional <think>) reasoning ending in one
    non-empty <answer>...</answer> block and nothing after it; else 0.0."""
    if not isinstance(text, str) or text.lower().count("<answer>") != 1:
        return 0.0
    return 1.0 if _FORMAT_RE.match(text) else 0.0


def safe_score(verify: Callable[[Optional[str]], float], answer: Optional[str]) -> float:
    """Call a verifier; any exception, NaN or out-of-range value becomes a
    number in [0, 1]. Verifiers are third-party code fed untrusted text."""
    try:
        value = float(verify(answer))
    except Exception:  # noqa: BLE001 - a verifier bug must not stop training
        return 0.0
    if math.isnan(value):
        return 0.0
    return min(1.0, max(0.0, value))


def completion_reward(text: str, verify: Callable[[Optional[str]], float], *,
                      format_weight: float = 0.0, fallback: str = "last_line") -> float:
    """The reward of one completion: verifier score + format_weight * format."""
    reward = safe_score(verify, extract_answer(text, fallback))
    if format_weight:
        reward += format_weight * format_reward(text)
    return reward


# --- verifiers for a user's own question set -------------------------------

_NUMBER_RE = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?$")


def normalize_text(text: str) -> str:
    return " ".join(str(text).strip().lower().split())


def parse_number(text: str) -> Optional[float]:
    """A plain number ("1,234.5", "-3", "2e3", "7/2"), else None."""
    cleaned = str(text).strip().replace(",", "").rstrip(".").strip()
    if cleaned.startswith("$"):
        cleaned = cleaned[1:]
    if "/" in cleaned:
        num, _, den = cleaned.partition("/")
        a, b = parse_number(num), parse_number(den)
        return a / b if a is not None and b not in (None, 0.0) else None
    if not _NUMBER_RE.match(cleaned):
        return None
    value = float(cleaned)
    return value if math.isfinite(value) else None


def exact_match(answer: Optional[str], truth: str) -> float:
    return float(answer is not None and normalize_text(answer) == normalize_text(truth))


def numeric_match(answer: Optional[str], truth: str, rel_tol: float = 1e-6) -> float:
    """Numbers compare by value (1e-6 relative); non-numbers fall back to exact."""
    if answer is None:
        return 0.0
    a, t = parse_number(answer), parse_number(truth)
    if a is None or t is None:
        return exact_match(answer, truth)
    return float(math.isclose(a, t, rel_tol=rel_tol, abs_tol=1e-9))
