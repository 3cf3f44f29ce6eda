"""The journal API on both backends: SQLite (embedded) and PostgreSQL (shared by replicas)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator.core import audit_chain
from rotator.core import journal as journal_module
from rotator.core.errors import JournalError, JournalUnavailable, LeaseBusy
from rotator.core.journal import _MIGRATIONS, Journal, Revocation, RunRecord, RunState, open_journal
from rotator.core.journal import ts as ts_text
from tests.core.test_audit_chain import raw as _raw
from tests.pg import read_write_role, while_slots_full

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'j.db'}"
    return str(request.getfixturevalue("pg_url"))


def _run(run_id: str = "r1", policy: str = "p") -> RunRecord:
    return RunRecord(run_id=run_id, policy=policy, state=RunState.PLANNED, kind="rotate", started_at=T0,
                     updated_at=T0)


def test_runs_revocations_events_round_trip(journal_url: str) -> None:
    journal = open_journal(journal_url)
    run = _run()
    journal.begin_run(run)
    journal.update_run(run, state=RunState.MINTED, new_token_id="new", planned_versions={"vault": "3"})
    journal.publish_and_schedule(run, Revocation("p", "old", "r1", "superseded", T0 + timedelta(hours=1), "pending"),
                                 state=RunState.PUBLISHED, published_at=T0 + timedelta(minutes=1),
                                 published_versions={"vault": "4"})
    got = journal.get_run("r1")
    assert got is not None and got.state == RunState.PUBLISHED and got.published_versions == {"vault": "4"}
    assert got.published_at == T0 + timedelta(minutes=1)
    assert journal.last_success("p").run_id == "r1"  # type: ignore[union-attr]
    assert journal.open_runs("p") == []
    due = journal.due_revocations(T0 + timedelta(hours=2), "p")
    assert [r.token_id for r in due] == ["old"]
    journal.update_revocation(due[0], state="done", done_at=T0)
    assert journal.revocations("p", "done")[0].token_id == "old"
    journal.record_event(T0, "p", "r1", "mint", "ok", {"token_id": "new"})
    assert journal.events("p")[0]["token_id"] == "new"
    journal.close()
    reopened = open_journal(journal_url)  # migrations are idempotent; data survives
    assert reopened.get_run("r1") is not None
    reopened.close()


def test_scheduling_a_token_again_extends_pending_revives_failed_and_keeps_done(journal_url: str) -> None:
    """A token replaced once more (it was current again): its pending revocation is due at the later
    time, a failed one is pending again with its rounds reset, a done one stays done."""
    journal = open_journal(journal_url)
    due, later = T0 + timedelta(hours=1), T0 + timedelta(hours=5)
    for n, token in enumerate(("pending-tok", "failed-tok", "done-tok")):
        run = _run(f"a{n}")
        journal.begin_run(run)
        journal.update_run(run, state=RunState.MINTED, new_token_id=f"new{n}")
        journal.publish_and_schedule(run, Revocation("p", token, run.run_id, "superseded", due, "pending"),
                                     state=RunState.PUBLISHED, published_at=T0)
    rows = {r.token_id: r for r in journal.revocations("p")}
    journal.update_revocation(rows["pending-tok"], attempts=2, last_error="issuer down", next_try_at=T0)
    journal.update_revocation(rows["failed-tok"], state="failed", attempts=1, last_error="refusing: store b holds it")
    journal.update_revocation(rows["done-tok"], state="done", attempts=1, done_at=due)
    for n, token in enumerate(("pending-tok", "failed-tok", "done-tok")):
        run = _run(f"b{n}")
        journal.begin_run(run)
        journal.update_run(run, state=RunState.MINTED, new_token_id=f"newer{n}")
        journal.publish_and_schedule(run, Revocation("p", token, run.run_id, "superseded", later, "pending"),
                                     state=RunState.PUBLISHED, published_at=T0 + timedelta(hours=4))
    got = {r.token_id: (r.state, r.due_at, r.attempts, r.next_try_at, r.last_error) for r in journal.revocations("p")}
    assert got == {"pending-tok": ("pending", later, 0, None, None),
                   "failed-tok": ("pending", later, 0, None, None),
                   "done-tok": ("done", due, 1, None, None)}
    # an earlier due time never shortens a pending grace
    run = _run("c")
    journal.begin_run(run)
    journal.update_run(run, state=RunState.MINTED, new_token_id="newest")
    journal.publish_and_schedule(run, Revocation("p", "pending-tok", "c", "superseded", due, "pending"),
                                 state=RunState.PUBLISHED, published_at=T0 + timedelta(hours=4))
    assert [r.due_at for r in journal.revocations("p", "pending") if r.token_id == "pending-tok"] == [later]
    journal.close()


def test_lease_is_exclusive_across_connections(journal_url: str) -> None:
    a, b = open_journal(journal_url), open_journal(journal_url)
    fence = a.acquire_lease("p", "A", timedelta(seconds=30), T0)
    with pytest.raises(LeaseBusy):
        b.acquire_lease("p", "B", timedelta(seconds=30), T0 + timedelta(seconds=1))
    assert b.acquire_lease("p", "B", timedelta(seconds=30), T0 + timedelta(seconds=31)) == fence + 1
    with pytest.raises(LeaseBusy):
        a.take_over_lease("p", "A", "A2", timedelta(seconds=30), T0 + timedelta(seconds=32))
    a.close()
    b.close()


def test_racing_replicas_get_exactly_one_lease(journal_url: str) -> None:
    open_journal(journal_url).close()  # migrate once, outside the race
    journals = [open_journal(journal_url) for _ in range(8)]
    winners: list[str] = []
    barrier = threading.Barrier(len(journals))

    def contend(i: int) -> None:
        barrier.wait()
        try:
            journals[i].acquire_lease("p", f"h{i}", timedelta(seconds=30), T0)
            winners.append(f"h{i}")
        except LeaseBusy:
            pass

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(len(journals))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    assert journals[0].lease_holder("p", T0) == winners[0]
    for j in journals:
        j.close()


def test_concurrent_first_start_migrates_once(pg_url: str) -> None:
    errors: list[BaseException] = []
    opened: list[Journal] = []

    def start() -> None:
        try:
            opened.append(open_journal(pg_url))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    import psycopg

    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone() == (len(_MIGRATIONS),)
    for j in opened:
        j.close()


def test_postgres_url_password_is_not_in_messages() -> None:
    journal_error = None
    try:
        open_journal("postgresql://rotator:hunter2secret@127.0.0.1:1/none")
    except JournalError as exc:
        journal_error = exc
    assert journal_error is not None
    assert "hunter2secret" not in str(journal_error)


def test_rotation_end_to_end_on_a_postgres_journal(pg_url: str, tmp_path: Path, openbao, fake_influxctl) -> None:
    import time

    from tests.harness import check_invariants, make_scenario

    sc = make_scenario(tmp_path, openbao, fake_influxctl.state, grace_s=1, journal_url=pg_url)
    assert sc.cli("rotate", sc.policy).returncode == 0
    proc = sc.cli("rotate", sc.policy, crash_at="published")
    assert proc.returncode == -9
    assert sc.cli("recover").returncode == 0
    time.sleep(1.2)
    assert sc.cli("revoke-expired").returncode == 0
    check_invariants(sc, settled=True)
    assert sc.journal_rows("SELECT COUNT(*) FROM runs WHERE state = 'done'") == [(3,)]  # bootstrap + 2


def test_postgres_journal_starts_with_a_role_that_cannot_create(pg_url: str) -> None:
    """After the first migration, a read/write role without CREATE privilege can run rotator."""
    open_journal(pg_url).close()  # migrated by the owner
    with read_write_role(pg_url) as (limited, _role):
        journal = while_slots_full(lambda: open_journal(limited))
        journal.acquire_lease("p", "A", timedelta(seconds=5), T0)
        journal.close()


# -- timeouts (issue 15 item 4): a journal that does not answer is a transient error, never a hang
def test_connect_to_a_server_that_accepts_and_never_answers_times_out() -> None:
    import socket
    import time

    from rotator.core.errors import JournalUnavailable, TransientError

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the TCP handshake; nobody ever answers
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(JournalUnavailable) as info:
            open_journal(f"postgresql://rotator@127.0.0.1:{port}/journal?connect_timeout=1")
        assert time.monotonic() - started < 10
    assert isinstance(info.value, TransientError) and info.value.hint


def test_postgres_defaults_keep_what_the_url_sets() -> None:
    from rotator.core.journal import postgres_conninfo

    info = postgres_conninfo("postgresql://u@h/db?connect_timeout=3&options=-c%20lock_timeout%3D1s")
    assert "connect_timeout=3" in info and "connect_timeout=10" not in info
    assert "lock_timeout=1s" in info and "lock_timeout=10000" not in info
    assert "statement_timeout=30000" in info and "tcp_user_timeout=30000" in info


def test_statement_and_lock_timeouts_are_transient(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg

    import rotator.core.journal as journal_module
    from rotator.core.errors import JournalUnavailable

    monkeypatch.setattr(journal_module, "PG_STATEMENT_TIMEOUT_MS", 300)
    monkeypatch.setattr(journal_module, "PG_LOCK_TIMEOUT_MS", 300)
    journal = open_journal(pg_url)
    journal.ping()
    with pytest.raises(JournalUnavailable), journal._tx() as cur:  # a query the server works on too long
        cur.execute("SELECT pg_sleep(5)")
    journal.acquire_lease("p", "A", timedelta(seconds=30), T0)
    with psycopg.connect(pg_url, autocommit=True) as other:  # a stuck peer holds the lease row
        other.execute("BEGIN")
        other.execute("SELECT * FROM leases WHERE policy = 'p' FOR UPDATE")
        with pytest.raises(JournalUnavailable):
            journal.acquire_lease("p", "B", timedelta(seconds=30), T0 + timedelta(minutes=5))
        other.execute("ROLLBACK")
    assert journal.acquire_lease("p", "B", timedelta(seconds=30), T0 + timedelta(minutes=5)) == 2
    journal.ping()  # the connection is replaced after the timeout
    journal.close()


def _ping_from_a_new_thread(journal: Journal) -> list[BaseException]:
    """What ``journal.ping()`` raised in a thread of its own (its own connection, as the daemon's
    HTTP threads have)."""
    caught: list[BaseException] = []

    def probe() -> None:
        try:
            journal.ping()
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            caught.append(exc)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join(timeout=60)
    return caught


def test_ping_answers_on_both_backends(journal_url: str) -> None:
    """The readiness probe's call answers while the journal does, and raises once it is gone.

    PostgreSQL: the server ends the journal's connection (as a restart or failover does): ping, a
    single read, connects again at once and answers (an outage's own connect fails:
    tests/core/test_journal_pg_reconnect.py). SQLite: the journal file is
    gone and a path SQLite cannot open is in its place; a probe thread (its own connection, as the
    daemon's HTTP threads have) cannot connect: a JournalError, not transient (only "database is
    locked" is, and SQLite waits 30 s before it says so)."""
    if journal_url.startswith("sqlite:///"):
        journal = open_journal(journal_url)
        journal.ping()
        path = Path(journal_url[len("sqlite:///"):])
        for leftover in path.parent.glob(f"{path.name}*"):
            leftover.unlink()
        path.mkdir()  # not a database file: SQLite cannot open it
        caught = _ping_from_a_new_thread(journal)
        assert [type(exc) for exc in caught] == [JournalError], caught
        assert "cannot connect: unable to open database file" in str(caught[0])
        journal.close()
        return
    import psycopg

    name = f"rotator-ping-{os.getpid()}-{time.monotonic_ns()}"
    journal = open_journal(f"{journal_url}&application_name={name}")
    journal.ping()
    with psycopg.connect(journal_url, autocommit=True) as admin:
        ended = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                              (name,)).fetchall()
    assert ended == [(True,)], "exactly the journal's one connection was ended"
    journal.ping()  # the broken connection is dropped and the read made again on a new one
    journal.close()


