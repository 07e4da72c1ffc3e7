"""Does sharing help? Configurations x seeds through the real launcher, compared from the folders.

    python bench/sapo_experiment.py run --out /tmp/sapo --seeds 1 2 3 --rounds 30 \
        --config baseline:NUM_TRAIN_SAMPLES=4,NUM_TRANSPLANT_TREES=0 \
        --config sapo:NUM_TRAIN_SAMPLES=2,NUM_TRANSPLANT_TREES=2 \
        --set TASKS='chain_sum' --set MAX_NEW_TOKENS=48 ...
    python bench/sapo_experiment.py compare --out /tmp/sapo        # from the folders alone

``run`` starts one local swarm (``NODE_ROLE=swarm``, NUM_WORKERS workers) per configuration
and seed, one after the other, each in its own folder ``OUT/{config}-s{seed}`` with its own
experiment name, and skips runs that already finished (a stopped sweep resumes); a
finished run's checkpoints are removed unless --keep-checkpoints (the comparison reads
only metrics). Runs with
the same seed draw the same questions (draws are seeded by SEED, node and round), so the
comparison is paired by seed. ``compare`` reads each run's folder (rgym_exp/series.py) and
prints, per configuration, the mean over seeds and a 95% t-interval of:
  * cumulative training reward per node (the SAPO paper's measure, flattering: on the
    questions trained on, under sampling),
  * held-out accuracy at the end, and its area under the curve (rgym_exp/series.py),
and each configuration's paired difference from the first: by seed (a t-interval over seeds)
and by question (each evaluation records which held-out questions it got right: a paired
bootstrap interval over questions and McNemar's test on the discordant answers). It writes ``comparison.md`` and
two figures (swarm-mean held-out accuracy and cumulative reward, mean over seeds).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from rgym_exp.drive.backends import open_store  # noqa: E402
from rgym_exp.drive.layout import Layout  # noqa: E402
from rgym_exp.records import RecordReader, RoundState  # noqa: E402
from rgym_exp.series import area_under, eval_mean, load_series, swarm_mean  # noqa: E402

# two-sided 95% Student t quantiles by degrees of freedom (1..30), then the normal's
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def interval(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% t-interval); the half-width is nan for one value."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float(x.mean()) if len(x) else math.nan, math.nan
    t = T975[len(x) - 2] if len(x) - 1 <= len(T975) else 1.96
    return float(x.mean()), float(t * x.std(ddof=1) / math.sqrt(len(x)))


def parse_config(text: str) -> tuple[str, dict]:
    name, _, settings = text.partition(":")
    env = dict(item.split("=", 1) for item in settings.split(",") if item)
    if not name or not all(env.values()):
        raise SystemExit(f"--config {text!r}: expected NAME:KEY=VALUE,KEY=VALUE")
    return name, env


def run_name(config: str, seed: int) -> str:
    return f"{config}-s{seed}"


def finished(folder: str, name: str) -> bool:
    store = open_store(folder)
    state = RecordReader(store).read(RoundState, Layout(name).state_file)
    return bool(state and state.finished)


def run(args) -> int:
    configs = [parse_config(c) for c in args.config]
    common = dict(item.split("=", 1) for item in args.set)
    os.makedirs(os.path.join(args.out, "logs"), exist_ok=True)
    with open(os.path.join(args.out, "sweep.json"), "w") as fh:
        json.dump({"configs": dict(configs), "seeds": args.seeds, "rounds": args.rounds,
                   "workers": args.workers, "set": common}, fh, indent=1)
    for seed in args.seeds:                       # seed-major: every config of a seed, then next
        for config, settings in configs:
            name = run_name(config, seed)
            folder = os.path.join(args.out, name)
            if finished(folder, name):
                print(f"{name}: already finished", flush=True)
                continue
            env = {**os.environ, **common, **settings, "NODE_ROLE": "swarm",
                   "NUM_WORKERS": str(args.workers), "SEED": str(seed), "MAX_ROUNDS": str(args.rounds),
                   "GDRIVE_PATH": folder, "EXPERIMENT_NAME": name,
                   # the same node ids in every configuration of a seed: training draws are
                   # seeded by (SEED, node, round), so the arms see the same questions
                   "NODE_ID": f"seed{seed}",
                   "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
            t0 = time.time()
            with open(os.path.join(args.out, "logs", f"{name}.log"), "ab") as log:
                code = subprocess.call([sys.executable, "-m", "rgym_exp.runner.swarm_launcher"],
                                       env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
            print(f"{name}: exit {code} after {time.time() - t0:.0f}s", flush=True)
            with open(os.path.join(args.out, "runs.jsonl"), "a") as fh:   # wall times for compare
                fh.write(json.dumps({"run": name, "exit": code, "seconds": round(time.time() - t0)}) + "\n")
            if code != 0:
                print(f"{name} failed: see {args.out}/logs/{name}.log", file=sys.stderr)
                return code
            if not args.keep_checkpoints:   # 1.6 GB per SmolLM2 worker; the comparison needs none
                shutil.rmtree(os.path.join(folder, "experiments", name, "checkpoints"),
                              ignore_errors=True)
    return compare(args)


def measures(folder: str, name: str) -> dict:
    series = load_series(open_store(folder), name)
    cumulative = np.mean([sum(s.rewards) for s in series.values()])
    eval_rounds, accuracy = eval_mean(series)
    rounds, mean_reward = swarm_mean(series)
    return {"cumulative": float(cumulative), "eval_last": accuracy[-1] if accuracy else math.nan,
            "eval_first": accuracy[0] if accuracy else math.nan,
            "eval_auc": area_under(eval_rounds, accuracy) or math.nan,
            "eval_curve": (eval_rounds, accuracy), "reward_curve": (rounds, mean_reward),
            "nodes": len(series)}


MECHANICS = (  # (column, metrics.jsonl key, how a round's value becomes the column's)
    ("local groups with signal", "local/with_signal", "share of local/groups"),
    ("J filled", "external/used", "share of J"),
    ("age of external groups (rounds)", "external/age_mean", "mean"),
    ("waited for peers (s)", "external/wait_s", "mean"),
    ("round (s)", "time/round_s", "mean"))


def mechanics(folder: str, name: str, J: int) -> dict:
    """What happened inside the runs, from every worker's metrics.jsonl: the share of
    local groups with signal, how full J was, the age of the external groups used, the
    wait for peers and the round time, each a mean over all rounds of all workers."""
    import glob
    values = {column: [] for column, _, _ in MECHANICS}
    for path in glob.glob(os.path.join(folder, "experiments", name, "logs", "*", "metrics.jsonl")):
        with open(path) as fh:
            for line in fh:
                m = json.loads(line)
                if "local/groups" not in m:     # not a round record
                    continue
                for column, key, how in MECHANICS:
                    v = m.get(key)
                    if v is None:
                        continue
                    if how == "share of local/groups":
                        v = v / m["local/groups"] if m["local/groups"] else None
                    elif how == "share of J":
                        v = v / J if J else None
                    if v is not None:
                        values[column].append(float(v))
    return {c: float(np.mean(v)) if v else math.nan for c, v in values.items()}


def last_marks(folder: str, name: str) -> dict:
    """node -> (round, "0110..."): each worker's last evaluation, question by question."""
    import glob
    out = {}
    for path in glob.glob(os.path.join(folder, "experiments", name, "logs", "*", "metrics.jsonl")):
        node = os.path.basename(os.path.dirname(path))
        with open(path) as fh:
            for line in fh:
                m = json.loads(line)
                marks = m.get("eval/correct")
                if isinstance(marks, str) and set(marks) <= {"0", "1"} and marks:
                    if node not in out or m.get("round", -1) >= out[node][0]:
                        out[node] = (m.get("round", -1), marks)
    return out


