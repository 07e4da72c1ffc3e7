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


def build_gguf(path: str, seed: int = 0) -> str:
    """A tiny llama model written as a GGUF file (random float32 weights, the session's
    tokenizer): exercises the .gguf loading path without downloading anything."""
    import json

    import gguf
    import numpy as np
    tok = build_tokenizer(400, chat=True)
    vocab = [tok.convert_ids_to_tokens(i) for i in range(len(tok))]
    merges = [" ".join(m) if isinstance(m, list) else m
              for m in json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]]
    embd, layers, heads, kv_heads, ff = 48, 2, 4, 2, 96
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(256), w.add_embedding_length(embd), w.add_block_count(layers)
    w.add_feed_forward_length(ff), w.add_head_count(heads), w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5), w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("gpt2"), w.add_token_list(vocab), w.add_token_merges(merges)
    w.add_token_types([1] * len(vocab))
    w.add_bos_token_id(tok.eos_token_id), w.add_eos_token_id(tok.eos_token_id)
    w.add_chat_template(tok.chat_template)
    rng = np.random.default_rng(seed)
    kv = kv_heads * embd // heads
    shapes = {"token_embd.weight": (len(vocab), embd), "output_norm.weight": (embd,),
              "output.weight": (len(vocab), embd)}
    for i in range(layers):
        shapes.update({f"blk.{i}.attn_norm.weight": (embd,), f"blk.{i}.ffn_norm.weight": (embd,),
                       f"blk.{i}.attn_q.weight": (embd, embd), f"blk.{i}.attn_k.weight": (kv, embd),
                       f"blk.{i}.attn_v.weight": (kv, embd), f"blk.{i}.attn_output.weight": (embd, embd),
                       f"blk.{i}.ffn_gate.weight": (ff, embd), f"blk.{i}.ffn_up.weight": (ff, embd),
                       f"blk.{i}.ffn_down.weight": (embd, ff)})
    for name, shape in shapes.items():
        w.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    return path


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> str:
    return build_gguf(str(tmp_path_factory.mktemp("tiny-gguf") / "tiny.Q0.gguf"))


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
