"""CreateSecret losing a race, on moto in server mode (tests/aws_server.py).

read_current found the secret absent; before the store's CreateSecret, someone else created it (Terraform,
say). Without a value, that secret is what the store already writes into (its first value through
PutSecretValue): the publish goes on, with the same ownership rule as a secret found empty by the read
(tags naming another policy stop it). It was a self-contradictory ConflictError ("expected AWSCURRENT on
no version (create only), it is on no version"), and the run discarded the token it had minted.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rotator.adapters.aws.secretsmanager import AwsSecretsManagerSettings, AwsSecretsManagerStore
from rotator.core.contracts import AdapterContext, StoreState, TokenRecord
from rotator.core.errors import ConflictError
from rotator.core.secret import Secret
from tests.aws_server import FailingClient, MotoServer, client_error

POLICY = "influx-mgmt"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
OURS = [{"Key": "managed-by", "Value": "rotator"}, {"Key": "policy", "Value": POLICY}]
ANOTHER_POLICY = [{"Key": "managed-by", "Value": "rotator"}, {"Key": "policy", "Value": "another-policy"}]


def token_record(token_id: str) -> TokenRecord:
    return TokenRecord(value=Secret(f"test-token-value-{uuid.uuid4().hex}"), token_id=token_id,
                       issuer="influxctl-management", policy=POLICY, created_at=NOW,
                       expires_at=NOW + timedelta(days=30))


def secret_name() -> str:
    return f"tests/race-{uuid.uuid4().hex[:10]}"


def make_store(aws: MotoServer, name: str, client: Any) -> AwsSecretsManagerStore:
    model = AwsSecretsManagerSettings(secret_id=name, region=aws.region, endpoint_url=aws.url, max_attempts=1)
    return AwsSecretsManagerStore.from_config(model, AdapterContext(policy=POLICY), client_factory=lambda s, p: client)


def stages(aws: MotoServer, name: str) -> dict[str, list[str]]:
    answer = aws.client().describe_secret(SecretId=name)
    return {v: s for v, s in answer.get("VersionIdsToStages", {}).items() if s}


def tags(aws: MotoServer, name: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in aws.client().describe_secret(SecretId=name).get("Tags", [])}


class CreatedFirst:
    """Wraps a real client: just before the store's CreateSecret reaches Secrets Manager, ``first()`` runs
    (another writer creating the secret), so that the store's own call meets ResourceExistsException."""

    def __init__(self, real: Any, first: Callable[[], None]) -> None:
        self._real, self._first = real, first

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._real, name)
        if name != "create_secret":
            return method

        def call(**kwargs: Any) -> Any:
            self._first()
            return method(**kwargs)

        return call


def not_found() -> Exception:
    return client_error("ResourceNotFoundException", 400, "DescribeSecret")


@pytest.mark.parametrize("interloper_tags", [[], OURS], ids=["untagged", "tagged-for-this-policy"])
def test_a_secret_created_empty_after_the_read_gets_the_token(aws, interloper_tags):
    """The real race: read_current finds nothing, the secret is created (no value) before CreateSecret."""
    name = secret_name()

    def terraform() -> None:
        aws.client().create_secret(Name=name, Description="made by terraform", Tags=interloper_tags)

    store = make_store(aws, name, CreatedFirst(aws.client(), terraform))
    assert store.read_current() == StoreState(version=None, managed=False, record=None)
    record = token_record("tok-1")
    version = store.publish(record, None)
    assert stages(aws, name) == {version: ["AWSCURRENT"]}, "no AWSPENDING left behind"
    assert tags(aws, name) == {"managed-by": "rotator", "policy": POLICY}
    assert aws.client().describe_secret(SecretId=name)["Description"] == "made by terraform", "not the store's create"
    assert store.read_current() == StoreState(version=version, managed=True, record=record)


def test_the_first_describe_not_finding_the_empty_secret_publishes_into_it(aws):
    """The publish's own DescribeSecret answers not-found once (the secret created just after it)."""
    name = secret_name()
    aws.client().create_secret(Name=name, Description="made by terraform")
    client = FailingClient(aws.client(), "describe_secret", not_found())
    store = make_store(aws, name, client)
    record = token_record("tok-1")
    version = store.publish(record, None)
    assert [call for call, _ in client.calls][:3] == ["describe_secret", "create_secret", "describe_secret"]
    assert stages(aws, name) == {version: ["AWSCURRENT"]}
    assert tags(aws, name) == {"managed-by": "rotator", "policy": POLICY}
    assert store.read_current() == StoreState(version=version, managed=True, record=record)


