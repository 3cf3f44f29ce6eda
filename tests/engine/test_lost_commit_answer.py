"""A step's COMMIT that lands on PostgreSQL while its answer is lost (the connection breaks after the server committed).

Finding: the rollback put the run back in memory to the state before the step, so the discard that followed
(Engine._discard: its compare-and-set from that state) found the row moved and raised LeaseLost "overtaken by another
rotator ... written by another process", with the same fencing number for this run and now; the engine wrote a
false ``rotate``/``aborted`` event and the daemon counted an abort. Now the engine reads the run again after a
journal error (Journal.catch_up: only a row written under its own lease) and discards it from where the journal has
it: the candidate is revoked and the run closed at once, and the error is the journal's own. A compare-and-set that
still finds the row moved under the writer's own lease after such a COMMIT is a JournalError that says so
(Journal._write_run), not LeaseLost; without one (a stale copy of the run) it stays LeaseLost (tests/core/
test_fencing.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from rotator.core import journal as journal_module
from rotator.core.errors import JournalError, JournalUnavailable, LeaseLost
from rotator.core.journal import Journal, RunRecord, RunState, open_journal
from tests.engine.test_state_machine import POLICY, World


@pytest.fixture
def world(tmp_path: Path, pg_url: str) -> Iterator[World]:
    world = World(tmp_path)
    world.journal.close()
    world.journal = open_journal(pg_url)
    try:
        yield world
    finally:
        world.journal.close()


def _lose_the_answer_of_commit(monkeypatch: pytest.MonkeyPatch, state: str) -> dict[str, bool]:
    """The COMMIT of the transaction that moves a run to ``state`` reaches the server and commits; its answer is
    lost (the connection is cut after it), as in a server crash or a network cut right after the commit."""
    real = journal_module._Cursor.execute
    armed = {"on": False, "done": False}

    def execute(self: Any, sql: str, params: Any = ()) -> Any:
        if not armed["done"] and sql.startswith("UPDATE runs SET") and state in params:
            armed["on"] = True
        result = real(self, sql, params)
        if sql == "COMMIT" and armed["on"] and not armed["done"]:
            armed["done"] = True
            journal_module._cut_connection(self._conn)
            raise psycopg.OperationalError("server closed the connection unexpectedly (answer to COMMIT lost)")
        return result

    monkeypatch.setattr(journal_module._Cursor, "execute", execute)
    return armed


@pytest.mark.parametrize("state", [RunState.MINTING, RunState.MINTED, RunState.VERIFIED])
def test_a_step_whose_commit_answer_was_lost_is_no_lost_lease(
        world: World, monkeypatch: pytest.MonkeyPatch, state: RunState) -> None:  # fmt: skip
    world.bootstrap()
    old = set(world.held().values())
    world.clock.advance(timedelta(days=1))
    armed = _lose_the_answer_of_commit(monkeypatch, state)
    with pytest.raises(JournalError) as info:
        world.engine().rotate()
    monkeypatch.undo()
    assert armed["done"]
    assert not isinstance(info.value, LeaseLost), info.value
    assert isinstance(info.value, JournalUnavailable), "the error is the lost answer's, transient"
    events = [(e["step"], e["result"]) for e in world.journal.events(POLICY)]
    assert ("rotate", "aborted") not in events, events
    # The discard went on from the state the journal has: the candidate is revoked and the run closed.
    [run, _bootstrap] = world.journal.runs(POLICY)
    assert run.state in (RunState.FAILED, RunState.ABORTED), run
    assert ("revoke_new", "ok") in events
    assert set(world.held().values()) == old
    assert world.active_ids() == old, "the candidate is revoked"
    assert world.engine().recover() == []
    assert world.journal.open_runs(POLICY) == []
    world.check_invariants(settled=True)


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _planned(journal: Journal, fence: int) -> RunRecord:
    run = RunRecord(run_id="r1", policy=POLICY, state=RunState.PLANNED, kind="rotate", started_at=T0, updated_at=T0)
    journal.begin_run(run, fence=fence)
    return run


def test_a_compare_and_set_that_finds_the_row_moved_under_its_own_lease_says_so(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The journal's side, for any write that follows a lost answer without reading the run again: not LeaseLost."""
    journal = open_journal(pg_url)
    try:
        fence = journal.acquire_lease(POLICY, "a", timedelta(minutes=5), T0)
        run = _planned(journal, fence)
        assert not journal.catch_up(run, fence), "no COMMIT went unanswered"
        _lose_the_answer_of_commit(monkeypatch, RunState.MINTING)
        with pytest.raises(JournalUnavailable):
            journal.update_run(run, fence=fence, state=RunState.MINTING)
        monkeypatch.undo()
        assert run.state == RunState.PLANNED, "the rollback put the record back"
        with pytest.raises(JournalError) as info:
            journal.update_run(run, fence=fence, state=RunState.REVOKING_NEW, error="x")
        assert not isinstance(info.value, LeaseLost)
        assert "answer was lost" in str(info.value) and "rotator recover" in info.value.hint
        assert journal.get_run("r1").state == RunState.MINTING  # type: ignore[union-attr]
        # catch_up takes the row this lease wrote, and the write goes on from it
        assert journal.catch_up(run, fence) and run.state == RunState.MINTING
        journal.update_run(run, fence=fence, state=RunState.REVOKING_NEW, error="x")
        assert journal.get_run("r1").state == RunState.REVOKING_NEW  # type: ignore[union-attr]
    finally:
        journal.close()


def test_a_row_moved_under_another_lease_is_still_a_lost_lease(pg_url: str) -> None:
    journal = open_journal(pg_url)
    try:
        fence = journal.acquire_lease(POLICY, "a", timedelta(minutes=5), T0)
        run = _planned(journal, fence)
        taken = journal.acquire_lease(POLICY, "b", timedelta(minutes=5), T0 + timedelta(minutes=10))
        other = journal.get_run("r1")
        assert other is not None
        journal.update_run(other, fence=taken, state=RunState.ABORTED)
        assert not journal.catch_up(run, fence), "another holder's row is never taken"
        with pytest.raises(LeaseLost):
            journal.update_run(run, fence=fence, state=RunState.MINTING)
    finally:
        journal.close()
