"""Unit tests of the influxctl-management issuer with an injected ``run`` (no subprocess).

Output parsing edge cases, error mapping, the private config file and the settings model. The
same adapter against the fake influxctl executable is in tests/adapters/test_influxctl_management.py.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import rotator.adapters.influxctl.common as common
from rotator.adapters.influxctl.common import (
    ProfileAuth,
    ProfileSettings,
    child_environment,
    go_duration,
    parse_timestamp,
    private_config,
    render_profile,
    table_value,
    token_from_output,
)
from rotator.adapters.influxctl.management import InfluxctlManagementIssuer, InfluxctlManagementSettings
from rotator.config.adapter_settings import validate_settings
from rotator.core.clock import FakeClock
from rotator.core.contracts import AdapterContext, MintRequest
from rotator.core.errors import (
    ConfigError,
    IssuerOutputError,
    NotYetAccepted,
    PermanentError,
    RotatorError,
    TransientError,
)
from rotator.core.retry import RetryPolicy, call_with_retry
from rotator.core.secret import Secret
from tests.harness import REPO

TOKEN = "M.V1.unitTestTokenValue+abcdefghijklmnopqrstuvwxyz0123"
CURRENT = Secret("M.V1.currentTokenValue+abcdefghijklmnopqrstuvwxyz01")
TOKEN_ID = "11111111-1111-4111-8111-111111111111"
DESCRIPTION = "rotator:p1:run-1"
EXPIRES = datetime(2026, 3, 1, 12, 30, 45, 987654, tzinfo=UTC)

TABLE = f"""+-------------+--------------------------------------+
|          id | {TOKEN_ID} |
| description | {DESCRIPTION}                     |
|  expires at | 2026-03-01T12:30:45Z                 |
|  revoked at |                                      |
+-------------+--------------------------------------+
{TOKEN}
"""

Answer = subprocess.CompletedProcess[str] | BaseException | Callable[[list[str]], subprocess.CompletedProcess[str]]


@dataclass
class Call:
    argv: list[str]
    timeout: float
    command: list[str]
    config: dict[str, Any]
    config_text: str
    config_mode: int
    dir_mode: int
    env: dict[str, str]


@dataclass
class FakeRun:
    """A scripted ``run``: answers in order; records argv, the config file and its modes."""

    answers: list[Answer]
    calls: list[Call] = field(default_factory=list)

    def __call__(self, argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        config = Path(argv[argv.index("--config") + 1])
        text = config.read_text()
        self.calls.append(
            Call(
                argv=argv,
                timeout=timeout,
                command=argv[argv.index("--timeout") + 2 :],
                config=tomllib.loads(text),
                config_text=text,
                config_mode=stat.S_IMODE(config.stat().st_mode),
                dir_mode=stat.S_IMODE(config.parent.stat().st_mode),
                env=child_environment(),
            )
        )
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            return answer(argv)
        return answer

    @property
    def config_paths(self) -> list[Path]:
        return [Path(call.argv[call.argv.index("--config") + 1]) for call in self.calls]


def done(code: int = 0, stdout: str = "", stderr: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess(["influxctl"], code, stdout, stderr)


def listing(*items: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    import json

    return done(stdout=json.dumps(list(items)))


def token_json(token_id: str = TOKEN_ID, description: str = DESCRIPTION, **extra: Any) -> dict[str, Any]:
    return {"id": token_id, "description": description, "created_at": {"seconds": 1767225600, "nanos": 5000}, **extra}


def make(
    *answers: Answer, auth: dict[str, Any] | None = None, base_dir: Path = Path("."), **settings: Any
) -> tuple[InfluxctlManagementIssuer, FakeRun]:
    run = FakeRun(list(answers))
    model = validate_settings(
        InfluxctlManagementSettings,
        {
            "profile": {"product": "clustered", "host": "influx.example.test"},
            "auth": auth or {"method": "self"},
            **settings,
        },
    )
    return InfluxctlManagementIssuer(model, base_dir=base_dir, run=run), run


def request(expires_at: datetime = EXPIRES) -> MintRequest:
    return MintRequest(policy="p1", run_id="run-1", description=DESCRIPTION, expires_at=expires_at)


def assert_clean(exc: BaseException) -> None:
    """No token value in the message, the hint or the chained exceptions."""
    text = f"{exc} {getattr(exc, 'hint', '')} {exc.__cause__!r} {exc.__context__!r}"
    for secret in (TOKEN, CURRENT.reveal()):
        assert secret not in text


# --- mint: parsing create output -------------------------------------------------------------


def test_mint_reads_the_table_id_and_last_line_token() -> None:
    issuer, run = make(done(stdout=TABLE, stderr="warn\tplease copy the token\n"))
    minted = issuer.mint(request(), CURRENT)
    assert minted.value.reveal() == TOKEN
    assert minted.token_id == TOKEN_ID
    assert minted.expires_at == datetime(2026, 3, 1, 12, 30, 45, tzinfo=UTC)  # whole seconds, as sent
    assert run.calls[0].command == [
        "management",
        "create",
        "--description",
        DESCRIPTION,
        "--expires-at",
        "2026-03-01T12:30:45Z",
    ]


def test_mint_expiry_in_another_zone_is_sent_as_utc_z() -> None:
    issuer, run = make(done(stdout=TABLE))
    issuer.mint(request(datetime(2026, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))), CURRENT)
    assert run.calls[0].command[-1] == "2026-03-01T12:00:00Z"


def test_mint_with_warn_lines_on_stdout_still_takes_the_last_line() -> None:
    stdout = "warn\tplease copy the token and store in a safe place\n" + TABLE.replace(
        TOKEN, "warn\tthis is the *only time* you will see the token\n" + TOKEN
    )
    issuer, _ = make(done(stdout=stdout + "\n\n"))
    minted = issuer.mint(request(), CURRENT)
    assert (minted.value.reveal(), minted.token_id) == (TOKEN, TOKEN_ID)


def test_mint_legacy_output_finds_the_id_by_description() -> None:
    legacy = f"{TOKEN}\n"
    other = token_json("22222222-2222-4222-8222-222222222222", "someone else's")
    issuer, run = make(done(stdout=legacy), listing(other, token_json()))
    minted = issuer.mint(request(), CURRENT)
    assert minted.token_id == TOKEN_ID
    assert [call.command[:2] for call in run.calls] == [["management", "create"], ["management", "list"]]
    assert run.calls[1].config["profile"][0]["mgmt_token"] == CURRENT.reveal()  # same credential


def test_mint_legacy_output_tells_same_description_tokens_apart_by_prefix() -> None:
    earlier = token_json("22222222-2222-4222-8222-222222222222", token_prefix="M.V1.zzzz")
    ours = token_json(token_prefix=TOKEN[:9])
    issuer, _ = make(done(stdout=f"{TOKEN}\n"), listing(earlier, ours))
    assert issuer.mint(request(), CURRENT).token_id == TOKEN_ID


@pytest.mark.parametrize(
    ("reason", "matches"),
    [("no token has the description", []), ("two tokens share it", [token_json(), token_json("x-2")])],
)
def test_mint_legacy_output_without_exactly_one_match_is_an_output_error(
    reason: str, matches: list[dict[str, Any]]
) -> None:
    issuer, _ = make(done(stdout=f"{TOKEN}\n"), listing(*matches))
    with pytest.raises(IssuerOutputError, match=f"shows {len(matches)} tokens with description") as info:
        issuer.mint(request(), CURRENT)
    assert_clean(info.value)


@pytest.mark.parametrize(
    ("reason", "stdout", "shape"),
    [
        ("empty stdout", "", "stdout is empty"),
        ("only blank lines", "\n  \n", "stdout is empty"),
        ("multi-word last line", f"{TABLE}warn this is the only time {TOKEN}\n", "has 7 words"),
        ("table is last", TABLE.replace(TOKEN + "\n", ""), "is a table line"),
        ("short word", "ok\n", "is 2 characters long"),
        ("non-ascii", "M.V1.tökenvalueabcdefghijklmnop\n", "characters a token never has"),
    ],
)
def test_mint_refuses_a_last_line_that_is_not_a_token(reason: str, stdout: str, shape: str) -> None:
    issuer, _ = make(done(stdout=stdout))
    with pytest.raises(IssuerOutputError) as info:
        issuer.mint(request(), CURRENT)
    message = str(info.value)
    assert message.startswith("influxctl management create: ")
    assert shape in message
    assert_clean(info.value)


def test_bad_token_line_after_a_table_names_the_created_id() -> None:
    issuer, _ = make(done(stdout=TABLE.replace(TOKEN, f"see {TOKEN}")))
    with pytest.raises(IssuerOutputError, match=f"token {TOKEN_ID} was created, but") as info:
        issuer.mint(request(), CURRENT)
    assert_clean(info.value)


def test_mint_refuses_a_naive_expiry() -> None:
    issuer, run = make()
    with pytest.raises(ValueError, match="naive"):
        issuer.mint(request(datetime(2026, 3, 1)), CURRENT)
    assert run.calls == []


def test_table_value_reads_only_two_column_rows() -> None:
    wide = "| ID | DESCRIPTION | PREFIX |\n| abc | def | M.V1.x |\n"
    assert table_value(wide, "id") is None
    assert table_value(TABLE, "ID") == TOKEN_ID
    assert table_value(TABLE, "revoked at") is None  # empty cell


def test_token_from_output_accepts_a_plain_token() -> None:
    assert token_from_output(f"\n{TOKEN}\n", "influxctl x") == TOKEN


# --- list_tokens: parsing JSON ---------------------------------------------------------------


def test_list_tokens_parses_protobuf_timestamps() -> None:
    issuer, _ = make(
        listing(
            {
                "id": "a",
                "description": "Client1 token",
                "account_id": "acc",
                "token_prefix": "M.V1.+5Jk",
                "created_at": {"seconds": 1710273527, "nanos": 622095000},
                "revoked_at": {"seconds": 1710273809, "nanos": 948178000},
                "created_by": "u",
            },
            {"id": "b", "description": "Client3 token", "expires_at": {"seconds": 1719491696}},
        )
    )
    first, second = issuer.list_tokens(CURRENT)
    assert first.token_id == "a" and first.description == "Client1 token"
    assert first.created_at == datetime(2024, 3, 12, 19, 58, 47, 622095, tzinfo=UTC)
    assert first.revoked_at == datetime(2024, 3, 12, 20, 3, 29, 948178, tzinfo=UTC)
    assert first.expires_at is None
    assert second.expires_at == datetime(2024, 6, 27, 12, 34, 56, tzinfo=UTC)  # nanos absent
    assert second.created_at is None and second.revoked_at is None


@pytest.mark.parametrize(
    ("reason", "value", "expected"),
    [
        ("absent", None, None),
        ("epoch zero means unset", {"seconds": 0}, None),
        ("empty object is epoch zero", {}, None),
        ("seconds as a protojson string", {"seconds": "1710273527"}, datetime(2024, 3, 12, 19, 58, 47, tzinfo=UTC)),
        ("RFC 3339 with Z", "2024-03-12T19:58:47Z", datetime(2024, 3, 12, 19, 58, 47, tzinfo=UTC)),
        (
            "RFC 3339 with nanoseconds and an offset",
            "2024-03-12T21:58:47.123456789+02:00",
            datetime(2024, 3, 12, 19, 58, 47, 123456, tzinfo=UTC),
        ),
        ("epoch zero as a string", "1970-01-01T00:00:00Z", None),
    ],
)
def test_parse_timestamp(reason: str, value: object, expected: datetime | None) -> None:
    assert parse_timestamp(value, "item 0 `created_at`", "influxctl management list") == expected


@pytest.mark.parametrize(
    ("reason", "value"),
    [
        ("bool seconds", {"seconds": True}),
        ("float seconds", {"seconds": 1.5}),
        ("nanos out of range", {"seconds": 1, "nanos": 1_000_000_000}),
        ("a number", 1710273527),
        ("not a time", "yesterday"),
        ("no zone", "2024-03-12T19:58:47"),
        ("out of range", {"seconds": 10**15}),
        # a valid text whose UTC time is outside what a datetime holds: OverflowError, an "internal error"
        ("past the year 9999 in UTC", "9999-12-31T23:30:00-01:00"),
        ("before the year 1 in UTC", "0001-01-01T00:30:00+01:00"),
    ],
)
def test_parse_timestamp_refuses(reason: str, value: object) -> None:
    with pytest.raises(IssuerOutputError, match="item 0 `created_at`"):
        parse_timestamp(value, "item 0 `created_at`", "influxctl management list")


@pytest.mark.parametrize(
    ("reason", "stdout", "problem"),
    [
        ("not JSON", "+----+\n| ID |\n", "stdout is not JSON"),
        ("empty", "", "stdout is not JSON"),
        ("an object", '{"id": "a"}', "is a JSON dict, expected an array"),
        ("an item is not an object", '["a"]', "item 0 is a JSON str"),
        ("id missing", '[{"description": "d"}]', "item 0 has no string `id`"),
        ("id not a string", '[{"id": 3}]', "item 0 has no string `id`"),
        ("description not a string", '[{"id": "a", "description": 1}]', "`description` that is not a string"),
        ("bad timestamp", '[{"id": "a", "expires_at": []}]', "item 0 `expires_at` is a JSON list"),
    ],
)
def test_list_tokens_refuses_bad_output(reason: str, stdout: str, problem: str) -> None:
    issuer, _ = make(done(stdout=stdout))
    with pytest.raises(IssuerOutputError, match="^influxctl management list: ") as info:
        issuer.list_tokens(CURRENT)
    assert problem in str(info.value)


def test_list_tokens_null_is_empty_and_description_may_be_absent() -> None:
    issuer, _ = make(done(stdout="null\n"), done(stdout='[{"id": "a"}]'))
    assert issuer.list_tokens(CURRENT) == []
    assert issuer.list_tokens(CURRENT)[0].description == ""


# --- error mapping -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "stderr", "verifying", "error", "hint"),
    [
        (
            "unauthenticated on mint",
            "rpc error: code = Unauthenticated desc = bad token",
            False,
            PermanentError,
            "not accepted",
        ),
        ("unauthorized on mint", "error: unauthorized", False, PermanentError, "not accepted"),
        ("unauthenticated on verify", "rpc error: code = Unauthenticated desc = x", True, NotYetAccepted, "active"),
        ("permission denied", "rpc error: code = PermissionDenied desc = no", False, PermanentError, "token_file"),
        ("unavailable", "rpc error: code = Unavailable desc = down", False, TransientError, ""),
        ("deadline", "rpc error: code = DeadlineExceeded desc = slow", False, TransientError, ""),
        ("connection refused", "dial tcp 10.0.0.1:443: connect: connection refused", True, TransientError, ""),
        ("anything else", "error: invalid argument", False, PermanentError, "by hand"),
        ("internal", "rpc error: code = Internal desc = oops", False, TransientError, "found by its run's tag"),
        ("unknown", "rpc error: code = Unknown desc = unexpected HTTP status code received from server: 500",
         False, TransientError, "found by its run's tag"),
        ("canceled", "rpc error: code = Canceled desc = context canceled", False, TransientError,
         "found by its run's tag"),
        ("unknown with a reset connection", "rpc error: code = Unknown desc = read: connection reset by peer", False,
         TransientError, "retries"),
    ],
)
def test_exit_codes_are_mapped_by_stderr(
    reason: str, stderr: str, verifying: bool, error: type[RotatorError], hint: str
) -> None:
    answer = done(code=1, stdout=TABLE, stderr=f"warn\tsomething\n{stderr}\n")
    issuer, _ = make(answer)
    with pytest.raises(RotatorError) as info:
        if verifying:
            issuer.verify(Secret(TOKEN))
        else:
            issuer.mint(request(), CURRENT)
    assert type(info.value) is error
    command = "management list" if verifying else "management create"
    assert str(info.value) == f"influxctl {command} failed (exit 1): {stderr}"
    assert hint in info.value.hint
    assert_clean(info.value)


def test_error_message_redacts_secrets_in_the_last_stderr_line() -> None:
    stderr = f"error: token {CURRENT.reveal()} rejected, not {TOKEN}\n"
    issuer, _ = make(done(code=2, stderr=stderr))
    with pytest.raises(PermanentError) as info:
        issuer.list_tokens(CURRENT)
    assert str(info.value) == "influxctl management list failed (exit 2): error: token *** rejected, not ***"


def test_error_message_quotes_only_the_last_stderr_line_and_truncates_it() -> None:
    issuer, _ = make(done(code=1, stderr="first line\n" + "x" * 1000 + "\n\n"))
    with pytest.raises(PermanentError) as info:
        issuer.list_tokens(CURRENT)
    assert "first line" not in str(info.value)
    assert str(info.value).endswith("x" * 300 + "...")


def test_killed_by_a_signal_is_transient() -> None:
    issuer, _ = make(done(code=-9))
    with pytest.raises(TransientError, match="influxctl management list was killed by signal 9"):
        issuer.list_tokens(CURRENT)


def test_timeout_is_transient_and_names_the_command() -> None:
    expired = subprocess.TimeoutExpired(["influxctl"], 0.5, output=TABLE)
    issuer, run = make(expired, timeout_s=0.5)
    with pytest.raises(TransientError) as info:
        issuer.mint(request(), CURRENT)
    assert str(info.value) == "influxctl management create did not finish within 0.5s"
    assert run.calls[0].timeout == 0.5
    assert "--timeout" in run.calls[0].argv and "500ms" in run.calls[0].argv
    assert info.value.__suppress_context__
    assert_clean(info.value)


@pytest.mark.parametrize(
    ("reason", "exc", "error"),
    [
        ("not found", FileNotFoundError(errno.ENOENT, "No such file or directory"), ConfigError),
        ("not executable", PermissionError(errno.EACCES, "Permission denied"), ConfigError),
        ("bad format", OSError(errno.ENOEXEC, "Exec format error"), ConfigError),
        ("out of processes", BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable"), TransientError),
    ],
)
def test_binary_that_cannot_start(reason: str, exc: OSError, error: type[RotatorError]) -> None:
    issuer, _ = make(exc, influxctl="/opt/nowhere/influxctl")
    with pytest.raises(RotatorError) as info:
        issuer.list_tokens(CURRENT)
    assert type(info.value) is error
    assert str(info.value) == f"cannot run influxctl binary '/opt/nowhere/influxctl': {exc.strerror}"
    if error is ConfigError:
        assert 'influxctl = "/path/to/influxctl"' in info.value.hint


def test_real_missing_binary_is_a_config_error_naming_it(tmp_path: Path) -> None:
    model = InfluxctlManagementSettings(
        influxctl="bin/influxctl", profile=ProfileSettings(product="clustered", host="h")
    )
    issuer = InfluxctlManagementIssuer.from_config(model, AdapterContext(policy="p1", base_dir=tmp_path))
    with pytest.raises(ConfigError, match=f"cannot run influxctl binary '{tmp_path}/bin/influxctl'"):
        issuer.list_tokens(CURRENT)


# --- verify ------------------------------------------------------------------------------------


def test_verify_authenticates_with_the_new_token_whatever_auth_says(tmp_path: Path) -> None:
    token_file = tmp_path / "admin.json"
    token_file.write_text("{}")
    issuer, run = make(listing(token_json()), auth={"method": "token_file", "token_file": str(token_file)})
    issuer.verify(Secret(TOKEN))
    profile = run.calls[0].config["profile"][0]
    assert profile["mgmt_token"] == TOKEN
    assert "auth" not in profile
    assert run.calls[0].command == ["management", "list", "--format", "json"]


def test_verify_refuses_garbage_output() -> None:
    issuer, _ = make(done(stdout="<html>proxy error</html>"))
    with pytest.raises(IssuerOutputError):
        issuer.verify(Secret(TOKEN))


# --- revoke ------------------------------------------------------------------------------------


def revoked(token_id: str = TOKEN_ID) -> dict[str, Any]:
    return token_json(token_id, revoked_at={"seconds": 1767225700})


def test_revoke_runs_force_then_confirms() -> None:
    issuer, run = make(done(), listing(revoked()))
    issuer.revoke(TOKEN_ID, CURRENT)
    assert run.calls[0].command == ["management", "revoke", "--force", "--", TOKEN_ID]
    assert run.calls[1].command == ["management", "list", "--format", "json"]


def test_revoke_that_failed_but_took_effect_is_fine(caplog: pytest.LogCaptureFixture) -> None:
    issuer, run = make(done(code=1, stderr="rpc error: code = Internal desc = oops"), listing(revoked()))
    with caplog.at_level(logging.INFO, logger="rotator.adapters.influxctl"):
        assert issuer.revoke(TOKEN_ID, CURRENT) is None  # no error: the list shows the token revoked
    assert [call.command for call in run.calls] == [
        ["management", "revoke", "--force", "--", TOKEN_ID],
        ["management", "list", "--format", "json"],
    ]
    assert [call.config["profile"][0]["mgmt_token"] for call in run.calls] == [CURRENT.reveal()] * 2
    assert run.answers == [], "both scripted answers were used"
    assert f"management token {TOKEN_ID} is revoked although the revoke command failed" in caplog.messages


def test_revoke_that_failed_and_did_not_take_effect_raises_the_revoke_error() -> None:
    issuer, _ = make(done(code=1, stderr="rpc error: code = Unavailable desc = down"), listing(token_json()))
    with pytest.raises(TransientError, match="influxctl management revoke failed"):
        issuer.revoke(TOKEN_ID, CURRENT)


def test_revoke_that_failed_when_the_list_fails_too_raises_the_revoke_error() -> None:
    issuer, _ = make(
        done(code=1, stderr="rpc error: code = PermissionDenied desc = no"),
        done(code=1, stderr="rpc error: code = Unavailable desc = down"),
    )
    with pytest.raises(PermanentError, match="influxctl management revoke failed"):
        issuer.revoke(TOKEN_ID, CURRENT)


def test_revoke_that_succeeded_but_is_not_listed_revoked_is_transient() -> None:
    issuer, _ = make(done(), listing(token_json()))
    with pytest.raises(TransientError, match=f"revoke {TOKEN_ID} succeeded but the token is not listed as revoked"):
        issuer.revoke(TOKEN_ID, CURRENT)


@pytest.mark.parametrize("revoke", [done(code=1, stderr="rpc error: code = NotFound desc = no such token"), done()],
                         ids=["not-found", "succeeded"])
def test_revoke_of_an_unlisted_token_is_done_with_a_warning(
        caplog: pytest.LogCaptureFixture, revoke: subprocess.CompletedProcess[str]) -> None:
    issuer, _ = make(revoke, listing())
    with caplog.at_level(logging.WARNING, logger="rotator.adapters.influxctl"):
        issuer.revoke(TOKEN_ID, CURRENT)
    assert f"management token {TOKEN_ID} is not listed by influxctl; treating it as revoked" in caplog.messages


@pytest.mark.parametrize(("revoke", "error"), [
    (done(code=1, stderr="rpc error: code = Unavailable desc = down"), TransientError),
    (done(code=1, stderr="rpc error: code = Internal desc = oops"), TransientError),
], ids=["unavailable", "internal"])
@pytest.mark.parametrize("answer", ["null", "[]"])
def test_revoke_that_failed_is_not_proved_by_a_list_without_the_token(
        revoke: subprocess.CompletedProcess[str], error: type[Exception], answer: str) -> None:
    """Revoked management tokens stay listed: a list without the token (``null``, or another cluster's
    after the profile changed) after a revoke that failed for another reason than NotFound proves
    nothing, and the revoke's own error is raised (the revocation is not recorded as done)."""
    issuer, _ = make(revoke, done(stdout=answer))
    with pytest.raises(error, match="influxctl management revoke failed"):
        issuer.revoke(TOKEN_ID, CURRENT)


