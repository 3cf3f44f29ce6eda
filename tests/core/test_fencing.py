"""Fencing (DESIGN invariant 7, issue 10 §1/§1b): a run that lost its lease causes no side effect
and writes no journal state; a run that died inside a mint stays open until its child must be gone.

Real processes: ``rotator`` subprocesses against OpenBao and the fake influxctl, with the journal
on SQLite and on PostgreSQL. A process is paused with SIGSTOP at an engine checkpoint
(``ROTATOR_TEST_STOP_AT``), its 2 s lease expires, another process (another ``ROTATOR_INSTANCE``)
recovers or rotates the same policy, then the paused one gets SIGCONT.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.core import journal as journal_module
from rotator.core.errors import LeaseBusy, LeaseLost
from rotator.core.journal import Revocation, RevocationState, RunRecord, RunState, open_journal
from tests.harness import Scenario, check_invariants, let_mint_window_pass, make_scenario, settle

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEASE_TTL_S = 2


# ------------------------------------------------------------------------------ helpers
def _scenario(tmp_path: Path, openbao: Any, fake: Any, journal_url: str | None = None, **kw: Any) -> Scenario:
    sc = make_scenario(tmp_path, openbao, fake.state, grace_s=1, journal_url=journal_url, **kw)
    sc.config.write_text(sc.config.read_text().replace('lease_ttl = "30s"', f'lease_ttl = "{LEASE_TTL_S}s"'))
    return sc


def _env(sc: Scenario, instance: str, stop_at: str | None = None) -> dict[str, str]:
    env = sc.env()
    env["ROTATOR_INSTANCE"] = instance
    if stop_at:
        env["ROTATOR_TEST_STOP_AT"] = stop_at
    return env


def _start(sc: Scenario, instance: str, stop_at: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(sc.argv(*args), env=_env(sc, instance, stop_at), cwd=sc.dir, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def _run(sc: Scenario, instance: str, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(sc.argv(*args), env=_env(sc, instance), cwd=sc.dir, text=True, capture_output=True,
                          timeout=90, stdin=subprocess.DEVNULL)
    sc.outputs += [proc.stdout, proc.stderr]
    return proc


def _wait_stopped(proc: subprocess.Popen[str], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"rotator ended before {what}: {proc.communicate()}"
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "T":
            return
        time.sleep(0.05)
    raise AssertionError(f"rotator never stopped at {what}")


def _resume(sc: Scenario, proc: subprocess.Popen[str]) -> tuple[int, str]:
    os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=90)
    sc.outputs += [out, err]
    return proc.returncode, err


def _wait_past_lease(sc: Scenario, margin_s: float) -> None:
    """Sleep until the policy's lease (A's, whose holder is paused and renews nothing) has expired, and
    ``margin_s`` more: A renewed it last at a checkpoint before it stopped, so a fixed lease_ttl after
    the stop also slept the time between that checkpoint and the stop."""
    sql = f"SELECT expires_at FROM leases WHERE policy = {'%s' if sc.journal_url else '?'}"
    (expires,) = sc.journal_rows(sql, sc.policy)[0]
    expires = expires if isinstance(expires, datetime) else datetime.fromisoformat(expires.replace("Z", "+00:00"))
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + margin_s)


def _aborted_events(sc: Scenario) -> list[tuple[Any, ...]]:
    return sc.journal_rows("SELECT step, detail FROM events WHERE result = 'aborted' AND step IN "
                           "('rotate', 'recover', 'revoke', 'bootstrap')")


#: the fake influxctl commands that change a token at the issuer
_ISSUER_SIDE_EFFECTS = ("management create", "management revoke")


def _issuer_side_effects_since(sc: Scenario, calls_before: int) -> list[tuple[str, str]]:
    """The token-changing commands the fake influxctl received after its first ``calls_before`` calls,
    each with its last argument (a revoke's token id)."""
    return [(c["command"], c["argv"][-1]) for c in sc.fake.calls()[calls_before:]
            if c["command"] in _ISSUER_SIDE_EFFECTS]


# ------------------------------------------------------------------------------ the reproduction
def test_paused_after_verify_never_publishes_a_token_recovery_revoked(tmp_path: Path, openbao: Any,
                                                                      fake_influxctl: Any) -> None:
    """Issue 10 §1, as reported: A paused after VERIFY past its lease; B recovers (revokes A's
    candidate X); A resumes. Before fencing A printed "published X" and exited 0, leaving the
    revoked X current in Vault."""
    sc = _scenario(tmp_path, openbao, fake_influxctl)
    a = _start(sc, "a", "verified", "rotate", sc.policy)
    _wait_stopped(a, "the verified checkpoint")
    candidate = sc.journal_rows("SELECT new_token_id FROM runs WHERE state = 'verified'")[0][0]
    _wait_past_lease(sc, 1)
    b = _run(sc, "b", "recover")
    assert b.returncode == 0, b.stderr
    assert f"rolled back, unpublished token {candidate} revoked" in b.stdout
    code, err = _resume(sc, a)
    assert code == 1, err
    assert "overtaken by another rotator" in err
    assert sc.current()["token_id"] == sc.bootstrap_id, "A published after losing its lease"
    assert [v["token_id"] for v in sc.versions()].count(candidate) == 0
    assert any(step == "rotate" for step, _ in _aborted_events(sc)), "no rotate/aborted audit event"
    assert sc.journal_rows("SELECT state FROM runs WHERE new_token_id = ?" if not sc.journal_url else
                           "SELECT state FROM runs WHERE new_token_id = %s", candidate) == [("failed",)]
    check_invariants(sc)
    settle(sc, check_invariants)


# ------------------------------------------------------------------------------ the stall matrix
BOUNDARIES = [
    "planned", "minting", "minted", "verified", "publishing", "publish:primary", "published:primary",
    "published", "revoking",
]  # fmt: skip
#: A paused here has a side effect or a journal write left when it resumes: it must stop (exit 1).
MUST_ABORT = set(BOUNDARIES) - {"published"}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("other", ["recover", "rotate"])
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_pause_at_step_boundary_while_another_process_acts(
    boundary: str, other: str, backend: str, tmp_path: Path, openbao: Any, fake_influxctl: Any,
    request: pytest.FixtureRequest,
) -> None:
    journal_url = str(request.getfixturevalue("pg_url")) if backend == "postgresql" else None
    sc = _scenario(tmp_path, openbao, fake_influxctl, journal_url=journal_url)
    if boundary == "revoking":  # a pending revocation, due: A pauses just before revoking it
        assert _run(sc, "a", "rotate", sc.policy).returncode == 0
        time.sleep(sc.grace_s + 0.2)
        a = _start(sc, "a", boundary, "revoke-expired")
    else:
        a = _start(sc, "a", boundary, "rotate", sc.policy)
    _wait_stopped(a, boundary)
    # The one side effect A may still have after it lost its lease: a run that lost it before VERIFIED
    # revokes the candidate it minted itself, never published (Engine._revoke_own_mint).
    own_revokes = {("management revoke", token_id) for (token_id,) in
                   sc.journal_rows("SELECT new_token_id FROM runs WHERE state = 'minted'")}
    _wait_past_lease(sc, 0.5)
    b = _run(sc, "b", other, *([sc.policy] if other == "rotate" else []))
    assert b.returncode == 0, (boundary, other, b.stdout, b.stderr)
    current_after_b = sc.current()["token_id"]
    calls_before = len(sc.fake.calls())  # A alone runs from here until it exits
    code, err = _resume(sc, a)
    if boundary in MUST_ABORT:
        assert code == 1, (boundary, other, code, err)
        assert "overtaken by another rotator" in err, err
        assert _aborted_events(sc), "a lost lease must be an audit event"
        # The outcome above holds whether A's side effect was refused or went through and only its
        # journal write was: the issuer's record of calls tells them apart.
        unfenced = [call for call in _issuer_side_effects_since(sc, calls_before) if call not in own_revokes]
        assert unfenced == [], (boundary, other, "A changed a token after it lost its lease")
    else:
        assert code in (0, 1), (code, err)
    # A wrote nothing to any store after B: what B left current is still current.
    assert sc.current()["token_id"] == current_after_b, (boundary, other)
    check_invariants(sc)  # 1: nothing revoked is current; 2-4
    let_mint_window_pass(sc)  # A paused before its mint: recovery keeps that run open for the mint window
    proc = _run(sc, "b", "recover")
    assert proc.returncode == 0, proc.stderr
    check_invariants(sc)
    settle(sc, check_invariants)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_revocation_dismissed_while_its_pass_is_paused_is_never_revoked_by_that_pass(
    backend: str, tmp_path: Path, openbao: Any, fake_influxctl: Any, request: pytest.FixtureRequest,
) -> None:
    """A (``revoke-expired --retry-failed``) pauses just before revoking a failed revocation's token,
    past its lease; B dismisses that revocation (a person decided the token stays valid). A, resumed,
    still finds the token valid at the issuer: only the lease check before its revoke stops it. In the
    matrix above B has revoked the token already, so A never reaches that check."""
    journal_url = str(request.getfixturevalue("pg_url")) if backend == "postgresql" else None
    sc = _scenario(tmp_path, openbao, fake_influxctl, journal_url=journal_url)
    assert _run(sc, "a", "rotate", sc.policy).returncode == 0
    time.sleep(sc.grace_s + 0.2)
    # Only a revocation that gave up can be dismissed: stand in for the rounds that failed.
    journal = open_journal(journal_url or f"sqlite:///{sc.journal_path}")
    try:
        (rev,) = journal.revocations(sc.policy)
        assert rev.token_id == sc.bootstrap_id
        journal.update_revocation(rev, state=RevocationState.FAILED, last_error="the issuer refused it")
    finally:
        journal.close()
    a = _start(sc, "a", "revoking", "revoke-expired", "--retry-failed", sc.policy)
    _wait_stopped(a, "revoking")
    _wait_past_lease(sc, 0.5)
    b = _run(sc, "b", "revoke-expired", "--dismiss", sc.bootstrap_id, "--reason", "team X still uses it", sc.policy)
    assert b.returncode == 0, (b.stdout, b.stderr)
    calls_before = len(sc.fake.calls())
    code, err = _resume(sc, a)
    assert code == 1, (code, err)
    assert "overtaken by another rotator" in err, err
    assert any(step == "revoke" for step, _ in _aborted_events(sc)), "no revoke/aborted audit event"
    token = sc.fake.token_by_id(sc.bootstrap_id)
    assert token is not None
    assert token["revoked_at"] is None, "the dismissed token was revoked"
    assert sc.fake.problem(sc.bootstrap_value) is None, "the dismissed token must stay valid"
    assert _issuer_side_effects_since(sc, calls_before) == [], "A revoked after it lost its lease"
    assert sc.journal_rows("SELECT state FROM revocations") == [("dismissed",)]
    check_invariants(sc)


# ------------------------------------------------------------------------------ §1b: a child that outlives rotator
def test_child_that_mints_after_rotator_died_is_found_by_later_recoveries(tmp_path: Path, openbao: Any,
                                                                         fake_influxctl: Any) -> None:
    """Issue 10 §1b: `management create` takes 2 s; the rotator process alone is SIGKILLed 1.5 s in;
    an immediate recover must not close the run as "none found"; the child then mints; later
    recoveries find and revoke the tagged token; once the window passed the run is closed."""
    sc = _scenario(tmp_path, openbao, fake_influxctl)
    marker = tmp_path / "create-started"
    sc.fake.add_fault("management create", "pause", seconds=2, marker=marker)
    proc = subprocess.Popen(sc.argv("rotate", sc.policy), env=_env(sc, "a"), cwd=sc.dir, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    time.sleep(1.5)
    os.kill(proc.pid, signal.SIGKILL)  # the rotator process only: its influxctl child lives on
    proc.communicate(timeout=10)

    first = _run(sc, "a", "recover")
    assert first.returncode == 0, first.stderr
    assert "none found" not in first.stdout
    assert "died inside a mint" in first.stdout, first.stdout
    status = json.loads(_run(sc, "a", "status", "--output", "json").stdout)
    assert status[0]["open_runs"] == 1, status

    def tagged_live() -> list[str]:
        return [t["id"] for t in sc.fake.tokens() if t["description"].startswith(f"rotator:{sc.policy}:")
                and not t["revoked_at"]]

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
            t["description"].startswith(f"rotator:{sc.policy}:") for t in sc.fake.tokens()):
        time.sleep(0.1)
    # If the child was killed with rotator (parent-death signal), nothing was minted: also fine.
    # A child that escaped that (another OS, a wrapper that detaches) mints late: stand in for it.
    (run_id,) = sc.journal_rows("SELECT run_id FROM runs WHERE kind = 'rotate'")[0]
    _value, late_id = sc.fake.add_token(description=f"rotator:{sc.policy}:{run_id}")
    revoke = _run(sc, "a", "revoke-expired")  # searches the tag again while the window is open
    assert revoke.returncode == 0, revoke.stderr
    assert tagged_live() == [], "the child's token must be revoked by the next pass"
    assert sc.fake.token_by_id(late_id)["revoked_at"], "revoke-expired found the late token by its tag"
    assert sc.journal_rows("SELECT state FROM runs WHERE kind = 'rotate'") == [("revoking_new",)]
    let_mint_window_pass(sc)
    last = _run(sc, "a", "recover")
    assert last.returncode == 0, last.stderr
    assert sc.journal_rows("SELECT state FROM runs WHERE kind = 'rotate'") == [("failed",)]
    check_invariants(sc)
    assert sc.current()["token_id"] == sc.bootstrap_id


# ------------------------------------------------------------------------------ unit: CAS and fences
@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'j.db'}"
    return str(request.getfixturevalue("pg_url"))


