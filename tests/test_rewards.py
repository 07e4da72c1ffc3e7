"""Rewards: answer extraction, format reward, and that no text can make them raise."""

import math

import pytest
from hypothesis import given, settings, strategies as st

from genrl.data import ReasoningGymSource, TaskSpec, PAPER_TASKS
from genrl.rewards import (RewardRule, completion_reward, exact_match, extract_answer,
                           format_reward, numeric_match, parse_number, safe_score)


@pytest.mark.parametrize("text, expected", [
    ("think... <answer>42</answer>", "42"),
    ("<answer>1</answer> then <answer> 2 </answer>", "2"),          # the last pair wins
    ("<ANSWER>x</ANSWER>", "x"),
    ("<answer><answer>5</answer></answer>", "5"),                     # doubled tags flattened
    ("<answer>5", "5"),                                               # unclosed: to its line's end
    ("<answer>5\nmore thoughts", "5"),
    ("<answer>1</answer> wait, no: <answer>2", "2"),                  # the last answer given
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
def test_extract_answer_takes_the_last_tagged_or_stated_answer(text, expected):
    assert extract_answer(text) == expected


def test_tags_only_requires_tags():
    assert extract_answer("Answer: 17", fallback="none") is None
    assert extract_answer("<answer>17</answer>", fallback="none") == "17"


def test_the_fallback_refuses_answers_made_of_the_question_s_own_words():
    question = "Calculate 4 - 1 - 7 = ? Reply with Monday or Friday."
    assert extract_answer("-4", question=question) == "-4"           # computed: fine
    assert extract_answer("The answer is 7", question=question) is None   # a number it shows
    assert extract_answer("4 - 1", question=question) is None        # a piece of it
    assert extract_answer("Friday", question=question) is None       # a word it offers
    assert extract_answer("<answer>Friday</answer>", question=question) == "Friday"  # tags: ok


@pytest.mark.parametrize("text, expected", [
    ("The day of the week for 09/20/22 is Sunday.", "Sunday"),       # SmolLM2's phrasing
    ("Let me think.\nThe day of the week for 09/20/2022 was a Friday", "a Friday"),
    ("The weekday is Sunday.", "Sunday"),
    ("The day of the week for 09/20/22 is Tuesday.", None),          # offered by the question
    ("It is Sunday.", None),                                          # too little restated
    ("The problem is hard.", None),                                   # not the question's words
    ("The day of the week for 09/20/2022 is the day of the week.", None),   # an echo
    ("The day of the week for 09/20/2022 is one I would need a calendar for", None),  # prose
    ("The day of the week for 09/20/22 is Sunday.\nI hope that helps.", None),  # not the last line
])
def test_a_last_line_that_restates_the_question_gives_its_answer(text, expected):
    question = ("Name the day of the week for 09/20/2022. Answer with the weekday's name "
                "(e.g., Monday, Tuesday, etc.).")
    assert extract_answer(text, question=question) == expected


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


def test_partial_credit_counts_only_when_asked():
    verify = lambda a: {"5": 1.0, "6": 0.25}.get(a, 0.0)   # reasoning-gym's near misses
    assert completion_reward("<answer>6</answer>", verify) == 0.0
    assert completion_reward("<answer>6</answer>", verify, partial_credit=True) == 0.25
    assert completion_reward("<answer>5</answer>", verify) == 1.0


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
       weight=st.sampled_from([0.0, 0.5]), fallback=st.sampled_from(["guarded", "none"]),
       partial=st.booleans())
def test_any_completion_text_yields_a_finite_reward(text, k, weight, fallback, partial):
    reward = completion_reward(text, _QUESTIONS[k].verify, question=_QUESTIONS[k].text,
                               format_weight=weight, fallback=fallback, partial_credit=partial)
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


# --- echoes: a completion made of pieces of its question never earns anything --------------

_ECHO_SOURCE = ReasoningGymSource([TaskSpec(t) for t in PAPER_TASKS + ("chain_sum",)], seed=5)
_ECHO_QUESTIONS = _ECHO_SOURCE.draw("echo-node", 0, 60)


@st.composite
def echo(draw):
    """A question and a completion made only of pieces of it: lines, words or spans,
    joined by spaces or newlines, optionally after an 'answer is' its pieces may carry."""
    q = draw(st.sampled_from(_ECHO_QUESTIONS))
    text = q.text
    words, lines = text.split(), [line for line in text.splitlines() if line.strip()]

    def span():
        a = draw(st.integers(0, len(text) - 1))
        return text[a:draw(st.integers(a + 1, min(len(text), a + 60)))]
    piece = st.one_of(st.sampled_from(words), st.sampled_from(lines), st.builds(span))
    pieces = draw(st.lists(piece, min_size=1, max_size=6))
    joins = draw(st.lists(st.sampled_from([" ", "\n", "\n\n"]), min_size=len(pieces),
                          max_size=len(pieces)))
    return q, "".join(p + j for p, j in zip(pieces, joins)).strip()


@settings(max_examples=400, deadline=None)
@given(case=echo(), partial=st.booleans())
def test_a_completion_made_of_pieces_of_the_question_never_scores_above_zero(case, partial):
    q, completion = case
    rule = RewardRule(fallback="guarded", partial_credit=partial)
    assert rule(completion, q) == 0.0, (q.source["task"], completion[-200:])


def test_echoing_every_line_or_word_of_every_question_earns_nothing():
    rule = RewardRule(partial_credit=True)      # even partial credit
    for q in _ECHO_QUESTIONS:
        pieces = [q.text] + q.text.splitlines() + q.text.split()
        assert all(rule(p, q) == 0.0 for p in pieces if p.strip()), q.source["task"]
