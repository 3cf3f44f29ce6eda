"""A secret scheduled for deletion gets the deletion hint whatever words the service uses (Stubber, no network),
and the hint's restore command names the secret and its region, shell-quoted, as every other hint's command does
(against moto's server: it printed `--secret-id SECRET`, a placeholder).

Secrets Manager answers a read or write of such a secret with InvalidRequestException; only the message
tells it from other invalid requests. Real AWS says "...because it was marked for deletion." (seen with a
straight and a typographic apostrophe: kubernetes-external-secrets#114, external-secrets#4560), CreateSecret
"...already scheduled for deletion.", and moto "...currently marked deleted." (the only wording matched
before, so real users got the generic hint, and the Lambda's error table in docs/aws-lambda.md did not hold).
"""

from __future__ import annotations

import shlex
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.stub import Stubber

from rotator.adapters.aws.secretsmanager import AwsSecretsManagerSettings, AwsSecretsManagerStore
from rotator.core.contracts import AdapterContext
from rotator.core.errors import PermanentError
from tests.adapters.test_aws_secretsmanager import make_store, secret_name, token_record
from tests.aws_server import FailingClient, MotoServer

POLICY = "mgmt"
NAME = "prod/influx"
ARN = f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{NAME}-AbCdEf"
MANAGED = [{"Key": "managed-by", "Value": "rotator"}, {"Key": "policy", "Value": POLICY}]
CURRENT = "a" * 32
#: What AWS answers a call on a secret scheduled for deletion (InvalidRequestException)
AWS_DELETED = "You can't perform this operation on the secret because it was marked for deletion."


def _store_and_stub() -> tuple[AwsSecretsManagerStore, Any]:
    client = boto3.session.Session().client(
        "secretsmanager", region_name="us-east-1", aws_access_key_id="stub", aws_secret_access_key="stub"
    )
    store = AwsSecretsManagerStore.from_config(AwsSecretsManagerSettings(secret_id=NAME, region="us-east-1"),
                                               AdapterContext(policy=POLICY), client_factory=lambda s, p: client)
    return store, Stubber(client)


@pytest.mark.parametrize("message", [
    "You tried to perform the operation on a secret that's currently marked deleted.",  # moto
    "You can't perform this operation on the secret because it was marked for deletion.",  # AWS
    "You can\u2019t perform this operation on the secret because it was marked for deletion.",  # AWS, typographic
    "You can't create this secret because a secret with this name is already scheduled for deletion.",  # CreateSecret
], ids=["moto", "aws", "aws-typographic-apostrophe", "aws-create"])
def test_a_secret_scheduled_for_deletion_gets_the_deletion_hint(message: str) -> None:
    store, stub = _store_and_stub()
    with stub:
        stub.add_response("describe_secret", {"ARN": ARN, "Name": NAME, "Tags": MANAGED,
                                              "VersionIdsToStages": {CURRENT: ["AWSCURRENT"]}})
        stub.add_client_error("get_secret_value", service_error_code="InvalidRequestException",
                              service_message=message, http_status_code=400)
        with pytest.raises(PermanentError) as caught:
            store.read_current()
        stub.assert_no_pending_responses()
    hint = caught.value.hint or ""
    assert hint.startswith("the secret is scheduled for deletion"), hint
    assert "`aws secretsmanager restore-secret --secret-id prod/influx --region us-east-1`" in hint, hint
    assert "rotator:revoke:" in hint, hint
    assert "InvalidRequestException" in str(caught.value)


def test_another_invalid_request_keeps_the_generic_hint() -> None:
    """The deletion hint is for deletion only: another InvalidRequestException is not called one."""
    store, stub = _store_and_stub()
    with stub:
        stub.add_response("describe_secret", {"ARN": ARN, "Name": NAME, "Tags": MANAGED,
                                              "VersionIdsToStages": {CURRENT: ["AWSCURRENT"]}})
        stub.add_client_error("get_secret_value", service_error_code="InvalidRequestException",
                              service_message="You provided a parameter value that is not valid for the current "
                              "state of the resource.", http_status_code=400)
        with pytest.raises(PermanentError) as caught:
            store.read_current()
    assert "scheduled for deletion" not in (caught.value.hint or ""), caught.value.hint


def _restore_command(aws: MotoServer, secret_id: str) -> str:
    return f"`aws secretsmanager restore-secret --secret-id {shlex.quote(secret_id)} --region {aws.region}`"


def _deleted_hint(call: Any) -> str:
    with pytest.raises(PermanentError) as caught:
        call()
    hint = caught.value.hint
    assert hint.startswith("the secret is scheduled for deletion"), hint
    return hint


def test_the_restore_command_names_the_secret_and_its_region(aws: MotoServer) -> None:
    """The reviewer's reproduction (moto server): a published secret deleted with a recovery window. The read
    (GetSecretValue) names the secret to restore as the settings write it (a name, or an ARN), and the
    region, instead of `--secret-id SECRET`. (moto lets PutSecretValue through where AWS refuses it.)"""
    name = secret_name()
    store = make_store(aws, name)
    store.publish(token_record("tok-1"), None)
    arn = aws.client().describe_secret(SecretId=name)["ARN"]
    aws.client().delete_secret(SecretId=name, RecoveryWindowInDays=7)

    assert _restore_command(aws, name) in _deleted_hint(store.read_current)
    assert _restore_command(aws, arn) in _deleted_hint(make_store(aws, arn).read_current)

    aws.client().restore_secret(SecretId=name)  # what the hint says to run
    record = store.read_current().record
    assert record is not None and record.token_id == "tok-1"


def test_a_write_refused_for_deletion_names_the_secret_and_its_region_too(aws: MotoServer) -> None:
    """Where moto lets a write through that AWS refuses (PutSecretValue to a secret scheduled for deletion),
    AWS's refusal is put in front of moto's client (FailingClient): the store's own calls print the command
    as its reads do."""
    name = secret_name()
    version = make_store(aws, name).publish(token_record("tok-1"), None)
    refusal = botocore.exceptions.ClientError(
        {"Error": {"Code": "InvalidRequestException", "Message": AWS_DELETED},
         "ResponseMetadata": {"HTTPStatusCode": 400}}, "PutSecretValue")
    failing = FailingClient(aws.client(), "put_secret_value", refusal)
    store = make_store(aws, name, client_factory=lambda s, p: failing)
    assert _restore_command(aws, name) in _deleted_hint(lambda: store.publish(token_record("tok-2"), version))
    assert [call for call, _ in failing.calls][-1] == "put_secret_value"
