"""Which keys of an influxctl profile name its cluster, for the inventory as for `rotator sync`
(rotator.observe.cluster_keys.CLUSTER_KEYS): on Cloud Dedicated the account and the cluster, not the host
(it serves query and write only; listing tokens is a management command, sent to the account's API).

A Dedicated policy without ``host`` and an operator's ``--influxctl-profile`` whose profile has one are
one place: a tagged orphan of the policy listed through the bare profile is an ``orphan``, not
``suspicious`` ("a policy that does not use this issuer").
"""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.config.policy import parse_config
from rotator.config.policy_types import Policy
from rotator.core.contracts import TokenInfo
from rotator.core.journal import RunRecord, RunState, open_journal
from rotator.observe.inventory import Target, influxctl_profile_targets, policy_targets, take_inventory

ACCOUNT = "11111111-1111-4111-8111-111111111111"
CLUSTER = "33333333-3333-4333-8333-333333333333"
RUN = "aaaa1111bbbb2222"
ORPHAN = "44444444-4444-4444-8444-444444444444"


def _policy(tmp_path: Path, profile_table: str) -> Policy:
    return parse_config(tomllib.loads(f"""
[[policy]]
name = "mgmt"
schedule = "30d"
[policy.issuer]
type = "influxctl-management"
[policy.issuer.profile]
{profile_table}
[[policy.store]]
type = "vault-kv2"
url = "http://127.0.0.1:1"
path = "x"
[policy.store.auth]
method = "token"
token = {{ file = "t" }}
"""), tmp_path / "rotator.toml").policies[0]


def _bare(tmp_path: Path, profile_keys: str, name: str = "ops") -> Target:
    """An operator's --influxctl-profile PATH:NAME (listing through it is replaced below: only its place counts)."""
    path = tmp_path / "config.toml"
    path.write_text(f'[[profile]]\nname = "{name}"\n{profile_keys}\nmgmt_token = "M.V1.{"a" * 40}"\n')
    (target,) = influxctl_profile_targets(f"{path}:{name}", None)
    return target


DEDICATED_POLICY = f'product = "dedicated"\naccount_id = "{ACCOUNT}"\ncluster_id = "{CLUSTER}"'


@pytest.mark.parametrize(("profile_keys", "same"), [
    # the operator's profile adds the data plane's host (and a port): still the policy's cluster
    (f'product = "dedicated"\naccount_id = "{ACCOUNT}"\ncluster_id = "{CLUSTER}"\n'
     f'host = "{CLUSTER}.a.influxdb.io"\nport = "8443"', True),
    (f'product = "dedicated"\naccount_id = "{ACCOUNT.upper()}"\ncluster_id = "{CLUSTER}"', True),
    # another cluster of the account: the same management tokens (they are the account's, not a cluster's:
    # tests/observe/test_inventory_dedicated_account.py)
    (f'product = "dedicated"\naccount_id = "{ACCOUNT}"\ncluster_id = "{ACCOUNT}"\n'
     f'host = "{CLUSTER}.a.influxdb.io"', True),
    # another account, whatever host says: another place
    (f'product = "dedicated"\naccount_id = "{CLUSTER}"\ncluster_id = "{CLUSTER}"\n'
     f'host = "{CLUSTER}.a.influxdb.io"', False),
    ('product = "clustered"\nhost = "cluster.test.invalid"', False),
])
def test_a_dedicated_cluster_is_its_account_and_cluster_not_its_host(tmp_path: Path, profile_keys: str,
                                                                      same: bool) -> None:  # fmt: skip
    policy = _policy(tmp_path, DEDICATED_POLICY)
    (mine,) = policy_targets([policy])
    bare = _bare(tmp_path, profile_keys)
    now = datetime.now(UTC)
    journal = open_journal(f"sqlite:///{tmp_path / 'j.db'}")
    # a run that failed after its mint reached the issuer: the token carries its tag, the journal no id
    journal.begin_run(RunRecord(run_id=RUN, policy="mgmt", state=RunState.FAILED, kind="rotate",
                                started_at=now - timedelta(minutes=2), updated_at=now - timedelta(minutes=1)))

    class Lister:
        def list_tokens(self, credential: Any) -> list[TokenInfo]:
            return [TokenInfo(ORPHAN, f"rotator:mgmt:{RUN}", created_at=now - timedelta(minutes=1, seconds=30))]

    listed = Target(bare.name, bare.kind, [(None, Lister(), lambda: None)], bare.where)  # type: ignore[list-item]
    inv = take_inventory([listed], journal, [policy], now)
    (entry,) = inv.entries
    assert (entry.cls, entry.policy) == (("orphan", "mgmt") if same else ("suspicious", "mgmt")), entry.reason
    assert inv.policies_on[bare.name] == (frozenset({"mgmt"}) if same else frozenset())
    assert (bare.where == mine.where) is same, (bare.where, mine.where)


def test_a_clustered_cluster_is_its_host_and_port(tmp_path: Path) -> None:
    """Unchanged for Clustered (and so the metric label of its targets): host in any case, port 443 or none."""
    policy = _policy(tmp_path, 'product = "clustered"\nhost = "cluster.test.invalid"')
    (mine,) = policy_targets([policy])
    assert mine.where == "influxctl-management|profile='clustered/cluster.test.invalid/443//'"
    assert _bare(tmp_path, 'product = "clustered"\nhost = "Cluster.Test.Invalid."\nport = "443"').where == mine.where
    assert _bare(tmp_path, 'product = "clustered"\nhost = "cluster.test.invalid"\nport = "8443"').where != mine.where


def test_influxctl_profile_splits_path_and_name_at_the_last_colon(tmp_path: Path) -> None:
    """PATH[:NAME] as rotator sync's --from FILE:POLICY: a profile name holds no ':', a directory may."""
    directory = tmp_path / "host:8086"
    directory.mkdir()
    path = directory / "config.toml"
    path.write_text('[[profile]]\nname = "default"\nproduct = "clustered"\nhost = "a.invalid"\n'
                    f'mgmt_token = "M.V1.{"a" * 40}"\n'
                    '[[profile]]\nname = "prod"\nproduct = "clustered"\nhost = "b.invalid"\n'
                    f'mgmt_token = "M.V1.{"b" * 40}"\n')  # fmt: skip
    (prod,) = influxctl_profile_targets(f"{path}:prod", None)
    assert prod.name == f"influxctl-management:{path}:prod" and "b.invalid" in prod.where
    (default,) = influxctl_profile_targets(str(path), None)  # no NAME: the default profile
    assert default.name == f"influxctl-management:{path}:default" and "a.invalid" in default.where
