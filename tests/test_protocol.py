"""DESIGN.md's folder-protocol invariants, one test (or more) each."""

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from genrl.data import Question
from genrl.rollouts import RolloutGroup, encode_rollouts
from genrl.sapo import ExternalSelector
from genrl.scoring import Scorer
from rgym_exp.config import load_config
from rgym_exp.coordinator import Coordinator
from rgym_exp.drive.layout import parse_node_file, parse_rollout_name
from rgym_exp.exchange import RolloutExchange
from rgym_exp.experiment import Experiment, question_source
from rgym_exp.node_log import NodeLogs
from rgym_exp.records import PeerRecord, RoundState, StateTracker
from tests.signing import pin, register, signer, write_as
from rgym_exp.waiting import Waiter, WaitTimeout
from rgym_exp.worker import Worker
from tests.swarm_helpers import exp_dir, metrics, node_env, start_node, wait_all, wait_for


class RecordingStore:
    """Wraps a store and remembers every path it changed."""

    def __init__(self, inner):
        self.inner, self.description, self.changed = inner, inner.description, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def write(self, path, data):
        self.changed.append(path)
        self.inner.write(path, data)

    def upload(self, local, path):
        self.changed.append(path)
        self.inner.upload(local, path)

    def delete(self, path):
        self.changed.append(path)
        self.inner.delete(path)

    def move(self, src, dst):
        self.changed += [src, dst]
        self.inner.move(src, dst)


def inproc(drive, home, model, role, node, **kw):
    env = node_env(drive, model, home, NODE_ROLE=role, NODE_ID=node, **kw)
    cfg, _ = load_config(env)
    exp = Experiment.open(cfg)
    exp.use_store(RecordingStore(exp.store))
    return cfg, exp


class OneQuestion:
    """Peers in these tests ask "q", answered "a"."""

    def regenerate(self, source):
        return Question("q", source, "a", verify=lambda answer: float(answer == "a"))


def judge():
    return ExternalSelector(OneQuestion(), Scorer(), "w1")


# --- invariant 1: one writer per file ------------------------------------------------------

def test_each_node_only_changes_its_own_files(drive, tmp_path, tiny_llama):
    home = str(tmp_path / "home")
    ccfg, cexp = inproc(drive, home, tiny_llama, "coordinator", "coord", MAX_ROUNDS=3)
    coord = Coordinator(ccfg, cexp, Waiter(0.1, 5))
    cexp.create_or_check(question_source(ccfg))
    state = coord.resume_or_start()
    writers = {}
    for node in ("w1", "w2"):
        cfg, exp = inproc(drive, home, tiny_llama, "worker", node, CHECKPOINT_INTERVAL=1)
        logs = NodeLogs(exp, node, cfg.CACHE_DIR, 60, "INFO")
        worker = Worker(cfg, exp, Waiter(0.1, 5), logs)
        worker.heartbeat.claim()
        worker.setup()
        worker.run_round(0)
        worker.last_done = 0
        worker.save_checkpoint()
        worker.heartbeat.close("stopped")
        logs.close()
        writers[node] = exp.store.changed
    coord.observe_peers()
    coord.tick(state)
    for node, paths in writers.items():
        assert paths, node
        for path in paths:
            parts = path.split("/")
            named = ((parts[-1].split(".")[0],) if parts[-2] == "keys" else
                     parse_rollout_name(parts[-1]) or (parse_node_file(parts[-1]),))
            assert node in parts or named[0] == node, (node, path)
    for path in cexp.store.changed:
        assert ("state" in path.split("/") or path.endswith("experiment.json")
                or path.endswith("peers/coord.json")), path


@pytest.mark.parametrize("publishing", [{}, {"ROLLOUT_PUBLISH_FREQUENCY": "generation",
                                             "GENERATION_BATCH_SIZE": 1}], ids=["round", "chunks"])
