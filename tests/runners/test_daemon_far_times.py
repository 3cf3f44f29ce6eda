"""Daemon edge cases: a journal row's time edited far ahead (a due time in the year 9999) is input, not a
crash (Daemon.snapshot added the slack to it, and the OverflowError took every policy's /metrics down; a
publication there made the next rotation's OverflowError drop the other due policies from the schedule, and
fail every scrape and every start); one policy's planning error leaves the others' schedule alone; a
discard the engine already reported on gets no orphan event of the daemon's own."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rotator.config.policy import Policy
from rotator.core.journal import Revocation, RunRecord
from rotator.runners.daemon import Daemon
from tests.runners.test_daemon import T0, Harness, InlineExecutor
from tests.runners.test_daemon import harness as harness  # noqa: F401 - a fixture, used by name
from tests.runners.test_daemon_metrics_state import samples

FAR = datetime(9999, 12, 31, 23, 0, tzinfo=UTC)


def test_a_pending_revocation_due_in_the_year_9999_is_pending_not_a_failed_scrape(
        harness: Callable[..., Harness]) -> None:  # fmt: skip
    h = harness([("a", "1h", ""), ("b", "1h", "")])
    h.tick()
    h.daemon.journal.schedule_revocation(
        Revocation(policy="a", token_id="t1", run_id="r1", reason="superseded", due_at=FAR, state="pending"))
    h.clock.advance(timedelta(minutes=20))
    h.tick()  # the sweep reads the row
    got = samples(h)
    assert got[("rotator_revocations_pending", (("policy", "a"),))] == 1
    assert got[("rotator_revocations_overdue", (("policy", "a"),))] == 0
    assert ("rotator_revocations_pending", (("policy", "b"),)) in got, "the other policy's series are there too"


def test_a_discard_the_engine_reported_on_gets_no_orphan_invented_by_the_daemon(
        harness: Callable[..., Harness]) -> None:  # fmt: skip
    """A failed job's run left in revoking_new got a `revoke_new` / `failed` of the daemon's own unless the
    engine had sent one: after the engine's `search_failed` (the candidate revoked, only its tag search
    failed) or `failed_again` (reported before), that was a false or a second orphan webhook."""
    h = harness([("a", "1h", "")])
    for result in ("search_failed", "failed_again", "waiting"):
        h.daemon.on_event({"policy": "a", "run_id": f"r-{result}", "step": "revoke_new", "result": result})
        assert f"r-{result}" in h.daemon._orphans_reported, result
    h.daemon.on_event({"policy": "a", "run_id": "r-start", "step": "revoke_new", "result": "start"})
    assert "r-start" not in h.daemon._orphans_reported


def test_a_publication_in_the_year_9999_leaves_the_other_policies_the_metrics_and_a_restart_alone(
        harness: Callable[..., Harness]) -> None:  # fmt: skip
    """Policy a's last publication edited to the year 9999: its next due time is past what a datetime holds.
    That is no next rotation (a person must look: rotator_needs_attention), not an OverflowError: the pass
    that met it had taken b, due at the same time, from the queue already, and b never rotated again."""
    h = harness([("a", "1h", ""), ("b", "1h", "")])
    h.tick()
    h.daemon.journal.begin_run(RunRecord("far-a", "a", "done", "rotate", FAR, FAR, published_at=FAR, finished_at=FAR))
    seen: list[str] = []
    for _ in range(4):  # to 13:00, both policies' due time (the sweep at 12:15 reads a's publication)
        h.clock.advance(timedelta(minutes=15))
        h.tick()
        seen += h.calls
    assert seen == ["rotate b"], "b on time; a not rotated"
    assert h.daemon._watermark is not None and h.daemon._watermark <= h.clock.now(), "later sweeps still read"
    h.tick()  # (reads what b's run committed)
    got = samples(h)
    assert got[("rotator_needs_attention", (("policy", "a"),))] == 1
    assert ("rotator_next_rotation_timestamp_seconds", (("policy", "a"),)) not in got
    assert got[("rotator_next_rotation_timestamp_seconds", (("policy", "b"),))] == (T0 + timedelta(hours=2)).timestamp()

    again = Daemon(h.daemon.path, clock=h.clock, serve_http=False, handle_signals=False, executor=InlineExecutor(),
                   engine_factory=lambda policy, *_: h.engines[policy.name])
    again.start()  # planned every policy from the journal: a's publication raised here too
    try:
        assert again._planned["b"] == T0 + timedelta(hours=2)
    finally:
        again.shutdown()


def test_one_policys_planning_error_at_its_due_time_drops_no_other_policy_from_the_schedule(
        harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """Both due at 13:00; planning a raises there (a bug). The pass takes every due policy from the queue
    before it plans them again: b, due with a, rotates all the same, and a is planned again by the next
    passes, and rotates once its planning works."""
    h = harness([("a", "1h", ""), ("b", "1h", "")])
    h.tick()
    target = h.daemon._target
    broken = [True]

    def failing(policy: Policy, *args: Any) -> datetime:
        if policy.name == "a" and broken and args[1] >= T0 + timedelta(hours=1):
            raise RuntimeError("a bug in a's planning")
        return target(policy, *args)

    monkeypatch.setattr(h.daemon, "_target", failing)
    h.clock.advance(timedelta(hours=1))
    h.tick()
    assert h.calls == ["rotate b"]
    assert "policy a: planning its next jobs failed (1 in a row" in caplog.text
    broken.clear()
    h.clock.advance(timedelta(seconds=5))
    h.tick()
    assert h.calls == ["rotate a"], "planned again by the next pass"