def paired_by_question(a: list[tuple[str, str]], b: list[tuple[str, str]], rng_seed: int = 0,
                       draws: int = 2000) -> dict:
    """McNemar's test and a paired bootstrap over questions, for evaluations of the same
    questions by the same nodes (same seed, same NODE_ID) in two configurations: ``a`` and
    ``b`` are lists of marks strings in matching order. Returns the difference in accuracy
    (b - a) with its 95% bootstrap interval, the discordant counts and McNemar's p."""
    pairs = [(x, y) for x, y in zip(a, b) if len(x) == len(y)]
    if not pairs:
        return {}
    A = np.array([[c == "1" for c in x] for x, _ in pairs], dtype=float)    # runs x questions
    B = np.array([[c == "1" for c in y] for _, y in pairs], dtype=float)
    only_a, only_b = int(((A == 1) & (B == 0)).sum()), int(((A == 0) & (B == 1)).sum())
    stat = (abs(only_a - only_b) - 1) ** 2 / (only_a + only_b) if only_a + only_b else 0.0
    p = math.erfc(math.sqrt(stat / 2))                     # chi-square, 1 degree of freedom
    rng = np.random.default_rng(rng_seed)
    diff = (B - A).mean(axis=0)                             # per question, over runs
    boot = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(draws)]
    return {"diff": float(diff.mean()), "low": float(np.quantile(boot, 0.025)),
            "high": float(np.quantile(boot, 0.975)), "only_a": only_a, "only_b": only_b,
            "p": p, "questions": A.shape[1], "runs": len(pairs)}


