"""A journal whose schema_version rows were set back (by hand, or that table restored alone) upgrades
again at the next writable open, on SQLite and PostgreSQL: the migrations it runs again find their
columns and indexes there already (Journal._migrate_statement, _MIGRATIONS).

An ALTER TABLE ... ADD COLUMN of a column the table has failed that open ("duplicate column name:
issuer_target"), with a hint about the journal's path, permissions and disk space.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from rotator.core import audit_chain
from rotator.core.journal import _MIGRATIONS, RunRecord, RunState, open_journal
from tests.core.test_audit_chain import raw

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
#: what migrations 4 to 11 add (columns of runs; indexes)
ADDED_COLUMNS = {"fence", "mint_started_at", "token_created_at", "verified_fence", "tag_search_until", "issuer_target",
                 "new_token_sha256"}
ADDED_INDEXES = {"runs_policy_state", "runs_policy_published", "runs_policy_token", "revocations_state_due",
                 "revocations_policy_state_due", "runs_policy_tag_search", "runs_open", "runs_published",
                 "revocations_unfinished"}


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'journal.db'}"
    return str(request.getfixturevalue("pg_url"))


def _schema(journal_url: str) -> tuple[list[str], set[str], int, int]:
    """The columns of ``runs`` (in order, one entry each), every index, MAX(version), COUNT(*) of schema_version."""
    with raw(journal_url) as sql:
        if journal_url.startswith("sqlite:///"):
            columns = [str(row[1]) for row in sql("PRAGMA table_info(runs)")]
            indexes = {str(row[0]) for row in sql("SELECT name FROM sqlite_master WHERE type = 'index'")}
        else:
            columns = [str(row[0]) for row in sql(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = 'runs' ORDER BY ordinal_position")]
            indexes = {str(row[0]) for row in sql("SELECT indexname FROM pg_indexes "
                                                  "WHERE schemaname = current_schema()")}
        [(newest, count)] = sql("SELECT MAX(version), COUNT(*) FROM schema_version")
    return columns, indexes, int(newest), int(count)


@pytest.mark.parametrize("set_back_to", [10, 9, 7, 3])
def test_a_journal_whose_schema_version_was_set_back_upgrades_again(journal_url: str, set_back_to: int) -> None:
    journal = open_journal(journal_url)
    try:
        journal.begin_run(RunRecord("r1", "p", RunState.DONE, "rotate", T0, T0, issuer_target="cluster-a",
                                    new_token_sha256="ab" * 32), fence=None)
        journal.record_event(T0, "p", "r1", "plan", "ok", {})
    finally:
        journal.close()
    columns, indexes, newest, _count = _schema(journal_url)
    assert newest == len(_MIGRATIONS) and ADDED_COLUMNS <= set(columns) and ADDED_INDEXES <= indexes
    with raw(journal_url) as sql:  # a schema_version restored from an older backup, or edited by hand
        sql("DELETE FROM schema_version WHERE version > ?", set_back_to)

    journal = open_journal(journal_url)  # failed: "duplicate column name: issuer_target"
    try:
        (run,) = journal.runs("p")
        assert (run.issuer_target, run.new_token_sha256) == ("cluster-a", "ab" * 32), \
            "a column added again would have lost its values"
        journal.record_event(T0, "p", "r1", "publish", "ok", {})
        report = audit_chain.verify(journal)
        assert report.ok, report.problem
    finally:
        journal.close()
    again_columns, again_indexes, newest, count = _schema(journal_url)
    assert (newest, count) == (len(_MIGRATIONS), len(_MIGRATIONS)), "one row a version, up to the newest"
    assert again_columns == columns, "every column once, as before"
    assert again_indexes == indexes, "the indexes as before (migration 6 drops the one 4 makes again)"
    open_journal(journal_url, read_only=True).close()
