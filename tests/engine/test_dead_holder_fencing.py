"""Recovery of a VERIFIED run after a take-over from a holder found dead (Engine._fence_stale_publishes),
on SQLite and PostgreSQL.

Before the candidate of a VERIFIED run is revoked, recovery writes every store still at the version
the run planned to write over again, so that a publish of the run's still under way (its process
only paused, past its lease) fails its compare-and-set instead of putting a revoked token in the
store. That write is not skipped after a take-over from a holder found dead: neither when the dead
holder only wrote the run last (a recovery whose pass failed notes its error on the run under its own
lease), nor when it verified the run (a write it sent before it was killed can still land:
tests/engine/test_dead_holder_inflight_write.py).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.core import audit_chain
from rotator.core.contracts import StoreState, TokenRecord
from rotator.core.engine import Engine, _boot_id, _pid_namespace
from rotator.core.errors import ConflictError, LeaseLost, TransientError
from rotator.core.journal import RunState, open_journal
from rotator.core.retry import RetryPolicy
from rotator.testing import MemoryStore
from rotator.testing.memory import _Version
from tests.engine.test_state_machine import POLICY, Crash, World


class VersionedStore(MemoryStore):
    """A MemoryStore where every write is a new version, the same record too (as Vault KV v2 keeps one
    per write): recovery can move it past the version a paused write expects."""

    def _publish(self, record: TokenRecord, expected_version: str | None) -> str:
        with self.backend.lock:
            versions = self.backend.secrets.setdefault(self.path, [])
            current = str(len(versions)) if versions else None
            if current != expected_version:
                raise ConflictError(f"{self.location}: compare-and-set lost: expected version {expected_version}, "
                                    f"the secret is at version {current}")
            versions.append(_Version(record.payload(), managed=True))
            return str(len(versions))


class PausingStore:
    """A store whose first publish stops after the engine's lease check, before the write (a process
    paused by SIGSTOP, a GC pause, a slow disk), until ``go`` is set."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.entered, self.go, self.paused = inner, threading.Event(), threading.Event(), False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def publish(self, record: TokenRecord, expected_version: str | None) -> str:
        if not self.paused:
            self.paused = True
            self.entered.set()
            self.go.wait(60)
        return str(self.inner.publish(record, expected_version))


