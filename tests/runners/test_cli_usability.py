"""What a new user meets first on the command line (issue 9, section 4).

- ``-c/--config`` (and the other common options) work before the command name as well as after;
- every hint the CLI prints names a command that exists;
- a missing optional dependency is invalid input (exit 2) with the exact ``pip install`` line;
- read-only commands never create a journal: they say there is none, where, and how to fix it;
- durations are printed as a policy file writes them;
- every command's ``--help`` has a one-line description and an example that parses.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import sqlite3
import subprocess
import sys
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from rotator.config.extras import EXTRA_OF_MODULE
from rotator.config.schedule import format_duration, parse_duration
from rotator.observe.status import PolicyStatus, render_table
from rotator.runners import cli
from tests.harness import REPO

ISSUER = """
[policy.issuer]
type = "influxctl-management"
[policy.issuer.profile]
product = "clustered"
host = "h.example"
"""
STORE = """
[[policy.store]]
type = "vault-kv2"
url = "https://vault.example:8200"
path = "influx/mgmt"
[policy.store.auth]
method = "token"
token = { env = "VAULT_TOKEN" }
"""
COMMANDS = sorted(cli._COMMANDS)  # the handlers; the last test checks each has a parser


def _policy_file(tmp_path: Path, *, head: str = 'name = "p1"\nschedule = "30d"', issuer: str = ISSUER,
                 store: str = STORE, top: str = "") -> Path:
    path = tmp_path / "rotator.toml"
    path.write_text(f"{top}\n[[policy]]\n{head}\n{issuer}\n{store}")
    return path


def _rotator(*args: str, cwd: Path = REPO, blocked: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``rotator ARGS`` in a new interpreter in which the modules ``blocked`` cannot be imported."""
    probe = (f"import sys\nfor name in {list(blocked)!r}:\n    sys.modules[name] = None  # import raises\n"
             f"from rotator.runners.cli import main\nraise SystemExit(main({list(args)!r}))")  # fmt: skip
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=cwd, check=False,
                          timeout=60)  # fmt: skip


def _exit_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    out, err = capsys.readouterr()
    return int(stopped.value.code or 0), out, err


# -- 1. -c before or after the command; hints name real commands ---------------------------------
#: the arguments each command needs besides the common options, so that it parses
REQUIRED = {"bootstrap": ["p1", "--token-file", "f", "--token-id", "t"], "sync": ["--from", "p1"]}


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "sync"])
def test_config_goes_before_or_after_the_command(command: str) -> None:
    parser = cli._parser()
    rest = REQUIRED.get(command, [])
    assert parser.parse_args(["-c", "before.toml", command, *rest]).config == "before.toml"
    assert parser.parse_args([command, *rest, "--config", "after.toml"]).config == "after.toml"
    assert parser.parse_args(["--config", "before.toml", command, *rest, "-c", "after.toml"]).config == "after.toml"
    args = parser.parse_args(["--log-level", "debug", "--output", "json", command, *rest])
    assert (args.log_level, args.output) == ("debug", "json")
    assert parser.parse_args([command, *rest]).output == "text", "defaults still apply"


