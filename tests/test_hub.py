"""Pushing to the Hub (rgym_exp/hub.py) against a local stand-in for its API (no network):
write access checked once, one line and no push without it, pushes paced under the Hub's
commit-rate limit, a failed push never raised into training."""

from __future__ import annotations

import logging

import pytest

from rgym_exp.hub import HubPusher
from tests.hub_server import HubStandIn


@pytest.fixture
def hub(monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)   # conftest sets offline mode
    server = HubStandIn()
    yield server
    server.close()


def model_folder(tmp_path, name="m", text="weights") -> str:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "model.safetensors").write_text(text)
    (folder / "README.md").write_text("---\nlibrary_name: transformers\n---\n# card\n")
    return str(folder)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "rgym_exp.hub" and r.levelno >= logging.WARNING]


@pytest.mark.parametrize("token, repo, why", [
    ("hf_read", "user/model", "the token of user cannot write to user/model (read-only token"),
    ("hf_write", "someone/model", "the token of user cannot write to someone/model"),
    ("hf_bogus", "user/model", "HUGGINGFACE_ACCESS_TOKEN is not a valid token (401)"),
    ("", "user/model", "HUGGINGFACE_ACCESS_TOKEN is empty")])
def test_a_token_that_cannot_write_is_one_line_and_no_push(hub, tmp_path, caplog, token, repo, why):
    pusher = HubPusher(repo, token, 1, endpoint=hub.url)
    assert pusher.check() is False and pusher.enabled is False
    (line,) = warnings_of(caplog)
    assert line.startswith(f"HUB_REPO_ID={repo}: not pushing, training goes on: ") and why in line
    assert not pusher.due(0)
    folder = model_folder(tmp_path)
    pusher.push(folder, 0, wait=True)         # a caller that pushes anyway: nothing happens
    assert hub.commits == [] and not (tmp_path / "m").exists()


def test_offline_mode_means_no_push_and_no_request(hub, monkeypatch, caplog):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert HubPusher("user/model", "hf_write", 1, endpoint=hub.url).check() is False
    assert "HF_HUB_OFFLINE is set" in warnings_of(caplog)[0] and hub.requests == []


def test_a_writable_repository_is_created_private_then_pushed_every_interval(hub, tmp_path):
    clock = Clock()
    pusher = HubPusher("user/model", "hf_write", 2, endpoint=hub.url, min_gap=30, clock=clock)
    assert pusher.check() and "user/model" in hub.repos
    assert [pusher.due(r) for r in range(4)] == [False, True, False, True]
    pusher.push(model_folder(tmp_path, "r1", "one"), 1, wait=True)
    assert hub.commits[-1]["message"] == "round 1"
    assert hub.commits[-1]["files"]["model.safetensors"] == b"one"
    assert pusher.pushed_round == 1 and pusher.commits == 1
    assert not (tmp_path / "r1").exists()                      # local copy removed
    clock.now += 29                                            # under the gap: next time
    assert not pusher.due(3)
    clock.now += 1
    assert pusher.due(3)


def test_a_push_in_progress_defers_the_next_and_runs_in_the_background(hub, tmp_path, monkeypatch):
    import threading
    release = threading.Event()
    pusher = HubPusher("user/model", "hf_write", 1, endpoint=hub.url, min_gap=0)
    assert pusher.check()
    upload = pusher._api.upload_folder
    monkeypatch.setattr(pusher._api, "upload_folder",
                        lambda **kw: (release.wait(10), upload(**kw))[1])
    pusher.push(model_folder(tmp_path, "r0"), 0)               # returns at once
    assert pusher.busy() and not pusher.due(1)
    release.set()
    pusher.wait()
    assert not pusher.busy() and pusher.due(1) and pusher.pushed_round == 0


def test_a_failed_push_is_a_warning_and_the_next_one_retries(hub, tmp_path, caplog):
    pusher = HubPusher("user/model", "hf_write", 1, endpoint=hub.url, min_gap=0)
    assert pusher.check()
    hub.fail_commits = [400]      # not retried by huggingface_hub (a 5xx is, with back-off)
    pusher.push(model_folder(tmp_path, "r0"), 0, wait=True)
    assert "Hub push of round 0 failed" in warnings_of(caplog)[-1]
    assert pusher.enabled and pusher.pushed_round is None and not (tmp_path / "r0").exists()
    pusher.push(model_folder(tmp_path, "r1"), 1, wait=True)
    assert [c["message"] for c in hub.commits] == ["round 1"] and pusher.pushed_round == 1


def test_a_token_that_loses_its_rights_ends_pushing(hub, tmp_path, caplog):
    pusher = HubPusher("user/model", "hf_write", 1, endpoint=hub.url, min_gap=0)
    assert pusher.check()
    pusher.token = pusher._api.token = "hf_read"              # revoked to read-only
    pusher.push(model_folder(tmp_path, "r0"), 0, wait=True)
    assert "refused" in warnings_of(caplog)[-1] and "no more pushes" in warnings_of(caplog)[-1]
    assert not pusher.enabled and not pusher.due(1) and hub.commits == []
