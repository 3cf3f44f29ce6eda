"""The journal's audit hash chain (rotator/core/audit_chain.py) on SQLite and PostgreSQL: every way of
tampering with history is caught and named; concurrent writers never fork the chain; pruning keeps
it verifiable."""

from __future__ import annotations

import json
import random
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.core import audit_chain
from rotator.core.journal import Journal, Revocation, RunRecord, RunState, open_journal, ts
from tests.harness import offline_policy
from tests.runners.test_daemon import harness as harness  # noqa: F401 - a fixture, used by name

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
#: a prune of _old_and_new's history: the old events go, the new ones stay
CUTOFF, NOW = ts(T0 + timedelta(days=400)), ts(T0 + timedelta(days=501))


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'j.db'}"
    return str(request.getfixturevalue("pg_url"))


@contextmanager
def raw(url: str) -> Iterator[Callable[..., list[tuple[Any, ...]]]]:
    """Direct SQL on the journal, bypassing rotator: what an attacker with database access does."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url[len("sqlite:///"):], isolation_level=None)

        def run_sqlite(sql: str, *params: Any) -> list[tuple[Any, ...]]:
            return conn.execute(sql, params).fetchall()

        try:
            yield run_sqlite
        finally:
            conn.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg:

        def run_pg(sql: str, *params: Any) -> list[tuple[Any, ...]]:
            cur = pg.execute(sql.replace("?", "%s"), params or None)
            return [tuple(r) for r in cur.fetchall()] if cur.description else []

        yield run_pg


def _history(journal: Journal, n: int = 8, start: datetime = T0) -> None:
    for i in range(n):
        journal.record_event(start + timedelta(minutes=i), "mgmt", f"run-{i // 2}", "published" if i % 2 else "plan",
                             "ok", {"token_id": f"tok-{i}"})


def test_an_untouched_chain_verifies_and_every_event_is_linked(journal_url: str) -> None:
    journal = open_journal(journal_url)
    _history(journal)
    report = audit_chain.verify(journal)
    assert report.ok, report.problem
    assert report.checked == 8 and report.head_seq == 8
    with raw(journal_url) as sql:
        rows = sql("SELECT seq, prev_hash, hash, instance FROM events ORDER BY seq")
    assert [r[0] for r in rows] == list(range(1, 9))
    assert rows[0][1] == audit_chain.GENESIS
    assert all(rows[i][1] == rows[i - 1][2] for i in range(1, 8)), "each link names the previous one"
    assert all(r[3] for r in rows), "each event names the instance that wrote it"
    assert report.head_hash == rows[-1][2]


def _swap(sql: Callable[..., Any]) -> None:
    sql("UPDATE events SET seq = -1 WHERE seq = 3")
    sql("UPDATE events SET seq = 3 WHERE seq = 4")
    sql("UPDATE events SET seq = 4 WHERE seq = -1")


def _forge_insert(sql: Callable[..., Any]) -> None:
    """Insert a well-formed link (the algorithm is public) after seq 2, renumbering what follows."""
    prev = sql("SELECT hash FROM events WHERE seq = 2")[0][0]
    for seq in range(8, 2, -1):
        sql("UPDATE events SET seq = ? WHERE seq = ?", seq + 1, seq)
    forged = {"seq": 3, "at": ts(T0 + timedelta(minutes=2, seconds=30)), "policy": "mgmt", "run_id": "run-x",
              "step": "published", "result": "ok", "detail": json.dumps({"token_id": "forged"}), "instance": "evil"}
    sql("INSERT INTO events (seq, at, policy, run_id, step, result, detail, instance, prev_hash, hash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", forged["seq"], forged["at"], forged["policy"], forged["run_id"],
        forged["step"], forged["result"], forged["detail"], forged["instance"], prev, audit_chain.link(prev, forged))


TAMPERING: dict[str, tuple[Callable[[Callable[..., Any]], None], int | None, str]] = {
    # name: (what the attacker does, the seq the verifier must name, words of its message)
    "edited event": (lambda sql: sql("UPDATE events SET detail = ? WHERE seq = 3", '{"token_id": "tok-other"}'),
                     3, "was edited"),
    "edited time": (lambda sql: sql("UPDATE events SET at = ? WHERE seq = 5", ts(T0 + timedelta(days=1))),
                    5, "was edited"),
    "deleted event": (lambda sql: sql("DELETE FROM events WHERE seq = 3"), 4, "missing"),
    "reordered events": (_swap, 3, "does not follow"),
    "inserted well-formed link": (_forge_insert, 4, "does not follow"),
    "inserted unchained row": (
        lambda sql: sql("INSERT INTO events (at, policy, run_id, step, result, detail) VALUES (?, 'mgmt', 'r', "
                        "'published', 'ok', '{}')", ts(T0)), None, "without a chain link"),
    "truncated head": (lambda sql: sql("DELETE FROM events WHERE seq >= 7"), 6, "truncated head"),
    "head rewritten": (lambda sql: sql("UPDATE audit_head SET hash = ?", "f" * 64), 8, "does not match the chain head"),
    # Rows that are not what rotator writes are reported, not a crash of the verifier ("internal error").
    "detail not JSON": (lambda sql: sql("UPDATE events SET detail = 'x' WHERE seq = 2"), 2, "was edited"),
    "head row deleted": (lambda sql: sql("DELETE FROM audit_head"), None, "head row is missing"),
}


@pytest.mark.parametrize("detail", ["x", "[]", "7", '{"policies": []}', '{"policies": {"mgmt": 5}}'])
def test_a_checkpoint_whose_detail_is_not_an_object_is_tampering_not_a_crash(journal_url: str, detail: str,
                                                                               tmp_path: Path) -> None:
    """Not JSON, or JSON that is not an object: `audit verify` said "internal error" (exit 1) for the
    second, and the report crashed for both; both are an altered checkpoint."""
    from rotator.observe import report

    journal = open_journal(journal_url)
    _old_and_new(journal, new=4)
    audit_chain.prune(journal, CUTOFF, NOW)
    with raw(journal_url) as sql:
        sql("UPDATE audit_checkpoints SET detail = ?", detail)
    result = audit_chain.verify(journal)
    assert not result.ok and "checkpoint" in str(result.problem), result
    later = T0 + timedelta(days=600)
    evidence = report.build(journal, [offline_policy(tmp_path, "mgmt")], T0, later, later)
    assert evidence.chain.ok is False and evidence.policies[0].pruned == [], "an altered summary is no evidence"


@pytest.mark.parametrize("case", list(TAMPERING))
def test_each_kind_of_tampering_is_caught_and_the_first_broken_link_named(journal_url: str, case: str) -> None:
    tamper, seq, words = TAMPERING[case]
    journal = open_journal(journal_url)
    _history(journal)
    assert audit_chain.verify(journal).ok
    with raw(journal_url) as sql:
        tamper(sql)
    report = audit_chain.verify(journal)
    assert not report.ok, f"{case} went unnoticed"
    assert words in (report.problem or ""), report.problem
    if seq is not None:
        assert report.broken["seq"] == seq, report.broken
        assert report.broken["at"], "the broken link's time is named"


def test_the_verifier_reads_the_chain_a_page_at_a_time(journal_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Millions of events must not be held at once (the daemon's daily prune verifies first): pages of
    VERIFY_PAGE rows, each after the last seq of the one before, still see every link and every break."""
    monkeypatch.setattr(audit_chain, "VERIFY_PAGE", 3)
    journal = open_journal(journal_url)
    _history(journal)
    audit_chain.prune(journal, ts(T0 + timedelta(minutes=2)), ts(T0 + timedelta(days=1)))  # a checkpoint: seq 2
    report = audit_chain.verify(journal)
    assert report.ok and report.checked == 7 and report.start_seq == 2, report  # seq 3-8 and the prune event
    with raw(journal_url) as sql:
        sql("DELETE FROM events WHERE seq = 7")  # on the second page
    report = audit_chain.verify(journal)
    assert not report.ok and report.broken["seq"] == 8 and "missing" in str(report.problem), report
    with raw(journal_url) as sql:
        sql("DELETE FROM events WHERE seq >= 8")  # the newest, prune event included: the head row says more
    report = audit_chain.verify(journal)
    assert not report.ok and "truncated head" in str(report.problem) and report.broken["seq"] == 6, report


