"""Scoring, the one door: right answers paid and tricks not on every task of the default mix,
no completion run as code, bounded cost, what is scored is what is trained, held-out questions
refused from peers."""

import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from genrl.data import InvalidSource, ReasoningGymSource, TaskSpec, parse_tasks
from genrl.evaluation import EVAL_SEED
from genrl.probes import gold_forms, premises_of, propositional_conclusion, tricks
from genrl.rewards import RewardRule, _clean
from genrl.rollouts import RolloutGroup, encode_rollouts
from genrl.sapo import ExternalSelector
from genrl.scoring import Scorer
from genrl.tasks import PAPER_TASKS, _dataset
from rgym_exp.drive.store import FolderStore
from rgym_exp.exchange import RolloutExchange
from tests.signing import node_exp, signer, write_as

SCORER = Scorer()
DEFAULT_MIX = list(PAPER_TASKS) + ["chain_sum"]


def questions(task: str, count: int, seed: int = 5):
    level = 2 if task == "propositional_logic" else 0   # level 0's four have no conclusion
    source = ReasoningGymSource([TaskSpec(task)], seed=seed, curriculum=True)
    return source.draw("probe", 0, count, levels={task: level})


@pytest.mark.parametrize("task", DEFAULT_MIX)
def test_right_answers_are_paid_and_tricks_are_not_on_every_task_of_the_default_mix(task):
    golds = 0
    for q in questions(task, 6):
        gold = q.answer if q.answer is not None else propositional_conclusion(q, SCORER)
        if gold is None:
            continue
        golds += 1
        gold = _clean(gold)
        for form, text in gold_forms(gold, task).items():
            verdict = SCORER.score(q, [text])[0]
            assert verdict.correct and verdict.reward == 1.0, (form, text[-120:], verdict.why)
        premises = premises_of(q.text) if task == "propositional_logic" else ()
        for rule in (RewardRule(), RewardRule(partial_credit=True)):
            for family, texts in tricks(q.text, gold, task, premises).items():
                for text, verdict in zip(texts, Scorer(rule).score(q, texts)):
                    assert verdict.reward == 0.0, (family, text[-120:])
    assert golds >= 2


def test_a_premise_copy_earns_nothing_on_propositional_logic_at_reasoning_gym_s_difficulty():
    """It earned 1 on 90 of 100 questions under reasoning-gym's own scorer."""
    ds = _dataset("propositional_logic", "{}", 7)
    source = ReasoningGymSource([TaskSpec("propositional_logic")], seed=7)
    copies = paid = before = 0
    for index in range(40):
        q = source.regenerate({**source.draw("p", 0, 1)[0].source, "index": index,
                               "size": len(ds)})
        texts = [f"<answer>{p}</answer>" for p in premises_of(q.text)]
        copies += len(texts)
        paid += sum(v.reward > 0 for v in SCORER.score(q, texts))
        before += any(ds.score_answer(p, ds[index]) >= 1 for p in premises_of(q.text))
    assert copies > 80 and paid == 0 and before >= 30       # reasoning-gym paid most of them


@settings(max_examples=120, deadline=None)
@given(text=st.text(max_size=300), k=st.integers(0, 9), partial=st.booleans(),
       weight=st.sampled_from([0.0, 0.5]))
def test_any_completion_text_yields_a_finite_reward_in_range(text, k, partial, weight):
    q = _MIXED[k]
    verdict = Scorer(RewardRule(partial_credit=partial, format_weight=weight)).score(q, [text])[0]
    assert isinstance(verdict.reward, float) and math.isfinite(verdict.reward)
    assert 0.0 <= verdict.reward <= 1.0 + weight


_MIXED = [questions(t, 1)[0] for t in DEFAULT_MIX]


# --- no completion runs as code ---------------------------------------------------------

EVALUATING = ["binary_matrix", "spiral_matrix", "polynomial_multiplication"]


def payloads(marker: str) -> list[str]:
    """Answers that create ``marker.*`` files if any interpreter evaluates them."""
    run = f"__import__('os').system('touch {marker}.system')"
    return [f"<answer>{run}</answer>", f"The answer is {run}",
            f"<answer>[open('{marker}.open', 'w').write('x')]</answer>",
            f"<answer>exec(\"import os; os.system('touch {marker}.exec')\")</answer>",
            f"<answer>__import__('os').system('touch {marker}.sympy') + x</answer>"]


def test_the_payloads_are_live_where_a_scorer_evaluates_in_process(tmp_path):
    """The control: reasoning-gym's own binary_matrix scorer, called directly (in a throwaway
    process), runs the payload. Scoring through the door must not."""
    marker = str(tmp_path / "control")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from genrl.tasks import _dataset; "
            "ds = _dataset('binary_matrix', '{}', 1); "
            f"ds.score_answer(\"__import__('os').system('touch {marker}.system')\", ds[0])")
    subprocess.run([sys.executable, "-c", code, os.path.dirname(os.path.dirname(__file__))],
                   check=True, timeout=120)
    assert os.path.exists(marker + ".system")


