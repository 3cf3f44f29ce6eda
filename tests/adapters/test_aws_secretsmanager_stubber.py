"""AWS behaviour moto does not reproduce, pinned with botocore's Stubber (no server, no network).

Each test names the difference (../shared/reference/test-infrastructure.md, "Known moto bugs",
and the API reference). The product follows AWS; these tests fix the exact calls it makes and
how it reads AWS's answers. A Stubber fails on any call it was not told to expect, so each
sequence below is also a proof that nothing else is written.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from rotator.adapters.aws import secretsmanager
from rotator.adapters.aws.secretsmanager import (
    AwsSecretsManagerSettings,
    AwsSecretsManagerStore,
    PendingRotationError,
    SecretView,
)
from rotator.core.clock import FakeClock
from rotator.core.contracts import AdapterContext, StoreState, TokenRecord
from rotator.core.errors import ConfigError, ConflictError, PermanentError, TransientError
from rotator.core.secret import Secret
from rotator.runners.lambda_rotation import handle
from tests.fakes.fixtures import BINARY as FAKE_INFLUXCTL

POLICY = "mgmt"
NAME = "prod/influx"
ARN = f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{NAME}-AbCdEf"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MANAGED = [{"Key": "managed-by", "Value": "rotator"}, {"Key": "policy", "Value": POLICY}]


def aws_client() -> Any:
    return boto3.session.Session().client(
        "secretsmanager", region_name="us-east-1", aws_access_key_id="stub", aws_secret_access_key="stub"
    )


@pytest.fixture
def stub() -> Any:
    client = aws_client()
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def store_on(stub: Any) -> AwsSecretsManagerStore:
    settings = AwsSecretsManagerSettings(secret_id=NAME, region="us-east-1")
    return AwsSecretsManagerStore.from_config(settings, AdapterContext(policy=POLICY),
                                              client_factory=lambda s, p: stub.client)  # fmt: skip


def record(token_id: str, value: str | None = None) -> TokenRecord:
    return TokenRecord(Secret(value or f"test-token-value-{uuid.uuid4().hex}"), token_id, "influxctl-management",
                       POLICY, NOW, NOW + timedelta(days=30))  # fmt: skip


def described(stages: dict[str, list[str]], *, tags: list[dict[str, str]] = MANAGED, rotation: bool = False,
              arn: str = ARN) -> dict[str, Any]:  # fmt: skip
    answer: dict[str, Any] = {"ARN": arn, "Name": NAME, "Tags": tags, "RotationEnabled": rotation}
    if stages:
        answer["VersionIdsToStages"] = stages
    return answer


def value(version: str, rec: TokenRecord | None, stages: list[str], *, raw: str | None = None) -> dict[str, Any]:
    text = raw if raw is not None else json.dumps(rec.payload() if rec else {})
    return {"ARN": ARN, "Name": NAME, "VersionId": version, "SecretString": text, "VersionStages": stages}


def version_id() -> str:
    return str(uuid.uuid4())


def sent_as(monkeypatch: pytest.MonkeyPatch, version: str) -> str:
    """Make ``version`` the ClientRequestToken the store's next write sends: Secrets Manager answers it as the
    new version's VersionId, and the store refuses an answer naming any other version."""
    monkeypatch.setattr(secretsmanager, "_own_version_id", lambda: version)
    return version


# VersionIds have 32-64 characters; the Stubber checks answers against the API model.
ROTATION_TOKEN = f"rotation-token-{uuid.uuid4()}"  # opaque to rotator; AWS checks it
V_NEW, V1, V_CUR, V_STUCK = (f"{label}-{uuid.uuid4()}" for label in ("new", "first", "current", "stuck"))


# -- reads -----------------------------------------------------------------------------------------


