"""`python -m rgym_exp.status`: rows that match what the nodes wrote, health from
heartbeat age, the coordinator's deadline across clocks, clear errors, no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from rgym_exp.drive.layout import Layout
from rgym_exp.drive.store import FolderStore
from rgym_exp.records import PeerRecord, RoundState
from rgym_exp.status import render, take_snapshot
from tests.signing import pin, write_as
from tests.swarm_helpers import REPO, metrics, node_env, start_node, wait_all

NODES = (("coordinator", "coord"), ("worker", "w1"), ("worker", "w2"))


@pytest.fixture(scope="module")
def swarm(tmp_path_factory, tiny_llama) -> str:
    """A folder left by a real 3-round swarm: a coordinator and two workers."""
    root = tmp_path_factory.mktemp("status-swarm")
    drive = root / "drive"
    drive.mkdir()
    env = node_env(str(drive), tiny_llama, str(root / "home"))
    procs = [start_node(env, str(root / f"{node}.log"), role, node) for role, node in NODES]
    assert wait_all(procs, 300) == [0, 0, 0], "swarm failed; see " + str(root)
    return str(drive)


def rows(text: str) -> dict[str, list[str]]:
    """Table rows of the rendered status, by node id (columns split on runs of spaces)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("NODE "))
    out = {}
    for line in lines[start + 1:]:
        cols = [c for c in line.split("  ") if c.strip()]
        if len(cols) >= 8:
            out[cols[0].strip()] = [c.strip() for c in cols]
    return out


def cli(*args, env=None, timeout=60):
    env = dict(os.environ, PYTHONPATH=REPO, **(env or {}))
    return subprocess.run([sys.executable, "-m", "rgym_exp.status", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=timeout)


def test_every_node_has_a_row_with_its_role_round_and_last_reward(swarm, tiny_llama):
    text = render(take_snapshot(FolderStore(swarm), "exp"))
    table = rows(text)
    assert set(table) == {"coord", "w1", "w2"}
    assert table["coord"][1:3] == ["coordinator", "-"]
    for node in ("w1", "w2"):
        last = metrics(swarm, node)[-1]
        _, role, model, round_, _age, health, reward, heldout, used, used_by, their, refused, \
            _phase = table[node]
        assert (role, model, health) == ("worker", os.path.basename(tiny_llama), "finished")
        assert int(round_) == last["round"] == 2
        assert reward == f"{last['reward/mean']:.3f}"
        evals = [m["eval/accuracy"] for m in metrics(swarm, node) if "eval/accuracy" in m]
        assert heldout == f"{evals[-1]:.3f}"               # the latest evaluation (round 0)
        assert int(used) == last["external/used"]
        assert (used_by, their) == ("0", "-")   # credit: no group of a random model has signal
        assert refused == "0"                   # nothing under its name was refused
    assert "round 2 of 3: finished" in text


def test_json_snapshot_from_the_command_line_uses_env_vars(swarm):
    done = cli("--json", env={"GDRIVE_PATH": swarm, "EXPERIMENT_NAME": "exp"})
    assert done.returncode == 0, done.stderr
    snap = json.loads(done.stdout)
    assert (snap["round"], snap["max_rounds"], snap["finished"]) == (2, 3, True)
    by_node = {n["node_id"]: n for n in snap["nodes"]}
    assert by_node["w1"]["last_reward"] == metrics(swarm, "w1")[-1]["reward/mean"]
    assert snap["submitted"] == ["w1", "w2"]


def test_status_imports_no_torch_and_starts_fast(swarm):
    code = ("import sys, time; t = time.perf_counter(); from rgym_exp.status import main; "
            f"rc = main(['--gdrive-path', {swarm!r}, '--experiment', 'exp']); "
            "heavy = [m for m in ('torch', 'transformers', 'reasoning_gym') if m in sys.modules]; "
            "assert rc == 0 and not heavy, (rc, heavy); print(time.perf_counter() - t)")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO), timeout=60)
    assert done.returncode == 0, done.stderr
    assert time.perf_counter() - start < 10  # about a second on an idle machine


def test_watch_without_a_terminal_prints_blocks_separated_by_a_blank_line(swarm):
    done = cli("--gdrive-path", swarm, "--experiment", "exp", "--watch", "0.1", "--count", "3")
    assert done.returncode == 0, done.stderr
    blocks = done.stdout.strip("\n").split("\n\n")
    assert len(blocks) == 3 and all(b.startswith("experiment exp in ") for b in blocks)
    assert "\x1b[" not in done.stdout


