"""The real launcher, with two test-only knobs that a product setting should not have.

``python -m tests.chaos_node`` runs ``rgym_exp.runner.swarm_launcher.main`` after:

* ``CHAOS_CLOCK_OFFSET=600``: this process's wall clock (``time.time``) is 600 s
  off, as on a machine whose clock was never synced;
* ``CHAOS_SLOW_FACTOR=5``: generation and training take 5x as long (a slower
  GPU): each call sleeps 4x its own duration afterwards, heartbeats continuing;
* ``CHAOS_MIN_CALL=0.4``: each generation or training call takes at least this
  many seconds (before the factor), so a tiny model's rounds last long enough
  for "5x slower" to matter against a ROUND_TIMEOUT of a few seconds;
* ``CHAOS_HOLD_FILE=/path``: while that file exists, each generation call waits
  before it starts (heartbeats continue), so a test holds the node at a known
  point -- running, in a round -- instead of hoping it is still there.

Used by tests/test_reliability.py and bench/chaos.py for the clock-skew and
straggler scenarios; everything else in the process is the shipped code.
"""

from __future__ import annotations

import functools
import os
import sys
import time


def _skew_clock(offset: float) -> None:
    real = time.time
    time.time = lambda: real() + offset


def _slow_down(factor: float, floor: float) -> None:
    from genrl.grpo import GRPOTrainer

    def slowed(method):
        @functools.wraps(method)
        def call(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                took = time.perf_counter() - t0
                time.sleep(max(0.0, factor * max(took, floor) - took))
        return call
    GRPOTrainer.generate = slowed(GRPOTrainer.generate)
    GRPOTrainer.step = slowed(GRPOTrainer.step)


def _hold_while(path: str) -> None:
    from genrl.grpo import GRPOTrainer
    generate = GRPOTrainer.generate

    @functools.wraps(generate)
    def held(*args, **kwargs):
        while os.path.exists(path):
            time.sleep(0.05)
        return generate(*args, **kwargs)
    GRPOTrainer.generate = held


def main() -> int:
    offset = float(os.environ.get("CHAOS_CLOCK_OFFSET") or 0)
    factor = float(os.environ.get("CHAOS_SLOW_FACTOR") or 1)
    floor = float(os.environ.get("CHAOS_MIN_CALL") or 0)
    if offset:
        _skew_clock(offset)
    if factor > 1 or floor > 0:
        _slow_down(factor, floor)
    if os.environ.get("CHAOS_HOLD_FILE"):
        _hold_while(os.environ["CHAOS_HOLD_FILE"])
    from rgym_exp.runner.swarm_launcher import main as launch
    return launch([])


if __name__ == "__main__":
    sys.exit(main())
