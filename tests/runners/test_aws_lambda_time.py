"""The scheduled revoke-expired run within the Lambda's time (moto in server mode, the fake influxctl).

Lambda kills an invocation at its timeout: whatever the function had not written by then (the
summary, the compliance lines of the secrets it had not reached) is lost, and so are the
revocations of those secrets. Here time is the scene's FakeClock: the retry waits advance it, the
context's remaining time is read from it, and :class:`_LambdaClock` is Lambda's kill, raised from a
wait that would cross the end. An unreachable cluster is an influxctl that fails at once with a
transient error (gRPC Unavailable), so its retries cost fake time, not test time.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.config.policy_bundle import write_bundle
from rotator.core.clock import FakeClock
from rotator.core.contracts import TokenRecord
from rotator.core.errors import TransientError
from rotator.core.secret import Secret
from rotator.runners.lambda_rotation import _first_of, handle
from tests.runners import test_aws_lambda
from tests.runners.test_aws_lambda import GRACE, POLICY, Scene

scene = test_aws_lambda.scene  # the fixture: a secret bootstrapped on moto, its policy, the fake influxctl
_KEEP_S = 10  # lambda_rotation._SAFETY_MS: kept to write the results


class _Killed(BaseException):
    """Lambda's ``Task timed out``: nothing the function does catches it."""


class _LambdaClock(FakeClock):
    """The scene's time; a wait that would cross the invocation's end is where Lambda kills it."""

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        super().__init__(clock.now())
        self.end = clock.now() + timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        if self.now() + timedelta(seconds=seconds) > self.end:
            self.advance(self.end - self.now())
            raise _Killed
        super().sleep(seconds)


class _ClockContext:
    """The Lambda context of an invocation that ends at ``clock.end``."""

    def __init__(self, clock: _LambdaClock) -> None:
        self.clock = clock

    def get_remaining_time_in_millis(self) -> int:
        return int((self.clock.end - self.clock.now()).total_seconds() * 1000)


def _dead_cluster(scene: Scene, name: str = "cluster-a") -> tuple[str, Path]:
    """A second secret, bootstrapped, with a revocation long due, whose policy's cluster does not answer:
    its influxctl fails at once with gRPC Unavailable (transient) and counts its calls. Its policy comes
    first in the file, and the retry policy waits 30-60 s between 5 tries: 2-4 minutes of waiting."""
    calls = scene.dir / f"{name}-calls"
    binary = scene.dir / f"{name}-influxctl"
    binary.write_text(f"#!/bin/sh\necho x >> '{calls}'\n"
                      "echo 'Error: rpc error: code = Unavailable desc = connection refused' >&2\nexit 1\n")
    binary.chmod(0o755)
    secret = f"tests/lambda-dead-{uuid.uuid4().hex[:8]}"
    record = TokenRecord(Secret("d" * 40), "tok-dead-current", "influxctl-management", name, scene.clock.now(), None)
    scene.client().create_secret(Name=secret, SecretString=json.dumps(record.payload()), Tags=[
        {"Key": "managed-by", "Value": "rotator"}, {"Key": "rotator:policy", "Value": name},
        {"Key": "rotator:revoke:tok-dead-old", "Value": "2020-01-01T00:00:00Z"}])  # fmt: skip
    text = scene.config.read_text().replace("attempts = 2", "attempts = 5").replace(
        'base_delay = "1s"\nmax_delay = "1s"', 'base_delay = "60s"\nmax_delay = "60s"')
    head, rest = text.split("[[policy]]", 1)
    scene.config.write_text(head + f"""[[policy]]
name = "{name}"
schedule = "30d"
grace = "1h"
[policy.issuer]
type = "influxctl-management"
influxctl = "{binary}"
timeout_s = 5
[policy.issuer.profile]
product = "clustered"
host = "{name}.test.invalid"
port = 443
[[policy.store]]
type = "aws-secretsmanager"
secret_id = "{secret}"
region = "us-east-1"
endpoint_url = "{scene.aws.url}"
max_attempts = 1

[[policy]]""" + rest)
    write_bundle(scene.config)
    return secret, calls


def _compliance(out: str) -> dict[str, dict[str, Any]]:
    lines = [json.loads(x)["rotator_compliance"] for x in out.splitlines() if x.startswith('{"rotator_compliance"')]
    return {line["secret"]: line for line in lines}


