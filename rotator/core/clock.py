"""The only place rotator reads the wall clock; tests inject a FakeClock.

Everything that needs the time of day takes a :class:`Clock` (the engine, the daemon, the Lambda
runner, adapters through their ``AdapterContext``, notifications) and falls back to
:data:`SYSTEM_CLOCK`. ``time.monotonic()`` may be read elsewhere: it measures how long something
took or bounds a wait, never says what time it is, and a FakeClock has nothing to say about it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["SYSTEM_CLOCK", "Clock", "FakeClock", "SystemClock", "utcnow"]


class Clock(Protocol):
    def now(self) -> datetime: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class FakeClock:
    """A clock that only moves when told to (or when someone sleeps on it)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def sleep(self, seconds: float) -> None:
        self._now += timedelta(seconds=max(seconds, 0))

    def advance(self, delta: timedelta) -> None:
        self._now += delta

    def monotonic(self) -> float:
        """Real time passed, for what measures a step of the time of day against it
        (rotator/adapters/vault/auth.py): none, for a clock that knows nothing of real time, so
        each read is as if no time passed since the last."""
        return 0.0


#: The one system clock everything defaults to (it holds no state, so one is shared).
SYSTEM_CLOCK = SystemClock()


def utcnow() -> datetime:
    """The system clock's time; for code that takes no Clock (prefer taking one)."""
    return SYSTEM_CLOCK.now()
