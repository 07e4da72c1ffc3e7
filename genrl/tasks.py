"""The TASKS setting: which reasoning-gym tasks a swarm trains on, checked before it starts.

``parse_tasks`` reads TASKS (names, weights, settings; or JSON; ``paper``: the SAPO paper's nine
tasks), ``validate_tasks`` checks names against reasoning-gym's registry and settings against
each task's config, and ``check_answers`` refuses a task whose questions disagree with their
own answers (on a sample: its scorer must give its oracle answer full marks). Oracle answers
are the dataset's own, never a completion's, so they are scored in this process; completions
are scored only through genrl/scoring.py.

``_dataset`` builds (and caches) one task's question pool; ``isolated`` runs reasoning-gym
code away from process-wide state. Every node and every verifier process builds pools the
same way, so a question's metadata regenerates it anywhere.
"""

from __future__ import annotations

import ast
import contextlib
import decimal
import difflib
import functools
import io
import json
import operator
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Optional

import numpy as np

from genrl.rewards import CORRECT

PAPER_TASKS = ("base_conversion", "basic_arithmetic", "arc_1d", "bf", "propositional_logic",
               "fraction_simplification", "decimal_arithmetic", "calendar_arithmetic",
               "binary_matrix")
DEFAULT_TASKS = "paper,chain_sum"  # the paper's nine and a warm-up task (README, Tasks)
DEFAULT_POOL_SIZE = 10_000  # questions per task; `size` in a task's settings overrides
ORACLE_SAMPLE = 24          # questions per task whose answers are checked against the scorer


@contextlib.contextmanager
def isolated():
    """Run reasoning-gym code away from process-wide state: generators that print progress
    dots (bf) print into nothing, and those that set the decimal precision
    (decimal_arithmetic sets ``getcontext().prec`` for every question) set it in a context of
    their own, so the answers of other tasks (decimal_chain_sum) do not depend on which
    questions this process happened to make before. Otherwise two nodes could disagree."""
    with contextlib.redirect_stdout(io.StringIO()), decimal.localcontext(decimal.Context()):
        yield



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
    """Parse TASKS. ``paper`` stands for the SAPO paper's nine tasks, weight 1. Forms
    (comma-separated):
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
        if part == "paper":                 # the SAPO paper's nine tasks, weight 1
            tasks += [TaskSpec(name) for name in PAPER_TASKS]
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


