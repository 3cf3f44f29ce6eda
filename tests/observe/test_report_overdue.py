"""`rotator report`'s overdue revocations: judged at the period's end as `rotator status --check` judges
them (compliance.is_overdue, the same slack).

Before, the report had no such notion: a period could look clean (a revocation merely "pending") while
`status --check` failed on the same journal for a revocation past its due time and the slack.

A real engine (tests/engine/test_state_machine.py's World) on a SQLite journal: a bootstrap, then one
rotation, whose grace (1h) schedules the bootstrapped token's revocation.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from rotator.core import audit_chain
from rotator.core.errors import TransientError
from rotator.core.journal import ts
from rotator.observe import report
from rotator.observe.compliance import DEFAULT_SLACK, policy_compliance
from tests.engine.test_state_machine import World, rotate


def _rotated(tmp_path: Path) -> tuple[World, datetime, datetime]:
    """A bootstrap and a rotation: the world, a time before both, and the replaced token's due time."""
    world = World(tmp_path)
    start = world.clock.now() - timedelta(hours=1)
    world.bootstrap()
    world.clock.advance(timedelta(days=1))
    rotate(world)
    [rev] = world.journal.revocations("p", "pending")
    return world, start, rev.due_at


def _overdue(world: World, start: datetime, end: datetime) -> tuple[int, report.Evidence]:
    evidence = report.build(world.journal, [world.policy], start, end, world.clock.now())
    [p] = evidence.policies
    return p.summary()["revocations_overdue"], evidence


@pytest.mark.parametrize(("past_due", "overdue"), [
    (DEFAULT_SLACK + timedelta(minutes=1), 1),  # pending past due + slack at the period's end
    (DEFAULT_SLACK - timedelta(minutes=1), 0),  # pending, past due but within the slack
])
def test_a_pending_revocation_is_overdue_past_its_due_time_and_the_slack(
        tmp_path: Path, past_due: timedelta, overdue: int) -> None:
    world, start, due = _rotated(tmp_path)
    end = due + past_due
    world.clock.advance(end - world.clock.now())  # the period is over, nothing revoked yet
    count, evidence = _overdue(world, start, end)
    assert count == overdue
    # what `status --check` says at that moment
    assert len(policy_compliance(world.policy, world.journal, end).overdue) == overdue
    [p] = evidence.policies
    assert [v.state for v in p.revocations] == ["pending"]
    assert json.loads(report.render(evidence, "json"))["policies"][0]["summary"]["revocations_overdue"] == overdue
    [row] = [r for r in csv.DictReader(io.StringIO(report.render(evidence, "csv"))) if r["record"] == "summary"]
    assert row["revocations_overdue"] == str(overdue)
    page = report.render(evidence, "html")
    assert "revocations overdue" in page and ("pending OVERDUE" in page) == bool(overdue)


def test_a_revocation_done_before_the_period_end_is_not_overdue(tmp_path: Path) -> None:
    world, start, due = _rotated(tmp_path)
    world.clock.advance(due - world.clock.now() + timedelta(minutes=10))
    world.engine().revoke_due()
    end = due + DEFAULT_SLACK + timedelta(hours=2)
    world.clock.advance(end - world.clock.now() + timedelta(hours=1))
    count, evidence = _overdue(world, start, end)
    assert count == 0 and [v.state for v in evidence.policies[0].revocations] == ["done"]


def test_overdue_is_judged_at_the_period_end_not_when_the_report_is_made(tmp_path: Path) -> None:
    """Revoked after the period ended, once past the slack: overdue in that period, whenever reported."""
    world, start, due = _rotated(tmp_path)
    end = due + DEFAULT_SLACK + timedelta(minutes=30)
    world.clock.advance(end - world.clock.now() + timedelta(hours=1))
    world.engine().revoke_due()
    assert world.journal.revocations("p", "pending") == []
    count, evidence = _overdue(world, start, end)
    assert count == 1 and [v.state for v in evidence.policies[0].revocations] == ["pending"]
    later, _ = _overdue(world, start, world.clock.now() + timedelta(minutes=1))
    assert later == 0, "a period ending after the revocation: done"


# ------------------------------------------------------------------ after a prune (audit_chain.LATE_REVOCATIONS)
# A prune deletes a done revocation's row with its events. Before, a period's overdue revocation then
# vanished from its report (revocations_overdue 0, nothing listed) although the period was not compliant
# at its end: the checkpoint's summary kept no revocation's times.


def _tries_failing(world: World, rounds: int) -> None:
    """The due revocation tried ``rounds`` times, a minute apart, the issuer down each time (the tenth
    round marks it failed: engine.MAX_REVOCATION_ROUNDS)."""
    for _ in range(rounds):
        world.issuer.fail_next("revoke", TransientError("issuer down"), times=3)
        world.engine().revoke_due(retry_failed=True)
        world.clock.advance(timedelta(minutes=1))


