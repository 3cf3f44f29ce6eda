"""Durations, rotation schedules and rotation windows, as pure functions of ``now`` (all UTC).

Accepted schedules: an interval (``30d``, ``12h``, ``90m``, ``45s``, ``1w``), an AWS-style
``rate(30 days)``, a 5-field cron expression (``0 3 * * 1``) or an AWS-style 6-field
``cron(0 3 ? * MON *)``. A 5-field expression follows crontab (Vixie cron / cronie) rules; the
fire-time maths is delegated to APScheduler's CronTrigger, imported only when a cron schedule is used.

A schedule may carry a *window* (``02:00-04:00`` UTC): a rotation that falls due outside it waits
for the next occurrence of the window, and lands at a random moment inside it. The randomness is
seeded by the last rotation, so every replica and every restart computes the same moment. An
interval schedule counts from the opening of the window the last rotation happened in, not from its
random moment (:meth:`Schedule.next_due`): counted from the moment, each rotation would be drawn
later than the last, pile up at the window's end and then skip a day.
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from rotator.config.extras import install_hint
from rotator.config.inline_secrets import mask_tokens

__all__ = [
    "MAX_DURATION_TEXT",
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
_DURATION = re.compile(r"^\s*(?:([0-9]+)\s*([smhdw])\s*)+\Z")
_PART = re.compile(r"([0-9]+)\s*([smhdw])")
_RATE = re.compile(r"^rate\(\s*([0-9]+)\s+(minute|minutes|hour|hours|day|days)\s*\)\Z")
_RATE_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
_AWS_CRON = re.compile(r"^cron\((.*)\)\Z", re.IGNORECASE)
_WINDOW = re.compile(r"^\s*([0-9]{1,2}):([0-9]{2})\s*-\s*([0-9]{1,2}):([0-9]{2})\s*\Z")
_DAY = timedelta(days=1)
#: The longest duration or schedule interval accepted: sums of a few stay far from datetime's limits.
_MAX_DAYS = 36525
_MAX_SECONDS = _MAX_DAYS * 86400
#: The longest text read as a duration (``"1w 6d 23h 59m 59s"`` is 17 characters), and as a schedule (a
#: crontab that lists every minute, hour, day and month is about 400). Checked before any regex: the
#: duration pattern's repeated group, then ``findall``, cost hundreds of bytes a part, and a ConfigMap
#: edit of a few megabytes would take a daemon past its memory limit.
MAX_DURATION_TEXT = 64
_MAX_SCHEDULE_TEXT = 1024
_DURATION_USAGE = "write e.g. '30d', '12h', '90m', '45s' or '1d12h'"
_SCHEDULE_USAGE = ("write an interval ('30d', '12h'), 'rate(30 days)', a 5-field cron expression in UTC "
                   "('0 3 * * 1') or an AWS one ('cron(0 3 ? * MON *)')")


def _is_number(text: str) -> bool:
    """Whether ``text`` is a whole number in the digits 0-9 (``str.isdigit`` also takes ``²``, ``٣``, ``１``)."""
    return text.isascii() and text.isdigit()


def _ascii_digits(text: str, what: str) -> None:
    """ValueError when ``text`` writes a digit other than 0-9: Python's ``int()`` reads Arabic-Indic and
    fullwidth digits (``"٣٠d"`` would be 30 days) and fails on superscripts, and neither is what a
    person who typed them should be left to guess."""
    if text.isascii():  # nearly always: one pass in C
        return
    odd = next((c for c in text if c.isdigit() and not c.isascii()), None)
    if odd is not None:
        raise ValueError(f"{_short(text)} is not {what}: {odd!r} (U+{ord(odd):04X}) is not one of the digits "
                         "0-9; write numbers with the digits 0-9")


def parse_duration(text: str) -> timedelta:
    """``"30d"``, ``"1d12h"``, ``"90s"`` -> timedelta. ValueError says what is accepted."""
    if isinstance(text, str):
        if len(text) > MAX_DURATION_TEXT:
            raise ValueError(f"{_short(text)} is not a duration: it is {len(text):,} characters long, and a "
                             f"duration is at most {MAX_DURATION_TEXT}; {_DURATION_USAGE}")
        _ascii_digits(text, "a duration")
    if not isinstance(text, str) or not _DURATION.match(text):
        shown = _short(text) if isinstance(text, str) else repr(text)
        raise ValueError(f"{shown} is not a duration; {_DURATION_USAGE}")
    parts = _PART.findall(text)
    # Bounded before int(): a 5,000-digit number or 10**20 days would escape as ValueError/OverflowError
    # with Python's wording instead of this one.
    if any(len(n.lstrip("0")) > 12 for n, _ in parts) or sum(int(n) * _UNITS[u] for n, u in parts) > _MAX_SECONDS:
        raise ValueError(f"{_short(text)} is longer than {_MAX_DAYS} days (100 years); write a shorter duration")
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in parts))


def _short(text: str) -> str:
    # Tokens masked before the cut: a token's first 20 or last 8 characters no longer look like one, and
    # the masking of the whole message (policy.Problem) would leave them printed.
    text = mask_tokens(text)
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

    def latest_wait(self, offset: timedelta) -> timedelta:
        """How much later than a due time ``offset`` after the window's opening (modulo a day) a
        rotation may land (:func:`window_time`), as a bound it never reaches: to the end of the
        occurrence if the window is open then, else to the end of the next one (up to 24 hours for a
        due time just as the window closes)."""
        offset %= _DAY
        return self.length - offset if offset < self.length else _DAY + self.length - offset

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

    def last_opening(self, moment: datetime) -> datetime:
        """When the window last opened at or before ``moment`` (the start of the occurrence that
        holds it, or of the one that closed last)."""
        begin, _ = self.occurrence(moment)
        return begin if begin <= moment else begin - _DAY


def parse_window(text: str) -> Window:
    """``"02:00-04:00"`` (UTC; ``"22:00-02:00"`` wraps past midnight) -> Window. ValueError explains."""
    usage = "write 'HH:MM-HH:MM' in UTC, e.g. '02:00-04:00' (it may wrap past midnight: '22:00-02:00')"
    if isinstance(text, str):
        _ascii_digits(text, "a window")
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


def window_time(due: datetime, window: Window, seed: str, within: timedelta | None = None) -> datetime:
    """When a rotation nominally ``due`` happens: at or after ``due``, inside ``window``.

    It lands at a random moment between ``max(due, window opens)`` and the window's end (or
    ``within`` after that start, if sooner), in the first occurrence of the window that ends after
    ``due``. The randomness comes from ``seed`` alone, so the same inputs always give the same
    moment (replicas and restarts agree).
    """
    begin, end = window.occurrence(due)
    start = max(begin, due)
    if within is not None:
        end = min(end, start + within)
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
        """The longest a token can stay current: a bound the time between two rotations never exceeds.

        Without a window, the interval. With one (``I`` the interval, ``L`` the window's length,
        offsets counted from the window's opening, modulo a day, and :meth:`Window.latest_wait`
        ``w``), from :meth:`next_due`:

        * an interval at least as long as the window: ``I + w(I)``, and ``I + 24h - L`` if larger
          when ``L`` (the close) lies in ``[I, I + 24h - L)``. A rotation inside a window is due ``I``
          after its opening (offset ``I``); one outside every window ``I - L`` after it, at an offset
          in ``[I, I + 24h - L)``, and a due time just as the window closes waits ``24h`` to the end
          of the next one. For whole days and a window of at most 12 h: ``I + 24h - L``.
        * an interval shorter than the window: ``I + 24h - L + I`` (a rotation ``I`` before the
          close is due as it closes, and lands up to ``I`` after the next opening); ``I`` for a window
          of the whole day.
        * cron: ``I`` (the next fire is at most that far) plus the largest ``w`` of its fire times.

        tests/config/test_window_lifetime.py scans every last rotation (window edges included) with
        the latest random draw, and checks that validated lifetimes hold over years of rotations.
        """
        window, interval = self.window, self.interval
        if window is None:
            return interval
        length = window.length
        if self.cron is not None:
            times = _day_rule(self.cron).times
            return interval + max(window.latest_wait(timedelta(minutes=t) - window.start) for t in times)
        if interval < length:
            return interval if length == _DAY else interval + _DAY - length + interval
        wait = window.latest_wait(interval)
        if length < _DAY and (length - interval) % _DAY < _DAY - length:
            wait = max(wait, _DAY - length)
        return interval + wait

    def next_due(self, last_rotation: datetime | None, now: datetime) -> datetime:
        """When the next rotation is due: ``now`` when never rotated.

        With a window, the due time moves into the window (see :func:`window_time`), seeded by the
        last rotation's time so that every caller computes the same moment. An interval (or
        ``rate()``) schedule at least as long as the window counts from the opening of the window
        the last rotation happened in: from ``last_rotation - min(time since that opening, window
        length)``. Its rotations then stay spread over the whole window, one per interval, where
        counting from each random moment would draw every rotation later than the last, pile them
        up at the window's end and then skip a day. Two rotations may be up to the window's length
        less than the interval apart. A shorter interval fits several rotations in one occurrence:
        one that falls due while the window is open happens at its due time, one that falls due
        while the window is closed at a random moment of the first interval of the next occurrence
        (the next ones follow an interval apart: as many as fit, spread over the whole window).

        :class:`NoNextDue` for a cron schedule that never fires after ``now``, rotated or not, and for a
        next rotation past the last time a datetime holds (a publication edited to the year 9999): a due
        time no caller can compare, so that no scheduler, status or scrape fails on it (OverflowError).
        """
        try:
            return self._next_due(last_rotation, now)
        except OverflowError:
            raise NoNextDue(f"the next rotation after {last_rotation.isoformat() if last_rotation else now} "
                            "would be after the year 9999: check the last rotation's time in the journal") from None

    def _next_due(self, last_rotation: datetime | None, now: datetime) -> datetime:
        if last_rotation is None:
            if self.cron is not None and _can_end(self.cron):
                _cron_next(self.cron, now - timedelta(seconds=1))  # its years have passed: NoNextDue
            return now
        window = self.window
        within: timedelta | None = None
        if self.cron is not None:
            due = _cron_next(self.cron, last_rotation)  # fire times are fixed times of day: nothing drifts
            if window is None:
                return due
        elif window is None or self.interval < window.length:
            due = last_rotation + self.interval
            if window is None or window.contains(due):
                return due
            within = self.interval
        else:
            # Anchored on the window's opening. A rotation outside every window (a bootstrap, an overdue
            # rotation, a run that published just after the window closed) counts from at most one
            # window length before it: never less than interval - length after it.
            since_opening = last_rotation - window.last_opening(last_rotation)
            due = last_rotation + self.interval - min(since_opening, window.length)
        seed = f"{self.text}|{window.text}|{last_rotation.astimezone(UTC).isoformat()}"
        return window_time(due, window, seed, within)

    def with_window(self, window: Window | None) -> Schedule:
        return Schedule(self.text, self.interval, self.cron, window)

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "interval_s": int(self.interval.total_seconds()), "cron": self.cron,
                "window": self.window.text if self.window is not None else None}


def parse_schedule(text: str, window: str | None = None) -> Schedule:
    """Parse a schedule (and its optional window); ValueError explains the accepted forms.

    A cron schedule's interval is its longest gap between two fires, the same whatever day it is
    computed (see :func:`_cron_interval`)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("schedule is empty; write e.g. '30d', 'rate(30 days)' or '0 3 * * 1'")
    text = text.strip()
    if len(text) > _MAX_SCHEDULE_TEXT:
        raise ValueError(f"{_short(text)} is not a schedule: it is {len(text):,} characters long, and a schedule "
                         f"is at most {_MAX_SCHEDULE_TEXT}; {_SCHEDULE_USAGE}")
    _ascii_digits(text, "a schedule")
    parsed_window = parse_window(window) if window is not None else None
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
        return Schedule(text, _cron_interval(text), cron=text, window=parsed_window)
    try:
        interval = parse_duration(text)
    except ValueError as exc:
        if len(text) <= MAX_DURATION_TEXT and _DURATION.match(text):  # an interval, too long: say that
            raise ValueError(str(exc).replace("duration", "schedule")) from None
        raise ValueError(f"{_short(text)} is not a schedule; {_SCHEDULE_USAGE}") from None
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
    if not _is_number(text) or not low <= int(text) <= high:
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
            if not _is_number(step_text) or int(step_text) == 0:
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
    if _is_number(token) and 1 <= int(token) <= 7:
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
            nth = re.fullmatch(r"(\w+)#([0-9])", part)
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


