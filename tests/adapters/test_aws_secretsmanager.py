"""The aws-secretsmanager store against moto in server mode (its own process, tests/aws_server.py).

What Secrets Manager adds to the store contract (the contract itself runs over every store in
tests/contract/test_stores.py): staging labels, idempotence by version, ownership tags, AWSPENDING
left by others; the engine driving it (conflict, unmanaged, adopt), error mapping that needs no stub, and one
end-to-end rotation through the CLI. AWS behaviour moto gets wrong is pinned with botocore's
Stubber in tests/adapters/test_aws_secretsmanager_stubber.py.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from pydantic import ValidationError

from rotator.adapters.aws.secretsmanager import (
    AwsSecretsManagerSettings,
    AwsSecretsManagerStore,
    PendingRotationError,
    boto3_client,
)
from rotator.config import registry
from rotator.config.adapter_settings import validate_settings
from rotator.config.policy import parse_config
from rotator.core.clock import FakeClock
from rotator.core.contracts import AdapterContext, StoreState, TokenRecord
from rotator.core.engine import Engine
from rotator.core.errors import (
    ConfigError,
    ConflictError,
    OwnershipError,
    PermanentError,
    RotatorError,
    TransientError,
)
from rotator.core.journal import open_journal
from rotator.core.retry import RetryPolicy
from rotator.core.secret import Secret
from tests.aws_server import FailingClient, MotoServer, client_error
from tests.fakes.fixtures import BINARY as FAKE_INFLUXCTL

POLICY = "influx-mgmt"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


def token_record(token_id: str, policy: str = POLICY) -> TokenRecord:
    return TokenRecord(
        value=Secret(f"test-token-value-{uuid.uuid4().hex}"),
        token_id=token_id,
        issuer="influxctl-management",
        policy=policy,
        created_at=NOW,
        expires_at=NOW + timedelta(days=30),
    )


def secret_name() -> str:
    return f"tests/influx-{uuid.uuid4().hex[:10]}"


def make_store(aws: MotoServer, name: str, *, policy: str = POLICY, client_factory: Any = None,
               own_client: bool = False, **settings: Any) -> AwsSecretsManagerStore:  # fmt: skip
    """A store on moto. With ``own_client`` it builds its client from the settings (boto3_client);
    otherwise it gets the test's (building one costs ~100 ms)."""
    model = AwsSecretsManagerSettings(
        **{"secret_id": name, "region": aws.region, "endpoint_url": aws.url, "max_attempts": 1, **settings}
    )
    if client_factory is None and not own_client:
        client_factory = lambda s, p: aws.client()  # noqa: E731
    return AwsSecretsManagerStore.from_config(model, AdapterContext(policy=policy), client_factory=client_factory)


def stages(aws: MotoServer, name: str) -> dict[str, list[str]]:
    """Labelled versions only, as AWS lists them (moto also lists unlabelled ones with [])."""
    answer = aws.client().describe_secret(SecretId=name)
    return {v: s for v, s in answer.get("VersionIdsToStages", {}).items() if s}


def value_at(aws: MotoServer, name: str, stage: str) -> dict[str, Any]:
    answer = aws.client().get_secret_value(SecretId=name, VersionStage=stage)
    payload: dict[str, Any] = json.loads(answer["SecretString"])
    return payload


def tags(aws: MotoServer, name: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in aws.client().describe_secret(SecretId=name).get("Tags", [])}


# -- publish and read ------------------------------------------------------------------------------


def test_publish_to_an_absent_secret_creates_it_tagged_with_the_payload_as_awscurrent(aws):
    name = secret_name()
    store = make_store(aws, name, kms_key_id="alias/rotator-test", own_client=True)
    assert store.read_current() == StoreState(version=None, managed=False, record=None)
    record = token_record("tok-1")
    version = store.publish(record, None)

    assert stages(aws, name) == {version: ["AWSCURRENT"]}
    assert value_at(aws, name, "AWSCURRENT") == record.payload()
    assert tags(aws, name) == {"managed-by": "rotator", "policy": POLICY}
    assert aws.client().describe_secret(SecretId=name)["KmsKeyId"] == "alias/rotator-test"
    assert store.read_current() == StoreState(version=version, managed=True, record=record)
    assert store.location == f"aws-secretsmanager:{aws.region}/{name}"


def test_second_publish_moves_awscurrent_and_leaves_no_awspending(aws):
    name = secret_name()
    store = make_store(aws, name)
    first = store.publish(token_record("tok-1"), None)
    second_record = token_record("tok-2")
    second = store.publish(second_record, first)

    assert second != first
    assert stages(aws, name) == {first: ["AWSPREVIOUS"], second: ["AWSCURRENT"]}
    assert store.read_current().record == second_record
    assert value_at(aws, name, "AWSPREVIOUS")["token_id"] == "tok-1"


def test_compare_and_set_conflict_when_someone_else_moved_awscurrent(aws):
    name = secret_name()
    store = make_store(aws, name)
    first = store.publish(token_record("tok-1"), None)
    other = aws.client().put_secret_value(SecretId=name, SecretString='{"written": "by someone else"}')["VersionId"]

    with pytest.raises(ConflictError, match=f"expected AWSCURRENT on {first}, it is on {other}") as caught:
        store.publish(token_record("tok-2"), first)
    assert "describe-secret" in caught.value.hint
    assert stages(aws, name) == {first: ["AWSPREVIOUS"], other: ["AWSCURRENT"]}, "nothing written, no AWSPENDING"


def test_publishing_the_same_record_again_returns_the_same_version(aws):
    name = secret_name()
    store = make_store(aws, name)
    first_record, second_record = token_record("tok-1"), token_record("tok-2")
    first = store.publish(first_record, None)
    assert store.publish(first_record, None) == first  # a retried create
    second = store.publish(second_record, first)
    assert store.publish(second_record, first) == second  # a retried publish whose answer was lost
    assert len(aws.client().list_secret_version_ids(SecretId=name)["Versions"]) == 2


def test_a_publish_interrupted_after_its_put_is_finished_by_the_retry_with_the_same_version(aws):
    name = secret_name()
    first = make_store(aws, name).publish(token_record("tok-1"), None)
    failing = FailingClient(aws.client(), "update_secret_version_stage", client_error("InternalServiceError", 500))
    store = make_store(aws, name, client_factory=lambda settings, policy: failing)
    record = token_record("tok-2")

    with pytest.raises(TransientError, match="UpdateSecretVersionStage failed: InternalServiceError"):
        store.publish(record, first)
    (pending,) = [v for v, s in stages(aws, name).items() if s == ["AWSPENDING"]]
    assert store.read_current().version == first, "the put landed, AWSCURRENT did not move"

    assert store.publish(record, first) == pending, "the retry reuses the pending version"
    assert stages(aws, name) == {first: ["AWSPREVIOUS"], pending: ["AWSCURRENT"]}
    assert [c for c, _ in failing.calls].count("put_secret_value") == 1


