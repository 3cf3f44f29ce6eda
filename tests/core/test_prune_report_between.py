"""A prune chains its `prune` event (with its cutoff) first and deletes old runs after it, in batches
outside the audit head's lock (ea5bbee). Done revocations older than that cutoff must go with the
event: the report counts one still there as written outside rotator. A prune that stopped before its
row batches (the daemon's stop(), a kill, a failed batch), or a report read during them, made
`rotator report` exit 4 for an honest journal, and its summary count those revocations as not done.
"""

from __future__ import annotations

from datetime import datetime, timedelta
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


def _publication_at_the_period_start(tmp_path: Path) -> tuple[World, timedelta]:
    """The bootstrapped token replaced 60h old at a period's start, then two more rotations: the world
    and how old the bootstrapped token was."""
    world = World(tmp_path)
    world.bootstrap()
    world.clock.advance(timedelta(hours=60))
    rotate(world)
    return world, timedelta(hours=60)


def _age(world: World, start: datetime, end: datetime) -> tuple[int | None, str | None, int | None]:
    [p] = report.build(world.journal, [world.policy], start, end, world.clock.now()).policies
    s = p.summary()
    return s["max_observed_age_s"], s["oldest_token_id"], s["max_age_bound_s"]


def test_a_pruned_publication_at_the_period_start_adds_no_age_of_a_token_current_before_it(tmp_path: Path) -> None:
    """A checkpoint whose range begins with the publication at --from (one event a batch) kept the age of
    the token it replaced, which was current before the period only: the report took it as the period's
    maximum observed age (60h, "(pruned)", where the tokens of the period lived 10h at most)."""
    world, old = _publication_at_the_period_start(tmp_path)
    start = world.clock.now()
    end = start + timedelta(hours=10)
    world.clock.advance(GRACE + timedelta(hours=1))
    world.engine().revoke_due()
    world.clock.advance(timedelta(hours=20))
    rotate(world)
    before = _age(world, start, end)
    assert before[0] == 10 * 3600 and before[0] < old.total_seconds()
    audit_chain.prune(world.journal, ts(start + timedelta(minutes=1)), ts(world.clock.now()), batch=1)
    assert _age(world, start, end) == before


def test_a_pruned_block_beginning_at_the_period_start_is_a_bound_not_the_period_age(tmp_path: Path) -> None:
    """The same, one checkpoint holding that publication and the next one (only their count and the oldest
    token they replaced are kept): which of them the oldest was went with the events, so it bounds the
    age (the verdict is left open where it matters), and is no observed age of the period."""
    world, old = _publication_at_the_period_start(tmp_path)
    start = world.clock.now()
    end = start + timedelta(hours=10)
    world.clock.advance(GRACE + timedelta(hours=1))
    world.engine().revoke_due()
    world.clock.advance(timedelta(hours=3))
    rotate(world)  # 5h after the period's start
    world.clock.advance(GRACE + timedelta(hours=1))
    world.engine().revoke_due()
    world.clock.advance(timedelta(hours=20))
    rotate(world)
    low, _token, bound = _age(world, start, end)
    assert (low, bound) == (5 * 3600, None)
    audit_chain.prune(world.journal, ts(start), ts(world.clock.now()))  # the history before the period
    audit_chain.prune(world.journal, ts(start + timedelta(hours=6)), ts(world.clock.now()))
    assert [cp.detail["from"] for cp in audit_chain.checkpoints(world.journal)][-1] == ts(start)
    assert _age(world, start, end) == (5 * 3600, "mem-0003", old.total_seconds())
