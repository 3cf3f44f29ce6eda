"""A rotation that fails before publishing, as `rotator report` and a prune's checkpoint count it.

Such a run writes no `mint` / `verify` failure: the engine discards its candidate and writes
`revoke_new` / `start` (carrying the error), then `revoke_new` / `ok`. Both the report and the
checkpoint summary counted only the results `failed`, `error` and `partial`, so a refused verify, a
refused mint, a conflict at the first store or a crashed run that recovery discarded showed failures 0,
before a prune and after it. Now one rule (audit_chain.counts_as_failure) counts each failed run once,
at its first failure event, in the live report and in the checkpoint summary alike.

A real engine (tests/engine/test_state_machine.py's World: an in-memory issuer and stores, a SQLite
journal, a fake clock).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from rotator.config.timefmt import parse_rfc3339
from rotator.core import audit_chain
from rotator.core.errors import ConflictError, PermanentError, TransientError
from rotator.core.journal import RunState, ts
from rotator.core.secret import Secret
from rotator.observe import report
from tests.engine.test_state_machine import Crash, World, rotate

#: token-shaped text a server's error may quote (rotator/config/inline_secrets.py recognises it)
TOKEN = "M.V1.eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.c2VjcmV0"


def _refused_verify(world: World) -> None:
    world.issuer.fail_next("verify", PermanentError(f"verify refused: 403 for {TOKEN}"))
    with pytest.raises(PermanentError):
        world.engine().rotate()


def _refused_mint(world: World) -> None:
    world.issuer.fail_next("mint", PermanentError("mint refused: 403 Forbidden"))
    with pytest.raises(PermanentError):
        world.engine().rotate()


def _conflict_at_first_store(world: World) -> None:
    world.stores["a"].fail_next("publish", ConflictError("store a changed since it was read"))
    with pytest.raises(ConflictError):
        world.engine().rotate()


def _crashed_then_discarded(world: World) -> None:
    world.crash_at = "minted"
    with pytest.raises(Crash):
        world.engine().rotate()
    world.clock.advance(timedelta(minutes=10))
    world.engine().recover()


FAILURES: dict[str, tuple[Callable[[World], None], str]] = {
    "verify refused": (_refused_verify, "verify refused: 403 for"),
    "mint refused": (_refused_mint, "mint refused"),
    "conflict at the first store": (_conflict_at_first_store, "store a changed"),
    "crashed, discarded by recovery": (_crashed_then_discarded, "process stopped in state"),
}


def _failed_run(world: World) -> str:
    [run] = [r for r in world.journal.runs("p", limit=100) if r.state in (RunState.FAILED, RunState.ABORTED)]
    return run.run_id


def _build(world: World, start: datetime, end: datetime) -> report.Evidence:
    return report.build(world.journal, [world.policy], start, end, world.clock.now())


def _one_failed_and_one_good(world: World, fail: Callable[[World], None]) -> tuple[str, datetime]:
    """Bootstrap, a rotation that fails before publishing, then one that publishes: the failed run's id,
    and the time before it all."""
    start = world.clock.now() - timedelta(hours=1)
    world.bootstrap()
    world.clock.advance(timedelta(days=1))
    fail(world)
    failed = _failed_run(world)
    world.clock.advance(timedelta(hours=1))
    rotate(world)
    world.clock.advance(timedelta(minutes=5))
    return failed, start


@pytest.mark.parametrize("case", list(FAILURES))
def test_a_run_that_failed_before_publishing_counts_once_before_and_after_a_prune(
        tmp_path: Path, case: str) -> None:
    fail, said = FAILURES[case]
    world = World(tmp_path)
    failed, start = _one_failed_and_one_good(world, fail)
    end = world.clock.now() + timedelta(hours=1)

    evidence = _build(world, start, end)
    [p] = evidence.policies
    assert p.summary()["failures"] == 1, p.failures
    [failure] = p.failures
    assert failure.run_id == failed and failure.error is not None and failure.error.startswith(said), failure
    assert "discarded" in failure.ended or "aborted" in failure.ended, failure
    for fmt in ("json", "csv", "html"):
        assert TOKEN not in report.render(evidence, fmt), f"no token-shaped text in the {fmt} report"
    rows = list(csv.DictReader(io.StringIO(report.render(evidence, "csv"))))
    assert [r["failures"] for r in rows if r["record"] == "summary"] == ["1"]
    assert [r["run_id"] for r in rows if r["record"] == "failure"] == [failed]
    data = json.loads(report.render(evidence, "json"))["policies"][0]
    assert data["summary"]["failures"] == 1 and [f["run_id"] for f in data["failures"]] == [failed]

    # Every event pruned: the checkpoint counts it by the same rule, and the period still shows one.
    audit_chain.prune(world.journal, ts(world.clock.now() + timedelta(seconds=1)), ts(world.clock.now()))
    [checkpoint] = audit_chain.checkpoints(world.journal)
    entry = checkpoint.detail["policies"]["p"]
    assert entry["failures"] == 1 and entry[audit_chain.FAILED_RUNS] == [failed], entry
    assert audit_chain.verify(world.journal).ok
    [p] = _build(world, start, end).policies
    assert p.failures == [] and [pr["failures"] for pr in p.pruned] == [1], p.pruned
    assert p.summary()["failures"] + sum(pr["failures"] for pr in p.pruned) == 1


def _stuck_discard_then_recovered(world: World) -> str:
    """A refused verify whose candidate's revocation fails too (`revoke_new` start, then failed), and
    recovery an hour later that revokes it (start again, then ok): four events of one failed run."""
    world.bootstrap()
    world.clock.advance(timedelta(days=1))
    world.issuer.fail_next("verify", PermanentError("verify refused"))
    world.issuer.fail_next("revoke", PermanentError("revoke refused"))
    with pytest.raises(PermanentError):
        world.engine().rotate()
    (run,) = world.journal.open_runs("p")
    world.clock.advance(timedelta(hours=1))
    world.engine().recover()
    assert world.journal.get_run(run.run_id).state == RunState.FAILED
    steps = [(e["step"], e["result"]) for e in world.journal.events("p", limit=100) if e["run_id"] == run.run_id]
    assert steps.count(("revoke_new", "start")) == 2 and ("revoke_new", "failed") in steps, steps
    return run.run_id


def test_a_failed_run_with_several_failure_events_counts_once_at_the_first(tmp_path: Path) -> None:
    world = World(tmp_path)
    start = world.clock.now() - timedelta(hours=1)
    run_id = _stuck_discard_then_recovered(world)
    world.clock.advance(timedelta(minutes=5))
    [p] = _build(world, start, world.clock.now() + timedelta(hours=1)).policies
    [failure] = p.failures
    assert (failure.run_id, failure.step, failure.result, failure.error) == \
        (run_id, "revoke_new", "start", "verify refused"), failure
    assert failure.ended == "run failed (new token discarded, old kept)"


def test_a_failed_run_split_by_a_prune_or_its_batches_counts_once(tmp_path: Path) -> None:
    """A prune whose cutoff falls between a run's failure events (the discard, and recovery's an hour
    later), or batches that split them: the checkpoint names the run, and neither the next checkpoint
    nor the report counts it again."""
    world = World(tmp_path)
    start = world.clock.now() - timedelta(hours=1)
    run_id = _stuck_discard_then_recovered(world)
    first_try = [e["at"] for e in world.journal.events("p", limit=100)
                 if e["run_id"] == run_id and e["step"] == "revoke_new" and e["result"] == "failed"]
    world.clock.advance(timedelta(minutes=5))
    end = world.clock.now() + timedelta(hours=1)
    # one event a batch, up to just after the first discard: its start and its failure in two checkpoints
    cutoff = parse_rfc3339(first_try[0]) + timedelta(seconds=1)
    audit_chain.prune(world.journal, ts(cutoff), ts(world.clock.now()), batch=1)
    assert audit_chain.verify(world.journal).ok
    entries = [cp.detail["policies"].get("p", {}) for cp in audit_chain.checkpoints(world.journal)]
    assert sum(e.get("failures", 0) for e in entries) == 1, entries
    assert sum(run_id in audit_chain.failed_runs(e) for e in entries) == 2, "both checkpoints name the run"
    [p] = _build(world, start, end).policies
    assert p.failures == [], "recovery's discard is of a run the pruned history counted"
    assert sum(pr["failures"] for pr in p.pruned) == 1


def test_a_checkpoint_of_the_earlier_rule_still_verifies_and_reads(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A prune of an earlier rotator counted `failed` / `error` / `partial` only and named no failed run:
    its summary is hashed into the chain as it was written, never computed again, so it verifies, and
    the next prune (the new rule) goes on from it."""
    world = World(tmp_path)
    failed, start = _one_failed_and_one_good(world, _refused_verify)
    with monkeypatch.context() as patch:  # the earlier rule
        patch.setattr(audit_chain, "failed_run", lambda row: None)
        patch.setattr(audit_chain, "counts_as_failure", lambda row, counted: row["result"] in ("failed", "error",
                                                                                              "partial"))
        audit_chain.prune(world.journal, ts(world.clock.now() + timedelta(seconds=1)), ts(world.clock.now()))
    [old] = audit_chain.checkpoints(world.journal)
    assert old.detail["policies"]["p"]["failures"] == 0 and audit_chain.FAILED_RUNS not in old.detail["policies"]["p"]
    assert audit_chain.verify(world.journal).ok

    world.clock.advance(timedelta(days=1))
    _refused_mint(world)
    again = [r.run_id for r in world.journal.runs("p", limit=100)
             if r.state in (RunState.FAILED, RunState.ABORTED) and r.run_id != failed]
    world.clock.advance(timedelta(minutes=5))
    audit_chain.prune(world.journal, ts(world.clock.now() + timedelta(seconds=1)), ts(world.clock.now()))
    assert audit_chain.verify(world.journal).ok
    _old, new = audit_chain.checkpoints(world.journal)
    entry = new.detail["policies"]["p"]
    assert entry["failures"] == 1 and audit_chain.failed_runs(entry) == again, entry
    [p] = _build(world, start, world.clock.now() + timedelta(hours=1)).policies
    assert [pr["failures"] for pr in p.pruned] == [0, 1], "each summary as it was written"


