"""A cron schedule's interval: the longest gap between two fires over a whole calendar cycle (28 years
and the wrap into the next; an AWS expression's listed years), the same whatever day it is computed.
Token lifetimes, the lifetime check and the default max_age are built from it, so an interval shorter
than a real gap lets tokens expire months before their rotation, and one that changed with the day
made a file valid one day and refused another."""

from __future__ import annotations

import contextlib
import functools
import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import rotator.config.schedule as schedule_module
from rotator.config.policy import PolicyFileError, load_config
from rotator.config.schedule import (
    _CRONTAB_FIELDS,
    NoNextDue,
    _fire_days,
    _trigger,
    parse_schedule,
)
from tests.config.policy_text import POLICY

NOW = datetime(2026, 12, 6, 4, 0, tzinfo=UTC)
#: The days the review found intervals changing on (2026-2033), and a few more
DAYS = (date(2026, 1, 1), date(2026, 3, 7), date(2026, 12, 6), date(2027, 3, 6), date(2027, 10, 7),
        date(2027, 12, 31), date(2029, 2, 5), date(2030, 3, 2), date(2030, 7, 10), date(2031, 6, 13),
        date(2032, 2, 28), date(2032, 9, 10), date(2033, 12, 22), date(2041, 6, 1), date(2098, 12, 31))  # fmt: skip


def _fires(expr: str, start: datetime, until: datetime) -> list[datetime]:
    """Every fire from ``start`` to the first one after ``until``, one APScheduler call each."""
    trigger = _trigger(expr)
    fires: list[datetime] = []
    moment, previous = start, None
    while not fires or fires[-1] <= until:
        fire = trigger.get_next_fire_time(previous, moment)
        if fire is None:
            break
        fires.append(fire)
        previous, moment = fire, fire + timedelta(seconds=1)
    return fires


def _longest(fires: list[datetime]) -> timedelta:
    return max(b - a for a, b in zip(fires, fires[1:], strict=False))


@pytest.mark.parametrize(("expr", "interval"), [
    ("0 3 1-14 * *", timedelta(days=18)),  # 14 January to 1 February
    ("0 3 * 1-6 *", timedelta(days=185)),  # 30 June to 1 January
    # the last Monday of June to the first of January: 24 June to 6 January in a year whose 30 June is a Sunday
    ("cron(0 3 ? JAN-JUN MON *)", timedelta(days=196)),
    ("cron(0 3 1-14 * ? *)", timedelta(days=18)),
    ("0 9-17 * * 1-5", timedelta(days=2, hours=16)),  # Friday 17:00 to Monday 09:00
    ("0 3,15 * * *", timedelta(hours=12)),
    ("* * * * *", timedelta(minutes=1)),
    ("0 3 29 2 *", timedelta(days=4 * 365 + 1)),  # leap days
    ("cron(0 3 29 2 ? *)", timedelta(days=4 * 365 + 1)),
    ("cron(0 3 ? * MON 2027,2030)", timedelta(days=742)),  # Monday 27 December 2027 to Monday 7 January 2030
    # the review's: they changed with the day they were computed on
    ("0 3 * 2 0", timedelta(days=350)),  # Sundays in February: 22 February 2009 to 7 February 2010
    ("0 3 * 2 1-5", timedelta(days=340)),  # weekdays in February
    ("cron(0 3 ? 2,8 1#5 *)", timedelta(days=1827)),  # a fifth Sunday in February or August: 30 August 2015 to 2020
    ("cron(0 3 1 * ? 2026-2027)", timedelta(days=31)),  # the same in its last months
    # one day in the 28-year cycle: 29 February on a Sunday (2004, 2032)
    ("0 3 29 2 */7", timedelta(days=10227)),
])  # fmt: skip
def test_the_interval_is_the_longest_gap_of_a_whole_cycle_and_its_wrap(expr: str, interval: timedelta) -> None:
    assert parse_schedule(expr).interval == interval