def _revoked_late(tmp_path: Path, *, rounds: int, end_after_due: timedelta,
                  prune_while_open: timedelta | None = None,
                  seen: list[tuple[int | None, list[str]]] | None = None) -> tuple[World, datetime, datetime, datetime]:
    """The bootstrapped token's revocation tried ``rounds`` times once due (and failing), done hours
    after a period that ends ``end_after_due`` past its due time; ``prune_while_open``: a prune's cutoff
    so long past its due time, taken before it is done (its row stays), and ``seen``: the period's figures
    before and after it. The world, the period, its due time."""
    world, start, due = _rotated(tmp_path)
    world.clock.advance(due - world.clock.now() + timedelta(minutes=1))
    _tries_failing(world, rounds)
    end = due + end_after_due
    if prune_while_open is not None:
        world.clock.advance(timedelta(hours=1))
        if seen is not None:
            seen.append(_figures(world, start, end)[:2])
        audit_chain.prune(world.journal, ts(due + prune_while_open), ts(world.clock.now()))
        if seen is not None:
            seen.append(_figures(world, start, end)[:2])
    world.clock.advance(end - world.clock.now() + timedelta(hours=10))
    world.engine().revoke_due(retry_failed=True)
    assert world.journal.revocations("p", "done"), "revoked, after the period"
    world.clock.advance(timedelta(hours=10))
    rotate(world)  # (a prune keeps the newest successful run: the one that scheduled it goes)
    return world, start, end, due


def _figures(world: World, start: datetime, end: datetime) -> tuple[int | None, list[str], report.Evidence]:
    evidence = report.build(world.journal, [world.policy], start, end, world.clock.now())
    [p] = evidence.policies
    assert evidence.chain.ok and not evidence.revocations_not_in_chain
    return p.summary()["revocations_overdue"], p.overdue_revocations, evidence


def _prune_all(world: World, batch: int) -> None:
    """Prune everything before the last rotation: the revocation's row and every event of it."""
    now = world.clock.now()
    audit_chain.prune(world.journal, ts(now - timedelta(hours=5)), ts(now), batch=batch)
    assert not world.journal.revocations("p", "done"), "its row went with the prune"


@pytest.mark.parametrize("batch", [1, 1000])  # (1: its run's `plan` in one checkpoint, `published` in the next)
@pytest.mark.parametrize("twice", [False, True])  # a daily prune while it was still pending, then one after
def test_a_revocation_overdue_in_a_period_stays_overdue_there_after_a_prune(
        tmp_path: Path, batch: int, twice: bool) -> None:
    pending = DEFAULT_SLACK + timedelta(hours=4)
    world, start, end, due = _revoked_late(tmp_path, rounds=1, end_after_due=pending,
                                           prune_while_open=timedelta(minutes=30) if twice else None)
    token = world.bootstrap_id
    inside_slack = due + DEFAULT_SLACK - timedelta(minutes=1)
    before = [_figures(world, start, at)[:2] for at in (end, inside_slack, world.clock.now() - timedelta(hours=1))]
    assert before == [(1, [token]), (0, []), (0, [])], "as before a prune: overdue at the end only"
    _prune_all(world, batch)
    after = [_figures(world, start, at)[:2] for at in (end, inside_slack, world.clock.now() - timedelta(hours=1))]
    assert after == before, "the same figures after the prune"
    _count, _listed, evidence = _figures(world, start, end)
    [p] = evidence.policies
    [pruned] = p.overdue_pruned
    assert (pruned["token_id"], pruned["due_at"], pruned["failed_at"]) == (token, ts(due), None)
    if not twice and batch > 1:  # (the chain's due time; a run split from its plan has its row's)
        assert "due_at_from_row" not in pruned
    page = json.loads(report.render(evidence, "json"))["policies"][0]
    assert page["summary"]["revocations_overdue"] == 1 and page["overdue_revocations"] == [token]
    assert page["overdue_revocations_pruned"][0]["token_id"] == token
    rows = list(csv.DictReader(io.StringIO(report.render(evidence, "csv"))))
    assert [r["revocations_overdue"] for r in rows if r["record"] == "summary"] == ["1"]
    assert [r["token_id"] for r in rows if r["record"] == "overdue_revocation_pruned"] == [token]
    assert f"revocation of token {token} overdue at the period" in report.render(evidence, "html")


