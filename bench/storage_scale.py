"""What does the shared folder cost as the swarm grows? Simulated nodes, real protocol code.

    python bench/storage_scale.py --quick    # N = 4, 16, 64, 256 on a counting store; 4, 16 on Drive
    python bench/storage_scale.py --quick --detail   # + where the requests go
    python bench/storage_scale.py            # more rounds; the fake Drive up to N = 64
    RL_SWARM_CODE=/path/to/older/checkout python bench/storage_scale.py --quick   # the code before

N workers and a coordinator run the real Worker.run / Coordinator.run loops, heartbeat,
log copies, exchange, submissions and round retirement (rgym_exp/), each in its own
threads, on a virtual clock: a thread's pause or wait blocks it until the clock reaches
its end, and the clock jumps ahead whenever every thread is waiting (a node's locks that
are held across store calls wait on the clock too). Only the model is
simulated: generating takes 120 s x the node's speed (0.75-1.35, fixed per node; held-out
evaluation 30 s every EVAL_INTERVAL rounds), training 40 s x speed, each logging a
progress line every 30 s as a node whose output goes to a file does; the groups are
synthetic (I = J = 4, G = 8, completions of ~800 characters, a quarter of the groups
with reward signal). Settings are the defaults except ROLLOUT_KEEP_LAST_N_ROUNDS=2, so
retiring old rounds shows within a short run. Checkpoint saves are not simulated: their
requests are counted from the file sizes (0.54 GB weights-only by default, 1.62 GB with
float32 AdamW moments before; bench/checkpoint_restart.py) and the upload chunk size.

Two stores: a counting store (a local folder; one op per store call: list, read, write..)
and the fake Drive server of the tests (tests/fake_drive.py: strict, a 2 s listing lag)
reached by the real API client, where every HTTP request counts and takes 80-250 ms of
virtual time. Measured over the rounds after start-up: a worker's requests and bytes per
round, the coordinator's requests per minute, the items created and removed per round.
From those: the largest swarm one Cloud project's Drive quota carries (12,000 requests a
minute, Google's default for older projects) and the days until a shared drive's item cap
(400,000 items, trash included; a mount's deletes stay in the trash for 30 days). The last
line is ``ops ratio N=256/N=4: X`` for a worker's store operations per round.
"""

from __future__ import annotations

import argparse
import heapq
import importlib.util
import inspect
import logging
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE = os.path.abspath(os.environ.get("RL_SWARM_CODE") or REPO)
sys.path.insert(0, CODE)

from genrl.rollouts import RolloutGroup  # noqa: E402,F401
from genrl.sapo import ScoredGroup  # noqa: E402
from rgym_exp import coordinator as coordinator_mod, worker as worker_mod  # noqa: E402
from rgym_exp.config import load_config  # noqa: E402
from rgym_exp.drive import store as store_mod  # noqa: E402
from rgym_exp.drive.layout import Layout  # noqa: E402
from rgym_exp.experiment import Experiment, question_source  # noqa: E402
from rgym_exp.heartbeat import Heartbeat  # noqa: E402
from rgym_exp.node_log import NodeLogs  # noqa: E402
from rgym_exp.records import RecordReader  # noqa: E402
from rgym_exp.waiting import Waiter  # noqa: E402

GEN_S, TRAIN_S, EVAL_S, LOAD_S = 120.0, 40.0, 30.0, 20.0
SIGNAL, TEXT_CHARS = 0.25, 800
QUOTA_PER_MINUTE, ITEM_CAP, TRASH_DAYS = 12_000, 400_000, 30
LATENCY = (0.08, 0.25)           # seconds per Drive request (virtual)
CHECKPOINT = {"before": (0.538e9, 1.076e9, 8 << 20), "now": (0.538e9, 0.0, 32 << 20)}
log = logging.getLogger("storage_scale")


# --- the virtual clock -------------------------------------------------------------------

