"""Reliability (issue 4): the swarm survives what Drive, Colab and people do to it.

One test or more per scenario of docs/RELIABILITY.md that tests/test_protocol.py,
tests/test_coordinator.py and tests/test_swarm_e2e.py do not already prove.
Storage faults come from rgym_exp/drive/faults.py (FaultyStore; the FAULTS
setting in real processes). Two short real swarms (module fixtures) carry the
scenarios that need processes; the rest runs in this process.
"""

import ast
import inspect
import logging
import os
import re
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from genrl.data import Question
from genrl.rollouts import NAME_PATTERN, RolloutGroup, encode_rollouts
from genrl.sapo import ExternalSelector
from genrl.scoring import Scorer
from rgym_exp.config import ConfigError, load_config
from rgym_exp.drive.faults import Faults, FaultyStore
from rgym_exp.drive.layout import Layout, check_name
from rgym_exp.drive.store import (FolderStore, RetryingStore, Store, StoreError,
                                  TransientStoreError)
from rgym_exp.exchange import RolloutExchange
from rgym_exp.experiment import Experiment, question_source
from rgym_exp.heartbeat import Heartbeat
from rgym_exp.node_log import NodeLogs
from rgym_exp.records import RecordReader, RoundState, StateTracker, to_json
from rgym_exp.waiting import Stopped, Waiter
from rgym_exp.trust import Trust
from rgym_exp.worker import Worker
from tests.junk import HUGE_BYTES, PATH_LIKE_NAMES, plant_junk
from tests.swarm_helpers import (REPO, check_folder, exp_dir, metrics, node_env, read_json,
                                 start_node, wait_all, wait_for)
from tests.signing import pin, signer, write_as
from tests.test_coordinator import beat, make, submit

CHAOS_NODE = "tests.chaos_node"


# --- FaultyStore: the faults themselves ----------------------------------------------------

class Clock:
    """Wall clock plus an offset a test moves forward."""

    def __init__(self):
        self.offset = 0.0

    def __call__(self):
        return time.time() + self.offset


def two_processes(drive, **faults):
    """Two views of one folder, as two processes would have (each knows its own writes)."""
    inner, clock = FolderStore(drive), Clock()
    return (FaultyStore(inner, Faults(**faults), salt="a", clock=clock),
            FaultyStore(inner, Faults(**faults), salt="b", clock=clock), clock)


def test_faulty_store_offers_every_store_operation(drive):
    for name in ("read", "write", "list", "delete", "move", "makedirs", "upload", "download"):
        assert (list(inspect.signature(getattr(FaultyStore, name)).parameters)
                == list(inspect.signature(getattr(Store, name)).parameters)), name
    assert "injected faults" in FaultyStore(FolderStore(drive)).description


def test_another_process_s_new_file_shows_only_after_the_delay(drive, tmp_path):
    a, b, clock = two_processes(drive, delay=5)
    a.write("r/x.json", b"1")
    assert a.read("r/x.json", 9) == b"1" and [e.name for e in a.list("r")] == ["x.json"]
    assert b.read("r/x.json", 9) is None and b.list("r") == []
    assert b.download("r/x.json", str(tmp_path / "copy"), 9) is False
    clock.offset = 6
    assert b.read("r/x.json", 9) == b"1" and [e.name for e in b.list("r")] == ["x.json"]
    clock.offset = 0
    a.write("r/x.json", b"2")                    # replaced: the old version shows meanwhile
    assert b.read("r/x.json", 9) == b"1" and [e.name for e in b.list("r")] == ["x.json"]
    clock.offset = 6
    assert b.read("r/x.json", 9) == b"2"


def test_a_replaced_file_can_read_stale_for_a_while_and_rounds_still_only_go_forward(drive):
    a, b, clock = two_processes(drive, stale=1.0, stale_for=10)
    a.write("s/x.json", b"old")
    assert b.read("s/x.json", 9) == b"old"
    a.write("s/x.json", b"new")
    assert b.read("s/x.json", 9) == b"old"
    clock.offset = 11
    assert b.read("s/x.json", 9) == b"new"
    a, b, clock = two_processes(drive, stale=0.5, seed=1)
    layout = Layout("exp")
    pin(a, layout, "coord")                    # b's reader knows the coordinator's key
    trust = Trust(b)
    trust.open(layout.experiment_file, a.read(layout.experiment_file, 1 << 20))
    tracker, seen = StateTracker(RecordReader(b, trust), layout.state_file), []
    for r in range(1, 30):
        write_as(a, "coord", layout.state_file, RoundState(round=r, started_at=0, deadline=1,
                                                           max_rounds=99, updated_at=r))
        for _ in range(3):
            seen.append(tracker.refresh().round)
    assert seen == sorted(seen) and seen[-1] == 29 and tracker.stale_reads > 5


