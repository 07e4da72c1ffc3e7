"""Verifiers in a sandbox: reasoning-gym's scorers run in separate, locked-down processes.

Some scorers evaluate the answer string (``eval``, sympy's ``parse_expr``: genrl/grammars.py
lists them), and every answer is hostile text. The answer grammar keeps code out; this is the
second wall, for whatever a grammar or a scorer gets wrong. Each verifier process:
  * starts from a clean environment: no credentials, tokens or cloud settings reach it
    (``SAFE_ENV``), with Python's isolated mode (``-I``: no PYTHON* variables, no user site);
  * imports what scorers need, then locks itself down before it reads any request: it drops
    to the ``nobody`` user when started as root, may not start processes (RLIMIT_NPROC = 0:
    no ``os.system``, no ``subprocess``), may not grow a file (RLIMIT_FSIZE = 0), gets no new
    privileges, has its address space capped (``memory_mb``) and writes no core files;
  * scores each answer under a CPU-time limit (``cpu_s``, an ITIMER_PROF alarm), while the
    parent holds a wall-clock limit (``wall_s``) per answer and kills a process that misses
    it (a C routine, such as a backtracking regular expression, never sees the alarm).
A verifier that times out or dies scores 0; the pool replaces the process in the background
and carries on with the others. Requests and replies are single lines of JSON over pipes
(nothing is unpickled on either side); a reply line longer than ``MAX_REPLY`` is refused.

The pool stays warm: processes start when the pool is created (a second or two: importing
reasoning-gym and sympy) and serve every scoring request of the worker's life, so scoring a
round costs pipe round trips, not process starts (bench/rewards.py prints the cost).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Optional

log = logging.getLogger(__name__)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOBODY = 65534
MAX_REPLY = 512
SAFE_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": "/",
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); from genrl.sandbox import serve; "
         "serve(int(sys.argv[2]), float(sys.argv[3]))")


class SandboxError(RuntimeError):
    """No verifier process can be started: nothing could be scored."""


@dataclass
class Result:
    score: float
    status: str = "ok"          # ok | refused | timeout | died | error


def spawn(boot: str, *args: str) -> subprocess.Popen:
    """A Python process as every verifier process starts: isolated mode, the clean
    environment, its own session, no inherited descriptors, pipes for stdin and stdout."""
    return subprocess.Popen([sys.executable, "-I", "-c", boot, ROOT, *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=dict(SAFE_ENV), cwd="/",
                            start_new_session=True, close_fds=True)


class _Child:
    """One verifier process and the parent's end of its pipes."""

    def __init__(self, boot: str, memory_mb: int, cpu_s: float, start_s: float):
        self.proc = spawn(boot, str(memory_mb), str(cpu_s))
        self.buffer = b""
        self.ended = False
        if self.readline(start_s) != "ready":
            self.kill()
            raise RuntimeError("the verifier process did not start")

    def readline(self, timeout: float) -> Optional[str]:
        """The next reply line, or None when none came in ``timeout`` seconds (or it died)."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or len(self.buffer) > MAX_REPLY:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                self.ended = True
                return None                     # the process ended
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode("ascii", "replace") if len(line) <= MAX_REPLY else None

    def send(self, request: dict) -> bool:
        try:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass


class VerifierPool:
    """Warm verifier processes; ``score(spec, answers)`` scores one question's answers."""

    def __init__(self, size: int = 2, cpu_s: float = 1.0, wall_s: float = 3.0,
                 memory_mb: int = 1536, start_s: float = 60.0, boot: str = BOOT):
        self.size, self.cpu_s, self.wall_s = size, cpu_s, wall_s
        self.memory_mb, self.start_s, self.boot = memory_mb, start_s, boot
        self.idle: queue.Queue = queue.Queue()
        self.closed = False
        self.last_error = ""
        self.started = 0
        for _ in range(size):
            self._replace()

    def _replace(self) -> None:
        """Start a process in the background; it joins the idle ones when ready."""
        def start():
            try:
                child = _Child(self.boot, self.memory_mb, self.cpu_s, self.start_s)
            except (OSError, RuntimeError) as exc:
                log.warning("could not start a verifier process: %s", exc)
                self.last_error = str(exc)
                self.idle.put(None)             # a waiting caller learns, and retries
                return
            if self.closed:
                child.kill()
            else:
                self.idle.put(child)
        self.started += 1
        threading.Thread(target=start, name="verifier-start", daemon=True).start()

    def _take(self) -> _Child:
        """An idle, live process; SandboxError when three in a row fail to start."""
        for _ in range(3):
            try:
                child = self.idle.get(timeout=self.start_s + 5)
            except queue.Empty:
                break
            if child is not None and child.proc.poll() is None:
                return child
            if child is not None:
                child.kill()
            self._replace()
        raise SandboxError(f"the verifier processes do not start ({self.last_error}); "
                           "python -m rgym_exp.doctor checks this machine")

    def score(self, spec: dict, answers: list[str]) -> list[Result]:
        """Each answer's verifier score for the question ``spec`` names (task, settings,
        seed, index): a timeout, crash or bad reply scores 0 with a status. Raises
        SandboxError only when no verifier process can be started at all."""
        results: list[Result] = []
        while len(results) < len(answers):
            child = self._take()
            rest = answers[len(results):]
            if not child.send({"spec": spec, "answers": rest}):
                child.kill()
                self._replace()
                continue
            # the question's pool is built first (trusted work, from this node's own spec)
            if child.readline(self.start_s) != "entry":
                child.kill()
                self._replace()
                results.append(Result(0.0, "error"))
                continue
            for k in range(len(rest)):
                line = child.readline(self.wall_s)
                result = _parse_reply(line, k)
                if result is None:              # too slow, dead, or talking nonsense
                    status = ("error" if line is not None else
                              "died" if child.ended or child.proc.poll() is not None
                              else "timeout")
                    child.kill()
                    self._replace()
                    results.append(Result(0.0, status))
                    child = None
                    break
                results.append(result)
            if child is not None:
                self.idle.put(child)
        return results

    def close(self) -> None:
        self.closed = True
        while True:
            try:
                child = self.idle.get_nowait()
            except queue.Empty:
                return
            if child is not None:
                child.kill()


