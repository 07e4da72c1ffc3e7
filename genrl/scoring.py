"""Scoring: the one door through which any completion, local or a peer's, reaches a verifier.

For each completion of a group (a question and its completions):
  1. a completion longer than the sharing format allows (``MAX_SCORED_CHARS``) is refused
     unread (a peer's completions were already cut to the tokens this node trains on:
     genrl/sapo.py; local ones are what the sampler produced, at most MAX_NEW_TOKENS);
  2. its answer is extracted (genrl/rewards.py, linear time);
  3. the answer must fit the task's grammar (genrl/grammars.py);
  4. the distinct answers of the group that passed go to the verifier in one request:
     reasoning-gym's scorers in the sandboxed pool (genrl/sandbox.py), a user's own question
     set (exact or numeric match, this project's code) in-process;
  5. an answer that restates the question (genrl/rewards.py) keeps no partial credit: a copy
     of the question that contains the right answer earns no crumbs (PARTIAL_CREDIT), while
     a fully correct answer is paid whatever it shares with the question (a fraction already
     in lowest terms is its own answer);
  6. the node's RewardRule turns each score into a reward.
``Verdict`` keeps why a completion earned nothing. The scorer counts, per round, the seconds
it spent, the answers it refused and why, and the verifier calls that timed out or died, by
task (``take_round``: the worker logs them in one line and puts them in the metrics).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

from genrl.grammars import grammar
from genrl.rewards import CORRECT, RewardRule, extract_answer, restates, safe_score

MAX_SCORED_CHARS = 32_000      # genrl/rollouts.py's cap on a shared completion


@dataclass
class Verdict:
    reward: float
    correct: bool
    answer: Optional[str] = None
    why: str = ""                # why it earned nothing ("" when the verifier was asked)


@dataclass
class RoundStats:
    seconds: float = 0.0
    completions: int = 0
    verifier_calls: int = 0
    refused: Counter = field(default_factory=Counter)       # reason -> completions
    failed: Counter = field(default_factory=Counter)        # "task status" -> verifier calls


class Scorer:
    """Scores groups for one node under its RewardRule; ``pool`` is the sandbox (default:
    the process-wide pool, started on first use)."""

    def __init__(self, rule: RewardRule = RewardRule(), pool=None):
        self.rule = rule
        self._pool = pool
        self.stats = RoundStats()

    @property
    def pool(self):
        if self._pool is None:
            from genrl.sandbox import default_pool
            self._pool = default_pool()
        return self._pool

    def warm(self) -> None:
        """Start the verifier processes now (in the background), not at the first score."""
        self.pool

    def answer(self, text, question) -> tuple[Optional[str], str]:
        """(answer, "") when ``text`` gives one the verifier may see, else (None, why)."""
        if not isinstance(text, str):
            return None, "not text"
        if len(text) > MAX_SCORED_CHARS:
            return None, "over the length cap"
        task = question.source.get("task") if isinstance(question.source, dict) else None
        shape = grammar(task) if question.check is not None else None
        fits = None if shape is None or shape.free else shape.accepts
        answer = extract_answer(text, self.rule.fallback, question.text, fits,
                                shape.row if shape is not None else None)
        if answer is None:
            return None, "no answer"
        if shape is not None and not shape.accepts(answer):
            return None, "outside the task's answer grammar"
        return answer, ""

    def score(self, question, texts: list[str]) -> list[Verdict]:
        """One verdict per completion of ``question`` (never raises)."""
        t0 = time.perf_counter()
        answers = [self.answer(text, question) for text in texts]
        distinct = sorted({a for a, _ in answers if a is not None})
        scores = self._verify(question, distinct)
        verdicts = []
        for text, (answer, why) in zip(texts, answers):
            value = scores.get(answer, 0.0) if answer is not None else 0.0
            if 0.0 < value < CORRECT and restates(answer, question.text):
                value, why = 0.0, "restates the question"     # no crumbs for a copy
            if why:
                self.stats.refused[why] += 1
            reward = self.rule.reward(value, text if isinstance(text, str) else "")
            verdicts.append(Verdict(reward, value >= CORRECT, answer, why))
        self.stats.completions += len(texts)
        self.stats.seconds += time.perf_counter() - t0
        return verdicts

    def rewards(self, question, texts: list[str]) -> list[float]:
        return [v.reward for v in self.score(question, texts)]

    def _verify(self, question, answers: list[str]) -> dict[str, float]:
        if not answers:
            return {}
        self.stats.verifier_calls += 1
        if question.check is None:                 # this project's own match: trusted code
            verify = question.verify or (lambda _a: 0.0)
            return {a: safe_score(verify, a) for a in answers}
        results = self.pool.score(question.check, answers)
        out = {}
        for answer, result in zip(answers, results):
            if result.status in ("timeout", "died", "error"):
                self.stats.failed[f"{question.check.get('task')} {result.status}"] += 1
            out[answer] = result.score
        return out

    def take_round(self) -> tuple[dict, Optional[str]]:
        """This round's scoring metrics (``time/score_s``, ``scoring/...``) and one log line
        naming the verifiers that timed out or died (None when none did); counters restart."""
        s, self.stats = self.stats, RoundStats()
        metrics = {"time/score_s": s.seconds, "scoring/completions": s.completions,
                   "scoring/verifier_calls": s.verifier_calls,
                   "scoring/refused": sum(s.refused.values()),
                   "scoring/verifier_failures": sum(s.failed.values())}
        line = None
        if s.failed:
            line = "verifiers that failed and scored 0: " + ", ".join(
                f"{name} x{n}" for name, n in sorted(s.failed.items()))
        return metrics, line