@pytest.mark.parametrize(("expr", "last"), [
    ("0 3 1-14 * *", datetime(2027, 1, 14, 3, tzinfo=UTC)),
    ("0 3 * 1-6 *", datetime(2027, 6, 30, 3, tzinfo=UTC)),
    ("cron(0 3 ? JAN-JUN MON *)", datetime(2027, 6, 28, 3, tzinfo=UTC)),
])
def test_no_rotation_comes_later_than_the_interval(expr: str, last: datetime) -> None:
    """The review's examples: the next rotation after ``last`` is 18, 185 and 189 days later, and the
    interval (14 fires from 1 January 2026: 1, 1 and 7 days) must not be shorter."""
    schedule = parse_schedule(expr)
    assert schedule.next_due(last, last) - last <= schedule.interval


def test_generated_crontab_expressions_are_never_given_an_interval_below_a_real_gap() -> None:
    """Soundness on seeded random expressions of one or two times a day: every gap between two
    fires over a year and its wrap, found by asking APScheduler fire by fire from several days, fits
    in the interval."""
    rng = random.Random(20261206)
    checked = 0
    while checked < 25:
        day_fields = [_random_field(rng, *spec[1:3]) for spec in _CRONTAB_FIELDS[2:]]
        expr = f"{rng.randint(0, 59)} {rng.choice(['3', '3,15'])} " + " ".join(day_fields)
        try:
            interval = parse_schedule(expr).interval
        except ValueError:
            continue  # fires too rarely (31 February)
        start = datetime.combine(rng.choice(DAYS), datetime.min.time(), UTC)
        fires = _fires(expr, start, start + timedelta(days=370))
        if len(fires) > 1:
            assert interval >= _longest(fires), expr
            checked += 1


def _random_field(rng: random.Random, low: int, high: int) -> str:
    kind = rng.random()
    if kind < 0.3:
        return "*"
    first = rng.randint(low, high - 1)
    if kind < 0.5:
        return str(first)
    last = rng.randint(first + 1, high)
    return f"{first}-{last}" if kind < 0.8 else f"*/{rng.randint(2, max(2, (high - low) // 2))}"


def _trigger_days(expr: str, start: date, until: date) -> list[date]:
    """The days from ``start`` to ``until`` on which APScheduler fires ``expr``, one call each."""
    trigger, days = _trigger(expr), []
    moment = datetime.combine(start, datetime.min.time(), UTC)
    while True:
        fire = trigger.get_next_fire_time(None, moment)
        if fire is None or fire.date() > until:
            return days
        days.append(fire.date())
        moment = datetime.combine(fire.date() + timedelta(days=1), datetime.min.time(), UTC)


def _random_aws(rng: random.Random) -> str:
    """A seeded AWS expression firing at 03:00: either day field (numbers, ranges, steps, ``L``,
    ``n#k``, ``nL``), months by number or name, and a year field (``*``, listed, ranges, steps)."""
    months = rng.choice(["*", "*", "2", "FEB", "2,8", "jan-jun", "*/3", "3-11/4", "6,dec", "1-2"])
    if rng.random() < 0.5:
        dom = rng.choice(["*", "1", "13", "29", "30", "31", "L", "1-7", "*/10", "5/7", "1,15,L", "28-31", "20-31/3"])
        days = f"{dom} {months} ?"
    else:
        dow = rng.choice(["*", "1", "MON", "2-6", "sun-tue", "1,7", "6#5", "1#5", "2#1", "5#3", "6L", "1L",
                          "2#1,6#3", "L", "sat,SUN"])  # fmt: skip
        days = f"? {months} {dow}"
    year = "*"
    if rng.random() < 0.5:
        year = rng.choice(["2027", "2026,2028,2035", "2026-2030", "2027/4", "*/7", "2096-2104", "2099-2101/2"])
    return f"cron(0 3 {days} {year})"


def test_the_day_calendar_agrees_with_apscheduler_day_by_day() -> None:
    """The interval reads its days from a calendar of its own, a year at a time (a day at a time with
    APScheduler would be slow); they are the days APScheduler fires on, both crontab day rules, the
    AWS fields (L, nL, n#k, ?, listed years) and leap years, 2100 (no leap year) included."""
    rng = random.Random(61220)
    years = (2026, 2027, 2028, 2029, 2032, 2099, 2100, 2101)
    for index in range(200):
        if index % 2:
            expr = _random_aws(rng)
        else:
            expr = "0 3 " + " ".join(_random_field(rng, *spec[1:3]) for spec in _CRONTAB_FIELDS[2:])
        for year in rng.sample(years, 2):
            ours = _fire_days(expr, range(year, year + 1))
            assert ours == _trigger_days(expr, date(year, 1, 1), date(year, 12, 31)), (expr, year)