def test_a_sqlite_journal_file_overwritten_fails_the_probe(tmp_path: Path) -> None:
    """`SELECT 1` reads no page: a journal whose files were overwritten with garbage (a disk
    returning junk, a mistaken copy over it) still answered the readiness probe."""
    path = tmp_path / "journal.db"
    journal = open_journal(f"sqlite://{path}")
    journal.record_event(datetime.now(UTC), "p", None, "plan", "ok", {})
    journal.ping()
    for file in tmp_path.glob("journal.db*"):  # the database, its WAL and its shared-memory index
        with file.open("r+b") as f:
            f.write(os.urandom(file.stat().st_size))
    with pytest.raises(JournalError, match="file is not a database"):
        journal.ping()
    journal.close()


def test_a_sqlite_journal_file_deleted_fails_the_probe_and_is_not_made_again(tmp_path: Path) -> None:
    """A probe thread's new connection made an empty journal where the deleted one was: the probe
    passed, and the next start would have begun a new journal there (history and pending
    revocations lost)."""
    path = tmp_path / "journal.db"
    journal = open_journal(f"sqlite://{path}")
    journal.ping()
    for file in tmp_path.glob("journal.db*"):
        file.unlink()
    caught = _ping_from_a_new_thread(journal)
    assert [type(exc) for exc in caught] == [JournalError], caught
    assert "is gone" in str(caught[0]) and not path.exists(), "no empty journal made in its place"
    journal.close()


