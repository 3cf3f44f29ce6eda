"""Rotation windows with jitter and AWS 6-field ``cron(...)`` schedules: pure functions of time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rotator.config.schedule import Window, parse_schedule, parse_window, window_time

D = datetime(2026, 3, 4, tzinfo=UTC)  # a Wednesday, midnight UTC


def at(hour: int, minute: int = 0, day: int = 0) -> datetime:
    return D + timedelta(days=day, hours=hour, minutes=minute)


# -- parsing ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "length_h"), [
    ("02:00-04:00", 2),
    ("22:00-02:00", 4),  # wraps past midnight
    ("9:30-10:00", 0.5),
    ("00:00-24:00", 24),  # the whole day
    (" 23:00 - 23:30 ", 0.5),
])  # fmt: skip
def test_parse_window(text: str, length_h: float) -> None:
    window = parse_window(text)
    assert window.length == timedelta(hours=length_h)
    # A due time just as the window closes waits for the end of the next occurrence: up to a day
    # later, whatever the window's length; one at its opening up to its length
    # (tests/config/test_window_lifetime.py).
    assert window.latest_wait(window.length) == timedelta(hours=24)
    assert window.latest_wait(timedelta(0)) == window.latest_wait(timedelta(days=3)) == window.length


@pytest.mark.parametrize(("text", "message"), [
    ("", "is not a window"), ("02:00", "is not a window"), ("2am-4am", "is not a window"),
    ("25:00-26:00", "hours go from 00 to 23"), ("24:00-02:00", "hours go from 00 to 23"),
    ("02:60-03:00", "minutes"), ("02:00-24:30", "24:00 only as an end"),
    ("02:00-02:00", "empty window"), ("00:00-00:00", "empty window"),
])  # fmt: skip
def test_bad_windows_say_what_to_write(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_window(text)
    assert "HH:MM-HH:MM" in str(info.value)


def test_occurrence_and_contains_handle_midnight() -> None:
    night = parse_window("22:00-02:00")
    assert night.occurrence(at(1)) == (at(22, day=-1), at(2))  # inside, the part after midnight
    assert night.occurrence(at(12)) == (at(22), at(2, day=1))  # between: the next one
    assert night.occurrence(at(23)) == (at(22), at(2, day=1))  # inside, before midnight
    assert night.contains(at(1)) and night.contains(at(23)) and night.contains(at(22))
    assert not night.contains(at(2)) and not night.contains(at(12))
    day = parse_window("02:00-04:00")
    assert day.occurrence(at(5)) == (at(2, day=1), at(4, day=1))
    assert day.occurrence(at(4)) == (at(2, day=1), at(4, day=1)), "the end is not part of the window"


# -- jitter -------------------------------------------------------------------------------------
def _spread(due: datetime, window: Window, n: int = 400) -> list[datetime]:
    return [window_time(due, window, f"seed-{i}") for i in range(n)]


def test_due_before_the_window_lands_anywhere_in_it() -> None:
    window = parse_window("02:00-04:00")
    times = _spread(at(0, 30), window)
    assert all(at(2) <= t < at(4) for t in times)
    # Jitter uses the whole window: both ends are reached within a few minutes.
    assert min(times) < at(2, 5) and max(times) > at(3, 55)


def test_due_inside_the_window_never_moves_earlier() -> None:
    window = parse_window("02:00-04:00")
    due = at(3, 30)
    times = _spread(due, window)
    assert all(due <= t < at(4) for t in times)


def test_due_after_the_window_waits_for_the_next_day() -> None:
    times = _spread(at(4), parse_window("02:00-04:00"))
    assert all(at(2, day=1) <= t < at(4, day=1) for t in times)


def test_wrapping_window_jitter_crosses_midnight() -> None:
    times = _spread(at(12), parse_window("22:00-02:00"))
    assert all(at(22) <= t < at(2, day=1) for t in times)
    assert any(t.day == D.day for t in times) and any(t.day == D.day + 1 for t in times)


def test_jitter_is_a_function_of_its_seed() -> None:
    window = parse_window("02:00-04:00")
    assert window_time(at(1), window, "mgmt|2026-03-03") == window_time(at(1), window, "mgmt|2026-03-03")
    assert window_time(at(1), window, "mgmt|2026-03-03") != window_time(at(1), window, "mgmt|2026-03-04")


def test_a_window_of_one_microsecond_still_lands_inside() -> None:
    window = parse_window("02:00-04:00")
    due = at(4) - timedelta(microseconds=1)
    assert window_time(due, window, "x") == due


# -- schedules with a window --------------------------------------------------------------------
def test_schedule_with_window_is_deterministic_and_inside() -> None:
    schedule = parse_schedule("1d", window="02:00-04:00")
    last = at(13, 17)  # rotated at 13:17: nominally due at 13:17 the next day, outside the window
    first = schedule.next_due(last, at(14))
    assert at(2, day=2) <= first < at(4, day=2)
    # Another replica, or this one after a restart, computes the same moment at another time.
    assert schedule.next_due(last, at(20, day=1)) == first
    assert parse_schedule("1d", window="02:00-04:00").next_due(last, at(0)) == first
    assert schedule.next_due(None, at(14)) == at(14), "never rotated: due at once, window or not"
    # The interval + the wait of a rotation just after the window closed (due just after the next
    # one closes, it lands up to the end of the one after): 24h - 2h.
    assert schedule.longest_gap == timedelta(days=1, hours=22)
    assert schedule.to_json()["window"] == "02:00-04:00"


def test_cron_schedule_with_window() -> None:
    schedule = parse_schedule("0 1 * * *", window="03:00-03:30")  # fires 01:00, waits for 03:00
    due = schedule.next_due(at(1), at(1))
    assert at(3, day=1) <= due < at(3, 30, day=1)


def test_schedule_rejects_a_bad_window() -> None:
    with pytest.raises(ValueError, match="not a window"):
        parse_schedule("30d", window="nightly")


# -- AWS 6-field cron -----------------------------------------------------------------------------
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # a Sunday


@pytest.mark.parametrize(("expr", "first", "interval"), [
    ("cron(0 3 ? * MON *)", datetime(2026, 3, 2, 3, 0), timedelta(days=7)),
    ("cron(0 3 ? * 2 *)", datetime(2026, 3, 2, 3, 0), timedelta(days=7)),  # AWS: 1 = SUN, 2 = MON
    ("cron(0 3 ? * 1 *)", datetime(2026, 3, 8, 3, 0), timedelta(days=7)),  # Sunday
    ("cron(0 3 ? * SUN-TUE *)", datetime(2026, 3, 2, 3, 0), timedelta(days=5)),  # range from Sunday
    ("cron(0 16 1,15 * ? *)", datetime(2026, 3, 1, 16, 0), timedelta(days=17)),
    ("cron(0 0 L * ? *)", datetime(2026, 3, 31, 0, 0), timedelta(days=31)),  # last day of the month
    ("cron(0 10 ? * 6#3 *)", datetime(2026, 3, 20, 10, 0), timedelta(days=35)),  # third Friday
    ("cron(0 10 ? * 6L *)", datetime(2026, 3, 27, 10, 0), timedelta(days=35)),  # last Friday
    # every 30 minutes on weekdays: the longest gap is the weekend, Friday 23:30 to Monday 00:00
    ("cron(0/30 * ? * MON-FRI *)", datetime(2026, 3, 2, 0, 0), timedelta(days=2, minutes=30)),
    ("cron(15 4 1 JAN,JUL ? *)", datetime(2026, 7, 1, 4, 15), timedelta(days=184)),
    ("CRON(0 3 ? * mon *)", datetime(2026, 3, 2, 3, 0), timedelta(days=7)),
])  # fmt: skip
def test_aws_cron(expr: str, first: datetime, interval: timedelta) -> None:
    schedule = parse_schedule(expr)
    assert schedule.cron == expr
    assert schedule.next_due(T0, T0) == first.replace(tzinfo=UTC)
    assert schedule.interval == interval


@pytest.mark.parametrize(("expr", "message"), [
    ("cron(0 3 * * MON *)", "exactly one of day-of-month and day-of-week must be '?'"),
    ("cron(0 3 ? * ? *)", "exactly one of day-of-month and day-of-week must be '?'"),
    ("cron(0 3 * * ?)", "has 6 fields"),
    ("cron(0 3 15W * ? *)", "'W' \\(nearest weekday\\) is not supported"),
    ("cron(0 3 ? * 8 *)", "not a day of the week"),
    ("cron(0 3 ? * 6#6 *)", "goes from 1 to 5"),
    ("cron(0 3 ? * MON,6L *)", "do not mix"),
    ("cron(0 3 ? * FRI-MON *)", "runs backwards"),
    ("cron(61 3 ? * MON *)", "not a valid AWS cron expression"),
    ("cron(0 3 1 1 ? 2020)", "fires too rarely"),  # once in all (one that has ended loads: test_cron_interval.py)
])  # fmt: skip
def test_bad_aws_cron(expr: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_schedule(expr)