class VirtualClock:
    """Time for a set of actor threads: ``sleep`` blocks until the clock reaches its end;
    when every actor sleeps, the clock jumps to the earliest end. A thread's Drive latency
    is paid at its next sleep (``owe``), never while it holds a lock."""

    def __init__(self, start: float = 1_000_000.0):
        self.t, self._lock, self._running, self._heap, self._seq = start, threading.Lock(), 0, [], 0
        self._debt = threading.local()

    def __call__(self) -> float:
        return self.t

    def enter(self) -> None:
        with self._lock:
            self._running += 1

    def leave(self) -> None:
        with self._lock:
            self._running -= 1
            self._advance()

    def owe(self, seconds: float) -> None:
        self._debt.s = getattr(self._debt, "s", 0.0) + seconds

    def sleep(self, seconds: float) -> None:
        extra, self._debt.s = getattr(self._debt, "s", 0.0), 0.0
        wake = threading.Event()
        with self._lock:
            self._seq += 1
            heapq.heappush(self._heap, (self.t + max(0.0, seconds) + extra, self._seq, wake))
            self._running -= 1
            self._advance()
        wake.wait()

    def _advance(self) -> None:
        if self._running > 0 or not self._heap:
            return
        self.t = max(self.t, self._heap[0][0])
        while self._heap and self._heap[0][0] <= self.t:
            self._running += 1
            heapq.heappop(self._heap)[2].set()


class VirtualTime:
    """Stands in for the ``time`` module of the protocol's modules."""

    def __init__(self, clock: VirtualClock):
        self.clock = clock

    def time(self) -> float:
        return self.clock.t

    monotonic = perf_counter = time

    def sleep(self, seconds: float) -> None:
        self.clock.sleep(seconds)

    def __getattr__(self, name):
        return getattr(time, name)


class ClockLock:
    """A node's lock held across store calls (its heartbeat's, its log copier's): a thread
    that finds it taken waits on the virtual clock, so the holder's retry pauses can pass
    (a plain lock would block it in real time and stop the clock)."""

    def __init__(self, clock: VirtualClock):
        self.clock, self._inner = clock, threading.RLock()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        while not self._inner.acquire(blocking=False):
            if not blocking:
                return False
            self.clock.sleep(0.05)
        return True

    def release(self) -> None:
        self._inner.release()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def actor(clock: VirtualClock, name: str, body) -> threading.Thread:
    clock.enter()

    def run():
        try:
            body()
        except Exception:  # noqa: BLE001 - a broken node must not hang the clock
            log.exception("%s failed", name)
        finally:
            clock.leave()
    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


# --- stores ------------------------------------------------------------------------------

class Census:
    """Items created and removed in the shared folder (files and folders)."""

    def __init__(self, root: str):
        self.root, self.removed, self.lock = root, 0, threading.Lock()

    def items(self) -> int:
        return sum(len(dirs) + len(files) for _, dirs, files in os.walk(self.root))

    def doomed(self, full: str) -> None:
        n = 1 if os.path.isfile(full) else sum(len(d) + len(f) + 0 for _, d, f in os.walk(full))
        n += os.path.isdir(full)
        with self.lock:
            self.removed += n


class Tally(Counter):
    """The Drive API store's request counter: also counts each request under the store
    call (operation and area of the folder) of the thread that made it."""

    def __init__(self, owner: "Counting"):
        super().__init__()
        self.owner = owner

    def __setitem__(self, method, value):
        made = value - self.get(method, 0)
        super().__setitem__(method, value)
        here = self.owner._here
        if made > 0 and getattr(here, "area", None):
            here.made += made
            with self.owner._lock:
                self.owner.areas[f"{here.area}: {method}"] += made