#: A cron schedule's interval does not depend on the day it is computed (the same file validates
#: alike in CI, at a daemon's restart and in the Lambda): it is the longest gap between consecutive
#: fires over a whole calendar cycle. Weekdays and leap years repeat every 28 years from 1901 to 2099,
#: so the cycle is 2001-2028, followed by the wrap into its repetition from 2029 on.
_CYCLE = range(2001, 2029)
_CYCLE_DAYS = (date(_CYCLE.stop, 1, 1) - date(_CYCLE.start, 1, 1)).days  # 10,227: whole weeks
#: An AWS expression that names years fires only in those: its gaps are counted over them alone,
#: past or ahead, within the years AWS accepts.
_AWS_YEARS = (1970, 2199)
_MONTH_LENGTHS = ((31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31), (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31))
#: ``weekdays * _WEEKS`` repeats a 7-bit weekday mask over 7 weeks (bit ``i``: the weekday ``i % 7``)
_WEEKS = sum(1 << 7 * week for week in range(7))


@dataclass(frozen=True)
class _DayRule:
    """On which days, and at which times of those days, a cron expression fires."""

    months: frozenset[int]
    #: bit ``d - 1``: day of month ``d`` (numbers past a month's end match nothing in that month)
    days: int
    #: ``L``: the month's last day
    last_day: bool
    #: AWS ``d#n`` and ``dL``: (n - 1, or 5 for the last; the weekday d, 0 = Sunday)
    positions: tuple[tuple[int, int], ...]
    #: bit ``k``: weekday ``k`` (0 = Sunday)
    weekdays: int
    #: crontab's rule when both day fields are restricted: a day matching either fires (else both must)
    either: bool
    #: the years it fires in (AWS); None: every year
    years: tuple[int, ...] | None
    #: minutes after midnight, sorted: the same on every day that fires (UTC has no DST)
    times: tuple[int, ...]

    def month_days(self, length: int, first_weekday: int) -> int:
        """The days of a month that fire (bit ``d - 1`` for day ``d``): they depend only on its
        length and the weekday of its 1st (0 = Sunday)."""
        every = (1 << length) - 1
        days = self.days & every
        if self.last_day:
            days |= 1 << (length - 1)
        for nth, weekday in self.positions:
            first = (weekday - first_weekday) % 7  # the first such weekday, counted from 0
            day = first + 7 * nth if nth < 5 else first + (length - 1 - first) // 7 * 7
            if day < length:
                days |= 1 << day
        weekdays = (self.weekdays * _WEEKS >> first_weekday) & every
        return (days | weekdays) if self.either else (days & weekdays)


