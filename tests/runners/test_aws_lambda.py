"""The Secrets Manager rotation function against moto (server mode) and the fake influxctl.

moto cannot run a rotation function (that needs Docker), so the tests do what Secrets Manager
does: ``rotate_secret`` sets RotationEnabled and creates the AWSPENDING version without a value
(moto then fails to find the dummy function ARN, which is fine), and the tests invoke the handler
with the exact events the service sends, in its order, with its retries: a failed step makes it
run the whole sequence again with the same ClientRequestToken.

Crashes are real: the handler runs in a subprocess that SIGKILLs itself at a step boundary.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from rotator.adapters.aws.secretsmanager import AwsSecretsManagerSettings, AwsSecretsManagerStore
from rotator.config.policy_bundle import write_bundle
from rotator.config.timefmt import rfc3339_seconds
from rotator.core.clock import FakeClock, SystemClock
from rotator.core.contracts import AdapterContext, TokenRecord
from rotator.core.errors import (
    ConfigError,
    NeedsAttention,
    OwnershipError,
    PermanentError,
    RotatorError,
    TransientError,
)
from rotator.core.secret import Secret
from rotator.runners.lambda_rotation import MAX_TAGS, _names_offline, handle
from tests.aws_server import FailingClient, MotoServer, client_error
from tests.fakes.fixtures import BINARY as FAKE_INFLUXCTL
from tests.harness import issued_in

POLICY = "mgmt"
GRACE = timedelta(hours=1)
REPO = Path(__file__).resolve().parents[2]
STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")

CRASH_RUNNER = """
import json, os, signal, sys
from datetime import datetime
from pathlib import Path
from rotator.runners.lambda_rotation import handle
from rotator.core.clock import FakeClock, SystemClock
event, config, at, now = json.loads(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
class Context:
    def get_remaining_time_in_millis(self):
        return 300_000
def checkpoint(name):
    if name == at:
        os.kill(os.getpid(), signal.SIGKILL)
clock = FakeClock(datetime.fromisoformat(now)) if now else SystemClock()
print(json.dumps(handle(event, Context(), config_path=config, clock=clock, checkpoint=checkpoint)))
"""


class Context:
    """The part of the Lambda context the function uses."""

    def __init__(self, remaining_ms: int = 300_000) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def server_error(operation: str) -> botocore.exceptions.ClientError:
    return client_error("InternalServiceError", 500, operation)


@dataclass
class Scene:
    """One secret bootstrapped with a human-made token, a policy file, and the handler's seams."""

    aws: MotoServer
    fake: Any
    dir: Path
    name: str
    arn: str = ""
    bootstrap_id: str = ""
    clock: FakeClock = field(default_factory=lambda: FakeClock(datetime.now(UTC)))
    #: for the leak check: exception texts, subprocess output, what the test process printed
    texts: list[str] = field(default_factory=list)
    #: for the leak check: each log record as made, before the product's redacting filter rewrites it
    logs: list[str] = field(default_factory=list)
    values: set[str] = field(default_factory=set)

    @property
    def config(self) -> Path:
        return self.dir / "rotator.toml"

    def write_policy(self, *, extra_policy: str = "", extra_store: str = "", second_store: bool = False,
                     secret_id: str | None = None, name: str = POLICY) -> None:  # fmt: skip
        more = f"""
[[policy.store]]
type = "aws-secretsmanager"
name = "mirror"
secret_id = "{self.name}-mirror"
region = "us-east-1"
endpoint_url = "{self.aws.url}"
""" if second_store else ""
        self.config.write_text(f"""
[rotator.retry]
attempts = 2
base_delay = "1s"
max_delay = "1s"

[[policy]]
name = "{name}"
schedule = "30d"
grace = "1h"
verify_timeout = "30s"
{extra_policy}
[policy.issuer]
type = "influxctl-management"
influxctl = {json.dumps(str(FAKE_INFLUXCTL))}
timeout_s = 10
[policy.issuer.profile]
product = "clustered"
host = "cluster.test.invalid"
port = 443

[[policy.store]]
type = "aws-secretsmanager"
name = "aws"
secret_id = "{secret_id or self.name}"
region = "us-east-1"
endpoint_url = "{self.aws.url}"
max_attempts = 1
{extra_store}
{more}""")
        # What build_zip.py packages: the function reads the bundle, not the file (rotator/config/policy_bundle.py).
        write_bundle(self.config)

    def bootstrap(self, *, tag_policy: bool = True) -> None:
        value, self.bootstrap_id = self.fake.state.add_token("created by a human for bootstrap")
        self.values.add(value)
        record = TokenRecord(Secret(value), self.bootstrap_id, "influxctl-management", POLICY, self.clock.now(), None)
        settings = AwsSecretsManagerSettings(secret_id=self.name, region=self.aws.region, endpoint_url=self.aws.url)
        store = AwsSecretsManagerStore.from_config(settings, AdapterContext(policy=POLICY),
                                                   client_factory=lambda s, p: self.client())  # fmt: skip
        store.publish(record, None)
        self.arn = self.client().describe_secret(SecretId=self.name)["ARN"]
        if tag_policy:
            self.client().tag_resource(SecretId=self.name, Tags=[{"Key": "rotator:policy", "Value": POLICY}])

    def client(self) -> Any:
        return self.aws.client()

    def start(self, *, rotate_immediately: bool = True) -> str:
        """What Secrets Manager does before the first createSecret of a rotation."""
        token = str(uuid.uuid4())
        _start_rotation(self.aws, self.name, token, rotate_immediately=rotate_immediately)
        assert self.stages().get(token) == ["AWSPENDING"], "moto no longer sets up a rotation as AWS does"
        assert self.client().describe_secret(SecretId=self.name)["RotationEnabled"]
        return token

    def event(self, step: str, token: str, **extra: Any) -> dict[str, Any]:
        return {"Step": step, "SecretId": self.arn, "ClientRequestToken": token, **extra}

    def invoke(self, event: dict[str, Any], *, remaining_ms: int = 300_000, own_client: bool = False,
               **kw: Any) -> Any:  # fmt: skip
        """The handler in this process. It builds its client from the store settings with
        ``own_client`` (as in Lambda); otherwise it gets the test's (building one costs ~100 ms)."""
        kw.setdefault("clock", self.clock)
        if not own_client:
            kw.setdefault("client", self.client())
        try:
            return handle(event, Context(remaining_ms), config_path=self.config, **kw)
        except Exception as exc:
            # The whole chain, as a traceback shows it: a value in a cause or a note leaks as well.
            self.texts.append("".join(traceback.format_exception(exc)) + str(getattr(exc, "hint", "")))
            raise

    def step(self, step: str, token: str, **kw: Any) -> Any:
        return self.invoke(self.event(step, token), **kw)

    def rotate(self, token: str | None = None) -> str:
        token = token or self.start()
        for step in STEPS:
            self.step(step, token)
        return token

    def crash(self, event: dict[str, Any], at: str, *, now: datetime | None = None) -> None:
        now = now or self.clock.now()
        """The handler in its own process, SIGKILLed at checkpoint ``at``."""
        argv = [sys.executable, "-c", CRASH_RUNNER, json.dumps(event), str(self.config), at,
                now.isoformat() if now else ""]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
        self.texts += [proc.stdout, proc.stderr]
        assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])

    # -- inspection (values allowed: test side only) ------------------------------------------

    def stages(self) -> dict[str, list[str]]:
        answer = self.client().describe_secret(SecretId=self.name)
        return {v: s for v, s in answer.get("VersionIdsToStages", {}).items() if s}

    def tags(self) -> dict[str, str]:
        return {t["Key"]: t["Value"] for t in self.client().describe_secret(SecretId=self.name).get("Tags", [])}

    def payload(self, stage: str, version: str | None = None) -> dict[str, Any]:
        request = {"SecretId": self.name, "VersionStage": stage, **({"VersionId": version} if version else {})}
        data: dict[str, Any] = json.loads(self.client().get_secret_value(**request)["SecretString"])
        self.values.add(data["token"])
        return data

    def minted(self) -> list[dict[str, Any]]:
        return [t for t in self.fake.state.tokens() if t["description"].startswith(f"rotator:{POLICY}:")]

    def active_minted(self) -> list[dict[str, Any]]:
        return [t for t in self.minted() if not t["revoked_at"]]

    def check_invariants(self, *, settled: bool = False) -> None:
        """Invariants 1-2 from the outside, plus: AWSPENDING only on AWSCURRENT's version or on
        this rotation's version; with ``settled``, the previous tokens' grace has passed."""
        current = self.payload("AWSCURRENT")
        assert self.fake.state.problem(current["token"]) is None, "invariant 1: AWSCURRENT is not accepted"
        allowed = {current["token_id"]}
        pending = [v for v, s in self.stages().items() if "AWSPENDING" in s and "AWSCURRENT" not in s]
        for version in pending:
            try:
                allowed.add(self.payload("AWSPENDING", version)["token_id"])
            except botocore.exceptions.ClientError:
                pass  # no value yet
        if not settled:
            allowed |= {k.removeprefix("rotator:revoke:") for k in self.tags() if k.startswith("rotator:revoke:")}
        for token in self.active_minted():
            assert token["id"] in allowed, f"invariant 2: orphan token {token['id']} ({token['description']})"
        if settled:
            assert not [k for k in self.tags() if k.startswith("rotator:revoke:")], "records left after grace"
            bootstrap = self.fake.state.token_by_id(self.bootstrap_id)
            assert bootstrap["revoked_at"] or self.bootstrap_id == current["token_id"]

    def check_no_leak(self, caplog: pytest.LogCaptureFixture | None = None) -> None:
        """Invariant 4 over the log records (see :func:`leak_checked`), ``texts`` and ``caplog``: no value
        a version holds or the test added to ``values``, and no token the fake influxctl ever issued
        (revoked or not, published or not: a candidate revoked at once after a failed put is in no
        version), found by its shape and hash. Runs by itself when a test with ``scene`` ends."""
        for version in self.client().list_secret_version_ids(SecretId=self.name, IncludeDeprecated=True)["Versions"]:
            try:
                answer = self.client().get_secret_value(SecretId=self.name, VersionId=version["VersionId"])
            except botocore.exceptions.ClientError as exc:
                # a rotation's version that never got a value, or a secret a test deleted (the issued
                # tokens' check below still covers its values)
                assert "ResourceNotFoundException" in str(exc) or "marked deleted" in str(exc), exc
                continue
            # A test's filler or hostile payload (too deep to parse) holds no value to look for.
            with contextlib.suppress(ValueError, KeyError, TypeError, RecursionError):
                self.values.add(json.loads(answer["SecretString"])["token"])
        texts = {**{f"log record {i}": t for i, t in enumerate(self.logs)},
                 **{f"text {i}": t for i, t in enumerate(self.texts)},
                 **({"caplog": caplog.text} if caplog is not None else {})}
        for value in self.values:
            assert not any(value in text for text in texts.values()), "invariant 4: a token value leaked"
        issued = {t["token_sha256"]: t["id"] for t in [*self.fake.state.tokens(), *self.fake.state.db_tokens()]}
        leaks = issued_in(texts, issued)
        assert not leaks, f"invariant 4: an issued token leaked: (where, token id) {leaks}"


def _start_rotation(aws: MotoServer, name: str, token: str, *, rotate_immediately: bool = True) -> None:
    """``rotate_secret`` as Secrets Manager runs it: RotationEnabled and an AWSPENDING version without
    a value; moto then fails to find the (dummy) function, which is fine."""
    with pytest.raises(botocore.exceptions.ClientError, match="ResourceNotFoundException"):
        aws.client().rotate_secret(
            SecretId=name, ClientRequestToken=token, RotationRules={"AutomaticallyAfterDays": 30},
            RotationLambdaARN=f"arn:aws:lambda:{aws.region}:{aws.account}:function:rotator-dummy",
            RotateImmediately=rotate_immediately,
        )  # fmt: skip


#: the attributes every log record has; any other was passed in ``extra``
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _record_text(record: logging.LogRecord) -> str:
    try:
        parts = [record.getMessage()]
    except Exception:  # a bad format: logging reports it, but the arguments may still hold a value
        parts = [repr(record.msg), repr(record.args)]
    if record.exc_info and record.exc_info[1] is not None:
        parts.append("".join(traceback.format_exception(record.exc_info[1])))
    if record.stack_info:
        parts.append(record.stack_info)
    parts += [f"{key}={value!r}" for key, value in vars(record).items() if key not in _RECORD_FIELDS]
    return "\n".join(parts)


@contextlib.contextmanager
def leak_checked(sc: Scene, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Scene]:
    """``sc`` with every log record kept (as made: the product's redacting filter rewrites records in
    place before any handler a test has sees them, and would hide a value logged by mistake), and what
    this process prints (also what a test reads with ``capsys``); on leaving, ``sc.check_no_leak()``."""
    make_record = logging.Logger.makeRecord

    def recorded(self: logging.Logger, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(self, *args, **kwargs)
        sc.logs.append(_record_text(record))
        return record

    read = capsys.readouterr

    def kept() -> Any:
        captured = read()
        sc.texts.extend(captured)
        return captured

    monkeypatch.setattr(logging.Logger, "makeRecord", recorded)
    monkeypatch.setattr(capsys, "readouterr", kept)
    yield sc
    kept()
    sc.check_no_leak()


@pytest.fixture
def scene(aws: MotoServer, fake_influxctl: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture,
          capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Scene]:  # fmt: skip
    """A bootstrapped scene, checked for leaks (``Scene.check_no_leak``) when the test ends."""
    caplog.set_level(logging.DEBUG)
    # botocore's own DEBUG chatter (hooks, signing) is slow to capture and holds no body: the
    # product keeps its body-dumping loggers at INFO itself (quiet_sdk_wire_logs).
    caplog.set_level(logging.INFO, logger="botocore")
    with leak_checked(Scene(aws, fake_influxctl, tmp_path, f"tests/lambda-{uuid.uuid4().hex[:10]}"),
                      monkeypatch, capsys) as sc:  # fmt: skip
        sc.write_policy()
        sc.bootstrap()
        yield sc


# -- the happy path --------------------------------------------------------------------------------


def test_a_rotation_in_service_order_then_revocation_after_grace(scene, caplog):
    token = scene.start()
    for step in STEPS:
        assert scene.step(step, token, own_client=True) is None
    current = scene.payload("AWSCURRENT")
    (minted,) = scene.minted()
    assert current["token_id"] == minted["id"] and minted["description"] == f"rotator:{POLICY}:{token}"
    assert current["issuer"] == "influxctl-management" and current["policy"] == POLICY
    assert minted["expires_at"] and current["expires_at"], "a minted token always expires"
    assert scene.stages()[token] == ["AWSCURRENT"], "AWSPENDING removed"
    assert scene.payload("AWSPREVIOUS")["token_id"] == scene.bootstrap_id
    due = scene.tags()[f"rotator:revoke:{scene.bootstrap_id}"]
    assert datetime.fromisoformat(due.replace("Z", "+00:00")) >= scene.clock.now() + GRACE
    assert scene.fake.state.token_by_id(scene.bootstrap_id)["revoked_at"] is None, "not before grace"
    scene.check_invariants()

    early = scene.invoke({"action": "revoke-expired"}, own_client=True)
    assert early == {"revoked": [], "skipped": [], "failed": [], "refused": [], "waiting": 1,
                     "deferred": [], "not_evaluated": []}
    scene.clock.advance(GRACE + timedelta(seconds=1))
    done = scene.invoke({"action": "revoke-expired", "SecretId": scene.arn})
    assert done["revoked"] == [scene.bootstrap_id]
    assert scene.fake.state.token_by_id(scene.bootstrap_id)["revoked_at"] is not None
    scene.check_invariants(settled=True)

    second = scene.rotate()  # the next rotation starts cleanly
    assert scene.payload("AWSCURRENT")["token_id"] != minted["id"]
    assert scene.stages()[second] == ["AWSCURRENT"]
    scene.check_invariants()
    scene.check_no_leak(caplog)


def test_each_step_repeated_by_the_service_does_its_work_once(scene, caplog):
    token = scene.start()
    for step in STEPS:
        scene.step(step, token)
        scene.step(step, token)
    assert len(scene.minted()) == 1
    assert scene.payload("AWSCURRENT")["token_id"] == scene.minted()[0]["id"]
    scene.check_invariants()
    scene.check_no_leak(caplog)


def test_the_snake_case_spelling_of_the_steps_is_accepted(scene):
    token = scene.start()
    for step in ("create_secret", "set_secret", "test_secret", "finish_secret"):
        scene.step(step, token)
    assert scene.stages()[token] == ["AWSCURRENT"]


def test_a_whole_rotation_repeated_after_success_does_nothing(scene):
    token = scene.rotate()
    calls = len(scene.fake.state.calls())
    for step in STEPS:
        scene.step(step, token)  # already AWSCURRENT: return at once
    assert len(scene.fake.state.calls()) == calls, "no issuer call"
    assert len(scene.minted()) == 1


# -- a failure at each step, then Secrets Manager's full retry --------------------------------------


def _retry_all(scene: Scene, token: str) -> None:
    scene.rotate(token)
    assert scene.stages()[token] == ["AWSCURRENT"]
    assert [t["id"] for t in scene.active_minted()] == [scene.payload("AWSCURRENT")["token_id"]]
    scene.check_invariants()


def test_create_secret_fails_to_mint_then_the_retry_rotates(scene, caplog):
    token = scene.start()
    scene.fake.state.add_fault("management create", "exit", times=2, message="Error: service unavailable")
    with pytest.raises(RotatorError):
        scene.step("createSecret", token)
    assert scene.minted() == []
    _retry_all(scene, token)
    scene.check_no_leak(caplog)


def test_a_mint_whose_answer_was_lost_leaves_no_orphan(scene, caplog):
    token = scene.start()
    scene.fake.state.add_fault("management create", "after_effect_exit", times=2)
    with pytest.raises(RotatorError):
        scene.step("createSecret", token)
    assert len(scene.minted()) == 2, "both attempts created a token the function never saw"
    assert [t for t in scene.minted() if not t["revoked_at"]] == [scene.minted()[-1]], "the first one was swept"
    _retry_all(scene, token)
    assert len(scene.minted()) == 3
    scene.check_no_leak(caplog)


def test_put_secret_value_fails_then_the_minted_token_is_revoked_and_the_retry_rotates(scene, caplog):
    token = scene.start()
    failing = FailingClient(scene.client(), "put_secret_value", server_error("PutSecretValue"))
    with pytest.raises(TransientError, match="PutSecretValue failed: InternalServiceError"):
        scene.step("createSecret", token, client=failing)
    (lost,) = scene.minted()
    assert lost["revoked_at"] is not None, "revoked at once: it was never stored"
    _retry_all(scene, token)
    scene.check_no_leak(caplog)


@pytest.mark.parametrize("failing_step", ["setSecret", "testSecret"])
def test_the_issuer_failing_at_set_or_test_then_the_retry_rotates(scene, failing_step):
    token = scene.start()
    for step in STEPS[: STEPS.index(failing_step)]:
        scene.step(step, token)
    scene.fake.state.add_fault("management list", "exit", times=-1, message="Error: service unavailable")
    with pytest.raises(RotatorError):
        scene.step(failing_step, token, remaining_ms=14_000)  # testSecret retries until its deadline (4 s)
    scene.fake.state.clear_faults()
    assert scene.payload("AWSCURRENT")["token_id"] == scene.bootstrap_id
    _retry_all(scene, token)
    assert len(scene.minted()) == 1, "the pending token is reused, not minted again"


def test_finish_secret_fails_to_move_then_revoke_expired_spares_the_still_current_token(scene, caplog):
    token = scene.start()
    for step in STEPS[:3]:
        scene.step(step, token)
    failing = FailingClient(scene.client(), "update_secret_version_stage", server_error("UpdateSecretVersionStage"))
    with pytest.raises(TransientError):
        scene.step("finishSecret", token, client=failing)
    record = f"rotator:revoke:{scene.bootstrap_id}"
    first_due = scene.tags()[record]
    assert scene.payload("AWSCURRENT")["token_id"] == scene.bootstrap_id, "recorded, not moved"

    # Recorded before the move, the time allows for the rest of the invocation (5 minutes here), in which
    # the move could still have landed: past that, the record is due.
    scene.clock.advance(GRACE + timedelta(minutes=6))
    report = scene.invoke({"action": "revoke-expired"})
    assert report["skipped"] == [scene.bootstrap_id] and report["revoked"] == []
    assert scene.fake.state.token_by_id(scene.bootstrap_id)["revoked_at"] is None
    assert record in scene.tags()

    _retry_all(scene, token)
    assert scene.tags()[record] > first_due, "the retried finishSecret restarts the grace period"
    scene.check_no_leak(caplog)


class _BeforeFirstRead:
    """The real client; ``hook`` (another invocation, running beside this one) runs just before this
    invocation's first GetSecretValue, that is between its DescribeSecret and its stage reads."""

    def __init__(self, real: Any, hook: Any) -> None:
        self._real, self._hook = real, hook

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._real, name)
        if name != "get_secret_value":
            return method

        def call(**kw: Any) -> Any:
            if self._hook is not None:
                hook, self._hook = self._hook, None
                hook()
            return method(**kw)
        return call


