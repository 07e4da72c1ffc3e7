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
* samples without ``multinomial`` or a full sort (genrl/sampling.py), from HF's
  distribution, temperature and top-p included;
* drops rows that ended (EOS) from the batch once a quarter of them have, and stops
  when all have.

The cache layout is genrl/kv_cache.py.

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

from genrl.kv_cache import KVCache
from genrl.sampling import sample_tokens

log = logging.getLogger(__name__)

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gpt2")
PLAIN_RMS_NORMS = ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm")  # w * x/rms(x)
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

    def __call__(self, x: torch.Tensor, add: Optional[torch.Tensor] = None,
                 mul: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x W^T + b, then + ``add`` or * ``mul`` (in the same oneDNN call where packed)."""
        if self.packed is not None and not torch.is_autocast_enabled("cpu"):  # fp32 only
            if add is not None or mul is not None:
                other, op = (add, "add") if add is not None else (mul, "mul")
                return torch.ops.mkldnn._linear_pointwise.binary(x, other, self.packed, self.bias, op)
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        y = F.linear(x, self.weight, self.bias)
        return y + add if add is not None else y * mul if mul is not None else y


def _linear(modules: list, onednn: bool, scale_rows: int = 0, scale: float = 1.0) -> Linear:
    """One Linear computing these nn.Linear (or GPT-2 Conv1D, weight [in, out]) modules'
    outputs side by side; the first ``scale_rows`` outputs multiplied by ``scale`` (GPT-2's
    attention scaling, folded into its query weights)."""
    params = [p for m in modules for p in (m.weight, m.bias) if p is not None]
    def make():
        ws = [m.weight.detach() for m in modules]
        ws = [w.t() for w in ws] if type(modules[0]).__name__ == "Conv1D" else ws
        w = torch.cat(ws) if len(ws) > 1 else ws[0].contiguous()
        b = None if modules[0].bias is None else torch.cat([m.bias.detach() for m in modules])
        if scale_rows:
            w = w.clone()
            w[:scale_rows] *= scale
            b = None if b is None else torch.cat([b[:scale_rows] * scale, b[scale_rows:]])
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
                mods = {"o": [a.c_proj], "fc": [mlp.c_fc], "proj": [mlp.c_proj]}
                qkv = _linear([a.c_attn], self.onednn, self.n_heads * self.head_dim, self.scaling)
            else:
                a, mlp = layer.self_attn, layer.mlp
                mods = {"o": [a.o_proj], "gate": [mlp.gate_proj], "up": [mlp.up_proj],
                        "down": [mlp.down_proj]}
                qkv = _linear([a.q_proj, a.k_proj, a.v_proj], self.onednn)
            out.append({"qkv": qkv, **{name: _linear(m, self.onednn) for name, m in mods.items()}})
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
        """Hidden states [n, hidden] of n tokens (one per row when decoding, the prompts'
        side by side when prefilling); ``attend(layer, q, k, v)`` [n, heads, D] (q already
        scaled) stores k and v and returns the attention output [n, heads * D]."""
        x = self.embed(tokens, positions)
        H, Hkv, D = self.n_heads, self.n_kv, self.head_dim
        rope = None
        if not self.gpt2:
            cos, sin = self.body.rotary_emb(x, positions.unsqueeze(0))
            # per head: queries' tables carry the attention scaling (exact for 1/8 = 64**-0.5);
            # roll(x, D/2) * (sign * sin) == rotate_half(x) * sin
            head = torch.ones(H + Hkv, 1, dtype=cos.dtype, device=cos.device)
            head[:H] = self.scaling
            sign = torch.ones(D, dtype=sin.dtype, device=sin.device)
            sign[:D // 2] = -1
            rope = cos.view(-1, 1, D) * head, (sin * sign).view(-1, 1, D) * head
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
            x = lin["o"](attend(l, qk[:, :H], qk[:, H:], v), add=x)
            if self.gpt2:
                x = lin["proj"](layer.mlp.act(lin["fc"](layer.ln_2(x))), add=x)
            else:
                h = self.norm(layer.post_attention_layernorm, x)
                x = lin["down"](lin["up"](h, mul=layer.mlp.act_fn(lin["gate"](h))), add=x)
        return x

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.linears[-1]["head"](self.norm(self.final_norm, x)).float()

    def prefill(self, input_ids: torch.Tensor, lengths: list[int], cache: KVCache) -> torch.Tensor:
        """Run the left-padded prompts [I, P] (``lengths`` real tokens each) into ``cache``,
        unpadded and side by side (one pass through the linear layers, attention prompt by
        prompt); their last logits [I, vocab]."""
        P, dev = input_ids.shape[1], input_ids.device
        tokens = torch.cat([input_ids[i, P - n:] for i, n in enumerate(lengths)])
        positions = torch.cat([torch.arange(n, device=dev) for n in lengths])
        ends = torch.tensor(lengths, device=dev).cumsum(0)
        spans = [(int(e) - n, int(e)) for e, n in zip(ends, lengths)]
        def attend(l, q, k, v):
            out = []
            for i, (a, b) in enumerate(spans):
                cache.store_prompt(l, i, k[a:b], v[a:b])
                qi, ki, vi = (t[a:b].to(cache.pk.dtype).transpose(0, 1) for t in (q, k, v))  # rope: fp32
                out.append(F.scaled_dot_product_attention(qi, ki, vi, is_causal=True, scale=1.0,
                                                          enable_gqa=self.n_kv != self.n_heads))
            return torch.cat(out, dim=1).transpose(0, 1).reshape(tokens.shape[0], -1)
        x = self.forward(tokens, positions, attend)
        return self.logits(x[ends - 1])

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, t: int, cache: KVCache) -> torch.Tensor:
        """Logits [rows, vocab] for one new token per live row, its keys and values going
        to slot ``t`` of the generated part of ``cache``."""
        def attend(l, q, k, v):
            cache.write(l, t, k, v)
            return cache.attend(l, t, q)
        return self.logits(self.forward(tokens, positions, attend))


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
    logits = decoder.prefill(input_ids, lengths.tolist(), cache).repeat_interleave(copies, 0)
    generator = torch.Generator(device=device).manual_seed(seed)
    eos = torch.tensor(eos_ids, dtype=torch.long, device=device)
    result = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=device)
    position = lengths.repeat_interleave(copies, 0)                      # next position per row
    rows = torch.arange(B, device=device)                                # live batch -> result row
    running = torch.ones(B, dtype=torch.bool, device=device)             # not ended yet
    n = 0
    while True:
        tokens = torch.where(running, sample_tokens(logits, temperature, top_p, generator), pad_id)
        result[rows, n] = tokens
        running = running & ~torch.isin(tokens, eos)
        n += 1
        if on_token:
            on_token()
        live = int(running.sum())
        if n == max_new_tokens or live == 0:
            return result[:, :n]
        if live <= COMPACT_AT * rows.numel():
            keep = running.nonzero().squeeze(-1)
            cache.compact(keep, n - 1)
            rows, position, tokens, running = rows[keep], position[keep], tokens[keep], running[keep]
        logits = decoder.step(tokens, position, n - 1, cache)       # its keys, values: slot n - 1
        position = position + 1
