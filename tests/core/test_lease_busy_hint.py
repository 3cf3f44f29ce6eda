"""A policy's lease: what LeaseBusy tells the person who meets it, and the isolation level the lease and
fencing reasoning relies on (PostgreSQL).

Findings: the busy hint ("wait for that run to finish or for its lease to expire") said neither when
the lease expires nor what to do about a holder that died on another host (its lease lives until
then: docs/operations.md's deletion is the way out). And the PostgreSQL backend took the server's
default_transaction_isolation: a database set to serializable ran the journal's write transactions
serializable, which the lease UPDATE's re-check and _FINISH_PUBLISHED do not expect.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from rotator.core.errors import LeaseBusy
from rotator.core.journal import Journal, Revocation, RunRecord, RunState, open_journal

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'j.db'}"
    return str(request.getfixturevalue("pg_url"))


# -- the busy hint ---------------------------------------------------------------------------------------
def test_a_busy_lease_says_when_it_expires_and_where_the_way_out_is(journal_url: str) -> None:
    a, b = open_journal(journal_url), open_journal(journal_url)
    try:
        a.acquire_lease("mgmt-prod", "A", timedelta(seconds=30), T0)
        with pytest.raises(LeaseBusy) as busy:
            b.acquire_lease("mgmt-prod", "B", timedelta(seconds=30), T0 + timedelta(seconds=1))
        with pytest.raises(LeaseBusy) as taken:  # take_over_lease of a holder that is not the one named
            b.take_over_lease("mgmt-prod", "C", "B", timedelta(seconds=30), T0 + timedelta(seconds=1))
    finally:
        a.close()
        b.close()
    for exc in (busy.value, taken.value):
        assert str(exc) == "policy 'mgmt-prod' is being rotated by A"  # unchanged: tests and people match it
        assert exc.expires_at == T0 + timedelta(seconds=30)
        assert "lease to expire at 2026-03-01T12:00:30Z" in exc.hint, exc.hint
        assert "`rotator recover mgmt-prod`" in exc.hint
        assert _named_section(exc.hint) == "A lease held by a dead process"


def test_the_named_section_of_the_operations_guide_deletes_the_lease() -> None:
    hint = LeaseBusy("p", "host:1:n::", T0).hint
    section = _section(OPERATIONS.read_text(), _named_section(hint))
    assert "DELETE FROM leases WHERE policy = " in section and "rotator recover" in section


def test_an_expiry_with_a_fraction_is_shown_at_the_next_second() -> None:
    """The lease is still live at the whole second its fraction would be cut to."""
    hint = LeaseBusy("p", "A", T0 + timedelta(seconds=30, microseconds=1)).hint
    assert "expire at 2026-03-01T12:00:31Z" in hint, hint


def test_a_busy_lease_of_unknown_expiry_still_points_the_way_out() -> None:
    """Callers that know no expiry (tests, the engine's fakes) leave it out."""
    busy = LeaseBusy("p", "A")
    assert busy.expires_at is None and str(busy) == "policy 'p' is being rotated by A"
    assert busy.hint.startswith("wait for that run to finish or for its lease to expire;")
    assert _named_section(busy.hint) == "A lease held by a dead process" and "`rotator recover p`" in busy.hint


def _named_section(hint: str) -> str:
    found = re.search(r'docs/operations\.md, "([^"]+)"', hint)
    assert found is not None, hint
    return found.group(1)


def _section(markdown: str, heading: str) -> str:
    """The text under ``### heading`` up to the next heading of any level."""
    found = re.search(rf"^#+ {re.escape(heading)}\n(.*?)(?=^#)", markdown, re.M | re.S)
    assert found is not None, f"docs/operations.md has no heading {heading!r}"
    return found.group(1)


# -- the isolation level (PostgreSQL) ----------------------------------------------------------------------
@pytest.fixture
def serializable_db_url(pg_base: str) -> Iterator[str]:
    """A journal URL on a database of its own whose default_transaction_isolation is serializable (as a
    DBA may set one)."""
    name = f"rotator_iso_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
        conn.execute(f"ALTER DATABASE {name} SET default_transaction_isolation = 'serializable'")
    try:
        yield f"{pg_base}{'&' if '?' in pg_base else '?'}dbname={name}"  # the query's dbname wins over the path's
    finally:
        with psycopg.connect(pg_base, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name}")


def test_a_serializable_database_still_runs_the_journal_read_committed(serializable_db_url: str) -> None:
    with psycopg.connect(serializable_db_url) as conn:  # the database's own default, as the test set it
        assert conn.execute("SHOW default_transaction_isolation").fetchone() == ("serializable",)
    journal = open_journal(serializable_db_url)
    try:
        with journal.transaction() as cur:  # a write transaction (BEGIN ... COMMIT)
            assert cur.execute("SHOW transaction_isolation").fetchone()[0] == "read committed"
        with journal._tx(single=True) as cur:  # a read of one statement, without BEGIN
            assert cur.execute("SHOW transaction_isolation").fetchone()[0] == "read committed"
        with journal._tx(snapshot=True) as cur:  # the audit chain's reads keep their one snapshot
            assert cur.execute("SHOW transaction_isolation").fetchone()[0] == "repeatable read"
        _rotate_once(journal)
    finally:
        journal.close()


def _rotate_once(journal: Journal) -> None:
    """The journal's part of a rotation (its writes fenced by the lease): lease, run, publish with a
    revocation, revoke, release."""
    fence = journal.acquire_lease("p", "A", timedelta(seconds=30), T0)
    run = RunRecord(run_id="r1", policy="p", state=RunState.PLANNED, kind="rotate", started_at=T0, updated_at=T0,
                    fence=fence)
    journal.begin_run(run)
    journal.update_run(run, state=RunState.MINTED, new_token_id="new")
    journal.publish_and_schedule(run, Revocation("p", "old", "r1", "superseded", T0 + timedelta(hours=1), "pending"),
                                 state=RunState.PUBLISHED, published_at=T0 + timedelta(minutes=1))
    due = journal.due_revocations(T0 + timedelta(hours=2), "p")
    assert [r.token_id for r in due] == ["old"]
    journal.update_revocation(due[0], state="done", done_at=T0 + timedelta(hours=2))
    journal.record_event(T0, "p", "r1", "mint", "ok", {"token_id": "new"})
    journal.release_lease("p", "A")
    got = journal.get_run("r1")
    assert got is not None and got.state == RunState.PUBLISHED
    assert journal.last_success("p") is not None and journal.lease_holder("p", T0) is None
