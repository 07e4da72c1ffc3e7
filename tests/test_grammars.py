"""Answer grammars: every scorer that evaluates has one, every gold answer fits its own, and no
payload that could run as code fits any of them."""

import inspect
import json
import re
import time

import pytest

from genrl.curriculum import max_level, settings_at
from genrl.grammars import GRAMMARS, NOT_ON_ANSWERS, TEXT, accepts, grammar
from genrl.rewards import _clean
from genrl.tasks import PAPER_TASKS, _dataset, isolated

INTERPRETERS = re.compile(r"(?<![.\w])(?:eval|exec)\(|parse_expr\(|sympify\(|literal_eval\(")


def scorer_module_source(task: str) -> str:
    from reasoning_gym.factory import DATASETS
    owner = next(k for k in DATASETS[task][0].__mro__ if "score_answer" in k.__dict__)
    return inspect.getsource(inspect.getmodule(owner))


def test_every_task_whose_scorer_module_calls_an_interpreter_has_a_grammar_of_its_own():
    """The audit in genrl/grammars.py, re-done on the installed reasoning-gym: a new task that
    evaluates (or a scorer that starts to) fails here until it gets a grammar."""
    from reasoning_gym.factory import DATASETS
    evaluating = {t for t in DATASETS if INTERPRETERS.search(scorer_module_source(t))}
    assert {"binary_matrix", "spiral_matrix", "polynomial_multiplication", "countdown",
            "puzzle24", "n_queens", "string_insertion"} <= evaluating      # the audit's finds
    assert not {t for t in evaluating if grammar(t) is TEXT and t not in NOT_ON_ANSWERS}


GOLD_TASKS = sorted(set(PAPER_TASKS) | {"chain_sum", "spiral_matrix", "polynomial_multiplication",
                                        "puzzle24", "countdown", "n_queens", "string_insertion",
                                        "simple_integration", "intermediate_integration",
                                        "number_sorting", "bitwise_arithmetic", "products"})


@pytest.mark.parametrize("task", GOLD_TASKS)
def test_every_gold_answer_fits_its_task_s_grammar_at_every_curriculum_level(task):
    checked = 0
    for level in range(max_level(task) + 1):
        ds = _dataset(task, json.dumps(settings_at(task, level, {}), sort_keys=True), 3)
        with isolated():
            for index in range(0, len(ds), max(1, len(ds) // 6))[:6]:
                entry = ds[index]
                gold = entry["answer"] if entry["answer"] is not None \
                    else entry["metadata"].get("example_answer")
                if "Integral(" in str(gold):   # sympy could not integrate it: copying the
                    continue                   # unevaluated integral would be a free answer
                assert accepts(task, _clean(str(gold))), (task, level, str(gold)[:80])
                checked += 1
    assert checked >= 6


PAYLOADS = [
    "__import__('os').system('touch /tmp/rl-swarm-pwned')",
    "exec(\"import os; os.system('id')\")",
    "[c for c in ().__class__.__base__.__subclasses__()]",
    "eval(input())", "open('/etc/passwd').read()", "lambda: 0", "globals()",
    "S('1')", "N(x)", "x.__class__", "x**9**9**9", "9**999999", "(((((x)**99)**99)**99)**99)",
    "(" * 500 + "1" + ")" * 500, "[" * 500 + "]" * 500, "1e999999999", "x = 1",
    "getattr(x, 'y')", "sin(x).func", "breakpoint()",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_no_payload_reaches_a_scorer_that_evaluates(payload):
    from reasoning_gym.factory import DATASETS
    evaluating = [t for t in DATASETS if INTERPRETERS.search(scorer_module_source(t))
                  and t not in NOT_ON_ANSWERS]
    assert [t for t in evaluating if accepts(t, payload)] == []


@pytest.mark.parametrize("name", sorted({g.name for g in GRAMMARS.values()}))
def test_each_grammar_checks_a_hostile_answer_in_linear_time(name):
    g = next(g for g in GRAMMARS.values() if g.name == name)
    for text in ("1 " * 16_000, "(" * 16_000, "x" * 32_000, "1" * 32_000, "x**2*" * 6_000,
                 "[1, " * 8_000, "\n".join(["1 0"] * 8_000), '"\\' * 16_000):
        t0 = time.perf_counter()
        g.accepts(text)
        assert time.perf_counter() - t0 < 0.5, (name, text[:20])


@pytest.mark.parametrize("task, good, bad", [
    ("basic_arithmetic", ["-4", "1,234", "3.5"], ["4 or 5", "5 - 3", "four", "-4\n5"]),
    ("calendar_arithmetic", ["Friday", "132", "Yes"], ["Monday, Tuesday", "Friday or Monday"]),
    ("binary_matrix", ["1 0\n0 1", "[[1, 0], [0, 1]]"], ["[[[1]]]", "[[1, 0]] + [[x]]", "1 a"]),
    ("polynomial_multiplication", ["-12*x**3 + 4*x**2 - x", "3*z**78"],
     ["x**99999", "9**99", "x(1)", "xy", "abs(x)", "x**(2+1)"]),
    ("intermediate_integration", ["-3*cos(4*x + 2)**2/2 + C", "-2*(3 - 9*x)**(3/2) + C"],
     ["exp(x).subs(x, 1)", "cos(x)**99999", "((x)**2)**2**2"]),
    ("propositional_logic", ["(P ∧ Q)", "¬P", "P"], ["P and Q", "(" * 20 + "P" + ")" * 20]),
    ("fraction_simplification", ["138/583", "\\frac{15}{82}", "7"], ["138/583 or 1/2", "0.5"]),
])
def test_grammars_say_what_an_answer_of_their_task_is(task, good, bad):
    assert all(accepts(task, a) for a in good), task
    assert not any(accepts(task, a) for a in bad), task
