"""The durable record of runs, pending revocations, leases and audit events.

The journal never holds a token value: only token ids, store version ids, states and times.
Every state change is committed and on disk before the side effect it announces (SQLite: the
WAL fdatasync'd after COMMIT, several writers' commits sharing one flush, see
:mod:`rotator.core.group_sync`), so a process killed at any instant leaves enough behind to roll
forward or back.

Each thread has its own connection (SQLite in WAL mode: readers never wait, writers queue on
the database lock; PostgreSQL: one session per thread, as a pool would give), and one watchdog
thread per journal cuts a PostgreSQL transaction that outlives its deadline (a read-only snapshot
transaction: a statement of it).

SQLite is the embedded default; PostgreSQL (``postgresql://...``, psycopg 3) lets several
replicas share one journal and coordinate through its lease rows. The SQL is kept to what both
run (``ON CONFLICT``, ISO-8601 text timestamps that sort as times); a :class:`_Backend` holds
the few differences (placeholders, how a locking transaction starts, which errors mean what).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from enum import Enum, StrEnum, nonmember
from functools import lru_cache, partial, wraps
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, TypeVar, cast
from urllib.parse import quote

from rotator.config.extras import install_hint
from rotator.config.policy_source import as_user, refuse_untrusted_directory, refuse_untrusted_file, user_name
from rotator.config.policy_source import sqlite_path as sqlite_path  # (its home: the checks before this import)
from rotator.config.timefmt import rfc3339_micro
from rotator.core import audit_chain
from rotator.core.errors import (
    ConfigError,
    JournalError,
    JournalSchemaNewer,
    JournalUnavailable,
    LeaseBusy,
    LeaseLost,
)
from rotator.core.group_sync import GroupSync, WalFile
from rotator.core.secret import REDACTOR

__all__ = ["Journal", "JournalStats", "Preflight", "RevocationState", "Revocation", "RunRecord", "RunState",
           "open_journal", "postgres_url_problem", "ts"]


def _debug(message: str) -> None:
    """A debug record of the journal's, with the exception being handled. logging is imported here, not
    at the top: `rotator status` from its cache reads the journal and imports nothing it does not use
    (tests/runners/test_cli_startup.py)."""
    import logging

    logging.getLogger("rotator.journal").debug(message, exc_info=True)


class RunState(StrEnum):
    """Run states, in the order a successful run passes them (the values are what the journal stores).

    A run only moves forward (:meth:`can_move`): the journal refuses any other transition, so a
    paused process that wakes up cannot drag a run back (e.g. from ``revoking_new`` to ``verified``).
    """

    PLANNED = "planned"
    MINTING = "minting"  # mint intent journaled; a token with the run's tag may exist
    MINTED = "minted"  # token id known, value only in the process's memory
    VERIFIED = "verified"  # a rotation publishes from here: stores may hold the new token
    PUBLISHING = "publishing"  # some stores may hold the new token (bootstrap)
    PUBLISHED = "published"  # every store holds it; old token revocation scheduled
    DONE = "done"  # every revocation it scheduled ended: old token revoked (or there was none)
    REVOKING_NEW = "revoking_new"  # failed before publish; discarding the candidate
    FAILED = "failed"  # ended without publishing; nothing left behind
    ABORTED = "aborted"  # ended before anything was minted

    OPEN = nonmember((PLANNED, MINTING, MINTED, VERIFIED, PUBLISHING, REVOKING_NEW))
    SUCCESS = nonmember((PUBLISHED, DONE))
    FINAL = nonmember((DONE, FAILED, ABORTED))

    #: the success path, in order: a run moves along it only forward (steps may be skipped, e.g.
    #: bootstrap goes from planned to publishing, a rotation from verified to published)
    PATH = nonmember((PLANNED, MINTING, MINTED, VERIFIED, PUBLISHING, PUBLISHED, DONE))
    #: where a run that never published ends: from any unpublished step, and from revoking_new
    DISCARD = nonmember((REVOKING_NEW, FAILED, ABORTED))

    @classmethod
    def can_move(cls, old: str, new: str) -> bool:
        """True when a run in ``old`` may be written as ``new`` (same state: only while not final).

        Never backwards: not from revoking_new to verified, not from published to publishing.
        """
        path: tuple[str, ...] = cls.PATH
        if old == new:
            return old not in cls.FINAL
        if old in path and new in path:
            return path.index(new) > path.index(old)
        if old in path[: path.index(cls.PUBLISHING) + 1]:
            return new in cls.DISCARD
        return old == cls.REVOKING_NEW and new in (cls.FAILED, cls.ABORTED)


class RevocationState(StrEnum):
    """A revocation is ``pending`` until it is ``done`` or ``failed``; a failed one may still be done
    (``revoke-expired --retry-failed``, or a later manual try worked), or stay failed with another
    round counted, or be ``dismissed`` by a person who decided the token stays valid
    (``revoke-expired --dismiss``; audited with the reason, never tried again). A pending one is
    dismissed by rotator itself when its token is in no record of rotator's and the issuer does not
    have it (nothing revoked, nothing to try again: Engine._dismiss_unrecorded). An update never
    makes it pending again; only scheduling the token again does, when a rotation replaces it once
    more (it was current again: _insert_revocation; a dismissed one stays dismissed). That write is
    fenced by the rotation's lease, so a paused pass cannot mistake the row for the pending one it
    read before it failed."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    DISMISSED = "dismissed"

    NEXT = nonmember({"pending": ("pending", "done", "failed", "dismissed"), "failed": ("failed", "done", "dismissed"),
                      "done": (), "dismissed": ()})

    @classmethod
    def can_move(cls, old: str, new: str) -> bool:
        nxt: dict[str, tuple[str, ...]] = cls.NEXT
        return new in nxt.get(old, ())


#: a dismissed revocation's ``last_error`` starts with this, and the person's reason follows
_DISMISSED_PREFIX = "dismissed: "


def dismissal_note(reason: str) -> str:
    """What a dismissed revocation's row keeps in ``last_error``: the reason a person gave."""
    return f"{_DISMISSED_PREFIX}{reason}"


def dismissal_reason(last_error: str | None) -> str:
    """The reason kept by :func:`dismissal_note` (a row dismissed by hand may have none)."""
    return (last_error or "").removeprefix(_DISMISSED_PREFIX)


#: json.dumps(..., sort_keys=True) makes a new encoder at every call; a run's row dumps two mappings
_dump_sorted = json.JSONEncoder(sort_keys=True).encode


@lru_cache(maxsize=1024)
def ts(value: datetime) -> str:
    """Fixed-width UTC text that sorts like the time it stands for (rotator.config.timefmt).

    Cached: a rotation formats ~40 times but only a handful of distinct ones (a run's times are
    written again with every change of its row). Equal aware datetimes are the same instant, so
    they share one UTC text."""
    return rfc3339_micro(value)


def _dt(value: str | None) -> datetime | None:
    if value is None:
        return None
    if len(value) == 27 and value[-1] == "Z":
        # ts()'s own form. fromisoformat reads the Z as the UTC singleton (Python 3.11+): ~10x faster
        # than strptime, and than parsing without it and replace(tzinfo=UTC), which parses keywords.
        return datetime.fromisoformat(value)
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@dataclass
class RunRecord:
    run_id: str
    policy: str
    state: str
    kind: str  # rotate | bootstrap
    started_at: datetime
    updated_at: datetime
    old_token_id: str | None = None
    new_token_id: str | None = None
    new_expires_at: datetime | None = None
    published_at: datetime | None = None
    finished_at: datetime | None = None
    #: store name -> version id PLAN read (compare-and-set base); None = absent
    planned_versions: dict[str, str | None] = field(default_factory=dict)
    #: store name -> version id the new token was published as
    published_versions: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    #: the fencing number of the lease under which the run was last written
    fence: int | None = None
    #: when the (last) mint call started: a child process of a dead rotator may still mint until
    #: this plus the issuer's call timeout (see Engine._recover_run)
    mint_started_at: datetime | None = None
    #: when the issuer created the run's token, where that is earlier than its publication: a
    #: bootstrapped token (a person created it, maybe long before). None: a minted token, or the
    #: issuer did not say
    token_created_at: datetime | None = None
    #: the fencing number of the lease under which the run reached VERIFIED (the lease its own store
    #: writes run under; a record for whoever reads the journal: recovery moves a VERIFIED run's stores
    #: on whoever verified it, Engine._fence_stale_publishes); None: not verified, or from before schema 8
    verified_fence: int | None = None
    #: the run's tag is searched for tokens besides its own until then: a try of its mint failed
    #: without a definite answer, and the issuer may still create that token (Engine._search_tags).
    #: None: no such try, or the search is over
    tag_search_until: datetime | None = None
    #: where the issuer minted (or, for a bootstrap, found) the run's token, as the issuer named it when
    #: the run was journaled (contracts.target_of: e.g. "clustered cluster-a.example.com:443"). A token is
    #: revoked, searched for or found gone only where it lives: the engine refuses to judge it at an issuer
    #: that names another place now (revocation_rule.check_same_target). None: the issuer does not say, or
    #: a run from before schema 10; such a run is judged wherever the issuer points, as before
    issuer_target: str | None = None
    #: the SHA-256 (hex) of the value the run minted, journaled with its id at MINTED (never the value):
    #: recovery copies a store's value to the other stores only when it is this one (Engine._roll_forward).
    #: None: no mint, a bootstrap, or a run from before schema 11
    new_token_sha256: str | None = None

    @property
    def token_since(self) -> datetime | None:
        """When the run's token began to age: its creation at the issuer where the journal has it,
        else its publication (what max_age bounds, and what the schedule counts from)."""
        if self.token_created_at is not None and self.published_at is not None:
            return min(self.token_created_at, self.published_at)
        return self.published_at


@dataclass
class Revocation:
    policy: str
    token_id: str
    run_id: str
    reason: str  # superseded | discarded
    due_at: datetime
    state: str  # pending | done | failed
    attempts: int = 0
    next_try_at: datetime | None = None
    last_error: str | None = None
    done_at: datetime | None = None


#: each a script of statements separated by ``;`` for every backend, or the statements of each backend.
#: A journal whose schema_version rows were set back (by hand, or that table restored alone) holds what
#: the migrations after its version made already, and must upgrade again: every migration but 1 and 3
#: (audit_chain.MIGRATION, which inserts the chain's head row) can run again over what it made (indexes
#: IF NOT EXISTS; an ALTER TABLE ... ADD COLUMN adds nothing when the column is there: Journal._migrate_statement).
_MIGRATIONS: tuple[str | Mapping[str, tuple[str, ...]], ...] = (
    # 1: the initial schema
    """
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        policy TEXT NOT NULL,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        started_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        old_token_id TEXT,
        new_token_id TEXT,
        new_expires_at TEXT,
        published_at TEXT,
        finished_at TEXT,
        planned_versions TEXT NOT NULL DEFAULT '{}',
        published_versions TEXT NOT NULL DEFAULT '{}',
        error TEXT
    );
    CREATE INDEX runs_policy_started ON runs (policy, started_at);
    CREATE TABLE revocations (
        policy TEXT NOT NULL,
        token_id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        due_at TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_try_at TEXT,
        last_error TEXT,
        done_at TEXT,
        PRIMARY KEY (policy, token_id)
    );
    CREATE TABLE leases (
        policy TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        fence INTEGER NOT NULL,
        expires_at TEXT NOT NULL
    );
    CREATE TABLE events (
        at TEXT NOT NULL,
        policy TEXT NOT NULL,
        run_id TEXT,
        step TEXT NOT NULL,
        result TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_policy_at ON events (policy, at);
    """,
    # 2: fencing numbers on runs (the lease row is kept on release, so its fence only grows) and
    # the start of the last mint call
    """
    ALTER TABLE runs ADD COLUMN fence INTEGER;
    ALTER TABLE runs ADD COLUMN mint_started_at TEXT
    """,
    # 3: the audit events' hash chain (rotator/core/audit_chain.py)
    audit_chain.MIGRATION,
    # 4: indexes for the queries that status, the daemon and every rotation make, so that their
    # cost follows what is current, not the journal's history (issue 12)
    """
    CREATE INDEX IF NOT EXISTS runs_policy_state ON runs (policy, state);
    CREATE INDEX IF NOT EXISTS runs_policy_published ON runs (policy, published_at);
    CREATE INDEX IF NOT EXISTS runs_policy_token ON runs (policy, new_token_id);
    CREATE INDEX IF NOT EXISTS revocations_state_due ON revocations (state, due_at);
    CREATE INDEX IF NOT EXISTS revocations_policy_state ON revocations (policy, state)
    """,
    # 5: the audit chain's head moved by the INSERT of each link (no UPDATE of it per transaction)
    audit_chain.HEAD_TRIGGER_MIGRATION,
    # 6: a policy's due revocations found among its own rows. With (policy, state) the planner took
    # (state, due_at) for the preflight's "due" branch and read every policy's due revocations:
    # 1 ms a rotation at 10,000 policies with one due each (an issuer outage or a missing grant
    # leaves them all due), against 65 us with this index
    """
    CREATE INDEX IF NOT EXISTS revocations_policy_state_due ON revocations (policy, state, due_at);
    DROP INDEX IF EXISTS revocations_policy_state
    """,
    # 7: when the issuer created a bootstrapped token: its age counts from then, not from the bootstrap
    """
    ALTER TABLE runs ADD COLUMN token_created_at TEXT
    """,
    # 8: the lease a run was verified under (whose holder may still write its stores), and until when
    # the tag of a run whose mint had a try without an answer is searched; the runs still searched
    # are found by a partial index (a handful at most, whatever the journal's history)
    """
    ALTER TABLE runs ADD COLUMN verified_fence INTEGER;
    ALTER TABLE runs ADD COLUMN tag_search_until TEXT;
    CREATE INDEX IF NOT EXISTS runs_policy_tag_search ON runs (policy) WHERE tag_search_until IS NOT NULL
    """,
    # 9: the daemon's sweep (Journal.overview) reads the open runs and the unfinished revocations
    # through partial indexes (a handful of rows whatever the history: their predicates are the
    # overview's own, word for word, _OPEN_STATES and _UNFINISHED_STATES, so that both SQLite and
    # PostgreSQL can use them) and the publications since its previous read through published_at.
    # Without them it read every run: 1.4 M SQLite VM steps and ~110 ms a sweep at 100k runs of
    # history, against 1,400 on a fresh journal (issue 12); and once ANALYZE had counted a few states
    # over many rows, SQLite read every revocation too.
    """
    CREATE INDEX IF NOT EXISTS runs_open ON runs (policy)
        WHERE state IN ('planned', 'minting', 'minted', 'verified', 'publishing', 'revoking_new');
    CREATE INDEX IF NOT EXISTS runs_published ON runs (published_at);
    CREATE INDEX IF NOT EXISTS revocations_unfinished ON revocations (policy) WHERE state IN ('pending', 'failed')
    """,
    # 10: where the issuer minted each run's token (RunRecord.issuer_target), written with the run's first
    # row: a policy whose issuer is pointed at another cluster must not take "not listed there" as "revoked".
    # A nullable column, no rebuild: the runs before it read as NULL (unknown, judged as before)
    """
    ALTER TABLE runs ADD COLUMN issuer_target TEXT
    """,
    # 11: the SHA-256 of the value each run minted (RunRecord.new_token_sha256), written with its id at
    # MINTED (in that same UPDATE: no statement more): a store holding the run's token id with another
    # value is never copied to the other stores by recovery. Nullable, no rebuild: the runs before it
    # read as NULL (recovered as before)
    """
    ALTER TABLE runs ADD COLUMN new_token_sha256 TEXT
    """,
)

#: the journal schema this code reads and writes (its last migration's number)
SCHEMA_VERSION = len(_MIGRATIONS)
#: the journal's schema version as the database has it now
_SCHEMA_VERSION_SQL = "SELECT MAX(version) FROM schema_version"
_SCHEMA_NOW = f"({_SCHEMA_VERSION_SQL})"
#: folded into the statement that takes a lease (Journal.acquire_lease, take_over_lease): a process that
#: opened the journal before a newer rotator upgraded it (a rolling upgrade's old replicas) takes no lease
#: after the upgrade, and so starts no run, without a statement more per rotation (issue 12)
_SCHEMA_KNOWN = f"{_SCHEMA_NOW} <= {SCHEMA_VERSION}"

#: a migration's ALTER TABLE that adds a column: (table, column)
_ADD_COLUMN = re.compile(r"\s*ALTER TABLE (\w+) ADD COLUMN (\w+)", re.IGNORECASE)

_RUN_COLUMNS = (
    "run_id", "policy", "kind", "state", "started_at", "updated_at", "old_token_id", "new_token_id",
    "new_expires_at", "published_at", "finished_at", "planned_versions", "published_versions", "error",
    "fence", "mint_started_at", "token_created_at", "verified_fence", "tag_search_until", "issuer_target",
    "new_token_sha256",
)  # fmt: skip
_REV_COLUMNS = (
    "policy", "token_id", "run_id", "reason", "due_at", "state", "attempts", "next_try_at",
    "last_error", "done_at",
)  # fmt: skip
#: the fields update_run may change (a run's id and policy never change)
_RUN_WRITABLE = frozenset(f.name for f in fields(RunRecord)) - {"run_id", "policy"}
#: the fields update_revocation may change (a revocation is keyed by its policy and token id)
_REV_WRITABLE = frozenset(f.name for f in fields(Revocation)) - {"policy", "token_id"}


