"""What the daemon shows of its policies, in-process on a fake clock: a schedule that has ended
(/metrics and /status.json stay up, the policy needs attention), and the failure count once
someone else rotated the policy.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from rotator.core.errors import TransientError
from rotator.core.journal import RunRecord
from rotator.observe.status_page import StatusPage, render_html
from tests.runners.test_daemon import T0, Harness, sample
from tests.runners.test_daemon import harness as harness  # noqa: F401 - a fixture, used by name

#: a cron schedule whose years end with 2027 (the AWS form's sixth field)
ENDED = "cron(0 3 * * ? 2026-2027)"
AFTER = datetime(2027, 12, 31, 3, 0, 30, tzinfo=UTC)  # its last fire time has just passed


def _metrics(h: Harness) -> dict[tuple[str, str], float]:
    """The /metrics body's per-policy samples: (name, policy) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(h.daemon.metrics.exposition().decode()):
        for s in family.samples:
            if "policy" in s.labels:
                out[(s.name, s.labels["policy"])] = s.value
    return out


def test_a_schedule_that_has_ended_leaves_metrics_up_and_needs_attention(
    harness: Callable[..., Harness], caplog: pytest.LogCaptureFixture,
) -> None:
    """One policy whose cron never fires again made every /metrics scrape a 500."""
    h = harness([("healthy", "1h", ""), ("yearly", ENDED, "")], last=AFTER)
    h.clock.advance(AFTER - T0)
    h.tick()
    m = _metrics(h)  # raised NoNextDue
    assert m[("rotator_next_rotation_timestamp_seconds", "healthy")] == (AFTER + timedelta(hours=1)).timestamp()
    assert ("rotator_next_rotation_timestamp_seconds", "yearly") not in m, "no next rotation to show"
    assert m[("rotator_needs_attention", "yearly")] == 1 and m[("rotator_needs_attention", "healthy")] == 0
    assert m[("rotator_last_success_timestamp_seconds", "yearly")] == AFTER.timestamp(), "the rest is there"
    assert m[("rotator_token_age_seconds", "yearly")] == 0

    # Fixed by a reload: attention no more, a next rotation again.
    h.daemon.path.write_text(h.daemon.path.read_text().replace(ENDED, "cron(0 3 * * ? *)"))
    h.daemon.request_reload()
    h.tick()
    m = _metrics(h)
    assert m[("rotator_needs_attention", "yearly")] == 0
    assert m[("rotator_next_rotation_timestamp_seconds", "yearly")] == datetime(2028, 1, 1, 3, tzinfo=UTC).timestamp()

    # Ended again by a later edit: said again in the log (the first time's note does not silence it).
    caplog.clear()
    h.daemon.path.write_text(h.daemon.path.read_text().replace("cron(0 3 * * ? *)", ENDED))
    h.daemon.request_reload()
    with caplog.at_level(logging.ERROR, logger="rotator"):
        h.tick()
    assert [r for r in caplog.records if "policy yearly: no next rotation" in r.getMessage()]
    assert _metrics(h)[("rotator_needs_attention", "yearly")] == 1


def test_a_schedule_that_has_ended_leaves_the_status_page_up(harness: Callable[..., Harness]) -> None:
    h = harness([("healthy", "1h", ""), ("yearly", ENDED, "")], last=AFTER)
    h.clock.advance(AFTER - T0)
    page = StatusPage(lambda: h.daemon.policies, lambda: h.daemon.journal, h.clock.now)
    data = json.loads(page.json_bytes())  # raised NoNextDue
    rows = {row["policy"]: row for row in data["policies"]}
    assert rows["healthy"]["next_due"] is not None and not rows["healthy"]["needs_attention"]
    yearly = rows["yearly"]
    assert yearly["next_due"] is None and yearly["due"] is False and yearly["needs_attention"] is True
    assert yearly["current_token_id"] is None and yearly["rotated_at"] == "2027-12-31T03:00:30.000000Z"
    assert yearly["compliant"] is True and yearly["age_s"] == 0, "what the journal says of its token is shown"
    assert any("no next due time" in problem for problem in yearly["problems"])
    assert "never fires again" in yearly["reason"]
    assert set(yearly) == set(rows["healthy"]), "the same fields as any row"
    html = render_html(page.data())
    assert 'id="policy-yearly"' in html and "needs attention" in html and "never fires again" in html