@functools.lru_cache(maxsize=256)
def _day_rule(expr: str) -> _DayRule:
    trigger = _trigger(expr)  # the syntax checks (and APScheduler's presence) first
    if _AWS_CRON.match(expr):
        return _aws_day_rule(expr, trigger)
    fields = expr.split()
    minutes, hours, days, months, weekdays = _crontab_expanded(expr)
    return _DayRule(frozenset(months), sum(1 << (d - 1) for d in days), False, (), sum(1 << d for d in weekdays),
                    not (fields[2].startswith("*") or fields[4].startswith("*")), None,
                    tuple(h * 60 + m for h in hours for m in minutes))  # fmt: skip


def _aws_day_rule(expr: str, trigger: Any) -> _DayRule:
    """An AWS expression's days, read back from the fields APScheduler compiled: the days (and
    times) it fires are the ones CronTrigger fires on, which rotator follows (:func:`_cron_next`)."""
    from apscheduler.triggers.cron.expressions import LastDayOfMonthExpression, WeekdayPositionExpression

    field = {f.name: f.expressions for f in trigger.fields}
    years: tuple[int, ...] | None = None
    if [str(e) for e in field["year"]] != ["*"]:
        named = [y for e in field["year"] for y in (getattr(e, "first", None), getattr(e, "last", None))]
        if any(y is not None and y > _AWS_YEARS[1] for y in named):
            raise ValueError(f"{expr!r}: AWS accepts the years {_AWS_YEARS[0]} to {_AWS_YEARS[1]}")
        years = tuple(_field_values(field["year"], *_AWS_YEARS))
    special = (WeekdayPositionExpression, LastDayOfMonthExpression)
    positions = tuple((e.option_num, (e.weekday + 1) % 7) for e in field["day"]
                      if isinstance(e, WeekdayPositionExpression))  # fmt: skip
    hours, minutes = _field_values(field["hour"], 0, 23), _field_values(field["minute"], 0, 59)
    return _DayRule(
        months=frozenset(_field_values(field["month"], 1, 12)),
        days=sum(1 << (d - 1) for d in _field_values([e for e in field["day"] if not isinstance(e, special)], 1, 31)),
        last_day=any(isinstance(e, LastDayOfMonthExpression) for e in field["day"]),
        positions=positions,
        weekdays=sum(1 << (d + 1) % 7 for d in _field_values(field["day_of_week"], 0, 6)),  # there Monday = 0
        either=False,  # CronTrigger: both day fields must match
        years=years,
        times=tuple(h * 60 + m for h in hours for m in minutes),
    )