@dataclass(frozen=True)
class _Backend:
    """What differs between SQLite and PostgreSQL."""

    name: str
    connect: Callable[[], Any]
    errors: tuple[type[BaseException], ...]
    #: errors after which the connection is dropped and made anew on next use
    connection_errors: tuple[type[BaseException], ...] = ()
    #: after an error of any kind: true when ``conn`` can run no more statements (psycopg: closed, or
    #: broken by a session the server ended), so it is dropped and made anew on next use too
    connection_lost: Callable[[Any], bool] = lambda _conn: False
    #: the readiness probe's one statement (Journal.ping): a read of a page of rotator's own (SQLite
    #: answers `SELECT 1` from no file at all: a journal file replaced by an empty one passed), the
    #: schema version, which a newer rotator may have moved past this one's. A second column, where
    #: there is one, is true when the session cannot write
    ping_sql: str = "SELECT MAX(version) FROM schema_version"
    paramstyle_percent: bool = False
    begin: str = "BEGIN"
    begin_locked: str = "BEGIN IMMEDIATE"
    #: run inside a transaction that need not be durable on its own (Journal.transaction(durable=False))
    relaxed_inside: str | None = None
    #: run first inside a read transaction whose statements must all see one snapshot (the audit
    #: chain's head and its events), and that makes it read-only on the server (its deadline is then per
    #: statement: Journal._new_tx); SQLite's read transaction in WAL mode is one already
    snapshot_inside: str | None = None
    #: a file whose fdatasync makes every commit written so far durable (SQLite: the WAL file, the
    #: connections committing with ``synchronous=NORMAL``): a durable commit waits for a flush
    #: of it, shared with concurrent commits (group commit), instead of syncing under the write lock
    flush_file: str | None = None
    #: whether the database is in WAL mode (the flush file must then exist after a commit)
    in_wal_mode: Callable[[], bool] = lambda: False
    #: run first inside the migration transaction, so concurrent replicas migrate one at a time
    migration_lock: str | None = None
    #: run inside a write transaction before it reads the schema version (Journal._refuse_newer_schema_inside):
    #: shares the migration lock, so no migration commits while the transaction runs
    schema_read_lock: str | None = None
    #: ALTER TABLE ... ADD COLUMN takes IF NOT EXISTS (PostgreSQL 9.6+); without it (SQLite) a
    #: migration that adds a column looks for it first (Journal._migrate_statement)
    add_column_if_not_exists: bool = False
    #: a query returning a row when the table named by its one parameter exists
    table_exists: str = "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?"
    #: appended to the SELECT of a lease row that a fenced write checks (PostgreSQL: lock it, so
    #: no take-over commits between the check and the write; SQLite's BEGIN IMMEDIATE already does)
    lock_row: str = ""
    #: the longest one transaction may wait on the server before ``abort`` cuts its connection: a
    #: statement_timeout is enforced by the server, so a peer that went silent mid-query (a dead
    #: network path, a proxy that swallows bytes) would otherwise hang the worker for good. A
    #: read-only snapshot transaction (snapshot_inside) gets it per statement instead: see Journal._new_tx
    tx_deadline_s: float | None = None
    #: cut a connection from another thread, so that a call blocked on it fails at once
    abort: Callable[[Any], None] | None = None
    #: true for an error that means "did not answer in time / connection broke": transient
    #: (JournalUnavailable), unlike e.g. a permission or schema problem
    unavailable: Callable[[BaseException], bool] = lambda _exc: False
    #: true for an error of a transaction the server rolled back as a whole because another one conflicted
    #: with it (a deadlock, a serialization failure): nothing of it was written and the connection is
    #: sound, so a transaction the journal runs on its own is run once more (_once_more_after_conflict)
    conflict: Callable[[BaseException], bool] = lambda _exc: False
    #: the fix of an ``unavailable`` error
    unavailable_hint: str = (
        "the journal did not answer in time, its connection broke, or its server accepts no writes "
        "(a standby, a primary demoted by a fail-over); rotator connects again and retries on the next run. "
        "Check the database server, the network to it, which server the journal URL reaches, and "
        "long-running locks")
    #: true for a unique violation of an audit event's sequence number (``events_seq``), by the
    #: error's type and constraint, not by its text alone (a lock timeout inside that index names it too)
    seq_collision: Callable[[BaseException], bool] = lambda _exc: False
    #: every process that writes or reads the journal runs on this host, and a commit that was not
    #: synced is lost only when the host goes down, with all of them (SQLite: a process that dies
    #: loses no commit; WAL mode needs every connection on one host). See Journal.single_host.
    single_host: bool = False
    #: a write transaction holds the whole database from its BEGIN (SQLite's ``BEGIN IMMEDIATE``), so
    #: nothing another writer does can land inside it (PostgreSQL locks rows, one at a time)
    locks_database: bool = False


_WRITES = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "ALTER", "DROP"})
#: statement text -> whether it writes; the journal's statements are a small fixed set (bounded anyway)
_WRITE_SQL: dict[str, bool] = {}


def _is_write(sql: str) -> bool:
    known = _WRITE_SQL.get(sql)
    if known is None:
        words = sql.split(None, 1)
        known = bool(words) and words[0].upper() in _WRITES
        if len(_WRITE_SQL) < 1024:
            _WRITE_SQL[sql] = known
    return known


class _Cursor:
    """A DB-API cursor that takes ``?`` placeholders on every backend, and notes whether it wrote.

    ``watch``: the watchdog bounds each statement's wait on the server, not the whole transaction (a
    read-only one, see Journal._new_tx); ``conn`` is what it cuts."""

    def __init__(self, cur: Any, percent: bool, watch: _Watchdog | None = None, conn: Any = None) -> None:
        self._cur = cur
        self._percent = percent
        self._watch = watch
        self._conn = conn
        #: a statement of this transaction changed a row or the schema (its commit writes, and syncs)
        self.wrote = False
        #: statements executed (BEGIN and COMMIT included)
        self.statements = 0
        #: set by Journal._new_tx for a single-statement read on a reused connection: called with the
        #: error of that statement, it returns a new (cursor, connection) to run it once more on, or
        #: None when it must fail as it is
        self.reconnect: Callable[[BaseException], tuple[Any, Any] | None] | None = None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Cursor:
        self.statements += 1
        # psycopg's (client-side) cursor has received the whole result when execute() returns, so the
        # fetches that follow never wait on the server: the statement is all there is to bound.
        watch = self._watch
        key = 0 if watch is None else watch.arm(self._conn)
        try:
            if self._percent:  # psycopg dumps an Enum member by its name; sqlite3 binds a StrEnum as its text
                self._cur.execute(sql.replace("?", "%s"),
                                  tuple([p.value if isinstance(p, Enum) else p for p in params]))
            else:
                self._cur.execute(sql, params)
        except BaseException as exc:
            if self.reconnect is None or not self._again(exc, sql, params):
                raise
        finally:
            if watch is not None:
                watch.disarm(key)
        if not self.wrote and _is_write(sql) and self._cur.rowcount != 0:
            self.wrote = True
        return self

    def _again(self, exc: BaseException, sql: str, params: Sequence[Any]) -> bool:
        """Run the transaction's first and only statement, a read that failed with ``exc``, once more on
        the connection ``reconnect`` gives; False (``exc`` stands) when it gives none. A write is never
        run again: whether it landed is unknown."""
        reconnect, self.reconnect = self.reconnect, None
        if reconnect is None or self.statements != 1 or _is_write(sql):
            return False
        fresh = reconnect(exc)
        if fresh is None:
            return False
        self._cur, self._conn = fresh
        self.statements += 1
        if self._percent:
            self._cur.execute(sql.replace("?", "%s"), tuple([p.value if isinstance(p, Enum) else p for p in params]))
        else:
            self._cur.execute(sql, params)
        return True

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self._cur.fetchall())

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)

    def close(self) -> None:
        self._cur.close()


@dataclass
class JournalStats:
    """Exact counters of one :class:`Journal` (every thread), for tests and benchmarks.

    ``transactions``: every transaction that ended (committed or rolled back), reads included.
    ``commits``: committed transactions that changed at least one row (or the schema); a transaction
    that only read, or whose writes matched no row, writes and syncs nothing. On SQLite a durable
    commit returns once an fdatasync of the WAL file begun after its COMMIT has ended (``flushes``
    counts those; concurrent commits share one). On PostgreSQL each durable commit is one WAL flush
    on the server (``synchronous_commit`` on), which groups concurrent commits itself.
    ``rollbacks``: transactions rolled back (a refused compare-and-set, a lost lease, an error).
    """

    transactions: int = 0
    commits: int = 0
    #: the commits that were synced (all but those of ``transaction(durable=False)``)
    synced: int = 0
    #: SQLite: fdatasyncs of the WAL file made for durable commits (one per synced commit in a
    #: single thread; fewer with concurrent writers); an automatic checkpoint, every ~1000 WAL
    #: pages, adds SQLite's own fsyncs. PostgreSQL: 0 (the server flushes).
    flushes: int = 0
    rollbacks: int = 0
    #: SQL statements executed, BEGIN and COMMIT included (connection pragmas and migrations aside)
    statements: int = 0

    def snapshot(self) -> JournalStats:
        return replace(self)


class _Watchdog:
    """One thread per journal that cuts a transaction's (or a statement's) connection when it outlives
    its deadline.

    Replaces a ``threading.Timer`` (a new thread) per transaction: :meth:`arm` and :meth:`disarm`
    are a dictionary operation under a lock; the thread sleeps until the earliest deadline.
    """

    def __init__(self, deadline_s: float, abort: Callable[[Any], None]) -> None:
        self._deadline_s = deadline_s
        self._abort = abort
        self._cond = threading.Condition()
        self._armed: dict[int, tuple[float, Any]] = {}
        self._next_key = 0
        self._thread: threading.Thread | None = None
        self._stopped = False

    def arm(self, conn: Any) -> int:
        with self._cond:
            self._next_key += 1
            key = self._next_key
            self._armed[key] = (time.monotonic() + self._deadline_s, conn)
            if self._thread is None or not self._thread.is_alive():
                # (a thread that died would leave every later deadline unenforced)
                self._thread = threading.Thread(target=self._run, name="rotator-journal-watchdog", daemon=True)
                self._thread.start()
            elif len(self._armed) == 1:
                self._cond.notify()
            return key

    def disarm(self, key: int) -> None:
        with self._cond:
            self._armed.pop(key, None)

    def fired(self, key: int) -> bool:
        """Whether ``key``'s deadline passed and its connection was cut (or is being cut); only before
        :meth:`disarm` of that key."""
        with self._cond:
            return key not in self._armed

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                if not self._armed:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                key, (deadline, conn) = min(self._armed.items(), key=lambda item: item[1][0])
                if deadline > now:
                    self._cond.wait(deadline - now)
                    continue
                del self._armed[key]
                # Under the lock: a transaction that ends now waits in disarm() until the cut is done.
                try:
                    self._abort(conn)
                except Exception:  # the watchdog must outlive a cut that fails: later deadlines need it
                    _debug("journal watchdog: cutting a connection failed")


class _Local:
    """What one thread has of a journal: its connection and its open transaction. A plain object
    held by a ``threading.local`` (:class:`_PerThread`): each attribute read of a ``threading.local``
    looks the thread's dictionary up again, and a transaction reads these ~25 times."""

    __slots__ = ("conn", "cur", "undo", "after", "pending", "leases", "head", "confirmed", "confirmed_at", "runs",
                 "unanswered")

    conn: Any
    cur: _Cursor | None
    undo: list[Callable[[], None]]
    after: list[Callable[[], None]]
    #: writes that wait for this thread's next transaction (:meth:`Journal.defer`)
    pending: list[Callable[[], None]]
    #: in the open transaction: policy -> its lease row (holder, fence, expiry text) as this
    #: transaction read or wrote it; the row is locked until the transaction ends, so one read per
    #: transaction serves every fence check and lease confirmation in it
    leases: dict[str, tuple[str, int, str]]
    #: in the open transaction: the audit chain's head (seq, hash) as this transaction's events
    #: moved it (read, locked, once; the database moves the head row with each event's INSERT)
    head: tuple[int, str] | None
    #: the lease rows of this thread's last committed transaction, and _monotonic() when it began
    #: (every row was read or written under its lock after that): Journal.confirm_lease
    confirmed: dict[str, tuple[str, int, str]]
    confirmed_at: float
    #: in the open transaction: the ids of the runs it inserted or moved
    runs: list[str]
    #: the ids of runs that a transaction of this thread moved and whose COMMIT got no answer (the
    #: connection broke): it may have landed while the rollback put the records back in memory
    #: (Journal._write_run, Journal.catch_up); until a later commit of the run is answered
    unanswered: set[str]

    def __init__(self) -> None:
        self.conn, self.cur, self.head, self.confirmed_at = None, None, None, 0.0
        self.undo, self.after, self.pending, self.leases, self.confirmed = [], [], [], {}, {}
        self.runs, self.unanswered = [], set()


class _PerThread(threading.local):
    state: _Local

    def __init__(self) -> None:
        self.state = _Local()


#: Journal.confirm_lease: how long after the transaction that read a lease row under its lock (and
#: committed) a side effect may rely on that read instead of reading the row again. A take-over
#: that does not wait for the lease to expire waits this long after its commit before it returns
#: (Journal.take_over_lease), so that a side effect that relied on an earlier read has begun first,
#: as if it had read the row.
LEASE_READ_FRESH_SECONDS = 0.05
#: boot time where there is one: a suspended host's pause counts, as it would for the lease's expiry
_monotonic = (partial(time.clock_gettime, time.CLOCK_BOOTTIME) if hasattr(time, "CLOCK_BOOTTIME")
              else time.monotonic)


_F = TypeVar("_F", bound=Callable[..., Any])


def _once_more_after_conflict(method: _F) -> _F:
    """A journal call that writes, run once more when its transaction was its own (not joined to an open
    one) and the server rolled it back for a conflict with another session (_Backend.conflict: a deadlock,
    a serialization failure). Nothing of it was written and the rollback put back what it had changed in
    memory, so the call, and the deferred writes its transaction carried (queued again: they too change
    only what the rollback puts back), run as if for the first time. Once: a conflict that comes back
    is reported (_CONFLICT_HINT). A joined call is left alone: the rest of its transaction is the
    caller's, which no callee can run again."""

    @wraps(method)
    def call(self: Journal, /, *args: Any, **kwargs: Any) -> Any:
        local = self._threads.state
        if local.cur is not None:
            return method(self, *args, **kwargs)
        pending = local.pending[:]
        try:
            return method(self, *args, **kwargs)
        except JournalUnavailable as exc:
            # (_new_tx raises the JournalError from None: the server's error is its context)
            if exc.__context__ is None or not self._backend.conflict(exc.__context__):
                raise
            _debug(f"journal {self.location}: a transaction rolled back for a conflict; running it once more")
            local.pending = pending + local.pending
        return method(self, *args, **kwargs)

    return cast(_F, call)


