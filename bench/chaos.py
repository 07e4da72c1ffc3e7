"""Chaos runs: the swarm against what Drive, Colab and people do to it (issue 4).

    python bench/chaos.py --quick     # every scenario once, about 5 minutes
    python bench/chaos.py             # longer runs; kill scenarios repeated at random points

Each scenario runs real launcher processes (``python -m tests.chaos_node``: the
shipped launcher plus two test-only knobs, a skewed clock and a slower machine)
on a tiny model built here, in a temporary folder that stands in for Drive.
Storage faults come from the FAULTS setting (rgym_exp/drive/faults.py), which
also keeps a journal of every change each process makes. Verdicts come only from
what can be observed: exit codes, files, metrics lines, log lines and the
journal. Every scenario also checks two invariants: each file had one writer
at a time (journal), and no visible file in the folder is torn or corrupt.

``bucket`` runs kills, restarts, transient errors and junk objects on an S3 bucket
(GDRIVE_PATH=s3://..., a local moto server; needs s3fs and moto from requirements-dev.txt).

``attacks`` and ``vanished`` are a hostile writer of the folder (issue 20, tests/attacks.py):
forged state, peer records, rollouts, submissions, credit and experiment.json, records nested
600 deep, symlink loops, FIFOs, links out of the experiment, directories planted at a node's
own paths, a checkpoint linked to /dev/zero, and the experiment folder deleted mid-run.

Prints one line per scenario, ``PASS|FAIL  <scenario>: <evidence>``, then
``chaos: N/N scenarios passed`` and ``chaos: attacks tried N, held M``; the exit code is 0
only if all passed.
"""

from __future__ import annotations

import argparse
import atexit
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from genrl.rollouts import NAME_PATTERN  # noqa: E402
from tests.attacks import SETTINGS as ATTACK_SETTINGS  # noqa: E402
from tests.attacks import VERDICTS as ATTACKS  # noqa: E402
from tests.attacks import attacked_swarm, vanished_swarm  # noqa: E402
from tests.junk import plant_junk  # noqa: E402
from tests.swarm_helpers import (check_folder, exp_dir, metrics, node_env,  # noqa: E402
                                 read_json, start_node, wait_for)

PROCS: list[subprocess.Popen] = []            # every process started, killed at exit
NAME = NAME_PATTERN                           # node ids, as the protocol allows them
OWNED = [re.compile(rf"^experiments/[^/]+/{p}") for p in (
    rf"peers/({NAME})\.json$", rf"keys/({NAME})\.[0-9a-f]{{16}}\.json$", rf"\.claims/({NAME})\.\d+$",
    rf"rollouts/round_\d+/({NAME})(\.\d+)?(\.s\d+)?\.json$",
    rf"submissions/round_\d+/({NAME})\.json$", rf"checkpoints/({NAME})/", rf"logs/({NAME})/")]
COORDINATOR_ONLY = re.compile(r"^experiments/[^/]+/(experiment\.json|state/|rollouts/round_\d+$|"
                              r"submissions/round_\d+$|retired/|archive/)")


def kill_all() -> None:
    for p in PROCS:
        if p.poll() is None:
            p.kill()
            p.wait()


class Failed(AssertionError):
    """A scenario's verdict is FAIL; the message is the evidence."""


def check(condition, evidence: str) -> None:
    if not condition:
        raise Failed(evidence)


def check_resumed(run, codes: dict, node: str, rounds: int, kills: int) -> list[str]:
    """Every node exited 0; ``node``, killed ``kills`` time(s), recorded each round once up to
    the last and resumed from a checkpoint after each kill: the rounds it resumed from."""
    check(set(codes.values()) == {0}, f"exit codes {codes}")
    done = run.rounds(node)
    check(done == sorted(set(done)) and done[-1] == rounds - 1, f"{node} recorded rounds {done}")
    resumed = re.findall(r"resumed from checkpoint of round (\d+)", run.output(node))
    check(len(resumed) == kills, f"{node} resumed {len(resumed)}x for {kills} kill(s)")
    return resumed


