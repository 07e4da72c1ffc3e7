"""NODE_ROLE=swarm: a coordinator and NUM_WORKERS workers as child processes
on this machine, all on the same GDRIVE_PATH.

Each child writes its console output straight into its own file (no pipes, so
nothing can block); this process follows those files and shows their lines.
CPU threads are split between the workers. One Ctrl-C (or SIGTERM) asks every
child to stop cleanly (each saves a checkpoint of finished work); a second one,
or a child that takes longer than ``STOP_GRACE`` seconds, is killed. The exit
code is 0 only if every node exited 0.

Supervision: a node that fails is started again with the same NODE_ID (it
continues from its checkpoint), after 10 s, then 20, 40.. up to 5 minutes, at
most RESTART_LIMIT times in a row (a node that ran for half an hour before it
failed starts counting again); each restart is one log line. It is never
restarted after exit 2 (a bad setting or a refused start: it would fail the same
way), 4 (another process took its NODE_ID over) or 5 (the experiment folder vanished),
nor while the swarm stops.
``supervise`` does the same for one node (the launcher's ``--restart``).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from rgym_exp.config import Config
from rgym_exp.drive.layout import local_folder

log = logging.getLogger(__name__)
STOP_GRACE = 120.0
FINAL_CODES = {0: "finished", 2: "a bad setting or a refused start",
               4: "another process took its NODE_ID over",
               5: "the experiment folder vanished", 130: "stopped"}
RESTART_DELAY, RESTART_DELAY_MAX = 10.0, 300.0   # seconds, doubling in between
RESET_AFTER = 1800.0           # a node that ran this long before failing starts counting again
NODE_COMMAND = [sys.executable, "-m", "rgym_exp.runner.swarm_launcher"]


def restart_delay(restarts: int, base: float = RESTART_DELAY) -> float:
    """Seconds before restart number ``restarts + 1``."""
    return min(RESTART_DELAY_MAX, base * 2 ** restarts)


def why_final(code: int, restarts: int, limit: int) -> str:
    """Why a node that exited with ``code`` is not restarted ("" : restart it)."""
    if code in FINAL_CODES:
        return FINAL_CODES[code]
    if restarts >= limit:
        return f"it failed {restarts + 1} time(s) in a row (RESTART_LIMIT={limit})"
    return ""


@dataclass
class Child:
    node_id: str
    role: str
    log_path: str
    proc: subprocess.Popen
    env: dict
    offset: int = 0
    partial: str = ""
    restarts: int = 0                 # in a row
    started: float = 0.0              # monotonic
    restart_at: float | None = None   # a restart is due then
    final: bool = False               # exited and not to be restarted


def child_ids(cfg: Config) -> list[tuple[str, str]]:
    base = cfg.NODE_ID[:50]
    return [("coordinator", f"{base}-coordinator")] + [
        ("worker", f"{base}-w{i}") for i in range(1, cfg.NUM_WORKERS + 1)]


def child_env(cfg: Config, role: str, node_id: str, threads: int) -> dict:
    env = dict(os.environ)
    env.update(NODE_ROLE=role, NODE_ID=node_id, GDRIVE_PATH=cfg.GDRIVE_PATH,
               EXPERIMENT_NAME=cfg.EXPERIMENT_NAME, OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false",
               HF_HUB_DISABLE_PROGRESS_BARS="1")
    return env


class Swarm:
    def __init__(self, cfg: Config, show=lambda line: print(line, file=sys.stderr, flush=True),
                 command=NODE_COMMAND, delay: float = RESTART_DELAY):
        self.cfg, self.show, self.command, self.delay = cfg, show, command, delay
        self.folder = os.path.join(local_folder(cfg.CACHE_DIR, cfg.GDRIVE_PATH, cfg.EXPERIMENT_NAME),
                                   "swarm")
        self.children: list[Child] = []
        self.stop_requested = 0

    def _spawn(self, env: dict, path: str) -> subprocess.Popen:
        with open(path, "ab") as out:  # the child keeps its own handle
            return subprocess.Popen(self.command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)

    def start(self) -> None:
        os.makedirs(self.folder, exist_ok=True)
        threads = max(1, (os.cpu_count() or 1) // self.cfg.NUM_WORKERS)
        for role, node in child_ids(self.cfg):
            path = os.path.join(self.folder, f"{node}.log")
            env = child_env(self.cfg, role, node, 1 if role == "coordinator" else threads)
            proc = self._spawn(env, path)
            self.children.append(Child(node, role, path, proc, env, offset=os.path.getsize(path),
                                       started=time.monotonic()))
            log.info("started %s %s (pid %d), output in %s", role, node, proc.pid, path)

    def follow(self) -> None:
        """Show new complete lines of every child's output file."""
        for child in self.children:
            try:
                with open(child.log_path, "rb") as fh:
                    fh.seek(child.offset)
                    data = fh.read()
            except OSError:
                continue
            child.offset += len(data)
            text = child.partial + data.decode("utf-8", "replace")
            *lines, child.partial = text.split("\n")
            for line in lines:
                line = line.rsplit("\r", 1)[-1]  # a progress bar's last state, not every redraw
                if line.strip():
                    self.show(line)

    def signal(self, signum, _frame) -> None:
        self.user_stops += 1
        if self.user_stops == 1:
            log.warning("%s: stopping all nodes (press Ctrl-C again to kill them at once)",
                        signal.Signals(signum).name)
            self.stop("stop requested", grace=STOP_GRACE)
        else:
            log.warning("%s again: killing all nodes", signal.Signals(signum).name)
            self._send(signal.SIGKILL)

    def stop(self, reason: str, grace: float, delay: float = 0.0) -> None:
        """SIGTERM every running node after ``delay`` s; SIGKILL ``grace`` s later."""
        if self.stopping is None:
            self.stopping = reason
            self.term_at = time.monotonic() + delay
            self.kill_at = self.term_at + grace

    def _send(self, sig) -> None:
        for child in self.children:
            if child.proc.poll() is None:
                try:
                    child.proc.send_signal(sig)
                except ProcessLookupError:
                    pass

    def _supervise(self) -> None:
        now = time.monotonic()
        for child in self.children:
            code = child.proc.poll()
            if code is None or child.final:
                continue
            if child.restart_at is not None:
                if now >= child.restart_at and self.stopping is None:
                    child.proc, child.restart_at, child.started = (
                        self._spawn(child.env, child.log_path), None, now)
                    log.info("restarted %s %s (pid %d)", child.role, child.node_id, child.proc.pid)
                elif self.stopping is not None:
                    child.final = True
                continue
            if now - child.started >= RESET_AFTER:
                child.restarts = 0
            final = "the swarm is stopping" if self.stopping is not None else why_final(
                code, child.restarts, self.cfg.RESTART_LIMIT)
            (log.info if code == 0 else log.error)("%s %s exited with code %d%s", child.role,
                                                   child.node_id, code,
                                                   "" if code == 0 else f" (see {child.log_path})")
            if final:
                child.final = True
                if code != 0:
                    log.error("%s %s is not restarted: %s", child.role, child.node_id, final)
                if child.role == "coordinator" and code != 0:
                    self.stop("the coordinator failed", grace=STOP_GRACE)
                continue
            wait = restart_delay(child.restarts, self.delay)
            child.restarts += 1
            child.restart_at = now + wait
            log.warning("restarting %s %s in %.0fs (restart %d of at most %d in a row)",
                        child.role, child.node_id, wait, child.restarts, self.cfg.RESTART_LIMIT)
        workers = [c for c in self.children if c.role == "worker"]
        if all(c.final for c in workers):  # a coordinator left alone would wait for nobody
            failed = any(c.proc.returncode != 0 for c in workers)
            self.stop("every worker has exited", grace=STOP_GRACE, delay=0 if failed else 30)
        if self.term_at is not None and now >= self.term_at:
            log.info("%s: stopping the remaining nodes", self.stopping)
            self._send(signal.SIGTERM)
            self.term_at = None
        if self.kill_at is not None and now >= self.kill_at:
            log.error("nodes did not stop within %.0fs: killing them", STOP_GRACE)
            self._send(signal.SIGKILL)
            self.kill_at = None

    def run(self) -> int:
        self.user_stops, self.stopping, self.term_at, self.kill_at = 0, None, None, None
        old = {s: signal.signal(s, self.signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            while not all(c.final for c in self.children):
                self.follow()
                self._supervise()
                time.sleep(0.5)
            self.follow()
        finally:
            self._send(signal.SIGKILL)  # never leave orphans behind
            for s, handler in old.items():
                signal.signal(s, handler)
        codes = {c.node_id: c.proc.returncode for c in self.children}
        failed = {n: c for n, c in codes.items() if c != 0}
        if self.user_stops:
            log.info("swarm stopped by request; logs in %s", self.folder)
            return 130
        if failed:
            log.error("swarm finished with failures: %s; logs in %s",
                      ", ".join(f"{n} (code {c})" for n, c in failed.items()), self.folder)
            return 1
        log.info("swarm finished: %d node(s) exited cleanly; results in %s/experiments/%s",
                 len(codes), self.cfg.GDRIVE_PATH, self.cfg.EXPERIMENT_NAME)
        return 0


def supervise(cfg: Config, command=NODE_COMMAND, delay: float = RESTART_DELAY) -> int:
    """Run this one node as a child process and start it again when it fails, as the
    swarm does (module doc); its output goes where ours goes. Returns its last exit code."""
    stop: list = []
    proc = None

    def on_signal(signum, _frame):
        stop.append(signum)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signum)       # the node stops cleanly; then so do we
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    restarts = 0
    try:
        while True:
            started = time.monotonic()
            proc = subprocess.Popen(command, env=dict(os.environ), stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            code = proc.wait()
            if stop:
                return code
            if time.monotonic() - started >= RESET_AFTER:
                restarts = 0
            final = why_final(code, restarts, cfg.RESTART_LIMIT)
            if final:
                if code != 0:
                    log.error("%s %s exited with code %d; not restarted: %s", cfg.NODE_ROLE,
                              cfg.NODE_ID, code, final)
                return code
            wait = restart_delay(restarts, delay)
            restarts += 1
            log.warning("%s %s exited with code %d; restarting in %.0fs (restart %d of at most %d "
                        "in a row)", cfg.NODE_ROLE, cfg.NODE_ID, code, wait, restarts,
                        cfg.RESTART_LIMIT)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and not stop:
                time.sleep(0.2)
            if stop:
                return 130
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        for s, handler in old.items():
            signal.signal(s, handler)