def test_a_secret_created_meanwhile_for_another_policy_is_refused_and_left_alone(aws):
    """Tags naming another policy: the engine's ownership check refuses such a secret without `adopt`, so
    the store writes nothing into it; the next run's read shows the marker to that check."""
    name = secret_name()

    def other_policy() -> None:
        aws.client().create_secret(Name=name, Tags=ANOTHER_POLICY)

    store = make_store(aws, name, CreatedFirst(aws.client(), other_policy))
    with pytest.raises(ConflictError) as caught:
        store.publish(token_record("tok-1"), None)
    message = str(caught.value)
    assert "created by another writer" in message and "'another-policy'" in message, message
    assert "it is on no version" not in message
    assert "adopt" in (caught.value.hint or "")
    assert stages(aws, name) == {}, "nothing written"
    assert tags(aws, name) == {"managed-by": "rotator", "policy": "another-policy"}
    assert store.read_current() == StoreState(version=None, managed=True, record=None,
                                              marker_policy="another-policy")


def test_a_secret_that_exists_for_create_but_not_for_describe_is_a_conflict_that_says_so(aws):
    """CreateSecret says it exists, DescribeSecret says it does not (deleted meanwhile): not the
    self-contradictory "expected AWSCURRENT on no version ..., it is on no version"."""
    name = secret_name()
    aws.client().create_secret(Name=name)
    store = make_store(aws, name, FailingClient(aws.client(), "describe_secret", not_found(), times=2))
    with pytest.raises(ConflictError) as caught:
        store.publish(token_record("tok-1"), None)
    message = str(caught.value)
    assert "CreateSecret answered that a secret named" in message and "DescribeSecret" in message, message
    assert "it is on no version" not in message


@pytest.mark.parametrize("at_read", ["absent", "empty-untagged"])
def test_a_secret_tagged_for_another_policy_after_the_read_is_refused_and_left_alone(aws, at_read):
    """The same race one step earlier: the secret is created (or tagged) for another policy between PLAN's
    read and the publish's DescribeSecret. The engine's ownership check never saw that marker, so the
    publish must not write into the secret and retag it for this policy: it refuses as CreateSecret's race
    does, and the next run's read shows the marker to that check."""
    name = secret_name()
    if at_read == "empty-untagged":
        aws.client().create_secret(Name=name)
    store = make_store(aws, name, aws.client())
    assert store.read_current().marker_policy is None
    if at_read == "absent":
        aws.client().create_secret(Name=name, Tags=ANOTHER_POLICY)
    else:
        aws.client().tag_resource(SecretId=name, Tags=ANOTHER_POLICY)
    with pytest.raises(ConflictError) as caught:
        store.publish(token_record("tok-1"), None)
    message = str(caught.value)
    assert "after rotator read it" in message and "'another-policy'" in message and "nothing was written" in message
    assert "adopt" in (caught.value.hint or "")
    assert stages(aws, name) == {}, "nothing written"
    versions = aws.client().list_secret_version_ids(SecretId=name, IncludeDeprecated=True)["Versions"]
    assert versions == [], "no version put, not even one without a label"
    assert tags(aws, name) == {"managed-by": "rotator", "policy": "another-policy"}
    assert store.read_current() == StoreState(version=None, managed=True, record=None,
                                              marker_policy="another-policy")


def test_an_empty_secret_tagged_for_another_policy_at_the_read_is_written_as_adopt_allows(aws):
    """The marker was there at PLAN's read, so the engine's ownership check saw it and let the publish go
    on (`adopt = true`): the store takes the secret over, as before."""
    name = secret_name()
    aws.client().create_secret(Name=name, Tags=ANOTHER_POLICY)
    store = make_store(aws, name, aws.client())
    assert store.read_current().marker_policy == "another-policy"
    record = token_record("tok-1")
    version = store.publish(record, None)
    assert stages(aws, name) == {version: ["AWSCURRENT"]}
    assert tags(aws, name) == {"managed-by": "rotator", "policy": POLICY}
    assert store.read_current() == StoreState(version=version, managed=True, record=record)
