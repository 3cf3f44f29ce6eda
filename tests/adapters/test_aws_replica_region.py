"""A store whose region holds a replica of the secret (against moto's server).

Secrets Manager refuses every write to a replica ("Operation not permitted on a replica secret"). A store
pointed at one (bootstrapped in us-east-1, replicated to us-west-2, then `region = "us-west-2"`) used to
mint, verify, fail at PutSecretValue with the generic hint and revoke the candidate: one token churned per
attempt, every daemon tick, and `rotate --dry-run` said "would mint". DescribeSecret names a replica's
PrimaryRegion: read_current now refuses it with a ConfigError naming the primary's region, before any mint.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from rotator.core.contracts import StoreState, read_for_reading
from rotator.core.errors import ConfigError, WriteBlocked
from tests.adapters.test_aws_secretsmanager import (
    POLICY,
    CliScenario,
    _policy_toml,
    make_store,
    secret_name,
    stages,
    token_record,
)
from tests.aws_server import MotoServer

PRIMARY, REPLICA = "us-east-1", "us-west-2"


class _Rewritten:
    """A real client whose DescribeSecret answers are changed by ``rewrite`` (what moto does not send:
    AWS's PrimaryRegion on a primary, a malformed one, none for a moment)."""

    def __init__(self, real: Any, rewrite: Any) -> None:
        self._real, self._rewrite = real, rewrite
        self.called: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._real, name)
        self.called.append(name)
        if name != "describe_secret":
            return method
        return lambda **kwargs: self._rewrite(dict(method(**kwargs)))


def _replicated(aws: MotoServer) -> tuple[str, str]:
    """A managed secret in PRIMARY holding a record, replicated to REPLICA: (name, token id)."""
    name, record = secret_name(), token_record("tok-1")
    make_store(aws, name).publish(record, None)
    aws.client().replicate_secret_to_regions(SecretId=name, AddReplicaRegions=[{"Region": REPLICA}])
    return name, record.token_id


def _in_replica(aws: MotoServer, name: str, client: Any = None, **settings: Any) -> Any:
    replica = client or aws.client(region=REPLICA)
    return make_store(aws, name, client_factory=lambda s, p: replica, **{"region": REPLICA, **settings})


def _minted(fake: Any) -> list[str]:
    return [t["id"] for t in fake.state.tokens() if t["description"].startswith(f"rotator:{POLICY}:")]


def test_read_current_of_a_replica_is_a_config_error_naming_the_primary_region(aws):
    name, token_id = _replicated(aws)
    with pytest.raises(ConfigError) as caught:
        _in_replica(aws, name).read_current()
    error = caught.value
    assert isinstance(error, WriteBlocked)  # (secretsmanager.ReplicaSecretError)
    assert f"the secret in {REPLICA} is a replica of the primary in {PRIMARY}" in str(error)
    assert f'set region = "{PRIMARY}" in the store' in error.hint
    assert f":secretsmanager:{PRIMARY}:" in error.hint  # the primary's ARN, the other way out
    # A reader (sync's source, a management token read in the replica's region) still gets the value.
    assert isinstance(error.state, StoreState) and error.state.token_id == token_id


def test_a_reader_still_reads_the_replica(aws, caplog):
    name, token_id = _replicated(aws)
    state = read_for_reading(_in_replica(aws, name), logging.getLogger("test"))
    assert state.managed and state.token_id == token_id
    assert "replica of the primary" in caplog.text


def test_a_replica_named_by_its_arn_gets_the_primary_arn_in_the_hint(aws):
    name, _ = _replicated(aws)
    replica_arn = aws.client(region=REPLICA).describe_secret(SecretId=name)["ARN"]
    with pytest.raises(ConfigError) as caught:
        _in_replica(aws, replica_arn, region=None).read_current()
    primary_arn = aws.client().describe_secret(SecretId=name)["ARN"]
    assert caught.value.hint == f"set secret_id = {json.dumps(primary_arn)} in the store (the primary's ARN)"


