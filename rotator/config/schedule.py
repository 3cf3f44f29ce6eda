"""Durations, rotation schedules and rotation windows, as pure functions of ``now`` (all UTC).

Accepted schedules: an interval (``30d``, ``12h``, ``90m``, ``45s``, ``1w``), an AWS-style
``rate(30 days)``, a 5-field cron expression (``0 3 * * 1``) or an AWS-style 6-field
``cron(0 3 ? * MON *)``. A 5-field expression follows crontab (Vixie cron / cronie) rules; the
fire-time maths is delegated to APScheduler's CronTrigger, imported only when a cron schedule is used.

A schedule may carry a *window* (``02:00-04:00`` UTC): a rotation that falls due outside it waits
for the next occurrence of the window, and lands at a random moment inside it. The randomness is
seeded by the last rotation, so every replica and every restart computes the same moment.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from rotator.config.extras import install_hint

__all__ = [
    "NoNextDue",
    "Schedule",
    "Window",
    "format_duration",
    "parse_duration",
    "parse_schedule",
    "parse_window",
    "window_time",
]



class NoNextDue(ValueError):
    """A schedule that never fires again (a cron expression whose years have passed)."""


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(?:(\d+)\s*([smhdw])\s*)+\Z")
_PART = re.compile(r"(\d+)\s*([smhdw])")
_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)\Z")
_RATE_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
_AWS_CRON = re.compile(r"^cron\((.*)\)\Z", re.IGNORECASE)
_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*\Z")
_DAY = timedelta(days=1)
#: The longest duration or schedule interval accepted: sums of a few stay far from datetime's limits.
_MAX_DAYS = 36525
_MAX_SECONDS = _MAX_DAYS * 86400


def parse_duration(text: str) -> timedelta:
    """``"30d"``, ``"1d12h"``, ``"90s"`` -> timedelta. ValueError says what is accepted."""
    if not isinstance(text, str) or not _DURATION.match(text):
        shown = _short(text) if isinstance(text, str) else repr(text)
        raise ValueError(f"{shown} is not a duration; write e.g. '30d', '12h', '90m', '45s' or '1d12h'")
    parts = _PART.findall(text)
    # Bounded before int(): a 5,000-digit number or 10**20 days would escape as ValueError/OverflowError
    # with Python's wording instead of this one.
    if any(len(n.lstrip("0")) > 12 for n, _ in parts) or sum(int(n) * _UNITS[u] for n, u in parts) > _MAX_SECONDS:
        raise ValueError(f"{_short(text)} is longer than {_MAX_DAYS} days (100 years); write a shorter duration")
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in parts))


def _short(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:20] + "..." + text[-8:])


def format_duration(delta: timedelta, units: int | None = None) -> str:
    """A duration as a policy file writes it: ``39d``, ``2d12h``, ``90s`` -> ``1m30s``, ``-5m``.

    The one formatter for every duration rotator prints (status, plan, errors, daemon logs), so
    what is printed can be pasted back into a policy file. Whole seconds; ``units`` keeps only
    the largest unit and the next ones (``units=2``: ``2d12h`` for 2d12h5m3s, ``39d`` for
    39d0h7m), for tables of ages.
    """
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    sizes: tuple[tuple[str, int], ...] = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    if units is not None:  # keep the largest unit and the next units - 1 (39d0h7m -> 39d)
        largest = next(i for i, (_, size) in enumerate(sizes) if seconds >= size)
        sizes = sizes[largest : largest + units]
    parts = []
    for unit, size in sizes:
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return sign + "".join(parts)


@dataclass(frozen=True)
class Window:
    """A daily UTC time window ``HH:MM-HH:MM``; an end at or before the start wraps past midnight."""

    text: str
    #: offsets from midnight UTC; ``end`` may be ``24:00``
    start: timedelta
    end: timedelta

    @property
    def length(self) -> timedelta:
        length = self.end - self.start
        return length if length > timedelta(0) else length + _DAY

    @property
    def max_delay(self) -> timedelta:
        """The longest a rotation that fell due can wait for the window to open."""
        return _DAY - self.length

    def occurrence(self, moment: datetime) -> tuple[datetime, datetime]:
        """The first occurrence ``[begin, end)`` of the window that ends after ``moment``."""
        midnight = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        for days in (-1, 0):
            begin = midnight + timedelta(days=days) + self.start
            if begin + self.length > moment:
                return begin, begin + self.length
        begin = midnight + _DAY + self.start  # starts after midnight, so it ends after ``moment``
        return begin, begin + self.length

    def contains(self, moment: datetime) -> bool:
        begin, _ = self.occurrence(moment)
        return begin <= moment


def parse_window(text: str) -> Window:
    """``"02:00-04:00"`` (UTC; ``"22:00-02:00"`` wraps past midnight) -> Window. ValueError explains."""
    usage = "write 'HH:MM-HH:MM' in UTC, e.g. '02:00-04:00' (it may wrap past midnight: '22:00-02:00')"
    match = _WINDOW.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not a window; {usage}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
        raise ValueError(f"{text!r} is not a window: hours go from 00 to 23 (24:00 only as an end), minutes "
                         f"from 00 to 59; {usage}")
    start, end = timedelta(hours=h1, minutes=m1), timedelta(hours=h2, minutes=m2)
    if start == end:
        raise ValueError(f"{text!r} is an empty window: its start and end are the same; {usage}")
    return Window(text.strip(), start, end)


def window_time(due: datetime, window: Window, seed: str) -> datetime:
    """When a rotation nominally ``due`` happens: at or after ``due``, inside ``window``.

    It lands at a random moment between ``max(due, window opens)`` and the window's end, in the
    first occurrence of the window that ends after ``due``. The randomness comes from ``seed``
    alone, so the same inputs always give the same moment (replicas and restarts agree).
    """
    begin, end = window.occurrence(due)
    start = max(begin, due)
    span_us = (end - start) // timedelta(microseconds=1)
    offset_us = int(random.Random(seed).random() * span_us)
    return start + timedelta(microseconds=offset_us)


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule. ``interval`` is the (longest) gap between two nominal due times."""

    text: str
    interval: timedelta
    cron: str | None = None
    window: Window | None = None

    @property
    def longest_gap(self) -> timedelta:
        """The longest a token can stay current: the interval plus the longest wait for the window."""
        return self.interval + (self.window.max_delay if self.window is not None else timedelta(0))

    def next_due(self, last_rotation: datetime | None, now: datetime) -> datetime:
        """When the next rotation is due: ``now`` when never rotated.

        With a window, the nominal due time moves into the window (see :func:`window_time`),
        seeded by the last rotation's time so that every caller computes the same moment.
        :class:`NoNextDue` for a cron schedule that never fires after ``now``, rotated or not.
        """
        if last_rotation is None:
            if self.cron is not None and _can_end(self.cron):
                _cron_next(self.cron, now - timedelta(seconds=1))  # its years have passed: NoNextDue
            return now
        due = last_rotation + self.interval if self.cron is None else _cron_next(self.cron, last_rotation)
        if self.window is None:
            return due
        seed = f"{self.text}|{self.window.text}|{last_rotation.astimezone(UTC).isoformat()}"
        return window_time(due, self.window, seed)

    def with_window(self, window: Window | None) -> Schedule:
        return Schedule(self.text, self.interval, self.cron, window)

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "interval_s": int(self.interval.total_seconds()), "cron": self.cron,
                "window": self.window.text if self.window is not None else None}


