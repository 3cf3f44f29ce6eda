"""`rotator report` on a journal upgraded from before the audit chain (schema < 3), after a routine
prune whose cutoff falls inside a rotation made before the upgrade: the prune deletes that run's
unlinked events and, deleting no link, writes no checkpoint. The chain then cannot say whether it
backs the run (undecided), which is no tampering; a run row written outside rotator still is."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator.core import audit_chain
from rotator.core.journal import _MIGRATIONS, open_journal, ts
from tests.core.test_audit_chain import _POLICY_FILE, _cli
from tests.harness import offline_policy


def _run_row(conn: sqlite3.Connection, run_id: str, published: datetime, finished: datetime) -> None:
    conn.execute("INSERT INTO runs (run_id, policy, kind, state, started_at, updated_at, old_token_id, new_token_id, "
                 "published_at, finished_at) VALUES (?, 'p', 'rotate', 'done', ?, ?, ?, ?, ?, ?)",
                 (run_id, ts(published), ts(finished), f"old-{run_id}", f"new-{run_id}", ts(published), ts(finished)))


def _upgraded_and_pruned(path: Path, now: datetime, linked_first: bool) -> datetime:
    """A schema-1 journal at ``path`` holding run r1 (published 40 minutes before ``now``, its old token
    revoked 30 minutes later) and its events, opened (upgraded: they stay unlinked) and pruned with a
    cutoff 10 minutes after the publication. ``linked_first``: rotator wrote an event after the
    upgrade (else the prune's own event is the chain's first link). Returns the publication time."""
    published = now - timedelta(minutes=40)
    conn = sqlite3.connect(path)
    conn.executescript(str(_MIGRATIONS[0]) + "; CREATE TABLE schema_version (version INTEGER NOT NULL);"
                       "INSERT INTO schema_version VALUES (1);")
    _run_row(conn, "r1", published, published + timedelta(minutes=30))
    for step in ("plan", "mint", "verify", "publish", "published"):
        conn.execute("INSERT INTO events (at, policy, run_id, step, result, detail) VALUES (?, 'p', 'r1', ?, 'ok', ?)",
                     (ts(published), step, json.dumps({"token_id": "new-r1"})))
    conn.execute("INSERT INTO events (at, policy, run_id, step, result, detail) VALUES (?, 'p', 'r1', 'revoke_old', "
                 "'ok', ?)", (ts(published + timedelta(minutes=30)), json.dumps({"token_id": "old-r1"})))
    conn.commit()
    conn.close()
    journal = open_journal(f"sqlite:///{path}")
    if linked_first:
        journal.record_event(now - timedelta(minutes=5), "p", None, "plan", "ok", {})
    result = audit_chain.prune(journal, ts(published + timedelta(minutes=10)), ts(now))
    assert result.checkpoint is None, "the prune deleted unlinked rows only: no checkpoint"
    journal.close()
    return published


@pytest.mark.parametrize("linked_first", [False, True], ids=["prune-begins-chain", "event-begins-chain"])
def test_a_pre_chain_run_whose_events_a_prune_deleted_is_undecided_not_tampering(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], linked_first: bool) -> None:
    """The report exited 4 naming p/r1 as written outside rotator, while `audit verify` passed: the
    chain began within the hour after its publication, where its unlinked event is looked for, and
    the prune had deleted it. Its row now stands for the rotation (in_chain None, counted in the age)."""
    from rotator.observe import report

    path = tmp_path / "j.db"
    (tmp_path / "rotator.toml").write_text(_POLICY_FILE.format(path=path))
    now = datetime.now(UTC)
    _upgraded_and_pruned(path, now, linked_first)
    journal = open_journal(f"sqlite:///{path}")
    evidence = report.build(journal, [offline_policy(tmp_path, "p")], now - timedelta(days=1), now, now)
    journal.close()
    assert evidence.chain.ok
    policy = evidence.policies[0]
    assert policy.not_in_chain == [], policy.not_in_chain
    assert [(r.run_id, r.in_chain) for r in policy.rotations] == [("r1", None)]
    assert policy.oldest_token_id == "new-r1", "its row stands for the publication in the age"
    code, out, err = _cli(tmp_path, capsys, "report", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["policies"][0]["rotations"][0]["in_chain"] is None


def test_a_run_row_written_after_such_a_prune_is_still_named(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The prune excuses only what it could have deleted: a run dated after the chain began, or after
    the prune's cutoff (within the hour before the first link, whose unlinked event would be kept), with
    no event that says it published, was written outside rotator."""
    from rotator.observe import report

    path = tmp_path / "j.db"
    (tmp_path / "rotator.toml").write_text(_POLICY_FILE.format(path=path))
    now = datetime.now(UTC)
    published = _upgraded_and_pruned(path, now, linked_first=True)
    conn = sqlite3.connect(path)
    _run_row(conn, "after-cutoff", published + timedelta(minutes=20), published + timedelta(minutes=21))
    _run_row(conn, "after-chain", now - timedelta(minutes=2), now - timedelta(minutes=1))
    conn.commit()
    conn.close()
    journal = open_journal(f"sqlite:///{path}")
    evidence = report.build(journal, [offline_policy(tmp_path, "p")], now - timedelta(days=1), now, now)
    journal.close()
    assert sorted(evidence.policies[0].not_in_chain) == ["after-chain", "after-cutoff"]
    code, _, err = _cli(tmp_path, capsys, "report", "--format", "json")
    assert code == 4 and "p/after-chain" in err and "p/after-cutoff" in err and "p/r1" not in err, err