class Journal:
    """A small API over the journal tables. Thread-safe: each thread has its own connection.

    Every method is one transaction; inside :meth:`transaction` the calls of the same thread join
    that one transaction (one commit for a step's state change and its audit events).
    """

    def __init__(self, backend: _Backend, location: str, create: bool = True, read_only: bool = False) -> None:
        self._create = create and not read_only
        #: opened by a command that only reads: the schema is checked, never upgraded, and no write
        #: lock is taken to open it (an auditor's read-only access, a daemon busy writing)
        self._read_only = read_only
        self._backend = backend
        self._threads = _PerThread()
        self._conns_lock = threading.Lock()
        #: every thread's connection, with its thread (a dead thread's is closed at the next connect)
        self._conns: list[tuple[threading.Thread, Any]] = []
        self._watch = (
            _Watchdog(backend.tx_deadline_s, backend.abort)
            if backend.tx_deadline_s is not None and backend.abort is not None else None
        )  # fmt: skip
        self.stats = JournalStats()
        self._wal = WalFile(backend.flush_file, backend.in_wal_mode) if backend.flush_file else None
        self._group = GroupSync(self._flush_wal) if self._wal is not None else None
        self.location = location
        #: the audit chain's head (seq, hash) as this object's last write transaction left it, which
        #: the next one links its first event to without reading the head row, when the backend
        #: locks the database (_Backend.locks_database); a hint only: the INSERT checks it
        #: (audit_chain.insert_link_if_head), and the head row is read when another writer moved it
        self._head_hint: tuple[int, str] | None = None
        self.backend = backend.name
        self._migrate()

    @property
    def single_host(self) -> bool:
        """A lease need not be synced before the side effects it fences when this is true: a commit
        of it that a crash loses is lost only with every process on the host, the holder included,
        so no other process can take the same fencing number while the holder still acts. On
        PostgreSQL a server crash loses a commit that was not synced while its client lives on."""
        return self._backend.single_host

    # -- plumbing -----------------------------------------------------------------------
    def _connection(self) -> Any:
        local = self._threads.state
        if local.conn is None:
            local.conn = self._backend.connect()
            with self._conns_lock:
                dead = [entry for entry in self._conns if not entry[0].is_alive()]
                self._conns = [entry for entry in self._conns if entry[0].is_alive()]
                self._conns.append((threading.current_thread(), local.conn))
            for _thread, conn in dead:  # e.g. an HTTP server's thread per request that pinged the journal
                _close_quietly(conn)
        return local.conn

    def _tx(self, immediate: bool = False, durable: bool = True, single: bool = False,
            snapshot: bool = False) -> AbstractContextManager[_Cursor]:  # fmt: skip
        """This thread's transaction (joined when one is open). ``single``: the caller runs exactly one
        statement that only reads; it runs without BEGIN/COMMIT (one statement is a transaction of
        its own on both backends: SQLite in autocommit mode, psycopg with autocommit), unless
        deferred writes wait for this transaction. ``snapshot``: a read transaction whose statements
        all see one snapshot of the database."""
        cur = self._threads.state.cur
        if cur is not None:
            # Joined: nothing to begin or end. Most calls of a rotation are joins, and a class-based
            # context manager costs a fraction of a generator-based one.
            return nullcontext(cur)
        return self._new_tx(immediate, durable, single, snapshot)

    @contextmanager
    def _new_tx(self, immediate: bool, durable: bool, single: bool, snapshot: bool = False) -> Iterator[_Cursor]:
        local = self._threads.state
        pending, local.pending = local.pending, []
        single = single and not pending and durable
        # A snapshot transaction that the server keeps read-only (READ ONLY) holds no row lock a writer
        # waits for, and an audit verification reads the whole chain in one (millions of events:
        # minutes). Its deadline bounds each statement instead, which is what a silent server hangs: a
        # transaction cut for its length would fail every verification, report and prune of a large
        # journal for good (nothing pruned, so it only grows). A write transaction's locks hold other
        # replicas up, so its whole length stays bounded.
        read_only_sql = self._backend.snapshot_inside if snapshot and not (single or immediate or pending) else None
        reused = local.conn is not None
        conn, cur = self._open_cursor(read_only_sql is not None)
        key = self._watch.arm(conn) if self._watch is not None and read_only_sql is None else None
        local.cur, local.undo, local.after, local.leases, local.runs = cur, [], [], {}, []
        local.head = None
        local.confirmed = {}
        began = _monotonic()
        committed = committing = False
        if single and reused and self._backend.connection_errors:

            def reconnect(exc: BaseException) -> tuple[Any, Any] | None:
                # As at BEGIN below: a connection that waited idle may have been ended by the server (a
                # restart, a fail-over), and a transaction of one statement has no BEGIN to meet that.
                # That statement only reads, so running it again on a new connection changes nothing;
                # not when the watchdog cut it (it hung: the deadline has passed), nor after an error
                # that left the connection usable (a statement timeout, a deadlock: the server answered).
                nonlocal key
                if not isinstance(exc, self._backend.connection_errors) or not self._backend.connection_lost(conn) \
                        or (key is not None and self._watch is not None and self._watch.fired(key)):
                    return None
                if key is not None and self._watch is not None:
                    self._watch.disarm(key)
                    key = None
                self._drop_connection()
                fresh, opened = self._open_cursor(False)
                key = self._watch.arm(fresh) if self._watch is not None else None
                return opened._cur, fresh

            cur.reconnect = reconnect
        try:
            if not single:
                begin = self._backend.begin_locked if immediate or pending else self._backend.begin
                try:
                    cur.execute(begin)
                except self._backend.connection_errors:
                    # A connection that waited idle since its last transaction may have been ended by the
                    # server (a restart, a fail-over, a proxy's idle timeout). Nothing ran on it yet, so
                    # one new connection may begin again; not when the watchdog cut a BEGIN that hung
                    # (nor in a read-only snapshot transaction, whose statements it watches one by one).
                    if not reused or read_only_sql is not None or (
                            key is not None and self._watch is not None and self._watch.fired(key)):
                        raise
                    if key is not None and self._watch is not None:
                        self._watch.disarm(key)
                    self._drop_connection()
                    conn, cur = self._open_cursor(False)
                    key = self._watch.arm(conn) if self._watch is not None else None
                    local.cur = cur
                    cur.execute(begin)
            if read_only_sql is not None:
                cur.execute(read_only_sql)
            if not durable and self._backend.relaxed_inside is not None:
                cur.execute(self._backend.relaxed_inside)
            for write in pending:
                write()
            yield cur
            if cur.wrote and self._group is not None:
                self._refuse_if_durability_lost()
            if not single:
                self._forget_head()
                committing = True
                cur.execute("COMMIT")
            committed = True
        except self._backend.errors as exc:
            if committing and local.runs and isinstance(exc, self._backend.connection_errors) \
                    and not self._backend.conflict(exc):
                local.unanswered.update(local.runs)
            self._rollback(cur, exc, single)
            raise self._explain(cur, exc) from None
        except BaseException as exc:
            self._rollback(cur, exc, single)
            raise
        finally:
            if key is not None and self._watch is not None:
                self._watch.disarm(key)
            local.cur = None
            after = local.after
            if committed and local.leases:
                local.confirmed, local.confirmed_at = local.leases, began
            if committed and local.unanswered and local.runs:
                local.unanswered.difference_update(local.runs)
            local.undo, local.after, local.leases = [], [], {}
            local.head = None
            with self._conns_lock:
                self.stats.transactions += 1
                self.stats.statements += cur.statements
                if committed and cur.wrote:
                    self.stats.commits += 1
                    if durable:
                        self.stats.synced += 1
                elif not committed:
                    self.stats.rollbacks += 1
            try:
                cur.close()
            except self._backend.errors:
                pass
        if durable and cur.wrote and self._group is not None:
            self._flush()
        for callback in after:
            callback()

    def _open_cursor(self, watched: bool) -> tuple[Any, _Cursor]:
        """This thread's connection (made when it has none) and a cursor on it; ``watched``: each statement
        under the watchdog's deadline (:meth:`_new_tx`'s read-only snapshot transactions)."""
        try:
            conn = self._connection()
            return conn, _Cursor(conn.cursor(), self._backend.paramstyle_percent,
                                 self._watch if watched else None, conn)
        except self._backend.errors as exc:
            self._drop_connection()
            raise self._error(exc, "cannot connect: ") from None

    def _flush(self) -> None:
        """Wait until this thread's last commit is on disk (outside the write lock: group commit)."""
        assert self._group is not None
        try:
            self._group.wait()
        except OSError as exc:
            raise self._flush_error(exc) from None

    def durability_lost(self) -> str | None:
        """Why no commit of this journal object is durable any more (a flush of its WAL failed), or None.

        Only opening the journal again clears it (a daemon: a restart), so the daemon's liveness
        fails on it; a journal that merely does not answer is a readiness matter instead."""
        lost = self._durability_error()
        return None if lost is None else str(lost)

    def _refuse_if_durability_lost(self) -> None:
        """Inside a write transaction, before its COMMIT: the JournalError of a failed flush, if one failed.

        Every write, also one no flush follows (``durable=False``: a lease and a run planned, on
        SQLite): the caller acts on a commit that returns (a rotation revokes due tokens after its
        non-durable first commit), and after a failed flush no action may follow. Memory only: no
        statement."""
        lost = self._durability_error()
        if lost is not None:
            raise lost

    def _durability_error(self) -> JournalError | None:
        if self._group is None:
            return None
        try:
            self._group.check()
        except OSError as exc:
            return self._flush_error(exc)
        return None

    def _flush_error(self, exc: OSError) -> JournalError:
        return JournalError(
            f"journal {self.location}: committed, but could not make it durable: {exc}",
            hint="the disk or file system under the journal failed a flush; rotator stopped before acting on "
            "this commit and refuses further work with this journal until it is opened again (restart the "
            "daemon). Fix the disk, then run `rotator recover`",
        )

    def _flush_wal(self) -> None:
        assert self._wal is not None
        if self._wal.flush():
            with self._conns_lock:
                self.stats.flushes += 1

    def transaction(self, durable: bool = True) -> AbstractContextManager[Any]:
        """One write transaction for several journal calls of this thread (they join it), committed
        at the end of the block or rolled back as a whole; records changed in memory by calls
        inside it (``update_run``...) are restored on rollback.

        ``durable=False``: for what no side effect waits on (a run planned, a lease released). Its
        commit is not synced on its own (SQLite: it waits for no flush of the WAL; PostgreSQL
        ``synchronous_commit = off``): a crash of the process loses nothing; a power loss may lose
        it unless a later durable commit came first (both logs are written in order, so a synced
        commit makes every earlier one durable)."""
        return self._tx(immediate=True, durable=durable)

    def defer(self, write: Callable[[], None]) -> None:
        """Run ``write`` (journal calls) inside this thread's next transaction, whatever it is.

        For a record that need not be durable before any further side effect (a revocation done,
        a run published whose stores already hold its token: recovery finds both again), so it
        rides on the next commit instead of making its own. A read that follows sees it. If that
        transaction rolls back, the deferred write is gone with it (as after a crash).
        """
        self._threads.state.pending.append(write)

    def drop_deferred(self) -> None:
        """Forget this thread's deferred writes (e.g. the lease that fenced them is lost)."""
        self._threads.state.pending = []

    def has_deferred(self) -> bool:
        return bool(self._threads.state.pending)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once this thread's open transaction commits (never if it rolls back);
        outside a transaction, at once."""
        if self._threads.state.cur is None:
            callback()
        else:
            self._threads.state.after.append(callback)

    def _on_rollback(self, undo: Callable[[], None]) -> None:
        if self._threads.state.cur is not None:
            self._threads.state.undo.append(undo)

    def _explain(self, cur: _Cursor, exc: BaseException) -> JournalError:
        """The JournalError for ``exc``, raised by a transaction that ``cur`` rolled back. A link that
        collides with an event's sequence number means the chain's head stayed behind (its trigger
        dropped or disabled while this process ran): say that, and how to repair it, as a writable
        open does, instead of the database's bare unique-constraint message."""
        if self._backend.seq_collision(exc):
            try:
                behind = audit_chain.head_behind(cur)
            except Exception as second:  # the explanation is best effort; the original error stands
                self._drop_connection_if_lost(second)
                behind = None
            if behind is not None:
                explained = self._head_behind_error(*behind)
                return JournalError(f"{explained} (the database refused the event: {exc})", hint=explained.hint)
        return self._error(exc)

    def _error(self, exc: BaseException, prefix: str = "") -> JournalError:
        if self._backend.conflict(exc):
            return JournalUnavailable(f"journal {self.location}: {prefix}{exc}", hint=_CONFLICT_HINT)
        if self._backend.unavailable(exc):
            return JournalUnavailable(f"journal {self.location}: {prefix}{exc}", hint=self._backend.unavailable_hint)
        return JournalError(f"journal {self.location}: {prefix}{exc}", hint=_JOURNAL_HINT)

    def ping(self) -> None:
        """Raise JournalUnavailable (a TransientError) or JournalError unless the journal answers now.

        For readiness probes: one short read, bounded by the backend's connect and statement timeouts;
        JournalUnavailable too when a writable journal's PostgreSQL session accepts no writes (a standby),
        a JournalError once a flush of the journal has failed (no commit is durable any more), and
        JournalSchemaNewer once a newer rotator upgraded the journal's schema past this one's (this
        process takes no lease any more: acquire_lease).
        """
        lost = self._durability_error()
        if lost is not None:
            raise lost
        with self._tx(single=True) as cur:
            row = cur.execute(self._backend.ping_sql).fetchone()
        if row is not None:
            # A rolling upgrade's first new replica migrates the shared journal while the old ones run on:
            # they take no lease on it any more (acquire_lease), so they must not look ready either. Not
            # transient: only a process of the newer version can use this journal.
            self._refuse_newer_schema(row[0])
        if row is not None and len(row) > 1 and row[1]:
            # Answering is not enough: a standby (a fail-over's demoted primary) answers every read
            # and refuses every write. Not ready, and the next try connects anew (to the primary).
            if self._threads.state.cur is None:
                self._drop_connection()
            raise JournalUnavailable(
                f"journal {self.location}: the server answers but accepts no writes (transaction_read_only is on)",
                hint="the journal URL reaches a standby or a primary demoted by a fail-over (a stale DNS answer, "
                "a proxy's stale target); rotator connects again at the next check. Point the URL at the writable "
                "server (target_session_attrs=read-write picks it among several hosts)",
            )

    def _refuse_newer_schema(self, version: Any) -> None:
        """JournalSchemaNewer when ``version``, the journal's schema version read now, is newer than this code's."""
        if version is not None and int(version) > SCHEMA_VERSION:
            raise JournalSchemaNewer(
                f"journal {self.location}: the journal was upgraded to schema {int(version)} by a newer rotator; "
                f"this process (schema {SCHEMA_VERSION}) stops writing it: upgrade or restart it",
                version=int(version), supported=SCHEMA_VERSION,
                hint="a rotator of a newer version opened this journal and upgraded it (a rolling upgrade's first "
                "new replica, or a newer `rotator` command): this process takes no lease and starts no run on it "
                "any more, and its /readyz fails. Replace it with the newer version (under Kubernetes, let the "
                "rollout replace the old pods; under systemd, upgrade the package and restart the service)",
            )

    def _check_fence(self, cur: _Cursor, policy: str, fence: int | None, what: str) -> None:
        """Inside a write transaction: LeaseLost unless ``fence`` is still the policy's fencing number.

        Read once per transaction: the first check locks the lease row until the transaction ends
        (PostgreSQL ``FOR UPDATE``; SQLite: the writer's ``BEGIN IMMEDIATE`` holds the database), so
        no take-over can commit between it and the transaction's later writes."""
        if fence is None:  # an unfenced write (tests, tools): no lease to check
            return
        row = self._lease_row(cur, policy)
        current = None if row is None else row[1]
        if current != fence:
            raise LeaseLost(policy, fence, current, what)

    def _lease_row(self, cur: _Cursor, policy: str) -> tuple[str, int, str] | None:
        """Inside a write transaction: the policy's lease row, read locked once per transaction."""
        row = self._threads.state.leases.get(policy)
        if row is None:
            found = cur.execute(
                f"SELECT holder, fence, expires_at FROM leases WHERE policy = ?{self._backend.lock_row}", (policy,)
            ).fetchone()
            if found is None:
                return None
            row = self._threads.state.leases[policy] = (str(found[0]), int(found[1]), str(found[2]))
        return row

    def _forget_head(self) -> None:
        """Keep the audit chain's head as this transaction's events moved it (the database moved the
        head row with each of them) as the next transaction's hint, and forget it here."""
        local = self._threads.state
        if local.head is not None:
            # Set before COMMIT, under the write lock; if the COMMIT fails, the next INSERT's check
            # finds the head row elsewhere and the head is read.
            self._head_hint = local.head
        local.head = None

    def _rollback(self, cur: _Cursor, exc: BaseException, single: bool = False) -> None:
        for undo in reversed(self._threads.state.undo):
            undo()
        try:
            if not single:
                cur.execute("ROLLBACK")
        except self._backend.errors:
            pass
        self._drop_connection_if_lost(exc)

    def _drop_connection_if_lost(self, exc: BaseException) -> None:
        """Drop this thread's connection after ``exc`` if it cannot serve the next operation: a lost
        connection, a server that no longer accepts writes (a standby; a primary demoted by a fail-over,
        still reached through a stale DNS answer: the next connection finds the new primary), or a
        session the server ended (e.g. its idle_in_transaction_session_timeout)."""
        conn = self._threads.state.conn
        if (isinstance(exc, self._backend.connection_errors) and not self._backend.conflict(exc)) or (
                conn is not None and self._backend.connection_lost(conn)):
            self._drop_connection()

    def _drop_connection(self) -> None:
        conn, self._threads.state.conn = self._threads.state.conn, None
        if conn is None:
            return
        with self._conns_lock:
            self._conns = [entry for entry in self._conns if entry[1] is not conn]
        _close_quietly(conn)

    def _migrate(self) -> None:
        if self._read_only:
            self._check_schema()
            return
        upgrading: int | None = None  # the schema version an upgrade of an existing journal starts from
        try:
            with self._tx(immediate=True) as cur:
                if self._backend.migration_lock:
                    cur.execute(self._backend.migration_lock)
                # Only DDL when something is missing: a role with read/write rights alone can start.
                current = self._schema_version(cur)
                if current is None:
                    if not self._create:
                        raise _no_journal(self.location)
                    cur.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                    current = 0
                elif current < len(_MIGRATIONS):
                    upgrading = current
                backend = self._backend.name
                for version in range(current + 1, len(_MIGRATIONS) + 1):
                    migration = _MIGRATIONS[version - 1]
                    statements = migration.split(";") if isinstance(migration, str) else migration[backend]
                    for statement in statements:
                        if statement.strip():
                            self._migrate_statement(cur, statement)
                    cur.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
                if current == len(_MIGRATIONS) and \
                        cur.execute(audit_chain.HEAD_TRIGGER_EXISTS[backend]).fetchone() is None:
                    # Writers rely on it to move the chain's head: without it the next event would link
                    # to a head that stayed behind (a journal restored from a dump of its tables alone).
                    for statement in audit_chain.HEAD_TRIGGER_MIGRATION[backend]:
                        cur.execute(statement)
                behind = audit_chain.head_behind(cur)
                if behind is not None:
                    raise self._head_behind_error(*behind)
        except JournalError as exc:
            # Only the database's refusal, which got the generic hint (typically a role without the
            # tables' owner's rights): a transient error (a lost connection, a lock waited for too long)
            # stays one, and the next try upgrades from the start again (the upgrade rolled back as a
            # whole); an error with a fix of its own keeps it.
            if upgrading is None or isinstance(exc, JournalUnavailable) or exc.hint != _JOURNAL_HINT:
                raise
            raise self._upgrade_failed(upgrading, exc) from None

    def _upgrade_failed(self, current: int, exc: JournalError) -> JournalError:
        detail = REDACTOR.redact(str(exc).removeprefix(f"journal {self.location}: "))
        return JournalError(
            f"journal {self.location}: upgrading the journal schema from v{current} to v{len(_MIGRATIONS)} "
            f"failed: {detail}; the upgrade was rolled back, the journal is as it was",
            hint=_UPGRADE_HINTS[self._backend.name],
        )

    def _migrate_statement(self, cur: _Cursor, statement: str) -> None:
        """Run one statement of a migration; an ALTER TABLE ... ADD COLUMN of a column the table has
        already does nothing (a journal whose schema_version rows were set back: see _MIGRATIONS),
        where it would fail with "duplicate column"."""
        added = _ADD_COLUMN.match(statement)
        if added is not None and self._backend.add_column_if_not_exists:
            column_at = added.start(2)
            statement = f"{statement[:column_at]}IF NOT EXISTS {statement[column_at:]}"
        elif added is not None:
            table, column = added.groups()
            present = {str(row[1]).lower() for row in cur.execute(f"PRAGMA table_info({table})").fetchall()}
            if column.lower() in present:  # SQLite's names are case-insensitive
                return
        cur.execute(statement)

    def _head_behind_error(self, head: int, newest: int) -> JournalError:
        move = (f"UPDATE audit_head SET seq = {newest}, hash = (SELECT hash FROM events WHERE seq = {newest}) "
                f"WHERE chain = '{audit_chain.CHAIN}'")
        return JournalError(
            f"journal {self.location}: the audit chain's head (seq {head}) is behind its newest event (seq "
            f"{newest}): events were written without moving the head (its trigger was missing or disabled), or "
            "the head row was edited back; no event can be added until the head is the newest event",
            hint="run `rotator audit verify` (it only reads) and look at the events after the head. If they are "
            "rotator's own, move the head to the newest event with "
            f"`{move}` and start rotator again; if not, keep the journal as evidence and restore it from a backup",
        )

    def _check_schema(self) -> None:
        """A read-only open: the schema version, read without the write lock; a journal older than
        this rotator is refused, not upgraded (a command that only reads writes nothing)."""
        with self._tx() as cur:
            current = self._schema_version(cur)
        if current is None:
            raise _no_journal(self.location)
        if current < len(_MIGRATIONS):
            raise JournalError(
                f"journal {self.location} has schema version {current}, older than this rotator's "
                f"({len(_MIGRATIONS)}); this command only reads the journal and does not upgrade it",
                hint="restart the daemon with this rotator version: its start upgrades the journal (with no "
                "daemon, any command that writes does, e.g. `rotator recover`); until then, read it with the "
                "rotator version that wrote it",
            )

    def _schema_version(self, cur: _Cursor) -> int | None:
        """The journal's schema version (0: none applied yet), None when it has no schema_version
        table; JournalSchemaNewer for a version newer than this rotator's."""
        probe = ("schema_version",) * self._backend.table_exists.count("?")
        if cur.execute(self._backend.table_exists, probe).fetchone() is None:
            return None
        current = int(cur.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0)
        if current > len(_MIGRATIONS):
            raise JournalSchemaNewer(
                f"journal {self.location} has schema version {current}, newer than this rotator "
                f"({len(_MIGRATIONS)})",
                version=current, supported=len(_MIGRATIONS),
                hint="upgrade rotator; never point an older rotator at a newer journal",
            )
        return current

    def close(self) -> None:
        """Close every thread's connection (call when no thread uses the journal any more)."""
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for _thread, conn in conns:
            _close_quietly(conn)
        self._threads.state.conn = None
        if self._wal is not None:
            self._wal.close()
        if self._watch is not None:
            self._watch.stop()
            self._watch = _Watchdog(self._watch._deadline_s, self._watch._abort)

    # -- runs ---------------------------------------------------------------------------
    @_once_more_after_conflict
    def begin_run(self, run: RunRecord, *, fence: int | None = None) -> None:
        """Insert ``run``; with ``fence``, only while that is still the policy's fencing number."""
        run.fence = fence if fence is not None else run.fence
        values = _run_row(run)
        with self._tx(immediate=fence is not None) as cur:
            self._check_fence(cur, run.policy, fence, f"journaling run {run.run_id}")
            cur.execute(
                f"INSERT INTO runs ({', '.join(_RUN_COLUMNS)}) VALUES ({', '.join('?' * len(values))})",
                values,
            )
            self._threads.state.runs.append(run.run_id)
        _set_stored_row(run, values)
        self._on_rollback(partial(_set_stored_row, run, None))

    def update_run(self, run: RunRecord, *, fence: int | None = None, **changes: Any) -> None:
        """Apply ``changes`` to ``run`` and commit them before returning.

        Compare-and-set: the row must still be in the state ``run`` was in before ``changes``, the
        move must go forward (:meth:`RunState.can_move`), and with ``fence`` the policy's lease must
        still carry that fencing number; otherwise LeaseLost and neither the row nor ``run`` change.
        """
        self._write_run(run, fence, changes, None)

    @_once_more_after_conflict
    def _write_run(self, run: RunRecord, fence: int | None, changes: Mapping[str, Any],
                   rev: Revocation | None) -> None:  # fmt: skip
        for key in changes:
            if key not in _RUN_WRITABLE:
                raise TypeError(f"RunRecord has no writable field {key!r}")
        if fence is not None:
            changes = {**changes, "fence": fence}
        # The run's fields with the changes applied, as a mapping: a copy of the record
        # (dataclasses.replace) cost more than the UPDATE it feeds.
        values = {**run.__dict__, **changes}
        state = values["state"]
        if not RunState.can_move(run.state, state):
            raise ValueError(f"run {run.run_id}: a run never moves from {run.state!r} to {state!r}")
        with self._tx(immediate=fence is not None) as cur:
            self._check_fence(cur, run.policy, fence, f"moving run {run.run_id} to {state}")
            row = _write_run(cur, values, expected_state=run.state, stored=_stored_row(run))
            if row is None:
                found = cur.execute("SELECT state, fence FROM runs WHERE run_id = ?", (run.run_id,)).fetchone()
                if found is not None and fence is not None and found[1] == fence \
                        and run.run_id in self._threads.state.unanswered:
                    # The lease still carries ``fence`` (checked above, and locked), so nobody took the
                    # policy over, and a COMMIT of this thread that moved the run got no answer: it landed,
                    # and the rollback put ``run`` back in memory. (A stale copy is still LeaseLost.)
                    raise JournalError(
                        f"journal {self.location}: run {run.run_id} is {found[0]} in the journal, not {run.state} "
                        f"as this process had it, and was written under the lease this process holds (fencing "
                        f"number {fence}): an earlier commit of it landed though its answer was lost (the connection "
                        f"broke at its COMMIT); stopped before moving it to {state}",
                        hint="nothing was overtaken and nothing needs undoing by hand: `rotator recover` (or the next "
                        "run or daemon pass, which recover first) finishes or undoes the run from the journal's state",
                    )
                raise LeaseLost(run.policy, fence, None if found is None else found[1],
                                f"moving run {run.run_id} from {run.state} to {state} (the journal has it in "
                                f"{found[0] if found else 'no'} state, written by another process)")
            if rev is not None:
                _insert_revocation(cur, rev)
            self._threads.state.runs.append(run.run_id)
        before = {key: getattr(run, key) for key in changes}
        before[_STORED] = _stored_row(run)
        run.__dict__.update(changes)
        _set_stored_row(run, row)
        self._on_rollback(partial(_restore_record, run, before))

    def catch_up(self, run: RunRecord, fence: int | None) -> bool:
        """After a write of ``run`` failed: whether its commit landed anyway, its answer lost (the rollback
        put ``run`` back as it was in memory). If so, ``run`` takes its row as the journal has it and True
        is returned, so that what follows moves the run from where it is. Only after a COMMIT of this
        thread that moved the run got no answer, and only a row written under ``fence`` (this holder's
        lease: no other process writes with it) and not behind ``run``; False, and ``run`` unchanged,
        otherwise."""
        local = self._threads.state
        if fence is None or run.run_id not in local.unanswered:
            return False
        stored = self.get_run(run.run_id)
        local.unanswered.discard(run.run_id)  # answered now, by the row
        if stored is None or stored.fence != fence or _stored_row(stored) == _stored_row(run) or not (
                stored.state == run.state or RunState.can_move(run.state, stored.state)):
            return False
        run.__dict__.update(stored.__dict__)  # (with the row as read: the next write's compare-and-set base)
        return True

    @_once_more_after_conflict
    def finish_published_run(self, policy: str, run_id: str, token_id: str, finished_at: datetime, *,
                             fence: int | None = None) -> bool:
        """The revocation of ``token_id``, scheduled by run ``run_id``, ended (done or dismissed):
        move that run, and every other published run of the policy that replaced the token, from
        published to done, in one statement, each only once none of the revocations it waits for is
        unfinished (:data:`_FINISH_PUBLISHED`); False when none moved (another of its revocations
        pending or failed, done already, or a bootstrap's). Fenced like :meth:`update_run`. (A token
        current again, an older version restored, and replaced once more keeps its revocation row,
        and the row its first run's id: the later run waits for the same revocation.)"""
        with self._tx(immediate=fence is not None) as cur:
            self._check_fence(cur, policy, fence, f"moving run {run_id} to done")
            cur.execute(_FINISH_PUBLISHED, (RunState.DONE, ts(finished_at), fence, run_id, token_id, policy,
                                            RunState.PUBLISHED, RevocationState.PENDING, RevocationState.FAILED))
            return cur.rowcount >= 1

    def get_run(self, run_id: str) -> RunRecord | None:
        rows = self._runs("run_id = ?", (run_id,), limit=1)
        return rows[0] if rows else None

    def open_runs(self, policy: str) -> list[RunRecord]:
        """The policy's unfinished runs, oldest first (indexed on (policy, state): no ORDER BY in SQL,
        for which SQLite would walk every run of the policy in start order)."""
        with self._tx(single=True) as cur:
            rows = cur.execute(f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs WHERE {_OPEN_WHERE}",
                               (policy, *RunState.OPEN)).fetchall()
        return sorted((_run_from_row(row) for row in rows), key=lambda r: (r.started_at, r.run_id))

    def tag_searches(self, policy: str) -> list[RunRecord]:
        """The policy's published runs whose tag is still searched (RunRecord.tag_search_until), oldest
        first: a handful at most, found by a partial index."""
        with self._tx(single=True) as cur:
            rows = cur.execute(f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs WHERE {_SUCCESS_WHERE} "
                               "AND tag_search_until IS NOT NULL", (policy, *RunState.SUCCESS)).fetchall()
        return sorted((_run_from_row(row) for row in rows), key=lambda r: (r.started_at, r.run_id))

    @_once_more_after_conflict
    def end_tag_search(self, policy: str, run_id: str, until: datetime, *, fence: int | None = None) -> bool:
        """The search of run ``run_id``'s tag that lasted ``until`` is over: clear it (whatever the run's
        state, done included). False when it was cleared or moved already. Fenced like :meth:`update_run`."""
        with self._tx(immediate=fence is not None) as cur:
            self._check_fence(cur, policy, fence, f"ending the tag search of run {run_id}")
            cur.execute("UPDATE runs SET tag_search_until = NULL, fence = COALESCE(?, fence) "
                        "WHERE run_id = ? AND policy = ? AND tag_search_until = ?", (fence, run_id, policy, ts(until)))
            return cur.rowcount >= 1

    def runs(self, policy: str, limit: int = 20) -> list[RunRecord]:
        return self._runs("policy = ?", (policy,), limit=limit)

    def latest_run(self, policy: str) -> RunRecord | None:
        """The policy's most recently started run (one indexed row)."""
        rows = self._runs("policy = ?", (policy,), limit=1)
        return rows[0] if rows else None

    def runs_with_token(self, policy: str, token_id: str) -> list[RunRecord]:
        """The policy's runs that minted (or bootstrapped) ``token_id`` (indexed, oldest first)."""
        with self._tx(single=True) as cur:  # no ORDER BY: SQLite would pick the (policy, started_at) index for it
            rows = cur.execute(f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs WHERE policy = ? AND new_token_id = ?",
                               (policy, token_id)).fetchall()
        return sorted((_run_from_row(row) for row in rows), key=lambda r: r.started_at)

    def last_success(self, policy: str) -> RunRecord | None:
        rows = self._runs(_SUCCESS_WHERE, (policy, *RunState.SUCCESS), limit=1, order="published_at")
        return rows[0] if rows else None

    def _runs(
        self, where: str, params: Sequence[Any], limit: int | None = None, oldest_first: bool = False,
        order: str = "started_at",
    ) -> list[RunRecord]:
        sql = f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs WHERE {where} ORDER BY {order} "
        sql += "ASC" if oldest_first else "DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        with self._tx(single=True) as cur:
            rows = cur.execute(sql, params).fetchall()
        return [_run_from_row(row) for row in rows]

    # -- revocations --------------------------------------------------------------------
    @_once_more_after_conflict
    def schedule_revocation(self, rev: Revocation, *, fence: int | None = None) -> None:
        """Record that ``rev.token_id`` must be revoked at ``rev.due_at`` (idempotent)."""
        with self._tx(immediate=fence is not None) as cur:
            self._check_fence(cur, rev.policy, fence, f"scheduling the revocation of token {rev.token_id}")
            _insert_revocation(cur, rev)

    def publish_and_schedule(
        self, run: RunRecord, rev: Revocation | None, *, fence: int | None = None, **changes: Any
    ) -> None:
        """Mark a run published and schedule the old token's revocation in one transaction
        (compare-and-set and fenced like :meth:`update_run`)."""
        self._write_run(run, fence, changes, rev)

    @_once_more_after_conflict
    def update_revocation(self, rev: Revocation, *, fence: int | None = None, **changes: Any) -> None:
        """Compare-and-set like :meth:`update_run`: the row must still be in ``rev``'s state, the move
        forward (:class:`RevocationState`), and ``fence`` current; otherwise LeaseLost."""
        for key in changes:
            if key not in _REV_WRITABLE:
                raise TypeError(f"Revocation has no writable field {key!r}")
        values = rev.__dict__ | changes  # (as in _write_run: no copy of the record)
        state = values["state"]
        if not RevocationState.can_move(rev.state, state):
            raise ValueError(f"revocation of token {rev.token_id}: never moves from {rev.state!r} to {state!r}")
        row = dict(zip(_REV_COLUMNS, _rev_row_of(values), strict=True))
        keys = [k for k in _REV_COLUMNS if k not in ("policy", "token_id")]
        what = f"recording the revocation of token {rev.token_id} as {state}"
        with self._tx(immediate=fence is not None) as cur:
            self._check_fence(cur, rev.policy, fence, what)
            cur.execute(
                f"UPDATE revocations SET {', '.join(f'{k} = ?' for k in keys)} "
                "WHERE policy = ? AND token_id = ? AND state = ?",
                [row[k] for k in keys] + [rev.policy, rev.token_id, rev.state],
            )
            if cur.rowcount != 1:
                raise LeaseLost(rev.policy, fence, None, f"{what} (another process changed it)")
        before = {key: getattr(rev, key) for key in changes}
        rev.__dict__.update(changes)
        self._on_rollback(partial(_restore_record, rev, before))

    def revocations(self, policy: str | None = None, state: str | None = None) -> list[Revocation]:
        clauses, params = [], []
        if policy is not None:
            clauses.append("policy = ?")
            params.append(policy)
        if state is not None:
            clauses.append("state = ?")
            params.append(state)
        where = " AND ".join(clauses) or "1 = 1"
        with self._tx(single=True) as cur:
            rows = cur.execute(
                f"SELECT {', '.join(_REV_COLUMNS)} FROM revocations WHERE {where} ORDER BY due_at", params
            ).fetchall()
        return [_rev_from_row(row) for row in rows]

    def due_revocations(self, now: datetime, policy: str | None = None) -> list[Revocation]:
        """Pending revocations whose due time (and retry time) has come, oldest due first."""
        with self._tx(single=True) as cur:
            rows = cur.execute(*_due_sql(now, policy)).fetchall()
        return [_rev_from_row(row) for row in rows]

    def preflight(self, policy: str, now: datetime) -> Preflight:
        """What a rotation reads before it takes the policy's lease, in one statement: the lease row,
        the open runs, the due revocations, the last successful run (its id and its token's) and the
        dismissed revocations; then, when revocations are due, the runs that minted their tokens. When
        the lease row read here was released (or is the rotation's own: Preflight.fence_planning_first),
        the rotation takes its lease in the transaction that journals its run (Engine._new_run), only if
        the lease row is then still the one read here (``acquire_lease(unchanged=...)``): nobody held the
        policy's lease between, so nothing read here changed (every write of a run or a revocation is
        fenced, and a step or a side effect confirms or renews the lease first). Not so under another
        holder's expired lease, which that holder may still write under without changing its row: the
        rotation then takes the lease first, and reads again under it."""
        params = [policy, policy, *RunState.OPEN, policy, RevocationState.PENDING, ts(now), ts(now), policy,
                  *RunState.SUCCESS, policy, RevocationState.DISMISSED]
        with self._tx(single=True) as cur:  # one statement (see _tagged)
            found = _tagged_rows(cur.execute(_PREFLIGHT, params).fetchall(), raw=("last",))
        due = sorted(found.get("due", []), key=lambda r: r.due_at)
        claims: dict[str, list[RunRecord]] = {rev.token_id: [] for rev in due}
        if claims:
            # A statement of its own, with the token ids as values: as a subquery of the one above,
            # PostgreSQL's generic plan (psycopg prepares a statement run 5 times) joined every run
            # of the policy with every revocation, 27 ms at 300 runs. A run's token id never
            # changes once written, so the two statements' snapshots agree on it.
            with self._tx(single=True) as cur:
                rows = cur.execute(f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs WHERE policy = ? AND new_token_id IN "
                                   f"({', '.join('?' * len(claims))})", (policy, *claims)).fetchall()
            for run in map(_run_from_row, rows):
                claims[run.new_token_id or ""].append(run)
        [lease] = found.get("lease", [None])
        [last] = found.get("last", [None])  # its row as read: only its run id and token id are wanted
        return Preflight(
            policy=policy,
            lease=lease,
            open_runs=sorted(found.get("open", []), key=lambda r: (r.started_at, r.run_id)),
            due=due,
            claims={token: sorted(runs, key=lambda r: r.started_at) for token, runs in claims.items()},
            last_success=None if last is None else str(last[1]),
            last_token_id=None if last is None or last[_NEW_TOKEN_AT] is None else str(last[_NEW_TOKEN_AT]),
            last_tag_search_until=None if last is None else _dt(last[_TAG_SEARCH_AT]),
            last_issuer_target=None if last is None else last[_ISSUER_TARGET_AT],
            dismissed={rev.token_id: dismissal_reason(rev.last_error) for rev in found.get("dismissed", [])},
        )

    def policy_state(self, policy: str) -> PolicyState:
        """What the daemon keeps of a policy after each of its jobs, in one statement (see _tagged): the
        last successful run, the open runs and the unfinished (pending or failed) revocations."""
        params = [policy, *RunState.SUCCESS, policy, *RunState.OPEN, policy, RevocationState.PENDING,
                  RevocationState.FAILED]
        with self._tx(single=True) as cur:
            found = _tagged_rows(cur.execute(_POLICY_STATE, params).fetchall())
        [last] = found.get("last", [None])
        return PolicyState(
            last_success=last,
            open_runs=sorted(found.get("open", []), key=lambda r: (r.started_at, r.run_id)),
            unfinished=sorted(found.get("unfinished", []), key=lambda r: r.due_at),
        )

    def last_success_id(self, policy: str) -> str | None:
        """The run id of the policy's last successful run (one indexed row)."""
        with self._tx(single=True) as cur:
            row = cur.execute(f"SELECT run_id FROM runs WHERE {_SUCCESS_WHERE} ORDER BY published_at DESC LIMIT 1",
                              (policy, *RunState.SUCCESS)).fetchone()
        return None if row is None else str(row[0])

    def pending_revocations(self, policy: str | None = None) -> list[Revocation]:
        """Pending revocations (of one policy), by due time: bounded by what is current."""
        return self.revocations(policy, RevocationState.PENDING)

    def unfinished_revocations(self, policy: str | None = None) -> list[Revocation]:
        """Pending and failed revocations (what compliance and status look at), by due time."""
        clauses, params = ["state IN (?, ?)"], [str(RevocationState.PENDING), str(RevocationState.FAILED)]
        if policy is not None:
            clauses.append("policy = ?")
            params.append(policy)
        with self._tx(single=True) as cur:
            rows = cur.execute(
                f"SELECT {', '.join(_REV_COLUMNS)} FROM revocations WHERE {' AND '.join(clauses)} ORDER BY due_at",
                params,
            ).fetchall()
        return [_rev_from_row(row) for row in rows]

    def dismissed_revocations(self, policy: str, token_ids: Collection[str]) -> dict[str, str]:
        """Of ``token_ids``, those whose revocation a person dismissed (``revoke-expired --dismiss``),
        each with the reason given: rotator never revokes them, even when it replaces one again."""
        wanted = sorted({t for t in token_ids if t})
        if not wanted:
            return {}
        with self._tx(single=True) as cur:
            rows = cur.execute(
                f"SELECT token_id, last_error FROM revocations WHERE policy = ? AND state = ? "
                f"AND token_id IN ({', '.join('?' * len(wanted))})",
                [policy, RevocationState.DISMISSED, *wanted],
            ).fetchall()
        return {str(token_id): dismissal_reason(last_error) for token_id, last_error in rows}

    def revocation_counts(self, policy: str | None = None) -> dict[str, int]:
        """How many revocations are pending and failed: ``{"pending": n, "failed": m}`` (indexed)."""
        where, params = ("AND policy = ?", [policy]) if policy is not None else ("", [])
        with self._tx(single=True) as cur:
            rows = cur.execute(
                f"SELECT state, COUNT(*) FROM revocations WHERE state IN (?, ?) {where} GROUP BY state",
                [RevocationState.PENDING, RevocationState.FAILED, *params],
            ).fetchall()
        counts = {RevocationState.PENDING.value: 0, RevocationState.FAILED.value: 0}
        counts.update({str(state): int(n) for state, n in rows})
        return counts

    def last_successes(self, policies: Sequence[str], now: datetime) -> dict[str, RunRecord]:
        """:meth:`last_success` of many policies in one transaction (run id, publication, token id
        and expiry are read; the other fields of each RunRecord are not)."""
        out: dict[str, RunRecord] = {}
        with self._tx() as cur:
            for i in range(0, len(policies), 400):  # within SQLite's limit of bound variables
                chunk = policies[i : i + 400]
                values = ", ".join(["(?)"] * len(chunk))
                sql = f"WITH p (policy) AS (VALUES {values}) {_LAST_OF_P}"
                out.update(_last_records(cur.execute(sql, (*chunk, *RunState.SUCCESS)), now))
        return out

    def overview(self, now: datetime, published_since: datetime | None, *, last: bool = True,
                 tag_searches: bool = False) -> Overview:
        """Every policy's state in one transaction of four queries, each bounded by what is current
        (open runs, pending/failed revocations, live leases) or by ``published_since`` (the last
        publication of each policy; every policy when None). What the daemon keeps in memory.
        ``last=False``: no last publications (``Overview.last`` empty), only the unfinished work.
        ``tag_searches``: a fifth query, the published runs whose tag is still searched (a handful,
        through the partial index runs_policy_tag_search): work of their policy too (``Overview.tag_searches``)."""
        searches: dict[str, list[datetime]] = {}
        with self._tx() as cur:
            if not last:
                last_runs: dict[str, RunRecord] = {}
            elif published_since is None:
                last_runs = _last_records(cur.execute(_LAST_OF_EVERY_POLICY, tuple(RunState.SUCCESS)), now)
            else:  # the runs published since, each kept if no success of its policy is newer
                success = tuple(RunState.SUCCESS)
                last_runs = _last_records(cur.execute(_LAST_SINCE_SQL, (ts(published_since), *success, *success)),
                                          now)
            open_rows = cur.execute(f"SELECT policy, error FROM runs WHERE {_OPEN_STATES}").fetchall()
            rev_rows = cur.execute("SELECT policy, state, due_at, next_try_at FROM revocations "
                                   f"WHERE {_UNFINISHED_STATES}").fetchall()
            lease_rows = cur.execute("SELECT policy, expires_at FROM leases WHERE holder <> '' AND expires_at >= ?",
                                     (ts(now),)).fetchall()
            if tag_searches:
                rows = cur.execute(f"SELECT policy, tag_search_until FROM runs WHERE {_TAG_SEARCHED}").fetchall()
                for policy, until in rows:
                    searches.setdefault(policy, []).append(_dt(until) or now)
        open_runs: dict[str, tuple[int, int]] = {}
        for policy, error in open_rows:
            count, stuck = open_runs.get(policy, (0, 0))
            open_runs[policy] = (count + 1, stuck + int(bool(error) and "recovery failed" in error))
        pending: dict[str, list[tuple[datetime, datetime | None]]] = {}
        failed: dict[str, int] = {}
        for policy, state, due, retry in rev_rows:
            if state == "pending":
                pending.setdefault(policy, []).append((_dt(due) or now, _dt(retry)))
            else:
                failed[policy] = failed.get(policy, 0) + 1
        leases = {policy: _dt(expires) or now for policy, expires in lease_rows}
        return Overview(last_runs, open_runs, {p: tuple(sorted(v)) for p, v in pending.items()}, failed, leases,
                        {p: tuple(sorted(v)) for p, v in searches.items()})

    def open_run_count(self, policy: str) -> int:
        """How many runs of the policy are unfinished (indexed)."""
        with self._tx(single=True) as cur:
            row = cur.execute(f"SELECT COUNT(*) FROM runs WHERE {_OPEN_WHERE}", (policy, *RunState.OPEN)).fetchone()
        return int(row[0])

    # -- leases -------------------------------------------------------------------------
    @_once_more_after_conflict
    def acquire_lease(self, policy: str, holder: str, ttl: timedelta, now: datetime, *,
                      unchanged: tuple[str, int, str] | None = None) -> int:  # fmt: skip
        """Take (or extend) the policy's lease; LeaseBusy if someone else holds a live one.

        Returns the fencing number, which grows with every change of holder and never goes back:
        a released lease keeps its row (holder ``''``), and a policy's first lease starts above any
        fencing number its runs were written with.

        ``unchanged``: the lease row (holder, fence, expiry text) as read before (Preflight.lease);
        the lease is taken only if the row is still exactly that (nobody took, renewed or released
        it since), else LeaseBusy. The row alone does not show that nobody wrote under it: the holder
        of an expired lease may, without changing it (Preflight.fence_planning_first).

        JournalSchemaNewer, with nothing written, once a newer rotator upgraded the journal's schema past
        this code's (checked by the statements that take the lease: no statement more).
        """
        expires = ts(now + ttl)
        where = f"WHERE policy = ? AND (holder = ? OR expires_at < ?) AND {_SCHEMA_KNOWN}"
        params: list[Any] = [holder, expires, holder, policy, holder, ts(now)]
        if unchanged is not None:
            where += " AND holder = ? AND fence = ? AND expires_at = ?"
            params += list(unchanged)
        row: tuple[str, int, str] | None
        with self._tx(immediate=True) as cur:
            # The row exists but for a policy's first lease: an UPDATE, and the INSERT (whose first
            # fencing number reads every run of the policy) only when there was no row to update. Both
            # write only while the journal's schema is this code's (_SCHEMA_KNOWN); the read after
            # them says whether it is not.
            cur.execute(
                "UPDATE leases SET holder = ?, expires_at = ?, "
                "fence = CASE WHEN holder = ? THEN fence ELSE fence + 1 END " + where,
                params,
            )
            updated = cur.rowcount == 1
            if updated and unchanged is not None:
                # The row was exactly ``unchanged``, so what the UPDATE made of it is known: no read.
                row = (holder, unchanged[1] if unchanged[0] == holder else unchanged[1] + 1, expires)
            else:
                if not updated:
                    cur.execute(
                        "INSERT INTO leases (policy, holder, fence, expires_at) "
                        "SELECT ?, ?, (SELECT COALESCE(MAX(fence), 0) + 1 FROM runs WHERE policy = ?), ? "
                        f"WHERE {_SCHEMA_KNOWN} ON CONFLICT (policy) DO NOTHING",
                        (policy, holder, policy, expires),
                    )
                row = self._lease_row_and_schema(cur, policy)
            if row is not None and row[0] == holder:  # the row is ours (and locked) until the commit
                self._threads.state.leases[policy] = (holder, int(row[1]), str(row[2]))
        if row is None or row[0] != holder:
            raise self._lease_busy(policy, row)
        return int(row[1])

    @_once_more_after_conflict
    def take_over_lease(self, policy: str, dead_holder: str, holder: str, ttl: timedelta, now: datetime) -> int:
        """Take a lease whose holder is known to be dead; LeaseBusy if it changed meanwhile.

        Taken whatever time the lease has left, so it returns only LEASE_READ_FRESH_SECONDS after
        its commit: a holder believed dead but alive (a process id reused, a container that shares
        the instance name) may have begun a side effect on the lease read of its last commit
        (confirm_lease), and that side effect begins before anything the new holder does, as it
        would had it read the row again (it then stops at its next check: LeaseLost)."""
        with self._tx(immediate=True) as cur:
            cur.execute(
                "UPDATE leases SET holder = ?, fence = fence + 1, expires_at = ? "
                f"WHERE policy = ? AND holder = ? AND {_SCHEMA_KNOWN}",
                (holder, ts(now + ttl), policy, dead_holder),
            )
            row = self._lease_row_and_schema(cur, policy)
            if row is not None and row[0] == holder:
                self._threads.state.leases[policy] = (holder, int(row[1]), str(row[2]))
        if row is None or row[0] != holder:
            raise self._lease_busy(policy, row)
        time.sleep(LEASE_READ_FRESH_SECONDS)
        return int(row[1])

    @staticmethod
    def _lease_busy(policy: str, row: tuple[str, int, str] | None) -> LeaseBusy:
        """LeaseBusy for the lease ``row`` (holder, fence, expiry text) that another holds: its expiry
        goes to the hint, the way out of a lease whose holder died on another host."""
        return LeaseBusy(policy, row[0], _dt(row[2])) if row is not None else LeaseBusy(policy, "unknown")

    def _lease_row_and_schema(self, cur: _Cursor, policy: str) -> tuple[str, int, str] | None:
        """Inside a lease-taking transaction, after its write: the policy's lease row (holder, fence,
        expiry text), or None; JournalSchemaNewer when the journal's schema is newer than this code's (the
        write then changed nothing: _SCHEMA_KNOWN), read in the same statement."""
        row = cur.execute(f"SELECT holder, fence, expires_at, {_SCHEMA_NOW} FROM leases WHERE policy = ?",
                          (policy,)).fetchone()
        if row is None:
            # The INSERT did nothing (its schema condition, or a row deleted meanwhile): only then is
            # the version read on its own.
            self._refuse_newer_schema(cur.execute(_SCHEMA_VERSION_SQL).fetchone()[0])
            return None
        self._refuse_newer_schema(row[3])
        return str(row[0]), int(row[1]), str(row[2])

    @_once_more_after_conflict
    def confirm_lease(self, policy: str, holder: str, fence: int, ttl: timedelta, now: datetime, what: str) -> None:
        """Before a side effect: LeaseLost unless ``holder`` still holds the lease with ``fence``.

        Renews the lease when less than half of ``ttl`` is left, so that the side effect that
        follows has at least ``ttl / 2`` before anyone may take the policy over. An expired lease
        that nobody took is still ours: its fencing number shows that no other run acted meanwhile.
        """
        local = self._threads.state
        half = ts(now + ttl / 2)  # the expiry that leaves the side effect half the TTL
        if local.cur is None and not local.pending:
            fresh = local.confirmed.get(policy)
            if (fresh is not None and fresh[0] == holder and fresh[1] == fence and fresh[2] >= half
                    and _monotonic() - local.confirmed_at < LEASE_READ_FRESH_SECONDS):
                # This thread's transaction that committed just now read the row under its lock: it
                # was ours then, and nobody may take it before it expires. Only a pause since then
                # (a GC, SIGSTOP, a slow flush) calls for a read again.
                return
            # Outside a transaction: a lease with time left is confirmed by one read (what a side
            # effect needs); only a renewal takes the write lock.
            with self._tx(single=True) as cur:
                row = cur.execute("SELECT holder, fence, expires_at FROM leases WHERE policy = ?",
                                  (policy,)).fetchone()
            if row is None or row[0] != holder or int(row[1]) != fence:
                raise LeaseLost(policy, fence, None if row is None else int(row[1]), what)
            if row[2] >= half:
                return
        # Inside a write transaction (a step's, Engine._step(renew=True)), or to renew: the row is
        # read locked until the commit, and written only when half of ``ttl`` is gone (a write of
        # the lease row in every step would add a page to every commit's WAL frames).
        with self._tx(immediate=True) as cur:
            row = self._lease_row(cur, policy)
            if row is None or row[0] != holder or row[1] != fence:
                raise LeaseLost(policy, fence, None if row is None else row[1], what)
            if row[2] < half:
                expires = ts(now + ttl)
                cur.execute("UPDATE leases SET expires_at = ? WHERE policy = ? AND holder = ? AND fence = ?",
                            (expires, policy, holder, fence))
                if cur.rowcount != 1:
                    raise LeaseLost(policy, fence, None, what)
                local.leases[policy] = (holder, fence, expires)

    @_once_more_after_conflict
    def release_lease(self, policy: str, holder: str, fence: int | None = None, *, durable: bool = True) -> None:
        """Give the lease up (only if ``holder`` still has it, with ``fence`` when given). The row
        stays, expired, so that the next holder's fencing number is higher."""
        sql = "UPDATE leases SET holder = '', expires_at = ? WHERE policy = ? AND holder = ?"
        params: list[Any] = [ts(datetime(1970, 1, 1, tzinfo=UTC)), policy, holder]
        if fence is not None:
            sql += " AND fence = ?"
            params.append(fence)
        with self._tx(immediate=self.has_deferred(), durable=durable) as cur:
            cur.execute(sql, params)
            self._threads.state.leases.pop(policy, None)

    def lease_fence(self, policy: str) -> int | None:
        """The policy's current fencing number (None: never leased)."""
        with self._tx(single=True) as cur:
            row = cur.execute("SELECT fence FROM leases WHERE policy = ?", (policy,)).fetchone()
        return None if row is None else int(row[0])

    def lease_holder(self, policy: str, now: datetime) -> str | None:
        with self._tx(single=True) as cur:
            row = cur.execute(
                "SELECT holder FROM leases WHERE policy = ? AND expires_at >= ?", (policy, ts(now))
            ).fetchone()
        return None if row is None else str(row[0])

    # -- audit events -------------------------------------------------------------------
    @_once_more_after_conflict
    def record_event(
        self, at: datetime, policy: str, run_id: str | None, step: str, result: str, detail: Mapping[str, Any]
    ) -> None:
        text, detail_json = audit_chain.detail_text(detail if type(detail) is dict else dict(detail))
        event = {"at": ts(at), "policy": policy, "run_id": run_id, "step": step, "result": result, "detail": text}
        # One chain: the head row is read (and locked) by the transaction's first event, and each
        # INSERT of a link moves it (the database's trigger); the transaction's next event links to
        # the head kept in memory. Where the transaction holds the whole database, the first event
        # links to the head this object left last, on condition (checked in its INSERT) that the
        # head row is still that.
        with self._tx(immediate=True) as cur:
            local = self._threads.state
            if local.head is None:
                hint = self._head_hint if self._backend.locks_database else None
                linked = None if hint is None else audit_chain.insert_link_if_head(cur, hint, event,
                                                                                   detail_json=detail_json)
                if linked is not None:
                    local.head = linked
                    return
                local.head = audit_chain.read_head(cur, self._backend.lock_row)
            local.head = audit_chain.insert_link(cur, local.head, event, detail_json=detail_json)

    @contextmanager
    def audit_transaction(self, write: bool = True) -> Iterator[tuple[_Cursor, str]]:
        """A transaction for the audit chain, and the suffix that locks its head row when selected.
        The block may move the head itself: events recorded after it read the head again.
        ``write=False`` (verify, reports): a read transaction that reads one snapshot (SQLite:
        without the write lock, so a busy writer does not hold an auditor up; PostgreSQL: REPEATABLE
        READ, so the head row and the events agree however writers race it). Such a transaction may
        last as long as the chain takes to read: on PostgreSQL only each statement of it has a
        deadline (Journal._new_tx). A write transaction (the prune's) raises JournalSchemaNewer before
        it writes anything once a newer rotator upgraded the journal."""
        with self._tx(immediate=write, snapshot=not write) as cur:
            self._forget_head()
            if write:
                self._refuse_newer_schema_inside(cur)
            yield cur, self._backend.lock_row

    def _refuse_newer_schema_inside(self, cur: _Cursor) -> None:
        """Inside a write transaction of the audit chain (the prune's: its checkpoints and deletions),
        before its first write: JournalSchemaNewer once a newer rotator upgraded the journal. Its rules
        of what may go are this code's, and a newer schema may keep more (a column, a row of a new
        kind): an old replica of a rolling upgrade must not delete by the old ones. Prune is rare, so
        this read costs no rotation anything; the lease statements fold theirs in (_SCHEMA_KNOWN)."""
        if self._backend.schema_read_lock:
            # PostgreSQL: a migration under way holds its lock until it commits; waiting for it here, and
            # holding the next one back until this commits, makes the version read below the one every
            # statement of this transaction runs under (READ COMMITTED would let a later statement see
            # a migration committed after the read). SQLite's write lock, taken at BEGIN, does the same.
            cur.execute(self._backend.schema_read_lock)
        self._refuse_newer_schema(cur.execute(_SCHEMA_VERSION_SQL).fetchone()[0])

    def events(self, policy: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        where, params = ("WHERE policy = ?", (policy,)) if policy else ("", ())
        with self._tx(single=True) as cur:
            rows = cur.execute(
                f"SELECT at, policy, run_id, step, result, detail FROM events {where} ORDER BY at DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [
            {"at": r[0], "policy": r[1], "run_id": r[2], "step": r[3], "result": r[4], **json.loads(r[5])}
            for r in rows
        ]


_JOURNAL_HINT = "check the journal path/URL, its permissions and free disk space"
#: the fix of an upgrade the database refused (Journal._upgrade_failed), by backend; the writing command
#: named is the one a read-only open of an older journal names (Journal._check_schema)
_UPGRADE_HINTS = {
    "postgresql": (
        "an upgrade changes rotator's tables (ALTER TABLE, CREATE INDEX, a function and a trigger), which "
        "PostgreSQL allows only their owner (the role that created them, or a member of it), not a role that "
        "may only read and write them. Run one writing command, e.g. `rotator recover`, once with the journal "
        "URL's user set to the owner role; then this rotator works with the usual role again "
        "(docs/operations.md#postgresql-several-hosts-or-replicas)"),
    "sqlite": (
        "an upgrade writes the journal file: this user must be allowed to write it and its directory (SQLite "
        "opens a file it may not write read-only), and the disk needs free space. Run one writing command, "
        "e.g. `rotator recover`, once as the journal file's owner, or fix its permissions"),
}
_CONFLICT_HINT = (
    "another session held rows of the journal this transaction needed while waiting for rows it held (a "
    "deadlock), or their changes could not be serialized: the server rolled this transaction back, so nothing "
    "of it was written. A journal call that is a transaction of its own is run once more at once (this error "
    "is then the second try's); a step's transaction is not, and the next run (or daemon pass) recovers what "
    "it left. If it repeats, look for other sessions writing rotator's tables (pg_stat_activity, pg_locks): "
    "rotator itself takes a policy's lease row before the audit chain's head")


@dataclass
class Preflight:
    """What a rotation reads before taking its lease (:meth:`Journal.preflight`)."""

    policy: str
    #: the lease row: (holder, fencing number, expiry as the journal's time text); None: never leased
    lease: tuple[str, int, str] | None
    open_runs: list[RunRecord]
    due: list[Revocation]
    #: token id of each due revocation -> the policy's runs that minted (or bootstrapped) it, oldest first
    claims: dict[str, list[RunRecord]]
    #: the id of the last successful run (None: none)
    last_success: str | None
    #: the token that run published (the journal's current token, whatever the stores say)
    last_token_id: str | None = None
    #: the policy's tokens whose revocation a person dismissed -> the reason given (they stay valid)
    dismissed: dict[str, str] = field(default_factory=dict)
    #: the last successful run's RunRecord.tag_search_until (None: its tag is not searched any more)
    last_tag_search_until: datetime | None = None
    #: the last successful run's RunRecord.issuer_target (where its tag is searched)
    last_issuer_target: str | None = None

    def fence_after(self, holder: str, now: datetime) -> int | None:
        """The fencing number ``holder`` gets by taking the lease at ``now`` if nobody takes it
        between (Journal.acquire_lease); None when it cannot take it (another holder's live lease)
        or cannot know it (a policy never leased). Whether reads made before the take still hold
        after it is fence_planning_first's question."""
        if self.lease is None:
            return None
        lease_holder, fence, expires = self.lease
        if lease_holder == holder:
            return fence
        return fence + 1 if expires < ts(now) else None

    def fence_planning_first(self, holder: str, now: datetime) -> int | None:
        """The fencing number ``holder`` gets by taking the lease with its planned run, after reads
        made without the lease (Engine.rotate's shortcut); None when it must take the lease first and
        read again under it: a policy never leased, or a row that names another holder, live or
        expired. An expired lease that nobody took is still its holder's (Journal.confirm_lease and
        the fenced writes accept it): a holder paused past the expiry (a GC, SIGSTOP) goes on writing
        under it without changing the row, so the row found unchanged at the take
        (``acquire_lease(unchanged=...)``) would not show that the reads made before it are stale. A
        released row (holder ``''``) or this holder's own has no other writer."""
        if self.lease is None or self.lease[0] not in ("", holder):
            return None
        return self.fence_after(holder, now)



class PolicyState(NamedTuple):
    """One policy's current journal state (:meth:`Journal.policy_state`)."""

    last_success: RunRecord | None
    open_runs: list[RunRecord]
    #: pending and failed revocations, by due time
    unfinished: list[Revocation]


@dataclass
class Overview:
    """The journal's current state, in a few queries (:meth:`Journal.overview`)."""

    last: dict[str, RunRecord]
    #: policy -> (open runs, stuck runs)
    open_runs: dict[str, tuple[int, int]]
    pending: dict[str, tuple[tuple[datetime, datetime | None], ...]]
    failed: dict[str, int]
    leases: dict[str, datetime]
    #: policy -> until when each of its published runs' tags is searched (RunRecord.tag_search_until),
    #: sorted; read only when asked (Journal.overview's ``tag_searches``), else empty
    tag_searches: dict[str, tuple[datetime, ...]] = field(default_factory=dict)
    #: how many policies a message about unfinished work names one by one (the rest are counted): the
    #: daemon's refusal of a reload that drops them, and the CLI's warning
    NAMED_AT_MOST: ClassVar[int] = 20

    @property
    def with_work(self) -> set[str]:
        """The policies with unfinished work (:meth:`unfinished_work`)."""
        return {*self.open_runs, *self.pending, *self.failed, *self.tag_searches}

    def unfinished_work(self, names: Collection[str]) -> dict[str, str]:
        """Of ``names``, the policies the journal holds unfinished work of (open runs, pending or failed
        revocations, tag searches not ended), each with what it holds: the work only that policy's issuer
        and stores can end. A tag search counts until the pass that ends it, at or after its time: a mint try
        without an answer may have created a token under the tag until then, and only that last search
        finds one created after the search before it."""
        work: dict[str, str] = {}
        for name in sorted(set(names) & self.with_work):
            held = []
            runs = self.open_runs.get(name, (0, 0))[0]
            if runs:
                held.append(f"{runs} open run{'s' if runs > 1 else ''} (a candidate token may be valid)")
            pending = self.pending.get(name, ())
            if pending:
                held.append(f"{len(pending)} pending revocation{'s' if len(pending) > 1 else ''} (the first due "
                            f"{ts(pending[0][0])})")
            failed = self.failed.get(name, 0)
            if failed:
                held.append(f"{failed} failed revocation{'s' if failed > 1 else ''} (the token is still valid)")
            searches = self.tag_searches.get(name, ())
            if searches:
                held.append(f"{len(searches)} tag search{'es' if len(searches) > 1 else ''} not ended (the last "
                            f"until {ts(searches[-1])}: a token a mint try without an answer created late may be "
                            "valid)")
            if held:
                work[name] = ", ".join(held)
        return work


#: the last successful run of each policy of ``p`` (a common table expression of policy names; a tie:
#: any one of them): one seek each, from the newest publication of the policy backwards on
#: runs_policy_published. A GROUP BY of the policies' successes with MAX(published_at) read every run
#: of theirs: the whole journal at the daemon's start, 1.44 M SQLite VM steps and ~200 ms at 100k runs
#: of history and 1,000 policies, against 70,000 steps whatever the history (issue 12)
_LAST_OF_P = (
    "SELECT r.policy, r.run_id, r.published_at, r.new_token_id, r.new_expires_at, r.token_created_at, "
    "r.tag_search_until FROM p JOIN runs r ON r.run_id = (SELECT l.run_id FROM runs l WHERE l.policy = p.policy "
    "AND l.state IN ({ok}) AND l.published_at IS NOT NULL ORDER BY l.published_at DESC LIMIT 1)"
).format(ok=", ".join("?" * len(RunState.SUCCESS)))
#: every policy that has a run, each found by one seek past the one before (a loose index scan of an
#: index that starts with the policy), and its last successful run
_LAST_OF_EVERY_POLICY = (
    "WITH RECURSIVE p (policy) AS (SELECT MIN(policy) FROM runs UNION ALL "
    "SELECT (SELECT MIN(policy) FROM runs WHERE policy > p.policy) FROM p WHERE p.policy IS NOT NULL) "
    f"{_LAST_OF_P}"
)


#: the last successful run of each policy that published at or after a time (Journal.overview's sweep):
#: the runs published since are found through runs_published, and each one's newer successes through
#: runs_policy_published, so that the read follows the publications since, never the history (a GROUP BY
#: of the successes with a lower bound on published_at had SQLite read every run of the journal)
_LAST_SINCE_SQL = (
    "SELECT r.policy, r.run_id, r.published_at, r.new_token_id, r.new_expires_at, r.token_created_at, "
    "r.tag_search_until FROM runs r WHERE r.published_at >= ? AND r.state IN ({ok}) "
    "AND NOT EXISTS (SELECT 1 FROM runs n WHERE n.policy = r.policy AND n.published_at > r.published_at "
    "AND n.state IN ({ok}))"
).format(ok=", ".join("?" * len(RunState.SUCCESS)))


def _last_records(cur: _Cursor, now: datetime) -> dict[str, RunRecord]:
    """The rows of _LAST_OF_P or _LAST_SINCE_SQL as RunRecords, by policy (of a tie, the last one read)."""
    rows = cur.fetchall()
    last = {}
    for policy, run_id, published, token_id, expires, created, searched in rows:
        at = _dt(published)
        last[policy] = RunRecord(run_id, policy, RunState.DONE, "rotate", at or now, at or now,
                                 new_token_id=token_id, new_expires_at=_dt(expires), published_at=at,
                                 token_created_at=_dt(created), tag_search_until=_dt(searched))
    return last


def open_journal(url: str, create: bool = True, *, read_only: bool = False,
                 ran_in: Sequence[str | Path] = ()) -> Journal:  # fmt: skip
    """Open the journal at ``url``: ``sqlite:///path`` or ``postgresql://user@host/db``.

    ``create=False``: a journal that does not exist yet is a ConfigError, and no file, directory
    or table is made. ``read_only`` (commands that only read: status, plan, audit, report, a
    listing inventory): that, and an older schema is refused rather than upgraded; opening takes
    no write lock. ``ran_in``: directories besides the working one that an earlier rotator may have
    run in (the policy file's: :func:`_refuse_a_journal_left_behind`).
    """
    path = sqlite_path(url)
    if path is not None:
        _refuse_a_journal_left_behind(url, path, ran_in)
        try:
            if Path(path).is_dir():
                raise ConfigError(f"the journal path {path} is a directory, not a journal file",
                                  hint=f"name a file, e.g. {Path(path) / 'rotator-journal.db'}, as `journal` under "
                                  "[rotator] in the policy file")
            if (read_only or not create) and not Path(path).is_file():
                raise _no_journal(path)
        except PermissionError as exc:  # (is_dir and is_file say False only for a path that is not there)
            raise _unreachable_journal(path, exc) from None
        _refuse_untrusted_journal(Path(path), read_only)
        return Journal(_sqlite_backend(Path(path), read_only), path, create, read_only)
    if url.startswith(("postgresql://", "postgres://")):
        return Journal(_postgres_backend(url, read_only), _redact_url(url), create, read_only)
    raise ConfigError(
        f"unsupported journal URL {url!r}",
        hint="use a path, sqlite:///absolute/path or postgresql://user@host/database",
    )


def _unreachable_journal(path: str, exc: OSError) -> ConfigError:
    """The ConfigError (exit 2) for a journal this user cannot even look at: a directory on the way to
    it that this user may not enter (no search, the x bit: the documented /var/lib/rotator is the service
    user's, 0700). Neither SQLite nor :func:`_refuse_untrusted_journal` gets to say so: the path's first
    stat fails. Who owns the journal cannot be seen from here; the owner of the directory that shuts this
    user out is the nearest guess, and the very one where that directory is the journal's own."""
    import shlex

    real = Path(os.path.realpath(path))  # (the links it could reach resolved, the rest as written)
    blocked = None
    for ahead in (*reversed(real.parents[:-1]), real):  # each directory on the way below /, then the journal
        try:
            os.lstat(ahead)
        except PermissionError:
            blocked = ahead.parent
            break
        except OSError:  # (not there: nothing below it to be shut out of)
            break
    try:
        st = None if blocked is None else os.stat(blocked)  # (its own directory let this user in)
    except OSError:  # (gone meanwhile)
        st = None
    if blocked is None or st is None:
        return ConfigError(f"the journal {path} cannot be looked at: {exc.strerror}",
                           hint="run the command as the journal's owner (the rotator service's user), or give this "
                           "user access to the journal and its directory")
    me, owner = os.geteuid(), st.st_uid
    if owner == me:  # (its owner took its own search bit away)
        way = f"run `chmod u+x {shlex.quote(str(blocked))}`"
    elif blocked == real.parent:
        way = f"run the command as the journal's owner, likely {_user(owner)}, who owns {blocked}: {as_user(owner)}"
    else:
        way = (f"run the command as the journal's owner, whom this user cannot see ({blocked} is {_user(owner)}'s): "
               f"e.g. {as_user(owner)}")
    return ConfigError(
        f"the journal {path} cannot be reached: this user, {_user(me)}, may not enter the directory {blocked} (owned "
        f"by {_user(owner)}, mode {st.st_mode & 0o7777:04o})",
        hint=f"{way}; or give {_user(me)} search access to {blocked} (the x bit: through a group of its, or an ACL)",
    )


def _user(uid: int) -> str:
    """User ``uid`` as a message names it: "name (uid N)", or "uid N" for a number without a name."""
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


#: how _journal_and_companions names a companion file ("the journal's -wal file")
THE_JOURNALS = "the journal's "


def _owned_by(path: str | Path, uid: int) -> bool:
    try:
        return os.stat(path).st_uid == uid
    except OSError:
        return False


def _refuse_a_journal_left_behind(url: str, path: str, ran_in: Sequence[str | Path] = ()) -> None:
    """ConfigError when ``url`` (``sqlite:///X``) names no file while ``X`` relative to the working
    directory, or to one of ``ran_in``, is one: rotator before schema 8 read the URL relative to the
    directory it ran in, so an upgraded deployment that wrote ``sqlite:///var/lib/rotator/journal.db``
    (the systemd unit runs in /var/lib/rotator) keeps its journal at
    /var/lib/rotator/var/lib/rotator/journal.db, and one run from the policy file's directory (its
    default was ./rotator.toml) keeps it there, whatever directory today's command runs in. Opening the
    named path would begin an empty journal there: the history, the audit chain, the pending
    revocations and the open runs left behind, and nothing would say so."""
    rest = url[len("sqlite:///"):]
    if rest.startswith("/") or os.path.lexists(path):
        return
    for base in (None, *ran_in):
        try:
            before = (Path.cwd() if base is None else Path(base)) / rest
            if not before.is_file():
                continue
        except OSError:  # no working directory any more: nothing was left there either
            continue
        raise ConfigError(
            f"the journal URL {url} names {path}, which does not exist, while {before} does: earlier rotator "
            "(before journal schema 8) read sqlite:///PATH relative to the directory it ran in, so that is the "
            "journal in use",
            hint=f"stop rotator and move {before} (with its -wal and -shm files, if any) to {path}; or set "
            f'journal = "{before}" under [rotator]',
        )


def _refuse_untrusted_journal(path: Path, read_only: bool) -> None:
    """ConfigError (exit 2) when a user other than rotator's own and root may change the SQLite journal
    at ``path``: its file, or its -wal, -shm or -journal file (SQLite reads each as the journal's), or
    the directory that holds them, is writable by others or by a group that holds other users, or owned
    by another user (rotator/config/policy_source.py `untrusted_writers`). Group read stays (an auditors'
    group). No sticky directory is accepted (/tmp): anyone may create the -wal or -shm file there before
    SQLite does. A command that only reads (``read_only``: status, report, audit) looks at the modes, not
    the owner: root, or an auditor, reads the service user's journal. A directory not made yet is made
    0700 by the first connection (:func:`_make_private_directories`); what cannot be looked at is left to
    SQLite's own error."""
    why = "whoever may change it chooses which token ids rotator revokes and which runs it resumes"
    try:
        refuse_untrusted_directory(path, "the journal", why=why, sticky_ok=False, check_owner=not read_only)
    except OSError:  # no directory yet (the first connection makes it, 0700) or none to look at: SQLite says so
        return
    for what, file in _journal_and_companions(path):
        try:
            st = os.stat(file)
        except OSError:  # (not there: SQLite makes it with the journal's mode)
            continue
        refuse_untrusted_file(file, what, st, why=why, check_owner=not read_only, check_directory=False)


def _journal_and_companions(path: Path) -> list[tuple[str, Path]]:
    """The journal's file and the -wal, -shm and -journal files SQLite keeps beside its target."""
    real = os.path.realpath(path)
    return [("the journal", path),
            *((f"{THE_JOURNALS}{suffix} file", Path(real + suffix)) for suffix in ("-wal", "-shm", "-journal"))]


def _make_private_directories(directory: Path) -> None:
    """``directory`` and every missing parent, each new one 0700 whatever the umask. Path.mkdir(parents=True)
    gives the parents the umask's mode (0777 under umask 000), in which another user may move the journal
    away or put one of their own in its place. A directory that exists is left as it is."""
    missing: list[Path] = []
    while not directory.is_dir() and directory.parent != directory:
        missing.append(directory)
        directory = directory.parent
    for new in reversed(missing):
        try:
            os.mkdir(new, 0o700)
        except FileExistsError:
            if new.is_dir():  # made meanwhile by another rotator
                continue
            raise
        os.chmod(new, 0o700)  # mkdir's mode went through the umask, which can take away rotator's own bits


def _no_journal(location: str) -> ConfigError:
    return ConfigError(
        f"there is no journal at {location}; this command does not create one",
        hint="check `journal` under [rotator] in the policy file (a relative path is relative to the policy file) "
        "and -c/--config; a new journal is made by the first `rotator bootstrap POLICY --token-file FILE "
        "--token-id ID` or `rotator rotate POLICY`",
    )


#: A new SQLite journal's page size. A commit writes every page it changed to the WAL, and a durable
#: one waits for them to reach the disk: a steady rotation's commits change ~50 pages (rows of four
#: tables, their indexes and the audit head), so half the default 4096 bytes halves what each flush
#: writes (docs/performance.md). Reads of long histories (reports, audit verify) read more pages.
SQLITE_PAGE_SIZE = 2048


def _sqlite_backend(path: Path, read_only: bool = False) -> _Backend:
    # Nothing in a process that has the journal open may open and close the database file or its -shm
    # outside SQLite: closing any descriptor of a file drops every fcntl lock the process holds on it,
    # SQLite's included, and another process would then reset the -shm and delete the WAL under the open
    # connection, whose later commits go to the deleted file (SQLite's "How To Corrupt", 2.2). The
    # O_EXCL create below opens nothing for an existing journal; group_sync's descriptor is on the WAL,
    # which SQLite does not lock.
    wal_mode = [False]
    opened = [False]

    def connect() -> sqlite3.Connection:
        if read_only:
            return _sqlite_read_only(path)
        try:
            if opened[0] and not os.path.exists(os.path.realpath(path)):
                # A later thread's connection (a worker, the daemon's HTTP probe): the journal this
                # object opened is gone. Creating an empty one here would pass readiness and, at the
                # next start, begin a new journal: the history and the pending revocations lost.
                raise sqlite3.OperationalError(f"the journal file {path} is gone (deleted or moved while open)")
            _make_private_directories(path.parent)
            try:  # a new journal is 0600 from its first byte (an empty file is an empty database);
                # at a symbolic link's target, which SQLite opens (O_EXCL would refuse the link itself)
                os.close(os.open(os.path.realpath(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                pass
            conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            # Before anything writes the file's header (journal_mode=WAL does): a new journal's page
            # size; an existing one keeps its own (changing it takes a VACUUM out of WAL mode).
            conn.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
            wal_mode[0] = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower() == "wal"
            # In WAL mode a commit is made durable by the journal's group flush of the WAL file
            # (_Backend.flush_file); a file system that refuses WAL keeps SQLite's own sync per commit.
            conn.execute("PRAGMA synchronous=NORMAL" if wal_mode[0] else "PRAGMA synchronous=FULL")
        except OSError as exc:
            raise sqlite3.OperationalError(str(exc)) from None
        except sqlite3.Error:  # SQLite says "unable to open database file" or "attempt to write a readonly database"
            shut_out = _writer_shut_out(path)
            if shut_out is not None:
                raise shut_out from None
            raise
        opened[0] = True
        # No chmod of an existing journal: read access an operator granted (an auditors' group) stays.
        # SQLite gives the -wal and -shm files the journal's mode.
        return conn

    # sqlite3.connect(timeout=30) is SQLite's busy timeout: a writer waits up to 30 s for another's
    # lock, then "database is locked" (OperationalError), which is transient.
    return _Backend(name="sqlite", connect=connect, errors=(sqlite3.Error,), unavailable=_sqlite_busy,
                    unavailable_hint=(
                        f"another process held the journal file's write lock for longer than rotator waits "
                        f"(30 s): a sqlite3 shell or a backup tool in a transaction, or another rotator. "
                        f"`fuser -v {path}` names the processes that have it open; run the command again once "
                        f"the lock is released (nothing was lost: the transaction was rolled back)"),
                    seq_collision=_sqlite_seq_collision,
                    # SQLite resolves a symbolic link to the database and writes the WAL beside its target
                    flush_file=f"{os.path.realpath(path)}-wal", in_wal_mode=lambda: wal_mode[0],
                    single_host=True, locks_database=True)


def _writer_shut_out(path: Path) -> JournalError | None:
    """Why this user may not open the SQLite journal at ``path`` to write it, when the modes say so (None
    when they do not): the journal's file or one of its -wal, -shm and -journal files it may not read and
    write, or the directory, where SQLite makes those, it may not write; with its owner, as whom to run the
    command. Only after SQLite failed: a permission SQLite does not need is nobody's business here."""
    import shlex

    real = os.path.realpath(path)
    if _on_read_only_file_system(Path(real)):  # (SQLite's own words say it: nobody may write there)
        return None
    me = os.geteuid()
    for what, file in _journal_and_companions(path):
        try:
            st = os.stat(file)
        except OSError:  # (not there: SQLite makes it)
            continue
        if not os.access(file, os.R_OK | os.W_OK):
            verb = "write" if os.access(file, os.R_OK) else "read"
            if st.st_uid == me:
                fix = f"run `chmod u+rw {shlex.quote(str(file))}`"
            elif what != "the journal" and _owned_by(path, me):
                # another user's -wal/-shm beside this user's journal (a command once run as root): give it back
                fix = (f"run `sudo chown {user_name(me)} {shlex.quote(str(file))}` (or remove it, once no rotator "
                       "runs on this journal)")
            else:
                fix = f"run the command as {_user(st.st_uid)}, who owns it: {as_user(st.st_uid)}"
            named = "it" if what == "the journal" else f"its {what.removeprefix(THE_JOURNALS)} {file}"
            return JournalError(f"journal {path}: cannot be opened for writing: this user, {_user(me)}, may not "
                                f"{verb} {named} (owned by {_user(st.st_uid)}, mode {st.st_mode & 0o7777:04o})",
                                hint=f"{fix} (rotator creates the journal with mode 0600 for the user it runs as)")
    directory = os.path.dirname(real)
    try:
        st = os.stat(directory)
    except OSError:
        return None
    if os.access(directory, os.W_OK | os.X_OK):
        return None
    fix = (f"run `chmod u+wx {shlex.quote(directory)}`" if st.st_uid == me else
           f"run the command as {_user(st.st_uid)}, who owns it: {as_user(st.st_uid)}")
    return JournalError(f"journal {path}: cannot be opened for writing: this user, {_user(me)}, may not write in the "
                        f"directory {directory} (owned by {_user(st.st_uid)}, mode {st.st_mode & 0o7777:04o}), where "
                        "SQLite makes the journal's -wal and -shm files", hint=fix)


def _sqlite_read_only(path: Path) -> sqlite3.Connection:
    """A connection that cannot write (SQLite's ``mode=ro``): no PRAGMA, no chmod (SQLite itself
    may leave empty ``-wal`` and ``-shm`` files beside a journal in WAL mode).

    A journal in WAL mode is read through its ``-shm`` file, which SQLite creates beside it when no
    connection has it open; where it cannot (a directory this user may not write to), the open
    fails. On a read-only file system nobody can write the journal either, so it is read as the
    immutable file it is; a directory that is only closed to this user may have a writer (the
    daemon, as another user), whose checkpoint would change pages under an immutable read, so that
    is an error that says what to do instead."""
    # SQLite resolves a symbolic link and keeps the -wal and -shm files beside its target
    real = os.path.realpath(path)

    def connect(query: str) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file://{quote(os.fsencode(real))}?{query}", uri=True, timeout=30,
                               isolation_level=None, check_same_thread=False)
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # an open fails only at its first read
        return conn

    try:
        return connect("mode=ro")
    except sqlite3.OperationalError as exc:
        # no -shm could be made: SQLITE_CANTOPEN on a read-only file system, SQLITE_READONLY_DIRECTORY
        # in a directory this user may not write to
        name = str(getattr(exc, "sqlite_errorname", ""))
        if not (name.startswith("SQLITE_CANTOPEN") or name == "SQLITE_READONLY_DIRECTORY"
                or "unable to open" in str(exc)):
            raise
        if not os.access(real, os.R_OK):
            raise JournalError(f"journal {path}: cannot be read: this user may not read {real}",
                               hint="run the command as the rotator service's user, or give this user read "
                               "access to the journal file (rotator creates it with mode 0600)") from None
        failed = exc
    path = Path(real)
    wal = Path(f"{real}-wal")
    read_only_fs = _on_read_only_file_system(path)
    if read_only_fs and not (wal.exists() and wal.stat().st_size > _WAL_HEADER_BYTES):
        # (with frames in a -wal file and no -shm to read them through, an immutable read would
        # silently miss the commits they hold: that case falls through to the error below)
        return connect("immutable=1")
    directory = os.path.dirname(path)
    if os.access(directory, os.W_OK) and not read_only_fs:
        raise failed
    raise JournalError(
        f"journal {path}: cannot be read: SQLite reads a journal in WAL mode through a {path.name}-shm file "
        f"beside it, and none can be made in {directory} now (a directory this user may not write to, or a "
        "read-only file system with a -wal file that holds commits)",
        hint="run the command as the rotator service's user, or read a copy (`sqlite3 JOURNAL \".backup "
        "COPY\"` as that user, or the journal file and its -wal file copied with rotator stopped) and point "
        "`journal` or -c at it; docs/compliance.md says how an auditors' group can read the live file",
    )


_WAL_HEADER_BYTES = 32  # a WAL file this long holds no frame


def _on_read_only_file_system(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # AttributeError: a platform without statvfs
        return False


def _sqlite_seq_collision(exc: BaseException) -> bool:
    # SQLite names a unique index's columns: "UNIQUE constraint failed: events.seq"
    return isinstance(exc, sqlite3.IntegrityError) and str(exc).endswith("events.seq")


def _sqlite_busy(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


#: PostgreSQL connection parameters (times in seconds unless said otherwise), each used unless the URL
#: (or libpq's environment variable for it) sets its own: a server that accepts and never answers, a
#: query stuck behind a lock, or a dead peer must end in a transient error, never hang a worker.
PG_DEFAULTS: dict[str, str] = {
    "connect_timeout": "10",  # whole connection set-up, including a server that never answers
    "keepalives": "1", "keepalives_idle": "15", "keepalives_interval": "5", "keepalives_count": "3",
    "tcp_user_timeout": "30000",  # ms: sent data unacknowledged this long -> the connection is dead
}  # fmt: skip
#: and for a journal that writes: a server that accepts writes. Of several hosts (host=a,b) libpq picks
#: the primary, and it refuses a standby (a primary demoted by a fail-over, still reached through a stale
#: DNS answer) at connect, a transient error: the next try connects again. A read-only open takes any.
PG_WRITER_DEFAULTS: dict[str, str] = {"target_session_attrs": "read-write"}
PG_STATEMENT_TIMEOUT_MS = 30_000
PG_LOCK_TIMEOUT_MS = 10_000
#: the server's own keepalives for the session (its default is the OS's, ~2 h): a client the network
#: cut off is found gone in ~30 s, and its session ends (ignored on a unix socket)
PG_SERVER_KEEPALIVES: dict[str, int] = {"tcp_keepalives_idle": 15, "tcp_keepalives_interval": 5,
                                        "tcp_keepalives_count": 3}
#: Every session's transactions READ COMMITTED, whatever the server's default_transaction_isolation (a
#: database a DBA set to serializable): the lease and fencing reasoning assumes it. A lease UPDATE that
#: waited for a concurrent commit re-checks its WHERE against the row that commit left, and a statement
#: after a fenced write's lease lock (_FINISH_PUBLISHED) sees what the lease's previous holder committed;
#: under REPEATABLE READ or SERIALIZABLE both fail for a conflict instead, or read an older snapshot. Set
#: for the session at connect, which costs no statement per transaction; a snapshot read still sets
#: REPEATABLE READ itself (_Backend.snapshot_inside). The backslash keeps the space inside one -c.
PG_ISOLATION_OPTION = r"-c default_transaction_isolation=read\ committed"
#: the largest value PostgreSQL takes for a time setting in milliseconds (INT_MAX)
_PG_MAX_MS = 2**31 - 1
#: PostgreSQL's units of time, in milliseconds (its manual, "Parameter Names and Values"; case-sensitive)
_PG_TIME_UNITS_MS: dict[str, float] = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000,
                                       "d": 86_400_000}
#: libpq's environment variables for the parameters postgres_conninfo reads or sets: a parameter in
#: the conninfo hides its variable (the Helm chart's envFrom Secret sets some), so start from those
_PG_ENV = {"options": "PGOPTIONS", "application_name": "PGAPPNAME", "connect_timeout": "PGCONNECT_TIMEOUT",
           "target_session_attrs": "PGTARGETSESSIONATTRS"}


def postgres_conninfo(url: str, read_only: bool = False) -> str:
    """``url`` with rotator's defaults added where unset: connect and keepalive parameters, a server
    that accepts writes (unless ``read_only``), and the statement, lock and idle-in-transaction
    timeouts and the server's keepalives through ``options``. ConfigError when libpq cannot read
    ``url`` (:func:`postgres_url_problem`)."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(url)
    except ProgrammingError as exc:
        what, fix = _url_problem_of(url, exc)
        raise ConfigError(what, hint=fix) from None
    given = {k: os.environ[var] for k, var in _PG_ENV.items() if k not in params and os.environ.get(var)}
    defaults = PG_DEFAULTS if read_only else {**PG_DEFAULTS, **PG_WRITER_DEFAULTS}
    extra: dict[str, Any] = {k: v for k, v in defaults.items() if k not in params and k not in given}
    options = str(params.get("options") or given.get("options") or "")
    for name, value in (("statement_timeout", PG_STATEMENT_TIMEOUT_MS), ("lock_timeout", PG_LOCK_TIMEOUT_MS)):
        options = _with_setting(options, name, value)
    # A session left idle in a transaction (its process paused, the network to it cut: neither side can
    # end it) keeps its row locks, the audit chain's head among them, which every replica's every event
    # write waits for: the server ends it once it has been idle as long as a transaction may last.
    idle_ms = min(round(_tx_deadline_s(_options_statement_timeout_s(options)) * 1000), _PG_MAX_MS)
    options = _with_setting(options, "idle_in_transaction_session_timeout", idle_ms)
    for name, value in PG_SERVER_KEEPALIVES.items():
        options = _with_setting(options, name, value)
    # Last, so that it wins over a URL's or PGOPTIONS' own, and over the database's or role's default.
    extra["options"] = f"{options} {PG_ISOLATION_OPTION}".strip()
    extra["application_name"] = params.get("application_name") or given.get("application_name") or "rotator"
    return make_conninfo(url, **extra)


def _with_setting(options: str, name: str, value: int) -> str:
    """``options`` with ``-c name=value`` added unless it sets ``name`` already."""
    return options if name in options else f"{options} -c {name}={value}".strip()


def postgres_url_problem(url: str) -> str | None:
    """What libpq cannot read in the PostgreSQL journal URL ``url`` (a query key that is no libpq
    connection parameter, e.g. ``?search_path=...``; a bad percent escape) and how to fix it, in one
    text without the URL's password; None when libpq reads it, or when psycopg is not installed
    (opening the journal says that)."""
    try:
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        return None
    try:
        conninfo_to_dict(url)
    except ProgrammingError as exc:
        what, fix = _url_problem_of(url, exc)
        return f"{what}; {fix}"
    return None


def _url_problem_of(url: str, exc: BaseException) -> tuple[str, str]:
    """The problem libpq found in ``url`` (``exc``) and how to fix it, without the URL's secrets."""
    detail = _without_url_secrets(str(exc).strip(), url)
    key = re.fullmatch(r'invalid URI query parameter: "(.*)"', detail)
    what = f"the journal URL {_redact_url(url)} cannot be read by libpq: {detail}"
    if key is None:
        return what, ("write it as postgresql://user@host:5432/database?param=value, with each % in the user "
                      "name or password written %25")
    name = key.group(1)
    example = "-csearch_path%3Drotator" if name == "search_path" else f"-c{name}%3DVALUE"
    return what, (f"{name} is not a libpq connection parameter, the only keys a postgresql:// URL's query takes "
                  f"(sslmode, connect_timeout, options...): check its spelling, or pass a server setting in options "
                  f"instead: ?options={example}")


def _without_url_secrets(detail: str, url: str) -> str:
    """libpq's complaint about ``url`` without its secrets: libpq quotes the part it cannot decode, which
    may be (a piece of) the password, in the user-info or in a query key such as ``?password=``."""
    from urllib.parse import unquote

    for secret in _url_secret_texts(url):
        for quoted in re.findall(r'"([^"]*)"', detail):
            if quoted and (quoted in secret or secret in quoted or unquote(secret) in quoted):
                detail = detail.replace(f'"{quoted}"', '"***"')
        detail = detail.replace(secret, "***").replace(unquote(secret), "***")
    return detail


def pg_duration_ms(value: str) -> float | None:
    """A PostgreSQL time setting whose base unit is the millisecond (``statement_timeout``) in
    milliseconds: a number with one of PostgreSQL's units (us, ms, s, min, h, d) or none (ms);
    None when PostgreSQL would not read it (then the server refuses the connection itself)."""
    found = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-z]*)\s*", value)
    if found is None or (found.group(2) or "ms") not in _PG_TIME_UNITS_MS:
        return None
    return min(float(found.group(1)) * _PG_TIME_UNITS_MS[found.group(2) or "ms"], _PG_MAX_MS)


def _statement_timeout_s(conninfo: str) -> float:
    """The statement_timeout ``conninfo`` sets through its options, in seconds; rotator's default where
    it sets none, or 0 (no limit on the server): a write transaction's row locks hold other replicas
    up, so the watchdog keeps its default deadline then."""
    from psycopg.conninfo import conninfo_to_dict

    return _options_statement_timeout_s(str(conninfo_to_dict(conninfo).get("options") or ""))


def _options_statement_timeout_s(options: str) -> float:
    # the server takes the last one given
    found = re.findall(r"statement_timeout\s*=\s*(\S+)", options)
    ms = pg_duration_ms(found[-1]) if found else None
    return (ms or PG_STATEMENT_TIMEOUT_MS) / 1000


def _tx_deadline_s(statement_timeout_s: float) -> float:
    """How long one transaction may wait on the server before the watchdog cuts it: a transaction is a
    few short statements, and twice the statement timeout plus a margin is never reached by one that
    the server is answering."""
    return 2 * statement_timeout_s + 5


def _cut_connection(conn: Any) -> None:
    # shutdown() acts on the socket itself, not on the duplicated descriptor: libpq's pending
    # recv() ends at once, psycopg raises OperationalError, and the journal drops the connection.
    import socket  # PostgreSQL only: a reader of a SQLite journal (`rotator status`) does not import it

    try:
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except Exception:  # closed meanwhile (psycopg's fileno() raises OperationalError then): nothing waits on it
        _debug("journal watchdog: the connection to cut is closed already")


#: one arbitrary advisory lock key for rotator's migrations (PostgreSQL): taken exclusively by a migration,
#: shared by a write transaction that must run under one schema version (_Backend.schema_read_lock)
_PG_MIGRATION_KEY = 7306180


def _postgres_backend(url: str, read_only: bool = False) -> _Backend:
    try:
        import psycopg
    except ImportError as exc:
        raise ConfigError("a postgresql:// journal needs psycopg", hint=install_hint(exc)) from None
    conninfo = postgres_conninfo(url, read_only)
    tx_deadline_s = _tx_deadline_s(_statement_timeout_s(conninfo))

    def connect() -> Any:
        # autocommit: every transaction is an explicit BEGIN ... COMMIT, as on SQLite.
        return psycopg.connect(conninfo, autocommit=True)

    # OperationalError: connect timeout, reset, server gone or ending the session (AdminShutdown...).
    # A server that accepts no writes (ReadOnlySqlTransaction: a standby, a demoted primary) or that
    # ended a session idle in its transaction serves this connection's next operation no better.
    gone = (psycopg.OperationalError, psycopg.InterfaceError, psycopg.errors.ReadOnlySqlTransaction,
            psycopg.errors.IdleInTransactionSessionTimeout)
    return _Backend(
        name="postgresql",
        connect=connect,
        errors=(psycopg.Error,),
        connection_errors=gone,
        connection_lost=lambda conn: bool(conn.closed or conn.broken),
        # QueryCanceled: statement_timeout; LockNotAvailable: lock_timeout
        unavailable=lambda exc: isinstance(exc, (*gone, psycopg.errors.QueryCanceled,
                                                 psycopg.errors.LockNotAvailable)),
        # (not all of class 40: its statement_completion_unknown leaves the outcome unknown)
        conflict=lambda exc: isinstance(exc, (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)),
        seq_collision=lambda exc: isinstance(exc, psycopg.errors.UniqueViolation)
        and exc.diag.constraint_name == "events_seq",
        lock_row=" FOR UPDATE",
        tx_deadline_s=tx_deadline_s,
        abort=_cut_connection,
        paramstyle_percent=True,
        begin="BEGIN",
        # Row locks taken by the lease upsert serialise replicas; nothing more is needed.
        begin_locked="BEGIN",
        relaxed_inside="SET LOCAL synchronous_commit TO OFF",
        # READ COMMITTED gives each statement its own snapshot: a verify racing a writer could read
        # the head before and the events after that writer's commit
        snapshot_inside="SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY",
        migration_lock=f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_KEY})",
        schema_read_lock=f"SELECT pg_advisory_xact_lock_shared({_PG_MIGRATION_KEY})",
        table_exists="SELECT to_regclass(?) WHERE to_regclass(?) IS NOT NULL",
        add_column_if_not_exists=True,
        # (a command that only reads may read a standby: an auditor's replica)
        ping_sql="SELECT MAX(version) FROM schema_version" if read_only
        else "SELECT MAX(version), current_setting('transaction_read_only') = 'on' FROM schema_version",
    )


