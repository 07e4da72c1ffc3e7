"""A worker's setting that cannot work is said before any wait (issue 24): a MODEL_NAME it
cannot load or a DEVICE this machine lacks ends the launcher with exit 2 and a line naming
the setting within seconds, even with no coordinator (before, the worker waited for
experiment.json up to WAIT_TIMEOUT and exited 3 without mentioning the model)."""

from __future__ import annotations

import os
import time

import pytest
import torch

from tests.swarm_helpers import node_env, start_node


@pytest.mark.parametrize("setting, value, said", [
    ("MODEL_NAME", "nonexistent/model", "nonexistent/model: not cached and the hub is not reachable"),
    ("MODEL_NAME", "/no/such/folder", "MODEL_NAME=/no/such/folder: no such folder"),
    ("DEVICE", "cuda", "DEVICE"),
])
def test_a_worker_with_an_unusable_model_or_device_exits_2_before_waiting(
        tiny_llama, tmp_path, setting, value, said):
    if setting == "DEVICE" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    env = node_env(str(tmp_path / "drive"), tiny_llama, str(tmp_path / "home"),
                   WAIT_TIMEOUT=600, **{setting: value})      # no coordinator will come
    log = tmp_path / "w1.log"
    t0 = time.monotonic()
    code = start_node(env, str(log), "worker", "w1").wait(timeout=120)
    text = log.read_text()
    assert code == 2, text[-2000:]
    assert time.monotonic() - t0 < 60
    assert said in text and "ERROR" in text, text[-2000:]
    assert not os.path.exists(tmp_path / "drive" / "experiments" / "exp" / "experiment.json")
