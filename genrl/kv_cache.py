"""The KV cache of genrl/generation.py's decode loop: I prompts' keys and values kept
once per prompt, and the I x G rows' generated ones, in buffers allocated once.

Why it exists: HF's cache grows by ``torch.cat`` at every step and holds each prompt's
keys and values G times over; with reasoning-gym prompts of up to 500 tokens, re-reading
them for every row made attention as costly as the model's weights.
"""

from __future__ import annotations

from typing import Optional

import torch


class KVCache:
    """Keys and values of I prompts (kept once per prompt, right-aligned in P slots) and
    of up to ``steps`` generated tokens for each of the I x G rows, written in place. Laid
    out kv-heads first, so the G rows of a prompt are one matrix against their prompt's
    keys; generated values are stored transposed ([..., D, steps]), which halves the time
    of weights x values for long completions (tiny per-row matrices)."""

    def __init__(self, decoder, prompt_mask: torch.Tensor, copies: int, steps: int,
                 dtype: torch.dtype):
        I, P = prompt_mask.shape
        L, Hkv, D, dev = len(decoder.layers), decoder.n_kv, decoder.head_dim, prompt_mask.device
        self.I, self.G, self.n_rep, self.P = I, copies, decoder.n_heads // Hkv, P
        self.pk = torch.zeros(L, Hkv, I, P, D, dtype=dtype, device=dev)
        self.pv = torch.zeros(L, Hkv, I, P, D, dtype=dtype, device=dev)
        self.k = torch.empty(L, Hkv, I * copies, max(steps, 1), D, dtype=dtype, device=dev)
        self.vt = torch.empty(L, Hkv, I * copies, D, max(steps, 1), dtype=dtype, device=dev)
        additive = torch.zeros(I, P, dtype=torch.float32, device=dev)
        additive.masked_fill_(prompt_mask == 0, torch.finfo(torch.float32).min)
        self.prompt_bias_all = additive.repeat_interleave(copies, 0)
        self.select(None)

    def store_prompt(self, layer: int, prompt: int, k: torch.Tensor, v: torch.Tensor) -> None:
        n = k.shape[0]
        self.pk[layer, :, prompt, self.P - n:] = k.transpose(0, 1)
        self.pv[layer, :, prompt, self.P - n:] = v.transpose(0, 1)

    def select(self, rows: Optional[torch.Tensor]) -> None:
        """Keep only ``rows`` (indices into the I x G rows, ascending) from now on; None: all."""
        self.rows = rows
        bias = self.prompt_bias_all if rows is None else self.prompt_bias_all[rows]
        self.prompt_bias = bias.view(1, -1, 1, self.P)

    def compact(self, keep: torch.Tensor, t: int) -> None:
        """Drop the live rows not in ``keep`` (positions among the live rows); ``t`` slots filled."""
        k = self.k.new_empty(*self.k.shape[:2], keep.numel(), *self.k.shape[3:])
        k[:, :, :, :t] = self.k[:, :, keep, :t]
        vt = self.vt.new_empty(*self.vt.shape[:2], keep.numel(), *self.vt.shape[3:])
        vt[..., :t] = self.vt[:, :, keep, :, :t]
        self.k, self.vt = k, vt
        self.select(keep if self.rows is None else self.rows[keep])

    def write(self, layer: int, t: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Slot ``t`` of each live row: k, v [rows, Hkv, D]."""
        self.k[layer, :, :, t] = k.transpose(0, 1)
        self.vt[layer, :, :, :, t] = v.transpose(0, 1)

    def _to_groups(self, x: torch.Tensor) -> torch.Tensor:
        """[Hkv, live rows, n_rep, n] -> [Hkv, I, G * n_rep, n] (ended rows as zeros)."""
        Hkv, _, n_rep, n = x.shape
        if self.rows is not None:
            x = x.new_zeros(Hkv, self.I * self.G, n_rep, n).index_copy_(1, self.rows, x)
        return x.reshape(Hkv, self.I, self.G * n_rep, n)

    def _from_groups(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(x.shape[0], self.I * self.G, self.n_rep, x.shape[-1])
        return x if self.rows is None else x.index_select(1, self.rows)

    def attend(self, layer: int, t: int, q: torch.Tensor) -> torch.Tensor:
        """Attention output [rows, H * D] of (scaled) queries q [rows, H, D] over the prompt
        and the generated slots 0..t."""
        rows, H, D = q.shape
        q = q.view(rows, H // self.n_rep, self.n_rep, D).transpose(0, 1)   # [Hkv, rows, n_rep, D]
        gk, gvt = self.k[layer, :, :, :t + 1], self.vt[layer, :, :, :, :t + 1]
        sp = self._from_groups(torch.matmul(self._to_groups(q), self.pk[layer].transpose(-1, -2)))
        sg = torch.matmul(q, gk.transpose(-1, -2))
        scores = torch.cat([sp + self.prompt_bias, sg], dim=-1)
        weights = scores.softmax(-1, dtype=torch.float32).to(q.dtype)
        out = self._from_groups(torch.matmul(self._to_groups(weights[..., :self.P]), self.pv[layer]))
        out = out + torch.matmul(weights[..., self.P:], gvt.transpose(-1, -2))
        return out.permute(1, 0, 2, 3).reshape(rows, H * D)