class _DownRevoke:
    """The issuer's revoke, failing while ``down``."""

    def __init__(self, world: World) -> None:
        self.down, self._revoke = True, world.issuer.revoke

    def __call__(self, token_id: str, credential: Secret | None) -> None:
        if self.down:
            raise TransientError("issuer down")
        self._revoke(token_id, credential)


def _refused_verify_left_unrevoked(world: World, monkeypatch: pytest.MonkeyPatch) -> _DownRevoke:
    """Bootstrapped, then a day later a rotation whose verify is refused and whose candidate cannot be
    revoked (the issuer's revoke down until the returned stand-in's ``down`` is set False): a run left open."""
    world.bootstrap()
    world.clock.advance(timedelta(days=1))
    revoke = _DownRevoke(world)
    monkeypatch.setattr(world.issuer, "revoke", revoke)
    world.issuer.fail_next("verify", PermanentError("verify refused"))
    with pytest.raises(PermanentError):
        world.engine().rotate()
    return revoke


def _stuck_for_hours(world: World, monkeypatch: pytest.MonkeyPatch, *, other_policy_between: bool) -> str:
    """A refused verify whose candidate cannot be revoked (`revoke_new` start, failed), two recoveries an
    hour apart that fail again (start, failed_again, recover error: each), then one that revokes it.
    ``other_policy_between``: another policy's event in each hour (a checkpoint range of it alone)."""
    revoke = _refused_verify_left_unrevoked(world, monkeypatch)
    (run,) = world.journal.open_runs("p")
    for _ in range(2):
        world.clock.advance(timedelta(hours=1))
        if other_policy_between:
            world.journal.record_event(world.clock.now(), "q", "q-run", "plan", "ok", {})
            world.clock.advance(timedelta(hours=1))
        with pytest.raises(TransientError):
            world.engine().recover()
    revoke.down = False
    world.clock.advance(timedelta(hours=1))
    world.engine().recover()
    assert not world.journal.open_runs("p")
    world.clock.advance(timedelta(minutes=5))
    return run.run_id


