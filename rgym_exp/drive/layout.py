"""Every path of the experiment folder, in one place (the folder protocol).

    experiments/{EXPERIMENT_NAME}/
      experiment.json                       coordinator, once: settings all nodes share
      state/current_state.json              coordinator only
      peers/{node_id}.json                  each node its own: registration + heartbeat
      .claims/{node_id}.{beat}              made once (exclusive create) per process start
      rollouts/round_{R}/{node_id}.s{n}.json  each worker, once per round; n: how many of its
                                            groups have reward signal (the sender's claim,
                                            untrusted: receivers read promising files first)
      rollouts/round_{R}/{node_id}.{k}.s{n}.json   ... or chunk k, one per generation batch
      submissions/round_{R}/{node_id}.json  each worker after training round R
      retired/round_{R}.json                coordinator, when it retires round R: the round's
                                            submissions in one file (then the folder goes)
      checkpoints/{node_id}/round_{R}/      each worker its own checkpoints
      logs/{node_id}/                       stdout.log, metrics.jsonl, events.jsonl (and
                                            tensorboard/ event files with REPORT_TO=tensorboard)
      exports/{node_id}/                    each worker its own: its model as a standard Hugging
                                            Face directory, at the end (EXPORT_AT_END)
      archive/rollouts/round_{R}/           old rounds, when ROLLOUT_ARCHIVE_OLD is on
      report/                               derived plots and tables (python -m rgym_exp.report);
                                            anyone may regenerate it, so it has no single writer

Names of nodes and experiments are validated here: letters, digits, '_' and
'-', starting with a letter or digit, at most 64 characters -- so no name can
contain a path separator, '..', or be empty.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Optional

from genrl.rollouts import NAME_PATTERN, NODE_ID_RE as NAME_RE

# [0-9], not \d: "round_\u0661" must not parse as round 1 (a name that maps to another path)
_ROUND_DIR_RE = re.compile(r"^round_([0-9]{1,9})$")
# folders that every worker writes into and only the coordinator makes (when it opens the
# round): a write never creates one (store.FolderWait), so Drive never holds two copies
ROUND_FOLDERS = r"(^|/)(rollouts|submissions)/round_[0-9]+$"
_ROLLOUT_RE = re.compile(rf"^({NAME_PATTERN})(?:\.([0-9]{{1,4}}))?(?:\.s([0-9]{{1,3}}))?\.json$")
_REGISTRATION_RE = re.compile(rf"^({NAME_PATTERN})\.([0-9a-f]{{16}})\.json$")


def check_name(kind: str, value: str) -> str:
    """Return value if it is a safe node/experiment name, else raise ValueError."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise ValueError(f"{kind}={value!r} is not allowed: use 1-64 letters, digits, '_' or '-', "
                         "starting with a letter or digit (no '/', '..' or spaces)")
    return value


def round_dir(r: int) -> str:
    return f"round_{int(r)}"


def parse_round_dir(name: str) -> Optional[int]:
    m = _ROUND_DIR_RE.fullmatch(name)
    return int(m.group(1)) if m else None


def parse_rollout_name(name: str) -> Optional[tuple[str, Optional[int], Optional[int]]]:
    """(node_id, chunk or None, claimed groups with signal or None) from a rollout file
    name, None if it is not one."""
    m = _ROLLOUT_RE.fullmatch(name)
    if not m:
        return None
    chunk, signal = m.group(2), m.group(3)
    return m.group(1), (int(chunk) if chunk else None), (int(signal) if signal else None)


def parse_node_file(name: str) -> Optional[str]:
    """node_id from '{node_id}.json' (peers/, submissions/), None otherwise."""
    if not name.endswith(".json"):
        return None
    node = name[:-5]
    return node if NAME_RE.fullmatch(node) else None


def parse_registration(name: str) -> Optional[tuple[str, str]]:
    """(node_id, key id) from a keys/ file name '{node_id}.{key id}.json', None otherwise."""
    m = _REGISTRATION_RE.fullmatch(name)
    return (m.group(1), m.group(2)) if m else None


