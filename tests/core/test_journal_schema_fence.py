"""A process that opened the journal stops writing it once a newer rotator upgraded its schema.

A rolling upgrade (the Helm chart's PostgreSQL default: 2 replicas, maxSurge 1, maxUnavailable 0)
starts one new replica, whose open migrates the shared journal, while the old replicas run on. The
newer-schema refusal was made at open only: the old replicas stayed ready (Journal.ping read the
version and never compared it) and went on taking leases and writing runs without the new columns.
Now their readiness fails and every lease take is refused before it writes anything, checked by the
statements that take the lease (a steady rotation's statement count is unchanged: test_journal_commits).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.core.errors import JournalError, LeaseBusy, TransientError
from rotator.core.journal import _MIGRATIONS, Journal, RunRecord, RunState, open_journal
from tests.core.test_audit_chain import raw
from tests.engine.test_state_machine import POLICY, World, rotate

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(minutes=15)
SCHEMA_VERSION = len(_MIGRATIONS)  # (journal.SCHEMA_VERSION)
NEWER = SCHEMA_VERSION + 1
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
