"""A PostgreSQL journal's single-statement reads after the server ended an idle connection (rotator/core/journal.py,
Journal._new_tx and _Cursor._again).

Finding: after a server restart or a fail-over, the first single-statement read on each idle pooled connection failed
with JournalUnavailable instead of connecting again: the "connect again once" of a connection that waited idle only
wrapped BEGIN, and a transaction of one read runs no BEGIN. That read is the preflight (the first call of
Engine.rotate), open_runs (the first of revoke_due), confirm_lease's read, lease_fence and ping (/readyz), so a
restart of the server cost a waiting daemon a failed rotation, against docs/operations.md. Now such a read runs once
more on a new connection; never a write (its outcome is unknown), never after an error that left the connection
sound (a statement timeout), never when the watchdog cut it, and never on a connection made for this very call.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.core.errors import JournalUnavailable
from rotator.core.journal import LEASE_READ_FRESH_SECONDS, Journal, RunState, open_journal
from tests.core.test_journal_pg_connection import _end_session_of
from tests.engine.test_state_machine import POLICY, World

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TTL = timedelta(minutes=5)


@pytest.fixture
def journal(pg_url: str) -> Iterator[Journal]:
    journal = open_journal(pg_url)
    try:
        journal.acquire_lease(POLICY, "a", TTL, T0)
        yield journal
    finally:
        journal.close()


def _counting_connects(journal: Journal, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    connects: list[Any] = []
    real = journal._backend.connect

    def connect() -> Any:
        conn = real()
        connects.append(conn)
        return conn

    monkeypatch.setattr(journal, "_backend", dataclasses.replace(journal._backend, connect=connect))
    return connects


READS: dict[str, Callable[[Journal], object]] = {
    "preflight": lambda j: j.preflight(POLICY, T0),
    "lease_fence": lambda j: j.lease_fence(POLICY),
    "ping": lambda j: j.ping(),
    "open_runs": lambda j: j.open_runs(POLICY),
    # outside a transaction and with time left: one read (the test waits until the lease row its last commit read
    # is no longer fresh)
    "confirm_lease": lambda j: j.confirm_lease(POLICY, "a", 1, TTL, T0, "a side effect"),
}


@pytest.mark.parametrize("read", list(READS))
def test_a_read_on_a_connection_the_server_ended_while_it_waited_runs_once_more(
        journal: Journal, pg_url: str, monkeypatch: pytest.MonkeyPatch, read: str) -> None:  # fmt: skip
    before = journal._threads.state.conn
    _end_session_of(pg_url, before)
    time.sleep(2 * LEASE_READ_FRESH_SECONDS)
    connects = _counting_connects(journal, monkeypatch)
    rollbacks = journal.stats.rollbacks
    READS[read](journal)
    assert len(connects) == 1 and journal._threads.state.conn is connects[0] is not before
    assert journal.stats.rollbacks == rollbacks, "the read failed nothing"
    assert journal.lease_fence(POLICY) == 1


def test_a_write_is_never_run_again(journal: Journal, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether a write that met a broken connection landed is unknown: it fails as it is."""
    _end_session_of(pg_url, journal._threads.state.conn)
    connects = _counting_connects(journal, monkeypatch)
    with pytest.raises(JournalUnavailable), journal._tx(single=True) as cur:
        cur.execute("UPDATE leases SET holder = holder WHERE policy = ?", (POLICY,))
    assert connects == []


def test_a_read_that_failed_on_a_sound_connection_is_not_run_again(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A statement timeout leaves the connection usable: the server answered, it is no idle connection it ended."""
    journal = open_journal(pg_url + "%20-cstatement_timeout%3D200")
    try:
        journal.ping()
        connects = _counting_connects(journal, monkeypatch)
        statements = journal.stats.statements
        with pytest.raises(JournalUnavailable), journal._tx(single=True) as cur:
            cur.execute("SELECT pg_sleep(2)")
        assert connects == [] and journal.stats.statements == statements + 1
    finally:
        monkeypatch.undo()
        journal.close()


def test_a_read_the_watchdog_cut_is_not_run_again(
        journal: Journal, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The watchdog cuts a connection whose transaction outlived its deadline: that time is spent."""
    assert journal._watch is not None
    _end_session_of(pg_url, journal._threads.state.conn)
    monkeypatch.setattr(journal._watch, "fired", lambda _key: True)
    connects = _counting_connects(journal, monkeypatch)
    with pytest.raises(JournalUnavailable):
        journal.lease_fence(POLICY)
    assert connects == []


def test_a_new_connection_that_fails_its_first_read_is_not_made_again(
        journal: Journal, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Only a connection that waited since an earlier transaction is made anew: a new one that fails is an outage."""
    journal._drop_connection()
    connects = _counting_connects(journal, monkeypatch)
    real = journal._backend.connect

    def connect_and_end() -> Any:
        conn = real()
        _end_session_of(pg_url, conn)
        return conn

    monkeypatch.setattr(journal, "_backend", dataclasses.replace(journal._backend, connect=connect_and_end))
    with pytest.raises(JournalUnavailable):
        journal.lease_fence(POLICY)
    assert len(connects) == 1


def test_a_rotation_after_the_server_ended_every_idle_session_succeeds(pg_url: str, tmp_path: Path) -> None:
    """The reviewer's case: the engine's first call (the preflight) met the ended connection, and the rotation
    failed; the one after it succeeded."""
    world = World(tmp_path)
    world.journal.close()
    world.journal = open_journal(pg_url)
    try:
        world.bootstrap()
        world.clock.advance(timedelta(days=1))
        assert world.engine().rotate().state == RunState.PUBLISHED
        _end_session_of(pg_url, world.journal._threads.state.conn)
        world.clock.advance(timedelta(days=2))
        assert world.engine().rotate().state == RunState.PUBLISHED
        world.check_invariants()
    finally:
        world.journal.close()
