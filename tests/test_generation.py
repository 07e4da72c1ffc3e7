"""The fast decode loop (genrl/generation.py): greedy output token-identical to HF
``generate`` for every supported family, sampling from the same distribution as HF's
temperature and top-p, weights followed after training, and the fallback for other models."""

import logging

import pytest
import torch
from transformers import (GemmaConfig, GemmaForCausalLM, MistralConfig, MistralForCausalLM,
                          OPTConfig, OPTForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config,
                          Qwen3ForCausalLM)
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from genrl.generation import decode, fast_decoder
from genrl.sampling import sample_tokens
from genrl.grpo import GRPOConfig, GRPOTrainer, TrainGroup
from genrl.models import Policy, build_prompt, load_policy

VOCAB = 300
SMALL = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine a second OpenMP thread
    that is not scheduled makes every small op wait for it (tens of times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(family: str):
    torch.manual_seed(0)
    model = {"qwen2": lambda: Qwen2ForCausalLM(Qwen2Config(**SMALL)),        # q/k/v biases
             "qwen3": lambda: Qwen3ForCausalLM(Qwen3Config(**SMALL, head_dim=12)),  # q/k norms
             "gemma": lambda: GemmaForCausalLM(GemmaConfig(**SMALL, head_dim=12)),  # scaled embedding
             "mistral": lambda: MistralForCausalLM(MistralConfig(**SMALL))}[family]()
    return model.eval()


def prompts(lengths=(5, 9, 3, 7), vocab=VOCAB, seed=0):
    """Left-padded random prompts of different lengths: ids, mask."""
    g = torch.Generator().manual_seed(seed)
    P = max(lengths)
    ids = torch.zeros(len(lengths), P, dtype=torch.long)
    mask = torch.zeros(len(lengths), P, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, P - n:] = torch.randint(3, vocab, (n,), generator=g)
        mask[i, P - n:] = 1
    return ids, mask


def hf_greedy(model, ids, mask, copies, new, eos):
    out = model.generate(input_ids=ids.repeat_interleave(copies, 0),
                         attention_mask=mask.repeat_interleave(copies, 0), do_sample=False,
                         max_new_tokens=new, eos_token_id=eos, pad_token_id=0)
    return out[:, ids.shape[1]:]


def fast_greedy(model, ids, mask, copies, new, eos):
    return decode(fast_decoder(model, ids.shape[1] + new), ids, mask, copies, new, eos, 0, 0.0, 1.0, 0)


@pytest.mark.parametrize("family", ["qwen2", "qwen3", "gemma", "mistral"])
def test_greedy_output_is_token_identical_to_hf_generate(family):
    model = tiny(family)
    ids, mask = prompts()
    with torch.no_grad():
        reference = hf_greedy(model, ids, mask, 2, 24, [1])
        # end some rows early (a token two of the prompts produce soon): exercises stopping
        # and dropping ended rows
        eos = [int(reference[0, 3]), int(reference[4, 5])]
        reference = hf_greedy(model, ids, mask, 2, 24, eos)
        ours = fast_greedy(model, ids, mask, 2, 24, eos)
    assert fast_decoder(model, 40) is not None
    assert ours.tolist() == reference[:, :ours.shape[1]].tolist()
    assert (reference[:, ours.shape[1]:] == 0).all()


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_trainer_greedy_completions_match_hf_before_and_after_a_training_step(fixture, request):
    trainer = GRPOTrainer(load_policy(request.getfixturevalue(fixture)),
                          GRPOConfig(max_new_tokens=16, learning_rate=1e-2))
    texts = [build_prompt(trainer.tokenizer, q) for q in ("Calculate 1 + 2.", "What day is it?", "x")]

    def both():
        fast = trainer.generate(texts, 2, seed=0, temperature=0.0)
        hf = trainer.generate(texts, 2, seed=0, temperature=0.0, fast=False)
        return [(c.ids, c.ended) for g in fast for c in g], [(c.ids, c.ended) for g in hf for c in g]

    fast, hf = both()
    assert fast == hf
    # weights change in place (an optimizer step; a checkpoint load): the decoder must follow
    group = TrainGroup(trainer.encode_prompt(texts[0]), [fast[0][0], [7, 8, 9]], [0.0, 1.0])
    trainer.step([group])
    torch.manual_seed(1)
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    after_fast, after_hf = both()
    assert after_fast == after_hf and after_fast != fast


def exact(logits, temperature, top_p):
    """The distribution HF samples from: its own temperature and top-p warpers, softmax."""
    scores = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_p < 1:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return scores.softmax(-1)


@pytest.mark.parametrize("temperature,top_p,shape", [(0.7, 1.0, "peaky"), (1.0, 0.8, "peaky"),
                                                     (1.0, 0.8, "tail"), (0.7, 0.9, "flat")])
def test_sampling_draws_from_hfs_distribution(temperature, top_p, shape):
    """20000 draws of one token: every token's frequency within 5 standard errors of HF's
    probability. ``tail``: 2000 tokens, some of the mass outside the top-p candidates;
    ``flat``: a nucleus wider than the candidates (the full-sort path)."""
    g = torch.Generator().manual_seed(1)
    vocab = {"peaky": 60, "tail": 2000, "flat": 1000}[shape]
    logits = torch.randn(1, vocab, generator=g) * {"peaky": 2.0, "tail": 0.5, "flat": 0.1}[shape]
    if shape == "tail":
        logits[0, :100] += 5.0
        assert 0.02 < 1 - float(logits.softmax(-1).topk(256).values.sum()) < 1 - top_p
    p = exact(logits, temperature, top_p)[0]
    n = 20000
    draws = sample_tokens(logits.expand(n, vocab).contiguous(), temperature, top_p, g)
    freq = torch.bincount(draws, minlength=vocab).double() / n
    se = ((p * (1 - p)).double() / n).sqrt()
    assert ((freq - p).abs() <= 5 * se + 1e-12).all()
    assert (freq[p == 0] == 0).all()             # tokens top-p removed are never drawn


def test_decoded_second_tokens_follow_the_models_distribution():
    """Through the whole loop (prefill, cache, one decode step): the second token of 6000
    samples of one prompt against its exact distribution, sum over first tokens of
    p(first) p(second | first), both from the model's own forward with HF's warpers."""
    model = tiny("qwen2")
    with torch.no_grad():
        model.lm_head.weight.mul_(20)          # peaky distributions: a sharper test
        ids, mask = prompts(lengths=(6,))
        temperature, top_p, n = 0.8, 0.9, 6000
        first = exact(model(ids).logits[:, -1], temperature, top_p)[0]
        seqs = torch.cat([ids.expand(VOCAB, -1), torch.arange(VOCAB).unsqueeze(1)], dim=1)
        second = exact(model(seqs).logits[:, -1], temperature, top_p)
        expected = (first.unsqueeze(1) * second).sum(0)
        out = decode(fast_decoder(model, 8), ids, mask, n, 2, [], 0, temperature, top_p, seed=3)
    freq = torch.bincount(out[:, 1], minlength=VOCAB).double() / n
    se = ((expected * (1 - expected)).double() / n).sqrt()
    assert ((freq - expected).abs() <= 5 * se + 1e-9).all()
    assert torch.bincount(out[:, 0], minlength=VOCAB)[first == 0].sum() == 0


def test_other_model_families_fall_back_to_hf_generate_with_a_log_line(tiny_llama, caplog):
    tokenizer = load_policy(tiny_llama).tokenizer
    torch.manual_seed(0)
    model = OPTForCausalLM(OPTConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                     ffn_dim=64, num_attention_heads=4, word_embed_proj_dim=32,
                                     pad_token_id=tokenizer.pad_token_id)).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    trainer = GRPOTrainer(Policy(model, tokenizer, torch.device("cpu"), torch.float32, "tiny OPT"),
                          GRPOConfig(max_new_tokens=6))
    with caplog.at_level(logging.INFO, logger="genrl.generation"):
        groups = trainer.generate([build_prompt(tokenizer, "Calculate 1 + 2.")], 3, seed=0)
    assert [len(g) for g in groups] == [3] and all(0 < len(c.ids) <= 6 for c in groups[0])
    assert "generation: HF generate (model type 'opt' has no fast decode path)" in caplog.text