class Counting:
    """One node's view of a store: counts its calls (and, on the Drive API, its requests)
    by kind, and the bytes it moved; charges Drive's latency to the calling thread."""

    def __init__(self, inner, clock: VirtualClock, census: Census = None, api=None):
        self.inner, self.clock, self.census, self.api = inner, clock, census, api
        self.description = inner.description
        self.ops, self.areas, self.bytes, self._lock = Counter(), Counter(), 0, threading.Lock()
        self._here = threading.local()            # the store call this thread is in
        if api is not None:
            api.calls = Tally(self)

    def requests(self) -> int:
        return sum(self.api.calls.values()) if self.api is not None else sum(self.ops.values())

    def _call(self, kind: str, fn, *args, size: int = 0):
        path = (args[1] if kind == "upload" else args[0]).split("/")
        area = f"{kind} {path[2] if len(path) > 2 else '-'}"
        self._here.area, self._here.made = area, 0
        try:
            out = fn(*args)
        finally:
            with self._lock:
                self.ops[kind] += 1
                if self.api is None:
                    self.areas[area] += 1
            if self.api is not None:
                self.clock.owe(sum(random.uniform(*LATENCY) for _ in range(self._here.made)))
            self._here.area = None
        if kind == "read" and out:
            size = len(out)
        with self._lock:
            self.bytes += size
        return out

    def read(self, path, max_bytes):
        return self._call("read", self.inner.read, path, max_bytes)

    def write(self, path, data):
        return self._call("write", self.inner.write, path, data, size=len(data))

    def create_exclusive(self, path, data):
        return self._call("create", self.inner.create_exclusive, path, data, size=len(data))

    def list(self, folder):
        return self._call("list", self.inner.list, folder)

    def delete(self, path):
        if self.census is not None:
            full = os.path.join(self.census.root, *path.split("/"))
            if os.path.exists(full):
                self.census.doomed(full)
        return self._call("delete", self.inner.delete, path)

    def move(self, src, dst):
        return self._call("move", self.inner.move, src, dst)

    def makedirs(self, folder):
        return self._call("makedirs", self.inner.makedirs, folder)

    def upload(self, local_path, path):
        return self._call("upload", self.inner.upload, local_path, path,
                          size=os.path.getsize(local_path))

    def download(self, path, local_path, max_bytes):
        return self._call("download", self.inner.download, path, local_path, max_bytes)


def retrying(store, clock: VirtualClock):
    """RetryingStore as the code under test builds it, its pauses on the virtual clock."""
    out = store_mod.RetryingStore(store, sleep=clock.sleep)
    if hasattr(out, "clock"):
        out.clock = clock
    return out


def folder_wait(clock):
    if not hasattr(store_mod, "FolderWait"):        # the code before had none
        return {}
    from rgym_exp.drive.layout import ROUND_FOLDERS
    return {"folder_wait": store_mod.FolderWait(ROUND_FOLDERS, clock=clock)}


