"""Progress for long steps (generation, training, checkpoint upload) that
behaves in a terminal, in a notebook and in a log file.

Terminal (stderr is a TTY) or notebook: a tqdm bar. Anywhere else -- output
sent to a file, as in swarm mode's per-node logs -- there are no carriage
returns: one log line every ``every`` seconds and one at the end.
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("rgym_exp.progress")


def interactive() -> bool:
    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class LogProgress:
    """A progress counter that writes plain log lines."""

    def __init__(self, total: float, desc: str, unit: str, every: float = 30.0):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.n, self.start = 0.0, time.monotonic()
        self._last = self.start

    def _fmt(self, value: float) -> str:
        if self.unit == "B":
            return f"{value / 1e6:.1f} MB"
        return f"{value:.0f} {self.unit}"

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.every and self.n < self.total:
            self._last = now
            log.info("%s: %s of %s (%.0f%%, %.0fs)", self.desc, self._fmt(self.n),
                     self._fmt(self.total), 100 * self.n / max(self.total, 1e-9), now - self.start)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None and self.total and time.monotonic() - self.start >= self.every:
            log.info("%s: done, %s in %.0fs", self.desc, self._fmt(self.n),
                     time.monotonic() - self.start)
        return False


def progress(total: float, desc: str, unit: str = "it", every: float = 30.0):
    """A context manager with ``update(n)``: tqdm when interactive, else log lines."""
    if interactive():
        from tqdm.auto import tqdm
        scale = unit == "B"
        return tqdm(total=total, desc=desc, unit=unit, unit_scale=scale, leave=False,
                    dynamic_ncols=True)
    return LogProgress(total, desc, unit, every)
