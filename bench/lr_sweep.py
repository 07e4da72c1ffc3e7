"""Which learning rate? A GRPO sweep on SmolLM2-135M-Instruct, one node, no sharing.

    python bench/lr_sweep.py                      # 4 rates x 10 rounds, I=4, G=8 (~30 min on 2 cores)
    python bench/lr_sweep.py --rates 1e-5 --rounds 3   # a quick look

Every rate starts from the same weights and sees the same questions and
sampling seeds, scored by the swarm's default reward rule (genrl.scoring.Scorer:
correct answers only, the guarded tagless fallback that never pays for an echo of
the question). Reported per rate: the training reward in the first and last
quarter of the rounds, greedy accuracy on a fixed held-out set before and after,
and the largest gradient norm seen (instability shows up there first). The
task is 2-term, 1-digit chain_sum ("4 - 1 ="), where the model is right often
enough (greedy: about 7%) for groups to carry signal.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from genrl.data import ReasoningGymSource, parse_tasks  # noqa: E402
from genrl.grpo import GRPOConfig, GRPOTrainer, TrainGroup  # noqa: E402
from genrl.models import DEFAULT_MODEL, build_prompt, load_policy  # noqa: E402
from genrl.scoring import Scorer  # noqa: E402

TASK = "chain_sum{min_terms=2;max_terms=2;min_digits=1;max_digits=1}"
RULE = Scorer()


def accuracy(trainer: GRPOTrainer, questions) -> float:
    prompts = [build_prompt(trainer.tokenizer, q.text) for q in questions]
    outs = trainer.generate(prompts, 1, seed=0, temperature=0)
    return float(np.mean([RULE.score(q, [g[0].text])[0].correct for g, q in zip(outs, questions)]))


def run(policy, lr: float, args, source, held_out) -> dict:
    trainer = GRPOTrainer(policy, GRPOConfig(learning_rate=lr, max_new_tokens=args.max_new_tokens,
                                             temperature=args.temperature))
    before = accuracy(trainer, held_out)
    rewards, grad_norms = [], []
    for r in range(args.rounds):
        questions = source.draw("sweep", r, args.questions)
        prompts = [build_prompt(trainer.tokenizer, q.text) for q in questions]
        groups = trainer.generate(prompts, args.generations, seed=1000 + r)
        batch = []
        for p, q, g in zip(prompts, questions, groups):
            rs = RULE.rewards(q, [c.text for c in g])
            rewards.append(float(np.mean(rs)))
            batch.append(TrainGroup(trainer.encode_prompt(p), [c.ids for c in g], rs))
        m = trainer.step(batch)
        grad_norms.append(m.get("train/grad_norm", 0.0))
        print(f"  lr={lr:g} round {r}: reward {np.mean(rewards[-args.questions:]):.3f} "
              f"grad_norm {grad_norms[-1]:.2f}", flush=True)
    q = max(1, args.rounds // 4) * args.questions
    return {"lr": lr, "first": np.mean(rewards[:q]), "last": np.mean(rewards[-q:]),
            "before": before, "after": accuracy(trainer, held_out), "max_grad": max(grad_norms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--rates", type=float, nargs="+", default=[3e-6, 1e-5, 3e-5, 1e-4])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--held-out", type=int, default=48)
    parser.add_argument("--temperature", type=float, default=0.7)
    args = parser.parse_args()
    torch.manual_seed(0)
    base = load_policy(args.model)
    source = ReasoningGymSource(parse_tasks(TASK), seed=1)
    held_out = ReasoningGymSource(parse_tasks(TASK), seed=2).draw("held-out", 0, args.held_out)
    rows = []
    for lr in args.rates:
        t0 = time.perf_counter()
        policy = copy.copy(base)
        policy.model = copy.deepcopy(base.model)
        rows.append(run(policy, lr, args, source, held_out))
        print(f"lr={lr:g} done in {time.perf_counter() - t0:.0f}s", flush=True)
    print(f"\n{args.rounds} rounds, I={args.questions}, G={args.generations}, task {TASK}")
    print("| learning rate | train reward, first quarter | last quarter | held-out greedy "
          "accuracy before | after | max grad norm |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['lr']:g} | {r['first']:.3f} | {r['last']:.3f} | {r['before']:.3f} | "
              f"{r['after']:.3f} | {r['max_grad']:.2f} |")


if __name__ == "__main__":
    main()
