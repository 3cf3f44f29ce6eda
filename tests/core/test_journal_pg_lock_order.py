"""The order in which a PostgreSQL journal's write transactions lock a policy's lease row and the audit chain's head,
and what a deadlock or a serialization failure is reported as (rotator/core/journal.py, rotator/core/engine.py).

Finding: the run published, a write deferred to the operation's next commit (Engine._publish_all), wrote its
"publish ok" events first (locking the chain's head row) and then checked its fence (locking the lease row), while a
replica taking the policy's lease (Engine._new_run) locks the lease row first and then the head for its "plan"
event. A holder paused past its expired lease that released it while another replica took it: deadlock detected,
reported as JournalUnavailable with a "did not answer in time" hint and never tried again. Now every transaction
takes the lease row before the head; a deadlock or serialization failure has a hint of its own, keeps the
connection, and a journal call whose transaction is its own (the lease's release carrying the deferred writes, an
event, a lease taken) runs once more.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator.core.errors import JournalUnavailable, LeaseBusy, LeaseLost
from rotator.core.journal import Journal, RunRecord, RunState, open_journal
from tests.engine.test_state_machine import POLICY, World

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TTL = timedelta(seconds=30)
#: how long a side waits for the other to be blocked on a row lock (PostgreSQL's deadlock_timeout is 1 s)
SETTLE_S = 1.5


def _outcome(fn: Callable[[], object], out: dict[str, str], side: str) -> None:
    try:
        fn()
        out[side] = "committed"
    except Exception as exc:
        out[side] = f"{type(exc).__name__}: {exc} | hint: {getattr(exc, 'hint', '')}"


@pytest.fixture
def world(tmp_path: Path, pg_url: str) -> Iterator[World]:
    world = World(tmp_path)
    world.journal.close()
    # The publishing holder's deadlock check waits long: in the other lock order, the replica taking the lease
    # (its own check after 1 s) would be the one the server rolls back, inside a step no callee can run again.
    world.journal = open_journal(pg_url + "%20-cdeadlock_timeout%3D30s")
    try:
        yield world
    finally:
        world.journal.close()


def test_the_deferred_publish_takes_the_lease_row_before_the_chain_head(world: World, pg_url: str) -> None:
    """The reviewer's two-thread case through the engine: holder A published, and its deferred record runs in its
    lease's release; replica B, whose clock is past A's lease, takes the lease row in its planning transaction
    first, then records its "plan" event. A waits for B's lease row holding nothing, and finds its lease lost."""
    world.bootstrap()
    world.clock.advance(timedelta(days=1))
    other = open_journal(pg_url)
    later = world.clock.now() + timedelta(hours=1)  # past A's lease
    b_has_the_lease, a_releases = threading.Event(), threading.Event()
    out: dict[str, str] = {}

    def replica_b() -> None:
        with other.transaction():
            other.acquire_lease(POLICY, "engine-b", TTL, later)
            b_has_the_lease.set()
            a_releases.wait(10)
            time.sleep(SETTLE_S)  # A's deferred record is under way (and, in the other order, holds the head)
            other.record_event(later, POLICY, "r2", "plan", "ok", {})

    def published(step: str) -> None:
        if step == "published":  # the record is deferred to the release
            assert world.journal.has_deferred()
            thread.start()
            assert b_has_the_lease.wait(10)
            a_releases.set()

    thread = threading.Thread(target=_outcome, args=(replica_b, out, "B"))
    world.on_checkpoint = published
    try:
        _outcome(world.engine("engine-a").rotate, out, "A")
        thread.join(30)
    finally:
        world.on_checkpoint = None
        other.close()
    assert not thread.is_alive()
    assert "JournalUnavailable" not in out["A"] + out["B"], out
    assert out["B"] == "committed", out
    assert out["A"].startswith("LeaseLost"), out
    [run, _bootstrap] = world.journal.runs(POLICY)
    assert run.state == RunState.VERIFIED, "the lost holder's record is not written; B's recovery rolls it forward"


