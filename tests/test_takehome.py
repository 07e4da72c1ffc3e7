"""What a user takes home, proven on one tiny swarm run through the real launcher.

A coordinator and two workers, two rounds, a temp folder as Drive, a local stand-in for
the Hugging Face Hub (tests/hub_server.py: no network). Both workers export at the end,
report to TensorBoard and push to the Hub; w1's token can write, w2's is read-only. The
workers run tests/signal_node.py (the launcher with a reward a random tiny model earns), so
that they train on each other's groups and there is credit to count.
"""

from __future__ import annotations

import glob
import os
import re
import struct
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from genrl.checkpoint import WEIGHTS
from rgym_exp.drive.store import FolderStore
from rgym_exp.status import take_snapshot
from tests.hub_server import HubStandIn
from tests.swarm_helpers import exp_dir, metrics, node_env, read_json, start_node, wait_all

NODES = (("coordinator", "coord", ""), ("worker", "w1", "hf_write"), ("worker", "w2", "hf_read"))


@pytest.fixture(scope="module")
def run(tiny_llama, tmp_path_factory):
    root = tmp_path_factory.mktemp("takehome")
    hub = HubStandIn()
    drive = str(root / "drive")
    env = node_env(drive, tiny_llama, str(root / "home"), MAX_ROUNDS=2, EVAL_INTERVAL=1,
                   EVAL_QUESTIONS=4, REPORT_TO="tensorboard", EXPORT_AT_END=1,
                   HUB_REPO_ID="user/tiny-{node}", HUB_PUSH_INTERVAL=1,
                   HF_HUB_OFFLINE=0, HF_ENDPOINT=hub.url)
    procs = [start_node(dict(env, HUGGINGFACE_ACCESS_TOKEN=token), str(root / f"{node}.log"),
                        role, node, module="tests.signal_node") for role, node, token in NODES]
    codes = wait_all(procs, timeout=300)
    logs = {node: open(root / f"{node}.log").read() for _, node, _ in NODES}
    assert codes == [0, 0, 0], {n: text[-3000:] for n, text in logs.items()}
    yield SimpleNamespace(drive=drive, root=root, hub=hub, logs=logs, model=tiny_llama,
                          exp=exp_dir(drive))
    hub.close()


def generates(folder: str) -> torch.Tensor:
    """Load a model folder the standard way and generate greedily: the new token ids."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    ids = tokenizer("Calculate 2 + 3.", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    return out[0, ids["input_ids"].shape[1]:]


def weights(path: str) -> dict:
    """A safetensors file's tensors; the tied embedding under one name (save_pretrained and
    safetensors' save_model keep different ones of the two)."""
    tensors = load_file(path)
    head = tensors.pop("lm_head.weight", None)
    tensors.setdefault("model.embed_tokens.weight", head)
    return tensors


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def final_checkpoint(run, node: str) -> dict:
    return weights(os.path.join(run.exp, "checkpoints", node, "round_1", WEIGHTS))


# --- export ---------------------------------------------------------------------------------

def test_each_worker_exports_its_trained_model_at_the_end_as_a_standard_model_folder(run):
    base = weights(os.path.join(run.model, "model.safetensors"))
    for node in ("w1", "w2"):
        folder = os.path.join(run.exp, "exports", node)
        assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                "tokenizer_config.json", "README.md"} <= set(os.listdir(folder))
        assert len(generates(folder)) == 5
        exported = weights(os.path.join(folder, "model.safetensors"))
        assert same(exported, final_checkpoint(run, node))      # the model after round 1
        assert not same(exported, base)                         # trained, not the base model
        card = open(os.path.join(folder, "README.md")).read()
        accuracy = [m["eval/accuracy"] for m in metrics(run.drive, node)][-1]
        assert f"Node `{node}` of the swarm experiment `exp`" in card
        assert "rounds trained: 2 (up to round 1)" in card
        assert f"latest held-out accuracy: {accuracy:.3f}" in card
        assert f"`{run.model}`" in card and "| `SEED` | `42` |" in card
        assert f"exported the model of round 1 to experiments/exp/exports/{node}" in run.logs[node]