#: libpq's connection parameters that hold a secret; a query key whose name says secret as the policy
#: loader judges one (rotator.config.inline_secrets) is hidden too (PG 18's oauth_client_secret)
_PG_SECRET_KEYS = frozenset({"password", "sslpassword"})


def _redact_url(url: str) -> str:
    """The PostgreSQL journal URL for messages (Journal.location, every JournalError, the daemon's start
    log), each secret shown as ``***``. Never raises: it words errors. Built from what libpq reads
    (:func:`_url_of_params`): a password in ``?password=`` or a multi-host URL is read as libpq reads it
    (``urlsplit().port`` fails on ``h1:1,h2:2``); a URL libpq cannot read, or without psycopg, is
    redacted as text (:func:`_redact_url_text`)."""
    try:
        from psycopg import Error as PsycopgError
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        return _redact_url_text(url)
    try:
        params = conninfo_to_dict(url)
    except (PsycopgError, ValueError, TypeError):
        return _redact_url_text(url)
    return _url_of_params(url.partition("://")[0] or "postgresql", {k: str(v) for k, v in params.items()})


def _pg_secret_key(key: str) -> bool:
    from rotator.config.inline_secrets import is_secret_query_key

    return key.lower() in _PG_SECRET_KEYS or is_secret_query_key(key)


