"""The rotation function's own writes answered by something that is not Secrets Manager (moto in server mode
behind the loopback forwarder of tests/adapters/test_aws_not_aws_answers.py, the fake influxctl).

botocore raises nothing for an HTTP 200 whose body is not Secrets Manager's JSON (a captive portal's page, an
empty JSON object, an empty body). The function called boto3 itself for its writes and took such an answer for
a done write: finishSecret returned success and logged "is AWSCURRENT" while AWSCURRENT had not moved and no
revocation was recorded, and createSecret logged a token "stored as AWSPENDING" that no version held (it was
not revoked either). Every write's answer is now checked as the store checks its own (ARN and Name, the
VersionId sent, or the request id of a bodiless answer): a write the step needs fails the step, saying where
and what to check; a write the code already treats as best effort (a later time corrected, a label or a record
left over) logs its failure as for any failed call, instead of reporting it done.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import boto3
import pytest
from botocore.config import Config

from rotator.config.timefmt import rfc3339_seconds
from rotator.core.errors import NeedsAttention, PermanentError, RotatorError
from tests.adapters.test_aws_not_aws_answers import PORTAL_TEXT, PORTALS, Answer, _Ingress, _ingress
from tests.runners import test_aws_lambda
from tests.runners.test_aws_lambda import GRACE, STEPS, Scene

scene = test_aws_lambda.scene  # the fixture: a secret bootstrapped on moto, its policy, the fake influxctl

PORTAL_IDS = list(PORTALS)


class _OnCall(dict[str, Answer]):
    """The forwarder's answers: ``answer`` to the ``call``-th request for ``operation`` (1: the first), every
    other request passed on to moto. The forwarder asks ``answers.get(operation)`` once per request."""

    def __init__(self, operation: str, answer: Answer, call: int) -> None:
        super().__init__()
        self.operation, self.answer, self.call, self.seen = operation, answer, call, 0

    def get(self, key: str, default: Any = None) -> Any:
        if key != self.operation:
            return default
        self.seen += 1
        return self.answer if self.seen == self.call else default


@contextmanager
def _answered(sc: Scene, operation: str, answer: Answer, call: int = 1) -> Iterator[tuple[_Ingress, Any]]:
    """A forwarder in front of moto that answers the ``call``-th ``operation`` itself, and a client sending to it."""
    with _ingress(sc.aws) as ingress:
        ingress.answers = _OnCall(operation, answer, call)
        client = boto3.session.Session().client(
            "secretsmanager", region_name=sc.aws.region, endpoint_url=ingress.url, aws_access_key_id="testing",
            aws_secret_access_key="testing", config=Config(retries={"total_max_attempts": 1}))  # fmt: skip
        yield ingress, client


def _not_aws(text: str, ingress: _Ingress, operation: str) -> None:
    """``text`` (an error and its hint, or a log line) says which answer was refused, and never the page."""
    assert f"the answer of {ingress.url} to {operation} is not Secrets Manager's" in text, text
    assert PORTAL_TEXT.decode() not in text and "<html>" not in text, "the page's text is not shown"


def _finish_refused(sc: Scene, token: str, operation: str, answer: Answer) -> _Ingress:
    """finishSecret with ``operation`` answered by ``answer``: refused as not Secrets Manager's answer."""
    with _answered(sc, operation, answer) as (ingress, client):
        with pytest.raises(PermanentError) as caught:
            sc.step("finishSecret", token, client=client)
    _refused(caught.value, ingress, operation)
    return ingress


def _refused(caught: RotatorError, ingress: _Ingress, operation: str) -> None:
    _not_aws(f"{caught} | {caught.hint}", ingress, operation)
    assert "endpoint_url" in (caught.hint or "") and "HTTPS_PROXY" in (caught.hint or ""), caught.hint


def _logged(caplog: pytest.LogCaptureFixture, words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if words in r.getMessage()]


def _ready_to_finish(sc: Scene) -> tuple[str, str]:
    """A rotation through testSecret: its version and the pending token's id."""
    token = sc.start()
    for step in STEPS[:3]:
        sc.step(step, token)
    return token, sc.payload("AWSPENDING", token)["token_id"]


# -- writes the step needs: the step fails ---------------------------------------------------------


