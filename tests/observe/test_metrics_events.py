"""Event metrics (rotator/observe/metrics.py Metrics.on_event): what the engine's events count."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rotator.observe.metrics import Metrics
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