@pytest.mark.parametrize("twice", [False, True])
def test_a_revocation_that_failed_within_the_slack_stays_overdue_after_a_prune(tmp_path: Path, twice: bool) -> None:
    """Failed ten minutes after its due time: overdue at once (status --check counts a failed one), in
    a period ending before its slack ran out; after a prune too, with its failure carried from the
    checkpoint of the prune that took its tries (audit_chain.OPEN_REVOCATIONS) to the one of its end."""
    seen: list[tuple[int | None, list[str]]] = []
    world, start, end, due = _revoked_late(tmp_path, rounds=10, end_after_due=timedelta(minutes=30),
                                           prune_while_open=timedelta(minutes=20) if twice else None, seen=seen)
    before = _figures(world, start, end)[:2]
    # (twice: its row is there, done now, its tries pruned; the first checkpoint says it had failed)
    assert before == (1, [world.bootstrap_id])
    assert seen == ([before, before] if twice else []), "failed (its row says so), before the first prune and after"
    assert _figures(world, start, due + timedelta(minutes=5))[:2] == (0, []), "pending, within the slack"
    _prune_all(world, 1000)
    assert _figures(world, start, end)[:2] == before
    assert _figures(world, start, due + timedelta(minutes=5))[:2] == (0, [])
    if twice:
        first, *_ = audit_chain.checkpoints(world.journal)
        [(token, carried)] = first.detail[audit_chain.OPEN_REVOCATIONS]["p"].items()
        assert token == world.bootstrap_id and carried["failed_at"] and carried["due_at"] == ts(due)


def _earlier_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prunes write checkpoints as the version before LATE_REVOCATIONS did: no revocation's times."""
    summary = audit_chain._summary

    def earlier(*args: object, **kwargs: object) -> dict[str, object]:
        detail = summary(*args, **kwargs)  # type: ignore[arg-type]
        for entry in detail["policies"].values():
            entry.pop(audit_chain.LATE_REVOCATIONS, None)
        return {key: value for key, value in detail.items()
                if key not in (audit_chain.OPEN_REVOCATIONS, audit_chain.LATE_REVOCATIONS_SLACK_S)}

    monkeypatch.setattr(audit_chain, "_summary", earlier)


def test_a_checkpoint_of_an_earlier_version_leaves_the_overdue_count_undecided_not_0(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world, start, end, _due = _revoked_late(tmp_path, rounds=1, end_after_due=DEFAULT_SLACK + timedelta(hours=4))
    assert _figures(world, start, end)[:2] == (1, [world.bootstrap_id])
    with monkeypatch.context() as patch:
        _earlier_version(patch)
        _prune_all(world, 1000)
    [checkpoint] = audit_chain.checkpoints(world.journal)
    assert audit_chain.OPEN_REVOCATIONS not in checkpoint.detail
    count, listed, evidence = _figures(world, start, end)  # (the chain verifies: asserted there)
    assert count is None and listed == [], "n/a, never a clean 0"
    [p] = evidence.policies
    assert p.overdue_undecided and f"checkpoint seq {checkpoint.seq}" in p.overdue_undecided
    assert p.summary()["revocations_overdue_undecided"] == p.overdue_undecided
    [row] = [r for r in csv.DictReader(io.StringIO(report.render(evidence, "csv"))) if r["record"] == "summary"]
    assert row["revocations_overdue"] == "n/a" and "revocations overdue at least 0 (n/a)" in row["note"]
    assert json.loads(report.render(evidence, "json"))["policies"][0]["summary"]["revocations_overdue"] is None
    assert "revocations overdue at least 0 (n/a)" in report.render(evidence, "html")
    # a period after the checkpoint's range: every revocation it counts was done by its end
    assert _figures(world, world.clock.now() - timedelta(hours=2), world.clock.now())[0] == 0
    # this version's prune after it: the chain verifies through both, and the old period stays open
    world.clock.advance(timedelta(days=1))
    rotate(world)
    audit_chain.prune(world.journal, ts(world.clock.now() - timedelta(hours=5)), ts(world.clock.now()))
    assert [audit_chain.OPEN_REVOCATIONS in cp.detail for cp in audit_chain.checkpoints(world.journal)] == [False, True]
    assert audit_chain.verify(world.journal).ok and _figures(world, start, end)[0] is None


def test_a_report_with_a_shorter_slack_than_the_checkpoints_keep_is_undecided_over_them(tmp_path: Path) -> None:
    assert audit_chain.LATE_REVOCATION_SLACK == DEFAULT_SLACK, "the checkpoints keep what status --check calls overdue"
    world, start, end, _due = _revoked_late(tmp_path, rounds=1, end_after_due=DEFAULT_SLACK + timedelta(hours=4))
    _prune_all(world, 1000)
    evidence = report.build(world.journal, [world.policy], start, end, world.clock.now(),
                            slack=DEFAULT_SLACK - timedelta(minutes=30))
    [p] = evidence.policies
    assert p.summary()["revocations_overdue"] is None and p.overdue_undecided
