"""A node's logs, kept locally and copied to ``logs/{node_id}/`` on the shared folder.

Three files: ``stdout.log`` (the node's log lines), ``metrics.jsonl`` (one JSON
line per round), ``events.jsonl`` (one JSON line per notable event). They are
appended to locally (in CACHE_DIR) and uploaded whole -- each file has a single
writer -- every LOG_FLUSH_INTERVAL seconds, right after each metrics line, and
on exit. Uploads begin only once this process owns its NODE_ID (``start`` is
called after the heartbeat's claim) and end if another process takes it over,
so a refused duplicate never overwrites the running node's logs. At start, a
node first takes back what the shared folder already has, so a restart on a
fresh machine (a new Colab VM) appends instead of replacing.

The local buffer belongs to one experiment *instance*: its folder is keyed by
the shared folder and the name, and a marker file holds the instance id of
experiment.json. A buffer left by another experiment of the same name (an older
one since deleted, or one in another folder) is set aside, never uploaded into
this one: otherwise its rounds would be counted in this experiment's reports.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time

from rgym_exp.drive.layout import local_folder
from rgym_exp.drive.store import MountLost, StoreError
from rgym_exp.records import ExperimentInfo

LOG_FILES = ("stdout.log", "metrics.jsonl", "events.jsonl")
INSTANCE_FILE = "instance"          # in the local buffer: the experiment instance it belongs to
LOG_FORMAT = "%(asctime)s %(levelname)-7s [{node}] %(message)s"
MAX_LOG_BYTES = 256 * 1024 * 1024


def setup_console_logging(level: str, node_id: str) -> None:
    """Log lines to stderr, one per event (DESIGN: logging, plain lines)."""
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        if getattr(handler, "_rl_swarm", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT.format(node=node_id), "%H:%M:%S"))
    handler._rl_swarm = True
    root.addHandler(handler)
    for noisy in ("httpx", "httpx2", "urllib3", "googleapiclient", "filelock", "datasets",
                  "transformers", "matplotlib", "huggingface_hub"):   # httpx2: huggingface_hub 2's
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # the Drive store logs each retry itself; the client's own warning would say it twice
    logging.getLogger("googleapiclient.http").setLevel(logging.ERROR)


class NodeLogs:
    def __init__(self, experiment, node_id: str, cache_dir: str, flush_interval: float, level: str):
        self.exp, self.node_id, self.interval = experiment, node_id, flush_interval
        self.local = os.path.join(local_folder(cache_dir, experiment.config.GDRIVE_PATH,
                                               experiment.layout.experiment), node_id, "logs")
        self._lock = threading.Lock()
        self._uploaded: dict[str, tuple] = {}
        self._stop = threading.Event()
        self._thread = None
        self._owner = None                  # the Heartbeat that holds NODE_ID, once claimed
        info = self.exp.reader.read(ExperimentInfo, self.exp.layout.experiment_file)
        self.instance = info.instance_id if info is not None else None
        set_aside = self._keep_only(self.instance)
        self._take_back()
        handler = logging.FileHandler(self.path("stdout.log"), encoding="utf-8")
        handler.setFormatter(logging.Formatter(LOG_FORMAT.format(node=node_id)))
        handler.setLevel(level)
        handler._rl_swarm = True
        logging.getLogger().addHandler(handler)
        self._handler = handler
        if set_aside:
            logging.getLogger(__name__).info(
                "local log buffer of another experiment named %s (not the one in %s) set aside "
                "in %s; it is not uploaded here", experiment.layout.experiment,
                experiment.store.description, set_aside)
            self.event("log_buffer_set_aside", folder=set_aside)
        if self.instance is not None:
            self.bind(self.instance)

    def path(self, name: str) -> str:
        return os.path.join(self.local, name)

    def _buffer_instance(self):
        try:
            with open(self.path(INSTANCE_FILE), encoding="utf-8") as fh:
                return fh.read().strip() or None
        except OSError:
            return None

    def _keep_only(self, instance) -> str | None:
        """Move the local buffer aside unless it belongs to ``instance`` (None: the
        experiment does not exist yet, so no buffer can be its). Returns where it went."""
        os.makedirs(self.local, exist_ok=True)
        has_logs = any(os.path.exists(self.path(n)) for n in LOG_FILES)
        if not has_logs or (instance is not None and self._buffer_instance() == instance):
            return None
        aside = f"{self.local}.set-aside-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        os.replace(self.local, aside)
        os.makedirs(self.local, exist_ok=True)
        return aside

    def bind(self, instance: str) -> None:
        """Mark the local buffer as this experiment instance's (once experiment.json is known)."""
        if self._buffer_instance() == instance:
            return
        self.instance = instance
        with open(self.path(INSTANCE_FILE), "w", encoding="utf-8") as fh:
            fh.write(instance + "\n")

    def _take_back(self) -> None:
        """Start from the shared copy when it holds more than the local one."""
        try:
            shared = {e.name: e.size for e in self.exp.store.list(self.exp.layout.logs_dir(self.node_id))}
            for name in LOG_FILES:
                local = self.path(name)
                if shared.get(name, 0) > (os.path.getsize(local) if os.path.exists(local) else 0):
                    self.exp.store.download(self.exp.layout.log_file(self.node_id, name), local,
                                            MAX_LOG_BYTES)
        except StoreError as exc:
            logging.getLogger(__name__).warning("could not fetch earlier logs: %s", exc)

    def _append(self, name: str, record: dict) -> None:
        line = json.dumps(record, allow_nan=False, default=str)
        with self._lock, open(self.path(name), "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def metric(self, record: dict) -> None:
        self._append("metrics.jsonl", record)
        self.flush()

    def event(self, kind: str, **data) -> None:
        self._append("events.jsonl", {"time": time.time(), "event": kind, **data})

    def flush(self) -> None:
        """Upload each file that changed since its last upload (only while we own NODE_ID;
        that is checked only when something changed: no request when nothing did)."""
        self._handler.flush()
        if self._owner is None:
            return
        checked = False
        for name in LOG_FILES:
            local = self.path(name)
            if not os.path.exists(local):
                continue
            st = os.stat(local)
            key = (st.st_size, st.st_mtime_ns)
            if self._uploaded.get(name) == key:
                continue
            try:
                if not checked:
                    if not self._owner.owns():
                        return
                    checked = True
                with self._lock:
                    self.exp.store.upload(local, self.exp.layout.log_file(self.node_id, name))
                self._uploaded[name] = key
            except (StoreError, MountLost) as exc:
                logging.getLogger(__name__).warning("log %s not copied to the folder: %s", name, exc)

    def start(self, owner) -> None:
        """Begin copying the logs to the folder; ``owner``: the Heartbeat that claimed NODE_ID."""
        self._owner = owner

        def loop():
            while not self._stop.wait(self.interval):
                self.flush()
        self._thread = threading.Thread(target=loop, name="log-flush", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()
        logging.getLogger().removeHandler(self._handler)
        self._handler.close()