def _parse_reply(line: Optional[str], index: int) -> Optional[Result]:
    """``"<index> <status> <score>"`` from the verifier process, else None."""
    parts = (line or "").split()
    if len(parts) != 3 or parts[0] != str(index):
        return None
    try:
        score = float(parts[2])
    except ValueError:
        return None
    if parts[1] not in ("ok", "refused", "timeout", "error") or not 0.0 <= score <= 1.0:
        return None
    return Result(score, parts[1])


_POOL: Optional[VerifierPool] = None
_POOL_LOCK = threading.Lock()


def default_pool() -> VerifierPool:
    """The process-wide pool (started on first use, closed at exit)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.closed:
            _POOL = VerifierPool()
            import atexit
            atexit.register(_POOL.close)
        return _POOL


# --- the verifier process ------------------------------------------------------------------

def serve(memory_mb: int, cpu_s: float) -> None:
    """The verifier process's main loop: import, lock down, then answer requests."""
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="ascii")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)                     # scorers that print cannot corrupt the replies
    sys.stdout = open(os.devnull, "w")
    from genrl import verifiers             # imports reasoning-gym and sympy before lock-down
    verifiers.warm_up()
    lock_down(memory_mb)
    out.write("ready\n")
    for raw in sys.stdin.buffer:
        try:
            request = json.loads(raw)
            spec, answers = request["spec"], request["answers"]
            entry = verifiers.entry_of(spec)
        except Exception:                   # noqa: BLE001 - a bad request scores nothing
            entry, answers = None, (request.get("answers", []) if isinstance(request, dict)
                                    else [])
        out.write("entry\n")
        for k, answer in enumerate(answers if isinstance(answers, list) else []):
            status, score = ("error", 0.0) if entry is None else verifiers.score(
                spec, entry, answer, cpu_s)
            out.write(f"{k} {status} {score:.9f}\n")


def lock_down(memory_mb: int) -> None:
    """Drop privileges and cap resources (the module doc); what a platform lacks is skipped.
    Everything the process will need must be imported before: once it runs as ``nobody`` it
    may not be able to read the Python installation (pyenv lives under /root here)."""
    import ctypes
    import resource
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        ctypes.CDLL(None).prctl(38, 1, 0, 0, 0)      # PR_SET_NO_NEW_PRIVS
    except (OSError, AttributeError):
        pass
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    for limit, value in ((resource.RLIMIT_NPROC, 0), (resource.RLIMIT_FSIZE, 0),
                         (resource.RLIMIT_AS, memory_mb * 2**20)):
        try:
            resource.setrlimit(limit, (value, value))
        except (ValueError, OSError):
            pass
