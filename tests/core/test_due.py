"""rotator/core/due.py: the one decision of whether a policy's rotation is due (issue 14 §6)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from rotator.config.policy_types import Policy
from rotator.core.clock import FakeClock
from rotator.core.due import decide, due_now
from rotator.core.journal import RunRecord, RunState, open_journal

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def _policy(schedule: str = "30d", window: str | None = None, max_age: timedelta | None = 32 * DAY) -> Policy:
    return Policy(name="p", enabled=True, issuer_type="influxctl-management", issuer_settings=None, stores=(),
                  schedule_text=schedule, window_text=window, grace=DAY, lifetime=33 * DAY, verify_timeout=DAY,
                  adopt=False, description="{tag}", base_dir=Path("."), max_age=max_age)  # fmt: skip


def test_never_rotated_is_due_now_and_says_bootstrap() -> None:
    due = decide(_policy(), None, NOW)
    assert due.due and due.next_due == NOW and due.rotated_at is None
    assert due.reason() == ("no token yet: run `rotator bootstrap POLICY --token-file FILE --token-id ID` with the "
                            "first, human-created token")
    assert not due.too_old and not due.recover_first


def test_interval_boundaries() -> None:
    policy = _policy("30d")
    just_before = decide(policy, NOW - 30 * DAY + timedelta(seconds=1), NOW)
    assert not just_before.due and just_before.next_due == NOW + timedelta(seconds=1)
    assert just_before.reason() == "not due for 1s"
    at = decide(policy, NOW - 30 * DAY, NOW)
    assert at.due and at.next_due == NOW, "due at the very moment the interval ends"
    assert at.reason() == "due: last rotation 30d ago"
    later = decide(policy, NOW - 31 * DAY - timedelta(hours=5), NOW)
    assert later.due and later.reason() == "due: last rotation 31d5h ago"


def test_cron_schedule_is_due_at_its_next_fire_time() -> None:
    policy = _policy("0 3 * * *")  # every day at 03:00 UTC
    rotated = datetime(2026, 6, 14, 3, 0, 5, tzinfo=UTC)
    assert decide(policy, rotated, datetime(2026, 6, 15, 2, 59, tzinfo=UTC)).due is False
    due = decide(policy, rotated, datetime(2026, 6, 15, 3, 0, tzinfo=UTC))
    assert due.due and due.next_due == datetime(2026, 6, 15, 3, 0, tzinfo=UTC)


def test_window_moves_the_due_time_into_the_window_and_is_stable() -> None:
    policy = _policy("1d", window="02:00-04:00")
    rotated = datetime(2026, 6, 14, 12, 0, tzinfo=UTC)  # nominally due 2026-06-15 12:00, outside the window
    first = decide(policy, rotated, NOW)
    window_start, window_end = datetime(2026, 6, 16, 2, 0, tzinfo=UTC), datetime(2026, 6, 16, 4, 0, tzinfo=UTC)
    assert window_start <= first.next_due < window_end, "the next window after the nominal due time"
    assert not first.due, "nominally due at noon, but the window has not come yet"
    assert decide(policy, rotated, NOW).next_due == first.next_due, "same inputs, same moment (replicas agree)"
    assert not decide(policy, rotated, first.next_due - timedelta(microseconds=1)).due
    assert decide(policy, rotated, first.next_due).due
    assert decide(policy, rotated, window_end).due


def test_an_open_run_does_not_make_a_policy_due_but_asks_for_recovery() -> None:
    policy = _policy("30d")
    recent = NOW - DAY
    waiting = decide(policy, recent, NOW, open_runs=1)
    assert not waiting.due and waiting.recover_first and waiting.open_runs == 1
    assert not decide(policy, recent, NOW).recover_first, "nothing to recover"
    due_with_open = decide(policy, NOW - 40 * DAY, NOW, open_runs=2)
    assert due_with_open.due and not due_with_open.recover_first, "the rotation itself recovers first"


def test_too_old_past_max_age() -> None:
    policy = _policy("30d", max_age=32 * DAY)
    assert not decide(policy, NOW - 32 * DAY, NOW).too_old
    late = decide(policy, NOW - 32 * DAY - timedelta(seconds=1), NOW)
    assert late.too_old and late.due and late.max_age == 32 * DAY
    assert decide(_policy(max_age=None), NOW - 34 * DAY, NOW).max_age == 33 * DAY, "an old bundle: its lifetime"


def _run(run_id: str, state: str, published: datetime | None) -> RunRecord:
    started = published or NOW
    return RunRecord(run_id=run_id, policy="p", state=state, kind="rotate", started_at=started, updated_at=started,
                     new_token_id=f"tok-{run_id}", published_at=published)  # fmt: skip


def test_due_now_reads_the_last_success_and_the_open_runs_from_the_journal(tmp_path: Path) -> None:
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")
    clock = FakeClock(NOW)
    policy = _policy("30d")
    assert due_now(policy, journal, clock).rotated_at is None
    journal.begin_run(_run("r1", RunState.DONE, NOW - 40 * DAY))
    journal.begin_run(_run("r2", RunState.PUBLISHED, NOW - 10 * DAY))
    journal.begin_run(_run("r3", RunState.FAILED, None))
    due = due_now(policy, journal, clock)
    assert due.rotated_at == NOW - 10 * DAY and not due.due and due.open_runs == 0
    journal.begin_run(_run("r4", RunState.MINTING, None))
    assert due_now(policy, journal, clock).recover_first
    clock.advance(20 * DAY)
    due = due_now(policy, journal, clock)
    assert due.due and due.now == NOW + 20 * DAY and due.open_runs == 1