class _SecondStageMoveFails:
    def __init__(self, real: Any) -> None:
        self._real, self.calls = real, 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._real, name)
        if name != "update_secret_version_stage":
            return method

        def call(**kw: Any) -> Any:
            self.calls += 1
            if self.calls == 2:
                raise server_error("UpdateSecretVersionStage")
            return method(**kw)
        return call


def test_a_finish_secret_retry_between_revoke_expired_s_tag_and_stage_reads_restarts_the_grace(scene, caplog):
    """finishSecret recorded the revocation of the current token but did not move it; its time passes.
    Secrets Manager's retry of finishSecret lands between revoke-expired's DescribeSecret and its read of
    AWSCURRENT: it records a new due time and moves AWSCURRENT to the new token (its last call, dropping
    AWSPENDING, fails: harmless). revoke-expired must judge by the tag as it is after the stage reads, so
    the replaced token keeps its whole grace; after it, the next pass revokes it."""
    token = scene.start()
    for step in STEPS[:3]:
        scene.step(step, token)
    failing = FailingClient(scene.client(), "update_secret_version_stage", server_error("UpdateSecretVersionStage"))
    with pytest.raises(TransientError):
        scene.step("finishSecret", token, client=failing)
    record = f"rotator:revoke:{scene.bootstrap_id}"
    scene.clock.advance(GRACE + timedelta(minutes=6))  # the record allowed for the invocation's 5 minutes

    def finish_retry() -> None:
        scene.step("finishSecret", token, client=_SecondStageMoveFails(scene.client()))

    report = scene.invoke({"action": "revoke-expired"}, client=_BeforeFirstRead(scene.client(), finish_retry))
    assert scene.payload("AWSCURRENT")["token_id"] != scene.bootstrap_id, "the retry moved AWSCURRENT"
    assert report["revoked"] == [] and report["waiting"] == 1, report
    assert scene.fake.state.token_by_id(scene.bootstrap_id)["revoked_at"] is None, "no revocation before grace"
    assert record in scene.tags()

    scene.clock.advance(GRACE + timedelta(minutes=1))
    report = scene.invoke({"action": "revoke-expired"})
    assert report["revoked"] == [scene.bootstrap_id], report
    assert scene.fake.state.token_by_id(scene.bootstrap_id)["revoked_at"] is not None
    assert record not in scene.tags()
    scene.check_no_leak(caplog)


class _SlowMove:
    """The real client; finishSecret's move of AWSCURRENT takes ``minutes`` (the SDK's retries and
    back-off) of the scene's time."""

    def __init__(self, real: Any, clock: FakeClock, minutes: int) -> None:
        self._real, self._clock, self._minutes = real, clock, minutes
        self.moved_at: datetime | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def update_secret_version_stage(self, **kw: Any) -> Any:
        if kw.get("VersionStage") != "AWSCURRENT":
            return self._real.update_secret_version_stage(**kw)
        self._clock.advance(timedelta(minutes=self._minutes))
        answer = self._real.update_secret_version_stage(**kw)
        self.moved_at = self._clock.now()
        return answer


class _Killed(BaseException):
    """Lambda's timeout: nothing the function does catches it."""


def _due_of(scene: Scene, token_id: str) -> datetime:
    return datetime.fromisoformat(scene.tags()[f"rotator:revoke:{token_id}"].replace("Z", "+00:00"))


def _ready_to_finish(scene: Scene) -> str:
    token = scene.start()
    for step in STEPS[:3]:
        scene.step(step, token)
    return token


def test_the_superseded_token_keeps_its_grace_after_a_slow_move(scene, caplog):
    """Review: finishSecret counted the grace from before its move of AWSCURRENT; a move that took 5
    minutes (the SDK retrying) left the previous token 5 minutes less than its grace after the new one
    was published, and revoke-expired revoked it then. Its record is grace after the move now."""
    token = _ready_to_finish(scene)
    slow = _SlowMove(scene.client(), scene.clock, minutes=5)
    scene.step("finishSecret", token, client=slow)
    assert slow.moved_at is not None and scene.stages()[token] == ["AWSCURRENT"]
    due = _due_of(scene, scene.bootstrap_id)
    assert slow.moved_at + GRACE <= due < slow.moved_at + GRACE + timedelta(seconds=1), "grace after the move"

    scene.clock.advance(GRACE - timedelta(minutes=1))  # a minute before the move + grace
    assert scene.invoke({"action": "revoke-expired", "SecretId": scene.arn})["revoked"] == []
    assert scene.fake.state.token_by_id(scene.bootstrap_id)["revoked_at"] is None, "revoked inside its grace"
    scene.clock.advance(timedelta(minutes=1, seconds=1))
    assert scene.invoke({"action": "revoke-expired", "SecretId": scene.arn})["revoked"] == [scene.bootstrap_id]
    scene.check_no_leak(caplog)


def test_a_finish_secret_killed_after_a_slow_move_leaves_a_record_that_allows_for_it(scene, capsys):
    """The record is written before the move (a crash in between must leave one), when how long the move
    will take is unknown: it allows for the rest of the invocation, in which the move lands or never
    does. Killed after a 4-minute move, with 5 minutes left when it recorded, the token keeps its grace
    after the move; the retried finishSecret finds the version AWSCURRENT and changes nothing."""
    token = _ready_to_finish(scene)
    slow = _SlowMove(scene.client(), scene.clock, minutes=4)
    start = scene.clock.now()

    def killed_after_the_move(name: str) -> None:
        if name == "moved":
            raise _Killed

    with pytest.raises(_Killed):
        scene.invoke(scene.event("finishSecret", token), client=slow, remaining_ms=300_000,
                     checkpoint=killed_after_the_move)  # fmt: skip
    assert slow.moved_at is not None and sorted(scene.stages()[token]) == ["AWSCURRENT", "AWSPENDING"]
    scene.step("finishSecret", token)  # Secrets Manager's retry: already AWSCURRENT, nothing to do
    due = _due_of(scene, scene.bootstrap_id)
    assert start + timedelta(minutes=5) + GRACE <= due < start + timedelta(minutes=5) + GRACE + timedelta(seconds=1)

    scene.clock.advance(slow.moved_at + GRACE + timedelta(seconds=30) - scene.clock.now())
    capsys.readouterr()
    assert scene.invoke({"action": "revoke-expired"})["revoked"] == []
    assert scene.fake.state.token_by_id(scene.bootstrap_id)["revoked_at"] is None, "revoked inside its grace"
    (line,) = _compliance_lines(capsys)
    assert line["rotator_compliance"]["anomalous_token_ids"] == [], "a time rotator wrote"
    scene.clock.advance(due - scene.clock.now() + timedelta(seconds=1))
    assert scene.invoke({"action": "revoke-expired"})["revoked"] == [scene.bootstrap_id]


def test_without_a_lambda_context_the_record_allows_for_lambda_s_longest_timeout(scene, capsys):
    """Run without a Lambda context (locally), nothing says how long the invocation may still run: the
    record written before the move allows for Lambda's longest timeout, 15 minutes, and revoke-expired,
    right then, takes it as a time rotator writes (no anomaly, not brought down)."""
    token = _ready_to_finish(scene)
    start = scene.clock.now()

    def killed_after_the_record(name: str) -> None:
        if name == "recorded":
            raise _Killed

    with pytest.raises(_Killed):
        handle(scene.event("finishSecret", token), None, config_path=scene.config, client=scene.client(),
               clock=scene.clock, checkpoint=killed_after_the_record)  # fmt: skip
    written = scene.tags()[f"rotator:revoke:{scene.bootstrap_id}"]
    due = _due_of(scene, scene.bootstrap_id)
    assert start + timedelta(minutes=15) + GRACE <= due < start + timedelta(minutes=15) + GRACE + timedelta(seconds=1)
    capsys.readouterr()
    assert scene.invoke({"action": "revoke-expired"})["waiting"] == 1
    (line,) = _compliance_lines(capsys)
    assert line["rotator_compliance"]["anomalous_token_ids"] == [] and line["rotator_compliance"]["compliant"]
    assert scene.tags()[f"rotator:revoke:{scene.bootstrap_id}"] == written, "not brought down"


