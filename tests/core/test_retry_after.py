"""A server's Retry-After: read from the answer (rotator/adapters/http/common.py), carried by the
TransientError, honoured by the one retry helper (rotator/core/retry.py) within its bounds."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest

from rotator.adapters.http.common import retry_after
from rotator.core.clock import FakeClock
from rotator.core.errors import JournalUnavailable, LeaseBusy, NotYetAccepted, TransientError
from rotator.core.retry import RetryPolicy, call_with_retry

POLICY = RetryPolicy(attempts=3, base_delay=1.0, max_delay=60.0)


class Recorder(FakeClock):
    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        super().sleep(seconds)


def failing(retry_after_s: float | None, times: int = 100) -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise TransientError("busy; the server asks to wait (Retry-After)", hint="wait", retry_after=retry_after_s)
        return "done"

    return calls, fn


def test_the_wait_is_at_least_what_the_server_asked() -> None:
    clock = Recorder()
    calls, fn = failing(7, times=2)
    assert call_with_retry(fn, what="list", policy=POLICY, clock=clock, rng=random.Random(1)) == "done"
    assert len(calls) == 3 and all(wait >= 7 for wait in clock.sleeps) and len(clock.sleeps) == 2


def test_a_retry_after_longer_than_max_delay_is_capped_there() -> None:
    clock = Recorder()
    calls, fn = failing(120)
    with pytest.raises(TransientError):
        call_with_retry(fn, what="list", policy=POLICY, clock=clock)
    assert len(calls) == POLICY.attempts and clock.sleeps == [60.0, 60.0]


def test_without_retry_after_the_backoff_is_the_policy_s() -> None:
    clock = Recorder()
    _, fn = failing(None)
    with pytest.raises(TransientError):
        call_with_retry(fn, what="list", policy=POLICY, clock=clock)
    assert all(wait <= 2 for wait in clock.sleeps)


def test_a_retry_after_past_the_deadline_gives_up_at_once(caplog: pytest.LogCaptureFixture) -> None:
    """Waiting would end past the deadline, and trying sooner is what the server refused: one try,
    no wait, and the log says what the server asked for."""
    clock = Recorder()
    calls, fn = failing(120)
    deadline = clock.now() + timedelta(seconds=30)
    with caplog.at_level(logging.WARNING, logger="rotator.retry"), pytest.raises(TransientError) as err:
        call_with_retry(fn, what="verify", policy=POLICY, clock=clock, deadline=deadline)
    assert len(calls) == 1 and clock.sleeps == [] and clock.now() < deadline
    assert "the server asked to wait 120s (Retry-After), past the deadline" in caplog.text
    assert "Retry-After" in str(err.value)


def test_a_retry_after_within_the_deadline_is_waited_for_and_never_past_it() -> None:
    clock = Recorder()
    calls, fn = failing(20)
    deadline = clock.now() + timedelta(seconds=50)
    with pytest.raises(TransientError):
        call_with_retry(fn, what="verify", policy=POLICY, clock=clock, deadline=deadline)
    assert clock.sleeps and all(wait >= 20 for wait in clock.sleeps) and clock.now() <= deadline
    assert len(calls) == len(clock.sleeps) + 1


def test_every_transient_error_still_builds_as_before() -> None:
    assert TransientError("x").retry_after is None and TransientError("x", hint="h").hint == "h"
    assert NotYetAccepted("x", hint="h", retry_after=3).retry_after == 3
    assert LeaseBusy("p", "holder").retry_after is None and JournalUnavailable("x", hint="h").retry_after is None


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "120"}, 120.0),
        ({"Retry-After": " 0 "}, 0.0),
        ({"Retry-After": "Wed, 21 Oct 2026 07:28:30 GMT", "Date": "Wed, 21 Oct 2026 07:28:00 GMT"}, 30.0),
        ({"Retry-After": "Wed, 21 Oct 2026 07:27:00 GMT", "Date": "Wed, 21 Oct 2026 07:28:00 GMT"}, 0.0),
        ({"Retry-After": "9" * 400}, 1e9),  # bounded: no float overflow, and no timedelta overflow below
        ({"Retry-After": "-5"}, None),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "1.5"}, None),
        ({}, None),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after(httpx.Response(429, headers=headers)) == seconds


def test_an_absurd_retry_after_overflows_nothing() -> None:
    clock = Recorder()
    calls, fn = failing(1e300)
    with pytest.raises(TransientError):
        call_with_retry(fn, what="verify", policy=POLICY, clock=clock, deadline=clock.now() + timedelta(seconds=5))
    with pytest.raises(TransientError):
        call_with_retry(fn, what="list", policy=POLICY, clock=clock)
    assert clock.sleeps == [60.0, 60.0]
