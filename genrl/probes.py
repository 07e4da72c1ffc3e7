"""Probes of a reward rule: a question's gold answer written the ways a model writes it, and
the cheap tricks a policy could learn instead of the task.

A reward that pays a trick teaches the trick (GRPO finds whatever is paid), and one that
refuses a right answer hides what a model can do. bench/rewards.py prints, for every task of
a mix, the share of each probe that is paid; tests/test_scoring.py holds the targets (gold:
all paid; tricks: none). Each trick below contains the gold answer or is built from the
question itself, so a rule that pays it pays something other than solving the task:

* ``echo``: the question, its last line, or a piece of it holding several values, as the
  answer (in tags and in words);
* ``premises``: propositional_logic's premises copied, one or two joined by ∧;
* ``candidates``: the gold answer and a wrong one offered together ("A or B", "A, B");
* ``tag spam``: several answers in tags, the gold one among them;
* ``examples``: the outputs of the question's own worked examples (arc_1d's), as the answer.
"""

from __future__ import annotations

import re
from typing import Optional

from genrl.grammars import grammar

GOLD_FORMS = ("tags", "plain", "bare")
TRICKS = ("echo", "premises", "candidates", "tag spam", "examples")


def gold_forms(gold: str, task: str) -> dict[str, str]:
    """The gold answer in tags, stated in words, and as a bare last line (or block)."""
    multi = "\n" in gold
    return {"tags": f"Let me work it out.\n<answer>{gold}</answer>",
            "plain": (f"Working it out, the answer is:\n{gold}" if multi or grammar(task).row
                      else f"Working it out step by step. The answer is {gold}."),
            "bare": f"Let me work it out.\n{gold}"}


def _other(gold: str) -> str:
    """A wrong answer of the same shape as ``gold``."""
    days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
    if gold in days:
        return days[(days.index(gold) + 1) % 7]
    if gold in ("Yes", "No"):
        return "No" if gold == "Yes" else "Yes"
    digits = re.search(r"\d", gold)
    if digits:
        k = digits.start()
        return gold[:k] + str((int(gold[k]) + 1) % 10) + gold[k + 1:]
    return gold + "x"


def tricks(question_text: str, gold: Optional[str], task: str, premises=()) -> dict[str, list[str]]:
    """Trick completions by family (module doc); families that do not apply are empty."""
    lines = [line.strip() for line in question_text.splitlines() if line.strip()]
    words = question_text.split()
    pieces = [" ".join(words[k:k + 3]) for k in range(0, max(1, len(words) - 2), 7)][:6]
    echo = [question_text, lines[-1], f"<answer>{lines[-1]}</answer>"]
    echo += [f"The answer is {p}." for p in pieces] + [f"<answer>{p}</answer>" for p in pieces]
    out = {"echo": [e for e in echo if gold is None or gold.strip() not in (e.strip(),)],
           "premises": [], "candidates": [], "tag spam": [], "examples": []}
    if premises:
        out["premises"] = [f"<answer>{p}</answer>" for p in premises]
        out["premises"] += [f"<answer>({a} ∧ {b})</answer>" for a, b in zip(premises, premises[1:])]
        out["premises"] += [f"The answer is {p}." for p in premises]
    if gold is not None:
        other = _other(gold)
        if grammar(task).row is None:
            out["candidates"] = [f"<answer>{gold} or {other}</answer>", f"<answer>{other}, {gold}</answer>",
                                 f"The answer is {gold} or {other}.", f"It is {other} or {gold}"]
        out["tag spam"] = [f"<answer>{other}</answer> <answer>{gold}</answer>",
                           f"<answer>{gold}</answer>\n<answer>{other}</answer>\n<answer>{gold}</answer>"]
    examples = re.findall(r"Output:\s*\n?([0-9 ]+)\n", question_text + "\n")
    out["examples"] = [f"<answer>{e.strip()}</answer>" for e in examples
                       if gold is None or e.strip() != gold.strip()]
    return out


def premises_of(question_text: str) -> list[str]:
    """propositional_logic's premises, as its questions list them ("1. P", ".2. (P → Q)")."""
    given = question_text.split("Given:")[-1].split("What can we conclude")[0]
    return [m.group(1).strip() for m in re.finditer(r"^\.?\d+\. (.+)$", given, re.M)]


def propositional_conclusion(question, scorer) -> Optional[str]:
    """A conclusion the scorer pays for a propositional_logic question (a literal, or two
    joined by ∧ ∨ →), searched for: the task's own example answer is mostly a premise."""
    names = sorted(set(re.findall(r"\b([A-Z])\b", question.text.split("Given:")[-1])))
    literals = names + [f"¬{n}" for n in names]
    candidates = literals + [f"({a} {op} {b})" for a in literals for b in literals if a != b
                             for op in ("∧", "∨", "→")]
    texts = [f"<answer>{c}</answer>" for c in candidates]
    for candidate, verdict in zip(candidates, scorer.score(question, texts)):
        if verdict.correct:
            return candidate
    return None
