"""Generation speed on SmolLM2-135M-Instruct: one HF ``generate`` per completion (the
reference fork's way), one batched HF ``generate`` for all I x G completions (this
project's way before genrl/generation.py), and the new decode loop; plus the new loop's
decode step against this machine's compute and memory-bandwidth limits, and one GRPO
training step against the matmul rate.

    python bench/generation.py            # I x G = 4 x 8 = 32 completions, 128 new tokens
    python bench/generation.py --quick    # same batch, 32 new tokens (about a minute)

Everything is measured side by side in this run (this machine is shared and noisy): the
batched and new paths run twice, alternating, and the faster run of each counts; the
matmul rate and memory bandwidth are measured in the same process, with the same
threads. tokens/s counts real generated tokens (up to and including EOS). --quick times
the per-completion way on 8 of the 32 completions (one call per completion runs at the
same rate however many calls there are). The last line is
`speedup over batched generate: N.Nx`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from genrl.data import ReasoningGymSource, parse_tasks  # noqa: E402
from genrl.generation import decode, fast_decoder  # noqa: E402
from genrl.grpo import GRPOConfig, GRPOTrainer, TrainGroup  # noqa: E402
from genrl import packing  # noqa: E402
from genrl.models import DEFAULT_MODEL, build_prompt, load_policy  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(device: torch.device, dtype: torch.dtype) -> float:
    """Matmul rate in the compute dtype, best of three timings."""
    n, repeat = (4096, 50) if device.type == "cuda" else (1024, 20)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(3):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(repeat):
            torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 * repeat / best / 1e9


def read_gbps(device: torch.device, megabytes: int = 256) -> float:
    """Memory read bandwidth: summing a tensor far larger than the caches, best of five."""
    a = torch.ones(megabytes * 2 ** 20 // 4, device=device)
    a.sum()
    best = float("inf")
    for _ in range(5):
        sync(device)
        t0 = time.perf_counter()
        a.sum()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return a.numel() * 4 / best / 1e9


def tokens(groups) -> int:
    return sum(len(c.ids) for group in groups for c in group)


def step_cost(model, rows: int, prompt_lens: list[int], padded: int, steps: int,
              itemsize: int) -> tuple[float, float]:
    """(FLOPs, bytes read) of one decode step of ``rows`` rows halfway through ``steps``
    steps: every weight matrix once (the LM head included, the embedding lookup not),
    attention over the padded prompt (read once per prompt) and the generated tokens;
    weights and cache in elements of ``itemsize`` bytes."""
    cfg = model.config
    layers, hidden = cfg.num_hidden_layers, cfg.hidden_size
    kv_width = getattr(cfg, "num_key_value_heads", cfg.num_attention_heads) * (
        getattr(cfg, "head_dim", None) or hidden // cfg.num_attention_heads)
    matrices = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    t = steps / 2
    flops = 2 * rows * matrices + 4 * layers * rows * hidden * (padded + t)
    kv_bytes = itemsize * layers * 2 * kv_width * (len(prompt_lens) * padded + rows * t)
    return flops, itemsize * matrices + kv_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--dtype", default="auto", help="compute dtype (DTYPE): auto, float32, "
                        "bfloat16, float16; float32 on a GPU checks greedy identity without rounding ties")
    parser.add_argument("--questions", type=int, default=4, help="I")
    parser.add_argument("--generations", type=int, default=8, help="G")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--quick", action="store_true",
                        help="32 new tokens, per-completion rate timed on 8 calls: about a minute")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: torch's default, one per core); 1 is steadier on a "
                             "machine other jobs share")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.max_new_tokens = 32

    t0 = time.perf_counter()
    policy = load_policy(args.model, dtype=args.dtype)
    model = policy.model
    params = sum(p.numel() for p in model.parameters())
    device, dtype = policy.device, policy.compute_dtype
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} torch threads"
    print(f"model: {policy.description} ({params / 1e6:.0f}M params) loaded in "
          f"{time.perf_counter() - t0:.0f}s; {where}, compute {str(dtype).split('.')[-1]}")
    trainer = GRPOTrainer(policy, GRPOConfig(max_new_tokens=args.max_new_tokens, micro_batch_size=8))
    source = ReasoningGymSource(parse_tasks("basic_arithmetic"), seed=0)
    prompts = [build_prompt(policy.tokenizer, q.text) for q in source.draw("bench", 0, args.questions)]
    enc = policy.tokenizer(prompts, return_tensors="pt", padding=True)
    lens = enc["attention_mask"].sum(-1).tolist()
    n, G, N = args.questions * args.generations, args.generations, args.max_new_tokens
    print(f"I x G = {args.questions} x {G} = {n} completions, max_new_tokens={N}, "
          f"prompts of {min(lens)}-{max(lens)} tokens")

    peak, bandwidth = matmul_gflops(device, dtype), read_gbps(device)
    for fast in (True, False):  # warm-up: first-call costs (weight reordering) out of the timing
        trainer.generate(prompts[:1], 2, seed=0, fast=fast)
    rate = {"new": 0.0, "hf": 0.0}
    runs = {}
    for rep in range(2):
        for name, fast in (("new", True), ("hf", False)):
            t0 = time.perf_counter()
            out = trainer.generate(prompts, G, seed=1 + rep, fast=fast)
            seconds = time.perf_counter() - t0
            if tokens(out) / seconds > rate[name]:
                rate[name], runs[name] = tokens(out) / seconds, (out, seconds)
    limit = 8 if args.quick else n
    calls = [(k, j) for k in range(args.questions) for j in range(G)][:limit]
    t0 = time.perf_counter()
    single = [[trainer.generate([prompts[k]], 1, seed=1 + 1000 * k + j, fast=False)[0][0]] for k, j in calls]
    t_single = time.perf_counter() - t0
    rate_single = tokens(single) / t_single
    peak, bandwidth = max(peak, matmul_gflops(device, dtype)), max(bandwidth, read_gbps(device))

    print(f"per completion ({limit} HF generate calls): {tokens(single):5d} tokens in {t_single:5.1f}s = "
          f"{rate_single:6.1f} tokens/s")
    for name, label in (("hf", "HF batched generate (1 call):     "), ("new", "new decode loop (1 call):         ")):
        out, seconds = runs[name]
        ended = sum(c.ended for g in out for c in g)
        print(f"{label} {tokens(out):5d} tokens in {seconds:5.1f}s = {rate[name]:6.1f} tokens/s "
              f"({ended} of {n} ended)")

    # the new path's decode step: all rows run every step (no EOS), timed between steps
    stamps: list[float] = []
    enc = enc.to(device)
    with torch.no_grad(), trainer.autocast():
        decoder = fast_decoder(model, enc["input_ids"].shape[1] + N)
        decode(decoder, enc["input_ids"], enc["attention_mask"], G, N, [], policy.tokenizer.pad_token_id,
               trainer.config.temperature, 1.0, seed=3, on_token=lambda: stamps.append(time.perf_counter()))
    step = statistics.median(b - a for a, b in zip(stamps[1:], stamps[2:]))
    itemsize = torch.finfo(dtype).bits // 8 if device.type == "cuda" else 4   # GPU: weights cast once
    flops, nbytes = step_cost(model, n, lens, enc["input_ids"].shape[1], N, itemsize)
    compute_ms, memory_ms = flops / peak / 1e6, nbytes / bandwidth / 1e6
    print(f"machine (measured now): {str(dtype).split('.')[-1]} matmul {peak:.0f} GFLOP/s, "
          f"memory read {bandwidth:.1f} GB/s")
    print(f"new path decode step, {n} rows: {step * 1e3:.1f} ms (median of {len(stamps) - 2}); "
          f"compute limit {compute_ms:.1f} ms ({flops / 1e9:.2f} GFLOP), memory limit {memory_ms:.1f} ms "
          f"({nbytes / 1e6:.0f} MB): {100 * compute_ms / (step * 1e3):.0f}% of the compute limit")

    greedy = {}
    for fast in (True, False):
        out = trainer.generate(prompts, 2, seed=0, temperature=0.0, fast=fast)
        greedy[fast] = [c.ids for g in out for c in g]
    same = sum(a == b for a, b in zip(greedy[True], greedy[False]))
    print(f"greedy: new path's tokens identical to HF generate's in {same} of {len(greedy[True])} rows")

    batched = runs["new"][0]
    groups = [TrainGroup(trainer.encode_prompt(p), [c.ids for c in g],
                         [float(i % 2) for i in range(len(g))]) for p, g in zip(prompts, batched)]
    head = model.get_output_embeddings().weight.numel()
    completions = sum(len(c) for g in groups for c in g.completions)
    peak = max(peak, matmul_gflops(device, dtype))
    seconds = {}
    for packed in (False, True):        # the same update scored both ways, side by side
        trainer.packing = packed and packing.agrees(model, (groups[0].prompt_ids, [
            (groups[0].completions[0], 0.0)]), trainer.tokenizer.pad_token_id, device)
        if packed and not trainer.packing:
            print("train step, packed: this model's attention ignores the packed mask; skipped")
            break
        metrics = trainer.step(groups)
        seconds[packed] = metrics["time/train_s"]
        if packed:     # the tokens it runs: each micro-batch's prompt once
            units = [(g.prompt_ids, [(c, 0.0) for c in g.completions]) for g in groups]
            run = sum(len(p) + sum(len(c) for c, _ in comps)
                      for mb in trainer._micro_batches(units) for p, comps in mb)
        else:
            run = sum(len(g.prompt_ids) + len(c) for g in groups for c in g.completions)
        done = 6 * ((params - head) * run + head * (completions + len(batched) * G))
        print(f"train step, {'packed' if packed else 'one row per completion'}: {completions} completion "
              f"tokens ({run} tokens run) in {seconds[packed]:.1f}s = {completions / seconds[packed]:.0f} "
              f"completion tokens/s; the matmuls it runs (LM head on completions only): "
              f"{done / seconds[packed] / 1e9:.0f} GFLOP/s = {100 * done / seconds[packed] / 1e9 / peak:.0f}% "
              f"of {peak:.0f} GFLOP/s")
    if len(seconds) == 2:
        print(f"update speedup from packing each group's prompt once: {seconds[False] / seconds[True]:.1f}x")
    print(f"speedup over per-completion generate: {rate['new'] / rate_single:.1f}x")
    print(f"speedup over batched generate: {rate['new'] / rate['hf']:.1f}x")


if __name__ == "__main__":
    main()
