"""Question sources: what a node trains on, and how any node re-creates it.

Two sources share one small interface (``draw``, ``regenerate``, ``fingerprint``):

* ``ReasoningGymSource``: a weighted mix of reasoning-gym tasks (procedural,
  verifiable, offline). The default mix is the SAPO paper's nine tasks, weight 1
  each. A question's ``source`` metadata (task, task settings, seed, pool size,
  index) is enough for any node to regenerate its text and answer, so a receiver
  scores a peer's completions against its *own* ground truth.
* ``DatasetSource``: a user's question set (JSONL / CSV / parquet) loaded with
  ``datasets``, scored by exact or numeric match.

Draws are deterministic: the same (seed, node, round) gives the same questions.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import functools
import hashlib
import io
import json
import operator
import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Optional

import numpy as np

from genrl.rewards import CORRECT, exact_match, numeric_match, parse_number

PAPER_TASKS = ("base_conversion", "basic_arithmetic", "arc_1d", "bf", "propositional_logic",
               "fraction_simplification", "decimal_arithmetic", "calendar_arithmetic",
               "binary_matrix")
DEFAULT_POOL_SIZE = 10_000  # questions per task; `size` in a task's settings overrides
ORACLE_SAMPLE = 24          # questions per task whose answers are checked against the scorer


class InvalidSource(ValueError):
    """A question's metadata does not describe a question of this experiment."""


@dataclass
class Question:
    text: str
    source: dict                                   # shareable; regenerates text and answer
    answer: Optional[str] = None                   # ground truth, never shared
    verify: Callable[[Optional[str]], float] = field(default=lambda _a: 0.0, repr=False)


def stable_int(text: str) -> int:
    """A 64-bit integer from a string, the same on every machine and run."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def round_rng(seed: int, node_id: str, round_: int) -> np.random.Generator:
    return np.random.default_rng([seed, stable_int(node_id), round_])


# --- the TASKS setting --------------------------------------------------------

@dataclass(frozen=True)
class TaskSpec:
    name: str
    weight: float = 1.0
    settings: tuple = ()  # sorted (key, value) pairs passed to reasoning-gym's config

    @property
    def config(self) -> dict:
        return dict(self.settings)


def _literal(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text.strip()


def parse_tasks(spec: str) -> list[TaskSpec]:
    """Parse TASKS. Forms (comma-separated):
    ``basic_arithmetic``, ``basic_arithmetic:2``, ``basic_arithmetic:2{min_terms=2;max_terms=3}``,
    or JSON: ``{"basic_arithmetic": {"weight": 2, "min_terms": 2}}``. Raises ValueError."""
    spec = spec.strip()
    if not spec:
        raise ValueError("no task given")
    if spec.startswith("{"):
        try:
            raw = json.loads(spec)
        except ValueError as exc:
            raise ValueError(f"not valid JSON: {exc}") from None
        tasks = []
        for name, settings in raw.items():
            settings = dict(settings or {})
            weight = settings.pop("weight", 1.0)
            tasks.append(_task(name, weight, settings))
        return tasks
    tasks = []
    for part in re.findall(r"[^,{]+(?:\{[^}]*\})?", spec):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_]+)\s*(?::\s*([^{\s]+))?\s*(?:\{([^}]*)\})?", part)
        if not m:
            raise ValueError(f"cannot read task {part!r}; expected name[:weight][{{key=value;...}}]")
        settings = {}
        for item in filter(None, (s.strip() for s in (m.group(3) or "").split(";"))):
            key, eq, value = item.partition("=")
            if not eq:
                raise ValueError(f"task setting {item!r} of {m.group(1)} is not key=value")
            settings[key.strip()] = _literal(value)
        tasks.append(_task(m.group(1), m.group(2) or 1.0, settings))
    if not tasks:
        raise ValueError("no task given")
    return tasks


def _task(name: str, weight: Any, settings: dict) -> TaskSpec:
    try:
        weight = float(weight)
    except (TypeError, ValueError):
        raise ValueError(f"weight of {name} must be a number, got {weight!r}") from None
    if not (weight > 0 and np.isfinite(weight)):
        raise ValueError(f"weight of {name} must be > 0, got {weight}")
    return TaskSpec(name, weight, tuple(sorted(settings.items())))


def validate_tasks(tasks: list[TaskSpec]) -> None:
    """Check names against reasoning-gym's registry and settings against each
    task's config; the ValueError names the task and what is allowed."""
    from reasoning_gym.factory import DATASETS
    seen = set()
    for task in tasks:
        if task.name not in DATASETS:
            close = difflib.get_close_matches(task.name, DATASETS, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown reasoning-gym task {task.name!r}{hint} "
                             f"({len(DATASETS)} tasks exist, e.g. {', '.join(PAPER_TASKS[:3])})")
        if task in seen:
            raise ValueError(f"task {task.name} is listed twice with the same settings")
        seen.add(task)
        try:
            ds = _dataset(task.name, json.dumps(task.config, sort_keys=True), 0)
        except Exception as exc:  # noqa: BLE001 - reasoning-gym raises many kinds
            raise ValueError(f"settings {task.config} are not valid for task {task.name}: "
                             f"{type(exc).__name__}: {exc}") from None
        check_answers(task, ds)


