"""Checkpoint modes (weights only by default, half- or full-precision AdamW moments), when a
checkpoint is due, and the warning before Drive's daily upload cap.

Exact resume bit for bit is tests/test_grpo.py; restoring past a bad checkpoint is
tests/test_reliability.py.
"""

from __future__ import annotations

import logging
import os
from types import SimpleNamespace

import pytest
import torch

from genrl.checkpoint import load_trainer, save_trainer
from rgym_exp.checkpoints import CheckpointManager
from tests.test_grpo import fixed_group, params, same_params, trainer_for


def sizes(paths):
    return {os.path.basename(p): os.path.getsize(p) for p in paths}


def test_weights_only_is_a_third_of_exact_and_restarts_adamw_afresh(tiny_llama, tmp_path):
    a = trainer_for(tiny_llama, learning_rate=1e-3)
    a.step([fixed_group(a)])
    extra = {"curriculum": {"levels": {"chain_sum": 2}}}
    got = {mode: sizes(save_trainer(a, str(tmp_path / mode), 3, extra, optimizer=mode))
           for mode in ("exact", "half", "weights")}
    weights = got["exact"]["model.safetensors"]
    assert got["weights"]["model.safetensors"] == weights            # weights stay float32
    assert got["exact"]["optimizer.safetensors"] > 1.9 * weights      # two float32 moments
    assert got["half"]["optimizer.safetensors"] < 0.55 * got["exact"]["optimizer.safetensors"]
    assert got["weights"]["optimizer.safetensors"] < 0.05 * weights   # RNG state (5 KB) only
    b = trainer_for(tiny_llama, learning_rate=1e-3)
    state = load_trainer(b, str(tmp_path / "weights"))
    assert same_params(params(a), params(b))
    assert b.optimizer.state == {} and b.steps == a.steps == 1
    assert state["optimizer"] == "weights" and state["curriculum"] == extra["curriculum"]
    b.step([fixed_group(b)])                                          # and it trains on
    c = trainer_for(tiny_llama, learning_rate=1e-3)
    load_trainer(c, str(tmp_path / "half"))
    for p in c.model.parameters():
        moment = c.optimizer.state[p]["exp_avg"]
        assert moment.dtype == torch.float32
        assert torch.allclose(moment, a.optimizer.state[dict(a.model.named_parameters())[
            next(n for n, q in c.model.named_parameters() if q is p)]]["exp_avg"], rtol=1e-2,
            atol=1e-8)


def test_an_unknown_mode_is_refused(tiny_llama, tmp_path):
    with pytest.raises(ValueError, match="optimizer mode 'quarter'"):
        save_trainer(trainer_for(tiny_llama), str(tmp_path), 0, optimizer="quarter")


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def manager(tmp_path, gdrive_path: str, **kw):
    exp = SimpleNamespace(config=SimpleNamespace(GDRIVE_PATH=gdrive_path))
    return CheckpointManager(exp, "w1", str(tmp_path), keep=2, **kw)


def test_a_checkpoint_is_due_every_n_rounds_or_after_n_minutes(tmp_path):
    clock = Clock()
    rounds = manager(tmp_path, "/x", interval=10, clock=clock)
    assert [r for r in range(25) if rounds.due(r)] == [9, 19]
    timed = manager(tmp_path, "/x", interval=10, minutes=30, clock=clock)
    assert not timed.due(0)
    clock.now += 30 * 60
    assert timed.due(1)
    timed._check_upload_rate(1000)    # saving resets the timer
    assert not timed.due(2)


@pytest.mark.parametrize("where, warns", [("/content/drive/MyDrive/rl-swarm", True),
                                          ("gdrive://abcdefgh", True), ("s3://b/x", False)])
def test_checkpoints_that_would_pass_drives_daily_upload_cap_warn_once(tmp_path, caplog, where,
                                                                       warns):
    clock = Clock()
    ck = manager(tmp_path, where, clock=clock)
    with caplog.at_level(logging.WARNING, logger="rgym_exp.checkpoints"):
        for _ in range(4):               # 1.62 GB every 2 minutes: 1,166 GB a day
            ck._check_upload_rate(int(1.62e9))
            clock.now += 120
    assert caplog.text.count("past Drive's 750 GB a day") == (1 if warns else 0)
    caplog.clear()
    slow = manager(tmp_path, where, clock=clock)
    with caplog.at_level(logging.WARNING, logger="rgym_exp.checkpoints"):
        for _ in range(3):               # 0.54 GB every 10 minutes: 78 GB a day
            slow._check_upload_rate(int(0.54e9))
            clock.now += 600
    assert "750 GB" not in caplog.text
