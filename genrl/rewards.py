"""Answers and rewards: which answer a completion gives, and what a verifier's score is worth.

Completions come from our own sampler and from peers, so every function here treats its
input as hostile text, and every one runs in time linear in its length (a completion of
32,000 characters built to make a regular expression backtrack costs milliseconds, not
seconds: tests/test_rewards.py). No function here calls a verifier: genrl/scoring.py is the
one door through which an answer reaches one.

Answer extraction: the content of the ``<answer>...</answer>`` pair (nested or doubled tags
flattened; an unclosed final ``<answer>`` counts up to the end of its line). A completion
that gives two different answers in tags gave none: it did not commit (tag spam: listing
candidates in tags earns nothing). When a completion has no tag at all (``fallback``):
  * ``guarded`` (default): the last explicit statement ("the answer is X", "Answer: X",
    "The answer to this problem is X", "the sum is X", ``\\boxed{X}``), else a last line that
    restates the question and answers it ("The day of the week for 09/20/22 is Sunday."),
    else what a last-line equation equals ("2 + 5 = 7"), else a last line (or, for a task
    whose answers are grids, the trailing block of lines) that fits the task's answer
    grammar (genrl/grammars.py; for free text: a bare value of a few words at most).
  * ``none``: no tags, no answer (the paper's rule).

An answer *restates* the question when it is a copy of a piece of the question holding more
than one value ("5 - 3", "Monday, Tuesday", a premise): genrl/scoring.py pays such an answer
no partial credit (a copy that merely contains the right answer earns no crumbs), while a
fully correct answer is paid whatever it shares with the question ("4" for "8 - 4", "Friday"
where the question lists the weekdays, a fraction already in lowest terms). (The rule this
replaces refused any tagless answer whose every token occurred somewhere in the question: 24
of 200 correct plain answers on chain_sum level 0 scored 0; now 0 of 200: bench/rewards.py.)

Rewards: by default only a fully correct answer counts (1, else 0): reasoning-gym gives
partial credit to some wrong answers (0.01-0.25, or len(oracle)/len(answer) for an answer
that merely contains the right one), and GRPO's per-group normalisation would turn such
crumbs into a full-size advantage (bench/rewards.py). ``partial_credit=True`` keeps the
verifier's raw score, as the SAPO paper's code does.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Optional

MAX_ANSWER_CHARS = 32_000   # longest answer a verifier is shown (the sharing format's cap)
LINE_CHARS = 2_000          # the fallback reads at most this much of a line (its end)
FALLBACKS = ("guarded", "none")
CORRECT = 1.0 - 1e-6        # a verifier score at or above this is a correct answer
BARE_VALUE_WORDS = 4        # a tagless last line of at most this many words may be the answer

_TAG_RE = re.compile(r"<(/?)answer>", re.I)     # a literal: one pass, no backtracking
# "the answer is X", "Answer: X", "The answer to this problem is X", "the sum is X"
_SAYS_RE = re.compile(r"\b(?:answer|result|solution|sum|difference|product|quotient|total|value)"
                      r"\b[^.\n=:]{0,60}?(?:\b(?:is|was|equals)\b|=|:)\s*[:=]?\s*(.+)", re.I)
# "The day of the week for 09/20/22 is Sunday.": the question restated, then the answer
_RESTATED_RE = re.compile(r"^(.+)\s(?:is|was|equals)\s+(.+)$", re.I)
RESTATED_SHARE = 0.6     # of the subject's words and numbers that must come from the question
_BOXED_RE = re.compile(r"\\boxed\{([^{}]*)\}")
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
    answer = answer.strip()
    return answer if answer and len(answer) <= MAX_ANSWER_CHARS else None


def tagged_answers(text: str) -> Optional[list[str]]:
    """Every answer given in tags, in order (empty ones left out), or None when the text has
    no ``<answer>``. A closing tag pairs with the nearest opening one after the previous
    pair; an opening tag after the last pair, never closed, counts to the end of its line."""
    tags = [(m.start(), m.end(), bool(m.group(1))) for m in _TAG_RE.finditer(text)]
    if not any(not closing for _, _, closing in tags):
        return None
    answers, open_end = [], None
    for start, end, closing in tags:
        if not closing:
            open_end = end
        elif open_end is not None:
            answers.append(text[open_end:start])
            open_end = None
    if open_end is not None:
        answers.append(text[open_end:].lstrip().split("\n", 1)[0])
    return [a for a in (_clean(a) for a in answers) if a is not None]


def tagged_answer(text: str) -> Optional[str]:
    """The answer given in tags; None when there is none, or when two differ (no commitment)."""
    answers = tagged_answers(text)
    if not answers or len(set(answers)) > 1:
        return None
    return answers[-1]


def _tokens(text: str) -> list[str]:
    return _TOKEN_RE.findall(text.lower())


def _flatten(text: str) -> str:
    """Lower-cased on one line, for finding an answer's pieces in the question."""
    return " ".join(text.lower().split())