def test_concurrent_writers_never_fork_the_chain(journal_url: str) -> None:
    """Four connections (replicas) append at once; the chain stays one line with no gap or fork."""
    open_journal(journal_url).close()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        journal = open_journal(journal_url)
        try:
            for i in range(15):
                journal.record_event(T0 + timedelta(seconds=i), f"p{n}", None, "plan", "ok", {"i": i})
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            journal.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    report = audit_chain.verify(open_journal(journal_url))
    assert report.ok, report.problem
    assert report.checked == 60 and report.head_seq == 60


def test_a_writer_links_to_the_head_it_wrote_last_only_while_no_other_writer_moved_it(tmp_path: Path) -> None:
    """SQLite: a write transaction's first event links to the head this journal object wrote last,
    without reading the head row (the INSERT checks it); when another writer moved the head, or the
    remembered head never committed, the event is linked to the head row as it is."""
    url = f"sqlite:///{tmp_path / 'j.db'}"
    mine, other = open_journal(url), open_journal(url)

    def statements(write: Callable[[], None]) -> int:
        before = mine.stats.statements
        write()
        return mine.stats.statements - before

    def event(journal: Journal, i: int) -> Callable[[], None]:
        return lambda: journal.record_event(T0 + timedelta(minutes=i), "mgmt", None, "plan", "ok", {"i": i})

    # BEGIN IMMEDIATE, INSERT (which moves the head row), COMMIT; plus the head read when there is
    # no hint, and the INSERT refused by its check before it when the hint is stale; the first link
    # also reads the events without a link, which it records (audit_chain.UNLINKED_COUNT)
    assert statements(event(mine, 0)) == 5, "no hint yet: the head is read"
    assert statements(event(mine, 1)) == 3, "the head this object wrote last: no read"
    other.record_event(T0 + timedelta(minutes=2), "mgmt", None, "plan", "ok", {"by": "other"})
    assert statements(event(mine, 3)) == 5, "another writer moved the head: refused, read, linked"
    mine._head_hint = (4, "0" * 64)  # a head whose commit failed: the right seq, a hash nobody wrote
    assert statements(event(mine, 4)) == 5
    with mine.transaction():  # several events in one transaction: linked to the head kept in memory
        event(mine, 5)()
        event(mine, 6)()
    report = audit_chain.verify(mine)
    assert report.ok, report.problem
    assert report.checked == 7 and report.head_seq == 7
    with raw(url) as sql:
        assert [r[0] for r in sql("SELECT seq FROM events ORDER BY seq")] == list(range(1, 8))
    mine.close()
    other.close()


def _finished_run(journal: Journal, run_id: str, at: datetime, old: str | None, new: str) -> None:
    journal.begin_run(RunRecord(run_id=run_id, policy="mgmt", state=RunState.PLANNED, kind="rotate",
                                started_at=at, updated_at=at))
    run = journal.get_run(run_id)
    assert run is not None
    journal.update_run(run, state=RunState.DONE, old_token_id=old, new_token_id=new, published_at=at,
                       finished_at=at, updated_at=at)
    if old:
        journal.schedule_revocation(Revocation(policy="mgmt", token_id=old, run_id=run_id, reason="superseded",
                                               due_at=at, state="done", done_at=at))
    journal.record_event(at, "mgmt", run_id, "published", "ok", {"token_id": new})
    if old:
        journal.record_event(at + timedelta(minutes=1), "mgmt", run_id, "revoke_old", "ok", {"token_id": old})


def test_prune_writes_a_checkpoint_the_verifier_starts_from(journal_url: str) -> None:
    journal = open_journal(journal_url)
    ids = [f"tok-{i}" for i in range(5)]
    for i in range(1, 5):  # rotations 30 days apart; the last one recent
        if i == 4:
            journal.record_event(T0 + timedelta(days=95), "mgmt", "run-x", "mint", "failed", {"error": "issuer down"})
        _finished_run(journal, f"run-{i}", T0 + timedelta(days=30 * i), ids[i - 1], ids[i])
    cutoff = T0 + timedelta(days=100)  # prunes runs 1-3 and their events
    result = audit_chain.prune(journal, ts(cutoff), ts(T0 + timedelta(days=130)))
    assert result.events == 7 and result.checkpoint is not None
    assert result.runs == 3 and result.revocations == 3
    report = audit_chain.verify(journal)
    assert report.ok, report.problem
    assert report.start_seq == result.checkpoint.seq
    summary = result.checkpoint.detail["policies"]["mgmt"]
    assert summary["rotations"] == 3 and summary["revocations"] == 3 and summary["failures"] == 1
    assert summary["max_token_age_seconds"] == 30 * 86400
    with raw(journal_url) as sql:
        assert [r[0] for r in sql("SELECT run_id FROM runs ORDER BY run_id")] == ["run-4"]
        steps = [r[0] for r in sql("SELECT step FROM events ORDER BY seq")]
    assert steps == ["published", "revoke_old", "prune"], "the prune itself is a chained event"
    assert journal.last_success("mgmt") is not None, "the current token's run is never pruned"

    # The newest successful run is kept even when older than the cutoff: it names the current token.
    audit_chain.prune(journal, ts(T0 + timedelta(days=200)), ts(T0 + timedelta(days=200)))
    assert journal.last_success("mgmt") is not None and journal.last_success("mgmt").new_token_id == ids[4]
    assert audit_chain.verify(journal).ok

    # Pruning again with nothing older: no new checkpoint, still verifiable.
    assert audit_chain.prune(journal, ts(cutoff), ts(T0 + timedelta(days=201))).events == 0
    assert audit_chain.verify(journal).ok


def test_a_long_prune_goes_in_batches_each_with_its_checkpoint(journal_url: str) -> None:
    journal = open_journal(journal_url)
    _old_and_new(journal, new=4)
    result = audit_chain.prune(journal, CUTOFF, NOW, batch=3)
    assert result.events == 8 and result.checkpoint is not None and result.checkpoint.seq == 8
    made = audit_chain.checkpoints(journal)
    assert [c.seq for c in made] == [3, 6, 8] and [c.detail["events"] for c in made] == [3, 3, 2]
    report = audit_chain.verify(journal)
    assert report.ok, report.problem
    assert report.start_seq == 8 and report.checked == 4 + 3, "the kept events and one prune event per batch"
    with raw(journal_url) as sql:
        prunes = [json.loads(r[0]) for r in sql("SELECT detail FROM events WHERE step = 'prune' ORDER BY seq")]
    assert [p["last_pruned_seq"] for p in prunes] == [3, 6, 8] and [p["events"] for p in prunes] == [3, 3, 2]