def test_run_states_only_move_forward() -> None:
    path = RunState.PATH
    for i, old in enumerate(path):
        for new in path[i + 1:]:
            assert RunState.can_move(old, new)
        for new in path[:i]:
            assert not RunState.can_move(old, new), (old, new)
    assert not RunState.can_move(RunState.REVOKING_NEW, RunState.VERIFIED)
    assert not RunState.can_move(RunState.REVOKING_NEW, RunState.PUBLISHED)
    assert not RunState.can_move(RunState.PUBLISHED, RunState.REVOKING_NEW)
    assert RunState.can_move(RunState.PUBLISHING, RunState.REVOKING_NEW)
    for final in RunState.FINAL:
        assert not any(RunState.can_move(final, s) for s in (*RunState.PATH, *RunState.DISCARD))
    assert not RevocationState.can_move("done", "pending")
    assert not RevocationState.can_move("failed", "pending")
    assert RevocationState.can_move("pending", "done")


def test_fenced_writes_refuse_a_stale_fence_and_change_nothing(journal_url: str) -> None:
    a, b = open_journal(journal_url), open_journal(journal_url)
    fence_a = a.acquire_lease("p", "A", timedelta(seconds=2), T0)
    run = RunRecord("r1", "p", RunState.PLANNED, "rotate", T0, T0)
    a.begin_run(run, fence=fence_a)
    a.update_run(run, fence=fence_a, state=RunState.MINTED, new_token_id="x")
    fence_b = b.acquire_lease("p", "B", timedelta(seconds=30), T0 + timedelta(seconds=3))  # A's expired
    assert fence_b == fence_a + 1
    theirs = b.get_run("r1")
    assert theirs is not None
    b.update_run(theirs, fence=fence_b, state=RunState.REVOKING_NEW, error="recovered")
    with pytest.raises(LeaseLost):
        a.update_run(run, fence=fence_a, state=RunState.VERIFIED)
    assert run.state == RunState.MINTED, "a refused write leaves the caller's record alone"
    with pytest.raises(LeaseLost):
        a.confirm_lease("p", "A", fence_a, timedelta(seconds=2), T0 + timedelta(seconds=4), "publish")
    with pytest.raises(LeaseLost):
        a.begin_run(RunRecord("r2", "p", RunState.PLANNED, "rotate", T0, T0), fence=fence_a)
    with pytest.raises(LeaseLost):
        a.schedule_revocation(Revocation("p", "old", "r1", "superseded", T0, "pending"), fence=fence_a)
    stored = b.get_run("r1")
    assert stored is not None and stored.state == RunState.REVOKING_NEW and stored.fence == fence_b
    assert b.get_run("r2") is None and b.revocations("p") == []
    # Compare-and-set even without a lease change: B's copy is stale once B itself moved it on.
    b.update_run(theirs, fence=fence_b, state=RunState.FAILED)
    stale = dataclasses.replace(theirs, state=RunState.REVOKING_NEW)
    with pytest.raises(LeaseLost):
        b.update_run(stale, fence=fence_b, error="late")
    with pytest.raises(ValueError, match="never moves"):
        b.update_run(theirs, fence=fence_b, state=RunState.VERIFIED)
    a.close()
    b.close()


