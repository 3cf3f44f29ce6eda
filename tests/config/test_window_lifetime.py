"""The lifetime check of a policy with a window: never too short, and no shorter than needed.

Validation refuses a ``lifetime`` that is not longer than ``schedule.longest_gap + grace + 2 *
verify_timeout`` (rotator/config/policy.py), and ``longest_gap`` counts how much later than
nominally due a window lets a rotation happen. It must never be below the real longest gap: a scan
of every last rotation (window edges and the instants a due time meets them, +-1 us) with the
latest random draw checks that, and that the bound is reached (an interval's bound is exact). A
token minted with the shortest lifetime validation accepts must never expire while it is current or
in its grace: here each policy rotates for a simulated year or more, every run minting at its
target time and publishing a random while later, up to ``verify_timeout`` (as the daemon does:
``Schedule.next_due`` from the last publication). And the window's wait the previous release
counted, where it was safe, is still the one counted.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator.config import schedule as schedule_module
from rotator.config.policy import PolicyFileError, load_config_bytes
from rotator.config.policy_types import Policy
from rotator.config.schedule import Schedule, Window, format_duration, parse_schedule
from tests.config.policy_text import POLICY

GRACE = timedelta(hours=1)
START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
DAY = timedelta(days=1)
US = timedelta(microseconds=1)


def _load(schedule: str, window: str, lifetime: timedelta, max_age: timedelta | None = None) -> Policy:
    extra = f'window = "{window}"\ngrace = "{format_duration(GRACE)}"\nlifetime = "{format_duration(lifetime)}"'
    if max_age is not None:
        extra += f'\nmax_age = "{format_duration(max_age)}"'
    text = '[rotator]\njournal = "j.db"\n' + POLICY.format(name="p", schedule=schedule, extra=extra)
    return load_config_bytes(text.encode(), Path("/nonexistent/rotator.toml")).policies[0]


def _shortest_accepted(schedule: str, window: str) -> Policy:
    """The policy with the shortest lifetime validation accepts (durations are whole seconds)."""
    probe = _load(schedule, window, timedelta(days=3650))
    needed = probe.schedule.longest_gap + GRACE + 2 * probe.verify_timeout
    with pytest.raises(PolicyFileError, match="tokens would expire while still in use"):
        _load(schedule, window, needed)
    policy = _load(schedule, window, needed + timedelta(seconds=1))
    assert policy.lifetime == needed + timedelta(seconds=1)
    return policy


@pytest.mark.parametrize(("schedule", "window", "rotations"), [
    ("1d", "02:00-04:00", 400),
    ("30d", "02:00-04:00", 40),
    ("1d", "08:00-16:00", 400),
    ("rate(1 day)", "08:00-21:00", 400),  # a window longer than half a day
    ("1d2h1m", "02:00-04:00", 400),  # nominally due a minute after the window closed
    ("30h", "23:00-01:00", 400),
    ("7d", "22:00-02:00", 120),
    ("1h", "02:00-04:00", 1500),  # several rotations per occurrence
    ("2h", "02:00-04:00", 800),  # as long as the window
    ("12h", "00:00-24:00", 800),
    ("0 4 * * *", "02:00-04:00", 400),  # cron: fires as the window closes
    ("0 3 * * 1", "02:00-04:00", 80),
])  # fmt: skip
def test_a_token_with_the_shortest_valid_lifetime_never_expires_while_current(
        schedule: str, window: str, rotations: int) -> None:
    policy = _shortest_accepted(schedule, window)
    sched = policy.schedule
    assert sched.window is not None
    vt = policy.verify_timeout.total_seconds()
    rng = random.Random(f"{schedule}|{window}")
    for _ in range(3):  # from a first publication anywhere in the day (a bootstrap, inside the window or not)
        published = START + timedelta(seconds=rng.uniform(0, 86400))
        minted, took = published, timedelta(0)
        for _ in range(rotations):
            target = sched.next_due(published, published)
            assert target > published and sched.window.contains(target), (published, target)
            # The run starts at its target and mints; it publishes after PLAN, MINT, VERIFY (up to
            # verify_timeout: a new token may answer 401 for a while).
            run = timedelta(seconds=rng.choice((0.2, 1.5, 30.0, rng.uniform(0.1, vt), vt)))
            next_published = target + run
            expires = minted + policy.lifetime
            assert expires > next_published, (
                f"{schedule} in {window}: the token minted at {minted} expires at {expires}, while current "
                f"until {next_published}")
            # It lives through its grace too: twice verify_timeout covers the two runs.
            assert expires > next_published + GRACE, (minted, took, next_published)
            published, minted, took = next_published, target, run


# -- the bound against a scan ---------------------------------------------------------------------
class _Draw:
    """``random.Random`` for :func:`window_time` with a fixed draw: the latest is 1 us before the end."""

    value = 0.0

    def __init__(self, seed: str) -> None:
        del seed

    def random(self) -> float:
        return _Draw.value


def _scan(schedule: Schedule, days: int, step: timedelta) -> tuple[timedelta, list[tuple[datetime, datetime]]]:
    """The longest gap from a last rotation to the next over ``days`` days of last rotations, with
    the earliest and latest draws: a grid of ``step``, and every instant (+-1 us, +-1 s) at which the
    last rotation or its due time meets a window edge (or a cron fire); and the pairs past the bound."""
    window = schedule.window
    assert window is not None
    edges = [window.start, window.start + window.length]
    shifts = [timedelta(0), schedule.interval, schedule.interval - window.length]
    if schedule.cron is not None:
        fires = schedule_module._day_rule(schedule.cron).times
        edges += [timedelta(minutes=t) for t in fires]
    offsets = {(edge - shift) % DAY + nudge for edge in edges for shift in shifts
               for nudge in (timedelta(0), US, -US, timedelta(seconds=1), -timedelta(seconds=1))}  # fmt: skip
    offsets.update(step * i for i in range(DAY // step))
    worst, past = timedelta(0), []
    for day in range(days):
        for offset in offsets:
            last = START + day * DAY + offset
            for draw in (0.0, 1 - 2**-53):
                _Draw.value = draw
                nxt = schedule.next_due(last, last)
                assert nxt > last and window.contains(nxt), (last, nxt)
                worst = max(worst, nxt - last)
                if nxt - last > schedule.longest_gap:
                    past.append((last, nxt))
    return worst, past


@pytest.fixture
def fixed_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schedule_module, "random", type("random", (), {"Random": _Draw}))


@pytest.mark.usefixtures("fixed_draw")
@pytest.mark.parametrize(("schedule", "window", "days", "tight"), [
    ("1d", "02:00-04:00", 1, True),  # whole days, a short window: I + 24h - L
    ("rate(1 day)", "02:00-04:00", 1, True),
    ("7d", "02:00-04:00", 1, True),
    ("30d", "02:00-04:00", 1, True),
    ("1d", "08:00-16:00", 1, True),
    ("1d", "22:00-02:00", 1, True),  # wrapping
    ("7d", "22:00-02:00", 1, True),
    ("1d", "06:00-18:00", 1, True),  # 12 h: I + 24h - L still
    ("1d", "08:00-21:00", 1, True),  # over 12 h: I + L
    ("1d", "00:00-24:00", 1, True),  # the whole day: I + 24h
    ("2h", "02:00-04:00", 1, True),  # interval = window length: due as it closes, I + 24h
    ("4h", "22:00-02:00", 1, True),
    ("1h", "02:00-04:00", 1, True),  # interval < window: I + 24h - L + I
    ("3h", "22:00-02:00", 1, True),
    ("12h", "00:00-24:00", 1, True),  # the whole day: I
    ("1d2h1m", "02:00-04:00", 1, True),  # not whole days: due a minute after the window closed
    ("25h", "02:00-04:00", 1, True),
    ("30h", "23:00-01:00", 1, True),
    ("2d13h", "20:00-08:00", 1, True),
    ("45m", "02:00-02:30", 1, True),
    ("90s", "02:00-02:01", 1, True),
    ("0 4 * * *", "02:00-04:00", 2, True),  # cron firing as the window closes: I + 24h
    ("0 3 * * *", "22:00-02:00", 2, True),
    ("0 3 * * *", "02:00-04:00", 2, True),  # firing inside: I + 1h
    ("0 3 * * 1", "02:00-04:00", 8, True),
    ("cron(30 1 ? * MON *)", "22:00-02:00", 8, True),
    ("0 */6 * * *", "02:00-04:00", 2, False),  # a bound, not reached (the longest wait follows a short gap)
])  # fmt: skip
def test_the_longest_gap_is_never_below_the_real_worst_gap(schedule: str, window: str, days: int, tight: bool) -> None:
    sched = parse_schedule(schedule, window=window)
    worst, past = _scan(sched, days, timedelta(minutes=5))
    assert not past, f"{len(past)} gaps longer than {sched.longest_gap}, e.g. {past[0]}"
    if tight:
        assert sched.longest_gap - worst <= timedelta(milliseconds=1), (worst, sched.longest_gap)


@pytest.mark.usefixtures("fixed_draw")
def test_the_longest_gap_of_random_intervals_and_windows() -> None:
    rng = random.Random(11)
    for _ in range(60):
        start, length = rng.randrange(1440), rng.randrange(1, 1441)
        # ends at 24:00, or wraps past midnight when before its start
        window = Window("w", timedelta(minutes=start), timedelta(minutes=(start + length) % 1440) or DAY)
        interval = rng.choice((timedelta(days=rng.randrange(1, 40)), timedelta(seconds=rng.randrange(60, 40 * 86400)),
                               timedelta(seconds=rng.randrange(1, length * 60 + 1))))  # fmt: skip
        sched = Schedule(f"{interval.total_seconds():.0f}s", interval, None, window)
        worst, past = _scan(sched, 1, timedelta(minutes=23))
        assert not past, (interval, window, past[0])
        assert sched.longest_gap - worst <= timedelta(milliseconds=1), (interval, window, worst, sched.longest_gap)


# -- what validation accepts and refuses -------------------------------------------------------
@pytest.mark.parametrize(("schedule", "window"), [
    ("1d", "02:00-04:00"), ("rate(1 day)", "02:00-04:00"), ("7d", "02:00-04:00"), ("30d", "02:00-04:00"),
    ("1d", "08:00-16:00"), ("7d", "22:00-02:00"), ("0 3 * * *", "02:00-04:00"),
])  # fmt: skip
def test_lifetimes_the_previous_release_accepted_and_safe_still_validate(schedule: str, window: str) -> None:
    """The previous release counted ``interval + 24h - window length``; for whole days and a window
    of 12 h or less (and a cron firing inside the window) that is the real bound, and still accepted
    (with twice verify_timeout, which that release did not count)."""
    sched = parse_schedule(schedule, window=window)
    assert sched.window is not None
    old = sched.interval + DAY - sched.window.length
    second = timedelta(seconds=1)
    verifying = 2 * _load(schedule, window, timedelta(days=3650)).verify_timeout
    policy = _load(schedule, window, old + GRACE + verifying + second, max_age=old + second)
    assert policy.lifetime == old + GRACE + verifying + second


@pytest.mark.parametrize(("schedule", "window", "wait"), [
    ("2h", "02:00-04:00", "1d"),  # interval up to the window's length
    ("1h", "02:00-04:00", "23h"),
    ("1d", "08:00-21:00", "13h"),  # a window over 12 h
    ("1d", "00:00-24:00", "1d"),
    ("1d2h1m", "02:00-04:00", "23h59m"),  # due just after the window closed
    ("0 4 * * *", "02:00-04:00", "1d"),  # a cron firing as the window closes
])  # fmt: skip
def test_lifetimes_the_previous_release_accepted_but_unsafe_are_refused(schedule: str, window: str, wait: str) -> None:
    sched = parse_schedule(schedule, window=window)
    assert sched.window is not None
    old = sched.interval + DAY - sched.window.length
    verifying = 2 * _load(schedule, window, timedelta(days=3650)).verify_timeout  # not counted by that release
    with pytest.raises(PolicyFileError, match=f"the window's wait \\(up to {wait}\\)"):
        _load(schedule, window, old + GRACE + verifying + timedelta(seconds=1))
    _shortest_accepted(schedule, window)
