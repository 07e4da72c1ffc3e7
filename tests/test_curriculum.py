"""The difficulty curriculum and the held-out evaluation set: levels that keep a node's
success rate in the band, questions any peer regenerates at their level, and evaluation
questions that no node ever trains on."""

import numpy as np
import pytest

from genrl.curriculum import BAND, WINDOW, Curriculum, max_level, settings_at
from genrl.data import InvalidSource, ReasoningGymSource, parse_tasks

TASKS = "chain_sum,basic_arithmetic{allow_negation=false}"


def test_a_level_sets_the_task_s_difficulty_fields_and_keeps_the_user_s_others():
    assert settings_at("chain_sum", 0, {}) == {"min_terms": 2, "max_terms": 2, "min_digits": 1,
                                              "max_digits": 1}
    harder = settings_at("basic_arithmetic", 2, {"allow_negation": False, "min_terms": 5})
    assert harder["allow_negation"] is False and harder["max_terms"] == 4 and harder["max_digits"] == 3
    assert harder["min_terms"] == 2                      # the curriculum owns difficulty fields
    with pytest.raises(ValueError, match="has no curriculum level 99"):
        settings_at("chain_sum", 99, {})
    assert max_level("chain_sum") == 10 and max_level("bf") == 2


def full_window(cur, task, rate):
    cur.record(task, int(round(rate * WINDOW)), WINDOW)
    return cur.update()


def test_levels_move_up_above_the_band_down_below_it_and_only_on_a_full_window():
    cur = Curriculum(["chain_sum"])
    cur.record("chain_sum", WINDOW - 1, WINDOW - 1)     # not enough completions yet
    assert cur.update() == {} and cur.level("chain_sum") == 0
    cur.record("chain_sum", 1, 1)
    assert cur.update() == {"chain_sum": (0, 1, 1.0)}
    assert full_window(cur, "chain_sum", (BAND[0] + BAND[1]) / 2) == {}    # in the band: stay
    assert full_window(cur, "chain_sum", 0.0) == {"chain_sum": (1, 0, 0.0)}
    assert full_window(cur, "chain_sum", 0.0) == {}                       # level 0 is the floor
    cur.cap("chain_sum", 0)
    assert full_window(cur, "chain_sum", 1.0) == {} and cur.level("chain_sum") == 0
    again = Curriculum(["chain_sum"])
    again.restore(cur.state())
    assert again.state() == cur.state()
    again.restore({"levels": {"chain_sum": 999, "nope": 1}, "seen": {"chain_sum": [-1, 2]}})
    assert again.state() == cur.state()                  # nonsense from a file changes nothing


def test_a_node_s_success_rate_settles_in_the_band_whatever_the_model_s_skill():
    """A model whose success falls by 0.15 per level, from 0.95 or from 0.5 at level 0."""
    for start in (0.95, 0.5):
        rng = np.random.default_rng(0)
        cur = Curriculum(["chain_sum"])
        rates = []
        for _ in range(60):                               # rounds of 2 groups of 8
            p = max(0.0, start - 0.15 * cur.level("chain_sum"))
            rates.append(p)
            cur.record("chain_sum", int(rng.binomial(16, p)), 16)
            cur.update()
        assert BAND[0] - 0.1 <= np.mean(rates[-30:]) <= BAND[1] + 0.1, (start, rates[-30:])


def test_a_peer_regenerates_a_question_at_its_level_and_nothing_outside_the_experiment():
    src = ReasoningGymSource(parse_tasks(TASKS), seed=4, curriculum=True)
    questions = src.draw("n1", 3, 6, levels={"chain_sum": 4, "basic_arithmetic": 1})
    peer = ReasoningGymSource(parse_tasks(TASKS), seed=4, curriculum=True)
    for q in questions:
        level = {"chain_sum": 4, "basic_arithmetic": 1}[q.source["task"]]
        assert q.source["level"] == level
        again = peer.regenerate(q.source)
        assert (again.text, again.answer) == (q.text, q.answer)
    bad = dict(questions[0].source, level=max_level(questions[0].source["task"]) + 1)
    with pytest.raises(InvalidSource, match="out of range"):
        peer.regenerate(bad)
    plain = ReasoningGymSource(parse_tasks(TASKS), seed=4)
    with pytest.raises(InvalidSource, match="curriculum level given"):
        plain.regenerate(questions[0].source)
    assert src.fingerprint() != plain.fingerprint()      # experiment.json tells them apart


