"""Question sources: what a node trains on, and how any node re-creates it.

Two sources share one small interface (``draw``, ``regenerate``, ``eval_set``, ``fingerprint``):

* ``ReasoningGymSource``: a weighted mix of reasoning-gym tasks (procedural, verifiable,
  offline; the TASKS setting: genrl/tasks.py). A question's ``source`` metadata (task, task
  settings, seed, pool size, index, level) is enough for any node to regenerate its text and
  answer, so a receiver scores a peer's completions against its *own* ground truth; its
  ``check`` names the question to a sandboxed verifier (genrl/scoring.py).
* ``DatasetSource``: a user's question set (JSONL / CSV / parquet) loaded with
  ``datasets``, scored by exact or numeric match.

Draws are deterministic: the same (seed, node, round) gives the same questions. Each source
holds out an evaluation set (``eval_set``) that no draw returns and ``regenerate`` refuses, so
a peer that evaluates differently, or not at all, cannot feed this node its held-out questions.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from genrl.curriculum import max_level, settings_at
from genrl.rewards import exact_match, numeric_match, parse_number
from genrl.tasks import (DEFAULT_POOL_SIZE, PAPER_TASKS, TaskSpec, _dataset, check_answers,  # noqa: F401
                         isolated, parse_tasks, validate_tasks)

EVAL_SCAN = 8        # a held-out level's pool is scanned for EVAL_SCAN x the questions wanted


class InvalidSource(ValueError):
    """A question's metadata does not describe a question of this experiment."""


@dataclass
class Question:
    text: str
    source: dict                                   # shareable; regenerates text and answer
    answer: Optional[str] = None                   # ground truth, never shared
    verify: Optional[Callable[[Optional[str]], float]] = None   # trusted in-process check
    check: Optional[dict] = None                   # what a sandboxed verifier scores it by