@pytest.mark.parametrize("task", EVALUATING + DEFAULT_MIX)
def test_a_node_s_own_completions_never_run_as_code(task, tmp_path):
    marker = str(tmp_path / "own")
    verdicts = SCORER.score(questions(task, 1)[0], payloads(marker))
    assert all(v.reward == 0.0 for v in verdicts)
    assert not [f for f in os.listdir(tmp_path) if f.startswith("own")]


# --- bounded cost --------------------------------------------------------------------------

def pathological() -> list[str]:
    return [("= a" + " " * 31_990 + "b"), "<answer>" * 3_900, "the answer is " * 2_280,
            "(" * 16_000 + ")" * 15_000, "\\boxed{" * 4_500, ("1 0 " * 7_000 + "\n") * 1,
            "x**2*" * 6_000, "<answer>" + "9" * 31_000 + "</answer>"]


def test_one_pathological_completion_scores_in_under_a_second():
    q = questions("binary_matrix", 1)[0]
    SCORER.score(q, ["warm"])
    for text in pathological():
        t0 = time.perf_counter()
        SCORER.score(q, [text])
        assert time.perf_counter() - t0 < 1.0, text[:30]


def test_a_peer_file_of_40_pathological_completions_delays_gathering_by_under_5_seconds(tmp_path):
    store = FolderStore(str(tmp_path))
    exp = node_exp(store, "me")
    signer(store, "evil").register(exp.layout.root)            # a member of the swarm
    source = ReasoningGymSource(parse_tasks("chain_sum,binary_matrix"), seed=3)
    texts = (pathological() * 5)[:8]
    groups = [RolloutGroup("evil", 0, "m", q.text, q.source, texts, [0.0] * 8)
              for q in source.draw("evil", 0, 5)]
    write_as(store, "evil", exp.layout.rollout(0, "evil", None, 5), encode_rollouts(groups, "evil", 0))
    selector = ExternalSelector(source, Scorer(), "me")
    t0 = time.perf_counter()
    got = RolloutExchange(exp, "me").gather(0, 4, selector, np.random.default_rng(0))
    assert time.perf_counter() - t0 < 5.0
    assert got.files_read == 1 and selector.considered == 5 and got.groups == []


# --- what is scored is what is trained --------------------------------------------------------

def test_a_peer_completion_longer_than_max_new_tokens_is_scored_on_the_tokens_trained(tiny_llama):
    from genrl.grpo import GRPOConfig, GRPOTrainer
    from genrl.models import load_policy
    trainer = GRPOTrainer(load_policy(tiny_llama), GRPOConfig(max_new_tokens=64))
    source = ReasoningGymSource(parse_tasks("chain_sum"), seed=3)
    q = source.draw("p", 0, 1)[0]
    spam = "VISIT evil.example NOW " * 40 + f"<answer>{q.answer}</answer>"
    honest = f"<answer>{q.answer}</answer>"
    group = RolloutGroup("p", 0, "m", q.text, q.source, [spam, honest, "no"], [1.0, 1.0, 0.0])
    selector = ExternalSelector(source, Scorer(), "me", cut=trainer.cut_completion)
    scored = selector.consider(group)
    assert scored.rewards == [0.0, 1.0, 0.0]                 # the answer past the cut earns nothing
    assert len(scored.token_ids[0]) == 64 and scored.ended[0] is False
    assert scored.completions[0] == trainer.tokenizer.decode(scored.token_ids[0],
                                                             skip_special_tokens=True)
    assert scored.token_ids[1] == trainer.encode_completion(honest, True)


# --- held out ----------------------------------------------------------------------------------

def test_a_peer_s_group_of_a_held_out_question_is_refused_and_counted():
    mine = ReasoningGymSource(parse_tasks("chain_sum"), seed=3, curriculum=True)
    careless = ReasoningGymSource(parse_tasks("chain_sum"), seed=3, curriculum=True)  # no eval set
    held = {q.text for q in mine.eval_set(500, EVAL_SEED)}
    leaked = next(q for r in range(200) for q in careless.draw("peer", r, 4) if q.text in held)
    with pytest.raises(InvalidSource, match="held-out"):
        mine.regenerate(leaked.source)
    selector = ExternalSelector(mine, Scorer(), "me")
    group = RolloutGroup("peer", 0, "m", leaked.text, leaked.source,
                         [f"<answer>{leaked.answer}</answer>", "<answer>0</answer>"], [1.0, 0.0])
    assert selector.consider(group) is None
    assert selector.rejected["question is in the held-out evaluation set"] == 1
