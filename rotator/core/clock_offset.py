"""This process's clock against the journal's PostgreSQL server's (docs/daemon.md, *Clocks*).

Replicas sharing a PostgreSQL journal compare a lease's expiry, written with its holder's clock,
against their own clock: a replica running more than ``lease_ttl / 2`` ahead of another takes that
one's live lease while it is inside a side effect. Nothing in the lease protocol can see that, so
each replica measures its clock against the one clock they all reach, the server's: two replicas
each within ``x`` of it are within ``2x`` of each other.

An SQLite journal has no server clock, and every process that uses it runs on one host (one
clock): there is nothing to measure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from rotator.core.clock import Clock

__all__ = ["NOT_READY", "OK", "WARN", "WARN_OFFSET_S", "ClockOffset", "level", "measure", "ready_limit_s"]

#: Past this many seconds off the server's clock (either way) the daemon warns: two replicas each
#: within it are within 2 s of each other, what a run that died inside its mint needs
#: (docs/operations.md, *Clocks*: about 3 s of MINT_SETTLE_MARGIN are left for the clocks' difference).
WARN_OFFSET_S = 1.0
#: levels of :func:`level`: in sync; more than WARN_OFFSET_S off; more than :func:`ready_limit_s` off
OK, WARN, NOT_READY = 0, 1, 2


def ready_limit_s(lease_ttl: timedelta) -> float:
    """How far off the server's clock a replica may be and stay ready: a quarter of ``lease_ttl``,
    so that two replicas on either side of the server stay within ``lease_ttl / 2`` of each other
    (a holder renews its lease once half of it is gone)."""
    return lease_ttl.total_seconds() / 4


@dataclass(frozen=True)
class ClockOffset:
    """One measurement: ``offset_s`` is the server's time minus this process's (negative: this
    process's clock is ahead), taken at the middle of the statement's round trip, which bounds how
    wrong it can be: the server read its clock somewhere within that round trip."""

    offset_s: float
    round_trip_s: float

    @property
    def uncertainty_s(self) -> float:
        return self.round_trip_s / 2

    def surely_beyond(self, limit_s: float) -> bool:
        return abs(self.offset_s) - self.uncertainty_s > limit_s

    def possibly_beyond(self, limit_s: float) -> bool:
        return abs(self.offset_s) + self.uncertainty_s > limit_s

    def describe(self) -> str:
        """``ahead of the journal server's clock by 1.52s (±0.001s)``, for messages."""
        way = "ahead of" if self.offset_s < 0 else "behind"
        return f"{way} the journal server's clock by {abs(self.offset_s):.2f}s (±{self.uncertainty_s:.3f}s)"


def measure(journal: Any, clock: Clock) -> ClockOffset | None:
    """This process's ``clock`` against the server of ``journal``: one statement; None for a
    journal without a server clock (SQLite). Raises the journal's RotatorError when it does not answer."""
    if getattr(journal, "backend", None) != "postgresql":
        return None
    # Journal.transaction() is the public way to run a statement of one's own; on PostgreSQL it is a
    # plain BEGIN (no lock), and a transaction that writes nothing commits nothing to sync. Only the
    # SELECT is timed: BEGIN and COMMIT are round trips of their own.
    with journal.transaction() as cur:
        started = time.monotonic()
        local = clock.now()
        row = cur.execute("SELECT clock_timestamp()").fetchone()
        # time.monotonic(), not a second clock.now(): a FakeClock does not move, and a wall clock
        # stepped by NTP between the two reads would make a round trip of the step.
        round_trip = time.monotonic() - started
    midpoint = local + timedelta(seconds=round_trip / 2)
    return ClockOffset((row[0] - midpoint).total_seconds(), round_trip)


def level(offset: ClockOffset, ready_limit: float, previous: int) -> int:
    """The level (OK, WARN, NOT_READY) after ``offset``, given the one before: a level is reached when
    the offset is beyond its limit whatever its uncertainty, and left only when it is within it
    whatever its uncertainty, so that an offset close to a limit does not cross it at every sweep."""

    def of(beyond: Callable[[float], bool]) -> int:
        return NOT_READY if beyond(ready_limit) else WARN if beyond(WARN_OFFSET_S) else OK

    surely, possibly = of(offset.surely_beyond), of(offset.possibly_beyond)
    if surely > previous:
        return surely
    if possibly < previous:
        return possibly
    return previous