def test_a_round_generated_ahead_is_published_only_once_the_coordinator_opens_it(
        drive, tmp_path, tiny_llama, publishing):
    home = str(tmp_path / "home")
    ccfg, cexp = inproc(drive, home, tiny_llama, "coordinator", "coord", MAX_ROUNDS=2)
    coord = Coordinator(ccfg, cexp, Waiter(0.1, 5))
    cexp.create_or_check(question_source(ccfg))
    state = coord.resume_or_start()
    cfg, exp = inproc(drive, home, tiny_llama, "worker", "w1", **publishing)
    logs = NodeLogs(exp, "w1", cfg.CACHE_DIR, 60, "INFO")
    worker = Worker(cfg, exp, Waiter(0.1, 5), logs)
    worker.heartbeat.claim()
    worker.setup()
    t0 = time.perf_counter()
    worker.run_round(0)
    walls = [time.perf_counter() - t0]
    t0 = time.perf_counter()
    ahead = worker._ahead(0)                       # round 0 is still open: round 1 is made...
    walls.append(time.perf_counter() - t0)
    assert ahead.round == 1 and ahead.ahead and len(ahead.local) == cfg.NUM_TRAIN_SAMPLES
    round_1 = os.path.join(exp_dir(drive), "rollouts", "round_1")
    assert not os.path.exists(round_1)             # ...and held: its folder is not there yet
    coord.observe_peers()
    state = coord.tick(state)
    assert state.round == 1 and os.path.isdir(round_1)       # the coordinator opened it
    t0 = time.perf_counter()
    worker.run_round(1, ahead)
    walls[1] += time.perf_counter() - t0
    files = sorted((parse_rollout_name(name)[1] or 0, name) for name in os.listdir(round_1))
    assert len(files) == (cfg.NUM_TRAIN_SAMPLES if publishing else 1)    # one per chunk
    published = [g["completions"] for _, name in files
                 for g in json.load(open(os.path.join(round_1, name)))["groups"]]
    assert published == [g.completions for g in ahead.local]
    for r, wall in enumerate(walls):    # a round's time is its work, each second counted once
        sub = json.load(open(os.path.join(exp_dir(drive), "submissions", f"round_{r}", "w1.json")))
        assert 0 < sub["metrics"]["time/round_s"] <= wall
        assert (sub["metrics"]["time/ahead_s"] > 0) == (r == 1)
    assert worker._ahead(1) is None                # round 1 is the last: nothing past it
    worker.heartbeat.close("stopped")
    logs.close()


# --- invariant 2: a torn file reads as "not there yet" ------------------------------------

