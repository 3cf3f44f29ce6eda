"""An issuer the inventory cannot list read as clean: `counts()` seeded zeros for every target, so
the daemon exported rotator_tokens{class="orphan"|"suspicious"} 0 for it (RotatorOrphanTokens
resolved while nothing was checked), and the status page and the JSON counts showed a row of zeros.

Now such a target has no counts (no series, no row), and rotator_inventory_issuer_errors{issuer} says
which issuer went unchecked (RotatorInventoryFailing alerts on it).
"""

from __future__ import annotations

from datetime import UTC, datetime

from rotator.core.contracts import TokenInfo
from rotator.core.errors import TransientError
from rotator.observe.inventory import Target, take_inventory
from rotator.observe.metrics import Metrics
from rotator.observe.status_page import _inventory, _inventory_card

NOW = datetime(2025, 6, 1, tzinfo=UTC)
WHERE = "influxdb3|base_url='https://x:443'"


class _Issuer:
    def __init__(self) -> None:
        self.fail = False

    def list_tokens(self, credential: object) -> list[TokenInfo]:
        if self.fail:
            raise TransientError("cluster unavailable")
        return [TokenInfo("t-tagged", "rotator:x:0123abcd0123abcd", created_at=NOW)]


def _value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_target_that_cannot_be_listed_exports_no_counts_and_an_error() -> None:
    issuer, other = _Issuer(), _Issuer()
    failing = Target("influxdb3:x", "influxdb3", [(None, issuer, lambda: None)], WHERE)  # type: ignore[list-item]
    fine = Target("influxdb3:y", "influxdb3", [(None, other, lambda: None)], "influxdb3|base_url='https://y:443'")  # type: ignore[list-item]
    metrics = Metrics()
    metrics.inventory(take_inventory([failing, fine], None, [], NOW), NOW)
    assert _value(metrics, "rotator_tokens", issuer=WHERE, **{"class": "suspicious"}) == 1
    assert _value(metrics, "rotator_inventory_issuer_errors", issuer=WHERE) == 0

    issuer.fail = True
    result = take_inventory([failing, fine], None, [], NOW)
    metrics.inventory(result, NOW)

    assert result.unlisted == ["influxdb3:x"]
    assert not [key for key in result.counts() if key[0] == "influxdb3:x"], "no zeros for a target nobody checked"
    assert result.counts()[("influxdb3:y", "suspicious")] == 1
    for cls in ("managed", "orphan", "suspicious", "unmanaged", "retired"):
        assert _value(metrics, "rotator_tokens", issuer=WHERE, **{"class": cls}) is None, cls
    assert _value(metrics, "rotator_inventory_issuer_errors", issuer=WHERE) == 1
    assert _value(metrics, "rotator_inventory_issuer_errors", issuer="influxdb3|base_url='https://y:443'") == 0
    assert _value(metrics, "rotator_inventory_errors") == 1
    card = _inventory_card(_inventory(result))
    assert "<td>influxdb3:x</td>" not in card and "influxdb3:x: cluster unavailable" in card
    assert "<td>influxdb3:y</td>" in card

    issuer.fail = False  # listed again: its series are back, its error gone
    metrics.inventory(take_inventory([failing, fine], None, [], NOW), NOW)
    assert _value(metrics, "rotator_tokens", issuer=WHERE, **{"class": "suspicious"}) == 1
    assert _value(metrics, "rotator_inventory_issuer_errors", issuer=WHERE) == 0


def test_a_target_listed_only_in_part_keeps_what_it_listed_and_has_an_error() -> None:
    """Two policies' issuers on one instance, one of which fails: the tokens the other listed are
    counted (what was seen is real), and the issuer's error says the count may be short."""
    ok, broken = _Issuer(), _Issuer()
    broken.fail = True
    target = Target("influxdb3:x", "influxdb3", [(None, ok, lambda: None), (None, broken, lambda: None)], WHERE)  # type: ignore[list-item]
    metrics = Metrics()
    result = take_inventory([target], None, [], NOW)
    metrics.inventory(result, NOW)

    assert result.unlisted == [] and result.errors[0][1].startswith("listed only partly")
    assert _value(metrics, "rotator_tokens", issuer=WHERE, **{"class": "suspicious"}) == 1
    assert _value(metrics, "rotator_inventory_issuer_errors", issuer=WHERE) == 1
