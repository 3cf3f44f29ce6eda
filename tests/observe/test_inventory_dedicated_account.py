"""Cloud Dedicated management tokens belong to the account, not to a cluster (facts file 1.5: no
``cluster_id``, "full access to all account resources"; ``management list`` shows the same tokens through
every cluster of the account). The management policies of two clusters of one account are one place in the
inventory: each token is listed once, and a normal rotation of one of them is no ``suspicious`` token ("a
policy that does not use this issuer") on the other's cluster, which made ``inventory --check`` exit 4.
Database tokens stay the cluster's.
"""

from __future__ import annotations

import tomllib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.config.policy import parse_config
from rotator.config.policy_types import Policy
from rotator.core.contracts import TokenInfo
from rotator.core.journal import Journal, RunRecord, RunState, open_journal
from rotator.observe.inventory import Target, policy_targets, take_inventory

ACCOUNT = "11111111-1111-4111-8111-111111111111"
OTHER_ACCOUNT = "66666666-6666-4666-8666-666666666666"
C1 = "22222222-2222-4222-8222-222222222222"
C2 = "33333333-3333-4333-8333-333333333333"
TOKEN = "44444444-4444-4444-8444-444444444444"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _policy(tmp_path: Path, name: str, cluster: str, account: str = ACCOUNT,
            kind: str = "influxctl-management") -> Policy:  # fmt: skip
    extra = ('auth = { method = "mgmt_token", token = { file = "m" } }\npermissions = { read = ["db1"] }\n'
             if kind == "influxctl-database" else "")  # fmt: skip
    host = f'host = "{cluster}.a.influxdb.io"\n' if kind == "influxctl-database" else ""
    return parse_config(tomllib.loads(f"""
[[policy]]
name = "{name}"
schedule = "30d"
[policy.issuer]
type = "{kind}"
{extra}[policy.issuer.profile]
product = "dedicated"
account_id = "{account}"
cluster_id = "{cluster}"
{host}[[policy.store]]
type = "vault-kv2"
url = "http://127.0.0.1:1"
path = "x/{name}"
[policy.store.auth]
method = "token"
token = {{ file = "t" }}
"""), tmp_path / "rotator.toml").policies[0]


def _listing(policies: list[Policy], tokens: list[TokenInfo]) -> list[Target]:
    """The policies' targets, each cluster listing ``tokens`` (the account's, seen from any of its clusters)."""

    class Lister:
        def list_tokens(self, credential: Any) -> list[TokenInfo]:
            return list(tokens)

    return [replace(t, listers=[(p, Lister(), lambda: None) for p, _, _ in t.listers])  # type: ignore[misc]
            for t in policy_targets(policies)]  # fmt: skip


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return open_journal(f"sqlite:///{tmp_path / 'j.db'}")


def test_two_clusters_of_one_account_list_a_rotation_s_candidate_once_as_managed(tmp_path, journal) -> None:
    c1, c2 = _policy(tmp_path, "mgmt-c1", C1), _policy(tmp_path, "mgmt-c2", C2)
    # c1 is mid-rotation: minting, lease held, no id recorded yet; its token carries the run's tag
    journal.begin_run(RunRecord(run_id="beef0123beef0123", policy="mgmt-c1", state=RunState.MINTING, kind="rotate",
                                started_at=NOW, updated_at=NOW))  # fmt: skip
    journal.acquire_lease("mgmt-c1", "host-a", timedelta(minutes=15), NOW)
    candidate = TokenInfo(TOKEN, "rotator:mgmt-c1:beef0123beef0123", created_at=NOW + timedelta(seconds=1))
    targets = _listing([c1, c2], [candidate])
    inv = take_inventory(targets, journal, [c1, c2], NOW + timedelta(seconds=5))
    assert len(targets) == 1, [t.where for t in targets]
    (entry,) = inv.entries
    assert (entry.token_id, entry.cls, entry.policy) == (TOKEN, "managed", "mgmt-c1"), entry.reason
    assert inv.findings() == []
    assert inv.policies_on[targets[0].name] == frozenset({"mgmt-c1", "mgmt-c2"})


def test_a_failed_run_s_token_is_one_orphan_not_an_orphan_and_a_suspicious_token(tmp_path, journal) -> None:
    c1, c2 = _policy(tmp_path, "mgmt-c1", C1), _policy(tmp_path, "mgmt-c2", C2)
    journal.begin_run(RunRecord(run_id="abcd0123abcd0123", policy="mgmt-c1", state=RunState.FAILED, kind="rotate",
                                started_at=NOW, updated_at=NOW, finished_at=NOW))  # fmt: skip
    left = TokenInfo(TOKEN, "rotator:mgmt-c1:abcd0123abcd0123", created_at=NOW + timedelta(seconds=1))
    inv = take_inventory(_listing([c1, c2], [left]), journal, [c1, c2], NOW + timedelta(minutes=1))
    assert [(e.token_id, e.cls, e.policy) for e in inv.entries] == [(TOKEN, "orphan", "mgmt-c1")]
    assert [e.cls for e in inv.findings()] == ["orphan"]


def test_management_tokens_of_another_account_are_another_place(tmp_path) -> None:
    mine, theirs = _policy(tmp_path, "mgmt-a", C1), _policy(tmp_path, "mgmt-b", C1, account=OTHER_ACCOUNT)
    assert len(policy_targets([mine, theirs])) == 2


def test_database_tokens_stay_the_cluster_s(tmp_path) -> None:
    """A database token is made for one cluster (its listing has a cluster_id): two clusters, two places."""
    db1 = _policy(tmp_path, "db-c1", C1, kind="influxctl-database")
    db2 = _policy(tmp_path, "db-c2", C2, kind="influxctl-database")
    targets = policy_targets([db1, db2])
    assert len(targets) == 2 and all(C1 in t.where or C2 in t.where for t in targets)
