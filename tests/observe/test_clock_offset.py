"""Clock skew between replicas of a PostgreSQL journal went unseen: leases compare their expiry with
each replica's own clock, so a replica running more than lease_ttl / 2 ahead of another took that
one's live lease inside its side effect, and the holder only said it was overtaken by another
rotator. Each daemon now measures its clock against the database server's (at start and at every
sweep, one statement), exports rotator_clock_offset_seconds, warns past 1 s, and fails /readyz
past lease_ttl / 4 (rotator/core/clock_offset.py, Daemon._check_clock; docs/daemon.md, Clocks).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.core import clock_offset
from rotator.core.clock import FakeClock
from rotator.core.clock_offset import NOT_READY, OK, WARN, ClockOffset, level, measure
from rotator.core.journal import RunRecord, open_journal
from rotator.runners.daemon import Daemon
from tests.runners.test_daemon import POLICY, FakeEngine, Harness, InlineExecutor
from tests.runners.test_daemon import harness as harness  # noqa: F401 - the fixture

#: lease_ttl of the daemons below: readiness fails past a quarter of it
TTL = timedelta(minutes=2)
LIMIT_S = TTL.total_seconds() / 4
GAUGE = "rotator_clock_offset_seconds"


class SkewedClock(FakeClock):
    """A FakeClock that follows real time, ``skew`` off it: the clock of a host whose NTP is off
    (real time goes on while the daemon starts and the database answers)."""

    def __init__(self, skew: timedelta) -> None:
        super().__init__()
        self.skew = skew

    def now(self) -> datetime:
        return datetime.now(UTC) + self.skew

    def advance(self, delta: timedelta) -> None:
        self.skew += delta


def test_the_offset_is_the_servers_time_minus_this_clocks_in_one_statement(pg_url: str) -> None:
    journal = open_journal(pg_url)
    try:
        before = journal.stats.snapshot()
        ahead = measure(journal, SkewedClock(timedelta(seconds=300)))
        after = journal.stats.snapshot()
        in_sync = measure(journal, SkewedClock(timedelta(0)))
    finally:
        journal.close()
    assert ahead is not None and in_sync is not None
    assert ahead.offset_s == pytest.approx(-300, abs=0.5), "negative: this clock is ahead of the server's"
    assert abs(in_sync.offset_s) < 0.5
    assert 0 <= ahead.round_trip_s < 1
    assert ahead.describe().startswith("ahead of the journal server's clock by ")
    # one transaction around its one statement (BEGIN, SELECT, COMMIT), which commits nothing
    assert (after.transactions - before.transactions, after.statements - before.statements,
            after.commits - before.commits) == (1, 3, 0)


def test_an_sqlite_journal_has_no_server_clock_to_measure(tmp_path: Path) -> None:
    journal = open_journal(f"sqlite:///{tmp_path / 'j.db'}")
    try:
        before = journal.stats.snapshot().transactions
        assert measure(journal, SkewedClock(timedelta(hours=1))) is None
        assert journal.stats.snapshot().transactions == before
    finally:
        journal.close()


@pytest.mark.parametrize(("offset", "round_trip", "previous", "expected"), [
    (0.2, 0.01, OK, OK),
    (-1.2, 0.01, OK, WARN),  # either way
    (1.2, 0.5, OK, OK),  # 1.2 ± 0.25: not surely past 1 s
    (0.9, 0.5, WARN, WARN),  # 0.9 ± 0.25: not surely back within 1 s either
    (0.7, 0.5, WARN, OK),
    (-31, 0.01, OK, NOT_READY),  # past lease_ttl / 4 (30 s) at once
    (29.9, 0.4, NOT_READY, NOT_READY),
    (29.0, 0.4, NOT_READY, WARN),
    (0.1, 0.0, NOT_READY, OK),
])
def test_a_limit_is_crossed_only_beyond_the_uncertainty(offset: float, round_trip: float, previous: int,
                                                       expected: int) -> None:
    assert level(ClockOffset(offset, round_trip), 30.0, previous) == expected


def test_a_lease_ttl_shorter_than_4s_makes_the_readiness_limit_the_first(tmp_path: Path) -> None:
    limit = clock_offset.ready_limit_s(timedelta(seconds=2))
    assert limit == 0.5
    assert level(ClockOffset(-0.8, 0.0), limit, OK) == NOT_READY


@pytest.fixture
def pg_daemon(tmp_path: Path, pg_url: str) -> Iterator[Callable[[timedelta], Daemon]]:
    """A daemon on a PostgreSQL journal whose clock is ``skew`` off real time (the server's)."""
    made: list[Daemon] = []

    def make(skew: timedelta) -> Daemon:
        clock = SkewedClock(skew)
        config = tmp_path / "rotator.toml"
        config.write_text(f'[rotator]\njournal = "{pg_url}"\nlease_ttl = "2m"\n'
                          '[daemon]\naudit = { file = "audit.jsonl" }\n'
                          + POLICY.format(name="a", schedule="1h", extra=""))
        journal = open_journal(pg_url)
        try:  # published now: nothing is due
            now = clock.now()
            journal.begin_run(RunRecord("boot-a", "a", "done", "bootstrap", now, now, published_at=now))
        finally:
            journal.close()

        def factory(policy: Any, cfg: Any, jr: Any, listener: Any) -> FakeEngine:
            return FakeEngine(policy.name, jr, clock, [])

        d = Daemon(config, clock=clock, serve_http=False, engine_factory=factory, executor=InlineExecutor(),
                   handle_signals=False)
        made.append(d)
        d.start()
        return d

    yield make
    for d in made:
        d.shutdown()  # closes its journal


def _clock_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records
            if r.name == "rotator.daemon" and "journal server's" in r.getMessage()]


