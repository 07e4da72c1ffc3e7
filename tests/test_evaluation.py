"""Held-out evaluation: greedy, on a fixed set of distinct questions, recorded per question."""

from genrl.data import ReasoningGymSource, parse_tasks
from genrl.evaluation import EVAL_SEED, EvalSet, evaluate
from genrl.grpo import GRPOConfig, GRPOTrainer
from genrl.models import build_prompt, load_policy
from genrl.scoring import Verdict


class Recorder:
    """A scorer that remembers what it was shown and calls every odd question right."""

    def __init__(self):
        self.texts = []

    def score(self, question, texts):
        self.texts += texts
        return [Verdict(0.0, len(self.texts) % 2 == 1) for _ in texts]


def test_the_held_out_evaluation_decodes_greedily_whatever_the_sampling_temperature(tiny_llama):
    trainer = GRPOTrainer(load_policy(tiny_llama), GRPOConfig(max_new_tokens=10, temperature=0.7))
    questions = ReasoningGymSource(parse_tasks("chain_sum"), seed=1).eval_set(6, EVAL_SEED)
    recorder = Recorder()
    out = evaluate(trainer, EvalSet(questions), recorder, build_prompt)
    greedy = trainer.generate([build_prompt(trainer.tokenizer, q.text) for q in questions], 1,
                              seed=123, temperature=0.0)
    sampled = trainer.generate([build_prompt(trainer.tokenizer, q.text) for q in questions], 1,
                               seed=0)
    assert recorder.texts == [g[0].text for g in greedy]
    assert recorder.texts != [s[0].text for s in sampled]     # sampling would have differed
    assert out["eval/correct"] == "101010" and out["eval/accuracy"] == 0.5
    assert out["eval/questions"] == 6 and abs(out["eval/stderr"] - (0.25 / 6) ** 0.5) < 1e-9


def test_the_default_held_out_set_has_500_distinct_questions_the_same_on_every_node():
    a = ReasoningGymSource(parse_tasks("paper"), seed=1, curriculum=True)
    b = ReasoningGymSource(parse_tasks("paper"), seed=2, curriculum=True)
    held = a.eval_set(500, EVAL_SEED)
    assert len({q.text for q in held}) == 500
    assert [q.text for q in held] == [q.text for q in b.eval_set(500, EVAL_SEED)]
    first = [q.source["task"] for q in held[:9]]
    assert sorted(first) == sorted(t.name for t in a.tasks)    # any prefix spreads over the tasks


def test_a_cpu_node_answers_the_first_50_held_out_questions_by_default_and_a_gpu_node_all():
    from types import SimpleNamespace
    from rgym_exp.worker import CPU_EVAL_SAMPLE, Worker
    held = ReasoningGymSource(parse_tasks("paper,chain_sum"), seed=0).eval_set(500, EVAL_SEED)
    node = lambda **cfg: SimpleNamespace(cfg=SimpleNamespace(**{"EVAL_INTERVAL": 10, "EVAL_SAMPLE": 0, **cfg}),
                                         held_out=held)
    cpu = Worker._eval_set(node(), "cpu").questions
    assert len(cpu) == CPU_EVAL_SAMPLE == 50 and cpu == held[:50]
    assert len({q.source["task"] for q in cpu}) == 10                 # spread over the tasks
    assert len(Worker._eval_set(node(), "cuda:0").questions) == 500
    assert len(Worker._eval_set(node(EVAL_SAMPLE=500), "cpu").questions) == 500
    assert Worker._eval_set(node(EVAL_INTERVAL=0), "cpu") is None