def _due(scene: Scene) -> str:
    """The scene's secret rotated and its grace over: the bootstrapped token is due. Its id."""
    scene.rotate()
    scene.clock.advance(GRACE + timedelta(minutes=5))
    return scene.bootstrap_id


def _hour_starting_with(scene: Scene, index: int, count: int) -> None:
    """Advance the scene's clock to an hour whose scheduled run starts at secret ``index`` of ``count``."""
    while _first_of(scene.clock.now(), count) != index:
        scene.clock.advance(timedelta(hours=1))


@pytest.mark.parametrize("first", [0, 1], ids=["dead-cluster-first", "healthy-secret-first"])
def test_an_unreachable_cluster_costs_the_other_secrets_only_its_share_of_the_time(scene, capsys, caplog, first):
    """Issue review1#2: the scheduled run went through the file in order with no look at the time
    left, so a cluster that never answers, first in the file, held every run until Lambda killed it:
    the healthy secret after it was never revoked, and no run wrote a compliance line. Now the dead
    cluster gets its share of the time, the healthy secret is revoked, both lines are written, and
    the run ends in time, failing for the dead cluster only; whichever secret the run starts with."""
    due = _due(scene)
    dead, calls = _dead_cluster(scene)
    _hour_starting_with(scene, first, 2)
    clock = _LambdaClock(scene.clock, 100)
    capsys.readouterr()
    with pytest.raises(TransientError, match="revoke-expired: 1 failure") as failed:
        handle({"action": "revoke-expired"}, _ClockContext(clock), config_path=scene.config, client=scene.client(),
               clock=clock)  # the old function was _Killed here, in the dead cluster's third wait at the latest
    assert "tok-dead-old" in str(failed.value)
    assert scene.fake.state.token_by_id(due)["revoked_at"] is not None, "the healthy secret's token is revoked"
    assert f"rotator:revoke:{due}" not in scene.tags()
    lines = _compliance(capsys.readouterr().out)
    assert lines[scene.arn]["compliant"] is True and lines[scene.arn]["evaluated"] is True
    assert (list(lines).index(scene.arn) == 0) is (first == 1), "the hour chose where the run starts"
    (dead_line,) = [line for secret, line in lines.items() if secret != scene.arn]
    assert dead_line["overdue_token_ids"] == ["tok-dead-old"] and dead_line["compliant"] is False
    assert 1 <= len(calls.read_text().split()) < 5, "tried, but not for the whole retry policy"
    assert clock.now() <= clock.end - timedelta(seconds=_KEEP_S), "the time kept for the results is untouched"


def test_without_a_lambda_context_nothing_is_limited(scene):
    """Run outside Lambda (no context): the retry policy alone bounds the calls, as before."""
    due = _due(scene)
    _, calls = _dead_cluster(scene)
    with pytest.raises(TransientError, match="revoke-expired: 1 failure"):
        handle({"action": "revoke-expired"}, None, config_path=scene.config, client=scene.client(), clock=scene.clock)
    assert len(calls.read_text().split()) == 5, "every try of the retry policy"
    assert scene.fake.state.token_by_id(due)["revoked_at"] is not None


def test_secrets_the_run_has_no_time_for_are_reported_not_evaluated_and_left_alone(scene, capsys, caplog):
    """An invocation with less time left than it keeps to write its results touches no secret: each
    gets a log line and a compliance line saying it was not evaluated (not compliant: nothing is
    known of it), and the invocation fails. Their records wait; a run with time revokes them."""
    due = _due(scene)
    dead, calls = _dead_cluster(scene)
    capsys.readouterr()
    issuer_calls = len(scene.fake.state.calls())
    with pytest.raises(TransientError, match=r"out of time: 2 secret\(s\) not evaluated") as failed:
        scene.invoke({"action": "revoke-expired"}, remaining_ms=(_KEEP_S - 1) * 1000)
    assert "raise the function's timeout" in failed.value.hint
    lines = _compliance(capsys.readouterr().out)
    assert set(lines) == {scene.name, dead}
    assert all(line["evaluated"] is False and line["compliant"] is False for line in lines.values())
    assert lines[scene.name]["policy"] == POLICY and lines[dead]["policy"] == "cluster-a"
    assert len([r for r in caplog.records if "not evaluated: out of time" in r.getMessage()]) == 2
    summary = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("revoke-expired: {"))
    assert sorted(json.loads(summary.removeprefix("revoke-expired: "))["not_evaluated"]) == sorted([scene.name, dead])
    assert len(scene.fake.state.calls()) == issuer_calls and not calls.exists(), "no issuer was called"
    assert f"rotator:revoke:{due}" in scene.tags()
    scene.write_policy()  # the scene's policy alone
    assert scene.invoke({"action": "revoke-expired"})["revoked"] == [due]