class _PurgedClient:
    """The moto client as Secrets Manager answers after its clean-up, which moto does not do: while a
    secret has more than 100 versions, the oldest without a label (and older than a day) are gone."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def _gone(self, secret_id: str) -> set[str]:
        listed: list[dict[str, Any]] = []
        request: dict[str, Any] = {"SecretId": secret_id, "IncludeDeprecated": True, "MaxResults": 100}
        while True:
            answer = self._real.list_secret_version_ids(**request)
            listed += answer["Versions"]
            if not answer.get("NextToken"):
                break
            request["NextToken"] = answer["NextToken"]
        unlabelled = [v["VersionId"] for v in sorted(listed, key=lambda v: v["CreatedDate"])
                      if not v.get("VersionStages")]
        return set(unlabelled[:max(0, len(listed) - 100)])

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._real, name)
        if name == "list_secret_version_ids":
            def listing(**kw: Any) -> Any:
                gone, answer = self._gone(kw["SecretId"]), method(**kw)
                return {**answer, "Versions": [v for v in answer["Versions"] if v["VersionId"] not in gone]}
            return listing
        if name == "get_secret_value":
            def get(**kw: Any) -> Any:
                if kw.get("VersionId") in self._gone(kw["SecretId"]):
                    raise client_error("ResourceNotFoundException", 400, "GetSecretValue")
                return method(**kw)
            return get
        return method


def test_once_old_versions_may_be_deleted_the_oldest_left_is_no_bootstrap_record(scene, caplog):
    """The bootstrapped token's record is the secret's oldest version with a rotator payload. Secrets
    Manager deletes unlabelled versions beyond 100, so later that can be a version someone wrote (with
    PutSecretValue, naming another team's human token) and kept with a label of their own; with a
    revocation tag beside it, that token would pass as the bootstrapped one and be revoked. From 90
    versions on the function trusts no such record: the claim is refused and the token stays valid."""
    value, victim = scene.fake.state.add_token("team B's token, made by a person")
    scene.values.add(value)
    forged = TokenRecord(Secret(value), victim, "influxctl-management", POLICY, scene.clock.now(), None)
    scene.client().put_secret_value(SecretId=scene.name, SecretString=json.dumps(forged.payload()),
                                    VersionStages=["KEEP"])
    scene.rotate()
    scene.clock.advance(GRACE + timedelta(seconds=1))
    assert scene.invoke({"action": "revoke-expired"})["revoked"] == [scene.bootstrap_id], "the true record"
    scene.rotate()  # the bootstrap version loses its last label
    scene.check_no_leak(caplog)
    for _ in range(100):
        scene.client().put_secret_value(SecretId=scene.name, SecretString="filler", VersionStages=["FILLER"])
    scene.client().tag_resource(SecretId=scene.name, Tags=[{"Key": f"rotator:revoke:{victim}",
                                                            "Value": "2020-01-01T00:00:00Z"}])
    scene.clock.advance(GRACE + timedelta(seconds=1))
    with pytest.raises(NeedsAttention, match=f"refused to revoke {victim}"):
        scene.invoke({"action": "revoke-expired"}, client=_PurgedClient(scene.client()))
    assert scene.fake.state.token_by_id(victim)["revoked_at"] is None
    assert f"rotator:attention:{victim}" in scene.tags()
    assert "no proof of the bootstrapped token" in caplog.text
    assert not any(v in caplog.text for v in scene.values | {value}), "invariant 4: a token value leaked"


def test_test_secret_waits_for_a_token_to_become_active_within_the_lambda_time(scene):
    scene.fake.state.set(activation_delay_s=1.0)
    token = scene.start()
    scene.step("createSecret", token)
    scene.step("setSecret", token)
    scene.step("testSecret", token, clock=SystemClock(), remaining_ms=60_000)
    scene.step("finishSecret", token)
    assert scene.stages()[token] == ["AWSCURRENT"]


def test_test_secret_gives_up_when_the_lambda_is_out_of_time(scene):
    scene.fake.state.set(activation_delay_s=30)
    token = scene.start()
    scene.step("createSecret", token)
    with pytest.raises(TransientError, match="not active yet|unauthorized|Unauthenticated"):
        scene.step("testSecret", token, clock=SystemClock(), remaining_ms=11_000)
    assert scene.payload("AWSCURRENT")["token_id"] == scene.bootstrap_id


# -- crashes (SIGKILL in a subprocess), then the service's retry ------------------------------------


@pytest.mark.parametrize("at", ["swept", "minted", "put"])
def test_crash_in_create_secret_then_the_retry_leaves_no_orphan(scene, caplog, at):
    token = scene.start()
    scene.crash(scene.event("createSecret", token), at)
    if at == "minted":
        (orphan,) = scene.minted()
        assert orphan["revoked_at"] is None and orphan["description"] == f"rotator:{POLICY}:{token}"
    scene.rotate(token)
    if at == "minted":
        assert scene.fake.state.token_by_id(orphan["id"])["revoked_at"] is not None, "the orphan is revoked"
        assert scene.payload("AWSCURRENT")["token_id"] != orphan["id"]
    assert len(scene.active_minted()) == 1
    scene.check_invariants()
    scene.clock.advance(GRACE + timedelta(seconds=1))
    scene.invoke({"action": "revoke-expired"})
    scene.check_invariants(settled=True)
    scene.check_no_leak(caplog)


@pytest.mark.parametrize("at", ["recorded", "moved"])
def test_crash_in_finish_secret_then_the_retry_completes(scene, caplog, at):
    token = scene.start()
    for step in STEPS[:3]:
        scene.step(step, token)
    scene.crash(scene.event("finishSecret", token), at)
    scene.rotate(token)
    assert scene.payload("AWSCURRENT")["token_id"] == scene.minted()[0]["id"]
    assert "AWSCURRENT" in scene.stages()[token]
    scene.check_invariants()
    # Killed after the move and before the record was brought down to the move's time, the record keeps
    # allowing for the rest of that invocation (CRASH_RUNNER: 5 minutes), in which the move may have landed.
    scene.clock.advance(GRACE + timedelta(minutes=5, seconds=1))
    scene.invoke({"action": "revoke-expired"})
    scene.check_invariants(settled=True)
    scene.check_no_leak(caplog)


def test_crash_in_revoke_expired_after_the_revocation_then_the_next_run_drops_the_record(scene, caplog):
    scene.rotate()
    later = scene.clock.now() + GRACE + timedelta(seconds=1)
    scene.crash({"action": "revoke-expired"}, "revoked", now=later)
    assert scene.fake.state.token_by_id(scene.bootstrap_id)["revoked_at"] is not None
    assert f"rotator:revoke:{scene.bootstrap_id}" in scene.tags(), "killed before the record went"
    scene.clock.advance(GRACE + timedelta(seconds=1))
    assert scene.invoke({"action": "revoke-expired"})["revoked"] == [scene.bootstrap_id]
    scene.check_invariants(settled=True)
    scene.check_no_leak(caplog)


# -- what the preamble refuses ---------------------------------------------------------------------


def test_rotation_not_enabled_is_refused_before_anything_happens(scene):
    token = str(uuid.uuid4())
    scene.client().put_secret_value(SecretId=scene.name, ClientRequestToken=token, SecretString="{}",
                                    VersionStages=["AWSPENDING"])  # fmt: skip
    with pytest.raises(PermanentError, match="rotation is not enabled"):
        scene.step("createSecret", token)
    assert scene.minted() == [] and scene.fake.state.calls() == []


def test_a_token_that_is_not_a_version_of_the_secret_is_refused(scene):
    scene.start()
    with pytest.raises(PermanentError, match="is not a version of secret"):
        scene.step("createSecret", str(uuid.uuid4()))
    assert scene.minted() == []


def test_a_version_that_is_not_awspending_is_refused(scene):
    scene.rotate()
    previous = next(v for v, s in scene.stages().items() if "AWSPREVIOUS" in s)
    scene.start()
    with pytest.raises(PermanentError, match="is not AWSPENDING"):
        scene.step("createSecret", previous)
    assert len(scene.minted()) == 1


def test_awspending_stuck_from_a_failed_rotation_is_finished_by_the_services_reattempt(scene, caplog):
    """AWS: "A previous rotation isn't complete. That rotation will be reattempted." - with its token."""
    token = scene.start()
    scene.step("createSecret", token)
    scene.step("setSecret", token)
    scene.fake.state.add_fault("management list", "exit", times=-1, message="Error: service unavailable")
    for _ in range(3):  # the service's own retries, all failing
        with pytest.raises(RotatorError):
            scene.rotate(token)
    scene.fake.state.clear_faults()
    store = AwsSecretsManagerStore.from_config(
        AwsSecretsManagerSettings(secret_id=scene.name, region="us-east-1", endpoint_url=scene.aws.url),
        AdapterContext(policy=POLICY))  # fmt: skip
    with pytest.raises(PermanentError, match="a previous rotation isn't complete"):
        store.read_current()  # the CLI's store refuses meanwhile
    scene.rotate(token)  # the reattempt
    _done(scene, token)
    scene.check_no_leak(caplog)


def test_awspending_cleared_by_hand_then_a_new_rotation_revokes_the_abandoned_token(scene, caplog):
    """The operator ran the command the error gives; the next rotation's createSecret finds the
    token the abandoned rotation minted and revokes it."""
    stuck = scene.start()
    scene.step("createSecret", stuck)
    (abandoned,) = scene.minted()
    scene.client().update_secret_version_stage(SecretId=scene.name, VersionStage="AWSPENDING",
                                               RemoveFromVersionId=stuck)  # fmt: skip
    token = scene.rotate()
    assert scene.fake.state.token_by_id(abandoned["id"])["revoked_at"] is not None
    _done(scene, token)
    scene.check_no_leak(caplog)


def _done(scene: Scene, token: str) -> None:
    assert scene.stages()[token] == ["AWSCURRENT"]
    assert [t["id"] for t in scene.active_minted()] == [scene.payload("AWSCURRENT")["token_id"]]
    scene.check_invariants()


# -- a finishSecret still running when AWSPENDING is cleared ----------------------------------------


def _sweep_beside(scene: Scene, sweep: str, version: str) -> dict[str, Any]:
    """What may run beside a finishSecret of ``version`` once someone cleared its AWSPENDING (the docs' fix
    for a stuck rotation): a new rotation's createSecret (``box["next"]`` is its version), or the
    scheduled revoke-expired (``box["report"]``). Both sweep tokens of versions without a label."""
    scene.client().update_secret_version_stage(SecretId=scene.name, VersionStage="AWSPENDING",
                                               RemoveFromVersionId=version)  # fmt: skip
    if sweep == "new rotation":
        nxt = str(uuid.uuid4())
        _start_rotation(scene.aws, scene.name, nxt)
        scene.step("createSecret", nxt)
        return {"next": nxt}
    return {"report": scene.invoke({"action": "revoke-expired"})}


def _finish_and_settle(scene: Scene, box: dict[str, Any]) -> str:
    """The rotation after the scene's: the new one's last steps, or a fresh one; then past every grace
    and the orphan sweep's waits. Returns its version."""
    if "next" in box:
        for step in STEPS[1:]:
            scene.step(step, box["next"])
        token = str(box["next"])
    else:
        token = scene.rotate()
    assert scene.stages()[token] == ["AWSCURRENT"]
    scene.clock.advance(GRACE + timedelta(minutes=40))
    scene.invoke({"action": "revoke-expired"})
    assert [t["id"] for t in scene.active_minted()] == [scene.payload("AWSCURRENT")["token_id"]]
    scene.check_invariants(settled=True)
    return token


class _BeforeTheMove:
    """The real client; ``hook`` runs once, just before finishSecret's move of AWSCURRENT lands (an
    invocation paused after its last check)."""

    def __init__(self, real: Any, hook: Any) -> None:
        self._real, self._hook = real, hook

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def update_secret_version_stage(self, **kw: Any) -> Any:
        if kw.get("VersionStage") == "AWSCURRENT" and self._hook is not None:
            hook, self._hook = self._hook, None
            hook()
        return self._real.update_secret_version_stage(**kw)


@pytest.mark.parametrize("sweep", ["new rotation", "scheduled sweep"])
def test_a_finish_secret_whose_pending_label_is_cleared_meanwhile_never_promotes_a_swept_token(scene, caplog, sweep):
    """Review: finishSecret checked AWSPENDING once, at its start; cleared while it listed the issuer's
    tokens and recorded the old token's revocation, the version's token was revoked by a sweep as an
    abandoned rotation's, and the move (a compare-and-set of AWSCURRENT only) still made it AWSCURRENT."""
    old = _ready_to_finish(scene)
    pending = scene.payload("AWSPENDING", old)["token_id"]
    if sweep == "scheduled sweep":
        scene.clock.advance(timedelta(hours=2))  # the service's reattempt: the token is past the sweep's wait
    box: dict[str, Any] = {}

    def cleared_meanwhile(name: str) -> None:
        if name == "recorded" and not box:
            box.update(_sweep_beside(scene, sweep, old))

    with pytest.raises(PermanentError, match=f"version {old} .* lost its AWSPENDING label") as caught:
        scene.step("finishSecret", old, checkpoint=cleared_meanwhile)
    assert "AWSCURRENT was not moved" in str(caught.value) and "rotate-secret" in caught.value.hint
    assert scene.payload("AWSCURRENT")["token_id"] == scene.bootstrap_id, "AWSCURRENT still holds the old token"
    assert "AWSCURRENT" not in scene.stages().get(old, [])
    # The sweep held back: a finishSecret that passed its label check might still have been moving.
    assert scene.fake.state.token_by_id(pending)["revoked_at"] is None
    if sweep == "scheduled sweep":
        assert box["report"]["revoked"] == [] and box["report"]["waiting"] >= 1, box["report"]
    assert scene.fake.state.problem(scene.payload("AWSCURRENT")["token"]) is None, "invariant 1"
    # Invariant 2 once the sweeps may act: the abandoned token is an orphan until then.
    _finish_and_settle(scene, box)
    assert scene.fake.state.token_by_id(pending)["revoked_at"] is not None, "the abandoned token went in the end"
    scene.check_no_leak(caplog)


@pytest.mark.parametrize("sweep", ["new rotation", "scheduled sweep"])
def test_a_sweep_beside_a_finish_secret_paused_after_its_label_check_spares_the_token_it_promotes(
        scene, caplog, sweep):  # fmt: skip
    """The label is cleared after finishSecret's last check of it, before its move lands: the sweep must
    not revoke the token that is about to become AWSCURRENT (finishSecret's record of the token it
    replaces, younger than an invocation, holds the sweeps back), and the rotation completes."""
    old = _ready_to_finish(scene)
    pending = scene.payload("AWSPENDING", old)["token_id"]
    if sweep == "scheduled sweep":
        scene.clock.advance(timedelta(hours=2))
    box: dict[str, Any] = {}

    def paused_before_the_move() -> None:
        box.update(_sweep_beside(scene, sweep, old))

    assert scene.step("finishSecret", old, client=_BeforeTheMove(scene.client(), paused_before_the_move)) is None
    if sweep == "scheduled sweep":
        assert box["report"]["revoked"] == [] and box["report"]["waiting"] >= 1, box["report"]
    else:
        assert any("may still be moving AWSCURRENT" in r.getMessage() for r in caplog.records)
    assert scene.payload("AWSCURRENT")["token_id"] == pending
    assert scene.fake.state.token_by_id(pending)["revoked_at"] is None, "invariant 1: AWSCURRENT was revoked"
    scene.check_invariants()
    _finish_and_settle(scene, box)
    scene.check_no_leak(caplog)


def test_a_token_revoked_while_finish_secret_moves_it_is_moved_back_and_the_next_rotation_succeeds(scene, caplog):
    """A revocation the sweeps' fence does not see (a person, or a record deleted by hand) lands between
    finishSecret's last check and its move: AWSCURRENT goes back to the old token, AWSPENDING is cleared so
    that a new rotation can start, and the invocation fails saying so."""
    old = _ready_to_finish(scene)
    pending = scene.payload("AWSPENDING", old)["token_id"]

    def revoked_meanwhile() -> None:
        scene.fake.state.revoke(pending)

    with pytest.raises(PermanentError, match=f"token {pending} was revoked at the issuer") as caught:
        scene.step("finishSecret", old, client=_BeforeTheMove(scene.client(), revoked_meanwhile))
    assert "moved back" in str(caught.value) and "AWSPENDING removed" in str(caught.value)
    assert scene.payload("AWSCURRENT")["token_id"] == scene.bootstrap_id
    assert "AWSCURRENT" not in scene.stages().get(old, []) and "AWSPENDING" not in scene.stages().get(old, [])
    scene.check_invariants()
    _finish_and_settle(scene, {})
    scene.check_no_leak(caplog)


@pytest.mark.parametrize("other_writer", [False, True], ids=["own-record", "record-rewritten-meanwhile"])
def test_a_move_back_removes_its_own_record_and_the_current_token_is_never_reported_overdue(scene, capsys,
                                                                                           other_writer):  # fmt: skip
    """Review: the move back left rotator:revoke:<the token AWSCURRENT holds again>; revoke-expired skipped it,
    but every compliance line after its grace listed the one working token as an overdue revocation
    (overdue_token_ids, compliant false): an operator revoking it by hand killed the secret. The attempt
    removes its own record; a record another writer left (here: the same key rewritten with another time
    before the move back, as Secrets Manager's retry of the step would) stays, listed apart, never overdue."""
    old = _ready_to_finish(scene)
    pending = scene.payload("AWSPENDING", old)["token_id"]
    key = f"rotator:revoke:{scene.bootstrap_id}"
    theirs = rfc3339_seconds(scene.clock.now() + timedelta(minutes=7))

    def rewritten_before_the_move_back() -> None:
        if other_writer:
            scene.client().tag_resource(SecretId=scene.name, Tags=[{"Key": key, "Value": theirs}])

    def revoked_meanwhile() -> None:
        scene.fake.state.revoke(pending)
        client._hook = rewritten_before_the_move_back  # the next AWSCURRENT move is the move back

    client = _BeforeTheMove(scene.client(), revoked_meanwhile)
    with pytest.raises(PermanentError, match="moved back"):
        scene.step("finishSecret", old, client=client)
    assert scene.payload("AWSCURRENT")["token_id"] == scene.bootstrap_id
    assert scene.tags().get(key) == (theirs if other_writer else None), "only this attempt's own record goes"

    scene.clock.advance(GRACE + timedelta(hours=2))
    capsys.readouterr()
    report = scene.invoke({"action": "revoke-expired"})
    assert report["revoked"] == [] and report["failed"] == [], report
    (line,) = _compliance_lines(capsys)
    compliance = line["rotator_compliance"]
    assert compliance["overdue_token_ids"] == [] and compliance["overdue_revocations"] == 0, compliance
    assert compliance["recorded_current_token_ids"] == ([scene.bootstrap_id] if other_writer else [])
    assert compliance["compliant"] is True, compliance
    assert scene.fake.state.token_by_id(scene.bootstrap_id)["revoked_at"] is None, "AWSCURRENT stays valid"
    assert scene.fake.state.problem(scene.payload("AWSCURRENT")["token"]) is None


def test_a_record_left_by_a_finish_secret_that_lost_its_label_is_not_an_overdue_revocation(scene, capsys):
    """The version's AWSPENDING cleared while finishSecret ran: it refuses, moving nothing, and its record of
    the still-current token stays (the sweeps' fence). After its time, the compliance line lists it apart
    (recorded_current_token_ids), not as overdue, and the token stays valid."""
    old = _ready_to_finish(scene)

    def cleared_meanwhile(name: str) -> None:
        if name == "recorded":
            scene.client().update_secret_version_stage(SecretId=scene.name, VersionStage="AWSPENDING",
                                                       RemoveFromVersionId=old)  # fmt: skip

    with pytest.raises(PermanentError, match="lost its AWSPENDING label"):
        scene.step("finishSecret", old, checkpoint=cleared_meanwhile)
    assert f"rotator:revoke:{scene.bootstrap_id}" in scene.tags()
    scene.clock.advance(GRACE + timedelta(hours=2))
    capsys.readouterr()
    report = scene.invoke({"action": "revoke-expired"})
    assert report["skipped"] == [scene.bootstrap_id], report
    (line,) = _compliance_lines(capsys)
    compliance = line["rotator_compliance"]
    assert compliance["overdue_token_ids"] == [] and compliance["overdue_revocations"] == 0, compliance
    assert compliance["recorded_current_token_ids"] == [scene.bootstrap_id]
    assert scene.fake.state.token_by_id(scene.bootstrap_id)["revoked_at"] is None


def test_finish_secret_moves_nothing_when_awscurrent_moved_meanwhile_and_the_retry_finishes(scene, caplog):
    """AWSCURRENT moved by hand (here: the current value put again as a new version) after finishSecret
    read it: refused before the move, with what to do; Secrets Manager's retry replaces the new one."""
    old = _ready_to_finish(scene)
    pending = scene.payload("AWSPENDING", old)["token_id"]

    def moved_by_hand(name: str) -> None:
        if name == "recorded":
            scene.client().put_secret_value(SecretId=scene.name, SecretString=json.dumps(scene.payload("AWSCURRENT")),
                                            VersionStages=["AWSCURRENT"])  # fmt: skip

    with pytest.raises(PermanentError, match="AWSCURRENT of secret .* moved from version .* while this finishSecret"):
        scene.step("finishSecret", old, checkpoint=moved_by_hand)
    assert "AWSPENDING" in scene.stages()[old] and scene.payload("AWSCURRENT")["token_id"] == scene.bootstrap_id
    _retry_all(scene, old)
    assert scene.payload("AWSCURRENT")["token_id"] == pending
    _done(scene, old)
    scene.check_no_leak(caplog)


def test_create_secret_s_sweep_leaves_a_token_named_by_an_attention_tag_to_a_person(scene, caplog):
    """Review: the scheduled sweep leaves a token named by rotator:attention:<id> to a person, but
    createSecret's sweep revoked it: its keep set lacked the attention tags. Here a claim on the token of a
    rotation abandoned by hand is refused (no version after its own shows when it was superseded)."""
    stuck = scene.start()
    scene.step("createSecret", stuck)
    (abandoned,) = scene.minted()
    scene.client().update_secret_version_stage(SecretId=scene.name, VersionStage="AWSPENDING",
                                               RemoveFromVersionId=stuck)  # fmt: skip
    scene.client().tag_resource(SecretId=scene.name, Tags=[{"Key": f"rotator:revoke:{abandoned['id']}",
                                                            "Value": "2020-01-01T00:00:00Z"}])  # fmt: skip
    with pytest.raises(NeedsAttention, match=f"refused to revoke {abandoned['id']}"):
        scene.invoke({"action": "revoke-expired"})
    assert f"rotator:attention:{abandoned['id']}" in scene.tags()

    token = scene.rotate()
    assert scene.fake.state.token_by_id(abandoned["id"])["revoked_at"] is None, "left for the person"
    assert scene.stages()[token] == ["AWSCURRENT"]
    assert f"rotator:attention:{abandoned['id']}" in scene.tags()
    scene.check_no_leak(caplog)


def test_rotate_immediately_false_tests_the_current_token_and_mints_nothing(scene):
    """AWS runs only testSecret, on an AWSPENDING version holding the current value."""
    token = scene.start(rotate_immediately=False)
    assert scene.payload("AWSPENDING", token)["token_id"] == scene.bootstrap_id
    scene.step("testSecret", token)
    assert scene.minted() == []


def test_an_unmanaged_secret_is_refused_without_adopt(scene):
    scene.client().untag_resource(SecretId=scene.name, TagKeys=["managed-by"])
    token = scene.start()
    with pytest.raises(OwnershipError, match="not tagged managed-by=rotator"):
        scene.step("createSecret", token)
    assert scene.minted() == []


def _foreign_secret(scene: Scene, payload_policy: str | None) -> str:
    """A secret another team's tooling made before rotator, holding their token in a payload like
    rotator's (``payload_policy``: the payload's policy field, None: none), and the scene pointed at
    it with ``adopt = true``. Their token's id."""
    value, foreign_id = scene.fake.state.add_token("team B's token, shared with their apps")
    scene.values.add(value)
    payload = {"token": value, "token_id": foreign_id, "created_at": scene.clock.now().isoformat(),
               **({"policy": payload_policy} if payload_policy else {})}
    scene.name = f"{scene.name}-teamb"
    scene.client().create_secret(Name=scene.name, SecretString=json.dumps(payload))
    scene.arn = scene.client().describe_secret(SecretId=scene.name)["ARN"]
    scene.write_policy(extra_policy="adopt = true")
    return foreign_id


@pytest.mark.parametrize("payload_policy", [None, "team-b"], ids=["no-policy", "another-policy"])
def test_an_adopted_secret_s_token_is_never_revoked_by_the_function(scene, caplog, payload_policy):
    """docs/operations.md: an adopted secret's token is never revoked by rotator. The function took the
    oldest version with a rotator-like payload for the bootstrapped token's record, and revoked the
    other team's token after the first rotation's grace. Only a payload naming this policy (`rotator
    bootstrap` writes it) is that record: the claim is refused and left to a person."""
    foreign_id = _foreign_secret(scene, payload_policy)
    scene.client().tag_resource(SecretId=scene.name, Tags=[{"Key": "rotator:policy", "Value": POLICY}])
    scene.rotate()
    assert scene.payload("AWSPREVIOUS")["token_id"] == foreign_id
    scene.clock.advance(GRACE + timedelta(minutes=1))
    with pytest.raises(NeedsAttention, match=f"refused to revoke {foreign_id}"):
        scene.invoke({"action": "revoke-expired", "SecretId": scene.arn})
    assert scene.fake.state.token_by_id(foreign_id)["revoked_at"] is None
    assert f"rotator:attention:{foreign_id}" in scene.tags()
    scene.check_no_leak(caplog)


def test_an_adopted_secret_bootstrapped_with_the_cli_revokes_the_bootstrapped_token_not_the_old_one(
        scene, tmp_path, caplog):  # fmt: skip
    """docs/operations.md, An unmanaged secret: adopt = true, then `rotator bootstrap`, then the function
    rotates. The token bootstrap published was refused (it is not in the oldest version), and the other
    team's token in the first version counted as the bootstrapped one: a revoke tag on it got it revoked."""
    foreign_id = _foreign_secret(scene, None)
    scene.config.write_text(f'[rotator]\njournal = "sqlite:///{tmp_path}/journal.db"\n' + scene.config.read_text())
    write_bundle(scene.config)
    value, human_id = scene.fake.state.add_token("created by a human for bootstrap")
    scene.values.add(value)
    token_file = tmp_path / "first-token"
    token_file.write_text(value)
    proc = subprocess.run(
        [sys.executable, "-m", "rotator.runners.cli", "bootstrap", POLICY, "-c", str(scene.config), "--token-file",
         str(token_file), "--token-id", human_id],
        capture_output=True, text=True, timeout=60, cwd=REPO, env={**scene.fake.env, **scene.aws.env()},
    )  # fmt: skip
    scene.texts += [proc.stdout, proc.stderr]
    assert proc.returncode == 0, proc.stderr[-2000:]
    scene.rotate()
    scene.clock.advance(GRACE + timedelta(minutes=1))
    report = scene.invoke({"action": "revoke-expired", "SecretId": scene.arn})
    assert report["revoked"] == [human_id] and report["refused"] == []
    scene.client().tag_resource(SecretId=scene.name, Tags=[{"Key": f"rotator:revoke:{foreign_id}",
                                                            "Value": "2000-01-01T00:00:00Z"}])
    with pytest.raises(NeedsAttention, match=f"refused to revoke {foreign_id}"):
        scene.invoke({"action": "revoke-expired", "SecretId": scene.arn})
    assert scene.fake.state.token_by_id(foreign_id)["revoked_at"] is None
    scene.check_no_leak(caplog)


def test_a_disabled_policy_is_refused(scene):
    scene.write_policy(extra_policy="enabled = false")
    token = scene.start()
    with pytest.raises(PermanentError, match="is disabled"):
        scene.step("createSecret", token)


# -- configuration ----------------------------------------------------------------------------------


def test_the_store_s_own_policy_tag_names_the_policy(scene):
    """A secret that `rotator bootstrap` created carries managed-by=rotator and policy=<name>."""
    scene.client().untag_resource(SecretId=scene.name, TagKeys=["rotator:policy"])
    token = scene.start()
    scene.rotate(token)
    assert scene.stages()[token] == ["AWSCURRENT"]


def test_the_policy_comes_from_rotator_policy_env_when_the_secret_has_no_tag(scene, monkeypatch):
    scene.client().untag_resource(SecretId=scene.name, TagKeys=["rotator:policy", "policy"])
    token = scene.start()
    with pytest.raises(ConfigError, match="names no policy") as caught:
        scene.step("createSecret", token)
    assert "ROTATOR_POLICY" in caught.value.hint and "rotator:policy" in caught.value.hint
    monkeypatch.setenv("ROTATOR_POLICY", POLICY)
    scene.rotate(token)
    assert scene.stages()[token] == ["AWSCURRENT"]


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"second_store": True}, "needs exactly one, of type aws-secretsmanager"),
        ({"secret_id": "tests/elsewhere"}, "no policy has an aws-secretsmanager store for secret"),
        ({"name": "other"}, "no policy named 'mgmt'"),
    ],
)
def test_a_policy_that_does_not_fit_the_secret_is_a_clear_config_error(scene, policy, message):
    scene.write_policy(**policy)
    token = scene.start()
    with pytest.raises(ConfigError, match=message):
        scene.step("createSecret", token)
    assert scene.minted() == []


