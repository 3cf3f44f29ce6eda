"""A journal upgrade the journal's user may not make says it was an upgrade, from which schema to which,
and what rights it needs; a transient error during one stays transient, and the upgrade runs again."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from rotator.core import journal as journal_module
from rotator.core.errors import JournalError, JournalUnavailable
from rotator.core.journal import _MIGRATIONS, open_journal
from tests.pg import read_write_role, while_slots_full

ROOT = Path(__file__).resolve().parents[2]
OLD = len(_MIGRATIONS) - 1
UPGRADE = f"upgrading the journal schema from v{OLD} to v{len(_MIGRATIONS)} failed"


def _make_old_journal(url: str) -> None:
    """A journal as the rotator before the last migration left it: only the migrations up to OLD ran."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(journal_module, "_MIGRATIONS", _MIGRATIONS[:OLD])
        open_journal(url).close()


def _schema_version(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    assert row is not None
    return int(row[0])


def test_an_upgrade_a_read_write_role_may_not_make_says_so_and_what_it_needs(pg_url: str) -> None:
    _make_old_journal(pg_url)
    with read_write_role(pg_url) as (limited, _role):
        with pytest.raises(JournalError) as err:
            while_slots_full(lambda: open_journal(limited))
        assert not isinstance(err.value, JournalUnavailable), "no retry makes the role the tables' owner"
        assert f"{UPGRADE}: must be owner of table runs" in str(err.value), str(err.value)
        hint = err.value.hint
        assert "owner" in hint and "`rotator recover`" in hint, hint
        anchor = re.search(r"docs/operations\.md#([a-z0-9-]+)", hint)
        assert anchor is not None, hint
        headings = {re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
                    for line in (ROOT / "docs" / "operations.md").read_text().splitlines() if line.startswith("#")}
        assert anchor.group(1) in headings, f"the hint links to a heading operations.md has: {anchor.group(1)}"
        assert _schema_version(pg_url) == OLD, "the upgrade rolled back as a whole"

        open_journal(pg_url).close()  # as the hint says: once as the owner
        assert _schema_version(pg_url) == len(_MIGRATIONS)
        while_slots_full(lambda: open_journal(limited)).close()  # then the usual role works


def test_a_connection_lost_during_an_upgrade_stays_transient_and_the_upgrade_runs_again(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _make_old_journal(pg_url)
    statement = journal_module.Journal._migrate_statement

    def server_ends_the_session(self: journal_module.Journal, cur: journal_module._Cursor, sql: str) -> None:
        cur.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        statement(self, cur, sql)

    monkeypatch.setattr(journal_module.Journal, "_migrate_statement", server_ends_the_session)
    with pytest.raises(JournalUnavailable) as err:
        open_journal(pg_url)
    assert UPGRADE not in str(err.value) and "retries" in err.value.hint
    monkeypatch.undo()
    assert _schema_version(pg_url) == OLD
    open_journal(pg_url).close()
    assert _schema_version(pg_url) == len(_MIGRATIONS)


def test_an_upgrade_of_a_sqlite_journal_file_this_user_may_not_write_says_so(tmp_path: Path) -> None:
    """SQLite opens a file it may not write read-only, without a word; the upgrade's first statement fails."""
    path = tmp_path / "journal.db"
    _make_old_journal(f"sqlite:///{path}")
    path.chmod(0o444)
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root ignores file permissions, and setpriv (util-linux) is not here to drop that")
        prefix = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"]
    script = ("from rotator.core.journal import open_journal\n"
              "try:\n"
              f"    open_journal('sqlite:///{path}')\n"
              "except Exception as exc:\n"
              "    print(type(exc).__name__, exc, '|', exc.hint)\n")
    proc = subprocess.run([*prefix, sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"JournalError journal {path}: {UPGRADE}: attempt to write a readonly database"), \
        proc.stdout
    assert "writes the journal file" in proc.stdout and "`rotator recover`" in proc.stdout, proc.stdout
    path.chmod(0o600)
    open_journal(f"sqlite:///{path}").close()
    assert journal_module.sqlite3.connect(path).execute("SELECT MAX(version) FROM schema_version").fetchone() == (
        len(_MIGRATIONS),)
