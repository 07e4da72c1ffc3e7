"""Log-probs of completions for the GRPO update, each prompt read once per pass.

A group's G completions share one prompt. Scoring them as G rows of prompt + completion
runs the prompt through the model G times, forward and backward; on reasoning-gym's long
prompts and short answers that is most of the update's arithmetic (2-term sums: prompts of
about 80 tokens, completions of about 16). Packed, a row is
``[prompt][c1][c2]...[ck]`` with position ids restarting after the prompt for every
completion and a 4D attention mask in which each completion sees the prompt and its own
earlier tokens, never another completion: the same log-probs and gradients as separate rows
(tests/test_packing.py), with the prompt computed once per row.

A *unit* is ``(prompt_ids, [(completion_ids, advantage), ...])``: one group's completions,
or up to ``micro_batch_size`` of them. A micro-batch is a list of units; its rows are
left-padded so that every row ends in the same column, and logits are computed only for the
last columns that hold a prediction of a completion token.

Models that do not honour a 4D mask (flash attention, some custom code) would give wrong
log-probs, so the trainer compares both ways once on its first unit (``agrees``) and keeps
the separate rows where they differ.
"""

from __future__ import annotations

import torch

Unit = tuple  # (prompt_ids: list[int], [(completion_ids: list[int], advantage: float), ...])


def flat(units: list[Unit]) -> list[tuple]:
    """(prompt, completion, advantage) for every completion, in the order of the log-probs."""
    return [(prompt, comp, adv) for prompt, comps in units for comp, adv in comps]


def _token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = logits.float() / max(temperature, 1e-6)
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)


def row_logprobs(model, units: list[Unit], pad: int, temperature: float, device) -> tuple:
    """Per-token log-probs [N, C] and completion mask, one row per completion: prompts
    left-padded and completions right-padded so every completion starts in the same column
    and only the last C+1 positions need logits. The reference for ``packed_logprobs``."""
    seqs = flat(units)
    p_len = max(len(s[0]) for s in seqs)
    c_len = max(len(s[1]) for s in seqs)
    ids, attn, mask = [], [], []
    for prompt, comp, _ in seqs:
        lp, lc = p_len - len(prompt), c_len - len(comp)
        ids.append([pad] * lp + prompt + comp + [pad] * lc)
        attn.append([0] * lp + [1] * (len(prompt) + len(comp)) + [0] * lc)
        mask.append([1] * len(comp) + [0] * lc)
    ids = torch.tensor(ids, device=device)
    attn = torch.tensor(attn, device=device)
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=attn, position_ids=positions,
                   logits_to_keep=c_len + 1).logits[:, :-1]
    return (_token_logprobs(logits, ids[:, p_len:], temperature),
            torch.tensor(mask, device=device, dtype=torch.float32))


def packed_logprobs(model, units: list[Unit], pad: int, temperature: float, device) -> tuple:
    """The same [N, C] log-probs and mask as ``row_logprobs``, one packed row per unit."""
    lengths = [len(p) + sum(len(c) for c, _ in comps) for p, comps in units]
    width = max(lengths)
    # the last columns, from the leftmost prompt-last position on: where predictions are read
    keep = max(length - len(p) + 1 for (p, _), length in zip(units, lengths))
    c_len = max(len(c) for _, comps in units for c, _ in comps)
    n = sum(len(comps) for _, comps in units)
    ids = torch.full((len(units), width), pad, dtype=torch.long)
    positions = torch.zeros((len(units), width), dtype=torch.long)
    allowed = torch.zeros((len(units), width, width), dtype=torch.bool)
    rows = torch.zeros((n, c_len), dtype=torch.long)      # packed row of each prediction
    cols = torch.zeros((n, c_len), dtype=torch.long)      # its column among the kept ones
    targets = torch.zeros((n, c_len), dtype=torch.long)
    mask = torch.zeros((n, c_len), dtype=torch.float32)
    j = 0
    for b, ((prompt, comps), length) in enumerate(zip(units, lengths)):
        start = width - length                                # left padding
        P = len(prompt)
        ids[b, start:start + P] = torch.tensor(prompt)
        positions[b, start:start + P] = torch.arange(P)
        allowed[b, start:start + P, start:start + P] = torch.ones(P, P, dtype=torch.bool).tril()
        allowed[b, :start, :start] = torch.eye(start, dtype=torch.bool)  # pads see themselves
        at = start + P
        for comp, _ in comps:
            k = len(comp)
            ids[b, at:at + k] = torch.tensor(comp)
            positions[b, at:at + k] = torch.arange(P, P + k)
            allowed[b, at:at + k, start:start + P] = True
            allowed[b, at:at + k, at:at + k] = torch.ones(k, k, dtype=torch.bool).tril()
            # token t of this completion is predicted at the column before it: the prompt's
            # last for t = 0
            before = torch.cat([torch.tensor([start + P - 1]), torch.arange(at, at + k - 1)])
            rows[j, :k], cols[j, :k] = b, before - (width - keep)
            targets[j, :k], mask[j, :k] = torch.tensor(comp), 1.0
            at += k
            j += 1
    ids, positions, allowed = ids.to(device), positions.to(device), allowed.to(device)
    dtype = next(model.parameters()).dtype
    bias = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(
        ~allowed, torch.finfo(dtype).min).unsqueeze(1)
    logits = model(input_ids=ids, attention_mask=bias, position_ids=positions,
                   logits_to_keep=keep).logits
    logits = logits.float() / max(temperature, 1e-6)
    lse = logits.logsumexp(-1)                                           # [B, keep]
    rows, cols, targets = rows.to(device), cols.to(device), targets.to(device)
    logp = logits[rows, cols, targets] - lse[rows, cols]
    mask = mask.to(device)
    return logp * mask, mask


@torch.no_grad()
def agrees(model, unit: Unit, pad: int, device, tolerance: float = 1e-3) -> bool:
    """Whether packing gives this model the log-probs of separate rows (float32, eval mode)."""
    training = model.training
    model.eval()
    try:
        a, mask = row_logprobs(model, [unit], pad, 1.0, device)
        b, _ = packed_logprobs(model, [unit], pad, 1.0, device)
    finally:
        model.train(training)
    return bool(((a - b).abs() * mask).max() <= tolerance)
