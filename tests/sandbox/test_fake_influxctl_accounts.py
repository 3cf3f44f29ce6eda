"""The fake influxctl reaches the account and cluster a Cloud Dedicated profile names, as influxctl does.

It listed the state's tokens whatever the profile's ``account_id``, ``cluster_id`` or ``--account`` and
``--cluster`` said, so a test could not see a profile that names another account. Management tokens are the
account's (facts file 1.5: no cluster id; ``management list`` shows the same tokens from every cluster of the
account); database tokens are each cluster's own.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from rotator.sandbox.influxctl_state import write_profile
from tests.fakes.fixtures import FakeInfluxctlFixture

FOREIGN = "99999999-9999-4999-8999-999999999999"


def run(fake: FakeInfluxctlFixture, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return fake.run("--config", str(config), *args)


def ids(done: subprocess.CompletedProcess[str]) -> list[str]:
    assert done.returncode == 0, done.stderr
    return [item["id"] for item in json.loads(done.stdout) or []]


@pytest.fixture
def token(fake_influxctl: FakeInfluxctlFixture) -> tuple[str, str]:
    return fake_influxctl.state.add_token("someone's token")


def dedicated(fake: FakeInfluxctlFixture, value: str, name: str = "config.toml", **ids: str) -> Path:
    keys = {"account_id": fake.state.account_id, "cluster_id": fake.state.cluster_id, **ids}
    return write_profile(fake.workdir / name, mgmt_token=value, product="dedicated", **keys)


@pytest.mark.parametrize(("override", "what"), [
    ({"account_id": FOREIGN}, f'account "{FOREIGN}" not found'),
    ({"cluster_id": FOREIGN}, f'cluster "{FOREIGN}" not found'),
])  # fmt: skip
def test_a_profile_naming_another_account_or_cluster_is_not_found(fake_influxctl, token, override, what) -> None:
    value, _ = token
    config = dedicated(fake_influxctl, value, **override)
    for args in (("management", "list", "--format", "json"), ("management", "create", "--description", "x"),
                 ("token", "list", "--format", "json")):  # fmt: skip
        done = run(fake_influxctl, config, *args)
        assert (done.returncode, done.stdout) == (1, ""), args
        assert done.stderr == f"Error: rpc error: code = NotFound desc = {what}" + (
            f' in account "{fake_influxctl.state.account_id}"\n' if "cluster" in what else "\n")
    assert len(fake_influxctl.state.tokens()) == 1, "nothing was created"


def test_account_and_cluster_flags_override_the_profile(fake_influxctl, token) -> None:
    value, token_id = token
    right = dedicated(fake_influxctl, value)
    assert ids(run(fake_influxctl, right, "management", "list", "--format", "json")) == [token_id]
    for flag in ("--account", "--cluster"):
        done = fake_influxctl.run(flag, FOREIGN, "--config", str(right), "management", "list", "--format", "json")
        assert done.returncode == 1 and "code = NotFound" in done.stderr, flag
    wrong = dedicated(fake_influxctl, value, "wrong.toml", account_id=FOREIGN, cluster_id=FOREIGN)
    state = fake_influxctl.state
    done = fake_influxctl.run("--account", state.account_id.upper(), "--cluster", state.cluster_id, "--config",
                              str(wrong), "management", "list", "--format", "json")  # fmt: skip
    assert ids(done) == [token_id], "ids are UUIDs: their case does not matter"


def test_management_tokens_are_the_account_s_through_any_of_its_clusters(fake_influxctl, token) -> None:
    value, token_id = token
    second = fake_influxctl.state.add_cluster()
    assert fake_influxctl.state.cluster_ids == [fake_influxctl.state.cluster_id, second]
    one = dedicated(fake_influxctl, value, "one.toml")
    two = dedicated(fake_influxctl, value, "two.toml", cluster_id=second)
    created = run(fake_influxctl, two, "management", "create", "--description", "made through two")
    assert created.returncode == 0, created.stderr
    both = ids(run(fake_influxctl, one, "management", "list", "--format", "json"))
    assert len(both) == 2 and token_id in both
    assert ids(run(fake_influxctl, two, "management", "list", "--format", "json")) == both
    made = next(i for i in both if i != token_id)
    assert run(fake_influxctl, one, "management", "revoke", "--force", made).returncode == 0
    assert fake_influxctl.state.token_by_id(made)["revoked_at"] is not None  # type: ignore[index]


def test_database_tokens_are_each_cluster_s_own(fake_influxctl, token) -> None:
    value, _ = token
    second = fake_influxctl.state.add_cluster()
    _, first_db = fake_influxctl.state.add_db_token("dashboards", {"read": ["db1"]})
    _, second_db = fake_influxctl.state.add_db_token("ingest", {"write": ["db1"]}, cluster_id=second)
    one = dedicated(fake_influxctl, value, "one.toml")
    two = dedicated(fake_influxctl, value, "two.toml", cluster_id=second)
    assert ids(run(fake_influxctl, one, "token", "list", "--format", "json")) == [first_db]
    assert ids(run(fake_influxctl, two, "token", "list", "--format", "json")) == [second_db]
    assert run(fake_influxctl, two, "token", "create", "--read-database=db1", "through two").returncode == 0
    assert len(ids(run(fake_influxctl, two, "token", "list", "--format", "json"))) == 2
    assert ids(run(fake_influxctl, one, "token", "list", "--format", "json")) == [first_db]
    done = run(fake_influxctl, one, "token", "revoke", "--force", second_db)
    assert done.returncode == 1 and "database token not found" in done.stderr, "another cluster's token"


def test_authentication_comes_first(fake_influxctl) -> None:
    config = dedicated(fake_influxctl, "M.V1." + "A" * 43, account_id=FOREIGN)
    done = run(fake_influxctl, config, "management", "list")
    assert done.stderr == "Error: rpc error: code = Unauthenticated desc = unauthorized\n"


def test_a_clustered_profile_names_no_account(fake_influxctl, token) -> None:
    value, token_id = token
    config = write_profile(fake_influxctl.workdir / "c.toml", mgmt_token=value, host="cluster.test.invalid")
    done = fake_influxctl.run("--account", FOREIGN, "--config", str(config), "management", "list", "--format", "json")
    assert ids(done) == [token_id]
