"""What `rotator` prints of text it did not write (a server's error body, a journal's rows, some of
them edited by hand) reaches the terminal with its control characters written out
(rotator/core/one_line.py): an escape sequence cannot retitle, clear or recolour the terminal, nor
hide the lines after it, and a carriage return cannot overwrite what rotator printed."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from rotator.core.errors import RotatorError
from rotator.runners import cli
from tests.runners.test_cli_usability import _policy_file

#: what an HTTP issuer answered in the review: a title, a cleared screen, red text
SERVER = "denied \x1b]0;PWNED-TITLE\x07\x1b[2J\x1b[31mRED TEXT\x1b[0m"


def _raw(text: str) -> bool:
    return any(c in text for c in "\x1b\x07\r\x9b\u202e")


def test_an_error_quoting_a_server_s_answer_is_written_out(capsys: pytest.CaptureFixture[str]) -> None:
    cli._print_error(RotatorError(f"verify the new token: HTTP 403: {SERVER}", hint=f"check {SERVER}"))
    err = capsys.readouterr().err
    assert not _raw(err), err
    assert "rotator: error: verify the new token: HTTP 403: denied \\x1b]0;PWNED-TITLE\\x07\\x1b[2J" in err, err
    assert err.splitlines()[1].startswith("fix: check denied \\x1b]0;"), err


def test_an_internal_error_s_text_is_written_out(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(args: argparse.Namespace) -> int:
        raise RuntimeError(SERVER)

    monkeypatch.setitem(cli._COMMANDS, "schema", crash)
    code = cli.main(["schema"])
    err = capsys.readouterr().err
    assert code == 1 and not _raw(err) and "internal error: RuntimeError: denied \\x1b]0;" in err, err


def test_a_command_s_text_output_is_written_out_line_by_line(capsys: pytest.CaptureFixture[str]) -> None:
    """The text of `rotate`, `revoke-expired`, `recover`, `bootstrap` (run results with servers' messages,
    token ids from the journal) goes through _emit: each line on its own, the line breaks kept."""
    cli._emit(argparse.Namespace(output="text"), {}, f"p1: failed - {SERVER}\np2: done \u202etok")
    out = capsys.readouterr().out
    assert not _raw(out), out
    assert out.splitlines() == ["p1: failed - denied \\x1b]0;PWNED-TITLE\\x07\\x1b[2J\\x1b[31mRED TEXT\\x1b[0m",
                                "p2: done \\u202etok"]
    cli._emit(argparse.Namespace(output="json"), {"message": SERVER}, "")
    assert "\\u001b]0;PWNED" in capsys.readouterr().out, "JSON stays JSON (json.dumps escapes it)"


def test_report_warnings_write_out_the_journal_s_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`rotator report` names the policies of events not in the policy file, from the journal: an event
    written under a name that holds escape sequences (any writer of the journal can) reached the terminal."""
    from rotator.core.journal import open_journal

    journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")
    journal.record_event(datetime.now(UTC) - timedelta(days=1), f"ghost{SERVER}", None, "plan", "ok", {})
    journal.close()
    path = _policy_file(tmp_path, top='[rotator]\njournal = "journal.db"')
    code = cli.main(["-c", str(path), "report", "--format", "json"])
    err = capsys.readouterr().err
    assert code == 0 and not _raw(err), err
    assert "so the report does not show them: ghostdenied \\x1b]0;PWNED-TITLE" in err, err


def test_status_attention_lines_write_out_the_journal_s_token_id(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rotator.core.journal import RunRecord, open_journal

    now = datetime.now(UTC)
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")
    journal.begin_run(RunRecord("boot", "p1", "done", "bootstrap", now - timedelta(days=1), now - timedelta(days=1),
                                new_token_id=f"t-1{SERVER}", new_expires_at=now + timedelta(days=5),
                                published_at=now - timedelta(days=1)))
    journal.close()
    path = _policy_file(tmp_path, top='[rotator]\njournal = "journal.db"')
    code = cli.main(["-c", str(path), "status"])
    err = capsys.readouterr().err
    assert code == 4 and "its current token t-1denied \\x1b]0;PWNED-TITLE" in err, err
    assert not _raw(err), err


def test_the_inventory_table_writes_out_every_cell(capsys: pytest.CaptureFixture[str]) -> None:
    entry = SimpleNamespace(target="issuer", token_id="t1", cls="managed", state=f"active{SERVER}",
                            policy=f"p1{SERVER}", age=None, expires_at=None, flags=[], reason="why", description="",
                            to_json=dict)  # fmt: skip
    result = SimpleNamespace(entries=[entry], counts=lambda: {("issuer", "managed"): 1})
    cli._print_inventory("table", result, datetime.now(UTC))
    out = capsys.readouterr().out
    assert not _raw(out) and "activedenied \\x1b]0;" in out and "p1denied \\x1b]0;" in out, out