class Run:
    """One experiment folder, the processes on it, and what they left behind."""

    def __init__(self, root: str, name: str, model: str, **settings):
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir)
        self.drive = os.path.join(self.dir, "drive")
        self.journal = os.path.join(self.dir, "journal.log")
        open(self.journal, "w").close()
        settings.setdefault("EVAL_INTERVAL", 0)   # held-out evaluation is not what chaos tests:
        #                                            a late joiner's first one would outlast the run
        self.env = node_env(self.drive, model, os.path.join(self.dir, "home"), **settings)
        self.nodes: dict[int, str] = {}       # pid -> NODE_ID
        self.logs: dict[str, list[str]] = {}  # NODE_ID -> its processes' output files
        self.coordinator = "coord"
        self.rounds_seen: list[int] = []
        self._watching = True
        threading.Thread(target=self._watch_state, daemon=True).start()

    def start(self, role: str, node: str, faults: str = "", home: str = "",
              **knobs) -> subprocess.Popen:
        env = dict(self.env, **{k: str(v) for k, v in knobs.items()})
        env["FAULTS"] = ",".join(filter(None, [faults, f"journal={self.journal}"]))
        if home:  # another machine: its own home, config and cache
            home = os.path.join(self.dir, home)
            env.update(HOME=home, XDG_CONFIG_HOME=f"{home}/.config", CACHE_DIR=f"{home}/cache")
        out = os.path.join(self.dir, f"{node}.{len(self.logs.get(node, []))}.log")
        proc = start_node(env, out, role, node, module="tests.chaos_node")
        PROCS.append(proc)
        self.nodes[proc.pid] = node
        self.logs.setdefault(node, []).append(out)
        return proc

    def output(self, node: str, k: int | None = None) -> str:
        paths = self.logs.get(node, [])
        paths = paths if k is None else paths[k:][:1]
        return "".join(open(p, errors="replace").read() for p in paths)

    def state(self) -> dict:
        try:
            return read_json(os.path.join(exp_dir(self.drive), "state", "current_state.json"))
        except (OSError, ValueError):
            return {}

    def peer(self, node: str) -> dict:
        try:
            return read_json(os.path.join(exp_dir(self.drive), "peers", f"{node}.json"))
        except (OSError, ValueError):
            return {}

    def rounds(self, node: str) -> list[int]:
        try:
            return [m["round"] for m in metrics(self.drive, node)]
        except OSError:
            return []

    def _watch_state(self) -> None:
        while self._watching:
            r = self.state().get("round")
            if r is not None and (not self.rounds_seen or self.rounds_seen[-1] != r):
                self.rounds_seen.append(r)
            time.sleep(0.05)

    def until(self, predicate, what: str, timeout: float = 180):
        try:
            return wait_for(predicate, timeout, what, poll=0.05)
        except AssertionError as exc:  # a verdict, not a crash of the chaos script
            raise Failed(str(exc)) from None

    def wait(self, procs: dict, timeout: float = 300) -> dict:
        end, codes = time.monotonic() + timeout, {}
        for name, proc in procs.items():
            try:
                codes[name] = proc.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise Failed(f"{name} still running after {timeout:.0f}s") from None
        return codes

    def close(self) -> None:
        self._watching = False

    def run_swarm(self, faults: str) -> dict:
        """A coordinator and workers w1, w2, all with ``faults``, to the end: exit codes."""
        procs = {n: self.start(role, n, faults=faults) for role, n in
                 (("coordinator", "coord"), ("worker", "w1"), ("worker", "w2"))}
        try:
            return self.wait(procs)
        finally:
            self.close()

    # --- the two invariants every scenario checks ----------------------------------------

    def journal_problems(self) -> list[str]:
        """Files written by the wrong node, or by an older process after a newer one took over."""
        problems, latest, retired = [], {}, {}
        with open(self.journal) as fh:
            lines = sorted((line.split(" ", 3) for line in fh if line.strip()),
                           key=lambda parts: float(parts[0]))
        for _, pid, op, path in lines:
            node, path = self.nodes.get(int(pid), f"pid {pid}"), path.split(" ")[0].strip()
            owners = [m.group(1) for m in (rx.match(path) for rx in OWNED) if m]
            if COORDINATOR_ONLY.match(path):
                owners = [self.coordinator]
            if owners != [node]:
                problems.append(f"{node} ({op}) {path}")
            if int(pid) in retired.get(node, set()):
                problems.append(f"{node}: old pid {pid} wrote {path} after a newer process")
            if latest.get(node, int(pid)) != int(pid):
                retired.setdefault(node, set()).add(latest[node])
            latest[node] = int(pid)
        return problems

    def invariants(self) -> str:
        changes = sum(1 for _ in open(self.journal))
        check(changes > 0, "the journal recorded no change at all")
        bad = self.journal_problems()
        check(not bad, f"two writers: {bad[:3]}")
        torn = check_folder(self.drive)
        check(not torn, f"corrupt files: {torn[:3]}")
        return f"{changes} changes, one writer each; 0 torn files"


