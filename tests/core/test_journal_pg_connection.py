"""The PostgreSQL journal's connection (rotator/core/journal.py): what it is opened with, when it is
dropped, and what its watchdog survives.

- a server that stops accepting writes under an open connection (a standby; a primary demoted by a
  fail-over, reached through a stale DNS answer) is a transient error that drops the connection, the
  next one goes to a writable server, and ping() (the daemon's /readyz) fails meanwhile;
- a replica paused (SIGSTOP) inside a write transaction does not hold every other replica's event
  writes up for good: the server ends its idle transaction after the transaction deadline;
- statement_timeout is read with PostgreSQL's units (``2min`` is not 2 ms), and 0 means no server limit;
- the watchdog outlives a connection closed before it cut it;
- a URL query key libpq does not know is a ConfigError that names it (not "internal error").

The server's read-only state is made per role (``ALTER ROLE ... SET default_transaction_read_only``, and
``SET`` on the session already open), not for the whole server: the xdist workers share one server.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from rotator.core.errors import ConfigError, JournalError, JournalUnavailable
from rotator.core.journal import (
    PG_STATEMENT_TIMEOUT_MS,
    Journal,
    _cut_connection,
    _statement_timeout_s,
    _tx_deadline_s,
    _Watchdog,
    open_journal,
    pg_duration_ms,
    postgres_conninfo,
    postgres_url_problem,
)
from tests.pg import read_write_role

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
DEFAULT_DEADLINE_S = 2 * PG_STATEMENT_TIMEOUT_MS / 1000 + 5


def _url_with_options(options: str, base: str = "postgresql://u@h/db") -> str:
    return f"{base}?options=" + options.replace(" ", "%20").replace("=", "%3D")


# -- statement_timeout with units (item 3) -----------------------------------------------------------------
@pytest.mark.parametrize(("text", "ms"), [
    ("120000", 120_000), ("2min", 120_000), ("90s", 90_000), ("0", 0), ("1.5s", 1_500), ("500us", 0.5),
    ("250ms", 250), ("1h", 3_600_000), ("1d", 86_400_000), ("10 s", 10_000), (".5s", 500),
    ("2 minutes", None), ("2MIN", None), ("", None), ("abc", None), ("-1", None), ("5x", None),
    ("999999999d", 2**31 - 1),  # the server's own limit (INT_MAX ms)
])  # fmt: skip
def test_pg_duration_reads_postgresqls_units(text: str, ms: float | None) -> None:
    assert pg_duration_ms(text) == ms


@pytest.mark.parametrize(("option", "deadline_s"), [
    ("-c statement_timeout=120000", 245.0),
    ("-c statement_timeout=2min", 245.0),
    ("-c statement_timeout=90s", 185.0),
    ("-c statement_timeout=0", DEFAULT_DEADLINE_S),  # no server limit: rotator's default deadline
    ("-c statement_timeout=1s -c statement_timeout=3s", 11.0),  # the server takes the last one
    (None, DEFAULT_DEADLINE_S),
])  # fmt: skip
def test_the_transaction_deadline_follows_statement_timeout(option: str | None, deadline_s: float) -> None:
    """Finding: "2min" and "90s" were read as 2 and 90 ms (a deadline of ~5 s: every write transaction
    longer than that was cut), and 0 as 0 ms."""
    conninfo = postgres_conninfo(_url_with_options(option) if option else "postgresql://u@h/db")
    assert _tx_deadline_s(_statement_timeout_s(conninfo)) == deadline_s
    options = str(conninfo_to_dict(conninfo)["options"])
    assert f"idle_in_transaction_session_timeout={round(deadline_s * 1000)}" in options, options


# -- what a connection is opened with (items 1 and 2) ------------------------------------------------------
def test_a_writer_asks_for_a_writable_server_and_bounds_idle_transactions() -> None:
    info = conninfo_to_dict(postgres_conninfo("postgresql://u@h/db"))
    assert info["target_session_attrs"] == "read-write"
    options = str(info["options"])
    for setting in ("idle_in_transaction_session_timeout=65000", "tcp_keepalives_idle=15",
                    "tcp_keepalives_interval=5", "tcp_keepalives_count=3", "statement_timeout=30000"):
        assert f"-c {setting}" in options, options
    assert info["keepalives"] == "1" and info["keepalives_idle"] == "15"


def test_what_the_url_or_environment_sets_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    url = _url_with_options("-c idle_in_transaction_session_timeout=1h -c tcp_keepalives_idle=60")
    info = conninfo_to_dict(postgres_conninfo(url + "&target_session_attrs=any"))
    assert info["target_session_attrs"] == "any"
    assert "idle_in_transaction_session_timeout=1h" in str(info["options"])
    assert "idle_in_transaction_session_timeout=65000" not in str(info["options"])
    assert "tcp_keepalives_idle=15" not in str(info["options"])
    monkeypatch.setenv("PGTARGETSESSIONATTRS", "prefer-standby")
    assert "target_session_attrs" not in conninfo_to_dict(postgres_conninfo("postgresql://u@h/db"))  # libpq reads it


def test_a_read_only_open_takes_any_server() -> None:
    """`status`, `audit verify`, `report` may read a standby (an auditors' replica), as before."""
    assert "target_session_attrs" not in conninfo_to_dict(postgres_conninfo("postgresql://u@h/db", read_only=True))


# -- a URL libpq cannot read (item 5) ---------------------------------------------------------------------
def test_an_unknown_url_query_key_is_a_config_error_naming_it() -> None:
    """Finding: it was psycopg's raw ProgrammingError, reported as "internal error ... this is a bug"."""
    with pytest.raises(ConfigError) as info:
        open_journal("postgresql://rotator@db.example.com/rotator?search_path=rotator")
    assert '"search_path"' in str(info.value) and "postgresql://rotator@db.example.com" in str(info.value)
    assert "?options=-csearch_path%3D" in (info.value.hint or "")
    problem = postgres_url_problem("postgresql://rotator@db.example.com/rotator?search_path=rotator")
    assert problem is not None and '"search_path"' in problem and "options=-csearch_path%3D" in problem
    assert postgres_url_problem("postgresql://rotator@db.example.com/rotator?sslmode=verify-full") is None


def test_a_url_problem_never_shows_the_password() -> None:
    url = "postgresql://rotator:s3cr%zzet@db.example.com/rotator"
    problem = postgres_url_problem(url)
    assert problem is not None and "percent-encoded" in problem and "s3cr" not in problem, problem
    with pytest.raises(ConfigError) as info:
        open_journal(url)
    assert "s3cr" not in str(info.value) and "s3cr" not in (info.value.hint or "")


# -- the watchdog (item 4) --------------------------------------------------------------------------------
def test_cutting_a_closed_connection_is_quiet(pg_base: str) -> None:
    """Finding: psycopg's fileno() of a closed connection raises OperationalError, which escaped the cut."""
    conn = psycopg.connect(pg_base, autocommit=True)
    conn.close()
    _cut_connection(conn)


def test_the_watchdog_outlives_a_connection_closed_before_its_cut(pg_base: str) -> None:
    """Finding: that error killed the watchdog's one thread, and no deadline was enforced afterwards."""
    closed = psycopg.connect(pg_base, autocommit=True)
    closed.close()
    watch = _Watchdog(0.1, _cut_connection)
    try:
        watch.arm(closed)
        time.sleep(0.4)
        assert watch._thread is not None and watch._thread.is_alive()
        with psycopg.connect(pg_base, autocommit=True) as conn:
            watch.arm(conn)
            started = time.monotonic()
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT pg_sleep(5)")
            assert time.monotonic() - started < 3, "the statement was not cut at its deadline"
    finally:
        watch.stop()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_arm_starts_the_watchdog_again_when_its_thread_died() -> None:
    cut: list[Any] = []

    def abort(conn: Any) -> None:
        if not cut:
            cut.append(None)
            raise SystemExit  # what no `except Exception` catches: the thread ends
        cut.append(conn)

    watch = _Watchdog(0.05, abort)
    try:
        watch.arm("first")
        deadline = time.monotonic() + 5
        while watch._thread is not None and watch._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert watch._thread is not None and not watch._thread.is_alive()
        watch.arm("second")
        while len(cut) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cut == [None, "second"]
    finally:
        watch.stop()


# -- a server that accepts no writes (item 1) ---------------------------------------------------------------
@pytest.fixture
def role_url(pg_url: str) -> Iterator[tuple[str, str]]:
    """(a journal URL of a role of its own, that role): the journal migrated, the role may read and write."""
    open_journal(pg_url).close()
    with read_write_role(pg_url, "ro") as (url, role):
        yield url, role


def _server_read_only(admin_url: str, role: str, journal: Journal | None, on: bool) -> None:
    """The server accepts no writes from ``role`` (new sessions) and in ``journal``'s open session: what a
    standby, or a primary demoted under the connection, answers (SQLSTATE 25006)."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"ALTER ROLE {role} {'SET default_transaction_read_only = on' if on else 'RESET ALL'}")
    if journal is not None:
        journal._threads.state.conn.execute(f"SET default_transaction_read_only = {'on' if on else 'off'}")


@pytest.mark.parametrize("attrs", ["", "&target_session_attrs=any"], ids=["default", "url-takes-any-server"])
def test_a_server_that_turns_read_only_is_left_for_a_writable_one(
        pg_url: str, role_url: tuple[str, str], attrs: str) -> None:  # fmt: skip
    """Finding: "cannot execute UPDATE in a read-only transaction" (an InternalError) was a permanent
    JournalError, the connection was kept for good, and ping() passed. Now each write fails transiently and
    drops the connection; the next one is refused by libpq (target_session_attrs=read-write) or, where the
    URL takes any server, fails ping; once the server accepts writes, a new connection works."""
    url, role = role_url
    journal = open_journal(url + attrs)
    try:
        assert journal.acquire_lease("p", "a", timedelta(minutes=5), T0) == 1
        before = journal._threads.state.conn
        _server_read_only(pg_url, role, journal, on=True)
        with pytest.raises(JournalUnavailable) as info:
            journal.acquire_lease("p", "b", timedelta(minutes=5), T0 + timedelta(minutes=10))
        assert "read-only" in str(info.value) and "accepts no writes" in (info.value.hint or "")
        assert journal._threads.state.conn is None, "the connection to a read-only server was kept"
        with pytest.raises(JournalUnavailable) as ping:
            journal.ping()  # the daemon's /readyz
        assert ("read-only" if not attrs else "accepts no writes") in str(ping.value), str(ping.value)
        assert journal._threads.state.conn is None
        with pytest.raises(JournalUnavailable):
            journal.record_event(T0, "p", None, "plan", "ok", {})
        _server_read_only(pg_url, role, None, on=False)
        journal.ping()
        assert journal.acquire_lease("p", "b", timedelta(minutes=5), T0 + timedelta(minutes=10)) == 2
        assert journal._threads.state.conn is not before
    finally:
        _server_read_only(pg_url, role, None, on=False)
        journal.close()


def test_a_command_that_only_reads_may_read_a_standby(pg_url: str, role_url: tuple[str, str]) -> None:
    url, role = role_url
    _server_read_only(pg_url, role, None, on=True)
    try:
        journal = open_journal(url, create=False, read_only=True)
        journal.ping()
        assert journal.runs("p") == []
        journal.close()
    finally:
        _server_read_only(pg_url, role, None, on=False)


def test_a_permanent_error_keeps_the_connection(pg_url: str) -> None:
    """Only what leaves the connection useless drops it: a refused statement (here a syntax error) does not."""
    journal = open_journal(pg_url)
    try:
        journal.ping()
        before = journal._threads.state.conn
        with pytest.raises(JournalError) as info, journal._tx() as cur:
            cur.execute("SELEC 1")
        assert not isinstance(info.value, JournalUnavailable)
        assert journal._threads.state.conn is before
    finally:
        journal.close()


# -- a replica paused inside a write transaction (item 2) ----------------------------------------------------
CHILD = """
import sys
from datetime import UTC, datetime

from rotator.core.errors import JournalUnavailable
from rotator.core.journal import open_journal

journal = open_journal(sys.argv[1])
try:
    with journal.transaction():
        journal.record_event(datetime.now(UTC), "policy-a", None, "plan", "ok", {})
        print("in-transaction", flush=True)
        sys.stdin.readline()  # paused (SIGSTOP) here, then let go on
except JournalUnavailable:
    print("transient", flush=True)
journal.record_event(datetime.now(UTC), "policy-a", None, "plan", "ok", {})
print("written", flush=True)
"""


def test_a_replica_paused_in_a_write_transaction_holds_the_others_up_only_until_its_deadline(
        pg_url: str, tmp_path: Path) -> None:  # fmt: skip
    """Finding: the paused replica's session stayed "idle in transaction" on the server, holding the audit
    chain's head row locked: every other replica's every event write (any policy) failed on lock_timeout
    until the process went on (or ~2 h of the server's keepalive after a network cut)."""
    url = pg_url + "%20-cstatement_timeout%3D500%20-clock_timeout%3D1000"
    deadline_s = _tx_deadline_s(0.5)
    open_journal(url).close()
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen([sys.executable, str(script), url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    other = open_journal(url)
    try:
        assert child.stdout.readline().strip() == b"in-transaction"
        os.kill(child.pid, signal.SIGSTOP)
        time.sleep(deadline_s + 1.5)
        other.record_event(datetime.now(UTC), "policy-b", None, "plan", "ok", {})  # another replica, another policy
        os.kill(child.pid, signal.SIGCONT)
        child.stdin.write(b"\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == b"transient"
        assert child.stdout.readline().strip() == b"written", "the paused replica did not connect again"
        assert child.wait(30) == 0
        policies = sorted(event["policy"] for event in other.events(limit=10))
        assert policies == ["policy-a", "policy-b"], policies  # the paused transaction's event was rolled back
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
            child.wait()
        other.close()


def test_a_session_ended_by_the_server_is_dropped(pg_url: str) -> None:
    """Whatever the error, a connection psycopg reports broken or closed is made anew (here: the server's
    idle_in_transaction_session_timeout ended the session, a FATAL error of class 25)."""
    journal = open_journal(pg_url + "%20-cidle_in_transaction_session_timeout%3D300")
    try:
        with pytest.raises(JournalUnavailable), journal._tx(immediate=True) as cur:
            cur.execute("SELECT 1")
            time.sleep(1.0)  # idle in the transaction past the server's limit
            cur.execute("SELECT 1")
        assert journal._threads.state.conn is None
        journal.ping()
    finally:
        journal.close()


def _end_session_of(admin_url: str, conn: Any) -> None:
    """What a server restart (or a fail-over, or a proxy's idle timeout) does to a connection that waits idle."""
    pid = conn.info.backend_pid
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        for _ in range(100):
            if admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() is None:
                return
            time.sleep(0.05)
    raise AssertionError(f"backend {pid} still runs")


def test_a_connection_the_server_ended_while_it_waited_is_made_anew_at_begin(pg_url: str) -> None:
    """Finding: after a server restart, the first operation of every thread whose connection waited idle
    failed (JournalUnavailable: a daemon's worker failed a rotation, /metrics an update). BEGIN is the first
    statement and nothing ran yet, so a new connection begins again, once; the write happens once."""
    journal = open_journal(pg_url)
    try:
        assert journal.acquire_lease("p", "a", timedelta(minutes=5), T0) == 1
        before = journal._threads.state.conn
        _end_session_of(pg_url, before)
        journal.record_event(T0, "p", None, "plan", "ok", {})
        assert journal._threads.state.conn is not before
        assert [e["step"] for e in journal.events("p")] == ["plan"]
        _end_session_of(pg_url, journal._threads.state.conn)
        assert journal.acquire_lease("p", "b", timedelta(minutes=5), T0 + timedelta(minutes=10)) == 2
    finally:
        journal.close()


def test_a_connection_that_fails_its_first_begin_is_not_made_again(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Only a connection that waited since an earlier transaction is made anew: a new one that cannot begin
    is an outage (JournalUnavailable at once), not something to try again inside the same call."""
    journal = open_journal(pg_url)
    try:
        journal._drop_connection()
        connects: list[Any] = []
        real = journal._backend.connect

        def connect() -> Any:
            conn = real()
            connects.append(conn)
            _end_session_of(pg_url, conn)
            return conn

        monkeypatch.setattr(journal, "_backend", dataclasses.replace(journal._backend, connect=connect))
        with pytest.raises(JournalUnavailable):
            journal.record_event(T0, "p", None, "plan", "ok", {})
        assert len(connects) == 1
    finally:
        monkeypatch.undo()
        journal.close()