def _hold_the_write_lock(journal_url: str) -> Callable[[], None]:
    """Another process's writer in the middle of a transaction (SQLite: the database's write lock;
    PostgreSQL: the migration lock too). Returns the function that ends it."""
    if journal_url.startswith("sqlite:///"):
        import sqlite3

        conn = sqlite3.connect(journal_url[len("sqlite:///"):], isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE leases SET holder = holder")
        return conn.close
    import psycopg

    pg = psycopg.connect(journal_url)  # a transaction stays open until close()
    pg.execute("SELECT pg_advisory_xact_lock(7306180)")  # the lock a migrating open takes
    pg.execute("UPDATE leases SET holder = holder")
    return pg.close


def test_a_read_only_open_takes_no_write_lock_and_never_upgrades(journal_url: str) -> None:
    """status, plan, audit and report open the journal read-only: a busy writer does not hold them up,
    and a journal older than this rotator is refused with the way out, not upgraded behind the back
    of the rotator version that still writes it."""
    writer = open_journal(journal_url)
    writer.begin_run(_run())
    writer.close()
    release = _hold_the_write_lock(journal_url)
    try:
        started = time.monotonic()
        reader = open_journal(journal_url, read_only=True)
        assert [r.run_id for r in reader.runs("p")] == ["r1"]
        assert audit_chain.verify(reader).ok, "`rotator audit` and `report` read the chain without the lock"
        assert audit_chain.checkpoints(reader) == []
        assert time.monotonic() - started < 5, "no wait for the writer's lock"
        reader.close()
    finally:
        release()

    with _raw(journal_url) as sql:  # as a journal of the previous schema version would say
        sql(f"DELETE FROM schema_version WHERE version = {len(_MIGRATIONS)}")
    with pytest.raises(JournalError, match=f"schema version {len(_MIGRATIONS) - 1}, older than this rotator's") as err:
        open_journal(journal_url, read_only=True)
    assert err.value.hint is not None and "restart the daemon with this rotator version" in err.value.hint
    with _raw(journal_url) as sql:
        assert sql("SELECT MAX(version) FROM schema_version") == [(len(_MIGRATIONS) - 1,)], "nothing written"


def test_the_audit_chain_is_read_in_one_snapshot_on_postgresql(pg_url: str) -> None:
    """READ COMMITTED would give the head row and the events separate snapshots: a verify racing a
    writer's commit could read events past the head it read, and report tampering that is none."""
    journal = open_journal(pg_url)
    with journal.audit_transaction(write=False) as (cur, _lock):
        assert cur.execute("SHOW transaction_isolation").fetchone() == ("repeatable read",)
        assert cur.execute("SHOW transaction_read_only").fetchone() == ("on",)
    with journal.audit_transaction() as (cur, _lock):  # prune's: locks the head row instead
        assert cur.execute("SHOW transaction_isolation").fetchone() == ("read committed",)
    assert audit_chain.verify(journal).ok
    journal.close()


def test_a_journal_from_before_the_head_trigger_is_upgraded_and_its_chain_goes_on(journal_url: str) -> None:
    """Schema 5 moves the audit head with each link's INSERT (no UPDATE of the head per transaction);
    a journal whose events a rotator of schema 4 wrote gets the trigger at the next writable open, and
    events recorded after it link on and verify."""
    journal = open_journal(journal_url)
    for i in range(3):
        journal.record_event(T0 + timedelta(minutes=i), "p", None, "plan", "ok", {"i": i})
    journal.close()
    _drop_head_trigger(journal_url)  # what schema 4 had: no trigger (its writers moved the head themselves)
    with _raw(journal_url) as sql:
        if journal.backend == "postgresql":
            sql("DROP FUNCTION rotator_audit_head_follows()")
        # schema 6's index as schema 4 had it, and no column of schema 7, 8 or 10
        sql("ALTER TABLE runs DROP COLUMN issuer_target")
        sql("DROP INDEX runs_policy_tag_search")
        sql("ALTER TABLE runs DROP COLUMN tag_search_until")
        sql("ALTER TABLE runs DROP COLUMN verified_fence")
        sql("ALTER TABLE runs DROP COLUMN token_created_at")
        sql("DROP INDEX revocations_policy_state_due")
        sql("CREATE INDEX revocations_policy_state ON revocations (policy, state)")
        sql("DELETE FROM schema_version WHERE version >= 5")
        sql("INSERT INTO events (seq, at, policy, step, result, detail, instance, prev_hash, hash) "
            "VALUES (999, ?, 'p', 'plan', 'ok', '{}', 'x', ?, ?)", ts_text(T0), "0" * 64, "f" * 64)
        assert sql("SELECT seq FROM audit_head") == [(3,)], "without the trigger an INSERT leaves the head"
        sql("DELETE FROM events WHERE seq = 999")
    upgraded = open_journal(journal_url)
    for i in range(3, 5):
        upgraded.record_event(T0 + timedelta(minutes=i), "p", None, "plan", "ok", {"i": i})
    with upgraded.transaction():
        upgraded.record_event(T0 + timedelta(minutes=5), "p", None, "plan", "ok", {"i": 5})
        upgraded.record_event(T0 + timedelta(minutes=6), "p", None, "plan", "ok", {"i": 6})
    report = audit_chain.verify(upgraded)
    assert report.ok, report.problem
    assert (report.checked, report.head_seq) == (7, 7)
    with _raw(journal_url) as sql:
        assert sql("SELECT MAX(version) FROM schema_version") == [(len(_MIGRATIONS),)]
        indexes = ("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'revocations'"
                   if journal.backend == "sqlite" else
                   "SELECT indexname FROM pg_indexes WHERE tablename = 'revocations' AND schemaname = current_schema()")
        names = {row[0] for row in sql(indexes)}
        assert "revocations_policy_state_due" in names and "revocations_policy_state" not in names, names
        assert sql("SELECT seq FROM audit_head") == [(7,)], "the trigger moved the head with each INSERT"
        sql("INSERT INTO events (at, policy, step, result, detail) VALUES (?, 'p', 'plan', 'ok', '{}')", ts_text(T0))
        assert sql("SELECT seq FROM audit_head") == [(7,)], "an unlinked row (from before the chain) moves nothing"
    upgraded.close()


def test_a_journal_without_its_head_trigger_gets_it_back_at_the_next_open(journal_url: str) -> None:
    """A journal restored from a dump of its tables alone has schema 5 but no trigger: the next
    writable open creates it again, before any event could link to a head that stayed behind."""
    journal = open_journal(journal_url)
    journal.record_event(T0, "p", None, "plan", "ok", {"i": 0})
    journal.close()
    _drop_head_trigger(journal_url)
    reader = open_journal(journal_url, read_only=True)  # a command that only reads changes nothing
    reader.close()
    with _raw(journal_url) as sql:
        exists = audit_chain.HEAD_TRIGGER_EXISTS[journal.backend]
        assert sql(exists) == []
    reopened = open_journal(journal_url)
    for i in range(1, 3):
        reopened.record_event(T0 + timedelta(minutes=i), "p", None, "plan", "ok", {"i": i})
    report = audit_chain.verify(reopened)
    assert report.ok, report.problem
    assert (report.checked, report.head_seq) == (3, 3)
    with _raw(journal_url) as sql:
        assert sql(exists) == [(1,)]
    reopened.close()


def _drop_head_trigger(journal_url: str, how: str = "drop") -> None:
    with _raw(journal_url) as sql:
        if journal_url.startswith("sqlite"):
            sql("DROP TRIGGER audit_head_follows")
        elif how == "disable":
            sql("ALTER TABLE events DISABLE TRIGGER audit_head_follows")
        else:
            sql("DROP TRIGGER audit_head_follows ON events")


def test_an_older_event_put_back_leaves_the_head_where_it_is(journal_url: str) -> None:
    """The trigger only moves the head forward: a deleted event restored from a backup (a partial
    restore inserts rows in any order) does not pull the head back onto a sequence number in use."""
    journal = open_journal(journal_url)
    for i in range(4):
        journal.record_event(T0 + timedelta(minutes=i), "p", None, "plan", "ok", {"i": i})
    columns = ", ".join(audit_chain.EVENT_COLUMNS)
    with _raw(journal_url) as sql:
        [row] = sql(f"SELECT {columns} FROM events WHERE seq = 2")
        sql("DELETE FROM events WHERE seq = 2")
        sql(f"INSERT INTO events ({columns}) VALUES ({', '.join('?' * len(row))})", *row)
        assert sql("SELECT seq FROM audit_head") == [(4,)]
    journal.record_event(T0 + timedelta(minutes=4), "p", None, "plan", "ok", {"i": 4})
    report = audit_chain.verify(journal)
    assert report.ok, report.problem
    assert (report.checked, report.head_seq) == (5, 5)
    journal.close()


def test_a_head_left_behind_is_refused_at_a_writable_open_with_its_repair(journal_url: str) -> None:
    """A trigger dropped while a process writes leaves the head behind that process's events. That
    process's next event, and a writable open, then say so and how to repair it, instead of the
    database's bare duplicate sequence number; a read-only open still reads (verify reports the
    break); after the repair the trigger is back and the chain goes on."""
    _head_left_behind_and_repaired(journal_url, "drop")


def test_a_disabled_head_trigger_is_treated_as_missing_on_postgresql(pg_url: str) -> None:
    """``ALTER TABLE events DISABLE TRIGGER``: the same as a dropped trigger, and enabled again at the
    writable open after the repair."""
    _head_left_behind_and_repaired(pg_url, "disable")


def _head_left_behind_and_repaired(journal_url: str, how: str) -> None:
    writer = open_journal(journal_url)
    for i in range(3):
        writer.record_event(T0 + timedelta(minutes=i), "p", None, "plan", "ok", {"i": i})
    _drop_head_trigger(journal_url, how)
    writer.record_event(T0 + timedelta(minutes=3), "p", None, "plan", "ok", {"i": 3})  # the head stays at 3
    # The process that goes on writing gets the same explanation (not the database's duplicate key).
    with pytest.raises(JournalError, match=r"head \(seq 3\) is behind its newest event \(seq 4\)") as running:
        writer.record_event(T0 + timedelta(minutes=3), "p", None, "plan", "ok", {"i": "lost"})
    assert "UPDATE audit_head SET seq = 4" in (running.value.hint or "")
    assert "the database refused the event" in str(running.value), "the database's own words are kept"
    assert not isinstance(running.value, JournalUnavailable), "not transient: retrying cannot help"
    writer.ping()  # the explanation's read left the connection usable, with no transaction open
    assert [e["i"] for e in writer.events("p")] == [3, 2, 1, 0], "the refused event left nothing behind"
    writer.close()
    with pytest.raises(JournalError, match=r"head \(seq 3\) is behind its newest event \(seq 4\)") as err:
        open_journal(journal_url)
    reader = open_journal(journal_url, read_only=True)
    report = audit_chain.verify(reader)
    assert not report.ok and "does not match the chain head" in (report.problem or "")
    reader.close()
    hint = err.value.hint or ""
    repair = hint.split("`")[3]
    assert repair.startswith("UPDATE audit_head SET seq = 4"), hint
    with _raw(journal_url) as sql:
        sql(repair)
    reopened = open_journal(journal_url)
    reopened.record_event(T0 + timedelta(minutes=4), "p", None, "plan", "ok", {"i": 4})
    report = audit_chain.verify(reopened)
    assert report.ok, report.problem
    assert (report.checked, report.head_seq) == (5, 5), "the trigger is back: the INSERT moved the head"
    reopened.close()


def test_only_a_unique_violation_of_the_event_sequence_counts_as_a_collision() -> None:
    """The head-behind explanation is given for the sequence number's unique violation alone: a lock
    timeout or a busy database whose message names the same index stays what it is (transient)."""
    backend = journal_module._sqlite_backend(Path("unused.db"))
    assert backend.seq_collision(sqlite3.IntegrityError("UNIQUE constraint failed: events.seq"))
    assert not backend.seq_collision(sqlite3.OperationalError("database is locked (events.seq)"))
    assert not backend.seq_collision(sqlite3.IntegrityError("UNIQUE constraint failed: runs.run_id"))


def test_a_new_sqlite_journal_has_small_pages_and_an_existing_one_keeps_its_own(tmp_path: Path) -> None:
    """SQLITE_PAGE_SIZE applies where the journal creates the file; a journal made before it (4096,
    SQLite's default) is opened, written and read as it is: no VACUUM, no error."""
    new = open_journal(f"sqlite:///{tmp_path / 'new.db'}")
    new.begin_run(RunRecord("r1", "p", RunState.PLANNED, "rotate", T0, T0))
    new.close()
    old_path = tmp_path / "old.db"
    made = sqlite3.connect(old_path)
    made.execute("PRAGMA page_size=4096")
    made.execute("PRAGMA journal_mode=WAL")
    made.execute("CREATE TABLE made_before (x)")
    made.commit()
    made.close()
    old = open_journal(f"sqlite:///{old_path}")
    old.begin_run(RunRecord("r1", "p", RunState.PLANNED, "rotate", T0, T0))
    old.record_event(T0, "p", "r1", "plan", "ok", {})
    assert [r.run_id for r in old.runs("p", limit=0)] == ["r1"] and audit_chain.verify(old).ok
    old.close()
    sizes = {}
    for name in ("new.db", "old.db"):
        conn = sqlite3.connect(tmp_path / name)
        sizes[name] = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.close()
    assert sizes == {"new.db": journal_module.SQLITE_PAGE_SIZE, "old.db": 4096}
    assert journal_module.SQLITE_PAGE_SIZE != 4096


def test_a_read_only_open_of_a_sqlite_journal_writes_nothing(tmp_path: Path) -> None:
    """A read-only open (status, plan, audit, report) runs no PRAGMA that writes: a journal that is
    not in WAL mode stays as it is, byte for byte, and no file is made beside it."""
    path = tmp_path / "journal.db"
    writer = open_journal(f"sqlite:///{path}")
    writer.begin_run(_run())
    writer.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode=DELETE").fetchone() == ("delete",)
    conn.close()
    before = path.read_bytes()
    reader = open_journal(f"sqlite:///{path}", read_only=True)
    assert [r.run_id for r in reader.runs("p")] == ["r1"]
    with pytest.raises(JournalError, match="readonly"):
        reader.begin_run(RunRecord("r2", "p", RunState.PLANNED, "rotate", T0, T0))
    reader.close()
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["journal.db"]


def _journal_without_shm(tmp_path: Path, wal_frames: bool) -> Path:
    """A WAL-mode journal whose -shm file cannot be made (a dangling link in its place, which even
    root cannot open), as in a directory the reader may not write to or on a read-only file system."""
    path = tmp_path / "journal.db"
    writer = open_journal(f"sqlite:///{path}")
    writer.begin_run(_run())
    writer.close()
    if wal_frames:  # a writer killed with commits not yet copied into the database file
        script = (f"import os, signal; from rotator.core.journal import open_journal; from tests.core import "
                  f"test_journal_backends as t; j = open_journal('sqlite:///{path}'); "
                  "j.begin_run(t.RunRecord('r2', 'p', t.RunState.PLANNED, 'rotate', t.T0, t.T0)); "
                  "os.kill(os.getpid(), signal.SIGKILL)")
        subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2], check=False)
        assert Path(f"{path}-wal").stat().st_size > journal_module._WAL_HEADER_BYTES
        Path(f"{path}-shm").unlink()
    Path(f"{path}-shm").symlink_to(tmp_path / "no-such-directory" / "shm")
    return path


