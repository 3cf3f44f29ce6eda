"""A payload with its ``token`` and ``token_id`` swapped is refused, and the token value is never shown.

A person (or another tool) writing a payload by hand may put the token into ``token_id``. The id is
shown everywhere (log lines, the errors Secrets Manager records, the compliance line), unmasked: the
value reached setSecret's and finishSecret's errors ("token <value> in AWSPENDING version ... is unknown
to the issuer") and testSecret's retry lines. A token id shaped like a token is refused as the payload
is read (contracts.token_id_problem), with a message that never quotes it (moto in server mode, the fake
influxctl; the scene of tests/runners/test_aws_lambda.py, whose leak check runs at the end of each test).
"""

from __future__ import annotations

import json

import pytest

from rotator.core.contracts import MALFORMED_HINT
from rotator.core.errors import MalformedPayload, PermanentError
from tests.runners import test_aws_lambda
from tests.runners.test_aws_lambda import POLICY, Scene

scene = test_aws_lambda.scene  # the fixture: a secret bootstrapped on moto, its policy, the fake influxctl

REFUSED = "payload key 'token_id' has the shape of a token value, not of an id"


def _no_value_shown(scene: Scene, value: str, error: PermanentError) -> None:
    assert value not in str(error) and value not in error.hint
    assert not any(value in text for text in scene.logs)


@pytest.mark.parametrize("step", ["setSecret", "testSecret", "finishSecret"])
def test_a_swapped_awspending_payload_is_refused_without_showing_the_value(scene, step):
    """A person's token put, fields swapped, into the rotation's version (finishSecret may be invoked
    without the steps before it): refused at once, the way out (clearing the label) in the hint."""
    token = scene.start()
    value, token_id = scene.fake.state.add_token("a person's token")
    scene.values.add(value)
    scene.client().put_secret_value(
        SecretId=scene.name, ClientRequestToken=token, VersionStages=["AWSPENDING"],
        SecretString=json.dumps({"token": token_id, "token_id": value, "created_at": scene.clock.now().isoformat()}),
    )  # fmt: skip
    calls = len(scene.fake.state.calls())
    with pytest.raises(PermanentError) as info:
        scene.step(step, token)
    assert f"version {token}: {REFUSED}" in str(info.value)
    assert f"--remove-from-version-id {token}" in info.value.hint
    _no_value_shown(scene, value, info.value)
    assert len(scene.fake.state.calls()) == calls, "no issuer call with what the payload holds"
    assert scene.payload("AWSCURRENT")["token_id"] == scene.bootstrap_id
    assert scene.fake.state.token_by_id(token_id)["revoked_at"] is None


def test_a_swapped_awscurrent_payload_of_an_adopted_secret_is_refused_before_anything_is_minted(scene):
    """adopt = true: a secret another team's tooling wrote, fields swapped. createSecret refuses it,
    minting nothing, and the scheduled run shows no line for it (it holds no rotator token)."""
    value, token_id = scene.fake.state.add_token("team B's token, shared with their apps")
    scene.values.add(value)
    scene.name = f"{scene.name}-teamb"
    payload = {"token": token_id, "token_id": value, "created_at": scene.clock.now().isoformat()}
    scene.client().create_secret(Name=scene.name, SecretString=json.dumps(payload),
                                 Tags=[{"Key": "rotator:policy", "Value": POLICY}])  # fmt: skip
    scene.arn = scene.client().describe_secret(SecretId=scene.name)["ARN"]
    scene.write_policy(extra_policy="adopt = true")
    token = scene.start()
    with pytest.raises(MalformedPayload) as info:
        scene.step("createSecret", token)
    assert f"{scene.arn} version " in str(info.value) and REFUSED in str(info.value)
    assert info.value.hint == MALFORMED_HINT
    _no_value_shown(scene, value, info.value)
    assert scene.minted() == []
    report = scene.invoke({"action": "revoke-expired", "SecretId": scene.arn})
    assert report["revoked"] == [] and report["failed"] == []
    assert not any(value in text for text in scene.logs)
    assert scene.fake.state.token_by_id(token_id)["revoked_at"] is None