SERVER_ERRORS = [
    "rpc error: code = Internal desc = oops",
    "rpc error: code = Unknown desc = unexpected HTTP status code received from server: 500 (Internal Server Error)",
    "rpc error: code = Canceled desc = context canceled",
]


@pytest.mark.parametrize("stderr", SERVER_ERRORS, ids=["internal", "unknown", "canceled"])
def test_revoke_that_failed_with_a_server_error_is_transient(stderr: str) -> None:
    """Internal, Unknown and Canceled say nothing of the token: a revocation (idempotent, confirmed by the
    list) is tried again, where a PermanentError would end the engine's round at once (and a mint's
    token, if one was made, is searched for by its tag before the next try: the engine's unanswered path)."""
    issuer, _ = make(done(code=1, stderr=stderr), listing(token_json()))
    with pytest.raises(TransientError, match="influxctl management revoke failed") as info:
        issuer.revoke(TOKEN_ID, CURRENT)
    assert str(info.value) == f"influxctl management revoke failed (exit 1): {stderr}"
    assert "tries again" in (info.value.hint or "")
    assert_clean(info.value)


@pytest.mark.parametrize("stderr", SERVER_ERRORS, ids=["internal", "unknown", "canceled"])
def test_revoke_whose_confirming_list_fails_with_a_server_error_is_transient(stderr: str) -> None:
    issuer, _ = make(done(), done(code=1, stderr=stderr))
    with pytest.raises(TransientError, match="influxctl management list failed"):
        issuer.revoke(TOKEN_ID, CURRENT)


