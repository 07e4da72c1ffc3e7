"""Which sampling temperature gives GRPO something to learn from? SmolLM2-135M-Instruct.

    python bench/temperature.py                  # 16 questions x G=4 per temperature, 96 new tokens

For each temperature: the mean reward of the samples, and the share of groups
whose G rewards differ (only those carry a GRPO advantage). Greedy decoding
(temperature 0) is the reference accuracy.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from genrl.data import ReasoningGymSource, parse_tasks  # noqa: E402
from genrl.grpo import GRPOConfig, GRPOTrainer  # noqa: E402
from genrl.models import DEFAULT_MODEL, build_prompt, load_policy  # noqa: E402
from genrl.scoring import Scorer  # noqa: E402
from genrl.sapo import has_signal  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--tasks", default="chain_sum{min_terms=2;max_terms=2;min_digits=1;max_digits=1}")
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.0, 0.3, 0.7, 1.0])
    args = parser.parse_args()
    policy = load_policy(args.model)
    trainer = GRPOTrainer(policy, GRPOConfig(max_new_tokens=args.max_new_tokens))
    questions = ReasoningGymSource(parse_tasks(args.tasks), seed=1).draw("bench", 0, args.questions)
    prompts = [build_prompt(policy.tokenizer, q.text) for q in questions]
    print(f"{args.tasks}: {args.questions} questions, G={args.generations}, "
          f"max_new_tokens={args.max_new_tokens}")
    print("| temperature | mean reward | groups with signal | seconds |")
    print("|---|---|---|---|")
    for t in args.temperatures:
        t0 = time.perf_counter()
        g = 1 if t == 0 else args.generations
        groups = trainer.generate(prompts, g, seed=5, temperature=t)
        rewards = [Scorer().rewards(q, [c.text for c in grp]) for q, grp in zip(questions, groups)]
        signal = "-" if g == 1 else f"{np.mean([has_signal(r) for r in rewards]):.2f}"
        print(f"| {t:g}{' (greedy)' if t == 0 else ''} | {np.mean(rewards):.3f} | {signal} | "
              f"{time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
