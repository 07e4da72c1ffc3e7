"""bench/sapo_experiment.py: the comparison is made from the run folders alone, paired by
seed, with t-intervals; finished runs are never run again."""

import importlib.util
import json
import math
import os

import pytest

from rgym_exp.drive.layout import Layout
from rgym_exp.drive.store import FolderStore
from rgym_exp.records import PeerRecord, RoundState
from tests.signing import pin, write_as
from tests.swarm_helpers import REPO

spec = importlib.util.spec_from_file_location("sapo_experiment",
                                              os.path.join(REPO, "bench", "sapo_experiment.py"))
exp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(exp)


def test_the_interval_is_student_t_and_undefined_for_one_value():
    mean, half = exp.interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-3)
    assert math.isnan(exp.interval([5.0])[1])


def fake_run(out, config, seed, rewards, accuracy):
    """A finished run's folder as a real one leaves it: state, peers, metrics lines."""
    name = exp.run_name(config, seed)
    store = FolderStore(os.path.join(out, name))
    layout = f"experiments/{name}"
    pin(store, Layout(name), "coord")                  # records are signed (rgym_exp/trust.py)
    write_as(store, "coord", f"{layout}/state/current_state.json", RoundState(
        round=len(rewards[0]) - 1, started_at=0, deadline=0, max_rounds=len(rewards[0]),
        finished=True))
    for k, series in enumerate(rewards):
        node = f"seed{seed}-w{k + 1}"          # as `run` names them: the same in every arm
        write_as(store, node, f"{layout}/peers/{node}.json",
                 PeerRecord(node, "worker", "s", 1, "finished"))
        marks = lambda a: "1" * round(a * 100) + "0" * (100 - round(a * 100))
        lines = [{"round": r, "reward/mean": v, **({"eval/accuracy": accuracy[r // 2],
                                                    "eval/correct": marks(accuracy[r // 2])}
                                                   if r % 2 == 0 else {}),
                  "local/groups": 4, "local/with_signal": k + 1,      # 1 of 4 and 2 of 4
                  "external/used": 1, "external/age_mean": 0.5 if k else None,
                  "external/wait_s": 2.0, "time/round_s": 30.0}
                 for r, v in enumerate(series)]
        store.write(f"{layout}/logs/{node}/metrics.jsonl",
                    "".join(json.dumps(x) + "\n" for x in lines).encode())


def test_compare_reads_the_folders_and_pairs_configurations_by_seed(tmp_path, capsys):
    out = str(tmp_path)
    with open(os.path.join(out, "sweep.json"), "w") as fh:
        json.dump({"configs": {"base": {"NUM_TRANSPLANT_TREES": "0"},
                               "sapo": {"NUM_TRANSPLANT_TREES": "2"}},
                   "seeds": [1, 2, 3], "rounds": 5, "workers": 2, "set": {}}, fh)
    for seed in (1, 2, 3):
        fake_run(out, "base", seed, [[0.1] * 5, [0.3] * 5], [0.1, 0.1 + 0.01 * seed, 0.2])
        fake_run(out, "sapo", seed, [[0.2] * 5, [0.4] * 5], [0.1, 0.2, 0.3 + 0.01 * seed])
    assert exp.main(["compare", "--out", out]) == 0
    text = open(os.path.join(out, "comparison.md")).read()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if "NUM_TRANSPLANT_TREES=" in line}
    assert rows["base"][2] == "1.00 ± 0.00"            # (0.1 + 0.3) x 5 rounds / 2 nodes
    assert rows["base"][4] == "0.200 ± 0.000"          # last held-out accuracy
    sapo_last = exp.interval([0.31, 0.32, 0.33])
    assert rows["sapo"][4] == f"{sapo_last[0]:.3f} ± {sapo_last[1]:.3f}"
    diff = [line for line in text.splitlines() if line.startswith("| sapo | 3 |")]
    assert diff and diff[0].split("|")[3].strip() == "0.50 ± 0.00"   # paired difference
    by_question = text.split("Paired by question")[1].splitlines()
    row = next(line for line in by_question if line.startswith("| sapo |"))
    # 2 nodes x 3 seeds; base's last evaluations get 20 of 100 right, sapo's 31-33
    runs, questions, diff = [c.strip() for c in row.split("|")[2:5]]
    low, high = (float(x) for x in diff.split("[")[1].rstrip("]").split(","))
    assert (runs, questions, diff.split()[0]) == ("6", "100", "+0.120") and 0 < low < 0.12 < high
    inside = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
              for line in text.split("Inside the runs")[1].splitlines()[4:] if line.startswith("| ")}
    # signal 1.5 of 4 local groups; 1 external group of J=2 (base: J=0, no fill rate); the
    # age is the mean of the rounds that used a group (node 1 reports none)
    assert inside["sapo"] == ["0.38", "0.50", "0.50", "2.00", "30.00"]
    assert inside["base"][1] == "n/a"
    for name in ("heldout_accuracy.png", "cumulative_reward.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0


def test_a_finished_run_is_not_run_again(tmp_path, monkeypatch):
    out = str(tmp_path)
    fake_run(out, "base", 1, [[0.1] * 3], [0.1, 0.2])
    calls = []
    monkeypatch.setattr(exp.subprocess, "call", lambda *a, **k: calls.append(k["env"]) or 0)
    assert exp.main(["run", "--out", out, "--seeds", "1", "2", "--rounds", "3", "--workers", "1",
                     "--config", "base:NUM_TRANSPLANT_TREES=0", "--set", "MAX_NEW_TOKENS=8"]) == 0
    assert [(e["EXPERIMENT_NAME"], e["SEED"], e["MAX_NEW_TOKENS"], e["NODE_ROLE"], e["NODE_ID"])
            for e in calls] == [("base-s2", "2", "8", "swarm", "seed2")]


def test_the_paired_test_by_question_counts_discordant_answers_and_gives_mcnemar_s_p():
    rng = __import__("numpy").random.default_rng(0)
    base = ["".join("1" if rng.random() < 0.5 else "0" for _ in range(500)) for _ in range(4)]
    better = []
    for marks in base:             # each run: 10 questions lost, 25 gained, the rest the same
        wrong = [k for k, c in enumerate(marks) if c == "0"][:25]
        right = [k for k, c in enumerate(marks) if c == "1"][:10]
        flipped = list(marks)
        for k in wrong:
            flipped[k] = "1"
        for k in right:
            flipped[k] = "0"
        better.append("".join(flipped))
    t = exp.paired_by_question(base, better)
    assert (t["only_a"], t["only_b"], t["runs"], t["questions"]) == (40, 100, 4, 500)
    assert t["diff"] == pytest.approx(60 / 2000)
    assert t["p"] == pytest.approx(math.erfc(math.sqrt((60 - 1) ** 2 / 140 / 2)))
    assert t["low"] > 0 and t["high"] > t["diff"] > t["low"]
    same = exp.paired_by_question(base, base)
    assert same["diff"] == 0 and same["p"] == 1.0