def test_revoke_with_another_error_stays_permanent() -> None:
    issuer, _ = make(done(code=1, stderr="rpc error: code = InvalidArgument desc = no"), listing(token_json()))
    with pytest.raises(PermanentError, match="influxctl management revoke failed") as info:
        issuer.revoke(TOKEN_ID, CURRENT)
    assert not isinstance(info.value, TransientError)


def test_revoke_after_a_server_error_is_retried_by_call_with_retry() -> None:
    """The engine calls revoke through call_with_retry: a passing Internal costs one bounded retry."""
    issuer, run = make(
        done(code=1, stderr="rpc error: code = Internal desc = oops"), listing(token_json()),
        done(), listing(revoked()),
    )
    call_with_retry(lambda: issuer.revoke(TOKEN_ID, CURRENT), what="revoke", clock=FakeClock(),
                    policy=RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.01))
    assert [call.command[:2] for call in run.calls] == [["management", "revoke"], ["management", "list"]] * 2
    assert run.answers == []


# --- auth ----------------------------------------------------------------------------------------


def test_self_auth_without_a_current_token_is_a_config_error() -> None:
    issuer, run = make()
    with pytest.raises(ConfigError, match="no token is published yet") as info:
        issuer.mint(request(), None)
    assert "rotator bootstrap" in info.value.hint
    assert run.calls == []


