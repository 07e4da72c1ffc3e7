"""GRPO: batched generation, log-probs, group advantages, clipped loss, update.

* Generation: one batched decode for all prompts x G completions, each prompt
  prefilled once and its keys and values shared by its G samples: genrl/generation.py's
  loop (2x HF ``generate`` here, same greedy tokens, same sampling distribution), or one
  HF ``generate`` call for model families it does not cover. Local completions keep
  their sampled ids.
* Advantage per group: (r - mean) / (std + eps). A group whose rewards are all
  equal has zero advantage; with beta = 0 it is skipped (no compute, no tokens
  in the normaliser), as in DAPO's dynamic sampling.
* Log-probs: a group's completions packed after one copy of its prompt
  (genrl/packing.py), so the prompt is computed once per micro-batch, not once per
  completion.
* Loss: token-level clipped policy gradient (DAPO's clip-higher: eps_low 0.2,
  eps_high 0.28), summed over completion tokens and divided by the total
  completion tokens of the step, so micro-batching with gradient accumulation
  gives the same gradient as one big batch. KL to a frozen reference (k3
  estimator) only when beta > 0 (default 0: no reference model is loaded).
* ``num_iterations`` > 1: old log-probs are computed once before the first
  update, so the ratio moves away from 1 and clipping binds.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from genrl import packing
from genrl.generation import decode, fast_decoder
from genrl.models import Policy

log = logging.getLogger(__name__)

# how model outputs and generate() name the KV cache: `past_key_values` until a 5.x
# release (5.17 still has it), `cache` after; read off the output class, not the version
CACHE_KWARG = ("cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__
               else "past_key_values")


@dataclass
class GRPOConfig:
    learning_rate: float = 3e-6        # measured on SmolLM2-135M: bench/lr_sweep.py
    max_new_tokens: int = 256
    temperature: float = 0.7             # see bench/temperature.py
    top_p: float = 1.0
    beta: float = 0.0                  # KL coefficient; SAPO paper: no KL penalty
    epsilon_low: float = 0.2           # PPO clip (lower)
    epsilon_high: float = 0.28         # DAPO clip-higher
    num_iterations: int = 1            # updates per batch (mu in the GRPO paper)
    micro_batch_size: int = 4          # completions per forward/backward pass: bounds memory
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    advantage_eps: float = 1e-4


@dataclass
class Completion:
    ids: list[int]          # sampled token ids, EOS included when it ended
    text: str               # decoded, special tokens skipped: what is shared
    ended: bool             # stopped at EOS (False: cut at max_new_tokens)


@dataclass
class TrainGroup:
    prompt_ids: list[int]
    completions: list[list[int]]
    rewards: list[float]


def group_advantages(rewards: list[float], eps: float = 1e-4) -> list[float]:
    """(r - mean) / max(std, floor): GRPO's group-normalised advantage, except that the
    standard deviation is never taken below that of one correct answer among G
    (sqrt(G-1)/G). Groups of 0/1 rewards are unchanged; a group whose rewards differ by a
    crumb (partial credit, a format bonus) gets advantages in proportion to the crumb,
    not the full-size ones of a group in which somebody was right."""
    r = torch.tensor(rewards, dtype=torch.float64)
    n = len(rewards)
    if n < 2:
        return [0.0] * n
    floor = math.sqrt(n - 1) / n
    std = max(float(r.std(unbiased=False)), floor)
    return ((r - r.mean()) / (std + eps)).tolist()


def clipped_pg_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor,
                    eps_low: float, eps_high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token clipped policy-gradient loss and a 0/1 mask of the tokens
    whose ratio left the trust region (their gradient is zero)."""
    ratio = torch.exp(logp - old_logp)
    clipped = ratio.clamp(1 - eps_low, 1 + eps_high)
    loss = -torch.min(ratio * adv, clipped * adv)
    was_clipped = ((ratio < 1 - eps_low) & (adv < 0)) | ((ratio > 1 + eps_high) & (adv > 0))
    return loss, was_clipped.float()