def _field_values(expressions: list[Any], low: int, high: int) -> list[int]:
    """The sorted values from ``low`` to ``high`` that CronTrigger expressions (``*``, ``*/n``, ``a``,
    ``a-b``, ``a/n``, ``a-b/n``, names) match, as CronTrigger steps them."""
    from apscheduler.triggers.cron.expressions import AllExpression, RangeExpression

    values: set[int] = set()
    for e in expressions:
        if isinstance(e, RangeExpression):
            first, last = max(e.first, low), high if e.last is None else min(e.last, high)
        elif type(e) is AllExpression:
            first, last = low, high
        else:
            raise TypeError(f"unexpected CronTrigger expression {e!r}")
        values.update(range(first, last + 1, e.step or 1))
    return sorted(values)


def _year_days(rule: _DayRule, kind: tuple[bool, int], shapes: dict[tuple[int, int], int]) -> int:
    """The days that fire in a year of ``kind`` (bit ``i`` for its day ``i + 1``), from its months' days."""
    year = 0
    for month, length, weekday, offset in _MONTHS_OF[kind]:
        if month in rule.months:
            days = shapes.get((length, weekday))
            if days is None:
                days = shapes[(length, weekday)] = rule.month_days(length, weekday)
            year |= days << offset
    return year


def _year_kind(year: int) -> tuple[bool, int]:
    """What a year's calendar depends on: whether it is a leap year, and the weekday of its 1st January."""
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0), date(year, 1, 1).isoweekday() % 7