def restates(answer: str, question: str) -> bool:
    """True when ``answer`` copies a piece of ``question`` that holds more than one value
    (words and numbers; symbols alone are not values): it commits to no value of its own."""
    if not question:
        return False
    values = [t for t in _tokens(answer) if t[-1].isalnum()]
    return len(values) > 1 and _flatten(answer) in _flatten(question)


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


def fallback_answer(text: str, question: str = "", fits: Optional[Callable[[str], bool]] = None,
                    row: Optional[Callable[[str], bool]] = None) -> Optional[str]:
    """The answer a tagless completion states (the module doc, ``guarded``). ``fits``: the
    task's grammar (a bare last line must fit it; default: a bare value of a few words);
    ``row``: for grid answers, what one line of the grid looks like."""
    lines = [line.strip()[-LINE_CHARS:] for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    if row is not None:           # a trailing block of grid rows is the answer
        block = []
        for line in reversed(lines):
            if not row(line):
                break
            block.append(line)
        if block:
            return "\n".join(reversed(block))
    fits = fits or value_like
    for k, line in enumerate(reversed(lines[-64:])):   # the last line, else the last statement
        said = _BOXED_RE.findall(line) or _SAYS_RE.findall(line)
        if said:
            return _clean(said[-1])
        if k == 0:
            found = restated_answer(line, question)
            if found is not None:
                return found
            _, equals, tail = line.rpartition("=")
            last = _clean(tail) if equals and tail.strip() else _clean(line)
            if last is not None and fits(last):
                return last
    return None


def extract_answer(text: str, fallback: str = "guarded", question: str = "",
                   fits: Optional[Callable[[str], bool]] = None,
                   row: Optional[Callable[[str], bool]] = None) -> Optional[str]:
    """The answer a completion gives, or None when it gives none. A completion with an
    ``<answer>`` tag is read by its tags alone."""
    if not isinstance(text, str):
        return None
    answers = tagged_answers(text)
    if answers is not None:
        return answers[-1] if answers and len(set(answers)) == 1 else None
    if fallback != "guarded":
        return None
    return fallback_answer(text, question if isinstance(question, str) else "", fits, row)


def format_reward(text: str) -> float:
    """1.0 when the completion is (optional <think>...</think>) reasoning ending in one
    non-empty <answer>...</answer> block and nothing after it; else 0.0."""
    if not isinstance(text, str):
        return 0.0
    tags = list(_TAG_RE.finditer(text))
    if len(tags) != 2 or tags[0].group(1) or not tags[1].group(1):
        return 0.0
    if text[tags[1].end():].strip() or not text[tags[0].end():tags[1].start()].strip():
        return 0.0
    before = text[:tags[0].start()].lstrip()
    if before[:7].lower() == "<think>":
        end = before.lower().rfind("</think>")
        if end < 0:
            return 0.0
        before = before[end + len("</think>"):]
    return 0.0 if "<" in before else 1.0


def safe_score(verify: Callable[[Optional[str]], float], answer: Optional[str]) -> float:
    """Call a trusted in-process verifier (this project's own: exact or numeric match); any
    exception, NaN or out-of-range value becomes a number in [0, 1]."""
    try:
        return clamp_score(float(verify(answer)))
    except Exception:  # noqa: BLE001 - a verifier bug must not stop training
        return 0.0


def clamp_score(value: float) -> float:
    if not isinstance(value, float) or math.isnan(value):
        return 0.0
    return min(1.0, max(0.0, value))


@dataclass(frozen=True)
class RewardRule:
    """How a node scores completions (shared settings: every node of a swarm agrees).
    genrl/scoring.py applies it."""
    fallback: str = "guarded"
    partial_credit: bool = False
    format_weight: float = 0.0

    def reward(self, score: float, text: str) -> float:
        """A completion's reward from its verifier score (0 when it gave no usable answer)."""
        reward = score if self.partial_credit else float(score >= CORRECT)
        if self.format_weight:
            reward += self.format_weight * format_reward(text)
        return reward


# --- verifiers for a user's own question set (trusted code: they run in-process) ------

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
    if len(cleaned) > 400 or not _NUMBER_RE.match(cleaned):
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
