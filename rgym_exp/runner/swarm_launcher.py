"""The one entry point: ``python -m rgym_exp.runner.swarm_launcher [--restart]``.

Environment -> configuration -> coordinator | worker | local swarm. Exit codes:
0 finished; 1 failed (see the log); 2 bad setting or refused start (the message
says which setting); 3 gave up waiting for the swarm; 4 another process took
over this NODE_ID; 5 the experiment folder vanished (deleted, moved or unmounted);
130 stopped by Ctrl-C / SIGTERM.

``--restart``: run a coordinator or worker under supervision: started again with
the same NODE_ID when it fails (not after exit 2 or 4), with a growing pause, at
most RESTART_LIMIT times in a row (rgym_exp/swarm.py). NODE_ROLE=swarm always does.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from rgym_exp.config import ConfigError, help_text, load_config
from rgym_exp.node_log import setup_console_logging

log = logging.getLogger("rgym_exp")


EXIT_GONE = 5      # the experiment folder vanished


def run_node(cfg) -> int:
    from rgym_exp.drive.store import ExperimentGone, MountLost, StoreError
    from rgym_exp.experiment import Experiment, ExperimentMismatch
    from rgym_exp.heartbeat import DuplicateNode
    from rgym_exp.node_log import NodeLogs
    from rgym_exp.waiting import Stopped, Waiter, WaitTimeout

    from rgym_exp.progress import interactive
    if not interactive():  # third-party progress bars (GGUF loading) would flood log files
        os.environ.setdefault("TQDM_DISABLE", "1")
    waiter = Waiter(cfg.POLL_INTERVAL, cfg.WAIT_TIMEOUT)
    by_signal = []

    def on_signal(signum, _frame):
        by_signal.append(signum)
        waiter.request_stop(f"{signal.Signals(signum).name} received")
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, on_signal)

    try:
        exp = Experiment.open(cfg, stop=waiter.stop)
        logs = NodeLogs(exp, cfg.NODE_ID, cfg.CACHE_DIR, cfg.LOG_FLUSH_INTERVAL, cfg.LOG_LEVEL)
    except ConfigError as exc:            # this node's key (KEY_DIR)
        log.error("%s", exc)
        return 2
    except (StoreError, ValueError) as exc:
        log.error("cannot use GDRIVE_PATH=%s: %s", cfg.GDRIVE_PATH, exc)
        return 2
    log.info("%s %s joining experiment %s in %s", cfg.NODE_ROLE, cfg.NODE_ID, cfg.EXPERIMENT_NAME,
             exp.store.description)
    log.info("settings (not at default): %s", ", ".join(
        f"{k}={v}" for k, v in cfg.effective(changed_only=True).items()))
    logs.event("config", settings=cfg.effective())
    try:
        if cfg.NODE_ROLE == "coordinator":
            from rgym_exp.coordinator import Coordinator
            return Coordinator(cfg, exp, waiter, logs=logs).run()
        from rgym_exp.doctor import check_device, check_model
        for check in (check_model(cfg), check_device(cfg)):   # before any wait: a model that
            if check.level == "error":                         # cannot load is said now, not
                log.error("doctor: %s", check.line())          # after WAIT_TIMEOUT
                return 2
        from rgym_exp.worker import Worker  # imports torch: only workers do
        return Worker(cfg, exp, waiter, logs).run()
    except (ConfigError, ExperimentMismatch, DuplicateNode) as exc:
        log.error("%s", exc)
        return 2
    except WaitTimeout as exc:
        log.error("%s", exc)
        return 3
    except Stopped as exc:
        if waiter.stop_code is not None:
            log.error("%s", exc)
            return waiter.stop_code
        log.info("stopped: %s", exc)
        return 130 if by_signal else 4
    except ExperimentGone as exc:
        log.error("%s; this node stops (exit %d): start a new experiment, or restore the "
                  "folder and start the nodes again", exc, EXIT_GONE)
        return EXIT_GONE
    except (StoreError, MountLost) as exc:
        if waiter.stop_code is not None:   # stopping already: the retries were cut short
            log.error("%s", waiter.stop_reason)
            return waiter.stop_code
        log.error("shared folder error: %s" if isinstance(exc, StoreError) else "%s", exc)
        return 1
    except Exception as exc:  # noqa: BLE001 - the log must say what killed the node
        from genrl.models import ModelLoadError
        if isinstance(exc, ModelLoadError):
            log.error("%s", exc)
            return 2
        log.exception("node failed: %s", exc)
        return 1
    finally:
        logs.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip() + "\n\n" + help_text())
        return 0
    restart = "--restart" in argv
    argv = [a for a in argv if a != "--restart"]
    if argv:
        print(f"error: unexpected arguments {argv}: settings are environment variables "
              "(only --restart is an option; see --help)", file=sys.stderr)
        return 2
    try:
        cfg, notes = load_config()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_console_logging(cfg.LOG_LEVEL, cfg.NODE_ID)
    for note in notes:
        (log.warning if "did you mean" in note else log.info)(note)
    from rgym_exp.doctor import quick_check
    if not quick_check(log):    # extras, folder...: fails in a second, not minutes in
        return 2
    if cfg.NODE_ROLE == "swarm":
        from rgym_exp.experiment import question_source
        from rgym_exp.swarm import Swarm
        try:
            question_source(cfg)  # a bad TASKS fails here once, not in every child
        except ConfigError as exc:
            log.error("%s", exc)
            return 2
        log.info("local swarm: a coordinator and %d worker(s) in %s/experiments/%s",
                 cfg.NUM_WORKERS, cfg.GDRIVE_PATH, cfg.EXPERIMENT_NAME)
        log.info("settings:\n%s", "\n".join(f"  {k} = {v}" for k, v in cfg.effective().items()))
        return Swarm(cfg).run()
    if restart:
        from rgym_exp.swarm import supervise
        log.info("%s %s under supervision: restarted after a failure, at most %d times in a row",
                 cfg.NODE_ROLE, cfg.NODE_ID, cfg.RESTART_LIMIT)
        return supervise(cfg)
    return run_node(cfg)


if __name__ == "__main__":
    sys.exit(main())