def _months_of(leap: bool, first_weekday: int) -> tuple[tuple[int, int, int, int], ...]:
    """(month, length, weekday of its 1st, its 1st's day of the year from 0) for a kind of year."""
    months, offset = [], 0
    for month, length in enumerate(_MONTH_LENGTHS[leap], 1):
        months.append((month, length, (first_weekday + offset) % 7, offset))
        offset += length
    return tuple(months)


_MONTHS_OF = {(leap, weekday): _months_of(leap, weekday) for leap in (False, True) for weekday in range(7)}
#: (1st January's day number, kind) of each year of the cycle
_CYCLE_YEARS = tuple((date(year, 1, 1).toordinal(), _year_kind(year)) for year in _CYCLE)


def _fire_days(expr: str, years: range | tuple[int, ...] | None = None) -> list[date]:
    """Every day ``expr`` fires on in ``years`` (default: those :func:`_cron_interval` reads), from
    the calendar :func:`_cron_interval` reads (tests compare it with APScheduler day by day)."""
    rule = _day_rule(expr)
    chosen = years if years is not None else rule.years if rule.years is not None else _CYCLE
    shapes: dict[tuple[int, int], int] = {}
    found: list[date] = []
    for year in chosen:
        if rule.years is not None and year not in rule.years:
            continue
        start = date(year, 1, 1)
        mask = _year_days(rule, _year_kind(year), shapes)
        found.extend(start + timedelta(days=i) for i in range(mask.bit_length()) if mask >> i & 1)
    return found


