"""The scheduler's loop under a clock that moves on every reading, as the system's does: a pass plans
with its own time, so a policy that is due starts its job and the loop then sleeps until the next
thing, never waking every MIN_WAIT.

A policy without a publication (never bootstrapped) is due at once. The daemon runs its rotation, as
`rotator rotate` does: an issuer with its own credential mints the first token; one that
authenticates with the policy's own token refuses ("no token is published yet", naming `rotator
bootstrap`), which is a failure like any other: logged once per try, backed off, counted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.core.clock import FakeClock
from rotator.core.errors import ConfigError
from rotator.runners.daemon import MIN_WAIT, Daemon
from tests.runners.test_daemon import POLICY, T0, FakeEngine, InlineExecutor

HEAD = '[rotator]\njournal = "journal.db"\n[daemon]\naudit = { file = "audit.jsonl" }\n'
#: what an influxctl issuer with auth.method = 'self' raises for a policy whose stores hold no token yet
NO_TOKEN = ConfigError("auth.method = 'self' needs the current management token, but no token is published yet",
                       hint="store the first token with `rotator bootstrap`, or authenticate with auth.method = "
                       "'token_file' or 'mgmt_token'")


class TickingClock(FakeClock):
    """A fake clock that moves a little at every reading, as the system's does between two calls."""

    STEP = timedelta(microseconds=250)

    def now(self) -> datetime:
        self._now += self.STEP
        return self._now


@pytest.fixture
def never_published(tmp_path: Path) -> Iterator[tuple[Daemon, TickingClock, list[str], dict[str, FakeEngine]]]:
    """A daemon with policy ``a``, which the journal has no publication of (no bootstrap)."""
    config = tmp_path / "rotator.toml"
    config.write_text(HEAD + POLICY.format(name="a", schedule="1h", extra=""))
    clock = TickingClock(T0)
    calls: list[str] = []
    engines: dict[str, FakeEngine] = {}

    def factory(policy: Any, cfg: Any, jr: Any, listener: Any) -> FakeEngine:
        engines[policy.name] = FakeEngine(policy.name, jr, clock, calls)
        return engines[policy.name]

    d = Daemon(config, clock=clock, serve_http=False, engine_factory=factory, executor=InlineExecutor(),
               handle_signals=False)
    d.start()
    yield d, clock, calls, engines
    d.shutdown()


def drive(d: Daemon, clock: FakeClock, passes: int) -> list[float]:
    """What the daemon's loop does: a pass, then a sleep for the wait it returned; the waits."""
    waits = []
    for _ in range(passes):
        wait = d.tick(clock.now())
        waits.append(wait)
        clock.advance(timedelta(seconds=wait))
    return waits


def test_a_never_published_policy_is_rotated_and_the_loop_then_sleeps(never_published: Any) -> None:
    """It spun: the pass planned the policy with a later clock reading than its own now, and a policy
    without a publication is due at that reading: "not due yet" at every pass, a wake-up every MIN_WAIT
    with a journal query each, forever, and no rotation, no log line."""
    d, clock, calls, _ = never_published
    waits = drive(d, clock, 20)
    assert calls.count("rotate a") == 1, f"one rotation of the policy without a token; calls {calls}, waits {waits}"
    assert sum(1 for w in waits if w <= MIN_WAIT) <= 1, f"the loop spins: waits {waits}"
    last = d._views["a"].published_at
    assert last is not None, "the first token is published"


def test_a_refused_first_rotation_backs_off_and_is_logged_once_per_try(never_published: Any,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """An issuer that authenticates with the policy's own token cannot mint its first one: the run says
    to bootstrap. The daemon's failure path takes it: one error per try, the next try after
    failure_backoff (doubling), rotator_consecutive_failures counting; never a try per pass."""
    d, clock, calls, engines = never_published
    engines["a"].fail = [NO_TOKEN] * 10
    caplog.set_level(logging.INFO, logger="rotator.daemon")
    start = clock.now()
    waits = drive(d, clock, 40)
    tries = calls.count("rotate a")
    failed = [r.getMessage() for r in caplog.records if "rotation failed" in r.getMessage()]
    elapsed = clock.now() - start
    # failure_backoff 1m doubling (75-100 % of it): 1m, 2m, 4m, 8m, 16m, 32m, 1h...
    assert 3 <= tries <= 8, f"{tries} tries in {elapsed}; waits {waits}"
    assert len(failed) == tries, "each try logged once"
    assert all("rotator bootstrap" in line and "no token is published yet" in line for line in failed), failed[0]
    assert sum(1 for w in waits if w <= MIN_WAIT) <= 1, f"the loop spins: waits {waits}"
    assert elapsed > timedelta(minutes=30), f"the tries back off: {elapsed} for 40 passes"
    value = d.metrics.registry.get_sample_value("rotator_consecutive_failures", {"policy": "a"})
    assert value == tries
