"""Which success rates give GRPO groups with signal, and where does SmolLM2-135M start?

    python bench/curriculum.py            # the paper's nine tasks, levels 0-2, 6 questions x G=8
    python bench/curriculum.py --quick    # levels 0-1, 3 questions each
    python bench/curriculum.py --levels 0 --questions 8   # where the default main job starts

Samples G=8 completions (temperature 0.7, 256 new tokens, the worker's prompt and
reward rule) for questions of each task at reasoning-gym curriculum levels, and
prints per task and level the success rate (share of completions correct) and the
share of groups with signal (some right, some wrong). Then, pooling every group,
the share with signal as a function of the group's own success rate, next to the
i.i.d. value 1 - p^G - (1-p)^G: where that share is high is the band the
curriculum keeps each task in (genrl/curriculum.py, BAND). The last lines give the
default main job's expected share of local groups with signal at level 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from genrl.curriculum import BAND, max_level  # noqa: E402
from genrl.data import PAPER_TASKS, ReasoningGymSource, TaskSpec  # noqa: E402
from genrl.grpo import GRPOConfig, GRPOTrainer  # noqa: E402
from genrl.models import DEFAULT_MODEL, build_prompt, load_policy  # noqa: E402
from genrl.scoring import Scorer  # noqa: E402

G = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tasks", nargs="+", default=list(PAPER_TASKS))
    parser.add_argument("--levels", nargs="+", type=int, help="curriculum levels (default 0-2, --quick 0-1)")
    parser.add_argument("--questions", type=int, help="questions per task and level (default 6, --quick 3)")
    args = parser.parse_args()
    levels, per_level = ((0, 1), 3) if args.quick else ((0, 1, 2), 6)
    levels, per_level = tuple(args.levels or levels), args.questions or per_level
    policy = load_policy(DEFAULT_MODEL)
    trainer = GRPOTrainer(policy, GRPOConfig())
    scorer = Scorer()
    t0 = time.perf_counter()
    groups = []                                   # (task, level, successes out of G)
    print("| task | level | success rate | groups with signal |")
    print("|---|---:|---:|---:|")
    for name in args.tasks:
        source = ReasoningGymSource([TaskSpec(name)], seed=11, curriculum=True)
        for level in levels:
            if level > max_level(name):
                continue
            questions = source.draw("bench-curriculum", level, per_level, levels={name: level})
            made = trainer.generate([build_prompt(policy.tokenizer, q.text) for q in questions], G,
                                    seed=level)
            wins = [sum(v.correct for v in scorer.score(q, [c.text for c in comps]))
                    for q, comps in zip(questions, made)]
            groups += [(name, level, w) for w in wins]
            signal = np.mean([0 < w < G for w in wins])
            print(f"| {name} | {level} | {np.sum(wins) / (G * len(wins)):.3f} | {signal:.2f} |",
                  flush=True)
    print(f"\n({time.perf_counter() - t0:.0f}s) groups with signal by the group's own success rate:")
    print("| successes of 8 | groups | i.i.d. share with signal at that rate |")
    print("|---|---:|---:|")
    for w in range(G + 1):
        p = w / G
        print(f"| {w} | {sum(g[2] == w for g in groups)} | {1 - p ** G - (1 - p) ** G:.2f} |")
    rates = {}
    for name, level, w in groups:
        rates.setdefault((name, level), []).append(w)
    lo, hi = BAND
    level0 = [w for (name, level), ws in rates.items() if level == 0 for w in ws]
    print(f"\nband {lo}-{hi}: i.i.d. share with signal {1 - lo ** G - (1 - lo) ** G:.2f} at "
          f"{lo}, {1 - hi ** G - (1 - hi) ** G:.2f} at {hi}")
    print(f"level 0 (where the default main job starts): {np.mean([0 < w < G for w in level0]):.0%}"
          f" of {len(level0)} groups have signal")


if __name__ == "__main__":
    main()