def _old_and_new(journal: Journal, old: int = 8, new: int = 2) -> None:
    _history(journal, old, T0)
    _history(journal, new, T0 + timedelta(days=500))


def _after_call(monkeypatch: pytest.MonkeyPatch, name: str, action: Callable[[], Any], call: int = 1) -> None:
    """Run ``action`` once, right after the ``call``-th call of ``audit_chain.<name>`` returned:
    ``_verify`` is prune's verification (before any deletion), ``_checkpoint_for`` a batch's check of
    its links (before its write transaction)."""
    original, calls = getattr(audit_chain, name), [0]

    def call_then_act(*args: Any) -> Any:
        result = original(*args)
        calls[0] += 1
        if calls[0] == call:
            action()
        return result

    monkeypatch.setattr(audit_chain, name, call_then_act)


def test_a_rotation_writes_while_prune_verifies_the_chain(journal_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The verification of the whole chain (seconds on millions of events) holds no write lock: an
    event another connection writes meanwhile commits at once and is chained after the pruned ones."""
    journal = open_journal(journal_url)
    _history(journal, 6, T0)
    other = open_journal(journal_url)
    if journal_url.startswith("sqlite:///"):
        other._connection().execute("PRAGMA busy_timeout = 100")  # the old prune held the lock: fail fast
    _after_call(monkeypatch, "_verify", lambda: other.record_event(T0 + timedelta(days=600), "mgmt", "run-new",
                                                                 "published", "ok", {"token_id": "tok-new"}))
    result = audit_chain.prune(journal, ts(T0 + timedelta(days=400)), ts(T0 + timedelta(days=601)), batch=4)
    assert result.events == 6 and result.checkpoint is not None and result.checkpoint.seq == 6
    report = audit_chain.verify(journal)
    assert report.ok, report.problem
    with raw(journal_url) as sql:
        steps = [r[0] for r in sql("SELECT step FROM events ORDER BY seq")]
    assert steps == ["published", "prune", "prune"], "the rotation's event is kept, the prunes chained after it"
    other.close()


@pytest.mark.parametrize("when", ["after the verification", "after its batch was checked"])
def test_an_event_edited_while_pruning_is_kept_as_evidence(
    journal_url: str, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """An edit between the verification and a batch's deletion is caught: by the batch's check of
    its links, or, after that check, by the write transaction's comparison with what it checked."""
    journal = open_journal(journal_url)
    _old_and_new(journal)

    def edit() -> None:
        with raw(journal_url) as sql:
            sql("UPDATE events SET result = 'failed' WHERE seq = 5")

    if when == "after the verification":
        _after_call(monkeypatch, "_verify", edit)
        caught = "event seq 5 .* edited: its content no longer matches its hash"
    else:
        _after_call(monkeypatch, "_checkpoint_for", edit, call=2)
        caught = r"event\(s\) seq 4..6 were edited after they were checked"
    with pytest.raises(ValueError, match=f"changed while pruning, not pruning from seq 4: {caught}"):
        audit_chain.prune(journal, CUTOFF, NOW, batch=3)
    assert [c.seq for c in audit_chain.checkpoints(journal)] == [3], "only the batch before the edit went"
    with raw(journal_url) as sql:
        assert sql("SELECT result FROM events WHERE seq = 5") == [("failed",)], "the edited event is kept"
    report = audit_chain.verify(journal)
    assert not report.ok and report.broken["seq"] == 5


def test_a_prune_that_failed_part_way_is_finished_by_running_it_again(
    journal_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = open_journal(journal_url)
    _old_and_new(journal)
    appended = [0]
    original = audit_chain.append_event

    def full_disk_in_the_second_batch(*args: Any) -> None:  # after its DELETE, before its COMMIT
        appended[0] += 1
        if appended[0] == 2:
            raise OSError(28, "No space left on device")
        original(*args)

    monkeypatch.setattr(audit_chain, "append_event", full_disk_in_the_second_batch)
    with pytest.raises(OSError, match="No space"):
        audit_chain.prune(journal, CUTOFF, NOW, batch=3)
    assert [c.seq for c in audit_chain.checkpoints(journal)] == [3], "the second batch rolled back whole"
    with raw(journal_url) as sql:
        assert sql("SELECT MIN(seq) FROM events")[0][0] == 4, "its deletion too"
    assert audit_chain.verify(journal).ok

    monkeypatch.setattr(audit_chain, "append_event", original)  # the disk has room again
    result = audit_chain.prune(journal, CUTOFF, NOW, batch=3)
    assert result.events == 5 and result.checkpoint is not None and result.checkpoint.seq == 8
    assert [c.seq for c in audit_chain.checkpoints(journal)] == [3, 6, 8]
    report = audit_chain.verify(journal)
    assert report.ok, report.problem
    with raw(journal_url) as sql:
        assert sql("SELECT MIN(seq) FROM events")[0][0] == 9, "every old event went, none twice"


def test_a_prune_told_to_stop_ends_before_its_next_batch_and_the_next_goes_on(journal_url: str) -> None:
    journal = open_journal(journal_url)
    _old_and_new(journal)
    asked = [0]

    def after_one_batch() -> bool:
        asked[0] += 1
        return asked[0] > 2  # asked before the verification and before each batch

    result = audit_chain.prune(journal, CUTOFF, NOW, batch=3, stop=after_one_batch)
    assert result.stopped and result.events == 3 and "stopped before the end" in result.text()
    assert [c.seq for c in audit_chain.checkpoints(journal)] == [3]
    assert audit_chain.verify(journal).ok
    assert audit_chain.prune(journal, CUTOFF, NOW, batch=3, stop=lambda: True).stopped, "stopped before anything"
    result = audit_chain.prune(journal, CUTOFF, NOW, batch=3)
    assert not result.stopped and result.events == 5
    assert [c.seq for c in audit_chain.checkpoints(journal)] == [3, 6, 8]
    assert audit_chain.verify(journal).ok


def test_publish_times_in_checkpoints_of_the_previous_version_are_carried_on(journal_url: str) -> None:
    """Checkpoints written before `last_published` existed name only their own range's policies: the
    first prune after the upgrade gathers the times from all of them."""
    journal = open_journal(journal_url)
    journal.record_event(T0, "a", "run-a1", "published", "ok", {"token_id": "a1"})
    journal.record_event(T0 + timedelta(days=1), "b", "run-b1", "published", "ok", {"token_id": "b1"})
    journal.record_event(T0 + timedelta(days=5), "a", "run-a2", "published", "ok", {"token_id": "a2"})
    _history(journal, 2, T0 + timedelta(days=500))
    audit_chain.prune(journal, CUTOFF, NOW, batch=1)
    made = audit_chain.checkpoints(journal)
    assert [c.detail["policies"].get("a", {}).get("max_token_age_seconds") for c in made] == [0, None, 5 * 86400]
    # each names only its own range's policies: the others' publish times are in the earlier ones
    assert [sorted(c.detail["policies"]) for c in made] == [["a"], ["b"], ["a"]]
    assert all(c.detail[audit_chain.ELSEWHERE_IN_EARLIER] is True and "last_published_elsewhere" not in c.detail
               for c in made)  # fmt: skip
    # The same checkpoints as a previous version wrote them (no last_published, no predecessor digest):
    # b's last publish is two checkpoints back, and only the walk back through them finds it.
    with raw(journal_url) as sql:
        for c in made:
            detail = {k: v for k, v in c.detail.items()
                      if k not in (audit_chain.ELSEWHERE_IN_EARLIER, "previous_checkpoint_sha256")}
            sql("UPDATE audit_checkpoints SET detail = ? WHERE seq = ?", json.dumps(detail, sort_keys=True), c.seq)
    with journal.audit_transaction(write=False) as (cur, _lock):
        carried = audit_chain._last_published(cur, audit_chain.latest_checkpoint(cur))
    assert carried == {"a": ts(T0 + timedelta(days=5)), "b": ts(T0 + timedelta(days=1))}


def test_batch_must_hold_an_event(journal_url: str) -> None:
    journal = open_journal(journal_url)
    with pytest.raises(ValueError, match="at least one event"):
        audit_chain.prune(journal, ts(T0), ts(T0), batch=0)


def test_two_prunes_at_once_prune_each_event_once(journal_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's daily prune and `rotator prune` at the same time: the one that finds another's
    checkpoint in its write transaction checks its batch again from there."""
    journal = open_journal(journal_url)
    _old_and_new(journal)
    other: list[audit_chain.PruneResult] = []
    _after_call(monkeypatch, "_checkpoint_for",
                lambda: other.append(audit_chain.prune(open_journal(journal_url), CUTOFF, NOW, batch=3)))
    first = audit_chain.prune(journal, CUTOFF, NOW, batch=3)
    assert other[0].events == 8 and first.events == 0
    assert [c.seq for c in audit_chain.checkpoints(journal)] == [3, 6, 8]
    report = audit_chain.verify(journal)
    assert report.ok, report.problem
    with raw(journal_url) as sql:
        assert sql("SELECT COUNT(*) FROM events WHERE step = 'prune'")[0][0] == 3


def test_an_edit_while_a_batch_is_deleted_waits_for_it(journal_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between the batch's comparison and its DELETE nothing can edit its events: SQLite's writer
    holds the database, PostgreSQL's comparison locks the rows (READ COMMITTED would let an edit
    commit in between, and the DELETE would erase it)."""
    journal = open_journal(journal_url)
    _history(journal, 6, T0)
    _history(journal, 2, T0 + timedelta(days=500))
    original, outcome = audit_chain._event_rows, []

    def reread_then_edit(cur: Any, start_seq: int, end_seq: int, lock: str = "") -> list[tuple[Any, ...]]:
        rows = original(cur, start_seq, end_seq, lock)
        if cur is not None and start_seq == 0 and lock is not None and not outcome and _in_write_tx(journal):
            outcome.append(_edit_with_short_lock_timeout(journal_url, "UPDATE events SET result = 'x' WHERE seq = 2"))
        return rows

    monkeypatch.setattr(audit_chain, "_event_rows", reread_then_edit)
    result = audit_chain.prune(journal, CUTOFF, NOW)
    assert outcome == ["locked"], "the edit had to wait for the batch's write transaction"
    assert result.events == 6 and audit_chain.verify(journal).ok


def _in_write_tx(journal: Journal) -> bool:
    import inspect

    return any(frame.function == "_delete_checked" for frame in inspect.stack())


def _edit_with_short_lock_timeout(url: str, sql: str) -> str:
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url[len("sqlite:///"):], timeout=0.2, isolation_level=None)
        try:
            conn.execute(sql)
            return "edited"
        except sqlite3.OperationalError as exc:
            return "locked" if "locked" in str(exc) else str(exc)
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg:
        pg.execute("SET lock_timeout = '200ms'")
        try:
            pg.execute(sql.replace("?", "%s"))
            return "edited"
        except psycopg.errors.LockNotAvailable:
            return "locked"


def test_an_event_that_no_longer_follows_the_batch_stops_the_prune(
    journal_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = open_journal(journal_url)
    _old_and_new(journal)

    def relink() -> None:
        with raw(journal_url) as sql:
            sql("UPDATE events SET prev_hash = ? WHERE seq = 4", "f" * 64)

    _after_call(monkeypatch, "_checkpoint_for", relink)
    with pytest.raises(ValueError, match="event seq 4 does not follow the last link to prune"):
        audit_chain.prune(journal, CUTOFF, NOW, batch=3)
    assert audit_chain.checkpoints(journal) == [] and not audit_chain.verify(journal).ok


def test_an_event_without_a_link_inserted_while_pruning_is_kept(
    journal_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = open_journal(journal_url)
    _old_and_new(journal, old=4)

    def insert_unlinked() -> None:
        with raw(journal_url) as sql:
            sql("INSERT INTO events (at, policy, step, result, detail) VALUES (?, 'mgmt', 'plan', 'ok', '{}')", ts(T0))

    _after_call(monkeypatch, "_verify", insert_unlinked)
    with pytest.raises(ValueError, match="1 event.* without a chain link were inserted"):
        audit_chain.prune(journal, CUTOFF, NOW)
    with raw(journal_url) as sql:
        assert sql("SELECT COUNT(*) FROM events WHERE seq IS NULL")[0][0] == 1, "the inserted row is kept"
    assert not audit_chain.verify(journal).ok


def test_a_token_age_spanning_batches_is_kept_in_the_summaries(journal_url: str) -> None:
    """A policy's token published in one batch and replaced three batches later (no event of its
    policy in between): the checkpoint of the replacement knows when the token was published."""
    journal = open_journal(journal_url)
    journal.record_event(T0, "a", "run-a1", "published", "ok", {"token_id": "a1"})
    for i in range(6):
        journal.record_event(T0 + timedelta(days=1 + i), "b", f"run-b{i}", "published", "ok", {"token_id": f"b{i}"})
    journal.record_event(T0 + timedelta(days=10), "a", "run-a2", "published", "ok", {"token_id": "a2"})
    _history(journal, 2, T0 + timedelta(days=500))
    audit_chain.prune(journal, CUTOFF, NOW, batch=3)
    ages = [c.detail["policies"].get("a", {}).get("max_token_age_seconds") for c in audit_chain.checkpoints(journal)]
    assert ages == [0, None, 10 * 86400]
    assert audit_chain.verify(journal).ok


@pytest.mark.parametrize("tamper", ["edit the first", "renumber the first", "delete the first",
                                    "delete the middle one"])
def test_an_earlier_checkpoint_edited_or_removed_is_caught(journal_url: str, tamper: str) -> None:
    """The chain vouches for the latest checkpoint; each checkpoint vouches for the one before it."""
    journal = open_journal(journal_url)
    _old_and_new(journal)
    audit_chain.prune(journal, CUTOFF, NOW, batch=3)
    assert audit_chain.verify(journal).ok
    with raw(journal_url) as sql:
        if tamper == "edit the first":
            sql("UPDATE audit_checkpoints SET detail = replace(detail, '\"rotations\": 1', '\"rotations\": 7') "
                "WHERE seq = 3")
        elif tamper == "renumber the first":  # the report shows a checkpoint's seq
            sql("UPDATE audit_checkpoints SET seq = 2 WHERE seq = 3")
        elif tamper == "delete the first":
            sql("DELETE FROM audit_checkpoints WHERE seq = 3")
        else:
            sql("DELETE FROM audit_checkpoints WHERE seq = 6")
    report = audit_chain.verify(journal)
    assert not report.ok, f"{tamper} went unnoticed"
    assert "checkpoint" in str(report.problem)


@pytest.mark.parametrize("tamper", ["edit kept event", "replace checkpoint", "insert before checkpoint"])
def test_tampering_after_prune_is_caught(journal_url: str, tamper: str) -> None:
    journal = open_journal(journal_url)
    _old_and_new(journal, new=4)
    result = audit_chain.prune(journal, CUTOFF, NOW)
    assert result.checkpoint is not None and result.checkpoint.seq == 8
    with raw(journal_url) as sql:
        if tamper == "edit kept event":
            sql("UPDATE events SET result = 'failed' WHERE seq = 10")
        elif tamper == "replace checkpoint":  # hide the pruned range's real last link
            sql("UPDATE audit_checkpoints SET hash = ?, detail = ?", "a" * 64,
                json.dumps({"last_pruned_hash": "a" * 64, "last_pruned_seq": 8}))
        else:
            sql("INSERT INTO events (seq, at, policy, run_id, step, result, detail, instance, prev_hash, hash) "
                "VALUES (2, ?, 'mgmt', 'r', 'plan', 'ok', '{}', 'x', ?, ?)", ts(T0), "0" * 64, "1" * 64)
    report = audit_chain.verify(journal)
    assert not report.ok, f"{tamper} after pruning went unnoticed"


def test_a_broken_chain_is_not_pruned(journal_url: str) -> None:
    journal = open_journal(journal_url)
    _history(journal)
    with raw(journal_url) as sql:
        sql("DELETE FROM events WHERE seq = 2")
    with pytest.raises(ValueError, match="broken"):
        audit_chain.prune(journal, ts(T0 + timedelta(days=1)), ts(T0 + timedelta(days=2)))
    with raw(journal_url) as sql:
        assert sql("SELECT COUNT(*) FROM events")[0][0] == 7, "the evidence of tampering is kept"


def _journal_from_before_the_chain(path: Path, events: Sequence[tuple[str, str | None, str, str]]) -> None:
    """A schema-1 journal (from before migration 2, which added the chain) at ``path`` holding
    ``events`` (at, run id, step, result) of policy p: they stay unlinked once it is upgraded."""
    from rotator.core.journal import _MIGRATIONS

    conn = sqlite3.connect(path)
    conn.executescript(str(_MIGRATIONS[0]) + "; CREATE TABLE schema_version (version INTEGER NOT NULL);"
                       "INSERT INTO schema_version VALUES (1);")
    conn.executemany("INSERT INTO events (at, policy, run_id, step, result, detail) VALUES (?, 'p', ?, ?, ?, '{}')",
                     events)
    conn.commit()
    conn.close()


def test_events_written_before_the_chain_existed_are_counted_not_forged(tmp_path: Path) -> None:
    """A journal from before migration 2: its old events stay unlinked; one more such row is an insertion."""
    path = tmp_path / "old.db"
    _journal_from_before_the_chain(path, [(ts(T0), None, "plan", "ok")])
    journal = open_journal(f"sqlite:///{path}")
    _history(journal, 3)
    assert audit_chain.verify(journal).ok
    with raw(f"sqlite:///{path}") as sql:
        sql("INSERT INTO events (at, policy, step, result, detail) VALUES (?, 'p', 'plan', 'ok', '{}')", ts(T0))
    assert not audit_chain.verify(journal).ok


def test_the_daemon_prunes_once_a_day(harness: Callable[..., Any]) -> None:
    """rotator/runners/daemon.py's hook: history older than keep_history (default 400d) goes at the first
    pass and then once a day, into a checkpoint, on a thread beside the pass; the chain stays verifiable."""
    h = harness([("a", "1h", "")])
    journal = h.daemon.journal
    now = h.clock.now()
    _history(journal, 4, now - timedelta(days=500))
    _history(journal, 2, now - timedelta(days=399, hours=12))  # older than 400d in 12 h

    def tick_and_wait() -> None:
        h.tick()
        if h.daemon._prune_thread is not None:
            h.daemon._prune_thread.join(timeout=30)
            assert not h.daemon._prune_thread.is_alive()

    tick_and_wait()
    [first] = audit_chain.checkpoints(journal)
    assert first.seq == 4 and first.detail["events"] == 4
    assert audit_chain.verify(journal).ok
    h.clock.advance(timedelta(hours=23))  # the second batch is old enough now, but a day has not passed
    tick_and_wait()
    assert len(audit_chain.checkpoints(journal)) == 1, "not again within the day"
    h.clock.advance(timedelta(hours=2))
    tick_and_wait()
    assert len(audit_chain.checkpoints(journal)) == 2, "a day later, it prunes again"
    assert audit_chain.verify(journal).ok


@pytest.mark.parametrize("detail", [
    {}, {"token_id": "t-1", "store": "vault", "version": 3, "ok": True, "ratio": 0.1, "none": None},
    {"note": "caf\u00e9 \u2603 \"quoted\"\n", "big": 2**70, "nan": float("nan")},
    {"nested": {10: "a", 9: "b"}, "list": [1, "2"]},  # not flat: through the text, as a verifier reads it
    {"when": datetime(2026, 3, 1, tzinfo=UTC), "gap": timedelta(minutes=5)},  # default=str values
])
def test_an_event_is_hashed_from_its_detail_as_a_verifier_reads_the_stored_text(detail: dict[str, Any]) -> None:
    text, detail_json = audit_chain.detail_text(detail)  # what Journal.record_event stores, and links with
    assert (detail_json is None) == ("nested" in detail or "when" in detail)  # not text keys and scalars
    event = {"seq": 7, "at": "2026-03-01T00:00:00.000000Z", "policy": "p", "run_id": "r", "step": "mint",
             "result": "ok", "instance": "host", "detail": text}
    assert audit_chain.canonical(event, detail) == audit_chain.canonical(event)
    assert audit_chain.link("h", event, detail) == audit_chain.link("h", event)
    assert audit_chain.link("h", event, detail_json=detail_json or None) == audit_chain.link("h", event)
    # the stored text of earlier versions (json.dumps with its default separators) reads the same
    older = {**event, "detail": json.dumps(detail, sort_keys=True, default=str)}
    assert audit_chain.canonical(older) == audit_chain.canonical(event)


def _encoded(event: dict[str, Any]) -> str:
    """canonical() as the encoder writes it: every field through json.dumps (the reference)."""
    text = event["detail"]
    fields = {k: event[k] for k in ("seq", "at", "policy", "run_id", "step", "result", "instance")}
    fields["detail"] = json.loads(text) if isinstance(text, str) else dict(text)
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def test_a_flat_detail_is_stored_as_the_encoder_writes_it() -> None:
    """detail_text writes a flat detail (text keys; text, integer, boolean, null values) without the
    encoder; floats and other types go through it. Both must give the encoder's canonical text."""
    import enum

    class Kind(enum.StrEnum):
        ROTATE = "rotate"

    rng = random.Random(5)
    values: list[Any] = ["", "a", "caf\u00e9", "\u2603\"\\\n\x00", "\U0001f600", 0, -5, 2**70, True, False, None,
                         1.5, float("nan"), 1e300, Kind.ROTATE]
    keys = ["a", "b", "token_id", "Z", "\u00e9", "k\n", "10", "9", ""]
    for _ in range(5000):
        detail = {rng.choice(keys): rng.choice(values) for _ in range(rng.randint(0, 6))}
        text, flat = audit_chain.detail_text(detail)
        assert text == json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
        assert flat == (text if audit_chain.is_flat(detail) else None), detail


def test_the_canonical_text_put_together_directly_is_the_encoders() -> None:
    """canonical_with writes rotator's own field types without the encoder; any other type (an edited
    row: a seq stored as text, a number for a run id) goes through it. Both must give the encoder's text."""
    rng = random.Random(3)
    words = ["", "p", "caf\u00e9", "\u2603 \"q\" \\ \n\t\x00", "r-" + "x" * 40, "\U0001f600",
             "2026-03-01T00:00:00.000000Z"]
    odd: list[Any] = [None, 3, 2.5, True, ["a"], {"k": 1}, "7"]
    for _ in range(3000):
        event: dict[str, Any] = {k: rng.choice(words) for k in ("at", "policy", "step", "result", "instance")}
        event["run_id"] = rng.choice([None, *words])
        event["seq"] = rng.choice([0, 1, 2**40, rng.randint(1, 10**6)])
        if rng.random() < 0.2:
            event[rng.choice(["at", "policy", "step", "result", "instance", "run_id", "seq"])] = rng.choice(odd)
        detail = rng.choice([{}, {"token_id": rng.choice(words), "n": rng.randint(-5, 5), "f": 0.1, "b": False},
                             {"nested": {"a": [1, {"b": None}]}}, {"z": "1", "a": "2"}])
        event["detail"], _flat = audit_chain.detail_text(detail)
        assert audit_chain.canonical(event) == _encoded(event), event
        assert audit_chain.canonical(event, detail) == _encoded(event), event
        # a detail given as a mapping, not text (integer keys sort as numbers there, as text once dumped)
        event["detail"] = {"nested": {10: "a", 9: "b"}, "z": 1}
        assert audit_chain.canonical(event) == _encoded(event), event


def test_an_unlinked_event_dated_after_the_chain_began_is_caught_even_with_the_count_raised(journal_url: str) -> None:
    """Rows without a link are the events from before the upgrade that added the chain; the head counts
    them. Raising that count hid an inserted `revoke_old ok`, which the report then showed as proof.
    (A chain begun by an earlier version, which recorded no count of its own: this version's chains
    record it, and hold such rows to it: tests/core/test_audit_chain_anchor.py.)"""
    from tests.core.test_audit_chain_anchor import as_written_by_an_earlier_version

    journal = open_journal(journal_url)
    _history(journal, 4)
    as_written_by_an_earlier_version(journal_url)

    def unlinked(at: datetime) -> None:
        with raw(journal_url) as sql:
            sql("UPDATE audit_head SET unchained = unchained + 1")
            sql("INSERT INTO events (at, policy, run_id, step, result, detail) VALUES (?, 'mgmt', 'run-1', "
                "'revoke_old', 'ok', '{\"token_id\": \"t-old\"}')", ts(at))

    # An event from before the upgrade, dated a little after the first link (a clock that ran fast and
    # was corrected at the upgrade's restart): within UPGRADE_CLOCK_SLACK, not tampering.
    unlinked(T0 + timedelta(minutes=2))
    assert audit_chain.verify(journal).ok
    unlinked(T0 + timedelta(days=2))  # a forged one, dated well after the chain began
    report = audit_chain.verify(journal)
    assert not report.ok and "without a chain link, dated after the chain began" in str(report.problem), report
    events = audit_chain.chained_events(journal, ts(T0), ts(T0 + timedelta(days=3)))
    assert [e["step"] for e in events].count("revoke_old") == 1, "the forged row is no evidence"


def test_an_event_from_before_the_chain_deleted_is_reported(tmp_path: Path) -> None:
    """A journal upgraded from before the chain keeps its old events without a link, and the head
    counts them. Only prune deletes them (and counts them off the head), so one fewer is a deletion:
    here the old `mint failed` that a report would show."""
    path = tmp_path / "old.db"
    _journal_from_before_the_chain(path, [(ts(T0), "r", step, result)
                                          for step, result in (("plan", "ok"), ("mint", "failed"), ("plan", "ok"))])
    journal = open_journal(f"sqlite:///{path}")
    journal.record_event(T0 + timedelta(hours=1), "p", None, "plan", "ok", {})
    assert audit_chain.verify(journal).ok
    journal.close()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("DELETE FROM events WHERE step = 'mint' AND seq IS NULL")
    finally:
        conn.close()
    journal = open_journal(f"sqlite:///{path}")
    report = audit_chain.verify(journal)
    assert not report.ok and "1 event(s) from before the chain (no seq/hash) were deleted" in report.text()


def test_verify_expect_holds_the_chain_to_a_head_kept_from_an_earlier_verify(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A walk alone cannot see the newest events deleted with the head row rewound onto the link before
    them (no hash to recompute). `audit verify --expect SEQ:HASH` with the head an earlier verify printed
    does: exit 4, naming the link; an honest chain holds it (exit 0); after a prune that kept
    keep_history deleted it, it is said to be unchecked, not broken; and an argument that is not
    SEQ:HASH is exit 2."""
    from rotator.runners import cli

    path = tmp_path / "j.db"
    (tmp_path / "rotator.toml").write_text(
        f'[rotator]\njournal = "{path}"\nkeep_history = "1d"\n[[policy]]\nname = "p"\nschedule = "30d"\n'
        '[policy.issuer]\n'
        'type = "influxctl-management"\n[policy.issuer.profile]\nproduct = "clustered"\nhost = "h.invalid"\n'
        '[[policy.store]]\ntype = "vault-kv2"\nurl = "http://127.0.0.1:1"\npath = "x"\n[policy.store.auth]\n'
        'method = "token"\ntoken = { file = "t" }\n')
    journal = open_journal(f"sqlite:///{path}")
    for i in range(4):
        journal.record_event(T0 + timedelta(days=i), "p", f"r{i}", "plan", "ok", {})
    kept = audit_chain.verify(journal)
    journal.record_event(T0 + timedelta(days=5), "p", "r5", "mint", "failed", {"error": "x"})
    journal.close()

    def verify(*expect: str) -> tuple[int, str, str]:
        code = cli.main(["-c", str(tmp_path / "rotator.toml"), "audit", "verify",
                         *[a for e in expect for a in ("--expect", e)]])
        out, err = capsys.readouterr()
        return code, out, err

    head = f"{kept.head_seq}:{kept.head_hash}"
    code, out, _ = verify(head)
    assert code == 0 and "kept links: 1 of 1 held" in out, out
    # the newest two events deleted, the head row rewound onto the link before them: the walk passes
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        before = conn.execute("SELECT seq, hash FROM events WHERE seq = ?", (kept.head_seq - 1,)).fetchone()
        conn.execute("DELETE FROM events WHERE seq >= ?", (kept.head_seq,))
        conn.execute("UPDATE audit_head SET seq = ?, hash = ?", before)
    finally:
        conn.close()
    code, out, err = verify()
    assert code == 0 and "audit chain OK" in out, "the walk alone sees nothing"
    code, out, err = verify(head)
    assert code == 4 and f"link {kept.head_seq} is beyond the chain's head (seq {kept.head_seq - 1})" in err, err
    code, _, err = verify("12:nothex")
    assert code == 2 and "is not SEQ:HASH@TIME" in err
    # a link a prune that kept keep_history deleted cannot be checked, and says so
    journal = open_journal(f"sqlite:///{path}")
    audit_chain.prune(journal, ts(T0 + timedelta(days=2, hours=1)), ts(T0 + timedelta(days=10)))
    journal.close()
    first = f"1:{'0' * 64}"
    code, out, _ = verify(first)
    assert code == 0 and "1 pruned since, cannot be checked: seq 1" in out, out


@pytest.mark.parametrize("at", ["", "0", "yesterday", "2025-13-01T00:00:00.000000Z", "2026-01-01 00:00:00.000000Z"])
def test_an_unlinked_event_whose_time_is_not_a_journal_time_is_caught(journal_url: str, at: str) -> None:
    """Only a row dated after the chain began was caught: '' (or any text sorting before every time)
    passed as an event from before the chain, with the head's count raised, and the report took it
    as evidence (a `published` scheduling a revocation in 2099 hid an overdue one). rotator always
    wrote ts() text, so an unlinked row with anything else is tampering, and no evidence."""
    journal = open_journal(journal_url)
    _history(journal, 4)
    with raw(journal_url) as sql:
        sql("UPDATE audit_head SET unchained = unchained + 1")
        sql("INSERT INTO events (at, policy, run_id, step, result, detail) VALUES (?, 'mgmt', 'run-1', "
            "'published', 'ok', '{\"revoke_old_at\": \"2099-01-01T00:00:00Z\"}')", at)
    report = audit_chain.verify(journal)
    assert not report.ok and f"whose time {at!r} is not one rotator writes" in str(report.problem), report
    assert report.broken == {"at": at, "policy": "mgmt", "step": "published"}
    events = audit_chain.chained_events(journal, "", "\uffff")
    assert all(e["seq"] is not None for e in events), "the row is no evidence"
    with pytest.raises(ValueError, match="broken"):
        audit_chain.prune(journal, ts(T0 + timedelta(days=1)), ts(T0 + timedelta(days=2)))


def test_an_unlinked_event_whose_time_is_not_one_is_found_among_those_from_before_the_chain(
        tmp_path: Path) -> None:
    """An upgraded journal holds events without a link from before the chain: a forged one among them
    whose time is no journal time is found (its place among the others does not matter: one check of
    all of them, test_the_check_of_unlinked_times_is_one_statement_whatever_their_number)."""
    path = tmp_path / "old.db"
    _journal_from_before_the_chain(path, [(ts(T0 - timedelta(days=10 - i)), None, "plan", "ok") for i in range(8)])
    journal = open_journal(f"sqlite:///{path}")
    _history(journal, 2)
    assert audit_chain.verify(journal).ok
    with raw(f"sqlite:///{path}") as sql:
        sql("UPDATE audit_head SET unchained = unchained + 1")
        sql("INSERT INTO events (at, policy, step, result, detail) VALUES (?, 'p', 'plan', 'ok', '{}')",
            ts(T0 - timedelta(days=1))[:-1] + "x")
    report = audit_chain.verify(journal)
    assert not report.ok and "is not one rotator writes" in str(report.problem), report


_POLICY_FILE = ('[rotator]\njournal = "{path}"\n[[policy]]\nname = "p"\nschedule = "30d"\n[policy.issuer]\n'
                'type = "influxctl-management"\n[policy.issuer.profile]\nproduct = "clustered"\nhost = "h.invalid"\n'
                '[[policy.store]]\ntype = "vault-kv2"\nurl = "http://127.0.0.1:1"\npath = "x"\n[policy.store.auth]\n'
                'method = "token"\ntoken = {{ file = "t" }}\n')


def _cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from rotator.runners import cli

    code = cli.main(["-c", str(tmp_path / "rotator.toml"), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_prune_keep_history_is_held_to_the_policy_file_s_floor(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """`[rotator] keep_history` is at least a day (or the longest schedule interval, when every policy
    rotates more often); `prune --keep-history 0s` was accepted, and pruned the whole history: after a
    rewrite of the chain, nothing was left for `audit verify --expect` to check."""
    path = tmp_path / "j.db"
    (tmp_path / "rotator.toml").write_text(_POLICY_FILE.format(path=path))
    journal = open_journal(f"sqlite:///{path}")
    _history(journal, 4, start=datetime.now(UTC) - timedelta(hours=2))
    journal.close()
    for keep in ("0s", "23h"):
        code, out, err = _cli(tmp_path, capsys, "prune", "--keep-history", keep)
        assert code == 2, (out, err)
        assert f"--keep-history is {keep}, shorter than one day" in err and "at least 1d" in err, err
    with raw(f"sqlite:///{path}") as sql:
        assert sql("SELECT COUNT(*) FROM events")[0][0] == 4, "nothing pruned"
    code, out, err = _cli(tmp_path, capsys, "prune", "--keep-history", "1d")
    assert code == 0 and "nothing older than the retention period" in out, (out, err)


def test_prune_and_verify_refuse_an_empty_keep_history_and_their_hint_is_accepted(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--keep-history ""` (an unset variable in a script) pruned with the default, exit 0: prune
    deletes, so an empty flag is refused like any other bad duration. And the hint of a bad one said
    "e.g. --keep-history 1h", which the same flag refuses as shorter than a day."""
    path = tmp_path / "j.db"
    (tmp_path / "rotator.toml").write_text(
        _POLICY_FILE.format(path=path).replace("[rotator]\n", '[rotator]\nkeep_history = "1d"\n'))
    journal = open_journal(f"sqlite:///{path}")
    _history(journal, 4, start=datetime.now(UTC) - timedelta(days=3))
    journal.close()
    for command in ("prune", "audit verify"):
        code, out, err = _cli(tmp_path, capsys, *command.split(), "--keep-history", "")
        assert code == 2 and "--keep-history: '' is not a duration" in err, (command, out, err)
    with raw(f"sqlite:///{path}") as sql:
        assert sql("SELECT COUNT(*) FROM events")[0][0] == 4, "nothing pruned"
    code, out, err = _cli(tmp_path, capsys, "prune", "--keep-history", "abc")
    (example,) = re.findall(r"e\.g\. --keep-history (\S+)", err)
    assert code == 2, (out, err)
    code, out, err = _cli(tmp_path, capsys, "prune", "--keep-history", example)
    assert code == 0, (example, out, err)  # accepted: nothing is that old here


def _pruned_at(journal: Journal, cutoff: datetime, now: datetime) -> None:
    audit_chain.prune(journal, ts(cutoff), ts(now))


def test_verify_expect_fails_on_a_link_a_prune_deleted_with_too_short_a_cutoff(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A chain rewritten with every hash recomputed, then pruned up to its head with a cutoff of now:
    `audit verify --expect SEQ:HASH` said the kept link was "pruned since, cannot be checked" and exited
    0. A prune of rotator's keeps the policy file's keep_history (a day here); one that kept less is
    not rotator's, and the link it deleted fails the check (exit 4), even once a later prune has
    deleted that prune's own event (the time the checkpoint's summary records stands in). A
    legitimate prune's stays unchecked, exit 0."""
    path = tmp_path / "j.db"
    (tmp_path / "rotator.toml").write_text(
        _POLICY_FILE.format(path=path).replace("[rotator]\n", '[rotator]\nkeep_history = "1d"\n'))
    journal = open_journal(f"sqlite:///{path}")
    _history(journal, 6)  # T0 .. T0 + 5 minutes
    kept = f"2:{audit_chain.verify(journal).head_hash}"  # (any hash: the link goes with the prune)
    soon = T0 + timedelta(hours=1)
    _pruned_at(journal, soon, soon)  # keeps nothing: every event, the head's too
    journal.record_event(soon + timedelta(minutes=1), "p", "r9", "plan", "ok", {})
    code, out, err = _cli(tmp_path, capsys, "audit", "verify", "--expect", kept)
    assert code == 4, (out, err)
    assert "link 2 is not in the journal, and no prune of rotator's deleted it" in err
    assert f"kept only the history from {ts(soon)} on (0s), less than keep_history (1d)" in err
    # a later, legitimate prune deletes that prune's event: the checkpoint still dates the range
    later = soon + timedelta(days=500)
    journal.record_event(later, "p", "r10", "plan", "ok", {})
    _pruned_at(journal, later - timedelta(days=400), later)
    with raw(f"sqlite:///{path}") as sql:
        assert sql("SELECT COUNT(*) FROM events WHERE step = 'prune' AND seq <= 8")[0][0] == 0
    code, out, err = _cli(tmp_path, capsys, "audit", "verify", "--expect", kept)
    assert code == 4 and "(55m), less than keep_history (1d)" in err, (out, err)
    # the link the legitimate prune deleted cannot be checked, and says so
    code, out, err = _cli(tmp_path, capsys, "audit", "verify", "--expect", f"7:{'0' * 64}")
    assert code == 0 and "1 pruned since, cannot be checked: seq 7" in out, (out, err)


def test_the_check_of_unlinked_times_is_one_statement_whatever_their_number(tmp_path: Path) -> None:
    """It paged the unlinked events in time order, 5,000 at a time: every page sorted them all again
    (19 s at 800,000 events, which an upgraded journal may hold). Now one statement, no sort."""
    path = tmp_path / "journal.db"
    open_journal(f"sqlite://{path}").close()
    times = [(ts(T0 - timedelta(days=30, seconds=i)),) for i in range(3 * audit_chain.VERIFY_PAGE)]
    with sqlite3.connect(path) as db:
        db.executemany("INSERT INTO events (at, policy, run_id, step, result, detail) VALUES (?, 'p', NULL, 'plan', "
                       "'ok', '{}')", times)
        db.execute("INSERT INTO events (at, policy, run_id, step, result, detail) VALUES "
                   "('2020-02-31T99:00:00.000000Z', 'p', NULL, 'plan', 'ok', '{}')")
    journal = open_journal(f"sqlite://{path}", read_only=True)
    statements: list[str] = []

    class Counting:
        def __init__(self, cur: Any) -> None:
            self.cur = cur

        def execute(self, sql: str, params: Any = ()) -> Any:
            statements.append(sql)
            return self.cur.execute(sql, params)

    with journal.audit_transaction(write=False) as (cur, _lock):
        found = audit_chain._unlinked_not_a_time(Counting(cur))  # type: ignore[arg-type]
    journal.close()
    assert found is not None and found[0] == "2020-02-31T99:00:00.000000Z", "an hour 99 is found"
    assert len(statements) == 1 and "ORDER BY" not in statements[0], statements


@pytest.mark.parametrize("where", ["on a page boundary", "inside a page"])
def test_a_second_row_with_a_seq_already_linked_breaks_the_chain(journal_url: str, monkeypatch: pytest.MonkeyPatch,
                                                                  where: str) -> None:
    """With the unique index on seq replaced by a plain one, a forged row carrying the seq of a link at
    a page's end (the walk reads the next page after that seq) was never read by the verifier, and the
    report took it as evidence: a failed revocation shown done and confirmed by the issuer. Every
    linked row must be a link the walk checked."""
    monkeypatch.setattr(audit_chain, "VERIFY_PAGE", 4)
    journal = open_journal(journal_url)
    _history(journal, 10)
    seq = 4 if where == "on a page boundary" else 6
    with raw(journal_url) as sql:
        sql("DROP INDEX events_seq")
        sql("CREATE INDEX events_seq ON events (seq)")
        sql("INSERT INTO events (seq, at, policy, run_id, step, result, detail, instance, prev_hash, hash) "
            "VALUES (?, ?, 'mgmt', 'run-1', 'revoke_old', 'ok', ?, 'x', ?, ?)",
            seq, ts(T0 + timedelta(minutes=3, seconds=30)), json.dumps({"token_id": "tok-1"}), "0" * 64, "0" * 64)
    report = audit_chain.verify(journal)
    assert not report.ok and report.head_at is None
    if where == "on a page boundary":
        assert f"2 events carry seq {seq}" in str(report.problem) and "events_seq" in str(report.problem)
        assert report.broken["seq"] == seq and report.broken["linked_rows"] == 11
    with pytest.raises(ValueError, match="broken, not pruning"):
        audit_chain.prune(journal, CUTOFF, NOW)


def test_a_token_published_again_is_no_rotation_in_a_checkpoint(journal_url: str) -> None:
    """The same bootstrap run again publishes the token already current: the checkpoint counted another
    rotation and measured its age from the second publication. Its id is carried from checkpoint to
    checkpoint, so one pruned later is known too."""
    journal = open_journal(journal_url)
    journal.record_event(T0, "mgmt", "b0", "bootstrap", "ok", {"token_id": "tokA"})
    journal.record_event(T0 + timedelta(days=1), "other", "o1", "published", "ok", {"token_id": "o1"})
    audit_chain.prune(journal, ts(T0 + timedelta(hours=1)), ts(T0 + timedelta(hours=2)))
    journal.record_event(T0 + timedelta(days=20), "mgmt", "b1", "bootstrap", "ok", {"token_id": "tokA"})
    journal.record_event(T0 + timedelta(days=40), "mgmt", "r1", "published", "ok", {"token_id": "tokB"})
    journal.record_event(T0 + timedelta(days=50), "mgmt", "r2", "published", "ok", {"token_id": "tokC"})
    audit_chain.prune(journal, ts(T0 + timedelta(days=45)), ts(T0 + timedelta(days=46)))
    first, second = (c.detail["policies"]["mgmt"] for c in audit_chain.checkpoints(journal))
    assert second["rotations"] == 1, "b1 published tokA again"
    assert second["max_token_age_seconds"] == 40 * 86400, "tokA ages from its first publication"
    assert second["last_published_at"] == ts(T0 + timedelta(days=40))
    assert (first["rotations"], first.get("token_id"), second.get("token_id")) == (1, "tokA", "tokB")
    assert audit_chain.verify(journal).ok
