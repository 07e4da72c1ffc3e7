"""The report's figures (matplotlib, no pyplot: no global state, no display needed).

Each ``plot_*`` function draws into a PNG file and returns the (label, xs, ys) it drew,
which is what the tests check.
"""

from __future__ import annotations

from rgym_exp.series import (NodeSeries, cumulative, eval_mean, moving_average,
                             swarm_mean)


def _axes(title: str, ylabel: str):
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed
    from matplotlib.ticker import MaxNLocator
    fig = Figure(figsize=(8, 4.5), dpi=100, layout="constrained")
    ax = fig.subplots()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(title=title, xlabel="round", ylabel=ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def _labelled(series: dict[str, NodeSeries]):
    """(legend label, series): each node named when there are few, else one "nodes" entry."""
    for i, s in enumerate(series.values()):
        yield (s.node_id if len(series) <= 8 else ("nodes" if i == 0 else None)), s


def _save(fig, ax, path: str) -> None:
    ax.legend(fontsize="small", loc="best")
    fig.savefig(path)


def plot_rewards(series: dict[str, NodeSeries], path: str, window: int = 10,
                 title: str = "reward per round") -> list[tuple]:
    """Per-node reward/mean, swarm mean and its moving average; returns what was drawn."""
    fig, ax = _axes(title, "reward (mean over the node's completions)")
    drawn = []
    for label, s in _labelled(series):
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
    for label, s in _labelled(series):
        ys = cumulative(s.rewards)
        ax.plot(s.rounds, ys, lw=0.8, alpha=0.6, label=label)
        drawn.append((s.node_id, list(s.rounds), ys))
    rounds, mean = swarm_mean(series)
    ax.plot(rounds, cumulative(mean), color="black", lw=2.5, label="swarm mean")
    _save(fig, ax, path)
    return drawn + [("swarm mean", rounds, cumulative(mean))]


def plot_eval(series: dict[str, NodeSeries], path: str,
              title: str = "held-out accuracy") -> list[tuple]:
    """Each node's held-out accuracy and the swarm mean; returns what was drawn."""
    fig, ax = _axes(title, "held-out accuracy (greedy)")
    drawn = []
    for label, s in _labelled(series):
        ax.plot(s.eval_rounds, s.eval_accuracy, lw=0.8, alpha=0.6, marker=".", label=label)
        drawn.append((s.node_id, list(s.eval_rounds), list(s.eval_accuracy)))
    rounds, mean = eval_mean(series)
    ax.plot(rounds, mean, color="black", lw=2.5, marker="o", label="swarm mean")
    _save(fig, ax, path)
    return drawn + [("swarm mean", rounds, mean)]


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


def plot_compare_eval(experiments: dict[str, dict[str, NodeSeries]], path: str) -> list[tuple]:
    """The swarm-mean held-out accuracy of each experiment on one axis."""
    fig, ax = _axes("swarm mean held-out accuracy", "held-out accuracy (greedy)")
    drawn = []
    for label, series in experiments.items():
        rounds, mean = eval_mean(series)
        ax.plot(rounds, mean, lw=2, marker="o", label=label)
        drawn.append((label, rounds, mean))
    _save(fig, ax, path)
    return drawn
