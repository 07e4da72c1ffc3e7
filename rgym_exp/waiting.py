"""Waiting on the shared folder without ever waiting forever (invariant 5).

Every wait has a deadline, logs what it waits for (and how long it has), and
polls with jittered, growing, capped intervals. A stop request (Ctrl-C,
SIGTERM, a takeover of this NODE_ID) ends any wait at once.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Callable, Optional, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class WaitTimeout(RuntimeError):
    """Something the node needed did not happen before its deadline."""


class Stopped(RuntimeError):
    """This node was asked to stop."""


class Waiter:
    def __init__(self, poll_max: float, timeout: float, stop: Optional[threading.Event] = None,
                 log_every: float = 60.0, sleep: Callable[[float], None] = None):
        self.poll_max, self.timeout, self.log_every = poll_max, timeout, log_every
        self.stop = stop or threading.Event()
        self.stop_reason = "stop requested"
        self.stop_code: Optional[int] = None   # the exit code the stop asks for, if any
        self._sleep = sleep

    def request_stop(self, reason: str, code: Optional[int] = None) -> None:
        if not self.stop.is_set():
            self.stop_reason, self.stop_code = reason, code
        self.stop.set()

    def check(self) -> None:
        if self.stop.is_set():
            raise Stopped(self.stop_reason)

    def pause(self, seconds: float) -> None:
        """Sleep, but wake up (and raise Stopped) as soon as a stop is requested."""
        if self._sleep is not None:
            self._sleep(seconds)
        elif self.stop.wait(seconds):
            pass
        self.check()

    def until(self, probe: Callable[[], Optional[T]], what: str, timeout: Optional[float] = None,
              progress: Callable[[], str] = lambda: "") -> T:
        """Poll ``probe`` until it returns something truthy; WaitTimeout past the deadline."""
        timeout = self.timeout if timeout is None else timeout
        start = last_log = time.monotonic()
        delay = min(0.1, self.poll_max)
        while True:
            self.check()
            value = probe()
            if value:
                return value
            now = time.monotonic()
            if now - start >= timeout:
                raise WaitTimeout(f"gave up after {timeout:.0f}s waiting for {what}")
            if now - last_log >= self.log_every:
                extra = progress()
                log.info("still waiting for %s (%.0fs so far, giving up after %.0fs)%s", what,
                         now - start, timeout, f"; {extra}" if extra else "")
                last_log = now
            self.pause(min(delay * random.uniform(0.6, 1.0), max(0.0, start + timeout - now)))
            delay = min(self.poll_max, delay * 1.6)
