"""Tests of the fake influxctl's database-token commands (``token ...``) and ``query``.

Run as a subprocess exactly as an adapter runs it. The management commands are covered by
tests/sandbox/test_fake_influxctl.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.sandbox.influxctl_state import hash_token
from tests.fakes.fixtures import FakeInfluxctlFixture

DB_TOKEN_RE = re.compile(r"apiv1_[A-Za-z0-9+/]{86}")
UNAUTHENTICATED = "Error: rpc error: code = Unauthenticated desc = unauthorized\n"
PERMISSION_DENIED = "Error: rpc error: code = PermissionDenied desc = permission denied\n"
NOT_FOUND = "Error: rpc error: code = NotFound desc = database token not found\n"
WARNINGS = (
    "warn\tplease copy the token and store in a safe place\nwarn\tthis is the *only time* you will see the token\n"
)


@dataclass(frozen=True)
class Booted:
    """A fake server with a human-made management token and a profile that uses it."""

    fake: FakeInfluxctlFixture
    mgmt: str
    config: Path

    def run(self, *args: str, input: str | None = None, config: Path | None = None) -> subprocess.CompletedProcess[str]:
        return self.fake.run("--config", str(config or self.config), *args, input=input)

    def token(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("token", *args)

    def create(self, *args: str) -> tuple[str, str]:
        """``token create ARGS`` that must succeed; returns ``(value, id)``."""
        done = self.token("create", *args)
        assert done.returncode == 0, done.stderr
        value = last_line(done.stdout)
        record = self.by_value(value)
        return value, str(record["id"])

    def by_value(self, value: str) -> dict[str, Any]:
        digest = hash_token(value)
        [record] = [t for t in self.fake.state.db_tokens() if t["token_sha256"] == digest]
        return record

    def list_json(self, *flags: str) -> list[dict[str, Any]]:
        done = self.token("list", "--format", "json", *flags)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) or []

    def query_profile(self, token: str | None = None, database: str | None = None, name: str = "q") -> Path:
        """A profile with only the data-plane keys ``token`` and ``database`` (no management credential)."""
        path = self.fake.workdir / f"{name}.toml"
        lines = ["[[profile]]", 'name = "default"', 'product = "clustered"', 'host = "influxdb.example.test"']
        if token is not None:
            lines.append(f"token = {json.dumps(token)}")
        if database is not None:
            lines.append(f"database = {json.dumps(database)}")
        path.write_text("\n".join(lines) + "\n")
        return path

    def query(self, token: str, *args: str, database: str = "db1") -> subprocess.CompletedProcess[str]:
        config = self.query_profile(token=token)
        return self.run("query", "--database", database, *args, config=config)


@pytest.fixture
def booted(fake_influxctl: FakeInfluxctlFixture) -> Booted:
    value, _ = fake_influxctl.state.add_token("automation")
    return Booted(fake_influxctl, value, fake_influxctl.profile(mgmt_token=value))


def last_line(text: str) -> str:
    return text.rstrip("\n").rsplit("\n", 1)[-1]


def wait_for(path: Path, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


# --- help and dispatch ---------------------------------------------------------------------------


def test_help_lists_the_token_and_query_commands(fake_influxctl: FakeInfluxctlFixture) -> None:
    done = fake_influxctl.run("help")
    assert done.returncode == 0
    assert "token       Manage database tokens" in done.stdout
    assert "query       Query data" in done.stdout
    token_help = fake_influxctl.run("token")
    assert token_help.returncode == 0
    assert "revoke, delete  Revoke a database token" in token_help.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["token", "rotate"], "No help topic for 'rotate'"),
        (["token", "get"], "expected exactly one TOKEN_ID argument, got 0"),
        (["token", "create"], "a TOKEN_DESCRIPTION argument is required"),
        (["token", "create", "read", "only"], "expected one TOKEN_DESCRIPTION argument, got 2"),
        (["token", "revoke", "--force"], "at least one token ID is required"),
        (["query"], "expected exactly one QUERY argument, got 0"),
    ],
)
def test_usage_errors(booted: Booted, args: list[str], message: str) -> None:
    done = booted.run(*args)
    assert (done.returncode, done.stdout) == (1, "")
    assert message in done.stderr


def test_an_unknown_flag_is_incorrect_usage_on_stdout(booted: Booted) -> None:
    done = booted.run("token", "list", "--all")
    assert done.returncode == 1 and done.stderr == "Error: flag provided but not defined: -all\n"
    assert done.stdout.startswith("Incorrect Usage: flag provided but not defined: -all\n\nUSAGE:")


# --- token create --------------------------------------------------------------------------------


def test_create_prints_table_then_token_last(booted: Booted) -> None:
    done = booted.token(
        "create", "--read-database", "db1", "--write-database", "db1", "--expires-at", "2099-01-01T00:00:00Z", "rw db1"
    )
    assert done.returncode == 0, done.stderr
    *table, token = done.stdout.rstrip("\n").split("\n")
    assert DB_TOKEN_RE.fullmatch(token), "apiv1_ + 86 base64 characters"
    record = booted.by_value(token)
    assert table == [
        "+-------------+--------------------------------------+",
        f"|          id | {record['id']} |",
        "| description | rw db1                               |",
        "|  expires at | 2099-01-01T00:00:00Z                 |",
        "|  revoked at |                                      |",
        "+-------------+--------------------------------------+",
    ]
    assert done.stderr == WARNINGS
    assert [(p["action"], p["resource"]) for p in record["permissions"]] == [("read", "db1"), ("write", "db1")]
    assert record["expires_at"].startswith("2099-01-01T00:00:00")
    assert record["cluster_id"] == booted.fake.state.cluster_id
    assert token not in booted.fake.state.path.read_text()
    assert booted.fake.state.db_is_active(token)
    # A separate kind: the management list does not show it, the token list does not show management tokens.
    assert all(t["id"] != record["id"] for t in booted.fake.state.tokens())
    assert [t["id"] for t in booted.list_json()] == [record["id"]]


def test_create_flags_repeat_and_accept_the_wildcard(booted: Booted) -> None:
    _, token_id = booted.create(
        "--read-database=db1", "--read-database", "*", "--read-database", "db1", "--write-database", "db2", "mixed"
    )
    record = booted.fake.state.db_token_by_id(token_id)
    assert record is not None
    grants = [(p["action"], p["resource"]) for p in record["permissions"]]
    assert grants == [("read", "db1"), ("read", "*"), ("write", "db2")]  # the duplicate is dropped
    assert record["expires_at"] is None, "no --expires-at: the token never expires"


def test_create_without_permissions_is_allowed(booted: Booted) -> None:
    _, token_id = booted.create("no access yet")
    record = booted.fake.state.db_token_by_id(token_id)
    assert record is not None and record["permissions"] == []


def test_create_description_is_positional_and_double_dash_ends_flags(booted: Booted) -> None:
    _, token_id = booted.create("--read-database", "db1", "--", "-starts-with-a-dash")
    record = booted.fake.state.db_token_by_id(token_id)
    assert record is not None and record["description"] == "-starts-with-a-dash"
    blank = booted.token("create", "  ")
    assert blank.returncode == 1
    assert "description must be a non-empty string" in blank.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--expires-at", "2099-01-01T00:00:00+0000"], "cannot parse"),
        (["--expires-at", "2000-01-01T00:00:00Z"], "expires_at must be in the future"),
        (["--read-database", "x" * 65], "invalid database name"),
        (["--write-database", ""], "invalid database name"),
        (["--format", "yaml"], 'invalid output format "yaml"'),
    ],
)
def test_create_rejects_bad_input_without_side_effect(booted: Booted, args: list[str], message: str) -> None:
    done = booted.token("create", *args, "bad")
    assert done.returncode == 1
    assert message in done.stderr
    assert booted.fake.state.db_tokens() == []


def test_create_json_is_the_list_shape_then_the_token(booted: Booted) -> None:
    done = booted.token("create", "--format", "json", "--read-database", "db1", "json please")
    assert done.returncode == 0, done.stderr
    body, token = done.stdout.rstrip("\n").rsplit("\n", 1)
    assert DB_TOKEN_RE.fullmatch(token)
    assert token not in body
    created = json.loads(body)
    assert created["description"] == "json please"
    assert created["id"] == booted.by_value(token)["id"]


def test_create_legacy_output_is_only_the_token(booted: Booted) -> None:
    booted.fake.state.set(create_output="legacy")
    done = booted.token("create", "--read-database", "db1", "legacy")
    assert done.returncode == 0, done.stderr
    assert DB_TOKEN_RE.fullmatch(done.stdout.strip())
    assert done.stderr == WARNINGS


def test_create_needs_a_management_credential(booted: Booted) -> None:
    db_value, _ = booted.fake.state.add_db_token("a database token", {"read": ["*"]})
    as_db = booted.fake.profile(booted.fake.workdir / "db-as-mgmt.toml", mgmt_token=db_value)
    done = booted.run("token", "create", "nope", config=as_db)
    assert (done.returncode, done.stderr) == (1, UNAUTHENTICATED)
    oauth_only = booted.fake.profile(booted.fake.workdir / "oauth.toml", oauth2=True)
    done = booted.run("token", "list", config=oauth_only)
    assert done.returncode == 1 and "login required" in done.stderr
    assert len(booted.fake.state.db_tokens()) == 1


def test_admin_token_file_manages_database_tokens(fake_influxctl: FakeInfluxctlFixture) -> None:
    fake_influxctl.state.set(admin_token="admin-secret")
    token_file = fake_influxctl.workdir / "token.json"
    token_file.write_text("admin-secret\n")
    config = fake_influxctl.profile(token_file=token_file)
    done = fake_influxctl.run("--config", str(config), "token", "create", "--read-database", "db1", "by admin")
    assert done.returncode == 0, done.stderr
    [record] = fake_influxctl.state.db_tokens()
    admin = uuid.uuid5(uuid.NAMESPACE_URL, f"fake-influxctl-admin:{fake_influxctl.state.account_id}")
    assert record["created_by"] == str(admin)


def test_a_management_token_that_may_not_manage_management_tokens_may_manage_database_tokens(booted: Booted) -> None:
    booted.fake.state.set(mgmt_token_can_manage=False)
    assert booted.run("management", "create").returncode == 1
    _, token_id = booted.create("--read-database", "db1", "automation db token")
    assert booted.fake.state.db_token_by_id(token_id) is not None
    assert booted.token("revoke", "--force", token_id).returncode == 0


# --- token list / get ----------------------------------------------------------------------------


def test_list_json_has_the_documented_shape_and_hides_revoked(booted: Booted) -> None:
    _, keep = booted.create("--read-database", "db1", "--expires-at", "2099-01-01T00:00:00Z", "keep")
    _, gone = booted.create("--write-database", "*", "gone")
    assert booted.token("revoke", "--force", gone).returncode == 0

    [item] = booted.list_json()
    assert list(item) == ["account_id", "cluster_id", "id", "description", "permissions", "created_at", "expires_at"]
    assert item["id"] == keep and item["account_id"] == booted.fake.state.account_id
    assert item["cluster_id"] == booted.fake.state.cluster_id
    assert [{k: p[k] for k in ("action", "resource")} for p in item["permissions"]] == [
        {"action": "read", "resource": "db1"}
    ]
    assert item["expires_at"] == {"seconds": int(datetime(2099, 1, 1, tzinfo=UTC).timestamp())}
    assert set(item["created_at"]) <= {"seconds", "nanos"}

    both = booted.list_json("--include-revoked")
    assert {t["id"] for t in both} == {keep, gone}
    [revoked] = [t for t in both if t["id"] == gone]
    assert revoked["revoked_at"]["seconds"] > 0


def test_list_of_no_tokens_is_null_and_the_table_has_id_and_description(booted: Booted) -> None:
    done = booted.token("list", "--format", "json")
    assert (done.returncode, done.stdout.strip()) == (0, "null")
    _, token_id = booted.create("--read-database", "db1", "zzz")
    booted.create("--read-database", "db1", "aaa")
    table = booted.token("list", "--sort", "description")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert [cell.strip() for cell in lines[1].strip("|").split("|")] == ["ID", "DESCRIPTION"]
    assert [line.split("|")[2].strip() for line in lines[3:-1]] == ["aaa", "zzz"]
    assert token_id in table.stdout


def test_get_shows_one_token_and_a_revoked_one_only_with_include_revoked(booted: Booted) -> None:
    value, token_id = booted.create("--read-database", "db1", "one")
    done = booted.token("get", "--format", "json", token_id)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["description"] == "one"
    table = booted.token("get", token_id)
    assert "| permissions | read:db1" in table.stdout
    assert value not in done.stdout + table.stdout

    assert booted.token("revoke", "--force", token_id).returncode == 0
    hidden = booted.token("get", token_id)
    assert (hidden.returncode, hidden.stderr) == (1, NOT_FOUND)
    shown = booted.token("get", "--include-revoked", "--format", "json", token_id)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["revoked_at"]["seconds"] > 0


@pytest.mark.parametrize(
    ("token_id", "message"),
    [("not-a-uuid", "InvalidArgument desc = invalid database token id"), ("0" * 8 + "-0000-4000-8000-" + "0" * 12, "")],
)
def test_get_of_a_bad_or_unknown_id_fails(booted: Booted, token_id: str, message: str) -> None:
    done = booted.token("get", token_id)
    assert done.returncode == 1
    assert (message or "NotFound desc = database token not found") in done.stderr


# --- token revoke / delete ------------------------------------------------------------------------


def test_revoke_and_its_alias_delete_keep_the_token_listed_with_include_revoked(booted: Booted) -> None:
    _, first = booted.create("--read-database", "db1", "first")
    _, second = booted.create("--read-database", "db1", "second")
    done = booted.token("revoke", "--force", first)
    assert (done.returncode, done.stdout) == (0, f"revoked database token {first}\n")
    done = booted.token("delete", "--force", second)
    assert done.returncode == 0, done.stderr
    assert booted.list_json() == []
    assert {t["id"] for t in booted.list_json("--include-revoked")} == {first, second}
    revokes = [c for c in booted.fake.state.calls() if c["argv"][2] == "token" and c["argv"][3] != "list"][-2:]
    assert [(c["argv"][3], c["command"]) for c in revokes] == [("revoke", "token revoke"), ("delete", "token revoke")]


def test_revoke_twice_keeps_the_first_time_and_continues_past_bad_ids(booted: Booted) -> None:
    _, token_id = booted.create("--read-database", "db1", "twice")
    assert booted.token("revoke", "--force", token_id).returncode == 0
    first = booted.fake.state.db_token_by_id(token_id)["revoked_at"]  # type: ignore[index]
    done = booted.token("revoke", "--force", "bogus", token_id)
    assert done.returncode == 1
    assert 'failed to revoke database token "bogus"' in done.stderr
    assert f"revoked database token {token_id}" in done.stdout
    assert booted.fake.state.db_token_by_id(token_id)["revoked_at"] == first  # type: ignore[index]


def test_revoke_prompts_without_force(booted: Booted) -> None:
    _, token_id = booted.create("--read-database", "db1", "prompted")
    refused = booted.token("revoke", token_id)
    assert refused.returncode == 1 and "EOF" in refused.stderr
    assert "Confirm that you want to delete the token" in refused.stdout
    assert booted.fake.state.db_token_by_id(token_id)["revoked_at"] is None  # type: ignore[index]
    accepted = booted.run("token", "revoke", token_id, input="yes\n")
    assert accepted.returncode == 0, accepted.stderr
    assert booted.fake.state.db_token_by_id(token_id)["revoked_at"]  # type: ignore[index]


# --- token update --------------------------------------------------------------------------------


def test_update_replaces_permissions_and_can_change_the_description(booted: Booted) -> None:
    _, token_id = booted.create("--read-database", "db1", "--write-database", "db1", "before")
    done = booted.token("update", "--read-database", "db2", token_id)
    assert done.returncode == 0, done.stderr
    assert "| permissions | read:db2" in done.stdout
    record = booted.fake.state.db_token_by_id(token_id)
    assert record is not None
    assert [(p["action"], p["resource"]) for p in record["permissions"]] == [("read", "db2")]
    assert booted.token("update", "--description", "after", token_id).returncode == 0
    record = booted.fake.state.db_token_by_id(token_id)
    assert record is not None and record["description"] == "after"
    assert len(record["permissions"]) == 1, "--description alone keeps the permissions"


def test_update_needs_something_to_change_and_a_live_token(booted: Booted) -> None:
    _, token_id = booted.create("--read-database", "db1", "x")
    nothing = booted.token("update", token_id)
    assert nothing.returncode == 1 and "nothing to update" in nothing.stderr
    booted.fake.state.revoke_db_token(token_id)
    revoked = booted.token("update", "--read-database", "db2", token_id)
    assert (revoked.returncode, revoked.stderr) == (1, NOT_FOUND)


# --- query ---------------------------------------------------------------------------------------


def test_query_with_a_token_from_the_profile(booted: Booted) -> None:
    value, _ = booted.fake.state.add_db_token("reader", {"read": ["db1"]})
    config = booted.query_profile(token=value, database="db1")
    done = booted.run("query", "SELECT 1", config=config)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1] == "| Int64(1) |"
    done = booted.run("query", "--format", "json", "select 42;", config=config)
    assert json.loads(done.stdout) == [{"Int64(42)": 42}]
    [call] = [c for c in booted.fake.state.calls() if c["command"] == "query"][:1]
    assert value not in " ".join(call["argv"])


def test_query_flags_override_the_profile(booted: Booted) -> None:
    reader, _ = booted.fake.state.add_db_token("reader", {"read": ["db2"]})
    revoked, revoked_id = booted.fake.state.add_db_token("revoked", {"read": ["db2"]})
    booted.fake.state.revoke_db_token(revoked_id)
    config = booted.query_profile(token=revoked, database="db1")
    assert booted.run("query", "SELECT 1", config=config).stderr == UNAUTHENTICATED
    done = booted.run("query", "--token", reader, "--database", "db2", "SELECT 1", config=config)
    assert done.returncode == 0, done.stderr


def test_query_needs_a_token_and_a_database(booted: Booted) -> None:
    no_token = booted.run("query", "--database", "db1", "SELECT 1", config=booted.query_profile())
    assert no_token.returncode == 1 and "a database token is required" in no_token.stderr
    value, _ = booted.fake.state.add_db_token("reader", {"read": ["db1"]})
    no_db = booted.run("query", "SELECT 1", config=booted.query_profile(token=value))
    assert no_db.returncode == 1 and "a database is required" in no_db.stderr


@pytest.mark.parametrize("problem", ["unknown", "revoked", "expired", "management token"])
def test_query_with_a_token_that_cannot_authenticate_is_unauthenticated(booted: Booted, problem: str) -> None:
    state = booted.fake.state
    if problem == "unknown":
        value = "apiv1_" + "A" * 86
    elif problem == "revoked":
        value, token_id = state.add_db_token("r", {"read": ["*"]})
        state.revoke_db_token(token_id)
    elif problem == "expired":
        value, _ = state.add_db_token("e", {"read": ["*"]}, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    else:
        value = booted.mgmt  # a management token is not a database token
    done = booted.query(value, "SELECT 1")
    assert (done.returncode, done.stdout, done.stderr) == (1, "", UNAUTHENTICATED)


def test_new_token_is_unauthenticated_until_the_activation_delay_has_passed(booted: Booted) -> None:
    booted.fake.state.set(db_activation_delay_s=1.0)
    value, _ = booted.create("--read-database", "db1", "slow")
    assert booted.fake.state.db_problem(value) == "token not active yet"
    assert booted.query(value, "SELECT 1").stderr == UNAUTHENTICATED
    time.sleep(1.1)
    done = booted.query(value, "SELECT 1")
    assert done.returncode == 0, done.stderr


def test_management_tokens_are_not_delayed_by_the_database_token_delay(booted: Booted) -> None:
    booted.fake.state.set(db_activation_delay_s=60.0)
    done = booted.run("management", "create")
    assert done.returncode == 0, done.stderr
    assert booted.fake.state.is_active(last_line(done.stdout))


def test_query_permissions_and_databases(booted: Booted) -> None:
    state = booted.fake.state
    writer, _ = state.add_db_token("writer", {"write": ["db1"]})
    everything, _ = state.add_db_token("all", {"read": ["*"]})
    assert booted.query(writer, "SELECT 1").stderr == PERMISSION_DENIED
    assert state.db_problem(writer, "db1", "write") is None
    assert booted.query(everything, "SELECT 1", database="db2").returncode == 0
    missing = booted.query(everything, "SELECT 1", database="nope")
    assert missing.returncode == 1
    assert 'code = NotFound desc = database "nope" not found' in missing.stderr
    state.add_database("nope")
    assert booted.query(everything, "SELECT 1", database="nope").returncode == 0


def test_query_text_from_a_file_or_stdin_and_only_select_integer(booted: Booted, tmp_path: Path) -> None:
    value, _ = booted.fake.state.add_db_token("reader", {"read": ["db1"]})
    query_file = tmp_path / "q.sql"
    query_file.write_text("SELECT 7\n")
    assert "Int64(7)" in booted.query(value, str(query_file)).stdout
    config = booted.query_profile(token=value, database="db1")
    assert "Int64(8)" in booted.run("query", "-", input="SELECT 8", config=config).stdout
    other = booted.query(value, "SELECT * FROM home")
    assert other.returncode == 2 and "is implemented" in other.stderr
    influxql = booted.query(value, "--language", "influxql", "SELECT 1")
    assert influxql.returncode == 2


# --- faults and bookkeeping ----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["token create", "token list", "token get", "token revoke", "token update"])
def test_fault_exit_has_no_side_effect(booted: Booted, command: str) -> None:
    _, token_id = booted.create("--read-database", "db1", "existing")
    before = booted.fake.state.db_tokens()
    booted.fake.state.add_fault(command, "exit")
    args = {
        "token create": ["create", "new"],
        "token list": ["list"],
        "token get": ["get", token_id],
        "token revoke": ["revoke", "--force", token_id],
        "token update": ["update", "--read-database", "db2", token_id],
    }[command]
    done = booted.token(*args)
    assert done.returncode == 1 and "code = Unavailable" in done.stderr
    assert booted.fake.state.db_tokens() == before
    assert booted.fake.state.faults() == []


def test_fault_after_effect_exit_mints_without_printing(booted: Booted) -> None:
    booted.fake.state.add_fault("token create", "after_effect_exit")
    done = booted.token("create", "--read-database", "db1", "lost")
    assert done.returncode == 1 and done.stdout == ""
    [record] = booted.fake.state.db_tokens()
    assert record["description"] == "lost" and record["revoked_at"] is None


def test_fault_garbage_and_query_faults(booted: Booted) -> None:
    value, _ = booted.fake.state.add_db_token("reader", {"read": ["db1"]})
    booted.fake.state.add_fault("token list", "garbage")
    garbage = booted.token("list", "--format", "json")
    assert garbage.returncode == 0 and garbage.stdout.startswith("<html>")
    booted.fake.state.add_fault("query", "exit")
    assert booted.query(value, "SELECT 1").returncode == 1
    assert booted.query(value, "SELECT 1").returncode == 0


def test_fault_pause_lets_a_test_kill_the_caller(booted: Booted, tmp_path: Path) -> None:
    marker = tmp_path / "paused"
    booted.fake.state.add_fault("token create", "pause_after_effect", seconds=30, marker=marker)
    argv = [str(booted.fake.binary), "--config", str(booted.config), "token", "create", "paused"]
    proc = subprocess.Popen(argv, env=booted.fake.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(marker)
        assert marker.read_text() == str(proc.pid)
    finally:
        proc.kill()
        proc.communicate()
    [record] = booted.fake.state.db_tokens()
    assert record["description"] == "paused"


def test_runs_on_the_standard_library_alone(booted: Booted) -> None:
    python = os.path.realpath(sys.executable)
    argv = [python, "-I", "-S", str(booted.fake.binary), "--config", str(booted.config)]
    done = subprocess.run(
        [*argv, "token", "create", "--read-database", "db1", "stdlib"],
        env=booted.fake.env,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    value = last_line(done.stdout)
    assert DB_TOKEN_RE.fullmatch(value)
    config = booted.query_profile(token=value, database="db1")
    done = subprocess.run(
        [python, "-I", "-S", str(booted.fake.binary), "--config", str(config), "query", "SELECT 1"],
        env=booted.fake.env,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_state_api_database_tokens(fake_influxctl: FakeInfluxctlFixture) -> None:
    state = fake_influxctl.state
    assert state.databases() == ["db1", "db2"]
    value, token_id = state.add_db_token("human", [("read", "db1"), ("write", "db1")])
    assert DB_TOKEN_RE.fullmatch(value)
    assert state.db_is_active(value)
    assert state.db_problem(value, "db1", "write") is None
    assert state.db_problem(value, "db2") == "permission denied"
    with pytest.raises(ValueError, match="unknown action"):
        state.add_db_token("bad", {"admin": ["db1"]})
    with pytest.raises(KeyError):
        state.revoke_db_token("no-such-id")
    state.revoke_db_token(token_id)
    assert state.db_problem(value) == "token revoked"
