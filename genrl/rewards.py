"""Rewards: turn any completion text into a number, never an exception.

A reward is correctness plus an optional format bonus. Completions come from our
own sampler and, re-scored, from peers, so every function here treats its input
as arbitrary text.

Correctness: the task verifier scores the extracted answer in [0, 1]. By default
only a fully correct answer counts (1, else 0): reasoning-gym gives partial credit
to some wrong answers (0.01-0.25, or len(oracle)/len(answer) for an answer that
merely contains the right one), and GRPO's per-group normalisation would turn
such crumbs into a full-size advantage (bench/rewards.py). ``partial_credit=True``
keeps the verifier's raw score, as the SAPO paper's code does.

Answer extraction: the content of the *last* ``<answer>...</answer>`` pair
(nested or doubled tags flattened; an unclosed final ``<answer>`` counts up to the
end of its line). When a completion has no tag at all (``fallback``):
  * ``guarded`` (default): the last explicit statement ("the answer is X",
    "Answer: X", "The answer to this problem is X", "the sum is X", ``\\boxed{X}``),
    else a last line that restates the question and answers it ("The day of the week
    for 09/20/22 is Sunday."), else what a last-line equation equals ("2 + 5 = 7"), else
    a last line that is a bare value (a few words at most). Never an answer made only of
    the question's own words: echoing the prompt, or any piece of it, earns nothing.
  * ``none``: no tags, no answer (the paper's rule).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Optional

MAX_ANSWER_CHARS = 2_000  # verifiers see at most this much: bounds their run time
FALLBACKS = ("guarded", "none")
CORRECT = 1.0 - 1e-6       # a verifier score at or above this is a correct answer
BARE_VALUE_WORDS = 4       # a tagless last line of at most this many words may be the answer

_PAIR_RE = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
_OPEN_RE = re.compile(r"<answer>", re.I)
_TAG_RE = re.compile(r"</?answer>", re.I)
# "the answer is X", "Answer: X", "The answer to this problem is X", "the sum is X"
_SAYS_RE = re.compile(r"\b(?:answer|result|solution|sum|difference|product|quotient|total|value)"
                      r"\b[^.\n=:]{0,60}?(?:\b(?:is|was|equals)\b|=|:)\s*[:=]?\s*(.+)", re.I)
_EQUATION_RE = re.compile(r"=\s*([^=]+?)\s*$")   # "2 + 5 = 7": what the last line equals
# "The day of the week for 09/20/22 is Sunday.": the question restated, then the answer
_RESTATED_RE = re.compile(r"^(.+)\s(?:is|was|equals)\s+(.+)$", re.I)
RESTATED_SHARE = 0.6     # of the subject's words and numbers that must come from the question
_BOXED_RE = re.compile(r"\\boxed\{([^{}]*)\}")
_FORMAT_RE = re.compile(r"^\s*(?:<think>.*?</think>\s*)?(?:[^<]*?)<answer>\s*\S.*?</answer>\s*$",
                        re.S | re.I)
_TOKEN_RE = re.compile(r"[-+]?\d+(?:[.,/]\d+)*|\w+|[^\w\s]")   # "-4" is one token, "- 4" two


def _clean(answer: str) -> Optional[str]:
    """Strip what decorates an answer: whitespace, markdown emphasis, code ticks, $..$,
    a leading colon, a trailing full stop."""
    answer = _TAG_RE.sub("", answer).strip()
    for _ in range(3):
        before = answer
        answer = answer.strip().lstrip(":").strip()
        for mark in ("**", "__", "`", "$"):
            if answer.startswith(mark) and answer.endswith(mark) and len(answer) > 2 * len(mark):
                answer = answer[len(mark):-len(mark)].strip()
            elif answer.startswith(mark) and mark not in answer[len(mark):]:
                answer = answer[len(mark):]
            elif answer.endswith(mark) and mark not in answer[:-len(mark)]:
                answer = answer[:-len(mark)]
        boxed = _BOXED_RE.fullmatch(answer)
        if boxed:
            answer = boxed.group(1)
        if answer.endswith(".") and not answer.endswith(".."):
            answer = answer[:-1]
        if answer == before:
            break
    return answer.strip()[:MAX_ANSWER_CHARS] or None


def tagged_answer(text: str) -> Optional[str]:
    """The last answer given in tags, or None when the text has no ``<answer>``."""
    pairs = list(_PAIR_RE.finditer(text))
    opens = list(_OPEN_RE.finditer(text))
    if not opens:
        return None
    last_open = opens[-1]
    if not pairs or last_open.start() >= pairs[-1].end():
        # an <answer> after the last complete pair, never closed: up to the end of its line
        tail = text[last_open.end():].lstrip()
        return _clean(tail.split("\n", 1)[0]) if tail else None
    return _clean(pairs[-1].group(1))


def _tokens(text: str) -> list[str]:
    return _TOKEN_RE.findall(text.lower())


def _flatten(question: str) -> str:
    """The question lower-cased on one line, for finding an answer's pieces in it."""
    return " ".join(question.lower().split())


