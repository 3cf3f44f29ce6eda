"""The influxctl-management issuer against the fake influxctl, run as a real subprocess.

Nothing is patched inside the process: the adapter writes its private config, starts the fake
executable and reads what it prints, as it would with the real influxctl. Parsing edge cases
and error mapping in isolation are in tests/adapters/test_influxctl_management_errors.py.
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.adapters.influxctl.common import ProfileSettings, default_run
from rotator.adapters.influxctl.management import InfluxctlManagementIssuer, InfluxctlManagementSettings
from rotator.config.adapter_settings import validate_settings
from rotator.core.contracts import AdapterContext, MintedToken, MintRequest
from rotator.core.errors import ConfigError, IssuerOutputError, PermanentError, RotatorError, TransientError
from rotator.core.secret import Secret
from rotator.sandbox.influxctl_state import parse_time
from tests.fakes.fixtures import FakeInfluxctlFixture

ADMIN_TOKEN = "clustered-admin-token-0123456789abcdef"  # the Clustered admin token (token.json)


@dataclass
class Recorder:
    """A ``run`` that checks the private config while the child runs, then runs it for real."""

    calls: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        config = Path(argv[list(argv).index("--config") + 1])
        self.calls.append(
            {
                "argv": list(argv),
                "config": config,
                "file_mode": stat.S_IMODE(config.stat().st_mode),
                "dir_mode": stat.S_IMODE(config.parent.stat().st_mode),
                "files": sorted(p.name for p in config.parent.iterdir()),
                "mgmt_token": tomllib.loads(config.read_text())["profile"][0].get("mgmt_token"),
            }
        )
        return default_run(argv, timeout)


@dataclass
class Setup:
    fake: FakeInfluxctlFixture
    current: Secret  # the bootstrap token, as the store holds it
    current_id: str
    recorder: Recorder

    def issuer(self, binary: str | None = None, **settings: Any) -> InfluxctlManagementIssuer:
        data = {
            "influxctl": binary or str(self.fake.binary),
            "profile": {"product": "clustered", "host": "influxdb.example.test", "port": 443},
            **settings,
        }
        model = validate_settings(InfluxctlManagementSettings, data)
        return InfluxctlManagementIssuer(model, base_dir=self.fake.workdir, run=self.recorder)

    def record(self, token_id: str) -> dict[str, Any]:
        record = self.fake.state.token_by_id(token_id)
        assert record is not None
        return record


@pytest.fixture
def setup(fake_influxctl: FakeInfluxctlFixture) -> Setup:
    value, token_id = fake_influxctl.state.add_token("bootstrap")
    return Setup(fake_influxctl, Secret(value), token_id, Recorder())


def request(run_id: str = "run-1", expires_at: datetime | None = None) -> MintRequest:
    expires = expires_at or datetime.now(UTC) + timedelta(days=2)
    return MintRequest(policy="p1", run_id=run_id, description=f"rotator:p1:{run_id}", expires_at=expires)


def assert_clean(exc: BaseException, *secrets: Secret | str) -> None:
    text = f"{exc} | {getattr(exc, 'hint', '')} | {exc.__cause__!r}"
    for secret in secrets:
        value = secret.reveal() if isinstance(secret, Secret) else secret
        assert value not in text


# --- mint ----------------------------------------------------------------------------------------


def test_mint_table_output_returns_value_id_and_expiry(setup: Setup) -> None:
    expires = datetime(2031, 5, 6, 7, 8, 9, 999999, tzinfo=UTC)
    minted = setup.issuer().mint(request(expires_at=expires), setup.current)
    record = setup.record(minted.token_id)
    assert record["description"] == "rotator:p1:run-1"
    assert parse_time(record["expires_at"]) == expires.replace(microsecond=0) == minted.expires_at
    assert record["created_by"] == setup.current_id  # minted with the current token (self)
    assert setup.fake.state.is_active(minted.value.reveal())
    assert [c["argv"][7:9] for c in setup.recorder.calls] == [["management", "create"]]  # no list needed


def test_mint_legacy_output_finds_the_id_through_list(setup: Setup) -> None:
    setup.fake.state.set(create_output="legacy")
    minted = setup.issuer().mint(request(), setup.current)
    assert setup.record(minted.token_id)["description"] == "rotator:p1:run-1"
    assert setup.fake.state.is_active(minted.value.reveal())
    assert [c["argv"][7:9] for c in setup.recorder.calls] == [["management", "create"], ["management", "list"]]


def test_mint_legacy_output_after_a_lost_attempt_of_the_same_run(setup: Setup) -> None:
    # An earlier try of this run created a token whose answer was lost: same description.
    _, lost_id = setup.fake.state.add_token("rotator:p1:run-1")
    setup.fake.state.set(create_output="legacy")
    minted = setup.issuer().mint(request(), setup.current)
    assert minted.token_id != lost_id
    assert setup.record(minted.token_id)["token_prefix"] == minted.value.reveal()[:9]


def test_expiry_is_visible_in_list_tokens(setup: Setup) -> None:
    issuer = setup.issuer()
    minted = issuer.mint(request(expires_at=datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)), setup.current)
    [info] = [t for t in issuer.list_tokens(setup.current) if t.token_id == minted.token_id]
    assert info.expires_at == datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert info.revoked_at is None
    assert info.description == "rotator:p1:run-1"


def test_mint_with_a_revoked_credential_is_permanent(setup: Setup) -> None:
    setup.fake.state.revoke(setup.current_id)
    with pytest.raises(PermanentError, match="influxctl management create failed \\(exit 1\\)") as info:
        setup.issuer().mint(request(), setup.current)
    assert "not accepted" in info.value.hint
    assert_clean(info.value, setup.current)
    assert len(setup.fake.state.tokens()) == 1


def test_mgmt_token_that_may_not_manage_is_permanent_on_mint(setup: Setup) -> None:
    setup.fake.state.set(mgmt_token_can_manage=False)
    issuer = setup.issuer()
    with pytest.raises(PermanentError, match="PermissionDenied") as info:
        issuer.mint(request(), setup.current)
    assert "token_file" in info.value.hint
    assert_clean(info.value, setup.current)
    assert [t.token_id for t in issuer.list_tokens(setup.current)] == [setup.current_id]  # listing still works


# --- verify ------------------------------------------------------------------------------------


def test_verify_accepts_an_active_token(setup: Setup) -> None:
    issuer = setup.issuer()
    minted = issuer.mint(request(), setup.current)
    before = len(setup.recorder.calls)
    assert issuer.verify(minted.value) is None
    [call] = setup.recorder.calls[before:]  # one influxctl call, authenticated as the new token
    assert call["argv"][7:] == ["management", "list", "--format", "json"]
    assert call["mgmt_token"] == minted.value.reveal() != setup.current.reveal()
    assert setup.fake.state.calls()[-1]["command"] == "management list"  # the fake answered it
    # The same verify of that token once revoked is refused (transient: see the test below).
    setup.fake.state.revoke(minted.token_id)
    with pytest.raises(TransientError, match="influxctl management list failed"):
        issuer.verify(minted.value)


def test_verify_is_transient_while_the_token_activates_then_passes(setup: Setup) -> None:
    setup.fake.state.set(activation_delay_s=120)
    issuer = setup.issuer()
    minted = issuer.mint(request(), setup.current)
    with pytest.raises(TransientError, match="influxctl management list failed \\(exit 1\\)") as info:
        issuer.verify(minted.value)
    assert_clean(info.value, minted.value, setup.current)
    setup.fake.state.set(clock_offset_s=121)  # two minutes pass on the server
    issuer.verify(minted.value)


def test_verify_of_a_revoked_token_stays_transient(setup: Setup) -> None:
    # The engine's verify deadline, not the adapter, decides when waiting is pointless.
    setup.fake.state.revoke(setup.current_id)
    with pytest.raises(TransientError):
        setup.issuer().verify(setup.current)


# --- revoke and list ---------------------------------------------------------------------------


def test_self_rotation_mint_verify_revoke_old(setup: Setup) -> None:
    issuer = setup.issuer()
    minted = issuer.mint(request(), setup.current)
    issuer.verify(minted.value)
    issuer.revoke(setup.current_id, minted.value)  # the store now holds the new token
    assert setup.record(setup.current_id)["revoked_at"]
    assert not setup.fake.state.is_active(setup.current.reveal())
    assert setup.fake.state.is_active(minted.value.reveal())
    [old] = [t for t in issuer.list_tokens(minted.value) if t.token_id == setup.current_id]
    assert old.revoked_at == parse_time(setup.record(setup.current_id)["revoked_at"])
    assert [c["argv"][7:] for c in setup.recorder.calls[-3:-1]] == [
        ["management", "revoke", "--force", "--", setup.current_id],
        ["management", "list", "--format", "json"],
    ]


def test_revoke_twice_is_fine_and_keeps_the_first_time(setup: Setup) -> None:
    issuer = setup.issuer()
    minted = issuer.mint(request(), setup.current)
    issuer.revoke(minted.token_id, setup.current)
    first = setup.record(minted.token_id)["revoked_at"]
    issuer.revoke(minted.token_id, setup.current)
    assert setup.record(minted.token_id)["revoked_at"] == first


def test_revoke_of_an_unknown_id_is_done_with_a_warning(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    unknown = "99999999-9999-4999-8999-999999999999"
    setup.issuer().revoke(unknown, setup.current)  # the fake answers NotFound, exit 1
    assert f"management token {unknown} is not listed by influxctl; treating it as revoked" in caplog.messages


def test_list_tokens_matches_the_server(setup: Setup) -> None:
    issuer = setup.issuer()
    minted = issuer.mint(request(expires_at=datetime(2031, 1, 1, tzinfo=UTC)), setup.current)
    issuer.revoke(minted.token_id, setup.current)
    infos = {t.token_id: t for t in issuer.list_tokens(setup.current)}
    assert set(infos) == {setup.current_id, minted.token_id}
    for token_id, info in infos.items():
        record = setup.record(token_id)
        assert info.description == record["description"]
        assert info.created_at == parse_time(record["created_at"])
        assert info.expires_at == (parse_time(record["expires_at"]) if record["expires_at"] else None)
        assert info.revoked_at == (parse_time(record["revoked_at"]) if record["revoked_at"] else None)
    assert infos[setup.current_id].is_active(datetime.now(UTC))
    assert not infos[minted.token_id].is_active(datetime.now(UTC))


def test_list_tokens_of_an_empty_account_with_an_admin_token(setup: Setup) -> None:
    setup.fake.state.init(admin_token=ADMIN_TOKEN)  # no management tokens at all: the fake prints null
    (setup.fake.workdir / "token.json").write_text(ADMIN_TOKEN + "\n")
    issuer = setup.issuer(auth={"method": "token_file", "token_file": "token.json"})
    assert issuer.list_tokens(None) == []


# --- other ways to authenticate ----------------------------------------------------------------


def test_token_file_auth_mints_and_revokes_without_a_current_token(setup: Setup) -> None:
    setup.fake.state.set(admin_token=ADMIN_TOKEN, mgmt_token_can_manage=False)
    (setup.fake.workdir / "token.json").write_text(ADMIN_TOKEN + "\n")
    issuer = setup.issuer(auth={"method": "token_file", "token_file": "token.json"})
    minted = issuer.mint(request(), None)
    assert setup.record(minted.token_id)["created_by"] not in (setup.current_id, minted.token_id)
    issuer.verify(minted.value)  # verify always uses the new token itself
    issuer.revoke(setup.current_id, minted.value)
    assert setup.record(setup.current_id)["revoked_at"]


def test_token_file_with_the_wrong_admin_token_is_permanent(setup: Setup) -> None:
    setup.fake.state.set(admin_token=ADMIN_TOKEN)
    (setup.fake.workdir / "token.json").write_text("not-the-admin-token-0123456789\n")
    issuer = setup.issuer(auth={"method": "token_file", "token_file": "token.json"})
    with pytest.raises(PermanentError, match="Unauthenticated"):
        issuer.mint(request(), setup.current)


def test_separate_mgmt_token_ignores_the_published_credential(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    manager, manager_id = setup.fake.state.add_token("automation manager")
    monkeypatch.setenv("ROTATOR_TEST_MGMT", manager)
    issuer = setup.issuer(auth={"method": "mgmt_token", "token": {"env": "ROTATOR_TEST_MGMT"}})
    minted = issuer.mint(request(), None)
    assert setup.record(minted.token_id)["created_by"] == manager_id
    issuer.revoke(setup.current_id, Secret("M.V1.not-a-valid-token-at-all-0000000000"))
    assert setup.record(setup.current_id)["revoked_at"]


def test_separate_mgmt_token_from_a_file(setup: Setup) -> None:
    manager, manager_id = setup.fake.state.add_token("automation manager")
    (setup.fake.workdir / "mgmt.token").write_text(manager + "\n")
    issuer = setup.issuer(auth={"method": "mgmt_token", "token": {"file": "mgmt.token"}})
    assert setup.record(issuer.mint(request(), None).token_id)["created_by"] == manager_id


def test_dedicated_profile_with_tls_is_accepted_by_influxctl(setup: Setup) -> None:
    model = validate_settings(
        InfluxctlManagementSettings,
        {
            "influxctl": str(setup.fake.binary),
            "profile": {
                "product": "dedicated",
                "account_id": setup.fake.state.account_id,
                "cluster_id": setup.fake.state.cluster_id,
                "tls": {"insecure": True, "ca": "ca.pem"},
            },
        },
    )
    issuer = InfluxctlManagementIssuer.from_config(model, AdapterContext(policy="p1", base_dir=setup.fake.workdir))
    assert [t.token_id for t in issuer.list_tokens(setup.current)] == [setup.current_id]


def test_a_bare_binary_name_is_found_on_path(setup: Setup) -> None:
    model = InfluxctlManagementSettings(profile=ProfileSettings(product="clustered", host="h"))
    assert model.influxctl == "influxctl"  # the fixture put the fake first on PATH
    issuer = InfluxctlManagementIssuer.from_config(model, AdapterContext(policy="p1"))
    issuer.verify(setup.current)


def test_a_missing_binary_is_a_config_error(setup: Setup) -> None:
    with pytest.raises(ConfigError, match="cannot run influxctl binary") as info:
        setup.issuer(binary="/nonexistent/influxctl").list_tokens(setup.current)
    assert 'influxctl = "/path/to/influxctl"' in info.value.hint


# --- faults --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "fault", "error", "tokens_after"),
    [
        ("connection refused before create", {"mode": "exit"}, TransientError, 1),
        (
            "server error",
            {"mode": "exit", "message": "Error: rpc error: code = Internal desc = boom"},
            TransientError,  # the outcome is unknown: the engine searches the run's tag before trying again
            1,
        ),
        ("proxy page instead of a token", {"mode": "garbage"}, IssuerOutputError, 1),
        ("exit 0 with a short word", {"mode": "garbage", "output": "OK\n"}, IssuerOutputError, 1),
        ("connection reset after the token was made", {"mode": "after_effect_exit"}, TransientError, 2),
    ],
)
def test_mint_faults(
    setup: Setup, reason: str, fault: dict[str, Any], error: type[RotatorError], tokens_after: int
) -> None:
    setup.fake.state.add_fault("management create", **fault)
    with pytest.raises(RotatorError) as info:
        setup.issuer().mint(request(), setup.current)
    assert type(info.value) is error
    assert str(info.value).startswith("influxctl management create")
    assert_clean(info.value, setup.current)
    records = setup.fake.state.tokens()
    assert len(records) == tokens_after
    if tokens_after == 2:  # the orphan is findable by its description
        assert records[1]["description"] == "rotator:p1:run-1"


def test_mint_that_hangs_times_out_and_the_child_is_killed(setup: Setup) -> None:
    setup.fake.state.add_fault("management create", "hang", seconds=30)
    issuer = setup.issuer(timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(TransientError, match="^influxctl management create did not finish within 0.5s$"):
        issuer.mint(request(), setup.current)
    assert time.monotonic() - started < 5
    [call] = setup.fake.state.calls()
    with pytest.raises(ProcessLookupError):
        os.kill(call["pid"], 0)
    assert len(setup.fake.state.tokens()) == 1
    assert not setup.recorder.calls[0]["config"].parent.exists()


def test_list_garbage_is_an_output_error(setup: Setup) -> None:
    setup.fake.state.add_fault("management list", "garbage")
    with pytest.raises(IssuerOutputError, match="^influxctl management list: stdout is not JSON"):
        setup.issuer().list_tokens(setup.current)


def test_verify_when_the_cluster_is_down_is_transient(setup: Setup) -> None:
    setup.fake.state.add_fault("management list", "exit")
    with pytest.raises(TransientError, match="connection refused") as info:
        setup.issuer().verify(setup.current)
    assert_clean(info.value, setup.current)


def test_revoke_that_fails_after_taking_effect_is_fine(setup: Setup) -> None:
    issuer = setup.issuer()
    minted = issuer.mint(request(), setup.current)
    setup.fake.state.add_fault("management revoke", "after_effect_exit")
    issuer.revoke(setup.current_id, minted.value)
    assert setup.record(setup.current_id)["revoked_at"]


def test_revoke_that_fails_before_taking_effect_is_transient(setup: Setup) -> None:
    setup.fake.state.add_fault("management revoke", "exit")
    with pytest.raises(TransientError, match="influxctl management revoke failed") as info:
        setup.issuer().revoke(setup.current_id, setup.current)
    assert_clean(info.value, setup.current)
    assert not setup.record(setup.current_id)["revoked_at"]


def test_revoke_whose_confirmation_list_hangs_is_transient(setup: Setup) -> None:
    setup.fake.state.add_fault("management list", "hang", seconds=30)
    with pytest.raises(TransientError, match="influxctl management list did not finish"):
        setup.issuer(timeout_s=0.5).revoke(setup.current_id, setup.current)
    assert setup.record(setup.current_id)["revoked_at"]  # the revoke itself went through


# --- the private config, argv and environment --------------------------------------------------


def test_each_call_has_its_own_private_config_removed_afterwards(setup: Setup) -> None:
    issuer = setup.issuer()
    minted = issuer.mint(request(), setup.current)
    issuer.verify(minted.value)
    issuer.revoke(setup.current_id, minted.value)
    setup.fake.state.add_fault("management list", "exit", message="Error: rpc error: code = Internal desc = x")
    with pytest.raises(TransientError):
        issuer.list_tokens(minted.value)
    calls = setup.recorder.calls
    assert len(calls) == 5
    assert len({call["config"] for call in calls}) == 5
    for call in calls:
        assert (call["file_mode"], call["dir_mode"]) == (0o600, 0o700)
        # the lock says "my process is alive"; cwd, empty, is where influxctl runs
        assert call["files"] == ["config.toml", "cwd", "lock"]
        assert not call["config"].parent.exists()


def child_spy(tmp_path: Path, fake: FakeInfluxctlFixture) -> tuple[Path, Path]:
    """An ``influxctl`` that records its own argv and environment, then execs the fake."""
    log_dir = tmp_path / "spy"
    log_dir.mkdir()
    spy = tmp_path / "influxctl-spy"
    spy.write_text(
        "#!/bin/sh\n"
        f'cat /proc/$$/environ > "{log_dir}/env.$$"\n'
        f'printf "%s\\n" "$0" "$@" > "{log_dir}/argv.$$"\n'
        f'exec "{fake.binary}" "$@"\n'
    )
    spy.chmod(0o700)
    return spy, log_dir


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_no_token_in_the_childs_argv_or_environment(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager, _ = setup.fake.state.add_token("automation manager")
    monkeypatch.setenv("ROTATOR_TEST_MGMT", manager)  # rotator's own environment holds this one
    monkeypatch.setenv("INFLUXCTL_PROFILE", "default")  # would redirect influxctl to another profile
    planted = {  # credentials of rotator's other duties (issue 11.4): influxctl has no use for them
        "VAULT_TOKEN": "hvs.planted-vault-token",
        "AWS_SECRET_ACCESS_KEY": "planted-aws-secret",
        "AWS_SESSION_TOKEN": "planted-aws-session",
        "PGPASSWORD": "planted-pg-password",
    }
    for key, value in planted.items():
        monkeypatch.setenv(key, value)
    spy, log_dir = child_spy(tmp_path, setup.fake)
    self_auth = setup.issuer(binary=str(spy))
    minted = self_auth.mint(request(), setup.current)
    self_auth.verify(minted.value)
    self_auth.revoke(setup.current_id, minted.value)
    self_auth.list_tokens(minted.value)

    argvs = sorted(log_dir.glob("argv.*"))
    envs = sorted(log_dir.glob("env.*"))
    assert len(argvs) == len(envs) == 5
    for path in argvs + envs:
        content = path.read_bytes()
        for secret in (setup.current, minted.value):
            assert secret.reveal().encode() not in content, path.name
    for path in envs:
        names = {item.split(b"=", 1)[0] for item in path.read_bytes().split(b"\0") if item}
        assert b"FAKE_INFLUXCTL_STATE" in names  # named in $ROTATOR_INFLUXCTL_ENV (the fixture sets it)
        assert b"PATH" in names and b"INFLUXCTL_PROFILE" not in names  # the allow-list, no influxctl variable
        assert not {key.encode() for key in planted} & names, "a credential reached influxctl's environment"
        assert b"ROTATOR_TEST_MGMT" not in names
        for value in planted.values():
            assert value.encode() not in path.read_bytes()
    for call in setup.fake.state.calls():  # the argv influxctl itself parsed
        assert setup.current.reveal() not in " ".join(call["argv"])
        assert minted.value.reveal() not in " ".join(call["argv"])
        assert call["profile"] == "rotator"


def test_minted_tokens_are_secrets(setup: Setup) -> None:
    minted = setup.issuer().mint(request(), setup.current)
    assert isinstance(minted, MintedToken)
    assert minted.value.reveal() not in repr(minted)


def test_issuer_satisfies_the_protocol(setup: Setup) -> None:
    from rotator.core.contracts import Issuer

    issuer = setup.issuer()
    assert isinstance(issuer, Issuer)
    assert InfluxctlManagementIssuer.kind == "influxctl-management"
    assert InfluxctlManagementIssuer.settings_model is InfluxctlManagementSettings
