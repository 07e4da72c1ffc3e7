"""A hostile writer of the shared folder, against a running swarm (issue 20): for
tests/test_attacks.py and bench/chaos.py.

``attacked_swarm`` runs a coordinator and workers w1, w2 through the real launcher (a
``start(role, node)`` the caller gives) while an ``Attacker`` plants files before they
start and forges more while they run, in this order:

* before: a junk ``peers/W1.json``; records nested 600 deep (a peer record, a submission
  and the state file); symlink loops in peers/, rollouts/ and submissions/; a named pipe
  in peers/; a directory at w2's peer record and at w1's round-2 submission, a file where
  w2's log folder belongs; symlinks out of the experiment for round 3's rollout folder, w1's
  log folder and w2's checkpoint folder (each to a folder outside with a file in it);
  forged credit (an unsigned record claiming w1's groups were used 10^9 times);
* all the time, once w1 has registered: a forged ``peers/w1.json`` (unsigned, or signed by
  another key) every 0.1 s;
* round 1: the coordinator is killed and restarted (the deep files still there);
* round 2: a forged state file saying finished; rollout files named ``w2.7.s64.json`` (not
  w2's) and ``coord.s5.json``; forged round-3 submissions of w1 and w2; round 1's rollout
  folder swapped for a symlink to a folder outside (retention deletes it next);
* round 3: a forged state at round 999,999,999; experiment.json replaced by one signed by
  another key;
* round 4: w1 is killed, its newest checkpoint's weights replaced by a symlink to
  /dev/zero, and w1 restarted.

``VERDICTS`` judge one attack each from what the run left (exit codes, logs, metrics,
submissions, the folder, status): each returns its evidence or raises AssertionError.
``vanished_swarm`` deletes the experiment folder under a running swarm.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
import time
from dataclasses import asdict
from types import SimpleNamespace

from genrl.rollouts import FILE_KIND, SCHEMA_VERSION
from rgym_exp.drive.store import FolderStore
from rgym_exp.records import PeerRecord, RoundState
from rgym_exp.trust import Keys, Trust

DEEP = b'{"a": ' * 600 + b"1" + b"}" * 600
ROUNDS = 8
SETTINGS = dict(MAX_ROUNDS=ROUNDS, CHECKPOINT_INTERVAL=1, CHECKPOINT_KEEP=2,
                ROLLOUT_KEEP_LAST_N_ROUNDS=2, CHAOS_MIN_CALL=0.3, EVAL_INTERVAL=0)
FORGED_QUESTION = "Forged: what is 40 + 2?"


def _json(path: str):
    try:
        with open(path, "rb") as fh:
            return json.loads(fh.read())
    except (OSError, ValueError):
        return {}


class Attacker:
    def __init__(self, drive: str, outside: str, name: str = "exp"):
        self.root = os.path.join(drive, "experiments", name)
        self.rel = f"experiments/{name}"
        self.outside = outside
        self.mallory = Keys.generate()
        self.done: list[str] = []           # what was done, in order
        self._stop = threading.Event()
        self._thread = None

    def path(self, *parts) -> str:
        return os.path.join(self.root, *parts)

    def put(self, rel: str, data: bytes) -> None:
        full = self.path(*rel.split("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        tmp = f"{full}.attack-tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, full)

    def forge(self, rel: str, doc: dict, as_node: str) -> bytes:
        """``doc`` signed by Mallory's key in ``as_node``'s name."""
        return Trust(None, self.mallory, as_node).seal(f"{self.rel}/{rel}", json.dumps(doc).encode())

    def state(self) -> dict:
        return _json(self.path("state", "current_state.json"))

    def outside_files(self) -> dict[str, bytes]:
        out = {}
        for folder, _, files in os.walk(self.outside):
            for name in files:
                full = os.path.join(folder, name)
                with open(full, "rb") as fh:
                    out[os.path.relpath(full, self.outside)] = fh.read()
        return out

    # --- before the swarm starts -----------------------------------------------------------

    def plant(self) -> None:
        for sub in ("rounds", "logs", "ckpt/round_0", "victim"):
            os.makedirs(os.path.join(self.outside, sub), exist_ok=True)
            with open(os.path.join(self.outside, sub, "keep.txt"), "w") as fh:
                fh.write("outside the experiment: never written, never deleted\n")
        self.put("peers/W1.json", b'{"node_id": "W1", "role": "worker"}')
        self.put("peers/deep.json", DEEP)
        self.put("submissions/round_1/deep.json", DEEP)
        self.put("state/current_state.json", DEEP)
        self.put("peers/evil.json", json.dumps(asdict(PeerRecord(
            "evil", "worker", "s", 1, "running", used_from={"w1": [10 ** 9, 10 ** 15]}))).encode())
        for folder in ("peers", "rollouts/round_1", "submissions/round_1"):
            os.makedirs(self.path(*folder.split("/")), exist_ok=True)
            os.symlink("loop.json", self.path(*folder.split("/"), "loop.json"))
        os.mkfifo(self.path("peers", "fifo.json"))
        os.makedirs(self.path("peers", "w2.json"))
        os.makedirs(self.path("submissions", "round_2", "w1.json"))
        self.put("logs/w2", b"a file where w2's log folder belongs")
        os.makedirs(self.path("rollouts"), exist_ok=True)
        os.symlink(os.path.join(self.outside, "rounds"), self.path("rollouts", "round_3"))
        os.makedirs(self.path("logs"), exist_ok=True)
        os.symlink(os.path.join(self.outside, "logs"), self.path("logs", "w1"))
        os.makedirs(self.path("checkpoints"), exist_ok=True)
        os.symlink(os.path.join(self.outside, "ckpt"), self.path("checkpoints", "w2"))
        self.done.append("planted")

    # --- while it runs -----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        forged = asdict(PeerRecord("w1", "worker", "forger", 10 ** 9, "running", host="evil",
                                   pid=1, phase="forged"))
        k, once, own = 0, set(), self.path("peers", "w1.json")
        while not self._stop.wait(0.1):
            if k == 0:      # w1 registers first (trust on first use): forge only after that
                try:
                    with open(own, "rb") as fh:
                        if b'"signature"' not in fh.read():
                            continue
                except OSError:
                    continue
            if k == 0:      # and Mallory registers a key for w1 too, later than w1's
                Trust(FolderStore(os.path.dirname(os.path.dirname(self.root))), self.mallory,
                      "w1").register(self.rel)
                self.done.append("registered another key for w1")
            k += 1
            self.put("peers/w1.json", json.dumps(forged).encode() if k % 2 else
                     self.forge("peers/w1.json", forged, "w1"))
            r = self.state().get("round", -1) if isinstance(self.state(), dict) else -1
            try:
                if r >= 2 and "round 2" not in once:
                    once.add("round 2")
                    self._round_2()
                if r >= 3 and "round 3" not in once:
                    once.add("round 3")
                    self._round_3()
            except OSError as exc:       # the swarm moved on meanwhile: say so, go on
                self.done.append(f"failed: {exc}")

    def _round_2(self) -> None:
        finished = asdict(RoundState(round=2, started_at=0, deadline=0, max_rounds=ROUNDS,
                                     finished=True))
        self.put("state/current_state.json", json.dumps(finished).encode())
        self.done.append("forged finished state")
        doc = {"schema": SCHEMA_VERSION, "kind": FILE_KIND, "node_id": "w2", "round": 2,
               "chunk": 7, "created_at": 0.0, "groups": [{
                   "model": "m", "question": FORGED_QUESTION, "source": {},
                   "completions": ["<answer>42</answer>", "41"], "rewards": [1.0, 0.0]}] * 4}
        self.put("rollouts/round_2/w2.7.s64.json", json.dumps(doc).encode())
        self.put("rollouts/round_2/coord.s5.json",
                 json.dumps(dict(doc, node_id="coord")).encode())
        self.done.append("forged rollouts")
        for node in ("w1", "w2"):
            self.put(f"submissions/round_3/{node}.json", json.dumps(
                {"round": 3, "node_id": node, "metrics": {"reward/mean": 1.0}}).encode())
        self.done.append("forged submissions")
        old = self.path("rollouts", "round_1")
        if os.path.isdir(old) and not os.path.islink(old):
            os.rename(old, self.path("rollouts", "old-round_1"))
            os.symlink(os.path.join(self.outside, "victim"), old)
            self.done.append("round_1 swapped for a link")

    def _round_3(self) -> None:
        self.put("state/current_state.json", json.dumps(asdict(RoundState(
            round=999_999_999, started_at=0, deadline=0, max_rounds=10 ** 9))).encode())
        self.done.append("forged state 999999999")
        info = _json(self.path("experiment.json"))
        info.pop("signature", None)
        info.update(coordinator_key=self.mallory.public, instance="mallory's")
        self.put("experiment.json", self.forge("experiment.json", info, info.get("coordinator",
                                                                                  "coord")))
        self.done.append("experiment.json replaced")

    def poison_checkpoint(self, node: str) -> int:
        """Replace ``node``'s newest complete checkpoint's weights by a link to /dev/zero."""
        folder = self.path("checkpoints", node)
        rounds = sorted(int(d[6:]) for d in os.listdir(folder) if d.startswith("round_")
                        and os.path.exists(os.path.join(folder, d, "manifest.json")))
        weights = os.path.join(folder, f"round_{rounds[-1]}", "model.safetensors")
        os.remove(weights)
        os.symlink("/dev/zero", weights)
        self.done.append(f"round {rounds[-1]} weights -> /dev/zero")
        return rounds[-1]


def wait_for(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def attacked_swarm(drive: str, outside: str, start, timeout: float = 300) -> SimpleNamespace:
    """Run the swarm under attack (module doc). ``start(role, node)`` starts a launcher
    process (a Popen) on ``drive`` with SETTINGS."""
    attacker = Attacker(drive, outside)
    attacker.plant()
    before = attacker.outside_files()
    procs = {"coord": start("coordinator", "coord"), "w1": start("worker", "w1"),
             "w2": start("worker", "w2")}
    first = {}
    try:
        attacker.start()
        # progress from what the workers wrote: the state file itself is forged meanwhile
        done = lambda node: max([m.get("round", -1) for m in metrics(  # noqa: E731
            SimpleNamespace(root=attacker.root), node)], default=-1)
        wait_for(lambda: done("w1") >= 1, timeout, "round 1")
        procs["coord"].send_signal(signal.SIGKILL)
        first["coord"] = procs["coord"].wait()
        procs["coord"] = start("coordinator", "coord")
        checkpoints = attacker.path("checkpoints", "w1")
        wait_for(lambda: done("w1") >= 4 and os.path.isdir(checkpoints) and len(
            [d for d in os.listdir(checkpoints) if d.startswith("round_")]) >= 2, timeout,
                 "round 4 and two checkpoints of w1")
        procs["w1"].send_signal(signal.SIGKILL)
        first["w1"] = procs["w1"].wait()
        poisoned = attacker.poison_checkpoint("w1")
        procs["w1"] = start("worker", "w1")
        end, codes = time.monotonic() + timeout, {}
        for name, proc in procs.items():
            codes[name] = proc.wait(timeout=max(1, end - time.monotonic()))
    finally:
        attacker.stop()
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    return SimpleNamespace(drive=drive, root=attacker.root, attacker=attacker, codes=codes,
                           first=first, poisoned=poisoned, outside_before=before,
                           outside_after=attacker.outside_files())


# --- what the run left, read -------------------------------------------------------------------

def metrics(run, node: str) -> list[dict]:
    try:
        with open(os.path.join(run.root, "logs", node, "metrics.jsonl")) as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except OSError:
        return []


def used_questions(run) -> set[str]:
    """The question keys every submission says its node trained on (live and retired)."""
    keys = set()
    for folder, _, files in os.walk(run.root):
        for name in files:
            doc = _json(os.path.join(folder, name)) if name.endswith(".json") else {}
            subs = [doc] if "external" in doc else [
                _json_text(t) for t in (doc.get("files") or {}).values()] if "files" in doc else []
            for sub in subs:
                keys |= {e.get("key") for e in sub.get("external", []) if isinstance(e, dict)}
    return keys


def _json_text(text):
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return {}


def check(condition, evidence: str) -> None:
    if not condition:
        raise AssertionError(evidence)


def all_finished(run) -> None:
    check(run.codes == {"coord": 0, "w1": 0, "w2": 0}, f"exit codes {run.codes}")


def v_forged_finished_state(run, out):
    all_finished(run)
    state = _json(os.path.join(run.root, "state", "current_state.json"))
    rounds = [m["round"] for m in metrics(run, "w2")]
    check(state.get("finished") and state.get("round") == ROUNDS - 1 and rounds[-1] == ROUNDS - 1,
          f"state {state.get('round')}, w2 rounds {rounds}")
    return (f"a forged 'finished: true' at round 2 was ignored: w2 did rounds {rounds[0]}.."
            f"{rounds[-1]} of {ROUNDS}, the experiment finished at round {state['round']}")


def v_forged_round_999999999(run, out):
    all_finished(run)
    last = {n: metrics(run, n)[-1]["round"] for n in ("w1", "w2")}
    check(set(last.values()) == {ROUNDS - 1} and "999999999" not in out("w1") + out("w2"),
          f"last rounds {last}")
    return f"a forged state at round 999,999,999 was ignored: the workers ended at {last}"


def v_forged_peer_record(run, out):
    all_finished(run)
    check("took over NODE_ID" not in out("w1"), "w1 was taken over")
    check("forged" not in out("coord") + out("w2"), "a forged record of w1 was believed")
    rounds = sorted({m["round"] for m in metrics(run, "w1")})
    check(rounds[-1] == ROUNDS - 1, f"w1 did rounds {rounds}")
    return ("peers/w1.json forged every 0.1 s (unsigned, or signed by a key Mallory registered "
            f"for w1 after w1 did) was refused by every reader; w1 did rounds {rounds[0]}.."
            f"{rounds[-1]}, exit 0")


def v_junk_case_twin(run, out):
    check(run.codes["w1"] == 0 and "only in case" not in out("w1"), f"w1 exit {run.codes['w1']}")
    check(re.search(r"refused \d+ file\(s\)[^\n]*unsigned \(claiming[^\n]*\bW1\b", out("coord")),
          "no refusal line names W1")
    return ("a junk peers/W1.json (W1 registered no key) was refused and named in the round "
            "lines; w1 restarted and finished, exit 0")


def v_rollouts_in_another_s_name(run, out):
    all_finished(run)
    text = out("w1") + out("w2")
    check("w2.7.s64.json claims" not in text and "peer w2's file" not in text,
          "w2 was distrusted")
    check(re.search(r"refused \d+ file\(s\) that failed verification, ignored: [^\n]*claiming"
                    r"[^\n]*w2", out("w1")), "w1 named no refused file of w2")
    return ("rollouts/round_2/w2.7.s64.json (not w2's) was refused by its readers and named in "
            "their round line; w2's own claims still count")


def v_coordinator_s_rollouts(run, out):
    all_finished(run)
    check("under the coordinator's name" in out("w1") + out("w2"), "no rejection logged")
    return "coord.s5.json was rejected: the coordinator publishes no rollouts"


def v_forged_credit(run, out):
    from rgym_exp.drive.store import FolderStore
    from rgym_exp.status import render, take_snapshot
    snap = take_snapshot(FolderStore(run.drive), "exp")
    rows = {n.node_id: n for n in snap.nodes}
    check("evil" not in rows and rows["w1"].used_by_peers < 10 ** 3,
          f"USED BY PEERS w1 = {rows['w1'].used_by_peers}; rows {sorted(rows)}")
    line = [x for x in render(snap).splitlines() if "claiming to be evil's" in x]
    check(line, "status does not name the refused record")
    return f"status shows w1 USED BY PEERS {rows['w1'].used_by_peers}, no 'evil' row; '{line[0]}'"


def v_nested_600_deep(run, out):
    all_finished(run)
    text = "".join(out(n) for n in ("coord", "w1", "w2"))
    check("RecursionError" not in text and "Traceback" not in text, "a traceback in the logs")
    check(re.search(r"resuming at round \d+", out("coord")), "the coordinator did not resume")
    return ("state, peer record and submission nested 600 deep: the coordinator (started and "
            "restarted on them) and w1's claim after its restart read them as refused, no traceback")


def v_symlink_loops(run, out):
    all_finished(run)
    text = "".join(out(n) for n in ("coord", "w1", "w2"))
    check(re.search(r"skipping \S+/loop\.json in a listing", text), "no warning about a loop")
    listed = [m["external/files_listed"] for m in metrics(run, "w2")[1:3]]
    check(all(n > 0 for n in listed), f"w2 listed {listed} peer files in rounds 1-2")
    return (f"symlink loops in peers/, rollouts/round_1 and submissions/round_1 skipped with a "
            f"warning; exchange went on (w2 listed {listed} peer files in rounds 1-2)")


def v_planted_directories(run, out):
    all_finished(run)
    text = out("w1") + out("w2")
    for what in ("peers/w2.json", "submissions/round_2/w1.json", "logs/w2"):
        check(re.search(rf"moved aside a \S+ planted at experiments/exp/{re.escape(what)} ", text)
              or re.search(rf"moved aside \S+ \S+ planted at experiments/exp/{re.escape(what)} ",
                           text), f"nothing moved aside at {what}")
    check(2 in [m["round"] for m in metrics(run, "w1")] or run.first.get("w1"), "w1 skipped 2")
    return ("a directory at peers/w2.json and submissions/round_2/w1.json and a file at logs/w2 "
            "were moved aside (named in a warning); both nodes wrote their own files")


def v_symlinked_folders(run, out):
    all_finished(run)
    check(run.outside_after == run.outside_before,
          f"outside changed: {sorted(set(run.outside_after) ^ set(run.outside_before))}")
    check(os.path.isdir(os.path.join(run.root, "logs", "w1")) and not os.path.islink(
        os.path.join(run.root, "logs", "w1")), "logs/w1 is still a link")
    return ("rollouts/round_3, logs/w1 and checkpoints/w2 linked outside, and rollouts/round_1 "
            "swapped for a link before retention: nothing written or deleted outside "
            f"({len(run.outside_before)} files there, unchanged)")


def v_dev_zero_checkpoint(run, out):
    check(run.codes["w1"] == 0, f"w1 exit {run.codes['w1']}")
    second = out("w1", restarted=True)
    check(re.search(rf"checkpoint of round {run.poisoned} is unusable \([^)]*symbolic link",
                    second), "no refusal of the poisoned checkpoint")
    resumed = re.search(r"resumed from checkpoint of round (\d+)", second)
    check(resumed and int(resumed.group(1)) < run.poisoned, "no fallback")
    return (f"round {run.poisoned}'s weights replaced by a link to /dev/zero: refused without "
            f"reading a byte; w1 resumed from round {resumed.group(1)}")


def v_forged_submissions(run, out):
    all_finished(run)
    text = out("w1") + out("w2")
    check("round 3 already submitted" not in text, "a forged submission was taken as done")
    rounds = {n: [m["round"] for m in metrics(run, n)] for n in ("w2",)}
    check(3 in rounds["w2"], f"w2 rounds {rounds}")
    return "forged round-3 submissions of w1 and w2 neither closed the round nor skipped it"


def v_replaced_experiment_json(run, out):
    all_finished(run)
    check("had been replaced by a file this coordinator did not sign: written back" in out("coord"),
          "the coordinator did not write experiment.json back")
    info = _json(os.path.join(run.root, "experiment.json"))
    check(info.get("instance") != "mallory's", "experiment.json is still Mallory's")
    return "experiment.json replaced (another key): running nodes kept theirs; the coordinator wrote it back"


def v_one_line_per_round(run, out):
    lines = re.findall(r"round (\d+): refused \d+ file\(s\)", out("w2"))
    check(lines and len(lines) == len(set(lines)), f"refusal lines {lines}")
    return f"w2 named its refusals in {len(lines)} line(s), at most one per round"


VERDICTS = {
    "forged state: finished": v_forged_finished_state,
    "forged state: round 999,999,999": v_forged_round_999999999,
    "forged peer record every 0.1 s": v_forged_peer_record,
    "junk peers/W1.json at a restart": v_junk_case_twin,
    "rollout file in another node's name": v_rollouts_in_another_s_name,
    "rollouts under the coordinator's id": v_coordinator_s_rollouts,
    "forged credit": v_forged_credit,
    "records nested 600 deep": v_nested_600_deep,
    "symlink loops in listings": v_symlink_loops,
    "planted directory at a node's own path": v_planted_directories,
    "symlinked round, log, checkpoint folders": v_symlinked_folders,
    "checkpoint file linked to /dev/zero": v_dev_zero_checkpoint,
    "forged submissions": v_forged_submissions,
    "experiment.json replaced": v_replaced_experiment_json,
    "refusals named once per round": v_one_line_per_round,
}


def vanished_swarm(drive: str, start, timeout: float = 240) -> SimpleNamespace:
    """Delete the experiment folder under a running swarm (at round 1); how long each node
    took to stop, and its exit code."""
    root = os.path.join(drive, "experiments", "exp")
    procs = {n: start(role, n) for role, n in (("coordinator", "coord"), ("worker", "w1"),
                                               ("worker", "w2"))}
    try:
        wait_for(lambda: _json(os.path.join(root, "state", "current_state.json")).get(
            "round", -1) >= 1, timeout, "round 1")
        for _ in range(50):         # the nodes write meanwhile: delete until it is gone
            shutil.rmtree(root, ignore_errors=True)
            if not os.path.exists(os.path.join(root, "experiment.json")):
                break
            time.sleep(0.05)
        gone_at, codes, took = time.monotonic(), {}, {}
        for name, proc in procs.items():
            codes[name] = proc.wait(timeout=timeout)
            took[name] = time.monotonic() - gone_at
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    return SimpleNamespace(codes=codes, took=took, root=root)