def test_an_aws_interval_is_the_longest_gap_apscheduler_fires_over_its_cycle() -> None:
    """AWS expressions that fire on few days (so that asking APScheduler fire by fire is quick): the
    interval is the longest gap between its fires over 2001-2028 and into 2029 (the next cycle), or
    over its listed years."""
    rng = random.Random(20261207)
    checked = 0
    while checked < 30:
        expr = _random_aws(rng)
        if "*" in expr.split()[3] or expr.split()[2] in ("*", "1-7", "*/10", "28-31") or \
                expr.split()[4] in ("*", "2-6", "sun-tue", "1,7", "sat,SUN"):
            continue  # too many days to ask fire by fire
        try:
            interval = parse_schedule(expr).interval
        except ValueError as exc:
            assert "fires too rarely" in str(exc), exc
            continue
        listed = expr.split()[-1] != "*)"
        start = datetime(1970 if listed else 2001, 1, 1, tzinfo=UTC)
        fires = _fires(expr, start, datetime(2200 if listed else 2029, 1, 1, tzinfo=UTC))
        assert interval == _longest(fires), expr
        checked += 1


def test_the_interval_does_not_depend_on_the_day() -> None:
    """The review's expressions (from a sweep of 2026-2033) and more, computed on other days: the
    same interval each time (it was counted from today: 350 or 343 days for Sundays in February)."""
    exprs = ["0 3 * 2 0", "0 3 13 2 5", "0 3 * 2 1-5", "0 3 * 6 1-5", "0 3 13 2,8 1-5", "cron(0 3 ? 2,8 1#5 *)",
             "cron(0 3 1 * ? 2026-2027)", "cron(0 3 ? * MON 2026,2030)", "0 3 29 2 *", "cron(0 3 ? 2 6L *)",
             "cron(0 3 1 1 ? 2026,2028,2035)", "0 3 31 * *", "cron(0 3 ? * 6#5 *)", "0 3 * 1-6 *"]  # fmt: skip
    seen: dict[str, set[timedelta]] = {expr: set() for expr in exprs}
    for day in DAYS:
        with _today(day):
            for expr in exprs:
                seen[expr].add(parse_schedule(expr).interval)
    assert {expr: len(intervals) for expr, intervals in seen.items()} == dict.fromkeys(exprs, 1)


def test_a_policy_file_validates_alike_whatever_the_day(tmp_path: Path) -> None:
    """The review's rotator.toml (Sundays in February, lifetime 348d): refused on some days and
    accepted on others while the interval followed the day; now refused on every day, alike."""
    path = _file(tmp_path, ("feb-sundays", "0 3 * 2 0", 'grace = "1d"\nlifetime = "348d"'),
                 ("feb", "0 3 * 2 1-5", 'grace = "1d"'))  # fmt: skip
    outcomes = set()
    for day in DAYS:
        with _today(day), pytest.raises(PolicyFileError) as info:
            load_config(path)
        outcomes.add(tuple(str(p) for p in info.value.problems))
    assert outcomes == {(_lifetime_problem("feb-sundays", "351d10m"),)}


def _lifetime_problem(name: str, above: str) -> str:
    """The problem of policy[0] ``name`` whose lifetime is not above ``above`` (no window, verify_timeout 5m)."""
    return (f"policy[0] '{name}'.lifetime: is not longer than schedule interval + grace + twice verify_timeout "
            "(10m): tokens would expire while still in use (a token's lifetime counts from its mint, the schedule "
            "from its publication, which follows up to verify_timeout of verification in this run and again in the "
            f"run that replaces it) (fix: raise lifetime above {above}, or shorten schedule, grace or verify_timeout)")