def test_python_m_rgym_exp_export_turns_a_checkpoint_into_a_model_that_loads(run, tmp_path,
                                                                             capsys):
    from rgym_exp.export import main
    out = str(tmp_path / "w2")
    assert main(["--gdrive-path", run.drive, "--experiment", "exp", "--node", "w2",
                 "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "exported w2 round 1" in printed and "loaded back with AutoModelForCausalLM" in printed
    assert same(weights(os.path.join(out, "model.safetensors")), final_checkpoint(run, "w2"))
    assert len(generates(out)) == 5
    assert "rounds trained: 2 (up to round 1)" in open(os.path.join(out, "README.md")).read()


def test_export_names_what_exists_when_asked_for_what_does_not(run, tmp_path, capsys):
    from rgym_exp.export import main
    args = ["--gdrive-path", run.drive, "--experiment", "exp", "--out", str(tmp_path / "x")]
    assert main(args) == 2
    assert "pass --node: checkpoints exist for w1, w2" in capsys.readouterr().err
    assert main(args + ["--node", "w1", "--round", "7"]) == 2
    assert "node w1 has no checkpoint of round 7; it has: 1" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x")


# --- Hub push -------------------------------------------------------------------------------

def test_a_token_that_can_write_pushes_every_interval_and_at_the_end(run, tmp_path):
    commits = [c for c in run.hub.commits if c["repo"] == "user/tiny-w1"]
    # round 0 pushed; round 1 fell due under 30 s later, while round 0's upload may still have
    # been running (skipped either way); the final push is round 1
    assert [c["message"] for c in commits] == ["round 0", "round 1"], run.logs["w1"][-3000:]
    assert re.search(r"round 1: Hub push skipped \(the previous one is (under 30s old|still "
                     r"uploading)\)", run.logs["w1"]), [
        line for line in run.logs["w1"].splitlines() if "Hub" in line or "pushed" in line]
    folder = tmp_path / "from-hub"
    folder.mkdir()
    for name, data in run.hub.repos["user/tiny-w1"].items():
        (folder / name).write_bytes(data)
    assert len(generates(str(folder))) == 5
    assert same(weights(str(folder / "model.safetensors")), final_checkpoint(run, "w1"))
    assert all(meta["library_name"] == "transformers" for meta in run.hub.card_metadata)


def test_a_read_only_token_is_one_log_line_and_training_goes_on(run):
    log = run.logs["w2"]
    lines = [line for line in log.splitlines()
             if "HUB_REPO_ID" in line and "settings (not at default)" not in line]
    assert len(lines) == 1, lines
    assert "WARNING" in lines[0] and "not pushing, training goes on" in lines[0]
    assert "cannot write to user/tiny-w2" in lines[0] and "write access" in lines[0]
    assert "Traceback" not in log and "Hub push" not in log
    assert [m["round"] for m in metrics(run.drive, "w2")] == [0, 1]
    assert not [c for c in run.hub.commits if c["repo"] != "user/tiny-w1"]


# --- TensorBoard ----------------------------------------------------------------------------

def scalars(path: str) -> dict:
    """(step, tag) -> value of a TensorBoard event file (TFRecord framing, Event protos)."""
    from tensorboardX.proto.event_pb2 import Event
    data, at, out = open(path, "rb").read(), 0, {}
    while at < len(data):
        (n,) = struct.unpack("<Q", data[at:at + 8])
        event = Event.FromString(data[at + 12:at + 12 + n])
        at += 12 + n + 4
        for v in event.summary.value:
            out[(event.step, v.tag)] = v.simple_value
    return out


def test_report_to_tensorboard_writes_event_files_with_the_metrics_jsonl_names(run):
    for node in ("w1", "w2"):
        files = glob.glob(os.path.join(run.exp, "logs", node, "tensorboard", "events.out.tfevents.*"))
        assert len(files) == 1, files
        got = scalars(files[0])
        expected = {(m["round"], k): v for m in metrics(run.drive, node) for k, v in m.items()
                    if k not in ("round", "time") and type(v) in (int, float)}
        assert {"reward/mean", "eval/accuracy", "external/used", "time/round_s"} <= \
            {tag for _, tag in got}
        assert got.keys() == expected.keys()
        assert all(got[k] == pytest.approx(v, rel=1e-6, abs=1e-6) for k, v in expected.items())


# --- credit ---------------------------------------------------------------------------------

def recount(run) -> dict:
    """From the submission files themselves: origin -> [groups others used, users, rewards]."""
    out = {}
    for path in glob.glob(os.path.join(run.exp, "submissions", "round_*", "*.json")):
        sub = read_json(path)
        for item in sub["external"]:
            entry = out.setdefault(item["node"], [0, set(), []])
            entry[0] += 1
            entry[1].add(sub["node_id"])
            entry[2].append(item["reward_mean"])
    return out


def test_the_report_has_a_credit_table_counted_from_the_submissions(run, tmp_path, capsys):
    from rgym_exp.report import main
    truth = recount(run)
    assert truth and all(n in ("w1", "w2") for n in truth)    # the workers used each other's
    assert main(["--gdrive-path", run.drive, "--experiment", "exp", "--out", str(tmp_path)]) == 0
    report = open(tmp_path / "report.md").read()
    assert "## Credit: whose groups the swarm trained on" in report
    table = report[report.index("| node | its groups others trained on"):].split("\n\n")[0]
    assert table in capsys.readouterr().out
    rows = {r[0]: r for r in ([c.strip() for c in line.strip("|").split("|")]
                              for line in table.splitlines()[2:])}
    assert set(rows) == {"w1", "w2"}
    for node, row in rows.items():
        groups, users, rewards = truth.get(node, [0, set(), []])
        used_from_others = sum(v[0] for origin, v in truth.items() if origin != node)
        assert row[1:5] == [str(groups), str(len(users)),
                            f"{sum(rewards) / len(rewards):.3f}" if rewards else "-",
                            str(used_from_others)]
        own = [m["reward/mean"] for m in metrics(run.drive, node)]
        assert row[5:8] == ["2", f"{sum(own) / 2:.3f}",
                            f"{metrics(run.drive, node)[-1]['eval/accuracy']:.3f}"]


def test_status_shows_each_workers_credit_from_the_peer_records(run):
    snap = take_snapshot(FolderStore(run.drive), "exp")
    truth = recount(run)
    rows = {n.node_id: n for n in snap.nodes}
    assert rows["coord"].used_by_peers is None
    for node in ("w1", "w2"):
        groups, _, rewards = truth.get(node, [0, set(), []])
        assert rows[node].used_by_peers == groups
        assert rows[node].used_reward == (pytest.approx(sum(rewards) / len(rewards))
                                          if rewards else None)
        peer = read_json(os.path.join(run.exp, "peers", f"{node}.json"))
        assert sum(v[0] for v in peer["used_from"].values()) == sum(
            1 for r in (0, 1) for _ in read_json(os.path.join(
                run.exp, "submissions", f"round_{r}", f"{node}.json"))["external"])


# --- the doctor against this experiment -----------------------------------------------------

def test_the_doctor_checks_settings_against_the_experiment(run):
    from rgym_exp.doctor import run_checks
    env = node_env(run.drive, run.model, str(run.root / "home"), MAX_ROUNDS=2, EVAL_INTERVAL=1,
                   EVAL_QUESTIONS=4, NODE_ROLE="worker", NODE_ID="w3")
    checks = {c.name: c for c in run_checks(env)}
    assert checks["experiment"].level == "ok", checks["experiment"].line()
    assert "shared settings match experiment.json" in checks["experiment"].message
    other = {c.name: c for c in run_checks(dict(env, SEED="7"))}["experiment"]
    assert other.level == "error"
    assert "SEED=7 (experiment: 42)" in other.message and "EXPERIMENT_NAME" in other.fix