def test_transient_errors_strike_every_operation_and_retrying_rides_them_out(drive, tmp_path):
    local = tmp_path / "local.bin"
    local.write_bytes(b"x")
    always = FaultyStore(FolderStore(drive), Faults(io_error=1.0))
    for call in (lambda s: s.read("a.json", 9), lambda s: s.write("a.json", b"1"),
                 lambda s: s.list("a"), lambda s: s.delete("a.json"), lambda s: s.move("a", "b"),
                 lambda s: s.makedirs("a"), lambda s: s.upload(str(local), "a.bin"),
                 lambda s: s.download("a.bin", str(tmp_path / "d"), 9)):
        with pytest.raises(TransientStoreError, match="Input/output error"):
            call(always)
    faulty = FaultyStore(FolderStore(drive), Faults(io_error=0.1, seed=3))
    store = RetryingStore(faulty, sleep=lambda s: None)
    for i in range(300):
        store.write(f"d/{i}.json", b"%d" % i)
        assert store.read(f"d/{i}.json", 9) == b"%d" % i
    assert len(store.list("d")) == 300
    assert 30 <= faulty.injected["io_error"] <= 110 and store.retries == faulty.injected["io_error"]


def test_partial_reads_are_torn_files_that_read_as_not_there_yet(drive):
    a, b, _ = two_processes(drive, partial=1.0)
    path = Layout("exp").state_file
    whole = write_as(a, "coord", path, RoundState(round=3, started_at=0, deadline=1, max_rounds=9))
    torn = b.read(path, 999)
    assert len(torn) < len(whole) and whole.startswith(torn)
    reader = RecordReader(b)                   # torn: no whole JSON, not a refused signature
    assert reader.read(RoundState, path) is None and reader.unreadable == 1
    assert reader.refused == 0


def test_conflict_copies_appear_beside_writes_and_no_listing_shows_them(drive):
    store = FaultyStore(FolderStore(drive), Faults(conflict=1.0))
    store.write("r/w1.json", b"1")
    store.write("r/w1.3.json", b"1")
    assert sorted(os.listdir(os.path.join(drive, "r"))) == ["w1 (1).json", "w1.3 (1).json",
                                                           "w1.3.json", "w1.json"]
    assert [e.name for e in store.list("r")] == ["w1.3.json", "w1.json"]


def test_slow_listings_take_their_time(drive):
    slept = []
    store = FaultyStore(FolderStore(drive), Faults(slow_list=0.5), sleep=slept.append)
    store.list("r"), store.list("r")
    assert slept == [0.5, 0.5]


def test_a_full_or_read_only_folder_gives_a_clear_error_and_keeps_what_was_written(drive, tmp_path):
    store = RetryingStore(FaultyStore(FolderStore(drive), Faults(full_after=1)),
                          sleep=lambda s: None)
    store.write("r/keep.json", b"1")
    with pytest.raises(StoreError, match=r"the shared folder is full \(no space left\): cannot "
                                         r"write r/keep.json") as err:
        store.write("r/keep.json", b"2")
    assert not isinstance(err.value, TransientStoreError)    # not retried: retrying cannot help
    ro = FaultyStore(FolderStore(drive), Faults(readonly_after=0))
    local = tmp_path / "x"
    local.write_bytes(b"x")
    for call in (lambda: ro.write("r/keep.json", b"3"), lambda: ro.upload(str(local), "r/x"),
                 lambda: ro.delete("r/keep.json"), lambda: ro.move("r", "s"),
                 lambda: ro.makedirs("q")):
        with pytest.raises(StoreError, match="the shared folder is read-only"):
            call()
    assert ro.read("r/keep.json", 9) == b"1"
    assert os.listdir(os.path.join(drive, "r")) == ["keep.json"]


@pytest.mark.parametrize("value, message", [
    ("io_eror=0.1", "unknown fault 'io_eror'"), ("io_error=2", "must be between 0 and 1"),
    ("io_error", "needs a value"), ("delay=soon", "is not a number"),
    ("seed=1.5", "is not an integer")])