def test_a_journal_on_a_read_only_file_system_is_read_as_it_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An auditor's read-only copy or mount: no -shm can be made, nobody can write, so the file is
    read as immutable; but not when a -wal file holds commits the file lacks (they would be missed
    silently): then the error says to read a copy."""
    monkeypatch.setattr(journal_module, "_on_read_only_file_system", lambda path: True)
    clean = _journal_without_shm(tmp_path / "clean", wal_frames=False)
    reader = open_journal(f"sqlite:///{clean}", read_only=True)
    assert [r.run_id for r in reader.runs("p")] == ["r1"] and audit_chain.verify(reader).ok
    reader.close()
    pending = _journal_without_shm(tmp_path / "pending", wal_frames=True)
    with pytest.raises(JournalError, match="-shm file") as err:
        open_journal(f"sqlite:///{pending}", read_only=True).runs("p")
    assert "the journal file and its -wal file copied" in err.value.hint
    link = tmp_path / "link.db"  # SQLite keeps the -wal beside the link's target, and so must the check
    link.symlink_to(pending)
    with pytest.raises(JournalError, match="-shm file"):
        open_journal(f"sqlite:///{link}", read_only=True).runs("p")


def test_a_journal_in_a_directory_the_reader_cannot_write_says_what_to_do(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not "attempt to write a readonly database" nor "unable to open database file": what SQLite
    needs there, and three ways to read the journal."""
    path = _journal_without_shm(tmp_path, wal_frames=False)
    real_access = os.access
    monkeypatch.setattr(journal_module.os, "access",
                        lambda p, mode, **kw: False if Path(p) == tmp_path else real_access(p, mode, **kw))
    with pytest.raises(JournalError, match=r"journal\.db-shm file beside it, and none can be made in") as err:
        open_journal(f"sqlite:///{path}", read_only=True).runs("p")
    assert "rotator service's user" in err.value.hint and ".backup" in err.value.hint
    monkeypatch.undo()
    with pytest.raises(JournalError, match="unable to open"):  # a writable directory: SQLite's own error
        open_journal(f"sqlite:///{path}", read_only=True).runs("p")