def test_token_file_auth_writes_profile_auth_token(tmp_path: Path) -> None:
    (tmp_path / "admin.json").write_text("{}")
    issuer, run = make(done(stdout=TABLE), auth={"method": "token_file", "token_file": "admin.json"}, base_dir=tmp_path)
    issuer.mint(request(), CURRENT)
    profile = run.calls[0].config["profile"][0]
    assert profile["auth"] == {"token": {"token_file": str(tmp_path / "admin.json")}}
    assert "mgmt_token" not in profile
    assert CURRENT.reveal() not in run.calls[0].config_text


def test_token_file_that_is_missing_is_a_config_error(tmp_path: Path) -> None:
    issuer, run = make(auth={"method": "token_file", "token_file": str(tmp_path / "gone.json")})
    with pytest.raises(ConfigError, match="gone.json is not a readable file"):
        issuer.list_tokens(None)
    assert run.calls == []


def test_mgmt_token_auth_reads_the_reference_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    issuer, run = make(listing(), listing(), auth={"method": "mgmt_token", "token": {"env": "UNIT_MGMT"}})
    monkeypatch.setenv("UNIT_MGMT", "M.V1.separateManagementToken-first")
    issuer.list_tokens(CURRENT)
    monkeypatch.setenv("UNIT_MGMT", "M.V1.separateManagementToken-second")
    issuer.list_tokens(CURRENT)
    assert [c.config["profile"][0]["mgmt_token"] for c in run.calls] == [
        "M.V1.separateManagementToken-first",
        "M.V1.separateManagementToken-second",
    ]
    monkeypatch.delenv("UNIT_MGMT")
    with pytest.raises(ConfigError, match="UNIT_MGMT is unset"):
        issuer.list_tokens(CURRENT)


