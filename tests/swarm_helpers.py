"""Running real launcher processes in tests: environments, start, wait, read results.

A temp directory stands in for Drive; models are the tiny ones from conftest.
Fast protocol timings (heartbeat, polling) keep multi-process tests short.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAST = {
    "HEARTBEAT_INTERVAL": "0.5", "POLL_INTERVAL": "0.2", "PEER_TIMEOUT": "20",
    "LOG_FLUSH_INTERVAL": "0.5", "WAIT_TIMEOUT": "120", "ROUND_TIMEOUT": "60",
}


def node_env(drive: str, model: str, home: str, **overrides) -> dict:
    """Environment for one launcher process on a tiny model, fast timings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NODE_", "NUM_", "MAX_"))}
    env.update(FAST)
    env.update({
        "GDRIVE_PATH": drive, "EXPERIMENT_NAME": "exp", "MODEL_NAME": model,
        "TASKS": "basic_arithmetic{min_terms=2;max_terms=2;min_digits=1;max_digits=1}",
        "NUM_TRAIN_SAMPLES": "2", "NUM_TRANSPLANT_TREES": "2", "NUM_GENERATIONS": "4",
        "MAX_NEW_TOKENS": "8", "MAX_ROUNDS": "3", "HOME": home, "XDG_CONFIG_HOME": f"{home}/.config",
        "CACHE_DIR": f"{home}/cache", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
        "PYTHONPATH": REPO + os.pathsep + env.get("PYTHONPATH", ""), "PYTHONUNBUFFERED": "1",
    })
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def start_node(env: dict, log_path: str, role: str, node_id: str,
               module: str = "rgym_exp.runner.swarm_launcher") -> subprocess.Popen:
    """A launcher process (``module="tests.chaos_node"``: with the chaos knobs)."""
    env = dict(env, NODE_ROLE=role, NODE_ID=node_id)
    out = open(log_path, "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", module], env=env,
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    finally:
        out.close()


def wait_all(procs: list[subprocess.Popen], timeout: float) -> list[int]:
    end = time.monotonic() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(0.1, end - time.monotonic())))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    return codes


def exp_dir(drive: str, name: str = "exp") -> str:
    return os.path.join(drive, "experiments", name)


def read_json(path: str):
    with open(path) as fh:
        return json.load(fh)


def metrics(drive: str, node: str, name: str = "exp") -> list[dict]:
    path = os.path.join(exp_dir(drive, name), "logs", node, "metrics.jsonl")
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def check_folder(drive: str, name: str = "exp") -> list[str]:
    """Every problem a reader would meet in the experiment folder: a visible JSON
    file that does not parse, a rollout file that does not validate, a metrics
    line that does not parse, a checkpoint whose manifest does not match its
    files. Temporary files and conflict copies are skipped (readers skip them);
    a checkpoint without a manifest is an unfinished save, which restore skips."""
    import hashlib

    from genrl.rollouts import decode_rollouts, parse_json
    from rgym_exp.drive.store import visible_name

    root, problems = exp_dir(drive, name), []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if visible_name(d)]
        rel = os.path.relpath(folder, root).split(os.sep)
        if rel[0] == "checkpoints" and len(rel) == 3 and "manifest.json" in files:
            manifest = read_json(os.path.join(folder, "manifest.json"))
            for fname, meta in manifest["files"].items():
                path = os.path.join(folder, fname)
                with open(path, "rb") as fh:
                    digest = hashlib.sha256(fh.read()).hexdigest()
                if os.path.getsize(path) != meta["size"] or digest != meta["sha256"]:
                    problems.append(f"{path}: does not match its manifest")
        for fname in files:
            if not visible_name(fname):
                continue
            path = os.path.join(folder, fname)
            with open(path, "rb") as fh:
                data = fh.read()
            try:
                if fname.endswith(".jsonl"):
                    for line in data.decode().splitlines():
                        parse_json(line.encode(), 1 << 20)
                elif fname.endswith(".json"):
                    parse_json(data, 64 << 20)
                    if rel[0] == "rollouts":
                        groups, reasons = decode_rollouts(data)
                        if reasons or not groups:
                            raise ValueError("; ".join(reasons) or "no groups")
            except ValueError as exc:
                problems.append(f"{path}: {exc}")
    return problems


def wait_for(predicate, timeout: float = 120, what: str = "condition", poll: float = 0.1):
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