def test_a_store_named_by_arn_matches_the_secret(scene):
    scene.write_policy(secret_id=scene.arn)
    token = scene.start()
    for step in STEPS:
        scene.step(step, token, own_client=True)
    assert scene.stages()[token] == ["AWSCURRENT"]


def _add_policy(scene: Scene, name: str, secret_id: str, *, region: str | None = "us-east-1",
                first: bool = True) -> None:  # fmt: skip
    """Another policy like the scene's, whose store names ``secret_id`` in ``region`` (None: the ARN's)."""
    text = scene.config.read_text()
    at = text.index("[[policy]]")
    block = text[at:].replace(f'name = "{POLICY}"', f'name = "{name}"', 1)
    block = re.sub(r'secret_id = "[^"]*"', f'secret_id = "{secret_id}"', block)
    block = block.replace('region = "us-east-1"\n', f'region = "{region}"\n' if region else "", 1)
    scene.config.write_text(text[:at] + block + "\n" + text[at:] if first else text + "\n" + block)
    write_bundle(scene.config)


STORE_ARN = "arn:aws:secretsmanager:us-west-2:111122223333:secret:team-a/token-AbCdEf"


@pytest.mark.parametrize(
    ("store", "given", "names"),
    [
        (STORE_ARN, "team-a/token", True),
        (STORE_ARN, "team-a/token-AbCdEf", True),
        (STORE_ARN, STORE_ARN, True),
        (STORE_ARN, "totally/unrelated", False),  # an ARN store used to claim every name
        (STORE_ARN, "team-a", False),
        ("arn:aws:secretsmanager:us-west-2:111122223333:secret:team-a/token", "team-a/token", True),  # partial ARN
        ("team-a/token", STORE_ARN, True),
        ("team-a/token", "arn:aws:secretsmanager:us-west-2:111122223333:secret:team-b/token-AbCdEf", False),
        # a name in us-west-2 is not the secret of that name in us-east-1 (staging and prod may share names)
        ("team-a/token", "arn:aws:secretsmanager:us-east-1:111122223333:secret:team-a/token-AbCdEf", False),
        (STORE_ARN, "arn:aws:secretsmanager:us-east-1:111122223333:secret:team-a/token-AbCdEf", False),
        (STORE_ARN, "arn:aws:secretsmanager:us-west-2:444455556666:secret:team-a/token-AbCdEf", False),
    ],
)
def test_which_stores_name_a_secret_id_judged_offline(store, given, names):
    settings = AwsSecretsManagerSettings(secret_id=store, region=None if store.startswith("arn:") else "us-west-2")
    assert _names_offline(settings, given) is names


def test_a_rotation_event_s_arn_is_read_with_the_store_of_its_region(scene):
    """A staging policy whose store names a secret of the same name in us-west-2, listed first: the
    event's ARN (us-east-1) used to be read with its client, and every step failed with "secret ...
    does not exist". Only a store of the ARN's region names it."""
    _add_policy(scene, "staging-west", scene.name, region="us-west-2")
    token = scene.start()
    for step in STEPS:
        scene.step(step, token, own_client=True)
    assert scene.stages()[token] == ["AWSCURRENT"]
    assert scene.payload("AWSPREVIOUS")["token_id"] == scene.bootstrap_id


def test_revoke_expired_by_name_reads_the_secret_with_its_own_policy_s_client(scene):
    """A policy whose store is another secret's ARN, in another region, listed first: a SecretId given
    by name used to be read with that policy's client (us-west-2), where no such secret exists."""
    elsewhere = f"arn:aws:secretsmanager:us-west-2:{scene.aws.account}:secret:elsewhere/token-AbCdEf"
    _add_policy(scene, "elsewhere", elsewhere, region=None)
    scene.rotate()
    scene.clock.advance(GRACE + timedelta(seconds=1))
    report = scene.invoke({"action": "revoke-expired", "SecretId": scene.name}, own_client=True)
    assert report["revoked"] == [scene.bootstrap_id]


def test_a_secret_found_with_another_policy_s_client_is_read_again_with_its_own(scene):
    """Two policies name a secret by the same name in two regions; the one in us-west-2 (a replica, which
    carries its primary's tags) names policy mgmt, whose store is in us-east-1. The secret mgmt rotates
    is the one its own client finds: the primary. A secret mgmt's client cannot find is not mgmt's."""
    _add_policy(scene, "west", scene.name, region="us-west-2")
    west = scene.aws.client(region="us-west-2")
    west.create_secret(Name=scene.name, SecretString="replica", Tags=[{"Key": "rotator:policy", "Value": POLICY}])
    scene.rotate()
    scene.clock.advance(GRACE + timedelta(seconds=1))
    report = scene.invoke({"action": "revoke-expired", "SecretId": scene.name}, own_client=True)
    assert report["revoked"] == [scene.bootstrap_id]
    west_arn = west.describe_secret(SecretId=scene.name)["ARN"]
    with pytest.raises(RotatorError, match=f"names policy 'mgmt', whose store's own client \\(region us-east-1\\) "
                                           f"finds no secret as {re.escape(west_arn)}"):  # fmt: skip
        scene.invoke({"action": "revoke-expired", "SecretId": west_arn}, own_client=True)


def test_a_missing_policy_file_and_bad_events_are_clear_errors(scene, tmp_path):
    with pytest.raises(ConfigError, match="cannot read policy file") as caught:
        handle({"action": "revoke-expired"}, Context(), config_path=tmp_path / "absent.toml")
    assert "ROTATOR_CONFIG" in caught.value.hint
    token = scene.start()
    for event, message in [
        ({"SecretId": scene.arn, "ClientRequestToken": token}, "the event has no Step"),
        ({"Step": "rotateSecret", "SecretId": scene.arn, "ClientRequestToken": token}, "unknown Step"),
        ({"Step": "createSecret", "SecretId": scene.arn}, "the event has no ClientRequestToken"),
        ({"action": "revoke-everything"}, "unknown action"),
    ]:
        with pytest.raises(PermanentError, match=message):
            scene.invoke(event)


# -- revoke-expired --------------------------------------------------------------------------------


def test_revoke_expired_never_revokes_awscurrent_or_awspending(scene):
    scene.rotate()
    current = scene.payload("AWSCURRENT")["token_id"]
    token = scene.start()
    scene.step("createSecret", token)
    pending = scene.payload("AWSPENDING", token)["token_id"]
    past = "2020-01-01T00:00:00Z"
    scene.client().tag_resource(SecretId=scene.name, Tags=[
        {"Key": f"rotator:revoke:{current}", "Value": past}, {"Key": f"rotator:revoke:{pending}", "Value": past}])
    scene.clock.advance(GRACE + timedelta(seconds=1))
    report = scene.invoke({"action": "revoke-expired"})
    assert sorted(report["skipped"]) == sorted([current, pending])
    assert report["revoked"] == [scene.bootstrap_id]
    for token_id in (current, pending):
        assert scene.fake.state.token_by_id(token_id)["revoked_at"] is None


def test_revoke_expired_reports_failures_as_a_failed_invocation(scene):
    scene.rotate()
    scene.clock.advance(GRACE + timedelta(seconds=1))
    scene.fake.state.add_fault("management revoke", "exit", times=-1, message="Error: service unavailable")
    scene.fake.state.add_fault("management list", "exit", times=-1, message="Error: service unavailable")
    with pytest.raises(TransientError, match="revoke-expired: 1 failure"):
        scene.invoke({"action": "revoke-expired"})
    assert f"rotator:revoke:{scene.bootstrap_id}" in scene.tags(), "kept for the next run"


def test_a_revoke_tag_on_another_team_s_token_is_refused_not_obeyed(scene):
    """Issue 10 §2 (a): TagResource alone used to get any token revoked."""
    scene.rotate()
    _, victim = scene.fake.state.add_token("team B's CI token")
    scene.client().tag_resource(SecretId=scene.name, Tags=[{"Key": f"rotator:revoke:{victim}",
                                                            "Value": "2020-01-01T00:00:00Z"}])
    scene.clock.advance(GRACE + timedelta(seconds=1))
    with pytest.raises(NeedsAttention, match=f"refused to revoke {victim}"):
        scene.invoke({"action": "revoke-expired"})
    assert scene.fake.state.token_by_id(victim)["revoked_at"] is None
    assert scene.fake.state.token_by_id(scene.bootstrap_id)["revoked_at"] is not None, "the true record went ahead"
    tags = scene.tags()
    assert f"rotator:revoke:{victim}" not in tags and f"rotator:attention:{victim}" in tags
    # Reported once: the next run has nothing left to refuse.
    assert scene.invoke({"action": "revoke-expired"})["refused"] == []
    assert scene.fake.state.token_by_id(victim)["revoked_at"] is None


