"""A store write sent by a holder killed (-9) before its answer, still on its way to the store (held by
a proxy or load balancer, queued at a busy Vault), on SQLite and PostgreSQL.

The recovery that takes the lease over, from a holder found dead on this host or from one whose lease
expired elsewhere, rolls the VERIFIED run back and revokes its candidate. It must first move every
store still at the version the run planned to write over (Engine._fence_stale_publishes): a dead
process writes nothing new, but a request it sent can still land, and its compare-and-set would match
the planned version. Landing, it would put the revoked candidate in one store while the other keeps
the old token: the stores disagree and every later rotation stops (invariant 1).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.core.contracts import TokenRecord
from rotator.core.errors import ConflictError
from rotator.core.journal import RunState
from tests.engine.test_dead_holder_fencing import VersionedStore, _dead_holder, _killed, _world
from tests.engine.test_state_machine import POLICY, rotate


class ServerQueue:
    """The server's side: write requests it received but has not carried out yet."""

    def __init__(self) -> None:
        self.queued: list[tuple[VersionedStore, TokenRecord, str | None]] = []

    def apply(self) -> list[Exception | str]:
        """Carry the queued writes out now: each one's new version, or what refused it."""
        outcomes: list[Exception | str] = []
        for store, record, expected in self.queued:
            try:
                outcomes.append(str(store.publish(record, expected)))
            except ConflictError as exc:
                outcomes.append(exc)
        self.queued.clear()
        return outcomes


class InFlightStore:
    """A store whose publish sends the request (queued at the server), then the process is killed before
    the answer."""

    def __init__(self, inner: VersionedStore, server: ServerQueue) -> None:
        self.inner, self.server = inner, server

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def publish(self, record: TokenRecord, expected_version: str | None) -> str:
        self.server.queued.append((self.inner, record, expected_version))
        raise SystemExit("kill -9 while the store write is in flight")


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'journal.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.mark.parametrize("holder", ["dead here", "expired elsewhere"])
def test_a_killed_holders_write_still_in_flight_never_lands_after_recovery_revoked_its_candidate(
        tmp_path: Path, journal_url: str, holder: str) -> None:
    world = _world(tmp_path, journal_url)
    before = world.held()
    server = ServerQueue()
    stores = world.stores
    assert isinstance(stores["a"], VersionedStore)
    name = _dead_holder() if holder == "dead here" else "elsewhere:1:cccc:0:"
    killed = _killed(world, journal_url, name, [("a", InFlightStore(stores["a"], server)), ("b", stores["b"])],
                     lease_ttl=timedelta(seconds=30))
    world.clock.advance(timedelta(days=1))
    with pytest.raises(SystemExit):
        killed.rotate()
    [run] = world.journal.open_runs(POLICY)
    assert run.state == RunState.VERIFIED and len(server.queued) == 1
    candidate = run.new_token_id
    versions = {n: store.versions() for n, store in stores.items()}
    if holder != "dead here":  # the lease of a holder that cannot be judged must expire first
        world.clock.advance(timedelta(seconds=31))

    actions = world.engine("host-b:2:bbbb:0:").recover()

    assert any("rolled back" in a for a in actions), actions
    assert candidate not in world.active_ids(), "recovery revoked the candidate"
    assert not world.journal.open_runs(POLICY)
    assert {n: store.versions() for n, store in stores.items()} == {
        n: count + 1 for n, count in versions.items()}, "each store moved past the planned version"
    [outcome] = server.apply()  # the request the killed process sent is carried out only now
    assert isinstance(outcome, ConflictError), f"the queued write landed (version {outcome})"
    assert world.held() == before
    world.check_invariants(settled=True)
    # and the policy rotates on: the stores agree on the previous token
    rotate(world)
    world.check_invariants()