def test_fencing_number_survives_release_and_only_grows(journal_url: str) -> None:
    j = open_journal(journal_url)
    first = j.acquire_lease("p", "A", timedelta(seconds=30), T0)
    j.release_lease("p", "A", first)
    assert j.lease_holder("p", T0) is None
    second = j.acquire_lease("p", "B", timedelta(seconds=30), T0)
    assert second > first
    j.release_lease("p", "A", first)  # a stale release changes nothing
    assert j.lease_holder("p", T0) == "B"
    with pytest.raises(LeaseLost):
        j.confirm_lease("p", "A", first, timedelta(seconds=30), T0, "revoke")
    j.confirm_lease("p", "B", second, timedelta(seconds=30), T0 + timedelta(seconds=20), "revoke")  # renews
    assert j.lease_holder("p", T0 + timedelta(seconds=45)) == "B"
    j.close()


def test_revocation_rows_are_compare_and_set(journal_url: str) -> None:
    j = open_journal(journal_url)
    fence = j.acquire_lease("p", "A", timedelta(seconds=30), T0)
    j.schedule_revocation(Revocation("p", "old", "r1", "superseded", T0, "pending"), fence=fence)
    mine, theirs = j.revocations("p")[0], j.revocations("p")[0]
    j.update_revocation(theirs, fence=fence, state="done", done_at=T0)
    with pytest.raises(LeaseLost):
        j.update_revocation(mine, fence=fence, attempts=1, last_error="late")
    with pytest.raises(ValueError, match="never moves"):
        j.update_revocation(theirs, fence=fence, state="pending")
    assert j.revocations("p")[0].state == "done"
    j.close()


