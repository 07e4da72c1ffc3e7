"""`python -m rgym_exp.report`: reward plots and a summary table from the shared folder alone.

Reads each worker's ``logs/{node}/metrics.jsonl`` (one line per round) and falls
back to ``submissions/round_*/{node}.json`` for a worker whose metrics file is
missing, so a report works after the nodes are gone and from any machine that
sees the folder. Writes, under ``--out``:

* ``reward_per_round.png``: each node's reward/mean per round, the swarm mean
  and its moving average (``--window``, default 10);
* ``cumulative_reward.png``: each node's cumulative reward and the swarm mean's;
* ``heldout_accuracy.png``: each node's held-out accuracy (EVAL_INTERVAL) and the
  swarm mean;
* ``report.md``: the summary table and the credit table (also printed): per node, how
  many of its groups the others trained on, by how many nodes and with what mean reward,
  beside its own mean reward and latest held-out accuracy, recounted from every
  submission (rgym_exp/credit.py).

``--compare EXP1 EXP2 ...`` puts the smoothed swarm-mean curves of several
experiments on one axis (as in the SAPO paper's figure 2) and tables them, each
against the first (the baseline): ratio = cumulative reward per node /
the baseline's, with the held-out accuracy (first, last, area under the curve).
An item with a '/' is the path of an experiment folder
(``.../experiments/NAME``), so experiments in different folders compare too.

The series and numbers live in ``rgym_exp/series.py``, the figures in
``rgym_exp/plots.py``; this module is the table and the command. No torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from rgym_exp.credit import leaderboard, markdown_table as credit_table, read_credit
from rgym_exp.drive.backends import is_local
from rgym_exp.drive.layout import Layout
from rgym_exp.drive.store import Store, StoreError
from rgym_exp.plots import (plot_compare, plot_compare_eval, plot_cumulative, plot_eval,
                            plot_rewards)
from rgym_exp.series import compare_rows, load_series, summarize
from rgym_exp.status import Usage, add_folder_args, open_experiment


def _fmt(value: Optional[float], digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(rows: list[dict]) -> str:
    lines = ["| experiment | nodes | rounds | mean reward | cumulative reward per node | "
             "ratio to baseline | held-out accuracy, first -> last | accuracy AUC |",
             "|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        ratio = "n/a" if r.get("ratio") is None else f"{r['ratio']:.2f}"
        evals = (f"{_fmt(r.get('eval_first'))} -> {_fmt(r.get('eval_last'))}"
                 if r.get("eval_last") is not None else "-")
        lines.append(f"| {r['experiment']} | {r['nodes']} | {r['rounds']} | {r['mean_reward']:.4f} "
                     f"| {r['cumulative_per_node']:.4f} | {ratio} | {evals} | "
                     f"{_fmt(r.get('eval_auc'))} |")
    return "\n".join(lines)


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
    written, credit = [], ""
    if args.compare:
        plot_compare(experiments, os.path.join(out, "compare.png"), args.window)
        written.append("compare.png")
        if any(s.eval_rounds for series in experiments.values() for s in series.values()):
            plot_compare_eval(experiments, os.path.join(out, "compare_accuracy.png"))
            written.append("compare_accuracy.png")
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
        if any(s.eval_rounds for s in series.values()):
            plot_eval(series, os.path.join(out, "heldout_accuracy.png"),
                      f"{first_name}: held-out accuracy")
            written.append("heldout_accuracy.png")
        try:
            credit = credit_table(leaderboard(read_credit(resolved[0][1], Layout(first_name)),
                                              series))
        except StoreError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        credit = f"## Credit: whose groups the swarm trained on\n\n{credit}\n\n"
    table = markdown_table(rows)
    with open(os.path.join(out, "report.md"), "w") as fh:
        fh.write(f"# Report: {', '.join(experiments)}\n\n{table}\n\n{credit}"
                 + "".join(f"![{name}]({name})\n" for name in written))
    print(table)
    if credit:
        print("\n" + credit.rstrip())
    print(f"\nwrote {', '.join(written + ['report.md'])} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