def test_torn_files_read_as_absent_and_are_counted(drive, tmp_path, tiny_llama):
    cfg, exp = inproc(drive, str(tmp_path), tiny_llama, "worker", "w1")
    exp.store.write(exp.layout.state_file, b'{"round": 3, "started_at": 1.0, "dead')
    tracker = StateTracker(exp.reader, exp.layout.state_file)
    assert tracker.refresh() is None and exp.reader.unreadable == 1
    exp.store.write(exp.layout.peer("w9"), b'{"node_id": "w9", "rol')
    assert exp.reader.read(PeerRecord, exp.layout.peer("w9")) is None
    good = encode_rollouts([RolloutGroup("w2", 0, "m", "q", {}, ["a", "b"], [0, 1])], "w2", 0)
    exp.store.makedirs(exp.layout.rollouts_dir(0))   # as the coordinator does when it opens round 0
    exp.store.write(exp.layout.rollout(0, "w2"), good[: len(good) // 2])
    gathered = RolloutExchange(exp, "w1").gather(0, 2, judge(), np.random.default_rng(0))
    assert gathered.groups == [] and sum(gathered.rejected.values()) == 1


# --- invariant 3: temp files, and conflict copies of files that are there, are ignored -------

def test_conflict_copies_and_temp_files_are_never_read(drive, tmp_path, tiny_llama):
    cfg, exp = inproc(drive, str(tmp_path), tiny_llama, "worker", "w1")
    group = RolloutGroup("w2", 0, "m", "q", {}, ["a", "b"], [0, 1])
    exp.store.makedirs(exp.layout.rollouts_dir(0))   # as the coordinator does when it opens round 0
    register(exp, "w2")
    signed = write_as(exp.store, "w2", exp.layout.rollout(0, "w2"), encode_rollouts([group], "w2", 0))
    folder = os.path.join(drive, exp.layout.rollouts_dir(0))
    for junk in ("w2 (1).json", ".w4.json.tmp-1a2b"):
        with open(os.path.join(folder, junk), "wb") as fh:
            fh.write(signed)
    gathered = RolloutExchange(exp, "w1").gather(0, 5, judge(), np.random.default_rng(0))
    assert gathered.files_listed == 1 and len(gathered.groups) == 1


def test_a_conflict_copy_that_is_the_only_copy_of_a_file_is_still_read(drive, tmp_path, tiny_llama):
    # a mount that synced w3's file as 'w3 (1).json': hiding it would lose w3's groups
    cfg, exp = inproc(drive, str(tmp_path), tiny_llama, "worker", "w1")
    exp.store.makedirs(exp.layout.rollouts_dir(0))
    group = RolloutGroup("w3", 0, "m", "q", {}, ["a", "b"], [0, 1])
    register(exp, "w3")
    with open(os.path.join(drive, exp.layout.rollouts_dir(0), "w3 (1).json"), "wb") as fh:
        fh.write(signer(exp.store, "w3").seal(exp.layout.rollout(0, "w3"),
                                              encode_rollouts([group], "w3", 0)))
    gathered = RolloutExchange(exp, "w1").gather(0, 5, judge(), np.random.default_rng(0))
    assert gathered.files_listed == 1 and [g.origin for g in gathered.groups] == ["w3"]


# --- invariant 4: rounds only go forward ----------------------------------------------------

def test_a_stale_state_served_after_a_newer_one_is_ignored(drive, tmp_path, tiny_llama):
    cfg, exp = inproc(drive, str(tmp_path), tiny_llama, "worker", "w1")
    tracker = StateTracker(exp.reader, exp.layout.state_file)
    newer = RoundState(round=5, started_at=1, deadline=2, max_rounds=9, updated_at=10)
    older = RoundState(round=4, started_at=1, deadline=2, max_rounds=9, updated_at=20)
    pin(exp.store, exp.layout, "coord")
    write_as(exp.store, "coord", exp.layout.state_file, newer)
    assert tracker.refresh().round == 5
    write_as(exp.store, "coord", exp.layout.state_file, older)   # Drive serves an old copy
    assert tracker.refresh().round == 5 and tracker.stale_reads == 1


# --- invariant 5: nothing waits forever -------------------------------------------------------

def test_every_wait_has_a_deadline_and_says_what_it_waits_for():
    waiter = Waiter(poll_max=0.01, timeout=0.2)
    t0 = time.monotonic()
    with pytest.raises(WaitTimeout, match="gave up after 0s waiting for the answer"):
        waiter.until(lambda: None, what="the answer")
    assert time.monotonic() - t0 < 2


def test_a_stop_request_ends_a_wait_at_once():
    waiter = Waiter(poll_max=5, timeout=60)
    threading.Timer(0.2, waiter.request_stop, args=("SIGTERM received",)).start()
    t0 = time.monotonic()
    with pytest.raises(Exception, match="SIGTERM received"):
        waiter.until(lambda: None, what="nothing")
    assert time.monotonic() - t0 < 3


# --- invariant 6: restarts continue -------------------------------------------------------------

def test_coordinator_restart_mid_experiment_continues(tiny_llama, tmp_path):
    drive, home = str(tmp_path / "drive"), str(tmp_path / "home")
    env = node_env(drive, tiny_llama, home, MAX_ROUNDS=5, NUM_TRANSPLANT_TREES=1)
    coord = start_node(env, str(tmp_path / "c.log"), "coordinator", "coord")
    worker = start_node(env, str(tmp_path / "w.log"), "worker", "w1")
    subs = os.path.join(exp_dir(drive), "submissions")
    wait_for(lambda: os.path.isdir(os.path.join(subs, "round_2")))
    coord.send_signal(signal.SIGKILL)
    coord.wait()
    coord = start_node(env, str(tmp_path / "c2.log"), "coordinator", "coord")
    assert wait_all([coord, worker], timeout=180) == [0, 0]
    assert "resuming at round" in open(tmp_path / "c2.log").read()
    assert [m["round"] for m in metrics(drive, "w1")] == [0, 1, 2, 3, 4]


def test_worker_restart_resumes_from_its_checkpoint(tiny_llama, tmp_path):
    drive, home = str(tmp_path / "drive"), str(tmp_path / "home")
    env = node_env(drive, tiny_llama, home, MAX_ROUNDS=6, CHECKPOINT_INTERVAL=1, LEARNING_RATE=0.01)
    coord = start_node(env, str(tmp_path / "c.log"), "coordinator", "coord")
    worker = start_node(env, str(tmp_path / "w.log"), "worker", "w1")
    ckpts = os.path.join(exp_dir(drive), "checkpoints", "w1")
    wait_for(lambda: os.path.exists(os.path.join(ckpts, "round_1", "manifest.json")))
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    newest = max(int(d.split("_")[1]) for d in os.listdir(ckpts)
                 if os.path.exists(os.path.join(ckpts, d, "manifest.json")))
    saved = load_file(os.path.join(ckpts, f"round_{newest}", "model.safetensors"))
    # a restarted worker holds exactly the saved parameters ...
    cfg, exp = inproc(drive, home, tiny_llama, "worker", "w1", MAX_ROUNDS=6)
    logs = NodeLogs(exp, "w1", cfg.CACHE_DIR, 60, "INFO")
    probe = Worker(cfg, exp, Waiter(0.1, 5), logs)
    probe.setup()
    logs.close()
    state = dict(probe.trainer.model.state_dict())
    assert probe.last_done == newest
    saved_state = json.load(open(os.path.join(ckpts, f"round_{newest}", "trainer_state.json")))
    assert probe.curriculum.state() == saved_state["curriculum"]    # its levels come back too
    for name, tensor in saved.items():
        assert torch.equal(state[name], tensor), name
    # ... and the restarted process finishes the experiment without redoing a round
    worker = start_node(env, str(tmp_path / "w2.log"), "worker", "w1")
    assert wait_all([coord, worker], timeout=180) == [0, 0]
    rounds = [m["round"] for m in metrics(drive, "w1")]
    assert rounds == sorted(set(rounds)) and rounds[-1] == 5
    assert f"resumed from checkpoint of round {newest}" in open(tmp_path / "w2.log").read()
