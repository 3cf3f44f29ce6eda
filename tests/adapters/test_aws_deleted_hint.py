"""A secret scheduled for deletion gets the deletion hint whatever words the service uses (Stubber, no network).

Secrets Manager answers a read or write of such a secret with InvalidRequestException; only the message
tells it from other invalid requests. Real AWS says "...because it was marked for deletion." (seen with a
straight and a typographic apostrophe: kubernetes-external-secrets#114, external-secrets#4560), CreateSecret
"...already scheduled for deletion.", and moto "...currently marked deleted." (the only wording matched
before, so real users got the generic hint, and the Lambda's error table in docs/aws-lambda.md did not hold).
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from rotator.adapters.aws.secretsmanager import AwsSecretsManagerSettings, AwsSecretsManagerStore
from rotator.core.contracts import AdapterContext
from rotator.core.errors import PermanentError

POLICY = "mgmt"
NAME = "prod/influx"
ARN = f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{NAME}-AbCdEf"
MANAGED = [{"Key": "managed-by", "Value": "rotator"}, {"Key": "policy", "Value": POLICY}]
CURRENT = "a" * 32


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
    assert "restore-secret" in hint and "rotator:revoke:" in hint, hint
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