def test_the_faults_setting_names_what_is_wrong(tmp_path, value, message):
    env = {"XDG_CONFIG_HOME": str(tmp_path), "GDRIVE_PATH": str(tmp_path / "d"), "FAULTS": value}
    with pytest.raises(ConfigError, match=f"FAULTS={re.escape(repr(value))} is not valid: .*"
                                          f"{re.escape(message)}"):
        load_config(env)


def test_faults_sit_between_the_retrying_store_and_the_folder(tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path), "GDRIVE_PATH": str(tmp_path / "d"), "NODE_ID": "w1"}
    exp = Experiment.open(load_config(dict(env, FAULTS="io_error=0.1,delay=2,seed=4"))[0])
    assert isinstance(exp.store, RetryingStore) and isinstance(exp.store.inner, FaultyStore)
    assert isinstance(exp.store.inner.inner, FolderStore)
    assert exp.store.inner.faults == Faults(io_error=0.1, delay=2, seed=4)
    plain = Experiment.open(load_config(env)[0])
    assert isinstance(plain.store.inner, FolderStore)


# --- 1,000 junk files in a rollout folder ----------------------------------------------------

class Spy:
    """Wraps a store; remembers every path read and every change attempted."""

    def __init__(self, inner):
        self.inner, self.description, self.reads, self.changes = inner, inner.description, [], []

    def read(self, path, max_bytes):
        self.reads.append(path)
        return self.inner.read(path, max_bytes)

    def download(self, path, local_path, max_bytes):
        self.reads.append(path)
        return self.inner.download(path, local_path, max_bytes)

    def list(self, folder):
        return self.inner.list(folder)

    def __getattr__(self, name):  # write, upload, delete, move, makedirs
        def change(*args):
            self.changes.append((name, args))
            return getattr(self.inner, name)(*args)
        return change


@pytest.fixture(scope="module")
def junk_round(tmp_path_factory):
    """Round 0 holds 1,000 junk entries and one valid file each from w2 and w3."""
    drive = str(tmp_path_factory.mktemp("junk") / "drive")
    layout = Layout("exp")
    folder = os.path.join(drive, layout.rollouts_dir(0))
    kinds = plant_junk(folder, 1000)
    for node in ("w2", "w3"):
        wrong = "5" if node == "w2" else "6"         # two groups, not one group twice
        group = RolloutGroup(node, 0, "m", "What is 2+2?", {}, ["<answer>4</answer>", wrong], [1, 0])
        signer(FolderStore(drive), node).register(layout.root)      # members: keys registered
        write_as(FolderStore(drive), node, layout.rollout(0, node), encode_rollouts([group], node, 0))
    return drive, layout, folder, kinds


class TwoPlusTwo:
    """The junk round's real peers ask one question."""

    def regenerate(self, source):
        return Question("What is 2+2?", source, "4", verify=lambda a: float(a == "4"))


def gather(drive, layout, want, seed=0):
    spy = Spy(FolderStore(drive))
    exchange = RolloutExchange(SimpleNamespace(store=spy, layout=layout, trust=Trust(spy)), "w1")
    selector = ExternalSelector(TwoPlusTwo(), Scorer(), "w1")
    return exchange.gather(0, want, selector, np.random.default_rng(seed)), spy


def test_a_thousand_junk_files_cost_a_gather_at_most_2j_reads(junk_round):
    drive, layout, folder, kinds = junk_round
    assert sum(kinds.values()) >= 1000 and len(os.listdir(folder)) >= 1000
    assert os.path.getsize(os.path.join(folder, "huge-peer.json")) == HUGE_BYTES
    for seed in range(10):
        got, spy = gather(drive, layout, want=4, seed=seed)
        assert len(spy.reads) <= 2 * 4 and got.files_read == len(spy.reads)
        assert got.files_listed >= 850 and sum(got.rejected.values()) > 0
        assert {g.origin for g in got.groups} <= {"w2", "w3"} and spy.changes == []


