"""Event metrics (rotator/observe/metrics.py Metrics.on_event): what the engine's events count."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rotator.observe.metrics import Metrics, PolicyCounter
from rotator.observe.notify import event_kinds

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("step", "result", "orphans"), [
    ("revoke_old", "failed", 1), ("revoke_new", "failed", 1),
    # Engine._revoke_own_mint: a token minted after its run lost its lease could not be revoked
    ("revoke_orphan", "failed", 1),
    ("revoke_orphan", "ok", 0), ("revoke_old", "retry", 0), ("revoke_new", "ok", 0),
])  # fmt: skip
def test_orphans_total_counts_every_token_left_valid(step: str, result: str, orphans: int) -> None:
    metrics = Metrics()
    metrics.on_event({"at": AT, "policy": "p", "run_id": "r1", "step": step, "result": result, "token_id": "t"})
    value = metrics.registry.get_sample_value("rotator_orphans_total", {"policy": "p"})
    assert (value or 0) == orphans
    assert ("orphan" in event_kinds({"step": step, "result": result})) == bool(orphans), \
        "the orphan webhook and rotator_orphans_total agree"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_every_notification_series_is_there_at_zero_from_the_start() -> None:
    """increase() of a series that appears at 1 is 0: created at its first delivery, a process's
    first failed one never fired RotatorNotificationsFailing."""
    got = _samples(Metrics().exposition().decode())
    for channel in ("webhook", "hook"):
        for result in ("ok", "failed", "timeout", "dropped"):
            assert got[("rotator_notifications_total", (("channel", channel), ("result", result)))] == 0


def test_a_loaded_policy_has_its_rotation_and_orphan_series_at_zero_until_forgotten() -> None:
    """Created at their first inc(), a first orphan (RotatorRevocationFailed) and a first success or
    failure (RotatorRotationFailing) were invisible to increase()."""
    metrics = Metrics()
    metrics.add_policies(["p", "q"])
    got = _samples(metrics.exposition().decode())
    for policy in ("p", "q"):
        assert got[("rotator_orphans_total", (("policy", policy),))] == 0
        for result in ("success", "failure", "needs_attention", "aborted"):
            assert got[("rotator_rotations_total", (("policy", policy), ("result", result)))] == 0
    metrics.on_event({"at": AT, "policy": "p", "step": "revoke_new", "result": "failed"})
    metrics.rotations.labels("p", "failure").inc()
    metrics.add_policies(["p", "q"])  # a reload keeps the counts
    got = _samples(metrics.exposition().decode())
    assert got[("rotator_orphans_total", (("policy", "p"),))] == 1
    assert got[("rotator_rotations_total", (("policy", "p"), ("result", "failure")))] == 1
    metrics.forget("q")
    got = _samples(metrics.exposition().decode())
    assert not [k for k in got if ("policy", "q") in k[1]], "a removed policy's series go"
    assert got[("rotator_rotations_total", (("policy", "p"), ("result", "success")))] == 0


def test_policy_counter_text_is_what_prometheus_client_writes_and_is_made_again_only_where_it_changed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = Metrics()
    names = ["a", 'odd "name"\\ with\nnewline', "c"]
    metrics.add_policies(names)
    metrics.rotations.labels("a", "success").inc()
    metrics.orphans.labels("c").inc(2)
    metrics.consecutive_failures.labels("a").set(3)
    metrics.consecutive_failures.labels("c").set(0)
    metrics.revocations.labels("c", "retry").inc()
    metrics.misfires.labels('odd "name"\\ with\nnewline').inc()
    for counter in (metrics.rotations, metrics.orphans, metrics.consecutive_failures, metrics.revocations,
                    metrics.misfires):
        assert counter.text() == generate_latest(counter)  # the registry's writer, given the counter alone
    assert _samples(metrics.exposition().decode()) == _samples(generate_latest(metrics.registry).decode())
    made: list[str] = []
    original = PolicyCounter._make

    def make(self: PolicyCounter, policy: str, series: Any) -> tuple[str, str]:
        made.append(policy)
        return original(self, policy, series)

    monkeypatch.setattr(PolicyCounter, "_make", make)
    metrics.exposition()
    assert made == [], "nothing changed: every line is kept"
    metrics.rotations.labels("c", "aborted").inc()
    assert _samples(metrics.exposition().decode())[
        ("rotator_rotations_total", (("policy", "c"), ("result", "aborted")))] == 1
    assert made == ["c"]
    with pytest.raises(ValueError, match="no result 'late'"):
        metrics.rotations.labels("a", "late")
    with pytest.raises(ValueError, match="only goes up"):
        metrics.rotations.labels("a", "success").set(0)


def test_per_policy_event_metrics_cost_a_line_or_a_few_each_not_a_histogram() -> None:
    """Once every policy had run, 10,000 policies' run-duration histograms (15 series each) took a
    scrape to 2.6 s and 15 MB (issue 12): durations are one histogram for all policies; the series
    no alert reads with increase() appear at a policy's first change, not at its load."""
    metrics = Metrics()
    metrics.add_policies(["a", "b"])
    metrics.run_duration.observe(3.0)
    metrics.consecutive_failures.labels("a").set(0)
    samples = _samples(metrics.exposition().decode())
    assert samples[("rotator_run_duration_seconds_count", ())] == 1
    assert not any(name.startswith("rotator_run_duration") and "policy" in dict(labels) for name, labels in samples)
    per_policy = {name for name, labels in samples if ("policy", "b") in labels}
    assert per_policy == {"rotator_rotations_total", "rotator_orphans_total"}, "b ran nothing: only the alerts' series"
    assert samples[("rotator_consecutive_failures", (("policy", "a"),))] == 0