def test_a_replica_whose_clock_runs_ahead_past_a_quarter_of_the_lease_is_not_ready(
        pg_daemon: Callable[[timedelta], Daemon], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "rotator.daemon")
    skew = timedelta(seconds=LIMIT_S + 15)
    d = pg_daemon(skew)
    ready, checks = d.readiness()
    assert not ready
    clock = checks["clock"]
    assert clock["ok"] is False and clock["ready_within_s"] == LIMIT_S
    assert clock["offset_s"] == pytest.approx(-skew.total_seconds(), abs=0.5)
    assert "this host's clock is ahead of the journal server's clock by " in clock["error"]
    assert "lease_ttl / 4 (30s)" in clock["error"] and "NTP or chrony" in clock["error"]
    assert d.metrics.registry.get_sample_value(GAUGE) == pytest.approx(-skew.total_seconds(), abs=0.5)
    live, _ = d.liveness()
    assert live, "a restart does not fix a clock: liveness stays"
    [(levelno, message)] = _clock_lines(caplog)
    assert levelno == logging.ERROR
    assert "more than lease_ttl / 4 (30s of lease_ttl 2m)" in message and "/readyz fails" in message
    assert "NTP or chrony" in message and "docs/daemon.md, Clocks" in message

    d.tick(d.clock.now())  # the first sweep measures again: said once per crossing, not at every sweep
    assert len(_clock_lines(caplog)) == 1 and not d.readiness()[0]

    caplog.clear()
    d.clock.advance(-skew)  # chrony brought it back
    d._next_sweep = d.clock.now()
    d.tick(d.clock.now())
    ready, checks = d.readiness()
    assert ready and checks["clock"]["ok"] is True and "error" not in checks["clock"]
    offset = d.metrics.registry.get_sample_value(GAUGE)
    assert offset is not None and abs(offset) < 0.5  # 0.0 is a good reading: no `or` default
    [(levelno, message)] = _clock_lines(caplog)
    assert levelno == logging.INFO and "within 1s of the journal server's again" in message


def test_a_clock_off_by_more_than_a_second_warns_once_and_stays_ready(
        pg_daemon: Callable[[timedelta], Daemon], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "rotator.daemon")
    d = pg_daemon(timedelta(seconds=-3))
    ready, checks = d.readiness()
    assert ready and checks["clock"]["ok"] is True
    assert checks["clock"]["offset_s"] == pytest.approx(3, abs=0.5), "positive: this clock is behind"
    d._next_sweep = d.clock.now()
    d.tick(d.clock.now())
    [(levelno, message)] = _clock_lines(caplog)
    assert levelno == logging.WARNING and "this host's clock is behind the journal server's clock by " in message
    assert "more than 1s" in message and "NTP or chrony" in message


def test_a_clock_within_a_second_is_ready_and_quiet(pg_daemon: Callable[[timedelta], Daemon],
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "rotator.daemon")
    d = pg_daemon(timedelta(milliseconds=300))
    d.tick(d.clock.now())
    ready, checks = d.readiness()
    assert ready and checks["clock"]["ok"] is True
    assert d.metrics.registry.get_sample_value(GAUGE) == pytest.approx(-0.3, abs=0.2)
    assert _clock_lines(caplog) == []


def test_an_sqlite_daemon_exports_no_offset_and_is_ready(harness: Callable[..., Harness]) -> None:  # noqa: F811
    h = harness([("a", "1h", "")])
    h.tick()  # a sweep
    ready, checks = h.daemon.readiness()
    assert ready and "clock" not in checks
    assert h.daemon.metrics.registry.get_sample_value(GAUGE) is None
    text = h.daemon.metrics.exposition().decode()
    assert f"# TYPE {GAUGE} gauge" in text
    assert [line for line in text.splitlines() if line.startswith(GAUGE)] == [], "unknown is no sample, not 0"