def load_fake_drive():
    spec = importlib.util.spec_from_file_location("strict_fake_drive",
                                                  os.path.join(REPO, "tests", "fake_drive.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module           # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module.FakeDrive


# --- simulated nodes ---------------------------------------------------------------------

def busy(clock: VirtualClock, seconds: float, what: str) -> None:
    """Work for ``seconds``, logging a progress line every 30 s and at the end, as
    rgym_exp/progress.py does when a node's output goes to a file."""
    start = clock.t
    while clock.t - start + 30 < seconds:
        clock.sleep(30)
        worker_mod.log.info("%s: %.0f%% (simulated)", what, 100 * (clock.t - start) / seconds)
    clock.sleep(seconds - (clock.t - start))
    if seconds >= 30:
        worker_mod.log.info("%s: done in %.0fs (simulated)", what, seconds)


class NoCheckpoints:
    """Saves are counted from file sizes instead (module doc)."""

    def due(self, round_: int) -> bool:
        return False


def sim_classes(clock: VirtualClock, speed: dict, rng: random.Random):
    class SimHeartbeat(Heartbeat):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._lock = ClockLock(clock)

        def start(self):
            def loop():
                while True:
                    clock.sleep(self.interval)
                    if self._done.is_set():
                        return
                    self.beat()
            self._thread = actor(clock, f"{self.record.node_id}/beat", loop)

        def close(self, status, phase=""):
            self._done.set()
            self._thread = None     # the loop ends at its next wake-up; no real-time join
            super().close(status, phase)

    class SimLogs(NodeLogs):
        def __init__(self, exp, node, cache_dir, interval):
            super().__init__(exp, node, cache_dir, interval, "INFO")
            self._lock = ClockLock(clock)
            self._handler.addFilter(lambda record: record.threadName.startswith(node + "/"))

        def start(self, owner):
            self._owner = owner

            def loop():
                while True:
                    clock.sleep(self.interval)
                    if self._stop.is_set():
                        return
                    try:
                        self.flush()
                    except OSError:            # the run's folders go once it is closed
                        if not self._stop.is_set():
                            raise
                        return
            self._thread = actor(clock, f"{self.node_id}/logs", loop)

        def close(self):
            self._stop.set()
            self._thread = None
            super().close()

    class SimWorker(worker_mod.Worker):
        def setup(self):
            self.heartbeat.update(phase="waiting for experiment.json")
            info = self.exp.wait_and_check(self.source, self.waiter)
            self.logs.bind(info.instance_id)
            self.heartbeat.update(phase="loading model")
            clock.sleep(LOAD_S * speed[self.node])
            self.trainer, self.checkpoints = object(), NoCheckpoints()
            self.logs.event("started", model="sim", resumed_round=self.last_done)

        def save_checkpoint(self):   # counted from file sizes instead (module doc)
            self.last_checkpoint = self.last_done

        def _evaluate(self, R):
            self.heartbeat.update(round=R, phase="evaluating")
            busy(clock, EVAL_S * speed[self.node], f"round {R} evaluating")
            self.evaluated = True
            worker_mod.log.info("round %d: held-out accuracy 0.100 (simulated)", R)
            return {"eval/accuracy": 0.1, "eval/questions": 36, "time/eval_s": EVAL_S}

        def _generate(self, R, publish=True):
            self.heartbeat.update(round=R, phase="generating")
            worker_mod.log.info("round %d: generating (simulated)", R)
            t0 = clock.t
            busy(clock, GEN_S * speed[self.node] * rng.uniform(0.9, 1.1), f"round {R} generating")
            local = []
            for q in self.source.draw(self.node, R, self.cfg.NUM_TRAIN_SAMPLES):
                right = rng.randint(1, 7) if rng.random() < SIGNAL else 0
                pad = "".join(rng.choice("abcdefghij klmnop") for _ in range(TEXT_CHARS))
                texts = [f"{pad} <answer>{q.answer}</answer>"] * right + [
                    f"{pad} <answer>{rng.randint(1000, 9999)}</answer>" for _ in range(8 - right)]
                local.append(ScoredGroup(q, texts, [self.reward(t, q) for t in texts], [True] * 8,
                                         self.node, R))
            if publish:
                self._publish(R, [(None, local)])
            worker_mod.log.info("round %d: generated (simulated)", R)
            return local, clock.t - t0, [] if publish else [(None, local)]

        def _train(self, R, local, external):
            self.heartbeat.update(phase="training")
            busy(clock, TRAIN_S * speed[self.node], f"round {R} training")
            worker_mod.log.info("round %d: trained (simulated)", R)
            return {"train/sequences": 8 * (len(local) + len(external)), "train/tokens": 0,
                    "time/train_s": TRAIN_S}

    class SimCoordinator(coordinator_mod.Coordinator):
        on_open = None

        def _open(self, round_):
            state = super()._open(round_)
            if self.on_open is not None:
                self.on_open(round_)
            return state

    return SimHeartbeat, SimLogs, SimWorker, SimCoordinator


def simulate(n: int, backend: str, rounds: int, seed: int = 0) -> dict:
    """One swarm of ``n`` simulated workers for ``rounds`` rounds; the numbers of rounds
    2 .. rounds-1 (opened by the coordinator)."""
    rng = random.Random(seed)
    clock = VirtualClock()
    vtime = VirtualTime(clock)
    for module in ("heartbeat", "worker", "node_log", "waiting", "records", "coordinator"):
        sys.modules[f"rgym_exp.{module}"].time = vtime
    speed = {f"w{k}": rng.uniform(0.75, 1.35) for k in range(n)}
    SimHeartbeat, SimLogs, SimWorker, SimCoordinator = sim_classes(clock, speed, rng)
    coordinator_mod.Heartbeat = worker_mod.Heartbeat = SimHeartbeat
    source = None
    tmp = tempfile.mkdtemp(prefix="storage-scale-")
    root, fake = os.path.join(tmp, "drive"), None
    os.makedirs(root)
    census = Census(root)
    if backend == "drive":
        fake = load_fake_drive()(list_lag=2.0, clock=clock).start()
    env = {"GDRIVE_PATH": root, "EXPERIMENT_NAME": "scale", "XDG_CONFIG_HOME": tmp,
           "CACHE_DIR": os.path.join(tmp, "cache"), "MAX_ROUNDS": str(rounds),
           "TASKS": "chain_sum{min_terms=2;max_terms=2;min_digits=1;max_digits=1}",
           "ROLLOUT_KEEP_LAST_N_ROUNDS": "2", "WAIT_TIMEOUT": "36000"}

    def node(name: str, role: str):
        cfg = load_config(dict(env, NODE_ID=name, NODE_ROLE=role))[0]
        if fake is None:
            api = None
            inner = store_mod.FolderStore(root, **folder_wait(clock))
        else:
            from rgym_exp.drive.drive_api import DriveApiStore
            os.environ["NODE_ID"] = name        # the client tags its requests with it
            options = {"clock": clock, "sleep": clock.sleep, **folder_wait(clock)}
            if "hint_s" not in inspect.signature(DriveApiStore.__init__).parameters:
                options.pop("folder_wait", None)
            inner = api = DriveApiStore.from_url(f"gdrive://{fake.root_id}", endpoint=fake.url,
                                                 **options)
        counted = Counting(inner, clock, census if fake is None else None, api)
        store = retrying(counted, clock)
        exp = Experiment(cfg, store, Layout("scale"), RecordReader(store))
        return cfg, exp, counted

    nodes, counters, threads = {}, {}, []
    snaps, kinds = {}, {}
    first, last = 2, rounds - 1

    def on_open(r):
        if r in (first, last):
            snaps[r] = ({k: (c.requests(), c.bytes) for k, c in counters.items()},
                        census.items(), census.removed, clock.t)
            kinds[r] = {k: Counter(c.areas) for k, c in counters.items()}

    cfg, exp, counters["coord"] = node("coord", "coordinator")
    logs = SimLogs(exp, "coord", cfg.CACHE_DIR, cfg.LOG_FLUSH_INTERVAL)
    coord = SimCoordinator(cfg, exp, Waiter(cfg.POLL_INTERVAL, cfg.WAIT_TIMEOUT, sleep=clock.sleep),
                           clock=clock, logs=logs)
    coord.on_open = on_open
    for name in speed:
        wcfg, wexp, counters[name] = node(name, "worker")
        if source is None:
            source = question_source(wcfg)
        worker_mod.question_source = lambda _cfg: source      # one shared question pool
        waiter = Waiter(wcfg.POLL_INTERVAL, wcfg.WAIT_TIMEOUT, sleep=clock.sleep)
        nodes[name] = SimWorker(wcfg, wexp, waiter, SimLogs(wexp, name, wcfg.CACHE_DIR,
                                                             wcfg.LOG_FLUSH_INTERVAL))
        nodes[name].exchange.clock = clock
    t_real = time.perf_counter()
    threads.append(actor(clock, "coord/main", coord.run))
    for name, w in nodes.items():
        threads.append(actor(clock, f"{name}/main", w.run))
    for t in threads:
        t.join()
    if fake is not None:
        fake.stop()
    for w in nodes.values():
        w.logs.close()
    logs.close()
    shutil.rmtree(tmp, ignore_errors=True)
    (c0, items0, removed0, t0), (c1, items1, removed1, t1) = snaps[first], snaps[last]
    done = last - first
    minutes = (t1 - t0) / 60
    per_worker = [(c1[k][0] - c0[k][0]) / done for k in speed]
    return {"n": n, "backend": backend, "rounds": done, "round_s": (t1 - t0) / done,
            "worker": sum(per_worker) / n, "worker_max": max(per_worker),
            "bytes": sum((c1[k][1] - c0[k][1]) for k in speed) / done / n,
            "coord_per_min": (c1["coord"][0] - c0["coord"][0]) / minutes,
            "created": (items1 - items0 + removed1 - removed0) / done,
            "removed": (removed1 - removed0) / done, "real_s": time.perf_counter() - t_real,
            "coord_kinds": kinds[last]["coord"] - kinds[first]["coord"],
            "worker_kinds": sum((kinds[last][k] - kinds[first][k] for k in speed), Counter())}


# --- derived numbers ---------------------------------------------------------------------

def checkpoint_per_round(code: str, interval: int = 10) -> tuple[float, float]:
    """(store ops, Drive requests) per worker per round for checkpoints saved every
    ``interval`` rounds: 3 uploads + manifest + a listing + a prune, each file over 5 MB
    as a resumable session + one request per chunk."""
    weights, moments, chunk = CHECKPOINT[code]
    ops = 6.0
    requests = 4.0 + sum(1 + -(-size // chunk) if size > 5e6 else 1 for size in (weights, moments))
    return ops / interval, requests / interval


def days_to_cap(created: float, removed: float, round_s: float, trash: bool) -> float:
    """Days until live items (+ the last 30 days of deletions, if they go to the trash)
    reach the cap; created/removed per round."""
    per_day = 86400 / round_s
    grow, gone = (created - removed) * per_day, removed * per_day
    if not trash:
        return ITEM_CAP / grow if grow > 0 else float("inf")
    if (grow + gone) * TRASH_DAYS >= ITEM_CAP:
        return ITEM_CAP / (grow + gone)
    return (ITEM_CAP - gone * TRASH_DAYS) / grow if grow > 0 else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds; Drive at N = 4, 16")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 16, 64, 256])
    parser.add_argument("--detail", action="store_true",
                        help="after each row: the coordinator's requests a minute and a worker's "
                             "a round, by operation and area of the folder (and Drive method)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR, format="%(message)s")
    logging.getLogger().handlers[0].setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.INFO)   # nodes log lines into their stdout.log
    rounds = 5 if args.quick else 7
    drive_sizes = [n for n in args.sizes if n <= (16 if args.quick else 64)]
    code = "now" if hasattr(store_mod, "FolderWait") else "before"
    ck_ops, ck_req = checkpoint_per_round(code)
    print(f"code: {CODE} ({code}); {rounds} rounds, measured over rounds 2..{rounds - 1}; "
          f"checkpoints every 10 rounds add {ck_ops:.1f} ops / {ck_req:.1f} Drive requests "
          "per worker per round (not in the table)")
    print("| store | N | round s | worker requests/round (max) | worker KB/round | "
          "coordinator requests/min | items created/round | removed/round | real s |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for backend, sizes in (("counting", args.sizes), ("drive", drive_sizes)):
        for n in sizes:
            r = simulate(n, backend, rounds)
            rows.append(r)
            items = (f"{r['created']:.1f} | {r['removed']:.1f}" if backend == "counting"
                     else "- | -")        # counted on the local folder only
            print(f"| {backend} | {n} | {r['round_s']:.0f} | {r['worker']:.1f} "
                  f"({r['worker_max']:.0f}) | {r['bytes'] / 1e3:.0f} | {r['coord_per_min']:.1f} | "
                  f"{items} | {r['real_s']:.0f} |", flush=True)
            if args.detail:
                minutes = r["round_s"] * r["rounds"] / 60
                for who, kinds, per in (("coordinator a minute", r["coord_kinds"], minutes),
                                        ("worker a round", r["worker_kinds"], r["rounds"] * n)):
                    print(f"    {who}: " + ", ".join(
                        f"{k} {v / per:.2f}" for k, v in kinds.most_common()), flush=True)
    drive = [r for r in rows if r["backend"] == "drive"]
    if len(drive) >= 2:    # coordinator ~ a + b N; each worker r requests a minute
        lo, hi = drive[0], drive[-1]
        b = (hi["coord_per_min"] - lo["coord_per_min"]) / (hi["n"] - lo["n"])
        a = lo["coord_per_min"] - b * lo["n"]
        per_worker = (hi["worker"] + ck_req) / (hi["round_s"] / 60)
        n_max = (QUOTA_PER_MINUTE - a) / (b + per_worker)
        print(f"Drive quota: coordinator {a:.1f} + {b:.2f} N requests/min, a worker "
              f"{per_worker:.1f}/min with checkpoints: one Cloud project's {QUOTA_PER_MINUTE:,} "
              f"requests/min carry about {n_max:.0f} workers")
    for r in rows:
        if r["backend"] == "counting":
            perm = days_to_cap(r["created"], r["removed"], r["round_s"], trash=False)
            trash = days_to_cap(r["created"], r["removed"], r["round_s"], trash=True)
            print(f"item cap, N={r['n']}: {perm:.0f} days with permanent deletes (API as owner "
                  f"or manager), {trash:.0f} days when deletes go to the trash (mount)")
    ops = {r["n"]: r["worker"] + ck_ops for r in rows if r["backend"] == "counting"}
    if 4 in ops and 256 in ops:
        print(f"ops ratio N=256/N=4: {ops[256] / ops[4]:.2f}")


if __name__ == "__main__":
    main()
