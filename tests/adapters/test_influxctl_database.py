"""The influxctl-database issuer against the fake influxctl, run as a real subprocess.

Nothing is patched inside the process: the adapter writes its private config, starts the fake
executable and reads what it prints, as it would with the real influxctl.
"""

from __future__ import annotations

import dataclasses
import json
import re
import stat
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import ValidationError

from rotator.adapters.influxctl.common import MgmtTokenAuth, ProfileSettings, SelfAuth, default_run
from rotator.adapters.influxctl.database import DatabasePermissions, InfluxctlDatabaseIssuer, InfluxctlDatabaseSettings
from rotator.config.adapter_settings import validate_settings
from rotator.config.policy import PolicyFileError, parse_config
from rotator.core.contracts import AdapterContext, Issuer, MintedToken, MintRequest
from rotator.core.credentials import CredentialRef
from rotator.core.errors import ConfigError, IssuerOutputError, PermanentError, TransientError
from rotator.core.secret import Secret
from rotator.sandbox.influxctl_state import parse_time
from tests.fakes.fixtures import FakeInfluxctlFixture

ADMIN_TOKEN = "clustered-admin-token-0123456789abcdef"  # the Clustered admin token (token.json)
PROFILE = {"product": "clustered", "host": "influxdb.example.test", "port": 443}
DEDICATED = {"product": "dedicated", "account_id": "00000000-0000-4000-8000-00000000acc1",
             "cluster_id": "00000000-0000-4000-8000-00000000c1a5"}


@dataclass
class Recorder:
    """A ``run`` that reads the private config while the child runs, then runs it for real."""

    calls: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        config = Path(argv[list(argv).index("--config") + 1])
        self.calls.append(
            {
                "argv": list(argv),
                "config_text": config.read_text(),
                "file_mode": stat.S_IMODE(config.stat().st_mode),
                "config": config,
            }
        )
        return default_run(argv, timeout)


@dataclass
class Setup:
    fake: FakeInfluxctlFixture
    mgmt: Secret  # the management token the policy mints with
    current: Secret  # the database token the store holds now (bootstrap)
    current_id: str
    recorder: Recorder

    def issuer(self, binary: str | None = None, **settings: Any) -> InfluxctlDatabaseIssuer:
        data = {
            "influxctl": binary or str(self.fake.binary),
            "profile": PROFILE,
            "auth": {"method": "mgmt_token", "token": {"file": "mgmt.token"}},
            "permissions": {"read": ["db1"], "write": ["db1"]},
            **settings,
        }
        model = validate_settings(InfluxctlDatabaseSettings, data)
        return InfluxctlDatabaseIssuer(model, base_dir=self.fake.workdir, run=self.recorder)

    def record(self, token_id: str) -> dict[str, Any]:
        record = self.fake.state.db_token_by_id(token_id)
        assert record is not None
        return record

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """influxctl run by hand with the management token, as an operator would check."""
        config = self.fake.profile(self.fake.workdir / "operator.toml", mgmt_token=self.mgmt.reveal())
        return self.fake.run("--config", str(config), *args)


@pytest.fixture
def setup(fake_influxctl: FakeInfluxctlFixture) -> Setup:
    mgmt, _ = fake_influxctl.state.add_token("automation manager")
    (fake_influxctl.workdir / "mgmt.token").write_text(mgmt + "\n")
    value, token_id = fake_influxctl.state.add_db_token("bootstrap", {"read": ["db1"], "write": ["db1"]})
    return Setup(fake_influxctl, Secret(mgmt), Secret(value), token_id, Recorder())


def request(run_id: str = "run-1", expires_at: datetime | None = None, description: str = "") -> MintRequest:
    expires = expires_at or datetime.now(UTC) + timedelta(days=2)
    return MintRequest("p1", run_id, description or f"rotator:p1:{run_id}", expires)


def assert_clean(exc: BaseException, *secrets: Secret) -> None:
    text = f"{exc} | {getattr(exc, 'hint', '')} | {exc.__cause__!r}"
    for secret in secrets:
        assert secret.reveal() not in text


def grants(record: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["action"], p["resource"]) for p in record["permissions"]]


# --- settings ------------------------------------------------------------------------------------


