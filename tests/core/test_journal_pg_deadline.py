"""The PostgreSQL journal's watchdog (rotator/core/journal.py, _Watchdog): a server that stops answering
is cut off, while a long read-only transaction that keeps getting answers is not.

The real deadline is 2 x statement_timeout + 5 s (65 s); here it is scaled down to DEADLINE_S, and the
reads are made to outlast it by slowing down the client between statements (the per-event hashing of a
verification, or a sleep), as a chain of millions of events does at the real deadline."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rotator.core import audit_chain
from rotator.core.errors import JournalUnavailable
from rotator.core.journal import Journal, _Watchdog, open_journal, ts
from tests.faultproxy import FaultProxy
from tests.pg import via_proxy

DEADLINE_S = 0.6
#: how long the reads below take on the client's side, well past the deadline
SLOW_S = 3 * DEADLINE_S
EVENTS = 120
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _scaled(journal: Journal) -> Journal:
    """``journal`` with its watchdog's deadline scaled down (what 65 s is to a chain of millions)."""
    assert journal._watch is not None and journal._backend.abort is not None
    journal._watch.stop()
    journal._watch = _Watchdog(DEADLINE_S, journal._backend.abort)
    return journal


def _journal_with_events(url: str) -> Journal:
    journal = open_journal(url)
    with journal.transaction(durable=False):
        for i in range(EVENTS):
            journal.record_event(T0 + timedelta(seconds=i), f"p{i % 5}", None, "publish", "ok", {"n": str(i)})
    return _scaled(journal)


@pytest.fixture
def slow_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    """A verification reads the chain in pages of 10 events and takes SLOW_S over its hashing: many short
    statements, and a transaction far longer than the deadline."""
    link = audit_chain.link

    def slow_link(*args: Any, **kwargs: Any) -> str:
        time.sleep(SLOW_S / EVENTS)
        return link(*args, **kwargs)

    monkeypatch.setattr(audit_chain, "VERIFY_PAGE", 10)
    monkeypatch.setattr(audit_chain, "link", slow_link)


def test_a_verification_longer_than_the_deadline_finishes(pg_url: str, slow_walk: None) -> None:
    """Finding #3: the whole chain is verified in one read transaction, which the watchdog cut once it was
    older than the deadline: past ~3.8 M events `audit verify`, the report and every prune failed, for
    good (nothing pruned, so the chain only grew)."""
    journal = _journal_with_events(pg_url)
    started = time.monotonic()
    report = audit_chain.verify(journal)
    assert report.ok and report.checked == EVENTS, report
    assert time.monotonic() - started > 2 * DEADLINE_S, "the verification did not outlast the deadline"
    journal.close()


def test_a_prune_whose_verification_is_longer_than_the_deadline_prunes(
        pg_url: str, slow_walk: None, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = _journal_with_events(pg_url)
    cutoff = ts(T0 + timedelta(seconds=EVENTS // 2))
    result = audit_chain.prune(journal, cutoff, ts(T0 + timedelta(days=1)))
    assert result.events == EVENTS // 2 and not result.stopped, result
    monkeypatch.undo()
    assert audit_chain.verify(journal).ok
    journal.close()


def test_a_read_only_transaction_is_bounded_per_statement(pg_url: str) -> None:
    journal = _scaled(open_journal(pg_url))
    started = time.monotonic()
    with journal.audit_transaction(write=False) as (cur, _lock):
        while time.monotonic() - started < 3 * DEADLINE_S:
            assert cur.execute("SELECT COUNT(*) FROM events").fetchone() == (0,)
            time.sleep(DEADLINE_S / 3)
    journal.ping()  # the connection was never cut
    journal.close()


def test_a_write_transaction_is_still_bounded_as_a_whole(pg_url: str) -> None:
    """Its locks (the lease row, the audit head) hold the other replicas up: its length stays bounded,
    however short each statement of it is."""
    journal = _scaled(open_journal(pg_url))
    started = time.monotonic()
    with pytest.raises(JournalUnavailable), journal.transaction():
        while time.monotonic() - started < 10 * DEADLINE_S:
            journal.record_event(T0, "p", None, "publish", "ok", {})
            time.sleep(DEADLINE_S / 3)
    assert time.monotonic() - started < 5 * DEADLINE_S
    assert journal.events("p") == [], "rolled back"
    journal.close()


def test_a_snapshot_read_that_carries_deferred_writes_is_bounded_as_a_whole(pg_url: str) -> None:
    """A deferred write makes the transaction a writing one (no READ ONLY snapshot): bounded as a whole."""
    journal = _scaled(open_journal(pg_url))
    journal.defer(lambda: journal.record_event(T0, "p", None, "publish", "ok", {}))
    started = time.monotonic()
    with pytest.raises(JournalUnavailable), journal.audit_transaction(write=False) as (cur, _lock):
        while time.monotonic() - started < 10 * DEADLINE_S:
            cur.execute("SELECT 1").fetchone()
            time.sleep(DEADLINE_S / 3)
    assert time.monotonic() - started < 5 * DEADLINE_S
    journal.close()


def test_a_verification_whose_server_stops_answering_is_cut(pg_url: str, pg_proxy: FaultProxy,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The watchdog's reason to be: a statement_timeout cannot fire for a query the server never gets
    (a dead network path, a proxy that swallows bytes). Mid-verification the server's answers stop
    coming (they are held back far longer than the test): the statement waiting for one is cut at the
    deadline, as before."""
    journal = _journal_with_events(via_proxy(pg_url, pg_proxy))
    link = audit_chain.link
    hashed = [0]

    def link_then_hang(*args: Any, **kwargs: Any) -> str:
        hashed[0] += 1
        if hashed[0] == EVENTS // 2:  # the next page's answer never comes in time
            pg_proxy.latency = 60.0
        return link(*args, **kwargs)

    monkeypatch.setattr(audit_chain, "VERIFY_PAGE", 10)
    monkeypatch.setattr(audit_chain, "link", link_then_hang)
    started = time.monotonic()
    with pytest.raises(JournalUnavailable):
        audit_chain.verify(journal)
    assert time.monotonic() - started < DEADLINE_S + 5, "the hung statement was not cut at its deadline"
    assert hashed[0] == EVENTS // 2
    pg_proxy.latency = 0.0
    journal.close()


def test_a_read_only_statement_that_hangs_is_cut(pg_url: str, pg_proxy: FaultProxy) -> None:
    journal = _scaled(open_journal(via_proxy(pg_url, pg_proxy)))
    started = time.monotonic()
    with pytest.raises(JournalUnavailable), journal.audit_transaction(write=False) as (cur, _lock):
        cur.execute("SELECT COUNT(*) FROM events").fetchone()
        pg_proxy.latency = 60.0
        cur.execute("SELECT COUNT(*) FROM events").fetchone()
    assert time.monotonic() - started < DEADLINE_S + 5
    pg_proxy.latency = 0.0
    journal.ping()  # a new connection replaces the one cut
    journal.close()
