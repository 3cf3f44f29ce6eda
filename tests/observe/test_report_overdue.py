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
