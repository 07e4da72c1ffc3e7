"""REPORT_TO (rgym_exp/trackers.py): each tracker gets metrics.jsonl's numbers under the same
names at step = round, offline; a missing package is a ConfigError naming REPORT_TO; a tracker
that fails is dropped with one warning and training goes on. W&B and trackio are not
installed here: stand-in modules record the calls. (TensorBoard files from a real swarm:
tests/test_takehome.py.)"""

from __future__ import annotations

import logging
import sys
import types

import pytest

from rgym_exp.config import ConfigError
from rgym_exp.trackers import Trackers, missing, scalars, wandb_mode

METRICS = {"round": 3, "node_id": "w1", "reward/mean": 0.5, "external/used": 2,
           "eval/accuracy": 0.25, "external/age_mean": None, "flag": True,
           "time/round_s": float("nan")}


def fake_module(monkeypatch, name: str) -> list:
    """A stand-in ``name`` module whose init/log/finish append to the returned list."""
    calls = []
    mod = types.ModuleType(name)
    mod.__spec__ = types.SimpleNamespace(name=name)
    run = types.SimpleNamespace(log=lambda values, step: calls.append(("run.log", values, step)),
                                finish=lambda: calls.append(("finish",)))
    mod.init = lambda **kw: (calls.append(("init", kw)), run)[1]
    mod.log = lambda values, step=None: calls.append(("log", values, step))
    mod.finish = lambda: calls.append(("finish",))
    monkeypatch.setitem(sys.modules, name, mod)
    return calls


def test_only_finite_numbers_go_to_a_tracker_under_their_metrics_jsonl_names():
    assert scalars(METRICS) == {"reward/mean": 0.5, "external/used": 2.0, "eval/accuracy": 0.25}


def test_wandb_runs_offline_without_an_api_key(monkeypatch, tmp_path):
    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))          # no ~/.netrc from `wandb login`
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    calls = fake_module(monkeypatch, "wandb")
    trackers = Trackers("wandb", str(tmp_path), "exp", "w1", {"SEED": 42})
    trackers.log(METRICS, 3)
    trackers.close()
    (_, init), log, finish = calls
    assert init["mode"] == "offline" and (init["group"], init["name"]) == ("exp", "w1")
    assert init["config"] == {"SEED": 42} and init["dir"] == str(tmp_path / "wandb")
    assert log == ("run.log", scalars(METRICS), 3) and finish == ("finish",)
    monkeypatch.setenv("WANDB_API_KEY", "k")
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() is None                          # wandb reads WANDB_MODE itself


def test_trackio_logs_each_round_as_a_step_in_the_experiments_project(monkeypatch, tmp_path):
    calls = fake_module(monkeypatch, "trackio")
    trackers = Trackers("trackio", str(tmp_path), "exp", "w2", {})
    trackers.log(METRICS, 3)
    trackers.close()
    assert calls == [("init", {"project": "exp", "name": "w2", "config": {}}),
                     ("log", scalars(METRICS), 3), ("finish",)]


def test_a_missing_package_is_a_config_error_naming_report_to(monkeypatch, tmp_path):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "trackio" else real(name, *a))
    assert missing("none") == []
    with pytest.raises(ConfigError, match=r"REPORT_TO=tensorboard,trackio needs the trackio "
                       r"package: pip install \.\[trackio\]"):
        Trackers("tensorboard,trackio", str(tmp_path), "exp", "w1", {})


def test_a_failing_tracker_is_dropped_with_one_warning_and_the_others_go_on(monkeypatch, tmp_path,
                                                                          caplog):
    calls = fake_module(monkeypatch, "trackio")
    broken = fake_module(monkeypatch, "wandb")
    trackers = Trackers("wandb,trackio", str(tmp_path), "exp", "w1", {})

    def fail(values, step):
        raise OSError("disk full")
    trackers.open["wandb"].run.log = fail
    with caplog.at_level(logging.WARNING):
        trackers.log(METRICS, 0)
        trackers.log(METRICS, 1)
    assert [r.getMessage() for r in caplog.records] == [
        "REPORT_TO wandb failed (disk full); no more metrics go to it"]
    assert [c[2] for c in calls if c[0] == "log"] == [0, 1]
    assert len(broken) == 1                                 # init only


def test_a_tracker_that_cannot_start_is_a_warning_not_a_crash(monkeypatch, tmp_path, caplog):
    calls = fake_module(monkeypatch, "trackio")

    def refuse(**kw):
        raise RuntimeError("no space left")
    sys.modules["trackio"].init = refuse
    with caplog.at_level(logging.WARNING):
        trackers = Trackers("trackio", str(tmp_path), "exp", "w1", {})
    trackers.log(METRICS, 0)
    assert trackers.open == {} and calls == []
    assert "REPORT_TO trackio could not start (RuntimeError: no space left)" in caplog.text
