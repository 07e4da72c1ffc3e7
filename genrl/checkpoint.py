"""Trainer state on disk: weights, optimizer moments, RNG and counters.

Everything is safetensors or JSON -- nothing is pickled, so a checkpoint read
back from a shared folder cannot execute code. Three files always: the weights,
``optimizer.safetensors`` and ``trainer_state.json``. What the optimizer file
holds is the ``optimizer`` mode (OPTIMIZER_MODES):

* ``exact``: AdamW's moments in float32. Restoring and stepping gives exactly the
  parameters an uninterrupted trainer would have (tested bit for bit). For a
  135M-parameter model: 0.54 GB of weights + 1.08 GB of moments.
* ``half``: the moments in bfloat16 (half the moments' bytes; the update after a
  restart is off by bfloat16's rounding of the moments).
* ``weights``: no moments (weights, RNG and counters only): AdamW starts afresh
  after a restart, as at the first step. A third of ``exact``'s size.

The weights stay float32 in every mode: an update at a learning rate of 3e-6 is far
below half precision's resolution, so rounding the weights would undo training.
"""

from __future__ import annotations

import json
import os

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from genrl.grpo import GRPOTrainer

WEIGHTS, OPTIMIZER, STATE = "model.safetensors", "optimizer.safetensors", "trainer_state.json"
FILES = (WEIGHTS, OPTIMIZER, STATE)
FORMAT = 1
OPTIMIZER_MODES = ("exact", "half", "weights")
MOMENT_DTYPE = {"exact": None, "half": torch.bfloat16}


def save_trainer(trainer: GRPOTrainer, folder: str, round_: int, extra: dict | None = None,
                 optimizer: str = "exact") -> list[str]:
    """Write the three files into ``folder``; returns their paths. ``optimizer``: what
    of AdamW's state is kept (module docstring)."""
    if optimizer not in OPTIMIZER_MODES:
        raise ValueError(f"optimizer mode {optimizer!r}: expected one of {OPTIMIZER_MODES}")
    os.makedirs(folder, exist_ok=True)
    save_model(trainer.model, os.path.join(folder, WEIGHTS))  # dedupes tied weights
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["rng/cuda"] = torch.cuda.get_rng_state()
    if optimizer != "weights":
        cast = MOMENT_DTYPE[optimizer]
        for name, param in trainer.model.named_parameters():
            for key, value in trainer.optimizer.state.get(param, {}).items():
                if torch.is_tensor(value):
                    value = value.detach().to("cpu")
                    if cast is not None and key != "step":
                        value = value.to(cast)
                    tensors[f"{name}/{key}"] = value.contiguous()
    if trainer.scaler is not None:
        tensors["scaler/scale"] = torch.tensor(float(trainer.scaler.get_scale()))
    save_file(tensors, os.path.join(folder, OPTIMIZER))
    state = {"format": FORMAT, "round": round_, "steps": trainer.steps, "optimizer": optimizer,
             **(extra or {})}
    with open(os.path.join(folder, STATE), "w") as fh:
        json.dump(state, fh)
    return [os.path.join(folder, f) for f in FILES]


def load_trainer(trainer: GRPOTrainer, folder: str) -> dict:
    """Restore a trainer from ``folder``; returns the trainer state dict (its
    ``optimizer`` says which mode wrote it; older checkpoints: exact).
    Raises ValueError if the files do not fit this model."""
    with open(os.path.join(folder, STATE)) as fh:
        state = json.load(fh)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError("trainer_state.json has an unknown format")
    state.setdefault("optimizer", "exact")
    missing, unexpected = load_model(trainer.model, os.path.join(folder, WEIGHTS), strict=False,
                                     device=str(trainer.device))
    if missing or unexpected:
        raise ValueError(f"weights do not fit this model (missing {list(missing)[:3]}, "
                         f"unexpected {list(unexpected)[:3]})")
    tensors = load_file(os.path.join(folder, OPTIMIZER))
    trainer.optimizer.state.clear()   # weights-only: AdamW starts afresh, as at step one
    for name, param in trainer.model.named_parameters():
        entry = {key.split("/", 1)[1]: value for key, value in tensors.items()
                 if key.startswith(name + "/")}
        if entry:
            if "step" in entry:
                entry["step"] = entry["step"].to(torch.float32)  # AdamW keeps step on the CPU
            for key in ("exp_avg", "exp_avg_sq"):
                if key in entry:
                    entry[key] = entry[key].to(param.device, param.dtype)
            trainer.optimizer.state[param] = entry
    torch.set_rng_state(tensors["rng/torch"])
    if "rng/cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng/cuda"])
    if trainer.scaler is not None and "scaler/scale" in tensors:
        trainer.scaler.update(float(tensors["scaler/scale"]))
    trainer.steps = int(state.get("steps", 0))
    return state
