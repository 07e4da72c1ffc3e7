"""How big is a checkpoint, and what does a restart from it lose? SmolLM2-135M, one node.

    python bench/checkpoint_restart.py           # 6 rounds, restart, 6 more; I=4, G=8 (~30 min, 2 cores)
    python bench/checkpoint_restart.py --quick   # 4 + 4 rounds
    python bench/checkpoint_restart.py --size-only   # the default checkpoint's size (~20 s, 1 GB)

A GRPO run trains ``--before`` rounds, then saves its trainer in each checkpoint mode
(genrl/checkpoint.py: exact = float32 AdamW moments, half = bfloat16 moments,
weights = no moments) and records the files' sizes. Each mode is then restored into
the same trainer and trains ``--after`` more rounds on the same questions
with the same sampling seeds, so the runs differ only by what the checkpoint kept (one
model in memory: each mode is loaded into the same trainer).
``exact`` continues bit for bit as if never interrupted (tests/test_grpo.py), so it is
the reference: per mode, the training reward over the rounds after the restart, the
held-out greedy reward at the end, and how far its weights end from the reference's,
relative to how far the reference moved after the restart. The task is 2-term,
1-digit chain_sum, where the model is right often enough for groups to carry signal
(bench/lr_sweep.py).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from genrl.checkpoint import OPTIMIZER_MODES, load_trainer, save_trainer  # noqa: E402
from genrl.data import ReasoningGymSource, parse_tasks  # noqa: E402
from genrl.grpo import GRPOConfig, GRPOTrainer, TrainGroup  # noqa: E402
from genrl.models import DEFAULT_MODEL, build_prompt, load_policy  # noqa: E402
from genrl.scoring import Scorer  # noqa: E402

from lr_sweep import TASK, accuracy  # noqa: E402  the same task and held-out measure as the sweep


def train_round(trainer: GRPOTrainer, source, r: int, args) -> float:
    questions = source.draw("restart", r, args.questions)
    prompts = [build_prompt(trainer.tokenizer, q.text) for q in questions]
    batch, rewards = [], []
    for p, q, g in zip(prompts, questions, trainer.generate(prompts, args.generations,
                                                            seed=1000 + r)):
        rs = Scorer().rewards(q, [c.text for c in g])
        rewards += rs
        batch.append(TrainGroup(trainer.encode_prompt(p), [c.ids for c in g], rs))
    trainer.step(batch)
    return float(np.mean(rewards))


def flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def size_only(model: str) -> None:
    """The default checkpoint as a worker saves it, without training (AdamW has no moments
    yet, so only the weights mode is measured; exact adds 2 x 4 bytes per parameter, half
    2 x 2)."""
    trainer = GRPOTrainer(load_policy(model), GRPOConfig())
    params = sum(p.numel() for p in trainer.model.parameters())
    tmp = tempfile.mkdtemp(prefix="ckpt-size-")
    try:
        paths = save_trainer(trainer, os.path.join(tmp, "weights"), 0, optimizer="weights")
        sizes = {os.path.basename(p): os.path.getsize(p) for p in paths}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = sum(sizes.values())
    print(f"{trainer.model.config._name_or_path or model}: {params / 1e6:.1f}M parameters; "
          "CHECKPOINT_MODE=weights: " + ", ".join(f"{k} {v:,} B" for k, v in sizes.items()))
    print(f"weights {total / 1e6:.0f} MB (measured); half {(total + 4 * params) / 1e6:.0f} MB, "
          f"exact {(total + 8 * params) / 1e6:.0f} MB (computed: + bfloat16 / float32 moments)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--quick", action="store_true", help="4 rounds before and after")
    parser.add_argument("--before", type=int, default=6)
    parser.add_argument("--after", type=int, default=6)
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--held-out", type=int, default=48)
    parser.add_argument("--lr", type=float, default=3e-6, help="the LEARNING_RATE default")
    parser.add_argument("--size-only", action="store_true",
                        help="save the untrained model as CHECKPOINT_MODE=weights (the default) "
                             "and print its files' sizes; no training")
    args = parser.parse_args()
    if args.size_only:
        size_only(args.model)
        return
    if args.quick:
        args.before = args.after = 4
    torch.manual_seed(0)
    t0 = time.perf_counter()
    policy = load_policy(args.model)
    trainer = GRPOTrainer(policy, GRPOConfig(learning_rate=args.lr,
                                             max_new_tokens=args.max_new_tokens, temperature=0.7))
    source = ReasoningGymSource(parse_tasks(TASK), seed=1)
    held_out = ReasoningGymSource(parse_tasks(TASK), seed=2).draw("held-out", 0, args.held_out)
    for r in range(args.before):
        print(f"  round {r}: reward {train_round(trainer, source, r, args):.3f}", flush=True)
    start = flat(trainer.model)
    tmp = tempfile.mkdtemp(prefix="ckpt-restart-")
    sizes = {}
    for mode in OPTIMIZER_MODES:
        paths = save_trainer(trainer, os.path.join(tmp, mode), args.before - 1, optimizer=mode)
        sizes[mode] = sum(os.path.getsize(p) for p in paths)
    results, ref = {}, None
    for mode in OPTIMIZER_MODES:       # exact first: the reference; one model in memory
        load_trainer(trainer, os.path.join(tmp, mode))
        rewards = [train_round(trainer, source, r, args)
                   for r in range(args.before, args.before + args.after)]
        weights = flat(trainer.model)
        ref = weights if ref is None else ref
        results[mode] = {"rewards": rewards, "held_out": accuracy(trainer, held_out),
                         "gap": float((weights - ref).norm())}
        del weights
        gc.collect()
        print(f"  {mode}: rewards after the restart {', '.join(f'{x:.3f}' for x in rewards)}; "
              f"held-out {results[mode]['held_out']:.3f}", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    moved = float((ref - start).norm())
    params = sum(p.numel() for p in trainer.model.parameters())
    print(f"\n{policy.description}: {params / 1e6:.1f}M parameters; {args.before} rounds, restart, "
          f"{args.after} rounds; I={args.questions}, G={args.generations}, lr={args.lr:g}, "
          f"task {TASK}; {time.perf_counter() - t0:.0f}s")
    print("| checkpoint mode | size (MB) | train reward after the restart | held-out greedy "
          "reward at the end | weights' distance from exact / exact's movement |")
    print("|---|---|---|---|---|")
    for mode in OPTIMIZER_MODES:
        res = results[mode]
        print(f"| {mode} | {sizes[mode] / 1e6:.0f} | {np.mean(res['rewards']):.3f} | "
              f"{res['held_out']:.3f} | {res['gap'] / moved if moved else 0.0:.3f} |")


if __name__ == "__main__":
    main()