def _shown(world: World, start: datetime, end: datetime) -> int:
    """What the report shows for policy p: kept failures and those of the pruned summaries."""
    [p] = _build(world, start, end).policies
    return len(p.failures) + sum(pr["failures"] for pr in p.pruned)


@pytest.mark.parametrize("batch", [1, 2, 3, 4, 1000])
@pytest.mark.parametrize("other_policy_between", [False, True])
def test_a_run_stuck_over_several_checkpoint_ranges_counts_once_whatever_the_batches(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int, other_policy_between: bool) -> None:
    """Each checkpoint carries on the failed runs still open (audit_chain.OPEN_FAILED_RUNS), not only
    the runs the one before named: a range holding none of the run's failure events (its `revoke_new`
    ok, a `recover` error alone, another policy's events) made the next one count it again."""
    world = World(tmp_path)
    start = world.clock.now() - timedelta(hours=1)
    run_id = _stuck_for_hours(world, monkeypatch, other_policy_between=other_policy_between)
    end = world.clock.now() + timedelta(hours=1)
    assert _shown(world, start, end) == 1
    audit_chain.prune(world.journal, ts(world.clock.now() + timedelta(seconds=1)), ts(world.clock.now()),
                      batch=batch)
    assert audit_chain.verify(world.journal).ok
    made = audit_chain.checkpoints(world.journal)
    assert sum(cp.detail["policies"].get("p", {}).get("failures", 0) for cp in made) == 1
    assert _shown(world, start, end) == 1
    assert made[-1].detail[audit_chain.OPEN_FAILED_RUNS] == {}, "closed: carried no further"
    assert any(cp.detail[audit_chain.OPEN_FAILED_RUNS] == {"p": [run_id]} for cp in made[:-1]) or batch == 1000


