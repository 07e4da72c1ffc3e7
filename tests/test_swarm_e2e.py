"""The swarm end to end: real launcher processes, a tiny model, a temp folder as Drive."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from rgym_exp.drive.layout import local_folder
from tests.swarm_helpers import REPO, exp_dir, metrics, node_env, read_json, start_node, wait_all


@pytest.fixture(scope="module")
def three_rounds(tiny_llama, tmp_path_factory):
    """A coordinator and two workers (J=2) for 3 rounds, evaluated every round."""
    root = tmp_path_factory.mktemp("e2e")
    drive = str(root / "drive")
    env = node_env(drive, tiny_llama, str(root / "home"), EVAL_INTERVAL=1, EVAL_QUESTIONS=6)
    procs = [start_node(env, str(root / f"{n}.log"), role, n)
             for role, n in (("coordinator", "coord"), ("worker", "w1"), ("worker", "w2"))]
    codes = wait_all(procs, timeout=240)
    return drive, codes, root


def test_all_nodes_exit_0_and_the_state_is_finished(three_rounds):
    drive, codes, root = three_rounds
    assert codes == [0, 0, 0], [open(root / f"{n}.log").read()[-2000:] for n in ("coord", "w1", "w2")]
    state = read_json(os.path.join(exp_dir(drive), "state", "current_state.json"))
    assert state["finished"] is True and state["round"] == 2


def test_every_worker_published_and_submitted_every_round(three_rounds):
    drive = three_rounds[0]
    for r in range(3):
        folder = os.path.join(exp_dir(drive), "rollouts", f"round_{r}")
        rollouts = sorted(os.listdir(folder))
        # named with the groups that have signal: a random tiny model never answers right
        assert rollouts == ["w1.s0.json", "w2.s0.json"]
        for node in ("w1", "w2"):
            doc = read_json(os.path.join(folder, f"{node}.s0.json"))
            assert doc["node_id"] == node and doc["round"] == r and len(doc["groups"]) == 2
            assert all(len(g["completions"]) == 4 for g in doc["groups"])
            sub = read_json(os.path.join(exp_dir(drive), "submissions", f"round_{r}", f"{node}.json"))
            assert sub["node_id"] == node and sub["round"] == r
            line = metrics(drive, node)[r]           # one record: the submission holds it
            assert sub["metrics"] == {k: v for k, v in line.items() if k != "time"}


def test_peers_files_are_seen_and_those_without_signal_are_not_read(three_rounds):
    drive = three_rounds[0]
    for node in ("w1", "w2"):
        lines = metrics(drive, node)
        assert [m["round"] for m in lines] == [0, 1, 2]     # one line per round, none twice
        for m in lines:
            for key in ("reward/mean", "external/considered", "external/used", "time/round_s",
                        "external/files_listed", "external/wait_s", "external/age_mean"):
                assert key in m
        assert all(m["external/files_listed"] > 0 for m in lines[1:]), lines
        assert all(m["external/files_read"] == 0 for m in lines)   # all claimed no signal


def test_the_next_round_is_generated_ahead_and_never_past_the_last(three_rounds):
    drive, _, root = three_rounds
    ahead = {node: [m["time/ahead_s"] for m in metrics(drive, node)] for node in ("w1", "w2")}
    for r in (1, 2):       # the first worker to submit r-1 always finds r not yet open
        assert max(ahead["w1"][r], ahead["w2"][r]) > 0, ahead
    assert ahead["w1"][0] == ahead["w2"][0] == 0.0
    for node in ("w1", "w2"):      # never a round past the last one, each round generated once
        log = open(root / f"{node}.log").read()
        assert [log.count(f"round {r}: generating ") for r in range(4)] == [1, 1, 1, 0], node


def test_every_node_is_evaluated_every_round_on_the_same_held_out_questions(three_rounds):
    drive = three_rounds[0]
    for node in ("w1", "w2"):
        lines = metrics(drive, node)
        for m in lines:
            assert 0.0 <= m["eval/accuracy"] <= 1.0 and m["eval/questions"] == 6
            assert m["eval/basic_arithmetic"] == m["eval/accuracy"]     # the one task
            assert m["time/eval_s"] > 0
        peer = read_json(os.path.join(exp_dir(drive), "peers", f"{node}.json"))
        assert peer["last_eval"] == lines[-1]["eval/accuracy"]       # what status shows
    from rgym_exp.report import main
    assert main(["--gdrive-path", drive, "--experiment", "exp"]) == 0
    assert os.path.getsize(os.path.join(exp_dir(drive), "report", "heldout_accuracy.png")) > 0


def test_each_file_was_written_by_its_owner(three_rounds):
    drive = three_rounds[0]
    root = exp_dir(drive)
    peers = {f[:-5]: read_json(os.path.join(root, "peers", f)) for f in os.listdir(os.path.join(root, "peers"))}
    assert {n: p["node_id"] for n, p in peers.items()} == {"coord": "coord", "w1": "w1", "w2": "w2"}
    assert {n: p["status"] for n, p in peers.items()} == {"coord": "finished", "w1": "finished",
                                                          "w2": "finished"}
    assert read_json(os.path.join(root, "state", "current_state.json"))["coordinator"] == "coord"
    assert sorted(os.listdir(os.path.join(root, "checkpoints"))) == ["w1", "w2"]
    for node in ("coord", "w1", "w2"):
        events = [json.loads(line) for line in open(os.path.join(root, "logs", node, "events.jsonl"))]
        assert events[0]["event"] == "config"
        stdout = open(os.path.join(root, "logs", node, "stdout.log")).read()
        assert "joining experiment" in stdout and "\r" not in stdout  # no progress-bar redraws


def test_a_worker_needs_a_coordinator_and_gives_up_with_a_clear_message(tiny_llama, tmp_path):
    env = node_env(str(tmp_path / "drive"), tiny_llama, str(tmp_path / "home"), WAIT_TIMEOUT=2)
    proc = start_node(env, str(tmp_path / "w.log"), "worker", "lonely")
    assert proc.wait(timeout=60) == 3
    text = open(tmp_path / "w.log").read()
    assert "gave up after 2s waiting for experiment.json of exp (is a coordinator running?)" in text


def test_a_node_with_other_shared_settings_refuses_to_join(tiny_llama, tmp_path):
    drive, home = str(tmp_path / "drive"), str(tmp_path / "home")
    coord = start_node(node_env(drive, tiny_llama, home, MAX_ROUNDS=50), str(tmp_path / "c.log"),
                       "coordinator", "coord")
    try:
        env = node_env(drive, tiny_llama, home, SEED=7)
        worker = start_node(env, str(tmp_path / "w.log"), "worker", "w1")
        assert worker.wait(timeout=60) == 2
        assert "SEED=7 but experiment exp was created with SEED=42" in open(tmp_path / "w.log").read()
    finally:
        coord.kill()


def swarm_env(tmp_path, model, **kw):
    env = node_env(str(tmp_path / "drive"), model, str(tmp_path / "home"), **kw)
    env.update(NODE_ROLE="swarm", NODE_ID="local", NUM_WORKERS="2")
    return env


def test_swarm_role_runs_a_whole_swarm_on_this_machine(tiny_llama, tmp_path):
    out = subprocess.run([sys.executable, "-m", "rgym_exp.runner.swarm_launcher"],
                         env=swarm_env(tmp_path, tiny_llama, MAX_ROUNDS=2), capture_output=True,
                         text=True, timeout=240, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "[local-w1] round 1 submitted" in out.stderr and "[local-w2] round 1 submitted" in out.stderr
    assert "swarm finished: 3 node(s) exited cleanly" in out.stderr
    logs = os.path.join(local_folder(str(tmp_path / "home" / "cache"), str(tmp_path / "drive"),
                                     "exp"), "swarm")
    assert sorted(os.listdir(logs)) == ["local-coordinator.log", "local-w1.log", "local-w2.log"]


def test_one_ctrl_c_stops_every_node_cleanly(tiny_llama, tmp_path):
    env = swarm_env(tmp_path, tiny_llama, MAX_ROUNDS=1000)
    log_path = tmp_path / "swarm.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "rgym_exp.runner.swarm_launcher"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    sub = os.path.join(exp_dir(str(tmp_path / "drive")), "submissions", "round_1")
    deadline = time.monotonic() + 120
    while not (os.path.isdir(sub) and len(os.listdir(sub)) == 2) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    peers = os.path.join(exp_dir(str(tmp_path / "drive")), "peers")
    records = [read_json(os.path.join(peers, f)) for f in os.listdir(peers)]
    assert {r["status"] for r in records} == {"stopped"}
    for r in records:                                   # no orphan left running
        with pytest.raises(ProcessLookupError):
            os.kill(r["pid"], 0)
    assert "swarm stopped by request" in open(log_path).read()


def test_a_failing_node_makes_the_swarm_exit_non_zero(tmp_path):
    env = swarm_env(tmp_path, str(tmp_path / "no-such-model"))
    out = subprocess.run([sys.executable, "-m", "rgym_exp.runner.swarm_launcher"], env=env,
                         capture_output=True, text=True, timeout=240, cwd=REPO)
    assert out.returncode == 1
    assert "no-such-model: no such folder" in out.stderr and "swarm finished with failures" in out.stderr


def test_a_worker_restarted_on_a_finished_experiment_says_so_without_loading_its_model(
        three_rounds, tiny_llama):
    drive, _, root = three_rounds
    env = node_env(drive, tiny_llama, str(root / "home"), EVAL_INTERVAL=1, EVAL_QUESTIONS=6)
    log = root / "w1-again.log"
    assert start_node(env, str(log), "worker", "w1").wait(timeout=120) == 0
    text = log.read_text()
    assert "experiment exp had already finished at round 2 (MAX_ROUNDS=3): nothing to do" in text
    assert "loaded in" not in text and "evaluating" not in text, text[-2000:]
