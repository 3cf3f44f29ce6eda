"""5-field cron schedules against an independent crontab implementation (croniter) as the oracle.

Thousands of seeded random expressions (numbers, month and day names in any case, ranges,
steps, lists, day of week 0-7 with 0 and 7 both Sunday) are compared fire by fire from several
start instants. The day rule is crontab's (Vixie cron / cronie): when day of month and day of
week are both restricted, a day matching either fires; when either field starts with ``*``, both
must match. croniter implements both rules (``day_or``); the oracle picks the one crontab applies.

croniter reads a degenerate range ``a-a`` as a wrap-around over the whole field (``23-23`` in the
hour field fires every hour); crontab reads it as ``a``. The generator only writes ranges with
``a < b``, and ``test_degenerate_range_is_one_value`` pins rotator's reading.
ROTATOR_CRON_ORACLE_CASES raises the number of expressions (default 700: 4,200 fire times, about 5 s).

A schedule's interval is counted on a day calendar of rotator's own (the days an expression fires on,
a year at a time); croniter checks that calendar too, for 5-field expressions and for AWS ones
(``L``, ``nL``, ``n#k``, ``?``, years), whole years at a time.
"""

from __future__ import annotations

import os
import random
from datetime import UTC, date, datetime, timedelta

import pytest
from croniter import croniter

from rotator.config.schedule import Schedule, _fire_days, parse_schedule

MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
#: (lowest, highest, names) of minute, hour, day of month, month, day of week
FIELDS: tuple[tuple[int, int, tuple[str, ...]], ...] = ((0, 59, ()), (0, 23, ()), (1, 31, ()), (1, 12, MONTHS),
                                                        (0, 7, DAYS))  # fmt: skip
STARTS = (
    datetime(2026, 3, 1, 12, 0, tzinfo=UTC),  # a Sunday
    datetime(2027, 2, 27, 23, 59, 30, tzinfo=UTC),  # end of February, between two minutes
    datetime(2028, 2, 28, 6, 7, tzinfo=UTC),  # a leap year
)
CASES = int(os.environ.get("ROTATOR_CRON_ORACLE_CASES", "700"))


def _value(rng: random.Random, value: int, low: int, names: tuple[str, ...]) -> str:
    if names and value - low < len(names) and rng.random() < 0.4:
        name = names[value - low]
        return name.upper() if rng.random() < 0.3 else name
    return str(value)


