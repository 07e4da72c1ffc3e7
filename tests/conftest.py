"""Shared fixtures: tiny models and tokenizers built in the test session (never
downloaded), and a temporary folder that stands in for Google Drive."""

from __future__ import annotations

import os
import string

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def _corpus():
    words = ("Calculate what is the answer think step convert number base fraction simplify "
             "day week Monday Friday output program matrix grid input example rule "
             "<answer> </answer> <think> </think> You are a helpful assistant Question Answer")
    lines = [words, string.ascii_letters, string.digits + " +-*/=().,:;!?'\"[]{}<>|_"]
    lines += [f"Calculate {a} + {b} - {a * b}. <answer>{a + b}</answer>" for a in range(30) for b in range(10)]
    return lines * 3


def build_tokenizer(vocab_size: int, chat: bool):
    """A byte-level BPE tokenizer trained now on a small corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>"] + (["<|system|>", "<|user|>", "<|assistant|>"] if chat else [])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    if chat:
        hf.chat_template = CHAT_TEMPLATE
    return hf


def build_model_dir(path: str, arch: str = "llama", vocab_size: int = 400, seed: int = 0) -> str:
    """Save a tiny random model + tokenizer with save_pretrained; returns the dir.
    ``llama``: chat template, pad token unset. ``gpt2``: no chat template, no pad token."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    tok = build_tokenizer(vocab_size, chat=(arch == "llama"))
    vocab = len(tok)
    eos = tok.eos_token_id
    if arch == "llama":
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                          bos_token_id=eos, eos_token_id=eos, tie_word_embeddings=True)
        model = LlamaForCausalLM(cfg)
    else:
        cfg = GPT2Config(vocab_size=vocab, n_embd=48, n_layer=2, n_head=4, n_positions=1024,
                         bos_token_id=eos, eos_token_id=eos)
        model = GPT2LMHeadModel(cfg)
    model.generation_config.eos_token_id = eos
    model.generation_config.bos_token_id = eos
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> str:
    return build_model_dir(str(tmp_path_factory.mktemp("tiny-llama")), "llama", 400, seed=0)


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> str:
    return build_model_dir(str(tmp_path_factory.mktemp("tiny-gpt2")), "gpt2", 300, seed=1)


@pytest.fixture
def drive(tmp_path) -> str:
    """A temporary directory standing in for the shared Google Drive folder."""
    path = tmp_path / "drive"
    path.mkdir()
    return str(path)