def test_config_before_the_command_end_to_end(tmp_path: Path) -> None:
    path = _policy_file(tmp_path)
    proc = _rotator("-c", str(path), "validate", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"{path}: valid, 1 policy: p1" in proc.stdout
    # sync takes the policy file from --from FILE:POLICY, or from -c before the command name
    proc = _rotator("-c", str(path), "sync", "--from", "nosuch", cwd=tmp_path)
    assert proc.returncode == 2 and f"{path}: no policy named 'nosuch'" in proc.stderr, proc.stderr
    assert "known policies: p1" in proc.stderr


def _argparse_error_cases() -> list[list[str]]:
    cases = [[], ["stauts"], ["-c"], ["--log-level", "loud", "status"], ["--bogus"], ["--bogus", "status"]]
    for command in COMMANDS:
        rest = REQUIRED.get(command, [])
        cases += [[command, *rest, "--no-such-option"], [command, *rest, "--output", "yaml"], ["-c", "x", command,
                                                                                                 *rest, "extra", "-Z"]]
        if rest:
            cases.append([command])  # a required argument missing
    return cases


def test_every_argparse_hint_names_a_real_command(capsys: pytest.CaptureFixture[str]) -> None:
    hints: set[str] = set()
    for argv in _argparse_error_cases():
        code, _, err = _exit_of(argv, capsys)
        assert code == 2, (argv, err)
        found = re.findall(r"^fix: see `([^`]*)`$", err, re.MULTILINE)
        assert len(found) == 1, (argv, err)
        hints.add(found[0])
    assert len(hints) > len(COMMANDS), hints  # per-command hints, not one generic line
    for hint in sorted(hints):
        words = shlex.split(hint)
        assert words[0] == "rotator" and words[-1] == "--help", hint
        assert len(words) == 2 or (len(words) == 3 and words[1] in COMMANDS), hint
        code, out, _ = _exit_of(words[1:], capsys)
        assert code == 0 and "usage: rotator" in out, hint


def test_every_rotator_command_named_in_a_message_exists() -> None:
    """Hints and messages in the code quote commands as `rotator NAME ...`: NAME must exist."""
    named: dict[str, str] = {}
    for source in (REPO / "rotator").rglob("*.py"):
        for quoted in re.findall(r"`(rotator [^`]*)`", source.read_text()):
            words = quoted.split()[1:]
            while words and words[0].startswith("-"):  # `rotator -c FILE status`
                words = words[2:] if words[0] in ("-c", "--config") else words[1:]
            if words and not re.search(r"[A-Z{]", words[0]):  # COMMAND, {args.command}: placeholders
                named[quoted] = words[0]
    assert len(named) > 10
    unknown = {quoted: name for quoted, name in named.items() if name not in COMMANDS}
    assert not unknown, unknown


# -- 2. a missing extra ----------------------------------------------------------------------------
def test_extra_table_matches_pyproject() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra in ("vault", "aws", "http", "postgres", "daemon", "profile"):
        for requirement in extras[extra]:
            module = re.split(r"[^A-Za-z0-9_.-]", requirement)[0].lower().replace("-", "_")
            assert EXTRA_OF_MODULE.get(module) == extra, f"{requirement} of [{extra}]: add {module!r} to the table"
    assert set(EXTRA_OF_MODULE.values()) == {"vault", "aws", "http", "postgres", "daemon", "profile"}


AWS_STORE = '\n[[policy.store]]\ntype = "aws-secretsmanager"\nsecret_id = "prod/influx"\nregion = "eu-west-1"\n'


@pytest.mark.parametrize(
    ("extra", "blocked", "policy", "command"),
    [
        ("daemon", ("prometheus_client",), {}, ["daemon"]),
        ("daemon", ("apscheduler",), {"head": 'name = "p1"\nschedule = "0 3 * * 0-5"'}, ["validate"]),
        ("vault", ("hvac",), {}, ["validate"]),
        ("aws", ("boto3", "botocore"), {"store": AWS_STORE}, ["validate"]),
        ("http", ("httpx",), {"issuer": '\n[policy.issuer]\ntype = "management-api"\n'}, ["validate"]),
        ("profile", ("tomlkit",), {"store": '\n[[policy.store]]\ntype = "influxctl-profile"\n'}, ["validate"]),
        ("postgres", ("psycopg",), {"top": '[rotator]\njournal = "postgresql://rotator@127.0.0.1:1/none"'},
         ["status"]),
    ],
)
def test_a_missing_extra_is_invalid_input_with_its_install_line(
    tmp_path: Path, extra: str, blocked: tuple[str, ...], policy: dict[str, str], command: list[str]
) -> None:
    path = _policy_file(tmp_path, **policy)
    proc = _rotator(*command, "-c", str(path), cwd=tmp_path, blocked=blocked)
    assert proc.returncode == 2, proc.stderr
    assert f"pip install 'rotator[{extra}]'" in proc.stderr, proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr


def test_an_import_error_that_is_no_extra_is_still_a_bug(tmp_path: Path) -> None:
    proc = _rotator("daemon", "-c", str(_policy_file(tmp_path)), cwd=tmp_path, blocked=("rotator.observe.metrics",))
    assert proc.returncode == 1 and "internal error" in proc.stderr and "pip install" not in proc.stderr


# -- 4. read-only commands never create a journal ------------------------------------------------
@pytest.mark.parametrize("command", [["status"], ["plan"], ["status", "--output", "json"],
                                     ["rotate", "p1", "--dry-run"]])  # fmt: skip
def test_read_only_commands_never_create_a_journal(tmp_path: Path, command: list[str]) -> None:
    path = _policy_file(tmp_path, top='[rotator]\njournal = "var/lib/rotatr/journal.db"')  # a typo
    proc = _rotator(*command, "-c", str(path), cwd=tmp_path)
    journal = tmp_path / "var" / "lib" / "rotatr" / "journal.db"
    assert proc.returncode == 2, proc.stderr
    assert f"there is no journal at {journal}" in proc.stderr
    assert "fix: check `journal` under [rotator]" in proc.stderr and "rotator bootstrap" in proc.stderr
    assert not (tmp_path / "var").exists(), "no directory may be created"
    assert "no token yet" not in proc.stdout


def test_an_empty_file_is_not_a_journal_either(tmp_path: Path) -> None:
    """An existing file without journal tables (also how a PostgreSQL database without them is seen)."""
    journal = tmp_path / "journal.db"
    journal.touch()
    path = _policy_file(tmp_path, top='[rotator]\njournal = "journal.db"')
    proc = _rotator("status", "-c", str(path), cwd=tmp_path)
    assert proc.returncode == 2 and f"there is no journal at {journal}" in proc.stderr, proc.stderr
    with sqlite3.connect(journal) as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [], "no table may be created"


def test_a_postgresql_journal_is_not_created_by_a_reader(pg_url: str) -> None:
    from rotator.core.errors import ConfigError
    from rotator.core.journal import open_journal

    with pytest.raises(ConfigError, match="there is no journal at postgresql://"):
        open_journal(pg_url, create=False)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = "
                            "current_schema()").fetchall() == [], "no table may be created"  # fmt: skip
    open_journal(pg_url).close()
    open_journal(pg_url, create=False).close()