class BucketRun(Run):
    """A Run whose shared folder is an S3 bucket on a local S3-compatible server (moto,
    tests/s3_server.py): nodes get GDRIVE_PATH=s3://... and AWS_ENDPOINT_URL; this script
    reads the bucket through the store, and copies it to ``self.drive`` for the folder checks."""

    def __init__(self, root: str, name: str, model: str, **settings):
        from rgym_exp.drive.backends import open_store
        from tests.s3_server import new_bucket, s3_endpoint, s3_env
        endpoint = s3_endpoint()
        aws = s3_env(endpoint)
        os.environ.update(aws)                      # this script's own store
        self.url = f"s3://{new_bucket(endpoint)}/swarm"
        self.store = open_store(self.url)
        super().__init__(root, name, model, **settings, **aws)
        self.env["GDRIVE_PATH"] = self.url

    def _json(self, path: str):
        import json
        try:
            return json.loads(self.store.read(f"experiments/exp/{path}", 1 << 20) or b"null")
        except Exception:  # noqa: BLE001 - torn or missing reads as nothing yet
            return None

    def state(self) -> dict:
        return self._json("state/current_state.json") or {}

    def peer(self, node: str) -> dict:
        return self._json(f"peers/{node}.json") or {}

    def metrics(self, node: str) -> list[dict]:
        import json
        data = self.store.read(f"experiments/exp/logs/{node}/metrics.jsonl", 1 << 22) or b""
        return [json.loads(line) for line in data.splitlines() if line.strip()]

    def rounds(self, node: str) -> list[int]:
        return [m["round"] for m in self.metrics(node)]

    def plant(self, r: int, seed: int) -> int:
        """Junk objects in rollouts/round_r: every regular-file kind of tests/junk.py."""
        local = os.path.join(self.dir, f"junk_{r}")
        plant_junk(local, 200, r, huge=False, seed=seed)
        planted = 0
        for name in os.listdir(local):
            path = os.path.join(local, name)
            if os.path.isfile(path) and "/" not in name and name not in ("", ".", ".."):
                try:
                    self.store.upload(path, f"experiments/exp/rollouts/round_{r}/{name}")
                    planted += 1
                except Exception:  # noqa: BLE001 - a name no store accepts is no junk here
                    pass
        return planted

    def invariants(self) -> str:
        fs, prefix = self.store.inner.fs, self.url[len("s3://"):]
        for key in fs.find(prefix):
            target = os.path.join(self.drive, *key[len(prefix) + 1:].split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as fh:
                fh.write(fs.cat_file(key))
        return super().invariants()


def kill_mid_round(run: Run, proc, node: str, min_round: int, rng: random.Random) -> str:
    """SIGKILL a worker at a random moment of a round >= min_round; says where."""
    run.until(lambda: run.peer(node).get("round", -1) >= min_round, f"{node} at round {min_round}")
    time.sleep(rng.uniform(0, 1.0))
    where = run.peer(node)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return f"round {where.get('round')} ({where.get('phase')})"


# --- the scenarios ----------------------------------------------------------------------------
# Each run is a function (root, model, long, rng) that starts processes, waits for them and
# returns one verdict per scenario it judges: a function that returns the evidence, or raises
# Failed with it. A run that breaks before its verdicts fails all its scenarios.

def judges(*names):
    def mark(run):
        run.scenarios = names
        return run
    return mark

@judges("worker SIGKILLed mid-round, restarted", "coordinator SIGKILLed, restarted")
def restarts(root, model, long, rng):
    """A worker killed mid-round, then the coordinator, each restarted with the same NODE_ID."""
    rounds = 14 if long else 10
    run = Run(root, "restarts", model, MAX_ROUNDS=rounds, CHECKPOINT_INTERVAL=2, CHAOS_MIN_CALL=0.3)
    procs = {"coord": run.start("coordinator", "coord"), "w1": run.start("worker", "w1"),
             "w2": run.start("worker", "w2")}
    try:
        kills = []
        for k in range(3 if long else 1):
            kills.append(kill_mid_round(run, procs["w1"], "w1", 2 + 3 * k, rng))
            procs["w1"] = run.start("worker", "w1")
        run.until(lambda: run.state().get("round", 0) >= rounds // 2, "half of the rounds")
        time.sleep(rng.uniform(0, 1.0))
        coord_at = run.state().get("round")
        procs["coord"].send_signal(signal.SIGKILL)
        procs["coord"].wait()
        time.sleep(rng.uniform(0.5, 2.0))             # the swarm runs on without it a while
        procs["coord"] = run.start("coordinator", "coord")
        codes = run.wait(procs)
    finally:
        run.close()

    def worker():
        resumed = check_resumed(run, codes, "w1", rounds, len(kills))
        w1 = run.rounds("w1")
        return (f"killed w1 at {', '.join(kills)}; resumed from checkpoint(s) of round "
                f"{', '.join(resumed)}; rounds {w1[0]}..{w1[-1]} each recorded once; exit 0; "
                f"{run.invariants()}")

    def coordinator():
        check(set(codes.values()) == {0}, f"exit codes {codes}")
        seen, w2 = run.rounds_seen, run.rounds("w2")
        resumed = re.search(r"resuming at round (\d+)", run.output("coord", 1))
        check(resumed, "the new coordinator did not resume from the state file")
        check(seen == sorted(seen), f"state went backwards: {seen}")
        check(w2 == sorted(set(w2)) and w2[-1] == rounds - 1, f"w2 recorded rounds {w2}")
        return (f"killed at round {coord_at}, restarted: 'resuming at round {resumed.group(1)}'; "
                f"state rounds seen only rose ({seen[0]}..{seen[-1]}); workers' rounds strictly "
                f"increasing; finished, exit 0")
    return [worker, coordinator]


@judges("straggler 5x slower", "worker that never comes back", "late joiner at round 10")
def uneven(root, model, long, rng):
    """A straggler 5x slower, a worker killed for good, a late joiner at round 10."""
    rounds = 24 if long else 20      # a late joiner at round 10 loads its model (7-10 s)
    run = Run(root, "uneven", model, MAX_ROUNDS=rounds, ROUND_TIMEOUT=2.5, PEER_TIMEOUT=8,
              CHAOS_MIN_CALL=0.4)
    procs = {"coord": run.start("coordinator", "coord"), "w1": run.start("worker", "w1"),
             "w2": run.start("worker", "w2", CHAOS_SLOW_FACTOR=5)}
    gone = run.start("worker", "w3")
    try:
        killed_at = kill_mid_round(run, gone, "w3", 1, rng)
        joined_at = run.until(lambda: run.state().get("round", 0) >= 10 and run.state()["round"],
                              "round 10")
        procs["w4"] = run.start("worker", "w4")
        codes = run.wait(procs)
    finally:
        run.close()

    def straggler():
        check(codes["coord"] == codes["w2"] == 0, f"exit codes {codes}")
        late = re.findall(r"round (\d+) timed out after \d+s with \d+ submission\(s\); late: "
                          r"[^\n]*w2", run.output("coord"))
        slow, fast = metrics(run.drive, "w2"), metrics(run.drive, "w1")
        ratio = (sum(m["time/round_s"] for m in slow) / len(slow)) / (
            sum(m["time/round_s"] for m in fast) / len(fast))
        r2 = [m["round"] for m in slow]
        check(late and ratio > 3, f"w2 named late in {len(late)} round(s), {ratio:.1f}x slower")
        check(r2 == sorted(set(r2)) and r2[-1] - r2[0] + 1 > len(r2), f"w2 rounds {r2}")
        return (f"w2 {ratio:.1f}x slower; the coordinator moved on after ROUND_TIMEOUT naming it "
                f"late in {len(late)} round(s); it caught up by joining the current round (did "
                f"{len(r2)} of {rounds}: {', '.join(map(str, r2[:5]))}, ...); exit 0")

    def never():
        check(codes["coord"] == codes["w1"] == 0, f"exit codes {codes}")
        named = re.search(r"worker w3 is gone: no heartbeat for \d+s \(last seen at round "
                          r"\d+[^)]*\)", run.output("coord"))
        state = run.state()
        check(named and state.get("finished"), "w3 not named, or the experiment did not finish")
        return (f"w3 killed at {killed_at}; log: '{named.group(0)}'; the experiment finished "
                f"all {state['round'] + 1} rounds; {run.invariants()}")

    def joiner():
        check(codes["w4"] == 0, f"exit codes {codes}")
        r4 = run.rounds("w4")
        check(r4 and r4[0] >= joined_at >= 10 and r4 == sorted(set(r4)), f"w4 rounds {r4}")
        return (f"w4 started when the coordinator was at round {joined_at}; its first round "
                f"was {r4[0]}, then {len(r4) - 1} more; exit 0")
    return [straggler, never, joiner]


@judges("clock 10 minutes off", "same NODE_ID twice: refused")
def clocks(root, model, long, rng):
    """Clocks 10 minutes off (+ a restart across them), and a second process with a running
    node's NODE_ID."""
    rounds = 16 if long else 12
    run = Run(root, "clocks", model, MAX_ROUNDS=rounds, ROUND_TIMEOUT=30, CHAOS_MIN_CALL=0.4)
    procs = {"coord": run.start("coordinator", "coord", CHAOS_CLOCK_OFFSET=-600),
             "w1": run.start("worker", "w1"),
             "w2": run.start("worker", "w2", CHAOS_CLOCK_OFFSET=600)}
    try:
        run.until(lambda: run.state().get("round", 0) >= 2, "round 2")
        procs["coord"].send_signal(signal.SIGKILL)
        procs["coord"].wait()
        procs["coord"] = run.start("coordinator", "coord", CHAOS_CLOCK_OFFSET=600)
        run.until(lambda: "resuming at round" in run.output("coord", 1),
                  "the coordinator to resume")
        twin = run.start("worker", "w1", home="machine2")
        twin_code = twin.wait(timeout=90)
        codes = run.wait(procs)
    finally:
        run.close()

    def clock():
        check(set(codes.values()) == {0}, f"exit codes {codes}")
        coord = run.output("coord")
        check("timed out" not in coord and not re.search(r"worker \S+ is gone", coord),
              "a round timed out or a worker was declared gone")
        left = re.search(r"resuming at round (\d+) \(from the state file; (\d+)s left", coord)
        check(left and int(left.group(2)) <= 30, "the resumed round's deadline was not kept")
        r1, r2 = run.rounds("w1"), run.rounds("w2")
        check(r1 == r2 == list(range(rounds)), f"rounds w1 {r1}, w2 {r2}")
        skew = metrics(run.drive, "w2")[-1]["time"] - metrics(run.drive, "w1")[-1]["time"]
        return (f"w2 at +600s, the coordinator at -600s, restarted at +600s in round "
                f"{left.group(1)} ({left.group(2)}s of its deadline kept); w2's metrics stamped "
                f"{skew:+.0f}s from w1's; no round timed out, nobody declared gone, both workers "
                f"did all {rounds} rounds")

    def duplicate():
        wrote = sum(1 for line in open(run.journal) if int(line.split(" ")[1]) == twin.pid)
        check(twin_code == 2 and wrote == 0, f"the second w1 exited {twin_code}, made {wrote} "
                                             "change(s)")
        check("NODE_ID w1 is registered with another key" in run.output("w1", 1),
              "no clear message")
        return (f"a second w1 (another machine: another key) exited 2: 'NODE_ID w1 is "
                f"registered with another key'; it changed 0 files; {run.invariants()}")
    return [clock, duplicate]


@judges("same NODE_ID after a freeze: takeover")
def takeover(root, model, long, rng):
    """A node frozen (SIGSTOP), replaced by a new process with its NODE_ID, then woken."""
    run = Run(root, "takeover", model, MAX_ROUNDS=8, CHAOS_MIN_CALL=0.3)
    procs = {"coord": run.start("coordinator", "coord"), "w2": run.start("worker", "w2")}
    old = run.start("worker", "w1")
    try:
        run.until(lambda: run.peer("w1").get("round", -1) >= 2, "w1 at round 2")
        time.sleep(rng.uniform(0, 0.8))
        old.send_signal(signal.SIGSTOP)
        frozen_at = run.peer("w1").get("round")
        procs["w1"] = run.start("worker", "w1", home="machine2",   # with w1's key file
                                KEY_DIR=os.path.join(run.dir, "home", ".config", "rl-swarm", "keys"))
        run.until(lambda: run.peer("w1").get("pid") == procs["w1"].pid
                  and run.peer("w1").get("round", -1) > frozen_at, "the new w1 to do a round")
        old.send_signal(signal.SIGCONT)
        old_code = old.wait(timeout=60)
        codes = run.wait(procs)
    finally:
        run.close()

    def verdict():
        check(set(codes.values()) == {0}, f"exit codes {codes}")
        check(old_code == 4 and "took over NODE_ID w1" in run.output("w1", 0),
              f"the woken process exited {old_code}")
        return (f"w1 frozen (SIGSTOP) at round {frozen_at}; a new w1 on another home took over "
                f"after watching its heartbeat; the old one, woken, said 'took over NODE_ID w1' "
                f"and exited 4; {run.invariants()}")
    return [verdict]


@judges("1,000 junk files in a rollout folder", "10% transient I/O errors for a whole run")
def junk_and_errors(root, model, long, rng):
    """1,000 junk files in each of rounds 0-2, with 10% transient I/O errors on every node."""
    rounds = 8 if long else 5
    run = Run(root, "junk_and_errors", model, MAX_ROUNDS=rounds, ROLLOUT_KEEP_LAST_N_ROUNDS=2)
    kinds = {}
    for r in range(3):
        kinds = plant_junk(os.path.join(exp_dir(run.drive), "rollouts", f"round_{r}"), 1000, r,
                           seed=r)
    faults = f"io_error=0.1,seed={rng.randrange(1000)}"
    codes = run.run_swarm(faults)

    def junk():
        check(set(codes.values()) == {0}, f"exit codes {codes}")
        out = run.output("w1") + run.output("w2")
        reads = [int(n) for n in re.findall(r"after (\d+) read\(s\) of \d+ peer file\(s\) listed",
                                            out)]
        rejected = sum(m["external/rejected"] for n in ("w1", "w2") for m in metrics(run.drive, n)
                       if m["round"] < 3)
        check(reads and max(reads) <= 2 + 2 and rejected > 0, f"reads per gather {reads}")
        for n in ("w1", "w2"):
            check(run.rounds(n) == list(range(rounds)), f"{n} rounds {run.rounds(n)}")
        return (f"{sum(kinds.values())} entries in each of rounds 0-2 ({len(kinds)} kinds incl. "
                f"100 MB, path-like names, a named pipe); every gather read at most {max(reads)} "
                f"files (J=2); {rejected} rejections counted; no crash, all {rounds} rounds, "
                "exit 0")

    def errors():
        check(set(codes.values()) == {0}, f"exit codes {codes}")
        retries = len(re.findall(r"retry \d+/\d+", "".join(run.output(n) for n in codes)))
        check(retries > 0, "no fault was injected")
        return (f"{retries} injected I/O errors retried across 3 nodes; all {rounds} rounds "
                f"finished, exit 0; {run.invariants()}")
    return [junk, errors]


@judges("all Drive faults at once")
def drive_faults(root, model, long, rng):
    """Every Drive fault at once: delayed visibility, stale and torn reads, conflict copies,
    slow listings, transient errors."""
    rounds = 8 if long else 5
    run = Run(root, "drive_faults", model, MAX_ROUNDS=rounds)
    faults = (f"delay=1,stale=0.3,stale_for=5,partial=0.05,conflict=0.1,slow_list=0.2,"
              f"io_error=0.05,seed={rng.randrange(1000)}")
    codes = run.run_swarm(faults)

    def verdict():
        check(set(codes.values()) == {0}, f"exit codes {codes}")
        for n in ("w1", "w2"):
            check(run.rounds(n) == list(range(rounds)), f"{n} rounds {run.rounds(n)}")
        copies = sum(" (1)" in f for _, _, files in os.walk(run.drive) for f in files)
        check(copies > 0, "no conflict copy was made")
        return (f"{faults.rsplit(',', 1)[0]}: {copies} conflict copies ignored; all {rounds} "
                f"rounds, exit 0; {run.invariants()}")
    return [verdict]


@judges("full disk / read-only folder")
def broken_folder(root, model, long, rng):
    """A worker whose Drive fills up mid-run, and one that joins a read-only folder."""
    run = Run(root, "broken_folder", model, MAX_ROUNDS=6, PEER_TIMEOUT=6, CHAOS_MIN_CALL=0.2)
    procs = {"coord": run.start("coordinator", "coord"), "w1": run.start("worker", "w1")}
    full = run.start("worker", "w2", faults=f"full_after={rng.randrange(30, 60)}")
    readonly = run.start("worker", "w3", faults="readonly_after=0")
    try:
        codes = run.wait(dict(procs, w2=full, w3=readonly))
    finally:
        run.close()

    def verdict():
        check(codes["coord"] == 0 and codes["w1"] == 0, f"exit codes {codes}")
        said_full = re.search(r"shared folder error: (the shared folder is full[^\n]*)",
                              run.output("w2"))
        said_ro = re.search(r"shared folder error: (the shared folder is read-only[^\n]*)",
                            run.output("w3"))
        check(codes["w2"] != 0 and said_full, f"w2 exit {codes['w2']}")
        check(codes["w3"] != 0 and said_ro, f"w3 exit {codes['w3']}")
        wrote = sum(1 for line in open(run.journal) if int(line.split(" ")[1]) == readonly.pid)
        check(wrote == 0, f"w3 changed {wrote} file(s) on a read-only folder")
        return (f"w2 (Drive full) exit {codes['w2']}: '{said_full.group(1)}'; w3 (read-only) "
                f"exit {codes['w3']}: '{said_ro.group(1)}', 0 changes; coordinator and w1 "
                f"finished, exit 0; {run.invariants()}")
    return [verdict]


@judges("truncated latest checkpoint")
def truncated_checkpoint(root, model, long, rng):
    """The newest checkpoint is cut short while its worker is down."""
    run = Run(root, "truncated_checkpoint", model, MAX_ROUNDS=8, CHECKPOINT_INTERVAL=1,
              CHAOS_MIN_CALL=0.2)
    procs = {"coord": run.start("coordinator", "coord")}
    w1 = run.start("worker", "w1")
    ckpts = os.path.join(exp_dir(run.drive), "checkpoints", "w1")

    def complete():
        names = os.listdir(ckpts) if os.path.isdir(ckpts) else []
        return sorted(int(d[6:]) for d in names
                      if os.path.exists(os.path.join(ckpts, d, "manifest.json")))
    try:
        run.until(lambda: len(complete()) >= 2, "two checkpoints")
        w1.send_signal(signal.SIGKILL)
        w1.wait()
        newest = complete()[-1]
        weights = os.path.join(ckpts, f"round_{newest}", "model.safetensors")
        with open(weights, "r+b") as fh:
            fh.truncate(os.path.getsize(weights) // 2)
        procs["w1"] = run.start("worker", "w1")
        codes = run.wait(procs)
    finally:
        run.close()

    def verdict():
        check(set(codes.values()) == {0}, f"exit codes {codes}")
        out = run.output("w1", 1)
        said = re.search(rf"checkpoint of round {newest} is unusable \(([^)]*\)?)\); falling back",
                         out)
        resumed = re.search(r"resumed from checkpoint of round (\d+)", out)
        check(said and resumed and int(resumed.group(1)) < newest, "no fallback in the log")
        r1 = run.rounds("w1")
        check(r1 == sorted(set(r1)), f"w1 rounds {r1}")
        return (f"round {newest}'s weights cut in half; log: 'checkpoint of round {newest} is "
                f"unusable ({said.group(1)}); falling back'; resumed from round "
                f"{resumed.group(1)}; rounds each once; exit 0; {run.invariants()}")
    return [verdict]


@judges("path-like or empty NODE_ID / EXPERIMENT_NAME")
def bad_names(root, model, long, rng):
    """NODE_ID / EXPERIMENT_NAME with separators, '..', or nothing."""
    cases = [("NODE_ID", "../evil"), ("NODE_ID", "a/b"), ("NODE_ID", ".."), ("NODE_ID", "a\\b"),
             ("EXPERIMENT_NAME", "../x"), ("EXPERIMENT_NAME", "/abs"), ("EXPERIMENT_NAME", "a/b")]
    drive = os.path.join(root, "bad_names", "drive")
    refused = []
    for name, value in cases:
        env = node_env(drive, model, os.path.join(root, "bad_names", "home"), NODE_ROLE="worker",
                       NODE_ID="w1")
        env[name] = value
        out = subprocess.run([sys.executable, "-m", "rgym_exp.runner.swarm_launcher"], env=env,
                             capture_output=True, text=True, timeout=60, cwd=REPO)
        refused.append(out.returncode == 2 and f"{name}={value!r} is not allowed" in out.stderr)
    created = os.path.exists(drive)
    code = ("from rgym_exp.config import load_config; c, _ = load_config(); "
            "print(c.NODE_ID, c.EXPERIMENT_NAME)")
    env = node_env(drive, model, os.path.join(root, "bad_names", "home"), NODE_ID="",
                   EXPERIMENT_NAME="")
    node, experiment = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                      text=True, timeout=60, cwd=REPO, check=True).stdout.split()

    def verdict():
        check(all(refused) and not created, f"{sum(refused)}/{len(cases)} refused with exit 2 "
                                            f"and a clear message; folder created: {created}")
        shown = ", ".join(f"{n}={v!r}" for n, v in cases[:4])
        return (f"{len(cases)}/{len(cases)} refused ({shown}, ...): exit 2, '<NAME>=<value> is not allowed', nothing created; empty means "
                f"the documented default (NODE_ID={node}, EXPERIMENT_NAME={experiment}), never "
                f"an empty path")
    return [verdict]


@judges("bucket: worker SIGKILLed mid-round, restarted",
        "bucket: junk objects and 10% transient errors")
def bucket(root, model, long, rng):
    """On an S3 bucket: junk objects in rounds 0-1, 10% transient errors on every node, a
    worker killed mid-round and restarted with the same NODE_ID."""
    rounds = 10 if long else 6
    run = BucketRun(root, "bucket", model, MAX_ROUNDS=rounds, CHECKPOINT_INTERVAL=2,
                    ROLLOUT_KEEP_LAST_N_ROUNDS=2, CHAOS_MIN_CALL=0.3)
    planted = [run.plant(r, seed=r) for r in range(2)]
    faults = f"io_error=0.1,seed={rng.randrange(1000)}"
    procs = {n: run.start(role, n, faults=faults) for role, n in
             (("coordinator", "coord"), ("worker", "w1"), ("worker", "w2"))}
    try:
        killed = kill_mid_round(run, procs["w1"], "w1", 2, rng)
        procs["w1"] = run.start("worker", "w1", faults=faults)
        codes = run.wait(procs)
    finally:
        run.close()

    def restart():
        resumed = check_resumed(run, codes, "w1", rounds, 1)
        return (f"{run.url}: killed w1 at {killed}; resumed from the checkpoint of round "
                f"{resumed[0]}; rounds each recorded once; exit 0; {run.invariants()}")

    def junk_errors():
        check(set(codes.values()) == {0}, f"exit codes {codes}")
        retries = len(re.findall(r"retry \d+/\d+", "".join(run.output(n) for n in codes)))
        check(retries > 0, "no fault was injected")
        check(run.rounds("w2") == list(range(rounds)), f"w2 rounds {run.rounds('w2')}")
        return (f"{sum(planted)} junk objects in rounds 0-1 ignored, {retries} injected errors "
                f"retried; all {rounds} rounds, exit 0")
    return [restart, junk_errors]


@judges(*(f"attack: {name}" for name in ATTACKS))
def attacks(root, model, long, rng):
    """A hostile writer of the folder against a running swarm (tests/attacks.py): planted
    files before it starts, forged records while it runs, kills and restarts meanwhile."""
    run = Run(root, "attacks", model, **ATTACK_SETTINGS)
    try:
        done = attacked_swarm(run.drive, os.path.join(run.dir, "outside"), run.start)
    finally:
        run.close()
    out = lambda node, restarted=False: run.output(node, -1 if restarted else None)  # noqa: E731

    def verdict(judge):
        def judged():
            try:
                return judge(done, out)
            except AssertionError as exc:
                raise Failed(str(exc)) from None
        return judged
    return [verdict(judge) for judge in ATTACKS.values()]


@judges("attack: the experiment folder deleted mid-run")
def vanished(root, model, long, rng):
    """The experiment folder deleted under a running swarm: every node stops, saying so."""
    run = Run(root, "vanished", model, MAX_ROUNDS=20, CHAOS_MIN_CALL=0.3, EVAL_INTERVAL=0)
    try:
        done = vanished_swarm(run.drive, run.start)
    finally:
        run.close()

    def stopped():
        check(all(c not in (0, None) for c in done.codes.values()), f"exit codes {done.codes}")
        check(max(done.took.values()) < 60, f"took {done.took}")
        for node in done.codes:
            check("vanished" in run.output(node), f"{node} did not say the folder vanished")
        return (f"every node stopped within {max(done.took.values()):.0f}s (exit codes "
                f"{sorted(set(done.codes.values()))}), each saying the folder vanished")
    return [stopped]


RUNS = [restarts, uneven, clocks, takeover, junk_and_errors, drive_faults, broken_folder,
        truncated_checkpoint, bad_names, bucket, attacks, vanished]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="every scenario once (~5 minutes)")
    parser.add_argument("--seed", type=int, default=None, help="kill points and fault seeds")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs, files)")
    parser.add_argument("--only", default="", help="comma-separated runs, e.g. restarts,uneven")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(10_000)
    rng = random.Random(seed)
    root = tempfile.mkdtemp(prefix="rl-swarm-chaos-")
    atexit.register(kill_all)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"chaos: seed {seed}, {'quick' if args.quick else 'long'} runs in {root}", flush=True)
    t0, passed, total, tried, held = time.monotonic(), 0, 0, 0, 0
    only = set(filter(None, args.only.split(",")))
    try:
        model = os.path.join(root, "tiny-llama")  # built like the tests' (quietly: own process)
        subprocess.run([sys.executable, "-c", "import sys; from tests.conftest import "
                        "build_model_dir; build_model_dir(sys.argv[1], 'llama', 400, seed=0)",
                        model], cwd=REPO, check=True, capture_output=True)
        for run in RUNS:
            if only and run.__name__ not in only:
                continue
            start = time.monotonic()
            try:
                verdicts = run(root, model, not args.quick, rng)
            except Exception as exc:  # noqa: BLE001 - the FAIL lines say what went wrong
                broken = describe(exc)
                verdicts = [failing(broken)] * len(run.scenarios)
            finally:
                kill_all()
            took = time.monotonic() - start
            for name, verdict in zip(run.scenarios, verdicts):
                try:
                    line, ok = f"PASS  {name}: {verdict()}", True
                except Exception as exc:  # noqa: BLE001
                    line, ok = f"FAIL  {name}: {describe(exc)} (logs: {root}/{run.__name__})", False
                    args.keep = True
                total, passed = total + 1, passed + ok
                if name.startswith("attack: "):
                    tried, held = tried + 1, held + ok
                print(f"{line} [{took:.0f}s]", flush=True)
    finally:
        kill_all()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"chaos: all runs took {time.monotonic() - t0:.0f}s", flush=True)
    print(f"chaos: {passed}/{total} scenarios passed", flush=True)
    print(f"chaos: attacks tried {tried}, held {held}", flush=True)
    return 0 if passed == total else 1


def failing(evidence: str):
    def verdict():
        raise Failed(evidence)
    return verdict


def describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, Failed) else f"{type(exc).__name__}: {exc}"


if __name__ == "__main__":
    sys.exit(main())