def test_a_rotation_by_someone_else_ends_the_failure_count(harness: Callable[..., Harness]) -> None:
    """rotator_consecutive_failures stayed at 3 (RotatorRotationFailing firing) after an operator's
    `rotator rotate` or another replica rotated the policy: only this process's own success reset it."""
    h = harness([("a", "30d", "")], daemon='failure_backoff = "10s"\n', last=T0 - timedelta(days=31))
    h.engines["a"].fail += [TransientError("issuer down")] * 3
    for i in range(3):  # overdue, and it fails three times
        h.clock.advance(timedelta(seconds=60 if i else 0))
        h.tick()
        assert h.calls == ["rotate a"]
    assert sample(h, "rotator_consecutive_failures", policy="a") == 3
    # A reload reads every view again: the last run it finds is no new success (the retry is not due yet:
    # the watch's reload keeps the unchanged policy's engine, and its backoff; a SIGHUP would try it at once).
    h.daemon.path.write_text(h.daemon.path.read_text() + "# edited\n")
    assert h.daemon.reload("the file changed", full=False)
    h.tick()
    assert h.calls == [] and sample(h, "rotator_consecutive_failures", policy="a") == 3

    now = h.clock.now()
    h.daemon.journal.begin_run(RunRecord("manual", "a", "done", "rotate", now, now, published_at=now,
                                         finished_at=now))
    h.clock.advance(timedelta(seconds=61))  # the sweep reads it (and the retry comes due)
    h.tick()
    assert h.calls == [] and sample(h, "rotator_consecutive_failures", policy="a") == 0
    track = h.daemon._tracks["a"]
    assert track.failures == 0 and track.retry_at is None
    assert h.daemon._planned["a"] == now + timedelta(days=30), "due by the schedule, no backoff"
    h.clock.advance(timedelta(hours=1))
    h.tick()
    assert h.calls == [], "nothing to do: it was rotated"


def test_a_rotation_found_done_when_due_ends_the_failure_count(harness: Callable[..., Harness]) -> None:
    """The same when the daemon finds the other rotation as its retry comes due (before any sweep)."""
    h = harness([("a", "30d", "")], daemon='failure_backoff = "10s"\nsweep_interval = "1h"\n', last=None)
    h.engines["a"].fail += [TransientError("issuer down")] * 2
    h.tick()
    h.clock.advance(timedelta(seconds=11))
    h.tick()
    assert sample(h, "rotator_consecutive_failures", policy="a") == 2
    now = h.clock.now()
    h.daemon.journal.begin_run(RunRecord("replica-b", "a", "done", "rotate", now, now, published_at=now,
                                         finished_at=now))
    h.clock.advance(timedelta(seconds=30))  # past the retry time, long before the next sweep
    h.tick()
    assert h.calls == [] and sample(h, "rotator_consecutive_failures", policy="a") == 0


def test_a_run_whose_tag_is_still_searched_gets_a_revocation_pass_when_its_window_ends(
    harness: Callable[..., Harness],
) -> None:
    """A mint try without an answer: the run published, and its tag is searched until the request
    can no longer land (RunRecord.tag_search_until). The daemon came back only at the replaced
    token's revocation (after grace), or never when none was replaced: a token created late stayed
    valid until the next rotation."""
    h = harness([("a", "1h", "")], last=None)
    until = T0 + timedelta(seconds=70)
    h.daemon.journal.begin_run(RunRecord("r1", "a", "done", "rotate", T0, T0, published_at=T0,
                                         new_token_id="t1", tag_search_until=until))
    h.daemon.request_reload()
    h.tick()
    assert "revoke a" not in h.calls, "not before the window ends"
    h.clock.advance(timedelta(seconds=69))
    h.tick()
    assert "revoke a" not in h.calls
    h.clock.advance(timedelta(seconds=1))
    h.tick()
    assert h.calls.count("revoke a") == 1, h.calls
    h.clock.advance(timedelta(seconds=30))
    h.tick()
    assert "revoke a" not in h.calls, "once: a search still open after its window waits for the next pass"
