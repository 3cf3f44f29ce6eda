"""The CLI on a tampered journal and on text it keeps in the audit chain: `audit verify` names a dropped
chain table as a broken chain (exit 4, as `rotator report` does), every `--reason` is held to one
printable line of a bounded length, and `rotator prune` on a missing journal says what it does."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator.core import audit_chain
from rotator.core.journal import open_journal
from tests.core.test_audit_chain import _POLICY_FILE, _cli, raw


def _policy_file(tmp_path: Path, journal: str | None = None) -> Path:
    """rotator.toml in ``tmp_path``; its journal ``journal`` (default: j.db beside it)."""
    path = tmp_path / "j.db"
    (tmp_path / "rotator.toml").write_text(_POLICY_FILE.format(path=journal or path))
    (tmp_path / "t").write_text("x")
    return path


def _history(url: str) -> str:
    """Four events of the last hour; the head as `audit verify` prints it (SEQ:HASH@TIME)."""
    journal = open_journal(url)
    start = datetime.now(UTC) - timedelta(hours=1)
    for i in range(4):
        journal.record_event(start + timedelta(minutes=i), "p", f"run{i}", "plan", "ok", {})
    head = audit_chain.verify(journal).kept_link()
    journal.close()
    return head


# ------------------------------------------------------------------ a dropped chain table
@pytest.mark.parametrize("table", ["events", "audit_head", "audit_checkpoints"])
def test_audit_verify_names_a_dropped_chain_table_as_a_broken_chain(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str) -> None:
    """`audit verify` on a journal missing one of the chain's tables exited 1 with the hint for a
    journal it cannot reach ("check the journal path/URL, its permissions and free disk space"),
    while `rotator report` on it said "broken chain", exit 4. Now it says the same: the table is
    named, exit 4, with --expect too (its links are not checked)."""
    path = _policy_file(tmp_path)
    head = _history(f"sqlite:///{path}")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(f"DROP TABLE {table}")
    finally:
        conn.close()
    code, out, err = _cli(tmp_path, capsys, "audit", "verify")
    assert code == 4, (out, err)
    assert f"audit chain BROKEN: the journal has no {table} table (rotator never drops one" in out, out
    assert f'{{"missing_tables": ["{table}"]}}' in err and "free disk space" not in err, err
    code, out, err = _cli(tmp_path, capsys, "audit", "verify", "--expect", head, "--output", "json")
    assert code == 4, (out, err)
    found = json.loads(out)
    assert found["ok"] is False and found["broken"] == {"missing_tables": [table]}
    assert found["kept_links"] == {"problems": [], "pruned": [], "checked": False}
    code, out, err = _cli(tmp_path, capsys, "audit", "verify", "--expect", head)
    assert code == 4 and "kept links: none of 1 checked" in out and "held" not in out, (out, err)


def test_audit_verify_names_a_dropped_table_on_postgresql(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          pg_url: str) -> None:
    """The same on PostgreSQL, whose catalogue is probed after the failed statement."""
    _policy_file(tmp_path, journal=pg_url)
    _history(pg_url)
    with raw(pg_url) as sql:
        sql("DROP TABLE audit_checkpoints")
    code, out, err = _cli(tmp_path, capsys, "audit", "verify")
    assert code == 4, (out, err)
    assert "audit chain BROKEN: the journal has no audit_checkpoints table" in out, (out, err)


def test_audit_verify_of_an_intact_journal_is_unchanged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _policy_file(tmp_path)
    head = _history(f"sqlite:///{path}")
    code, out, err = _cli(tmp_path, capsys, "audit", "verify", "--expect", head)
    assert code == 0 and out == f"audit chain OK: 4 events, head {head}\nkept links: 1 of 1 held\n", (out, err)


# ------------------------------------------------------------------ --reason
#: the commands whose --reason is kept in the audit chain (each stops at the check: no policy file)
REASON_COMMANDS = {
    "rotate": ["rotate", "p", "--revoke-previous-now", "--yes", "--reason"],
    "bootstrap-replace": ["bootstrap", "p", "--token-file", "t", "--token-id", "i", "--replace", "--reason"],
    "dismiss": ["revoke-expired", "p", "--dismiss", "tok-1", "--reason"],
}
BAD_REASONS = {
    "line break": "incident 7\nrotated by ops",
    "escape sequence": "incident 7\x1b[2K\raudit chain OK",
    "too long": "x" * 501,
}


def _reason_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    from rotator.runners import cli

    code = cli.main(["-c", str(tmp_path / "absent.toml"), *argv])
    out, err = capsys.readouterr()
    return code, out + err


@pytest.mark.parametrize("bad", sorted(BAD_REASONS))
@pytest.mark.parametrize("command", sorted(REASON_COMMANDS))
def test_every_reason_is_one_printable_line_of_bounded_length(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, bad: str) -> None:
    """`rotate --revoke-previous-now --reason` and `bootstrap --replace --reason` took any text into
    the audit chain (control characters, any length); only `--dismiss`'s was held to one line of 500
    printable characters. Each is now, with the same error, before anything is read (exit 2)."""
    code, output = _reason_cli(tmp_path, capsys, [*REASON_COMMANDS[command], BAD_REASONS[bad]])
    assert code == 2, output
    assert "rotator: error: --reason must be one line of at most 500 printable characters\n" in output, output
    assert "cannot read policy file" not in output, "refused before the policy file is read"


@pytest.mark.parametrize("command", sorted(REASON_COMMANDS))
def test_a_reason_of_500_characters_goes_past_that_check(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         command: str) -> None:
    code, output = _reason_cli(tmp_path, capsys, [*REASON_COMMANDS[command], "  " + "x" * 500 + "\n"])
    assert code == 2 and "--reason" not in output and "cannot read policy file" in output, output


@pytest.mark.parametrize("spaced", ["token leaked in ticket\xa0INC-42", "漏洩\u3000INC-42",
                                    "paged \U0001f469\u200d\U0001f4bb"])
@pytest.mark.parametrize("command", sorted(REASON_COMMANDS))
def test_a_reason_with_unicode_spaces_or_joiners_goes_past_that_check(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, spaced: str) -> None:
    """A no-break space (pasted from a chat), an ideographic space (a CJK input method) or the joiner
    inside an emoji acts on no terminal: str.isprintable refused them all."""
    code, output = _reason_cli(tmp_path, capsys, [*REASON_COMMANDS[command], spaced])
    assert code == 2 and "--reason" not in output and "cannot read policy file" in output, output


# ------------------------------------------------------------------ prune on a missing journal
def test_prune_of_a_missing_journal_says_it_creates_none(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It said "this command only reads one and does not create it": prune writes (it deletes)."""
    path = _policy_file(tmp_path)
    code, out, err = _cli(tmp_path, capsys, "prune")
    assert code == 2, (out, err)
    assert f"rotator: error: there is no journal at {path}; this command does not create one\n" in err, err
    assert "only reads" not in err and "fix: check `journal` under [rotator]" in err, err
    assert not path.exists(), "none created"