# --- the private config file and the command line ---------------------------------------------


def test_every_call_gets_a_private_config_that_is_removed_afterwards() -> None:
    issuer, run = make(done(stdout=TABLE), done(code=1, stderr="boom"), subprocess.TimeoutExpired(["x"], 1))
    issuer.mint(request(), CURRENT)
    with pytest.raises(PermanentError):
        issuer.list_tokens(CURRENT)
    with pytest.raises(TransientError):
        issuer.list_tokens(CURRENT)
    assert len(set(run.config_paths)) == 3
    for call, path in zip(run.calls, run.config_paths, strict=True):
        assert (call.config_mode, call.dir_mode) == (0o600, 0o700)
        assert not path.exists() and not path.parent.exists()


def test_the_token_is_never_on_the_command_line() -> None:
    issuer, run = make(done(stdout=TABLE), listing(token_json()), done(), listing(revoked()))
    issuer.mint(request(), CURRENT)
    issuer.verify(Secret(TOKEN))
    issuer.revoke(TOKEN_ID, CURRENT)
    for call in run.calls:
        assert call.argv[:4] == ["influxctl", "--config", call.argv[2], "--profile"]
        assert call.argv[4:7] == ["rotator", "--timeout", "60s"]
        assert not any(secret in " ".join(call.argv) for secret in (TOKEN, CURRENT.reveal()))