@pytest.mark.parametrize("portal", PORTALS.values(), ids=PORTAL_IDS)
def test_a_put_answered_by_a_portal_fails_create_secret_and_revokes_the_minted_token(scene, caplog, portal):
    token = scene.start()
    with _answered(scene, "PutSecretValue", portal) as (ingress, client):
        with pytest.raises(PermanentError) as caught:
            scene.step("createSecret", token, client=client)
    _refused(caught.value, ingress, "PutSecretValue")
    assert not _logged(caplog, "stored token"), "nothing was stored"
    (minted,) = scene.minted()
    assert minted["revoked_at"] is not None, "the token no version holds is revoked, as after any failed put"
    assert scene.stages().get(token) == ["AWSPENDING"]
    for step in STEPS:  # Secrets Manager's retry of the rotation
        scene.step(step, token)
    assert scene.payload("AWSCURRENT")["token_id"] == scene.active_minted()[0]["id"]
    scene.check_invariants()


def test_a_put_answer_naming_another_version_fails_create_secret(scene, caplog):
    """Secrets Manager makes the ClientRequestToken the VersionId: an answer naming another version, even
    with this secret's ARN and Name, is not the answer to this put."""
    token, other = scene.start(), str(uuid.uuid4())
    body = json.dumps({"ARN": scene.arn, "Name": scene.name, "VersionId": other, "VersionStages": ["AWSPENDING"]})
    with _answered(scene, "PutSecretValue", (200, "application/x-amz-json-1.1", body.encode())) as (ingress, client):
        with pytest.raises(PermanentError) as caught:
            scene.step("createSecret", token, client=client)
    _refused(caught.value, ingress, "PutSecretValue")
    assert f"it is version '{other}', not '{token}', the ClientRequestToken sent" in str(caught.value)
    assert not _logged(caplog, "stored token")
    assert scene.active_minted() == [], "the minted token is revoked"


@pytest.mark.parametrize("portal", PORTALS.values(), ids=PORTAL_IDS)
def test_a_revocation_record_answered_by_a_portal_fails_finish_secret_before_the_move(scene, caplog, portal):
    token, _ = _ready_to_finish(scene)
    ingress = _finish_refused(scene, token, "TagResource", portal)
    assert "UpdateSecretVersionStage" not in ingress.operations, "no move without the record of the revocation"
    assert f"rotator:revoke:{scene.bootstrap_id}" not in scene.tags()
    assert scene.payload("AWSCURRENT")["token_id"] == scene.bootstrap_id
    assert not _logged(caplog, "is AWSCURRENT of")
    scene.step("finishSecret", token)  # the retry
    assert scene.payload("AWSCURRENT", token)["token_id"] != scene.bootstrap_id
    scene.check_invariants()


@pytest.mark.parametrize("portal", PORTALS.values(), ids=PORTAL_IDS)
def test_a_move_answered_by_a_portal_fails_finish_secret(scene, caplog, portal):
    token, pending = _ready_to_finish(scene)
    _finish_refused(scene, token, "UpdateSecretVersionStage", portal)
    assert scene.payload("AWSCURRENT")["token_id"] == scene.bootstrap_id, "AWSCURRENT did not move"
    assert not _logged(caplog, "is AWSCURRENT of")
    scene.step("finishSecret", token)  # the retry
    assert scene.payload("AWSCURRENT")["token_id"] == pending
    scene.check_invariants()


@pytest.mark.parametrize("portal", PORTALS.values(), ids=PORTAL_IDS)
def test_a_move_back_answered_by_a_portal_needs_attention_not_moved_back(scene, caplog, portal):
    """The pending token is revoked just after the move: AWSCURRENT must go back. A portal's answer to that
    move is no move back; the error says AWSCURRENT still holds the dead token and how to move it."""
    token, pending = _ready_to_finish(scene)

    def revoked_after_the_move(name: str) -> None:
        if name == "moved":
            scene.fake.state.revoke(pending)

    with _answered(scene, "UpdateSecretVersionStage", portal, call=2) as (ingress, client):
        with pytest.raises(NeedsAttention) as caught:
            scene.step("finishSecret", token, client=client, checkpoint=revoked_after_the_move)
    assert "moving AWSCURRENT back" in str(caught.value), caught.value
    _not_aws(str(caught.value), ingress, "UpdateSecretVersionStage")
    assert "update-secret-version-stage" in (caught.value.hint or "")
    assert scene.payload("AWSCURRENT")["token_id"] == pending, "what the error says: not moved back"


