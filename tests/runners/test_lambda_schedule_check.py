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

from rotator.config.policy import load_config
from rotator.config.policy_types import Policy
from rotator.core.errors import PermanentError
from rotator.runners.lambda_rotation import _Rotation, handle
from tests.runners import test_aws_lambda
from tests.runners.test_aws_lambda import GRACE, STEPS, Context, Scene, _start_rotation, _v2_secret

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
    # At the cron's hour, as AWS gives NextRotationDate: a window that opens at the time of day the test runs
    # is cut at the end of its UTC day (_window_end), and read "window of 1h42m" when run at 22:17
    at_three = scene.clock.now().replace(hour=3, minute=0, second=0, microsecond=0)
    late = _WithRules(scene.client(), {"ScheduleExpression": "cron(0 3 1 */3 ? *)", "Duration": "2h"},
                      at_three + timedelta(days=45))  # fmt: skip
    text = str(_refused(scene, token, late))
    assert "cron(0 3 1 */3 ? *)" in text and "until the next rotation, at" in text and "window of 2h" in text, text
    assert "31d1h1m" in text, text
    soon = _WithRules(scene.client(), {"ScheduleExpression": "cron(0 3 1 */3 ? *)", "Duration": "2h"},
                      at_three + timedelta(days=29))  # fmt: skip
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
    # cron: AWS's default window too (review: a cron without Duration had none): an hour for a schedule in
    # hours (its hours field repeats), else the rest of the UTC day
    for daily in ("cron(0 3 ? * MON *)", "cron(0 0 1 * ? *)", "cron(30 16 L * ? *)", "cron(0 3 1 */3 ? *)"):
        assert _rotation_schedule({"ScheduleExpression": daily})[1:] == (None, day), daily  # type: ignore[index]
    for hourly in ("cron(0 */4 * * ? *)", "cron(0 0/6 * * ? *)", "cron(0 8,20 * * ? *)", "cron(0 8-17 ? * MON-FRI *)",
                   "cron(15 * * * ? *)"):
        assert _rotation_schedule({"ScheduleExpression": hourly})[1:] == (None, hour), hourly  # type: ignore[index]
    assert _rotation_schedule({"ScheduleExpression": "cron(0 */4 * * ? *)", "Duration": "2h"})[1:] == (None, 2 * hour)  # type: ignore[index]
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


# -- a cron schedule's default window (review) -----------------------------------------------------

#: docs/aws-lambda.md's example: schedule rate(30 days), grace 2d, so a lifetime of 33d10m
DOC_POLICY = """
[defaults]
schedule = "rate(30 days)"
grace = "2d"

[[policy]]
name = "influxdb3-admin"
{extra}

[policy.issuer]
type = "influxdb3"
base_url = "https://influxdb3.example.com:8181"
kind = "named_admin"
credential = "self"

[[policy.store]]
type = "aws-secretsmanager"
secret_id = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:influxdb3/admin-AbCdEf"
"""


def _doc_policy(tmp_path: Any, extra: str = "") -> Policy:
    path = tmp_path / "lambda.toml"
    path.write_text(DOC_POLICY.format(extra=extra), encoding="utf-8")
    policy: Policy = load_config(path).policies[0]
    return policy


class _Issuer:
    """Stands in for the policy's issuer: only its class's ``kind`` is read."""

    kind = "influxdb3"


def _check_schedule(policy: Policy, rules: dict[str, Any], next_rotation: datetime | None, now: datetime,
                    issuer: Any = None) -> None:  # fmt: skip
    """createSecret's check alone, for a secret whose DescribeSecret gives ``rules`` and ``next_rotation``."""
    from types import SimpleNamespace

    view = SimpleNamespace(rotation_rules=rules, next_rotation=next_rotation, arn="arn:aws:secretsmanager:x")
    step = SimpleNamespace(t=SimpleNamespace(view=view, policy=policy), issuer=issuer or _Issuer())
    _Rotation._check_schedule(step, now)  # type: ignore[arg-type]


