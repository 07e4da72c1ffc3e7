"""Supervision: NODE_ROLE=swarm (and the launcher's --restart) start a failed node again,
with a pause and a cap, and never after exit 2 (bad setting) or 4 (taken over).

The nodes here are tiny scripts that exit with chosen codes (counted in files), so the
policy is tested in seconds without models.
"""

from __future__ import annotations

import logging
import os
import sys

import pytest

from rgym_exp.config import load_config
from rgym_exp.swarm import Swarm, restart_delay, supervise, why_final

NODE = r"""
import os, sys, time
d, node = os.environ["RUNS_DIR"], os.environ["NODE_ID"]
path = os.path.join(d, node)
runs = (int(open(path).read()) if os.path.exists(path) else 0) + 1
open(path, "w").write(str(runs))
codes = os.environ.get("CODES_" + node.replace("-", "_"), "0").split(",")
if node.endswith("coordinator"):   # waits for the workers to be done, then finishes
    deadline = time.time() + 30
    while time.time() < deadline and not os.path.exists(os.path.join(d, "workers-done")):
        time.sleep(0.05)
    sys.exit(0)
sys.exit(int(codes[min(runs, len(codes)) - 1]))
"""


def config(tmp_path, **env):
    settings = {"GDRIVE_PATH": str(tmp_path / "drive"), "CACHE_DIR": str(tmp_path / "cache"),
                "XDG_CONFIG_HOME": str(tmp_path), "NODE_ID": "local", "NUM_WORKERS": "2"}
    settings.update({k: str(v) for k, v in env.items()})
    return load_config(settings)[0]


def runs(tmp_path, node: str) -> int:
    path = tmp_path / "runs" / node
    return int(path.read_text()) if path.exists() else 0


class Done(Swarm):
    """Tells the scripted coordinator when every worker is final."""

    def _supervise(self):
        super()._supervise()
        if all(c.final for c in self.children if c.role == "worker"):
            open(os.path.join(os.environ["RUNS_DIR"], "workers-done"), "w").close()


@pytest.fixture
def scripted(tmp_path, monkeypatch):
    (tmp_path / "runs").mkdir()
    monkeypatch.setenv("RUNS_DIR", str(tmp_path / "runs"))
    return [sys.executable, "-c", NODE]


def test_a_failed_worker_is_restarted_until_it_succeeds_and_exit_2_never(tmp_path, scripted,
                                                                         monkeypatch, caplog):
    monkeypatch.setenv("CODES_local_w1", "1,3,0")     # fails twice, then finishes
    monkeypatch.setenv("CODES_local_w2", "2")         # a bad setting: restarting cannot help
    swarm = Done(config(tmp_path, RESTART_LIMIT=5), show=lambda line: None, command=scripted,
                 delay=0.05)
    with caplog.at_level(logging.INFO, logger="rgym_exp.swarm"):
        code = swarm.run()
    assert code == 1                                   # w2's failure stands
    assert (runs(tmp_path, "local-w1"), runs(tmp_path, "local-w2")) == (3, 1)
    assert caplog.text.count("restarting worker local-w1 in") == 2
    assert caplog.text.count("restarted worker local-w1 (pid") == 2
    assert "worker local-w2 is not restarted: a bad setting or a refused start" in caplog.text


def test_restarts_stop_at_the_cap_and_never_follow_a_takeover(tmp_path, scripted, monkeypatch,
                                                             caplog):
    monkeypatch.setenv("CODES_local_w1", "1")         # always fails
    monkeypatch.setenv("CODES_local_w2", "4")         # taken over by another process
    swarm = Done(config(tmp_path, RESTART_LIMIT=2), show=lambda line: None, command=scripted,
                 delay=0.05)
    with caplog.at_level(logging.INFO, logger="rgym_exp.swarm"):
        assert swarm.run() == 1
    assert (runs(tmp_path, "local-w1"), runs(tmp_path, "local-w2")) == (3, 1)
    assert "it failed 3 time(s) in a row (RESTART_LIMIT=2)" in caplog.text
    assert "local-w2 is not restarted: another process took its NODE_ID over" in caplog.text


def test_restart_limit_0_never_restarts(tmp_path, scripted, monkeypatch):
    monkeypatch.setenv("CODES_local_w1", "1")
    swarm = Done(config(tmp_path, RESTART_LIMIT=0), show=lambda line: None, command=scripted,
                 delay=0.05)
    assert swarm.run() == 1 and runs(tmp_path, "local-w1") == 1


def test_one_node_under_restart_comes_back_after_a_failure(tmp_path, scripted, monkeypatch):
    monkeypatch.setenv("NODE_ID", "solo")
    monkeypatch.setenv("CODES_solo", "1,0")
    assert supervise(config(tmp_path, NODE_ID="solo", NODE_ROLE="worker"), scripted,
                     delay=0.05) == 0
    assert runs(tmp_path, "solo") == 2
    (tmp_path / "runs" / "solo").unlink()
    monkeypatch.setenv("CODES_solo", "4,0")
    assert supervise(config(tmp_path, NODE_ID="solo", NODE_ROLE="worker"), scripted,
                     delay=0.05) == 4
    assert runs(tmp_path, "solo") == 1


def test_the_pause_doubles_up_to_five_minutes_and_final_codes_are_named():
    assert [restart_delay(k) for k in range(7)] == [10, 20, 40, 80, 160, 300, 300]
    assert why_final(1, 0, 5) == "" and why_final(3, 4, 5) == "" and why_final(-9, 0, 5) == ""
    assert why_final(1, 5, 5).startswith("it failed 6 time(s)")
    assert why_final(2, 0, 5) and why_final(4, 0, 5) and why_final(0, 0, 5)