def test_a_reader_refuses_an_older_journal_untouched_and_works_once_a_writer_upgraded_it(tmp_path: Path) -> None:
    """After an upgrade of rotator, `status` on a journal of the previous schema neither upgrades it
    (the previous version's daemon may still be writing it) nor fails obscurely: it says so and how
    to go on; the writing command it names upgrades the journal, and `status` then works."""
    from rotator.core.journal import _MIGRATIONS

    journal = tmp_path / "journal.db"
    conn = sqlite3.connect(journal)  # a journal the previous version made (WAL, as rotator's are)
    conn.execute("PRAGMA journal_mode=WAL")
    previous = [m if isinstance(m, str) else ";".join(m["sqlite"]) for m in _MIGRATIONS[:-1]]
    conn.executescript(";".join(previous) + "; CREATE TABLE schema_version (version INTEGER NOT NULL);"
                       + "".join(f"INSERT INTO schema_version VALUES ({v});" for v in range(1, len(_MIGRATIONS))))
    conn.close()  # the last connection: its WAL is checkpointed into the file
    before = journal.read_bytes()
    path = _policy_file(tmp_path, top='[rotator]\njournal = "journal.db"')
    for command in (["status"], ["plan"], ["audit", "verify"]):
        proc = _rotator(*command, "-c", str(path), cwd=tmp_path)
        assert proc.returncode == 1, (command, proc.stderr)
        assert f"schema version {len(_MIGRATIONS) - 1}, older than this rotator's" in proc.stderr, proc.stderr
        assert "fix: restart the daemon with this rotator version" in proc.stderr and "Traceback" not in proc.stderr
    assert journal.read_bytes() == before, "a reader wrote nothing"

    proc = _rotator("recover", "-c", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(journal) as conn:
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone() == (len(_MIGRATIONS),)
    proc = _rotator("status", "-c", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_a_dry_run_that_is_not_due_does_not_recover_an_interrupted_run(tmp_path: Path) -> None:
    """`rotate --dry-run --if-due` only says that recovery would come first: recovery takes the lease,
    writes the journal and may revoke tokens, none of which a dry run may do."""
    from datetime import UTC, datetime

    from rotator.core.journal import RunRecord, open_journal

    now = datetime.now(UTC)
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")
    journal.begin_run(RunRecord("boot", "p1", "done", "bootstrap", now, now, published_at=now))
    journal.begin_run(RunRecord("left", "p1", "minting", "rotate", now, now))  # interrupted
    journal.close()
    path = _policy_file(tmp_path, top='[rotator]\njournal = "journal.db"')
    proc = _rotator("rotate", "p1", "--dry-run", "--if-due", "-c", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "not due; would first recover its unfinished run(s)" in proc.stdout, proc.stdout
    with sqlite3.connect(tmp_path / "journal.db") as conn:
        assert conn.execute("SELECT state FROM runs WHERE run_id = 'left'").fetchone() == ("minting",)
        assert conn.execute("SELECT COUNT(*) FROM leases").fetchone() == (0,), "no lease taken"


def test_a_schedule_that_never_fires_again_is_that_policy_s_error_not_a_crash(tmp_path: Path) -> None:
    """A cron schedule whose years have passed loads (its period is read from 2026 on) and has no
    next due time: `validate` reports it where it is; `rotate --all --if-due` (a cron job) reports
    it for that policy and goes on with the others; status and plan say which policy and how to fix
    it, exit 2, not "internal error"."""
    from rotator.core.journal import RunRecord, open_journal

    now = datetime.now(UTC)
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")
    for name in ("ended", "p1"):
        journal.begin_run(RunRecord(f"boot-{name}", name, "done", "bootstrap", now, now, published_at=now))
    journal.close()
    ended = _policy_file(tmp_path, head='name = "ended"\nschedule = "cron(0 3 1 * ? 2026)"',
                         store=STORE.replace("influx/mgmt", "influx/ended")).read_text()
    path = _policy_file(tmp_path, top='[rotator]\njournal = "journal.db"\n' + ended)
    proc = _rotator("validate", "-c", str(path), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "policy[0] 'ended'.schedule: cron expression 'cron(0 3 1 * ? 2026)' never fires again" in proc.stderr
    assert "fix: give a cron" in proc.stderr
    assert "p1" not in proc.stderr.replace(str(path), ""), "only the policy that never fires is named"
    disabled = path.read_text().replace('name = "ended"', 'name = "ended"\nenabled = false', 1)
    (tmp_path / "disabled.toml").write_text(disabled)
    assert _rotator("validate", "-c", str(tmp_path / "disabled.toml"), cwd=tmp_path).returncode == 0, \
        "a disabled policy's schedule is not used"
    proc = _rotator("rotate", "--all", "--if-due", "-c", str(path), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "policy 'ended': its schedule has no next due time" in proc.stderr and "change `schedule`" in proc.stderr
    assert "p1: nothing-to-do - not due" in proc.stdout, "the next policy is still decided"
    for command in ("status", "plan", "status --check"):
        proc = _rotator(*command.split(), "-c", str(path), cwd=tmp_path)
        assert proc.returncode == 2 and "policy 'ended': its schedule has no next due time" in proc.stderr, proc
        assert "internal error" not in proc.stderr
        assert "p1" in proc.stdout, "the other policies' rows are still shown"


def test_writing_commands_still_create_the_journal(tmp_path: Path) -> None:
    from rotator.core.journal import open_journal

    url = f"sqlite:///{tmp_path / 'new' / 'journal.db'}"
    open_journal(url).close()
    assert (tmp_path / "new" / "journal.db").is_file()
    open_journal(url, create=False).close()  # now there is one to read


# -- 5. durations as the policy file writes them -------------------------------------------------
@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(days=39), "39d"), (timedelta(days=2, hours=12), "2d12h"), (timedelta(minutes=90), "1h30m"),
        (timedelta(days=1, hours=2, minutes=3, seconds=4), "1d2h3m4s"), (timedelta(0), "0s"),
        (timedelta(minutes=-5), "-5m"), (timedelta(seconds=59.9), "59s"),
    ],
)  # fmt: skip
def test_format_duration_is_exact_and_parses_back(delta: timedelta, text: str) -> None:
    assert format_duration(delta) == text
    if delta > timedelta(0):
        assert parse_duration(text) == timedelta(seconds=int(delta.total_seconds()))


def test_a_lifetime_error_names_the_duration_as_the_file_writes_it(tmp_path: Path) -> None:
    path = _policy_file(tmp_path, head='name = "p1"\nschedule = "38d"\ngrace = "1d"\nlifetime = "2d12h"')
    proc = _rotator("validate", "-c", str(path), cwd=tmp_path)
    assert proc.returncode == 2
    assert "raise lifetime above 39d10m, " in proc.stderr, proc.stderr  # 38d + 1d + twice verify_timeout (5m)
    assert "days," not in proc.stderr


def test_status_and_plan_durations() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    row = PolicyStatus("p1", True, "tok-1", now - timedelta(days=39, minutes=7), now + timedelta(days=2, hours=12),
                       now + timedelta(hours=36, seconds=5), False, "done", None, 0, 0, 0, 0, now)  # fmt: skip
    table = render_table([row])
    assert "39d " in table and "2d12h" in table and "1d12h" in table and "days," not in table
    assert row.reason() == "not due for 1d12h"


# -- 6. --help of every command ------------------------------------------------------------------
def test_every_command_has_a_description_and_an_example_that_parses() -> None:
    parser = cli._parser()
    assert sorted(parser.commands) == COMMANDS and len(COMMANDS) >= 12
    for name in COMMANDS:
        sub = parser.commands[name]
        assert sub.description and "\n" not in sub.description.strip(), name
        help_text = sub.format_help()
        assert sub.description.strip() in help_text
        assert re.search(r"^examples?:$", help_text, re.MULTILINE), f"rotator {name} --help shows no example"
        examples = re.findall(rf"^  (rotator {re.escape(name)}\b.*)$", help_text, re.MULTILINE) + re.findall(
            rf"^  (rotator -c \S+ {re.escape(name)}\b.*)$", help_text, re.MULTILINE)
        assert examples, f"rotator {name} --help: no example of the command itself"
        for example in examples:
            words = shlex.split(example.split("#")[0].split(">")[0])
            args = parser.parse_args(words[1:])  # an example that does not parse exits 2 here
            assert args.command == name


@pytest.mark.parametrize(("content", "message"), [
    ("+-----+\n| ID  |\n+-----+\nM.V1.abcdefghijklmnop\n", "holds more than a token value: 4 lines"),
    ("M.V1.abcdefgh ijklmnop\n", "holds more than a token value: spaces or control characters inside it"),
    (b"M.V1.\xff\xfeabcdefgh", "is not UTF-8 text"),
], ids=["create-output", "inner-space", "not-utf8"])
def test_a_token_file_that_is_not_one_token_is_a_configuration_error_that_shows_nothing_of_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | bytes, message: str) -> None:
    """`management create` prints a table, then the token: a file holding all of it, or any other text
    that cannot be one token, is named with what is wrong (exit 2) before anything is asked of the
    issuer or a store, and no part of its text is printed (it may hold the token)."""
    path = _policy_file(tmp_path)
    token_file = tmp_path / "first-token"
    if isinstance(content, bytes):
        token_file.write_bytes(content)
    else:
        token_file.write_text(content)
    code = cli.main(["-c", str(path), "bootstrap", "p1", "--token-file", str(token_file),
                     "--token-id", "9f4c0b6e-1b2a-4c3d-8e9f-0a1b2c3d4e5f"])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert f"--token-file {token_file} {message}" in err, err
    assert "abcdefgh" not in out + err and "M.V1." not in out + err
    assert not list(tmp_path.glob("*.db")), "nothing written: no journal"


# -- 7. bad input of the common options, the output files and the arguments: exit 2, what, where, how ----
def _bootstrapped(tmp_path: Path, *, run: bool = True) -> Path:
    """A policy file (p1, vault store) whose journal holds p1's bootstrap (written as a row, outside the
    audit chain): nothing is due, nothing contacted. ``run=False``: an empty journal (a clean report)."""
    from rotator.core.journal import RunRecord, open_journal

    now = datetime.now(UTC)
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")
    if run:
        journal.begin_run(RunRecord("boot", "p1", "done", "bootstrap", now, now, published_at=now))
    journal.close()
    return _policy_file(tmp_path, top='[rotator]\njournal = "journal.db"')


@pytest.mark.parametrize("command", [["status"], ["rotate", "p1"], ["recover"], ["revoke-expired"]])
def test_a_journal_an_earlier_version_kept_relative_to_the_working_directory_is_not_left_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        command: list[str]) -> None:
    """Before, `sqlite:///var/lib/rotator/journal.db` was read relative to the working directory (the
    systemd unit's /var/lib/rotator): after the upgrade, every command would have begun an empty
    journal at the absolute path, its history and pending revocations left behind in silence."""
    from rotator.core.journal import RunRecord, open_journal

    state = tmp_path / "state" / "journal.db"  # what the URL names: absent
    workdir = tmp_path / "workdir"
    before = workdir / str(state).lstrip("/")  # where the earlier version kept it
    now = datetime.now(UTC)
    journal = open_journal(f"sqlite://{before}")
    journal.begin_run(RunRecord("boot", "p1", "done", "bootstrap", now, now, published_at=now))
    journal.close()
    path = _policy_file(tmp_path, top=f'[rotator]\njournal = "sqlite://{state}"')
    monkeypatch.chdir(workdir)
    code = cli.main(["-c", str(path), *command])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"names {state}, which does not exist, while {before} does" in err, err
    assert f"fix: stop rotator and move {before}" in err
    assert not state.exists() and not state.parent.exists(), "no empty journal begun"


