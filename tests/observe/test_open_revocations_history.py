"""compliance.open_revocations finds a policy's revocations in a state rotator never writes by seeking
each distinct state of the policy (issue 12): its work does not follow the done revocations of the
policy's history, and it still finds every odd state, on both backends."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator.core.journal import RevocationState, open_journal, ts
from rotator.observe.compliance import open_revocations
from tests.harness import vm_steps

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
REV_SQL = "INSERT INTO revocations (policy, token_id, run_id, reason, due_at, state) VALUES (?, ?, ?, ?, ?, ?)"


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'journal.db'}"
    return str(request.getfixturevalue("pg_url"))


def _insert(url: str, rows: list[tuple[str, ...]]) -> None:
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///"):]) as conn:
            conn.executemany(REV_SQL, rows)
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg, pg.cursor() as cur:
        cur.executemany(REV_SQL.replace("?", "%s"), rows)


def _revocations(policy: str, state: str, count: int, prefix: str) -> list[tuple[str, ...]]:
    due = ts(NOW - timedelta(days=1))
    return [(policy, f"{prefix}{i}", f"run-{prefix}{i}", "superseded", due, str(state)) for i in range(count)]


def test_open_revocations_costs_the_same_with_10k_done_revocations(tmp_path: Path) -> None:
    """A policy with one done revocation and one with 10,000 (and a pending one each): the same
    SQLite VM steps. Its `state NOT IN (...)` read every done row: 36 steps fresh, 120,037 at 100k runs."""
    steps = {}
    for done in (1, 10_000):
        url = f"sqlite:///{tmp_path / f'journal-{done}.db'}"
        open_journal(url).close()
        _insert(url, _revocations("p", RevocationState.DONE, done, "old")
                + _revocations("p", RevocationState.PENDING, 1, "prev")
                + _revocations("other", RevocationState.DONE, 3, "x"))
        journal = open_journal(url, read_only=True)  # as `rotator status` opens it
        try:
            assert [r.token_id for r in open_revocations(journal, "p")] == ["prev0"]
            steps[done] = vm_steps(journal, lambda: open_revocations(journal, "p"))  # noqa: B023 (called here)
        finally:
            journal.close()
    assert steps[10_000] == steps[1], steps


def test_open_revocations_finds_every_state_rotator_never_writes(journal_url: str) -> None:
    """Each odd state, whether it sorts before, between or after the states rotator writes (the empty
    text, a capital, a trailing space among them), and never a done or dismissed row, nor another
    policy's."""
    open_journal(journal_url).close()
    odd = ["", "DONE", "closed", "done ", "zzz"]
    rows = (_revocations("p", RevocationState.DONE, 50, "old") + _revocations("p", RevocationState.DISMISSED, 2, "dis")
            + _revocations("p", RevocationState.PENDING, 1, "pen")
            + _revocations("p", RevocationState.FAILED, 1, "fail")
            + [row for i, state in enumerate(odd) for row in _revocations("p", state, 2, f"odd{i}-")]
            + _revocations("other", "weird", 1, "o"))
    _insert(journal_url, rows)
    journal = open_journal(journal_url, read_only=True)
    try:
        found = open_revocations(journal, "p")
    finally:
        journal.close()
    assert sorted((r.state, r.token_id) for r in found) == sorted(
        [("pending", "pen0"), ("failed", "fail0")]
        + [(state, f"odd{i}-{k}") for i, state in enumerate(odd) for k in range(2)])
