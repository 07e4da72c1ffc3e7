"""Answers and rewards: extraction, the restating rule, format reward, reward arithmetic, and
that no text can make them raise or take more than linear time."""

import time

import pytest
from hypothesis import given, settings, strategies as st

from genrl.rewards import (RewardRule, exact_match, extract_answer, format_reward, numeric_match,
                           parse_number, restates, safe_score, tagged_answers)


@pytest.mark.parametrize("text, expected", [
    ("think... <answer>42</answer>", "42"),
    ("<ANSWER>x</ANSWER>", "x"),
    ("<answer><answer>5</answer></answer>", "5"),                     # doubled tags flattened
    ("<answer>5", "5"),                                               # unclosed: to its line's end
    ("<answer>5\nmore thoughts", "5"),
    ("<answer>4</answer> so, again: <answer> 4 </answer>", "4"),      # the same answer twice
    ("<answer> **7** </answer>", "7"),                                # markdown emphasis
    ("<answer>$3/4$</answer>", "3/4"),
    ("<answer>\\boxed{9}</answer>", "9"),
    ("<answer></answer>", None),
    ("no tags\nAnswer: 17.", "17"),                                   # fallback: explicit
    ("The answer is -4", "-4"),
    ("work...\nSo, the answer is -8.", "-8"),
    ("Final answer = 12", "12"),
    ("The final answer is: 42", "42"),
    ("**Answer:** 42", "42"),
    ("**Final Answer:** `0b101`", "0b101"),
    ("so we need 3 + 4.\n\\boxed{7}", "7"),
    ("The answer is 12.\nLet me double check: 5 + 7 = 12.", "12"),     # the last statement
    ("lots of reasoning\n\n  42  \n", "42"),                          # a bare last-line value
    ("The answer to this arithmetic problem is 11.", "11"),           # SmolLM2's own phrasing
    ("The sum of 5 and 6 is 11.", "11"),
    ("2 + 5 = 7", "7"),                                               # what the equation equals
    ("Let me find the answer: first add.\n11", "11"),                 # the last line first
    ("The answer is 12.\nI hope this helps!", "12"),
    ("So we get 12 after checking 13.", None),                         # a sentence is no answer
    ("first line\n\n  the last line of prose here  \n", None),
    ("", None),
    ("   \n \n", None),
])
def test_extract_answer_takes_the_tagged_or_stated_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text", [
    "<answer>1</answer> then <answer> 2 </answer>",                   # two answers: none
    "<answer>1</answer> wait, no: <answer>2",
    "<answer>Monday</answer><answer>Tuesday</answer><answer>Friday</answer>",   # tag spam
    "Like <answer>42</answer>, so: <answer>7</answer>",                # the prompt's example too
])
def test_a_completion_that_gives_two_different_answers_in_tags_gives_none(text):
    assert extract_answer(text) is None and len(set(tagged_answers(text))) > 1


def test_tags_only_requires_tags():
    assert extract_answer("Answer: 17", fallback="none") is None
    assert extract_answer("<answer>17</answer>", fallback="none") == "17"


@pytest.mark.parametrize("answer, restated", [
    ("-4", False), ("4", False), ("Friday", False), ("7", False),      # one value: a commitment
    ("4 - 1", True), ("4 - 1 - 7", True), ("monday or friday", True),  # pieces holding 2 values
    ("Calculate 4 - 1 - 7 = ?", True), ("Friday or Monday", False),    # not a piece of it
    ("3 - 1", False),
])
def test_an_answer_restates_the_question_when_it_copies_a_piece_holding_two_values(answer, restated):
    question = "Calculate 4 - 1 - 7 = ? Reply with Monday or Friday."
    assert restates(answer, question) is restated


@pytest.mark.parametrize("text, expected", [
    ("The day of the week for 09/20/22 is Sunday.", "Sunday"),       # SmolLM2's phrasing
    ("Let me think.\nThe day of the week for 09/20/2022 was a Friday", "a Friday"),
    ("The weekday is Sunday.", "Sunday"),
    ("The day of the week for 09/20/22 is Tuesday.", "Tuesday"),     # offered, and committed to
    ("It is Sunday.", None),                                          # too little restated
    ("The problem is hard.", None),                                   # not the question's words
    ("The day of the week for 09/20/2022 is one I would need a calendar for", None),  # prose
    ("The day of the week for 09/20/22 is Sunday.\nI hope that helps.", None),  # not the last line
])
def test_a_last_line_that_restates_the_question_gives_its_answer(text, expected):
    question = ("Name the day of the week for 09/20/2022. Answer with the weekday's name "
                "(e.g., Monday, Tuesday, etc.).")
    assert extract_answer(text, question=question) == expected


def test_a_grid_answer_is_read_from_the_trailing_block_of_rows():
    row = lambda line: all(t.isdigit() for t in line.split())
    text = "Distances:\n1 0 1\n0 1 2\n"
    assert extract_answer(text, row=row) == "1 0 1\n0 1 2"
    assert extract_answer("1 0 1\nbut then prose", row=row) is None


def test_format_reward_wants_exactly_one_final_answer_block():
    assert format_reward("<think>a</think> so <answer>3</answer>") == 1.0
    assert format_reward("reasoning <answer>3</answer>\n") == 1.0
    assert format_reward("<answer>3</answer> trailing words") == 0.0
    assert format_reward("<answer>1</answer><answer>2</answer>") == 0.0
    assert format_reward("<answer> </answer>") == 0.0
    assert format_reward("no tags at all") == 0.0
    assert format_reward("<think>a</think> <b> <answer>3</answer>") == 0.0


def test_format_weight_adds_a_bonus_and_partial_credit_counts_only_when_asked():
    assert RewardRule().reward(1.0, "<answer>5</answer>") == 1.0
    assert RewardRule(format_weight=0.5).reward(1.0, "<answer>5</answer>") == 1.5
    assert RewardRule(format_weight=0.5).reward(1.0, "5") == 1.0
    assert RewardRule().reward(0.25, "<answer>6</answer>") == 0.0         # a near miss
    assert RewardRule(partial_credit=True).reward(0.25, "<answer>6</answer>") == 0.25


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


# --- hostile text: never an exception, never more than linear time -----------------------

PATHOLOGICAL = {
    "equation then spaces": "= a" + " " * 31_990 + "b",                   # 2.4 s with the old regex
    "open tags without closers": "<answer>" * 3_900,
    "closers without openers": "</answer>" * 3_500,
    "tags without content": "<answer></answer>" * 1_800,
    "one long line of 'answer is'": "the answer is " * 2_280,
    "many short lines": "the sum is 1 = 2\n" * 1_880,
    "restated subjects": ("a is " * 6_000)[:31_999],
    "boxes": "\\boxed{" * 4_500,
    "nested markdown": "**`$" * 8_000,
    "think without end": "<think>" + "x" * 31_000 + "<answer>1</answer>",
}


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_a_pathological_completion_is_read_in_well_under_a_second(name):
    text = PATHOLOGICAL[name]
    assert len(text) <= 32_000
    t0 = time.perf_counter()
    extract_answer(text, question="What is 2 + 2?")
    format_reward(text)
    restates(text[:2000], "What is 2 + 2?")
    assert time.perf_counter() - t0 < 1.0, name


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=400), fallback=st.sampled_from(["guarded", "none"]))
def test_any_text_gives_an_answer_or_none_and_a_format_reward_of_0_or_1(text, fallback):
    answer = extract_answer(text, fallback, question=text[:50])
    assert answer is None or (isinstance(answer, str) and answer)
    assert format_reward(text) in (0.0, 1.0)