def test_a_run_stuck_over_daily_prunes_counts_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Daily prunes: the failure on day 1, a day with another policy's events only, the retries on day 3."""
    world = World(tmp_path)
    start = world.clock.now() - timedelta(hours=1)
    revoke = _refused_verify_left_unrevoked(world, monkeypatch)

    def daily_prune() -> None:
        world.clock.advance(timedelta(days=1))
        audit_chain.prune(world.journal, ts(world.clock.now() - timedelta(hours=12)), ts(world.clock.now()))

    daily_prune()
    world.journal.record_event(world.clock.now(), "q", "q-run", "plan", "ok", {})
    daily_prune()
    with pytest.raises(TransientError):
        world.engine().recover()
    revoke.down = False
    world.clock.advance(timedelta(hours=1))
    world.engine().recover()
    daily_prune()
    daily_prune()
    assert audit_chain.verify(world.journal).ok
    counted = [cp.detail["policies"].get("p", {}).get("failures", 0) for cp in audit_chain.checkpoints(world.journal)]
    assert sum(counted) == 1, counted
    assert _shown(world, start, world.clock.now()) == 1


def test_a_checkpoint_that_names_its_failed_runs_but_carries_none_on_still_verifies_and_is_carried_from(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint of the first form (its summaries' FAILED_RUNS, no OPEN_FAILED_RUNS) verifies as it
    was written; the next prune starts from the runs it names."""
    world = World(tmp_path)
    start = world.clock.now() - timedelta(hours=1)
    revoke = _refused_verify_left_unrevoked(world, monkeypatch)
    (run,) = world.journal.open_runs("p")
    summary = audit_chain._summary
    with monkeypatch.context() as patch:  # the first form
        patch.setattr(audit_chain, "_summary", lambda *a, **k: {
            key: value for key, value in summary(*a, **k).items() if key != audit_chain.OPEN_FAILED_RUNS})
        world.clock.advance(timedelta(minutes=5))
        audit_chain.prune(world.journal, ts(world.clock.now()), ts(world.clock.now()))
    [first] = audit_chain.checkpoints(world.journal)
    assert audit_chain.OPEN_FAILED_RUNS not in first.detail
    assert audit_chain.failed_runs(first.detail["policies"]["p"]) == [run.run_id]
    world.clock.advance(timedelta(hours=1))
    world.journal.record_event(world.clock.now(), "q", "q-run", "plan", "ok", {})
    audit_chain.prune(world.journal, ts(world.clock.now() + timedelta(seconds=1)), ts(world.clock.now()))
    world.clock.advance(timedelta(hours=1))
    revoke.down = False
    world.engine().recover()
    world.clock.advance(timedelta(minutes=5))
    audit_chain.prune(world.journal, ts(world.clock.now() + timedelta(seconds=1)), ts(world.clock.now()))
    assert audit_chain.verify(world.journal).ok
    made = audit_chain.checkpoints(world.journal)
    assert [cp.detail.get(audit_chain.OPEN_FAILED_RUNS) for cp in made] == [None, {"p": [run.run_id]}, {}]
    assert [cp.detail["policies"].get("p", {}).get("failures", 0) for cp in made] == [1, 0, 0]
    assert _shown(world, start, world.clock.now()) == 1


def test_a_later_try_that_fails_again_names_its_run_and_counts_nothing() -> None:
    for result in ("failed_again", "search_failed"):
        row = {"step": "revoke_new", "result": result, "run_id": "r1", "detail": "{}"}
        counted: set[str] = set()
        assert audit_chain.failed_run(row) == "r1" and not audit_chain.counts_as_failure(row, counted)
        assert counted == set(), "the next try's start, in a period that began after this one's, counts"