def _url_of_params(scheme: str, params: dict[str, str]) -> str:
    """A URL of libpq's ``params`` (conninfo_to_dict) with every secret ``***``: only what libpq read is
    shown, so a password it takes from the query (which wins over the user-info's) is gone either way."""
    rest = dict(params)
    user, password, dbname = rest.pop("user", ""), rest.pop("password", ""), rest.pop("dbname", None)
    userinfo = quote(user, safe="") + (":***" if password else "")
    netloc = (f"{userinfo}@" if userinfo else "") + _netloc_hosts(rest)
    path = "" if dbname is None else "/" + quote(dbname, safe="")
    query = "&".join(f"{quote(k, safe='')}={'***' if _pg_secret_key(k) else quote(v, safe='/:,')}"
                     for k, v in rest.items())
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")


def _netloc_hosts(params: dict[str, str]) -> str:
    """``host1:port1,host2:port2`` for a URL's netloc, its host and port taken out of ``params``; both left
    there (for the query) when they do not fit in a netloc: a unix socket's directory, a port list that
    does not pair with the host list."""
    hosts = params["host"].split(",") if params.get("host") else []
    ports = params["port"].split(",") if params.get("port") else []
    if not hosts or any(not h or h.startswith(("/", "@")) for h in hosts) or (ports and len(ports) != len(hosts)):
        return ""
    del params["host"]
    params.pop("port", None)
    shown = [f"[{h}]" if ":" in h else quote(h, safe="") for h in hosts]
    return ",".join(h + (f":{p}" if p else "") for h, p in zip(shown, ports or [""] * len(hosts), strict=True))