def test_read_current_asks_for_awscurrent_by_name(stub):
    """moto: GetSecretValue without VersionStage returns the old value after a move. AWS returns
    AWSCURRENT; rotator always names the stage anyway."""
    old, new, rec = version_id(), version_id(), record("tok-2")
    stub.add_response("describe_secret", described({old: ["AWSPREVIOUS"], new: ["AWSCURRENT"]}), {"SecretId": NAME})
    stub.add_response("get_secret_value", value(new, rec, ["AWSCURRENT"]),
                      {"SecretId": NAME, "VersionStage": "AWSCURRENT"})
    assert store_on(stub).read_current() == StoreState(version=new, managed=True, record=rec)


def test_unlabelled_versions_are_not_versions_for_rotator():
    """AWS lists only labelled versions in VersionIdsToStages; moto also lists the rest with []."""
    view = SecretView.from_answer(described({"a": ["AWSCURRENT"], "b": [], "c": ["AWSPENDING"]}))
    assert dict(view.stages) == {"a": ("AWSCURRENT",), "c": ("AWSPENDING",)}
    assert view.version_with("AWSPENDING") == "c" and view.managed


# -- publish ---------------------------------------------------------------------------------------


def test_publish_is_put_pending_then_move_current_then_drop_pending(stub, monkeypatch):
    current, rec = version_id(), record("tok-2")
    stub.add_response("describe_secret", described({current: ["AWSCURRENT"]}), {"SecretId": NAME})
    stub.add_response(
        "put_secret_value", {"ARN": ARN, "Name": NAME, "VersionId": V_NEW, "VersionStages": ["AWSPENDING"]},
        {"SecretId": NAME, "ClientRequestToken": sent_as(monkeypatch, V_NEW), "SecretString": json.dumps(rec.payload()),
         "VersionStages": ["AWSPENDING"]},
    )  # fmt: skip
    stub.add_response("update_secret_version_stage", {"ARN": ARN, "Name": NAME}, {
        "SecretId": NAME, "VersionStage": "AWSCURRENT", "MoveToVersionId": V_NEW, "RemoveFromVersionId": current})
    stub.add_response("update_secret_version_stage", {"ARN": ARN, "Name": NAME}, {
        "SecretId": NAME, "VersionStage": "AWSPENDING", "RemoveFromVersionId": V_NEW})
    assert store_on(stub).publish(rec, current) == V_NEW


def test_the_first_value_of_an_empty_secret_gets_awscurrent_from_aws(stub, monkeypatch, caplog):
    """AWS: PutSecretValue on a secret without versions attaches AWSCURRENT by itself."""
    rec = record("tok-1")
    stub.add_response("describe_secret", described({}, tags=[]), {"SecretId": NAME})
    stub.add_response("put_secret_value", {"ARN": ARN, "Name": NAME, "VersionId": V1,
                                           "VersionStages": ["AWSPENDING", "AWSCURRENT"]},
                      {"SecretId": NAME, "ClientRequestToken": sent_as(monkeypatch, V1), "SecretString": ANY,
                       "VersionStages": ["AWSPENDING"]})  # fmt: skip
    stub.add_response("describe_secret", described({V1: ["AWSPENDING", "AWSCURRENT"]}, tags=[]), {"SecretId": NAME})
    stub.add_response("update_secret_version_stage", {"ARN": ARN, "Name": NAME},
                      {"SecretId": NAME, "VersionStage": "AWSPENDING", "RemoveFromVersionId": V1})
    stub.add_response("tag_resource", {}, {"SecretId": NAME, "Tags": MANAGED})
    assert store_on(stub).publish(rec, None) == V1
    assert "could not remove AWSPENDING" not in caplog.text, "AWS's answers are all taken"