def test_a_reader_who_may_not_write_the_directory_is_told_why_and_what_to_do(tmp_path: Path) -> None:
    """The real case, not a stand-in: a journal in WAL mode, no connection open, and a reader who may
    not create files in its directory (root without CAP_DAC_OVERRIDE counts as such a reader)."""
    import shutil

    directory = tmp_path / "journal-dir"
    directory.mkdir()
    path = directory / "journal.db"
    writer = open_journal(f"sqlite:///{path}")
    writer.begin_run(_run())
    writer.close()
    path.chmod(0o644)
    directory.chmod(0o555)
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root ignores directory permissions, and setpriv (util-linux) is not here to drop that")
        prefix = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"]
    script = ("from rotator.core.journal import open_journal\n"
              f"open_journal('sqlite:///{path}', read_only=True).runs('p')\n")
    try:
        proc = subprocess.run([*prefix, sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                              cwd=Path(__file__).resolve().parents[2])
    finally:
        directory.chmod(0o755)
    assert proc.returncode != 0 and "journal.db-shm file beside it, and none can be made" in proc.stderr, proc.stderr
    assert sorted(p.name for p in directory.iterdir()) == ["journal.db"]


def test_a_journal_is_made_0600_and_read_access_an_operator_grants_stays(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    open_journal(f"sqlite:///{path}").close()
    assert path.stat().st_mode & 0o777 == 0o600
    link = tmp_path / "link.db"  # a link to where the journal is to be made
    link.symlink_to(tmp_path / "target.db")
    open_journal(f"sqlite:///{link}").close()
    assert (tmp_path / "target.db").stat().st_mode & 0o777 == 0o600
    path.chmod(0o640)  # an auditors' group
    writer = open_journal(f"sqlite:///{path}")
    writer.begin_run(_run())
    writer.close()
    assert path.stat().st_mode & 0o777 == 0o640


def test_a_sqlite_journal_locked_by_another_process_says_so_and_names_its_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Finding: a SQLite journal whose write lock another process held (a sqlite3 shell, a backup) got the
    PostgreSQL hint (a standby, a fail-over, the network). SQLite's wait is cut to 0.2 s here; rotator's is 30 s."""
    path = tmp_path / "journal.db"
    journal = open_journal(f"sqlite:///{path}")
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        real = sqlite3.connect
        monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: real(*a, **{**k, "timeout": 0.2}))
        journal._drop_connection()
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(JournalUnavailable) as info:
            journal.acquire_lease("p", "a", timedelta(minutes=5), datetime(2026, 1, 1, tzinfo=UTC))
        assert "locked" in str(info.value)
        hint = info.value.hint or ""
        assert "write lock" in hint and f"fuser -v {path}" in hint and "standby" not in hint
        holder.execute("ROLLBACK")
        assert journal.acquire_lease("p", "a", timedelta(minutes=5), datetime(2026, 1, 1, tzinfo=UTC)) == 1
    finally:
        holder.close()
        journal.close()
