"""One retry helper for every adapter call: bounded exponential backoff with jitter."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import NamedTuple, TypeVar

from rotator.core.clock import Clock
from rotator.core.errors import TransientError

__all__ = ["RetryPolicy", "call_with_retry", "doubling"]

T = TypeVar("T")
_Delay = TypeVar("_Delay", float, timedelta)
logger = logging.getLogger("rotator.retry")


def doubling(base: _Delay, cap: _Delay, failures: int) -> _Delay:
    """``min(cap, base * 2**(failures - 1))``, without computing the power: a count of failures in a
    row has no bound (a daemon whose issuer is down for days), and a timedelta times 2**44 or a
    float times 2**1024 raises OverflowError, where the wait should simply stay at ``cap``."""
    delay = base
    for _ in range(failures - 1):
        if delay >= cap or not delay:
            break
        delay = delay * 2
    return min(cap, delay)


class RetryPolicy(NamedTuple):
    """How often and how far apart a step is tried again after a TransientError."""

    attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Equal jitter: uniform in [cap/2, cap], cap = min(max, base * 2**(attempt-1)).

        Half the cap is kept so that a retry never comes immediately (issuers that answer 401
        while a token activates need real waiting); the other half spreads replicas apart.
        """
        cap = doubling(self.base_delay, self.max_delay, attempt)
        return rng.uniform(cap / 2, cap)


def call_with_retry(
    fn: Callable[[], T],
    *,
    what: str,
    policy: RetryPolicy,
    clock: Clock,
    deadline: datetime | None = None,
    before_retry: Callable[[], None] | None = None,
    rng: random.Random | None = None,
) -> T:
    """Call ``fn``; on TransientError wait and try again, up to ``policy.attempts`` tries.

    With a ``deadline`` the tries go on until the next wait would pass it, however many that is
    (used for waiting on token activation). The last error is re-raised unchanged.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except TransientError as exc:
            if rng is None:  # made on the first failure only: seeding costs ~15 us per call
                rng = random.Random()
            wait = policy.delay(attempt, rng)
            if deadline is not None:
                out_of_time = clock.now() + timedelta(seconds=wait) > deadline
            else:
                out_of_time = attempt >= policy.attempts
            if out_of_time:
                logger.warning("%s failed after %d attempt(s), giving up: %s", what, attempt, exc)
                raise
            logger.warning("%s failed (attempt %d), retrying in %.1fs: %s", what, attempt, wait, exc)
            clock.sleep(wait)
            if before_retry is not None:
                before_retry()
