"""rotator_tokens{issuer}: the cluster or instance, not the list of the policies on it.

The label was ``<type>:<every policy on the cluster, comma-joined>``: thousands of names at the
10,000-policy scale the metrics are built for (past Prometheus' label_value_length_limit), and a new
value, so new series, whenever a policy was added or removed, which reset the ``for:`` of
RotatorOrphanTokens and RotatorUnmanagedTokenWithoutExpiry.
"""

from __future__ import annotations

import tomllib
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rotator.config.policy import parse_config
from rotator.core.contracts import TokenInfo
from rotator.observe.inventory import Inventory, Target, policy_targets, take_inventory
from rotator.observe.metrics import Metrics

NOW = datetime(2025, 6, 1, tzinfo=UTC)


def _policies(tmp_path: Path, names: list[str], host: str = "cluster.example.com") -> list[Any]:
    text = "".join(
        f'[[policy]]\nname = "{name}"\nschedule = "30d"\n[policy.issuer]\ntype = "influxctl-management"\n'
        f'[policy.issuer.profile]\nproduct = "clustered"\nhost = "{host}"\n[[policy.store]]\ntype = "vault-kv2"\n'
        f'url = "http://127.0.0.1:1"\npath = "x/{name}"\n[policy.store.auth]\nmethod = "token"\n'
        'token = { file = "t" }\n'
        for name in names
    )
    return list(parse_config(tomllib.loads(text), tmp_path / "rotator.toml").policies)


class _Listing:
    """An issuer that lists one unmanaged token that never expires."""

    def list_tokens(self, credential: object) -> list[TokenInfo]:
        return [TokenInfo("t-ci", "ci pipeline token", created_at=NOW)]


def _exported(targets: list[Target]) -> dict[tuple[str, str], float]:
    listing: Any = _Listing()
    fake = [replace(t, listers=[(p, listing, lambda: None) for p, _, _ in t.listers]) for t in targets]
    metrics = Metrics()
    metrics.inventory(take_inventory(fake, None, [p for t in targets for p in t.policies], NOW), NOW)
    out = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "rotator_tokens" and sample.value:
                out[(sample.labels["issuer"], sample.labels["class"])] = sample.value
    return out


def test_the_issuer_label_is_the_cluster_whatever_the_policies_on_it(tmp_path: Path) -> None:
    few = policy_targets(_policies(tmp_path, ["a", "b"]))
    many = policy_targets(_policies(tmp_path, [f"policy-{i:04d}" for i in range(300)]))

    assert _exported(few) == _exported(many) == {
        ("influxctl-management|profile='clustered/cluster.example.com/443//'", "unmanaged"): 1,
    }


def test_two_clusters_are_two_labels_and_no_label_names_a_policy(tmp_path: Path) -> None:
    targets = policy_targets(_policies(tmp_path, ["a"]) + _policies(tmp_path, ["b"], host="other.example.com"))

    labels = sorted(issuer for issuer, _ in _exported(targets))

    assert labels == ["influxctl-management|profile='clustered/cluster.example.com/443//'",
                      "influxctl-management|profile='clustered/other.example.com/443//'"]


def test_an_inventory_without_labels_keeps_the_target_name() -> None:
    """An Inventory built by hand (as `rotator inventory` output is) still exports."""
    metrics = Metrics()
    metrics.inventory(Inventory(targets=["influxdb3:p"]), NOW)

    assert metrics.registry.get_sample_value("rotator_tokens", {"issuer": "influxdb3:p", "class": "orphan"}) == 0