def _redact_url_text(url: str) -> str:
    """``url`` with its secrets hidden, read as text (libpq cannot read it, or psycopg is missing): all of
    the user-info after its first ``:``, up to its last ``@`` (libpq ends the user-info at the first ``@``,
    Python at the last: this hides the password of either), and the value of each query key that names
    a secret (:func:`_url_text`)."""
    scheme_sep, userinfo, at, hosts, question, pairs = _url_text(url)
    head = f"{userinfo.partition(':')[0]}:***@{hosts}" if at and ":" in userinfo else userinfo + at + hosts
    query = "&".join(k + eq + ("***" if secret else v) for k, eq, v, secret in pairs)
    return scheme_sep + head + question + query


def _url_secret_texts(url: str) -> list[str]:
    """The secrets written in ``url`` as text, as :func:`_redact_url_text` finds them: the user-info's
    password, the values of query keys that name a secret."""
    _, userinfo, at, _, _, pairs = _url_text(url)
    found = [userinfo.partition(":")[2]] if at else []
    found += [v for _, _, v, secret in pairs if secret]
    return [secret for secret in found if secret]


def _url_text(url: str) -> tuple[str, str, str, str, str, list[tuple[str, str, str, bool]]]:
    """``url`` cut as text: its scheme and ``://``, the user-info (up to the last ``@``), that ``@``, the
    hosts and path, the ``?``, and the query's pairs (key, ``=``, value, whether the key names a secret)."""
    from urllib.parse import unquote

    scheme, sep, rest = url.partition("://")
    head, question, query = rest.partition("?")
    userinfo, at, hosts = head.rpartition("@")
    pairs = [(k, eq, v, bool(eq) and _pg_secret_key(unquote(k)))
             for k, eq, v in (pair.partition("=") for pair in query.split("&"))]
    return scheme + sep, userinfo, at, hosts, question, pairs