@functools.lru_cache(maxsize=1024)
def _cron_interval(expr: str) -> timedelta:
    """The longest gap between two consecutive fires of ``expr``, the same whatever day it is.

    Counted over the 28-year calendar cycle and its wrap (see :data:`_CYCLE`); for an AWS expression
    that names years, over those years. One whose years have all passed keeps the longest gap of the
    years it fired in, so that a file written while it ran still loads: its policy has no next due
    time then (:class:`NoNextDue`, checked against the current time when planning), which
    ``validate``, ``plan`` and the daemon report for that policy alone (docs/policy.md).

    No day is asked of APScheduler: a month's firing days depend only on its length and the weekday
    of its 1st, a year's on whether it is a leap year and the weekday of its 1st January (14 kinds),
    so each kind of year is built once, as a mask of days. The gaps are those inside a day and those
    from one firing day's last fire to the next's first (the times are the same every day).
    """
    rule = _day_rule(expr)
    kinds: dict[tuple[bool, int], tuple[int, int, int] | None] = {}
    shapes: dict[tuple[int, int], int] = {}
    first = last = -1
    longest = 0  # days between two consecutive days that fire
    years = _CYCLE_YEARS if rule.years is None else [(date(y, 1, 1).toordinal(), _year_kind(y)) for y in rule.years]
    for base, kind in years:
        if kind not in kinds:
            kinds[kind] = _spread(_year_days(rule, kind, shapes))
        spread = kinds[kind]
        if spread is None:
            continue
        low, high, inside = spread
        if last < 0:
            first = base + low
        else:
            longest = max(longest, base + low - last)
        longest, last = max(longest, inside), base + high
    if first >= 0 and rule.years is None:
        longest = max(longest, first + _CYCLE_DAYS - last)  # into the next cycle (one day: a cycle)
    times = rule.times
    within = max((b - a for a, b in zip(times, times[1:], strict=False)), default=0)
    gap = max(longest * 1440 - (times[-1] - times[0]) if longest else 0, within)
    if first < 0 or gap == 0:
        raise ValueError(f"cron expression {expr!r} fires too rarely to rotate on: it fires fewer than twice in "
                         "all; write an expression that fires repeatedly, e.g. '0 3 1 * *', or an interval ('30d')")
    if gap > _MAX_DAYS * 1440:
        raise ValueError(f"cron expression {expr!r} fires too rarely to rotate on: its fires are more than "
                         f"{_MAX_DAYS} days (100 years) apart; write a schedule that fires more often")
    return timedelta(minutes=gap)


def _spread(days: int) -> tuple[int, int, int] | None:
    """The first and last day (from 0) of a mask of days and the longest gap between two of them; None if empty."""
    if not days:
        return None
    low, high = (days & -days).bit_length() - 1, days.bit_length() - 1
    if low == high:
        return low, high, 0
    # a gap is a run of 0s between two 1s, plus one day: the longest run, by doubling then halving
    digits = bin(days >> low)[2:]
    short, long = 0, 1
    while "0" * long in digits:
        short, long = long, long * 2
    while long - short > 1:
        middle = (short + long) // 2
        short, long = (middle, long) if "0" * middle in digits else (short, middle)
    return low, high, short + 1
