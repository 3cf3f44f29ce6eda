"""A published run is done only once every revocation it waits for has ended (Journal.finish_published_run),
on both backends. A rotation may schedule two: the replaced token and ``also``, the token the journal
published last when no store named it any more (Engine._publish_all); and a token current again keeps the
revocation row, with the run id, of the rotation that first replaced it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator.core.journal import Journal, Revocation, RevocationState, RunRecord, RunState, dismissal_note, open_journal

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DUE = T0 + timedelta(hours=1)


@pytest.fixture(params=["sqlite", "postgresql"])
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Journal:
    url = f"sqlite:///{tmp_path / 'j.db'}" if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    opened = open_journal(url)
    request.addfinalizer(opened.close)
    return opened


def _published(journal: Journal, run_id: str, old: str, new: str, *also: str) -> RunRecord:
    """A run that replaced ``old`` with ``new``, scheduled ``old``'s revocation and those of ``also``."""
    run = RunRecord(run_id, "p", RunState.PLANNED, "rotate", T0, T0, old_token_id=old)
    journal.begin_run(run)
    journal.update_run(run, state=RunState.VERIFIED, new_token_id=new)
    journal.publish_and_schedule(run, Revocation("p", old, run_id, "superseded", DUE, RevocationState.PENDING),
                                 state=RunState.PUBLISHED, published_at=T0)
    for token in also:
        journal.schedule_revocation(Revocation("p", token, run_id, "superseded", DUE, RevocationState.PENDING))
    return run


def _end(journal: Journal, token: str, state: str = RevocationState.DONE) -> bool:
    """What the engine does when a revocation ends: record it, then finish the run that scheduled it."""
    (rev,) = [r for r in journal.revocations("p") if r.token_id == token]
    if state == RevocationState.DISMISSED:
        journal.update_revocation(rev, state=RevocationState.FAILED, last_error="refused")
        journal.update_revocation(rev, state=state, done_at=DUE, last_error=dismissal_note("kept"))
    else:
        journal.update_revocation(rev, state=state, done_at=DUE if state == RevocationState.DONE else None)
    return journal.finish_published_run("p", rev.run_id, token, DUE)


def _state(journal: Journal, run_id: str) -> str | None:
    run = journal.get_run(run_id)
    return None if run is None else run.state


@pytest.mark.parametrize("first", ["tok-1", "tok-2"])
def test_a_run_with_two_revocations_is_done_when_the_second_ends(journal: Journal, first: str) -> None:
    """Finding #4: the first revocation to end moved the run to done, while the other token stayed valid."""
    _published(journal, "r3", "tok-1", "tok-3", "tok-2")
    second = "tok-2" if first == "tok-1" else "tok-1"
    assert _end(journal, first) is False
    assert _state(journal, "r3") == RunState.PUBLISHED, "a revocation of the run is still pending"
    assert _end(journal, second) is True
    run = journal.get_run("r3")
    assert run is not None and run.state == RunState.DONE and run.finished_at == DUE


def test_a_run_whose_other_revocation_gave_up_stays_published_until_it_is_dismissed(journal: Journal) -> None:
    _published(journal, "r3", "tok-1", "tok-3", "tok-2")
    assert _end(journal, "tok-2") is False
    (rev,) = journal.revocations("p", RevocationState.PENDING)
    journal.update_revocation(rev, state=RevocationState.FAILED, attempts=1, last_error="refused: not rotator's")
    assert _state(journal, "r3") == RunState.PUBLISHED, "tok-1 is still valid: its revocation failed"
    assert journal.last_success("p").run_id == "r3"  # type: ignore[union-attr]
    journal.update_revocation(journal.revocations("p", RevocationState.FAILED)[0], state=RevocationState.DISMISSED,
                              done_at=DUE, last_error=dismissal_note("a person keeps it"))
    assert journal.finish_published_run("p", "r3", "tok-1", DUE) is True
    assert _state(journal, "r3") == RunState.DONE


def test_a_run_with_one_revocation_is_done_when_it_ends(journal: Journal) -> None:
    _published(journal, "r1", "tok-0", "tok-1")
    assert _end(journal, "tok-0") is True
    assert _state(journal, "r1") == RunState.DONE


@pytest.mark.parametrize("dismiss", [False, True])
def test_a_run_waits_for_the_replaced_token_whose_row_an_earlier_run_scheduled(journal: Journal,
                                                                                dismiss: bool) -> None:
    """r0 replaced tok-x; tok-x was current again (an older version restored) and r3 replaced it once more,
    with tok-2 (the token r3 found no store naming). tok-x's row keeps r0's id. tok-2's revocation ends
    first: r3 still waits for tok-x, and both runs are done when tok-x's ends (done, or dismissed)."""
    _published(journal, "r0", "tok-x", "tok-1")
    _published(journal, "r3", "tok-x", "tok-3", "tok-2")
    (row,) = [r for r in journal.revocations("p") if r.token_id == "tok-x"]
    assert row.run_id == "r0", "the row of a token scheduled again keeps its first run's id"
    assert _end(journal, "tok-2") is False
    assert _state(journal, "r3") == RunState.PUBLISHED, "tok-x, which r3 replaced, is still pending"
    assert _end(journal, "tok-x", RevocationState.DISMISSED if dismiss else RevocationState.DONE) is True
    assert (_state(journal, "r0"), _state(journal, "r3")) == (RunState.DONE, RunState.DONE)


def test_a_run_of_another_policy_is_not_held_by_this_one_s_revocations(journal: Journal) -> None:
    _published(journal, "r1", "tok-1", "tok-2")
    journal.schedule_revocation(Revocation("q", "tok-1", "r1", "superseded", DUE, RevocationState.PENDING))
    assert _end(journal, "tok-1") is True
    assert _state(journal, "r1") == RunState.DONE


def test_the_check_reads_the_policy_s_unfinished_revocations_alone(tmp_path: Path) -> None:
    """The statement runs at every revocation: its subquery must search the (policy, state) index, not
    read every revocation of the journal (SQLite's plan)."""
    import sqlite3

    from rotator.core import journal as journal_module

    open_journal(f"sqlite:///{tmp_path / 'j.db'}").close()
    with sqlite3.connect(tmp_path / "j.db") as conn:
        params = [RunState.DONE, "x", None, "r1", "tok-1", "p", RunState.PUBLISHED, RevocationState.PENDING,
                  RevocationState.FAILED]
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {journal_module._FINISH_PUBLISHED}", params)]
    searches = [step for step in plan if step.startswith(("SEARCH", "SCAN"))]
    assert len(searches) == 2 and all(s.startswith("SEARCH") and "(policy=? AND state=?)" in s for s in searches), plan