def test_an_adopting_publish_interrupted_after_its_put_is_finished_by_the_retry(aws):
    """Adopting a secret someone else made (not tagged managed-by yet: the tags come after the move):
    an interrupted move leaves this policy's payload as AWSPENDING. The retry, and any read before
    it, take it for rotator's own leftover (no rotation function is set), not for another system's
    rotation that a person must clear."""
    name = secret_name()
    first = aws.client().create_secret(Name=name, SecretString="an app's own value")["VersionId"]
    failing = FailingClient(aws.client(), "update_secret_version_stage", client_error("InternalServiceError", 500))
    store = make_store(aws, name, client_factory=lambda settings, policy: failing)
    record = token_record("tok-adopted")
    with pytest.raises(TransientError, match="UpdateSecretVersionStage failed: InternalServiceError"):
        store.publish(record, first)
    assert tags(aws, name) == {}, "not tagged yet"
    state = store.read_current()
    assert (state.version, state.managed) == (first, False), "the engine's ownership check (adopt) decides"
    pending = store.publish(record, first)
    assert stages(aws, name) == {first: ["AWSPREVIOUS"], pending: ["AWSCURRENT"]}
    assert value_at(aws, name, "AWSCURRENT")["token_id"] == "tok-adopted"
    assert tags(aws, name) == {"managed-by": "rotator", "policy": POLICY}


def test_every_read_names_its_stage(aws):
    name = secret_name()
    recording = FailingClient(aws.client(), "none", RuntimeError())
    store = make_store(aws, name, client_factory=lambda settings, policy: recording)
    first = store.publish(token_record("tok-1"), None)
    store.read_current()
    store.publish(token_record("tok-2"), first)
    reads = [kwargs for call, kwargs in recording.calls if call == "get_secret_value"]
    assert reads and all("VersionStage" in kwargs for kwargs in reads)


def test_an_empty_secret_reads_as_no_version_and_gets_its_first_value(aws):
    """Created without a value (Terraform does that): no AWSCURRENT yet."""
    name = secret_name()
    aws.client().create_secret(Name=name, Description="made by terraform")
    store = make_store(aws, name)
    assert store.read_current() == StoreState(version=None, managed=False, record=None)
    record = token_record("tok-1")
    version = store.publish(record, None)
    assert stages(aws, name) == {version: ["AWSCURRENT"]}
    assert tags(aws, name) == {"managed-by": "rotator", "policy": POLICY}
    assert store.read_current() == StoreState(version=version, managed=True, record=record)


# -- ownership and malformed values --------------------------------------------------------------


def test_a_managed_secret_without_awscurrent_still_names_its_policy(aws):
    """Its tags say whose it is when no version holds a record: Engine._check_ownership refuses another
    policy's publish over it without ``adopt`` (the record alone let any policy take it over)."""
    name = secret_name()
    aws.client().create_secret(Name=name, Tags=[{"Key": "managed-by", "Value": "rotator"},
                                                {"Key": "policy", "Value": "another-policy"}])
    assert make_store(aws, name).read_current() == StoreState(version=None, managed=True, record=None,
                                                              marker_policy="another-policy")


def test_an_unmanaged_rotator_payload_is_parsed_but_not_managed(aws):
    name = secret_name()
    record = token_record("tok-1")
    version = aws.client().create_secret(Name=name, SecretString=json.dumps(record.payload()))["VersionId"]
    assert make_store(aws, name).read_current() == StoreState(version=version, managed=False, record=record)


def test_a_managed_but_malformed_payload_is_permanent_and_names_the_key(aws):
    name = secret_name()
    payload = {**token_record("tok-1").payload(), "token_id": ""}
    aws.client().create_secret(Name=name, SecretString=json.dumps(payload),
                               Tags=[{"Key": "managed-by", "Value": "rotator"}])  # fmt: skip
    with pytest.raises(PermanentError, match="'token_id' is missing or empty") as caught:
        make_store(aws, name).read_current()
    assert "rotator bootstrap" in caught.value.hint
    assert payload["token"] not in str(caught.value)


def test_a_managed_non_json_value_is_permanent(aws):
    name = secret_name()
    aws.client().create_secret(Name=name, SecretString="not json", Tags=[{"Key": "managed-by", "Value": "rotator"}])
    with pytest.raises(PermanentError, match="not a JSON object"):
        make_store(aws, name).read_current()


# -- AWSPENDING on another version ---------------------------------------------------------------


def test_awspending_without_a_value_stops_the_run_with_the_aws_message_and_the_fix(aws):
    """A rotation function's version: Secrets Manager creates it before createSecret puts a value."""
    name = secret_name()
    store = make_store(aws, name)
    current = store.publish(token_record("tok-1"), None)
    pending = str(uuid.uuid4())
    _start_moto_rotation(aws, name, pending)

    for attempt in (store.read_current, lambda: store.publish(token_record("tok-2"), current)):
        with pytest.raises(PendingRotationError) as caught:
            attempt()
        assert "a previous rotation isn't complete" in str(caught.value)
        assert f"AWSPENDING is on version {pending!r}, AWSCURRENT on {current!r}" in str(caught.value)
        arn = aws.client().describe_secret(SecretId=name)["ARN"]
        assert (f"aws secretsmanager update-secret-version-stage --secret-id {arn} --version-stage AWSPENDING "
                f"--remove-from-version-id {pending} --region {aws.region}") in caught.value.hint  # fmt: skip
    assert stages(aws, name) == {current: ["AWSCURRENT"], pending: ["AWSPENDING"]}, "nothing written"


def test_a_reader_of_a_management_token_reads_awscurrent_during_another_rotation(aws, caplog):
    """management_token_from only reads: while the secret's own rotation is under way (AWSPENDING on
    another version), the database-token policies that depend on it go on with AWSCURRENT."""
    from types import SimpleNamespace

    from rotator.adapters.http.management_api import _ManagementToken

    name = secret_name()
    store = make_store(aws, name, policy="mgmt")
    store.publish(token_record("mgmt-1", policy="mgmt"), None)
    _start_moto_rotation(aws, name, str(uuid.uuid4()))
    with pytest.raises(PendingRotationError):
        store.read_current()  # a writer of that secret stops
    reader = _ManagementToken(SimpleNamespace(management_token=None), AdapterContext(policy="db", clock=FakeClock(NOW)),
                              store)
    assert reader.read().reveal().startswith("test-token-value-")
    assert "a previous rotation isn't complete" in caplog.text


def test_a_pending_rotation_stays_the_refusal_when_awscurrent_is_malformed_too(aws):
    """read_current attaches AWSCURRENT for readers; when that read fails (a malformed payload), the
    refusal a writer must see still comes first, not the MalformedPayload a repair would go past."""
    name = secret_name()
    store = make_store(aws, name)
    current = store.publish(token_record("tok-1"), None)
    aws.client().put_secret_value(SecretId=name, SecretString="not json", VersionStages=["AWSCURRENT"])
    _start_moto_rotation(aws, name, str(uuid.uuid4()))
    with pytest.raises(PendingRotationError) as caught:
        store.read_current()
    assert caught.value.state is None and current


def test_awspending_holding_someone_elses_value_stops_the_run(aws):
    name = secret_name()
    store = make_store(aws, name)
    current = store.publish(token_record("tok-1"), None)
    aws.client().put_secret_value(SecretId=name, SecretString='{"other": "tool"}', VersionStages=["AWSPENDING"])
    with pytest.raises(PendingRotationError, match="a previous rotation isn't complete"):
        store.publish(token_record("tok-2"), current)


