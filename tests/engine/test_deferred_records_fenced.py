"""Records deferred to the operation's next commit (the run published, a revocation done: Journal.defer)
are fenced by the lease they were made under, also when that commit is the lease's release after an
error: Engine._lease resets ``self._fence`` before it releases, so a record reading it then would write
without a fence, after another holder took the lease (invariant 7)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from rotator.core.journal import RevocationState, RunState, open_journal
from tests.engine.test_state_machine import GRACE, POLICY, World, rotate

LEASE_TTL = timedelta(seconds=2)


@dataclass
class TwoProcessWorld(World):
    #: the journal's URL, for the other process's journal object
    url: str = ""


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> TwoProcessWorld:
    world = TwoProcessWorld(tmp_path, url=f"sqlite:///{tmp_path / 'journal.db'}")
    if request.param == "postgresql":
        world.url = str(request.getfixturevalue("pg_url"))
        world.journal = open_journal(world.url)
    return world


def _take_lease_elsewhere(world: TwoProcessWorld) -> None:
    """Another rotator (a journal object of its own: this one's would run the deferred records in
    that transaction) takes the policy's lease, this one's having expired (a pause)."""
    world.clock.advance(LEASE_TTL * 5)
    open_journal(world.url).acquire_lease(POLICY, "engine-2", timedelta(minutes=1), world.clock.now())


def test_the_run_published_is_not_recorded_at_the_release_once_the_lease_is_lost(world: TwoProcessWorld) -> None:
    world.bootstrap()
    world.clock.advance(timedelta(days=1))
    engine = world.engine()
    engine.lease_ttl = LEASE_TTL

    def fail_after_publishing(step: str) -> None:
        if step == "published":  # every store holds the token; the record is deferred
            assert world.journal.has_deferred()
            _take_lease_elsewhere(world)
            raise RuntimeError("an error after the publish (simulated)")

    world.on_checkpoint = fail_after_publishing
    with pytest.raises(RuntimeError, match="simulated"):
        engine.rotate()
    world.on_checkpoint = None
    [run] = world.journal.open_runs(POLICY)
    assert run.state == RunState.VERIFIED, "a rotator that lost its lease changes no journal state"
    assert world.journal.revocations(POLICY, RevocationState.PENDING) == []
    # The lease's new holder (once it is free) rolls the run forward.
    world.clock.advance(timedelta(minutes=2))
    actions = world.engine().recover()
    assert any("rolled forward" in a for a in actions), actions
    world.check_invariants()


def test_a_revocation_done_is_not_recorded_at_the_release_once_the_lease_is_lost(world: TwoProcessWorld) -> None:
    world.bootstrap()
    first = rotate(world)
    old = first.old_token_id
    world.clock.advance(GRACE + timedelta(seconds=1))
    engine = world.engine()
    engine.lease_ttl = LEASE_TTL
    with pytest.raises(RuntimeError, match="simulated"), engine._lease("revoke"):
        assert engine._revoke_due_locked() == [f"token {old}: revoked"]
        assert world.journal.has_deferred(), "recorded at the operation's next commit"
        _take_lease_elsewhere(world)
        raise RuntimeError("an error after the revocation (simulated)")
    assert old not in world.active_ids()
    [rev] = world.journal.revocations(POLICY)
    assert rev.token_id == old and rev.state == RevocationState.PENDING, "not recorded under a lost lease"
    # The next pass (once the lease is free) finds the token revoked and records it.
    world.clock.advance(timedelta(minutes=2))
    assert world.engine().revoke_due() == [f"token {old}: revoked (already gone at the issuer)"]
    world.check_invariants(settled=True)