def test_rendered_profile_is_valid_toml_with_only_known_keys(tmp_path: Path) -> None:
    model = validate_settings(
        InfluxctlManagementSettings,
        {
            "profile": {
                "product": "dedicated",
                "account_id": 'acc"\\\n\t\x01é',
                "cluster_id": "c1",
                "host": "h",
                "port": 8443,
                "tls": {"insecure": True, "ca": "certs/ca.pem", "cert": "/abs/c.pem"},
            }
        },
    )
    profile = model.profile.resolved(tmp_path)
    weird = Secret('M.V1.q"uote\\back\nslash\u007f-tail-0123456789')
    text = render_profile(profile, ProfileAuth(mgmt_token=weird))
    parsed = tomllib.loads(text)
    assert parsed == {
        "profile": [
            {
                "name": "rotator",
                "product": "dedicated",
                "host": "h",
                "port": "8443",
                "account_id": 'acc"\\\n\t\x01é',
                "cluster_id": "c1",
                "mgmt_token": weird.reveal(),
                "tls": {"insecure": True, "ca": str(tmp_path / "certs/ca.pem"), "cert": "/abs/c.pem"},
            }
        ]
    }


def test_a_value_toml_cannot_hold_is_refused_without_echoing_it() -> None:
    issuer, run = make()
    bad = Secret("M.V1.undecodable\udcff0123456789abcdef")
    with pytest.raises(ConfigError, match="the value of `mgmt_token` for influxctl contains bytes") as info:
        issuer.list_tokens(bad)
    assert bad.reveal() not in str(info.value)
    assert run.calls == []


def test_private_config_is_removed_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), private_config("x = 1\n") as path:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        raise RuntimeError
    assert not path.parent.exists()


# A private config that cannot be made (full, unwritable or read-only temporary directory) is an error
# that says where and what to do, and that nothing was started: a PermanentError, which the engine
# takes as a definite "not minted" (any other error from mint leaves the run open for recovery).
_CALLS: dict[str, Callable[[InfluxctlManagementIssuer], object]] = {
    "mint": lambda issuer: issuer.mint(request(), CURRENT),
    "list_tokens": lambda issuer: issuer.list_tokens(CURRENT),
}


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tempfile's directory for this test, empty: what a failed call leaves in it can be seen."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


def _raising(exc: BaseException) -> Callable[..., Any]:
    def fail(*_args: Any, **_kwargs: Any) -> Any:
        raise exc

    return fail


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else set()


def _assert_config_not_written(exc: PermanentError, temp_dir: Path, code: int, command: str) -> None:
    assert not isinstance(exc, TransientError)
    message, hint = str(exc), exc.hint
    assert f"cannot run influxctl {command}: its private configuration could not be written in {temp_dir}" in message
    assert os.strerror(code) in message and "no influxctl command was started" in message
    if code in (errno.ENOSPC, errno.EACCES, errno.EROFS):
        assert ("free space" if code == errno.ENOSPC else f"make {temp_dir} writable") in hint
    else:  # (out of descriptors: neither space nor rights would help)
        assert "free space" not in hint and "writable" not in hint.split(", or set TMPDIR")[0], hint
        assert errno.errorcode[code] in hint, hint
    assert "TMPDIR" in hint
    assert_clean(exc)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EMFILE], ids=errno.errorcode.get)
@pytest.mark.parametrize("call", sorted(_CALLS))
def test_a_private_config_directory_that_cannot_be_made_is_an_error_naming_it(
    temp_dir: Path, monkeypatch: pytest.MonkeyPatch, code: int, call: str
) -> None:
    issuer, run = make(done(stdout=TABLE), listing(token_json()))
    monkeypatch.setattr(tempfile, "mkdtemp", _raising(OSError(code, os.strerror(code))))
    with pytest.raises(PermanentError) as info:
        _CALLS[call](issuer)
    _assert_config_not_written(info.value, temp_dir, code, "management create" if call == "mint" else "management list")
    assert run.calls == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES], ids=errno.errorcode.get)
