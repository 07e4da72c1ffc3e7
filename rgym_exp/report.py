"""`python -m rgym_exp.report`: reward plots and a summary table from the shared folder alone.

Reads each worker's ``logs/{node}/metrics.jsonl`` (one line per round) and falls
back to ``submissions/round_*/{node}.json`` for a worker whose metrics file is
missing, so a report works after the nodes are gone and from any machine that
sees the folder. Writes, under ``--out``:

* ``reward_per_round.png``: each node's reward_mean per round, the swarm mean
  and its moving average (``--window``, default 10);
* ``cumulative_reward.png``: each node's cumulative reward and the swarm mean's;
* ``report.md``: the summary table (also printed).

``--compare EXP1 EXP2 ...`` puts the smoothed swarm-mean curves of several
experiments on one axis (as in the SAPO paper's figure 2) and tables them, each
against the first (the baseline): ratio = cumulative reward per node /
the baseline's. An item with a '/' is the path of an experiment folder
(``.../experiments/NAME``), so experiments in different folders compare too.

``load_series`` (folder -> per-node series) and the ``plot_*`` functions (which
return the (label, xs, ys) they drew) are what the tests check. No torch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Optional

from rgym_exp.drive.layout import NAME_RE, Layout, parse_node_file, parse_round_dir
from rgym_exp.drive.backends import is_local
from rgym_exp.drive.store import Store, StoreError
from rgym_exp.records import PeerRecord, RecordReader, Submission
from rgym_exp.status import Usage, add_folder_args, open_experiment

METRICS_MAX_BYTES = 64 * 1024 * 1024


@dataclass
class NodeSeries:
    node_id: str
    rounds: list = field(default_factory=list)
    rewards: list = field(default_factory=list)
    external_used: list = field(default_factory=list)
    source: str = "metrics"             # or "submissions"


def _number(value) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _series(node: str, by_round: dict, source: str) -> NodeSeries:
    rounds = sorted(by_round)
    return NodeSeries(node, rounds, [by_round[r][0] for r in rounds],
                      [by_round[r][1] for r in rounds], source)


def read_metrics(store: Store, layout: Layout, node: str) -> Optional[NodeSeries]:
    """A node's series from its metrics.jsonl; None if there is none. Bad lines are skipped;
    a round logged twice keeps its last line."""
    try:
        data = store.read(layout.log_file(node, "metrics.jsonl"), METRICS_MAX_BYTES)
    except StoreError as exc:
        print(f"warning: metrics of {node} not readable ({exc}); using its submissions",
              file=sys.stderr)
        return None
    by_round = {}
    for line in (data or b"").decode("utf-8", "replace").splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if not isinstance(doc, dict) or type(doc.get("round")) is not int or doc["round"] < 0 \
                or not _number(doc.get("reward_mean")):
            continue
        used = doc.get("external_groups_used")
        by_round[doc["round"]] = (float(doc["reward_mean"]), used if type(used) is int else 0)
    return _series(node, by_round, "metrics") if by_round else None


def read_submissions(store: Store, layout: Layout, nodes: Optional[set]) -> dict[str, NodeSeries]:
    """Series of ``nodes`` (None: every node) from submission files (one listing per round)."""
    reader, found = RecordReader(store), {n: {} for n in nodes or ()}
    for entry in store.list(layout.submissions_root):
        r = parse_round_dir(entry.name)
        if r is None:
            continue
        for sub in store.list(layout.submissions_dir(r)):
            node = parse_node_file(sub.name)
            if node is None or (nodes is not None and node not in nodes):
                continue
            rec = reader.read(Submission, layout.submission(r, node))
            if rec is not None and rec.node_id == node and rec.round == r and _number(rec.reward_mean):
                found.setdefault(node, {})[r] = (rec.reward_mean, rec.external_groups_used)
    return {n: _series(n, rounds, "submissions") for n, rounds in found.items() if rounds}


def load_series(store: Store, experiment: str) -> dict[str, NodeSeries]:
    """Node id -> its per-round series: metrics.jsonl first, submissions for workers without."""
    layout = Layout(experiment)
    series = {}
    for entry in store.list(layout.logs_root):
        node = entry.name if entry.is_dir and NAME_RE.fullmatch(entry.name) else None
        got = read_metrics(store, layout, node) if node else None
        if got:
            series[node] = got
    reader, workers = RecordReader(store), set()
    for entry in store.list(layout.peers_dir):
        node = parse_node_file(entry.name)
        rec = reader.read(PeerRecord, layout.peer(node)) if node else None
        if rec is not None and rec.role == "worker":
            workers.add(node)
    missing = workers - set(series)
    if missing or not series:  # no metrics at all: every node's submissions
        series.update(read_submissions(store, layout, missing or None))
    return dict(sorted(series.items()))


# --- numbers --------------------------------------------------------------------------------

def swarm_mean(series: dict[str, NodeSeries]) -> tuple[list, list]:
    """(rounds, mean reward over the nodes that have each round)."""
    per_round = {}
    for s in series.values():
        for r, v in zip(s.rounds, s.rewards):
            per_round.setdefault(r, []).append(v)
    rounds = sorted(per_round)
    return rounds, [sum(per_round[r]) / len(per_round[r]) for r in rounds]


def moving_average(values: list, window: int) -> list:
    """Trailing mean over up to ``window`` points (the first points use what there is)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def cumulative(values: list) -> list:
    out, total = [], 0.0
    for v in values:
        total += v
        out.append(total)
    return out


