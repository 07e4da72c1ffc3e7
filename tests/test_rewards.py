"""Rewards: answer extraction, format reward, and that no text can make them raise."""

import math

import pytest
from hypothesis import given, settings, strategies as st

from genrl.data import ReasoningGymSource, TaskSpec, PAPER_TASKS
from genrl.rewards import (completion_reward, exact_match, extract_answer, format_reward,
                           numeric_match, parse_number, safe_score)


@pytest.mark.parametrize("text, expected", [
    ("think... <answer>42</answer>", "42"),
    ("<answer>1</answer> then <answer> 2 </answer>", "2"),          # the last pair wins
    ("<ANSWER>x</ANSWER>", "x"),
    ("no tags\nAnswer: 17.", "17"),                                   # fallback: last line
    ("The answer is -4", "-4"),
    ("work...\nSo, the answer is -8.", "-8"),
    ("Final answer = 12", "12"),
    ("first line\n\n  last line  \n", "last line"),
    ("", None),
    ("   \n \n", None),
    ("<answer>unclosed", "<answer>unclosed"),
])
def test_extract_answer_takes_the_last_tag_pair_or_the_last_line(text, expected):
    assert extract_answer(text) == expected


def test_strict_fallback_requires_tags():
    assert extract_answer("Answer: 17", fallback="none") is None
    assert extract_answer("<answer>17</answer>", fallback="none") == "17"


def test_format_reward_wants_exactly_one_final_answer_block():
    assert format_reward("<think>a</think> so <answer>3</answer>") == 1.0
    assert format_reward("reasoning <answer>3</answer>\n") == 1.0
    assert format_reward("<answer>3</answer> trailing words") == 0.0
    assert format_reward("<answer>1</answer><answer>2</answer>") == 0.0
    assert format_reward("<answer> </answer>") == 0.0
    assert format_reward("no tags at all") == 0.0


def test_format_weight_adds_a_bonus_on_top_of_correctness():
    verify = lambda a: 1.0 if a == "5" else 0.0
    assert completion_reward("<answer>5</answer>", verify) == 1.0
    assert completion_reward("<answer>5</answer>", verify, format_weight=0.5) == 1.5
    assert completion_reward("5", verify, format_weight=0.5) == 1.0


def test_safe_score_turns_verifier_failures_into_numbers():
    def broken(_):
        raise RuntimeError("verifier bug")
    assert safe_score(broken, "x") == 0.0
    assert safe_score(lambda _: float("nan"), "x") == 0.0
    assert safe_score(lambda _: 7.0, "x") == 1.0
    assert safe_score(lambda _: -3, "x") == 0.0
    assert safe_score(lambda _: "0.5", "x") == 0.5


@pytest.mark.parametrize("answer, truth, expected", [
    ("1,234", "1234", 1.0), ("3.50", "3.5", 1.0), ("7/2", "3.5", 1.0), ("$5", "5", 1.0),
    ("5.0001", "5", 0.0), ("abc", "ABC ", 1.0), (None, "1", 0.0), ("1e400", "1", 0.0),
])
def test_numeric_match_compares_values(answer, truth, expected):
    assert numeric_match(answer, truth) == expected


def test_exact_match_ignores_case_and_spacing():
    assert exact_match("  Hello   World ", "hello world") == 1.0
    assert exact_match("hello", "world") == 0.0
    assert parse_number("1/0") is None


_SOURCE = ReasoningGymSource([TaskSpec(t) for t in PAPER_TASKS], seed=3)
_QUESTIONS = _SOURCE.draw("prop-node", 0, 12)


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=400), k=st.integers(0, len(_QUESTIONS) - 1),
       weight=st.sampled_from([0.0, 0.5]), fallback=st.sampled_from(["last_line", "none"]))
def test_any_completion_text_yields_a_finite_reward(text, k, weight, fallback):
    reward = completion_reward(text, _QUESTIONS[k].verify, format_weight=weight, fallback=fallback)
    assert isinstance(reward, float) and math.isfinite(reward)
    assert 0.0 <= reward <= 1.0 + weight


@settings(max_examples=100, deadline=None)
@given(inner=st.text(max_size=200), k=st.integers(0, len(_QUESTIONS) - 1))
def test_tagged_arbitrary_answers_never_raise(inner, k):
    text = f"<think>{inner}</think><answer>{inner}</answer>"
    assert 0.0 <= completion_reward(text, _QUESTIONS[k].verify) <= 1.0
    assert numeric_match(inner, "3") in (0.0, 1.0)


def test_correct_answers_of_the_paper_tasks_score_one():
    scored = 0
    for q in _QUESTIONS:
        if q.answer is None:      # propositional_logic has no single answer string
            continue
        assert completion_reward(f"<answer>{q.answer}</answer>", q.verify) == 1.0, q.source["task"]
        scored += 1
    assert scored >= 8
