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
import decimal
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

from genrl.curriculum import max_level, settings_at
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


@contextlib.contextmanager
def isolated():
    """Run reasoning-gym code away from process-wide state: generators that print progress
    dots (bf) print into nothing, and those that set the decimal precision
    (decimal_arithmetic sets ``getcontext().prec`` for every question) set it in a context of
    their own, so the answers of other tasks (decimal_chain_sum) do not depend on which
    questions this process happened to make before. Otherwise two nodes could disagree."""
    with contextlib.redirect_stdout(io.StringIO()), decimal.localcontext(decimal.Context()):
        yield


def _score(ds, answer, entry) -> float:
    with isolated():
        return ds.score_answer(answer, entry)


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
        key = (task.name, json.dumps(task.config, sort_keys=True))   # settings may hold lists
        if key in seen:
            raise ValueError(f"task {task.name} is listed twice with the same settings")
        seen.add(key)
        try:
            ds = _dataset(*key, 0)
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
    with isolated():
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


@functools.lru_cache(maxsize=256)
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
            for _ in range(100):             # never a question of the evaluation set
                question = self._question(task, ds, int(rng.integers(0, len(ds))), level, self.seed)
                if question.text not in self.held_out:
                    break
            questions.append(question)
        return questions

    def eval_set(self, count: int, seed: int) -> list[Question]:
        """``count`` fixed questions spread evenly over the tasks (at least one each), from
        pools seeded by ``seed`` at the evaluation difficulty; ``draw`` never returns them."""
        per_task = [count // len(self.tasks) + (k < count % len(self.tasks))
                    for k in range(len(self.tasks))]
        out = []
        for task, n in zip(self.tasks, per_task):
            level = min(self.eval_level, max_level(task.name)) if self.curriculum else None
            ds = _dataset(task.name, self._config_json(self.settings(task, level)), seed)
            rng = np.random.default_rng([seed, stable_int(task.name)])
            picks = rng.choice(len(ds), size=min(max(n, 1), len(ds)), replace=False)
            out += [self._question(task, ds, int(i), level, seed) for i in picks]
        self.held_out = {q.text for q in out}
        return out

    def _question(self, task: TaskSpec, ds, index: int, level: Optional[int], seed: int) -> Question:
        with isolated():
            entry = ds[index]
        source = {"kind": "reasoning_gym", "task": task.name, "config": task.config,
                  "seed": seed, "size": len(ds), "index": index}
        if level is not None:
            source["level"] = level
        answer = entry.get("answer")
        return Question(text=entry["question"], source=source,
                        answer=None if answer is None else str(answer),
                        verify=lambda a, ds=ds, entry=entry: _score(ds, a, entry))

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
        return self._question(task, ds, index, level, self.seed)


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
        """A fixed sample of rows (at most half the file) held out from training."""
        rng = np.random.default_rng([seed, stable_int(self.digest)])
        picks = rng.choice(len(self.questions), size=min(count, len(self.questions) // 2),
                           replace=False)
        self.held_out = {int(r) for r in picks}
        return [self._question(int(r)) for r in sorted(self.held_out)]

    def regenerate(self, source: dict) -> Question:
        if not isinstance(source, dict) or source.get("kind") != "dataset":
            raise InvalidSource("not a question of a local dataset")
        if source.get("dataset") != self.digest:
            raise InvalidSource("question comes from a different dataset file")
        row = source.get("row")
        if type(row) is not int or not 0 <= row < len(self.questions):
            raise InvalidSource("dataset row out of range")
        return self._question(row)