@pytest.mark.parametrize("call", sorted(_CALLS))
def test_a_config_file_that_cannot_be_written_leaves_no_directory_behind(
    temp_dir: Path, monkeypatch: pytest.MonkeyPatch, code: int, call: str
) -> None:
    issuer, run = make(done(stdout=TABLE), listing(token_json()))
    real_fdopen = os.fdopen

    def full(fd: int, *args: Any, **kwargs: Any) -> Any:
        fh = real_fdopen(fd, *args, **kwargs)
        fh.write = _raising(OSError(code, os.strerror(code)))
        return fh

    monkeypatch.setattr(os, "fdopen", full)
    before = _open_fds()
    with pytest.raises(PermanentError) as info:
        _CALLS[call](issuer)
    monkeypatch.undo()
    _assert_config_not_written(info.value, temp_dir, code, "management create" if call == "mint" else "management list")
    assert run.calls == []
    assert list(temp_dir.iterdir()) == [], "a half-made private config directory was left"
    assert _open_fds() == before, "the lock file's descriptor was left open"


def test_a_lock_file_that_cannot_be_made_leaves_no_directory_behind(
    temp_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    issuer, run = make(done(stdout=TABLE))

    def refused(directory: Path) -> int:
        (directory / ".lock.new").touch()  # as far as it got
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(directory / ".lock.new"))

    monkeypatch.setattr(common, "_lock_directory", refused)
    with pytest.raises(PermanentError) as info:
        issuer.mint(request(), CURRENT)
    _assert_config_not_written(info.value, temp_dir, errno.EACCES, "management create")
    assert run.calls == []
    assert list(temp_dir.iterdir()) == []


def test_no_usable_temporary_directory_is_named_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    issuer, run = make()
    gone = FileNotFoundError(errno.ENOENT, "No usable temporary directory found in ['/tmp']")
    monkeypatch.setattr(tempfile, "gettempdir", _raising(gone))
    monkeypatch.setattr(tempfile, "mkdtemp", _raising(gone))
    with pytest.raises(PermanentError, match=r"could not be written in any temporary directory \(\$TMPDIR") as info:
        issuer.list_tokens(CURRENT)
    assert "No usable temporary directory" in str(info.value) and "TMPDIR" in info.value.hint
    assert run.calls == []


def test_an_error_of_the_child_is_not_taken_for_one_of_the_config() -> None:
    issuer, _ = make(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    with pytest.raises(ConfigError, match="cannot run influxctl binary") as info:
        issuer.list_tokens(CURRENT)
    assert "private configuration" not in str(info.value)


def test_child_environment_is_an_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "VAULT_TOKEN": "hvs.planted",
        "AWS_SECRET_ACCESS_KEY": "planted",
        "AWS_SESSION_TOKEN": "planted",
        "PGPASSWORD": "planted",
        "BAO_TOKEN": "planted",
        "INFLUX_MGMT_TOKEN": "M.V1.planted-0123456789",
    }
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("INFLUXCTL_PROFILE", "default")
    monkeypatch.setenv("influxctl_mgmt_token", "M.V1.fromTheEnvironment-0123456789")
    monkeypatch.setenv("FAKE_INFLUXCTL_STATE", "/tmp/state.json")
    monkeypatch.setenv("LC_TIME", "C")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("SSL_CERT_FILE", "/etc/ssl/ca.pem")
    monkeypatch.delenv("ROTATOR_INFLUXCTL_ENV", raising=False)
    env = child_environment()
    assert not set(secrets) & set(env)
    assert "INFLUXCTL_PROFILE" not in env and "influxctl_mgmt_token" not in env
    assert "FAKE_INFLUXCTL_STATE" not in env  # not on the list unless named
    assert env["PATH"] == os.environ["PATH"]
    assert (env["LC_TIME"], env["HTTPS_PROXY"], env["SSL_CERT_FILE"]) == (
        "C",
        "http://proxy.example:3128",
        "/etc/ssl/ca.pem",
    )
    # A site names further variables; influxctl's own stay out even when named.
    monkeypatch.setenv("ROTATOR_INFLUXCTL_ENV", " FAKE_INFLUXCTL_STATE , INFLUXCTL_PROFILE")
    env = child_environment()
    assert env["FAKE_INFLUXCTL_STATE"] == "/tmp/state.json"
    assert "INFLUXCTL_PROFILE" not in env and not set(secrets) & set(env)


@pytest.mark.parametrize(("seconds", "text"), [(60, "60s"), (0.5, "500ms"), (1.25, "1250ms"), (0.0001, "1ms")])
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_one_info_line_per_call(caplog: pytest.LogCaptureFixture) -> None:
    issuer, _ = make(done(stdout=TABLE), subprocess.TimeoutExpired(["x"], 1))
    with caplog.at_level(logging.INFO, logger="rotator.adapters.influxctl"):
        issuer.mint(request(), CURRENT)
        with pytest.raises(TransientError):
            issuer.list_tokens(CURRENT)
    records = [r for r in caplog.records if r.name == "rotator.adapters.influxctl"]
    assert [r.levelno for r in records] == [logging.INFO, logging.INFO]
    assert records[0].getMessage().startswith("influxctl management create: exit 0 in ")
    assert records[1].getMessage().startswith("influxctl management list: did not finish in ")
    assert all(TOKEN not in r.getMessage() and CURRENT.reveal() not in r.getMessage() for r in records)


