"""One secret the scheduled revoke-expired run cannot handle fails alone; the others' revocations go on.

A payload with Go's zero time as ``expires_at`` (``0001-01-01T00:00:00Z``, what another tool may write
for "no expiry") made the compliance check compute expiry - grace below datetime's year 1: an
OverflowError, which neither the per-secret loop nor the handler caught (they caught RotatorError only).
Every run then ended there: the secrets after it got no revocation, no orphan sweep and no compliance
line, and the log said no more than Lambda's traceback. Now that time reads as expired long ago, and any
unexpected error of one secret is that secret's failure: logged with its type and traceback, named in the
invocation's error, while the other secrets are done (moto in server mode, the fake influxctl; the scene
of tests/runners/test_aws_lambda.py).
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest

from rotator.core.contracts import TokenRecord
from rotator.core.errors import TransientError
from rotator.runners import lambda_rotation
from tests.runners import test_aws_lambda
from tests.runners.test_aws_lambda import Scene, _add_policy, _rotated_twice, _start_rotation

scene = test_aws_lambda.scene  # the fixture: a secret bootstrapped on moto, its policy, the fake influxctl

GO_ZERO_TIME = "0001-01-01T00:00:00Z"


def _lines(capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, Any]]:
    """The compliance lines printed since the last read, by secret ARN."""
    lines = [json.loads(x)["rotator_compliance"] for x in capsys.readouterr().out.splitlines()
             if x.startswith('{"rotator_compliance"')]  # fmt: skip
    return {line["secret"]: line for line in lines}


def _second_secret_first(scene: Scene) -> str:
    """Secret A (the scene's) with a revocation due, and a second secret B of another policy whose payload
    has Go's zero time as expires_at, B done first in this hour's run (the run starts at another secret
    every hour). A's due token id; B's name is ``scene.name + "-b"``."""
    due = _rotated_twice(scene)
    name = f"{scene.name}-b"
    value, token_id = scene.fake.state.add_token("team token")
    scene.values.add(value)
    payload = {"token": value, "token_id": token_id, "issuer": "influxctl-management", "policy": "other",
               "created_at": scene.clock.now().isoformat(), "expires_at": GO_ZERO_TIME}  # fmt: skip
    scene.client().create_secret(Name=name, SecretString=json.dumps(payload),
                                 Tags=[{"Key": "managed-by", "Value": "rotator"},
                                       {"Key": "rotator:policy", "Value": "other"}])  # fmt: skip
    _start_rotation(scene.aws, name, str(uuid.uuid4()))  # rotation on: a NextRotationDate to compare
    _add_policy(scene, "other", name, first=True)
    while lambda_rotation._first_of(scene.clock.now(), 2) != 0:
        scene.clock.advance(timedelta(hours=1))
    return due


def test_go_s_zero_time_as_expiry_reads_as_expired_and_stops_no_run(scene, capsys):
    """The reviewer's reproduction: B first, with Go's zero time; A's due token is revoked all the same,
    and B's line says its token expires before its next rotation (not compliant)."""
    due = _second_secret_first(scene)
    capsys.readouterr()
    report = scene.invoke({"action": "revoke-expired"})
    assert report["revoked"] == [due] and report["failed"] == []
    assert scene.fake.state.token_by_id(due)["revoked_at"] is not None
    lines = _lines(capsys)
    (b_arn,) = set(lines) - {scene.arn}
    assert lines[b_arn]["rotation_after_expiry"] is True and lines[b_arn]["compliant"] is False
    assert lines[scene.arn]["compliant"] is True


def _overflowing(view: Any, current: TokenRecord, grace: timedelta) -> bool:
    """The comparison as it was: expiry - grace, which overflows for a year-1 expiry."""
    from rotator.config.timefmt import as_utc

    assert view.next_rotation is not None and current.expires_at is not None
    return bool(view.next_rotation > as_utc(current.expires_at) - grace)


def test_an_unexpected_error_of_one_secret_is_that_secret_s_failure(scene, capsys, caplog, monkeypatch):
    """Any error no check foresaw (here the overflow itself, put back) fails B only: A's due token is
    revoked and A's line printed, the summary is logged, B's error is logged with its type and traceback,
    and the invocation fails naming B, so the alarms on failed invocations fire."""
    monkeypatch.setattr(lambda_rotation, "_rotation_after_expiry", _overflowing)
    due = _second_secret_first(scene)
    capsys.readouterr()
    with pytest.raises(TransientError) as info:
        scene.invoke({"action": "revoke-expired"})
    b_name = f"{scene.name}-b"
    assert f"{b_name}: unexpected OverflowError: date value out of range" in str(info.value)
    assert "1 failure(s)" in str(info.value)
    assert "traceback is in the function's log" in info.value.hint
    assert scene.fake.state.token_by_id(due)["revoked_at"] is not None, "A's revocation: done all the same"
    assert list(_lines(capsys)) == [scene.arn], "A's compliance line; none for B, whose check failed"
    # (each record as made, its traceback rendered: the product's filter may render it first, on a handler)
    (logged,) = [t for t in scene.logs if t.startswith(f"revoke-expired: secret {b_name}: unexpected OverflowError")]
    assert "Traceback (most recent call last)" in logged and "in _overflowing" in logged
    assert '"revoked": ["' + due + '"]' in caplog.text, "the summary"


_LOOSE_VALUE = "M.V1." + "q" * 43  # a token-shaped text no Secret holds: the redactor does not know it


def _quoting_a_token(*args: object, **kwargs: object) -> bool:
    raise ValueError(f"cannot compare with {_LOOSE_VALUE}")


def test_an_unexpected_error_quoting_a_token_is_masked_in_the_failure(scene, capsys, monkeypatch):
    """An error no check foresaw may quote a value the redactor never saw: the failure masks it by its shape."""
    monkeypatch.setattr(lambda_rotation, "_rotation_after_expiry", _quoting_a_token)
    _second_secret_first(scene)
    with pytest.raises(TransientError) as info:
        scene.invoke({"action": "revoke-expired"})
    assert "unexpected ValueError: cannot compare with ***" in str(info.value)
    assert _LOOSE_VALUE not in str(info.value)
