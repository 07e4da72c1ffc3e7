"""GRPO on tiny models built in the test session: generation, the update, checkpoints."""

import copy

import pytest
import torch

from genrl.checkpoint import load_trainer, save_trainer
from genrl.grpo import GRPOConfig, GRPOTrainer, TrainGroup, clipped_pg_loss, group_advantages
from genrl.models import build_prompt, load_policy


def trainer_for(path, **cfg):
    return GRPOTrainer(load_policy(path), GRPOConfig(**{"max_new_tokens": 12, **cfg}))


def params(trainer):
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters()}


def same_params(a, b, atol=0.0):
    return all(torch.allclose(a[n], b[n], atol=atol, rtol=0) for n in a)


def seq_logp(trainer, prompt, completion):
    with torch.no_grad():
        logp, mask = trainer._logprobs(trainer.model, [(prompt, [(completion, 0.0)])])
    return float((logp * mask).sum())


def fixed_group(trainer, rewards=(1.0, 0.0, 0.0, 0.0)):
    prompt = trainer.encode_prompt(build_prompt(trainer.tokenizer, "Calculate 2 + 3."))
    texts = ["<answer>5</answer>", "<answer>6</answer>", "7", "the answer is 9"]
    comps = [trainer.encode_completion(t, ended=True) for t in texts]
    return TrainGroup(prompt, comps, list(rewards))


def test_group_advantages_are_standardised_per_group():
    adv = group_advantages([1.0, 0.0, 0.0, 1.0])
    assert adv[0] == pytest.approx(1.0, abs=1e-3) and adv[1] == pytest.approx(-1.0, abs=1e-3)
    assert group_advantages([0.5, 0.5, 0.5]) == [0.0, 0.0, 0.0]


def test_a_crumb_of_reward_never_gets_the_advantage_of_a_right_answer():
    right = group_advantages([1.0, 0.0, 0.0, 0.0])            # one success among four
    crumb = group_advantages([0.0625, 0.0, 0.0, 0.0])         # partial credit, nobody right
    assert right[0] == pytest.approx(3 ** 0.5, rel=1e-3)      # plain GRPO: unchanged
    assert crumb[0] == pytest.approx(0.0625 * right[0], rel=1e-3)   # in proportion to the crumb
    fmt = group_advantages([1.1, 1.0, 1.0, 0.0])              # a format bonus on top of success
    assert fmt[0] > fmt[1] > 0 > fmt[3]
    for g in range(2, 17):                                    # any 0/1 group: standard GRPO
        for k in range(1, g):
            r = [1.0] * k + [0.0] * (g - k)
            std = torch.tensor(r).std(unbiased=False).item()
            assert group_advantages(r)[0] == pytest.approx((1 - k / g) / std, rel=1e-3)


def test_clipped_loss_stops_the_gradient_outside_the_trust_region():
    logp = torch.tensor([[0.0, 0.0]], requires_grad=True)
    old = torch.tensor([[-1.0, 1.0]])                      # ratio e and 1/e
    loss, clipped = clipped_pg_loss(logp, old, torch.tensor([[1.0]]), 0.2, 0.28)
    loss.sum().backward()
    assert clipped.tolist() == [[1.0, 0.0]]                 # high ratio, positive advantage: clipped
    assert logp.grad[0, 0] == 0 and logp.grad[0, 1] != 0


def test_clipped_loss_stops_the_gradient_below_the_trust_region_for_a_negative_advantage():
    logp = torch.tensor([[0.0, 0.0]], requires_grad=True)
    old = torch.tensor([[1.0, -1.0]])                      # ratio 1/e (below 1 - 0.2) and e
    loss, clipped = clipped_pg_loss(logp, old, torch.tensor([[-1.0]]), 0.2, 0.28)
    loss.sum().backward()
    assert clipped.tolist() == [[1.0, 0.0]]                 # low ratio, negative advantage: clipped
    assert loss[0, 0].item() == pytest.approx(0.8)          # -(1 - eps_low) * A, not -ratio * A
    assert logp.grad[0, 0] == 0 and logp.grad[0, 1] != 0


@pytest.mark.parametrize("packed", [True, False])
def test_training_log_probs_are_those_of_the_sampling_distribution(tiny_llama, packed):
    """The ratio's denominator is the sampler's distribution: logits / TEMPERATURE."""
    tr = trainer_for(tiny_llama, temperature=0.7)
    tr.packing = packed
    prompt = tr.encode_prompt(build_prompt(tr.tokenizer, "Calculate 2 + 3."))
    comp = tr.encode_completion("<answer>5</answer>", ended=True)
    with torch.no_grad():
        logits = tr.model(torch.tensor([prompt + comp])).logits[0, len(prompt) - 1:-1].float()
    want = torch.log_softmax(logits / 0.7, -1).gather(-1, torch.tensor(comp)[:, None]).sum()
    at_one = torch.log_softmax(logits, -1).gather(-1, torch.tensor(comp)[:, None]).sum()
    assert abs(float(want - at_one)) > 1e-2                 # the temperature matters here
    assert seq_logp(tr, prompt, comp) == pytest.approx(float(want), abs=1e-4)


