"""A process that opened the journal stops writing it once a newer rotator upgraded its schema.

A rolling upgrade (the Helm chart's PostgreSQL default: 2 replicas, maxSurge 1, maxUnavailable 0)
starts one new replica, whose open migrates the shared journal, while the old replicas run on. The
newer-schema refusal was made at open only: the old replicas stayed ready (Journal.ping read the
version and never compared it) and went on taking leases and writing runs without the new columns.
Now their readiness fails and every lease take is refused before it writes anything, checked by the
statements that take the lease (a steady rotation's statement count is unchanged: test_journal_commits).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.core import audit_chain
from rotator.core.errors import JournalError, JournalSchemaNewer, LeaseBusy, TransientError
from rotator.core.journal import _MIGRATIONS, Journal, RunRecord, RunState, open_journal, ts
from tests.core.test_audit_chain import raw
from tests.engine.test_state_machine import POLICY, World, rotate

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(minutes=15)
SCHEMA_VERSION = len(_MIGRATIONS)  # (journal.SCHEMA_VERSION)
NEWER = SCHEMA_VERSION + 1
#: the advisory lock every version's migration takes on PostgreSQL (journal._PG_MIGRATION_KEY)
MIGRATION_LOCK = 7306180
REFUSED = (rf"the journal was upgraded to schema {NEWER} by a newer rotator; this process \(schema "
           rf"{SCHEMA_VERSION}\) stops writing it: upgrade or restart it")


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'j.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def old(journal_url: str) -> Iterator[Journal]:
    """The journal as a process of this version opened it, before any newer rotator came."""
    journal = open_journal(journal_url)
    try:
        yield journal
    finally:
        journal.close()


def _upgrade_by_a_newer_rotator(url: str) -> None:
    """What a newer rotator's migration leaves, from another connection: its version row."""
    with raw(url) as sql:
        sql(f"INSERT INTO schema_version (version) VALUES ({NEWER})")


def _leases(url: str) -> list[tuple[Any, ...]]:
    with raw(url) as sql:
        return sorted(sql("SELECT policy, holder, fence, expires_at FROM leases"))


def _run(run_id: str, policy: str) -> RunRecord:
    return RunRecord(run_id=run_id, policy=policy, state=RunState.PLANNED, kind="rotate", started_at=T0,
                     updated_at=T0)


def test_the_readiness_ping_fails_once_a_newer_rotator_upgraded_the_journal(old: Journal, journal_url: str) -> None:
    old.ping()  # this version's own schema: ready

    _upgrade_by_a_newer_rotator(journal_url)

    with pytest.raises(JournalError, match=REFUSED) as err:
        old.ping()
    assert not isinstance(err.value, TransientError), "not transient: only a newer rotator can use this journal"
    assert err.value.hint is not None and "rollout" in err.value.hint
    with pytest.raises(JournalError, match=REFUSED):
        old.ping()  # and stays failed


def test_no_lease_is_taken_once_a_newer_rotator_upgraded_the_journal(old: Journal, journal_url: str) -> None:
    # "released": a policy whose lease row was released (a steady rotation's take, unchanged=...);
    # "mine": a lease this process holds (a renewal); "dead": a dead holder's (take_over_lease)
    released = old.acquire_lease("released", "old-holder", TTL, T0)
    old.release_lease("released", "old-holder", released)
    old.acquire_lease("mine", "old-holder", TTL, T0)
    old.acquire_lease("dead", "dead-holder", TTL, T0)
    [seen] = [row for row in _leases(journal_url) if row[0] == "released"]
    before = _leases(journal_url)

    _upgrade_by_a_newer_rotator(journal_url)

    later = T0 + timedelta(minutes=1)
    for take in (
        lambda: old.acquire_lease("released", "old-holder", TTL, later, unchanged=(seen[1], seen[2], seen[3])),
        lambda: old.acquire_lease("released", "old-holder", TTL, later),
        lambda: old.acquire_lease("mine", "old-holder", TTL, later),
        lambda: old.acquire_lease("never-leased", "old-holder", TTL, later),
        lambda: old.take_over_lease("dead", "dead-holder", "old-holder", TTL, later),
    ):
        with pytest.raises(JournalError, match=REFUSED):
            take()
    with pytest.raises(JournalError, match=REFUSED), old.transaction():  # a run planned with its lease
        fence = old.acquire_lease("released", "old-holder", TTL, later, unchanged=(seen[1], seen[2], seen[3]))
        old.begin_run(_run("r1", "released"), fence=fence)
    assert _leases(journal_url) == before, "nothing written"
    assert old.open_runs("released") == []


def test_another_holders_live_lease_is_still_busy_on_this_versions_schema(old: Journal, journal_url: str) -> None:
    old.acquire_lease("p", "other", TTL, T0)
    with pytest.raises(LeaseBusy):
        old.acquire_lease("p", "me", TTL, T0)
    assert old.acquire_lease("q", "me", TTL, T0) == 1
    assert old.acquire_lease("q", "me", TTL, T0) == 1, "renewed"
    old.release_lease("q", "me", 1)
    [row] = [r for r in _leases(journal_url) if r[0] == "q"]
    assert old.acquire_lease("q", "me", TTL, T0, unchanged=(row[1], row[2], row[3])) == 2
    assert old.take_over_lease("p", "other", "me", TTL, T0) == 2
    old.ping()