def test_every_junk_file_is_rejected_with_a_reason_and_never_opened_by_a_path_like_name(junk_round):
    drive, layout, folder, kinds = junk_round
    t0 = time.monotonic()
    got, spy = gather(drive, layout, want=5000)           # reads every file it may
    assert time.monotonic() - t0 < 60
    assert sorted(g.origin for g in got.groups) == ["w2", "w3"]       # only the real peers
    allowed = re.compile(rf"experiments/exp/rollouts/round_0/{NAME_PATTERN}(\.[0-9]{{1,4}})?(\.s[0-9]{{1,3}})?\.json")
    listed = set(os.listdir(folder))
    assert len(spy.reads) > 800 and spy.changes == []
    keys = re.compile(rf"experiments/exp/keys/{NAME_PATTERN}\.[0-9a-f]{{16}}\.json")
    for path in spy.reads:                     # a signer's key is looked up once (trust.py)
        assert keys.fullmatch(path) or (allowed.fullmatch(path) and
                                        path.rsplit("/", 1)[1] in listed), path
    assert layout.rollout(0, "huge-peer") not in spy.reads           # 100 MB: skipped unread
    assert got.rejected["file over the size cap"] == 1
    assert got.rejected["not a rollout file name"] >= len(PATH_LIKE_NAMES) - 2
    assert layout.rollout(0, "pipe-peer") not in spy.reads      # a named pipe: skipped in the
    assert got.rejected["unreadable"] == 0                      # listing, never opened
    reasons = " | ".join(got.rejected)
    # junk that is whole JSON is refused at its seal, before its content is looked at (the
    # content checks for a signed peer's file: tests/test_rollouts.py, test_hostile_rollouts.py)
    for why in ("not valid JSON", "refused: unsigned", "not a rollout file", "over the size cap"):
        assert why in reasons, why
    assert got.rejected["refused: unsigned"] > 300


# --- nothing from the folder is executed; every read is capped --------------------------------