def test_aws_refusing_the_move_is_a_conflict_and_leaves_no_awspending(stub, monkeypatch, caplog):
    """RemoveFromVersionId makes the move a compare-and-set: AWS refuses it once AWSCURRENT moved."""
    current, theirs = version_id(), version_id()
    stub.add_response("describe_secret", described({current: ["AWSCURRENT"]}), {"SecretId": NAME})
    stub.add_response("put_secret_value", {"ARN": ARN, "Name": NAME, "VersionId": V_NEW},
                      {"SecretId": NAME, "ClientRequestToken": sent_as(monkeypatch, V_NEW), "SecretString": ANY,
                       "VersionStages": ["AWSPENDING"]})  # fmt: skip
    stub.add_client_error("update_secret_version_stage", "InvalidParameterException",
                          f"The staging label AWSCURRENT is attached to version {theirs}, not {current}.", 400)
    stub.add_response("describe_secret", described({theirs: ["AWSCURRENT"], current: ["AWSPREVIOUS"],
                                                    V_NEW: ["AWSPENDING"]}), {"SecretId": NAME})  # fmt: skip
    stub.add_response("update_secret_version_stage", {"ARN": ARN, "Name": NAME},
                      {"SecretId": NAME, "VersionStage": "AWSPENDING", "RemoveFromVersionId": V_NEW})
    with pytest.raises(ConflictError, match=f"expected AWSCURRENT on {current}, it is on {theirs}"):
        store_on(stub).publish(record("tok-2"), current)
    assert "could not remove AWSPENDING" not in caplog.text, "AWSPENDING is removed"


def test_a_put_answer_naming_another_version_than_the_token_sent_is_refused(stub, monkeypatch):
    """Secrets Manager makes the ClientRequestToken the new version's VersionId: an answer naming another
    version is not the answer to this write (nothing says the value went anywhere), and nothing is moved."""
    current, sent, other = version_id(), sent_as(monkeypatch, f"rotator-{uuid.uuid4()}"), version_id()
    stub.add_response("describe_secret", described({current: ["AWSCURRENT"]}), {"SecretId": NAME})
    stub.add_response("put_secret_value", {"ARN": ARN, "Name": NAME, "VersionId": other,
                                           "VersionStages": ["AWSPENDING"]},
                      {"SecretId": NAME, "ClientRequestToken": sent, "SecretString": ANY,
                       "VersionStages": ["AWSPENDING"]})  # fmt: skip
    with pytest.raises(PermanentError) as caught:
        store_on(stub).publish(record("tok-2"), current)
    assert "to PutSecretValue is not Secrets Manager's" in str(caught.value), caught.value
    assert f"it is version '{other}', not '{sent}', the ClientRequestToken sent" in str(caught.value), caught.value
    assert "endpoint_url" in (caught.value.hint or "")


def test_a_create_answer_naming_another_version_than_the_token_sent_is_refused(stub, monkeypatch):
    sent, other = sent_as(monkeypatch, f"rotator-{uuid.uuid4()}"), version_id()
    stub.add_client_error("describe_secret", "ResourceNotFoundException", "Secrets Manager can't find the secret", 400)
    stub.add_response("create_secret", {"ARN": ARN, "Name": NAME, "VersionId": other},
                      {"Name": NAME, "ClientRequestToken": sent, "SecretString": ANY, "Description": ANY,
                       "Tags": ANY})  # fmt: skip
    with pytest.raises(PermanentError, match=f"to CreateSecret is not Secrets Manager's .it is version '{other}', "
                       f"not '{sent}', the ClientRequestToken sent"):
        store_on(stub).publish(record("tok-1"), None)


@pytest.mark.parametrize("answer", [
    {"VersionId": V_CUR, "VersionStages": ["AWSCURRENT"]},
    {"Name": NAME, "VersionId": V_CUR, "VersionStages": ["AWSCURRENT"]},
], ids=["no ARN or Name", "no ARN"])  # fmt: skip
def test_a_get_secret_value_answer_without_the_secrets_arn_and_name_is_refused(stub, answer):
    """AWS and moto send the secret's ARN and Name with every GetSecretValue answer: one without them is
    another server's, whatever it holds, and its value is not read as the secret's."""
    stub.add_response("describe_secret", described({V_CUR: ["AWSCURRENT"]}), {"SecretId": NAME})
    stub.add_response("get_secret_value", {**answer, "SecretString": json.dumps(record("tok-1").payload())},
                      {"SecretId": NAME, "VersionStage": "AWSCURRENT"})
    with pytest.raises(PermanentError, match="to GetSecretValue is not Secrets Manager's .without the ARN and Name"):
        store_on(stub).read_current()