# ------------------------------------------------------------------------ the engine: no side effect
@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    try:
        yield w
    finally:
        w.journal.close()


@pytest.mark.parametrize("emergency", [False, True], ids=["steady", "lease-first"])
def test_a_rotation_stops_before_any_side_effect_once_the_journal_was_upgraded(world: World, emergency: bool) -> None:
    """The steady rotation takes its lease with its planned run (after the preflight and PLAN's reads);
    an emergency rotation takes it first. Either way: no mint, no store write, no run, no lease."""
    world.bootstrap()
    rotate(world)
    world.clock.advance(timedelta(days=2))
    url = f"sqlite:///{world.tmp_path / 'journal.db'}"
    tokens, held, runs = world.issuer.tokens.all(), world.held(), world.journal.runs(POLICY)
    leases = _leases(url)
    _upgrade_by_a_newer_rotator(url)

    with pytest.raises(JournalError, match=REFUSED):
        world.engine().rotate(revoke_previous_now=emergency, reason="test" if emergency else "")

    assert world.issuer.tokens.all() == tokens, "nothing minted, nothing revoked (the old token is due)"
    assert world.held() == held, "no store written"
    assert [r.run_id for r in world.journal.runs(POLICY)] == [r.run_id for r in runs], "no run journaled"
    assert _leases(url) == leases, "no lease taken"


# ------------------------------------------------------------------ one error class; the prune refuses too
def test_every_refusal_of_a_newer_schema_is_a_journal_schema_newer(old: Journal, journal_url: str) -> None:
    """The readiness ping, the lease takes and the open all refuse with one class, carrying both versions: a
    caller (the daemon) tells it from a journal outage without matching the message."""
    old.acquire_lease("dead", "dead-holder", TTL, T0)
    _upgrade_by_a_newer_rotator(journal_url)

    for refused in (old.ping, lambda: old.acquire_lease("p", "old-holder", TTL, T0),
                    lambda: old.take_over_lease("dead", "dead-holder", "old-holder", TTL, T0)):
        with pytest.raises(JournalSchemaNewer, match=REFUSED) as err:
            refused()
        assert (err.value.version, err.value.supported) == (NEWER, SCHEMA_VERSION)
    with pytest.raises(JournalSchemaNewer, match="newer than this rotator") as at_open:
        open_journal(journal_url).close()
    assert (at_open.value.version, at_open.value.supported) == (NEWER, SCHEMA_VERSION)


def _old_history(journal: Journal) -> None:
    """Events older than any keep_history: what a prune deletes."""
    for i in range(6):
        journal.record_event(T0 - timedelta(days=800, minutes=-i), "p", f"run-{i // 2}", "plan", "ok", {"i": i})


def _events(url: str) -> list[tuple[Any, ...]]:
    with raw(url) as sql:
        return sorted(sql("SELECT seq, at, step FROM events"))


def _prune(journal: Journal) -> audit_chain.PruneResult:
    return audit_chain.prune(journal, ts(T0 - timedelta(days=400)), ts(T0))


def test_a_prune_deletes_nothing_once_a_newer_rotator_upgraded_the_journal(old: Journal, journal_url: str) -> None:
    """The daemon's daily prune (and `rotator prune` run by an old binary on an open journal) deletes by this
    code's rules: refused inside its own write transaction, before its first delete."""
    _old_history(old)
    before = _events(journal_url)
    _upgrade_by_a_newer_rotator(journal_url)

    with pytest.raises(JournalSchemaNewer, match=REFUSED):
        _prune(old)

    assert _events(journal_url) == before, "nothing pruned, no checkpoint or prune event written"
    with raw(journal_url) as sql:
        assert sql("SELECT COUNT(*) FROM audit_checkpoints")[0][0] == 0


def test_a_prune_waits_for_a_migration_under_way_and_then_refuses(pg_url: str) -> None:
    """PostgreSQL reads each statement at its own snapshot: a version read before a migration commits
    would let the prune's deletes run after it. The prune's write transaction waits for the migration's
    lock, then reads the version the migration committed."""
    import psycopg

    journal = open_journal(pg_url)
    try:
        _old_history(journal)
        before = _events(pg_url)
        outcome: list[BaseException | audit_chain.PruneResult] = []

        def prune() -> None:
            try:
                outcome.append(_prune(journal))
            except BaseException as exc:
                outcome.append(exc)

        with psycopg.connect(pg_url, autocommit=True) as migrating:
            migrating.execute("BEGIN")
            migrating.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")  # a newer rotator's migration
            migrating.execute(f"INSERT INTO schema_version (version) VALUES ({NEWER})")
            thread = threading.Thread(target=prune)
            thread.start()
            thread.join(timeout=1.0)
            assert thread.is_alive(), f"the prune did not wait for the migration under way: {outcome}"
            migrating.execute("COMMIT")
        thread.join(timeout=30)
        assert not thread.is_alive()
        [refused] = outcome
        assert isinstance(refused, JournalSchemaNewer), refused
        assert _events(pg_url) == before
    finally:
        journal.close()
