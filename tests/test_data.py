"""Question sources: the TASKS setting, deterministic draws, regeneration from metadata."""

import json

import pytest

from genrl.data import (DatasetSource, InvalidSource, PAPER_TASKS, ReasoningGymSource, TaskSpec,
                        parse_tasks, validate_tasks)
from genrl.scoring import Scorer


def test_parse_tasks_accepts_names_weights_and_settings():
    tasks = parse_tasks("basic_arithmetic:2{min_terms=2;max_terms=3}, chain_sum")
    assert tasks[0] == TaskSpec("basic_arithmetic", 2.0, (("max_terms", 3), ("min_terms", 2)))
    assert tasks[1] == TaskSpec("chain_sum", 1.0, ())
    assert parse_tasks('{"chain_sum": {"weight": 3, "min_terms": 2}}') == [
        TaskSpec("chain_sum", 3.0, (("min_terms", 2),))]


@pytest.mark.parametrize("spec, message", [
    ("", "no task"), ("basic_arithmetic:0", "must be > 0"), ("basic_arithmetic:x", "number"),
    ("basic_arithmetic{min_terms}", "key=value"), ("{not json", "JSON"),
])
def test_parse_tasks_rejects_malformed_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_tasks(spec)


def test_unknown_task_is_rejected_with_a_suggestion():
    with pytest.raises(ValueError, match="did you mean basic_arithmetic"):
        validate_tasks([TaskSpec("basic_arithmetc")])


def test_invalid_task_settings_name_the_task():
    with pytest.raises(ValueError, match="not valid for task basic_arithmetic"):
        validate_tasks([TaskSpec("basic_arithmetic", 1.0, (("no_such_field", 1),))])


def test_a_task_whose_questions_disagree_with_their_answers_is_refused():
    # reasoning-gym writes "Calculate 4 / 1 / 7." with answer 8 under these settings
    with pytest.raises(ValueError, match=r"task basic_arithmetic with settings "
                       r"\{'allow_parentheses': False\} makes questions that disagree with their "
                       r"own answers \(\d+ of 24 checked\)"):
        ReasoningGymSource(parse_tasks("basic_arithmetic{allow_parentheses=false}"), seed=1)
    ReasoningGymSource(parse_tasks("basic_arithmetic,chain_sum,decimal_chain_sum"), seed=1)


def test_the_default_mix_is_the_papers_nine_tasks():
    assert len(PAPER_TASKS) == 9
    source = ReasoningGymSource([TaskSpec(t) for t in PAPER_TASKS], seed=0)
    drawn = {q.source["task"] for r in range(6) for q in source.draw("n", r, 9)}
    assert drawn <= set(PAPER_TASKS) and len(drawn) >= 7


def test_draws_are_deterministic_in_seed_node_and_round():
    source = ReasoningGymSource(parse_tasks("basic_arithmetic,chain_sum"), seed=7)
    texts = lambda node, r, s=source: [q.text for q in s.draw(node, r, 5)]
    assert texts("a", 1) == texts("a", 1)
    assert texts("a", 1) != texts("a", 2)
    assert texts("a", 1) != texts("b", 1)
    other_seed = ReasoningGymSource(parse_tasks("basic_arithmetic,chain_sum"), seed=8)
    assert texts("a", 1) != texts("a", 1, other_seed)


def test_weights_shape_the_mix():
    source = ReasoningGymSource(parse_tasks("basic_arithmetic:9,chain_sum:1"), seed=1)
    tasks = [q.source["task"] for r in range(40) for q in source.draw("n", r, 10)]
    assert 0.8 < tasks.count("basic_arithmetic") / len(tasks) < 0.97


def test_any_node_regenerates_a_question_and_its_answer_from_metadata():
    mine = ReasoningGymSource(parse_tasks("basic_arithmetic{min_terms=2;max_terms=2}"), seed=5)
    theirs = ReasoningGymSource(parse_tasks("basic_arithmetic{min_terms=2;max_terms=2}"), seed=5)
    for q in theirs.draw("peer", 3, 4):
        source = json.loads(json.dumps(q.source))          # as it travels
        again = mine.regenerate(source)
        assert (again.text, again.answer) == (q.text, q.answer) and again.check == q.check
        assert Scorer().score(again, [f"<answer>{q.answer}</answer>"])[0].correct


