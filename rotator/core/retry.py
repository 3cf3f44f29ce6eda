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
    before_retry: Callable[[], object] | None = None,
    rng: random.Random | None = None,
) -> T:
    """Call ``fn``; on TransientError wait and try again, up to ``policy.attempts`` tries.

    With a ``deadline`` the tries go on until the next wait would pass it, however many that is
    (used for waiting on token activation). The last error is re-raised unchanged.

    An error's ``retry_after`` (the server's Retry-After) makes the wait at least that long, up to
    ``policy.max_delay`` (the policy's bound on any wait: a server asking for an hour is asked
    again after ``max_delay``). With a ``deadline``, a ``retry_after`` that ends past it gives
    up at once: trying before the server said would be refused the same way, and waiting past
    the deadline is not allowed.
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
            asked = exc.retry_after
            if asked is not None:
                wait = max(wait, min(asked, policy.max_delay))
            if deadline is not None:
                now = clock.now()
                left = (deadline - now).total_seconds()  # (seconds: a huge Retry-After overflows no timedelta)
                if asked is not None and asked > left:
                    logger.warning("%s failed after %d attempt(s), giving up: the server asked to wait %gs "
                                   "(Retry-After), past the deadline %s: %s", what, attempt, asked,
                                   deadline.isoformat(timespec="seconds"), exc)
                    raise
                out_of_time = now + timedelta(seconds=wait) > deadline
            else:
                out_of_time = attempt >= policy.attempts
            if out_of_time:
                logger.warning("%s failed after %d attempt(s), giving up: %s", what, attempt, exc)
                raise
            asked_text = "" if asked is None else f" (the server asked for {asked:g}s)"
            logger.warning("%s failed (attempt %d), retrying in %.1fs%s: %s", what, attempt, wait, asked_text, exc)
            clock.sleep(wait)
            if before_retry is not None:
                before_retry()
