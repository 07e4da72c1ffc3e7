"""A node's logs belong to one experiment instance: a new experiment with an old one's
name never inherits its lines, and a restart of the same node continues them."""

import json
import os
import shutil

from rgym_exp.config import load_config
from rgym_exp.experiment import Experiment, question_source
from rgym_exp.node_log import LOG_FILES, NodeLogs
from tests.swarm_helpers import exp_dir, node_env, start_node, wait_all


def lines(drive, node, name):
    with open(os.path.join(exp_dir(drive), "logs", node, name), encoding="utf-8") as fh:
        return fh.read().splitlines()


def run_swarm(drive, model, home, tmp_path, tag):
    env = node_env(drive, model, home, MAX_ROUNDS=2, NUM_TRANSPLANT_TREES=0)
    procs = [start_node(env, str(tmp_path / f"{tag}-c.log"), "coordinator", "coord"),
             start_node(env, str(tmp_path / f"{tag}-w.log"), "worker", "w1")]
    assert wait_all(procs, timeout=180) == [0, 0], open(tmp_path / f"{tag}-w.log").read()[-3000:]


def check_only_its_own(drive, other_drive):
    """Every line of w1's three shared log files comes from the run in ``drive``."""
    assert [json.loads(m)["round"] for m in lines(drive, "w1", "metrics.jsonl")] == [0, 1]
    events = [json.loads(e) for e in lines(drive, "w1", "events.jsonl")]
    configs = [e["settings"]["GDRIVE_PATH"] for e in events if e["event"] == "config"]
    assert configs == [drive]
    assert [e["event"] for e in events].count("started") == 1
    stdout = lines(drive, "w1", "stdout.log")
    assert stdout and not any(other_drive in line for line in stdout)
    assert sum("joining experiment exp in folder" in line for line in stdout) == 1


def test_the_same_experiment_name_in_two_folders_keeps_each_run_s_own_lines(tiny_llama, tmp_path):
    home = str(tmp_path / "home")                     # one machine: one CACHE_DIR for both runs
    first, second = str(tmp_path / "drive1"), str(tmp_path / "drive2")
    run_swarm(first, tiny_llama, home, tmp_path, "first")
    run_swarm(second, tiny_llama, home, tmp_path, "second")
    check_only_its_own(second, first)
    check_only_its_own(first, second)                 # and the first run's files are untouched
    # the folder deleted to start over: the new experiment does not inherit the old lines
    shutil.rmtree(exp_dir(first))
    run_swarm(first, tiny_llama, home, tmp_path, "again")
    assert [json.loads(m)["round"] for m in lines(first, "w1", "metrics.jsonl")] == [0, 1]
    assert sum("joining experiment exp in folder" in line
               for line in lines(first, "w1", "stdout.log")) == 1


def open_logs(drive, home, node="w1"):
    cfg, _ = load_config(node_env(drive, "unused", home, NODE_ROLE="coordinator", NODE_ID=node))
    exp = Experiment.open(cfg)
    return cfg, exp, NodeLogs(exp, node, cfg.CACHE_DIR, 60, "INFO")


class Owner:
    def owns(self):
        return True


def test_a_restart_continues_its_logs_on_the_same_machine_and_on_a_new_one(tmp_path):
    drive = str(tmp_path / "drive")
    cfg, exp, logs = open_logs(drive, str(tmp_path / "home"))
    info = exp.create_or_check(question_source(cfg))
    logs.bind(info.instance_id)
    logs.start(Owner())
    logs.metric({"round": 0})
    logs.close()
    # the same machine: the buffer is this experiment's, so it is kept
    _, _, logs = open_logs(drive, str(tmp_path / "home"))
    logs.start(Owner())
    logs.metric({"round": 1})
    logs.close()
    assert [json.loads(m)["round"] for m in lines(drive, "w1", "metrics.jsonl")] == [0, 1]
    # a new machine (empty CACHE_DIR): it takes back what the folder has and appends
    _, _, logs = open_logs(drive, str(tmp_path / "other-home"))
    logs.start(Owner())
    logs.metric({"round": 2})
    logs.close()
    assert [json.loads(m)["round"] for m in lines(drive, "w1", "metrics.jsonl")] == [0, 1, 2]


def test_a_buffer_of_another_instance_is_set_aside_not_uploaded_and_not_lost(tmp_path):
    drive, home = str(tmp_path / "drive"), str(tmp_path / "home")
    ccfg, cexp, _ = open_logs(drive, str(tmp_path / "home-coordinator"), node="c")
    cexp.create_or_check(question_source(ccfg))
    cfg, exp, logs = open_logs(drive, home)
    logs.bind(exp.read_info().instance_id)
    logs.metric({"round": 0, "old": True})          # never uploaded: no owner yet
    logs.close()
    old_buffer = logs.local
    shutil.rmtree(exp_dir(drive, "exp"))             # the experiment deleted, made anew
    cfg, exp, _ = open_logs(drive, str(tmp_path / "home-coordinator"), node="c")
    exp.create_or_check(question_source(cfg))        # by the same coordinator (its key)
    _, _, logs = open_logs(drive, home)
    logs.start(Owner())
    logs.metric({"round": 0, "old": False})
    logs.close()
    assert [json.loads(m)["old"] for m in lines(drive, "w1", "metrics.jsonl")] == [False]
    aside = [d for d in os.listdir(os.path.dirname(old_buffer)) if ".set-aside-" in d]
    assert len(aside) == 1                            # kept on disk, named, for the user
    with open(os.path.join(os.path.dirname(old_buffer), aside[0], "metrics.jsonl")) as fh:
        assert json.loads(fh.readline())["old"] is True
    events = [json.loads(e)["event"] for e in lines(drive, "w1", "events.jsonl")]
    assert "log_buffer_set_aside" in events
    assert set(os.listdir(logs.local)) >= {"metrics.jsonl", "instance"}
    assert all(name in LOG_FILES or name == "instance" for name in os.listdir(logs.local))
