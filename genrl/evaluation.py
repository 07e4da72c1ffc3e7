"""Held-out evaluation: greedy answers to a fixed set of questions no node trains on.

Training reward flatters: it is measured on the questions being trained on, under
sampling, and (after SAPO's selection) on groups picked for having signal. The
measure of a model is its accuracy on a fixed evaluation set: the same questions
on every node and in every run with the same task settings (their own pool, seeded
by a constant, not by SEED), spread evenly over the tasks, at a fixed difficulty
(the curriculum never moves it), answered greedily. The question source leaves
these questions out of every training draw, and refuses peers' groups of them.

The set holds at least 500 distinct questions by default (EVAL_QUESTIONS): at an accuracy
near 0.5 one node's standard error is then 0.022, and two runs paired by question see a
5-point difference. Each evaluation also records which questions it got right
(``eval/correct``: one character per question, in the set's order), so two configurations
can be compared question by question (bench/sapo_experiment.py: McNemar's test).
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


def evaluate(trainer, eval_set: EvalSet, scorer, build_prompt, batch_size: int = EVAL_BATCH,
             on_token=None) -> dict:
    """Accuracy overall and per task (``eval/accuracy``, ``eval/{task}``), its standard
    error, the number of questions, which were right (``eval/correct``) and the seconds it
    took (``time/eval_s``). ``scorer`` is the node's Scorer: an answer counts when the
    verifier finds it fully correct. Greedy: temperature 0, whatever the node samples at."""
    t0 = time.perf_counter()
    right: dict[str, list[bool]] = defaultdict(list)
    marks = []
    questions = eval_set.questions
    for start in range(0, len(questions), batch_size):
        batch = questions[start:start + batch_size]
        prompts = [build_prompt(trainer.tokenizer, q.text) for q in batch]
        made = trainer.generate(prompts, 1, seed=0, temperature=0.0, on_token=on_token)
        for q, (completion,) in zip(batch, made):
            ok = scorer.score(q, [completion.text])[0].correct
            right[task_of(q)].append(ok)
            marks.append("1" if ok else "0")
    every = [ok for oks in right.values() for ok in oks]
    accuracy = float(np.mean(every)) if every else 0.0
    out = {"eval/accuracy": accuracy, "eval/questions": len(every),
           "eval/stderr": float(np.sqrt(accuracy * (1 - accuracy) / max(len(every), 1))),
           "eval/correct": "".join(marks), "time/eval_s": time.perf_counter() - t0}
    out.update({f"eval/{task}": float(np.mean(oks)) for task, oks in sorted(right.items())})
    return out
