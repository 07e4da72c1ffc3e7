"""Per-node series of an experiment, read from the shared folder alone, and the numbers
made of them: swarm means, moving averages, cumulative reward, held-out accuracy and the
area under its curve, one summary row per experiment.

Each worker's ``logs/{node}/metrics.jsonl`` (one record per round) is read first;
``submissions/round_*/{node}.json`` (and, for rounds the coordinator retired,
``retired/round_R.json``: rgym_exp/readers.py) stand in for a worker whose metrics file
is missing, so the numbers survive the nodes. Metric names of older folders are translated
(records.current_metrics). Used by ``rgym_exp.report`` and ``bench/sapo_experiment.py``.
No torch.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from typing import Optional

from rgym_exp.drive.layout import NAME_RE, Layout
from rgym_exp.drive.store import Store, StoreError
from rgym_exp.readers import every_round, read_peers
from rgym_exp.records import current_metrics

METRICS_MAX_BYTES = 64 * 1024 * 1024


@dataclass
class NodeSeries:
    node_id: str
    rounds: list = field(default_factory=list)
    rewards: list = field(default_factory=list)
    external_used: list = field(default_factory=list)
    eval_rounds: list = field(default_factory=list)    # rounds with a held-out evaluation
    eval_accuracy: list = field(default_factory=list)
    source: str = "metrics"             # or "submissions"


def _number(value) -> bool:
    return type(value) in (int, float) and not isinstance(value, bool) and math.isfinite(value)


def _series(node: str, by_round: dict, source: str) -> NodeSeries:
    """``by_round``: round -> a metrics record (today's names)."""
    rounds = sorted(by_round)
    used = [by_round[r].get("external/used") for r in rounds]
    evals = [r for r in rounds if _number(by_round[r].get("eval/accuracy"))]
    return NodeSeries(node, rounds, [float(by_round[r]["reward/mean"]) for r in rounds],
                      [u if type(u) is int else 0 for u in used], evals,
                      [float(by_round[r]["eval/accuracy"]) for r in evals], source)


def _usable(doc) -> Optional[dict]:
    """A metrics record under today's names if it has a round and a reward, else None."""
    if not isinstance(doc, dict):
        return None
    doc = current_metrics(doc)
    if type(doc.get("round")) is not int or doc["round"] < 0 or not _number(doc.get("reward/mean")):
        return None
    return doc


def read_metrics(store: Store, layout: Layout, node: str) -> Optional[NodeSeries]:
    """A node's series from its metrics.jsonl; None if there is none. Bad lines are skipped;
    a round logged twice keeps its last line. Older folders' metric names are translated."""
    try:
        data = store.read(layout.log_file(node, "metrics.jsonl"), METRICS_MAX_BYTES)
    except StoreError as exc:
        print(f"warning: metrics of {node} not readable ({exc}); using its submissions",
              file=sys.stderr)
        return None
    by_round = {}
    for line in (data or b"").decode("utf-8", "replace").splitlines():
        try:
            doc = _usable(json.loads(line))
        except ValueError:
            continue
        if doc is not None:
            by_round[doc["round"]] = doc
    return _series(node, by_round, "metrics") if by_round else None


def read_submissions(store: Store, layout: Layout, nodes: Optional[set]) -> dict[str, NodeSeries]:
    """Series of ``nodes`` (None: every node) from submission files (one listing per round)
    and from the rounds the coordinator retired (one file per round)."""
    found = {n: {} for n in nodes or ()}
    for r, subs in every_round(store, layout):
        for node, rec in subs.items():
            if nodes is not None and node not in nodes:
                continue
            doc = _usable({**rec.metrics, "round": r})
            if doc is not None:
                found.setdefault(node, {})[r] = doc
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
    workers = {node for node, rec in read_peers(store, layout).items() if rec.role == "worker"}
    missing = workers - set(series)
    if missing or not series:  # no metrics at all: every node's submissions
        series.update(read_submissions(store, layout, missing or None))
    return dict(sorted(series.items()))


# --- numbers --------------------------------------------------------------------------------

def _mean_by_round(pairs) -> tuple[list, list]:
    """(rounds, mean value per round) from (round, value) pairs of several nodes."""
    per_round = {}
    for r, v in pairs:
        per_round.setdefault(r, []).append(v)
    rounds = sorted(per_round)
    return rounds, [sum(per_round[r]) / len(per_round[r]) for r in rounds]


def swarm_mean(series: dict[str, NodeSeries]) -> tuple[list, list]:
    """(rounds, mean reward over the nodes that have each round)."""
    return _mean_by_round((r, v) for s in series.values() for r, v in zip(s.rounds, s.rewards))


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


def eval_mean(series: dict[str, NodeSeries]) -> tuple[list, list]:
    """(rounds, held-out accuracy averaged over the nodes evaluated at each round)."""
    return _mean_by_round((r, v) for s in series.values()
                          for r, v in zip(s.eval_rounds, s.eval_accuracy))


def area_under(rounds: list, values: list) -> Optional[float]:
    """Mean height of the piecewise-linear curve through (round, value) from its first
    round to its last: the area under it per round (None with fewer than two points)."""
    if len(rounds) < 2:
        return None
    area = sum((b - a) * (u + v) / 2 for a, b, u, v in zip(rounds, rounds[1:], values, values[1:]))
    return area / (rounds[-1] - rounds[0])


def summarize(name: str, series: dict[str, NodeSeries]) -> dict:
    """One table row: nodes, rounds, mean reward, cumulative reward per node, and the
    swarm-mean held-out accuracy: first, last, and the area under its curve."""
    rewards = [v for s in series.values() for v in s.rewards]
    rounds = {r for s in series.values() for r in s.rounds}
    eval_rounds, accuracy = eval_mean(series)
    return {"experiment": name, "nodes": len(series), "rounds": len(rounds),
            "mean_reward": sum(rewards) / len(rewards) if rewards else 0.0,
            "cumulative_per_node": (sum(sum(s.rewards) for s in series.values()) / len(series)
                                    if series else 0.0),
            "eval_first": accuracy[0] if accuracy else None,
            "eval_last": accuracy[-1] if accuracy else None,
            "eval_auc": area_under(eval_rounds, accuracy)}


def compare_rows(rows: list[dict]) -> list[dict]:
    """Adds ``ratio`` (cumulative reward per node / the first row's; None if that is 0)."""
    base = rows[0]["cumulative_per_node"] if rows else 0.0
    return [dict(r, ratio=r["cumulative_per_node"] / base if base else None) for r in rows]
