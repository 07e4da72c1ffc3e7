"""`python -m rgym_exp.report`: the series it extracts and draws equal what the
workers logged, submissions stand in for a missing metrics file, and --compare
tables experiments against the first (the baseline)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rgym_exp.drive.store import FolderStore
from rgym_exp.plots import plot_compare, plot_cumulative, plot_rewards
from rgym_exp.report import markdown_table
from rgym_exp.series import area_under, compare_rows, load_series, moving_average, summarize
from tests.swarm_helpers import REPO, exp_dir, metrics, node_env, start_node, wait_all

WORKERS = ("w1", "w2")


@pytest.fixture(scope="module")
def drive(tmp_path_factory, tiny_llama) -> str:
    """One folder, two real 3-round experiments: 'grpo' (J=0) and 'sapo' (J=2)."""
    root = tmp_path_factory.mktemp("report-swarm")
    folder = root / "drive"
    folder.mkdir()
    for name, j in (("grpo", 0), ("sapo", 2)):
        env = node_env(str(folder), tiny_llama, str(root / "home"), EXPERIMENT_NAME=name,
                       NUM_TRANSPLANT_TREES=j)
        procs = [start_node(env, str(root / f"{name}-{node}.log"), role, node) for role, node in
                 (("coordinator", "coord"), ("worker", "w1"), ("worker", "w2"))]
        assert wait_all(procs, 300) == [0, 0, 0], f"{name} failed; see {root}"
    return str(folder)


def rewards(drive: str, node: str, name: str) -> list[float]:
    return [m["reward/mean"] for m in metrics(drive, node, name)]


def test_series_are_the_workers_metrics(drive):
    series = load_series(FolderStore(drive), "sapo")
    assert list(series) == list(WORKERS)  # the coordinator logs no rounds
    for node in WORKERS:
        lines = metrics(drive, node, "sapo")
        assert series[node].source == "metrics"
        assert series[node].rounds == [m["round"] for m in lines] == [0, 1, 2]
        assert series[node].rewards == [m["reward/mean"] for m in lines]
        assert series[node].external_used == [m["external/used"] for m in lines]


def test_submissions_stand_in_for_a_missing_metrics_file(drive):
    # (a copy under another name would not do: signatures cover each file's path)
    logs = os.path.join(exp_dir(drive, "sapo"), "logs")
    w1, w2 = rewards(drive, "w1", "sapo"), rewards(drive, "w2", "sapo")
    os.rename(os.path.join(logs, "w2", "metrics.jsonl"), os.path.join(logs, "w2", "m.away"))
    try:
        series = load_series(FolderStore(drive), "sapo")
        assert (series["w1"].source, series["w2"].source) == ("metrics", "submissions")
        assert series["w2"].rewards == w2
        os.rename(logs, logs + ".away")
        assert load_series(FolderStore(drive), "sapo")["w1"].rewards == w1
    finally:
        if os.path.exists(logs + ".away"):
            os.rename(logs + ".away", logs)
        os.rename(os.path.join(logs, "w2", "m.away"), os.path.join(logs, "w2", "metrics.jsonl"))


def test_reward_plot_draws_each_node_the_swarm_mean_and_its_moving_average(drive, tmp_path):
    series = load_series(FolderStore(drive), "sapo")
    drawn = {label: (xs, ys) for label, xs, ys in plot_rewards(series, str(tmp_path / "r.png"), 2)}
    for node in WORKERS:
        assert drawn[node] == ([0, 1, 2], rewards(drive, node, "sapo"))
    mean = [(a + b) / 2 for a, b in zip(rewards(drive, "w1", "sapo"), rewards(drive, "w2", "sapo"))]
    assert drawn["swarm mean"][1] == pytest.approx(mean)
    assert drawn["swarm mean, moving average (2)"][1] == pytest.approx(
        [mean[0], (mean[0] + mean[1]) / 2, (mean[1] + mean[2]) / 2])
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_cumulative_plot_ends_at_each_nodes_total(drive, tmp_path):
    series = load_series(FolderStore(drive), "sapo")
    drawn = {label: ys for label, _, ys in plot_cumulative(series, str(tmp_path / "c.png"))}
    for node in WORKERS:
        assert len(drawn[node]) == 3
        assert drawn[node][-1] == pytest.approx(sum(rewards(drive, node, "sapo")))
    assert drawn["swarm mean"][-1] == pytest.approx(
        sum(sum(rewards(drive, n, "sapo")) for n in WORKERS) / 2)


def report_cli(*args):
    code = ("import sys; from rgym_exp.report import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules; sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), timeout=120)


def test_command_writes_plots_and_table_into_the_experiment_without_torch(drive):
    done = report_cli("--gdrive-path", drive, "--experiment", "sapo")
    assert done.returncode == 0, done.stderr
    out = os.path.join(exp_dir(drive, "sapo"), "report")
    for name in ("reward_per_round.png", "cumulative_reward.png", "report.md"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    assert "| sapo | 2 | 3 |" in done.stdout


def test_compare_tables_each_experiment_against_the_first(drive, tmp_path):
    done = report_cli("--gdrive-path", drive, "--compare", "grpo", "sapo", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    per_node = {name: sum(sum(rewards(drive, n, name)) for n in WORKERS) / 2
                for name in ("grpo", "sapo")}
    table = (tmp_path / "report.md").read_text()
    lines = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
             for line in table.splitlines() if line.startswith("| grpo") or line.startswith("| sapo")}
    # a random tiny model may earn nothing at all: then no ratio can be formed
    assert lines["grpo"][:2] == ["2", "3"]
    assert lines["grpo"][4] == ("1.00" if per_node["grpo"] else "n/a")
    assert lines["sapo"][3] == f"{per_node['sapo']:.4f}"
    ratio = per_node["sapo"] / per_node["grpo"] if per_node["grpo"] else None
    assert lines["sapo"][4] == ("n/a" if ratio is None else f"{ratio:.2f}")
    for name in ("grpo", "sapo"):   # evaluated once, before the first update (EVAL_INTERVAL=5)
        first = sum(m["eval/accuracy"] for n in WORKERS for m in metrics(drive, n, name)
                    if "eval/accuracy" in m) / 2
        assert lines[name][5] == f"{first:.3f} -> {first:.3f}" and lines[name][6] == "-"
    assert (tmp_path / "compare.png").exists() and (tmp_path / "compare_accuracy.png").exists()
    assert table.strip().endswith("![compare_accuracy.png](compare_accuracy.png)")


def test_compare_plot_draws_one_smoothed_curve_per_experiment(drive, tmp_path):
    store = FolderStore(drive)
    exps = {name: load_series(store, name) for name in ("grpo", "sapo")}
    drawn = plot_compare(exps, str(tmp_path / "cmp.png"), window=3)
    assert [label for label, _, _ in drawn] == ["grpo", "sapo"]
    for label, xs, ys in drawn:
        mean = [sum(v) / 2 for v in zip(*(rewards(drive, n, label) for n in WORKERS))]
        assert xs == [0, 1, 2] and ys == pytest.approx(moving_average(mean, 3))


def test_ratio_is_relative_to_the_baseline_and_undefined_for_a_zero_baseline():
    rows = compare_rows([{"experiment": "a", "nodes": 2, "rounds": 4, "mean_reward": 0.1,
                          "cumulative_per_node": 0.4},
                         {"experiment": "b", "nodes": 3, "rounds": 4, "mean_reward": 0.2,
                          "cumulative_per_node": 0.78}])
    assert [r["ratio"] for r in rows] == [1.0, pytest.approx(1.95)]
    assert "| b | 3 | 4 | 0.2000 | 0.7800 | 1.95 |" in markdown_table(rows)
    zero = compare_rows([dict(rows[0], cumulative_per_node=0.0), rows[1]])
    assert zero[1]["ratio"] is None and "| n/a |" in markdown_table(zero)
    assert summarize("e", {})["nodes"] == 0
    assert moving_average([1, 2, 3, 4], 2) == [1, 1.5, 2.5, 3.5]


def test_unknown_experiment_is_one_line_and_exit_2(drive):
    done = report_cli("--gdrive-path", drive, "--compare", "grpo", "nope")
    assert done.returncode == 2 and "no experiment 'nope'" in done.stderr


def test_series_read_through_the_drive_api_equal_the_folders(drive):
    from rgym_exp.drive.backends import open_store
    from tests.fake_drive import FakeDrive
    base = exp_dir(drive, "sapo")
    with FakeDrive() as fake:
        store = open_store(f"gdrive://{fake.root_id}", endpoint=fake.url)
        for top in ("keys", "peers", "logs/w1", "submissions"):  # w2 without metrics: from submissions
            for folder, _, files in os.walk(os.path.join(base, top)):
                store.makedirs(f"experiments/sapo/{os.path.relpath(folder, base)}")  # as the
                for name in files:                  # coordinator makes round folders ahead
                    with open(os.path.join(folder, name), "rb") as fh:
                        rel = os.path.relpath(os.path.join(folder, name), base)
                        store.write(f"experiments/sapo/{rel}", fh.read())
        remote = load_series(store, "sapo")
    local = load_series(FolderStore(drive), "sapo")
    assert remote["w2"].source == "submissions"
    assert {n: (s.rounds, s.rewards) for n, s in remote.items()} == \
        {n: (s.rounds, s.rewards) for n, s in local.items()}


def test_the_area_under_the_accuracy_curve_is_its_mean_height_between_first_and_last_round():
    assert area_under([0, 10], [0.2, 0.4]) == pytest.approx(0.3)
    assert area_under([0, 5, 10], [0.0, 0.5, 0.5]) == pytest.approx(0.375)
    assert area_under([3], [0.7]) is None


def test_older_folders_metric_names_are_read_as_today_s(tmp_path):
    store = FolderStore(str(tmp_path))
    store.write("experiments/old/logs/w1/metrics.jsonl",
                b'{"round": 0, "reward_mean": 0.25, "external_groups_used": 3}\n'
                b'{"round": 1, "reward/mean": 0.5, "external/used": 1, "eval/accuracy": 0.4}\n')
    series = load_series(store, "old")["w1"]
    assert (series.rewards, series.external_used) == ([0.25, 0.5], [3, 1])
    assert (series.eval_rounds, series.eval_accuracy) == ([1], [0.4])
