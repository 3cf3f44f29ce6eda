"""The daemon and a last publication ahead of its clock: the host's clock ran ahead (a bad RTC, a wrong NTP
source) when a rotation published, then was stepped back. Planned from that publication, the next rotation
waited for the whole step (a year), with one WARNING to show for it, and nothing at all from a daemon started
after the step. It is planned from now instead, said once (an ERROR), and rotator_needs_attention is 1 while
the journal's last publication stays ahead.

Also: the runs whose discard the engine reported on (Daemon._orphans_reported) are forgotten once used, so
that a daemon whose rotations keep failing does not keep one id per failed run for ever."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest

from rotator.core.engine import RunResult
from rotator.core.errors import TransientError
from rotator.core.journal import RunRecord, RunState
from rotator.observe.compliance import AHEAD_SLACK, Compliance, is_compliant
from rotator.observe.status import _compliance_cell
from rotator.runners.daemon import Daemon
from tests.runners.test_daemon import T0, Harness, InlineExecutor, sample
from tests.runners.test_daemon import harness as harness  # noqa: F401 - a fixture, used by name
from tests.runners.test_daemon_metrics_state import samples

AHEAD = "ahead of this host's clock"


def _needs_attention(daemon: Daemon) -> float:
    """Policy a's rotator_needs_attention, as a scrape of /metrics reads it."""
    return samples(cast(Harness, SimpleNamespace(daemon=daemon)))[("rotator_needs_attention", (("policy", "a"),))]


def _compliant(daemon: Daemon) -> float:
    return samples(cast(Harness, SimpleNamespace(daemon=daemon)))[("rotator_policy_compliant", (("policy", "a"),))]


def _ahead_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and AHEAD in r.getMessage()]


def _published_a_year_ahead_then_stepped_back(h: Harness) -> None:
    """A 1-day schedule bootstrapped at T0; the clock a year ahead rotates it (publication at T0+365d),
    then NTP steps the clock back to T0+2d, real time."""
    h.clock.advance(timedelta(days=365))
    h.tick()
    assert h.calls == ["rotate a"]
    h.clock.advance(timedelta(days=-363))


