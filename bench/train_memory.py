"""Peak memory of one GRPO training step: bounded by the micro-batch, not by I+J or G.

    python bench/train_memory.py            # SmolLM2-135M, completions of 128 tokens
    python bench/train_memory.py --quick    # 64-token completions

Each configuration runs in a fresh process (peak RSS is per process) on
synthetic groups: random completion ids of a fixed length, half of each group
rewarded. The table shows peak RSS growth during the step for 4x and 16x more
groups at the same micro-batch, and for gradient checkpointing. The last line
prints the ratio of peak step memory at 16 vs 4 groups (micro-batch 4): close to
1.0 means memory stays bounded as the batch grows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def child(args) -> None:
    import torch
    from genrl.grpo import GRPOConfig, GRPOTrainer, TrainGroup
    from genrl.models import build_prompt, load_policy
    policy = load_policy(args.model)
    trainer = GRPOTrainer(policy, GRPOConfig(micro_batch_size=args.micro_batch,
                                             gradient_checkpointing=args.checkpointing))
    gen = torch.Generator().manual_seed(0)
    prompt = trainer.encode_prompt(build_prompt(policy.tokenizer, "Calculate 12 + 30."))
    vocab = len(policy.tokenizer)
    groups = [TrainGroup(prompt, [torch.randint(0, vocab, (args.tokens,), generator=gen).tolist()
                                  for _ in range(args.generations)],
                         [float(i % 2) for i in range(args.generations)]) for _ in range(args.groups)]
    trainer.step(groups[:1])  # optimizer state and allocator warm-up are not the step's growth
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    trainer.step(groups)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_mb": after / 1024, "step_growth_mb": (after - before) / 1024,
                      "seconds": seconds}))


def measure(args, groups: int, micro: int, ckpt: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", "--groups", str(groups), "--micro-batch", str(micro),
           "--tokens", str(args.tokens), "--generations", str(args.generations), "--model", args.model]
    if ckpt:
        cmd.append("--checkpointing")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env={**os.environ, "TQDM_DISABLE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from genrl.models import DEFAULT_MODEL
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--groups", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--micro-batch", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.quick:
        args.tokens = 64
    print(f"G={args.generations}, {args.tokens}-token completions, model {args.model}")
    print("| groups (I+J) | micro-batch | checkpointing | step time s | peak RSS MB | growth in step MB |")
    print("|---|---|---|---|---|---|")
    results = {}
    for groups, micro, ckpt in [(4, 4, False), (16, 4, False), (4, 16, False), (16, 4, True)]:
        r = measure(args, groups, micro, ckpt)
        results[(groups, micro, ckpt)] = r
        print(f"| {groups} | {micro} | {'yes' if ckpt else 'no'} | {r['seconds']:.1f} | "
              f"{r['peak_mb']:.0f} | {r['step_growth_mb']:.0f} |", flush=True)
    small, large = results[(4, 4, False)], results[(16, 4, False)]
    print(f"peak memory, 16 vs 4 groups at micro-batch 4: {large['peak_mb'] / small['peak_mb']:.2f}x")


if __name__ == "__main__":
    main()