def parse_schedule(text: str, window: str | None = None, *, now: datetime | None = None) -> Schedule:
    """Parse a schedule (and its optional window); ValueError explains the accepted forms.

    A cron schedule's interval is its longest gap from ``now`` on (default: the current time; see
    :func:`_cron_interval`)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("schedule is empty; write e.g. '30d', 'rate(30 days)' or '0 3 * * 1'")
    parsed_window = parse_window(window) if window is not None else None
    text = text.strip()
    rate = _RATE.match(text)
    if rate:
        digits, unit = rate.group(1), rate.group(2).rstrip("s")
        count = int(digits) if len(digits.lstrip("0")) <= 12 else _MAX_SECONDS
        if count <= 0:
            raise ValueError(f"{text!r}: the rate must be positive")
        if count * _RATE_UNITS[unit] > _MAX_SECONDS:
            raise ValueError(f"{_short(text)} is longer than {_MAX_DAYS} days (100 years); write a shorter rate")
        return Schedule(text, timedelta(seconds=count * _RATE_UNITS[unit]), window=parsed_window)
    if _AWS_CRON.match(text) or len(text.split()) == 5:
        today = (now if now is not None else datetime.now(UTC)).astimezone(UTC).date()
        return Schedule(text, _cron_interval(text, today), cron=text, window=parsed_window)
    try:
        interval = parse_duration(text)
    except ValueError as exc:
        if _DURATION.match(text):  # an interval, too long: say that
            raise ValueError(str(exc).replace("duration", "schedule")) from None
        raise ValueError(
            f"{text!r} is not a schedule; write an interval ('30d', '12h'), 'rate(30 days)', "
            "a 5-field cron expression in UTC ('0 3 * * 1') or an AWS one ('cron(0 3 ? * MON *)')"
        ) from None
    if interval.total_seconds() <= 0:
        raise ValueError(f"{text!r}: the interval must be positive")
    return Schedule(text, interval, window=parsed_window)


_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_ORDINALS = {1: "1st", 2: "2nd", 3: "3rd", 4: "4th", 5: "5th"}


_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
#: (name, lowest, highest, names) of the five crontab fields; day of week 7 is Sunday, like 0
_CRONTAB_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTH_NAMES),
    ("day of week", 0, 7, _DAY_NAMES),
)
_CRONTAB_USAGE = (
    "fields are minute hour day-of-month month day-of-week, each '*', a number, a range 'a-b', a list "
    "'a,b' or a step '*/n', 'a-b/n'; months may be jan-dec, days of the week 0-7 (0 and 7 are Sunday) "
    "or sun-sat"
)


def _crontab_value(text: str, field: str, low: int, high: int, names: tuple[str, ...], expr: str) -> int:
    if text.lower() in names:
        return names.index(text.lower()) + low  # jan = 1; sun = 0
    if not text.isdigit() or not low <= int(text) <= high:
        accepted = f"{low}-{high}" + (f" or {names[0]}-{names[-1]}" if names else "")
        raise ValueError(f"{expr!r} is not a valid 5-field cron expression: {field} {text!r} is not "
                         f"{accepted}; {_CRONTAB_USAGE}")
    return int(text)


def _crontab_field(text: str, field: str, low: int, high: int, names: tuple[str, ...], expr: str) -> list[int]:
    """One crontab field -> the sorted values it matches (day of week: 0 = Sunday ... 6)."""
    values: set[int] = set()
    for part in text.split(","):
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{expr!r} is not a valid 5-field cron expression: {field} {part!r}: the step "
                                 f"after '/' must be a positive number; {_CRONTAB_USAGE}")
            step = int(step_text)
        if base == "*":
            first, last = low, high
        else:
            first_text, dash, last_text = base.partition("-")
            first = _crontab_value(first_text, field, low, high, names, expr)
            # "5/15" is "5-59/15", as in cronie and AWS
            last = _crontab_value(last_text, field, low, high, names, expr) if dash else (high if slash else first)
            if last < first:
                raise ValueError(f"{expr!r} is not a valid 5-field cron expression: {field} range {part!r} runs "
                                 f"backwards; write it as a list instead, e.g. '5,6,0' or 'fri,sat,sun'")
        values.update(range(first, last + 1, step))
    if names is _DAY_NAMES:
        values = {v % 7 for v in values}
    return sorted(values)


@functools.lru_cache(maxsize=256)
def _crontab_expanded(expr: str) -> tuple[tuple[int, ...], ...]:
    """The sorted values each field of a 5-field expression matches (see :func:`_crontab_field`)."""
    fields = zip(expr.split(), _CRONTAB_FIELDS, strict=True)
    return tuple(tuple(_crontab_field(text, *spec, expr)) for text, spec in fields)


def _crontab_trigger(expr: str, cron_trigger: Any, or_trigger: Any) -> Any:
    """A standard (Vixie/cronie) crontab expression as an APScheduler trigger.

    Each field is expanded here, so APScheduler only sees explicit lists and none of its own
    conventions (weeks from Monday, steps, names) apply. When both day fields are restricted
    (neither starts with ``*``), a day matching either fires, as in crontab; otherwise both must.
    """
    fields = expr.split()
    expanded = _crontab_expanded(expr)
    minute, hour, day, month = (",".join(map(str, values)) for values in expanded[:4])
    weekdays = ",".join(_DAY_NAMES[d] for d in expanded[4])
    if fields[2].startswith("*") or fields[4].startswith("*"):
        return cron_trigger(minute=minute, hour=hour, day=day, month=month, day_of_week=weekdays, timezone=UTC)
    return or_trigger([
        cron_trigger(minute=minute, hour=hour, day=day, month=month, timezone=UTC),
        cron_trigger(minute=minute, hour=hour, month=month, day_of_week=weekdays, timezone=UTC),
    ])  # fmt: skip


def _aws_day_index(token: str, expr: str) -> int:
    """An AWS day-of-week (``1``-``7`` with Sunday = 1, or ``SUN``-``SAT``) -> 0 (Sunday) .. 6."""
    if token.isdigit() and 1 <= int(token) <= 7:
        return int(token) - 1
    if token.lower() in _DAY_NAMES:
        return _DAY_NAMES.index(token.lower())
    raise ValueError(f"{expr!r}: {token!r} is not a day of the week; AWS counts 1 (SUN) to 7 (SAT)")


def _aws_cron_fields(expr: str) -> dict[str, str]:
    """Translate AWS ``cron(min hour day-of-month month day-of-week year)`` into CronTrigger fields.

    AWS rules kept: exactly one of day-of-month and day-of-week is ``?``; day-of-week counts
    1 (SUN) to 7 (SAT); ``L`` is the last day of the month, ``5L`` the last Thursday and ``5#2``
    the second Thursday. ``W`` (nearest weekday) has no CronTrigger equivalent and is refused.
    """
    match = _AWS_CRON.match(expr.strip())
    fields = match.group(1).split() if match else []
    if len(fields) != 6:
        raise ValueError(f"{expr!r}: an AWS cron expression has 6 fields (minutes hours day-of-month month "
                         "day-of-week year), e.g. 'cron(0 3 ? * MON *)'")
    minute, hour, dom, month, dow, year = fields
    if (dom == "?") == (dow == "?"):
        raise ValueError(f"{expr!r}: exactly one of day-of-month and day-of-week must be '?' (an AWS rule), "
                         "e.g. 'cron(0 3 1 * ? *)' or 'cron(0 3 ? * MON *)'")
    day, weekdays = "*", "*"
    if dom != "?":
        if "W" in dom.upper():
            raise ValueError(f"{expr!r}: 'W' (nearest weekday) is not supported; name the days instead")
        day = ",".join("last" if part.upper() == "L" else part for part in dom.split(","))
    else:
        day_parts: list[str] = []
        names: list[str] = []
        for part in dow.split(","):
            nth = re.fullmatch(r"(\w+)#(\d)", part)
            last = re.fullmatch(r"(\w+)L", part, re.IGNORECASE)
            if part == "*":
                names.append("*")
            elif part.upper() == "L":
                names.append("sat")  # "the last day of the week"
            elif nth:
                if int(nth.group(2)) not in _ORDINALS:
                    raise ValueError(f"{expr!r}: {part!r}: the week number after '#' goes from 1 to 5")
                day_parts.append(f"{_ORDINALS[int(nth.group(2))]} {_DAY_NAMES[_aws_day_index(nth.group(1), expr)]}")
            elif last:
                day_parts.append(f"last {_DAY_NAMES[_aws_day_index(last.group(1), expr)]}")
            else:
                first, dash, end = part.partition("-")
                lo = _aws_day_index(first, expr)
                hi = _aws_day_index(end, expr) if dash else lo
                if hi < lo:
                    raise ValueError(f"{expr!r}: the day range {part!r} runs backwards (SUN = 1 ... SAT = 7)")
                names.extend(_DAY_NAMES[lo : hi + 1])  # listed: CronTrigger's weeks start on Monday
        if day_parts and names:
            raise ValueError(f"{expr!r}: do not mix '#'/'L' days with plain days in day-of-week")
        if day_parts:
            day = ",".join(day_parts)
        else:
            weekdays = "*" if "*" in names else ",".join(dict.fromkeys(names))
    return {"minute": minute, "hour": hour, "day": day, "month": month, "day_of_week": weekdays, "year": year}


@functools.lru_cache(maxsize=256)
def _trigger(expr: str) -> Any:
    if not _AWS_CRON.match(expr) and len(expr.split()) == 5:
        _crontab_expanded(expr)  # syntax errors first, with or without APScheduler
    try:
        from apscheduler.triggers.combining import OrTrigger
        from apscheduler.triggers.cron import CronTrigger
    except ImportError as exc:
        raise ValueError(f"{expr!r}: cron schedules need APScheduler; {install_hint(exc)}") from None

    if _AWS_CRON.match(expr):
        fields = _aws_cron_fields(expr)
        try:
            return CronTrigger(**fields, timezone=UTC)
        except ValueError as exc:
            raise ValueError(f"{expr!r} is not a valid AWS cron expression: {exc}") from None
    return _crontab_trigger(expr, CronTrigger, OrTrigger)


@functools.lru_cache(maxsize=256)
def _can_end(expr: str) -> bool:
    """Whether ``expr`` names years (AWS): only then can its fires end."""
    return _AWS_CRON.match(expr) is not None and _aws_cron_fields(expr)["year"] != "*"


def _cron_next(expr: str, after: datetime) -> datetime:
    fire: datetime | None = _trigger(expr).get_next_fire_time(None, after + timedelta(seconds=1))
    if fire is None:
        raise NoNextDue(f"cron expression {expr!r} never fires again")
    return fire.astimezone(UTC)


#: A cron schedule's interval is its longest gap over at least a year of fires from today, wrap
#: into the next year included: fires bunched in part of the year ('0 3 1-14 * *', months 1-6)
#: leave their longest gap between two bunches.
_ONE_YEAR = timedelta(days=366)
#: A schedule that fires on fewer days than this in that year (monthly, leap days, listed years) is
#: followed for up to :data:`_SPARSE_YEARS`: its gaps change from one year to the next.
_ENOUGH_DAYS = 100
_SPARSE_YEARS = 8
#: Crontab repeats itself every 400 years (the Gregorian calendar's cycle): a 5-field expression
#: that has not fired by then never fires.
_CRONTAB_CYCLE_MONTHS = 400 * 12
#: Before APScheduler's first year: where an AWS expression's years all passed, its fires are read from here.
_EPOCH = date(1970, 1, 1)


def _cron_interval(expr: str, today: date) -> timedelta:
    """The longest gap between two consecutive fires of ``expr``, counted from ``today``.

    A schedule that fires fewer than twice from ``today`` on (an AWS expression whose years end
    now or have passed) gets the longest gap of the years it fires in, so that a file written
    while it ran still loads: its policy has no next due time then (:class:`NoNextDue`), which
    ``validate``, ``plan`` and the daemon report for that policy alone (docs/policy.md).
    """
    gap = _cron_gap(expr, today)
    if gap is None and _can_end(expr):
        gap = _cron_gap(expr, _EPOCH)
    if gap is None:
        raise ValueError(f"cron expression {expr!r} fires too rarely to rotate on: it fires fewer than twice in "
                         "all; write an expression that fires repeatedly, e.g. '0 3 1 * *', or an interval ('30d')")
    if gap > timedelta(days=_MAX_DAYS):
        raise ValueError(f"cron expression {expr!r} fires too rarely to rotate on: its fires are more than "
                         f"{_MAX_DAYS} days (100 years) apart; write a schedule that fires more often")
    return gap


@functools.lru_cache(maxsize=1024)
def _cron_gap(expr: str, start: date) -> timedelta | None:
    """The longest gap between consecutive fires from ``start`` on (see :data:`_ONE_YEAR`); None when
    it fires fewer than twice. Cached: the policies of a file share a few expressions, and the walk
    visits every day that fires in a year."""
    trigger = _trigger(expr)  # the syntax checks (and APScheduler's presence) first
    if _AWS_CRON.match(expr):
        # AWS writes minutes and hours as crontab does ('0/30' is '0-59/30'); APScheduler accepted them
        fields = _aws_cron_fields(expr)
        minutes = tuple(_crontab_field(fields["minute"], *_CRONTAB_FIELDS[0], expr))
        hours = tuple(_crontab_field(fields["hour"], *_CRONTAB_FIELDS[1], expr))
        days = _trigger_days(trigger, start)
    else:
        minutes, hours = _crontab_expanded(expr)[:2]
        days = _crontab_days(expr, start)
    # Hours and minutes do not depend on the day (UTC has no DST), so every day that fires has the
    # same times: the gaps are those inside a day and those from one such day's last fire to the next's first.
    times = [timedelta(hours=h, minutes=m) for h in hours for m in minutes]
    within = max((b - a for a, b in zip(times, times[1:], strict=False)), default=None)
    span = times[-1] - times[0]
    first = next(days, None)
    if first is None:
        return None
    previous, seen, longest = first, 1, 0
    for day in days:
        longest = max(longest, (day - previous).days)
        previous, seen = day, seen + 1
        # the day past the horizon is kept: its gap is the wrap from the end of the horizon
        if day - first >= _ONE_YEAR and (seen >= _ENOUGH_DAYS or day - first >= _SPARSE_YEARS * _ONE_YEAR):
            break
    if seen == 1:
        return within  # one day of fires: None if that is one fire
    between = timedelta(days=longest) - span
    return between if within is None else max(between, within)


def _trigger_days(trigger: Any, start: date) -> Iterator[date]:
    """The days on which ``trigger`` fires, from ``start`` on, one APScheduler call each."""
    moment = datetime(start.year, start.month, start.day, tzinfo=UTC)
    while True:
        fire: datetime | None = trigger.get_next_fire_time(None, moment)
        if fire is None:
            return
        day = fire.astimezone(UTC).date()
        yield day
        if day >= date.max - _DAY:
            return
        moment = datetime(day.year, day.month, day.day, tzinfo=UTC) + _DAY


def _crontab_days(expr: str, start: date) -> Iterator[date]:
    """The days on which a 5-field expression fires, from ``start`` on, by crontab's day rule
    (see :func:`_crontab_trigger`); month by month, as a year of APScheduler calls would be slow."""
    fields = expr.split()
    _, _, doms, months, weekdays = (set(values) for values in _crontab_expanded(expr))
    either = not (fields[2].startswith("*") or fields[4].startswith("*"))
    # Which days of a month fire depends only on its length and the weekday of its 1st (0 = Sunday).
    shapes: dict[tuple[int, int], tuple[int, ...]] = {}
    year, month = start.year, start.month
    for _ in range(_CRONTAB_CYCLE_MONTHS):
        if month in months:
            first = date(year, month, 1)
            # (not the calendar module: it imports locale, and `rotator status` imports this module)
            length = 31 if month == 12 else (date(year, month + 1, 1) - first).days
            first_weekday = first.isoweekday() % 7
            shape = shapes.get((length, first_weekday))
            if shape is None:
                matches = [(d in doms, (first_weekday + d - 1) % 7 in weekdays) for d in range(1, length + 1)]
                shape = shapes[(length, first_weekday)] = tuple(
                    d for d, (dom, dow) in enumerate(matches, 1) if ((dom or dow) if either else (dom and dow)))
            for d in shape:
                if (year, month, d) >= (start.year, start.month, start.day):
                    yield date(year, month, d)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        if year > date.max.year:
            return