class _RunsOutAfterOneRevocation:
    """A Lambda context with plenty of time until the issuer has revoked a token, then ``then_ms``
    (35 s: less than the time kept, 10 s, plus one influxctl call of the scene's policy, 2 x (10 s + 5 s))."""

    def __init__(self, scene: Scene, then_ms: int = 35_000) -> None:
        self.scene, self.then_ms = scene, then_ms
        self.revoked_before = len([t for t in scene.fake.state.tokens() if t["revoked_at"]])

    def get_remaining_time_in_millis(self) -> int:
        revoked = len([t for t in self.scene.fake.state.tokens() if t["revoked_at"]])
        return 300_000 if revoked == self.revoked_before else self.then_ms


def test_a_due_revocation_the_run_has_no_time_left_for_waits_for_the_next_run(scene, capsys, caplog):
    """No issuer call starts unless it can end before the time kept for the results: the second due
    token of the secret is deferred (kept recorded, reported), the invocation fails, and the next
    run revokes it."""
    scene.rotate()
    scene.rotate()  # two records: the bootstrapped token and the first rotation's
    scene.clock.advance(GRACE + timedelta(seconds=1))
    records = sorted(k.removeprefix("rotator:revoke:") for k in scene.tags() if k.startswith("rotator:revoke:"))
    with pytest.raises(TransientError, match=r"1 due revocation\(s\) not tried"):
        handle({"action": "revoke-expired"}, _RunsOutAfterOneRevocation(scene), config_path=scene.config,
               client=scene.client(), clock=scene.clock)  # fmt: skip
    left = sorted(k.removeprefix("rotator:revoke:") for k in scene.tags() if k.startswith("rotator:revoke:"))
    assert len(left) == 1 and left[0] in records
    assert scene.fake.state.token_by_id(left[0])["revoked_at"] is None
    assert "1 due revocation(s) left for the next pass" in caplog.text
    (line,) = _compliance(capsys.readouterr().out).values()
    assert line["evaluated"] is True
    assert scene.invoke({"action": "revoke-expired"})["revoked"] == left
    scene.check_invariants(settled=True)
    scene.check_no_leak(caplog)


def test_each_hour_the_scheduled_run_starts_at_another_secret(scene, capsys):
    """The run's list starts at a secret picked from the hour: a secret after a cluster that never
    answers is not after it in every run. Over a day every secret of three comes first."""
    _dead_cluster(scene, "cluster-a")
    _dead_cluster(scene, "cluster-b")
    assert {_first_of(scene.clock.now() + timedelta(hours=h), 3) for h in range(24)} == {0, 1, 2}
    firsts = set()
    for _hour in range(6):
        scene.clock.advance(timedelta(hours=1))
        with pytest.raises(TransientError):
            scene.invoke({"action": "revoke-expired"}, remaining_ms=(_KEEP_S - 1) * 1000)
        firsts.add(next(iter(_compliance(capsys.readouterr().out))))
    assert len(firsts) > 1


def test_a_function_shorter_than_one_issuer_call_still_calls_it_and_says_what_to_change(scene, caplog):
    """A function timeout that cannot hold the time kept plus one issuer call (2 x (timeout_s + 5 s)):
    refusing every call would never revoke anything, so the calls go ahead while any time is left,
    with a warning that names the fix."""
    due = _due(scene)
    caplog.set_level(logging.WARNING, logger="rotator.lambda")
    report = scene.invoke({"action": "revoke-expired"}, remaining_ms=(_KEEP_S + 20) * 1000)
    assert report["revoked"] == [due]
    assert "less than one call of its issuer may take (30 s)" in caplog.text
    assert "raise the function's timeout above 41 s" in caplog.text


def _summary(caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    text = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("revoke-expired: {"))
    return json.loads(text.removeprefix("revoke-expired: "))  # type: ignore[no-any-return]