def test_a_lease_taken_on_condition_is_refused_once_its_row_changed(journal_url: str) -> None:
    """Engine.rotate takes the lease with its planned run only if the lease row is still the one its
    preflight read: a renewal, a release or a take-over since then refuses it (LeaseBusy)."""
    journal = open_journal(journal_url)
    ttl = timedelta(seconds=1)
    fence_x = journal.acquire_lease("p", "X", ttl, T0)
    later = T0 + timedelta(seconds=2)  # X's lease has expired: free to take
    seen = journal.preflight("p", later)
    assert seen.lease is not None and seen.fence_after("A", later) == fence_x + 1
    assert seen.fence_after("B", T0) is None, "a live lease of another holder cannot be taken"
    journal.confirm_lease("p", "X", fence_x, ttl, later, "a slow holder renews its expired lease")
    with pytest.raises(LeaseBusy):
        journal.acquire_lease("p", "A", ttl, later + ttl * 2, unchanged=seen.lease)
    journal.release_lease("p", "X", fence_x)
    with pytest.raises(LeaseBusy):
        journal.acquire_lease("p", "A", ttl, later, unchanged=seen.lease)
    assert journal.lease_fence("p") == fence_x, "refused: nothing changed"
    seen = journal.preflight("p", later)
    assert journal.acquire_lease("p", "A", ttl, later, unchanged=seen.lease) == seen.fence_after("A", later)
    journal.close()


def test_a_first_lease_starts_above_the_runs_fences_and_later_ones_update_the_row(journal_url: str) -> None:
    """acquire_lease updates the lease row; only a policy without one (its first lease, or a row
    lost) inserts it, numbered above every fence its runs carry."""
    journal = open_journal(journal_url)
    ttl = timedelta(seconds=30)
    fence = journal.acquire_lease("p", "A", ttl, T0)
    journal.begin_run(RunRecord("r1", "p", RunState.DONE, "rotate", T0, T0), fence=fence)
    with journal._tx(immediate=True) as cur:
        cur.execute("UPDATE runs SET fence = 41 WHERE run_id = 'r1'")
        cur.execute("DELETE FROM leases WHERE policy = 'p'")
    assert journal.acquire_lease("p", "B", ttl, T0) == 42, "no row: the first fence is above the runs'"
    assert journal.acquire_lease("p", "B", ttl, T0 + timedelta(seconds=1)) == 42, "the holder extends its lease"
    with pytest.raises(LeaseBusy):
        journal.acquire_lease("p", "C", ttl, T0 + timedelta(seconds=2))
    assert (journal.lease_holder("p", T0 + timedelta(seconds=2)), journal.lease_fence("p")) == ("B", 42)
    assert journal.acquire_lease("p", "C", ttl, T0 + timedelta(seconds=40)) == 43, "an expired lease is taken over"
    journal.close()


def test_a_lease_taken_on_condition_knows_its_fence_without_reading_it(journal_url: str) -> None:
    """acquire_lease(unchanged=...) works out the fencing number from the row the preflight read (the
    UPDATE matched exactly that row): the same holder keeps its number, another one gets the next;
    the fenced writes that follow in the transaction check it against the row."""
    journal = open_journal(journal_url)
    ttl = timedelta(seconds=1)
    fence_a = journal.acquire_lease("p", "A", ttl, T0)
    seen = journal.preflight("p", T0)
    with journal.transaction():
        assert journal.acquire_lease("p", "A", ttl, T0, unchanged=seen.lease) == fence_a, "A extends its lease"
        journal.begin_run(RunRecord("r1", "p", RunState.PLANNED, "rotate", T0, T0), fence=fence_a)
    later = T0 + timedelta(seconds=5)
    seen = journal.preflight("p", later)
    statements = journal.stats.statements
    with journal.transaction():
        assert journal.acquire_lease("p", "B", ttl, later, unchanged=seen.lease) == fence_a + 1, "B takes it over"
        journal.begin_run(RunRecord("r2", "p", RunState.PLANNED, "rotate", later, later), fence=fence_a + 1)
    assert journal.stats.statements - statements == 4, "BEGIN, the lease's UPDATE, the run's INSERT, COMMIT"
    with pytest.raises(LeaseLost):
        journal.begin_run(RunRecord("r3", "p", RunState.PLANNED, "rotate", later, later), fence=fence_a)
    assert (journal.lease_holder("p", later), journal.lease_fence("p")) == ("B", fence_a + 1)
    assert [r.run_id for r in journal.runs("p", limit=0)] == ["r2", "r1"]
    journal.close()


def test_the_preflight_reads_in_one_statement_what_the_single_reads_return(journal_url: str) -> None:
    """Journal.preflight's one statement (a UNION ALL of the lease, open runs, due revocations, the
    runs that minted their tokens and the last success, in a run's columns) gives back every column
    as the separate reads do, on both backends; so does Journal.policy_state's."""
    journal = open_journal(journal_url)
    fence = journal.acquire_lease("p", "A", timedelta(seconds=30), T0)
    done = RunRecord("r-old", "p", RunState.DONE, "rotate", T0, T0, old_token_id="t0", new_token_id="t1",
                     new_expires_at=T0 + timedelta(days=9), published_at=T0, finished_at=T0,
                     planned_versions={"vault": "3"}, published_versions={"vault": "4"}, error="earlier failure",
                     mint_started_at=T0)
    journal.begin_run(done, fence=fence)
    published = RunRecord("r-pub", "p", RunState.PUBLISHED, "rotate", T0 + timedelta(hours=1), T0,
                          old_token_id="t1", new_token_id="t2", published_at=T0 + timedelta(hours=1))
    journal.begin_run(published, fence=fence)
    minting = RunRecord("r-open", "p", RunState.MINTING, "rotate", T0 + timedelta(hours=2), T0, old_token_id="t2",
                        mint_started_at=T0 + timedelta(hours=2))
    journal.begin_run(minting, fence=fence)
    journal.begin_run(RunRecord("r-other", "q", RunState.MINTING, "rotate", T0, T0), fence=None)
    journal.schedule_revocation(Revocation("p", "t1", "r-pub", "superseded", T0 + timedelta(minutes=5),
                                           RevocationState.PENDING, attempts=2, next_try_at=T0 + timedelta(minutes=9),
                                           last_error="issuer said 503"), fence=fence)
    journal.schedule_revocation(Revocation("p", "t0", "r-old", "superseded", T0, RevocationState.PENDING), fence=fence)
    journal.schedule_revocation(Revocation("p", "t9", "r-old", "discarded", T0 + timedelta(days=1),
                                           RevocationState.PENDING), fence=fence)  # not due yet
    now = T0 + timedelta(hours=3)
    seen = journal.preflight("p", now)
    assert seen.lease is not None and seen.lease[:2] == ("A", fence)
    assert seen.open_runs == journal.open_runs("p") and [r.run_id for r in seen.open_runs] == ["r-open"]
    assert seen.due == journal.due_revocations(now, "p")
    assert [(r.token_id, r.attempts, r.last_error) for r in seen.due] == [("t0", 0, None), ("t1", 2, "issuer said 503")]
    assert seen.claims == {token: journal.runs_with_token("p", token) for token in ("t0", "t1")}
    assert seen.claims["t1"] == [journal.get_run("r-old")]
    assert seen.last_success == journal.last_success_id("p") == "r-pub"
    last = journal.last_success("p")
    assert last is not None and seen.last_token_id == last.new_token_id == "t2"
    nobody = journal.preflight("nobody", now)
    assert (nobody.lease, nobody.open_runs, nobody.due, nobody.last_success, nobody.last_token_id) == (
        None, [], [], None, None)
    # The daemon's read after a job (Journal.policy_state), built the same way.
    journal.update_revocation(journal.due_revocations(now, "p")[0], state=RevocationState.FAILED,
                              last_error="gave up")
    state = journal.policy_state("p")
    assert state.last_success == journal.last_success("p") and state.last_success.run_id == "r-pub"
    assert state.open_runs == journal.open_runs("p")
    assert state.unfinished == journal.unfinished_revocations("p")
    assert [(r.token_id, r.state) for r in state.unfinished] == [("t0", "failed"), ("t1", "pending"), ("t9", "pending")]
    assert journal.policy_state("nobody") == (None, [], [])
    journal.close()