#: a pending revocation whose due time and retry time have come (parameters: state, now, now)
_DUE = "state = ? AND due_at <= ? AND (next_try_at IS NULL OR next_try_at <= ?)"


def _due_sql(now: datetime, policy: str | None) -> tuple[str, list[Any]]:
    """Pending revocations (of ``policy``) whose due time and retry time have come, oldest due first."""
    sql = f"SELECT {', '.join(_REV_COLUMNS)} FROM revocations WHERE {_DUE}"
    params: list[Any] = [RevocationState.PENDING, ts(now), ts(now)]
    if policy is not None:
        sql += " AND policy = ?"
        params.append(policy)
    return sql + " ORDER BY due_at", params


#: A read of several tables in one statement (one snapshot without BEGIN/COMMIT; on PostgreSQL one
#: round trip): a UNION ALL of branches whose rows are tagged by what they are and laid out in a
#: run's columns. PostgreSQL types a UNION's columns by position, so a revocation's columns and the
#: lease's go where a run's column has their type: ``attempts`` and ``fence`` in the run's ``fence``
#: column, the text columns in text ones (tagged_rows reads them back).
_FENCE_AT = _RUN_COLUMNS.index("fence")
#: a revocation's text columns, in the order a tagged row has them after its tag
_REV_TEXT = tuple(c for c in _REV_COLUMNS if c != "attempts")
#: where each of a revocation's columns (_REV_COLUMNS) is in a tagged row
_REV_POSITIONS = tuple(1 + (_FENCE_AT if c == "attempts" else _REV_TEXT.index(c)) for c in _REV_COLUMNS)


