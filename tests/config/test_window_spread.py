"""Rotations in a window over the long run: one per interval, spread uniformly over the window.

``Schedule.next_due`` counts an interval schedule from the opening of the window its last rotation
happened in, then draws a seeded moment in the window. Counted from each drawn moment instead, every
rotation was drawn later than the last: they piled up at the window's end, then one fell due after
it closed and a whole day was skipped (36 two-day gaps in a year of a daily schedule). These tests
run many steps, as the daemon does (the next due time from the last publication, a run publishing a
while after its target), where a test of one step sees nothing wrong.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from rotator.config.schedule import Schedule, Window, parse_schedule

START = datetime(2026, 3, 2, tzinfo=UTC)
#: chi-square's 99.9 % quantile with 11 degrees of freedom (12 buckets): a uniform spread stays under it
CHI2_12_BUCKETS = 31.26


def _offset(window: Window, moment: datetime) -> timedelta:
    """How long after its occurrence opened ``moment`` (inside the window) is."""
    assert window.contains(moment), moment
    return moment - window.last_opening(moment)


def _chi2(offsets: list[timedelta], length: timedelta, buckets: int = 12) -> float:
    counts = [0] * buckets
    for offset in offsets:
        counts[min(int(offset / length * buckets), buckets - 1)] += 1
    expected = len(offsets) / buckets
    return sum((c - expected) ** 2 / expected for c in counts)


def _publications(schedule: Schedule, first: datetime, rotations: int, rng: random.Random,
                  longest_run: float) -> list[tuple[datetime, datetime]]:
    """(target, publication) of each rotation, each due from the previous publication."""
    out = []
    published = first
    for _ in range(rotations):
        target = schedule.next_due(published, published)
        assert target > published
        published = target + timedelta(seconds=rng.uniform(0.1, longest_run))
        out.append((target, published))
    return out


@pytest.mark.parametrize("text", ["1d", "rate(1 day)"])
@pytest.mark.parametrize("longest_run", [2.0, 600.0])  # 600 s: some runs publish after the window closed
def test_a_daily_schedule_rotates_every_day_of_a_year_spread_over_its_window(text: str, longest_run: float) -> None:
    schedule = parse_schedule(text, window="02:00-04:00")
    window = schedule.window
    assert window is not None
    rng = random.Random(f"{text}|{longest_run}")
    runs = _publications(schedule, START + timedelta(hours=2, minutes=30), 365, rng, longest_run)
    days = [target.date() for target, _ in runs]
    assert days == [(START + timedelta(days=1 + i)).date() for i in range(365)], "one rotation every day, none skipped"
    gaps = [b[0] - a[1] for a, b in zip(runs, runs[1:], strict=False)]
    assert max(gaps) < timedelta(days=1, hours=2), "never a two-day gap"
    assert min(gaps) > timedelta(hours=22) - timedelta(seconds=longest_run), "nor two rotations close together"
    offsets = [_offset(window, target) for target, _ in runs]
    assert _chi2(offsets, window.length) < CHI2_12_BUCKETS, "uniform over the window"
    late = sum(1 for o in offsets if o >= window.length - timedelta(minutes=10))
    assert late < 0.15 * len(offsets), f"{late} of {len(offsets)} in the window's last 10 minutes"
    mean = sum(offsets, timedelta(0)) / len(offsets)
    assert timedelta(minutes=50) < mean < timedelta(minutes=70)


def test_many_policies_spread_over_the_window_every_day() -> None:
    """Policies that share a schedule and a window, rotated at different moments, keep spreading
    over all of it (the seed is each policy's own last rotation), a month on as on the first day."""
    schedule = parse_schedule("1d", window="02:00-04:00")
    window = schedule.window
    assert window is not None
    rng = random.Random(7)
    on_day = {1: [], 30: []}  # type: dict[int, list[timedelta]]
    for _ in range(240):
        first = START + timedelta(seconds=rng.uniform(0, 86400))  # bootstrapped at any time of the day
        runs = _publications(schedule, first, 30, rng, 5.0)
        for day in on_day:
            on_day[day].append(_offset(window, runs[day - 1][0]))
    for offsets in on_day.values():
        assert _chi2(offsets, window.length) < CHI2_12_BUCKETS


@pytest.mark.parametrize(("text", "window"), [
    ("1d1h", "02:00-04:00"),  # due inside the window: from the due time to the end
    ("30h", "02:00-04:00"),  # due outside: the whole next occurrence
    ("7d", "22:00-02:00"),
    ("2h", "02:00-04:00"),  # as long as the window
])  # fmt: skip
def test_never_before_due_and_inside_the_window(text: str, window: str) -> None:
    """Due one interval after the opening of the window the last rotation happened in (or, for one
    outside every window, the window's length less than the interval after it): never sooner."""
    schedule = parse_schedule(text, window=window)
    win = schedule.window
    assert win is not None
    rng = random.Random(text)
    for _ in range(500):
        last = START + timedelta(seconds=rng.uniform(0, 5 * 86400))
        nxt = schedule.next_due(last, last)
        due = last + schedule.interval - min(last - win.last_opening(last), win.length)
        assert nxt >= due and nxt > last and win.contains(nxt)
        assert nxt - last < schedule.longest_gap
        assert schedule.next_due(last, nxt) == nxt, "the same moment whenever it is computed (replicas agree)"


@pytest.mark.parametrize(("text", "window", "per_day"), [
    ("12h", "00:00-24:00", 2),  # the whole day: no waiting, no jitter, nothing drifts
    ("1h", "02:00-04:00", 2),  # two per occurrence
    ("30m", "22:00-02:00", 8),
])  # fmt: skip
def test_an_interval_shorter_than_the_window_keeps_its_pace(text: str, window: str, per_day: int) -> None:
    """While the window is open a rotation happens when due; the first of each occurrence, which
    waited for it to open, lands at a random moment of its first interval: as many rotations as fit,
    spread over the whole window, and no drift to the window's end."""
    schedule = parse_schedule(text, window=window)
    win = schedule.window
    assert win is not None
    rng = random.Random(text)
    runs = _publications(schedule, START + timedelta(hours=1), 60 * per_day, rng, 3.0)
    for (_, published), (target, _) in zip(runs, runs[1:], strict=False):
        assert win.contains(target)
        if win.contains(published + schedule.interval):
            assert target == published + schedule.interval, "due while open: at its due time"
    spanned = (runs[-1][0] - runs[0][0]) / timedelta(days=1)
    assert len(runs) / spanned >= per_day * 0.95, f"{len(runs)} rotations in {spanned:.1f} days"
    if win.length < timedelta(days=1):
        assert _chi2([_offset(win, target) for target, _ in runs], win.length) < CHI2_12_BUCKETS