def test_the_primary_region_reads_and_publishes_also_when_describe_names_its_own_region(aws):
    """AWS may send PrimaryRegion for a primary too (its own region): that is no replica."""
    name, token_id = _replicated(aws)
    client = _Rewritten(aws.client(), lambda answer: {**answer, "PrimaryRegion": PRIMARY})
    store = make_store(aws, name, client_factory=lambda s, p: client)
    state = store.read_current()
    assert state.token_id == token_id
    version = store.publish(token_record("tok-2"), state.version)
    assert stages(aws, name)[version] == ["AWSCURRENT"]


def test_a_primary_region_that_is_not_a_region_name_is_not_quoted(aws):
    name, _ = _replicated(aws)
    odd = "us-east-1\n; touch /tmp/x"
    client = _Rewritten(aws.client(region=REPLICA), lambda answer: {**answer, "PrimaryRegion": odd})
    with pytest.raises(ConfigError) as caught:
        _in_replica(aws, name, client).read_current()
    text = f"{caught.value} {caught.value.hint}"
    assert "a replica of the primary in another region" in text and "touch" not in text
    assert f"--region {REPLICA}" in caught.value.hint  # where describe-secret shows the primary's region


@pytest.mark.parametrize("hidden", [1, 2], ids=["seen-by-publish", "put-refused"])
def test_a_secret_made_a_replica_after_read_current_is_refused_before_anything_is_written(aws, hidden):
    """A replica since read_current (ForceOverwriteReplicaSecret): publish's DescribeSecret tells it; if that
    did not show it either (``put-refused``), PutSecretValue's refusal gets the same error."""
    name, _ = _replicated(aws)
    unshown = [hidden]  # the first DescribeSecret answers without PrimaryRegion

    def rewrite(answer: dict[str, Any]) -> dict[str, Any]:
        if unshown[0]:
            unshown[0] -= 1
            answer.pop("PrimaryRegion", None)
        return answer

    client = _Rewritten(aws.client(region=REPLICA), rewrite)
    store = _in_replica(aws, name, client)
    state = store.read_current()
    before = stages(aws, name)
    with pytest.raises(ConfigError) as caught:
        store.publish(token_record("tok-2"), state.version)
    assert f"replica of the primary in {PRIMARY}" in str(caught.value)
    assert f'region = "{PRIMARY}"' in caught.value.hint
    assert stages(aws, name) == before
    assert ("put_secret_value" in client.called) == (hidden == 2)


def test_rotate_and_its_dry_run_refuse_a_replica_before_minting(aws, fake_influxctl, tmp_path):
    sc = CliScenario(tmp_path, aws, fake_influxctl, secret_name(), grace_s=1)
    sc.config.write_text(_policy_toml(sc.name, aws.url, grace="1s"))
    value, first = fake_influxctl.state.add_token("human")
    sc.values.add(value)
    (sc.dir / "first").write_text(value)
    r = sc.cli("bootstrap", POLICY, "--token-file", str(sc.dir / "first"), "--token-id", first)
    assert r.returncode == 0, r.stderr
    aws.client().replicate_secret_to_regions(SecretId=sc.name, AddReplicaRegions=[{"Region": REPLICA}])
    primary_config = sc.config.read_text()
    assert f'region = "{PRIMARY}"' in primary_config
    sc.config.write_text(primary_config.replace(f'region = "{PRIMARY}"', f'region = "{REPLICA}"'))

    for args in ((), ("--dry-run",)):
        r = sc.cli("rotate", POLICY, *args)
        assert r.returncode != 0, r.stdout
        assert f"is a replica of the primary in {PRIMARY}" in r.stderr
        assert f'set region = "{PRIMARY}"' in r.stderr
        assert "would mint" not in r.stdout
    assert _minted(fake_influxctl) == [], "a rotation minted a token it could never publish"

    sc.config.write_text(primary_config)  # the fix the hint names
    r = sc.cli("rotate", POLICY)
    assert r.returncode == 0, r.stderr
    assert len(_minted(fake_influxctl)) == 1
    sc.check_invariants()