def _part(rng: random.Random, low: int, high: int, names: tuple[str, ...]) -> str:
    kind = rng.random()
    if kind < 0.3:
        return _value(rng, rng.randint(low, high), low, names)
    first = rng.randint(low, high - 1)
    last = rng.randint(first + 1, high)
    span = f"{_value(rng, first, low, names)}-{_value(rng, last, low, names)}"
    step = rng.randint(1, max(1, (high - low) // 2))
    if kind < 0.6:
        return span
    return f"{span}/{step}" if kind < 0.8 else f"*/{step}"


def _field(rng: random.Random, low: int, high: int, names: tuple[str, ...]) -> str:
    kind = rng.random()
    if kind < 0.35:
        return "*"
    if kind < 0.75:
        return _part(rng, low, high, names)
    parts = (_part(rng, low, high, names) for _ in range(rng.randint(2, 3)))
    return ",".join(p for p in parts if not p.startswith("*")) or "*"


def _expressions(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(_field(rng, *spec) for spec in FIELDS) for _ in range(count)]


def _ours(expr: str, start: datetime, count: int) -> list[datetime | None]:
    schedule = Schedule(expr, timedelta(0), cron=expr)
    fires: list[datetime | None] = []
    moment = start
    for _ in range(count):
        try:
            moment = schedule.next_due(moment, moment)
        except ValueError:  # "never fires again"
            fires.extend([None] * (count - len(fires)))
            break
        fires.append(moment)
    return fires


def _oracle(expr: str, start: datetime, count: int) -> list[datetime | None]:
    minute, hour, dom, month, dow = expr.split()
    day_or = not (dom.startswith("*") or dow.startswith("*"))  # crontab's rule (see the module doc)
    it = croniter(expr, start, day_or=day_or)
    fires: list[datetime | None] = []
    for _ in range(count):
        try:
            fires.append(it.get_next(datetime))
        except Exception:  # croniter gives up on a date that does not exist (31 February)
            fires.extend([None] * (count - len(fires)))
            break
    return fires


def test_generated_expressions_fire_when_crontab_would() -> None:
    expressions = _expressions(seed=20261203, count=CASES)
    both_restricted = sum(1 for e in expressions if not (e.split()[2].startswith("*") or e.split()[4].startswith("*")))
    assert both_restricted > CASES // 4, "the OR rule of the day fields must be well covered"
    assert sum("7" in e.split()[4] for e in expressions) > CASES // 20, "day of week 7 must be covered"
    mismatches = []
    compared = 0
    for index, expr in enumerate(expressions):
        # _ours() fails on an expression rotator refuses; parse_schedule() also computes the
        # interval (a year of the days it fires on), so one in five is enough for it
        if index % 5 == 0:
            try:
                parse_schedule(expr)
            except ValueError as exc:
                assert "fires too rarely" in str(exc), exc
        for start in STARTS:
            ours, theirs = _ours(expr, start, 2), _oracle(expr, start, 2)
            compared += 1
            if ours != theirs:
                mismatches.append(f"{expr!r} from {start}: rotator {ours}, croniter {theirs}")
    assert compared == CASES * len(STARTS)
    assert not mismatches, f"{len(mismatches)} of {compared} differ:\n" + "\n".join(mismatches[:20])


@pytest.mark.parametrize(
    ("expr", "start", "fires"),
    [
        # the example: Sunday to Friday
        ("0 3 * * 0-5", "2026-03-06T12:00", ["2026-03-08T03:00", "2026-03-09T03:00"]),  # Fri -> Sun, skips Sat
        ("0 3 * * 5-7", "2026-03-02T00:00", ["2026-03-06T03:00", "2026-03-07T03:00", "2026-03-08T03:00"]),
        ("0 3 * * 7", "2026-03-02T00:00", ["2026-03-08T03:00"]),
        ("0 3 * * SUN-tue", "2026-03-03T04:00", ["2026-03-08T03:00", "2026-03-09T03:00", "2026-03-10T03:00"]),
        ("0 3 * * */2", "2026-03-01T04:00", ["2026-03-03T03:00", "2026-03-05T03:00", "2026-03-07T03:00"]),
        ("0 0 1 jan-mar/2 *", "2026-01-01T00:00", ["2026-03-01T00:00", "2027-01-01T00:00"]),
        # both day fields restricted: either matches (Sunday 1 March, then the Mondays)
        ("0 3 1 * mon", "2026-02-28T00:00", ["2026-03-01T03:00", "2026-03-02T03:00", "2026-03-09T03:00"]),
        # a day field starting with '*' is unrestricted for that rule: both must match
        ("0 0 */2 * 1", "2026-03-01T00:00", ["2026-03-09T00:00", "2026-03-23T00:00"]),
    ],
)
def test_crontab_examples(expr: str, start: str, fires: list[str]) -> None:
    at = datetime.fromisoformat(start).replace(tzinfo=UTC)
    expected = [datetime.fromisoformat(f).replace(tzinfo=UTC) for f in fires]
    assert _ours(expr, at, len(fires)) == expected
    assert _oracle(expr, at, len(fires)) == expected  # the oracle agrees on the hand-checked dates
    parse_schedule(expr)


def test_degenerate_range_is_one_value() -> None:
    assert _ours("30 23-23 * * *", datetime(2026, 3, 1, 12, 0, tzinfo=UTC), 2) == [
        datetime(2026, 3, 1, 23, 30, tzinfo=UTC), datetime(2026, 3, 2, 23, 30, tzinfo=UTC)]


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("0 3 * * 8", "day of week '8' is not 0-7 or sun-sat"),
        ("0 3 * * fri-mon", "runs backwards"),
        ("0 3 32 * *", "day of month '32' is not 1-31"),
        ("0 3 * 13 *", "month '13' is not 1-12 or jan-dec"),
        ("0 3 * * */0", "the step after '/' must be a positive number"),
        ("0 3 * * L", "day of week 'L' is not"),
        ("0 3 31 2 *", "fires too rarely"),
    ],
)
def test_bad_crontab_expressions_say_why(expr: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_schedule(expr)


# -- the day calendar the interval is counted on ------------------------------------------------------


def _croniter_days(expr: str, year: int, day_or: bool) -> list[date]:
    """The days of ``year`` on which croniter fires ``expr`` (once a day: the days are what is compared)."""
    it = croniter(expr, datetime(year, 1, 1, tzinfo=UTC) - timedelta(seconds=1), day_or=day_or)
    days: list[date] = []
    while True:
        try:
            fire = it.get_next(datetime)
        except Exception:  # no such day for 50 years (31 February)
            return days
        if fire.year != year:
            return days
        days.append(fire.date())


def test_the_day_calendar_has_the_days_crontab_fires_on() -> None:
    """The days of generated 5-field expressions (at 03:00), whole years, 2100 (no 29 February) included."""
    rng = random.Random(20261208)
    for expr in _expressions(seed=20261208, count=CASES // 5):
        dom, dow = expr.split()[2], expr.split()[4]
        day_or = not (dom.startswith("*") or dow.startswith("*"))
        expr = "0 3 " + " ".join(expr.split()[2:])
        for year in rng.sample((2026, 2027, 2028, 2031, 2032, 2100), 2):
            assert _fire_days(expr, range(year, year + 1)) == _croniter_days(expr, year, day_or), (expr, year)


def _aws_expression(rng: random.Random) -> tuple[str, str]:
    """A generated AWS expression firing at 03:00 and the same in croniter's 7 fields (minute hour
    day-of-month month day-of-week second year; days of the week from 0 = Sunday, ``L5`` for ``6L``).
    Month names without steps: APScheduler reads ``jan-jun/2`` as ``jan-jun``."""
    year = rng.choice(["*", "*", "2027", "2026,2028,2035", "2026-2030", "2027/4", "2026-2040/3", "*/3"])
    month = _field(rng, 1, 12, ())
    if month.isdigit() and rng.random() < 0.4:
        month = _value(rng, int(month), 1, MONTHS)
    if rng.random() < 0.45:
        dom = rng.choice(["L", _field(rng, 1, 31, ()), _field(rng, 1, 31, ()).replace("*", "1-31") + ",L"])
        return f"cron(0 3 {dom} {month} ? {year})", f"0 3 {dom} {month} * 0 {year}"
    numbers = sorted(rng.sample(range(1, 8), 2))
    names = [DAYS[n - 1].upper() if rng.random() < 0.3 else str(n) for n in numbers]
    nth = [rng.randint(1, 5) for _ in numbers]
    aws, cron = rng.choice([
        (f"{names[0]}-{names[1]}", f"{numbers[0] - 1}-{numbers[1] - 1}"),
        (f"{names[0]},{names[1]}", f"{numbers[0] - 1},{numbers[1] - 1}"),
        (f"{names[0]}#{nth[0]}", f"{numbers[0] - 1}#{nth[0]}"),
        (f"{names[0]}#{nth[0]},{names[1]}#{nth[1]}", f"{numbers[0] - 1}#{nth[0]},{numbers[1] - 1}#{nth[1]}"),
        (f"{numbers[0]}L", f"L{numbers[0] - 1}"),
        ("L", "6"),  # the last day of the week: Saturday
        ("*", "*"),
    ])  # fmt: skip
    return f"cron(0 3 ? {month} {aws} {year})", f"0 3 * {month} {cron} 0 {year}"


def test_the_aws_day_calendar_has_the_days_croniter_fires_on() -> None:
    """Generated AWS expressions (both day fields, L, nL, n#k, month names, years): the days of whole
    years, from 2026 to 2036, on which croniter fires the same expression."""
    rng = random.Random(20261209)
    for _ in range(CASES // 5):
        aws, cron = _aws_expression(rng)
        try:
            parse_schedule(aws)
        except ValueError as exc:
            if "not a valid AWS cron expression" in str(exc):  # APScheduler: a step longer than its range
                continue
            assert "fires too rarely" in str(exc), exc
        for year in rng.sample(range(2026, 2037), 2):
            assert _fire_days(aws, range(year, year + 1)) == _croniter_days(cron, year, day_or=False), (aws, cron, year)