@contextlib.contextmanager
def _today(day: date) -> Iterator[None]:
    """Makes ``day`` today for rotator.config.schedule (``datetime.now``, ``date.today``), caches emptied."""

    class Today(date):
        @classmethod
        def today(cls) -> Any:
            return cls(day.year, day.month, day.day)

    class Now(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            moment = cls(day.year, day.month, day.day, 12, tzinfo=UTC)
            return moment if tz is None else moment.astimezone(tz)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(schedule_module, "date", Today)
        patch.setattr(schedule_module, "datetime", Now)
        _clear_caches()
        yield
    _clear_caches()


def _clear_caches() -> None:
    from rotator.config import policy

    for module in (schedule_module, policy):
        for value in vars(module).values():
            if isinstance(value, functools._lru_cache_wrapper):
                value.cache_clear()


def test_the_interval_is_computed_without_asking_apscheduler_day_by_day(monkeypatch: pytest.MonkeyPatch) -> None:
    """One APScheduler call per firing day made an AWS expression 8.7 times slower to load (and 28
    years of them would be far worse): the days come from the calendar, APScheduler is not asked."""
    from apscheduler.triggers.cron import CronTrigger

    def refused(*args: object) -> None:
        raise AssertionError("get_next_fire_time called")

    monkeypatch.setattr(CronTrigger, "get_next_fire_time", refused)
    _clear_caches()
    for expr in ("cron(0 3 ? * MON-FRI *)", "cron(0/30 * L * ? *)", "cron(0 3 ? 2 6L 2026-2199)", "0 3 * * 1-5"):
        assert parse_schedule(expr).interval > timedelta(0)


def test_listed_years_give_the_same_interval_whatever_the_day() -> None:
    """Mondays in 2026 and 2030: the gap from the last Monday of 2026 to the first of 2030, in 2026 as
    in 2029 (it was a week once 2030 was near) and after 2030 (the policy then has no next due time)."""
    expr = "cron(0 3 ? * MON 2026,2030)"
    gap = datetime(2030, 1, 7, tzinfo=UTC) - datetime(2026, 12, 28, tzinfo=UTC)
    for day in (date(2026, 6, 1), date(2029, 6, 1), date(2031, 1, 1)):
        with _today(day):
            assert parse_schedule(expr).interval == gap
    now = datetime(2031, 1, 1, tzinfo=UTC)
    with pytest.raises(NoNextDue):
        parse_schedule(expr).next_due(now, now)


@pytest.mark.parametrize(("expr", "message"), [
    ("cron(0 3 1 * ? 2300)", "AWS accepts the years 1970 to 2199"),
    ("cron(0 3 1 * ? 2026-2200)", "AWS accepts the years 1970 to 2199"),
])  # fmt: skip
def test_years_past_aws_are_refused(expr: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_schedule(expr)


def test_an_open_year_step_is_counted_up_to_2199() -> None:
    """'2026/50': 2026, 2076, 2126, 2176 (APScheduler would go on to 9999; AWS stops at 2199)."""
    assert parse_schedule("cron(0 3 1 1 ? 2026/50)").interval == datetime(2076, 1, 1) - datetime(2026, 1, 1)


@pytest.mark.parametrize("expr", ["cron(0 3 1 * ? 2030)", "cron(0 3 1 * ? 2040)"])
def test_a_schedule_whose_years_are_all_ahead_is_accepted(expr: str) -> None:
    schedule = parse_schedule(expr)
    assert schedule.interval == timedelta(days=31)
    assert schedule.next_due(NOW, NOW).year == int(expr[-5:-1])


@pytest.mark.parametrize("expr", [
    "cron(0 3 1 * ? 2025)",  # ended
    "cron(0 3 1 * ? 2026)",  # ended on 1 December
    "cron(0 3 15 * ? 2026)",  # one fire left, on 15 December
])  # fmt: skip
def test_a_schedule_that_ends_keeps_the_interval_of_its_years(expr: str) -> None:
    """Loading accepts a schedule that has ended (docs/policy.md): its policy has no next due time,
    which `validate`, `plan` and the daemon report for that policy alone."""
    schedule = parse_schedule(expr)
    assert schedule.interval == timedelta(days=31)
    last = datetime(2026, 12, 16, tzinfo=UTC)
    with pytest.raises(NoNextDue):
        schedule.next_due(last, last)


@pytest.mark.parametrize(("expr", "message"), [
    ("0 3 31 2 *", "fires fewer than twice in all"),
    ("cron(0 3 30 2 ? *)", "fires fewer than twice in all"),
    ("cron(0 3 1 1 ? 2025)", "fires fewer than twice in all"),  # once, in the past
    ("cron(0 3 1 1 ? 2030)", "fires fewer than twice in all"),  # once, ahead
    ("cron(0 3 1 1 ? 2030,2199)", "more than 36525 days \\(100 years\\) apart"),
])  # fmt: skip
def test_a_schedule_that_cannot_rotate_says_why(expr: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"fires too rarely to rotate on: .*{message}"):
        parse_schedule(expr)


def _file(tmp_path: Path, *policies: tuple[str, str, str]) -> Path:
    path = tmp_path / "rotator.toml"
    path.write_text("".join(POLICY.format(name=n, schedule=s, extra=e) for n, s, e in policies))
    return path


def test_a_file_with_a_schedule_that_has_ended_still_loads(tmp_path: Path) -> None:
    """The review's two.toml: one policy's years have passed; the file loads (the daemon and `plan`
    go on with the other policies) and only that policy has no next due time."""
    config = load_config(_file(tmp_path, ("mgmt", "30d", ""), ("other", "cron(0 3 1 * ? 2025)", "")))
    mgmt, other = config.policies
    assert other.schedule.interval == timedelta(days=31)
    now = datetime.now(UTC)
    assert mgmt.schedule.next_due(now, now) == now + timedelta(days=30)
    with pytest.raises(NoNextDue):
        other.schedule.next_due(now, now)


def test_a_file_with_a_schedule_whose_years_are_ahead_loads(tmp_path: Path) -> None:
    config = load_config(_file(tmp_path, ("later", "cron(0 3 1 * ? 2190)", "")))
    assert config.policies[0].schedule.interval == timedelta(days=31)


def test_validate_refuses_a_lifetime_shorter_than_the_gap_between_bunched_fires(tmp_path: Path) -> None:
    """January to June: tokens of 30 days would expire five months before the rotation in January."""
    with pytest.raises(PolicyFileError) as info:
        load_config(_file(tmp_path, ("mgmt", "0 3 * 1-6 *", 'grace = "1h"\nlifetime = "30d"')))
    assert [str(p) for p in info.value.problems] == [_lifetime_problem("mgmt", "185d1h10m")]
    config = load_config(_file(tmp_path, ("mgmt", "0 3 * 1-6 *", 'grace = "1h"')))
    # + twice the default verify_timeout of 5m + the default margin of 1 day
    assert config.policies[0].lifetime == timedelta(days=185 + 1, hours=1, minutes=10)
    assert config.policies[0].max_age == timedelta(days=185 + 1, hours=1)


def test_a_policy_never_rotated_has_no_next_due_time_once_its_schedule_ended() -> None:
    """"Due at once" holds for a schedule that still fires: one whose years have passed has none."""
    with pytest.raises(NoNextDue, match="never fires again"):
        parse_schedule("cron(0 3 1 * ? 2025)").next_due(None, NOW)
    assert parse_schedule("cron(0 3 1 * ? 2027)").next_due(None, NOW) == NOW
    assert parse_schedule("0 3 1 * *").next_due(None, NOW) == NOW


def test_plan_reports_the_policy_whose_schedule_ended_and_shows_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The review's `rotator plan -c two.toml`: not a whole file refused for "fires too rarely", but the
    other policy's row, then that policy's problem (exit 2), as docs/policy.md says."""
    from rotator.core.journal import open_journal
    from rotator.runners import cli

    monkeypatch.setenv("ROTATOR_CACHE_DIR", "")
    path = _file(tmp_path, ("mgmt", "30d", ""), ("other", "cron(0 3 1 * ? 2025)", ""))
    open_journal(f"sqlite:///{tmp_path / 'rotator-journal.db'}").close()  # plan only reads one
    try:
        code = cli.main(["plan", "-c", str(path)])
    except SystemExit as stop:
        code = int(stop.code or 0)
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert out.startswith("mgmt: no token yet") and "other" not in out
    assert "policy 'other': its schedule has no next due time: cron expression 'cron(0 3 1 * ? 2025)' never " \
           "fires again" in err
    assert "fires too rarely" not in err
