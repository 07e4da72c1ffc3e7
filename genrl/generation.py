"""Fast batched sampling of G completions per prompt: this project's own decode loop.

Why it exists: for a small model, HF ``generate`` spends much of a decode step outside
the arithmetic (bench/generation.py measures it). Its cache grows by ``torch.cat`` (each
step copies the whole cache), ``multinomial`` over a 49k vocabulary costs as much as a
fifth of the model's matmuls on a CPU, every one of the I x G rows re-reads its prompt's
keys and values although the G samples of a prompt share them, and on a CPU the
default matmul path runs the few-row matmuls of a decode step well below the machine's
rate. This loop:

* prefills each prompt once, unpadded (reasoning-gym prompts run from 60 to 500
  tokens), and keeps its keys and values once per prompt: the G samples' queries read
  them together;
* writes each generated token's keys and values in place, into buffers allocated once;
* on a CPU, runs the linear layers through oneDNN with weights reordered once (again
  only after they change), which reaches the measured matmul rate at 32 rows;
* fuses the q, k and v projections into one matmul (one rotary step for q and k);
* samples with softmax and an inverse CDF (``cumsum`` + ``searchsorted``): the
  categorical distribution ``multinomial`` draws from, with HF's temperature and top-p;
* drops rows that ended (EOS) from the batch once a quarter of them have, and stops
  when all have.

Supported: Llama-style (Llama, SmolLM2, Mistral), Qwen2, Qwen3, Gemma, GPT-2.
``fast_decoder`` returns None, with one log line, for anything else (or for settings it
does not reproduce, such as a sliding window shorter than the text), and the caller uses
HF ``generate``. Greedy output is token-identical to HF ``generate`` and sampling
follows the same distribution (tests/test_generation.py).
"""

from __future__ import annotations

import logging
import weakref
from typing import Callable, Optional

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gpt2")
PLAIN_RMS_NORMS = ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm")  # w * x/rms(x)
TOP_P_CANDIDATES = 256  # top-p looks at this many most likely tokens first
CDF_BLOCK = 256     # tokens per block of the two-level inverse CDF used for sampling
COMPACT_AT = 0.75   # drop ended rows once the live ones are at most this share of the batch
_told: set = set()  # fallback reasons already logged
_decoders: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> its FastDecoder


def fast_decoder(model, total_length: int) -> Optional["FastDecoder"]:
    """The fast decode path for ``model`` (``total_length``: prompt + new tokens), or None,
    saying once per reason why HF ``generate`` is used instead."""
    why = unsupported(model, total_length)
    if why:
        if why not in _told:
            _told.add(why)
            log.info("generation: HF generate (%s)", why)
        return None
    decoder = _decoders.get(model)
    if decoder is None:
        decoder = _decoders[model] = FastDecoder(model)
    return decoder