def test_a_payload_and_tag_edited_after_the_rotation_are_refused(scene):
    """Between finishSecret and revoke-expired someone with PutSecretValue and TagResource writes a
    version naming another team's token, and a revocation record for it: still refused."""
    scene.rotate()
    value, victim = scene.fake.state.add_token("team B's dashboard token")
    scene.values.add(value)
    forged = TokenRecord(Secret(value), victim, "influxctl-management", POLICY, scene.clock.now(), None)
    scene.client().put_secret_value(SecretId=scene.name, SecretString=json.dumps(forged.payload()),
                                    VersionStages=["FORGED"])
    scene.client().tag_resource(SecretId=scene.name, Tags=[{"Key": f"rotator:revoke:{victim}",
                                                            "Value": "2020-01-01T00:00:00Z"}])
    scene.clock.advance(GRACE + timedelta(seconds=1))
    with pytest.raises(NeedsAttention):
        scene.invoke({"action": "revoke-expired"})
    assert scene.fake.state.token_by_id(victim)["revoked_at"] is None
    assert scene.fake.state.token_by_id(scene.bootstrap_id)["revoked_at"] is not None


def test_a_revoke_tag_on_a_token_of_another_policy_is_refused(scene):
    """A token rotator minted, but for another policy (its tag names that policy), is not this one's."""
    scene.rotate()
    _, other = scene.fake.state.add_token(f"rotator:other-policy:{uuid.uuid4()}")
    scene.client().tag_resource(SecretId=scene.name, Tags=[{"Key": f"rotator:revoke:{other}",
                                                            "Value": "2020-01-01T00:00:00Z"}])
    scene.clock.advance(GRACE + timedelta(seconds=1))
    with pytest.raises(NeedsAttention):
        scene.invoke({"action": "revoke-expired"})
    assert scene.fake.state.token_by_id(other)["revoked_at"] is None


def _compliance_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    out = capsys.readouterr().out
    return [json.loads(line) for line in out.splitlines() if line.startswith("{") and "rotator_compliance" in line]


def _rotated_twice(scene: Scene) -> str:
    """The bootstrap token revoked, then a second rotation: the first one's token (tagged with this
    policy's run) is recorded for revocation and due. Its id."""
    scene.rotate()
    scene.clock.advance(GRACE + timedelta(seconds=1))
    scene.rotate()
    scene.clock.advance(GRACE + timedelta(seconds=1))
    first = str(scene.payload("AWSPREVIOUS")["token_id"])
    assert f"rotator:revoke:{first}" in scene.tags()
    return first


@pytest.mark.parametrize("first", [True, False], ids=["other-policy-first", "other-policy-last"])
def test_scheduled_revoke_expired_judges_a_secret_only_under_the_policy_it_names(scene, capsys, first):
    """Several policies may name one secret; its tag rotator:policy chooses. The scheduled run (no
    SecretId) used to process the secret under each of them: under the other one, mgmt's token was
    refused and its rotator:revoke record replaced by an attention tag, so it was never revoked."""
    _add_policy(scene, "other", scene.arn, region=None, first=first)
    token_id = _rotated_twice(scene)
    capsys.readouterr()
    report = scene.invoke({"action": "revoke-expired"})
    assert report["revoked"] == [token_id] and report["refused"] == [] and report["failed"] == []
    assert scene.fake.state.token_by_id(token_id)["revoked_at"] is not None
    assert not [k for k in scene.tags() if k.startswith(("rotator:revoke:", "rotator:attention:"))]
    (line,) = _compliance_lines(capsys)  # once, under its own policy
    assert line["rotator_compliance"]["policy"] == POLICY


def test_scheduled_revoke_expired_of_a_secret_naming_no_policy(scene):
    """No tag, no ROTATOR_POLICY: the one policy whose store names the secret judges it. When several
    do, none may guess: the run reports the secret and leaves its records alone. A store naming a
    secret of that name in another region names another secret."""
    token_id = _rotated_twice(scene)
    scene.client().untag_resource(SecretId=scene.name, TagKeys=["rotator:policy", "policy"])
    _add_policy(scene, "other", scene.arn, region=None)
    with pytest.raises(TransientError, match="names no policy \\(and policies 'other', 'mgmt' all name it\\)"):
        scene.invoke({"action": "revoke-expired"})
    assert scene.fake.state.token_by_id(token_id)["revoked_at"] is None
    assert f"rotator:revoke:{token_id}" in scene.tags() and not [k for k in scene.tags() if "attention" in k]
    scene.write_policy()  # mgmt, and a policy for a same-named secret in us-west-2 (untagged, no value)
    _add_policy(scene, "west", scene.name, region="us-west-2")
    scene.aws.client(region="us-west-2").create_secret(Name=scene.name)
    # own_client: each store's own client, in its region, as in Lambda (the test's client is us-east-1's)
    assert scene.invoke({"action": "revoke-expired"}, own_client=True)["revoked"] == [token_id]


