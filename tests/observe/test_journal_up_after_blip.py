"""One failed sweep (the journal refused one query) kept rotator_journal_up at 0 until the next sweep,
a whole sweep_interval later: a false critical RotatorJournalDown (for 5m) at sweep_interval >= 5m,
while /readyz said 200 and every other query worked. A failed sweep is tried again TICK_RETRY later,
doubling up to sweep_interval (rotator/runners/daemon.py, Daemon._pass)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from rotator.core.errors import JournalError
from rotator.runners.daemon import TICK_RETRY
from tests.runners.test_daemon import Harness
from tests.runners.test_daemon import harness as harness  # noqa: F401


def journal_up(h: Harness) -> float | None:
    for line in h.daemon.metrics.exposition().decode().splitlines():
        if line.startswith("rotator_journal_up "):
            return float(line.split()[1])
    return None


def failing_overview(h: Harness, failures: int) -> list[datetime]:
    """Make the journal's overview (the sweep's read) fail ``failures`` times; the times it was asked."""
    real = h.daemon.journal.overview
    asked: list[datetime] = []

    def overview(*args: Any, **kwargs: Any) -> Any:
        asked.append(h.clock.now())
        if len(asked) <= failures:
            raise JournalError("database is locked (a blip)")
        return real(*args, **kwargs)

    h.daemon.journal.overview = overview  # type: ignore[method-assign]
    return asked


def test_journal_up_within_a_pass_after_one_failed_sweep(harness: Callable[..., Harness]) -> None:
    h = harness([("a", "1d", "")], daemon='sweep_interval = "30m"\n')
    h.tick()
    h.daemon._check_journal()
    assert journal_up(h) == 1
    failing_overview(h, 1)
    h.clock.advance(timedelta(minutes=30))
    with pytest.raises(JournalError):
        h.tick()
    assert journal_up(h) == 0, "the sweep's read failed"

    h.clock.advance(timedelta(seconds=TICK_RETRY))
    h.daemon._check_journal()
    h.tick()
    assert journal_up(h) == 1, "the journal answers again: the next pass sweeps and sees it"
    ready, _ = h.daemon.readiness()
    assert ready


def test_a_sweep_that_keeps_failing_is_tried_again_doubling_up_to_sweep_interval(
        harness: Callable[..., Harness]) -> None:
    h = harness([("a", "1d", "")], daemon='sweep_interval = "60s"\n')
    h.tick()
    asked = failing_overview(h, 6)
    start = h.clock.now()
    for _ in range(4 * 60):  # a pass every second (jobs ending, a watch), for 4 minutes
        h.clock.advance(timedelta(seconds=1))
        try:
            h.tick()
        except JournalError:
            pass
    offsets = [(t - start).total_seconds() for t in asked]
    # due at 60 s; then 5, 10, 20, 40 s later, then every 60 s (sweep_interval); the 7th is due at 255 s
    assert offsets == [60, 65, 75, 95, 135, 195], offsets
    assert journal_up(h) == 0
    h.clock.advance(timedelta(minutes=1))
    h.tick()
    assert len(asked) == 7 and journal_up(h) == 1