@pytest.mark.parametrize("first", [0, 1], ids=["own-policy-first", "other-policy-first"])
def test_a_secret_two_policies_name_is_evaluated_once_even_when_time_runs_out(scene, capsys, caplog, first):
    """Two policies name one secret (one by its name, one by its ARN). The run evaluated it under the
    first entry, then ran out of time at the second: begin() came before the check that the secret was
    done, so the same secret was also reported `evaluated: false`, `compliant: false`, and the
    invocation failed. Every secret is read first now: it is one secret, done once, and the run ends well."""
    test_aws_lambda._add_policy(scene, "other", scene.arn, region=None, first=False)
    due = _due(scene)
    _hour_starting_with(scene, first, 2)
    capsys.readouterr()
    report = handle({"action": "revoke-expired"}, _RunsOutAfterOneRevocation(scene, then_ms=(_KEEP_S - 5) * 1000),
                    config_path=scene.config, client=scene.client(), clock=scene.clock)  # fmt: skip
    assert report["revoked"] == [due] and report["not_evaluated"] == []
    (line,) = _compliance(capsys.readouterr().out).values()
    assert (line["secret"], line["policy"], line["evaluated"], line["compliant"]) == (scene.arn, POLICY, True, True)
    assert "not evaluated" not in caplog.text


def test_a_secret_the_run_has_no_time_for_is_named_by_its_arn_as_the_others(scene, capsys, caplog):
    """The compliance line of a secret the run evaluated names it by its ARN; the line of one it had no
    time for named it as its store does (here by name): two series for one secret in CloudWatch, and a
    `not_evaluated` list an ARN-keyed alarm never matches. Read first, each is named by its ARN."""
    due = _due(scene)
    dead, calls = _dead_cluster(scene)
    dead_arn = scene.client().describe_secret(SecretId=dead)["ARN"]
    assert dead_arn != dead
    _hour_starting_with(scene, 1, 2)  # the scene's secret first, then the dead cluster's
    capsys.readouterr()
    with pytest.raises(TransientError, match=r"1 secret\(s\) not evaluated") as failed:
        handle({"action": "revoke-expired"}, _RunsOutAfterOneRevocation(scene, then_ms=(_KEEP_S - 5) * 1000),
               config_path=scene.config, client=scene.client(), clock=scene.clock)  # fmt: skip
    assert f"({dead_arn})" in str(failed.value)
    assert scene.fake.state.token_by_id(due)["revoked_at"] is not None
    lines = _compliance(capsys.readouterr().out)
    assert set(lines) == {scene.arn, dead_arn}
    assert lines[scene.arn]["evaluated"] is True
    assert (lines[dead_arn]["evaluated"], lines[dead_arn]["compliant"], lines[dead_arn]["policy"]) == (
        False, False, "cluster-a")
    assert _summary(caplog)["not_evaluated"] == [dead_arn]
    assert f"revoke-expired: secret {dead_arn} not evaluated: out of time" in caplog.text
    assert not calls.exists(), "no issuer call for the secret not evaluated"


def _another_secret(scene: Scene, policy: str) -> str:
    """A second secret, a policy of its own (the scene's, renamed) after the scene's, bootstrapped with a
    person's token and rotated once by the function: that token is recorded for revocation. Its id."""
    from rotator.adapters.aws.secretsmanager import AwsSecretsManagerSettings, AwsSecretsManagerStore
    from rotator.core.contracts import AdapterContext
    from tests.runners.test_aws_lambda import STEPS, Context, _add_policy, _start_rotation

    name = f"tests/lambda-{policy}-{uuid.uuid4().hex[:8]}"
    _add_policy(scene, policy, name, first=False)
    value, token_id = scene.fake.state.add_token(f"{policy}: created by a human for bootstrap")
    scene.values.add(value)
    record = TokenRecord(Secret(value), token_id, "influxctl-management", policy, scene.clock.now(), None)
    settings = AwsSecretsManagerSettings(secret_id=name, region=scene.aws.region, endpoint_url=scene.aws.url)
    store = AwsSecretsManagerStore.from_config(settings, AdapterContext(policy=policy),
                                               client_factory=lambda s, p: scene.client())  # fmt: skip
    store.publish(record, None)
    scene.client().tag_resource(SecretId=name, Tags=[{"Key": "rotator:policy", "Value": policy}])
    arn = scene.client().describe_secret(SecretId=name)["ARN"]
    version = str(uuid.uuid4())
    _start_rotation(scene.aws, name, version)
    for step in STEPS:
        handle({"Step": step, "SecretId": arn, "ClientRequestToken": version}, Context(), config_path=scene.config,
               client=scene.client(), clock=scene.clock)  # fmt: skip
    assert f"rotator:revoke:{token_id}" in {t["Key"] for t in scene.client().describe_secret(SecretId=name)["Tags"]}
    return token_id