def sources():
    for top in ("rgym_exp", "genrl"):
        for folder, _, files in os.walk(os.path.join(REPO, top)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    yield os.path.relpath(path, REPO), ast.parse(open(path).read())


def calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_nothing_read_from_the_folder_is_unpickled_or_executed():
    banned = {"eval", "exec", "pickle.load", "pickle.loads", "marshal.load", "marshal.loads",
              "shelve.open", "dill.load", "dill.loads", "joblib.load", "yaml.load",
              "yaml.unsafe_load", "cloudpickle.load", "cloudpickle.loads"}
    found = []
    for path, tree in sources():
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                found += [f"{path}: imports {n}" for n in names
                          if n.split(".")[0] in ("pickle", "marshal", "shelve", "dill",
                                                 "cloudpickle")]
        for node, func in calls(tree):
            keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
            if func in banned:
                found.append(f"{path}:{node.lineno}: {func}")
            if func.endswith("torch.load") and keywords.get("weights_only") != "True":
                found.append(f"{path}:{node.lineno}: torch.load without weights_only=True")
            if func.endswith(("np.load", "numpy.load")) and keywords.get("allow_pickle") == "True":
                found.append(f"{path}:{node.lineno}: np.load with allow_pickle")
    assert found == []
    from genrl.checkpoint import FILES
    assert all(f.endswith((".safetensors", ".json")) for f in FILES)


def test_every_read_from_the_store_passes_a_size_cap():
    checked = 0
    for path, tree in sources():
        for node, func in calls(tree):
            receiver, _, method = func.rpartition(".")
            if method in ("read", "download") and receiver.endswith(("store", "inner")):
                need = 2 if method == "read" else 3
                assert len(node.args) + len(node.keywords) >= need, f"{path}:{node.lineno}: {func}"
                checked += 1
    assert checked >= 8


# --- names that are paths ---------------------------------------------------------------------

@pytest.mark.parametrize("name, value", [
    ("NODE_ID", "../evil"), ("NODE_ID", "a/b"), ("NODE_ID", "a\\b"), ("NODE_ID", ".."),
    ("NODE_ID", "x/../../y"), ("NODE_ID", "w1\x00"), ("EXPERIMENT_NAME", "../x"),
    ("EXPERIMENT_NAME", "/abs"), ("EXPERIMENT_NAME", "."), ("EXPERIMENT_NAME", "a/b")])
def test_path_like_names_are_refused_with_a_clear_error(tmp_path, name, value):
    env = {"XDG_CONFIG_HOME": str(tmp_path), "GDRIVE_PATH": str(tmp_path / "d"), name: value}
    with pytest.raises(ConfigError, match=rf"{name}={re.escape(repr(value))} is not allowed"):
        load_config(env)


def test_an_empty_name_never_becomes_a_path(tmp_path):
    for kind in ("NODE_ID", "EXPERIMENT_NAME"):
        with pytest.raises(ValueError, match=f"{kind}='' is not allowed"):
            check_name(kind, "")
    with pytest.raises(ValueError):
        Layout("")
    with pytest.raises(ValueError):
        Layout("exp").peer("")
    # unset (or empty) means "use the documented default", never an empty name
    cfg, _ = load_config({"XDG_CONFIG_HOME": str(tmp_path), "GDRIVE_PATH": str(tmp_path / "d"),
                          "NODE_ID": "", "EXPERIMENT_NAME": " "})
    assert check_name("NODE_ID", cfg.NODE_ID) and cfg.EXPERIMENT_NAME == "rl-swarm"


@pytest.mark.parametrize("name, value", [("NODE_ID", "../evil"), ("EXPERIMENT_NAME", "a/b")])
def test_the_launcher_exits_2_on_a_path_like_name_and_writes_nothing(tmp_path, name, value):
    drive = tmp_path / "drive"
    env = node_env(str(drive), "unused", str(tmp_path / "home"), NODE_ROLE="worker", NODE_ID="w1")
    env[name] = value
    out = subprocess.run([sys.executable, "-m", "rgym_exp.runner.swarm_launcher"], env=env,
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 2 and f"{name}={value!r} is not allowed" in out.stderr
    assert not drive.exists()


# --- the coordinator: missing workers, clocks, a folder that refuses writes ----------------------

def test_a_worker_that_never_comes_back_is_named_and_the_swarm_moves_on(drive, tmp_path, caplog):
    coord, exp, clock = make(drive, tmp_path)          # PEER_TIMEOUT 50, ROUND_TIMEOUT 100
    state = coord.resume_or_start()
    beat(exp, "w1", 1), beat(exp, "w3", 1)
    state = coord.tick(state)
    with caplog.at_level(logging.INFO):
        for k in range(6):                            # w1 keeps beating; w3 was killed
            clock.now += 10
            beat(exp, "w1", 2 + k)
            coord._peers_read_at = -1e18
            state = coord.tick(state)
        submit(exp, 0, "w1")
        state = coord.tick(state)
    assert "worker w3 is gone: no heartbeat for 60s" in caplog.text
    assert state.round == 1 and coord.live_workers() == {"w1"}


@pytest.mark.parametrize("offset", [600, -600])
def test_a_coordinator_restarted_with_a_clock_10_minutes_off_keeps_the_round_s_time(
        drive, tmp_path, offset):
    coord, exp, clock = make(drive, tmp_path)          # ROUND_TIMEOUT 100
    state = coord.resume_or_start()
    beat(exp, "w1", 1), beat(exp, "w2", 1)
    submit(exp, 0, "w1")
    clock.now += 30
    assert coord.tick(state).waiting_for == ["w2"]
    again, _, other = make(drive, tmp_path)            # another machine, clock 10 minutes off
    other.now = clock.now + offset
    state = again.resume_or_start()
    assert state.round == 0 and state.deadline - other.now == pytest.approx(70)
    state = again.tick(state)
    assert state.round == 0 and state.waiting_for == ["w2"]     # neither ended early ...
    other.now += 71
    assert again.tick(state).round == 1                          # ... nor stretched


def test_a_read_only_folder_stops_a_node_at_once_with_a_clear_error(tmp_path):
    env = node_env(str(tmp_path / "drive"), "unused", str(tmp_path / "home"),
                   FAULTS="readonly_after=0")
    proc = start_node(env, str(tmp_path / "c.log"), "coordinator", "coord")
    assert proc.wait(timeout=60) == 1
    text = open(tmp_path / "c.log").read()
    assert ("shared folder error: the shared folder is read-only: cannot create "  # its claim
            "experiments/exp/.claims/coord.0 (Read-only file system)") in text


# --- a worker in this process: checkpoints, a full disk, a takeover ----------------------------

def start_experiment(drive, home, model):
    env = node_env(drive, model, home, NODE_ROLE="coordinator", NODE_ID="coord")
    cfg, _ = load_config(env)
    Experiment.open(cfg).create_or_check(question_source(cfg))


def worker_here(drive, home, model, node="w1", wrap=None, **settings):
    cfg, _ = load_config(node_env(drive, model, home, NODE_ROLE="worker", NODE_ID=node, **settings))
    exp = Experiment.open(cfg)
    if wrap is not None:
        exp.use_store(wrap(exp.store))
    logs = NodeLogs(exp, node, cfg.CACHE_DIR, 60, "INFO")
    worker = Worker(cfg, exp, Waiter(0.1, 5), logs)
    worker.heartbeat.claim()
    worker.setup()
    return worker, logs


def do_round(worker, r):
    for folder in (worker.exp.layout.rollouts_dir(r), worker.exp.layout.submissions_dir(r)):
        worker.exp.store.makedirs(folder)     # as the coordinator does when it opens round r
    worker.run_round(r)
    worker.last_done = r
    worker.save_checkpoint()


@pytest.mark.parametrize("damage, reason", [
    ("model.safetensors", "model.safetensors does not match its manifest (truncated or corrupt)"),
    ("manifest.json", "not valid JSON")])
def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_good_one(
        tiny_llama, tmp_path, caplog, damage, reason):
    drive, home = str(tmp_path / "drive"), str(tmp_path / "home")
    start_experiment(drive, home, tiny_llama)
    worker, logs = worker_here(drive, home, tiny_llama, LEARNING_RATE=0.01)
    do_round(worker, 0)
    do_round(worker, 1)
    worker.heartbeat.close("stopped")
    logs.close()
    ckpts = os.path.join(exp_dir(drive), "checkpoints", "w1")
    good = load_file(os.path.join(ckpts, "round_0", "model.safetensors"))
    path = os.path.join(ckpts, "round_1", damage)
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 2)
    with caplog.at_level(logging.INFO):
        again, logs = worker_here(drive, home, tiny_llama)
    logs.close()
    assert f"checkpoint of round 1 is unusable ({reason}" in caplog.text
    assert "falling back to an older one" in caplog.text
    assert "resumed from checkpoint of round 0" in caplog.text and again.last_done == 0
    state = again.trainer.model.state_dict()
    assert all(torch.equal(state[name], tensor) for name, tensor in good.items())


def test_a_full_disk_stops_a_worker_with_a_clear_error_and_keeps_what_it_wrote(tiny_llama,
                                                                               tmp_path):
    drive, home = str(tmp_path / "drive"), str(tmp_path / "home")
    start_experiment(drive, home, tiny_llama)
    faulty = []

    def wrap(store):
        faulty.append(FaultyStore(store.inner))
        return RetryingStore(faulty[0], sleep=lambda s: None)
    worker, logs = worker_here(drive, home, tiny_llama, wrap=wrap)
    do_round(worker, 0)
    before = {p: open(p, "rb").read() for p in (
        os.path.join(exp_dir(drive), "submissions", "round_0", "w1.json"),
        os.path.join(exp_dir(drive), "rollouts", "round_0", "w1.s0.json"),
        os.path.join(exp_dir(drive), "checkpoints", "w1", "round_0", "manifest.json"))}
    faulty[0].faults = Faults(full_after=0)                  # the Drive quota is used up
    with pytest.raises(StoreError, match=r"the shared folder is full \(no space left\): cannot "
                                         r"write experiments/exp/rollouts/round_1/w1.s0.json"):
        worker.run_round(1)
    with pytest.raises(StoreError, match="the shared folder is full"):
        worker.save_checkpoint()
    worker.heartbeat.close("failed")
    logs.close()
    assert {p: open(p, "rb").read() for p in before} == before
    assert check_folder(drive) == []


def test_a_process_whose_node_id_was_taken_over_writes_nothing_more(drive, tmp_path):
    cfg, _ = load_config({"XDG_CONFIG_HOME": str(tmp_path), "GDRIVE_PATH": drive, "NODE_ID": "w1"})
    old_exp, new_exp = Experiment.open(cfg), Experiment.open(cfg)
    old_exp.use_store(spy := Spy(old_exp.store))
    old = Heartbeat(old_exp, "w1", "worker", 0.2, Waiter(0.05, 5))
    old.claim()
    logs = NodeLogs(old_exp, "w1", str(tmp_path / "cache"), 60, "INFO")
    logs.start(old)
    logs.event("started")
    logs.flush()
    assert ("upload", (logs.path("events.jsonl"), "experiments/rl-swarm/logs/w1/events.jsonl")) \
        in spy.changes
    # the old process freezes (no beats); a new one watches the record, then takes over
    new = Heartbeat(new_exp, "w1", "worker", 0.2, Waiter(0.05, 5))
    new.claim()
    spy.changes.clear()
    with pytest.raises(Stopped, match="took over NODE_ID w1"):     # the old one wakes up
        old.ensure_owner()
    logs.event("more")
    logs.close()
    old.beat()
    old.close("stopped")
    assert spy.changes == []
    record = read_json(os.path.join(drive, new_exp.layout.peer("w1")))
    assert record["session"] == new.record.session


# --- real swarms ------------------------------------------------------------------------------

def state_round(drive):
    try:
        return read_json(os.path.join(exp_dir(drive), "state", "current_state.json"))["round"]
    except (OSError, ValueError):
        return -1


def peer(drive, node):
    try:
        return read_json(os.path.join(exp_dir(drive), "peers", f"{node}.json"))
    except (OSError, ValueError):
        return {}


@pytest.fixture(scope="module")
def faulty_swarm(tiny_llama, tmp_path_factory):
    """Coordinator + 2 workers, 3 rounds, 10% transient I/O errors on every node; w2's
    clock is 10 minutes ahead; a second process with w1's NODE_ID tries to join while
    w1 is held in round 0 (so w1 is certainly running when the twin looks)."""
    root, t0 = tmp_path_factory.mktemp("faulty"), time.time()
    drive, hold = str(root / "drive"), root / "hold-w1"
    hold.touch()
    # a round may not time out while w1 is held (however slowly the twin starts on a busy
    # machine): the clock test below proves that w2 is never judged late
    env = node_env(drive, tiny_llama, str(root / "home"), FAULTS="io_error=0.1,seed=7",
                   ROUND_TIMEOUT=600)
    procs = [start_node(env, str(root / "coord.log"), "coordinator", "coord"),
             start_node(dict(env, CHAOS_HOLD_FILE=str(hold)), str(root / "w1.log"), "worker", "w1",
                        module=CHAOS_NODE),
             start_node(dict(env, CHAOS_CLOCK_OFFSET="600"), str(root / "w2.log"), "worker", "w2",
                        module=CHAOS_NODE)]
    try:
        wait_for(lambda: peer(drive, "w1").get("phase") in ("evaluating", "generating"),
                 what="w1 held in round 0")   # both call generate, where the hold is
        # another process with w1's key (on another machine, another key is refused for
        # that alone: tests/test_trust.py)
        twin_env = node_env(drive, tiny_llama, str(root / "home2"), FAULTS="io_error=0.1,seed=8",
                            KEY_DIR=str(root / "home" / ".config" / "rl-swarm" / "keys"))
        twin = start_node(twin_env, str(root / "twin.log"), "worker", "w1")
        twin_code = twin.wait(timeout=120)
        w1_round = peer(drive, "w1").get("round")
        hold.unlink()
        codes = wait_all(procs, timeout=240)
    finally:
        for p in procs:
            p.kill()
    return SimpleNamespace(drive=drive, root=root, codes=codes, twin_code=twin_code,
                           w1_pid=procs[1].pid, started=t0, w1_round=w1_round)


def log_text(run, node):
    return open(run.root / f"{node}.log").read()


def test_10_percent_transient_io_errors_for_a_whole_run_the_swarm_finishes(faulty_swarm):
    run = faulty_swarm
    assert run.codes == [0, 0, 0], [log_text(run, n)[-2000:] for n in ("coord", "w1", "w2")]
    state = read_json(os.path.join(exp_dir(run.drive), "state", "current_state.json"))
    assert state["finished"] and state["round"] == 2
    for node in ("w1", "w2"):
        assert [m["round"] for m in metrics(run.drive, node)] == [0, 1, 2]
        assert "Input/output error (injected)" in log_text(run, node)   # faults did happen
    assert check_folder(run.drive) == []


def test_a_node_whose_clock_is_10_minutes_ahead_takes_part_in_every_round(faulty_swarm):
    run = faulty_swarm
    lines = metrics(run.drive, "w2")
    assert [m["round"] for m in lines] == [0, 1, 2]
    assert all(m["time"] > run.started + 400 for m in lines)        # its clock really was off
    coord = log_text(run, "coord")
    assert "timed out" not in coord and "w2 is gone" not in coord
    assert all(m["external/files_listed"] > 0 for m in metrics(run.drive, "w1")[1:])


def test_a_second_process_with_the_same_node_id_exits_2_and_writes_nothing(faulty_swarm):
    run = faulty_swarm
    assert run.w1_round == 0                  # w1 was still held when the twin decided
    assert run.twin_code == 2, log_text(run, "twin")[-2000:]
    assert "NODE_ID w1 is already in use by a running process" in log_text(run, "twin")
    shared = os.path.join(exp_dir(run.drive), "logs", "w1")
    for name in os.listdir(shared):
        text = open(os.path.join(shared, name)).read()
        assert "already in use" not in text and "has a running record" not in text, name
    assert read_json(os.path.join(exp_dir(run.drive), "peers", "w1.json"))["pid"] == run.w1_pid


@pytest.fixture(scope="module")
def uneven_swarm(tiny_llama, tmp_path_factory):
    """Coordinator + 4 workers, 12 rounds, ROUND_TIMEOUT 2.5 s, each generation or training
    call lasting at least 0.4 s: w1 normal; w2 5x slower (a straggler); w3 SIGKILLed at a
    random point of round 1, never restarted; w4 started once the coordinator is at round
    3 (a late joiner). w1 and w2 are held at their next generation from round 3 until w4
    is in a round, so w4 joins a running swarm however slowly it loads."""
    root = tmp_path_factory.mktemp("uneven")
    drive, hold = str(root / "drive"), root / "hold"
    env = node_env(drive, tiny_llama, str(root / "home"), MAX_ROUNDS=12, ROUND_TIMEOUT=2.5,
                   PEER_TIMEOUT=8, CHAOS_MIN_CALL=0.4)

    def worker(node, **knobs):
        return start_node(dict(env, **knobs), str(root / f"{node}.log"), "worker", node,
                          module=CHAOS_NODE)
    procs = {"coord": start_node(env, str(root / "coord.log"), "coordinator", "coord"),
             "w1": worker("w1", CHAOS_HOLD_FILE=str(hold)),
             "w2": worker("w2", CHAOS_SLOW_FACTOR="5", CHAOS_HOLD_FILE=str(hold)),
             "w3": worker("w3")}
    try:
        wait_for(lambda: peer(drive, "w3").get("round", -1) >= 1, what="w3 in round 1")
        time.sleep(np.random.default_rng().uniform(0, 0.8))
        procs["w3"].send_signal(signal.SIGKILL)
        procs["w3"].wait()
        joined_at = wait_for(lambda: state_round(drive) >= 3 and state_round(drive),
                             what="round 3")
        hold.touch()
        procs["w4"] = worker("w4")
        wait_for(lambda: peer(drive, "w4").get("round", -1) >= 3, what="w4 in a round")
        hold.unlink()
        names = ["coord", "w1", "w2", "w4"]
        codes = dict(zip(names, wait_all([procs[n] for n in names], timeout=240)))
    finally:
        for p in procs.values():
            p.kill()
    return SimpleNamespace(drive=drive, root=root, codes=codes, joined_at=joined_at)


def test_a_straggler_5x_slower_is_named_late_and_catches_up_by_joining_the_current_round(
        uneven_swarm):
    run = uneven_swarm
    assert run.codes["coord"] == 0 and run.codes["w2"] == 0, log_text(run, "w2")[-2000:]
    assert re.search(r"round \d+ timed out after \d+s with \d+ submission\(s\); late: [^\n]*w2",
                     log_text(run, "coord"))
    slow, fast = metrics(run.drive, "w2"), metrics(run.drive, "w1")
    rounds = [m["round"] for m in slow]
    assert rounds == sorted(set(rounds)) and len(rounds) >= 2
    assert rounds[-1] - rounds[0] + 1 > len(rounds)            # it skipped rounds to catch up
    took = {name: np.median([m["time/round_s"] for m in lines])   # median: one round was held
            for name, lines in (("slow", slow), ("fast", fast))}
    assert took["slow"] > 3 * took["fast"]


def test_a_worker_killed_for_good_is_named_and_the_swarm_finishes_without_it(uneven_swarm):
    run = uneven_swarm
    assert run.codes["coord"] == 0 and run.codes["w1"] == 0
    assert re.search(r"worker w3 is gone: no heartbeat for \d+s \(last seen at round [1-9]",
                     log_text(run, "coord"))
    state = read_json(os.path.join(exp_dir(run.drive), "state", "current_state.json"))
    assert state["finished"] and state["round"] == 11
    rounds = [m["round"] for m in metrics(run.drive, "w1")]
    assert rounds == sorted(set(rounds)) and rounds[-1] == 11
    assert check_folder(run.drive) == []                       # the kill left nothing torn


def test_a_late_joiner_starts_at_the_round_the_swarm_is_in(uneven_swarm):
    run = uneven_swarm
    assert run.codes["w4"] == 0, log_text(run, "w4")[-2000:]
    rounds = [m["round"] for m in metrics(run.drive, "w4")]
    assert rounds and rounds[0] >= run.joined_at >= 3 and rounds == sorted(set(rounds))
    assert "waiting for round 0" not in log_text(run, "w4")
