"""Bad input must end in a clear error, never a traceback, and never be accepted when it is a secret.

Issue 11 items 5 and 10: the inline-secret patterns (rotator/config/inline_secrets.py), store payloads
nested thousands deep (real OpenBao, moto server, the Lambda handler). The `rotator validate`
cases are in tests/config/test_validate.py; the generated inputs in tests/config/test_fuzz_inputs.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from rotator.adapters.aws.secretsmanager import read_stage
from rotator.config.inline_secrets import (
    argv_problems,
    env_problems,
    find_token,
    is_secret_name,
    mask_tokens,
    url_problem,
)
from rotator.config.timefmt import parse_rfc3339
from rotator.core.contracts import StoreState
from rotator.core.errors import MalformedPayload, PermanentError, RotatorError
from tests.adapters.test_aws_secretsmanager import make_store as make_aws_store
from tests.adapters.test_aws_secretsmanager import secret_name
from tests.adapters.test_vault_kv2 import make_store as make_vault_store
from tests.aws_server import MotoServer
from tests.runners.test_aws_lambda import Scene, scene  # noqa: F401  # the Lambda scene fixture
from tests.servers import OpenBao

DEEP = "[" * 3000 + "]" * 3000
TOKENS = [
    "M.V1.abcdefghijklmnopqrstuvwxyz012345",
    "apiv3_abcdefghijklmnopqrstuvwxyz",
    "hvs.CAESIAbcdefghijklmnopqrstuvwxyz",
    "s.AbCdEfGhIjKlMnOpQrStUvWx",
    "AKIAIOSFODNN7EXAMPLE",
    "ASIAIOSFODNN7EXAMPLE",
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyb3RhdG9yIn0.c2lnbmF0dXJl",
    "A" * 86 + "==",
]


# -- names and values -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "VAULT_TOKEN", "BAO_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "PGPASSWORD", "INFLUX_TOKEN",
    "GITHUB_TOKEN", "API_KEY", "apikey", "DB_PASSWD", "MY_CREDENTIALS", "SIGNING_KEY", "--api-key", "--password",
    "client_secret", "VAULT_SECRET_ID", "KEY", "HTTP_AUTHORIZATION",
])  # fmt: skip
def test_secret_names_are_recognised(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", [
    "PATH", "HOME", "LANG", "PWD", "APP", "VAULT_ADDR", "VAULT_TOKEN_FILE", "AWS_ACCESS_KEY_ID", "TOKEN_ID",
    "AWS_REGION", "KEYBOARD", "--token-file", "MONKEY_MODE", "",
])  # fmt: skip
def test_names_that_hold_no_secret_pass(name: str) -> None:
    assert not is_secret_name(name)


@pytest.mark.parametrize("token", TOKENS)
def test_token_shapes_are_found_alone_and_inside_text_and_masked(token: str) -> None:
    assert find_token(token) and find_token(f"--token={token}") and find_token(f"Authorization: Bearer {token}")
    assert token not in mask_tokens(f"x {token} y") and mask_tokens(f"x {token} y") == "x *** y"


@pytest.mark.parametrize("text", ["systemctl", "reload", "s.example", "/run/secrets/vault-token", "M.V1", "apiv3",
                                  "https://vault.example:8200", "30d", "arn:aws:secretsmanager:eu-west-1:1:secret:x"])
def test_ordinary_values_are_not_tokens(text: str) -> None:
    assert not find_token(text)


def test_hook_env_refuses_secret_names_and_token_values_without_repeating_them() -> None:
    problems = env_problems({"VAULT_TOKEN": "x1", "BAO_TOKEN": "x2", "AWS_SECRET_ACCESS_KEY": "x3",
                             "APP_MODE": TOKENS[0], "CALLBACK": "https://u:p4ss@h.example/", "LEVEL": "debug",
                             "VAULT_TOKEN_FILE": "/run/secrets/t"})  # fmt: skip
    text = " ".join(problems)
    assert len(problems) == 5, problems
    for name in ("VAULT_TOKEN", "BAO_TOKEN", "AWS_SECRET_ACCESS_KEY", "APP_MODE", "CALLBACK"):
        assert f"refused variable {name}:" in text
    assert TOKENS[0] not in text and "p4ss" not in text and "x3" not in text
    assert "VAULT_TOKEN_FILE" in text  # the fix names the reference form


@pytest.mark.parametrize(("argv", "index"), [
    (["curl", "--token=abc123"], 1),
    (["curl", "--password", "hunter2"], 2),
    (["app", "VAULT_TOKEN=abc"], 1),
    (["curl", "-H", "Authorization: Bearer abcdefgh"], 2),
    (["curl", "https://user:pw@h.example/hook"], 1),
    (["curl", "https://h.example/hook?sig=abc"], 1),
    (["reload", TOKENS[2]], 1),
])  # fmt: skip
def test_hook_arguments_carrying_a_secret_are_refused(argv: list[str], index: int) -> None:
    problems = argv_problems(argv)
    assert problems and f"argument {index}" in problems[0]
    assert all(secret not in " ".join(problems) for secret in ("abc123", "hunter2", "abcdefgh", "pw@", TOKENS[2]))


def test_ordinary_hook_arguments_pass() -> None:
    assert argv_problems(["systemctl", "reload", "app"]) == []
    argv = ["/usr/bin/reload", "--token-file", "/run/secrets/t", "--timeout=30", "https://h.example/"]
    assert argv_problems(argv) == []


@pytest.mark.parametrize("url", [
    "https://user:pass@h.example/x", "https://h.example/x?token=abc", "https://h.example/x?X-Amz-Signature=abc",
    "https://h.example/x?key=abc&other=1", "https://h.example/x?api_key=abc", "postgresql://u:pw@db/rotator",
    "postgresql://u@db/rotator?password=pw", f"https://h.example/{TOKENS[1]}",
])  # fmt: skip
def test_urls_with_credentials_are_refused(url: str) -> None:
    problem = url_problem(url, "FIX")
    assert problem is not None and problem.endswith("FIX")
    assert "pass@" not in problem and "abc" not in problem and "pw" not in problem


def test_urls_without_credentials_pass() -> None:
    for url in ("https://h.example/hook", "https://h.example/x?policy=p1", "postgresql://rotator@db:5432/rotator",
                "postgresql://db/rotator?options=-csearch_path%3Dx&sslmode=verify-full"):
        assert url_problem(url, "FIX") is None, url


# -- store payloads nested thousands deep -----------------------------------------------------------


def _deep_payload() -> str:
    return ('{"token": "M.V1.abcdefghijklmnopqrstuv", "token_id": "t1", "created_at": "2026-01-01T00:00:00Z", '
            f'"x": {DEEP}}}')


def test_a_vault_payload_nested_3000_deep_is_a_clear_permanent_error(openbao: OpenBao, kv_path: str,
                                                                       tmp_path: Path) -> None:
    """hvac's JSON decoder raised RecursionError through read_current (an "internal error")."""
    body = '{"data": ' + _deep_payload() + "}"
    answer = requests.post(f"{openbao.url}/v1/secret/data/{kv_path}", data=body,
                           headers={"X-Vault-Token": openbao.root_token}, timeout=10)  # fmt: skip
    assert answer.status_code == 200, answer.text[:200]
    openbao.client().secrets.kv.v2.update_metadata(path=kv_path, custom_metadata={"managed-by": "rotator"})
    store = make_vault_store(openbao, kv_path, tmp_path)
    with pytest.raises(PermanentError, match="not a JSON object rotator can read") as caught:
        store.read_current()
    assert "rotator bootstrap" in caught.value.hint and "M.V1." not in str(caught.value)
    # Read leniently (the version before an adoption), it is simply not a rotator payload.
    openbao.client().secrets.kv.v2.create_or_update_secret(path=kv_path, secret={"other": "value"})
    previous = store.read_previous()
    assert previous.version == "1" and previous.record is None


