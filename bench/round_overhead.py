"""Round overhead: how much of a worker's round goes to the shared folder and to waiting.

    python bench/round_overhead.py             # 4 workers + a coordinator, SmolLM2, 3 rounds
    python bench/round_overhead.py --rounds 4 --model /path/to/model
    POLL_INTERVAL=1 python bench/round_overhead.py     # any setting passes through

A coordinator and 4 workers, each its own process, on one local folder, all with the same
settings (equally fast): the defaults, except 128 new tokens and no held-out evaluation. Every worker runs under a thin timer: each shared-folder operation
(FolderStore) and each wait (Waiter.until / pause) made by its main thread is timed, and a
round runs from the moment the worker sees it open to the moment it sees the next one
open (so the wait for the slowest peer and the coordinator is inside it). Storage done
while waiting counts as waiting. Background threads (heartbeat, log copies) are not
counted: they do not hold the round up. Round 0 (workers still loading their models at
different speeds) is shown but left out of the shares. The last line is
`round overhead: storage N.N% + waiting N.N% = N.N% of a round`.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


# --- inside a worker process ----------------------------------------------------------

def instrumented_worker(out_path: str) -> int:
    """Run this process's worker (NODE_ROLE=worker) with timers; write them to ``out_path``."""
    from rgym_exp.drive import store
    from rgym_exp.runner import swarm_launcher
    from rgym_exp.waiting import Waiter
    from rgym_exp.worker import Worker

    totals = {"storage": 0.0, "waiting": 0.0, "storage_ops": 0, "next_round": 0.0}
    depth = {"wait": 0}
    marks: list[dict] = []

    def timed(fn, kind):
        def wrapper(*args, **kwargs):
            if threading.current_thread() is not threading.main_thread():
                return fn(*args, **kwargs)
            outer = kind == "waiting" and depth["wait"] == 0
            inside_wait = depth["wait"] > 0
            if kind == "waiting":
                depth["wait"] += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if kind == "waiting":
                    depth["wait"] -= 1
                    if outer:
                        totals["waiting"] += time.perf_counter() - t0
                elif not inside_wait:
                    totals["storage"] += time.perf_counter() - t0
                    totals["storage_ops"] += 1
        return wrapper

    for name in ("read", "write", "create_exclusive", "list", "delete", "move", "makedirs",
                 "upload", "download"):
        setattr(store.FolderStore, name, timed(getattr(store.FolderStore, name), "storage"))
    Waiter.until = timed(Waiter.until, "waiting")
    Waiter.pause = timed(Waiter.pause, "waiting")
    next_round = Worker.next_round

    def marked(self):
        t0 = time.perf_counter()
        state = next_round(self)
        totals["next_round"] += time.perf_counter() - t0
        marks.append({"round": state.round, "finished": bool(state.finished), "t": time.perf_counter(),
                      **totals})
        return state
    Worker.next_round = marked

    def dump():
        with open(out_path, "w") as fh:
            json.dump(marks, fh)
    atexit.register(dump)
    return swarm_launcher.main([])


# --- the bench ------------------------------------------------------------------------