def echoes(answer: str, question: str) -> bool:
    """True when ``answer`` could have been pieced together from ``question``: every one
    of its words, numbers and symbols appears in it (whole or as part of a longer one,
    since a copy may start mid-word)."""
    if not question:
        return False
    flat = _flatten(question)
    return all(token in flat for token in _tokens(answer))


def value_like(text: str) -> bool:
    """A bare value rather than prose: at most BARE_VALUE_WORDS words, and either one or
    two of them or a digit or a symbol among them ("42", "Friday", "P ∧ Q", not
    "I hope this helps!")."""
    words = text.split()
    return len(words) <= BARE_VALUE_WORDS and (
        len(words) <= 2 or re.search(r"[0-9]|[^\w\s.,;!?'\"]", text) is not None)


def restated_answer(line: str, question: str) -> Optional[str]:
    """X in "<the question restated> is X": the subject (two or more words, numbers or
    symbols, at least RESTATED_SHARE of them in the question) says what X answers."""
    match = _RESTATED_RE.match(line) if question else None
    if match is None:
        return None
    subject = _tokens(match.group(1))
    flat = _flatten(question)
    if len(subject) < 2 or sum(t in flat for t in subject) < RESTATED_SHARE * len(subject):
        return None
    answer = _clean(match.group(2))
    return answer if answer is not None and value_like(answer) else None


def fallback_answer(text: str, question: str = "") -> Optional[str]:
    """The answer a tagless completion states (see the module doc, ``guarded``)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    found = None
    for k, line in enumerate(reversed(lines)):    # the last line, else the last statement
        said = _BOXED_RE.findall(line) or _SAYS_RE.findall(line)
        if said:
            found = _clean(said[-1])
            break
        if k == 0:
            found = restated_answer(line, question)
            if found is not None:
                break
            equation = _EQUATION_RE.search(line)
            last = _clean(equation.group(1) if equation else line)
            if last is not None and value_like(last):
                found = last
                break
    if found is None or echoes(found, question):
        return None
    return found


def extract_answer(text: str, fallback: str = "guarded", question: str = "") -> Optional[str]:
    """The answer a completion gives, or None when it gives none. ``question`` (its
    text) lets the fallback refuse answers copied from it."""
    if not isinstance(text, str):
        return None
    tagged = tagged_answer(text)
    if tagged is not None or _OPEN_RE.search(text):
        return tagged
    return fallback_answer(text, question if isinstance(question, str) else "") \
        if fallback == "guarded" else None


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


def completion_reward(text: str, verify: Callable[[Optional[str]], float], *, question: str = "",
                      format_weight: float = 0.0, fallback: str = "guarded",
                      partial_credit: bool = False) -> float:
    """The reward of one completion: correctness + format_weight * format. No answer
    scores 0 without asking the verifier (some pay crumbs for nothing: reasoning-gym's
    fraction_simplification gives 0.01 to an empty answer)."""
    answer = extract_answer(text, fallback, question)
    score = 0.0 if answer is None else safe_score(verify, answer)
    reward = score if partial_credit else float(score >= CORRECT)
    if format_weight:
        reward += format_weight * format_reward(text)
    return reward


@dataclass(frozen=True)
class RewardRule:
    """How a node scores completions (shared settings: every node of a swarm agrees).
    Called as ``rule(text, question)`` with a genrl.data.Question."""
    fallback: str = "guarded"
    partial_credit: bool = False
    format_weight: float = 0.0

    def __call__(self, text: str, question) -> float:
        return completion_reward(text, question.verify, question=question.text,
                                 format_weight=self.format_weight, fallback=self.fallback,
                                 partial_credit=self.partial_credit)

    def correct(self, text: str, question) -> bool:
        """Whether the answer is right (format and partial credit aside): evaluation."""
        answer = extract_answer(text, self.fallback, question.text)
        return answer is not None and safe_score(question.verify, answer) >= CORRECT


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
