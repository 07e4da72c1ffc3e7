"""Joining an experiment: the store, the layout, the question source, and the
settings every node must agree on (experiment.json).

The coordinator writes experiment.json once; every node compares its own
shared settings against it at start and refuses to run on a mismatch, naming
the setting, so a swarm never silently trains on different task mixes.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

from genrl.data import DatasetSource, ReasoningGymSource, parse_tasks
from genrl.tasks import DEFAULT_TASKS
from rgym_exp.config import Config, ConfigError
from rgym_exp.drive.layout import Layout
from rgym_exp.drive.backends import open_store
from rgym_exp.drive.store import Store
from rgym_exp.records import (PROTOCOL_VERSION, ExperimentInfo, RecordReader, to_json)
from rgym_exp.waiting import Waiter

log = logging.getLogger(__name__)


class ExperimentMismatch(RuntimeError):
    """This node's shared settings differ from the experiment's."""


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


@dataclass
class Experiment:
    config: Config
    store: Store
    layout: Layout
    reader: RecordReader

    @classmethod
    def open(cls, config: Config) -> "Experiment":
        store = open_store(config.GDRIVE_PATH, config.GDRIVE_CREDENTIALS, config.GDRIVE_API_ENDPOINT,
                           faults=config.FAULTS, salt=config.NODE_ID)
        return cls(config, store, Layout(config.EXPERIMENT_NAME), RecordReader(store))

    def info_for(self, source) -> ExperimentInfo:
        return ExperimentInfo(name=self.config.EXPERIMENT_NAME, protocol=PROTOCOL_VERSION,
                              created_at=time.time(), shared=self.config.shared_settings(),
                              questions=source.fingerprint(), max_rounds=self.config.MAX_ROUNDS,
                              coordinator=self.config.NODE_ID, instance=uuid.uuid4().hex)

    def create_or_check(self, source) -> ExperimentInfo:
        """Coordinator: write experiment.json if absent, else check agreement."""
        info = self.reader.read(ExperimentInfo, self.layout.experiment_file)
        if info is None:
            info = self.info_for(source)
            if self.store.create_exclusive(self.layout.experiment_file, to_json(info)):
                log.info("created experiment %s in %s", info.name, self.store.description)
                return info
            log.info("experiment.json of %s was created by another process at the same moment; "
                     "checking it", info.name)
            info = self.reader.read(ExperimentInfo, self.layout.experiment_file)
            if info is None:
                raise ExperimentMismatch(f"{self.layout.experiment_file} exists but is not a valid "
                                         "experiment file; use a new EXPERIMENT_NAME")
        self.check(info, source)
        return info

    def wait_and_check(self, source, waiter: Waiter) -> ExperimentInfo:
        """Worker: wait for the coordinator's experiment.json, then check agreement."""
        info = waiter.until(lambda: self.reader.read(ExperimentInfo, self.layout.experiment_file),
                            what=f"experiment.json of {self.config.EXPERIMENT_NAME} "
                                 "(is a coordinator running?)")
        self.check(info, source)
        return info

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
