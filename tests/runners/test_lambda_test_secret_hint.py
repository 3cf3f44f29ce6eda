"""The Lambda's testSecret, when it gives up, says what bounded the wait and what became of the new token.

The engine's VERIFY names ``verify_timeout`` and the candidate's fate when it gives up; the Lambda's
testSecret re-raised the issuer's last refusal with the adapter's hint for a retry ("rotator retries"),
which was over. Its error now names the bound that ended the wait (the policy's ``verify_timeout``, or
the function's ``TimeoutSeconds`` when the invocation's time ran out first) and the AWSPENDING token's
fate, by id, never by value; and what it says is so: the token stays pending, the next attempt tests it
again, and given up as the hint says, the scheduled revoke-expired revokes it (moto in server mode, the
fake influxctl; the scene of tests/runners/test_aws_lambda.py).
"""

from __future__ import annotations

import re
import shlex
import time
from datetime import timedelta
from typing import Any

import pytest

from rotator.adapters.influxctl.common import InfluxctlIssuer
from rotator.config.policy_bundle import write_bundle
from rotator.core.clock import SystemClock
from rotator.core.errors import TransientError
from rotator.runners import lambda_rotation
from tests.runners import test_aws_lambda
from tests.runners.test_aws_lambda import Scene

scene = test_aws_lambda.scene  # the fixture: a secret bootstrapped on moto, its policy, the fake influxctl

#: the command the hint gives to give a rotation up (lambda_rotation._HINT_CLEAR)
_CLEAR = re.compile(r"aws secretsmanager update-secret-version-stage [^;]*")


def _verify_timeout(scene: Scene, value: str) -> None:
    """The scene's policy with another verify_timeout (30s), and its bundle written again, as build_zip.py does."""
    scene.config.write_text(scene.config.read_text().replace('verify_timeout = "30s"', f'verify_timeout = "{value}"'))
    write_bundle(scene.config)


def _gives_up(scene: Scene, token: str, **kw: Any) -> TransientError:
    with pytest.raises(TransientError) as info:
        scene.step("testSecret", token, **kw)
    return info.value


def _fate_is_named(error: TransientError, scene: Scene, token: str) -> dict[str, Any]:
    """The hint names the pending token and what became of it, by id; no text holds its value."""
    pending = scene.payload("AWSPENDING", token)
    assert f"token {pending['token_id']} stays AWSPENDING (version {token}), not revoked" in error.hint
    assert f"AWSCURRENT still holds token {scene.bootstrap_id}" in error.hint
    assert "next attempt of this rotation tests the same token again" in error.hint
    assert f"then revokes token {pending['token_id']}" in error.hint and _CLEAR.search(error.hint)
    assert f"gave up verifying token {pending['token_id']} of AWSPENDING version {token}" in str(error)
    for text in (str(error), error.hint):
        assert pending["token"] not in text and not any(v in text for v in scene.values)
    # ... and it is so: nothing moved, nothing was revoked
    assert scene.stages()[token] == ["AWSPENDING"]
    assert scene.payload("AWSCURRENT")["token_id"] == scene.bootstrap_id
    assert scene.fake.state.token_by_id(pending["token_id"])["revoked_at"] is None
    return pending


def test_a_token_not_active_within_verify_timeout_names_it_and_the_tokens_fate(scene: Scene) -> None:
    _verify_timeout(scene, "3s")
    scene.fake.state.set(activation_delay_s=3600)
    token = scene.start()
    scene.step("createSecret", token)
    error = _gives_up(scene, token)  # the scene's FakeClock: the retries' waits take no time
    assert "was not accepted within the policy's verify_timeout (3s)" in error.hint
    assert "raise verify_timeout in the policy file and deploy a zip built with it" in error.hint
    assert "TimeoutSeconds more than verify_timeout + 10s + 30s, the issuer's longest call" in error.hint
    assert "rotator retries" not in error.hint, "the adapter's hint for a retry, which is over"
    pending = _fate_is_named(error, scene, token)

    # Give the rotation up as the hint says; the scheduled revoke-expired then revokes the token.
    argv = shlex.split(_CLEAR.search(error.hint)[0])  # type: ignore[index]
    options = dict(zip(argv[3::2], argv[4::2], strict=True))
    scene.client().update_secret_version_stage(SecretId=options["--secret-id"],
                                               VersionStage=options["--version-stage"],
                                               RemoveFromVersionId=options["--remove-from-version-id"])  # fmt: skip
    scene.clock.advance(timedelta(days=1))
    report = scene.invoke({"action": "revoke-expired"})
    assert pending["token_id"] in report["revoked"]
    assert scene.fake.state.token_by_id(pending["token_id"])["revoked_at"] is not None
    scene.check_invariants()


def test_the_invocations_time_running_out_first_names_timeout_seconds(scene: Scene) -> None:
    scene.fake.state.set(activation_delay_s=3600)
    token = scene.start()
    scene.step("createSecret", token)
    error = _gives_up(scene, token, remaining_ms=14_000)  # 4 s to wait, less than verify_timeout (30s)
    assert "was not accepted within the 4s this invocation had left (the function's timeout, TimeoutSeconds" in \
        error.hint
    assert "shorter than the policy's verify_timeout (30s)" in error.hint
    assert "raise the function's TimeoutSeconds" in error.hint
    _fate_is_named(error, scene, token)