def rounds_of(marks: list[dict]) -> list[dict]:
    """One row per round: seconds, and the storage and waiting seconds within it."""
    rows = []
    for a, b in zip(marks, marks[1:]):
        if a["finished"]:
            break
        rows.append({"round": a["round"], "seconds": b["t"] - a["t"],
                     "storage": b["storage"] - a["storage"], "waiting": b["waiting"] - a["waiting"],
                     "next_round": b["next_round"] - a["next_round"],
                     "ops": b["storage_ops"] - a["storage_ops"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--max-new-tokens", type=int, default=128,
                        help="half the default 256: 4 workers share this machine's 2 cores")
    parser.add_argument("--node", help=argparse.SUPPRESS)   # internal: run one instrumented worker
    args = parser.parse_args()
    if args.node:
        sys.exit(instrumented_worker(args.node))

    folder = tempfile.mkdtemp(prefix="round-overhead-")
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    settings = dict(GDRIVE_PATH=os.path.join(folder, "drive"), CACHE_DIR=os.path.join(folder, "cache"),
                    EXPERIMENT_NAME="overhead", MAX_ROUNDS=str(args.rounds), MODEL_NAME=args.model,
                    MAX_NEW_TOKENS=str(args.max_new_tokens), EVAL_INTERVAL="0", PYTHONUNBUFFERED="1",
                    OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                    TOKENIZERS_PARALLELISM="false", HF_HUB_DISABLE_PROGRESS_BARS="1", TQDM_DISABLE="1")
    print(f"{args.workers} workers + coordinator, {args.rounds} rounds, folder {folder}; "
          f"{threads} thread(s) per worker; " + ", ".join(f"{k}={settings[k]}" for k in
          ("MODEL_NAME", "MAX_NEW_TOKENS", "EVAL_INTERVAL")) + "; the rest at their defaults",
          flush=True)
    procs = []
    t0 = time.perf_counter()
    for role, node in [("coordinator", "coord")] + [("worker", f"w{i}") for i in range(1, args.workers + 1)]:
        env = {**os.environ, **settings, "NODE_ROLE": role, "NODE_ID": node}
        cmd = [sys.executable, "-m", "rgym_exp.runner.swarm_launcher"] if role == "coordinator" else \
            [sys.executable, os.path.abspath(__file__), "--node", os.path.join(folder, f"{node}.json")]
        with open(os.path.join(folder, f"{node}.log"), "wb") as log:
            procs.append((node, subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log,
                                                 stderr=subprocess.STDOUT)))
    codes = {node: proc.wait() for node, proc in procs}
    print(f"swarm finished in {time.perf_counter() - t0:.0f}s; exit codes {codes}")
    if any(codes.values()):
        sys.exit(f"a node failed: see the logs in {folder}")

    print(f"{'worker':8} {'round':>5} {'seconds':>8} {'storage s':>9} {'ops':>4} {'waiting s':>9} "
          f"{'(next round)':>12}")
    counted = {"seconds": 0.0, "storage": 0.0, "waiting": 0.0, "next_round": 0.0}
    waits, middle = [], {"seconds": 0.0, "waiting": 0.0}
    for i in range(1, args.workers + 1):
        with open(os.path.join(folder, f"w{i}.json")) as fh:
            for row in rounds_of(json.load(fh)):
                print(f"w{i:<7} {row['round']:5d} {row['seconds']:8.1f} {row['storage']:9.2f} "
                      f"{row['ops']:4d} {row['waiting']:9.2f} {row['next_round']:12.2f}")
                if row["round"] > 0:
                    for key in counted:
                        counted[key] += row[key]
                    waits.append(row["waiting"])
                if 0 < row["round"] < args.rounds - 1:
                    for key in middle:
                        middle[key] += row[key]
    storage, waiting = (100 * counted[k] / counted["seconds"] for k in ("storage", "waiting"))
    print(f"rounds 1+: {counted['seconds']:.0f} worker-seconds, {len(waits)} worker-rounds; waiting "
          f"per round: median {statistics.median(waits):.1f}s, max {max(waits):.1f}s, of which "
          f"{100 * counted['next_round'] / max(counted['waiting'], 1e-9):.0f}% for the next round to "
          f"open, the rest for peers' rollouts")
    if middle["seconds"]:
        print(f"rounds 1-{args.rounds - 2} (not the last, which ends waiting for the slowest worker "
              f"to finish): waiting {100 * middle['waiting'] / middle['seconds']:.1f}% of a round")
    print(f"round overhead: storage {storage:.1f}% + waiting {waiting:.1f}% = {storage + waiting:.1f}% "
          f"of a round")


if __name__ == "__main__":
    main()