def test_a_level_whose_questions_disagree_with_their_answers_is_never_used(monkeypatch):
    import genrl.data as data
    src = ReasoningGymSource(parse_tasks("chain_sum"), seed=1, curriculum=True)
    real = data.check_answers

    def broken_above_2(task, ds, sample=24):
        if task.config.get("max_terms", 0) > 4:
            raise ValueError(f"task {task.name} makes questions that disagree")
        real(task, ds, sample)
    monkeypatch.setattr(data, "check_answers", broken_above_2)
    questions = src.draw("n1", 0, 3, levels={"chain_sum": 6})
    assert {q.source["level"] for q in questions} == {2} and src.top["chain_sum"] == 2


def test_the_evaluation_set_is_fixed_spread_over_tasks_and_never_drawn_for_training():
    small = "chain_sum{size=40},basic_arithmetic{size=40}"
    a = ReasoningGymSource(parse_tasks(small), seed=1, curriculum=True, eval_level=1)
    b = ReasoningGymSource(parse_tasks(small), seed=2, curriculum=True, eval_level=1)
    held = a.eval_set(10, seed=1)          # the very pool training draws from: a worst case
    assert [q.text for q in held] == [q.text for q in b.eval_set(10, seed=1)]   # any SEED
    assert [q.source["task"] for q in held] == ["chain_sum", "basic_arithmetic"] * 5  # interleaved
    assert len(texts_of := {q.text for q in held}) == 10                                # distinct
    assert {q.source["level"] for q in held} == {1}      # fixed, whatever training's level
    texts = texts_of
    drawn = [q.text for r in range(60) for q in a.draw("n1", r, 4, levels={"chain_sum": 1,
                                                                       "basic_arithmetic": 1})]
    assert not texts & set(drawn)                         # 240 draws from pools of 40
    a.held_out = set()
    undone = [q.text for r in range(60) for q in a.draw("n1", r, 4, levels={"chain_sum": 1,
                                                                        "basic_arithmetic": 1})]
    assert texts & set(undone)                            # without the exclusion they would be


# --- which task a question comes from --------------------------------------------------

NINE = ["t%d" % k for k in range(9)]