def test_an_issuer_that_keeps_failing_then_the_next_attempt_tests_the_same_token(scene: Scene) -> None:
    """Fail, then what the hint says happens: the retried rotation tests the same token and finishes."""
    _verify_timeout(scene, "3s")
    token = scene.start()
    scene.step("createSecret", token)
    scene.step("setSecret", token)
    scene.fake.state.add_fault("management list", "exit", times=-1, message="Error: service unavailable")
    error = _gives_up(scene, token)
    assert "kept failing until the policy's verify_timeout (3s) ran out" in error.hint
    pending = _fate_is_named(error, scene, token)
    scene.fake.state.clear_faults()
    scene.rotate(token)
    assert scene.stages()[token] == ["AWSCURRENT"]
    assert scene.payload("AWSCURRENT")["token_id"] == pending["token_id"]
    assert [t["id"] for t in scene.active_minted()] == [pending["token_id"]], "tested again, not minted again"
    scene.check_invariants()


def test_a_dry_run_that_gives_up_says_nothing_was_minted(scene: Scene) -> None:
    """RotateImmediately=false: AWSPENDING holds the current token; no new token has a fate to tell."""
    _verify_timeout(scene, "3s")
    token = scene.start(rotate_immediately=False)
    scene.fake.state.add_fault("management list", "exit", times=-1, message="Error: service unavailable")
    error = _gives_up(scene, token)
    assert "verify_timeout (3s)" in error.hint
    assert f"nothing was minted: AWSPENDING holds the current token {scene.bootstrap_id}" in error.hint
    assert "stays AWSPENDING" not in error.hint and scene.minted() == []


class _RealContext:
    """Lambda's context: the time left runs down with the clock on the wall."""

    def __init__(self, ms: int) -> None:
        self.end = time.monotonic() + ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return int((self.end - time.monotonic()) * 1000)


def test_no_verify_attempt_starts_that_could_run_past_the_function_s_timeout(scene: Scene,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """testSecret retried until the time left less the time kept to report, but an attempt may take the
    issuer's longest call: one started just before that ran into Lambda's timeout, and the error saying
    what became of the token was never logged. An attempt now starts only if one call still ends in time.

    Scaled down to take seconds (the reviewer's reproduction: 20 s calls, a 35 s timeout): 1 s kept to
    report instead of 10, influxctl calls that hang until their timeout_s (3 s), which bounds them at
    3.5 s instead of 2 x (timeout_s + 5 s), and a 6.5 s function timeout. The first attempt ends after
    about 3 s; a second one, which the time left less 1 s still allowed to start, would end past 6.5 s."""
    monkeypatch.setattr(lambda_rotation, "_SAFETY_MS", 1_000)
    monkeypatch.setattr(InfluxctlIssuer, "call_timeout_seconds", property(lambda self: self.settings.timeout_s + 0.5))
    scene.config.write_text(scene.config.read_text().replace("timeout_s = 10", "timeout_s = 3"))
    write_bundle(scene.config)
    token = scene.start()
    scene.step("createSecret", token)
    scene.step("setSecret", token)
    scene.fake.state.add_fault("management list", "hang", times=10, seconds=120)
    timeout_s = 6.5
    start = time.monotonic()
    with pytest.raises(TransientError) as info:
        lambda_rotation.handle(scene.event("testSecret", token), _RealContext(int(timeout_s * 1000)),
                               config_path=scene.config, client=scene.client(), clock=SystemClock())  # fmt: skip
    elapsed = time.monotonic() - start
    assert elapsed < timeout_s - 1, f"{elapsed:.1f}s: past the time kept to report"
    assert "management list did not finish within 3s" in str(info.value)
    assert "less 1s kept to report and 3s the issuer's longest call may take" in info.value.hint
    _fate_is_named(info.value, scene, token)
    assert any(t.startswith("testSecret: gave up verifying token") for t in scene.logs), "the error is logged"


def test_no_verify_attempt_starts_when_the_invocation_has_no_time_left(scene: Scene) -> None:
    """Less than the 10 s kept to report left when testSecret starts: no issuer call (it could hold the
    function until its timeout, unreported); the error says so, and what became of the token."""
    token = scene.start()
    scene.step("createSecret", token)
    calls = len(scene.fake.state.calls())
    error = _gives_up(scene, token, remaining_ms=9_000)
    assert len(scene.fake.state.calls()) == calls, "no verify attempt"
    assert "not started, 0 s left for issuer calls in this invocation" in str(error)
    pending = scene.payload("AWSPENDING", token)
    assert f"no attempt to verify token {pending['token_id']} could start within the 0s this invocation had " \
        "left" in error.hint
    assert "raise the function's TimeoutSeconds" in error.hint
    _fate_is_named(error, scene, token)
