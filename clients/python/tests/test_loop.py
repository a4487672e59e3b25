"""FixedIntervalLoop: runs from each start, the outlasted warning, no catch-up burst, stop."""

from __future__ import annotations

import re
import threading
import time
from typing import List, Tuple

import pytest

from conftest import messages
from vigil_reporter import FixedIntervalLoop


def test_an_overrun_is_logged_once_and_not_caught_up(caplog: pytest.LogCaptureFixture) -> None:
    origin = time.monotonic()
    runs: List[Tuple[float, float]] = []

    def task(overrun: float) -> None:
        runs.append((time.monotonic() - origin, overrun))
        # The second run takes 0.55 s of a 0.2 s interval: it outlasts it by 0.35 s.
        time.sleep(0.55 if len(runs) == 2 else 0.02)

    loop = FixedIntervalLoop(0.2, task).start()
    time.sleep(1.3)
    loop.stop()
    assert loop.wait(2)
    starts = [at for at, _ in runs]
    # 0, 0.2, then at once at 0.75 (no burst for the missed 0.4 and 0.6), then every 0.2 s.
    assert starts[:4] == pytest.approx([0.0, 0.2, 0.75, 0.95], abs=0.04), starts
    assert runs[2][1] == pytest.approx(0.35, abs=0.05)
    assert runs[3][1] == 0.0
    warned = messages(caplog.records, "task run outlasted interval by")
    assert len(warned) == 1, warned
    assert re.fullmatch(r"task run outlasted interval by 0\.3[4-7] s", warned[0]), warned


def test_the_period_does_not_include_the_task_s_duration() -> None:
    starts: List[float] = []

    def task(_: float) -> None:
        starts.append(time.monotonic())
        time.sleep(0.1)

    loop = FixedIntervalLoop(0.2, task, initial_delay=0.1).start()
    time.sleep(1.05)
    loop.stop()
    loop.wait(1)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert len(starts) == 5, starts
    assert all(abs(gap - 0.2) < 0.05 for gap in gaps), gaps


def test_a_failing_task_does_not_end_the_loop(caplog: pytest.LogCaptureFixture) -> None:
    count = 0

    def task(_: float) -> None:
        nonlocal count
        count += 1
        raise RuntimeError("boom")

    loop = FixedIntervalLoop(0.05, task).start()
    time.sleep(0.3)
    loop.stop()
    loop.wait(1)
    assert count >= 3
    assert messages(caplog.records, "task failed")


def test_stop_during_the_initial_delay_runs_nothing() -> None:
    ran = threading.Event()
    loop = FixedIntervalLoop(0.1, lambda _: ran.set(), initial_delay=3600).start()
    started = time.monotonic()
    loop.stop()
    assert loop.wait(1)
    assert time.monotonic() - started < 0.5
    assert not ran.is_set()


def test_fuzzy_delay_stays_within_its_bound() -> None:
    first: List[float] = []
    origin = time.monotonic()
    loop = FixedIntervalLoop(10, lambda _: first.append(time.monotonic() - origin), initial_delay=0.1, fuzzy=0.2).start()
    time.sleep(0.45)
    loop.stop()
    loop.wait(1)
    assert len(first) == 1 and 0.1 <= first[0] <= 0.35, first