def test_awspending_left_by_this_policys_interrupted_publish_is_replaced(aws, caplog):
    """Killed between PutSecretValue and the move: the engine revoked that token; the label goes."""
    name = secret_name()
    store = make_store(aws, name)
    current = store.publish(token_record("tok-1"), None)
    leftover = aws.client().put_secret_value(
        SecretId=name, SecretString=json.dumps(token_record("tok-lost").payload()), VersionStages=["AWSPENDING"]
    )["VersionId"]
    caplog.set_level(logging.WARNING, logger="rotator.adapters.aws_secretsmanager")
    assert store.read_current().version == current
    assert "interrupted publish by this policy" in caplog.text
    new = store.publish(token_record("tok-2"), current)
    assert stages(aws, name) == {current: ["AWSPREVIOUS"], new: ["AWSCURRENT"]}
    assert leftover not in stages(aws, name)


def test_awspending_of_another_policy_is_not_taken_for_a_leftover(aws):
    name = secret_name()
    store = make_store(aws, name)
    current = store.publish(token_record("tok-1"), None)
    aws.client().put_secret_value(SecretId=name, SecretString=json.dumps(token_record("x", policy="other").payload()),
                                  VersionStages=["AWSPENDING"])  # fmt: skip
    with pytest.raises(PendingRotationError):
        store.publish(token_record("tok-2"), current)


