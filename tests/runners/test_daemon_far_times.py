"""Daemon edge cases: a journal row's time edited far ahead (a due time in the year 9999) is input, not a
crash (Daemon.snapshot added the slack to it, and the OverflowError took every policy's /metrics down);
a discard the engine already reported on gets no orphan event of the daemon's own."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from rotator.core.journal import Revocation
from tests.runners.test_daemon import Harness
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