def stable_int(text: str) -> int:
    """A 64-bit integer from a string, the same on every machine and run."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def round_rng(seed: int, node_id: str, round_: int) -> np.random.Generator:
    return np.random.default_rng([seed, stable_int(node_id), round_])


def interleave(per_task: list[list[Question]]) -> list[Question]:
    """Round-robin over the tasks, so that any prefix of the set is spread over them."""
    out, k = [], 0
    while any(k < len(qs) for qs in per_task):
        out += [qs[k] for qs in per_task if k < len(qs)]
        k += 1
    return out


# --- reasoning-gym ------------------------------------------------------------

class ReasoningGymSource:
    """A weighted mix of reasoning-gym tasks, one shared pool per task and difficulty level
    (seeded by the experiment seed); each node and round draws its own indices.

    ``curriculum``: questions come at the level a node asks for (genrl/curriculum.py); the
    level is in their metadata, so any node regenerates them. ``eval_set`` is a separate
    fixed set of questions that ``draw`` never returns (genrl/evaluation.py)."""

    def __init__(self, tasks: list[TaskSpec], seed: int, curriculum: bool = False,
                 eval_level: int = 0):
        validate_tasks(tasks)
        self.tasks, self.seed, self.curriculum = tasks, int(seed), bool(curriculum)
        self.eval_level = int(eval_level)
        total = sum(t.weight for t in tasks)
        self._p = np.array([t.weight / total for t in tasks])
        self._by_key = {(t.name, self._config_json(t.config)): t for t in tasks}
        self.top: dict[str, int] = {t.name: max_level(t.name) if curriculum else 0 for t in tasks}
        self._checked: set[tuple] = set()
        self.held_out: set[str] = set()          # question texts of the evaluation set
        for task in tasks if curriculum else ():  # level 0 must be usable: it is the floor
            try:
                self._pool(task, 0, self.seed)
            except ValueError as exc:
                raise ValueError(f"{exc} (at curriculum level 0; set CURRICULUM=false to use "
                                 "the settings as given)") from None

    @staticmethod
    def _config_json(config: dict) -> str:
        return json.dumps(config, sort_keys=True)

    def fingerprint(self) -> dict:
        out = {"kind": "reasoning_gym",
               "tasks": [{"name": t.name, "weight": t.weight, "settings": t.config}
                         for t in self.tasks]}
        if self.curriculum:
            out["curriculum"] = True
        return out

    def settings(self, task: TaskSpec, level: Optional[int]) -> dict:
        return settings_at(task.name, level, task.config) if level is not None else task.config

    def _pool(self, task: TaskSpec, level: Optional[int], seed: int):
        """The task's pool at a level; a level whose questions disagree with their answers is
        refused once (ValueError) and never used again (``top`` drops below it)."""
        config = self.settings(task, level)
        ds = _dataset(task.name, self._config_json(config), seed)
        key = (task.name, level)
        if level is not None and key not in self._checked:
            try:
                check_answers(TaskSpec(task.name, 1.0, tuple(sorted(config.items()))), ds)
            except ValueError:
                self.top[task.name] = max(0, min(self.top[task.name], level - 1))
                raise
            self._checked.add(key)
        return ds

    def draw(self, node_id: str, round_: int, count: int, levels: Optional[dict] = None,
             pick: Optional[Callable] = None) -> list[Question]:
        """``count`` questions for this node and round (deterministic), at ``levels``
        (task -> curriculum level) when the curriculum is on. ``pick(rng, count, weights)``
        chooses their tasks (genrl/curriculum.py: where groups have signal); default: by
        the tasks' weights."""
        rng = round_rng(self.seed, node_id, round_)
        questions = []
        chosen = (pick(rng, count, [t.weight for t in self.tasks]) if pick is not None
                  else rng.choice(len(self.tasks), size=count, p=self._p))
        for k in chosen:
            task = self.tasks[int(k)]
            level = None
            if self.curriculum:
                level = min(int((levels or {}).get(task.name, 0)), self.top[task.name])
            while True:
                try:
                    ds = self._pool(task, level, self.seed)
                    break
                except ValueError:           # a bad level: one below (level 0 was checked)
                    level = max(0, min(level - 1, self.top[task.name]))
            questions.append(self._training_question(task, ds, level, rng))
        return questions

    def _training_question(self, task: TaskSpec, ds, level: Optional[int], rng) -> Question:
        """A random question of the pool that is not held out (eval_set leaves at least half
        of a pool's distinct questions to training, so random tries find one at once)."""
        start = int(rng.integers(0, len(ds)))
        for k in range(len(ds)):
            index = (start + k * 7919) % len(ds) if k < 100 else (start + k) % len(ds)
            question = self._question(task, ds, index, level, self.seed)
            if question.text not in self.held_out:
                return question
        raise ValueError(f"every question of {task.name} at level {level} is held out")

    def eval_set(self, count: int, seed: int) -> list[Question]:
        """``count`` fixed, distinct questions spread evenly over the tasks (at least one
        each), from pools seeded by ``seed`` at the evaluation difficulty, interleaved by task;
        ``draw`` never returns them and ``regenerate`` refuses them. A level gives at most
        half of the distinct questions it has (training keeps the rest); a task whose level is
        too thin for its share takes the rest from the levels above (with the curriculum)."""
        per_task = [count // len(self.tasks) + (k < count % len(self.tasks))
                    for k in range(len(self.tasks))]
        chosen = [self._held_out_of(task, max(n, 1), seed) for task, n in zip(self.tasks, per_task)]
        out = interleave(chosen)
        self.held_out = {q.text for q in out}
        return out

    def _held_out_of(self, task: TaskSpec, n: int, seed: int) -> list[Question]:
        levels = (range(min(self.eval_level, self.top[task.name]), max_level(task.name) + 1)
                  if self.curriculum else [None])
        picked: list[Question] = []
        below: set[str] = set()     # every question of the levels below: they keep theirs
        for level in levels:
            if len(picked) >= n:
                break
            ds = _dataset(task.name, self._config_json(self.settings(task, level)), seed)
            rng = np.random.default_rng([seed, stable_int(task.name), level or 0])
            fresh: dict[str, int] = {}
            with isolated():
                for index in rng.permutation(len(ds))[:EVAL_SCAN * n]:
                    fresh.setdefault(ds[int(index)]["question"], int(index))
            usable = [(t, i) for t, i in fresh.items() if t not in below]
            for text, index in usable[:min(n - len(picked), len(fresh) // 2)]:
                picked.append(self._question(task, ds, index, level, seed))
            below |= set(fresh)
        return picked

    def _question(self, task: TaskSpec, ds, index: int, level: Optional[int], seed: int) -> Question:
        with isolated():
            entry = ds[index]
        source = {"kind": "reasoning_gym", "task": task.name, "config": task.config,
                  "seed": seed, "size": len(ds), "index": index}
        if level is not None:
            source["level"] = level
        answer = entry.get("answer")
        check = {"task": task.name, "config": self.settings(task, level), "seed": seed,
                 "index": index}
        return Question(text=entry["question"], source=source,
                        answer=None if answer is None else str(answer), check=check)

    def regenerate(self, source: dict) -> Question:
        """The question a peer's metadata describes; InvalidSource if it is not
        one of this experiment's (unknown task, settings or level, other seed, bad index)."""
        if not isinstance(source, dict) or source.get("kind") != "reasoning_gym":
            raise InvalidSource("not a reasoning-gym question")
        config = source.get("config")
        if not isinstance(config, dict):
            raise InvalidSource("task settings missing")
        key = (source.get("task"), json.dumps(config, sort_keys=True))
        task = self._by_key.get(key) if isinstance(key[0], str) else None
        if task is None:
            raise InvalidSource(f"task {str(source.get('task'))[:40]!r} with these settings "
                                "is not in this experiment's mix")
        if source.get("seed") != self.seed:
            raise InvalidSource("question pool seed differs from this experiment's SEED")
        level = source.get("level")
        if self.curriculum != (level is not None):
            raise InvalidSource("curriculum level given where the experiment has none"
                                if level is not None else "curriculum level missing")
        if level is not None and (type(level) is not int or not 0 <= level <= self.top[task.name]):
            raise InvalidSource(f"curriculum level {str(level)[:10]} out of range for {task.name}")
        try:
            ds = self._pool(task, level, self.seed)
        except ValueError:
            raise InvalidSource(f"level {level} of {task.name} makes unusable questions") from None
        index = source.get("index")
        if type(index) is not int or not 0 <= index < len(ds) or source.get("size") != len(ds):
            raise InvalidSource("question index out of range of the task's pool")
        question = self._question(task, ds, index, level, self.seed)
        if question.text in self.held_out:
            raise InvalidSource("question is in the held-out evaluation set")
        return question


# --- a user's own question set -------------------------------------------------

_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


class DatasetSource:
    """Questions and answers from a local file, scored by exact or numeric match."""

    def __init__(self, path: str, seed: int, question_column: str = "question",
                 answer_column: str = "answer", match: str = "auto"):
        ext = os.path.splitext(path)[1].lower()
        if ext not in _FORMATS:
            raise ValueError(f"DATASET_PATH={path}: unsupported file type {ext or '(none)'}; "
                             f"use one of {', '.join(_FORMATS)}")
        if not os.path.isfile(path):
            raise ValueError(f"DATASET_PATH={path}: no such file")
        if match not in ("auto", "exact", "numeric"):
            raise ValueError(f"DATASET_MATCH={match}: allowed are auto, exact, numeric")
        import datasets
        table = datasets.load_dataset(_FORMATS[ext], data_files=path, split="train")
        missing = [c for c in (question_column, answer_column) if c not in table.column_names]
        if missing:
            raise ValueError(f"DATASET_PATH={path}: missing column(s) {missing}; "
                             f"columns are {table.column_names}")
        self.questions = [str(q) for q in table[question_column]]
        self.answers = [str(a) for a in table[answer_column]]
        if not self.questions:
            raise ValueError(f"DATASET_PATH={path}: the file has no rows")
        with open(path, "rb") as fh:
            self.digest = hashlib.sha256(fh.read()).hexdigest()[:16]
        self.seed, self.match, self.name = int(seed), match, os.path.basename(path)
        self.held_out: set[int] = set()          # rows of the evaluation set

    def fingerprint(self) -> dict:
        return {"kind": "dataset", "name": self.name, "sha256": self.digest,
                "rows": len(self.questions), "match": self.match}

    def _question(self, row: int) -> Question:
        truth = self.answers[row]
        numeric = self.match == "numeric" or (self.match == "auto" and parse_number(truth) is not None)
        check = numeric_match if numeric else exact_match
        return Question(text=self.questions[row], answer=truth,
                        source={"kind": "dataset", "dataset": self.digest, "row": row},
                        verify=lambda a, t=truth, f=check: f(a, t))

    def draw(self, node_id: str, round_: int, count: int, levels=None) -> list[Question]:
        """``count`` rows for this node and round, never one of the evaluation set."""
        rng = round_rng(self.seed, node_id, round_)
        rows = [r for r in range(len(self.questions)) if r not in self.held_out]
        if not rows:
            raise ValueError(f"DATASET_PATH={self.name}: every row is in the evaluation set; "
                             "lower EVAL_QUESTIONS")
        return [self._question(rows[int(k)]) for k in rng.integers(0, len(rows), size=count)]

    def eval_set(self, count: int, seed: int) -> list[Question]:
        """A fixed sample of rows with distinct questions (at most half of them) held out
        from training: no draw returns them, ``regenerate`` refuses them."""
        rng = np.random.default_rng([seed, stable_int(self.digest)])
        first: dict[str, int] = {}
        for row in rng.permutation(len(self.questions)):
            first.setdefault(self.questions[int(row)], int(row))
        rows = list(first.values())[:min(count, len(first) // 2)]
        held = set(first) & {self.questions[r] for r in rows}
        self.held_out = {r for r in range(len(self.questions)) if self.questions[r] in held}
        return [self._question(r) for r in rows]

    def regenerate(self, source: dict) -> Question:
        if not isinstance(source, dict) or source.get("kind") != "dataset":
            raise InvalidSource("not a question of a local dataset")
        if source.get("dataset") != self.digest:
            raise InvalidSource("question comes from a different dataset file")
        row = source.get("row")
        if type(row) is not int or not 0 <= row < len(self.questions):
            raise InvalidSource("dataset row out of range")
        if row in self.held_out:
            raise InvalidSource("question is in the held-out evaluation set")
        return self._question(row)