def check_answers(task: TaskSpec, ds, sample: int = ORACLE_SAMPLE) -> None:
    """Refuse a task whose questions disagree with their own answers, on a sample: the
    task's scorer must give its oracle answer full marks, and where the question's
    metadata carries an arithmetic expression, its exact value must be the answer.
    (reasoning-gym's basic_arithmetic with allow_parentheses=False writes "Calculate 4 / 1
    / 7." with answer 8: its scorer only compares against that answer, so it cannot tell.)"""
    wrong, checked = 0, 0
    with contextlib.redirect_stdout(io.StringIO()):
        for index in range(min(sample, len(ds))):
            entry = ds[index]
            if entry.get("answer") is None:    # judged by meaning (propositional_logic)
                continue
            checked += 1
            try:
                ok = float(ds.score_answer(str(entry["answer"]), entry)) >= CORRECT
            except Exception:  # noqa: BLE001 - a scorer that fails on its own answer
                ok = False
            expression = (entry.get("metadata") or {}).get("expression")
            if ok and isinstance(expression, str):
                try:
                    value = arithmetic_value(expression)
                    ok = value is None or value == _fraction(entry["answer"])
                except ZeroDivisionError:      # an unanswerable question
                    ok = False
            wrong += not ok
    if wrong:
        setting = f" with settings {task.config}" if task.config else ""
        raise ValueError(f"task {task.name}{setting} makes questions that disagree with their own "
                         f"answers ({wrong} of {checked} checked); change its settings or leave it "
                         "out of TASKS")


_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
               ast.Div: operator.truediv}


def _fraction(value) -> Optional[Fraction]:
    try:
        return Fraction(str(value).strip())
    except (ValueError, ZeroDivisionError):
        return None


def arithmetic_value(expression: str) -> Optional[Fraction]:
    """The exact value of a plain arithmetic expression (numbers, + - * /, parentheses);
    None when it is anything else; ZeroDivisionError when it divides by zero."""
    if len(expression) > 500:
        return None

    def value(node):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return Fraction(str(node.value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = value(node.operand)
            return -inner if isinstance(node.op, ast.USub) else inner
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
            return _ARITHMETIC[type(node.op)](value(node.left), value(node.right))
        raise ValueError("not plain arithmetic")
    try:
        return value(ast.parse(expression.replace("×", "*").replace("÷", "/"), mode="eval").body)
    except (ValueError, SyntaxError, RecursionError):
        return None


@functools.lru_cache(maxsize=64)
def _dataset(name: str, config_json: str, seed: int):
    import reasoning_gym
    config = json.loads(config_json)
    if "size" in config:
        return reasoning_gym.create_dataset(name, seed=seed, **config)
    try:
        return reasoning_gym.create_dataset(name, seed=seed, size=DEFAULT_POOL_SIZE, **config)
    except ValueError:  # some generators cannot make that many distinct questions
        return reasoning_gym.create_dataset(name, seed=seed, size=DEFAULT_POOL_SIZE // 10, **config)


# --- reasoning-gym ------------------------------------------------------------

class ReasoningGymSource:
    """A weighted mix of reasoning-gym tasks, one shared pool per task (seeded
    by the experiment seed); each node and round draws its own indices."""

    def __init__(self, tasks: list[TaskSpec], seed: int):
        validate_tasks(tasks)
        self.tasks, self.seed = tasks, int(seed)
        total = sum(t.weight for t in tasks)
        self._p = np.array([t.weight / total for t in tasks])
        self._by_key = {(t.name, self._config_json(t)): t for t in tasks}

    @staticmethod
    def _config_json(task: TaskSpec) -> str:
        return json.dumps(task.config, sort_keys=True)

    def fingerprint(self) -> dict:
        return {"kind": "reasoning_gym",
                "tasks": [{"name": t.name, "weight": t.weight, "settings": t.config}
                          for t in self.tasks]}

    def draw(self, node_id: str, round_: int, count: int) -> list[Question]:
        rng = round_rng(self.seed, node_id, round_)
        questions = []
        for k in rng.choice(len(self.tasks), size=count, p=self._p):
            task = self.tasks[int(k)]
            ds = _dataset(task.name, self._config_json(task), self.seed)
            index = int(rng.integers(0, len(ds)))
            questions.append(self._question(task, ds, index))
        return questions

    def _question(self, task: TaskSpec, ds, index: int) -> Question:
        with contextlib.redirect_stdout(io.StringIO()):  # some generators (bf) print progress dots
            entry = ds[index]
        source = {"kind": "reasoning_gym", "task": task.name, "config": task.config,
                  "seed": self.seed, "size": len(ds), "index": index}
        answer = entry.get("answer")
        return Question(text=entry["question"], source=source,
                        answer=None if answer is None else str(answer),
                        verify=lambda a, ds=ds, entry=entry: ds.score_answer(a, entry))

    def regenerate(self, source: dict) -> Question:
        """The question a peer's metadata describes; InvalidSource if it is not
        one of this experiment's (unknown task or settings, other seed, bad index)."""
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
        ds = _dataset(task.name, key[1], self.seed)
        index = source.get("index")
        if type(index) is not int or not 0 <= index < len(ds) or source.get("size") != len(ds):
            raise InvalidSource("question index out of range of the task's pool")
        return self._question(task, ds, index)


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

    def draw(self, node_id: str, round_: int, count: int) -> list[Question]:
        rng = round_rng(self.seed, node_id, round_)
        return [self._question(int(r)) for r in rng.integers(0, len(self.questions), size=count)]

    def regenerate(self, source: dict) -> Question:
        if not isinstance(source, dict) or source.get("kind") != "dataset":
            raise InvalidSource("not a question of a local dataset")
        if source.get("dataset") != self.digest:
            raise InvalidSource("question comes from a different dataset file")
        row = source.get("row")
        if type(row) is not int or not 0 <= row < len(self.questions):
            raise InvalidSource("dataset row out of range")
        return self._question(row)