@pytest.mark.parametrize("args, says", [
    (("--gdrive-path", "{tmp}/missing", "--experiment", "exp"), "does not exist"),
    (("--gdrive-path", "{tmp}", "--experiment", "nope"), "no experiment 'nope'"),
    (("--gdrive-path", "{tmp}", "--experiment", "../up"), "not allowed"),
])
def test_missing_folder_or_experiment_is_one_line_and_exit_2(tmp_path, args, says):
    done = cli(*[a.format(tmp=tmp_path) for a in args])
    assert done.returncode == 2
    assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "missing").exists()  # looking never creates the folder


def write_peer(store, node, status="running", age=0.0, now=1e9, updated_at=0.0):
    path = f"experiments/x/peers/{node}.json"
    write_as(store, node, path, PeerRecord(node_id=node, role="worker", session="s", beat=3,
                                           status=status, round=4, updated_at=updated_at))
    os.utime(os.path.join(store.root, path), (now - age, now - age))


def test_health_from_heartbeat_age_and_ended_status(tmp_path):
    store, now = FolderStore(str(tmp_path)), 1_000_000_000.0
    write_peer(store, "fresh", age=1.5, now=now)
    write_peer(store, "slow", age=30, now=now)
    write_peer(store, "dead", age=500, now=now)
    write_peer(store, "done", status="finished", age=500, now=now)
    write_peer(store, "crashed", status="failed", age=1, now=now)
    snap = take_snapshot(store, "x", heartbeat_interval=1.0, peer_timeout=60, now=now)
    health = {n.node_id: n.health for n in snap.nodes}
    assert health == {"fresh": "alive", "slow": "late", "dead": "gone", "done": "finished",
                      "crashed": "failed"}
    assert {n.node_id: round(n.heartbeat_age) for n in snap.nodes}["slow"] == 30
    text = render(snap)
    assert "no round opened yet" in text and "1 alive, 1 late, 1 gone, 1 finished, 1 failed" in text


def test_deadline_is_read_on_the_coordinators_clock(tmp_path):
    """The coordinator's clock is 1000s behind ours: the deadline still reads right."""
    store, now = FolderStore(str(tmp_path)), 2_000_000_000.0
    path = "experiments/x/state/current_state.json"
    pin(store, Layout("x"), "coord")
    write_as(store, "coord", path, RoundState(round=7, started_at=now - 1000 - 20,
                                              deadline=now - 1000 + 40, max_rounds=10,
                                              updated_at=now - 1000 - 10, waiting_for=["w2"]))
    os.utime(os.path.join(store.root, path), (now - 10, now - 10))
    snap = take_snapshot(store, "x", now=now)
    assert snap.deadline_in == pytest.approx(40)
    assert "round 7 of 10: running, deadline in 40s" in render(snap)
    assert "waiting for: w2" in render(snap)


def copy_to(store, drive: str, names: tuple):
    """Copy folders of the local experiment 'exp' into another store."""
    base = os.path.join(drive, "experiments", "exp")
    for top in names:
        if os.path.isfile(os.path.join(base, top)):
            with open(os.path.join(base, top), "rb") as fh:
                store.write(f"experiments/exp/{top}", fh.read())
        for folder, _, files in os.walk(os.path.join(base, top)):
            for name in files:
                full = os.path.join(folder, name)
                with open(full, "rb") as fh:
                    store.write("experiments/exp/" + os.path.relpath(full, base), fh.read())


def test_status_reads_a_drive_api_folder_the_same_way(swarm, capsys):
    from rgym_exp.drive.backends import open_store
    from rgym_exp.status import main
    from tests.fake_drive import FakeDrive
    with FakeDrive() as fake:
        copy_to(open_store(f"gdrive://{fake.root_id}", endpoint=fake.url), swarm,
                ("experiment.json", "state", "peers", "keys"))
        assert main(["--gdrive-path", f"gdrive://{fake.root_id}", "--endpoint", fake.url,
                     "--experiment", "exp"]) == 0
    table = rows(capsys.readouterr().out)
    local = rows(render(take_snapshot(FolderStore(swarm), "exp")))
    assert set(table) == {"coord", "w1", "w2"}
    for node in table:  # all but the heartbeat age (upload time on the fake server)
        assert table[node][:4] + table[node][5:] == local[node][:4] + local[node][5:]