class GRPOTrainer:
    def __init__(self, policy: Policy, config: GRPOConfig):
        self.policy, self.config = policy, config
        self.model, self.tokenizer, self.device = policy.model, policy.tokenizer, policy.device
        self.turn_end = policy.turn_end_id
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.learning_rate, betas=(0.9, 0.99),
                                           weight_decay=config.weight_decay)
        self.ref_model = None
        if config.beta > 0:
            self.ref_model = copy.deepcopy(self.model).eval().requires_grad_(False)
        fp16 = policy.compute_dtype == torch.float16 and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if fp16 else None
        if config.gradient_checkpointing:  # renamed in transformers 5; Colab may have 4.x
            kwargs = {"use_reentrant": False}
            if hasattr(self.model, "activation_checkpointing_enable"):
                self.model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        self.steps = 0
        self.packing: Optional[bool] = None    # score a group's completions in one row: checked

    def autocast(self):
        if self.policy.compute_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.policy.compute_dtype)

    # --- generation ---------------------------------------------------------

    def encode_prompt(self, prompt: str) -> list[int]:
        return self.tokenizer(prompt)["input_ids"]

    def encode_completion(self, text: str, ended: bool) -> list[int]:
        """A peer's decoded text as this node's tokens (capped at max_new_tokens)."""
        return self.cut_completion(text, ended)[1]

    def cut_completion(self, text: str, ended: bool) -> tuple[str, list[int], bool]:
        """A peer's decoded text as this node trains on it: its first max_new_tokens tokens
        (with this model's end of turn when it ended within them), the text those tokens
        decode to, and whether it still ends. Scoring that text scores what is trained."""
        limit = self.config.max_new_tokens
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) >= limit:
            if len(ids) > limit:
                text = self.tokenizer.decode(ids[:limit], skip_special_tokens=True)
            return text, ids[:limit], False
        if ended:
            ids.append(self.turn_end)          # how this model ends a turn (models.turn_end_id)
        return text, ids, ended

    @torch.no_grad()
    def generate(self, prompts: list[str], num_generations: int, seed: int,
                 temperature: Optional[float] = None,
                 on_token: Optional[Callable[[], None]] = None,
                 fast: bool = True) -> list[list[Completion]]:
        """G completions for each prompt, all in one batched decode: this project's decode
        loop (genrl/generation.py) where the model family has one and ``fast``, else one HF
        ``generate`` call. ``on_token`` is called once per decoding step (progress display)."""
        cfg = self.config
        temperature = cfg.temperature if temperature is None else temperature
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)
        eos = self.policy.eos_ids
        decoder = fast_decoder(self.model, enc["input_ids"].shape[1] + cfg.max_new_tokens) if fast else None
        with self.autocast():
            if decoder is not None:
                new = decode(decoder, enc["input_ids"], enc["attention_mask"], num_generations,
                             cfg.max_new_tokens, eos, self.tokenizer.pad_token_id, temperature,
                             cfg.top_p, seed, on_token).tolist()
            else:
                new = self._generate_hf(enc, num_generations, temperature, seed, on_token)
        eos_set = set(eos)
        groups: list[list[Completion]] = [[] for _ in prompts]
        for row, ids in enumerate(new):
            end = next((i for i, t in enumerate(ids) if t in eos_set), None)
            ids = ids if end is None else ids[: end + 1]
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            groups[row // num_generations].append(Completion(ids, text, end is not None))
        return groups

    def _generate_hf(self, enc, copies: int, temperature: float, seed: int,
                     on_token: Optional[Callable[[], None]]) -> list[list[int]]:
        """New tokens of each of the I x G rows from one HF ``generate`` call."""
        from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList
        cfg = self.config
        gen = GenerationConfig(
            do_sample=temperature > 0, temperature=temperature if temperature > 0 else None,
            top_p=cfg.top_p if temperature > 0 else None, top_k=0 if temperature > 0 else None,
            max_new_tokens=cfg.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.policy.eos_ids)
        class Tick(StoppingCriteria):  # never stops anything; just reports a decoding step
            def __call__(self, input_ids, scores, **kwargs):
                on_token()
                return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        extra = {"stopping_criteria": StoppingCriteriaList([Tick()])} if on_token else {}
        torch.manual_seed(seed)
        out = self._generate_shared_prefix(enc, gen, copies, extra)
        return out[:, enc["input_ids"].shape[1]:].tolist()

    def _generate_shared_prefix(self, enc, gen, copies: int, extra: dict) -> torch.Tensor:
        """``generate`` for ``copies`` samples of each prompt, reading each prompt once:
        the prompts' KV cache is computed at batch size I and repeated G times, instead
        of repeating the prompts and prefilling I x G rows (long reasoning-gym prompts
        made that prefill most of the generation time)."""
        ids, mask = enc["input_ids"], enc["attention_mask"]
        if copies > 1 and ids.shape[1] > 1:
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            out = self.model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1],
                             position_ids=positions[:, :-1], use_cache=True, logits_to_keep=1)
            cache = getattr(out, CACHE_KWARG)
            cache.batch_repeat_interleave(copies)
            extra = {**extra, CACHE_KWARG: cache}
        return self.model.generate(input_ids=ids.repeat_interleave(copies, 0),
                                   attention_mask=mask.repeat_interleave(copies, 0),
                                   generation_config=gen, **extra)

    # --- log-probs ----------------------------------------------------------

    def _logprobs(self, model, units: list) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probs [N, C] of the units' completions (genrl/packing.py) and the
        completion mask: one packed row per unit, or one row per completion for a model
        whose attention does not honour packing's mask (checked once, on the first unit)."""
        pad, temperature = self.tokenizer.pad_token_id, self.config.temperature
        if self.packing is None:
            self.packing = packing.agrees(model, units[0], pad, self.device)
            if not self.packing:
                log.info("GRPO update: this model's attention ignores a packed row's mask; "
                         "scoring one row per completion instead (slower on long prompts)")
        score = packing.packed_logprobs if self.packing else packing.row_logprobs
        with self.autocast():
            return score(model, units, pad, temperature, self.device)

    def _micro_batches(self, units: list) -> list[list]:
        """Units of at most ``micro_batch_size`` completions each (a group split if larger),
        then as many whole units per micro-batch as that size allows, shortest first."""
        size = max(1, self.config.micro_batch_size)
        pieces = [(prompt, comps[i:i + size]) for prompt, comps in units
                  for i in range(0, len(comps), size)]
        pieces.sort(key=lambda u: len(u[0]) + sum(len(c) for c, _ in u[1]))  # less padding
        batches, count = [], size
        for piece in pieces:
            if count + len(piece[1]) > size:
                batches.append([])
                count = 0
            batches[-1].append(piece)
            count += len(piece[1])
        return batches

    # --- the update -----------------------------------------------------------

    def step(self, groups: list[TrainGroup],
             on_batch: Optional[Callable[[int, int], None]] = None) -> dict:
        """One GRPO update (num_iterations optimizer steps) on these groups.
        ``on_batch(done, total)`` is called after each micro-batch (progress display)."""
        cfg, t0 = self.config, time.perf_counter()
        units = []
        for g in groups:
            adv = group_advantages(g.rewards, cfg.advantage_eps)
            if cfg.beta == 0 and all(abs(a) < 1e-12 for a in adv):
                continue
            comps = [(c, a) for c, a in zip(g.completions, adv) if c]
            if comps:
                units.append((g.prompt_ids, comps))
        seqs = packing.flat(units)
        metrics = {"train/sequences": len(seqs), "train/groups": len(groups)}
        if not seqs:
            return {**metrics, "train/skipped": 1, "time/train_s": time.perf_counter() - t0}
        batches = self._micro_batches(units)
        n_tokens = sum(len(s[1]) for s in seqs)
        old = ref = None
        with torch.no_grad():
            if cfg.num_iterations > 1:
                old = [self._logprobs(self.model, mb)[0] for mb in batches]
            if self.ref_model is not None:
                ref = [self._logprobs(self.ref_model, mb)[0] for mb in batches]
        totals = {"loss": 0.0, "clipped": 0.0, "kl": 0.0}
        self.model.train(cfg.gradient_checkpointing)  # HF checkpoints only in train mode
        try:
            grad_norm = self._update(batches, old, ref, n_tokens, totals, on_batch)
        finally:
            self.model.eval()
        elapsed = time.perf_counter() - t0
        return {**metrics, "train/loss": totals["loss"], "train/clip_frac": totals["clipped"],
                "train/kl": totals["kl"], "train/grad_norm": grad_norm,
                "train/tokens": n_tokens, "time/train_s": elapsed,
                "train/tokens_per_s": n_tokens * cfg.num_iterations / max(elapsed, 1e-9)}

    def _update(self, batches, old, ref, n_tokens: int, totals: dict, on_batch=None) -> float:
        """num_iterations optimizer steps over all micro-batches; returns the last grad norm."""
        cfg = self.config
        total = cfg.num_iterations * len(batches)
        for it in range(cfg.num_iterations):
            self.optimizer.zero_grad(set_to_none=True)
            for k, mb in enumerate(batches):
                logp, mask = self._logprobs(self.model, mb)
                old_logp = old[k] if old is not None else logp.detach()
                adv = torch.tensor([a for _, comps in mb for _, a in comps],
                                   device=self.device).unsqueeze(1)
                per_token, was_clipped = clipped_pg_loss(logp, old_logp, adv, cfg.epsilon_low,
                                                         cfg.epsilon_high)
                if ref is not None:
                    delta = ref[k] - logp
                    kl = torch.exp(delta) - delta - 1
                    per_token = per_token + cfg.beta * kl
                    totals["kl"] += (kl * mask).sum().item() / n_tokens / cfg.num_iterations
                loss = (per_token * mask).sum() / n_tokens
                (self.scaler.scale(loss) if self.scaler else loss).backward()
                totals["loss"] += loss.item() / cfg.num_iterations
                totals["clipped"] += float((was_clipped * mask).sum()) / n_tokens / cfg.num_iterations
                if on_batch:
                    on_batch(it * len(batches) + k + 1, total)
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.steps += 1
        return float(grad_norm)