def test_a_secrets_manager_payload_nested_3000_deep_is_a_clear_permanent_error(aws: MotoServer) -> None:
    name = secret_name()
    aws.client().create_secret(Name=name, SecretString=_deep_payload(),
                               Tags=[{"Key": "managed-by", "Value": "rotator"}])  # fmt: skip
    version, payload = read_stage(aws.client(), name, "AWSCURRENT", "here") or ("", {})
    assert payload is None and version
    with pytest.raises(PermanentError, match="not a JSON object rotator can read"):
        make_aws_store(aws, name).read_current()


def test_the_lambda_answers_a_deep_pending_payload_with_an_error_and_the_current_token_stays(
    scene: Scene,  # noqa: F811
) -> None:
    current_before = scene.payload("AWSCURRENT")
    token = scene.start()
    scene.client().put_secret_value(SecretId=scene.name, ClientRequestToken=token, SecretString=_deep_payload(),
                                    VersionStages=["AWSPENDING"])  # fmt: skip
    refused = []
    for step in ("createSecret", "setSecret", "testSecret", "finishSecret"):
        try:
            scene.step(step, token)
        except RotatorError as exc:  # before the fix: RecursionError, an uncaught exception in the Lambda
            refused.append(step)
            assert "M.V1.abcdefghijklmnopqrstuv" not in str(exc) + exc.hint
            assert "holds no rotator payload" in str(exc) and "update-secret-version-stage" in exc.hint
    assert refused, "a deep AWSPENDING payload was accepted"
    current = scene.payload("AWSCURRENT")
    assert current == current_before and scene.fake.state.problem(current["token"]) is None
    assert scene.active_minted() == [], "a token was minted and left behind"


