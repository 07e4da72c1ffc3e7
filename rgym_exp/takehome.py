"""What a worker hands its user beyond the shared folder, in one place the worker calls:

* its metrics in the user's own tracker (REPORT_TO, rgym_exp/trackers.py);
* its model on the Hugging Face Hub every HUB_PUSH_INTERVAL rounds and at the end
  (HUB_REPO_ID, rgym_exp/hub.py), as a standard model folder (rgym_exp/export.py);
* that folder in ``exports/{NODE_ID}/`` of the experiment at the end (EXPORT_AT_END);
* its running credit tally (the peer groups it trained on, by origin) in its peer record,
  which ``rgym_exp.status`` adds up (rgym_exp/credit.py).

Hooks: ``start`` once the model is loaded, ``after_round`` after each submission, ``at_end``
when the experiment finished, ``close`` always. None of them stops training on a failure of
its own: a tracker, the Hub or an export that fails is one warning line.
"""

from __future__ import annotations

import logging
import os
import shutil

from rgym_exp.config import ConfigError
from rgym_exp.credit import Tally
from rgym_exp.drive.store import MountLost, StoreError
from rgym_exp.export import card_facts, model_card, save_model_dir, upload_dir
from rgym_exp.hub import HubPusher
from rgym_exp.trackers import Trackers, missing

log = logging.getLogger(__name__)


class TakeHome:
    def __init__(self, config, experiment, heartbeat, local_folder: str):
        problems = missing(config.REPORT_TO)
        if problems:              # before the model loads: a bad setting fails in seconds
            raise ConfigError("; ".join(problems))
        self.cfg, self.exp, self.heartbeat = config, experiment, heartbeat
        self.node, self.folder = config.NODE_ID, local_folder
        self.trainer = self.trackers = self.hub = None
        self.tally = Tally()
        self._exports = 0

    def start(self, trainer) -> None:
        cfg = self.cfg
        self.trainer = trainer
        self.tally = Tally(self.heartbeat.record.used_from)   # taken back with the NODE_ID
        self.trackers = Trackers(cfg.REPORT_TO, self.folder, cfg.EXPERIMENT_NAME, self.node,
                                 cfg.effective(), upload=self._copy_log)
        if cfg.HUB_REPO_ID:
            self.hub = HubPusher(cfg.HUB_REPO_ID.replace("{node}", self.node),
                                 cfg.HUGGINGFACE_ACCESS_TOKEN, cfg.HUB_PUSH_INTERVAL)
            self.hub.check()

    def after_round(self, round_: int, metrics: dict, external: list[dict]) -> None:
        self.heartbeat.update(used_from=self.tally.add(external))
        if self.trackers is not None:
            self.trackers.log(metrics, round_)
        if self.hub is not None and self.hub.due(round_):
            folder = self.export(round_)
            if folder:
                self.hub.push(folder, round_)

    def at_end(self, round_: int) -> None:
        """The experiment finished: one export of the final model, copied to the folder
        (EXPORT_AT_END) and pushed (HUB_REPO_ID, unless that round is on the Hub already)."""
        if round_ < 0 or self.trainer is None:
            return
        hub = self.hub
        if hub is not None:
            hub.wait()                          # a push in progress first
        push = hub is not None and hub.enabled and hub.pushed_round != round_
        if not (self.cfg.EXPORT_AT_END or push):
            return
        folder = self.export(round_)
        if not folder:
            return
        if self.cfg.EXPORT_AT_END:
            remote = self.exp.layout.export_dir(self.node)
            try:
                upload_dir(self.exp.store, folder, remote, self.heartbeat.ensure_owner)
                log.info("exported the model of round %d to %s", round_, remote)
            except (StoreError, MountLost) as exc:
                log.warning("export of round %d not copied to %s: %s", round_, remote, exc)
        if push:
            hub.push(folder, round_, wait=True)  # deletes the folder
        shutil.rmtree(folder, ignore_errors=True)

    def export(self, round_: int) -> str:
        """The live model as a standard model folder in local scratch ("" if that failed)."""
        self._exports += 1
        out = os.path.join(self.folder, "exports", f"round_{round_}.{self._exports}")
        try:
            facts = card_facts(self.exp.store, self.exp.layout, self.node, round_)
            card = model_card(self.cfg.MODEL_NAME, facts, self.trainer.steps)
            save_model_dir(self.trainer.model, self.trainer.tokenizer, out, card)
            return out
        except Exception as exc:  # noqa: BLE001 - an export never stops training
            log.warning("could not export the model of round %d: %s: %s", round_,
                        type(exc).__name__, exc)
            shutil.rmtree(out, ignore_errors=True)
            return ""

    def _copy_log(self, path: str, name: str) -> None:
        """TensorBoard's event files to logs/{node}/tensorboard/ (while this node is ours)."""
        try:
            if self.heartbeat.owns():
                self.exp.store.upload(path, self.exp.layout.log_file(self.node, f"tensorboard/{name}"))
        except (StoreError, MountLost) as exc:
            log.warning("tensorboard file %s not copied to the folder: %s", name, exc)

    def close(self) -> None:
        if self.trackers is not None:
            self.trackers.close()
        if self.hub is not None and self.hub.busy():
            log.info("waiting for the Hub push in progress to finish")
            self.hub.wait()
