"""Held-out evaluation: greedy answers to a fixed set of questions no node trains on.

Training reward flatters: it is measured on the questions being trained on, under
sampling, and (after SAPO's selection) on groups picked for having signal. The
measure of a model is its accuracy on a fixed evaluation set: the same questions
on every node and in every run with the same task settings (their own pool, seeded
by a constant, not by SEED), spread evenly over the tasks, at a fixed difficulty
(the curriculum never moves it), answered greedily. The question source leaves
these questions out of every training draw.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from genrl.data import Question

EVAL_SEED = 9_2025_0910   # the evaluation pools' seed: the same set whatever SEED a run uses
EVAL_BATCH = 64           # questions per greedy generation call


@dataclass
class EvalSet:
    questions: list[Question]

    @property
    def tasks(self) -> list[str]:
        return sorted({task_of(q) for q in self.questions})


def task_of(question: Question) -> str:
    return str(question.source.get("task") or question.source.get("kind") or "questions")


def evaluate(trainer, eval_set: EvalSet, rule, build_prompt, batch_size: int = EVAL_BATCH,
             on_token=None) -> dict:
    """Accuracy overall and per task (``eval/accuracy``, ``eval/{task}``), the number of
    questions and the seconds it took (``time/eval_s``). ``rule`` is the node's
    RewardRule: an answer counts when the verifier finds it fully correct."""
    t0 = time.perf_counter()
    right: dict[str, list[bool]] = defaultdict(list)
    questions = eval_set.questions
    for start in range(0, len(questions), batch_size):
        batch = questions[start:start + batch_size]
        prompts = [build_prompt(trainer.tokenizer, q.text) for q in batch]
        made = trainer.generate(prompts, 1, seed=0, temperature=0.0, on_token=on_token)
        for q, (completion,) in zip(batch, made):
            right[task_of(q)].append(rule.correct(completion.text, q))
    every = [ok for oks in right.values() for ok in oks]
    out = {"eval/accuracy": float(np.mean(every)) if every else 0.0,
           "eval/questions": len(every), "time/eval_s": time.perf_counter() - t0}
    out.update({f"eval/{task}": float(np.mean(oks)) for task, oks in sorted(right.items())})
    return out