def test_awspending_of_a_running_rotation_stops_the_store_before_any_write(stub):
    """moto lets a second rotation start while AWSPENDING sits on another version; AWS refuses
    ("A previous rotation isn't complete"). The store refuses too, and writes nothing."""
    current, pending = version_id(), version_id()
    stub.add_response("describe_secret", described({current: ["AWSCURRENT"], pending: ["AWSPENDING"]},
                                                   rotation=True), {"SecretId": NAME})  # fmt: skip
    stub.add_client_error("get_secret_value", "ResourceNotFoundException",
                          "Secrets Manager can't find the specified secret value for VersionId", 400,
                          expected_params={"SecretId": NAME, "VersionStage": "AWSPENDING", "VersionId": pending})
    with pytest.raises(PendingRotationError, match="a previous rotation isn't complete") as caught:
        store_on(stub).publish(record("tok-2"), current)
    assert f"--secret-id {ARN} --version-stage AWSPENDING --remove-from-version-id {pending}" in caught.value.hint


def test_a_pending_rotator_payload_on_a_rotation_enabled_secret_is_the_functions_not_a_leftover(stub):
    current, pending = version_id(), version_id()
    stub.add_response("describe_secret", described({current: ["AWSCURRENT"], pending: ["AWSPENDING"]},
                                                   rotation=True), {"SecretId": NAME})  # fmt: skip
    stub.add_response("get_secret_value", value(pending, record("tok-lambda"), ["AWSPENDING"]),
                      {"SecretId": NAME, "VersionStage": "AWSPENDING", "VersionId": pending})
    stub.add_response("get_secret_value", value(current, record("tok-current"), ["AWSCURRENT"]),
                      {"SecretId": NAME, "VersionStage": "AWSCURRENT"})
    with pytest.raises(PendingRotationError) as caught:
        store_on(stub).read_current()
    assert caught.value.state.version == current and caught.value.state.record.token_id == "tok-current", \
        "AWSCURRENT, for a reader"  # fmt: skip


def test_a_transient_error_reading_awscurrent_beside_a_pending_rotation_stays_transient(stub):
    """read_current attaches AWSCURRENT to the pending-rotation refusal for readers; a throttled read
    of it is retried (transient), not turned into a permanent refusal without a state."""
    current, pending = version_id(), version_id()
    stub.add_response("describe_secret", described({current: ["AWSCURRENT"], pending: ["AWSPENDING"]},
                                                   rotation=True), {"SecretId": NAME})  # fmt: skip
    stub.add_response("get_secret_value", value(pending, record("tok-lambda"), ["AWSPENDING"]),
                      {"SecretId": NAME, "VersionStage": "AWSPENDING", "VersionId": pending})
    stub.add_client_error("get_secret_value", "ThrottlingException", "Rate exceeded", 400,
                          expected_params={"SecretId": NAME, "VersionStage": "AWSCURRENT"})
    with pytest.raises(TransientError):
        store_on(stub).read_current()