# -- store payload times past datetime's range ----------------------------------------------------


#: Valid RFC 3339 that fromisoformat accepts and that overflows when moved to UTC (datetime.max is
#: 9999-12-31T23:59:59.999999 UTC): read_current raised OverflowError, an internal error, from every store.
OVERFLOWING_TIMES = ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"]
_TOKEN = "M.V1.abcdefghijklmnopqrstuv"


def _payload_with(field: str, moment: str) -> dict[str, str]:
    payload = {"token": _TOKEN, "token_id": "t1", "issuer": "influxctl-management", "policy": "influx-mgmt",
               "created_at": "2026-01-01T00:00:00Z", "expires_at": "2027-01-01T00:00:00Z"}  # fmt: skip
    return {**payload, field: moment}


@pytest.mark.parametrize("moment", [*OVERFLOWING_TIMES, "garbage"])
def test_parse_rfc3339_refuses_a_time_past_datetime_s_range_with_value_error(moment: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339(moment)


def test_parse_rfc3339_reads_the_ends_of_datetime_s_range_in_utc() -> None:
    assert parse_rfc3339("9999-12-31T23:59:59Z") == datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert parse_rfc3339("9999-12-31T23:59:59+01:00") == datetime(9999, 12, 31, 22, 59, 59, tzinfo=UTC)
    assert parse_rfc3339("0001-01-01T00:00:00-01:00") == datetime(1, 1, 1, 1, 0, tzinfo=UTC)


@pytest.mark.parametrize("moment", [*OVERFLOWING_TIMES, "garbage"])
@pytest.mark.parametrize("field", ["created_at", "expires_at"])
def test_a_vault_payload_time_past_datetime_s_range_reads_like_any_time_that_is_not_one(
    openbao: OpenBao, kv_path: str, tmp_path: Path, field: str, moment: str
) -> None:
    """Unmanaged, it is simply not a rotator payload (no record); managed, a MalformedPayload naming the key,
    exactly as for "garbage"."""
    client = openbao.client()
    client.secrets.kv.v2.create_or_update_secret(path=kv_path, secret=_payload_with(field, moment))
    store = make_vault_store(openbao, kv_path, tmp_path)
    assert store.read_current() == StoreState(version="1", managed=False, record=None)
    client.secrets.kv.v2.update_metadata(path=kv_path, custom_metadata={"managed-by": "rotator"})
    with pytest.raises(MalformedPayload, match="payload key 'created_at/expires_at' is not an RFC 3339 time") as caught:
        store.read_current()
    assert caught.value.state == StoreState(version="1", managed=True, record=None)
    assert _TOKEN not in str(caught.value) + caught.value.hint


@pytest.mark.parametrize("moment", [*OVERFLOWING_TIMES, "garbage"])
@pytest.mark.parametrize("field", ["created_at", "expires_at"])
def test_a_secrets_manager_payload_time_past_datetime_s_range_reads_like_any_time_that_is_not_one(
    aws: MotoServer, field: str, moment: str
) -> None:
    name = secret_name()
    created = aws.client().create_secret(Name=name, SecretString=json.dumps(_payload_with(field, moment)))
    store = make_aws_store(aws, name)
    assert store.read_current() == StoreState(version=created["VersionId"], managed=False, record=None)
    aws.client().tag_resource(SecretId=name, Tags=[{"Key": "managed-by", "Value": "rotator"}])
    with pytest.raises(MalformedPayload, match="payload key 'created_at/expires_at' is not an RFC 3339 time") as caught:
        store.read_current()
    assert caught.value.state == StoreState(version=created["VersionId"], managed=True, record=None)
    assert _TOKEN not in str(caught.value) + caught.value.hint


# -- influxctl output -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", ["9" * 5000, "-" + "9" * 5000, 10**30])
def test_an_influxctl_timestamp_of_thousands_of_digits_is_an_output_error(seconds: object) -> None:
    """int() of more than 4,300 digits raises ValueError: the parser must refuse it as bad output first."""
    from rotator.adapters.influxctl.common import parse_timestamp

    with pytest.raises(RotatorError, match="created_at"):
        parse_timestamp({"seconds": seconds, "nanos": 0}, "item 0 `created_at`", "management list")