# --- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "settings", "problem"),
    [
        ("clustered without host", {"profile": {"product": "clustered"}}, "product 'clustered' needs `host`"),
        (
            "dedicated without cluster_id",
            {"profile": {"product": "dedicated", "account_id": "a"}},
            "needs `account_id` and `cluster_id`",
        ),
        ("unknown product", {"profile": {"product": "serverless", "host": "h"}}, "literal_error"),
        ("unknown key", {"profile": {"product": "clustered", "host": "h"}, "tokne": 1}, "unexpected_keyword_argument"),
        (
            "inline mgmt_token in the profile",
            {"profile": {"product": "clustered", "host": "h", "mgmt_token": "M.V1.x"}},
            "unexpected_keyword_argument",
        ),
        (
            "inline token string",
            {"profile": {"product": "clustered", "host": "h"}, "auth": {"method": "mgmt_token", "token": "M.V1.x"}},
            "dataclass_type",
        ),
        (
            "unknown auth method",
            {"profile": {"product": "clustered", "host": "h"}, "auth": {"method": "oauth2"}},
            "union_tag_invalid",
        ),
        ("port out of range", {"profile": {"product": "clustered", "host": "h", "port": 0}}, "`port` must be between"),
        ("empty host", {"profile": {"product": "clustered", "host": ""}}, "`host` must not be empty"),
        ("zero timeout", {"profile": {"product": "clustered", "host": "h"}, "timeout_s": 0}, "more than 0"),
        ("long timeout", {"profile": {"product": "clustered", "host": "h"}, "timeout_s": 3601}, "at most 3600"),
        ("empty binary", {"profile": {"product": "clustered", "host": "h"}, "influxctl": ""}, "`influxctl` must name"),
    ],
)
def test_settings_are_validated(reason: str, settings: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_settings(InfluxctlManagementSettings, settings)
    errors = info.value.errors()
    assert any(problem in (e["type"], e["msg"]) or problem in e["msg"] for e in errors), errors


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        ({"method": "token_file"}, [(("auth", "token_file", "token_file"), "missing")]),
        ({"method": "mgmt_token"}, [(("auth", "mgmt_token", "token"), "missing")]),
        ({"method": "nope"}, [(("auth",), "union_tag_invalid")]),
        ({"method": "self", "token_file": "t"}, [(("auth", "self", "token_file"), "unexpected_keyword_argument")]),
    ],
)
def test_a_bad_auth_table_reports_the_problems_of_its_method_only(
    auth: dict[str, Any], expected: list[tuple[tuple[str, ...], str]]
) -> None:
    """``method`` picks the member (a discriminated union): not one error per auth method."""
    with pytest.raises(ValidationError) as info:
        validate_settings(InfluxctlManagementSettings, {"profile": {"product": "clustered", "host": "h"}, "auth": auth})
    assert [(e["loc"], e["type"]) for e in info.value.errors()] == expected


def test_the_influxctl_issuers_import_without_pydantic() -> None:
    """The AWS Lambda function's cold start imports them (settings are dataclasses, see
    rotator/config/adapter_settings.py)."""
    code = ("import sys, rotator.adapters.influxctl.management, rotator.adapters.influxctl.database; "
            "print('pydantic' in sys.modules)")
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60, check=True
    )
    assert proc.stdout.strip() == "False"


def test_settings_defaults() -> None:
    model = validate_settings(
        InfluxctlManagementSettings, {"profile": {"product": "clustered", "host": "h", "port": "443"}}
    )
    assert (model.influxctl, model.auth.method, model.timeout_s, model.profile.port) == ("influxctl", "self", 60, 443)


def test_from_config_refuses_foreign_settings() -> None:
    with pytest.raises(TypeError, match="needs InfluxctlManagementSettings"):
        InfluxctlManagementIssuer.from_config(
            ProfileSettings(product="clustered", host="h"), AdapterContext(policy="p1")
        )


# --- hardening: ids on the command line, deep JSON (issues 10 §2(c) and 11.10) ------------------


@pytest.mark.parametrize(
    "token_id",
    ["--force", "-h", "--config=/tmp/evil.toml", "not-a-uuid", "", f"{TOKEN_ID} extra", f"{TOKEN_ID}\n", TOKEN],
)
@pytest.mark.parametrize("kind", ["management", "database"])
def test_a_token_id_that_is_not_a_uuid_never_reaches_influxctl(kind: str, token_id: str) -> None:
    """An id comes from the journal or a store payload: a claim. Only a UUID is passed, after ``--``."""
    if kind == "management":
        issuer, run = make()
    else:
        from rotator.adapters.influxctl.database import InfluxctlDatabaseIssuer, InfluxctlDatabaseSettings

        run = FakeRun([])
        settings = validate_settings(
            InfluxctlDatabaseSettings,
            {
                "profile": {"product": "clustered", "host": "influx.example.test"},
                "auth": {"method": "mgmt_token", "token": {"env": "UNUSED"}},
                "permissions": {"read": ["db1"]},
            },
        )
        issuer = InfluxctlDatabaseIssuer(settings, run=run)  # type: ignore[assignment]
    with pytest.raises(PermanentError, match="is not a UUID") as err:
        issuer.revoke(token_id, CURRENT)
    assert "correct the record" in err.value.hint
    assert run.calls == []
    assert_clean(err.value)  # an id that is really a token value is not echoed


def test_a_created_token_whose_id_is_not_a_uuid_is_an_output_error() -> None:
    table = TABLE.replace(TOKEN_ID, "--not-a-uuid--")
    issuer, _ = make(done(stdout=table))
    with pytest.raises(IssuerOutputError, match="token was created, but its id '--not-a-uuid--' is not a UUID") as err:
        issuer.mint(request(), CURRENT)
    assert_clean(err.value)


@pytest.mark.parametrize("nested", ["[" * 3000 + "]" * 3000, "[" + '{"a": ' * 3000 + "1" + "}" * 3000 + "]"])
def test_json_nested_thousands_deep_is_a_clear_output_error(nested: str) -> None:
    """Python's JSON decoder raises RecursionError there: it must not escape as a traceback."""
    issuer, _ = make(done(stdout=nested))
    with pytest.raises(IssuerOutputError, match="nested too deeply") as err:
        issuer.list_tokens(CURRENT)
    assert "check the influxctl version" in err.value.hint