# -- error mapping ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "message", "expected", "hint"),
    [
        ("ThrottlingException", 400, "Rate exceeded", TransientError, "rotator retries"),
        ("InternalServiceError", 500, "An error occurred", TransientError, "rotator retries"),
        ("ServiceUnavailable", 503, "", TransientError, "rotator retries"),
        ("RequestTimeout", 400, "Your socket connection to the server was not read from or written to within the "
         "timeout period.", TransientError, "rotator retries"),
        ("RequestTimeoutException", 400, "Request timed out", TransientError, "rotator retries"),
        ("AccessDeniedException", 400, "User: arn:aws:sts::1:assumed-role/x is not authorized to perform: "
         "secretsmanager:DescribeSecret", PermanentError, "secretsmanager:DescribeSecret"),
        ("AccessDeniedException", 400, "Access to KMS is not allowed", PermanentError, "kms:Decrypt"),
        ("DecryptionFailure", 400, "KMS key is disabled", PermanentError, "kms:Decrypt"),
        ("UnrecognizedClientException", 400, "The security token included in the request is invalid",
         PermanentError, "valid AWS credentials"),
        ("InvalidRequestException", 400, "You can't perform this operation on the secret because it was marked "
         "for deletion.", PermanentError, "scheduled for deletion"),  # AWS's wording (moto says "marked deleted")
    ],
)  # fmt: skip
def test_aws_errors_map_to_transient_or_permanent_with_the_iam_action(stub, code, status, message, expected, hint):
    stub.add_client_error("describe_secret", code, message, status)
    with pytest.raises(expected) as caught:
        store_on(stub).read_current()
    assert type(caught.value) is expected
    assert f"DescribeSecret failed: {code}" in str(caught.value)
    assert hint in caught.value.hint
    assert caught.value.__cause__ is None


def test_access_denied_on_a_write_names_that_action(stub):
    current = version_id()
    stub.add_response("describe_secret", described({current: ["AWSCURRENT"]}), {"SecretId": NAME})
    stub.add_client_error("put_secret_value", "AccessDeniedException", "not authorized", 400)
    with pytest.raises(PermanentError) as caught:
        store_on(stub).publish(record("tok-2"), current)
    assert "secretsmanager:PutSecretValue" in caught.value.hint


DENIED_BY = "User: arn:aws:sts::123456789012:assumed-role/rotator-kms-admins/rotator is not authorized to perform: "


@pytest.mark.parametrize(
    ("message", "hint", "not_in_hint"),
    [
        # The role's name holds "kms": the refusal is IAM's, of the action AWS names.
        (DENIED_BY + "secretsmanager:DescribeSecret on resource: prod/influx because no identity-based policy "
         "allows the secretsmanager:DescribeSecret action", "secretsmanager:DescribeSecret on the secret", "kms:"),
        (DENIED_BY + "secretsmanager:DescribeSecret on resource: arn:aws:secretsmanager:us-east-1:123456789012:"
         "secret:kms/influx-AbCdEf with an explicit deny in a resource-based policy",
         "secretsmanager:DescribeSecret on the secret", "kms:"),
        # An STS refusal surfacing in a Secrets Manager call (role_arn): the role, not the secret.
        ("User: arn:aws:iam::123456789012:user/kms-ops is not authorized to perform: sts:AssumeRole on resource: "
         "arn:aws:iam::123456789012:role/rotator", "sts:AssumeRole on the role to assume", "kms:"),
        (DENIED_BY + "kms:Decrypt on resource: arn:aws:kms:us-east-1:123456789012:key/1234abcd because no "
         "identity-based policy allows the kms:Decrypt action", "kms:Decrypt", "secretsmanager:"),
        ("Access to KMS is not allowed", "kms:Decrypt", "secretsmanager:"),
    ],
)  # fmt: skip
def test_access_denied_hints_at_the_action_aws_names_not_at_kms_for_a_mention(stub, message, hint, not_in_hint):
    stub.add_client_error("describe_secret", "AccessDeniedException", message, 400)
    with pytest.raises(PermanentError) as caught:
        store_on(stub).read_current()
    assert hint in caught.value.hint and not_in_hint not in caught.value.hint, caught.value.hint


