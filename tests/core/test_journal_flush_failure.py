"""After a flush of the SQLite journal's WAL failed (durability lost, sticky until the journal is opened
again), every write transaction is refused, also one no flush follows (``durable=False``): the caller
acts on a commit that returns, so no side effect may follow one (Journal._refuse_if_durability_lost)."""

from __future__ import annotations

import errno
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator.core import group_sync
from rotator.core.errors import JournalError
from rotator.core.journal import Journal, RunRecord, RunState, open_journal
from tests.engine.test_state_machine import GRACE, POLICY, World, rotate

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def _lose_durability(journal: Journal, monkeypatch: pytest.MonkeyPatch) -> JournalError:
    """One fdatasync of the WAL fails (EIO) under a durable commit; the disk answers again afterwards.
    The error of that commit."""
    broken = [True]

    def failing(fd: int) -> None:
        if broken[0]:
            raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(group_sync, "_datasync", failing)
    with pytest.raises(JournalError, match="could not make it durable") as caught:
        journal.record_event(NOW, POLICY, None, "probe", "ok", {})
    broken[0] = False
    assert journal.durability_lost() is not None
    return caught.value


def test_a_rotation_after_a_failed_flush_revokes_no_due_token_and_fails_with_the_durability_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path)
    old = world.bootstrap()
    rotate(world)  # the bootstrapped token's revocation is pending, due after grace
    world.clock.advance(GRACE + timedelta(days=1))
    [due] = world.journal.due_revocations(world.clock.now(), POLICY)
    assert due.token_id == old and old in world.active_ids()
    _lose_durability(world.journal, monkeypatch)

    with pytest.raises(JournalError, match="could not make it durable") as caught:
        world.engine().rotate()

    assert "opened again" in caught.value.hint and "rotator recover" in caught.value.hint
    assert old in world.active_ids(), "a due token was revoked after durability was lost"
    assert not world.journal.open_runs(POLICY), "the run's first commit was refused, not made"
    # the journal opened again (a daemon's restart) does the rotation, due revocation first
    world.journal.close()
    world.journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")
    rotate(world)
    assert old not in world.active_ids()
    world.check_invariants()


def test_a_write_no_flush_follows_is_refused_and_rolled_back_once_durability_is_lost(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    journal = open_journal(url)
    flush_failed = _lose_durability(journal, monkeypatch)
    before = journal.stats.snapshot()

    with pytest.raises(JournalError, match="could not make it durable") as caught, journal.transaction(durable=False):
        fence = journal.acquire_lease("p", "A", timedelta(minutes=1), NOW)
        journal.begin_run(RunRecord("r1", "p", RunState.PLANNED, "rotate", NOW, NOW), fence=fence)

    assert str(caught.value) == str(flush_failed) and caught.value.hint == flush_failed.hint
    assert journal.stats.commits == before.commits and journal.stats.rollbacks == before.rollbacks + 1
    assert journal.open_runs("p") == [], "reads still answer (status, audit), and nothing was written"
    journal.close()
    again = open_journal(url)
    assert again.open_runs("p") == [] and again.lease_fence("p") is None, "nothing of it reached the file"
    again.close()