def test_one_read_of_the_lease_row_serves_a_transaction_and_follows_its_own_writes(journal_url: str) -> None:
    """Inside a write transaction the lease row is read (locked) once, for every fence check and lease
    confirmation in it; a renewal or a release by the same transaction is what later checks see."""
    journal = open_journal(journal_url)
    ttl = timedelta(seconds=30)
    fence = journal.acquire_lease("p", "A", ttl, T0)
    statements = journal.stats.statements
    with journal.transaction():
        journal.begin_run(RunRecord("r1", "p", RunState.PLANNED, "rotate", T0, T0), fence=fence)
        journal.confirm_lease("p", "A", fence, ttl, T0 + timedelta(seconds=20), "renews: less than half is left")
        journal.confirm_lease("p", "A", fence, ttl, T0 + timedelta(seconds=21), "the renewal seen: no write")
    # BEGIN, the lease read, the run's INSERT, the renewal's UPDATE, COMMIT
    assert journal.stats.statements - statements == 5
    assert journal.lease_holder("p", T0 + timedelta(seconds=49)) == "A", "renewed at 20 s for 30 s"
    with pytest.raises(LeaseLost), journal.transaction():
        journal.confirm_lease("p", "A", fence, ttl, T0 + timedelta(seconds=22), "read")
        journal.release_lease("p", "A", fence)
        journal.confirm_lease("p", "A", fence, ttl, T0 + timedelta(seconds=22), "after its own release")
    journal.close()