def test_create_secret_refused_for_its_tags_names_tag_resource(stub):
    """CreateSecret with Tags also needs secretsmanager:TagResource: AWS's message names the action lacking."""
    stub.add_client_error("describe_secret", "ResourceNotFoundException", "Secrets Manager can't find the secret", 400)
    stub.add_client_error("create_secret", "AccessDeniedException", "User: arn:aws:sts::123456789012:assumed-role/"
                          "rotator/rotator is not authorized to perform: secretsmanager:TagResource on resource: "
                          f"{NAME} because no identity-based policy allows the secretsmanager:TagResource action", 400)
    with pytest.raises(PermanentError) as caught:
        store_on(stub).publish(record("tok-1"), None)
    assert "CreateSecret failed: AccessDeniedException" in str(caught.value)
    assert "secretsmanager:TagResource on the secret" in caught.value.hint, caught.value.hint


def test_a_partial_arn_whose_name_ends_like_a_suffix_offers_the_name_as_written(stub):
    """"prod/influx-tokens" ends in "-" and 6 letters: AWS's random suffix, or part of the name. The hint
    told the user to create 'prod/influx', another secret; it now gives both ways out, the name as written
    first. Nothing is created (the Stubber expects no CreateSecret)."""
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/influx-tokens"
    stub.add_client_error("describe_secret", "ResourceNotFoundException", "Secrets Manager can't find the secret", 400)
    store = AwsSecretsManagerStore.from_config(AwsSecretsManagerSettings(secret_id=arn), AdapterContext(policy=POLICY),
                                               client_factory=lambda s, p: stub.client)  # fmt: skip
    with pytest.raises(PermanentError) as caught:
        store.publish(record("tok-1"), None)
    message, hint = str(caught.value), caught.value.hint or ""
    assert "part of the secret's name ('prod/influx-tokens'" in message, message
    assert 'secret_id = "prod/influx-tokens" and region = "us-east-1"' in hint, hint
    assert "if '-tokens' was AWS's suffix" in hint and "--name prod/influx," in hint, hint


def test_a_token_value_quoted_by_aws_is_redacted(stub):
    rec = record("tok-2")
    stub.add_client_error("describe_secret", "InvalidParameterException", f"bad value {rec.value.reveal()}", 400)
    with pytest.raises(PermanentError) as caught:
        store_on(stub).read_current()
    assert rec.value.reveal() not in str(caught.value) and "***" in str(caught.value)


def test_a_missing_secret_reads_as_absent(stub):
    stub.add_client_error("describe_secret", "ResourceNotFoundException", "Secrets Manager can't find the secret", 400)
    assert store_on(stub).read_current() == StoreState(version=None, managed=False, record=None)


# -- the rotation function -------------------------------------------------------------------------


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "rotator.toml"
    path.write_text(f"""
[rotator.retry]
attempts = 1
[[policy]]
name = "{POLICY}"
schedule = "30d"
grace = "1h"
[policy.issuer]
type = "influxctl-management"
influxctl = {json.dumps(str(FAKE_INFLUXCTL))}
[policy.issuer.profile]
product = "clustered"
host = "cluster.test.invalid"
[[policy.store]]
type = "aws-secretsmanager"
secret_id = "{ARN}"
""")
    return path


def _create_secret_prelude(stub: Any, fake: Any, token: str) -> TokenRecord:
    """DescribeSecret, the AWSCURRENT read and the empty AWSPENDING read of a createSecret."""
    value_, token_id = fake.state.add_token("bootstrap")
    current = TokenRecord(Secret(value_), token_id, "influxctl-management", POLICY, NOW, None)
    tags = [*MANAGED, {"Key": "rotator:policy", "Value": POLICY}]
    stub.add_response("describe_secret", described({V_CUR: ["AWSCURRENT"], token: ["AWSPENDING"]}, tags=tags,
                                                   rotation=True), {"SecretId": ARN})  # fmt: skip
    stub.add_response("get_secret_value", value(V_CUR, current, ["AWSCURRENT"]),
                      {"SecretId": ARN, "VersionStage": "AWSCURRENT"})
    stub.add_client_error("get_secret_value", "ResourceNotFoundException", "no value for VersionId", 400,
                          expected_params={"SecretId": ARN, "VersionStage": "AWSPENDING", "VersionId": token})
    return current