@pytest.mark.parametrize("command", [["status"], ["rotate", "p1"], ["recover"], ["revoke-expired"]])
def test_a_journal_an_earlier_version_kept_beside_the_policy_file_is_not_left_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        command: list[str]) -> None:
    """The earlier version's default policy file was ./rotator.toml, so it ran in the policy file's
    directory and kept the journal relative to that. Run today from another directory, only the working
    directory was looked at: `recover`, `revoke-expired` and `rotate` began an empty journal at the
    named path, the old one's pending revocations left behind, and said "nothing to do"."""
    from rotator.core.journal import RunRecord, open_journal

    state = tmp_path / "state" / "journal.db"  # what the URL names: absent
    (tmp_path / "cfg").mkdir()
    path = _policy_file(tmp_path / "cfg", top=f'[rotator]\njournal = "sqlite://{state}"')
    before = path.parent / str(state).lstrip("/")  # where the earlier version kept it
    now = datetime.now(UTC)
    journal = open_journal(f"sqlite://{before}")
    journal.begin_run(RunRecord("boot", "p1", "done", "bootstrap", now, now, published_at=now))
    journal.close()
    monkeypatch.chdir(tmp_path)
    code = cli.main(["-c", str(path), *command])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"names {state}, which does not exist, while {before} does" in err, err
    assert not state.exists() and not state.parent.exists(), "no empty journal begun"