def play(cur: Curriculum, success: dict, rounds: int, seed: int, I: int = 4, G: int = 8,
         weights=None) -> list[tuple[str, bool]]:
    """A node's rounds against a model that answers task t right with probability
    success[t]: each round draws I tasks with ``cur.pick``, samples G completions per group,
    records them and applies the band, as the worker does. Returns (task, signal) per group."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(rounds):
        round_groups = []
        for k in cur.pick(rng, I, weights or [1.0] * len(cur.tasks)):
            task = cur.tasks[k]
            correct = int(rng.binomial(G, success[task]))
            round_groups.append((task, correct))
        for task, correct in round_groups:        # the round's results count from the next one
            cur.record(task, correct, G, 0 < correct < G)
            out.append((task, 0 < correct < G))
        cur.update()
    return out


def share(groups) -> float:
    return sum(s for _, s in groups) / len(groups)


@pytest.mark.parametrize("success, fixed_range", [
    ({"t3": 0.083}, (0.06, 0.09)),              # --quick, before restated answers were read
    ({"t3": 0.094, "t7": 0.078}, (0.10, 0.14)),  # --levels 0 --questions 8: two tasks pay
])
def test_a_thin_pool_of_signal_is_found_within_five_rounds(success, fixed_range):
    """SmolLM2-135M on the paper's nine tasks at level 0 (bench/curriculum.py): one or two
    tasks right 8-9% of the time, the others almost never. Drawn by fixed weights, 7-12% of
    groups have signal in the first five rounds; following signal, about twice that."""
    success = {t: 0.002 for t in NINE} | success
    followed = [share(play(Curriculum(list(NINE)), success, 5, seed)) for seed in range(300)]
    rng = np.random.default_rng(0)
    fixed = np.mean([0 < rng.binomial(8, success[NINE[rng.integers(9)]]) < 8 for _ in range(20000)])
    assert fixed_range[0] < fixed < fixed_range[1]
    assert np.mean(followed) > 1.8 * fixed
    later = [share(play(Curriculum(list(NINE)), success, 20, seed)[-40:]) for seed in range(40)]
    assert np.mean(later) > 0.25                    # rounds 15-19


def test_every_task_is_still_drawn_and_one_that_starts_to_pay_takes_its_share():
    """A task without signal is looked at again, so when the model starts to get it right
    (after round 100 here) it takes a share next to the task that paid so far."""
    cur = Curriculum(list(NINE))
    success = {t: 0.0 for t in NINE} | {"t0": 0.4}
    first = play(cur, success, 100, seed=1)
    assert {t for t, _ in first} == set(NINE)              # every task drawn at least once
    assert sum(t == "t0" for t, _ in first[-200:]) > 0.75 * 200
    later = play(cur, success | {"t5": 0.4}, 60, seed=2)[-120:]
    assert sum(t == "t5" for t, _ in later) > 0.2 * len(later)


def test_tasks_weights_still_count_between_tasks_that_pay_alike():
    cur = Curriculum(["a", "b"])
    groups = play(cur, {"a": 0.4, "b": 0.4}, 50, seed=3, weights=[3.0, 1.0])
    assert sum(t == "a" for t, _ in groups) > 0.6 * len(groups)


def test_a_level_change_forgets_the_task_s_signal_and_the_state_round_trips():
    cur = Curriculum(["basic_arithmetic"])
    for _ in range(WINDOW // 8):
        cur.record("basic_arithmetic", 8, 8, False)            # all right: moves up
    assert cur.groups["basic_arithmetic"] == [0, WINDOW // 8]
    cur.update()
    assert cur.level("basic_arithmetic") == 1 and cur.groups["basic_arithmetic"] == [0, 0]
    cur.record("basic_arithmetic", 3, 8, True)
    again = Curriculum(["basic_arithmetic"])
    again.restore(cur.state())
    assert again.groups == cur.groups == {"basic_arithmetic": [1, 1]}
    again.restore({"groups": {"basic_arithmetic": [5, 2]}})    # more hits than groups: ignored
    assert again.groups == {"basic_arithmetic": [1, 1]}


def test_questions_are_drawn_for_the_tasks_the_curriculum_picks_and_deterministically():
    source = ReasoningGymSource(parse_tasks("basic_arithmetic,chain_sum"), seed=1, curriculum=True)
    cur = Curriculum(["basic_arithmetic", "chain_sum"])
    for _ in range(30):
        cur.record("chain_sum", 4, 8, True)
        cur.record("basic_arithmetic", 0, 8, False)
    picked = source.draw("w1", 3, 20, levels=cur.levels, pick=cur.pick)
    assert sum(q.source["task"] == "chain_sum" for q in picked) >= 15
    assert [q.text for q in picked] == [q.text for q in source.draw("w1", 3, 20, levels=cur.levels,
                                                                     pick=cur.pick)]


def test_peers_groups_count_at_the_node_s_own_level_only():
    cur = Curriculum(["basic_arithmetic", "chain_sum"])
    cur.levels["chain_sum"] = 1
    cur.observe("chain_sum", 1, True)
    cur.observe("chain_sum", 0, True)           # drawn at another level: says nothing here
    cur.observe("basic_arithmetic", 0, False)
    cur.observe("not_a_task", 0, True)
    assert cur.groups == {"basic_arithmetic": [0, 1], "chain_sum": [1, 1]}
    assert cur.seen == {"basic_arithmetic": [0, 0], "chain_sum": [0, 0]}   # the band: own only


def test_counting_what_peers_share_finds_the_paying_tasks_sooner():
    """Two nodes of the main job, each re-scoring the other's groups of the round (what it
    reads while gathering): more of the first five rounds' groups have signal than with each
    node counting its own alone."""
    success = {t: 0.001 for t in NINE} | {"t3": 0.094, "t7": 0.078}

    def swarm(pooled: bool, seed: int) -> float:
        rng = np.random.default_rng(seed)
        nodes = [Curriculum(list(NINE)) for _ in range(2)]
        signal = total = 0
        for _ in range(5):
            drawn = [[(cur.tasks[k], int(rng.binomial(8, success[cur.tasks[k]])))
                      for k in cur.pick(rng, 4, [1.0] * 9)] for cur in nodes]
            for n, cur in enumerate(nodes):
                for task, correct in drawn[n]:
                    cur.record(task, correct, 8, 0 < correct < 8)
                    signal, total = signal + (0 < correct < 8), total + 1
                for task, correct in drawn[1 - n] if pooled else ():
                    cur.observe(task, 0, 0 < correct < 8)
        return signal / total

    own = np.mean([swarm(False, s) for s in range(300)])
    pooled = np.mean([swarm(True, s) for s in range(300)])
    assert pooled > own + 0.03