def test_the_pending_rotation_hint_quotes_a_version_id_chosen_by_whoever_put_it(aws, tmp_path):
    """The AWSPENDING version's id is the ClientRequestToken of whoever called PutSecretValue (AWS sets
    no pattern, only 32-64 characters). It went into the printed command unquoted: pasted, the command
    ran what the id said with the operator's AWS credentials. Now every value is quoted for the shell,
    and the command, run as printed, calls `aws` with the id as one argument."""
    name = secret_name()
    store = make_store(aws, name)
    current = store.publish(token_record("tok-1"), None)
    pending = "x;touch${IFS}pwned;#'\"$(id)`id`".ljust(40, "-")
    aws.client().put_secret_value(SecretId=name, ClientRequestToken=pending, SecretString='{"other": "tool"}',
                                  VersionStages=["AWSPENDING"])  # fmt: skip

    with pytest.raises(PendingRotationError) as caught:
        store.read_current()

    command = caught.value.hint.split("remove the label: ", 1)[1]
    (tmp_path / "bin").mkdir()
    fake_aws = tmp_path / "bin" / "aws"  # records its arguments, one per NUL
    fake_aws.write_text("#!/bin/sh\nprintf '%s\\0' \"$@\" > args\n")
    fake_aws.chmod(0o755)
    run = subprocess.run(["sh", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=30,
                         env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"})  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert not (tmp_path / "pwned").exists(), "the version id ran as a command"
    arn = aws.client().describe_secret(SecretId=name)["ARN"]
    assert (tmp_path / "args").read_text().split("\0")[:-1] == [
        "secretsmanager", "update-secret-version-stage", "--secret-id", arn, "--version-stage", "AWSPENDING",
        "--remove-from-version-id", pending, "--region", aws.region,
    ]  # fmt: skip
    assert f"AWSPENDING is on version {pending!r}, AWSCURRENT on {current!r}" in str(caught.value)


def test_a_pending_version_id_that_cannot_be_shown_whole_gets_a_placeholder_in_the_command():
    odd = "a\nb" + "c" * 70
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:x-AbCdEf"
    error = PendingRotationError("aws-secretsmanager:x", arn, "eu-west-1", odd, None)
    assert odd not in str(error) and odd not in error.hint and "\n" not in error.hint
    assert "--remove-from-version-id VERSION_ID (describe-secret: the version with AWSPENDING)" in error.hint


def test_a_publish_interrupted_on_a_rotation_enabled_secret_is_finished_by_the_same_publish_again(aws, caplog):
    """Rotation on (every AWS Lambda deployment): a publish (`bootstrap --replace`) whose move and then
    whose removal of AWSPENDING fail leaves its own version as AWSPENDING. It was taken for a rotation
    function's, so the engine's retry, every read and the same command run again were refused; the
    store names its versions rotator-<uuid>, and the same publish finishes with that version."""
    name = secret_name()
    first = make_store(aws, name).publish(token_record("tok-1"), None)
    _enable_rotation(aws, name)
    down = FailingClient(aws.client(), "update_secret_version_stage", client_error("ServiceUnavailable", 503), times=2)
    record = token_record("tok-2")
    caplog.set_level(logging.WARNING, logger="rotator.adapters.aws_secretsmanager")
    with pytest.raises(TransientError, match="UpdateSecretVersionStage failed: ServiceUnavailable"):
        make_store(aws, name, client_factory=lambda settings, policy: down).publish(record, first)
    (pending,) = [v for v, s in stages(aws, name).items() if s == ["AWSPENDING"]]
    assert pending.startswith("rotator-") and 32 <= len(pending) <= 64
    assert "could not remove AWSPENDING" in caplog.text

    store = make_store(aws, name)
    state = store.read_current()
    assert (state.version, state.token_id) == (first, "tok-1"), "AWSCURRENT, what consumers use"
    assert "interrupted publish by this policy" in caplog.text
    assert store.publish(record, first) == pending, "the same publish finishes with the version it put"
    assert stages(aws, name) == {first: ["AWSPREVIOUS"], pending: ["AWSCURRENT"]}
    assert store.read_current().record == record


def test_a_publish_whose_move_fails_on_a_rotation_enabled_secret_removes_its_awspending(aws):
    """Left there, the label would stop Secrets Manager's own rotation ("a previous rotation isn't
    complete") until rotator ran again; the publish run again puts the record anew."""
    name = secret_name()
    first = make_store(aws, name).publish(token_record("tok-1"), None)
    _enable_rotation(aws, name)
    once = FailingClient(aws.client(), "update_secret_version_stage", client_error("ServiceUnavailable", 503))
    record = token_record("tok-2")
    with pytest.raises(TransientError, match="UpdateSecretVersionStage failed: ServiceUnavailable"):
        make_store(aws, name, client_factory=lambda settings, policy: once).publish(record, first)
    assert stages(aws, name) == {first: ["AWSCURRENT"]}

    store = make_store(aws, name)
    assert store.read_current().version == first
    new = store.publish(record, first)
    assert stages(aws, name) == {first: ["AWSPREVIOUS"], new: ["AWSCURRENT"]}
    assert store.read_current().record == record


def test_a_rotation_functions_version_holding_this_policys_payload_is_not_taken_for_the_stores(aws):
    """A rotation's AWSPENDING version has the id Secrets Manager chose: with rotation on, it is the
    function's (its createSecret put this policy's payload), whatever it holds, and nothing is written."""
    name = secret_name()
    store = make_store(aws, name)
    current = store.publish(token_record("tok-1"), None)
    pending = str(uuid.uuid4())
    _start_moto_rotation(aws, name, pending)
    aws.client().put_secret_value(SecretId=name, ClientRequestToken=pending, VersionStages=["AWSPENDING"],
                                  SecretString=json.dumps(token_record("tok-lambda").payload()))  # fmt: skip
    for attempt in (store.read_current, lambda: store.publish(token_record("tok-2"), current)):
        with pytest.raises(PendingRotationError, match="a previous rotation isn't complete"):
            attempt()
    assert stages(aws, name) == {current: ["AWSCURRENT"], pending: ["AWSPENDING"]}, "nothing written"


def _enable_rotation(aws: MotoServer, name: str) -> None:
    """A secret between two rotations of the AWS Lambda function: RotationEnabled, no AWSPENDING (moto
    starts a rotation and fails to invoke its dummy function; the label it left is removed)."""
    token = str(uuid.uuid4())
    _start_moto_rotation(aws, name, token)
    aws.client().update_secret_version_stage(SecretId=name, VersionStage="AWSPENDING", RemoveFromVersionId=token)
    assert aws.client().describe_secret(SecretId=name)["RotationEnabled"]


def _start_moto_rotation(aws: MotoServer, name: str, token: str) -> None:
    """What Secrets Manager does before invoking createSecret: RotationEnabled, and a new
    AWSPENDING version without a value. moto does both, then fails to find the (dummy) function."""
    with pytest.raises(botocore.exceptions.ClientError, match="ResourceNotFoundException"):
        aws.client().rotate_secret(
            SecretId=name, ClientRequestToken=token, RotationRules={"AutomaticallyAfterDays": 30},
            RotationLambdaARN=f"arn:aws:lambda:{aws.region}:{aws.account}:function:rotator-dummy",
        )  # fmt: skip
    assert stages(aws, name).get(token) == ["AWSPENDING"], "moto no longer sets up the rotation as AWS does"


# -- errors, settings, client ----------------------------------------------------------------------


def test_an_endpoint_that_does_not_listen_is_transient(aws):
    from rotator.sandbox.openbao_dev import free_port

    store = make_store(aws, secret_name(), endpoint_url=f"http://127.0.0.1:{free_port()}", timeout_s=2.0,
                       own_client=True)
    with pytest.raises(TransientError, match="cannot reach Secrets Manager for DescribeSecret") as caught:
        store.read_current()
    assert caught.value.__cause__ is None


def test_an_unknown_profile_is_a_config_error(aws):
    store = make_store(aws, secret_name(), profile="no-such-profile", own_client=True)
    with pytest.raises(ConfigError, match="the AWS profile 'no-such-profile' the store's `profile` setting names "
                                          "does not exist") as caught:  # fmt: skip
        store.read_current()
    assert "[profile no-such-profile]" in caught.value.hint


@pytest.mark.parametrize("variable", ["AWS_PROFILE", "AWS_DEFAULT_PROFILE"])
def test_an_unknown_profile_from_the_environment_names_the_variable_not_the_setting(aws, monkeypatch, variable):
    """The message said "the AWS profile in `profile` does not exist" when the store sets no profile and
    $AWS_PROFILE named a missing one: the operator looked at the policy file, where nothing was wrong."""
    monkeypatch.setenv(variable, "no-such-env-profile")
    store = make_store(aws, secret_name(), own_client=True)
    with pytest.raises(ConfigError) as caught:
        store.read_current()
    assert f"the AWS profile 'no-such-env-profile' that ${variable} names does not exist" in str(caught.value)
    assert f"unset ${variable}" in caught.value.hint


def test_a_secret_arn_that_does_not_exist_is_not_created(aws):
    arn = aws.arn("tests/absent-AbCdEf")
    store = make_store(aws, arn, region=None)
    assert store.read_current().version is None
    with pytest.raises(PermanentError, match="does not exist, and a full ARN") as caught:
        store.publish(token_record("tok-1"), None)
    assert f"aws secretsmanager create-secret --region {aws.region} --name tests/absent," in caught.value.hint
    assert not any(s["Name"].startswith("tests/absent") for s in aws.client().list_secrets()["SecretList"])


def test_a_secret_arn_without_suffix_is_created_and_then_named_by_it(aws):
    name = secret_name()
    store = make_store(aws, aws.arn(name), region=None)
    version = store.publish(token_record("tok-1"), None)
    assert store.read_current().version == version
    assert aws.client().describe_secret(SecretId=name)["ARN"].startswith(aws.arn(name) + "-")


def test_role_arn_is_assumed_through_sts(aws):
    settings = AwsSecretsManagerSettings(
        secret_id="tests/x", region=aws.region, endpoint_url=aws.url, sts_endpoint_url=aws.url,
        role_arn=f"arn:aws:iam::{aws.account}:role/rotator", external_id="rotator-ext",
    )  # fmt: skip
    client = boto3_client(settings, POLICY)
    signed: list[Any] = []
    client.meta.events.register("before-send.secrets-manager.*", lambda request, **_: signed.append(request.headers))
    client.create_secret(Name="tests/x", SecretString="{}")  # a call, so the role is assumed
    access_key = re.search(r"Credential=([^/]+)/", signed[0]["Authorization"].decode())
    assert access_key and access_key[1] != "testing", "signed with the assumed role's keys, not the environment's"
    assert signed[0]["X-Amz-Security-Token"], "and with its session token"


class _FakeSts(http.server.BaseHTTPRequestHandler):
    """STS's AssumeRole on loopback (moto's credentials last an hour): each answer has new keys that
    expire ``lifetime`` seconds from now; ``asked`` collects the requests' form fields."""

    lifetime = 3600.0
    asked: list[dict[str, str]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        form = dict(urllib.parse.parse_qsl(self.rfile.read(int(self.headers["Content-Length"])).decode()))
        type(self).asked.append(form)
        n = len(type(self).asked)
        expires = (datetime.now(UTC) + timedelta(seconds=type(self).lifetime)).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = (
            '<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>'
            f"<AssumedRoleUser><AssumedRoleId>AROAFAKE:{form.get('RoleSessionName')}</AssumedRoleId>"
            f"<Arn>{form.get('RoleArn')}</Arn></AssumedRoleUser>"
            f"<Credentials><AccessKeyId>ASIAFAKE{n:08d}</AccessKeyId><SecretAccessKey>fake-secret-{n}"
            f"</SecretAccessKey><SessionToken>fake-session-{n}</SessionToken><Expiration>{expires}</Expiration>"
            "</Credentials></AssumeRoleResult><ResponseMetadata><RequestId>fake</RequestId></ResponseMetadata>"
            "</AssumeRoleResponse>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def _loopback(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("lifetime", "assumed"), [(3600.0, 1), (300.0, 3)])
def test_role_arn_credentials_are_refreshed_before_they_expire(aws, monkeypatch, lifetime, assumed):
    """The role_arn session is built from botocore classes it does not document as public (see
    _assumed_role_session): this runs on the newest botocore (the main CI) and on the lowest that
    pyproject.toml allows (.ci/deps-lowest). Credentials with an hour left are reused; with less than
    botocore's 10-minute margin, the role is assumed again before the next call."""
    monkeypatch.setattr(_FakeSts, "lifetime", lifetime)
    monkeypatch.setattr(_FakeSts, "asked", [])
    with _loopback(_FakeSts) as sts_url:
        settings = AwsSecretsManagerSettings(
            secret_id="tests/x", region=aws.region, endpoint_url=aws.url, sts_endpoint_url=sts_url,
            role_arn=f"arn:aws:iam::{aws.account}:role/rotator", external_id="rotator-ext", max_attempts=1,
        )  # fmt: skip
        client = boto3_client(settings, POLICY)
        signed: list[str] = []
        client.meta.events.register("before-send.secrets-manager.*",
                                    lambda request, **_: signed.append(request.headers["Authorization"].decode()))
        for _ in range(3):
            client.list_secrets()
    keys = [re.search(r"Credential=([^/]+)/", header)[1] for header in signed]  # type: ignore[index]
    assert len(_FakeSts.asked) == assumed
    assert keys == [f"ASIAFAKE{min(i + 1, assumed):08d}" for i in range(3)], "each call signed with the latest keys"
    assert _FakeSts.asked[0] == {"Action": "AssumeRole", "Version": "2011-06-15", "RoleArn": settings.role_arn,
                                 "RoleSessionName": f"rotator-{POLICY}", "ExternalId": "rotator-ext"}


class _ProxyRecorder(http.server.BaseHTTPRequestHandler):
    """An HTTPS proxy that notes where each CONNECT goes and refuses it: nothing leaves the host."""

    targets: list[str] = []

    def do_CONNECT(self) -> None:  # noqa: N802 - http.server's name
        type(self).targets.append(self.path)
        self.send_error(502)

    def log_message(self, *args: Any) -> None:
        pass


def test_role_arn_is_assumed_at_the_regions_sts_endpoint_on_every_botocore(aws_env, monkeypatch):
    """botocore 1.34 (the lowest allowed) sent AssumeRole to the global endpoint (sts.amazonaws.com, in
    us-east-1), the newest to the region's; AWS_STS_REGIONAL_ENDPOINTS (or a profile) switched it too.
    Now it is always the region's, unless sts_endpoint_url names another."""
    monkeypatch.setenv("AWS_STS_REGIONAL_ENDPOINTS", "legacy")
    for variable in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(_ProxyRecorder, "targets", [])
    with _loopback(_ProxyRecorder) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy)
        settings = AwsSecretsManagerSettings(secret_id="prod/influx", region="eu-west-1", role_arn=ROLE,
                                             max_attempts=1, timeout_s=5.0)  # fmt: skip
        store = AwsSecretsManagerStore.from_config(settings, AdapterContext(policy=POLICY))
        with pytest.raises(RotatorError):
            store.read_current()  # the assumption fails at the proxy: no STS here
    assert _ProxyRecorder.targets and set(_ProxyRecorder.targets) == {"sts.eu-west-1.amazonaws.com:443"}


ROLE = "arn:aws:iam::123456789012:role/rotator"
ROLE = "arn:aws:iam::123456789012:role/rotator"


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"secret_id": "x"}, "set `region`, or give `secret_id` as the secret's ARN"),
        ({"secret_id": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:x-AbCdEf", "region": "us-east-1"},
         "differs from the region"),
        ({"secret_id": "has spaces", "region": "us-east-1"}, "`secret_id` must be a secret name"),
        ({"secret_id": "x" * 513, "region": "us-east-1"}, "`secret_id` must be a secret name"),
        ({"secret_id": "x", "region": "Mars"}, "`region` must be an AWS region"),
        ({"secret_id": "x", "region": "us-east-1", "endpoint_url": "ftp://x"}, "`endpoint_url` must be an http://"),
        ({"secret_id": "x", "region": "us-east-1", "endpoint_url": "https://u:p@x"},
         "`endpoint_url` must not carry credentials"),
        ({"secret_id": "x", "region": "us-east-1", "role_arn": ROLE, "sts_endpoint_url": "sts.example"},
         "`sts_endpoint_url` must be an http://"),
        ({"secret_id": "x", "region": "us-east-1", "sts_endpoint_url": "https://sts.example"},
         "`sts_endpoint_url` needs `role_arn`"),
        ({"secret_id": "x", "region": "us-east-1", "profile": ""}, "`profile` must name a profile"),
        ({"secret_id": "x", "region": "us-east-1", "role_arn": "rotator"}, "`role_arn` must be an IAM role ARN"),
        ({"secret_id": "x", "region": "us-east-1", "external_id": "abc"}, "`external_id` needs `role_arn`"),
        ({"secret_id": "x", "region": "us-east-1", "role_arn": ROLE, "external_id": "a"},
         "`external_id` must be 2 to 1224 characters"),
        ({"secret_id": "x", "region": "us-east-1", "role_arn": ROLE, "external_id": "a" * 1225},
         "`external_id` must be 2 to 1224 characters"),
        ({"secret_id": "x", "region": "us-east-1", "kms_key_id": ""}, "`kms_key_id` must name a KMS key"),
        ({"secret_id": "x", "region": "us-east-1", "retry_mode": "legacy"}, "retry_mode\n.*'standard' or 'adaptive'"),
        ({"secret_id": "x", "region": "us-east-1", "max_attempts": 0}, "`max_attempts` must be between 1 and 20"),
        ({"secret_id": "x", "region": "us-east-1", "max_attempts": 21}, "`max_attempts` must be between 1 and 20"),
        ({"secret_id": "x", "region": "us-east-1", "timeout_s": 0}, "`timeout_s` must be more than 0"),
        ({"secret_id": "x", "region": "us-east-1", "timeout_s": 301}, "`timeout_s` must be more than 0"),
        ({"secret_id": "x", "region": "us-east-1", "access_key": "inline"}, "access_key\n.*Unexpected keyword"),
        # A line break copied with a value: `$` matched before it, and the SDK refused it at the first call
        ({"secret_id": "x\n", "region": "us-east-1"}, "`secret_id` must be a secret name"),
        # an ARN's name part is a secret name too (plus AWS's -XXXXXX suffix): it goes into messages and commands
        ({"secret_id": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod\r\x00x-AbCdEf"},
         "`secret_id` must be a secret name"),
        ({"secret_id": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:" + "x" * 520},
         "`secret_id` must be a secret name"),
        ({"secret_id": "x", "region": "us-east-1\n"}, "`region` must be an AWS region"),
        ({"secret_id": "x", "region": "us-east-1", "role_arn": ROLE + "\n"}, "`role_arn` must be an IAM role ARN"),
        ({"secret_id": "x", "region": "us-east-1", "endpoint_url": "http://h\n"},
         "`endpoint_url` must not contain spaces or control characters"),
    ],
)  # fmt: skip
def test_settings_are_validated(settings, reason):
    with pytest.raises(ValidationError, match=reason):
        validate_settings(AwsSecretsManagerSettings, settings)


def test_settings_built_directly_are_checked_normalised_and_hashable():
    with pytest.raises(ValueError, match="`max_attempts` must be between 1 and 20"):
        AwsSecretsManagerSettings(secret_id="x", region="us-east-1", max_attempts=0)
    with pytest.raises(ValueError, match="`retry_mode` must be 'standard' or 'adaptive'"):
        AwsSecretsManagerSettings(secret_id="x", region="us-east-1", retry_mode="legacy")  # type: ignore[arg-type]
    built = AwsSecretsManagerSettings(
        secret_id="x", region="us-east-1", endpoint_url="http://localhost:4566//", role_arn=ROLE,
        sts_endpoint_url="https://sts.example/", timeout_s=5.0,
    )  # fmt: skip
    assert (built.endpoint_url, built.sts_endpoint_url) == ("http://localhost:4566", "https://sts.example")
    loaded = validate_settings(AwsSecretsManagerSettings, {
        "secret_id": "x", "region": "us-east-1", "endpoint_url": "http://localhost:4566/", "role_arn": ROLE,
        "sts_endpoint_url": "https://sts.example", "timeout_s": 5,
    })  # fmt: skip
    assert isinstance(loaded, AwsSecretsManagerSettings) and isinstance(loaded.timeout_s, float)
    assert loaded == built and {built: 1}[loaded] == 1


def test_settings_defaults_region_from_the_arn_and_match_names_and_arns():
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/influx-AbCdEf"
    settings = AwsSecretsManagerSettings(secret_id=arn)
    assert settings.region_name == "eu-west-1" and settings.retry_mode == "standard"
    assert settings.matches(arn, "prod/influx")
    by_name = AwsSecretsManagerSettings(secret_id="prod/influx", region="eu-west-1")
    assert by_name.matches(arn, "prod/influx") and not by_name.matches(arn, "prod/other")
    partial = AwsSecretsManagerSettings(secret_id=arn[:-7])
    assert partial.matches(arn, "prod/influx")


def test_the_store_is_registered_and_its_settings_pass_rotator_validate(aws, tmp_path):
    assert registry.load("store", "aws-secretsmanager") is AwsSecretsManagerStore
    config = tmp_path / "rotator.toml"
    config.write_text(_policy_toml("tests/x", aws.url, grace="1h"))
    proc = _cli(tmp_path, "validate", "-c", str(config))
    assert proc.returncode == 0, proc.stderr


# -- leak check ----------------------------------------------------------------------------------


def test_no_token_value_in_any_log_record_or_error(aws, caplog):
    caplog.set_level(logging.DEBUG)
    name = secret_name()
    store = make_store(aws, name, own_client=True)
    first, second = token_record("tok-1"), token_record("tok-2")
    v1 = store.publish(first, None)
    store.read_current()
    v2 = store.publish(second, v1)
    errors: list[BaseException] = []
    # Every record this test publishes, the refused ones too: a failed publish may not name its value.
    third, fourth = token_record("tok-3"), token_record("tok-4")
    conflict = lambda: store.publish(third, v1)  # noqa: E731
    for attempt in (conflict, lambda: make_store(aws, name).publish(first, None)):
        with pytest.raises(PermanentError) as caught:
            attempt()
        errors.append(caught.value)
    throttled_put = client_error("ThrottlingException", 400, "PutSecretValue")
    failing = FailingClient(aws.client(), "put_secret_value", throttled_put)
    with pytest.raises(TransientError) as throttled:
        make_store(aws, name, client_factory=lambda s, p: failing).publish(fourth, v2)
    errors.append(throttled.value)

    values = [record.value.reveal() for record in (first, second, third, fourth)]
    texts = [r.getMessage() for r in caplog.records] + [f"{e} {getattr(e, 'hint', '')}" for e in errors]
    assert caplog.records
    for text in texts:
        for value in values:
            assert value not in text
    assert all(e.__cause__ is None for e in errors)


# -- through the engine ----------------------------------------------------------------------------


def _policy_toml(name: str, url: str, *, grace: str = "2s", policy: str = POLICY, adopt: bool = False,
                 auth: str = "") -> str:  # fmt: skip
    return f"""
[rotator]
journal = "journal.db"
lease_ttl = "30s"
[rotator.retry]
attempts = 2
base_delay = "1s"
max_delay = "1s"

[[policy]]
name = "{policy}"
schedule = "1h"
grace = "{grace}"
verify_timeout = "20s"
adopt = {str(adopt).lower()}

[policy.issuer]
type = "influxctl-management"
influxctl = {json.dumps(str(FAKE_INFLUXCTL))}
timeout_s = 10
{auth}
[policy.issuer.profile]
product = "clustered"
host = "cluster.test.invalid"
port = 443

[[policy.store]]
type = "aws-secretsmanager"
name = "aws"
secret_id = "{name}"
region = "us-east-1"
endpoint_url = "{url}"
max_attempts = 1
"""


def _engine(tmp_path: Path, toml: str, **kw: Any) -> Engine:
    config = parse_config(_toml_loads(toml), tmp_path / "rotator.toml")
    journal = open_journal(config.journal_url())
    return Engine(config.policies[0], journal, retry=RetryPolicy(2, 0.05, 0.1), **kw)


def _toml_loads(text: str) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(text)


def _bootstrap(aws: MotoServer, fake: Any, name: str) -> tuple[str, str]:
    value, token_id = fake.state.add_token("created by a human for bootstrap")
    record = TokenRecord(Secret(value), token_id, "influxctl-management", POLICY, datetime.now(UTC), None)
    make_store(aws, name).publish(record, None)
    return value, token_id


def test_engine_rotates_through_the_store_and_revokes_the_old_token_after_grace(aws, fake_influxctl, tmp_path):
    name = secret_name()
    value, old_id = fake_influxctl.state.add_token("created by a human for bootstrap")
    engine = _engine(tmp_path, _policy_toml(name, aws.url, grace="1s"))
    engine.bootstrap(Secret(value), old_id, None)  # journaled: what lets rotator revoke it later (invariant 8)
    result = engine.rotate()
    assert result.ok and result.old_token_id == old_id
    current = value_at(aws, name, "AWSCURRENT")
    assert current["token_id"] == result.new_token_id and fake_influxctl.state.is_active(current["token"])
    assert value_at(aws, name, "AWSPREVIOUS")["token_id"] == old_id
    assert fake_influxctl.state.token_by_id(old_id)["revoked_at"] is None, "not before grace"
    time.sleep(1.2)
    assert engine.revoke_due() == [f"token {old_id}: revoked"]
    assert fake_influxctl.state.token_by_id(old_id)["revoked_at"] is not None


def test_engine_refuses_an_unmanaged_secret_without_adopt(aws, fake_influxctl, tmp_path):
    name = secret_name()
    aws.client().create_secret(Name=name, SecretString="an app's own value")
    engine = _engine(tmp_path, _policy_toml(name, aws.url))
    with pytest.raises(OwnershipError, match="does not manage"):
        engine.rotate()
    assert fake_influxctl.state.tokens() == [], "nothing minted"
    assert value_at_raw(aws, name) == "an app's own value"


def value_at_raw(aws: MotoServer, name: str) -> str:
    return str(aws.client().get_secret_value(SecretId=name, VersionStage="AWSCURRENT")["SecretString"])


def test_engine_adopts_an_unmanaged_secret_when_the_policy_says_so(aws, fake_influxctl, tmp_path, monkeypatch):
    name = secret_name()
    aws.client().create_secret(Name=name, SecretString="an app's own value")
    admin, _ = fake_influxctl.state.add_token("operator token for the issuer")
    monkeypatch.setenv("TEST_INFLUX_MGMT_TOKEN", admin)
    auth = '[policy.issuer.auth]\nmethod = "mgmt_token"\ntoken = { env = "TEST_INFLUX_MGMT_TOKEN" }'
    result = _engine(tmp_path, _policy_toml(name, aws.url, adopt=True, auth=auth)).rotate()
    assert result.ok
    assert value_at(aws, name, "AWSCURRENT")["token_id"] == result.new_token_id
    assert tags(aws, name) == {"managed-by": "rotator", "policy": POLICY}


def test_engine_discards_its_token_when_the_secret_changed_after_plan(aws, fake_influxctl, tmp_path):
    name = secret_name()
    _, old_id = _bootstrap(aws, fake_influxctl, name)

    other_value, other_id = fake_influxctl.state.add_token("published by someone else")
    other = TokenRecord(Secret(other_value), other_id, "influxctl-management", POLICY, datetime.now(UTC), None)

    def someone_writes(step: str) -> None:
        if step == "verified":
            aws.client().put_secret_value(SecretId=name, SecretString=json.dumps(other.payload()))

    engine = _engine(tmp_path, _policy_toml(name, aws.url), checkpoint=someone_writes)
    with pytest.raises(ConflictError, match="compare-and-set lost"):
        engine.rotate()
    minted = [t for t in fake_influxctl.state.tokens() if t["description"].startswith(f"rotator:{POLICY}:")]
    assert len(minted) == 1 and minted[0]["revoked_at"] is not None, "the candidate is revoked"
    assert fake_influxctl.state.token_by_id(old_id)["revoked_at"] is None
    assert not [v for v, s in stages(aws, name).items() if "AWSPENDING" in s]


def _failing_moves(monkeypatch: pytest.MonkeyPatch, times: int | None) -> dict[str, int | None]:
    """Every store's UpdateSecretVersionStage fails (transient) the next ``times`` calls (None: until
    ``left["times"]`` is set to 0): a Secrets Manager outage after a publish's put landed."""
    real = AwsSecretsManagerStore._call
    left: dict[str, int | None] = {"times": times}

    def call(self: AwsSecretsManagerStore, operation: str, fn: Any) -> Any:
        if operation == "UpdateSecretVersionStage" and left["times"] != 0:
            if left["times"] is not None:
                left["times"] -= 1
            raise TransientError(f"{self.location}: UpdateSecretVersionStage failed: ServiceUnavailable (simulated)")
        return real(self, operation, fn)

    monkeypatch.setattr(AwsSecretsManagerStore, "_call", call)
    return left


def test_bootstrap_replace_on_a_rotation_enabled_secret_is_rerunnable_after_a_failed_move(
        aws, fake_influxctl, tmp_path, monkeypatch):  # fmt: skip
    """docs/aws-lambda.md: the repair of a Lambda-rotated secret is `rotator bootstrap --replace`, re-runnable.
    Its version left as AWSPENDING (the move, and the removal of the label, failed) refused the same command
    run again: a rotation function's version, by the secret's RotationEnabled."""
    name = secret_name()
    toml = _policy_toml(name, aws.url)
    old_value, old_id = fake_influxctl.state.add_token("first, by a human")
    _engine(tmp_path, toml).bootstrap(Secret(old_value), old_id, None)
    _enable_rotation(aws, name)
    outage = _failing_moves(monkeypatch, None)
    value, token_id = fake_influxctl.state.add_token("repair token, by a human")
    with pytest.raises(TransientError, match="UpdateSecretVersionStage failed"):
        _engine(tmp_path, toml).bootstrap(Secret(value), token_id, None, replace=True, reason="compromised")
    (pending,) = [v for v, s in stages(aws, name).items() if s == ["AWSPENDING"]]

    outage["times"] = 0  # Secrets Manager answers again: the same command
    result = _engine(tmp_path, toml).bootstrap(Secret(value), token_id, None, replace=True, reason="compromised")
    assert result.ok and result.new_token_id == token_id
    assert stages(aws, name).get(pending) == ["AWSCURRENT"] and "AWSPENDING" not in str(stages(aws, name))
    assert value_at(aws, name, "AWSCURRENT")["token_id"] == token_id
    assert value_at(aws, name, "AWSPREVIOUS")["token_id"] == old_id


def test_engine_retries_a_failed_move_on_a_rotation_enabled_secret_within_the_run(aws, fake_influxctl, tmp_path,
                                                                                   monkeypatch):  # fmt: skip
    """The engine retries a publish whose move failed within the run: its retry was refused (the version the
    first try left as AWSPENDING taken for a rotation function's), and the run was left open."""
    name = secret_name()
    value, old_id = fake_influxctl.state.add_token("created by a human for bootstrap")
    _engine(tmp_path, _policy_toml(name, aws.url)).bootstrap(Secret(value), old_id, None)
    _enable_rotation(aws, name)
    _failing_moves(monkeypatch, 2)  # the move, and the removal of AWSPENDING after it
    result = _engine(tmp_path, _policy_toml(name, aws.url)).rotate()
    assert result.ok and result.old_token_id == old_id
    assert value_at(aws, name, "AWSCURRENT")["token_id"] == result.new_token_id
    assert not [v for v, s in stages(aws, name).items() if "AWSPENDING" in s]
    assert fake_influxctl.state.token_by_id(result.new_token_id)["revoked_at"] is None


# -- end to end through the CLI ------------------------------------------------------------------


def _cli(cwd: Path, *args: str, log_file: Path | None = None, crash_at: str | None = None,
         code: str = "from rotator.runners.cli import main\nraise SystemExit(main())\n",
         ) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", code, *args]
    if log_file is not None:
        argv += ["--log-level", "debug", "--log-file", str(log_file)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if crash_at:
        env["ROTATOR_TEST_CRASH_AT"] = crash_at
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=90, stdin=subprocess.DEVNULL)


@dataclass
class CliScenario:
    """A policy on the fake influxctl publishing to a moto secret, run through `rotator`."""

    dir: Path
    aws: MotoServer
    fake: Any
    name: str
    grace_s: int = 2
    outputs: list[str] = field(default_factory=list)
    values: set[str] = field(default_factory=set)

    @property
    def config(self) -> Path:
        return self.dir / "rotator.toml"

    @property
    def log_file(self) -> Path:
        return self.dir / "rotator.log"

    def cli(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        proc = _cli(self.dir, *args, "-c", str(self.config), log_file=self.log_file, **kw)
        self.outputs += [proc.stdout, proc.stderr]
        return proc

    def versions(self) -> list[dict[str, Any]]:
        """Every version's payload, oldest first (values included: test side only)."""
        client = self.aws.client()
        listed = client.list_secret_version_ids(SecretId=self.name, IncludeDeprecated=True)["Versions"]
        out = []
        for item in sorted(listed, key=lambda v: v["CreatedDate"]):
            answer = client.get_secret_value(SecretId=self.name, VersionId=item["VersionId"])
            out.append({"version": item["VersionId"], **json.loads(answer["SecretString"])})
        self.values |= {v["token"] for v in out}
        return out

    def journal_rows(self, sql: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.dir / "journal.db")
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def check_invariants(self, *, settled: bool = False) -> None:
        """DESIGN.md invariants 1-4 from the outside: issuer, secret, journal, every output."""
        self.versions()
        current = value_at(self.aws, self.name, "AWSCURRENT")
        assert self.fake.state.problem(current["token"]) is None, "invariant 1: AWSCURRENT is not accepted"
        pending = {r[0] for r in self.journal_rows("SELECT token_id FROM revocations WHERE state = 'pending'")}
        for token in self.fake.state.tokens():
            if not token["description"].startswith(f"rotator:{POLICY}:") or token["revoked_at"]:
                continue
            assert token["id"] == current["token_id"] or (token["id"] in pending and not settled), (
                f"invariant 2: orphan token {token['id']}")
        superseded = ("SELECT old_token_id, published_at FROM runs "
                      "WHERE old_token_id IS NOT NULL AND published_at IS NOT NULL")
        for old_id, published in self.journal_rows(superseded):
            revoked = (self.fake.state.token_by_id(old_id) or {}).get("revoked_at")
            if revoked:
                assert _ts(revoked) >= _ts(published) + timedelta(seconds=self.grace_s) - timedelta(milliseconds=50), (
                    f"invariant 3: token {old_id} revoked before its grace ended")
        texts = [*self.outputs, self.log_file.read_text() if self.log_file.exists() else ""]
        for suffix in ("", "-wal", "-shm"):
            path = self.dir / f"journal.db{suffix}"
            if path.exists():
                texts.append(path.read_bytes().decode("latin-1"))
        for value in self.values:
            assert not any(value in text for text in texts), "invariant 4: a token value leaked"


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def test_cli_bootstrap_two_rotations_and_revocation_after_grace(aws, fake_influxctl, tmp_path):
    sc = CliScenario(tmp_path, aws, fake_influxctl, secret_name())
    sc.config.write_text(_policy_toml(sc.name, aws.url, grace=f"{sc.grace_s}s"))
    value, first_id = fake_influxctl.state.add_token("created by a human for bootstrap")
    sc.values.add(value)
    token_file = tmp_path / "first-token"
    token_file.write_text(value)
    proc = sc.cli("bootstrap", POLICY, "--token-file", str(token_file), "--token-id", first_id)
    assert proc.returncode == 0, proc.stderr
    token_file.unlink()
    assert tags(aws, sc.name) == {"managed-by": "rotator", "policy": POLICY}

    ids = [first_id]
    for _ in range(2):
        proc = sc.cli("rotate", POLICY, "--output", "json")
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)[0]
        assert result["ok"] and result["old_token_id"] == ids[-1]
        ids.append(result["new_token_id"])
        assert value_at(aws, sc.name, "AWSCURRENT")["token_id"] == ids[-1]
        assert value_at(aws, sc.name, "AWSPREVIOUS")["token_id"] == ids[-2]
        assert not [v for v, s in stages(aws, sc.name).items() if "AWSPENDING" in s]
        assert fake_influxctl.state.token_by_id(ids[-2])["revoked_at"] is None
        sc.check_invariants()

    time.sleep(sc.grace_s + 0.3)
    proc = sc.cli("revoke-expired")
    assert proc.returncode == 0, proc.stderr
    assert [bool(fake_influxctl.state.token_by_id(i)["revoked_at"]) for i in ids] == [True, True, False]
    sc.check_invariants(settled=True)
    assert [v["token_id"] for v in sc.versions()] == ids


def test_cli_reports_a_stuck_awspending_with_its_fix_and_exits_non_zero(aws, fake_influxctl, tmp_path):
    sc = CliScenario(tmp_path, aws, fake_influxctl, secret_name())
    sc.config.write_text(_policy_toml(sc.name, aws.url))
    _bootstrap(aws, fake_influxctl, sc.name)
    pending = str(uuid.uuid4())
    _start_moto_rotation(aws, sc.name, pending)
    proc = sc.cli("rotate", POLICY)
    assert proc.returncode != 0
    assert "a previous rotation isn't complete" in proc.stderr
    assert f"--remove-from-version-id {pending}" in proc.stderr
    assert [t for t in fake_influxctl.state.tokens() if t["description"].startswith("rotator:")] == []


# -- crashes (kill -9) around and inside this store's publish ----------------------------------------

#: Runs one rotation like `rotator rotate`, with a client that SIGKILLs the process right after
#: PutSecretValue returned: a kill between the store's put and its move of AWSCURRENT.
KILL_AFTER_PUT = """
import os, signal, sys
from rotator.adapters.aws.secretsmanager import AwsSecretsManagerStore, boto3_client
from rotator.core.engine import Engine
from rotator.core.journal import open_journal
from rotator.config.policy import load_config
from rotator.core.retry import RetryPolicy

class KillAfterPut:
    def __init__(self, real):
        self._real = real
    def __getattr__(self, name):
        method = getattr(self._real, name)
        if name != "put_secret_value":
            return method
        def put(**kwargs):
            answer = method(**kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        return put

config = load_config(sys.argv[1])
policy = config.policies[0]
binding = policy.stores[0]
store = AwsSecretsManagerStore.from_config(binding.settings, policy.context(),
                                           client_factory=lambda s, p: KillAfterPut(boto3_client(s, p)))
journal = open_journal(config.journal_url())
engine = Engine(policy, journal, stores=[(binding.name, store)], retry=RetryPolicy(1, 0.1, 0.1))
engine.rotate()
"""


def _crash_scenario(aws: MotoServer, fake: Any, tmp_path: Path) -> tuple[CliScenario, str]:
    sc = CliScenario(tmp_path, aws, fake, secret_name())
    sc.config.write_text(_policy_toml(sc.name, aws.url, grace=f"{sc.grace_s}s"))
    value, first_id = _bootstrap(aws, fake, sc.name)
    sc.values.add(value)
    return sc, first_id


def _recover_then_rotate(sc: CliScenario, first_id: str) -> None:
    proc = sc.cli("recover")
    assert proc.returncode == 0, proc.stderr
    sc.check_invariants()
    proc = sc.cli("rotate", POLICY, "--output", "json")
    assert proc.returncode == 0, proc.stderr
    assert value_at(sc.aws, sc.name, "AWSCURRENT")["token_id"] == json.loads(proc.stdout)[0]["new_token_id"]
    assert not [v for v, s in stages(sc.aws, sc.name).items() if s == ["AWSPENDING"]], "no AWSPENDING left over"
    sc.check_invariants()


@pytest.mark.parametrize("checkpoint", ["publish:aws", "published:aws"])
def test_kill_at_the_engine_boundaries_around_this_store(aws, fake_influxctl, tmp_path, checkpoint):
    sc, first_id = _crash_scenario(aws, fake_influxctl, tmp_path)
    proc = sc.cli("rotate", POLICY, crash_at=checkpoint)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    published = value_at(aws, sc.name, "AWSCURRENT")["token_id"] != first_id
    assert published == (checkpoint == "published:aws")
    _recover_then_rotate(sc, first_id)


def test_kill_between_put_and_move_then_recover_and_rotate(aws, fake_influxctl, tmp_path):
    """The leftover AWSPENDING (this policy's payload, token rolled back by recovery) is replaced
    by the next publish instead of blocking every later run."""
    sc, first_id = _crash_scenario(aws, fake_influxctl, tmp_path)
    proc = _cli(tmp_path, str(sc.config), code=KILL_AFTER_PUT)
    sc.outputs += [proc.stdout, proc.stderr]
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (leftover,) = [v for v, s in stages(aws, sc.name).items() if s == ["AWSPENDING"]]
    lost = value_at(aws, sc.name, "AWSPENDING")
    sc.values.add(lost["token"])
    assert value_at(aws, sc.name, "AWSCURRENT")["token_id"] == first_id
    _recover_then_rotate(sc, first_id)
    assert fake_influxctl.state.token_by_id(lost["token_id"])["revoked_at"] is not None, "rolled back"
    assert leftover not in stages(aws, sc.name)
