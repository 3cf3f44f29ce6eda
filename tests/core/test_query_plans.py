"""The reads a rotation and the daemon make for one policy use an index that starts with the policy:
their cost follows that policy's rows, never the number of policies (issue 12). SQLite's plans."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator.core import journal as journal_module
from rotator.core.journal import RevocationState, RunState, open_journal, ts

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _journal_with_many_due_revocations(path: Path, policies: int = 300) -> sqlite3.Connection:
    """Every policy has a bootstrap run and a revocation that is due and pending (as during an issuer
    outage, or with a grant missing), so that a plan reading by state alone would read them all."""
    open_journal(f"sqlite:///{path}").close()
    conn = sqlite3.connect(path)
    due = ts(NOW - timedelta(hours=1))
    conn.executemany(
        "INSERT INTO runs (run_id, policy, kind, state, started_at, updated_at, new_token_id, published_at) "
        "VALUES (?, ?, 'bootstrap', 'done', ?, ?, ?, ?)",
        [(f"boot-{i}", f"p{i}", due, due, f"tok-{i}", due) for i in range(policies)])
    conn.executemany(
        "INSERT INTO revocations (policy, token_id, run_id, reason, due_at, state) VALUES (?, ?, ?, 'rotated', ?, ?)",
        [(f"p{i}", f"old-{i}", f"boot-{i}", due, RevocationState.PENDING) for i in range(policies)])
    conn.commit()
    return conn


def _searches(conn: sqlite3.Connection, sql: str, params: list[object]) -> list[str]:
    return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            if row[3].startswith(("SEARCH", "SCAN"))]


@pytest.mark.parametrize("analyzed", [False, True], ids=["as-written", "analyzed"])
def test_a_policys_reads_search_its_own_rows_whatever_other_policies_have_due(tmp_path: Path, analyzed: bool) -> None:
    """rotator never runs ANALYZE (a journal has no statistics); with them, the plans must hold too."""
    conn = _journal_with_many_due_revocations(tmp_path / "journal.db")
    if analyzed:
        conn.execute("ANALYZE")
    policy = "p7"
    preflight = [policy, policy, *RunState.OPEN, policy, RevocationState.PENDING, ts(NOW), ts(NOW), policy,
                 *RunState.SUCCESS, policy, RevocationState.DISMISSED]
    state = [policy, *RunState.SUCCESS, policy, *RunState.OPEN, policy, RevocationState.PENDING,
             RevocationState.FAILED]
    for name, sql, params in (("preflight", journal_module._PREFLIGHT, preflight),
                              ("policy_state", journal_module._POLICY_STATE, state)):
        searches = _searches(conn, sql, params)
        tables = [s for s in searches if " leases " in s or " runs " in s or " revocations " in s]
        assert len(tables) >= 3, (name, searches)
        for search in tables:
            assert search.startswith("SEARCH") and "(policy=?" in search, (name, search)
    plan = " ".join(_searches(conn, journal_module._PREFLIGHT, preflight))
    assert "revocations_policy_state_due (policy=? AND state=? AND due_at<?)" in plan, plan
    assert "revocations_policy_state_due (policy=? AND state=?)" in plan, plan  # the dismissed ones


def test_the_preflight_finds_the_due_revocation_of_its_policy_among_many(tmp_path: Path) -> None:
    _journal_with_many_due_revocations(tmp_path / "journal.db").close()
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")
    try:
        seen = journal.preflight("p7", NOW)
        assert [(r.policy, r.token_id) for r in seen.due] == [("p7", "old-7")]
        assert [r.run_id for r in seen.claims["old-7"]] == [] and seen.last_success == "boot-7"
    finally:
        journal.close()