@pytest.mark.parametrize("value", [None, "placeholder"], ids=["no-value", "placeholder-value"])
def test_a_secret_not_bootstrapped_yet_prints_no_compliance_line(aws, fake_influxctl, tmp_path, capsys,
                                                                  monkeypatch, value):  # fmt: skip
    """docs/aws-lambda.md: a secret made by other tooling (Terraform, with or without a placeholder
    value) and not bootstrapped yet prints no line, nor an EMF Compliant=0 that fires the alarms."""
    monkeypatch.setenv("ROTATOR_EMF", "1")
    with leak_checked(Scene(aws, fake_influxctl, tmp_path, f"tests/lambda-{uuid.uuid4().hex[:10]}"),
                      monkeypatch, capsys) as sc:  # fmt: skip
        sc.write_policy()
        sc.client().create_secret(Name=sc.name, **({"SecretString": value} if value else {}))
        report = sc.invoke({"action": "revoke-expired"})
        assert report == {"revoked": [], "skipped": [], "failed": [], "refused": [], "waiting": 0,
                          "deferred": [], "not_evaluated": []}
        assert [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")] == []


def test_create_secret_also_revokes_what_is_due(scene):
    scene.rotate()
    scene.clock.advance(GRACE + timedelta(seconds=1))
    token = scene.start()
    scene.step("createSecret", token)
    assert scene.fake.state.token_by_id(scene.bootstrap_id)["revoked_at"] is not None


class _ClockedContext:
    """A Lambda context whose time runs out once the issuer has revoked ``after`` tokens."""

    def __init__(self, scene: Scene, after: int) -> None:
        self.scene, self.after = scene, after

    def get_remaining_time_in_millis(self) -> int:
        revoked = [t for t in self.scene.fake.state.tokens() if t["revoked_at"]]
        return 300_000 if len(revoked) < self.after else 100_000


def test_create_secret_s_revocations_leave_half_the_time_to_the_rotation(scene, caplog):
    scene.rotate()
    scene.rotate()  # two records: the bootstrapped token and the first rotation's
    scene.clock.advance(GRACE + timedelta(seconds=1))
    token = scene.start()
    handle(scene.event("createSecret", token), _ClockedContext(scene, after=1), config_path=scene.config,
           clock=scene.clock, client=scene.client())
    revoke_tags = [k for k in scene.tags() if k.startswith("rotator:revoke:")]
    assert len(revoke_tags) == 1, "one revoked, the other left recorded for the next pass"
    assert "1 due revocation(s) left for the next pass" in caplog.text
    assert scene.payload("AWSPENDING", token)["token_id"] != scene.payload("AWSCURRENT")["token_id"], "minted"
    for step in STEPS[1:]:
        scene.step(step, token)
    assert scene.stages()[token] == ["AWSCURRENT"]
    report = scene.invoke({"action": "revoke-expired"})
    assert report["revoked"] == [revoke_tags[0].removeprefix("rotator:revoke:")]
    scene.check_invariants()
    scene.check_no_leak(caplog)


# -- the thin entry point --------------------------------------------------------------------------


def test_the_entry_point_imports_no_sdk_and_runs_the_handler(scene):
    scene.rotate()
    code = (
        "import sys, json\n"
        "import rotator.runners.aws_lambda as entry\n"
        "heavy = ('boto3', 'botocore', 'pydantic', 'rotator.runners.lambda_rotation')\n"
        "loaded = sorted(m for m in heavy if m in sys.modules)\n"
        "print(json.dumps(loaded))\n"
        "print(json.dumps(entry.handler({'action': 'revoke-expired'}, None)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "ROTATOR_CONFIG": str(scene.config)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    scene.texts += [proc.stdout, proc.stderr]
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert json.loads(lines[0]) == [], "importing the entry module loads no SDK and not the adapter"
    assert json.loads(lines[-1]) == {"revoked": [], "skipped": [], "failed": [], "refused": [], "waiting": 1,
                                     "deferred": [], "not_evaluated": []}


def test_the_sweep_leaves_alone_a_token_another_secret_minted_for_the_same_policy(scene, caplog):
    """Two secrets rotated for one policy name on one account (staging beside prod, a stack moved)
    tag their tokens alike: createSecret's sweep revokes only tokens whose run is a version of its
    own secret, never the other secret's current token."""
    other_run = str(uuid.uuid4())  # a version of some other secret: not one of this secret's
    _value, other_id = scene.fake.state.add_token(f"rotator:{POLICY}:{other_run}")
    token = scene.rotate()
    assert scene.fake.state.token_by_id(other_id)["revoked_at"] is None, "another secret's token was revoked"
    assert scene.payload("AWSCURRENT", token)["token_id"] != other_id
    assert f"carries the tag of run {other_run}, which is not a version of" in caplog.text
    scene.check_no_leak(caplog)


def _v2_values_read_as_runs(n: int) -> list[str]:
    """InfluxDB v2 tokens as InfluxDB 2 makes them (64 random bytes, standard base64) whose first + or /
    falls 32-64 characters in: what comes before it has a ClientRequestToken's shape."""
    values: list[str] = []
    while len(values) < n:
        value = base64.b64encode(os.urandom(64)).decode()
        if 32 <= min(i for i, c in enumerate(value + "+") if c in "+/") <= 64:
            values.append(value)
    return values


def test_a_v2_token_pasted_after_a_tag_is_no_run_and_none_of_it_is_logged(scene, caplog):
    """An InfluxDB v2 token pasted after ``rotator:<policy>:`` whose first + or / falls 32-64 characters
    in (about 1 in 4): what came before it was read as a run id, the token taken for a candidate of this
    function's sweeps, and the scheduled run logged it ("carries the tag of run ..."): part of a token value
    in CloudWatch. A run id that is part of a token-shaped text is none: the token is no candidate."""
    caplog.set_level(logging.DEBUG)
    pasted: dict[str, str] = {}
    for i, value in enumerate(_v2_values_read_as_runs(3)):
        _, token_id = scene.fake.state.add_token(f"{'backup ' if i else ''}rotator:{POLICY}:{value}")
        pasted[token_id] = value
    token = scene.rotate()  # createSecret's sweep
    assert scene.stages()[token] == ["AWSCURRENT"]
    scene.clock.advance(timedelta(days=1))
    report = scene.invoke({"action": "revoke-expired"})  # the scheduled run's
    assert not set(pasted) & set(report["revoked"])
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert [v[:8] for v in pasted.values() if v[:8] in logged] == []
    for token_id in pasted:
        assert scene.fake.state.token_by_id(token_id)["revoked_at"] is None  # type: ignore[index]
        assert token_id not in logged, "not even a candidate of a sweep"


def test_a_tag_s_run_is_read_past_a_pasted_token_and_whatever_follows_it():
    """Only a run id that is part of a token-shaped text is refused: a real tag stays one whatever
    follows it, and one after a pasted value is still found."""
    from rotator.runners.lambda_rotation import _RUN_ID, _tagged_run

    pattern = re.compile(re.escape(f"rotator:{POLICY}:") + f"({_RUN_ID})" + r"(?![\w-])")
    run, (v2,) = str(uuid.uuid4()), _v2_values_read_as_runs(1)
    assert _tagged_run(pattern, f"rotator:{POLICY}:{run}/x") == run
    assert _tagged_run(pattern, f"rotator:{POLICY}:{v2}") is None
    assert _tagged_run(pattern, f"rotator:{POLICY}:{v2} rotator:{POLICY}:{run}") == run


@pytest.mark.parametrize("suffix", ["_copy", "\u00e9", "\u0663"], ids=["underscore", "latin-letter", "arabic-digit"])
def test_a_token_described_after_a_run_s_tag_is_no_orphan_and_blocks_no_rotation(scene, caplog, suffix):
    """Anyone who may create tokens describes one rotator:mgmt:<version id>_copy: the tag does not end
    there (revocation_rule.carries_tag: any letter or digit, "_" and "-" continue it). The sweep used to
    count it as that run's orphan, the rule refused it, and every createSecret failed from then on."""
    first = scene.rotate()
    value, copy = scene.fake.state.add_token(f"rotator:{POLICY}:{first}{suffix}")
    scene.values.add(value)
    token = scene.rotate()
    assert scene.stages()[token] == ["AWSCURRENT"]
    assert scene.fake.state.token_by_id(copy)["revoked_at"] is None
    assert copy not in caplog.text, "not even a candidate of the sweep"
    scene.check_no_leak(caplog)


def test_a_sweep_candidate_the_rule_refuses_is_left_alone_and_the_rotation_goes_on(scene, caplog, monkeypatch):
    """Should the rule refuse a token the sweep found (it cannot since the sweep's tag search ends where
    the rule's does: a stand-in refusal here), the token is left alone and logged, and the rotation
    goes on: raised, the refusal failed every createSecret while the token lived."""
    from rotator.core import revocation_rule

    first = scene.rotate()
    value, orphan = scene.fake.state.add_token(f"rotator:{POLICY}:{first}")  # as if that run's lost mint
    scene.values.add(value)
    rule = revocation_rule.check_revocable

    def refuse(claim: Any, *args: Any) -> bool:
        if claim.token_id == orphan:
            raise NeedsAttention(f"token {orphan}: refused (stand-in)", hint="look")
        return rule(claim, *args)

    monkeypatch.setattr(revocation_rule, "check_revocable", refuse)
    token = scene.rotate()
    assert scene.stages()[token] == ["AWSCURRENT"]
    assert scene.fake.state.token_by_id(orphan)["revoked_at"] is None
    assert f"createSecret: token {orphan} left alone, not revoked: token {orphan}: refused (stand-in)" in caplog.text
    scene.check_no_leak(caplog)


def test_readers_read_awscurrent_during_a_rotation_and_writers_stop(scene, tmp_path, caplog):
    """While the function rotates (AWSPENDING holds the new token), AWSCURRENT is intact and valid:
    `rotator sync` (a reader) copies it, with a warning; a writer still stops before it mints."""
    token = scene.start()
    scene.step("createSecret", token)
    from rotator.sandbox.influxctl_state import write_profile

    influx_config = tmp_path / "influxctl.toml"
    write_profile(influx_config, host="cluster.test.invalid")  # the policy's cluster (sync checks it)
    env = {**os.environ, **scene.aws.env()}
    proc = subprocess.run([sys.executable, "-m", "rotator.runners.cli", "sync", "--from", f"{scene.config}:{POLICY}",
                           "--config", str(influx_config), "--profile", "default"],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "a previous rotation isn't complete" in proc.stderr and "its current value is used" in proc.stderr
    assert scene.payload("AWSCURRENT")["token"] in influx_config.read_text()
    store = AwsSecretsManagerStore.from_config(
        AwsSecretsManagerSettings(secret_id=scene.name, region=scene.aws.region, endpoint_url=scene.aws.url),
        AdapterContext(policy=POLICY), client_factory=lambda s, p: scene.client())
    with pytest.raises(PermanentError, match="a previous rotation isn't complete") as caught:
        store.read_current()  # the engine's PLAN: a writer stops here, before it mints
    assert caught.value.state.record.token_id == scene.payload("AWSCURRENT")["token_id"]
    for step in STEPS[1:]:
        scene.step(step, token)
    scene.check_invariants()


def test_a_secret_scheduled_for_deletion_says_so_and_what_its_loss_takes(scene):
    """After `delete-secret --recovery-window-in-days`, every read fails; retrying cannot help, and a
    purge takes the rotator:revoke:<id> tags with it (those tokens would stay valid): the error says
    so, and how to restore the secret or what to revoke first."""
    scene.rotate()
    scene.client().delete_secret(SecretId=scene.name, RecoveryWindowInDays=7)
    scene.clock.advance(GRACE + timedelta(minutes=1))
    with pytest.raises(RotatorError, match="marked deleted") as caught:
        scene.invoke({"action": "revoke-expired"})
    assert "scheduled for deletion" in (caught.value.hint or "") and "restore-secret" in (caught.value.hint or "")
    assert "rotator:revoke:" in (caught.value.hint or "")
    # (the restore command names the secret, as printed it runs: no placeholder)
    assert "SECRET_ID" not in (caught.value.hint or "") and f"--secret-id {scene.arn}" in (caught.value.hint or "")


class _AwsLikePut:
    """A client whose PutSecretValue refuses to give an existing version another value, as AWS does
    (ResourceExistsException); moto lets it."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def put_secret_value(self, **kw: Any) -> Any:
        try:
            there = self._real.get_secret_value(SecretId=kw["SecretId"], VersionId=kw["ClientRequestToken"])
        except botocore.exceptions.ClientError:
            there = None
        if there is not None and there.get("SecretString") != kw.get("SecretString"):
            raise client_error("ResourceExistsException", 400, "PutSecretValue")
        return self._real.put_secret_value(**kw)


@pytest.mark.parametrize("retry_gets_to", ["createSecret", "finishSecret"])
def test_a_paused_create_secret_never_revokes_the_token_its_retry_stored(scene, monkeypatch, caplog, retry_gets_to):
    """Secrets Manager retries a step that timed out while the first attempt may still run: attempt A
    is paused just before its orphan sweep lists the tokens, and the retry B stores its token (and
    goes on to finishSecret). A's sweep, on resuming, must see that the token is in its version now:
    B's token (AWSPENDING, or AWSCURRENT) stays valid, and the rotation completes."""
    from rotator.adapters.influxctl.common import InfluxctlIssuer

    token = scene.start()
    original = InfluxctlIssuer.list_tokens
    armed = {"on": True}

    def list_tokens(self: Any, credential: Any) -> Any:
        if armed["on"]:  # attempt A, in its sweep, right before it lists: paused here while B runs
            armed["on"] = False
            for step in STEPS[: STEPS.index(retry_gets_to) + 1]:
                scene.step(step, token)
        return original(self, credential)

    monkeypatch.setattr(InfluxctlIssuer, "list_tokens", list_tokens)
    # A goes on: its own mint finds the version taken (PutSecretValue refused) and revokes that token
    scene.step("createSecret", token, client=_AwsLikePut(scene.client()))
    monkeypatch.setattr(InfluxctlIssuer, "list_tokens", original)
    stage = "AWSCURRENT" if retry_gets_to == "finishSecret" else "AWSPENDING"
    stored = scene.payload(stage, token)
    assert scene.fake.state.problem(stored["token"]) is None, f"the {stage} token was revoked"
    assert f"is {stage} in version {token} (another attempt put it there)" in caplog.text
    if retry_gets_to == "createSecret":
        for step in STEPS[1:]:
            scene.step(step, token)
    scene.check_invariants()
    scene.check_no_leak(caplog)


@pytest.mark.parametrize("bad", ["manual_rotation_2025_01_01_run_000001", "rotation.2026-12-04.0000000000000001"])
def test_a_client_request_token_the_tag_search_cannot_match_is_refused_before_any_side_effect(scene, caplog, bad):
    """The token is the run id in a minted token's description; one the orphan sweep cannot match
    (AWS allows any 32-64 characters) would leave a lost mint answer's tokens unrevoked. Refused
    before anything is minted; a rotation started again with a UUID goes through."""
    _start_rotation(scene.aws, scene.name, bad)
    assert scene.stages().get(bad) == ["AWSPENDING"], "Secrets Manager accepts such a token"
    with pytest.raises(PermanentError, match="is not 32-64 letters, digits and hyphens") as err:
        scene.step("createSecret", bad)
    assert "UUID" in err.value.hint and "--remove-from-version-id" in err.value.hint
    assert scene.minted() == [], "nothing minted"
    # The hint's command, as printed: the version id whole (it used to be cut to 30 characters, which
    # no version id is), quoted for the shell.
    hint = err.value.hint
    argv = shlex.split(hint[hint.index("aws secretsmanager "):hint.index(")", hint.index("--remove-from-version-id"))])
    assert argv[argv.index("--remove-from-version-id") + 1] == bad
    options = dict(zip(argv[3::2], argv[4::2], strict=True))
    scene.client().update_secret_version_stage(SecretId=options["--secret-id"],
                                               VersionStage=options["--version-stage"],
                                               RemoveFromVersionId=options["--remove-from-version-id"])  # fmt: skip
    assert bad not in scene.stages(), "the printed command cleared the label"
    scene.rotate()
    scene.check_invariants()
    scene.check_no_leak(caplog)


@pytest.mark.parametrize("human_name", ["grafana admin (prod)", "a" * 114])
def test_a_current_token_id_no_tag_key_can_hold_is_refused_before_anything_is_minted(
    aws: MotoServer, influxdb3_fake: Any, tmp_path: Path, human_name: str
) -> None:
    """finishSecret records the replaced token's revocation as a tag ``rotator:revoke:<id>``; an
    InfluxDB 3 token's id is its name, which may hold characters (or a length) no tag key can.
    createSecret refuses before it mints, with a fix; and once the current token is one whose name
    fits (the hint's bootstrap --replace), the rotation goes through."""
    v3 = _v3_secret(aws, influxdb3_fake, tmp_path, human_name, "attempts = 1")
    token = str(uuid.uuid4())
    _start_rotation(aws, v3.name, token)

    before = len(influxdb3_fake.tokens())
    with pytest.raises(PermanentError, match="cannot be part of a secret tag key") as err:
        v3.step(aws, "createSecret", token)
    assert "--replace" in (err.value.hint or "") and (err.value.hint or "").startswith("remove the label")
    assert len(influxdb3_fake.tokens()) == before, "nothing minted"
    aws.client().update_secret_version_stage(SecretId=v3.name, VersionStage="AWSPENDING", RemoveFromVersionId=token)
    fitting = influxdb3_fake.add_named_admin("ops-admin-2")  # the hint's fix: a token whose name fits, put in
    v3.store.publish(TokenRecord(Secret(fitting), "ops-admin-2", "influxdb3", POLICY, v3.clock.now(), None),
                     v3.store.read_current().version)
    token = str(uuid.uuid4())
    _start_rotation(aws, v3.name, token)
    for which in STEPS:
        v3.step(aws, which, token)
    current = aws.client().get_secret_value(SecretId=v3.name, VersionStage="AWSCURRENT")["SecretString"]
    assert json.loads(current)["token_id"] == f"rotator-{POLICY}-{token}"


def test_a_token_name_prefix_too_long_for_the_next_rotation_s_record_is_caught_at_once(
    aws: MotoServer, influxdb3_fake: Any, tmp_path: Path
) -> None:
    """The function names a token <token_name_prefix>-<ClientRequestToken>, and the next rotation
    records its revocation as a tag: a prefix that makes the id too long for a tag key would block
    that rotation. createSecret revokes the token it just minted and says which setting to shorten."""
    v3 = _v3_secret(aws, influxdb3_fake, tmp_path, "ops-admin", "attempts = 1",
                    issuer=f'token_name_prefix = "{"p" * 90}"')
    token = str(uuid.uuid4())
    _start_rotation(aws, v3.name, token)
    with pytest.raises(PermanentError, match="the new token's id .* cannot be part of a secret tag key") as caught:
        v3.step(aws, "createSecret", token)
    assert "token_name_prefix" in (caught.value.hint or "") and (caught.value.hint or "").startswith("remove the label")
    assert influxdb3_fake.names() == {"_admin", "ops-admin"}, "the token it minted is revoked (deleted)"


@pytest.mark.parametrize("event", [
    {"Step": "createSecret", "SecretId": "prod/x\r\nINFO forged line", "ClientRequestToken": str(uuid.uuid4())},
    {"action": "revoke-expired", "SecretId": "x" * 3000},
])
def test_an_event_secret_id_that_is_no_secret_name_or_arn_is_refused_before_use(scene, caplog, event):
    """The event's SecretId goes into messages, log lines and printed commands: a line break or a
    3,000-character value is refused with a short, quoted form of it."""
    with pytest.raises(PermanentError, match="is not a secret name or ARN") as caught:
        handle(event, Context(), config_path=scene.config, client=scene.client(), clock=scene.clock)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 200
    assert "\nINFO forged line" not in caplog.text, "no forged log line"


def test_the_version_list_is_read_page_by_page():
    """ListSecretVersionIds may answer a page with fewer versions than asked for while more follow
    (NextToken). moto answers every version in one page, so this unit test gives the pages itself."""
    from rotator.runners.lambda_rotation import _VersionRecords

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    pages = {None: (["v-old"], "p2"), "p2": ([], "p3"), "p3": (["v-new", "v-undated"], None)}
    requests: list[dict[str, Any]] = []

    class Api:
        def list_secret_version_ids(self, **kw: Any) -> dict[str, Any]:
            requests.append(kw)
            ids, following = pages[kw.get("NextToken")]
            versions = [{"VersionId": v, **({} if v == "v-undated" else {"CreatedDate": t0 + timedelta(days=i)})}
                        for i, v in enumerate(ids, start=0 if kw.get("NextToken") is None else 5)]
            return {"Versions": versions, **({"NextToken": following} if following else {})}

    class View:
        arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:s"

    class Target:
        api, view, where = Api(), View(), "aws-secretsmanager:s"

    records = _VersionRecords(Target())  # type: ignore[arg-type]
    assert records.version_ids == ["v-undated", "v-old", "v-new"], "every page, oldest first (undated first)"
    assert [r.get("NextToken") for r in requests] == [None, "p2", "p3"]


def _put_pending(scene: Scene, token: str, payload: dict[str, Any]) -> None:
    scene.client().put_secret_value(SecretId=scene.name, ClientRequestToken=token, SecretString=json.dumps(payload),
                                    VersionStages=["AWSPENDING"])  # fmt: skip


@pytest.mark.parametrize("held", ["the current token", "a token someone else made"])
def test_a_pending_token_this_rotation_did_not_mint_is_never_made_current(scene, caplog, held):
    """AWSPENDING's value is input: the current token left there (a dry run's copy), or a token a
    person put there, is refused at setSecret (its issuer description does not name this version) and
    at finishSecret, so no rotation "finishes" without rotating or promotes a token it did not mint.
    Clearing the label and starting again rotates."""
    current = scene.payload("AWSCURRENT")
    token = scene.start()
    if held == "the current token":
        _put_pending(scene, token, current)
    else:
        value, token_id = scene.fake.state.add_token("made by a person for another purpose")
        scene.values.add(value)
        _put_pending(scene, token, {**current, "token": value, "token_id": token_id})
    scene.step("createSecret", token)  # it already holds a token: nothing to do
    assert scene.minted() == []
    with pytest.raises(PermanentError, match="is not the token this rotation minted") as err:
        scene.step("setSecret", token)
    assert "update-secret-version-stage" in err.value.hint
    if held == "the current token":
        with pytest.raises(PermanentError, match="holds the AWSCURRENT token .*: nothing was rotated"):
            scene.step("finishSecret", token)
    assert scene.payload("AWSCURRENT")["token_id"] == current["token_id"], "nothing was promoted"
    scene.client().update_secret_version_stage(SecretId=scene.name, VersionStage="AWSPENDING",
                                               RemoveFromVersionId=token)  # the hint's command
    scene.rotate()
    assert scene.payload("AWSCURRENT")["token_id"] not in (current["token_id"],)
    scene.check_invariants()
    scene.check_no_leak(caplog)


@pytest.mark.parametrize("held", ["a token someone else made", "another rotation's token"])
def test_finish_secret_invoked_alone_never_promotes_a_token_this_rotation_did_not_mint(scene, caplog, held):
    """lambda:InvokeFunction and PutSecretValue on AWSPENDING are enough to call finishSecret without
    setSecret: it used to promote whatever AWSPENDING held and schedule the real current token's
    revocation. It checks the pending token's tag at the issuer itself."""
    current = scene.payload("AWSCURRENT")
    token = scene.start()
    description = "made by a person" if held == "a token someone else made" else f"rotator:{POLICY}:{uuid.uuid4()}"
    value, token_id = scene.fake.state.add_token(description)
    scene.values.add(value)
    _put_pending(scene, token, {**current, "token": value, "token_id": token_id})
    with pytest.raises(PermanentError, match=f"finishSecret: token {token_id} .* is not the token this rotation "
                                             "minted") as err:  # fmt: skip
        scene.step("finishSecret", token)
    assert "update-secret-version-stage" in err.value.hint
    assert scene.payload("AWSCURRENT")["token_id"] == current["token_id"], "nothing was promoted"
    assert scene.stages()[token] == ["AWSPENDING"]
    assert not [k for k in scene.tags() if k.startswith("rotator:revoke:")], "nothing scheduled for revocation"
    scene.check_no_leak(caplog)


def test_a_version_given_another_secret_s_run_id_does_not_make_its_token_this_secret_s(scene, caplog):
    """Anyone who may rotate (or write) this secret can choose a new version's id, e.g. the run id in
    another secret's current token. That token is older than the version, so it cannot be the
    version's own: the orphan sweep leaves it alone."""
    stolen_run = str(uuid.uuid4())
    _value, other_id = scene.fake.state.add_token(f"rotator:{POLICY}:{stolen_run}",
                                                  created_at=datetime.now(UTC) - timedelta(hours=1))
    _start_rotation(scene.aws, scene.name, stolen_run)
    scene.rotate(stolen_run)
    assert scene.fake.state.token_by_id(other_id)["revoked_at"] is None, "another secret's token was revoked"
    assert "which is not a version of" in caplog.text and "created before it" in caplog.text
    scene.check_no_leak(caplog)


def test_a_revoke_tag_with_a_version_given_another_secret_s_run_id_is_refused(scene):
    """PutSecretValue with a chosen ClientRequestToken makes a version named like another secret's
    run; with a revocation tag on that secret's token, revoke-expired still refuses: the token is
    older than the version, so the version did not mint it."""
    stolen_run = str(uuid.uuid4())
    _value, victim = scene.fake.state.add_token(f"rotator:{POLICY}:{stolen_run}",
                                                created_at=datetime.now(UTC) - timedelta(hours=1))
    scene.client().put_secret_value(SecretId=scene.name, ClientRequestToken=stolen_run, SecretString="{}",
                                    VersionStages=["made-up"])  # fmt: skip
    scene.client().tag_resource(SecretId=scene.name, Tags=[{"Key": f"rotator:revoke:{victim}",
                                                            "Value": "2020-01-01T00:00:00Z"}])
    with pytest.raises(NeedsAttention, match=f"refused to revoke {victim}"):
        scene.invoke({"action": "revoke-expired"})
    assert scene.fake.state.token_by_id(victim)["revoked_at"] is None


@dataclass
class _V3Secret:
    """A secret holding an InfluxDB 3 named admin token a person made, rotated by the function."""

    name: str
    arn: str
    config: Path
    clock: FakeClock
    store: AwsSecretsManagerStore
    human: str

    def step(self, aws: MotoServer, which: str, token: str) -> Any:
        return handle({"Step": which, "SecretId": self.arn, "ClientRequestToken": token}, Context(),
                      config_path=self.config, client=aws.client(), clock=self.clock)  # fmt: skip


def _v3_secret(aws: MotoServer, fake: Any, tmp_path: Path, human_name: str, retry: str, issuer: str = "") -> _V3Secret:
    name = f"tests/lambda-v3-{uuid.uuid4().hex[:10]}"
    config = tmp_path / "rotator.toml"
    config.write_text(f"""
[rotator.retry]
{retry}

[[policy]]
name = "{POLICY}"
schedule = "30d"
grace = "1h"
verify_timeout = "30s"

[policy.issuer]
type = "influxdb3"
base_url = "{fake.url}"
kind = "named_admin"
credential = "self"
{issuer}

{_aws_store_toml(aws, name)}""")
    write_bundle(config)
    clock = FakeClock(datetime.now(UTC))
    human = fake.add_named_admin(human_name)
    store, arn = _first_version(aws, name, TokenRecord(Secret(human), human_name, "influxdb3", POLICY, clock.now(),
                                                       None))
    return _V3Secret(name, arn, config, clock, store, human)


def _aws_store_toml(aws: MotoServer, name: str) -> str:
    """The policy's store: secret ``name`` on the moto server, one attempt a call."""
    return f"""[[policy.store]]
type = "aws-secretsmanager"
name = "aws"
secret_id = "{name}"
region = "us-east-1"
endpoint_url = "{aws.url}"
max_attempts = 1
"""


def _first_version(aws: MotoServer, name: str, record: TokenRecord) -> tuple[AwsSecretsManagerStore, str]:
    """Secret ``name`` created holding ``record`` (as bootstrap leaves it) and tagged with the policy:
    the store and the secret's ARN."""
    settings = AwsSecretsManagerSettings(secret_id=name, region=aws.region, endpoint_url=aws.url)
    store = AwsSecretsManagerStore.from_config(settings, AdapterContext(policy=POLICY),
                                               client_factory=lambda s, p: aws.client())  # fmt: skip
    store.publish(record, None)
    aws.client().tag_resource(SecretId=name, Tags=[{"Key": "rotator:policy", "Value": POLICY}])
    return store, aws.client().describe_secret(SecretId=name)["ARN"]


@pytest.mark.parametrize("reused", [False, True], ids=["revoked", "name-reused"])
def test_the_function_rotates_an_influxdb3_named_admin_token(aws: MotoServer, influxdb3_fake: Any, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture, reused: bool) -> None:
    """The docs' worked example: an InfluxDB 3 named admin token in a secret, rotated by the
    function. Its ClientRequestToken is a UUID, and the token's name ``rotator-<policy>-<UUID>``
    carries it back as the run tag that setSecret, the sweep and the revocation rule check.
    ``reused``: during the grace period a person deletes the bootstrapped token and gives its name
    to a new one; the function must not revoke that one (the revocation rule's created-after check)."""
    v3 = _v3_secret(aws, influxdb3_fake, tmp_path, "grafana-admin", 'attempts = 2\nbase_delay = "1s"\nmax_delay = "1s"')
    name, config, clock, human = v3.name, v3.config, v3.clock, v3.human
    token = str(uuid.uuid4())
    _start_rotation(aws, name, token)
    for step in STEPS:
        v3.step(aws, step, token)
    current = json.loads(aws.client().get_secret_value(SecretId=name, VersionStage="AWSCURRENT")["SecretString"])
    assert current["token_id"] == f"rotator-{POLICY}-{token}"
    assert influxdb3_fake.problem(current["token"]) is None and influxdb3_fake.problem(human) is None, "grace"
    clock.advance(timedelta(hours=1, seconds=1))
    if reused:
        with influxdb3_fake.api.lock:
            del influxdb3_fake._tokens[influxdb3_fake._by_name("grafana-admin").id]
        later = datetime.now(UTC) + timedelta(minutes=20)
        influxdb3_fake.now = lambda: later
        newcomer = influxdb3_fake.add_named_admin("grafana-admin")
        with pytest.raises(NeedsAttention, match="grafana-admin"):
            handle({"action": "revoke-expired"}, Context(), config_path=config, client=aws.client(), clock=clock)
        assert influxdb3_fake.problem(newcomer) is None, "the new token under the reused name is left alone"
        tags = {t["Key"] for t in aws.client().describe_secret(SecretId=name)["Tags"]}
        assert "rotator:attention:grafana-admin" in tags and "rotator:revoke:grafana-admin" not in tags
        assert "another token under the same id" in caplog.text
        assert newcomer not in caplog.text
    else:
        handle({"action": "revoke-expired"}, Context(), config_path=config, client=aws.client(), clock=clock)
        assert "grafana-admin" not in influxdb3_fake.names(), "the bootstrapped token is revoked after grace"
    assert influxdb3_fake.problem(current["token"]) is None
    assert human not in caplog.text and current["token"] not in caplog.text


# -- Secrets Manager's 50 tags a secret -------------------------------------------------------------


def _fill_tags(scene: Scene, free: int) -> list[str]:
    """Refused claims (rotator:attention:<id>) up to ``free`` tags below the limit; an ``aws:`` tag
    does not count (moto, unlike AWS, lets a test write one)."""
    held = [k for k in scene.tags() if not k.startswith("aws:")]
    keys = [f"rotator:attention:refused{i:02d}" for i in range(MAX_TAGS - free - len(held))]
    scene.client().tag_resource(SecretId=scene.name, Tags=[{"Key": k, "Value": "refused"} for k in keys]
                                + [{"Key": "aws:cloudformation:stack-name", "Value": "s"}])
    return keys


def test_a_secret_without_room_for_the_revocation_tag_is_refused_before_the_mint(scene, caplog):
    keys = _fill_tags(scene, free=0)
    token = scene.start()
    with pytest.raises(PermanentError, match=r"has 50 tags and this rotation needs 1 more") as err:
        scene.step("createSecret", token)
    assert "rotator:attention:<token id>" in err.value.hint and "untag-resource" in err.value.hint
    assert scene.minted() == [], "nothing minted"
    assert scene.payload("AWSCURRENT")["token_id"] == scene.bootstrap_id

    scene.client().untag_resource(SecretId=scene.name, TagKeys=keys[:5])  # the person's fix
    _retry_all(scene, token)
    assert scene.stages()[token] == ["AWSCURRENT"]
    assert f"rotator:revoke:{scene.bootstrap_id}" in scene.tags()
    scene.check_invariants()
    scene.check_no_leak(caplog)


def test_finish_secret_without_room_for_the_revocation_tag_moves_nothing_and_the_retry_finishes(scene, caplog):
    token = scene.start()
    for step in STEPS[:3]:
        scene.step(step, token)
    keys = _fill_tags(scene, free=0)
    with pytest.raises(PermanentError, match=rf"finishSecret: .* needs 1 more \(rotator:revoke:{scene.bootstrap_id}\)"):
        scene.step("finishSecret", token)
    assert scene.payload("AWSCURRENT")["token_id"] == scene.bootstrap_id, "not moved"
    assert f"rotator:revoke:{scene.bootstrap_id}" not in scene.tags()
    scene.check_invariants()  # the pending token is AWSPENDING's: no orphan

    scene.client().untag_resource(SecretId=scene.name, TagKeys=keys[:1])
    scene.step("finishSecret", token)
    assert scene.stages()[token] == ["AWSCURRENT"]
    assert len([k for k in scene.tags() if not k.startswith("aws:")]) == MAX_TAGS
    scene.check_invariants()
    scene.check_no_leak(caplog)


def test_a_record_create_secret_revokes_makes_room_for_the_next_one(scene, caplog):
    scene.rotate()  # the bootstrapped token's record
    _fill_tags(scene, free=0)
    scene.clock.advance(GRACE + timedelta(seconds=1))
    token = scene.rotate()  # createSecret revokes it and drops its record: room for the new one
    assert scene.fake.state.token_by_id(scene.bootstrap_id)["revoked_at"] is not None
    assert scene.stages()[token] == ["AWSCURRENT"]
    assert len([k for k in scene.tags() if not k.startswith("aws:")]) == MAX_TAGS
    scene.check_invariants()
    scene.check_no_leak(caplog)


def test_an_awspending_value_that_is_not_a_token_record_names_the_way_out(scene):
    """A JSON object that is not a token record as AWSPENDING: the fix is clearing AWSPENDING (what the
    service's next rotation starts from), not the policy's `bootstrap --replace`."""
    token = scene.start()
    scene.client().put_secret_value(SecretId=scene.name, ClientRequestToken=token,
                                    SecretString='{"token": "not a record"}', VersionStages=["AWSPENDING"])
    with pytest.raises(PermanentError, match="payload key 'token_id' is missing") as err:
        scene.step("setSecret", token)
    assert "--remove-from-version-id" in err.value.hint and "bootstrap" not in err.value.hint


# -- an InfluxDB v2 authorization that rotates itself (credential = "self") ---------------------------


def _v2_secret(aws: MotoServer, fake: Any, tmp_path: Path, *, read_user: bool = True) -> tuple[str, Path, FakeClock,
                                                                                              str, str]:
    """A secret holding an InfluxDB v2 authorization a person made, that rotates itself; ``read_user``:
    whether it may read its user (else the server lists none of that user's tokens to it).
    Returns (arn, policy file, clock, the token's value, its id)."""
    from tests.fakes.influxdb2_fake import ORG_ID, USER_ID

    org = {"type": "authorizations", "orgID": ORG_ID}
    user = {"type": "users", "id": USER_ID}
    permissions = [{"action": a, "resource": r} for r in (org, user) for a in ("read", "write")
                   if read_user or (r, a) != (user, "read")]
    toml = ", ".join(
        f'{{ action = "{p["action"]}", resource = {{ ' + ", ".join(f'{k} = "{v}"' for k, v in p["resource"].items())
        + " } }" for p in permissions)
    name = f"tests/lambda-v2-{uuid.uuid4().hex[:10]}"
    config = tmp_path / "rotator.toml"
    config.write_text(f"""
[rotator.retry]
attempts = 1

[[policy]]
name = "{POLICY}"
schedule = "30d"
grace = "1h"
verify_timeout = "10s"

[policy.issuer]
type = "influxdb2"
base_url = "{fake.url}"
org_id = "{ORG_ID}"
credential = "self"
permissions = [{toml}]

{_aws_store_toml(aws, name)}""")
    write_bundle(config)
    clock = FakeClock(datetime.now(UTC))
    human, human_id = fake.add_authorization("rotation token made by a human", permissions)
    record = TokenRecord(Secret(human), human_id, "influxdb2", POLICY, clock.now(), None)
    _store, arn = _first_version(aws, name, record)
    return arn, config, clock, human, human_id


def test_the_function_rotates_an_influxdb2_authorization_and_revokes_the_old_one_after_grace(
        aws: MotoServer, influxdb2_fake: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The function with an influxdb2 issuer whose credential is the secret's own token (it may read
    and write authorizations and its user, so it lists every token of that user): every step, then
    revoke-expired deactivates the replaced authorization after grace, not before, and leaves the new
    one alone. (Until now only the CLI and the engine ran against the v2 issuer.)"""
    arn, config, clock, human, human_id = _v2_secret(aws, influxdb2_fake, tmp_path)
    name = arn
    token = str(uuid.uuid4())
    _start_rotation(aws, name, token)
    for step in STEPS:
        handle({"Step": step, "SecretId": arn, "ClientRequestToken": token}, Context(), config_path=config,
               client=aws.client(), clock=clock)
    current = json.loads(aws.client().get_secret_value(SecretId=name, VersionStage="AWSCURRENT")["SecretString"])
    assert current["token_id"] != human_id and influxdb2_fake.problem(current["token"]) is None
    assert influxdb2_fake.problem(human) is None, "the replaced token stays valid during grace"
    handle({"action": "revoke-expired"}, Context(), config_path=config, client=aws.client(), clock=clock)
    assert influxdb2_fake.authorization(human_id)["status"] == "active", "not before grace"

    clock.advance(timedelta(hours=1, seconds=1))
    handle({"action": "revoke-expired"}, Context(), config_path=config, client=aws.client(), clock=clock)
    assert influxdb2_fake.authorization(human_id)["status"] == "inactive", "revoked after grace"
    assert influxdb2_fake.problem(current["token"]) is None, "the current token is left alone"
    assert human not in caplog.text and current["token"] not in caplog.text


def test_an_influxdb2_credential_that_cannot_read_its_user_stops_the_rotation_at_set_secret(
        aws: MotoServer, influxdb2_fake: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The server lists no token of a user the credential may not read, and answers a lookup by id with
    401. setSecret must not take "not listed" for "unknown" or pass it: it looks the minted token up,
    fails with the permission to add, and AWSCURRENT still holds the working token."""
    arn, config, clock, human, human_id = _v2_secret(aws, influxdb2_fake, tmp_path, read_user=False)
    token = str(uuid.uuid4())
    _start_rotation(aws, arn, token)

    def step(which: str) -> Any:
        return handle({"Step": which, "SecretId": arn, "ClientRequestToken": token}, Context(), config_path=config,
                      client=aws.client(), clock=clock)

    step("createSecret")
    with pytest.raises(RotatorError) as caught:
        step("setSecret")
    assert "read and write on the user" in f"{caught.value} {caught.value.hint}", caught.value
    current = json.loads(aws.client().get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")["SecretString"])
    assert current["token_id"] == human_id and influxdb2_fake.problem(human) is None
    assert human not in caplog.text


@pytest.mark.parametrize("retry_gets_to", ["createSecret", "finishSecret"])
def test_a_paused_create_secret_never_deletes_the_influxdb3_token_its_retry_minted_under_the_same_name(
        aws: MotoServer, influxdb3_fake: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        retry_gets_to: str) -> None:
    """An InfluxDB 3 token is named <prefix>-<ClientRequestToken>: every attempt of one rotation mints
    under the same name. Attempt A is paused after its mint; the retry B sweeps A's token (no version
    holds it), mints its own under that name, stores it (and finishes the rotation). A resumes: its
    PutSecretValue is refused, and "revoking its unused token" by id deleted B's, the token the
    version holds (AWSPENDING, or AWSCURRENT: every consumer broken, and with credential = 'self' no
    rotation could authenticate again)."""
    v3 = _v3_secret(aws, influxdb3_fake, tmp_path, "grafana-admin", 'attempts = 2\nbase_delay = "1s"\nmax_delay = "1s"')
    token = str(uuid.uuid4())
    _start_rotation(aws, v3.name, token)
    paused = {"done": False}

    def checkpoint(name: str) -> None:
        if name == "minted" and not paused["done"]:  # attempt A paused here; the retry B runs
            paused["done"] = True
            v3.clock.advance(timedelta(seconds=30))  # B starts (and mints) later than A
            for step in STEPS[: STEPS.index(retry_gets_to) + 1]:
                v3.step(aws, step, token)

    handle({"Step": "createSecret", "SecretId": v3.arn, "ClientRequestToken": token}, Context(),
           config_path=v3.config, client=_AwsLikePut(aws.client()), clock=v3.clock, checkpoint=checkpoint)
    assert paused["done"]
    stage = "AWSCURRENT" if retry_gets_to == "finishSecret" else "AWSPENDING"
    stored = json.loads(aws.client().get_secret_value(SecretId=v3.name, VersionId=token,
                                                      VersionStage=stage)["SecretString"])
    alive = influxdb3_fake.problem(stored["token"]) is None  # (a value is never shown, even a fake's)
    assert alive, f"the {stage} token was deleted"
    assert f"already holds a token with id {stored['token_id']}, this attempt's id (the issuer names tokens after " \
        "the rotation): not revoking that id" in caplog.text


def test_a_retry_whose_paused_attempt_stored_its_deleted_token_first_is_cleaned_up_by_the_next_rotation(
        aws: MotoServer, influxdb3_fake: Any, tmp_path: Path) -> None:
    """The other order: attempt A mints and is paused; the retry B sweeps A's token (deletes it), mints
    its own under the same name and is paused in turn; A resumes and stores its (deleted) token first.
    B's PutSecretValue is refused, and B cannot tell which of the two same-named tokens lives: it
    leaves the name alone (revoking it in the first order would delete the version's token). Its token
    is valid and no version can use it; the rotation stops at testSecret (the version's token is the
    deleted one). Once AWSPENDING is cleared, as that error says, the next rotation's sweep revokes it."""
    import threading

    v3 = _v3_secret(aws, influxdb3_fake, tmp_path, "grafana-admin", 'attempts = 2\nbase_delay = "1s"\nmax_delay = "1s"')
    token = str(uuid.uuid4())
    _start_rotation(aws, v3.name, token)
    b_minted, a_put = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def b_checkpoint(name: str) -> None:
        if name == "minted":
            b_minted.set()
            assert a_put.wait(30)

    def b_run() -> None:
        try:
            handle({"Step": "createSecret", "SecretId": v3.arn, "ClientRequestToken": token}, Context(),
                   config_path=v3.config, client=_AwsLikePut(aws.client()), clock=v3.clock, checkpoint=b_checkpoint)
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    b = threading.Thread(target=b_run, daemon=True)

    def a_checkpoint(name: str) -> None:
        if name == "minted" and not b.is_alive() and not b_minted.is_set():
            b.start()
            assert b_minted.wait(30)
        elif name == "put":
            a_put.set()

    handle({"Step": "createSecret", "SecretId": v3.arn, "ClientRequestToken": token}, Context(),
           config_path=v3.config, client=_AwsLikePut(aws.client()), clock=v3.clock, checkpoint=a_checkpoint)
    b.join(60)
    assert not b.is_alive() and errors == [], errors
    stored = json.loads(aws.client().get_secret_value(SecretId=v3.name, VersionId=token)["SecretString"])
    name = stored["token_id"]
    assert influxdb3_fake.problem(stored["token"]) is not None, "the version holds A's deleted token"
    assert name in influxdb3_fake.names(), "B's token under that name is left alone"
    v3.step(aws, "setSecret", token)
    with pytest.raises(RotatorError):
        v3.step(aws, "testSecret", token)  # on the deleted token
    aws.client().update_secret_version_stage(SecretId=v3.name, VersionStage="AWSPENDING", RemoveFromVersionId=token)
    v3.clock.advance(timedelta(minutes=1))
    later = str(uuid.uuid4())
    _start_rotation(aws, v3.name, later)
    for step in STEPS:
        v3.step(aws, step, later)
    assert name not in influxdb3_fake.names(), "the next rotation's sweep revoked it"


# -- issuers the function cannot rotate ------------------------------------------------------------


def _operator_policy(aws: MotoServer, fake: Any, tmp_path: Path, name: str) -> Path:
    """A policy rotating InfluxDB 3's operator token _admin into secret ``name``: regenerating it revokes
    the value the secret holds at once (no grace)."""
    config = tmp_path / "rotator.toml"
    config.write_text(f"""
[rotator.retry]
attempts = 1

[[policy]]
name = "{POLICY}"
schedule = "30d"
grace = "1h"
verify_timeout = "5s"

[policy.issuer]
type = "influxdb3"
base_url = "{fake.url}"
kind = "operator"
allow_no_grace = true
credential = "self"

{_aws_store_toml(aws, name)}""")
    return config


def test_an_issuer_whose_mint_revokes_the_current_token_is_refused_when_the_bundle_is_built(
    aws: MotoServer, influxdb3_fake: Any, tmp_path: Path
) -> None:
    """Issue review1#1: kind = "operator" passed the build; in the function, createSecret regenerated
    _admin (AWSCURRENT dead at once) and setSecret then failed for ever. The bundle (rotator bundle,
    build_zip.py --policy-file) refuses it, saying where and what to use instead."""
    config = _operator_policy(aws, influxdb3_fake, tmp_path, "tests/lambda-op-build")
    with pytest.raises(ConfigError, match="revokes the token it mints with") as err:
        write_bundle(config)
    assert str(config) in str(err.value) and f"policy {POLICY!r}" in str(err.value)
    assert "kind = 'operator'" in str(err.value)
    assert 'kind = "named_admin"' in err.value.hint and "rotator rotate" in err.value.hint
    assert not config.with_suffix(".bundle.json").exists()
    build = subprocess.run([sys.executable, str(REPO / "deploy" / "aws" / "build_zip.py"), "--no-deps-install",
                            "-o", str(tmp_path / "f.zip"), "--policy-file", str(config)],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert build.returncode == 2, build.stderr
    assert "revokes the token it mints with" in build.stderr and 'fix: in the function' in build.stderr
    assert not (tmp_path / "f.zip").exists()


@pytest.mark.parametrize("source", ["policy-file", "old-bundle"])
def test_an_issuer_whose_mint_revokes_the_current_token_is_refused_by_the_function_before_it_mints(
    aws: MotoServer, influxdb3_fake: Any, tmp_path: Path, source: str
) -> None:
    """A function that loads such a policy (from the policy file itself, or from a bundle an earlier
    rotator built) refuses it before anything happens: AWSCURRENT keeps working, _admin is not
    regenerated, AWSPENDING gets no value."""
    import hashlib

    from rotator.adapters.http.influxdb3 import operator_token_id

    name = f"tests/lambda-op-{uuid.uuid4().hex[:8]}"
    config = _operator_policy(aws, influxdb3_fake, tmp_path, name)
    if source == "old-bundle":  # built for kind = "named_admin", then the issuer's settings changed inside
        config.write_text(config.read_text().replace('kind = "operator"\nallow_no_grace = true\n', ""))
        write_bundle(config)
        bundle = config.with_suffix(".bundle.json")
        data = json.loads(bundle.read_text())
        data["policies"][0]["issuer"]["settings"].update(kind="operator", allow_no_grace=True)
        bundle.write_text(json.dumps(data))
    clock = FakeClock(datetime.now(UTC))
    value = influxdb3_fake.operator_value
    tid = operator_token_id(hashlib.sha512(value.encode()).hexdigest())
    _, arn = _first_version(aws, name, TokenRecord(Secret(value), tid, "influxdb3", POLICY, clock.now(), None))
    token = str(uuid.uuid4())
    _start_rotation(aws, name, token)
    with pytest.raises(ConfigError, match="revokes the token it mints with") as err:
        handle({"Step": "createSecret", "SecretId": arn, "ClientRequestToken": token}, Context(),
               config_path=config, client=aws.client(), clock=clock)  # fmt: skip
    assert 'kind = "named_admin"' in err.value.hint
    assert influxdb3_fake.operator_value == value and influxdb3_fake.problem(value) is None, "_admin untouched"
    stages = {v: s for v, s in aws.client().describe_secret(SecretId=name)["VersionIdsToStages"].items() if s}
    assert stages[token] == ["AWSPENDING"]
    with pytest.raises(botocore.exceptions.ClientError, match="ResourceNotFoundException"):
        aws.client().get_secret_value(SecretId=name, VersionId=token, VersionStage="AWSPENDING")
    assert value not in str(err.value) + err.value.hint


# -- the SDK's own logs ---------------------------------------------------------------------------


def test_the_entry_point_keeps_the_execution_role_s_session_token_out_of_the_log_at_debug(scene, monkeypatch,
                                                                                        caplog, request):  # fmt: skip
    """Issue review1#3: with the function's log level at DEBUG (LoggingConfig ApplicationLogLevel sets
    the root logger), botocore.auth logged the signed canonical request, x-amz-security-token (the
    execution role's session token) included. The entry point holds the SDK loggers at WARNING, as
    the CLI does (rotator/observe/logs.py QUIET_LOGGERS)."""
    from rotator.observe.logs import QUIET_LOGGERS, RedactingFilter
    from rotator.runners import aws_lambda, lambda_rotation

    # The entry point sets logging up once per process, with a filter on every handler of the root
    # logger: here pytest's, which outlive this test (its log-file and live-log handlers). Left there,
    # the filter moves later tests' tracebacks from exc_info to exc_text.
    monkeypatch.setattr(lambda_rotation, "_logging_ready", False)
    root = logging.getLogger()
    kept = {handler: list(handler.filters) for handler in root.handlers}

    def restore() -> None:
        for handler in root.handlers:
            handler.filters[:] = kept.get(handler, [f for f in handler.filters if not isinstance(f, RedactingFilter)])

    request.addfinalizer(restore)
    session = f"IQoJb3JpZ2luX2VjEXAMPLE{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SESSION_TOKEN", session)
    monkeypatch.setenv("ROTATOR_CONFIG", str(scene.config))
    monkeypatch.setenv("ROTATOR_LOG_LEVEL", "DEBUG")
    caplog.set_level(logging.DEBUG)  # the root logger, as the Lambda runtime sets it
    caplog.set_level(logging.DEBUG, logger="rotator")  # (caplog puts these levels back after the test)
    for name in QUIET_LOGGERS:
        caplog.set_level(logging.NOTSET, logger=name)  # as a fresh runtime leaves them: following the root
    scene.rotate()
    caplog.clear()
    assert aws_lambda.handler({"action": "revoke-expired", "SecretId": scene.arn}, Context())["waiting"] == 1
    assert [r for r in caplog.records if r.name.startswith("rotator.")], "the function's own DEBUG lines stay"
    assert not [r for r in caplog.records if session in r.getMessage()], "the session token was logged"
    sdk = [r.name for r in caplog.records if r.name.split(".")[0] in QUIET_LOGGERS and r.levelno < logging.WARNING]
    assert sdk == []


# -- revocation times later than rotator writes ------------------------------------------------------


def test_a_revocation_time_later_than_rotator_writes_is_brought_down_and_reported(scene, capsys, caplog):
    """Issue review1#4: anyone with TagResource could move a rotator:revoke:<id> time to 9999, and the
    superseded token stayed valid for ever, "waiting", compliant. A time later than now + grace (+ the
    clock slack) is no time rotator wrote: the token is due at that bound, written back, and the run
    reports it (log, compliance line: not compliant). AWSCURRENT is never revoked, bound or not."""
    scene.rotate()
    old, current = scene.bootstrap_id, scene.payload("AWSCURRENT")["token_id"]
    far = "9999-01-01T00:00:00Z"
    scene.client().tag_resource(SecretId=scene.name, Tags=[{"Key": f"rotator:revoke:{old}", "Value": far},
                                                           {"Key": f"rotator:revoke:{current}", "Value": far}])
    scene.clock.advance(timedelta(minutes=10))
    capsys.readouterr()
    report = scene.invoke({"action": "revoke-expired"})
    assert report["revoked"] == [] and report["waiting"] == 2
    (line,) = _compliance_lines(capsys)
    assert sorted(line["rotator_compliance"]["anomalous_token_ids"]) == sorted([old, current])
    assert line["rotator_compliance"]["compliant"] is False
    assert len([r for r in caplog.records if "ANOMALY" in r.getMessage() and r.levelno == logging.ERROR]) == 2
    bound = scene.clock.now() + GRACE + timedelta(minutes=15)
    for token_id in (old, current):
        written = datetime.fromisoformat(scene.tags()[f"rotator:revoke:{token_id}"].replace("Z", "+00:00"))
        assert bound <= written < bound + timedelta(seconds=1), "the latest time rotator could have written"
    assert scene.fake.state.token_by_id(old)["revoked_at"] is None

    scene.clock.advance(GRACE + timedelta(minutes=16))
    capsys.readouterr()
    report = scene.invoke({"action": "revoke-expired"})
    assert report["revoked"] == [old] and report["skipped"] == [current]
    assert scene.fake.state.token_by_id(old)["revoked_at"] is not None
    assert scene.fake.state.token_by_id(current)["revoked_at"] is None, "AWSCURRENT: never"
    (line,) = _compliance_lines(capsys)
    assert line["rotator_compliance"]["anomalous_token_ids"] == []
    scene.check_no_leak(caplog)


def _created(scene: Scene, version: str) -> datetime:
    (found,) = [v["CreatedDate"] for v in scene.client().list_secret_version_ids(
        SecretId=scene.name, IncludeDeprecated=True)["Versions"] if v["VersionId"] == version]  # fmt: skip
    return found.astimezone(UTC)


def test_a_revocation_time_earlier_than_the_versions_allow_is_raised_and_reported(scene, capsys, caplog):
    """Anyone with TagResource could move a rotator:revoke:<id> time into the past, and the superseded
    token was revoked at once, inside its grace (invariant 3), reported nowhere. The version that
    replaced it was created no later than it was published: a time earlier than that creation + grace
    (- the clock slack) is no time rotator wrote. The token is due at that time, written back, and
    the run reports it (log, compliance line: anomalous, not overdue)."""
    token = scene.rotate()
    old = scene.bootstrap_id
    assert scene.payload("AWSPREVIOUS")["token_id"] == old
    scene.client().tag_resource(SecretId=scene.name, Tags=[{"Key": f"rotator:revoke:{old}",
                                                            "Value": "2000-01-01T00:00:00Z"}])
    capsys.readouterr()
    # moto's ListSecretVersionIds answers the time of the call as every CreatedDate (AWS answers the
    # creation's): read before and after the invocation, the function's floor is between the two
    created_before = _created(scene, token)
    report = scene.invoke({"action": "revoke-expired"})
    created_after = _created(scene, token)
    assert report["revoked"] == [] and report["waiting"] == 1 and report["refused"] == []
    assert scene.fake.state.token_by_id(old)["revoked_at"] is None, "not inside its grace"
    (line,) = _compliance_lines(capsys)
    assert line["rotator_compliance"]["anomalous_token_ids"] == [old]
    assert line["rotator_compliance"]["overdue_token_ids"] == [] and line["rotator_compliance"]["compliant"] is False
    (logged,) = [r.getMessage() for r in caplog.records if "ANOMALY" in r.getMessage() and r.levelno == logging.ERROR]
    assert "earlier than grace" in logged
    written = datetime.fromisoformat(scene.tags()[f"rotator:revoke:{old}"].replace("Z", "+00:00"))
    assert created_before + GRACE <= written < created_after + GRACE + timedelta(seconds=1), \
        "grace after the replacing version's creation"

    scene.clock.advance(written - scene.clock.now() + timedelta(seconds=1))
    capsys.readouterr()
    report = scene.invoke({"action": "revoke-expired"})
    assert report["revoked"] == [old]
    assert scene.fake.state.token_by_id(old)["revoked_at"] is not None
    (line,) = _compliance_lines(capsys)
    assert line["rotator_compliance"]["anomalous_token_ids"] == [] and line["rotator_compliance"]["compliant"]
    scene.check_no_leak(caplog)


def test_an_early_revocation_time_of_a_minted_token_waits_for_its_successor_s_grace(scene):
    """The same bound for a token the function minted: the version after its run's replaced it."""
    scene.rotate()
    scene.rotate()  # at once: the first rotation's token is AWSPREVIOUS, within its grace
    minted = scene.payload("AWSPREVIOUS")["token_id"]
    scene.client().tag_resource(SecretId=scene.name, Tags=[{"Key": f"rotator:revoke:{minted}",
                                                            "Value": "2000-01-01T00:00:00Z"}])
    report = scene.invoke({"action": "revoke-expired"})
    assert report["revoked"] == [] and report["waiting"] == 2  # it, and the bootstrapped token
    assert scene.fake.state.token_by_id(minted)["revoked_at"] is None
    assert scene.tags()[f"rotator:revoke:{minted}"] != "2000-01-01T00:00:00Z"
    last = max(datetime.fromisoformat(v.replace("Z", "+00:00")) for k, v in scene.tags().items()
               if k.startswith("rotator:revoke:"))  # fmt: skip
    scene.clock.advance(last - scene.clock.now() + timedelta(seconds=1))
    assert sorted(scene.invoke({"action": "revoke-expired"})["revoked"]) == sorted([minted, scene.bootstrap_id])


def test_a_token_whose_replacing_version_the_records_do_not_show_is_refused(scene):
    """AWSCURRENT moved back by hand to the bootstrap's version: the rotation's token is in the newest
    version, and no version shows when it was superseded. A tag's time alone never gets it revoked:
    the claim is refused and left to a person."""
    token = scene.rotate()
    minted = scene.payload("AWSCURRENT")["token_id"]
    (first,) = [v for v, s in scene.stages().items() if "AWSPREVIOUS" in s]
    scene.client().update_secret_version_stage(SecretId=scene.name, VersionStage="AWSCURRENT",
                                               MoveToVersionId=first, RemoveFromVersionId=token)  # fmt: skip
    scene.client().tag_resource(SecretId=scene.name, Tags=[{"Key": f"rotator:revoke:{minted}",
                                                            "Value": "2000-01-01T00:00:00Z"}])
    scene.clock.advance(GRACE + timedelta(minutes=1))
    with pytest.raises(NeedsAttention, match=f"refused to revoke {minted}"):
        scene.invoke({"action": "revoke-expired"})
    assert scene.fake.state.token_by_id(minted)["revoked_at"] is None
    assert f"rotator:attention:{minted}" in scene.tags()


# -- a runtime whose boto3 predates RotationToken ----------------------------------------------------


def _old_botocore_client(aws: MotoServer, where: Path) -> Any:
    """A real botocore client whose service model has no RotationToken for PutSecretValue: a Lambda
    runtime's boto3 from before June 2024."""
    import copy

    import botocore.session
    from botocore.config import Config

    model = copy.deepcopy(botocore.session.get_session().get_component("data_loader")
                          .load_service_model("secretsmanager", "service-2"))  # fmt: skip
    del model["shapes"]["PutSecretValueRequest"]["members"]["RotationToken"]
    data = where / "old-botocore-data"
    (data / "secretsmanager" / model["metadata"]["apiVersion"]).mkdir(parents=True)
    (data / "secretsmanager" / model["metadata"]["apiVersion"] / "service-2.json").write_text(json.dumps(model))
    session = botocore.session.get_session()
    session.get_component("data_loader").search_paths.insert(0, str(data))
    return session.create_client("secretsmanager", region_name=aws.region, endpoint_url=aws.url,
                                 aws_access_key_id="testing", aws_secret_access_key="testing",
                                 config=Config(retries={"total_max_attempts": 1}))  # fmt: skip


def test_a_boto3_without_rotation_token_is_refused_before_anything_is_minted(scene, caplog):
    """Issue review1#5: with a RotationToken in the event, an old boto3 minted a token, PutSecretValue
    refused the parameter, the token was revoked, and every attempt of the rotation did the same, with
    a message that named no parameter. Now createSecret refuses before the mint, with the message
    docs/aws-lambda.md gives and its fix; without a RotationToken the same client rotates."""
    old = _old_botocore_client(scene.aws, scene.dir)
    rotation_token = f"rotation-token-{uuid.uuid4()}"
    token = scene.start()
    for _attempt in range(2):  # Secrets Manager's retries
        with pytest.raises(PermanentError, match='Unknown parameter in input: "RotationToken"') as err:
            scene.invoke(scene.event("createSecret", token, RotationToken=rotation_token), client=old)
        assert "--with-boto3" in err.value.hint and "nothing was minted" in str(err.value)
    assert scene.minted() == [], "nothing minted"
    assert rotation_token not in caplog.text
    for step in STEPS:
        scene.invoke(scene.event(step, token), client=old)
    assert scene.stages()[token] == ["AWSCURRENT"]
    scene.check_no_leak(caplog)


def test_put_secret_value_refusing_a_parameter_names_it_and_the_fix_never_a_value(scene, caplog):
    """When the client's model cannot be read before the call (a wrapper), botocore's refusal after
    the mint names the parameter and the fix (the minted token is revoked at once), and the values in
    botocore's report (the RotationToken, a SecretString) are never shown."""
    from rotator.adapters.aws.secretsmanager import map_errors

    old = _old_botocore_client(scene.aws, scene.dir)
    rotation_token = f"rotation-token-{uuid.uuid4()}"
    with pytest.raises(botocore.exceptions.ParamValidationError) as refused:  # botocore's own, raised before sending
        old.put_secret_value(SecretId=scene.name, SecretString=424242424242, RotationToken=rotation_token)
    assert rotation_token not in str(refused.value) and "424242424242" in str(refused.value)
    with pytest.raises(PermanentError) as err, map_errors("aws-secretsmanager:x", "PutSecretValue"):
        raise refused.value
    assert 'Unknown parameter in input: "RotationToken"' in str(err.value) and "--with-boto3" in err.value.hint
    assert "424242424242" not in str(err.value) + err.value.hint

    token = scene.start()
    failing = FailingClient(scene.client(), "put_secret_value", refused.value)
    with pytest.raises(PermanentError, match='PutSecretValue: Unknown parameter in input: "RotationToken"'):
        scene.invoke(scene.event("createSecret", token, RotationToken=rotation_token), client=failing)
    assert len(scene.minted()) == 1 and scene.active_minted() == [], "the token it could not store is revoked"
    assert rotation_token not in caplog.text and "424242424242" not in caplog.text
    scene.check_no_leak(caplog)