class _HangingRevokes(_LambdaClock):
    """The scene's time, in which each call the influxctl wrapper recorded in ``calls`` took ``hang``
    seconds: a revoke that hangs until it is killed (the time passes during the call, not in a wait)."""

    def __init__(self, clock: FakeClock, seconds: float, calls: Path, hang: float) -> None:
        super().__init__(clock, seconds)
        self.calls, self.hang = calls, hang

    def now(self) -> datetime:
        hung = len(self.calls.read_text().split()) if self.calls.exists() else 0
        return super().now() + timedelta(seconds=self.hang * hung)


def test_a_secret_whose_revokes_hang_after_a_listing_stops_at_its_share_of_the_time(scene, capsys, caplog):
    """Review item E: a secret's issuer lists, then every revoke hangs until it is killed. The secret
    may start no issuer call once its share of the invocation's time is used (its first call excepted);
    without that rule each of its due tokens started one more hanging revoke until too little was left
    for anyone, and the next secret's revocation was never tried. Here: 110 s left, 10 s kept, two
    secrets (a share of 50 s each), a hanging revoke costs 30 s (2 x (10 s + 5 s), the issuer's
    longest call). The first token's revoke and its retry use the share; the second token waits for
    the next run; the other secret, with 40 s left, is revoked."""
    other_due = _another_secret(scene, "other")
    scene.rotate()
    scene.rotate()  # two records on the scene's secret: the bootstrapped token and the first rotation's
    scene.clock.advance(GRACE + timedelta(seconds=1))
    records = sorted(k.removeprefix("rotator:revoke:") for k in scene.tags() if k.startswith("rotator:revoke:"))
    assert len(records) == 2
    calls = scene.dir / "hanging-revokes"
    wrapper = scene.dir / "influxctl-revokes-hang"
    wrapper.write_text(f"""#!/bin/sh
for arg in "$@"; do
  if [ "$arg" = revoke ]; then
    echo x >> '{calls}'
    echo 'Error: rpc error: code = DeadlineExceeded desc = context deadline exceeded' >&2
    exit 1
  fi
done
exec '{test_aws_lambda.FAKE_INFLUXCTL}' "$@"
""")
    wrapper.chmod(0o755)
    text = scene.config.read_text()
    own = f"influxctl = {json.dumps(str(test_aws_lambda.FAKE_INFLUXCTL))}"
    assert text.count(own) == 2 and text.index(f'name = "{POLICY}"') < text.index('name = "other"')
    scene.config.write_text(text.replace(own, f"influxctl = {json.dumps(str(wrapper))}", 1))  # the scene's policy
    write_bundle(scene.config)
    _hour_starting_with(scene, 0, 2)  # the scene's secret first
    clock = _HangingRevokes(scene.clock, 110, calls, hang=30)
    capsys.readouterr()
    with pytest.raises(TransientError, match="revoke-expired: 1 failure") as failed:
        handle({"action": "revoke-expired"}, _ClockContext(clock), config_path=scene.config, client=scene.client(),
               clock=clock)  # fmt: skip
    assert "1 due revocation(s) not tried" in str(failed.value)
    assert scene.fake.state.token_by_id(other_due)["revoked_at"] is not None, "the other secret's token is revoked"
    assert len(calls.read_text().split()) == 2, "one token's revoke and its retry: then its share was used"
    assert all(scene.fake.state.token_by_id(t)["revoked_at"] is None for t in records)
    assert sorted(k.removeprefix("rotator:revoke:") for k in scene.tags() if k.startswith("rotator:revoke:")) \
        == records, "both records kept for the next run"
    summary = _summary(caplog)
    assert summary["revoked"] == [other_due] and len(summary["failed"]) == 1 and len(summary["deferred"]) == 1
    lines = _compliance(capsys.readouterr().out)
    assert len(lines) == 2 and all(line["evaluated"] for line in lines.values())
    assert clock.now() <= clock.end - timedelta(seconds=_KEEP_S), "the time kept for the results is untouched"