@pytest.mark.parametrize("fast", [True, False])   # genrl/generation.py's loop, or HF generate
def test_one_generate_call_gives_g_completions_per_prompt(tiny_llama, monkeypatch, fast):
    import genrl.grpo
    tr = trainer_for(tiny_llama)
    calls = []
    owner, name = (genrl.grpo, "decode") if fast else (tr.model, "generate")
    original = getattr(owner, name)
    monkeypatch.setattr(owner, name, lambda *a, **k: calls.append(1) or original(*a, **k))
    prompts = [build_prompt(tr.tokenizer, q) for q in ("Calculate 1 + 2.", "What is the day?", "x")]
    groups = tr.generate(prompts, 4, seed=0, fast=fast)
    assert len(calls) == 1 and [len(g) for g in groups] == [4, 4, 4]
    eos = set(tr.policy.eos_ids)
    for c in (c for g in groups for c in g):
        assert 0 < len(c.ids) <= 12
        assert c.ended == (c.ids[-1] in eos)
        assert not any(t in eos for t in c.ids[:-1])
    again = tr.generate(prompts, 4, seed=0, fast=fast)
    assert [c.ids for g in again for c in g] == [c.ids for g in groups for c in g]


def test_a_step_raises_the_log_probability_of_the_rewarded_completion(tiny_llama):
    tr = trainer_for(tiny_llama, learning_rate=3e-3)
    group = fixed_group(tr)
    before_params = params(tr)
    good, bad = group.completions[0], group.completions[1]
    before = seq_logp(tr, group.prompt_ids, good), seq_logp(tr, group.prompt_ids, bad)
    metrics = tr.step([group])
    after = seq_logp(tr, group.prompt_ids, good), seq_logp(tr, group.prompt_ids, bad)
    assert not same_params(before_params, params(tr))
    assert after[0] > before[0]                                   # rewarded: more likely
    assert after[0] - after[1] > before[0] - before[1]            # ...than the unrewarded one
    assert metrics["train/sequences"] == 4 and metrics["train/tokens"] > 0


def test_zero_advantage_groups_contribute_no_gradient(tiny_llama):
    a, b = trainer_for(tiny_llama, learning_rate=1e-3), trainer_for(tiny_llama, learning_rate=1e-3)
    signal = fixed_group(a)
    flat = fixed_group(a, rewards=(1.0, 1.0, 1.0, 1.0))
    a.step([signal])
    metrics = b.step([signal, flat])
    assert metrics["train/sequences"] == 4
    assert same_params(params(a), params(b), atol=1e-7)
    c = trainer_for(tiny_llama)
    before = params(c)
    assert c.step([flat])["train/skipped"] == 1 and same_params(before, params(c))


def test_micro_batching_gives_the_same_gradient_as_one_batch(tiny_llama):
    a = trainer_for(tiny_llama, micro_batch_size=1, max_grad_norm=1e9)
    b = trainer_for(tiny_llama, micro_batch_size=16, max_grad_norm=1e9)
    groups = [fixed_group(a), fixed_group(a, rewards=(0.0, 1.0, 1.0, 0.0))]
    a.step(groups)
    b.step(groups)
    for (name, pa), pb in zip(a.model.named_parameters(), b.model.parameters()):
        assert torch.allclose(pa.grad, pb.grad, rtol=1e-4, atol=1e-7), name


def test_external_text_from_a_different_tokenizer_trains(tiny_llama, tiny_gpt2):
    sender, receiver = trainer_for(tiny_gpt2), trainer_for(tiny_llama, learning_rate=3e-3)
    assert len(sender.tokenizer) != len(receiver.tokenizer)
    q = "Calculate 4 + 4."
    texts = [c.text for c in sender.generate([build_prompt(sender.tokenizer, q)], 4, seed=1)[0]]
    texts[0] = "<answer>8</answer>"   # the rewarded one
    prompt = receiver.encode_prompt(build_prompt(receiver.tokenizer, q))
    comps = [receiver.encode_completion(t, ended=True) for t in texts]
    assert all(max(c) < len(receiver.tokenizer) for c in comps if c)
    assert receiver.tokenizer.decode(comps[0], skip_special_tokens=True) == "<answer>8</answer>"
    before = seq_logp(receiver, prompt, comps[0])
    receiver.step([TrainGroup(prompt, comps, [1.0, 0.0, 0.0, 0.0])])
    assert seq_logp(receiver, prompt, comps[0]) > before