@pytest.mark.parametrize("command", [["recover"], ["revoke-expired"]])
def test_recover_and_revoke_expired_make_no_journal(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    """They made an empty journal where none was (a wrong `journal` path, a moved policy file) and said
    "nothing to do": the journal in use went unnoticed. Only bootstrap and rotate begin one."""
    path = _policy_file(tmp_path, top='[rotator]\njournal = "journal.db"')
    code = cli.main(["-c", str(path), *command])
    err = capsys.readouterr().err
    assert code == 2 and f"there is no journal at {tmp_path / 'journal.db'}" in err, err
    assert "made by the first `rotator" in err
    assert not list(tmp_path.glob("journal.db*")), "nothing created"


def test_validate_output_json_lists_the_problems_of_an_invalid_file_on_stdout(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A CI job parsing `validate --output json` got nothing on stdout for an invalid file."""
    path = _policy_file(tmp_path, head='name = "p1"\nschedule = "every month"')
    code = cli.main(["-c", str(path), "--output", "json", "validate"])
    out, err = capsys.readouterr()
    assert code == 2
    answer = json.loads(out)
    assert answer["valid"] is False and answer["file"] == str(path)
    assert [p["where"] for p in answer["problems"]] == ["policy[0] 'p1'.schedule"], answer
    assert "'every month' is not a schedule" in answer["problems"][0]["message"]
    assert "1 problem(s)" in err, "the text stays on stderr"
    code = cli.main(["-c", str(tmp_path / "nope.toml"), "--output", "json", "validate"])
    answer = json.loads(capsys.readouterr().out)
    assert code == 2 and answer["valid"] is False and "cannot read policy file" in answer["problems"][0]["message"]


def test_a_policy_file_without_policies_is_warned_of_and_fails_status_check(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty ConfigMap passed `validate`, and `status --check` exited 0 while nothing was rotated."""
    path = tmp_path / "rotator.toml"
    path.write_text('[rotator]\njournal = "journal.db"\n')
    assert cli.main(["-c", str(path), "validate"]) == 0
    assert "holds no [[policy]]: nothing would be rotated" in capsys.readouterr().err
    from rotator.core.journal import open_journal

    open_journal(f"sqlite://{tmp_path / 'journal.db'}").close()
    assert cli.main(["-c", str(path), "status"]) == 0, "plain status: nothing to show is not an error"
    capsys.readouterr()
    assert cli.main(["-c", str(path), "status", "--check"]) == 4
    assert "out of compliance: the policy file holds no [[policy]]" in capsys.readouterr().err


@pytest.mark.parametrize("spelling", ["sqlite:///", "sqlite:////"])
def test_a_sqlite_url_names_an_absolute_path_whatever_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], spelling: str) -> None:
    """`journal = "sqlite:///var/lib/rotator/journal.db"` (the docs' form) was opened relative to the
    directory the command ran in: status showed no token, and `audit verify` passed on an empty journal."""
    from rotator.config.policy import load_config
    from rotator.core.journal import open_journal

    _bootstrapped(tmp_path)
    path = _policy_file(tmp_path, top=f'[rotator]\njournal = "{spelling}{str(tmp_path / "journal.db").lstrip("/")}"')
    assert load_config(path).journal_url().startswith(spelling)  # a URL is kept as written
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert cli.main(["-c", str(path), "--output", "json", "status"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)[0]["rotated_at"], out
    assert cli.main(["-c", str(path), "audit", "verify"]) in (0, 4)
    assert cli.main(["-c", str(path), "revoke-expired"]) == 0
    assert not any(elsewhere.rglob("*")), "nothing made under the working directory"
    open_journal(f"sqlite://{tmp_path / 'journal.db'}", create=False).close()  # the URL journal_url() gives


@pytest.mark.parametrize("command", [["status"], ["plan"], ["validate"], ["daemon"], ["rotate", "p1", "--dry-run"]])
@pytest.mark.parametrize("where", ["missing-dir", "a-directory"])
def test_a_log_file_that_cannot_be_opened_is_a_usage_error_not_a_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str], where: str) -> None:
    path = _bootstrapped(tmp_path)
    log = tmp_path / "no" / "dir" / "rotator.log" if where == "missing-dir" else tmp_path
    code = cli.main(["--log-file", str(log), "-c", str(path), *command])
    err = capsys.readouterr().err
    assert code == 2, err
    reason = "No such file or directory" if where == "missing-dir" else "Is a directory"
    assert f"rotator: error: cannot open --log-file {log}: {reason}\nfix: " in err, err
    if where == "missing-dir":
        assert f"fix: create the directory {log.parent} first" in err and not (tmp_path / "no").exists()


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_a_log_file_that_is_a_link_or_a_fifo_is_refused_and_nothing_is_written_through_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    """The log file's directory may be writable by others (/tmp) while rotator runs as root: a planted
    link must not make it append to the file it points at, and a FIFO without a reader must not hang it."""
    path = _bootstrapped(tmp_path)
    victim = tmp_path / "victim.conf"
    victim.write_text("root-owned content\n")
    log = tmp_path / "rotator.log"
    if kind == "symlink":
        log.symlink_to(victim)
    else:
        os.mkfifo(log)
    code = cli.main(["--log-file", str(log), "-c", str(path), "status"])
    err = capsys.readouterr().err
    assert code == 2, err
    what = "is a symbolic link" if kind == "symlink" else "is a FIFO"
    assert f"rotator: error: cannot open --log-file {log}: {what}" in err, err
    assert "fix: pass a --log-file that names a regular file" in err, err
    assert victim.read_text() == "root-owned content\n"


def test_a_link_planted_after_logrotate_moved_the_log_file_is_not_followed(tmp_path: Path) -> None:
    """The handler opens the path again after a move: the check holds at that re-open too. (The
    root's handlers are put back by tests/conftest.py's _logging_as_it_was.)"""
    import logging

    from rotator.observe.logs import setup_logging

    log, victim = tmp_path / "rotator.log", tmp_path / "victim.conf"
    victim.write_text("root-owned content\n")
    stderr = io.StringIO()
    setup_logging("info", stream=io.StringIO(), file=str(log))
    logger = logging.getLogger("rotator.test")
    logger.info("first line")
    log.rename(tmp_path / "rotator.log.1")
    log.symlink_to(victim)
    with contextlib.redirect_stderr(stderr):  # logging reports a handler's failure there, and goes on
        logger.info("second line")
    assert victim.read_text() == "root-owned content\n"
    assert "first line" in (tmp_path / "rotator.log.1").read_text()
    assert "is a symbolic link" in stderr.getvalue()


@pytest.mark.parametrize("command", [
    ["status", "--output", "json"], ["status"], ["audit", "verify", "--output", "json"]])
