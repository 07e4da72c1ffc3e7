"""Each round's metrics in the tracker a user already reads: TensorBoard, W&B, trackio.

REPORT_TO (TRL's ``report_to``): a comma-separated list, ``none`` by default. Every tracker
gets the round's metrics record exactly as metrics.jsonl holds it (``reward/mean``,
``eval/accuracy``, ``time/round_s``...), numbers only, at step = round. Each is an optional
extra (``pip install .[tensorboard]`` ...) and works without a network:

* tensorboard: event files written with tensorboardX (the lightest writer: no TensorFlow,
  no TensorBoard server) into this node's local folder, and copied after each round to
  ``logs/{NODE_ID}/tensorboard/`` on the shared folder, so ``tensorboard --logdir
  .../experiments/NAME/logs`` shows every node of the swarm as one run each;
* wandb: one run per node (group EXPERIMENT_NAME, name NODE_ID, project WANDB_PROJECT or
  rl-swarm), offline (``wandb sync`` later) unless an API key is configured or WANDB_MODE
  says otherwise;
* trackio: one run per node (project EXPERIMENT_NAME) in trackio's local store; ``trackio
  show`` opens the dashboard.

A missing package is a ConfigError naming REPORT_TO and the extra, raised before the model
loads. A tracker that fails to start, or later, logs one warning and is dropped: it never
stops training.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import netrc
import os
from typing import Callable, Optional

from rgym_exp.config import ConfigError

log = logging.getLogger(__name__)

# tracker -> (module it needs, the setup.py extra that installs it)
PACKAGES = {"tensorboard": ("tensorboardX", "tensorboard"), "wandb": ("wandb", "wandb"),
            "trackio": ("trackio", "trackio")}


def chosen(report_to: str) -> list[str]:
    return [] if report_to in ("", "none") else report_to.split(",")


def missing(report_to: str) -> list[str]:
    """One message per chosen tracker whose package is not installed."""
    return [f"REPORT_TO={report_to} needs the {module} package: pip install .[{extra}] (or pip "
            f"install {module})" for module, extra in (PACKAGES[n] for n in chosen(report_to))
            if importlib.util.find_spec(module) is None]


def scalars(metrics: dict) -> dict:
    """The numbers of a metrics record (no round, node id, flags or non-finite values)."""
    return {k: float(v) for k, v in metrics.items()
            if k != "round" and type(v) in (int, float) and math.isfinite(v)}


class TensorBoard:
    def __init__(self, folder: str, upload: Optional[Callable[[str, str], None]]):
        from tensorboardX import SummaryWriter
        self.folder, self.upload = folder, upload
        self.writer = SummaryWriter(logdir=folder, flush_secs=3600)
        self._sent: dict[str, tuple] = {}

    def log(self, values: dict, step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()
        self._copy()

    def _copy(self) -> None:
        """Upload each event file that changed since it was last copied (the node's own files)."""
        if self.upload is None:
            return
        for name in sorted(os.listdir(self.folder)):
            path = os.path.join(self.folder, name)
            st = os.stat(path)
            if os.path.isfile(path) and self._sent.get(name) != (st.st_size, st.st_mtime_ns):
                self.upload(path, name)
                self._sent[name] = (st.st_size, st.st_mtime_ns)

    def close(self) -> None:
        self.writer.close()
        self._copy()


def wandb_mode() -> Optional[str]:
    """None when WANDB_MODE is set (wandb reads it); online with an API key (env or the
    ``wandb login`` netrc entry); otherwise offline, so a node without one never blocks."""
    if os.environ.get("WANDB_MODE"):
        return None
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        return "online" if netrc.netrc().authenticators("api.wandb.ai") else "offline"
    except (OSError, netrc.NetrcParseError):
        return "offline"


class WandB:
    def __init__(self, folder: str, experiment: str, node: str, settings: dict):
        import wandb
        mode = wandb_mode()
        os.makedirs(folder, exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or "rl-swarm",
                              group=experiment, name=node, config=settings, dir=folder, mode=mode)
        log.info("W&B run %s (%s) in %s", node, mode or os.environ["WANDB_MODE"], folder)

    def log(self, values: dict, step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class Trackio:
    def __init__(self, experiment: str, node: str, settings: dict):
        import trackio
        self.trackio = trackio
        self.run = trackio.init(project=experiment, name=node, config=settings)
        log.info("trackio run %s in project %s (trackio show opens the dashboard)", node, experiment)

    def log(self, values: dict, step: int) -> None:
        self.trackio.log(values, step=step)

    def close(self) -> None:
        self.trackio.finish()


class Trackers:
    """The chosen trackers of one node; ``log`` after each round, ``close`` at the end."""

    def __init__(self, report_to: str, folder: str, experiment: str, node: str, settings: dict,
                 upload: Optional[Callable[[str, str], None]] = None):
        problems = missing(report_to)
        if problems:
            raise ConfigError("; ".join(problems))
        self.open = {}
        for name in chosen(report_to):
            try:
                if name == "tensorboard":
                    self.open[name] = TensorBoard(os.path.join(folder, "tensorboard"), upload)
                elif name == "wandb":
                    self.open[name] = WandB(os.path.join(folder, "wandb"), experiment, node,
                                            settings)
                else:
                    self.open[name] = Trackio(experiment, node, settings)
            except Exception as exc:  # noqa: BLE001 - a tracker never stops training
                log.warning("REPORT_TO %s could not start (%s: %s); training goes on without it",
                            name, type(exc).__name__, exc)

    def log(self, metrics: dict, step: int) -> None:
        values = scalars(metrics)
        for name, tracker in list(self.open.items()):
            try:
                tracker.log(values, step)
            except Exception as exc:  # noqa: BLE001 - a tracker never stops training
                log.warning("REPORT_TO %s failed (%s); no more metrics go to it", name, exc)
                del self.open[name]

    def close(self) -> None:
        for name, tracker in self.open.items():
            try:
                tracker.close()
            except Exception as exc:  # noqa: BLE001
                log.warning("REPORT_TO %s did not close cleanly: %s", name, exc)
        self.open = {}
