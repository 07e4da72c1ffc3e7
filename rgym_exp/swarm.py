"""NODE_ROLE=swarm: a coordinator and NUM_WORKERS workers as child processes
on this machine, all on the same GDRIVE_PATH.

Each child writes its console output straight into its own file (no pipes, so
nothing can block); this process follows those files and shows their lines.
CPU threads are split between the workers. One Ctrl-C (or SIGTERM) asks every
child to stop cleanly (each saves a checkpoint of finished work); a second one,
or a child that takes longer than ``STOP_GRACE`` seconds, is killed. The exit
code is 0 only if every node exited 0.
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


@dataclass
class Child:
    node_id: str
    role: str
    log_path: str
    proc: subprocess.Popen
    offset: int = 0
    partial: str = ""


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
    def __init__(self, cfg: Config, show=lambda line: print(line, file=sys.stderr, flush=True)):
        self.cfg, self.show = cfg, show
        self.folder = os.path.join(local_folder(cfg.CACHE_DIR, cfg.GDRIVE_PATH, cfg.EXPERIMENT_NAME),
                                   "swarm")
        self.children: list[Child] = []
        self.stop_requested = 0

    def start(self) -> None:
        os.makedirs(self.folder, exist_ok=True)
        threads = max(1, (os.cpu_count() or 1) // self.cfg.NUM_WORKERS)
        for role, node in child_ids(self.cfg):
            path = os.path.join(self.folder, f"{node}.log")
            with open(path, "ab") as out:  # the child keeps its own handle
                proc = subprocess.Popen([sys.executable, "-m", "rgym_exp.runner.swarm_launcher"],
                                        env=child_env(self.cfg, role, node, 1 if role ==
                                                      "coordinator" else threads),
                                        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
            self.children.append(Child(node, role, path, proc, offset=os.path.getsize(path)))
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

    def _supervise(self, reported: set) -> None:
        for child in self.children:
            code = child.proc.poll()
            if code is None or child.node_id in reported:
                continue
            reported.add(child.node_id)
            (log.info if code == 0 else log.error)("%s %s exited with code %d%s", child.role,
                                                   child.node_id, code,
                                                   "" if code == 0 else f" (see {child.log_path})")
            if child.role == "coordinator" and code != 0:
                self.stop("the coordinator failed", grace=STOP_GRACE)
        workers = [c.proc.poll() for c in self.children if c.role == "worker"]
        if None not in workers:  # a coordinator left alone would wait for nobody
            failed = any(code != 0 for code in workers)
            self.stop("every worker has exited", grace=STOP_GRACE, delay=0 if failed else 30)
        now = time.monotonic()
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
        reported: set = set()
        try:
            self.start()
            while len(reported) < len(self.children):
                self.follow()
                self._supervise(reported)
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