def unsupported(model, total_length: int) -> str:
    """Why this loop would not reproduce ``model``'s generate; empty when it would."""
    cfg = model.config
    family = getattr(cfg, "model_type", "?")
    if family not in FAMILIES:
        return f"model type {family!r} has no fast decode path"
    if family == "gpt2":
        if cfg.scale_attn_by_inverse_layer_idx or cfg.reorder_and_upcast_attn or cfg.add_cross_attention:
            return "GPT-2 attention variants (per-layer scaling, upcast, cross) are not reproduced"
        return ""
    window = getattr(cfg, "sliding_window", None)
    sliding = family == "mistral" or "sliding_attention" in (getattr(cfg, "layer_types", None) or ())
    if sliding and window is not None and window < total_length:
        return f"sliding window {window} shorter than {total_length} positions"
    if float(getattr(cfg, "partial_rotary_factor", None) or 1.0) != 1.0:
        return "partial rotary embeddings are not reproduced"
    layer = model.model.layers[0]
    mlp = getattr(layer, "mlp", None)
    if not (hasattr(layer, "self_attn") and hasattr(layer, "post_attention_layernorm")
            and all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj", "act_fn"))):
        return f"{type(layer).__name__} is not a pre-norm attention + gated MLP layer"
    return ""


# --- sampling ------------------------------------------------------------------------

def sample_tokens(logits: torch.Tensor, temperature: float, top_p: float,
                  generator: Optional[torch.Generator]) -> torch.Tensor:
    """One token per row of float32 ``logits`` [rows, vocab]: argmax when ``temperature``
    is 0; else a draw from softmax(logits / temperature), restricted like HF's top-p
    (ascending sort, drop the tokens whose cumulative probability is <= 1 - top_p)."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = (logits / temperature).softmax(-1)
    if top_p >= 1.0:
        return _inverse_cdf(probs, generator)
    # HF's rule on the TOP_P_CANDIDATES most likely tokens (sorting all 49k costs 20x more);
    # the rest only when the nucleus might reach beyond them
    top, order = probs.topk(min(TOP_P_CANDIDATES, probs.shape[1]))
    below = (probs.sum(-1, keepdim=True) - top.sum(-1, keepdim=True)).clamp_(min=0)
    if bool((below > 1 - top_p).any()):
        top, order = probs.sort(-1, descending=True)
        below = torch.zeros_like(below)
    ascending, order = top.flip(-1), order.flip(-1)
    drop = below + ascending.cumsum(-1) <= 1 - top_p
    drop[:, -1] = False
    choice = _inverse_cdf(ascending.masked_fill_(drop, 0.0), generator)
    return order.gather(-1, choice.unsqueeze(-1)).squeeze(-1)


def _inverse_cdf(probs: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """A categorical draw per row: the first token whose cumulative probability exceeds
    u ~ U[0, total) (rows need not be normalised). In two levels, blocks of CDF_BLOCK
    tokens and then one block, because a cumulative sum over the whole vocabulary is a
    slow serial scan (about 3 ms for 32 x 49k on this project's CPU)."""
    rows, vocab = probs.shape
    blocks = F.pad(probs, (0, -vocab % CDF_BLOCK)).view(rows, -1, CDF_BLOCK)
    mass = blocks.sum(-1)
    cum = mass.cumsum(-1)
    u = torch.rand(rows, 1, generator=generator, device=probs.device) * cum[:, -1:]
    block = _first_above(cum, u)
    u = u - (cum.gather(1, block) - mass.gather(1, block))          # what is left inside the block
    inside = blocks.gather(1, block.unsqueeze(-1).expand(rows, 1, CDF_BLOCK)).squeeze(1).cumsum(-1)
    return (block * CDF_BLOCK + _first_above(inside, u)).squeeze(-1)


def _first_above(cum: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Index [rows, 1] of the first entry of ``cum`` [rows, n] above ``u`` [rows, 1]; u is
    kept below the last entry, so a token of zero probability is never chosen."""
    u = torch.minimum(u.clamp(min=0), torch.nextafter(cum[:, -1:], torch.zeros_like(u)))
    return torch.searchsorted(cum, u, right=True)


# --- linear layers -------------------------------------------------------------------

class Linear:
    """x W^T + b for generation. On a CPU the weight is reordered once for oneDNN, whose
    kernels run a decode step's few-row matmuls up to 2x faster than torch's default
    path; it is reordered again only when the weight changed (its version counter moved:
    an optimizer step, a checkpoint load)."""

    def __init__(self, sources: list[torch.Tensor], make: Callable[[], tuple], onednn: bool):
        self.sources, self.make, self.onednn, self.key = sources, make, onednn, None

    def refresh(self, dtype: torch.dtype = torch.float32) -> None:
        """Follow the source weights; ``dtype``: the compute dtype (a GPU's autocast would
        otherwise cast every weight again at every step)."""
        key = (dtype,) + tuple((t.data_ptr(), t._version) for t in self.sources)
        if key != self.key:
            self.key = key
            weight, bias = self.make()
            self.weight, self.bias = weight.to(dtype), None if bias is None else bias.to(dtype)
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, 32) if self.onednn else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None and not torch.is_autocast_enabled("cpu"):  # fp32 only
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


def _linear(modules: list, onednn: bool) -> Linear:
    """One Linear computing these nn.Linear (or GPT-2 Conv1D, weight [in, out]) modules'
    outputs side by side."""
    params = [p for m in modules for p in (m.weight, m.bias) if p is not None]
    def make():
        ws = [m.weight.detach() for m in modules]
        ws = [w.t() for w in ws] if type(modules[0]).__name__ == "Conv1D" else ws
        w = torch.cat(ws) if len(ws) > 1 else ws[0].contiguous()
        b = None if modules[0].bias is None else torch.cat([m.bias.detach() for m in modules])
        return w, b
    return Linear(params, make, onednn)


# --- the model -----------------------------------------------------------------------

class FastDecoder:
    """A model's forward for generation, from its own modules and weights."""

    def __init__(self, model):
        self.model, cfg = model, model.config
        self.family = cfg.model_type
        self.gpt2 = self.family == "gpt2"
        device = next(model.parameters()).device
        self.onednn = (device.type == "cpu" and torch.backends.mkldnn.is_available()
                       and hasattr(torch.ops.mkldnn, "_linear_pointwise"))
        if self.gpt2:
            self.body = model.transformer
            self.layers = list(self.body.h)
            self.n_heads = self.n_kv = cfg.n_head
            self.head_dim = cfg.n_embd // cfg.n_head
            self.final_norm = self.body.ln_f
            self.scaling = self.head_dim ** -0.5 if cfg.scale_attn_weights else 1.0
        else:
            self.body = model.model
            self.layers = list(self.body.layers)
            self.n_heads = cfg.num_attention_heads
            self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
            self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
            self.final_norm = self.body.norm
            self.scaling = getattr(self.layers[0].self_attn, "scaling", self.head_dim ** -0.5)
        self.linears = self._linears()
        try:
            self.refresh()
        except RuntimeError as exc:   # a oneDNN build that cannot reorder: torch's default path
            log.info("generation: oneDNN linear layers unavailable (%s)", exc)
            self.onednn = False
            self.linears = self._linears()
            self.refresh()

    def _linears(self) -> list[dict]:
        """Per layer: qkv (fused), o and the MLP's; last, the LM head."""
        out = []
        for layer in self.layers:
            if self.gpt2:
                a, mlp = layer.attn, layer.mlp
                mods = {"qkv": [a.c_attn], "o": [a.c_proj], "fc": [mlp.c_fc], "proj": [mlp.c_proj]}
            else:
                a, mlp = layer.self_attn, layer.mlp
                mods = {"qkv": [a.q_proj, a.k_proj, a.v_proj], "o": [a.o_proj], "gate": [mlp.gate_proj],
                        "up": [mlp.up_proj], "down": [mlp.down_proj]}
            out.append({name: _linear(m, self.onednn) for name, m in mods.items()})
        return out + [{"head": _linear([self.model.lm_head], self.onednn)}]

    def refresh(self, dtype: torch.dtype = torch.float32) -> None:
        """Follow the model's weights (they change at every training step)."""
        for group in self.linears:
            for linear in group.values():
                linear.refresh(dtype)

    def norm(self, module, x: torch.Tensor) -> torch.Tensor:
        if type(module).__name__ in PLAIN_RMS_NORMS:  # the same arithmetic in one kernel
            return F.rms_norm(x, module.weight.shape, module.weight, module.variance_epsilon)
        return module(x)

    def embed(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        if self.gpt2:
            return self.body.wte(tokens) + self.body.wpe(positions)
        x = self.body.embed_tokens(tokens)
        if self.family == "gemma" and not hasattr(self.body.embed_tokens, "embed_scale"):
            x = x * torch.tensor(self.model.config.hidden_size ** 0.5, dtype=x.dtype)  # transformers 4.x
        return x

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, attend: Callable) -> torch.Tensor:
        """Hidden states [n, hidden] of n tokens (one per row when decoding, one prompt's
        when prefilling); ``attend(layer, q, k, v)`` [n, heads, D] stores k and v and returns
        the attention output [n, heads * D]."""
        x = self.embed(tokens, positions)
        H, Hkv, D = self.n_heads, self.n_kv, self.head_dim
        rope = None
        if not self.gpt2:
            cos, sin = self.body.rotary_emb(x, positions.unsqueeze(0))
            sign = torch.ones(D, dtype=sin.dtype, device=sin.device)
            sign[:D // 2] = -1      # roll(x, D/2) * (sign * sin) == rotate_half(x) * sin
            rope = cos.view(-1, 1, D), (sin * sign).view(-1, 1, D)
        for l, layer in enumerate(self.layers):
            lin = self.linears[l]
            h = layer.ln_1(x) if self.gpt2 else self.norm(layer.input_layernorm, x)
            qkv = lin["qkv"](h).view(-1, H + 2 * Hkv, D)
            qk, v = qkv[:, :H + Hkv], qkv[:, H + Hkv:]
            if self.family == "qwen3":
                a = layer.self_attn
                qk = torch.cat([a.q_norm(qk[:, :H]), a.k_norm(qk[:, H:])], dim=1)
            if rope is not None:
                qk = (qk * rope[0]) + (torch.roll(qk, D // 2, -1) * rope[1])
            x = x + lin["o"](attend(l, qk[:, :H], qk[:, H:], v))
            if self.gpt2:
                x = x + lin["proj"](layer.mlp.act(lin["fc"](layer.ln_2(x))))
            else:
                h = self.norm(layer.post_attention_layernorm, x)
                x = x + lin["down"](layer.mlp.act_fn(lin["gate"](h)) * lin["up"](h))
        return x

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.linears[-1]["head"](self.norm(self.final_norm, x)).float()

    def prefill(self, tokens: torch.Tensor, prompt: int, cache: "KVCache") -> torch.Tensor:
        """Run one unpadded prompt (its index ``prompt``) into ``cache``; its last logits [vocab]."""
        n = tokens.shape[0]
        def attend(l, q, k, v):
            cache.store_prompt(l, prompt, k, v)
            q, k, v = (t.to(cache.pk.dtype).transpose(0, 1) for t in (q, k, v))  # rope made q, k fp32
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scaling,
                                               enable_gqa=self.n_kv != self.n_heads)
            return o.transpose(0, 1).reshape(n, -1)
        x = self.forward(tokens, torch.arange(n, device=tokens.device), attend)
        return self.logits(x[-1:])[0]

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, t: int, cache: "KVCache") -> torch.Tensor:
        """Logits [rows, vocab] for one new token per live row, its keys and values going
        to slot ``t`` of the generated part of ``cache``."""
        def attend(l, q, k, v):
            cache.write(l, t, k, v)
            return cache.attend(l, t, q, self.scaling)
        return self.logits(self.forward(tokens, positions, attend))


class KVCache:
    """Keys and values of I prompts (kept once per prompt, right-aligned in P slots) and
    of up to ``steps`` generated tokens for each of the I x G rows, written in place. Laid
    out kv-heads first, so the G rows of a prompt are one matrix against their prompt's
    keys; generated values are stored transposed ([..., D, steps]), which halves the time
    of weights x values for long completions (tiny per-row matrices)."""

    def __init__(self, decoder: FastDecoder, prompt_mask: torch.Tensor, copies: int, steps: int,
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

    def attend(self, layer: int, t: int, q: torch.Tensor, scaling: float) -> torch.Tensor:
        """Attention output [rows, H * D] of queries q [rows, H, D] over the prompt and the
        generated slots 0..t."""
        rows, H, D = q.shape
        q = q.view(rows, H // self.n_rep, self.n_rep, D).transpose(0, 1)   # [Hkv, rows, n_rep, D]
        gk, gvt = self.k[layer, :, :, :t + 1], self.vt[layer, :, :, :, :t + 1]
        sp = self._from_groups(torch.matmul(self._to_groups(q), self.pk[layer].transpose(-1, -2)))
        sg = torch.matmul(q, gk.transpose(-1, -2))
        scores = torch.cat([sp * scaling + self.prompt_bias, sg * scaling], dim=-1)
        weights = scores.softmax(-1, dtype=torch.float32).to(q.dtype)
        out = self._from_groups(torch.matmul(self._to_groups(weights[..., :self.P]), self.pv[layer]))
        out = out + torch.matmul(weights[..., self.P:], gvt.transpose(-1, -2))
        return out.permute(1, 0, 2, 3).reshape(rows, H * D)


@torch.no_grad()
def decode(decoder: FastDecoder, input_ids: torch.Tensor, attention_mask: torch.Tensor, copies: int,
           max_new_tokens: int, eos_ids: list[int], pad_id: int, temperature: float, top_p: float,
           seed: int, on_token: Optional[Callable[[], None]] = None) -> torch.Tensor:
    """New tokens [I * copies, n] for left-padded prompts [I, P] (row i * copies + g is
    sample g of prompt i), pad after a row's EOS, n <= max_new_tokens. ``on_token`` is
    called after each step."""
    device = input_ids.device
    I, P = input_ids.shape
    B = I * copies
    dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) \
        else next(decoder.model.parameters()).dtype
    decoder.refresh(dtype if device.type == "cuda" else torch.float32)
    cache = KVCache(decoder, attention_mask, copies, max_new_tokens - 1, dtype)
    lengths = attention_mask.sum(-1)
    logits = torch.stack([decoder.prefill(input_ids[i, P - n:], i, cache)
                          for i, n in enumerate(lengths.tolist())]).repeat_interleave(copies, 0)
    generator = torch.Generator(device=device).manual_seed(seed)
    eos = torch.tensor(eos_ids, dtype=torch.long, device=device)
    result = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=device)
    position = lengths.repeat_interleave(copies, 0)                      # next position per row
    rows = torch.arange(B, device=device)                                # live batch -> result row
    running = torch.ones(B, dtype=torch.bool, device=device)             # not ended yet
    n = 0
    for t in range(max_new_tokens):
        if t > 0:
            live = int(running.sum())
            if live == 0:
                break
            if live <= COMPACT_AT * rows.numel():
                keep = running.nonzero().squeeze(-1)
                cache.compact(keep, t - 1)
                rows, position, tokens, running = rows[keep], position[keep], tokens[keep], running[keep]
            logits = decoder.step(tokens, position, t - 1, cache)
            position = position + 1
        tokens = torch.where(running, sample_tokens(logits, temperature, top_p, generator), pad_id)
        result[rows, t] = tokens
        running = running & ~torch.isin(tokens, eos)
        n = t + 1
        if on_token:
            on_token()
    return result[:, :n]
