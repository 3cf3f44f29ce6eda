"""The rotation function compares the secret's rotation schedule with the token lifetime it mints
(moto in server mode, the fake influxctl; the scene of tests/runners/test_aws_lambda.py).

Review: nothing compared DescribeSecret's RotationRules with the policy's lifetime. A secret rotating
every 90 days under a 30-day policy got a token that expired two months before its next rotation, with
no word in the log. createSecret now refuses before it mints when the secret's interval + window +
grace exceeds the lifetime (a ``cron()`` schedule: its NextRotationDate against the new token's expiry
- grace), and the scheduled compliance line flags a NextRotationDate later than the current token's
expiry - grace.

moto keeps AutomaticallyAfterDays and sets NextRotationDate from it, but drops ScheduleExpression and
Duration: those secrets' answers are rewritten by :class:`_WithRules`, as AWS gives them.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.exceptions
import pytest

from rotator.core.errors import PermanentError
from tests.runners import test_aws_lambda
from tests.runners.test_aws_lambda import GRACE, STEPS, Scene

scene = test_aws_lambda.scene  # the fixture: a secret bootstrapped on moto, its policy, the fake influxctl

#: The scene's policy: schedule 30d, grace 1h, verify_timeout 30s, margin 1d (the default)
LIFETIME = timedelta(days=30) + GRACE + 2 * timedelta(seconds=30) + timedelta(days=1)
_DROP = object()


class _WithRules:
    """The real client, whose DescribeSecret answers carry ``rules`` as RotationRules and ``next_rotation``
    as NextRotationDate (``_DROP``: the key left out)."""

    def __init__(self, real: Any, rules: Any = _DROP, next_rotation: Any = _DROP) -> None:
        self._real, self._rules, self._next = real, rules, next_rotation

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def describe_secret(self, **kw: Any) -> Any:
        answer = dict(self._real.describe_secret(**kw))
        for key, value in (("RotationRules", self._rules), ("NextRotationDate", self._next)):
            answer.pop(key, None)
            if value is not _DROP:
                answer[key] = value
        return answer


def _start(scene: Scene, days: int = 30) -> str:
    """A rotation started as Secrets Manager does, with RotationRules AutomaticallyAfterDays ``days``."""
    token = str(uuid.uuid4())
    with pytest.raises(botocore.exceptions.ClientError, match="ResourceNotFoundException"):
        scene.client().rotate_secret(
            SecretId=scene.name, ClientRequestToken=token, RotationRules={"AutomaticallyAfterDays": days},
            RotationLambdaARN=f"arn:aws:lambda:{scene.aws.region}:{scene.aws.account}:function:rotator-dummy",
        )  # fmt: skip
    assert scene.stages().get(token) == ["AWSPENDING"]
    return token


def _refused(scene: Scene, token: str, client: Any) -> PermanentError:
    with pytest.raises(PermanentError) as caught:
        scene.step("createSecret", token, client=client)
    assert scene.minted() == [], "refused before the mint"
    with pytest.raises(botocore.exceptions.ClientError, match="ResourceNotFoundException"):
        scene.client().get_secret_value(SecretId=scene.name, VersionId=token)  # the version holds no value
    return caught.value


def _compliance(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    (line,) = [json.loads(x)["rotator_compliance"] for x in capsys.readouterr().out.splitlines()
               if x.startswith('{"rotator_compliance"')]  # fmt: skip
    return line  # type: ignore[no-any-return]


# -- createSecret ----------------------------------------------------------------------------------


def test_a_secret_rotating_every_90_days_under_a_30_day_policy_is_refused_before_the_mint(scene):
    """The reviewer's reproduction (moto keeps AutomaticallyAfterDays): refused, nothing minted, the message
    names the secret's schedule and the policy's; once the secret rotates every 30 days, the retry of the
    same rotation completes."""
    token = _start(scene, days=90)
    error = _refused(scene, token, scene.client())
    text = str(error)
    assert "AutomaticallyAfterDays 90" in text and "every 90d" in text and "91d1h in all" in text, text
    assert "schedule '30d'" in text and "tokens that live 31d1h1m" in text and "Nothing was minted" in text, text
    assert "rotation-rules" in error.hint and "31d1m" in error.hint and "lengthen the policy's schedule" in error.hint
    assert scene.payload("AWSCURRENT")["token_id"] == scene.bootstrap_id

    # The secret's schedule fixed (moto's rotate-secret would start another rotation: the answer is rewritten).
    aligned = _WithRules(scene.client(), {"AutomaticallyAfterDays": 30})
    for step in STEPS:
        scene.step(step, token, client=aligned)
    assert scene.stages()[token] == ["AWSCURRENT"] and len(scene.minted()) == 1


@pytest.mark.parametrize(
    ("rules", "names"),
    [
        ({"AutomaticallyAfterDays": 90, "ScheduleExpression": "rate(90 days)", "Duration": "4h"},
         ["ScheduleExpression 'rate(90 days)', Duration '4h'", "every 90d", "window of 4h", "90d5h in all"]),
        ({"ScheduleExpression": "rate(800 hours)"}, ["ScheduleExpression 'rate(800 hours)'", "every 33d8h"]),
        # a window that alone tips it over: 30 days + 24 h + grace 1 h is 31d1h <= 31d1h1m; + 2 h of window is not
        ({"ScheduleExpression": "rate(31 days)", "Duration": "1h"}, ["every 31d", "31d2h in all"]),
    ],
    ids=["rate-days", "rate-hours", "window"],
)
def test_a_schedule_expression_rotating_less_often_than_the_token_lives_is_refused(scene, rules, names):
    token = _start(scene)
    text = str(_refused(scene, token, _WithRules(scene.client(), rules)))
    assert "policy 'mgmt' (schedule '30d')" in text and "31d1h1m" in text, text
    for name in names:
        assert name in text, (name, text)


def test_a_cron_schedule_whose_next_rotation_comes_after_the_new_token_s_expiry_is_refused(scene):
    token = _start(scene)
    now = scene.clock.now()
    late = _WithRules(scene.client(), {"ScheduleExpression": "cron(0 3 1 */3 ? *)", "Duration": "2h"},
                      now + timedelta(days=45))  # fmt: skip
    text = str(_refused(scene, token, late))
    assert "cron(0 3 1 */3 ? *)" in text and "until the next rotation, at" in text and "window of 2h" in text, text
    assert "31d1h1m" in text, text
    soon = _WithRules(scene.client(), {"ScheduleExpression": "cron(0 3 1 */3 ? *)", "Duration": "2h"},
                      now + timedelta(days=29))  # fmt: skip
    for step in STEPS:
        scene.step(step, token, client=soon)
    assert scene.stages()[token] == ["AWSCURRENT"]


@pytest.mark.parametrize(
    ("rules", "next_rotation"),
    [
        ({"AutomaticallyAfterDays": 30}, _DROP),  # what the scene's rotations use: aligned to the day
        ({"ScheduleExpression": "rate(30 days)", "Duration": "4h"}, _DROP),  # the template's default
        ({"ScheduleExpression": "rate(720 hours)"}, _DROP),
        ({"ScheduleExpression": "rate(7 days)", "Duration": "24h"}, _DROP),
        (_DROP, _DROP),  # no rotation configured: an on-demand RotateSecret
        ({"AutomaticallyAfterDays": 0}, _DROP),  # moto's answer without rules
        ({}, _DROP),
        ({"ScheduleExpression": "cron(0 3 ? * MON *)"}, _DROP),  # cron without NextRotationDate
        ({"ScheduleExpression": "every full moon"}, _DROP),  # unreadable: not refused
        ({"AutomaticallyAfterDays": 90, "Duration": "four hours"}, _DROP),
    ],
    ids=["days-30", "rate-30-days-4h", "rate-720-hours", "rate-7-days", "no-rules", "zero-days", "empty",
         "cron-without-date", "unreadable", "unreadable-duration"],
)
def test_an_aligned_or_absent_schedule_rotates(scene, rules, next_rotation):
    token = _start(scene)
    client = _WithRules(scene.client(), rules, next_rotation)
    for step in STEPS:
        scene.step(step, token, client=client)
    assert scene.stages()[token] == ["AWSCURRENT"] and len(scene.minted()) == 1


def test_the_forms_of_rotation_rules():
    from rotator.runners.lambda_rotation import _rotation_schedule

    day, hour = timedelta(days=1), timedelta(hours=1)
    assert _rotation_schedule({"AutomaticallyAfterDays": 30}) == ("AutomaticallyAfterDays 30", 30 * day, day)
    assert _rotation_schedule({"AutomaticallyAfterDays": 30, "ScheduleExpression": "rate(30 days)",
                               "Duration": "3h"})[1:] == (30 * day, 3 * hour)  # type: ignore[index]
    assert _rotation_schedule({"ScheduleExpression": "rate(1 day)"})[1:] == (day, day)  # type: ignore[index]
    assert _rotation_schedule({"ScheduleExpression": "rate(4 hours)"})[1:] == (4 * hour, hour)  # type: ignore[index]
    assert _rotation_schedule({"ScheduleExpression": "cron(0 3 ? * MON *)"})[1:] == (None, timedelta(0))  # type: ignore[index]
    for absent in (None, {}, {"AutomaticallyAfterDays": 0}, {"AutomaticallyAfterDays": True},
                   {"ScheduleExpression": "rate(30 weeks)"}, {"AutomaticallyAfterDays": 30, "Duration": "3"}):
        assert _rotation_schedule(absent) is None, absent


# -- the compliance line ---------------------------------------------------------------------------


def test_the_compliance_line_flags_a_next_rotation_after_the_token_s_expiry(scene, capsys):
    scene.rotate()  # AutomaticallyAfterDays 30: moto sets NextRotationDate 30 days on
    current = scene.payload("AWSCURRENT")
    expires = datetime.fromisoformat(current["expires_at"].replace("Z", "+00:00"))
    capsys.readouterr()
    scene.invoke({"action": "revoke-expired"})
    line = _compliance(capsys)
    assert line["next_rotation_date"] is not None and line["rotation_after_expiry"] is False, line
    assert line["compliant"] is True, line

    # The schedule changed since (or AWS moved the date): the token expires 30 minutes before its replacement.
    late = expires - GRACE + timedelta(minutes=30)
    scene.invoke({"action": "revoke-expired"}, client=_WithRules(scene.client(), {"AutomaticallyAfterDays": 90}, late))
    line = _compliance(capsys)
    assert line["next_rotation_date"] == late.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), line
    assert line["rotation_after_expiry"] is True and line["compliant"] is False, line

    # Without a NextRotationDate (no schedule, or moto's ScheduleExpression) nothing is flagged.
    scene.invoke({"action": "revoke-expired"}, client=_WithRules(scene.client(), _DROP, _DROP))
    line = _compliance(capsys)
    assert line["next_rotation_date"] is None and line["rotation_after_expiry"] is False and line["compliant"], line


def test_a_bootstrapped_token_without_expiry_is_never_flagged(scene, capsys):
    _start(scene, days=90)  # moto: NextRotationDate 90 days on; the bootstrapped token has no expires_at
    capsys.readouterr()
    scene.invoke({"action": "revoke-expired"})
    line = _compliance(capsys)
    assert line["next_rotation_date"] is not None and line["rotation_after_expiry"] is False, line