def local_folder(cache_dir: str, location: str, experiment: str) -> str:
    """This machine's scratch folder for one experiment in one shared folder (log
    buffers, checkpoint staging, swarm console logs). Keyed by the shared folder as
    well as the name: the same EXPERIMENT_NAME in two folders never shares a buffer."""
    key = hashlib.sha256(location.encode()).hexdigest()[:8]
    return os.path.join(os.path.expanduser(cache_dir), f"{check_name('EXPERIMENT_NAME', experiment)}-{key}")


def keys_dir(root: str) -> str:
    """Where the workers of the experiment at ``root`` register their keys (trust.py)."""
    return f"{root}/keys"


def registration(root: str, node: str, key_id: str) -> str:
    """``node``'s registration of the key whose id is ``key_id`` (once per key)."""
    return f"{keys_dir(root)}/{check_name('NODE_ID', node)}.{key_id}.json"


class Layout:
    def __init__(self, experiment: str):
        self.experiment = check_name("EXPERIMENT_NAME", experiment)
        self.root = f"experiments/{experiment}"

    @property
    def experiment_file(self) -> str:
        return f"{self.root}/experiment.json"

    @property
    def state_file(self) -> str:
        return f"{self.root}/state/current_state.json"

    @property
    def peers_dir(self) -> str:
        return f"{self.root}/peers"

    @property
    def keys_dir(self) -> str:
        return keys_dir(self.root)

    def peer(self, node: str) -> str:
        return f"{self.peers_dir}/{check_name('NODE_ID', node)}.json"

    def claim(self, node: str, beat: int) -> str:
        """Marker made with create_exclusive when a process takes NODE_ID ``node`` at
        ``beat``: one process wins each (node, beat). Hidden (leading '.') from listings."""
        return f"{self.root}/.claims/{check_name('NODE_ID', node)}.{int(beat)}"

    @property
    def rollouts_root(self) -> str:
        return f"{self.root}/rollouts"

    def rollouts_dir(self, r: int) -> str:
        return f"{self.rollouts_root}/{round_dir(r)}"

    def rollout(self, r: int, node: str, chunk: Optional[int] = None,
                signal: Optional[int] = None) -> str:
        suffix = ("" if chunk is None else f".{int(chunk)}") + (
            "" if signal is None else f".s{min(int(signal), 999)}")
        return f"{self.rollouts_dir(r)}/{check_name('NODE_ID', node)}{suffix}.json"

    def archived_rollouts_dir(self, r: int) -> str:
        return f"{self.root}/archive/rollouts/{round_dir(r)}"

    @property
    def submissions_root(self) -> str:
        return f"{self.root}/submissions"

    def submissions_dir(self, r: int) -> str:
        return f"{self.submissions_root}/{round_dir(r)}"

    def submission(self, r: int, node: str) -> str:
        return f"{self.submissions_dir(r)}/{check_name('NODE_ID', node)}.json"

    @property
    def retired_root(self) -> str:
        return f"{self.root}/retired"

    def retired_submissions(self, r: int) -> str:
        return f"{self.retired_root}/{round_dir(r)}.json"

    def checkpoints_dir(self, node: str) -> str:
        return f"{self.root}/checkpoints/{check_name('NODE_ID', node)}"

    def checkpoint_dir(self, node: str, r: int) -> str:
        return f"{self.checkpoints_dir(node)}/{round_dir(r)}"

    @property
    def logs_root(self) -> str:
        return f"{self.root}/logs"

    def logs_dir(self, node: str) -> str:
        return f"{self.logs_root}/{check_name('NODE_ID', node)}"

    def log_file(self, node: str, name: str) -> str:
        return f"{self.logs_dir(node)}/{name}"

    def export_dir(self, node: str) -> str:
        return f"{self.root}/exports/{check_name('NODE_ID', node)}"

    @property
    def report_dir(self) -> str:
        return f"{self.root}/report"
