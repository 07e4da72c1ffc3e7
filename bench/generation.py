"""Batched generation vs one `generate` call per completion (the reference fork's
way), on SmolLM2-135M-Instruct, plus the throughput of one GRPO training step.

    python bench/generation.py            # I x G = 4 x 8 = 32 completions, 128 new tokens
    python bench/generation.py --quick    # same batch, 32 new tokens (about a minute)

Both ways sample the same prompts with the same settings; tokens/s counts only
real generated tokens (up to and including EOS). --quick times the
per-completion way on the first 8 of the 32 completions: one call per
completion runs at the same rate however many calls there are. The last line is
`speedup: N.Nx` (batched over per-completion), measured side by side in this
run. The training step is reported next to the machine's measured fp32 matmul
rate, with FLOPs estimated as 6 x parameters x tokens (forward + backward).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from genrl.data import ReasoningGymSource, parse_tasks  # noqa: E402
from genrl.grpo import GRPOConfig, GRPOTrainer, TrainGroup  # noqa: E402
from genrl.models import DEFAULT_MODEL, build_prompt, load_policy  # noqa: E402


def matmul_gflops(n: int = 1024, repeat: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    t0 = time.perf_counter()
    for _ in range(repeat):
        torch.mm(a, b)
    return 2 * n ** 3 * repeat / (time.perf_counter() - t0) / 1e9


def one_call_per_completion(trainer: GRPOTrainer, prompts: list[str], g: int, seed: int,
                            limit: int):
    """The fork's way: a separate generate call (batch of one) for every completion
    (the first ``limit`` of them)."""
    calls = [(k, j) for k in range(len(prompts)) for j in range(g)][:limit]
    return [[trainer.generate([prompts[k]], 1, seed=seed + 1000 * k + j)[0][0]] for k, j in calls]


def tokens(groups) -> int:
    return sum(len(c.ids) for group in groups for c in group)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--questions", type=int, default=4, help="I")
    parser.add_argument("--generations", type=int, default=8, help="G")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--quick", action="store_true",
                        help="32 new tokens, per-completion rate timed on 8 calls: about a minute")
    args = parser.parse_args()
    if args.quick:
        args.max_new_tokens = 32

    t0 = time.perf_counter()
    policy = load_policy(args.model)
    print(f"model: {policy.description} ({sum(p.numel() for p in policy.model.parameters()) / 1e6:.0f}M "
          f"params) loaded in {time.perf_counter() - t0:.0f}s; torch threads: {torch.get_num_threads()}")
    trainer = GRPOTrainer(policy, GRPOConfig(max_new_tokens=args.max_new_tokens, micro_batch_size=8))
    source = ReasoningGymSource(parse_tasks("basic_arithmetic"), seed=0)
    questions = source.draw("bench", 0, args.questions)
    prompts = [build_prompt(policy.tokenizer, q.text) for q in questions]
    n = args.questions * args.generations
    print(f"I x G = {args.questions} x {args.generations} = {n} completions, "
          f"max_new_tokens={args.max_new_tokens}")

    trainer.generate(prompts[:1], 2, seed=0)  # warm-up: first-call overheads out of the timing
    t0 = time.perf_counter()
    batched = trainer.generate(prompts, args.generations, seed=1)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    limit = 8 if args.quick else n
    single = one_call_per_completion(trainer, prompts, args.generations, seed=1, limit=limit)
    t_single = time.perf_counter() - t0
    rate_b, rate_s = tokens(batched) / t_batched, tokens(single) / t_single
    print(f"batched (1 generate call):          {tokens(batched):5d} tokens in {t_batched:6.1f}s = "
          f"{rate_b:7.1f} tokens/s")
    print(f"per completion ({limit} generate calls): {tokens(single):5d} tokens in {t_single:6.1f}s = "
          f"{rate_s:7.1f} tokens/s")

    peak = matmul_gflops()
    params = sum(p.numel() for p in policy.model.parameters())
    groups = [TrainGroup(trainer.encode_prompt(p), [c.ids for c in g],
                         [float(i % 2) for i in range(len(g))]) for p, g in zip(prompts, batched)]
    metrics = trainer.step(groups)
    seq_tokens = sum(len(g.prompt_ids) + len(c) for g in groups for c in g.completions)
    flops = 6 * params * seq_tokens / metrics["time/train_s"] / 1e9
    print(f"train step: {metrics['train/tokens']} completion tokens ({seq_tokens} with prompts) in "
          f"{metrics['time/train_s']:.1f}s = {seq_tokens / metrics['time/train_s']:.0f} tokens/s "
          f"~ {flops:.0f} GFLOP/s; measured fp32 matmul peak {peak:.0f} GFLOP/s "
          f"({100 * flops / peak:.0f}% of peak)")
    print(f"speedup: {rate_b / rate_s:.1f}x")


if __name__ == "__main__":
    main()