# -- best-effort writes: a failure is logged as such, never reported done ---------------------------


def _finish_warns(sc: Scene, caplog: Any, ready: tuple[str, str], operation: str, answer: Answer, warning: str) -> None:
    """finishSecret whose second ``operation`` (a best-effort write after the move) is answered by ``answer``:
    AWSCURRENT moved all the same, and the ``warning`` line says that write is not done, as not AWS's answer."""
    token, pending = ready
    with _answered(sc, operation, answer, call=2) as (ingress, client):
        assert sc.step("finishSecret", token, client=client) is None
    assert sc.payload("AWSCURRENT")["token_id"] == pending
    (line,) = _logged(caplog, warning)
    _not_aws(line, ingress, operation)


@pytest.mark.parametrize("portal", PORTALS.values(), ids=PORTAL_IDS)
def test_a_record_rewrite_answered_by_a_portal_keeps_the_earlier_record_and_says_so(scene, caplog, portal):
    """Step 2b brings the record down to grace after the move; answered by a portal, the record keeps step 1's
    (later) time, and the last line gives that time, the one the secret holds."""
    _finish_warns(scene, caplog, _ready_to_finish(scene), "TagResource", portal, "stays due at")
    recorded = scene.tags()[f"rotator:revoke:{scene.bootstrap_id}"]
    (done,) = _logged(caplog, "is AWSCURRENT of")
    assert done.endswith(f"will be revoked after {recorded}"), (done, recorded)


@pytest.mark.parametrize("portal", PORTALS.values(), ids=PORTAL_IDS)
def test_dropping_awspending_answered_by_a_portal_is_logged_as_not_done(scene, caplog, portal):
    token, _ = ready = _ready_to_finish(scene)
    _finish_warns(scene, caplog, ready, "UpdateSecretVersionStage", portal, "could not remove AWSPENDING")
    assert sorted(scene.stages()[token]) == ["AWSCURRENT", "AWSPENDING"], "what the warning says"


@pytest.mark.parametrize("portal", PORTALS.values(), ids=PORTAL_IDS)
def test_removing_the_own_record_after_a_move_back_answered_by_a_portal_is_logged(scene, caplog, portal):
    token, pending = _ready_to_finish(scene)

    def revoked_after_the_move(name: str) -> None:
        if name == "moved":
            scene.fake.state.revoke(pending)

    with _answered(scene, "UntagResource", portal) as (ingress, client):
        with pytest.raises(PermanentError, match="moved back"):
            scene.step("finishSecret", token, client=client, checkpoint=revoked_after_the_move)
    (warning,) = _logged(caplog, "could not remove the record")
    _not_aws(warning, ingress, "UntagResource")
    assert f"rotator:revoke:{scene.bootstrap_id}" in scene.tags(), "what the warning says"
    assert scene.payload("AWSCURRENT")["token_id"] == scene.bootstrap_id


def _rotated(sc: Scene) -> None:
    """A whole rotation: the bootstrapped token is recorded for revocation after grace."""
    sc.rotate()
    assert f"rotator:revoke:{sc.bootstrap_id}" in sc.tags()


@pytest.mark.parametrize("portal", PORTALS.values(), ids=PORTAL_IDS)
def test_removing_a_record_after_its_revocation_answered_by_a_portal_is_logged(scene, caplog, portal):
    _rotated(scene)
    scene.clock.advance(GRACE + timedelta(minutes=1))
    with _answered(scene, "UntagResource", portal) as (ingress, client):
        report = scene.invoke({"action": "revoke-expired"}, client=client)
    assert report["revoked"] == [scene.bootstrap_id], report
    (warning,) = _logged(caplog, "is revoked but its record stays")
    _not_aws(warning, ingress, "UntagResource")
    assert f"rotator:revoke:{scene.bootstrap_id}" in scene.tags(), "what the warning says"
    scene.invoke({"action": "revoke-expired"})  # the next run drops it
    assert f"rotator:revoke:{scene.bootstrap_id}" not in scene.tags()