class UnreadableStore:
    """A store whose reads fail for a while (a connection reset)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def read_current(self) -> StoreState:
        raise TransientError("store: connection reset (simulated)")


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'journal.db'}"
    return str(request.getfixturevalue("pg_url"))


def _world(tmp_path: Path, journal_url: str) -> World:
    world = World(tmp_path)
    world.stores = {name: VersionedStore(name) for name in ("a", "b")}
    world.journal = open_journal(journal_url)
    world.bootstrap()
    return world


def _dead_holder() -> str:
    """A holder name of this host, boot and PID namespace whose process is gone (Engine._holder_is_dead)."""
    if not _boot_id():
        pytest.skip("no boot id here: a holder's process cannot be judged dead")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return f"{audit_chain.instance_name()}:{child.pid}:abcd1234:{_pid_namespace()}:{_boot_id()}"


def _killed(world: World, journal_url: str, holder: str, stores: list[tuple[str, Any]], **options: Any) -> Engine:
    """An engine on a journal object of its own whose lease is never released (a process killed -9)."""
    journal = open_journal(journal_url)
    journal.release_lease = lambda *args, **kwargs: None  # type: ignore[method-assign]
    return Engine(world.policy, journal, issuer=world.issuer, stores=stores, clock=world.clock, holder=holder,
                  retry=RetryPolicy(1, 0.01, 0.02), **options)


def test_a_dead_holder_that_only_noted_an_error_on_the_run_does_not_stop_recovery_moving_the_stores(
        tmp_path: Path, journal_url: str) -> None:
    """A pauses inside its publish (after its lease check) past its lease. D takes the expired lease;
    its recovery cannot read the stores and notes the error on the run under its lease; D dies holding
    it. B takes the lease over from dead D. The run was verified by A, alive: B moves the stores on
    before it revokes A's candidate, so A's compare-and-set, resumed, fails (invariants 1 and 7)."""
    world = _world(tmp_path, journal_url)
    before = world.held()
    paused = PausingStore(world.stores["a"])
    engine_a = Engine(world.policy, world.journal, issuer=world.issuer,
                      stores=[("a", paused), ("b", world.stores["b"])], clock=world.clock,
                      lease_ttl=timedelta(seconds=2), holder="host-a:1:aaaa:0:", retry=RetryPolicy(1, 0.01, 0.02))
    engine_d = _killed(world, journal_url, _dead_holder(),
                       [(name, UnreadableStore(store)) for name, store in world.stores.items()],
                       lease_ttl=timedelta(seconds=30))
    world.clock.advance(timedelta(days=1))
    outcome: dict[str, Any] = {}

    def rotate() -> None:
        try:
            outcome["result"] = engine_a.rotate()
        except BaseException as exc:  # noqa: BLE001 - read below
            outcome["error"] = exc

    thread = threading.Thread(target=rotate)
    thread.start()
    try:
        assert paused.entered.wait(60), outcome
        [run] = world.journal.open_runs(POLICY)
        assert run.state == RunState.VERIFIED
        candidate = run.new_token_id
        world.clock.advance(timedelta(seconds=10))  # past A's lease
        with pytest.raises(TransientError):
            engine_d.recover()
        [run] = world.journal.open_runs(POLICY)
        # the precondition: the dead holder wrote the run last (its error note), under the lease B takes over
        assert run.error is not None and run.error.startswith("recovery failed")
        assert run.fence == world.journal.lease_fence(POLICY) == run.verified_fence + 1
        versions = {name: store.versions() for name, store in world.stores.items()}
        actions = world.engine("host-b:2:bbbb:0:").recover()
        assert any("rolled back" in a for a in actions), actions
        assert candidate not in world.active_ids()
        assert {name: store.versions() for name, store in world.stores.items()} == {
            name: count + 1 for name, count in versions.items()}, "each store moved past the planned version"
    finally:
        paused.go.set()
        thread.join(60)
    assert isinstance(outcome.get("error"), LeaseLost), outcome
    assert world.held() == before, "A's stale write must not land"
    world.check_invariants(settled=True)


@pytest.mark.parametrize("holder", ["dead here", "expired elsewhere"])
def test_recovery_moves_the_stores_on_whether_the_holder_that_verified_the_run_is_dead_or_may_be_paused(
        tmp_path: Path, journal_url: str, holder: str) -> None:
    """Killed after VERIFIED. A holder found dead here verified the run: a store write it sent may still
    land, so the stores are moved on as for a holder that cannot be judged (another host) whose lease
    expired, which may be only paused."""
    world = _world(tmp_path, journal_url)
    before = world.held()
    name = _dead_holder() if holder == "dead here" else "elsewhere:1:cccc:0:"

    def crash(step: str) -> None:
        if step == "verified":
            raise Crash(step)

    killed = _killed(world, journal_url, name, list(world.stores.items()), checkpoint=crash,
                     lease_ttl=timedelta(seconds=30))
    world.clock.advance(timedelta(days=1))
    with pytest.raises(Crash):
        killed.rotate()
    [run] = world.journal.open_runs(POLICY)
    assert run.state == RunState.VERIFIED and run.verified_fence == run.fence == world.journal.lease_fence(POLICY)
    versions = {n: store.versions() for n, store in world.stores.items()}
    if holder != "dead here":  # the lease of a holder that cannot be judged must expire first
        world.clock.advance(timedelta(seconds=31))
    actions = world.engine().recover()
    assert any("rolled back" in a for a in actions), actions
    assert run.new_token_id not in world.active_ids()
    assert {n: store.versions() for n, store in world.stores.items()} == {
        n: count + 1 for n, count in versions.items()}
    assert world.held() == before
    world.check_invariants(settled=True)
