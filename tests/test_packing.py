"""Packed log-probs (genrl/packing.py): a group's completions after one copy of its prompt
give the log-probs and the update of one row per completion, on every family the decode
loop serves; a model whose attention ignores the packed mask is detected and scored row by
row."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from genrl import packing
from genrl.grpo import GRPOConfig, GRPOTrainer, TrainGroup
from genrl.models import load_policy
from tests.test_generation import tiny

PAD = 0


def units_of(vocab: int, seed: int = 0) -> list:
    """Three groups: prompts of different lengths, completions of different lengths (one of
    a single token), so rows need padding both ways."""
    g = torch.Generator().manual_seed(seed)
    def ids(n):
        return torch.randint(3, vocab, (n,), generator=g).tolist()
    return [(ids(7), [(ids(4), 1.0), (ids(1), -0.5), (ids(6), 0.3)]),
            (ids(3), [(ids(5), 0.7), (ids(2), -1.0)]),
            (ids(11), [(ids(3), 0.2)])]


def families():
    small = dict(vocab_size=100, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    return {"qwen2": tiny("qwen2"), "qwen3": tiny("qwen3"), "gemma": tiny("gemma"),
            "mistral": tiny("mistral"),
            "llama-eager": LlamaForCausalLM(LlamaConfig(**small, attn_implementation="eager")).eval(),
            "gpt2": GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=48, n_layer=2, n_head=4)).eval()}


@pytest.mark.parametrize("name", ["qwen2", "qwen3", "gemma", "mistral", "llama-eager", "gpt2"])
def test_packed_rows_give_the_log_probs_of_one_row_per_completion(name):
    model = families()[name]
    units = units_of(min(model.config.vocab_size, 100))
    with torch.no_grad():
        a, mask_a = packing.row_logprobs(model, units, PAD, 0.7, torch.device("cpu"))
        b, mask_b = packing.packed_logprobs(model, units, PAD, 0.7, torch.device("cpu"))
    assert torch.equal(mask_a, mask_b)
    assert mask_a.sum() == sum(len(c) for _, comps in units for c, _ in comps)
    assert float(((a - b).abs() * mask_a).max()) < 1e-5
    assert packing.agrees(model, units[0], PAD, torch.device("cpu"))


def test_an_update_with_packing_has_the_gradient_of_the_row_by_row_update(tiny_llama):
    prompts = [[5, 9, 12, 40, 41], [7, 8], [30, 31, 32, 33, 34, 35, 36]]
    groups = [TrainGroup(p, [[11, 12, 13], [14], [15, 16, 17, 18, 19], [20, 21]], [1.0, 0.0, 0.0, 1.0])
              for p in prompts]
    grads, losses = {}, {}
    for packed in (False, True):
        policy = load_policy(tiny_llama, device="cpu")
        trainer = GRPOTrainer(policy, GRPOConfig(micro_batch_size=3))
        trainer.packing = packed
        metrics = trainer.step(groups)       # gradients stay on the parameters after the step
        grads[packed] = {n: p.grad.clone() for n, p in policy.model.named_parameters()}
        losses[packed] = metrics["train/loss"]
        assert metrics["train/sequences"] == 12
    assert any(float(g.abs().max()) > 1e-4 for g in grads[True].values())
    for n, g in grads[False].items():
        assert torch.allclose(grads[True][n], g, atol=1e-7, rtol=1e-4), n
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)


def test_a_micro_batch_holds_at_most_micro_batch_size_completions_and_each_once(tiny_llama):
    trainer = GRPOTrainer(load_policy(tiny_llama, device="cpu"), GRPOConfig(micro_batch_size=3))
    units = [([1, 2], [([i], 0.1 * i) for i in range(8)]), ([3], [([9], 0.5), ([10], 0.6)])]
    batches = trainer._micro_batches(units)
    assert all(sum(len(comps) for _, comps in mb) <= 3 for mb in batches)
    seen = sorted(c[0] for mb in batches for _, comps in mb for c, _ in comps)
    assert seen == list(range(8)) + [9, 10]
    # a group of 8 at size 3 runs its prompt 3 times, not 8
    assert sum(p == [1, 2] for mb in batches for p, _ in mb) == 3


def test_the_prompt_is_run_once_per_micro_batch_not_once_per_completion(tiny_llama):
    policy = load_policy(tiny_llama, device="cpu")
    trainer = GRPOTrainer(policy, GRPOConfig(micro_batch_size=4))
    prompt = list(range(5, 25))                                  # 20 tokens
    group = TrainGroup(prompt, [[30, 31], [32], [33, 34, 35], [36]], [1.0, 0.0, 1.0, 0.0])
    seen = []
    hook = policy.model.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(int((kw["input_ids"] != PAD).sum())), with_kwargs=True)
    try:
        trainer.step([group])
    finally:
        hook.remove()
    # the first call is the one-time agreement check (both ways on one completion); the update's
    # own pass runs the prompt once and the 7 completion tokens
    assert seen[-1] == 20 + 7


class IgnoresPackedMask(LlamaForCausalLM):
    """Stands in for attention that drops a 4D mask (flash attention): plain causal."""
    def forward(self, *args, attention_mask=None, **kwargs):
        if attention_mask is not None and attention_mask.dim() == 4:
            attention_mask = None
        return super().forward(*args, attention_mask=attention_mask, **kwargs)


def test_a_model_that_ignores_the_packed_mask_is_scored_row_by_row(tiny_llama, caplog):
    policy = load_policy(tiny_llama, device="cpu")
    broken = IgnoresPackedMask(policy.model.config)
    broken.load_state_dict(policy.model.state_dict())
    policy.model = broken.eval()
    trainer = GRPOTrainer(policy, GRPOConfig(micro_batch_size=4))
    group = TrainGroup([5, 6, 7, 8], [[30, 31], [32, 33], [34]], [1.0, 0.0, 0.0])
    with caplog.at_level(logging.INFO, logger="genrl.grpo"):
        trainer.step([group])
    assert trainer.packing is False
    assert "one row per completion" in caplog.text
    with torch.no_grad():
        got, mask = trainer._logprobs(policy.model, [(group.prompt_ids, [(c, 0.0) for c in group.completions])])
        want, _ = packing.row_logprobs(policy.model, [(group.prompt_ids, [(c, 0.0) for c in group.completions])],
                                       trainer.tokenizer.pad_token_id, 0.7, torch.device("cpu"))
    assert torch.allclose(got * mask, want * mask)