def test_a_cron_schedule_without_duration_has_aws_s_default_window(tmp_path):
    """Review: a cron() schedule without Duration was compared as if the rotation ran at NextRotationDate
    itself, but AWS's default window for a schedule in days lasts to the end of that UTC day. The docs'
    policy (lifetime 33d10m, grace 2d) minting at 00:05 on 1 March under a monthly cron: the rotation on 1 April
    may start as late as 23:59, when the token's grace would be cut by 14 h: refused. A lifetime that covers
    the day's window passes; so does a window the secret closes early (Duration) that fits."""
    now, next_rotation = datetime(2026, 3, 1, 0, 5, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)
    policy = _doc_policy(tmp_path)
    assert policy.lifetime == timedelta(days=33, minutes=10) and policy.grace == timedelta(days=2)
    monthly = {"ScheduleExpression": "cron(0 0 1 * ? *)"}
    with pytest.raises(PermanentError) as caught:
        _check_schedule(policy, monthly, next_rotation, now)
    text = str(caught.value)
    assert "until the next rotation, at 2026-04-01T00:00:00Z (+ a window of 1d)" in text, text
    assert "tokens that live 33d10m" in text, text

    _check_schedule(_doc_policy(tmp_path, 'lifetime = "34d"'), monthly, next_rotation, now)
    # A window that opens at 16:00 ends at midnight too: 8 h, still refused.
    with pytest.raises(PermanentError, match="a window of 8h"):
        _check_schedule(policy, {"ScheduleExpression": "cron(0 16 1 * ? *)"}, next_rotation.replace(hour=16), now)
    # A cron in hours: the default window is an hour.
    hourly, noon = {"ScheduleExpression": "cron(0 */6 * * ? *)"}, now.replace(hour=12, minute=0)
    _check_schedule(policy, hourly, noon.replace(hour=18), noon)
    late = noon + policy.lifetime - policy.grace - timedelta(minutes=30)  # + 1 h of window: 30 min too late
    with pytest.raises(PermanentError, match="a window of 1h"):
        _check_schedule(policy, hourly, late, noon)
    _check_schedule(policy, {**hourly, "Duration": "0h"}, late, noon)


def test_the_compliance_flag_counts_the_window_of_the_next_rotation(tmp_path):
    """rotation_after_expiry compares the end of the next rotation's window, not its start: a token
    expiring at noon + grace with a rotation due at midnight that day (AWS's default window: the whole
    UTC day) is flagged; with Duration 4h it is not."""
    from types import SimpleNamespace

    from rotator.core.contracts import TokenRecord
    from rotator.core.secret import Secret
    from rotator.runners.lambda_rotation import _rotation_after_expiry

    grace = timedelta(days=2)
    next_rotation = datetime(2026, 4, 1, tzinfo=UTC)
    current = TokenRecord(Secret("v"), "t1", "influxdb3", "p", next_rotation - timedelta(days=33),
                          next_rotation + timedelta(hours=12) + grace)  # fmt: skip

    def late(rules: dict[str, Any]) -> bool:
        view = SimpleNamespace(rotation_rules=rules, next_rotation=next_rotation)
        return _rotation_after_expiry(view, current, grace)  # type: ignore[arg-type]

    assert late({"ScheduleExpression": "cron(0 0 1 * ? *)"}) is True
    assert late({"ScheduleExpression": "rate(30 days)"}) is True
    assert late({"ScheduleExpression": "rate(30 days)", "Duration": "4h"}) is False
    assert late({"ScheduleExpression": "cron(0 */6 * * ? *)"}) is False


# -- an issuer whose tokens never expire (review) ---------------------------------------------------


def test_an_influxdb2_policy_under_a_longer_secret_schedule_rotates_and_is_not_flagged(
        aws, influxdb2_fake, tmp_path, caplog, capsys):
    """Review: InfluxDB v2 authorizations have no expiry, yet createSecret refused a policy rate(30 days)
    under a secret rotating every 60 days ("AWSCURRENT would expire while still in use"), and the
    compliance line flagged rotation_after_expiry on the expiry rotator had computed, which the token does
    not have. Now every step completes (an INFO line says why the schedule is not refused), and the line
    is compliant."""
    arn, config, clock, human, _human_id = _v2_secret(aws, influxdb2_fake, tmp_path)
    token = str(uuid.uuid4())
    _start_rotation(aws, arn, token)
    rules = {"ScheduleExpression": "rate(60 days)", "Duration": "4h"}
    client = _WithRules(aws.client(), rules, clock.now() + timedelta(days=60))
    caplog.set_level("INFO")
    for step in STEPS:
        handle({"Step": step, "SecretId": arn, "ClientRequestToken": token}, Context(), config_path=config,
               client=client, clock=clock)  # fmt: skip
    versions = aws.client().list_secret_version_ids(SecretId=arn)["Versions"]
    assert [v["VersionStages"] for v in versions if v["VersionId"] == token] == [["AWSCURRENT"]]
    assert "mints tokens that never expire" in caplog.text and "not refused" in caplog.text, caplog.text
    current = json.loads(aws.client().get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")["SecretString"])
    assert current["expires_at"] is not None  # the lifetime rotator asked for, which the flag must not read
    assert current["token"] not in caplog.text and human not in caplog.text

    capsys.readouterr()
    handle({"action": "revoke-expired"}, Context(), config_path=config, client=client, clock=clock)
    line = _compliance(capsys)
    assert line["next_rotation_date"] is not None and line["rotation_after_expiry"] is False, line
    assert line["compliant"] is True, line