def test_a_reader_that_went_away_is_not_reported_as_a_bug(tmp_path: Path, command: list[str]) -> None:
    """`rotator status | head -1`: the pipe's reader is gone before rotator writes. That was "internal
    error: BrokenPipeError ... this is a bug" (exit 1), or the interpreter's "Exception ignored" at
    exit; now it exits as a command killed by SIGPIPE does, silently."""
    path = _bootstrapped(tmp_path)
    read, write = os.pipe()
    os.close(read)  # the reader is gone: rotator's first write to stdout fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, "-c", "import sys; from rotator.runners.cli import main; "
                               "sys.exit(main(sys.argv[1:]))", "-c", str(path), *command],
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=60, check=False)
    finally:
        os.close(write)
    assert proc.returncode == 141, proc.stderr
    assert proc.stderr == "", proc.stderr


def test_ctrl_c_wrapped_by_what_it_interrupted_exits_130_not_as_a_bug(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Python 3.11 wraps a KeyboardInterrupt raised while a class is made (a pydantic model, at a
    command's first import) in a RuntimeError: Ctrl-C early in `rotator demo` said "internal error"."""
    def interrupted(args: object) -> int:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise RuntimeError("Error calling __set_name__ on 'PydanticDescriptorProxy' instance") from exc

    monkeypatch.setitem(cli._COMMANDS, "status", interrupted)
    assert cli.main(["-c", str(tmp_path / "absent.toml"), "status"]) == 130
    assert "internal error" not in capsys.readouterr().err


def test_setup_logging_refuses_a_bad_level_or_log_file_and_leaves_logging_as_it_was(tmp_path: Path) -> None:
    import logging

    from rotator.core.errors import ConfigError
    from rotator.observe.logs import setup_logging

    before = list(logging.getLogger().handlers)
    with pytest.raises(ConfigError, match=r"log level 'errors' is not one of debug, info, warning, error"):
        setup_logging("errors")
    with pytest.raises(ConfigError, match="cannot open --log-file .*: No such file or directory"):
        setup_logging("info", file=str(tmp_path / "no" / "rotator.log"))
    assert logging.getLogger().handlers == before


def test_a_log_file_moved_or_removed_by_logrotate_is_started_again_at_its_path(tmp_path: Path) -> None:
    """Without copytruncate: the next record after a move opens a new file (0600) at the same path."""
    import logging
    import stat

    from rotator.observe.logs import setup_logging

    before = list(logging.getLogger().handlers)
    log = tmp_path / "rotator.log"
    try:
        setup_logging("info", stream=io.StringIO(), file=str(log))
        logger = logging.getLogger("rotator.test")
        logger.info("first line")
        log.rename(tmp_path / "rotator.log.1")
        logger.info("second line")
        assert "first line" in (tmp_path / "rotator.log.1").read_text()
        assert "second line" not in (tmp_path / "rotator.log.1").read_text()
        assert "second line" in log.read_text() and "first line" not in log.read_text()
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        log.unlink()
        logger.info("third line")
        assert log.read_text().count("line") == 1 and "third line" in log.read_text()
        logger.info("fourth line")
        assert "third line" in log.read_text() and "fourth line" in log.read_text(), "not reopened each time"
    finally:
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in before:
            root.addHandler(handler)


def test_an_unwritable_report_output_file_names_the_option_and_the_reason(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _bootstrapped(tmp_path)
    for target, reason in ((tmp_path / "no" / "q1.html", "No such file or directory"), (tmp_path, "Is a directory")):
        code = cli.main(["-c", str(path), "report", "--output-file", str(target)])
        err = capsys.readouterr().err
        assert code == 2, err
        assert f"rotator: error: cannot write --output-file {target}: {reason}\nfix: " in err, err
        assert "internal error" not in err


@pytest.mark.parametrize("where", ["missing-dir", "a-directory"])
def test_an_unwritable_bundle_names_the_option_and_leaves_no_tmp_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str) -> None:
    path = _policy_file(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "no" / "b.json" if where == "missing-dir" else out_dir / "b.json"
    if where == "a-directory":
        target.mkdir()
    before = sorted(tmp_path.rglob("*"))
    code = cli.main(["bundle", str(path), "-o", str(target)])
    err = capsys.readouterr().err
    assert code == 2, err
    reason = "No such file or directory" if where == "missing-dir" else "Is a directory"
    assert f"rotator: error: cannot write -o/--bundle {target}: {reason}\nfix: " in err, err
    assert sorted(tmp_path.rglob("*")) == before, "no .tmp file (nor anything else) left behind"


def test_bundle_of_a_missing_policy_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["bundle", str(tmp_path / "nosuch.toml")])
    err = capsys.readouterr().err
    assert code == 2 and f"cannot read policy file {tmp_path / 'nosuch.toml'}: No such file or directory" in err, err


def test_a_policy_named_twice_is_rotated_and_shown_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _bootstrapped(tmp_path)
    assert cli.main(["-c", str(path), "rotate", "p1", "p1", "--if-due", "--dry-run"]) == 0
    assert capsys.readouterr().out.count("p1: nothing-to-do") == 1
    assert cli.main(["-c", str(path), "status", "p1", "p1", "--output", "json"]) == 0
    assert [row["policy"] for row in json.loads(capsys.readouterr().out)] == ["p1"]
    code = cli.main(["-c", str(path), "rotate", "p1", "p1", "--revoke-previous-now", "--reason", "leaked"])
    assert code == 2, "not confirmed: stdin is no terminal"
    assert "would revoke the previous token of p1 at once" in capsys.readouterr().err  # not "of p1, p1"


def test_a_report_from_a_future_date_says_so_not_to_none(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _bootstrapped(tmp_path)
    future = (datetime.now(UTC) + timedelta(days=400)).date().isoformat()
    assert cli.main(["-c", str(path), "report", "--from", future]) == 2
    err = capsys.readouterr().err
    assert f"rotator: error: --from {future} is in the future, and --to defaults to now\nfix: " in err, err
    assert "None" not in err
    assert cli.main(["-c", str(path), "report", "--from", "2026-03-01", "--to", "2026-01-01"]) == 2
    assert "--to 2026-01-01 is not after --from 2026-03-01" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["status"], ["rotate", "p1", "--if-due", "--dry-run"], ["validate"]])
def test_an_invalid_rotator_log_level_is_refused_naming_the_variable(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        command: list[str]) -> None:
    path = _bootstrapped(tmp_path)
    monkeypatch.setenv("ROTATOR_LOG_LEVEL", "errors")
    assert cli.main(["-c", str(path), *command]) == 2
    err = capsys.readouterr().err
    assert "rotator: error: $ROTATOR_LOG_LEVEL is 'errors', which is not a log level\n" in err, err
    assert "fix: set ROTATOR_LOG_LEVEL to one of debug, info, warning, error" in err
    assert cli.main(["-c", str(path), "--log-level", "warning", *command]) == 0, "--log-level overrides it"
    monkeypatch.setenv("ROTATOR_LOG_LEVEL", "WARNING")  # as the AWS Lambda function reads it
    assert cli.main(["-c", str(path), *command]) == 0, capsys.readouterr().err


def test_an_empty_rotator_config_is_unset(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _policy_file(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ROTATOR_CONFIG", "")
    assert cli.main(["validate"]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out == "rotator.toml: valid, 1 policy: p1\n"


def test_rotate_refuses_a_reason_without_revoke_previous_now(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _bootstrapped(tmp_path)
    before = (tmp_path / "journal.db").read_bytes()
    assert cli.main(["-c", str(path), "rotate", "p1", "--reason", "why"]) == 2
    err = capsys.readouterr().err
    assert "rotator: error: --reason goes with --revoke-previous-now\n" in err, err
    assert "fix: drop --reason, or add --revoke-previous-now" in err
    assert (tmp_path / "journal.db").read_bytes() == before, "nothing run"


@pytest.mark.parametrize("args", [["p1", "--if-due", "--yes"], ["--all", "--yes"]], ids=["policy", "all"])
def test_rotate_refuses_yes_without_revoke_previous_now(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    """--yes confirms an emergency rotation alone; taken silently, it reads as a confirmation of something."""
    path = _bootstrapped(tmp_path)
    before = (tmp_path / "journal.db").read_bytes()
    assert cli.main(["-c", str(path), "rotate", *args]) == 2
    err = capsys.readouterr().err
    assert "rotator: error: --yes goes with --revoke-previous-now: " in err, err
    assert "fix: drop --yes, or add --revoke-previous-now" in err, err
    assert (tmp_path / "journal.db").read_bytes() == before, "nothing run"


_URL = ["--url", "https://influx.invalid"]
_MANAGEMENT = [*_URL, "--kind", "management-api", "--token-file", "t"]
_UUID = "11111111-1111-4111-8111-111111111111"


@pytest.mark.parametrize(("args", "says"), [
    (["--check", "--kind", "influxdb3", "--token-file", "t", "--insecure"], "--kind goes with --url;"),
    (["--insecure"], "--insecure goes with --url;"),
    (["--influxctl-profile", "cfg.toml", "--insecure"], "--insecure goes with --url;"),
    (["--check", "--token-file", "t"], "--token-file goes with --url or --influxctl-profile;"),
    (["--influxctl", "/opt/influxctl"], "--influxctl goes with --influxctl-profile;"),
    (["--org-id", "0123456789abcdef"], "--org-id goes with --url and --kind influxdb2;"),
    ([*_URL, "--kind", "influxdb3", "--token-file", "t", "--org-id", "0123456789abcdef"],
     "--org-id goes with --url and --kind influxdb2;"),
    (["--product", "dedicated"], "--product goes with --url and --kind management-api;"),
    ([*_URL, "--kind", "influxdb2", "--org-id", "0123456789abcdef", "--token-file", "t", "--product", "clustered"],
     "--product goes with --url and --kind management-api;"),
    (["--account-id", _UUID], "--account-id goes with --url, --kind management-api and --product dedicated;"),
    ([*_MANAGEMENT, "--cluster-id", _UUID],
     "--cluster-id goes with --url, --kind management-api and --product dedicated;"),
    ([*_MANAGEMENT, "--product", "clustered", "--account-id", _UUID, "--cluster-id", _UUID],
     "--account-id goes with --url, --kind management-api and --product dedicated;"),
    (["--check", "--yes"], "--yes goes with --revoke-orphans;"),
], ids=["kind", "insecure", "insecure-profile", "token-file", "influxctl", "org-id", "org-id-influxdb3", "product",
        "product-influxdb2", "account-id", "cluster-id-no-product", "ids-clustered", "yes"])  # fmt: skip
def test_inventory_refuses_a_flag_without_the_one_it_goes_with(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str],
        says: str) -> None:
    """Ignored, such a flag passes a check it was meant for: `inventory --check` with its --url forgotten
    listed the policies alone and exited 0, the instance never looked at. Refused before anything is read."""
    from rotator.core.journal import open_journal

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "rotator.toml"
    path.write_text('[rotator]\njournal = "journal.db"\n')  # no policy: nothing else to fail on
    open_journal(f"sqlite:///{tmp_path / 'journal.db'}").close()
    assert cli.main(["-c", str(path), "inventory", *args]) == 2
    err = capsys.readouterr().err
    assert f"rotator: error: {says} given without, it would be silently ignored\n" in err, err
    flag = says.split()[0]
    assert "\nfix: " in err and f"drop {flag}" in err.split("\nfix: ", 1)[1], err


def test_bootstrap_refuses_a_reason_without_replace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Only a repair (--replace) audits the reason: without it the reason was silently dropped."""
    path = _bootstrapped(tmp_path)
    (tmp_path / "first-token").write_text("not-used-0123456789")
    before = (tmp_path / "journal.db").read_bytes()
    assert cli.main(["-c", str(path), "bootstrap", "p1", "--token-file", str(tmp_path / "first-token"),
                     "--token-id", "abc", "--reason", "why"]) == 2
    err = capsys.readouterr().err
    assert "rotator: error: --reason goes with --replace\n" in err, err
    assert (tmp_path / "journal.db").read_bytes() == before, "nothing run"


def test_validate_of_a_file_without_policies_ends_without_a_colon(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.toml"
    empty.touch()
    assert cli.main(["validate", str(empty)]) == 0
    assert capsys.readouterr().out == f"{empty}: valid, 0 policies\n"


def test_report_output_json_is_the_json_format_and_a_disagreeing_format_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _bootstrapped(tmp_path, run=False)
    assert cli.main(["-c", str(path), "report", "--output", "json"]) == 0
    assert "policies" in json.loads(capsys.readouterr().out)
    assert cli.main(["-c", str(path), "report", "--output", "json", "--format", "json"]) == 0
    json.loads(capsys.readouterr().out)
    assert cli.main(["-c", str(path), "report"]) == 0
    assert capsys.readouterr().out.startswith("<!DOCTYPE html>"), "html stays the default"
    assert cli.main(["-c", str(path), "report", "--output", "json", "--format", "csv"]) == 2
    err = capsys.readouterr().err
    assert "rotator: error: --output json and --format csv disagree" in err and "fix: " in err, err


def test_a_hint_names_the_policy_file_the_command_was_given(tmp_path: Path) -> None:
    """A `rotator ...` command in a message carries the -c of the command that printed it (its absolute
    path): run from another directory (a cron job's log), the hint's command would otherwise read
    ./rotator.toml there, or another policy file with a policy of the same name and its journal."""
    policies = tmp_path / "etc"
    policies.mkdir()
    path = _policy_file(policies, top='[rotator]\njournal = "journal.db"')
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    proc = _rotator("-c", "../etc/rotator.toml", "status", cwd=elsewhere)
    assert proc.returncode == 2, proc.stderr
    assert f"`rotator -c {path} bootstrap" in proc.stderr, proc.stderr
    assert "`rotator bootstrap" not in proc.stderr
    proc = _rotator("status", cwd=policies)  # ./rotator.toml: the hint stays as it is
    assert "`rotator bootstrap" in proc.stderr and "`rotator -c" not in proc.stderr, proc.stderr


def test_log_lines_name_the_policy_file_in_rotator_commands(tmp_path: Path) -> None:
    import io
    import logging

    from rotator.observe.logs import setup_logging
    from rotator.runners.cli_options import name_policy_file, with_policy_file

    stream = io.StringIO()
    name_policy_file(str(tmp_path / "my policies.toml"))
    try:
        setup_logging("info", stream=stream, rewrite=with_policy_file)
        logging.getLogger("rotator.test").warning("fix the cause, then `rotator recover` (or `rotator -c x recover`)")
    finally:
        name_policy_file(None)
        setup_logging("info")
    assert f"`rotator -c '{tmp_path / 'my policies.toml'}' recover` (or `rotator -c x recover`)" in stream.getvalue()


def test_bootstrap_refuses_an_expiry_that_has_passed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _policy_file(tmp_path)
    token_file = tmp_path / "first-token"
    token_file.write_text("abcdefgh-token\n")
    code = cli.main(["-c", str(path), "bootstrap", "p1", "--token-file", str(token_file),
                     "--token-id", "9f4c0b6e-1b2a-4c3d-8e9f-0a1b2c3d4e5f", "--expires-at", "2020-01-01T00:00:00Z"])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert "--expires-at 2020-01-01T00:00:00Z has passed" in err and "abcdefgh" not in out + err
    assert not list(tmp_path.glob("*.db")), "nothing written: no journal"


@pytest.mark.parametrize("expires_in", [timedelta(days=-2), timedelta(days=5)], ids=["expired", "before-next-due"])
def test_status_flags_a_current_token_that_expires_before_its_next_rotation(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], expires_in: timedelta) -> None:
    """A bootstrapped token that expires in 5 days under a 30-day schedule (or has expired) would break
    every consumer before rotator rotates it: status says so and exits 4, --check too, and the row's
    EXPIRES IN cell shows it. Before, the row said ok and both exited 0."""
    from rotator.core.journal import RunRecord, open_journal

    now = datetime.now(UTC)
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")
    journal.begin_run(RunRecord("boot", "p1", "done", "bootstrap", now - timedelta(days=1), now - timedelta(days=1),
                                new_token_id="t-1", new_expires_at=now + expires_in,
                                published_at=now - timedelta(days=1)))
    journal.close()
    path = _policy_file(tmp_path, top='[rotator]\njournal = "journal.db"')
    for extra in ([], ["--check"]):
        code = cli.main(["-c", str(path), "status", *extra])
        out, err = capsys.readouterr()
        assert code == 4, out + err
        assert "rotator: attention: p1: its current token t-1 " in err and "rotate p1`" in err, err
        assert ("EXPIRED" if expires_in < timedelta(0) else "5d !") in out.replace("4d23h", "5d"), out
    code = cli.main(["-c", str(path), "status", "--output", "json"])
    row = json.loads(capsys.readouterr().out)[0]
    assert code == 4 and row["expires_before_rotation"] and row["needs_attention"]


def test_a_command_that_names_its_policy_file_is_left_as_it_is() -> None:
    from rotator.runners.cli_options import name_policy_file, with_policy_file

    name_policy_file("/etc/rotator/prod.toml")
    try:
        assert with_policy_file("run `rotator recover` now") == "run `rotator -c /etc/rotator/prod.toml recover` now"
        for text in ("run `rotator --config=/x recover`", "run `rotator status -c /y`", "`rotator -c /z plan`"):
            assert with_policy_file(text) == text
    finally:
        name_policy_file(None)
    assert with_policy_file("run `rotator recover` now") == "run `rotator recover` now"


def test_a_disabled_policy_s_expiring_token_shows_in_its_row_but_not_in_the_exit_code() -> None:
    from rotator.observe.status import PolicyStatus, render_table

    now = datetime.now(UTC)
    row = PolicyStatus("p1", False, "t-1", now - timedelta(days=1), now - timedelta(hours=1), now + timedelta(days=29),
                       False, "done", None, 0, 0, 0, 0, now)
    assert not row.expires_first and not row.needs_attention
    assert "EXPIRED" in render_table([row])
    enabled = PolicyStatus(**{**row.__dict__, "enabled": True})
    assert enabled.expires_first and enabled.needs_attention