@pytest.mark.parametrize("portal", PORTALS.values(), ids=PORTAL_IDS)
def test_a_corrected_due_time_answered_by_a_portal_is_logged_as_not_written(scene, caplog, portal):
    _rotated(scene)
    key = f"rotator:revoke:{scene.bootstrap_id}"
    late = rfc3339_seconds(scene.clock.now() + timedelta(days=10))
    scene.client().tag_resource(SecretId=scene.name, Tags=[{"Key": key, "Value": late}])
    with _answered(scene, "TagResource", portal) as (ingress, client):
        scene.invoke({"action": "revoke-expired"}, client=client)
    (error,) = _logged(caplog, "could not write the corrected time")
    _not_aws(error, ingress, "TagResource")
    assert scene.tags()[key] == late, "what the error says: the next pass corrects it again"


@pytest.mark.parametrize("operation", ["TagResource", "UntagResource"])
@pytest.mark.parametrize("portal", PORTALS.values(), ids=PORTAL_IDS)
def test_marking_a_refused_claim_answered_by_a_portal_is_logged_and_the_claim_stays(scene, caplog, portal,
                                                                                    operation):  # fmt: skip
    """Answered by a portal, the attention tag was taken as written and the claim removed: a refused claim
    vanished without the mark a person looks for. Now the claim stays (the next run refuses it again)."""
    scene.rotate()
    _, victim = scene.fake.state.add_token("team B's CI token")
    scene.client().tag_resource(SecretId=scene.name, Tags=[{"Key": f"rotator:revoke:{victim}",
                                                            "Value": "2020-01-01T00:00:00Z"}])  # fmt: skip
    with _answered(scene, operation, portal) as (ingress, client):
        with pytest.raises(NeedsAttention, match=f"refused to revoke {victim}"):
            scene.invoke({"action": "revoke-expired"}, client=client)
    (warning,) = _logged(caplog, "could not mark the refused claim")
    _not_aws(warning, ingress, operation)
    tags = scene.tags()
    assert f"rotator:revoke:{victim}" in tags, "the claim is not removed unmarked"
    assert (f"rotator:attention:{victim}" in tags) == (operation == "UntagResource")
    assert scene.fake.state.token_by_id(victim)["revoked_at"] is None


# -- reads ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["DescribeSecret", "GetSecretValue"])
@pytest.mark.parametrize("portal", PORTALS.values(), ids=PORTAL_IDS)
def test_a_read_answered_by_a_portal_fails_the_step(scene, portal, operation):
    """The steps read through the store's checked reads (secretsmanager.describe_answer, read_stage)."""
    token = scene.start()
    with _answered(scene, operation, portal) as (ingress, client):
        with pytest.raises(PermanentError) as caught:
            scene.step("createSecret", token, client=client)
    _refused(caught.value, ingress, operation)
    assert scene.minted() == [], "nothing is minted on a read that is not Secrets Manager's"


@pytest.mark.parametrize("portal", PORTALS.values(), ids=PORTAL_IDS)
def test_a_version_list_answered_by_a_portal_revokes_nothing_and_marks_no_claim(scene, caplog, portal):
    """ListSecretVersionIds holds the run ids that prove a claim: a portal's answer read as "no versions"
    refused the due claim, marking rotator's own record for a person. Now the run fails and retries."""
    _rotated(scene)
    scene.clock.advance(GRACE + timedelta(minutes=1))
    with _answered(scene, "ListSecretVersionIds", portal) as (ingress, client):
        with pytest.raises(RotatorError) as caught:
            scene.invoke({"action": "revoke-expired"}, client=client)
    text = f"{caught.value} | {caplog.text}"
    _not_aws(text, ingress, "ListSecretVersionIds")
    tags = scene.tags()
    assert f"rotator:revoke:{scene.bootstrap_id}" in tags and f"rotator:attention:{scene.bootstrap_id}" not in tags
    assert scene.fake.state.token_by_id(scene.bootstrap_id)["revoked_at"] is None
    assert scene.invoke({"action": "revoke-expired"})["revoked"] == [scene.bootstrap_id], "the next run revokes it"