def test_a_publication_ahead_of_the_clock_holds_no_rotation_back_after_a_step_back(
        harness: Callable[..., Harness], caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    h = harness([("a", "1d", "")])
    _published_a_year_ahead_then_stepped_back(h)
    h.tick()  # the first pass after the step
    assert h.calls == []
    assert _needs_attention(h.daemon) == 1, "its publication is ahead of the clock"
    assert _compliant(h.daemon) == 0, "a token whose age is unknown is not compliant"
    assert len(_ahead_errors(caplog)) == 1, caplog.text
    assert "policy a: its last publication (2027-03-02T12:00:00+00:00) is 363d ahead" in _ahead_errors(caplog)[0]
    rotated = []
    for day in range(1, 8):  # a week of real time on a 1-day schedule
        h.clock.advance(timedelta(days=1))
        h.tick()
        assert len(h.calls) <= 1, "one rotation per due time, not one per pass"
        rotated += [(day, call) for call in h.calls]
        h.tick()  # (plans again from what the run committed)
        assert h.calls == [], "not due again at once: planned from this rotation"
    assert rotated == [(day, "rotate a") for day in range(1, 8)], "within one interval of the step, then daily"
    assert len(_ahead_errors(caplog)) == 1, "said once, not at every plan"
    # The journal orders publications by their time: the one a year ahead is still its last.
    assert _needs_attention(h.daemon) == 1


def test_a_daemon_started_after_the_step_back_plans_from_now_too(
        harness: Callable[..., Harness], caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    h = harness([("a", "1d", "")])
    _published_a_year_ahead_then_stepped_back(h)
    caplog.clear()
    fresh = Daemon(h.daemon.path, clock=h.clock, serve_http=False, handle_signals=False, executor=InlineExecutor(),
                   engine_factory=lambda policy, *_: h.engines[policy.name])
    fresh.start()
    try:
        assert len(_ahead_errors(caplog)) == 1, "said at its start, where it planned the policy"
        assert _needs_attention(fresh) == 1
        seen: list[str] = []
        for _ in range(4):  # a day, in 6-hour passes
            h.clock.advance(timedelta(hours=6))
            h.calls.clear()
            fresh.tick(h.clock.now())
            seen += h.calls
        assert seen == ["rotate a"], "within one interval of its start"
        assert len(_ahead_errors(caplog)) == 1
    finally:
        fresh.shutdown()


def test_a_publication_a_replica_a_few_seconds_ahead_made_is_planned_from_as_it_is(
        harness: Callable[..., Harness], caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """Within AHEAD_SLACK: clocks that keep time differ by that much, and nothing is said or changed."""
    h = harness([("a", "1h", "")], last=None)
    h.daemon.journal.begin_run(RunRecord("boot-a", "a", "done", "bootstrap", T0, T0,
                                         published_at=T0 + timedelta(minutes=2)))
    h.clock.advance(timedelta(minutes=1))
    h.tick()  # the sweep reads it
    assert h.daemon._planned["a"] == T0 + timedelta(hours=1, minutes=2)
    assert not _ahead_errors(caplog)
    assert _needs_attention(h.daemon) == 0
    assert _compliant(h.daemon) == 1


def test_needs_attention_clears_once_the_clock_passes_the_publication_ahead(
        harness: Callable[..., Harness], caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """docs/daemon.md: it needs attention until the clock passes that publication, then an INFO line says so.
    Nothing planned the policy again then: rotator_needs_attention stayed 1 (and compliant 0) for up to an
    interval, a month for this schedule."""
    caplog.set_level(logging.INFO, logger="rotator.daemon")
    h = harness([("a", "30d", "")], last=None)
    h.daemon.journal.begin_run(RunRecord("boot-a", "a", "done", "bootstrap", T0, T0,
                                         published_at=T0 + timedelta(minutes=20)))
    h.clock.advance(timedelta(minutes=1))
    h.tick()  # the sweep reads it: 19 minutes ahead
    assert (_needs_attention(h.daemon), _compliant(h.daemon)) == (1, 0)
    h.clock.advance(timedelta(minutes=15))  # within AHEAD_SLACK of it, no pass yet: the scrape's cache expires
    assert _compliant(h.daemon) == 1, "its age is known again"
    for _ in range(3):  # hourly passes
        h.clock.advance(timedelta(hours=1))
        h.tick()
        assert h.calls == [], "planned again from it, not rotated"
        assert (_needs_attention(h.daemon), _compliant(h.daemon)) == (0, 1)
    cleared = [r for r in caplog.records if r.levelname == "INFO" and "no longer ahead" in r.getMessage()]
    assert len(cleared) == 1, caplog.text
    assert h.daemon._planned["a"] == T0 + timedelta(days=30, minutes=20), "planned from that publication again"


def test_a_token_that_began_to_age_after_now_is_not_compliant() -> None:
    """Its age is unknown (a clock ahead wrote its time): not compliant, beyond the clocks' slack."""
    day = timedelta(days=1)
    assert is_compliant(T0 + AHEAD_SLACK, day, False, T0), "within the slack: clocks that keep time differ"
    assert not is_compliant(T0 + AHEAD_SLACK + timedelta(seconds=1), day, False, T0)
    assert not is_compliant(T0 + timedelta(days=363), timedelta(days=400), False, T0)


def _failing_with_a_reported_discard(h: Harness) -> Callable[..., RunResult]:
    """A rotation that journals its run as discarding its candidate, hears the engine's report of that
    discard (revoke_new / failed: an orphan), and fails."""
    runs = [0]

    def rotate(**_: Any) -> RunResult:
        runs[0] += 1
        run_id = f"failed-{runs[0]}"
        now = h.clock.now()
        h.daemon.journal.begin_run(RunRecord(run_id, "a", RunState.REVOKING_NEW, "rotate", now, now,
                                             new_token_id=f"t-{run_id}"))
        h.daemon.on_event({"at": now, "policy": "a", "run_id": run_id, "step": "revoke_new", "result": "failed",
                           "token_id": f"t-{run_id}"})
        raise TransientError("the issuer refused the candidate's revocation")

    return rotate


def test_the_discards_the_engine_reported_on_are_forgotten_once_used(
        harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    h = harness([("a", "1h", ""), ("b", "1h", "")])
    monkeypatch.setattr(h.engines["a"], "rotate", _failing_with_a_reported_discard(h))
    for failures in range(1, 4):
        h.clock.advance(timedelta(hours=2))  # due, and past the failure's backoff
        h.tick()
        assert sample(h, "rotator_consecutive_failures", policy="a") == failures
        assert sample(h, "rotator_orphans_total", policy="a") == failures, "the engine's report only, once each"
        assert h.daemon._orphans_reported == {}, "used by the failed job, then forgotten"

    h.daemon.on_event({"policy": "b", "run_id": "r-b", "step": "revoke_new", "result": "failed"})
    h.daemon.on_event({"policy": "a", "run_id": "r-a", "step": "revoke_new", "result": "waiting"})
    h.daemon._forget("b")  # (what a reload that removed it does)
    assert "r-b" not in h.daemon._orphans_reported, "a removed policy's runs go with it"
    assert "r-a" in h.daemon._orphans_reported


def test_status_says_why_a_token_published_ahead_of_the_clock_is_not_compliant() -> None:
    """`status --check` exits 4 on it: it names the problem and the fix, never an empty reason."""
    c = Compliance("a", timedelta(days=1), T0 + timedelta(days=363), "tok-1", (), T0)
    assert not c.compliant and c.ahead and not c.too_old
    (problem,) = c.problems()
    assert problem.startswith("token tok-1 began to age 363d after this host's now") and "NTP" in problem
    assert _compliance_cell(c) == "AGE UNKNOWN (CLOCK)"
    assert c.to_json()["ahead_of_clock"] is True
