"""Durations and rotation schedules, as pure functions of ``now`` (all UTC).

Accepted schedules: an interval (``30d``, ``12h``, ``90m``, ``45s``, ``1w``), an AWS-style
``rate(30 days)``, or a 5-field cron expression (``0 3 * * 1``). Cron maths is delegated to
APScheduler's CronTrigger, imported only when a cron schedule is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["Schedule", "format_duration", "parse_duration", "parse_schedule"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(?:(\d+)\s*([smhdw])\s*)+$")
_PART = re.compile(r"(\d+)\s*([smhdw])")
_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_RATE_UNITS = {"minute": 60, "hour": 3600, "day": 86400}


def parse_duration(text: str) -> timedelta:
    """``"30d"``, ``"1d12h"``, ``"90s"`` -> timedelta. ValueError says what is accepted."""
    if not isinstance(text, str) or not _DURATION.match(text):
        raise ValueError(f"{text!r} is not a duration; write e.g. '30d', '12h', '90m', '45s' or '1d12h'")
    seconds = sum(int(n) * _UNITS[u] for n, u in _PART.findall(text))
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return sign + "".join(parts[:2])


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule. ``interval`` is the (longest) gap between two rotations."""

    text: str
    interval: timedelta
    cron: str | None = None

    def next_due(self, last_rotation: datetime | None, now: datetime) -> datetime:
        """When the next rotation is due: ``now`` when never rotated."""
        if last_rotation is None:
            return now
        if self.cron is None:
            return last_rotation + self.interval
        return _cron_next(self.cron, last_rotation)

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "interval_s": int(self.interval.total_seconds()), "cron": self.cron}


def parse_schedule(text: str) -> Schedule:
    """Parse a schedule; ValueError explains the accepted forms."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("schedule is empty; write e.g. '30d', 'rate(30 days)' or '0 3 * * 1'")
    text = text.strip()
    rate = _RATE.match(text)
    if rate:
        count, unit = int(rate.group(1)), rate.group(2).rstrip("s")
        if count <= 0:
            raise ValueError(f"{text!r}: the rate must be positive")
        return Schedule(text, timedelta(seconds=count * _RATE_UNITS[unit]))
    if len(text.split()) == 5:
        return Schedule(text, _cron_interval(text), cron=text)
    try:
        interval = parse_duration(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a schedule; write an interval ('30d', '12h'), "
            "'rate(30 days)' or a 5-field cron expression in UTC ('0 3 * * 1')"
        ) from None
    if interval.total_seconds() <= 0:
        raise ValueError(f"{text!r}: the interval must be positive")
    return Schedule(text, interval)


_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _cron_dow_to_names(field_text: str) -> str:
    """Standard cron counts weekdays from Sunday = 0 (or 7); APScheduler 3 from Monday = 0.

    Numbers are rewritten as names, which both read the same way; a step (``*/2``) is kept.
    """

    def convert(part: str) -> str:
        base, slash, step = part.partition("/")
        base = re.sub(r"\d+", lambda m: _DAY_NAMES[int(m.group()) % 7], base)
        return base + slash + step

    return ",".join(convert(part) for part in field_text.split(","))


def _trigger(expr: str) -> Any:
    try:
        from apscheduler.triggers.cron import CronTrigger
    except ImportError:
        raise ValueError(
            f"{expr!r}: cron schedules need APScheduler; install it with pip install 'rotator[daemon]'"
        ) from None

    minute, hour, day, month, dow = expr.split()
    try:
        return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=_cron_dow_to_names(dow),
                           timezone=UTC)
    except ValueError as exc:
        raise ValueError(f"{expr!r} is not a valid 5-field cron expression: {exc}") from None


def _cron_next(expr: str, after: datetime) -> datetime:
    fire: datetime | None = _trigger(expr).get_next_fire_time(None, after + timedelta(seconds=1))
    if fire is None:
        raise ValueError(f"cron expression {expr!r} never fires again")
    return fire.astimezone(UTC)


def _cron_interval(expr: str) -> timedelta:
    """The longest gap among the next fires, so token lifetimes cover the slowest period."""
    trigger = _trigger(expr)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    fires: list[datetime] = []
    previous: datetime | None = None
    now = start
    while len(fires) < 14:
        fire = trigger.get_next_fire_time(previous, now)
        if fire is None:
            break
        fires.append(fire)
        previous, now = fire, fire + timedelta(seconds=1)
    if len(fires) < 2:
        raise ValueError(f"cron expression {expr!r} fires too rarely to rotate on")
    return max(b - a for a, b in zip(fires, fires[1:], strict=False))