@pytest.fixture
def journals(pg_url: str) -> Iterator[tuple[Journal, Journal, RunRecord, int]]:
    first, second = open_journal(pg_url), open_journal(pg_url)
    try:
        fence = first.acquire_lease(POLICY, "a", TTL, T0)
        run = RunRecord(run_id="r1", policy=POLICY, state=RunState.PLANNED, kind="rotate", started_at=T0,
                        updated_at=T0)
        first.begin_run(run, fence=fence)
        yield first, second, run, fence
    finally:
        first.close()
        second.close()


def _head_then_lease(journal: Journal, run: RunRecord, fence: int) -> Callable[[], None]:
    """A deferred write in the order no transaction of rotator's takes any more: the chain's head, then the lease."""

    def write() -> None:
        journal.record_event(T0, POLICY, run.run_id, "publish", "ok", {"store": "s"})
        journal.update_run(run, fence=fence, error="published")

    return write


def test_a_call_whose_transaction_the_server_rolled_back_for_a_deadlock_runs_once_more(
        journals: tuple[Journal, Journal, RunRecord, int]) -> None:  # fmt: skip
    """A's release carries a deferred write in the head-then-lease order and waits first, so the server rolls it
    back: the release, a transaction of its own, runs once more with its deferred write, and finds the lease lost."""
    a, b, run, fence = journals
    later = T0 + TTL + timedelta(seconds=1)
    b_has_the_lease = threading.Event()
    out: dict[str, str] = {}

    def replica_b() -> None:
        with b.transaction():
            b.acquire_lease(POLICY, "b", TTL, later)
            b_has_the_lease.set()
            time.sleep(SETTLE_S / 3)  # A takes the head and waits for the lease row first
            b.record_event(later, POLICY, "r2", "plan", "ok", {})

    thread = threading.Thread(target=_outcome, args=(replica_b, out, "B"))
    thread.start()
    assert b_has_the_lease.wait(10)
    a.defer(_head_then_lease(a, run, fence))
    _outcome(lambda: a.release_lease(POLICY, "a", fence), out, "A")
    thread.join(30)
    assert out["B"] == "committed", out
    assert out["A"].startswith(("LeaseLost", "LeaseBusy")), out
    assert run.state == RunState.PLANNED and run.error is None, "the rollbacks put the record back"
    assert [e["step"] for e in a.events(POLICY)] == ["plan"], "B's event alone: A's was rolled back"


def test_a_deadlock_inside_a_transaction_of_the_caller_is_reported_as_such(
        journals: tuple[Journal, Journal, RunRecord, int]) -> None:  # fmt: skip
    """B's planning transaction is the caller's (a step): not run again here, but the error says what happened, and
    the connection, which is sound, is kept."""
    a, b, run, fence = journals
    later = T0 + TTL + timedelta(seconds=1)
    a_has_the_head, b_has_the_lease = threading.Event(), threading.Event()
    out: dict[str, str] = {}
    errors: list[Exception] = []

    def holder_a() -> None:
        with a.transaction():
            a.record_event(later, POLICY, run.run_id, "publish", "ok", {"store": "s"})
            a_has_the_head.set()
            assert b_has_the_lease.wait(10)
            time.sleep(SETTLE_S / 3)  # B waits for the head first: B's deadlock check comes first
            a.update_run(run, fence=fence, error="published")

    thread = threading.Thread(target=_outcome, args=(holder_a, out, "A"))
    thread.start()
    assert a_has_the_head.wait(10)
    b.ping()
    connection = b._threads.state.conn
    try:
        with b.transaction():
            b.acquire_lease(POLICY, "b", TTL, later)
            b_has_the_lease.set()
            b.record_event(later, POLICY, "r2", "plan", "ok", {})
    except JournalUnavailable as exc:
        errors.append(exc)
    thread.join(30)
    assert out["A"] == "committed", out
    [error] = errors
    assert "deadlock detected" in str(error)
    assert "rolled this transaction back, so nothing of it was written" in error.hint
    assert "did not answer in time" not in error.hint
    assert b._threads.state.conn is connection, "a deadlock leaves the connection sound"
    with pytest.raises(LeaseBusy):  # nothing of B's planning transaction was kept: at T0, A's lease is live
        b.acquire_lease(POLICY, "b", TTL, T0)
    assert b.acquire_lease(POLICY, "b", TTL, later) == fence + 1
    with pytest.raises(LeaseLost):
        a.update_run(run, fence=fence, error="later")