def test_create_secret_passes_the_rotation_token_to_put_secret_value(stub, fake_influxctl, tmp_path, aws_env):
    """Cross-account rotation: Secrets Manager sends RotationToken; PutSecretValue must carry it."""
    token = str(uuid.uuid4())
    _create_secret_prelude(stub, fake_influxctl, token)
    stub.add_response("put_secret_value", {"ARN": ARN, "Name": NAME, "VersionId": token}, {
        "SecretId": ARN, "ClientRequestToken": token, "SecretString": ANY, "VersionStages": ["AWSPENDING"],
        "RotationToken": ROTATION_TOKEN})  # fmt: skip
    event = {"Step": "createSecret", "SecretId": ARN, "ClientRequestToken": token,
             "RotationToken": ROTATION_TOKEN}  # fmt: skip
    handle(event, None, client=stub.client, config_path=_config(tmp_path), clock=FakeClock(datetime.now(UTC)))
    (minted,) = [t for t in fake_influxctl.state.tokens() if t["description"] == f"rotator:{POLICY}:{token}"]
    assert minted["revoked_at"] is None


def test_create_secret_revokes_its_token_when_aws_says_the_version_has_another_value(
    stub, fake_influxctl, tmp_path, aws_env
):
    """moto accepts the same ClientRequestToken with a different value; AWS answers
    ResourceExistsException. The version keeps its value; the token just minted is revoked."""
    token = str(uuid.uuid4())
    _create_secret_prelude(stub, fake_influxctl, token)
    stub.add_client_error("put_secret_value", "ResourceExistsException",
                          f"You can't use ClientRequestToken {token} because that value is already in use", 400)
    handle({"Step": "createSecret", "SecretId": ARN, "ClientRequestToken": token}, None, client=stub.client,
           config_path=_config(tmp_path), clock=FakeClock(datetime.now(UTC)))  # fmt: skip
    (minted,) = [t for t in fake_influxctl.state.tokens() if t["description"] == f"rotator:{POLICY}:{token}"]
    assert minted["revoked_at"] is not None


def test_a_new_rotation_token_while_awspending_is_elsewhere_is_refused_by_the_preamble(stub, tmp_path, aws_env):
    """AWS does not start that rotation; if the function is invoked anyway, its token is no version."""
    tags = [*MANAGED, {"Key": "rotator:policy", "Value": POLICY}]
    stub.add_response("describe_secret", described({V_CUR: ["AWSCURRENT"], V_STUCK: ["AWSPENDING"]}, tags=tags,
                                                   rotation=True), {"SecretId": ARN})  # fmt: skip
    with pytest.raises(PermanentError, match="is not a version of secret"):
        handle({"Step": "createSecret", "SecretId": ARN, "ClientRequestToken": str(uuid.uuid4())}, None,
               client=stub.client, config_path=_config(tmp_path))  # fmt: skip


def test_a_policy_file_that_names_no_policy_for_the_secret(stub, tmp_path, aws_env, monkeypatch):
    monkeypatch.delenv("ROTATOR_POLICY", raising=False)
    untagged = [{"Key": "managed-by", "Value": "rotator"}]  # no rotator:policy, no policy tag
    stub.add_response("describe_secret", described({V_CUR: ["AWSCURRENT"]}, rotation=True, tags=untagged),
                      {"SecretId": ARN})
    with pytest.raises(ConfigError, match="names no policy"):
        handle({"Step": "setSecret", "SecretId": ARN, "ClientRequestToken": str(uuid.uuid4())},
               None, client=stub.client, config_path=_config(tmp_path))  # fmt: skip