def test_models_without_pad_token_or_chat_template_work(tiny_gpt2):
    tr = trainer_for(tiny_gpt2, learning_rate=1e-3)
    assert tr.tokenizer.chat_template is None and tr.tokenizer.pad_token == tr.tokenizer.eos_token
    prompt = build_prompt(tr.tokenizer, "What is 1 + 1?")
    assert prompt.endswith("Question: What is 1 + 1?\nAnswer:")
    groups = tr.generate([prompt, "short"], 3, seed=2)
    train = [TrainGroup(tr.encode_prompt(p), [c.ids for c in g], [1.0, 0.0, 0.5])
             for p, g in zip([prompt, "short"], groups)]
    assert tr.step(train)["train/sequences"] == 6


def test_save_load_step_equals_an_uninterrupted_step(tiny_llama, tmp_path):
    a = trainer_for(tiny_llama, learning_rate=1e-3)
    group = fixed_group(a)
    a.step([group])
    save_trainer(a, str(tmp_path / "ckpt"), round_=5)
    a.step([fixed_group(a, rewards=(0.0, 1.0, 0.0, 1.0))])
    b = trainer_for(tiny_llama, learning_rate=1e-3)
    state = load_trainer(b, str(tmp_path / "ckpt"))
    assert state["round"] == 5 and b.steps == 1
    b.step([fixed_group(b, rewards=(0.0, 1.0, 0.0, 1.0))])
    assert same_params(params(a), params(b))                  # bit for bit
    assert b.steps == a.steps == 2


def test_checkpoint_files_are_not_pickles(tiny_llama, tmp_path):
    a = trainer_for(tiny_llama)
    a.step([fixed_group(a)])
    for path in save_trainer(a, str(tmp_path), 0):
        with open(path, "rb") as fh:
            assert not fh.read(2).startswith(b"\x80")           # no pickle protocol header


def test_num_iterations_reuses_old_logprobs_so_clipping_binds(tiny_llama):
    tr = trainer_for(tiny_llama, learning_rate=5e-2, num_iterations=4)
    metrics = tr.step([fixed_group(tr)])
    assert tr.steps == 4 and metrics["train/clip_frac"] > 0


def test_kl_penalty_loads_a_frozen_reference_only_when_beta_is_positive(tiny_llama):
    assert trainer_for(tiny_llama).ref_model is None
    tr = trainer_for(tiny_llama, beta=0.1, learning_rate=1e-2, num_iterations=2)
    ref = copy.deepcopy(params(tr))
    metrics = tr.step([fixed_group(tr)])
    assert metrics["train/kl"] > 0
    assert same_params(ref, {n: p for n, p in tr.ref_model.named_parameters()})


def test_gradient_checkpointing_gives_the_same_gradient(tiny_llama):
    a = trainer_for(tiny_llama, max_grad_norm=1e9)
    b = trainer_for(tiny_llama, max_grad_norm=1e9, gradient_checkpointing=True)
    a.step([fixed_group(a)])
    b.step([fixed_group(b)])
    assert not b.model.training                     # back in eval mode after the step
    for (name, pa), pb in zip(a.model.named_parameters(), b.model.parameters()):
        assert torch.allclose(pa.grad, pb.grad, rtol=1e-4, atol=1e-7), name


def test_dropout_is_off_so_sampling_and_training_policies_agree(tiny_gpt2):
    tr = trainer_for(tiny_gpt2)
    assert all(m.p == 0.0 for m in tr.model.modules() if isinstance(m, torch.nn.Dropout))
    group = fixed_group(tr)
    tr.model.train()
    first = seq_logp(tr, group.prompt_ids, group.completions[0])
    assert seq_logp(tr, group.prompt_ids, group.completions[0]) == first


def test_progress_callbacks_see_every_decoding_step_and_micro_batch(tiny_llama):
    tr = trainer_for(tiny_llama, micro_batch_size=3)
    ticks, batches = [], []
    tr.generate(["Calculate 1 + 1."], 2, seed=0, on_token=lambda: ticks.append(1))
    assert 1 <= len(ticks) <= 12
    tr.step([fixed_group(tr)], on_batch=lambda done, total: batches.append((done, total)))
    assert batches == [(1, 2), (2, 2)]


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2"])
def test_sharing_the_prompt_cache_gives_the_same_completions(model, request):
    from transformers import GenerationConfig
    tr = trainer_for(request.getfixturevalue(model))
    prompts = [build_prompt(tr.tokenizer, q) for q in ("Calculate 1 + 2.", "What day is it after Monday?")]
    enc = tr.tokenizer(prompts, return_tensors="pt", padding=True)
    greedy = GenerationConfig(do_sample=False, max_new_tokens=10, eos_token_id=tr.policy.eos_ids,
                              pad_token_id=tr.tokenizer.pad_token_id)
    shared = tr._generate_shared_prefix(enc, greedy, 3, {})
    plain = tr.model.generate(input_ids=enc["input_ids"].repeat_interleave(3, 0),
                              attention_mask=enc["attention_mask"].repeat_interleave(3, 0),
                              generation_config=greedy)
    assert torch.equal(shared, plain)