def test_a_lease_read_just_now_is_not_read_again_but_after_a_pause_it_is(
        journal_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Journal.confirm_lease before a side effect: the row this thread's last transaction read under
    its lock serves for LEASE_READ_FRESH_SECONDS after that transaction began; after a pause
    (monotonic time moved on) the row is read again, and a take-over during the pause is LeaseLost
    although A's own clock says its lease has time left."""
    moved = [0.0]
    monkeypatch.setattr(journal_module, "_monotonic", lambda: time.monotonic() + moved[0])
    ttl = timedelta(seconds=60)
    a, b = open_journal(journal_url), open_journal(journal_url)
    fence_a = a.acquire_lease("p", "A", ttl, T0)
    run = RunRecord("r1", "p", RunState.PLANNED, "rotate", T0, T0)
    a.begin_run(run, fence=fence_a)  # reads the lease row, locked, and commits
    before = a.stats.snapshot()
    a.confirm_lease("p", "A", fence_a, ttl, T0, "mint")
    assert (a.stats.transactions, a.stats.statements) == (before.transactions, before.statements), "no read"
    with pytest.raises(LeaseLost):  # another fence than the row read: not served from it
        a.confirm_lease("p", "A", fence_a - 1, ttl, T0, "mint")
    a.update_run(run, fence=fence_a, state=RunState.MINTING)
    before = a.stats.snapshot()
    a.confirm_lease("p", "A", fence_a, ttl, T0 + ttl * 0.6, "mint")  # less than half the ttl left: read, renew
    assert a.stats.transactions > before.transactions
    a.update_run(run, fence=fence_a, state=RunState.MINTED, new_token_id="x")
    # A pauses; meanwhile B takes the policy over (a take-over of a holder believed dead)
    assert b.take_over_lease("p", "A", "B", ttl, T0) == fence_a + 1
    moved[0] = journal_module.LEASE_READ_FRESH_SECONDS
    before = a.stats.snapshot()
    with pytest.raises(LeaseLost):
        a.confirm_lease("p", "A", fence_a, ttl, T0 + timedelta(seconds=1), "publish")
    assert a.stats.transactions == before.transactions + 1, "read again after the pause"
    a.close()
    b.close()


def test_a_take_over_right_after_the_holder_s_commit_is_seen_before_its_next_side_effect(journal_url: str) -> None:
    """take_over_lease does not wait for the lease to expire (a holder believed dead): it returns only
    once the lease read of the holder's last commit no longer serves, so the holder, alive after all,
    reads the row before its next side effect and stops (LeaseLost), as it did with a read every time."""
    ttl = timedelta(minutes=15)
    a, b = open_journal(journal_url), open_journal(journal_url)  # two processes
    fence_a = a.acquire_lease("p", "A", ttl, T0)
    a.begin_run(RunRecord("r1", "p", RunState.PLANNED, "rotate", T0, T0), fence=fence_a)
    started = time.monotonic()
    assert b.take_over_lease("p", "A", "B", ttl, T0) == fence_a + 1
    assert time.monotonic() - started >= journal_module.LEASE_READ_FRESH_SECONDS
    with pytest.raises(LeaseLost):
        a.confirm_lease("p", "A", fence_a, ttl, T0, "publish")
    a.close()
    b.close()


def test_a_holder_is_taken_for_dead_only_in_this_host_s_and_this_pid_namespace_s_terms(
        monkeypatch: pytest.MonkeyPatch) -> None:  # (and this boot's)
    """A lease is taken over at once only from a holder whose process is gone, judged by its process
    id: an id of another PID namespace (a container that shares the host name) says nothing here, nor
    does one of another boot (another machine with the same host name, whose initial PID namespace
    has the same inode; this one before a reboot), nor a holder written without both; all of those
    wait for the lease to expire."""
    import subprocess
    import sys

    from rotator.core import audit_chain
    from rotator.core.engine import _boot_id, _holder_is_dead, _pid_namespace, default_holder

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    instance, namespace, boot = audit_chain.instance_name(), _pid_namespace(), _boot_id()
    assert len(boot) == 32 and int(boot, 16) >= 0, "Linux has a boot id"
    assert default_holder().startswith(f"{instance}:{os.getpid()}:")
    assert default_holder().endswith(f":{namespace}:{boot}")
    assert _holder_is_dead(f"{instance}:{child.pid}:abcd1234:{namespace}:{boot}")
    assert not _holder_is_dead(f"{instance}:{os.getpid()}:abcd1234:{namespace}:{boot}"), "alive"
    assert not _holder_is_dead(f"{instance}:{child.pid}:abcd1234:{namespace}0:{boot}"), "another PID namespace"
    other_boot = f"{(int(boot, 16) + 1) % 16**32:032x}"
    assert not _holder_is_dead(f"{instance}:{child.pid}:abcd1234:{namespace}:{other_boot}"), "another boot"
    assert not _holder_is_dead(f"{instance}:{child.pid}:abcd1234:{namespace}"), "written without its boot"
    assert not _holder_is_dead(f"{instance}:{child.pid}:abcd1234"), "written without its namespace"
    assert not _holder_is_dead(f"other-{instance}:{child.pid}:abcd1234:{namespace}:{boot}"), "another instance"
    # Where there is no boot id (not Linux), a process id cannot be placed on a machine at all.
    monkeypatch.setattr("rotator.core.engine._boot_id", lambda: "")
    assert not _holder_is_dead(f"{instance}:{child.pid}:abcd1234:{namespace}:"), "no boot id: never judged"
    monkeypatch.undo()
    # An instance name with a colon in it (ROTATOR_INSTANCE="pod:a"): the holder is read from the right.
    monkeypatch.setattr(audit_chain, "instance_name", lambda: "pod:a")
    assert _holder_is_dead(f"pod:a:{child.pid}:abcd1234:{namespace}:{boot}")
    assert not _holder_is_dead(f"pod:b:{child.pid}:abcd1234:{namespace}:{boot}")


def _rotate_in_a_thread(engine: Any) -> tuple[Any, dict[str, Any]]:
    """``engine.rotate()`` started in a thread of its own; the dict gets its "result" or its "error"."""
    import threading

    outcome: dict[str, Any] = {}

    def rotate() -> None:
        try:
            outcome["result"] = engine.rotate()
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            outcome["error"] = exc

    thread = threading.Thread(target=rotate)
    thread.start()
    return thread, outcome


class _PausingStore:
    """A real store whose first publish stops before its write: the process paused (SIGSTOP, a GC
    pause, a slow disk) after its lease check and before the compare-and-set write it guards."""

    def __init__(self, inner: Any) -> None:
        import threading

        self.inner, self.entered, self.go, self.paused = inner, threading.Event(), threading.Event(), False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def publish(self, record: Any, expected_version: Any) -> str:
        if not self.paused:
            self.paused = True
            self.entered.set()
            self.go.wait(120)
        return self.inner.publish(record, expected_version)


def test_a_publish_paused_past_its_lease_never_lands_after_recovery_revoked_its_token(
        tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    """Run A is paused inside its publish, after the lease check, past its lease. Recovery (B) rolls the
    VERIFIED run back and revokes the candidate. A's write, resumed, was a compare-and-set against the
    version PLAN read: recovery first writes every store at that version again (what it holds), so the
    stale write fails instead of putting a revoked token in the store (invariants 1 and 7)."""

    from rotator.config.policy import load_config
    from rotator.core.engine import Engine

    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=2)
    config = load_config(sc.config)
    journal = open_journal(config.journal_url())
    engine_a = Engine(config.policies[0], journal, lease_ttl=timedelta(seconds=2), holder="hostA:1:a:0")
    store = _PausingStore(dict(engine_a.stores)["primary"])
    engine_a.stores = [("primary", store)]
    thread, outcome = _rotate_in_a_thread(engine_a)
    try:
        assert store.entered.wait(60), outcome
        candidate = sc.journal_rows("SELECT new_token_id FROM runs WHERE kind = 'rotate'")[0][0]
        _wait_past_lease(sc, 0.5)
        proc = sc.cli("recover")
        assert proc.returncode == 0 and "rolled back" in proc.stdout, proc.stdout + proc.stderr
        assert sc.fake.token_by_id(candidate)["revoked_at"] is not None
    finally:
        store.go.set()
        thread.join(60)
    assert isinstance(outcome.get("error"), LeaseLost), outcome
    current = sc.current()
    assert current["token_id"] == sc.bootstrap_id, "the stale write did not land"
    assert sc.fake.token_by_id(current["token_id"])["revoked_at"] is None
    journal.close()
    proc = sc.cli("rotate", sc.policy)
    assert proc.returncode == 0, proc.stderr
    check_invariants(sc)


def test_a_mint_paused_after_its_lease_check_starts_no_influxctl_once_the_lease_could_be_gone(
        tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    """Run A confirms its lease for the mint, then pauses before it starts influxctl, past its lease.
    Recovery (B) closes the run once the mint window has passed: no child of A could be running. A,
    resumed, must not start one then (it would mint a token no one searches for): the child checks the
    deadline its parent set at the lease check and exits before it runs anything."""
    import threading

    from rotator.config.policy import load_config
    from rotator.core.engine import Engine
    from tests.harness import live_tagged

    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=2)
    config = load_config(sc.config)
    journal = open_journal(config.journal_url())
    engine_a = Engine(config.policies[0], journal, lease_ttl=timedelta(seconds=2), holder="hostA:1:a:0")
    entered, go = threading.Event(), threading.Event()
    real_mint = engine_a.issuer.mint

    def paused_mint(request: Any, credential: Any) -> Any:  # the lease was confirmed just before
        entered.set()
        go.wait(120)  # a SIGSTOP or GC pause before the fork
        return real_mint(request, credential)

    engine_a.issuer.mint = paused_mint  # type: ignore[method-assign]
    thread, outcome = _rotate_in_a_thread(engine_a)
    try:
        assert entered.wait(60)
        _wait_past_lease(sc, 0.5)
        let_mint_window_pass(sc)
        proc = sc.cli("recover")
        assert proc.returncode == 0 and "none found" in proc.stdout, proc.stdout + proc.stderr
    finally:
        go.set()
        thread.join(90)
    assert isinstance(outcome.get("error"), LeaseLost), outcome
    journal.close()
    assert not live_tagged(sc.fake.tokens(), sc.policy), "a token minted after recovery closed the run"


def test_a_child_started_past_its_deadline_exits_before_it_runs_anything() -> None:
    import subprocess
    import sys

    from rotator.core.child_process import EXIT_PAST_DEADLINE, die_with_parent, start_children_within

    with start_children_within(-1.0):
        late = subprocess.run([sys.executable, "-c", "print('ran')"], capture_output=True, text=True,
                              preexec_fn=die_with_parent())  # noqa: PLW1509
    assert (late.returncode, late.stdout) == (EXIT_PAST_DEADLINE, "")
    with start_children_within(30.0):
        timely = subprocess.run([sys.executable, "-c", "print('ran')"], capture_output=True, text=True,
                                preexec_fn=die_with_parent())  # noqa: PLW1509
    assert (timely.returncode, timely.stdout) == (0, "ran\n")


def test_a_mint_that_finishes_after_recovery_closed_its_run_is_revoked_by_the_run_that_minted_it(
        tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    """Run A's influxctl child is still creating the token when A's lease runs out (A paused, or its
    child slow). Recovery (B) searches the run's tag once the mint window has passed, finds nothing
    yet and closes the run. Then the create lands and A gets the token back: A cannot journal it
    (its lease is gone), and must not leave it valid with no record: it revokes what it minted."""
    from rotator.config.policy import load_config
    from rotator.core.engine import Engine
    from tests.harness import live_tagged

    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=2)
    marker, release = tmp_path / "create-started", tmp_path / "create-may-land"
    # the create lands once recovery has closed the run (a fixed pause made that a race on a loaded machine)
    sc.fake.add_fault("management create", "pause", seconds=60, marker=marker, until=release)
    config = load_config(sc.config)
    journal = open_journal(config.journal_url())
    engine_a = Engine(config.policies[0], journal, lease_ttl=timedelta(seconds=2), holder="hostA:1:a:0")
    thread, outcome = _rotate_in_a_thread(engine_a)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert time.monotonic() < deadline and thread.is_alive(), outcome
            time.sleep(0.02)
        (run_id,) = sc.journal_rows("SELECT run_id FROM runs WHERE kind = 'rotate'")[0]
        _wait_past_lease(sc, 0.2)  # the child is still inside its create
        let_mint_window_pass(sc)
        proc = sc.cli("recover")
        assert proc.returncode == 0 and "none found" in proc.stdout, proc.stdout + proc.stderr
        assert not live_tagged(sc.fake.tokens(), sc.policy), "the create had not landed yet"
    finally:
        release.touch()
        thread.join(90)
    assert isinstance(outcome.get("error"), LeaseLost), outcome
    journal.close()
    assert not live_tagged(sc.fake.tokens(), sc.policy), "A left the token it minted after recovery valid"
    minted = [t["id"] for t in sc.fake.tokens() if t["description"].endswith(run_id)]
    assert len(minted) == 1 and sc.fake.token_by_id(minted[0])["revoked_at"], minted
    assert sc.journal_rows(
        "SELECT result FROM events WHERE step = 'revoke_orphan' AND run_id = ?"
        if not sc.journal_url else "SELECT result FROM events WHERE step = 'revoke_orphan' AND run_id = %s",
        run_id) == [("ok",)]
    assert sc.current()["token_id"] == sc.bootstrap_id
    check_invariants(sc)
    proc = sc.cli("rotate", sc.policy)
    assert proc.returncode == 0, proc.stderr
    check_invariants(sc)


def test_the_start_deadline_of_a_side_effect_does_not_refuse_the_reads_after_it(
        tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    """influxctl <= 2.10 prints no id: the mint runs ``management list`` after its ``create``. A create
    slower than the start deadline (here half the 2 s lease) must not make that read "not started":
    the deadline guards the start of a side effect, and a read started late changes nothing. Before,
    every try of a slow mint failed at its list, and its minted token was revoked by the next try."""
    from rotator.config.policy import load_config
    from rotator.core.engine import Engine

    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=2)
    sc.fake.set(create_output="legacy")
    sc.fake.add_fault("management create", "pause", seconds=1.3, marker=tmp_path / "create-started")
    config = load_config(sc.config)
    journal = open_journal(config.journal_url())
    try:
        engine = Engine(config.policies[0], journal, lease_ttl=timedelta(seconds=2), holder="hostA:1:a:0")
        result = engine.rotate()
    finally:
        journal.close()
    assert result.state == "published", result
    assert sc.current()["token_id"] == result.new_token_id
    assert len([t for t in sc.fake.tokens() if t["description"].startswith(f"rotator:{sc.policy}:")]) == 1
    check_invariants(sc)


def test_a_rotator_stopped_inside_its_mint_and_then_killed_leaves_no_token_its_recovery_missed(
        tmp_path: Path, openbao: Any, fake_influxctl: Any) -> None:
    """A is stopped (SIGSTOP) while its influxctl ``create`` runs, past its lease; B recovers once the
    mint window (mint start + the issuer's call timeout + a margin) has passed, finds no token with
    the run's tag and closes the run; then A is killed while still stopped (a liveness probe). A's
    child must have ended at its timeout although A could not kill it: otherwise its create lands
    after B looked, and nothing ever revokes that token."""
    from tests.harness import live_tagged

    sc = _scenario(tmp_path, openbao, fake_influxctl, timeout_s=2)
    marker = tmp_path / "create-started"
    sc.fake.add_fault("management create", "pause", seconds=6, marker=marker)
    a = _start(sc, "a", "", "rotate", sc.policy)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert a.poll() is None and time.monotonic() < deadline, a.communicate()
            time.sleep(0.02)
        os.kill(a.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        time.sleep(LEASE_TTL_S + 2.5)  # past A's lease, and past its child's timeout (2 s, +1 s)
        let_mint_window_pass(sc)
        b = _run(sc, "b", "recover")
        assert b.returncode == 0 and "none found" in b.stdout, b.stdout + b.stderr
        time.sleep(max(0.0, 6.5 - (time.monotonic() - stopped)))  # past the moment the create would land
        os.kill(a.pid, signal.SIGKILL)
        a.communicate(timeout=30)
    finally:
        if a.poll() is None:
            a.kill()
            a.communicate()
    assert not live_tagged(sc.fake.tokens(), sc.policy), "the stopped rotator's child minted after recovery"
    assert sc.current()["token_id"] == sc.bootstrap_id
    proc = _run(sc, "b", "rotate", sc.policy)  # (also sweeps the private config the killed A left)
    assert proc.returncode == 0, proc.stderr
    check_invariants(sc)


def test_a_publish_to_an_influxctl_profile_paused_past_its_lease_never_lands_after_recovery(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """As the Vault case above, for the influxctl-profile store, whose version was its value's
    fingerprint: recovery's write of the same record did not move it, so the paused write landed
    with a token recovery then revoked (a warning said so). Now that write moves the sidecar entry's
    generation, and the paused write's compare-and-set fails."""
    _paused_publish_recovered(tmp_path)
    assert "keeps its version when written with what it holds" not in caplog.text


def _paused_publish_recovered(tmp_path: Path, before_recovery: Callable[[Any], None] | None = None,
                              after_recovery: Callable[[Any], None] | None = None) -> None:
    """The bench's Setup (an influxctl profile store): A pauses inside its publish, after its lease
    check; past A's lease (``before_recovery(setup)`` runs then), B recovers (then
    ``after_recovery(setup)``), rolls the run back and revokes A's candidate; A resumes, and its
    write must fail: the store keeps its token, valid."""
    from rotator.core.engine import Engine
    from tests.runners.test_bench_smoke import _bench

    rotation_io = _bench("rotation_io")
    setup = rotation_io.Setup(tmp_path / "profile", None)
    store = _PausingStore(setup.store.store)
    engine_a = Engine(setup.policy, setup.journal, issuer=setup.issuer, stores=[("profile", store)],
                      clock=setup.clock, lease_ttl=timedelta(seconds=2), holder="hostA:1:a:0:")
    engine_b = Engine(setup.policy, setup.journal, issuer=setup.issuer, stores=[("profile", setup.store.store)],
                      clock=setup.clock, lease_ttl=timedelta(seconds=2), holder="hostB:2:b:0:")
    before = setup.store.store.read_current()
    setup.clock.advance(timedelta(hours=1))
    thread, outcome = _rotate_in_a_thread(engine_a)
    try:
        assert store.entered.wait(60), outcome
        candidate = setup.journal.open_runs(setup.policy.name)[0].new_token_id
        setup.clock.advance(timedelta(seconds=10))  # past A's lease
        if before_recovery is not None:
            before_recovery(setup)
        lines = engine_b.recover()
        if after_recovery is not None:
            after_recovery(setup)
        assert any("rolled back" in line for line in lines), lines
        assert setup.issuer.tokens[candidate]["revoked"], "recovery revoked A's candidate"
    finally:
        store.go.set()
        thread.join(60)
    assert "error" in outcome, outcome
    after = setup.store.store.read_current()
    assert after.record is not None and before.record is not None
    assert after.token_id == before.token_id, "A's paused write did not land"
    assert not setup.issuer.tokens[after.token_id]["revoked"]
    setup.journal.close()


class _LateStore:
    """A real store whose publish of ``late`` times out at the client while the write is still on
    its way (queued at a slow server): it lands when the test says, as it was sent."""

    def __init__(self, inner: Any, keep: str) -> None:
        self.inner, self.keep, self.sent = inner, keep, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def publish(self, record: Any, expected_version: Any) -> str:
        from rotator.core.errors import TransientError

        if record.token_id == self.keep:  # (the store's own token written again: answered)
            return str(self.inner.publish(record, expected_version))
        self.sent.append((record, expected_version))
        raise TransientError("the store did not answer in time")


def test_a_publish_that_timed_out_and_lands_late_never_puts_the_discarded_candidate_in_the_store(
        tmp_path: Path) -> None:
    """A store write times out at the client and no store holds the candidate when the engine reads
    them again, so the engine discards (revokes) it. The write was still on its way and lands after
    that: the engine first wrote the store again at the version the write expects, so its
    compare-and-set fails. Before, it landed and the store held a revoked token."""
    from rotator.core.engine import Engine
    from rotator.core.errors import ConflictError, TransientError
    from rotator.core.retry import RetryPolicy
    from tests.runners.test_bench_smoke import _bench

    rotation_io = _bench("rotation_io")
    setup = rotation_io.Setup(tmp_path / "profile", None)
    before = setup.store.store.read_current()
    assert before.token_id is not None
    store = _LateStore(setup.store.store, keep=before.token_id)
    engine = Engine(setup.policy, setup.journal, issuer=setup.issuer, stores=[("profile", store)],
                    clock=setup.clock, retry=RetryPolicy(1, 0.01, 0.02))
    setup.clock.advance(timedelta(hours=1))
    with pytest.raises(TransientError):
        engine.rotate()
    record, expected = store.sent[0]
    assert setup.issuer.tokens[record.token_id]["revoked"], "the candidate was discarded"
    with pytest.raises(ConflictError):
        setup.store.store.publish(record, expected)  # the write that was on its way lands now
    after = setup.store.store.read_current()
    assert after.token_id == before.token_id and after.record is not None
    assert not setup.issuer.tokens[after.token_id]["revoked"]
    assert not setup.journal.open_runs(setup.policy.name), "the run is closed"
    setup.journal.close()


def test_a_publish_paused_past_its_lease_never_lands_when_recovery_took_over_from_a_dead_later_holder(
        tmp_path: Path) -> None:
    """A is paused inside its publish, after its lease check, past its lease. D takes the expired lease
    (a cron `rotator recover`) and is killed before it recovers anything; B finds D dead and takes the
    lease over. B must still move the store past the version A's write expects before it revokes A's
    candidate: only D is dead, and A, alive, left the run. Before, a take-over from a dead holder
    skipped that write, and A's write, resumed, put the token B had revoked in the store."""
    import subprocess
    import sys

    from rotator.core import audit_chain
    from rotator.core.engine import _boot_id, _pid_namespace

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = f"{audit_chain.instance_name()}:{child.pid}:abcd1234:{_pid_namespace()}:{_boot_id()}"

    taken: list[int] = []

    def dead_holder_took_the_lease(setup: Any) -> None:
        taken.append(setup.journal.acquire_lease(setup.policy.name, dead, timedelta(seconds=2), setup.clock.now()))

    def b_took_it_over(setup: Any) -> None:
        assert setup.journal.lease_fence(setup.policy.name) == taken[0] + 1, "B took D's lease over"

    _paused_publish_recovered(tmp_path, dead_holder_took_the_lease, b_took_it_over)