def summarize(name: str, series: dict[str, NodeSeries]) -> dict:
    """One table row: nodes, rounds, mean reward, cumulative reward per node."""
    rewards = [v for s in series.values() for v in s.rewards]
    rounds = {r for s in series.values() for r in s.rounds}
    return {"experiment": name, "nodes": len(series), "rounds": len(rounds),
            "mean_reward": sum(rewards) / len(rewards) if rewards else 0.0,
            "cumulative_per_node": (sum(sum(s.rewards) for s in series.values()) / len(series)
                                    if series else 0.0)}


def compare_rows(rows: list[dict]) -> list[dict]:
    """Adds ``ratio`` (cumulative reward per node / the first row's; None if that is 0)."""
    base = rows[0]["cumulative_per_node"] if rows else 0.0
    return [dict(r, ratio=r["cumulative_per_node"] / base if base else None) for r in rows]


def markdown_table(rows: list[dict]) -> str:
    lines = ["| experiment | nodes | rounds | mean reward | cumulative reward per node | "
             "ratio to baseline |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = "n/a" if r.get("ratio") is None else f"{r['ratio']:.2f}"
        lines.append(f"| {r['experiment']} | {r['nodes']} | {r['rounds']} | {r['mean_reward']:.4f} "
                     f"| {r['cumulative_per_node']:.4f} | {ratio} |")
    return "\n".join(lines)


# --- plots ------------------------------------------------------------------------------------

def _axes(title: str, ylabel: str):
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed
    from matplotlib.ticker import MaxNLocator
    fig = Figure(figsize=(8, 4.5), dpi=100, layout="constrained")
    ax = fig.subplots()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(title=title, xlabel="round", ylabel=ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def _save(fig, ax, path: str) -> None:
    ax.legend(fontsize="small", loc="best")
    fig.savefig(path)


def plot_rewards(series: dict[str, NodeSeries], path: str, window: int = 10,
                 title: str = "reward per round") -> list[tuple]:
    """Per-node reward_mean, swarm mean and its moving average; returns what was drawn."""
    fig, ax = _axes(title, "reward (mean over the node's completions)")
    drawn = []
    for i, s in enumerate(series.values()):
        label = s.node_id if len(series) <= 8 else ("nodes" if i == 0 else None)
        ax.plot(s.rounds, s.rewards, lw=0.8, alpha=0.5, marker="." if len(s.rounds) < 50 else None,
                label=label)
        drawn.append((s.node_id, list(s.rounds), list(s.rewards)))
    rounds, mean = swarm_mean(series)
    smooth = moving_average(mean, window)
    ax.plot(rounds, mean, color="black", lw=1, ls="--", label="swarm mean")
    ax.plot(rounds, smooth, color="black", lw=2.5, label=f"swarm mean, moving average ({window})")
    _save(fig, ax, path)
    return drawn + [("swarm mean", rounds, mean),
                    (f"swarm mean, moving average ({window})", rounds, smooth)]


def plot_cumulative(series: dict[str, NodeSeries], path: str,
                    title: str = "cumulative reward") -> list[tuple]:
    """Each node's cumulative reward and the cumulative swarm mean; returns what was drawn."""
    fig, ax = _axes(title, "cumulative reward")
    drawn = []
    for i, s in enumerate(series.values()):
        label = s.node_id if len(series) <= 8 else ("nodes" if i == 0 else None)
        ys = cumulative(s.rewards)
        ax.plot(s.rounds, ys, lw=0.8, alpha=0.6, label=label)
        drawn.append((s.node_id, list(s.rounds), ys))
    rounds, mean = swarm_mean(series)
    ax.plot(rounds, cumulative(mean), color="black", lw=2.5, label="swarm mean")
    _save(fig, ax, path)
    return drawn + [("swarm mean", rounds, cumulative(mean))]


def plot_compare(experiments: dict[str, dict[str, NodeSeries]], path: str,
                 window: int = 10) -> list[tuple]:
    """The smoothed swarm-mean reward of each experiment on one axis; returns what was drawn."""
    fig, ax = _axes(f"swarm mean reward, moving average ({window})", "reward")
    drawn = []
    for label, series in experiments.items():
        rounds, mean = swarm_mean(series)
        smooth = moving_average(mean, window)
        ax.plot(rounds, smooth, lw=2, label=label)
        drawn.append((label, rounds, smooth))
    _save(fig, ax, path)
    return drawn


# --- command line -----------------------------------------------------------------------------

def resolve(item: str, args) -> tuple[str, Store, str, str]:
    """(label, store, experiment, default output folder) for a name in --gdrive-path or the
    path of an experiment folder."""
    if "/" in item:
        path = os.path.abspath(os.path.expanduser(item.rstrip("/")))
        if os.path.basename(os.path.dirname(path)) != "experiments":
            raise Usage(f"{item} is not an experiment folder (expected .../experiments/NAME)")
        name = os.path.basename(path)
        root = os.path.dirname(os.path.dirname(path))
        store = open_experiment(root, name)
        return item, store, name, os.path.join(root, *Layout(name).report_dir.split("/"))
    store = open_experiment(args.gdrive_path, item, args.credentials, args.endpoint)
    if not is_local(args.gdrive_path):
        return item, store, item, "report"
    folder = os.path.abspath(os.path.expanduser(args.gdrive_path))
    return item, store, item, os.path.join(folder, *Layout(item).report_dir.split("/"))


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rgym_exp.report",
                                     description=__doc__.split("\n")[0])
    add_folder_args(parser)
    parser.add_argument("--out", default="", help="output folder (default: <experiment>/report "
                        "in a local folder, ./report for gdrive:// and buckets; --compare: .../compare)")
    parser.add_argument("--window", type=int, default=10, help="moving-average window, in rounds")
    parser.add_argument("--compare", nargs="+", metavar="EXP", help="experiments to compare; the "
                        "first is the baseline (names in --gdrive-path, or .../experiments/NAME)")
    args = parser.parse_args(argv)
    if args.window < 1:
        parser.error("--window must be >= 1")
    try:
        resolved = [resolve(item, args) for item in args.compare or [args.experiment]]
        experiments = {label: load_series(store, name) for label, store, name, _ in resolved}
    except (Usage, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, Usage) else 1
    empty = [label for label, series in experiments.items() if not series]
    if empty:
        print(f"error: no rounds recorded yet in {', '.join(empty)} (no metrics.jsonl or "
              "submissions)", file=sys.stderr)
        return 2
    first_label, _, first_name, first_out = resolved[0]
    # --compare writes next to the baseline's own report, not over it
    out = args.out or (os.path.join(first_out, "compare") if args.compare else first_out)
    os.makedirs(out, exist_ok=True)
    rows = compare_rows([summarize(label, s) for label, s in experiments.items()])
    written = []
    if args.compare:
        plot_compare(experiments, os.path.join(out, "compare.png"), args.window)
        written.append("compare.png")
        if len({r["rounds"] for r in rows}) > 1:
            print("note: the experiments have different numbers of rounds; cumulative rewards "
                  "compare fairly only over equal rounds", file=sys.stderr)
    else:
        series = experiments[first_label]
        plot_rewards(series, os.path.join(out, "reward_per_round.png"), args.window,
                     f"{first_name}: reward per round")
        plot_cumulative(series, os.path.join(out, "cumulative_reward.png"),
                        f"{first_name}: cumulative reward")
        written += ["reward_per_round.png", "cumulative_reward.png"]
    table = markdown_table(rows)
    with open(os.path.join(out, "report.md"), "w") as fh:
        fh.write(f"# Report: {', '.join(experiments)}\n\n{table}\n\n"
                 + "".join(f"![{name}]({name})\n" for name in written))
    print(table)
    print(f"\nwrote {', '.join(written + ['report.md'])} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