def fmt(mean: float, half: float, digits: int = 3) -> str:
    return f"{mean:.{digits}f}" + ("" if math.isnan(half) else f" ± {half:.{digits}f}")


def compare(args) -> int:
    with open(os.path.join(args.out, "sweep.json")) as fh:
        sweep = json.load(fh)
    configs, seeds = list(sweep["configs"]), sweep["seeds"]
    got = {c: {} for c in configs}
    for c in configs:
        for seed in seeds:
            name = run_name(c, seed)
            if finished(os.path.join(args.out, name), name):
                got[c][seed] = measures(os.path.join(args.out, name), name)
    base = configs[0]
    lines = [f"{len(seeds)} seeds ({', '.join(map(str, seeds))}), {sweep['rounds']} rounds, "
             f"{sweep['workers']} workers; mean over seeds ± 95% t-interval", "",
             "| configuration | settings | seeds | cumulative training reward per node | "
             "held-out accuracy, first | held-out accuracy, last | accuracy AUC |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for c in configs:
        runs = list(got[c].values())
        cells = [fmt(*interval([r[k] for r in runs]), digits=2 if k == "cumulative" else 3)
                 for k in ("cumulative", "eval_first", "eval_last", "eval_auc")]
        settings = ", ".join(f"{k}={v}" for k, v in sweep["configs"][c].items())
        lines.append(f"| {c} | {settings} | {len(runs)} | " + " | ".join(cells) + " |")
    lines += ["", f"Paired by seed, each configuration minus {base}:", "",
              "| configuration | pairs | cumulative training reward per node | "
              "held-out accuracy, last | accuracy AUC |", "|---|---:|---:|---:|---:|"]
    for c in configs[1:]:
        pairs = [s for s in seeds if s in got[c] and s in got[base]]
        cells = [fmt(*interval([got[c][s][k] - got[base][s][k] for s in pairs]),
                     digits=2 if k == "cumulative" else 3)
                 for k in ("cumulative", "eval_last", "eval_auc")]
        lines.append(f"| {c} | {len(pairs)} | " + " | ".join(cells) + " |")
    lines += ["", f"Paired by question (each worker's last evaluation, same seed and NODE_ID), "
              f"each configuration minus {base}: accuracy difference with a 95% paired bootstrap "
              "interval over questions, and McNemar's test on the discordant answers:", "",
              "| configuration | runs paired | questions | difference | right only in "
              f"{base} | right only here | McNemar p |", "|---|---:|---:|---:|---:|---:|---:|"]
    marks = {c: {s: last_marks(os.path.join(args.out, run_name(c, s)), run_name(c, s))
                 for s in got[c]} for c in configs}
    for c in configs[1:]:
        a, b = [], []
        for seed in seeds:
            for node in sorted(set(marks[base].get(seed, {})) & set(marks[c].get(seed, {}))):
                a.append(marks[base][seed][node][1])
                b.append(marks[c][seed][node][1])
        t = paired_by_question(a, b)
        lines.append(f"| {c} | {t['runs']} | {t['questions']} | {t['diff']:+.3f} "
                     f"[{t['low']:+.3f}, {t['high']:+.3f}] | {t['only_a']} | {t['only_b']} | "
                     f"{t['p']:.3g} |" if t else f"| {c} | 0 | - | - | - | - | - |")
    lines += ["", "Inside the runs (mean over every worker's rounds, then over seeds):", "",
              "| configuration | " + " | ".join(c for c, _, _ in MECHANICS) + " |",
              "|---|" + "---:|" * len(MECHANICS)]
    for c in configs:
        J = int(sweep["configs"][c].get("NUM_TRANSPLANT_TREES", 4))
        runs = [mechanics(os.path.join(args.out, run_name(c, s)), run_name(c, s), J)
                for s in got[c]]
        cells = []
        for col, _, _ in MECHANICS:
            seen = [r[col] for r in runs if not math.isnan(r[col])]
            cells.append(f"{np.mean(seen):.2f}" if seen else "n/a")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines += per_run(args.out, configs, seeds, got)
    table = "\n".join(lines)
    figures = plot(got, args.out)
    with open(os.path.join(args.out, "comparison.md"), "w") as fh:
        fh.write(table + "\n\n" + "".join(f"![{f}]({f})\n" for f in figures))
    print(table)
    print(f"\nwrote comparison.md, {', '.join(figures)} to {args.out}")
    return 0


def per_run(out: str, configs: list, seeds: list, got: dict) -> list[str]:
    """A row per finished run, and the runs left out because they did not finish."""
    walls = {}
    if os.path.exists(os.path.join(out, "runs.jsonl")):
        with open(os.path.join(out, "runs.jsonl")) as fh:
            for line in fh:
                row = json.loads(line)
                if row.get("exit") == 0:
                    walls[row["run"]] = row["seconds"]
    lines = ["", "Every finished run (held-out accuracy: the swarm mean, at each evaluation round):", "",
             "| run | cumulative training reward per node | held-out accuracy | AUC | wall time |",
             "|---|---:|---|---:|---:|"]
    missing = []
    for seed in seeds:
        for c in configs:
            name = run_name(c, seed)
            if seed not in got[c]:
                missing.append(name)
                continue
            m = got[c][seed]
            curve = ", ".join(f"{r}: {a:.3f}" for r, a in zip(*m["eval_curve"]))
            wall = f"{walls[name]} s" if name in walls else "?"
            lines.append(f"| {name} | {m['cumulative']:.2f} | {curve} | {m['eval_auc']:.3f} | {wall} |")
    if missing:
        lines += ["", "Left out, not finished: " + ", ".join(missing)]
    return lines


def plot(got: dict, out: str) -> list[str]:
    from matplotlib.figure import Figure
    written = []
    for key, title, ylabel, filename in (
            ("eval_curve", "swarm-mean held-out accuracy, mean over seeds", "accuracy (greedy)",
             "heldout_accuracy.png"),
            ("reward_curve", "swarm-mean training reward (cumulative), mean over seeds",
             "cumulative reward", "cumulative_reward.png")):
        fig = Figure(figsize=(8, 4.5), dpi=100, layout="constrained")
        ax = fig.subplots()
        for config, runs in got.items():
            curves = [r[key] for r in runs.values() if r[key][0]]
            if not curves:
                continue
            rounds = sorted(set.intersection(*(set(c[0]) for c in curves)))
            ys = np.array([[dict(zip(*c))[r] for r in rounds] for c in curves])
            if key == "reward_curve":
                ys = np.cumsum(ys, axis=1)
            mean = ys.mean(axis=0)
            ax.plot(rounds, mean, lw=2, marker="o" if key == "eval_curve" else None, label=config)
            if len(curves) > 1:
                ax.fill_between(rounds, ys.min(axis=0), ys.max(axis=0), alpha=0.15)
        ax.set(title=title, xlabel="round", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        fig.savefig(os.path.join(out, filename))
        written.append(filename)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("run", help="run every configuration x seed, then compare")
    go.add_argument("--out", required=True, help="folder for the runs (one subfolder each)")
    go.add_argument("--config", action="append", required=True, metavar="NAME:KEY=V,...",
                    help="a configuration; the first is the baseline")
    go.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    go.add_argument("--rounds", type=int, default=30)
    go.add_argument("--workers", type=int, default=4)
    go.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting every run shares")
    go.add_argument("--keep-checkpoints", action="store_true",
                    help="keep each finished run's checkpoints (default: removed to save disk)")
    cmp_ = sub.add_parser("compare", help="the comparison, from the run folders alone")
    cmp_.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    return run(args) if args.command == "run" else compare(args)


if __name__ == "__main__":
    sys.exit(main())
