"""What runs inside a verifier process (genrl/sandbox.py): reasoning-gym's scorers, behind
each task's answer grammar, under a CPU-time limit per answer.

Nothing in a worker's own process imports this module: it is where completion text meets
third-party scorers, some of which evaluate it. A question is named by its spec (task, the
task settings at its level, pool seed, index); this process regenerates the question's entry
from the same pool as every node (genrl/data.py), so it scores against its own ground truth.

One scorer is replaced: propositional_logic's accepts any formula the premises entail,
so copying a premise into the answer earned 1 on 90 of 100 questions at reasoning-gym's
default difficulty. Here a conclusion is correct when the premises entail it, it is not a
tautology, and one of its top-level conjuncts follows from the premises together but from no
single premise (so a premise, a weakening of one, or premises joined by ∧ earn nothing, and
modus ponens' "P" from "Q" and "(Q → P)" does: reasoning-gym calls every atom "trivial").
"""

from __future__ import annotations

import functools
import json
import signal

import reasoning_gym                         # noqa: F401 - every task's module, before lock-down
import sympy                                 # noqa: F401
import sympy.parsing.sympy_parser            # noqa: F401
from reasoning_gym.logic.propositional_logic import Expression, Operator

from genrl.data import _dataset, isolated
from genrl.grammars import accepts
from genrl.rewards import clamp_score


class _OutOfTime(Exception):
    pass


def _alarm(_signum, _frame):
    raise _OutOfTime()


signal.signal(signal.SIGPROF, _alarm)


@functools.lru_cache(maxsize=4096)
def _entry(task: str, config_json: str, seed: int, index: int):
    ds = _dataset(task, config_json, seed)
    if not 0 <= index < len(ds):
        raise ValueError("index out of range")
    with isolated():
        return ds, ds[index]


def warm_up() -> None:
    """Score a gold and a wrong answer of every task with a grammar of its own and of the
    paper's nine, once, before the lock-down: whatever their scorers import lazily is
    imported now, while the Python installation can still be read."""
    from genrl.grammars import GRAMMARS
    from genrl.tasks import PAPER_TASKS
    for task in sorted(set(GRAMMARS) | set(PAPER_TASKS) | {"chain_sum"}):
        try:
            with isolated():
                ds = reasoning_gym.create_dataset(task, seed=0, size=2)
                entry = ds[0]
                for answer in (entry.get("answer") or entry["metadata"].get("example_answer"),
                               "0", "x + 1"):
                    if isinstance(answer, str):
                        (propositional(ds, answer, entry) if task == "propositional_logic"
                         else ds.score_answer(answer, entry))
        except Exception:                       # noqa: BLE001 - a task that cannot be made
            continue


def entry_of(spec: dict):
    """(dataset, entry) of the question ``spec`` names; raises on a malformed spec."""
    return _entry(str(spec["task"]), json.dumps(spec["config"], sort_keys=True),
                  int(spec["seed"]), int(spec["index"]))


def score(spec: dict, entry, answer, cpu_s: float) -> tuple[str, float]:
    """(status, score) of one answer: refused outside the grammar, 0 after ``cpu_s``."""
    task = str(spec["task"])
    if not isinstance(answer, str) or not accepts(task, answer):
        return "refused", 0.0
    ds, item = entry
    signal.setitimer(signal.ITIMER_PROF, cpu_s)
    try:
        with isolated():
            value = (propositional(ds, answer, item) if task == "propositional_logic"
                     else ds.score_answer(answer, item))
        return "ok", clamp_score(float(value))
    except _OutOfTime:
        return "timeout", 0.0
    except BaseException:                    # noqa: BLE001 - MemoryError, RecursionError too
        return "error", 0.0
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)


def _conjuncts(expr: Expression) -> list[Expression]:
    if expr.operator == Operator.AND:
        return _conjuncts(expr.left) + _conjuncts(expr.right)
    return [expr]


def propositional(ds, answer: str, entry: dict) -> float:
    """1.0 for a conclusion the premises entail that is more than a premise (module doc)."""
    meta = entry["metadata"]
    if any(ch.isalpha() and ch not in meta["variables"] for ch in answer):
        return 0.0
    premises = [Expression.from_string(p) for p in meta["premises"]]
    conclusion = Expression.from_string(answer)
    entails = ds._is_valid_conclusion
    if not entails(premises, conclusion) or entails([], conclusion):
        return 0.0
    return float(any(entails(premises, part) and not any(entails([p], part) for p in premises)
                     for part in _conjuncts(conclusion)))