def settings(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "profile": PROFILE,
        "auth": {"method": "mgmt_token", "token": {"env": "X"}},
        "permissions": {"read": ["db1"]},
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"auth": {"method": "self"}}, "auth.method = 'self' cannot work for database tokens"),
        ({"auth": {}}, "auth.method = 'self' cannot work"),
        ({"auth": None}, "`auth` is required"),
        ({"auth": {"method": "nope"}}, "does not match any of the expected tags: 'token_file', 'mgmt_token'"),
        ({"auth": {"method": "token_file"}}, "Field required"),
        ({"permissions": {}}, "grant at least one permission"),
        ({"permissions": {"read": [], "write": []}}, "grant at least one permission"),
        ({"permissions": {"admin": ["db1"]}}, "Unexpected keyword argument"),
        ({"permissions": {"read": ["x" * 65]}}, "is not a database name"),
        ({"permissions": {"read": ["a,b"]}}, "has a comma"),
        ({"permissions": {"read": ["*"]}}, "`database` is required"),
        ({"permissions": {"read": ["db1"]}, "database": "db2"}, "in neither permissions.read nor permissions.write"),
        ({"database": "*"}, "name one database"),
        ({"verify_query": "--format=csv"}, "not starting with '-'"),
        ({"verify_query": "  "}, "not blank"),
        ({"profile": DEDICATED}, "product 'dedicated' needs `host` (the cluster's URL"),
    ],
)
def test_invalid_settings_are_refused_with_a_clear_message(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        validate_settings(InfluxctlDatabaseSettings, settings(**changes))


def test_verify_database_defaults() -> None:
    def database(**changes: Any) -> str:
        return validate_settings(InfluxctlDatabaseSettings, settings(**changes)).verify_database

    assert database(permissions={"read": ["*", "db2", "db1"], "write": ["db1"]}) == "db2"
    assert database(permissions={"read": ["*"], "write": ["*", "db3"]}) == "db3"  # write-only on db3
    assert database(permissions={"read": ["*"]}, database="anything") == "anything"
    model = validate_settings(InfluxctlDatabaseSettings, settings(permissions={"read": ["db1", "db1"], "write": ["*"]}))
    assert model.permissions.read == ("db1",)
    assert model.verify_query == "SELECT 1" and model.timeout_s == 60


def test_settings_built_in_code_are_checked_like_a_policy_table() -> None:
    profile, auth = ProfileSettings(**PROFILE), MgmtTokenAuth(method="mgmt_token", token=CredentialRef(env="X"))
    built = InfluxctlDatabaseSettings(profile=profile, auth=auth, permissions=DatabasePermissions(read=("db1", "db1")))
    assert built == validate_settings(InfluxctlDatabaseSettings, settings(permissions={"read": ["db1"]}))
    assert hash(built) == hash(dataclasses.replace(built)) and built.permissions.read == ("db1",)
    with pytest.raises(ValueError, match="'self' cannot work"):
        InfluxctlDatabaseSettings(profile=profile, auth=cast(Any, SelfAuth()), permissions=built.permissions)
    with pytest.raises(ValueError, match="`database` must name one database"):
        dataclasses.replace(built, database="*")


def test_a_policy_file_with_self_auth_is_invalid(tmp_path: Path) -> None:
    data = {
        "policy": [
            {
                "name": "db",
                "schedule": "1d",
                "issuer": {"type": "influxctl-database", "profile": PROFILE, "auth": {"method": "self"}},
                "store": [
                    {
                        "type": "vault-kv2",
                        "url": "http://127.0.0.1:1",
                        "path": "x",
                        "auth": {"method": "token", "token": {"env": "T"}},
                    }
                ],
            }
        ]
    }
    with pytest.raises(PolicyFileError) as info:
        parse_config(data, tmp_path / "rotator.toml")
    text = str(info.value)
    assert "policy[0] 'db'.issuer.auth" in text and "'self' cannot work" in text
    assert "policy[0] 'db'.issuer.permissions" in text  # every problem at once


def test_issuer_satisfies_the_protocol(setup: Setup) -> None:
    issuer = setup.issuer()
    assert isinstance(issuer, Issuer)
    assert InfluxctlDatabaseIssuer.kind == "influxctl-database"
    built = InfluxctlDatabaseIssuer.from_config(
        issuer.settings, AdapterContext(policy="p", base_dir=setup.fake.workdir)
    )
    assert isinstance(built, InfluxctlDatabaseIssuer)
    with pytest.raises(TypeError):
        InfluxctlDatabaseIssuer.from_config(ProfileSettings(**PROFILE), AdapterContext(policy="p"))


# --- mint ----------------------------------------------------------------------------------------


def test_mint_with_permissions_and_expiry(setup: Setup) -> None:
    expires = datetime(2031, 5, 6, 7, 8, 9, 999999, tzinfo=UTC)
    issuer = setup.issuer(permissions={"read": ["db1", "*"], "write": ["db1"]})
    minted = issuer.mint(request(expires_at=expires), setup.current)
    record = setup.record(minted.token_id)
    assert record["description"] == "rotator:p1:run-1"
    assert grants(record) == [("read", "db1"), ("read", "*"), ("write", "db1")]
    assert parse_time(record["expires_at"]) == expires.replace(microsecond=0)
    assert minted.expires_at == expires.replace(microsecond=0)
    assert minted.value.reveal().startswith("apiv1_") and len(minted.value.reveal()) == 92
    assert setup.fake.state.db_is_active(minted.value.reveal())
    [call] = setup.recorder.calls
    assert call["argv"][-6:] == [
        "create",
        "--read-database=db1",
        "--read-database=*",
        "--write-database=db1",
        "--expires-at=2031-05-06T07:08:09Z",
        "rotator:p1:run-1",
    ]
    # Minted with the management token, not with the current database token.
    assert "mgmt_token" in call["config_text"] and setup.current.reveal() not in call["config_text"]
    assert isinstance(minted, MintedToken) and minted.value.reveal() not in repr(minted)


def test_mint_a_description_that_starts_with_a_dash(setup: Setup) -> None:
    minted = setup.issuer().mint(request(description="-rotator:p1:run-1"), None)
    assert setup.record(minted.token_id)["description"] == "-rotator:p1:run-1"


def test_mint_legacy_output_finds_the_id_through_the_list(setup: Setup) -> None:
    setup.fake.state.set(create_output="legacy")
    issuer = setup.issuer()
    # A lost attempt of the same run, already revoked by the engine's sweep: hidden, so no ambiguity.
    lost, lost_id = setup.fake.state.add_db_token("rotator:p1:run-1", {"read": ["db1"]})
    setup.fake.state.revoke_db_token(lost_id)
    minted = issuer.mint(request(), None)
    assert minted.token_id != lost_id
    assert setup.record(minted.token_id)["description"] == "rotator:p1:run-1"
    # Two live tokens with the run's description: the id cannot be told, the error names it.
    with pytest.raises(IssuerOutputError, match="2 live tokens with description") as info:
        issuer.mint(request(), None)
    assert_clean(info.value, minted.value, Secret(lost))


def test_mint_with_a_database_token_as_the_management_credential_is_permanent(setup: Setup) -> None:
    (setup.fake.workdir / "mgmt.token").write_text(setup.current.reveal())
    with pytest.raises(PermanentError, match="Unauthenticated") as info:
        setup.issuer().mint(request(), setup.current)
    assert not isinstance(info.value, TransientError)
    assert_clean(info.value, setup.current)
    assert len(setup.fake.state.db_tokens()) == 1


def test_mint_permission_denied_has_a_database_token_hint(setup: Setup) -> None:
    setup.fake.state.add_fault(
        "token create", "exit", message="Error: rpc error: code = PermissionDenied desc = permission denied"
    )
    with pytest.raises(PermanentError) as info:
        setup.issuer().mint(request(), None)
    assert "may not manage database tokens" in info.value.hint


@pytest.mark.parametrize(
    ("mode", "error", "minted"),
    [
        ("exit", TransientError, False),  # Unavailable: connection refused
        ("garbage", IssuerOutputError, False),
        ("after_effect_exit", TransientError, True),  # minted, value lost: the engine sweeps the tag
    ],
)
def test_mint_faults(setup: Setup, mode: str, error: type[Exception], minted: bool) -> None:
    setup.fake.state.add_fault("token create", mode)
    with pytest.raises(error):
        setup.issuer().mint(request(), None)
    tagged = [t for t in setup.fake.state.db_tokens() if t["description"] == "rotator:p1:run-1"]
    assert len(tagged) == (1 if minted else 0)


def test_mint_that_hangs_times_out(setup: Setup) -> None:
    setup.fake.state.add_fault("token create", "hang", seconds=30)
    start = time.monotonic()
    with pytest.raises(TransientError, match="influxctl token create did not finish within 0.5s"):
        setup.issuer(timeout_s=0.5).mint(request(), None)
    assert time.monotonic() - start < 10


# --- verify --------------------------------------------------------------------------------------


def test_verify_queries_the_database_with_the_token_in_the_profile(setup: Setup) -> None:
    setup.issuer().verify(setup.current)
    [call] = setup.recorder.calls
    assert call["argv"][-4:] == ["query", "--database=db1", "--format=json", "SELECT 1"]
    assert setup.current.reveal() not in " ".join(call["argv"])
    assert f"token = {json.dumps(setup.current.reveal())}" in call["config_text"]
    assert "mgmt_token" not in call["config_text"], "a data command gets no management credential"
    assert call["file_mode"] == 0o600 and not call["config"].exists()


def test_a_dedicated_database_token_is_minted_and_verified_through_the_profile_s_host(setup: Setup) -> None:
    """Cloud Dedicated's management commands need no `host`, but `query` does (its only use there): a
    policy without it validated, and every rotation then failed at VERIFY after minting."""
    state = setup.fake.state
    issuer = setup.issuer(profile={**DEDICATED, "account_id": state.account_id, "cluster_id": state.cluster_id,
                                   "host": "cluster.a.influxdb.example.test"})
    token = issuer.mint(request(), None)
    issuer.verify(token.value)
    query = setup.recorder.calls[-1]
    assert query["argv"][-4:] == ["query", "--database=db1", "--format=json", "SELECT 1"]
    assert 'host = "cluster.a.influxdb.example.test"' in query["config_text"]
    assert 'product = "dedicated"' in query["config_text"]


def test_the_fake_query_needs_the_profile_s_host_as_influxctl_does(setup: Setup) -> None:
    """The fake is no looser than influxctl here: on Dedicated `host` is "used for query and write"."""
    config = setup.fake.profile(setup.fake.workdir / "dedicated.toml", product="dedicated")
    with config.open("a") as f:
        f.write(f'  token = {json.dumps(setup.current.reveal())}\n  database = "db1"\n')
    done = setup.fake.run("--config", str(config), "query", "--format=json", "SELECT 1")
    assert done.returncode != 0 and "host is required for the query command" in done.stderr, done


def test_verify_is_transient_during_the_activation_delay_then_passes(setup: Setup) -> None:
    setup.fake.state.set(db_activation_delay_s=1.5)
    issuer = setup.issuer()
    minted = issuer.mint(request(), None)
    with pytest.raises(TransientError, match="Unauthenticated") as info:
        issuer.verify(minted.value)
    assert "take a while to become active" in info.value.hint
    assert_clean(info.value, minted.value)
    time.sleep(1.6)
    issuer.verify(minted.value)


def test_verify_a_write_only_token_passes_on_permission_denied(setup: Setup) -> None:
    issuer = setup.issuer(permissions={"write": ["db2"]})
    minted = issuer.mint(request(), None)
    assert setup.fake.state.db_problem(minted.value.reveal(), "db2") == "permission denied"
    issuer.verify(minted.value)  # the server knows the token: it only may not read db2
    setup.fake.state.revoke_db_token(minted.token_id)
    with pytest.raises(TransientError, match="Unauthenticated"):
        issuer.verify(minted.value)


@pytest.mark.parametrize(("stderr", "error"), [
    # A proxy that refuses the data host: gRPC's Unavailable, whose text carries the proxy's 403.
    ('Error: rpc error: code = Unavailable desc = connection error: desc = "transport: authentication handshake '
     'failed: proxy: unexpected status 403 Forbidden"', TransientError),
    # A local warning before an error that has nothing to do with permissions.
    ("warning: could not create cache dir /root/.cache/influxctl: permission denied\n"
     "Error: unexpected end of JSON input", PermanentError),
    # A reverse proxy's HTTP 403, which gRPC reports as PermissionDenied.
    ("Error: rpc error: code = PermissionDenied desc = unexpected HTTP status code received from server: 403 "
     "(Forbidden); transport: received unexpected content-type \"text/html\"", PermanentError),
    # An earlier attempt's PermissionDenied, then the error that ended the command.
    ("attempt 1: rpc error: code = PermissionDenied desc = permission denied\nError: context deadline exceeded",
     TransientError),
    # A local file's permission, on the last line, without a gRPC status.
    ("Error: open /tmp/influxctl-cache/token.json: permission denied", PermanentError),
])
def test_verify_of_a_write_only_token_passes_on_the_server_s_permission_denied_only(
        setup: Setup, stderr: str, error: type[Exception]) -> None:
    """PermissionDenied proves the server knows the token only when it is the server's answer: a
    "forbidden" or "permission denied" elsewhere in stderr is not, and the token is not verified."""
    issuer = setup.issuer(permissions={"write": ["db2"]})
    minted = issuer.mint(request(), None)
    setup.fake.state.add_fault("query", "exit", message=stderr)
    with pytest.raises(error) as info:
        issuer.verify(minted.value)
    assert "it may not read" not in str(info.value)
    issuer.verify(minted.value)  # the fault gone: the server's own PermissionDenied, as before


def test_verify_of_a_reader_refused_read_is_transient_with_a_hint(setup: Setup) -> None:
    issuer = setup.issuer()
    minted = issuer.mint(request(), None)
    done = setup.cli("token", "update", "--write-database", "db1", minted.token_id)  # read taken away
    assert done.returncode == 0, done.stderr
    with pytest.raises(TransientError, match="PermissionDenied") as info:
        issuer.verify(minted.value)
    assert "has read permission on db1" in info.value.hint


def test_verify_against_a_missing_database_is_permanent(setup: Setup) -> None:
    value, _ = setup.fake.state.add_db_token("reads everything", {"read": ["*"]})
    issuer = setup.issuer(permissions={"read": ["*"]}, database="nope")
    with pytest.raises(PermanentError, match='database "nope" not found') as info:
        issuer.verify(Secret(value))
    assert not isinstance(info.value, TransientError)
    # the query names no token id: the hint is about the database, not "the server does not know that token id"
    assert "database 'nope'" in info.value.hint and "does not exist on this cluster" in info.value.hint
    assert "token id" not in info.value.hint


def test_verify_with_unreadable_output_is_an_output_error(setup: Setup) -> None:
    setup.fake.state.add_fault("query", "garbage")
    with pytest.raises(IssuerOutputError, match="influxctl query: stdout is not JSON"):
        setup.issuer().verify(setup.current)


def test_verify_when_the_cluster_is_down_is_transient(setup: Setup) -> None:
    setup.fake.state.add_fault("query", "exit")
    with pytest.raises(TransientError, match="influxctl query failed"):
        setup.issuer().verify(setup.current)


# --- revoke and list -----------------------------------------------------------------------------


def test_revoke_is_confirmed_and_visible_only_with_include_revoked(setup: Setup) -> None:
    issuer = setup.issuer()
    minted = issuer.mint(request(), None)
    issuer.verify(minted.value)
    issuer.revoke(setup.current_id, None)
    assert setup.record(setup.current_id)["revoked_at"]
    assert setup.fake.state.db_problem(setup.current.reveal()) == "token revoked"

    live = json.loads(setup.cli("token", "list", "--format", "json").stdout)
    assert [t["id"] for t in live] == [minted.token_id]
    every = json.loads(setup.cli("token", "list", "--include-revoked", "--format", "json").stdout)
    assert {t["id"] for t in every} == {setup.current_id, minted.token_id}
    assert setup.cli("token", "get", setup.current_id).returncode == 1
    got = setup.cli("token", "get", "--include-revoked", "--format", "json", setup.current_id)
    assert json.loads(got.stdout)["revoked_at"]["seconds"] > 0
    assert [c["argv"][-5:-1] for c in setup.recorder.calls[-2:]] == [
        ["token", "revoke", "--force", "--"],
        ["token", "list", "--include-revoked", "--format"],
    ]


def test_revoke_twice_and_revoke_unknown_are_fine(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    issuer = setup.issuer()
    issuer.revoke(setup.current_id, None)
    first = setup.record(setup.current_id)["revoked_at"]
    issuer.revoke(setup.current_id, None)
    assert setup.record(setup.current_id)["revoked_at"] == first
    issuer.revoke("00000000-0000-4000-8000-000000000000", None)
    assert "not listed by influxctl; treating it as revoked" in caplog.text


def test_revoke_that_fails_after_taking_effect_is_fine(setup: Setup) -> None:
    setup.fake.state.add_fault("token revoke", "after_effect_exit")
    setup.issuer().revoke(setup.current_id, None)
    assert setup.record(setup.current_id)["revoked_at"]


def test_revoke_that_fails_before_taking_effect_is_transient(setup: Setup) -> None:
    setup.fake.state.add_fault("token revoke", "exit")
    with pytest.raises(TransientError, match="influxctl token revoke failed"):
        setup.issuer().revoke(setup.current_id, None)
    assert setup.record(setup.current_id)["revoked_at"] is None


def test_revoke_that_fails_with_an_internal_error_is_transient_and_retried(setup: Setup) -> None:
    """gRPC Internal on a revoke says nothing of the token: tried again (idempotent), not given up."""
    setup.fake.state.add_fault("token revoke", "exit", message="Error: rpc error: code = Internal desc = boom")
    issuer = setup.issuer()
    with pytest.raises(TransientError, match="influxctl token revoke failed .*code = Internal"):
        issuer.revoke(setup.current_id, None)
    assert setup.record(setup.current_id)["revoked_at"] is None
    issuer.revoke(setup.current_id, None)
    assert setup.record(setup.current_id)["revoked_at"]


def test_list_tokens_matches_the_server_revoked_included(setup: Setup) -> None:
    issuer = setup.issuer()
    minted = issuer.mint(request(expires_at=datetime(2030, 1, 1, tzinfo=UTC)), None)
    issuer.revoke(setup.current_id, None)
    infos = {t.token_id: t for t in issuer.list_tokens(setup.current)}
    assert set(infos) == {setup.current_id, minted.token_id}
    assert infos[minted.token_id].description == "rotator:p1:run-1"
    assert infos[minted.token_id].expires_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert infos[minted.token_id].created_at == parse_time(setup.record(minted.token_id)["created_at"])
    assert infos[setup.current_id].revoked_at is not None
    assert not infos[setup.current_id].is_active(datetime.now(UTC))
    # Management tokens are another kind: never listed here.
    assert not {t["id"] for t in setup.fake.state.tokens()} & set(infos)


def test_list_garbage_is_an_output_error(setup: Setup) -> None:
    setup.fake.state.add_fault("token list", "garbage")
    with pytest.raises(IssuerOutputError, match="influxctl token list: stdout is not JSON"):
        setup.issuer().list_tokens(None)


# --- credentials ---------------------------------------------------------------------------------


def test_admin_token_file_mints_verifies_and_revokes(setup: Setup) -> None:
    setup.fake.state.set(admin_token=ADMIN_TOKEN)
    (setup.fake.workdir / "token.json").write_text(ADMIN_TOKEN + "\n")
    issuer = setup.issuer(auth={"method": "token_file", "token_file": "token.json"})
    minted = issuer.mint(request(), None)
    issuer.verify(minted.value)
    issuer.revoke(setup.current_id, None)
    assert setup.record(setup.current_id)["revoked_at"]
    assert "[profile.auth.token]" in setup.recorder.calls[0]["config_text"]


def test_missing_credentials_are_config_errors(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="auth.token_file .* is not a readable file"):
        setup.issuer(auth={"method": "token_file", "token_file": "absent.json"}).list_tokens(None)
    monkeypatch.delenv("ROTATOR_TEST_DB_MGMT", raising=False)
    with pytest.raises(ConfigError, match="ROTATOR_TEST_DB_MGMT is unset"):
        setup.issuer(auth={"method": "mgmt_token", "token": {"env": "ROTATOR_TEST_DB_MGMT"}}).mint(request(), None)
    monkeypatch.setenv("ROTATOR_TEST_DB_MGMT", setup.mgmt.reveal())
    issuer = setup.issuer(auth={"method": "mgmt_token", "token": {"env": "ROTATOR_TEST_DB_MGMT"}})
    assert {t.token_id for t in issuer.list_tokens(None)} == {setup.current_id}


def test_a_rotated_management_token_file_is_read_again_on_each_call(setup: Setup) -> None:
    issuer = setup.issuer()
    issuer.list_tokens(None)
    newer, _ = setup.fake.state.add_token("automation manager 2")
    setup.fake.state.revoke(setup.fake.state.tokens()[0]["id"])
    (setup.fake.workdir / "mgmt.token").write_text(newer)
    assert {t.token_id for t in issuer.list_tokens(None)} == {setup.current_id}


def test_no_token_in_the_childs_argv(setup: Setup) -> None:
    issuer = setup.issuer()
    minted = issuer.mint(request(), None)
    issuer.verify(minted.value)
    issuer.revoke(setup.current_id, None)
    for call in setup.fake.state.calls():  # the argv influxctl itself parsed
        text = " ".join(call["argv"])
        for secret in (setup.mgmt, setup.current, minted.value):
            assert secret.reveal() not in text
        assert call["profile"] == "rotator"