def _tagged(kind: str, columns: Sequence[str], at: Mapping[int, str] | None = None) -> str:
    cells = [*columns, *["NULL"] * (len(_RUN_COLUMNS) - len(columns))]
    for position, column in (at or {}).items():
        cells[position] = column
    return f"SELECT '{kind}', {', '.join(cells)}"


def _runs_branch(kind: str, where: str) -> str:
    return f"{_tagged(kind, _RUN_COLUMNS)} FROM runs WHERE {where}"


def _revocations_branch(kind: str, where: str) -> str:
    return f"{_tagged(kind, _REV_TEXT, {_FENCE_AT: 'attempts'})} FROM revocations WHERE {where}"


#: Journal.finish_published_run: a published run moves to done only once no revocation it waits for is
#: unfinished (pending or failed; the subquery reads the policy's unfinished rows alone). A rotation may
#: schedule two under its id (the replaced token, and the token the journal published last when no
#: store named it any more), and the replaced token's row may carry an earlier run's id (a token current
#: again and replaced once more). A run moved on the first of them would say its tokens are revoked
#: while another stays valid, and may stay so for good (that revocation fails). Both revocations of a
#: run end under the policy's lease (a fenced write locks the lease row first), so on PostgreSQL the
#: later one's statement sees the earlier one's commit: two that each saw the other unfinished cannot
#: leave the run published.
_FINISH_PUBLISHED = (
    "UPDATE runs SET state = ?, finished_at = ?, fence = COALESCE(?, fence) "
    "WHERE (run_id = ? OR old_token_id = ?) AND policy = ? AND state = ? AND NOT EXISTS "
    "(SELECT 1 FROM revocations v WHERE v.policy = runs.policy AND v.state IN (?, ?) "
    "AND (v.run_id = runs.run_id OR v.token_id = runs.old_token_id))"
)

_OPEN_WHERE = f"policy = ? AND state IN ({', '.join('?' * len(RunState.OPEN))})"
#: the open runs and the unfinished revocations of every policy, in literals: the predicates of the
#: partial indexes runs_open and revocations_unfinished (migration 9), which a planner uses only for a
#: query that states them (a new open state needs a migration of its own: tests/core/test_query_plans.py
#: checks that they still agree)
_OPEN_STATES = f"state IN ({', '.join(repr(str(state)) for state in RunState.OPEN)})"
_UNFINISHED_STATES = f"state IN ('{RevocationState.PENDING.value}', '{RevocationState.FAILED.value}')"
_SUCCESS_WHERE = f"policy = ? AND state IN ({', '.join('?' * len(RunState.SUCCESS))})"
#: the published runs whose tag is still searched, of every policy: runs_policy_tag_search's predicate first
_TAG_SEARCHED = ("tag_search_until IS NOT NULL AND state IN "
                 f"({', '.join(repr(str(state)) for state in RunState.SUCCESS)})")
_LAST_SUCCESS_BRANCH = (
    f"SELECT * FROM ({_runs_branch('last', _SUCCESS_WHERE)} ORDER BY published_at DESC LIMIT 1) AS last_success"
)
_PREFLIGHT = " UNION ALL ".join((
    f"{_tagged('lease', ['holder'], {_FENCE_AT: 'fence', _FENCE_AT + 1: 'expires_at'})} FROM leases WHERE policy = ?",
    _runs_branch("open", _OPEN_WHERE),
    _revocations_branch("due", f"policy = ? AND {_DUE}"),
    _LAST_SUCCESS_BRANCH,
    # (dismissed rows: a person's decision each, a handful in a policy's life)
    _revocations_branch("dismissed", "policy = ? AND state = ?"),
))
_POLICY_STATE = " UNION ALL ".join((
    _LAST_SUCCESS_BRANCH,
    _runs_branch("open", _OPEN_WHERE),
    _revocations_branch("unfinished", "policy = ? AND state IN (?, ?)"),
))


#: where a run's new_token_id is in a tagged row
_NEW_TOKEN_AT = 1 + _RUN_COLUMNS.index("new_token_id")
#: and its tag_search_until
_TAG_SEARCH_AT = 1 + _RUN_COLUMNS.index("tag_search_until")
#: and its issuer_target
_ISSUER_TARGET_AT = 1 + _RUN_COLUMNS.index("issuer_target")


def _tagged_rows(rows: Sequence[Sequence[Any]], raw: Sequence[str] = ()) -> dict[str, list[Any]]:
    """The rows of a tagged read by tag: runs as RunRecords, revocations as Revocations, the lease as
    (holder, fence, expiry text); the rows of the kinds in ``raw`` as they were read."""
    found: dict[str, list[Any]] = {}
    for row in rows:
        kind = row[0]
        if kind in raw:
            item: Any = row
        elif kind == "lease":
            item = (str(row[1]), int(row[_FENCE_AT + 1]), str(row[_FENCE_AT + 2]))
        elif kind in ("due", "unfinished", "dismissed"):
            item = _rev_from_row([row[i] for i in _REV_POSITIONS])
        else:
            item = _run_from_row(row[1:])
        found.setdefault(kind, []).append(item)
    return found


#: the attribute of a RunRecord holding its row as this process last read or wrote it (not a
#: dataclass field: replace(), asdict() and == ignore it)
_STORED = "_journal_row"


def _stored_row(run: RunRecord) -> tuple[Any, ...] | None:
    stored: tuple[Any, ...] | None = run.__dict__.get(_STORED)
    return stored


def _set_stored_row(run: RunRecord, row: tuple[Any, ...] | None) -> None:
    run.__dict__[_STORED] = row


#: positions in a run's row of the columns an UPDATE may set (all but run_id), and of its state
_RUN_SETTABLE = tuple(range(1, len(_RUN_COLUMNS)))
_RUN_STATE_AT = _RUN_COLUMNS.index("state")
#: an UPDATE statement by the columns it sets (a few forms: one per step, built once)
_RUN_UPDATES: dict[tuple[int, ...], str] = {}


def _write_run(cur: _Cursor, values: Mapping[str, Any], expected_state: str,
               stored: tuple[Any, ...] | None) -> tuple[Any, ...] | None:  # fmt: skip
    """Write the run whose fields are ``values`` over its row if the row is still in
    ``expected_state``: the row as written, or None (nothing written) if it is not.

    Only the columns that differ from ``stored`` (the row as this process last read or wrote it;
    None: every column) are set: SQLite rewrites the entry of every index on a column named in
    SET, changed or not, and each page that touches is one more WAL frame in the commit."""
    row = _run_row_of(values)
    changed = tuple(i for i in _RUN_SETTABLE if stored is None or stored[i] != row[i]) or (_RUN_STATE_AT,)
    sql = _RUN_UPDATES.get(changed)
    if sql is None:
        sql = _RUN_UPDATES[changed] = (f"UPDATE runs SET {', '.join(f'{_RUN_COLUMNS[i]} = ?' for i in changed)} "
                                       "WHERE run_id = ? AND state = ?")
    cur.execute(sql, [row[i] for i in changed] + [values["run_id"], expected_state])
    return row if cur.rowcount == 1 else None


def _insert_revocation(cur: _Cursor, rev: Revocation) -> None:
    """Schedule ``rev``. A token that has a row already was current again (an older version restored
    in the stores) and is replaced now: it gets its grace from now, not from when it was first
    replaced. A pending row is due at the later of the two times; a failed one (a revocation pass
    refused it while the stores held it) is pending again, its rounds counted afresh, since the
    stores hold it no more. A done row stays done: the token is revoked."""
    values = _rev_row(rev)
    cur.execute(
        f"INSERT INTO revocations ({', '.join(_REV_COLUMNS)}) VALUES ({', '.join('?' * len(values))}) "
        "ON CONFLICT (policy, token_id) DO UPDATE SET due_at = excluded.due_at, state = 'pending', "
        "attempts = 0, next_try_at = NULL, last_error = NULL "
        "WHERE revocations.state = 'failed' "
        "OR (revocations.state = 'pending' AND revocations.due_at < excluded.due_at)",
        values,
    )


def _run_row(run: RunRecord) -> tuple[Any, ...]:
    return _run_row_of(run.__dict__)


def _run_row_of(v: Mapping[str, Any]) -> tuple[Any, ...]:
    """The row of the run whose fields are ``v`` (a RunRecord's ``__dict__``, changes applied or not)."""
    return (
        v["run_id"], v["policy"], v["kind"], v["state"], ts(v["started_at"]), ts(v["updated_at"]),
        v["old_token_id"], v["new_token_id"], _ts_or_none(v["new_expires_at"]), _ts_or_none(v["published_at"]),
        _ts_or_none(v["finished_at"]), _versions_text(v["planned_versions"]),
        _versions_text(v["published_versions"]), v["error"], v["fence"],
        _ts_or_none(v["mint_started_at"]), _ts_or_none(v["token_created_at"]), v["verified_fence"],
        _ts_or_none(v["tag_search_until"]), v["issuer_target"], v["new_token_sha256"],
    )  # fmt: skip


#: the JSON text of recently written store-versions maps, by their items: a run's row is built at
#: every write of the run (five a rotation) while its two maps change once or twice
_VERSIONS_TEXT: dict[tuple[Any, ...], str] = {}


def _versions_text(versions: Mapping[str, Any]) -> str:
    if not all(v is None or type(v) is str for v in versions.values()):
        # a store's version ids are text; anything else is dumped every time (True, 1 and 1.0 are
        # one key of a dict but three JSON texts)
        return _dump_sorted(versions)
    key = tuple(versions.items())
    try:
        return _VERSIONS_TEXT[key]
    except KeyError:
        pass
    text = _dump_sorted(versions)
    if len(_VERSIONS_TEXT) >= 256:
        _VERSIONS_TEXT.clear()
    _VERSIONS_TEXT[key] = text
    return text


def _run_from_row(row: Sequence[Any]) -> RunRecord:
    d = dict(zip(_RUN_COLUMNS, row, strict=True))
    run = RunRecord(
        run_id=d["run_id"], policy=d["policy"], kind=d["kind"], state=d["state"],
        started_at=_dt(d["started_at"]) or datetime.min, updated_at=_dt(d["updated_at"]) or datetime.min,
        old_token_id=d["old_token_id"], new_token_id=d["new_token_id"],
        new_expires_at=_dt(d["new_expires_at"]), published_at=_dt(d["published_at"]),
        finished_at=_dt(d["finished_at"]), planned_versions=json.loads(d["planned_versions"]),
        published_versions=json.loads(d["published_versions"]), error=d["error"],
        fence=d["fence"], mint_started_at=_dt(d["mint_started_at"]), token_created_at=_dt(d["token_created_at"]),
        verified_fence=d["verified_fence"], tag_search_until=_dt(d["tag_search_until"]),
        issuer_target=d["issuer_target"], new_token_sha256=d["new_token_sha256"],
    )  # fmt: skip
    _set_stored_row(run, tuple(row))
    return run


def _rev_row(rev: Revocation) -> tuple[Any, ...]:
    return _rev_row_of(rev.__dict__)


def _rev_row_of(v: Mapping[str, Any]) -> tuple[Any, ...]:
    return (
        v["policy"], v["token_id"], v["run_id"], v["reason"], ts(v["due_at"]), v["state"], v["attempts"],
        _ts_or_none(v["next_try_at"]), v["last_error"], _ts_or_none(v["done_at"]),
    )  # fmt: skip


def _rev_from_row(row: Sequence[Any]) -> Revocation:
    d = dict(zip(_REV_COLUMNS, row, strict=True))
    return Revocation(
        policy=d["policy"], token_id=d["token_id"], run_id=d["run_id"], reason=d["reason"],
        due_at=_dt(d["due_at"]) or datetime.min, state=d["state"], attempts=d["attempts"],
        next_try_at=_dt(d["next_try_at"]), last_error=d["last_error"], done_at=_dt(d["done_at"]),
    )  # fmt: skip


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # already broken: nothing more to release
        pass


def _restore_record(record: object, values: Mapping[str, Any]) -> None:
    """Put back fields (and the stored row, under its own key) of a record: its transaction rolled back."""
    record.__dict__.update(values)


def _ts_or_none(value: datetime | None) -> str | None:
    return None if value is None else ts(value)
