"""A prune chains its `prune` event (with its cutoff) first and deletes old runs after it, in batches
outside the audit head's lock (ea5bbee). Done revocations older than that cutoff must go with the
event: the report counts one still there as written outside rotator. A prune that stopped before its
row batches (the daemon's stop(), a kill, a failed batch), or a report read during them, made
`rotator report` exit 4 for an honest journal, and its summary count those revocations as not done.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from rotator.core import audit_chain
from rotator.core.journal import ts
from rotator.observe import report
from tests.engine.test_state_machine import GRACE, World, rotate
from tests.harness import offline_policy


def _rotated_daily(tmp_path: Path) -> World:
    """A policy rotated six times, about daily, each previous token revoked after its grace."""
    world = World(tmp_path)
    world.bootstrap()
    for _ in range(6):
        rotate(world)
        world.clock.advance(GRACE + timedelta(seconds=1))
        world.engine().revoke_due()
        world.clock.advance(timedelta(hours=20))
    return world


def test_report_after_a_prune_stopped_before_its_row_batches(tmp_path: Path) -> None:
    world = _rotated_daily(tmp_path)
    now = world.clock.now()
    policy = offline_policy(tmp_path, "p")

    def evidence() -> report.Evidence:
        return report.build(world.journal, [policy], now - timedelta(days=30), now + timedelta(days=1), now)

    before = evidence()
    assert before.chain.ok and not before.revocations_not_in_chain

    calls = []

    def stop() -> bool:  # a daemon asked to stop while the prune's last event batch commits
        calls.append(1)
        return len(calls) >= 3  # 1: at the start, 2: before the (only) event batch, 3: before the first row batch

    result = audit_chain.prune(world.journal, ts(now - timedelta(days=2, hours=12)), ts(now), stop=stop)
    assert result.stopped and result.events > 0 and result.runs == 0

    cut = evidence()
    # `rotator report` exits 4 on this (cli.cmd_report: clean needs no revocations_not_in_chain)
    assert not cut.revocations_not_in_chain, "honest journal flagged as tampered (report exit 4)"


def test_report_read_while_an_uninterrupted_prune_deletes_its_rows(tmp_path: Path) -> None:
    """No interruption: a report that reads between two row batches (another process, at the wrong
    second) sees the same contradiction."""
    world = _rotated_daily(tmp_path)
    now = world.clock.now()
    policy = offline_policy(tmp_path, "p")
    seen: list[list[str]] = []
    calls = []

    def peek() -> bool:  # asked before each row batch; never stops the prune
        calls.append(1)
        if len(calls) >= 3:
            seen.append(report.build(world.journal, [policy], now - timedelta(days=30), now + timedelta(days=1),
                                     now).revocations_not_in_chain)
        return False

    result = audit_chain.prune(world.journal, ts(now - timedelta(days=2, hours=12)), ts(now), stop=peek,
                               row_batch=1)
    after = report.build(world.journal, [policy], now - timedelta(days=30), now + timedelta(days=1), now)
    assert not after.revocations_not_in_chain
    assert result.runs > 0 and len(seen) == result.runs, (result, seen)  # a report read before each row batch
    assert not any(seen), "a report read during the row deletions flags an honest journal"
