"""Tests of the fake influxctl itself, run as a subprocess exactly as an adapter runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.sandbox.influxctl_state import hash_token, write_profile
from tests.fakes.fixtures import FakeInfluxctlFixture

TOKEN_RE = re.compile(r"M\.V1\.[A-Za-z0-9+/]{43}")
UNAUTHENTICATED = "Error: rpc error: code = Unauthenticated desc = unauthorized\n"
WARNINGS = (
    "warn\tplease copy the token and store in a safe place\nwarn\tthis is the *only time* you will see the token\n"
)


@dataclass(frozen=True)
class Booted:
    """A fake server with one human-made management token and a profile that uses it."""

    fake: FakeInfluxctlFixture
    token: str
    token_id: str
    config: Path

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.fake.run("--config", str(self.config), *args, input=input)

    def create(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("management", "create", *args)

    def list_json(self) -> list[dict[str, Any]]:
        done = self.run("management", "list", "--format", "json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) or []


@pytest.fixture
def booted(fake_influxctl: FakeInfluxctlFixture) -> Booted:
    value, token_id = fake_influxctl.state.add_token("bootstrap")
    return Booted(fake_influxctl, value, token_id, fake_influxctl.profile(mgmt_token=value))


def last_line(text: str) -> str:
    return text.rstrip("\n").rsplit("\n", 1)[-1]


def revoked_at(booted: Booted, token_id: str) -> str | None:
    record = booted.fake.state.token_by_id(token_id)
    assert record is not None
    return str(record["revoked_at"]) if record["revoked_at"] else None


def wait_for(path: Path, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


# --- global flags and commands ------------------------------------------------------------------


def test_version_command_and_flag(fake_influxctl: FakeInfluxctlFixture) -> None:
    for args in (["version"], ["--version"]):
        done = fake_influxctl.run(*args)
        assert done.returncode == 0
        assert done.stdout.startswith("influxctl 2.12.1 ")
        assert "SIMULATOR from rotator.sandbox, not the real CLI" in done.stdout  # never mistaken for influxctl


def test_help_says_it_is_a_simulator(fake_influxctl: FakeInfluxctlFixture) -> None:
    done = fake_influxctl.run("--help")
    assert done.returncode == 0
    assert "(SIMULATOR: rotator.sandbox," in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["databse", "list"], "No help topic for 'databse'"),
        (["management", "get"], "No help topic for 'get'"),
    ],
)
def test_usage_errors_exit_1_on_stderr(fake_influxctl: FakeInfluxctlFixture, args: list[str], message: str) -> None:
    done = fake_influxctl.run(*args)
    assert (done.returncode, done.stdout) == (1, "")
    assert message in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-x", "management", "list"], "flag provided but not defined: -x"),
        (["management", "list", "--bogus"], "flag provided but not defined: -bogus"),
        # Global flags go before the command.
        (["management", "list", "--config", "c.toml"], "flag provided but not defined: -config"),
        (["--timeout", "soon", "version"], 'invalid value "soon" for flag -timeout: parse error'),
    ],
)
def test_flags_it_cannot_parse_are_incorrect_usage_on_stdout_as_urfave_cli_writes_it(
        fake_influxctl: FakeInfluxctlFixture, args: list[str], message: str) -> None:
    """urfave/cli v2 writes "Incorrect Usage: <error>", a blank line and the help to its App.Writer (stdout)."""
    done = fake_influxctl.run(*args)
    assert done.returncode == 1
    assert done.stdout.startswith(f"Incorrect Usage: {message}\n\n") and "USAGE:" in done.stdout
    assert done.stderr == f"Error: {message}\n"


def test_global_flags_are_accepted(booted: Booted) -> None:
    done = booted.fake.run(
        "--config",
        str(booted.config),
        "--timeout",
        "1m0s",
        "--debug",
        "--trace",
        "--account",
        "a",
        "--cluster",
        "c",
        "management",
        "list",
    )
    assert done.returncode == 0, done.stderr
    assert "debug\t" in done.stderr
    assert booted.token not in done.stdout + done.stderr


def test_runs_on_the_standard_library_alone(booted: Booted) -> None:
    # -I -S: no site-packages, no user site, no PYTHON* variables; the whole create path.
    python = os.path.realpath(sys.executable)
    argv = [python, "-I", "-S", str(booted.fake.binary), "--config", str(booted.config), "management", "create"]
    done = subprocess.run(argv, env=booted.fake.env, capture_output=True, text=True, timeout=10, check=False)
    assert done.returncode == 0, done.stderr
    assert TOKEN_RE.fullmatch(last_line(done.stdout))


def test_calls_are_recorded(booted: Booted) -> None:
    booted.run("management", "list")
    [call] = booted.fake.state.calls()
    assert call["argv"] == ["--config", str(booted.config), "management", "list"]
    assert (call["command"], call["profile"]) == ("management list", "default")


# --- management create --------------------------------------------------------------------------


def test_create_prints_table_then_token_last(booted: Booted) -> None:
    done = booted.create("--description", "rot 1", "--expires-at", "2099-01-01T00:00:00Z")
    assert done.returncode == 0, done.stderr
    *table, token = done.stdout.rstrip("\n").split("\n")
    record = booted.fake.state.tokens()[-1]
    assert table == [
        "+-------------+--------------------------------------+",
        f"|          id | {record['id']} |",
        "| description | rot 1                                |",
        "|  expires at | 2099-01-01T00:00:00Z                 |",
        "|  revoked at |                                      |",
        "+-------------+--------------------------------------+",
    ]
    assert done.stderr == WARNINGS
    assert TOKEN_RE.fullmatch(token)
    assert record["token_sha256"] == hash_token(token)
    assert record["token_prefix"] == token[:9]
    assert record["created_by"] == booted.token_id
    assert token not in booted.fake.state.path.read_text()
    assert booted.fake.state.is_active(token)


def test_create_legacy_output_is_only_the_token(booted: Booted) -> None:
    booted.fake.state.set(create_output="legacy")
    done = booted.create("--description", "rot")
    assert done.returncode == 0
    assert TOKEN_RE.fullmatch(done.stdout.rstrip("\n"))
    assert done.stderr == WARNINGS


def test_create_json_has_record_without_token_then_token(booted: Booted) -> None:
    done = booted.create("--description", "rot", "--format", "json")
    assert done.returncode == 0
    body, token = done.stdout.rstrip("\n").rsplit("\n", 1)
    created = json.loads(body)
    assert TOKEN_RE.fullmatch(token)
    assert token not in body
    assert list(created) == ["id", "account_id", "token_prefix", "created_at", "description", "created_by"]
    assert created["token_prefix"] == token[:9]


def test_create_without_description_is_allowed_but_blank_is_not(booted: Booted) -> None:
    assert booted.create().returncode == 0
    blank = booted.create("--description", " ")
    assert blank.returncode == 1
    assert "non-empty" in blank.stderr
    assert len(booted.fake.state.tokens()) == 2


@pytest.mark.parametrize(
    ("expires_at", "message"),
    [
        ("2099-01-01T00:00:00+0000", 'cannot parse "+0000" as "Z07:00"'),
        ("2099-01-01", 'cannot parse "" as "T"'),
        ("2099-13-01T00:00:00Z", "out of range"),
        ("2000-01-01T00:00:00Z", "InvalidArgument desc = expires_at must be in the future"),
    ],
)
def test_create_rejects_bad_expiry(booted: Booted, expires_at: str, message: str) -> None:
    done = booted.create("--expires-at", expires_at)
    assert (done.returncode, done.stdout) == (1, "")
    assert message in done.stderr
    assert len(booted.fake.state.tokens()) == 1


def test_create_expiry_with_offset_is_stored_in_utc(booted: Booted) -> None:
    assert booted.create("--expires-at", "2099-01-01T02:00:00.5+02:00").returncode == 0
    assert booted.fake.state.tokens()[-1]["expires_at"] == "2099-01-01T00:00:00.500000Z"


# --- management list ----------------------------------------------------------------------------


def test_list_json_has_the_documented_shape(booted: Booted) -> None:
    state = booted.fake.state
    _, expiring = state.add_token("expiring", expires_at=datetime(2099, 1, 1, tzinfo=UTC))
    state.revoke(expiring)
    listed = {t["id"]: t for t in booted.list_json()}
    bootstrap, revoked = listed[booted.token_id], listed[expiring]
    assert list(bootstrap) == ["id", "account_id", "token_prefix", "created_at", "description", "created_by"]
    assert list(revoked) == [
        "id",
        "account_id",
        "token_prefix",
        "expires_at",
        "revoked_at",
        "created_at",
        "description",
        "created_by",
    ]
    assert revoked["expires_at"] == {"seconds": 4070908800}  # nanos omitted when 0
    assert set(revoked["created_at"]) <= {"seconds", "nanos"}
    assert bootstrap["account_id"] == state.account_id


def test_list_json_of_no_tokens_is_null(fake_influxctl: FakeInfluxctlFixture) -> None:
    # A Go nil slice through encoding/json; the Clustered admin token is not a management token.
    fake_influxctl.state.set(admin_token="admin-secret")
    (fake_influxctl.workdir / "token.json").write_text("admin-secret\n")
    config = fake_influxctl.profile(token_file=fake_influxctl.workdir / "token.json")
    done = fake_influxctl.run("--config", str(config), "management", "list", "--format", "json")
    assert (done.returncode, done.stdout) == (0, "null\n")


def test_list_table_prints_unset_times_as_epoch(booted: Booted) -> None:
    done = booted.run("management", "list")
    assert done.returncode == 0
    border, header, _, row, bottom = done.stdout.rstrip("\n").split("\n")
    assert re.fullmatch(r"\| ID +\| DESCRIPTION \| PREFIX +\| CREATED AT +\| EXPIRES AT +\| REVOKED AT +\|", header)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:3] == [booted.token_id, "bootstrap", booted.token[:9]]
    assert cells[4:] == ["1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z"]
    assert border == bottom and set(border) == {"+", "-"}
    assert booted.token not in done.stdout


def test_list_sorts_by_description(booted: Booted) -> None:
    booted.fake.state.add_token("aaa")
    done = booted.run("management", "list", "--format", "json", "--sort", "description")
    assert [t["description"] for t in json.loads(done.stdout)] == ["aaa", "bootstrap"]
    assert booted.run("management", "list", "--sort", "size").returncode == 1


# --- management revoke --------------------------------------------------------------------------


def test_revoke_force_keeps_the_token_listed(booted: Booted) -> None:
    _, other = booted.fake.state.add_token("other")
    done = booted.run("management", "revoke", "--force", other)
    assert done.returncode == 0, done.stderr
    [listed] = [t for t in booted.list_json() if t["id"] == other]
    assert "revoked_at" in listed


def test_revoke_prompts_and_fails_without_an_answer(booted: Booted) -> None:
    _, other = booted.fake.state.add_token("other")
    done = booted.run("management", "revoke", other)
    assert done.returncode == 1
    assert "Confirm that you want to delete the token" in done.stdout
    assert "EOF" in done.stderr
    assert revoked_at(booted, other) is None
    assert booted.run("management", "revoke", other, input="y\n").returncode == 0
    assert revoked_at(booted, other) is not None


def test_revoke_continues_past_unknown_ids(booted: Booted) -> None:
    _, other = booted.fake.state.add_token("other")
    unknown = "11111111-1111-4111-8111-111111111111"
    done = booted.run("management", "revoke", "--force", unknown, other)
    assert done.returncode == 1
    assert f'"{unknown}": rpc error: code = NotFound' in done.stderr
    assert revoked_at(booted, other) is not None


def test_revoke_twice_is_idempotent(booted: Booted) -> None:
    _, other = booted.fake.state.add_token("other")
    booted.run("management", "revoke", "--force", other)
    first = booted.fake.state.token_by_id(other)
    assert booted.run("management", "revoke", "--force", other).returncode == 0
    assert booted.fake.state.token_by_id(other) == first


def test_revoke_flag_after_an_id_is_an_id(booted: Booted) -> None:
    _, other = booted.fake.state.add_token("other")
    done = booted.run("management", "revoke", other, "--force", input="y\n")
    assert done.returncode == 1
    assert '"--force": rpc error: code = InvalidArgument' in done.stderr


def test_self_revoke_locks_the_caller_out(booted: Booted) -> None:
    assert booted.run("management", "revoke", "--force", booted.token_id).returncode == 0
    assert booted.run("management", "list").stderr == UNAUTHENTICATED


# --- config file --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ('client_secret = "x"\n', "profile.client_secret"),
        ("[profile.tls]\nverify = true\n", "profile.tls.verify"),
        ('[profile.auth.basic]\nuser = "u"\n', "profile.auth.basic"),
    ],
)
def test_unknown_config_keys_are_fatal(booted: Booted, extra: str, key: str) -> None:
    booted.config.write_text(booted.config.read_text() + extra)
    done = booted.run("management", "list")
    assert done.returncode == 1
    assert f'unrecognized configuration option "{key}"' in done.stderr


def test_top_level_unknown_key_and_wrong_type_are_fatal(booted: Booted) -> None:
    text = booted.config.read_text()
    booted.config.write_text("debug = true\n" + text)
    assert 'option "debug"' in booted.run("management", "list").stderr
    booted.config.write_text(text.replace('port = "443"', "port = 443"))
    assert 'key "profile.port": incompatible types' in booted.run("management", "list").stderr


def test_profile_selection(booted: Booted) -> None:
    write_profile(booted.config, name="other", mgmt_token="M.V1.unknown", append=True)
    env = {**booted.fake.env, "INFLUXCTL_PROFILE": "other"}
    by_env = booted.fake.run("--config", str(booted.config), "management", "list", env=env)
    assert by_env.stderr == UNAUTHENTICATED
    by_flag = booted.fake.run("--config", str(booted.config), "--profile", "default", "management", "list", env=env)
    assert by_flag.returncode == 0
    missing = booted.run("--profile", "nope", "management", "list")
    assert 'profile "nope" not found' in missing.stderr


def test_default_config_path_is_under_xdg_config_home(booted: Booted) -> None:
    default = Path(booted.fake.env["XDG_CONFIG_HOME"], "influxctl", "config.toml")
    assert "no such file" in booted.fake.run("management", "list").stderr
    default.parent.mkdir(parents=True)
    default.write_text(booted.config.read_text())
    assert booted.fake.run("management", "list").returncode == 0


def test_product_requirements(booted: Booted) -> None:
    booted.config.write_text(booted.config.read_text().replace('host = "influxdb.example.test"', ""))
    assert "host is required" in booted.run("management", "list").stderr
    write_profile(booted.config, product="dedicated", mgmt_token=booted.token, account_id="")
    assert "account_id is required" in booted.run("management", "list").stderr
    assert booted.run("--account", booted.fake.state.account_id, "management", "list").returncode == 0


# --- authentication -----------------------------------------------------------------------------


@pytest.mark.parametrize("problem", ["revoked", "expired", "unknown"])
def test_bad_mgmt_token_is_unauthenticated(booted: Booted, problem: str) -> None:
    state = booted.fake.state
    if problem == "revoked":
        state.revoke(booted.token_id)
    elif problem == "expired":
        value, _ = state.add_token("short", expires_at=datetime.now(UTC) - timedelta(seconds=1))
        booted.fake.profile(booted.config, mgmt_token=value)
    else:
        booted.fake.profile(booted.config, mgmt_token="M.V1." + "A" * 43)
    before = state.tokens()
    for command in ("list", "create"):
        done = booted.run("management", command)
        assert (done.returncode, done.stdout, done.stderr) == (1, "", UNAUTHENTICATED)
    assert state.tokens() == before


def test_admin_token_file_authenticates(fake_influxctl: FakeInfluxctlFixture) -> None:
    fake_influxctl.state.set(admin_token="admin-secret")
    token_file = fake_influxctl.workdir / "token.json"
    config = fake_influxctl.profile(token_file=token_file)
    token_file.write_text("wrong\n")
    assert fake_influxctl.run("--config", str(config), "management", "create").stderr == UNAUTHENTICATED
    token_file.write_text("admin-secret\n")
    done = fake_influxctl.run("--config", str(config), "management", "create", "--description", "first")
    assert done.returncode == 0
    assert fake_influxctl.state.is_active(last_line(done.stdout))


def test_oauth2_profile_needs_a_login(fake_influxctl: FakeInfluxctlFixture) -> None:
    config = fake_influxctl.profile(oauth2=True)
    done = fake_influxctl.run("--config", str(config), "management", "list")
    assert done.returncode == 1
    assert "login required" in done.stderr


def test_mgmt_token_that_cannot_manage_may_only_list(booted: Booted) -> None:
    booted.fake.state.set(mgmt_token_can_manage=False)
    assert booted.run("management", "list").returncode == 0
    for args in (["create"], ["revoke", "--force", booted.token_id]):
        done = booted.run("management", *args)
        assert done.returncode == 1
        assert "code = PermissionDenied" in done.stderr
    assert booted.fake.state.is_active(booted.token)


def test_new_token_is_unauthorized_until_the_activation_delay(booted: Booted) -> None:
    # Long enough that a loaded machine still runs the first `list` inside the delay.
    booted.fake.state.set(activation_delay_s=3)
    new = last_line(booted.create("--description", "next").stdout)
    booted.fake.profile(booted.config, mgmt_token=new)
    assert booted.fake.state.problem(new) == "token not active yet"
    assert booted.run("management", "list").stderr == UNAUTHENTICATED
    time.sleep(3)
    assert booted.run("management", "list").returncode == 0


# --- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["create", "list", "revoke"])
def test_fault_exit_has_no_side_effect(booted: Booted, command: str) -> None:
    booted.fake.state.add_fault(f"management {command}", "exit", code=7, message="boom")
    args = ["revoke", "--force", booted.token_id] if command == "revoke" else [command]
    done = booted.run("management", *args)
    assert (done.returncode, done.stdout, done.stderr) == (7, "", "boom\n")
    assert booted.fake.state.tokens()[0]["revoked_at"] is None
    assert len(booted.fake.state.tokens()) == 1
    assert booted.fake.state.faults() == []
    assert booted.run("management", *args).returncode == 0  # times=1: used up


def test_fault_garbage_exits_0_without_a_token(booted: Booted) -> None:
    booted.fake.state.add_fault("management create", "garbage")
    done = booted.create("--description", "rot")
    assert done.returncode == 0
    assert not TOKEN_RE.search(done.stdout)
    assert len(booted.fake.state.tokens()) == 1


def test_fault_hang_then_proceeds_and_counts_down(booted: Booted) -> None:
    booted.fake.state.add_fault("management list", "hang", seconds=0.3, times=2)
    started = time.monotonic()
    assert booted.run("management", "list").returncode == 0
    assert time.monotonic() - started >= 0.3
    assert booted.fake.state.faults()[0]["times"] == 1


def test_fault_forever_does_not_count_down(booted: Booted) -> None:
    booted.fake.state.add_fault("management list", "exit", times=-1)
    for _ in range(2):
        assert booted.run("management", "list").returncode == 1
    assert booted.fake.state.faults()[0]["times"] == -1


def test_fault_after_effect_exit_mints_without_printing(booted: Booted) -> None:
    booted.fake.state.add_fault("management create", "after_effect_exit")
    done = booted.create("--description", "lost")
    assert (done.returncode, done.stdout) == (1, "")
    assert "code = Unavailable" in done.stderr
    assert booted.fake.state.tokens()[-1]["description"] == "lost"


@pytest.mark.parametrize(("mode", "minted"), [("pause", False), ("pause_after_effect", True)])
def test_fault_pause_lets_a_test_kill_the_caller(booted: Booted, mode: str, minted: bool) -> None:
    marker = booted.fake.workdir / "paused"
    booted.fake.state.add_fault("management create", mode, marker=marker, seconds=30)
    proc = subprocess.Popen(
        [str(booted.fake.binary), "--config", str(booted.config), "management", "create"],
        env=booted.fake.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(marker)
    assert marker.read_text() == str(proc.pid)
    proc.kill()
    stdout, _ = proc.communicate(timeout=5)
    assert not TOKEN_RE.search(stdout)
    assert len(booted.fake.state.tokens()) == (2 if minted else 1)


# --- concurrency --------------------------------------------------------------------------------


def test_concurrent_creates_are_both_recorded(booted: Booted) -> None:
    # Both processes pause inside the command at the same time, then mint.
    marker = booted.fake.workdir / "paused"
    booted.fake.state.add_fault("management create", "pause", marker=marker, seconds=0.3, times=2)
    argv = [str(booted.fake.binary), "--config", str(booted.config), "management", "create"]
    procs = [
        subprocess.Popen(argv, env=booted.fake.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    tokens = {last_line(p.communicate(timeout=10)[0]) for p in procs}
    assert [p.returncode for p in procs] == [0, 0]
    assert len(tokens) == 2
    assert all(booted.fake.state.is_active(t) for t in tokens)
    assert len(booted.fake.state.tokens()) == 3
