"""Joining an experiment: the store, the layout, this node's keys, the question source,
and the settings every node must agree on (experiment.json).

The coordinator writes experiment.json once, signed, pinning its public key; every node
compares its own shared settings against it at start and refuses to run on a mismatch,
naming the setting, so a swarm never silently trains on different task mixes. A node
keeps the experiment.json it first verified (rgym_exp/trust.py): a later copy that is
not the coordinator's is refused and counted, and the first one is used (the
coordinator writes it back). A folder of an older protocol, written without signatures,
is refused with a message naming the version that wrote it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from dataclasses import dataclass
from typing import Optional

from genrl.data import DatasetSource, ReasoningGymSource, parse_tasks
from genrl.tasks import DEFAULT_TASKS
from rgym_exp.config import Config, ConfigError
from rgym_exp.drive.layout import Layout
from rgym_exp.drive.backends import open_store
from rgym_exp.drive.store import Store, StoreError
from rgym_exp.records import (PROTOCOL_VERSION, ExperimentInfo, ExperimentMismatch,
                              RecordReader, read_info, to_json)
from rgym_exp.trust import Keys, Trust
from rgym_exp.waiting import Waiter

log = logging.getLogger(__name__)


def question_source(config: Config):
    """The question source the settings describe; ConfigError when they are invalid."""
    if config.DATASET_PATH:
        try:
            return DatasetSource(config.DATASET_PATH, config.SEED, match=config.DATASET_MATCH)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    try:
        tasks = parse_tasks(config.TASKS.strip() or DEFAULT_TASKS)
        return ReasoningGymSource(tasks, config.SEED, curriculum=config.CURRICULUM,
                                  eval_level=config.EVAL_LEVEL)
    except ValueError as exc:
        raise ConfigError(f"TASKS={config.TASKS!r} is not valid: {exc}") from None


def node_trust(store: Store, config: Config) -> Trust:
    """This node's Trust: its key pair in KEY_DIR (made at its first start) and the keys it
    has seen in this folder (rgym_exp/trust.py). ConfigError when the key file is unusable."""
    place = hashlib.sha256(config.GDRIVE_PATH.encode()).hexdigest()[:8]
    try:
        keys = Keys.load_or_create(os.path.join(config.KEY_DIR, f"{config.NODE_ID}.key"))
        return Trust(store, keys, config.NODE_ID, os.path.join(
            config.KEY_DIR, "known", f"{config.NODE_ID}-{config.EXPERIMENT_NAME}-{place}.json"))
    except ValueError as exc:
        raise ConfigError(f"KEY_DIR={config.KEY_DIR}: {exc}") from None


@dataclass
class Experiment:
    config: Config
    store: Store
    layout: Layout
    reader: RecordReader
    info: Optional[ExperimentInfo] = None     # experiment.json, once checked

    @property
    def trust(self) -> Trust:
        return self.reader.trust

    @classmethod
    def open(cls, config: Config, stop=None) -> "Experiment":
        """``stop``: a threading.Event that ends storage retries (the node's Waiter's)."""
        store = open_store(config.GDRIVE_PATH, config.GDRIVE_CREDENTIALS, config.GDRIVE_API_ENDPOINT,
                           faults=config.FAULTS, salt=config.NODE_ID, stop=stop)
        return cls(config, store, Layout(config.EXPERIMENT_NAME),
                   RecordReader(store, node_trust(store, config)))

    def use_store(self, store: Store) -> None:
        """Read, write and look keys up through ``store`` from now on (a wrapper of the
        store, in tests and benchmarks)."""
        self.store = self.reader.store = self.trust.store = store

    def info_for(self, source) -> ExperimentInfo:
        return ExperimentInfo(name=self.config.EXPERIMENT_NAME, protocol=PROTOCOL_VERSION,
                              created_at=time.time(), shared=self.config.shared_settings(),
                              questions=source.fingerprint(), max_rounds=self.config.MAX_ROUNDS,
                              coordinator=self.config.NODE_ID, instance=uuid.uuid4().hex,
                              coordinator_key=self.trust.keys.public)

    def read_info(self, starting: bool = False) -> Optional[ExperimentInfo]:
        return read_info(self.store, self.layout, self.trust, starting)

    def create_or_check(self, source) -> ExperimentInfo:
        """Coordinator: write experiment.json (signed, pinning this node's key) if absent,
        else check agreement, and that it pins this node's key."""
        path = self.layout.experiment_file
        info = self.read_info(starting=True)
        if info is None:
            info = self.info_for(source)
            sealed = self.trust.seal(path, to_json(info))
            if self.store.create_exclusive(path, sealed):
                self.trust.open(path, sealed)              # pinned: this node's own
                log.info("created experiment %s in %s (coordinator key %s)", info.name,
                         self.store.description, info.coordinator_key[:8])
                self.info = info
                return info
            log.info("experiment.json of %s was created by another process at the same moment; "
                     "checking it", info.name)
            info = self.read_info()
            if info is None:
                raise ExperimentMismatch(f"{path} exists but is not an experiment file signed by "
                                         "its coordinator; use a new EXPERIMENT_NAME")
        self.check(info, source)
        if info.coordinator_key != self.trust.keys.public:
            raise ExperimentMismatch(
                f"experiment {info.name} was created by coordinator {info.coordinator} with key "
                f"{info.coordinator_key[:8]}... (pinned in experiment.json); this node's key "
                f"({self.trust.keys.path}) is {self.trust.keys.public[:8]}...: restore that "
                "coordinator's key file into KEY_DIR (README, Keys), or use a new EXPERIMENT_NAME")
        self.info = info
        return info

    def wait_and_check(self, source, waiter: Waiter) -> ExperimentInfo:
        """Worker: wait for the coordinator's experiment.json, then check agreement."""
        info = waiter.until(lambda: self.read_info(starting=True),
                            what=f"experiment.json of {self.config.EXPERIMENT_NAME} "
                                 "(is a coordinator running?)")
        self.check(info, source)
        self.info = info
        return info

    def restore_info(self, data: bytes) -> None:
        """Coordinator: write experiment.json back as it first verified it, when the folder
        holds another file under its name (``data``; it is that file's only writer)."""
        pinned = self.trust.pinned_experiment(self.layout.root)
        if pinned is None or data == pinned:
            return
        self.trust.count(self.config.NODE_ID, "replaced experiment.json")
        try:
            self.store.write(self.layout.experiment_file, pinned)
            log.warning("%s had been replaced by a file this coordinator did not sign: written "
                        "back", self.layout.experiment_file)
        except StoreError as exc:
            log.warning("experiment.json not written back: %s", exc)

    def check(self, info: ExperimentInfo, source) -> None:
        if info.protocol != PROTOCOL_VERSION:
            raise ExperimentMismatch(
                f"experiment {info.name} uses folder protocol {info.protocol}; this code speaks "
                f"{PROTOCOL_VERSION}. Update the code on all nodes, or use a new EXPERIMENT_NAME")
        mine = self.config.shared_settings()
        for name, value in sorted(mine.items()):
            theirs = info.shared.get(name)
            if theirs is not None and theirs != value:
                raise ExperimentMismatch(
                    f"{name}={value!r} but experiment {info.name} was created with "
                    f"{name}={theirs!r} (experiment.json); every node of an experiment must use "
                    "the same value -- change it, or use a new EXPERIMENT_NAME")
        if info.questions != source.fingerprint():
            raise ExperimentMismatch(
                f"this node's questions ({source.fingerprint()}) differ from experiment "
                f"{info.name}'s ({info.questions}); check TASKS / DATASET_PATH")
