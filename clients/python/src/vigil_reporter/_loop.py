"""A fixed-interval loop on its own thread: the seed's ``FixedIntervalLoopingCall``.

The task runs every ``interval`` seconds, measured from the *start* of each run, so the task's
own duration does not stretch the period. A run that outlasts its interval is logged ("task run
outlasted interval by N.NN s") and the next run starts at once, but missed runs are never caught
up with a burst: a heartbeat that bursts after a stall proves nothing and only loads the server.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Callable, Optional

__all__ = ["FixedIntervalLoop"]

_LOG = logging.getLogger("vigil_reporter")


class FixedIntervalLoop:
    """Runs ``task(overrun_s)`` every ``interval`` seconds on a daemon thread.

    ``overrun_s`` is how many seconds the previous run outlasted the interval (0.0 when it ended
    in time, and for the first run). The first run comes after ``initial_delay`` plus a random
    extra delay of at most ``fuzzy`` seconds (the seed's ``periodic_fuzzy_delay``).

    An exception raised by the task is logged and the loop goes on: the loop never dies of its
    task.
    """

    def __init__(
        self,
        interval: float,
        task: Callable[[float], None],
        *,
        initial_delay: float = 0.0,
        fuzzy: float = 0.0,
        name: str = "vigil-loop",
        logger: Optional[logging.Logger] = None,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be greater than zero, not {interval!r}")
        if initial_delay < 0 or fuzzy < 0:
            raise ValueError("initial_delay and fuzzy must not be negative")
        self._interval = float(interval)
        self._task = task
        self._delay = float(initial_delay) + random.uniform(0.0, float(fuzzy))
        self._log = logger or _LOG
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "FixedIntervalLoop":
        """Starts the loop's thread; returns the loop."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Asks the loop to stop: no run starts after this. A run in progress finishes first
        (Python cannot cancel it); calling ``stop`` again does nothing."""
        self._stopping.set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Waits for the loop's thread to end; returns whether it has."""
        if self._thread.ident is None:
            return True
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def stopped(self) -> bool:
        """Whether a stop was asked for."""
        return self._stopping.is_set()

    def _run(self) -> None:
        if self._stopping.wait(self._delay):
            return
        overrun = 0.0
        while not self._stopping.is_set():
            restart_at = time.monotonic() + self._interval
            try:
                self._task(overrun)
            except Exception:  # the loop outlives any failure of its task
                self._log.exception("vigil reporter task failed")
            now = time.monotonic()
            if now > restart_at:
                # Run again at once; the next deadline is measured from that new start, so the
                # missed ticks are dropped rather than replayed.
                overrun = now - restart_at
                self._log.warning("task run outlasted interval by %.2f s", overrun)
                continue
            overrun = 0.0
            if self._stopping.wait(restart_at - now):
                return