def test_a_setting_that_is_a_list_works_and_travels():
    """calendar_arithmetic's `tasks` setting is a list: TASKS accepts it, the source builds
    (it crashed with "unhashable type: 'list'"), and a peer regenerates the question."""
    spec = 'calendar_arithmetic{tasks=["weekday_of_date"];offset_upper_bound=7}'
    mine, theirs = (ReasoningGymSource(parse_tasks(spec), seed=5) for _ in range(2))
    q = theirs.draw("peer", 0, 1)[0]
    assert "day of the week" in q.text
    again = mine.regenerate(json.loads(json.dumps(q.source)))
    assert (again.text, again.answer) == (q.text, q.answer)
    with pytest.raises(ValueError, match="listed twice"):
        validate_tasks(parse_tasks(spec + "," + spec))


@pytest.mark.parametrize("change, reason", [
    ({"task": "chain_sum"}, "not in this experiment"),
    ({"config": {"min_terms": 3}}, "not in this experiment"),
    ({"seed": 6}, "seed"),
    ({"index": -1}, "out of range"), ({"index": 10**12}, "out of range"), ({"index": "3"}, "out of range"),
    ({"kind": "dataset"}, "not a reasoning-gym"), ({"config": None}, "settings missing"),
])
def test_regenerate_refuses_metadata_outside_the_experiment(change, reason):
    source = ReasoningGymSource(parse_tasks("basic_arithmetic"), seed=5)
    meta = {**source.draw("x", 0, 1)[0].source, **change}
    with pytest.raises(InvalidSource, match=reason):
        source.regenerate(meta)


def test_a_users_dataset_is_drawn_and_scored(tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(20)]
    rows.append({"question": "Capital of France?", "answer": "Paris"})
    path.write_text("\n".join(json.dumps(r) for r in rows))
    source = DatasetSource(str(path), seed=1)
    assert [q.text for q in source.draw("n", 0, 5)] == [q.text for q in source.draw("n", 0, 5)]
    q = source.regenerate({"kind": "dataset", "dataset": source.digest, "row": 3})
    assert q.verify("6") == 1.0 and q.verify("6.0") == 1.0 and q.verify("7") == 0.0
    paris = source.regenerate({"kind": "dataset", "dataset": source.digest, "row": 20})
    assert paris.verify(" paris ") == 1.0
    with pytest.raises(InvalidSource):
        source.regenerate({"kind": "dataset", "dataset": "other", "row": 3})


def test_dataset_csv_and_clear_errors(tmp_path):
    csv = tmp_path / "qa.csv"
    csv.write_text("question,answer\nOne plus one?,2\n")
    assert DatasetSource(str(csv), seed=0).draw("n", 0, 1)[0].text == "One plus one?"
    bad = tmp_path / "qa2.csv"
    bad.write_text("prompt,solution\nx,y\n")
    with pytest.raises(ValueError, match="missing column"):
        DatasetSource(str(bad), seed=0)
    with pytest.raises(ValueError, match="unsupported file type"):
        DatasetSource(str(tmp_path / "qa.txt"), seed=0)
    with pytest.raises(ValueError, match="no such file"):
        DatasetSource(str(tmp_path / "missing.jsonl"), seed=0)


def test_a_task_s_answers_do_not_depend_on_what_other_tasks_generated_before():
    # reasoning-gym's decimal_arithmetic sets the process's decimal precision (6 here) for
    # every question; decimal_chain_sum computes its answers with Decimal
    import decimal
    chain = ReasoningGymSource(parse_tasks("decimal_chain_sum"), seed=3)
    before = [(q.text, q.answer) for q in chain.draw("n", 0, 24)]
    ReasoningGymSource(parse_tasks("decimal_arithmetic{precision=6}"), seed=3).draw("n", 0, 8)
    assert decimal.getcontext().prec == 28
    after = [(q.text, q.answer) for q in ReasoningGymSource(parse_tasks("decimal_chain_sum"),
                                                             seed=3).draw("n", 0, 24)]
    assert after == before
