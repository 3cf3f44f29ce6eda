"""A hash chain over the journal's audit events, so that history edited after the fact shows.

Every event gets a sequence number ``seq`` and ``hash = SHA-256(prev_hash + "\\n" + canonical)``,
where *canonical* is the event's fields (seq, time, policy, run, step, result, detail, instance)
as JSON with sorted keys and UTC timestamps. One head row (``audit_head``) holds the last link; an
event is appended in the same transaction that locks that row (PostgreSQL: ``SELECT ... FOR
UPDATE``; SQLite: the writer's ``BEGIN IMMEDIATE``), so concurrent writers never fork the chain.

:func:`verify` walks the chain from the latest pruning checkpoint (or the start) and names the
first link that differs: an edited event (its hash no longer matches), a deleted one (a gap in
``seq``), reordered or inserted ones (``prev_hash`` no longer the previous link, or an unchained
row), a truncated head (the head row is ahead of the last event).

What a hash chain cannot show alone: someone with write access who rewrites *every* link after
an edit, and the head. Keep the head that ``rotator audit verify`` prints (``SEQ:HASH@TIME``, e.g.
in each report handed to an auditor): a later chain must still pass through it, or have pruned it
as a prune of rotator's would (:func:`check_kept_links`).
"""

from __future__ import annotations

import functools
import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, Protocol

from rotator.config.inline_secrets import mask_tokens
from rotator.config.timefmt import rfc3339_micro
from rotator.core.one_line import one_line

__all__ = [
    "GENESIS",
    "UNLINKED_COUNT",
    "UNLINKED_NEWEST",
    "ChainReport",
    "Checkpoint",
    "KeptLink",
    "append_event",
    "insert_link",
    "insert_link_if_head",
    "is_journal_time",
    "read_head",
    "tables_missing",
    "canonical",
    "canonical_with",
    "detail_text",
    "instance_name",
    "link",
    "verify_rows",
]

#: prev_hash of the first link; the hash of "link 0", the chain's start, which no prune deletes
GENESIS = "0" * 64
CHAIN = "journal"

#: detail keys of the chain's record of the events without a link (from before the upgrade that
#: added the chain): how many there are, and the newest one's time (None: there are none). The
#: first link records them as the chain begins, and each `prune` event as that prune left them.
#: Verification holds those rows to the chain's record, not to the head row's count, which anyone
#: with write access could raise to hide an inserted row.
UNLINKED_COUNT = "unlinked_events"
UNLINKED_NEWEST = "newest_unlinked_at"

#: the migration that adds the chain (appended to rotator.core.journal._MIGRATIONS)
MIGRATION = f"""
    ALTER TABLE events ADD COLUMN seq INTEGER;
    ALTER TABLE events ADD COLUMN instance TEXT;
    ALTER TABLE events ADD COLUMN prev_hash TEXT;
    ALTER TABLE events ADD COLUMN hash TEXT;
    CREATE UNIQUE INDEX events_seq ON events (seq);
    CREATE TABLE audit_head (
        chain TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        hash TEXT NOT NULL,
        unchained INTEGER NOT NULL
    );
    INSERT INTO audit_head (chain, seq, hash, unchained) SELECT '{CHAIN}', 0, '{GENESIS}', COUNT(*) FROM events;
    CREATE TABLE audit_checkpoints (
        seq INTEGER PRIMARY KEY,
        hash TEXT NOT NULL,
        at TEXT NOT NULL,
        detail TEXT NOT NULL
    )
"""

#: the migration that makes the database move the head with every linked event it inserts, in the
#: INSERT's own statement: a transaction that audits needs no UPDATE of the head before its COMMIT
#: (one statement, and on PostgreSQL one round trip, fewer per step). Statements per backend (the
#: bodies hold semicolons); each can run again (Journal._migrate recreates a missing trigger). The
#: head only moves forward: an event without a hash (from before the chain) leaves it alone, and so
#: does an older event put back (a partial restore), which would otherwise move it back and make
#: the next link's sequence number collide.
_MOVE_HEAD = f"UPDATE audit_head SET seq = NEW.seq, hash = NEW.hash WHERE chain = '{CHAIN}' AND seq < NEW.seq"
HEAD_TRIGGER_MIGRATION: dict[str, tuple[str, ...]] = {
    "sqlite": (
        "CREATE TRIGGER IF NOT EXISTS audit_head_follows AFTER INSERT ON events WHEN NEW.hash IS NOT NULL "
        f"BEGIN {_MOVE_HEAD}; END",
    ),
    "postgresql": (
        # SET search_path FROM CURRENT: the body's audit_head is the migrating session's, whatever
        # search_path a writer has
        "CREATE OR REPLACE FUNCTION rotator_audit_head_follows() RETURNS trigger LANGUAGE plpgsql "
        f"SET search_path FROM CURRENT AS $$ BEGIN {_MOVE_HEAD}; RETURN NULL; END $$",
        "DROP TRIGGER IF EXISTS audit_head_follows ON events",
        # EXECUTE PROCEDURE: the spelling PostgreSQL 10 knows too (11+ also take EXECUTE FUNCTION)
        "CREATE TRIGGER audit_head_follows AFTER INSERT ON events FOR EACH ROW WHEN (NEW.hash IS NOT NULL) "
        "EXECUTE PROCEDURE rotator_audit_head_follows()",
    ),
}
#: a row when the trigger is there and fires (a journal restored from a dump of its tables alone
#: lacks it; PostgreSQL can disable it: ALTER TABLE events DISABLE TRIGGER)
HEAD_TRIGGER_EXISTS = {
    "sqlite": "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = 'audit_head_follows'",
    "postgresql": "SELECT 1 FROM pg_trigger WHERE tgname = 'audit_head_follows' AND tgrelid = 'events'::regclass "
                  "AND tgenabled IN ('O', 'A')",
}


def head_behind(cur: Cursor) -> tuple[int, int] | None:
    """(head seq, newest event's seq) when the head row is behind the newest linked event: events
    were written without moving it (its trigger missing or disabled), or the head row was edited
    back. The next link would collide with an event's sequence number."""
    row = cur.execute("SELECT seq, (SELECT MAX(seq) FROM events) FROM audit_head WHERE chain = ?", (CHAIN,)).fetchone()
    if row is None or row[1] is None or int(row[1]) <= int(row[0]):
        return None
    return int(row[0]), int(row[1])


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    @property
    def rowcount(self) -> int: ...


_SHA256: Callable[[bytes], Any] | None = None


def _sha256(data: bytes) -> str:
    global _SHA256
    if _SHA256 is None:  # imported by the first writer: a reader (`rotator status`) does not load OpenSSL
        from hashlib import sha256

        _SHA256 = sha256  # not imported again at each of the six links a rotation writes (~1 us each)
    return str(_SHA256(data).hexdigest())


@functools.cache
def instance_name() -> str:
    """The instance writing an event: $ROTATOR_INSTANCE (e.g. a pod name) or the host name, read once
    per process (it names the process; each event names it, and a lookup of a variable that is not
    set raises and catches a KeyError inside os.environ: ~9% of a rotation's Python, py-spy)."""
    return os.environ.get("ROTATOR_INSTANCE") or host_name()


@functools.cache
def host_name() -> str:
    """This host's name, asked once per process: it is written with every event, inside the
    journal's write transaction, and each gethostname() is a system call."""
    import socket  # only a writer names itself: a reader (`rotator status`) does not import socket

    return socket.gethostname()


_SCALARS = (str, int, float, bool, type(None))
#: json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str), with one
#: encoder for every event instead of a new one per call
_dump_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str).encode


def canonical(event: Mapping[str, Any], detail: Mapping[str, Any] | None = None) -> str:
    """The event's canonical JSON: sorted keys, no spaces, times as the journal's UTC text.

    ``detail``: the mapping ``event["detail"]`` (JSON text) was made from, used instead of parsing
    that text again when it is flat (text keys, scalar values): its JSON is then the same as the
    text's. Nested values go through the text, as a verifier reads them (an integer key of a
    nested mapping, say, sorts differently once it is text)."""
    if detail is not None and is_flat(detail):
        value: Mapping[str, Any] = detail
    else:
        text = event["detail"]
        value = json.loads(text) if isinstance(text, str) else dict(text)
    return canonical_with(event, _dump_canonical(value), value)


def is_flat(detail: Mapping[str, Any]) -> bool:
    """Text keys and scalar values only: its canonical JSON, parsed and dumped again, is the same text."""
    return all(type(k) is str and type(v) in _SCALARS for k, v in detail.items())


_quote = json.encoder.encode_basestring_ascii  # the C quoting _dump_canonical uses


def canonical_with(event: Mapping[str, Any], detail_json: str, detail: Any = None) -> str:
    """:func:`canonical` of ``event`` whose detail's canonical JSON is ``detail_json`` (dumped from
    ``detail``, when the caller has it: an integer key of a nested mapping sorts otherwise once it is text).

    The fields written by rotator (text, a text or null run id, an integer seq) are put together in
    sorted key order directly: the same text as dumping them (a test compares the two), without the
    encoder's dict walk and sort at every event. Anything else goes through the encoder."""
    at, instance, policy, result, run_id, seq, step = (
        event["at"], event["instance"], event["policy"], event["result"], event["run_id"], event["seq"], event["step"])
    if (type(seq) is int and type(at) is str and type(instance) is str and type(policy) is str
            and type(result) is str and type(step) is str and (run_id is None or type(run_id) is str)):
        return (f'{{"at":{_quote(at)},"detail":{detail_json},"instance":{_quote(instance)},'
                f'"policy":{_quote(policy)},"result":{_quote(result)},'
                f'"run_id":{"null" if run_id is None else _quote(run_id)},"seq":{seq},"step":{_quote(step)}}}')
    fields = {"seq": seq, "at": at, "policy": policy, "run_id": run_id, "step": step, "result": result,
              "instance": instance, "detail": json.loads(detail_json) if detail is None else detail}
    return _dump_canonical(fields)


def link(prev_hash: str, event: Mapping[str, Any], detail: Mapping[str, Any] | None = None, *,
         detail_json: str | None = None) -> str:
    """The link's hash. ``detail_json``: what :func:`detail_text` gave for a flat detail (then
    ``detail`` is not needed)."""
    text = canonical(event, detail) if detail_json is None else canonical_with(event, detail_json)
    return _sha256(f"{prev_hash}\n{text}".encode())


def detail_text(detail: Mapping[str, Any]) -> tuple[str, str | None]:
    """What the journal stores as an event's detail (its canonical JSON, sorted and compact), and the
    same text again when :func:`canonical_with` may take it as it is (a flat detail), else None."""
    if is_flat(detail):
        text = _dump_flat(detail)
        return text, text
    return _dump_canonical(detail), None


#: JSON for rotator's own scalar detail values; a float goes through the encoder (its repr rules)
_FLAT_JSON: dict[type, Callable[[Any], str]] = {
    str: _quote, int: str, bool: lambda v: "true" if v else "false", type(None): lambda _v: "null"}


def _dump_flat(detail: Mapping[str, Any]) -> str:
    """_dump_canonical of a flat detail (text keys; text, integer, boolean or null values): the same
    text without the encoder's dict walk (a test compares the two). Anything else: the encoder."""
    try:
        return "{" + ",".join(f"{_quote(k)}:{_FLAT_JSON[type(v)](v)}" for k, v in sorted(detail.items())) + "}"
    except KeyError:  # a float (or a subclass of a scalar): the encoder's own rules
        return _dump_canonical(detail)


def append_event(cur: Cursor, lock_head: str, event: dict[str, Any]) -> None:
    """Inside the caller's write transaction: take the chain head (locked) and insert ``event`` as the
    next link (which moves the head: :data:`HEAD_TRIGGER_MIGRATION`). ``event`` holds at (text),
    policy, run_id, step, result, detail (JSON text)."""
    insert_link(cur, read_head(cur, lock_head), event)


def read_head(cur: Cursor, lock_head: str) -> tuple[int, str]:
    """The chain head (seq, hash), locked until the transaction ends (``lock_head``: the backend's
    row-lock suffix; SQLite's ``BEGIN IMMEDIATE`` already holds the database's write lock)."""
    row = cur.execute(f"SELECT seq, hash FROM audit_head WHERE chain = ?{lock_head}", (CHAIN,)).fetchone()
    return int(row[0]), str(row[1])


_INSERT_LINK = "INSERT INTO events (seq, at, policy, run_id, step, result, detail, instance, prev_hash, hash) "


def _link_row(cur: Cursor, head: tuple[int, str], event: dict[str, Any], detail: Mapping[str, Any] | None,
              detail_json: str | None) -> tuple[Any, ...]:  # fmt: skip
    seq, prev = head[0] + 1, head[1]
    if seq == 1:
        event, detail, detail_json = _with_unlinked_record(cur, event)
    event = {**event, "seq": seq, "instance": event.get("instance") or instance_name()}
    return (seq, event["at"], event["policy"], event["run_id"], event["step"], event["result"], event["detail"],
            event["instance"], prev, link(prev, event, detail, detail_json=detail_json))  # fmt: skip


def insert_link(cur: Cursor, head: tuple[int, str], event: dict[str, Any],
                detail: Mapping[str, Any] | None = None, *, detail_json: str | None = None) -> tuple[int, str]:
    """Insert ``event`` as the link after ``head``; returns the new head (seq, hash), to which the
    database moved the head row (:data:`HEAD_TRIGGER_MIGRATION`). ``detail``: what ``event["detail"]``
    was dumped from (:func:`canonical`); ``detail_json``: see :func:`link`."""
    row = _link_row(cur, head, event, detail, detail_json)
    cur.execute(_INSERT_LINK + "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
    return row[0], row[-1]


def insert_link_if_head(cur: Cursor, head: tuple[int, str], event: dict[str, Any],
                        detail: Mapping[str, Any] | None = None, *,
                        detail_json: str | None = None) -> tuple[int, str] | None:
    """:func:`insert_link` on condition that the head row is still ``head``, checked inside the INSERT
    (no read of its own); None, and nothing inserted, when it is not (the caller reads the head and
    links to that). Only for a transaction that holds the whole database from its first statement
    (SQLite's ``BEGIN IMMEDIATE``): then the head cannot move between this check and the commit."""
    row = _link_row(cur, head, event, detail, detail_json)
    cur.execute(
        _INSERT_LINK + "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ? "
        "WHERE EXISTS (SELECT 1 FROM audit_head WHERE chain = ? AND seq = ? AND hash = ?)",
        (*row, CHAIN, head[0], head[1]),
    )
    return (row[0], row[-1]) if cur.rowcount == 1 else None


def _with_unlinked_record(cur: Cursor, event: dict[str, Any]) -> tuple[dict[str, Any], None, str | None]:
    """The chain's first link ``event`` with the record of the events without a link in its detail
    (:data:`UNLINKED_COUNT`: the migration's count, and the newest one's time), and that detail's
    JSON for :func:`link`. A journal created with the chain records 0, so any such row in it is an
    insertion."""
    detail = json.loads(event["detail"])
    if not isinstance(detail, dict):  # not what rotator writes: linked as it is
        return event, None, None
    row = cur.execute("SELECT unchained, (SELECT MAX(at) FROM events WHERE seq IS NULL) FROM audit_head "
                      "WHERE chain = ?", (CHAIN,)).fetchone()  # fmt: skip
    count = int(row[0]) if row is not None else 0
    # setdefault: a prune's event, the first link of a journal that held only such rows, has its own
    detail.setdefault(UNLINKED_COUNT, count)
    detail.setdefault(UNLINKED_NEWEST, str(row[1]) if count and row[1] is not None else None)
    text, flat = detail_text(detail)
    return {**event, "detail": text}, None, flat


EVENT_COLUMNS = ("seq", "at", "policy", "run_id", "step", "result", "detail", "instance", "prev_hash", "hash")


@dataclass(frozen=True)
class Checkpoint:
    """What pruning left: the last pruned link, and a summary of the pruned events."""

    seq: int
    hash: str
    at: str
    detail: dict[str, Any]


@dataclass
class ChainReport:
    ok: bool
    checked: int
    head_seq: int
    head_hash: str
    #: where verification started (0: the start; else the last pruned link's seq)
    start_seq: int
    problem: str | None = None
    #: the first broken link: seq, time, what differs
    broken: dict[str, Any] = field(default_factory=dict)
    #: the head link's time (None: no link yet, or the chain is broken)
    head_at: str | None = None
    #: events from before the chain began (an upgraded journal's): no link, only their count is checked
    unchained: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "checked": self.checked, "head_seq": self.head_seq, "head_hash": self.head_hash,
            "head_at": self.head_at, "start_seq": self.start_seq, "problem": self.problem, "broken": self.broken,
            "unchained": self.unchained,
        }  # fmt: skip

    def kept_link(self) -> str:
        """The head as ``rotator audit verify --expect`` takes it: ``SEQ:HASH@TIME`` (``SEQ:HASH``
        without a link). With its time, a later check knows that no prune of rotator's may delete it yet."""
        return f"{self.head_seq}:{self.head_hash}" + (f"@{self.head_at}" if self.head_at else "")

    def text(self) -> str:
        # one_line: the problem quotes fields of the very rows found edited, whose text an attacker
        # chose (a carriage return and an escape sequence could show "OK" over the BROKEN line)
        if self.ok:
            since = f" after checkpoint at seq {self.start_seq}" if self.start_seq else ""
            # (an auditor must not read the linked count as the whole history of an upgraded journal)
            before = (f"; {self.unchained} earlier events from before the chain began are not linked (only "
                      "their count is checked)") if self.unchained else ""
            return f"audit chain OK: {self.checked} events{since}, head {one_line(self.kept_link())}{before}"
        return f"audit chain BROKEN: {one_line(str(self.problem))}"


def _q(value: Any) -> str:
    """A journal field quoted in a problem: on one line, its control characters written out."""
    return one_line(str(value))


def verify_rows(
    rows: Iterable[Mapping[str, Any]], head: tuple[int, str, int], unchained: int, checkpoint: Checkpoint | None
) -> ChainReport:
    """Check ``rows`` (chained events ordered by seq) against the head (seq, hash, unchained count at
    migration), the number of rows without a link, and the latest pruning checkpoint."""
    head_seq, head_hash, expected_unchained = head
    start_seq, prev = (checkpoint.seq, checkpoint.hash) if checkpoint else (0, GENESIS)
    report = ChainReport(ok=True, checked=0, head_seq=head_seq, head_hash=head_hash, start_seq=start_seq)

    def broken(row: Mapping[str, Any] | None, problem: str, **what: Any) -> ChainReport:
        report.ok = False
        report.problem = problem
        report.broken = {"seq": row["seq"], "at": row["at"], "policy": row["policy"], "step": row["step"],
                         **what} if row is not None else dict(what)  # fmt: skip
        return report

    if checkpoint is not None and checkpoint.detail.get("last_pruned_hash") != checkpoint.hash:
        return broken(None, f"checkpoint at seq {checkpoint.seq} was altered: its recorded last link differs",
                      checkpoint_seq=checkpoint.seq)  # fmt: skip
    if unchained > expected_unchained:
        return broken(None, f"{unchained - expected_unchained} event(s) without a chain link were inserted "
                      "(rows with no seq/hash)", unchained=unchained)  # fmt: skip
    if unchained < expected_unchained:  # only prune deletes them, and it counts them off the head
        return broken(None, f"{expected_unchained - unchained} event(s) from before the chain (no seq/hash) were "
                      "deleted", unchained=unchained)  # fmt: skip
    report.unchained = unchained
    walk = _walk(rows, start_seq, prev)
    report.checked = walk.checked
    if walk.problem is not None:
        return broken(walk.row, walk.problem, **walk.what)
    last_seq, prev = start_seq + walk.checked, walk.last_hash
    if last_seq != head_seq or prev != head_hash:
        last = walk.last_row
        if last_seq < head_seq:
            return broken(last, f"the chain ends at seq {last_seq} but its head is seq {head_seq}: the newest "
                          f"{head_seq - last_seq} event(s) were removed (truncated head)",
                          last_seq=last_seq)  # fmt: skip
        return broken(last, f"the last event (seq {last_seq}) does not match the chain head (seq {head_seq}): the "
                      "head row or the newest events were altered", last_seq=last_seq)  # fmt: skip
    report.head_at = None if walk.last_row is None else str(walk.last_row["at"])
    return report


@dataclass
class _Walk:
    """How far a run of links checked out: the count, the last link's hash, and the first break."""

    checked: int
    last_hash: str
    problem: str | None = None
    row: Mapping[str, Any] | None = None
    what: dict[str, Any] = field(default_factory=dict)
    #: the last row checked out (the rows may be a stream: nothing else keeps it)
    last_row: Mapping[str, Any] | None = None


def _walk(rows: Iterable[Mapping[str, Any]], start_seq: int, prev: str) -> _Walk:
    """Check that ``rows`` (ordered by seq) are the links seq ``start_seq + 1``, ``+ 2``, ... after the
    link ``prev``, each unedited; stop at the first that is not."""
    walk = _Walk(0, prev)
    expected_seq = start_seq + 1
    for row in rows:
        try:
            seq = int(row["seq"])
            digest = link(walk.last_hash, row)
        except (ValueError, TypeError, AttributeError):
            # Not what rotator writes (a sequence number that is not a number, a detail that is not a
            # JSON object): an edit, reported where it is instead of stopping the verifier.
            walk.problem = (f"event seq {_q(repr(row['seq']))} at {_q(row['at'])} was edited: its sequence number "
                            "or detail is not what rotator writes")
            walk.row, walk.what = row, {"expected_seq": expected_seq}
            return walk
        if seq <= start_seq:
            walk.problem = (f"event seq {seq} at {_q(row['at'])} lies before the pruning checkpoint (seq "
                            f"{start_seq}): inserted after pruning")
            walk.row, walk.what = row, {"expected_seq": expected_seq}
            return walk
        if seq != expected_seq:
            walk.problem = (f"event(s) seq {expected_seq}..{seq - 1} are missing before event seq {seq} at "
                            f"{_q(row['at'])} (deleted)")
            walk.row, walk.what = row, {"expected_seq": expected_seq}
            return walk
        if row["prev_hash"] != walk.last_hash:
            walk.problem = (f"event seq {seq} at {_q(row['at'])} does not follow the previous link (reordered, "
                            "inserted or the previous event was replaced)")
            walk.row, walk.what = row, {"expected_prev_hash": walk.last_hash, "found_prev_hash": row["prev_hash"]}
            return walk
        if row["hash"] != digest:
            walk.problem = (f"event seq {seq} at {_q(row['at'])} ({_q(row['policy'])} {_q(row['step'])} "
                            f"{_q(row['result'])}) was edited: its content no longer matches its hash")
            walk.row, walk.what = row, {"expected_hash": digest, "found_hash": row["hash"]}
            return walk
        walk.last_hash = digest
        walk.last_row = row
        expected_seq += 1
        walk.checked += 1
    return walk


class _JournalLike(Protocol):
    def audit_transaction(self, write: bool = True) -> AbstractContextManager[tuple[Any, str]]: ...


def verify(journal: _JournalLike) -> ChainReport:
    """Check the journal's whole chain (from its latest pruning checkpoint)."""
    with journal.audit_transaction(write=False) as (cur, _lock):
        return _verify(cur)


def tables_missing(missing: Sequence[str]) -> ChainReport:
    """The chain's report for a journal that lacks the ``missing`` tables of rotator's: broken.
    rotator creates them and never drops one, so one dropped is the journal altered outside it."""
    tables = f"{', '.join(missing)} table{'s' if len(missing) > 1 else ''}"
    problem = (f"the journal has no {tables} (rotator never drops one: it was dropped outside rotator), so none "
               "of its history is evidence; compare the journal with a backup")
    return ChainReport(ok=False, checked=0, head_seq=0, head_hash="", start_seq=0, problem=problem,
                       broken={"missing_tables": list(missing)})


@dataclass(frozen=True)
class KeptLink:
    """A link kept from an earlier verify or report (its head): sequence number, hash, and the link's
    time when it was kept with it (``SEQ:HASH@TIME``, as :meth:`ChainReport.kept_link` writes it)."""

    seq: int
    hash: str
    at: datetime | None = None


#: how far the clock of the host that pruned may have run ahead of the verifier's
PRUNE_CLOCK_SLACK = timedelta(hours=1)


def check_kept_links(journal: _JournalLike, report: ChainReport, kept: Sequence[KeptLink], keep_history: timedelta,
                     now: datetime) -> tuple[list[str], list[int]]:  # fmt: skip
    """Check links kept from an earlier report or verify against the journal: a later, honest chain
    still holds each at its sequence number. Catches what a walk of the chain alone cannot: the
    newest events deleted and the head row rewound, a journal restored from an older copy, or a chain
    rewritten with every hash recomputed. Returns (problems, the sequence numbers that cannot be
    checked because a prune of rotator's deleted them).

    A kept link that is gone from the events counts as pruned only when a prune that kept
    ``keep_history`` (the policy file's) could have deleted it by ``now``; otherwise it is a problem,
    for a chain rewritten and then pruned up to its head would hide the rewrite
    (:func:`_not_pruned_by_rotator`). That holds for a link a checkpoint records too: any prune
    writes one at the last link it deletes, so the checkpoint's hash only shows a rewrite (when it
    differs), never that the link was kept."""
    problems: list[str] = []
    pruned: list[int] = []
    with journal.audit_transaction(write=False) as (cur, _lock):
        prunes = _prune_records(cur)
        for kept_link in kept:
            found = _kept_link_check(cur, report, kept_link, prunes, keep_history, now)
            if found is _Kept.PRUNED:
                pruned.append(kept_link.seq)
            elif isinstance(found, str):
                problems.append(found)
    return problems, pruned


class _Kept(Enum):
    """What became of a kept link, when nothing is wrong with it."""

    HELD = "held"
    #: a prune of rotator's deleted it: it cannot be checked
    PRUNED = "pruned"


def _kept_link_check(cur: Cursor, report: ChainReport, kept: KeptLink, prunes: Mapping[int, tuple[str, str]],
                     keep_history: timedelta, now: datetime) -> _Kept | str:  # fmt: skip
    """Whether the chain holds the kept link ``kept``, or a prune of rotator's deleted it, or what is
    wrong with it (the problem's text)."""
    seq, digest = kept.seq, kept.hash
    if seq > report.head_seq:
        return (f"link {seq} is beyond the chain's head (seq {report.head_seq}): events since were deleted and the "
                "head rewound, or the journal was restored from an older copy")
    if seq == 0:  # the chain's start: its hash is fixed, and no prune deletes it
        if digest != GENESIS:
            return (f"link 0 is the chain's start, whose hash is always {GENESIS[:16]}... (64 zeros), not the kept "
                    f"{digest[:16]}...: this is no head `rotator audit verify` printed")
        return _Kept.HELD
    row = cur.execute("SELECT hash FROM events WHERE seq = ?", (seq,)).fetchone()
    if row is not None:
        return _Kept.HELD if str(row[0]) == digest else _rewritten(seq, str(row[0]), digest, "")
    # Deleted. A checkpoint at its seq records its hash, but every prune writes one at the last link it
    # deletes, whatever its cutoff: the hash shows a rewrite, never that the link was kept.
    checkpoint = cur.execute("SELECT hash FROM audit_checkpoints WHERE seq = ?", (seq,)).fetchone()
    if checkpoint is not None and str(checkpoint[0]) != digest:
        return _rewritten(seq, str(checkpoint[0]), digest, " (as the pruning checkpoint at its seq records it)")
    why = (f"it lies after the pruning checkpoint (seq {report.start_seq})" if seq > report.start_seq
           else _not_pruned_by_rotator(cur, kept, prunes, keep_history, now))
    if why is None:
        return _Kept.PRUNED
    gone = "is not in the journal" if checkpoint is None else \
        "is not in the journal (a pruning checkpoint records its hash, as every prune does its last link's)"
    return (f"link {seq} {gone}, and no prune of rotator's deleted it: {why}; the chain may have been rewritten "
            "and then pruned to hide it")


def _rewritten(seq: int, found: str, kept: str, where: str) -> str:
    return (f"link {seq} has hash {_q(found[:16])}...{where}, not the kept {kept[:16]}...: the chain was rewritten "
            "up to there")


def _prune_records(cur: Cursor) -> dict[int, tuple[str, str]]:
    """The kept chained ``prune`` events: the last link each pruned -> (the prune's time, its cutoff)."""
    found: dict[int, tuple[str, str]] = {}
    for at, text in cur.execute("SELECT at, detail FROM events WHERE policy = ? AND step = 'prune' "
                                "AND seq IS NOT NULL", (JOURNAL_POLICY,)).fetchall():  # fmt: skip
        detail = _detail_of({"detail": text})
        if isinstance(detail.get("last_pruned_seq"), int) and isinstance(detail.get("cutoff"), str):
            found[detail["last_pruned_seq"]] = (str(at), detail["cutoff"])
    return found


def _not_pruned_by_rotator(cur: Cursor, kept: KeptLink, prunes: Mapping[int, tuple[str, str]],
                           keep_history: timedelta, now: datetime) -> str | None:  # fmt: skip
    """Why the missing link ``kept`` cannot have been deleted by a prune of rotator's that kept
    ``keep_history``, or None when it can.

    A prune deletes only events older than its cutoff, which lies ``keep_history`` before its own
    time, so before ``now - keep_history``. What proves it is the link's own time, kept with it: the
    auditor's, which no one with write access to the journal can change. Without it, the journal's
    records stand in, which a rewriter can forge along with every event's time: the history the
    checkpoint of the link's batch summarises (up to its ``to``) must be that old, and the prune that
    wrote it (its chained event, else the time the checkpoint's own summary records) must have kept
    ``keep_history``."""
    newest_prunable = now - keep_history + PRUNE_CLOCK_SLACK
    if kept.at is not None and kept.at >= newest_prunable:
        return (f"it was kept with its time {rfc3339_micro(kept.at)}, and keep_history ({_duration(keep_history)}) "
                f"keeps every event since {rfc3339_micro(now - keep_history)}")
    row = cur.execute("SELECT seq, detail FROM audit_checkpoints WHERE seq >= ? ORDER BY seq LIMIT 1",
                      (kept.seq,)).fetchone()  # fmt: skip
    if row is None:
        return "no pruning checkpoint covers it"
    detail = _detail_of({"detail": row[1]})
    to = detail.get("to")
    try:
        last_pruned = _parse(str(to))
    except ValueError:
        return f"the checkpoint at seq {row[0]} records no time for the history it pruned"
    if last_pruned >= newest_prunable:
        return (f"the prune that deleted it (checkpoint at seq {row[0]}) deleted history up to {_q(to)}, which "
                f"keep_history ({_duration(keep_history)}) keeps until {rfc3339_micro(last_pruned + keep_history)}")
    own_at = detail.get("at")
    at, cutoff = prunes.get(int(row[0])) or ((str(own_at), str(to)) if isinstance(own_at, str) else (None, None))
    if at is None or cutoff is None:  # a checkpoint of an earlier version, whose prune event a later prune deleted
        return None
    try:
        kept_for = min(_parse(at), now + PRUNE_CLOCK_SLACK) - _parse(cutoff)
    except ValueError:
        return f"the prune that wrote the checkpoint at seq {row[0]} records times rotator does not write"
    if kept_for >= keep_history:
        return None
    kept_text = _duration(max(kept_for, timedelta(0)))
    return (f"the prune at {_q(at)} kept only the history from {_q(cutoff)} on ({kept_text}), less than "
            f"keep_history ({_duration(keep_history)})")


def _duration(value: timedelta) -> str:
    from rotator.config.schedule import format_duration  # only a message needs it

    return format_duration(value)


#: rows per page of a verification: a year of events at 1,000 policies is millions of rows, which
#: the verifier (the daemon's daily prune, `audit verify`, `report`) must not hold at once
VERIFY_PAGE = 5000


def _pages(cur: Cursor, prunes: list[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    """The chained events ordered by seq, read a page at a time (one snapshot: the caller's read
    transaction); the ``prune`` events are kept in ``prunes`` on the way."""
    after: Any = None
    while True:
        rows = cur.execute(
            f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE seq IS NOT NULL"
            + (" AND seq > ?" if after is not None else "") + f" ORDER BY seq LIMIT {VERIFY_PAGE}",
            (after,) if after is not None else (),
        ).fetchall()
        for r in rows:
            row = dict(zip(EVENT_COLUMNS, r, strict=True))
            if row["step"] == "prune":
                prunes.append(row)
            yield row
        if len(rows) < VERIFY_PAGE:
            return
        after = rows[-1][0]


#: how much later than the chain's first link an event from before the upgrade may be dated: clocks
#: that ran fast, then were corrected at the upgrade's restart, or replicas' clocks that differed
UPGRADE_CLOCK_SLACK = timedelta(days=1)


def first_link_at(journal: _JournalLike) -> str | None:
    """The time of the first linked event kept (None: none yet): events before it carry no link."""
    with journal.audit_transaction(write=False) as (cur, _lock):
        return _first_link_at(cur)


def _first_link_at(cur: Cursor) -> str | None:
    row = cur.execute("SELECT at FROM events WHERE seq IS NOT NULL ORDER BY seq LIMIT 1").fetchone()
    return None if row is None else str(row[0])


def began_by(first_link: str | None, checkpoints_to: str | None) -> str | None:
    """When the chain began at the latest: its first link kept, or, once a prune deleted links, the
    last one it deleted (``checkpoints_to``: a checkpoint's ``to``), whichever is earlier. A prune
    moves the first kept link forward, past a quiet stretch with no event at all; from the last
    pruned link on, every event carries a link (a prune deletes every unlinked row older than its
    cutoff too). None: no link yet, kept or pruned."""
    known = [t for t in (first_link, checkpoints_to) if t]
    return min(known) if known else None


def _chain_began(cur: Cursor) -> str | None:
    """The latest time an event without a link may carry (:func:`began_by`, by the index on seq and
    the latest checkpoint, plus :data:`UPGRADE_CLOCK_SLACK`); None: no linked event yet."""
    try:
        latest = latest_checkpoint(cur)
    except (ValueError, TypeError):  # an altered checkpoint: verification names it
        latest = None
    first = began_by(_first_link_at(cur), str(latest.detail.get("to") or "") if latest is not None else None)
    if first is None:
        return None
    try:
        return rfc3339_micro(_parse(first) + UPGRADE_CLOCK_SLACK)
    except ValueError:  # an edited time: the walk names that link
        return None


@dataclass(frozen=True)
class _Unlinked:
    """The chain's record of the events without a link (:data:`UNLINKED_COUNT`) and the link holding it."""

    seq: int
    count: int
    newest: str | None


def _unlinked_record(cur: Cursor, *, check: bool = True) -> tuple[_Unlinked | None, str | None]:
    """The chain's record of the events without a link, and a problem (else None) when the records
    contradict each other (``check``; else only the newest record is read).

    The record is the newest kept `prune` event's, or, with none kept, the first link's. None when
    that event has none: a chain begun by an earlier version of rotator, not pruned since (or pruned
    by an earlier version after this one: the head row's count is the one kept up to date again).
    Those journals are held to the head row's count and to the chain's start plus
    :data:`UPGRADE_CLOCK_SLACK`, as before. The records, in chain order, never grow: only a prune
    deletes such rows, and nothing adds any."""
    sql = "SELECT seq, detail FROM events WHERE policy = ? AND step = 'prune' AND seq IS NOT NULL ORDER BY seq"
    rows = cur.execute(sql if check else sql + " DESC LIMIT 1", (JOURNAL_POLICY,)).fetchall()
    if not rows or check:
        first = cur.execute("SELECT seq, detail FROM events WHERE seq = 1").fetchone()
        rows = [*([first] if first is not None else []), *rows]
    records: dict[int, _Unlinked | None] = {}
    for seq, text in rows:
        if type(seq) is not int:  # not rotator's: the walk names it
            continue
        detail = _detail_of({"detail": text})
        if UNLINKED_COUNT not in detail:
            records[seq] = None
            continue
        count, newest = detail[UNLINKED_COUNT], detail.get(UNLINKED_NEWEST)
        if type(count) is not int or count < 0 or not (newest is None or isinstance(newest, str)):
            return None, (f"event seq {seq} records the events without a chain link as {_q(count)} (newest "
                          f"{_q(newest)}), which is not what rotator writes")
        records[seq] = _Unlinked(seq, count, newest)
    known = [record for seq in sorted(records) if (record := records[seq]) is not None]
    for before, after in itertools.pairwise(known):
        if after.count > before.count or (after.newest is not None
                                          and (before.newest is None or after.newest > before.newest)):
            return None, (f"event seq {after.seq} records {after.count} event(s) without a chain link (newest "
                          f"{_q(after.newest)}), more or newer than the {before.count} (newest {_q(before.newest)}) "
                          f"event seq {before.seq} records: only a prune deletes such events and none adds any, so "
                          "that prune event was forged")
    return (records[max(records)] if records else None), None


def unlinked_until(journal: _JournalLike) -> str | None:
    """The latest time an event without a link may carry ("" when the chain records none at all);
    None: no bound (no link yet). A row without a link dated later is an insertion, no evidence."""
    with journal.audit_transaction(write=False) as (cur, _lock):
        return _unlinked_until(cur)


def unlinked_until_in(cur: Cursor) -> str | None:
    """:func:`unlinked_until` in a transaction the caller holds (the report reads one snapshot)."""
    return _unlinked_until(cur)


def _unlinked_until(cur: Cursor) -> str | None:
    record, _problem = _unlinked_record(cur, check=False)
    if record is not None:
        return record.newest or ""
    return _chain_began(cur)


def is_journal_time(text: Any) -> bool:
    """Whether ``text`` is a time as the journal writes it (``ts()``: fixed-width UTC text ending in
    ``Z``), the only kind an event without a link (from before the chain) can carry."""
    if not isinstance(text, str) or len(text) != 27 or text[-1] != "Z":
        return False
    try:
        return rfc3339_micro(_parse(text)) == text
    except ValueError:
        return False


def _unlinked_not_a_time(cur: Cursor) -> tuple[Any, ...] | None:
    """(at, policy, step) of an event without a link whose time is not shaped as a journal time, or
    None. One pass in SQL, no sort (an upgraded journal may hold millions of such events: paging them
    in time order re-sorted them all for every page). What it lets through, a day past its month's
    end, sorts as a time would: the check of its date against the chain's start covers it, and the
    report and :func:`chained_events` use no such row (:func:`is_journal_time`)."""
    row = cur.execute(
        f"SELECT at, policy, step FROM events WHERE seq IS NULL AND (at IS NULL OR {_DIGITS_AS_ZERO} <> ? "
        f"OR {_OUT_OF_RANGE}) LIMIT 1", (_TIME_SHAPE,),
    ).fetchone()
    return None if row is None else tuple(row)


#: ``at`` with every digit written as 0, in SQL both backends run (SQLite has no translate())
_DIGITS_AS_ZERO = functools.reduce(lambda sql, digit: f"replace({sql}, '{digit}', '0')", "123456789", "at")
#: what :func:`_DIGITS_AS_ZERO` makes of every time the journal writes (ts(): fixed-width UTC)
_TIME_SHAPE = "0000-00-00T00:00:00.000000Z"
#: a month, day, hour, minute or second no clock shows (a day past its month's end, a Feb 30, is
#: not caught here: it sorts as the time beside it would)
_OUT_OF_RANGE = ("substr(at, 6, 2) NOT BETWEEN '01' AND '12' OR substr(at, 9, 2) NOT BETWEEN '01' AND '31' "
                 "OR substr(at, 12, 2) > '23' OR substr(at, 15, 2) > '59' OR substr(at, 18, 2) > '59'")


def _broken(problem: str, **what: Any) -> ChainReport:
    return ChainReport(ok=False, checked=0, head_seq=0, head_hash="", start_seq=0, problem=problem, broken=what)


def _named_by(prune: Mapping[str, Any], checkpoint: Checkpoint) -> bool:
    try:
        detail = json.loads(prune["detail"])
    except (ValueError, TypeError):
        return False
    return isinstance(detail, dict) and detail.get("last_pruned_hash") == checkpoint.hash \
        and detail.get("last_pruned_seq") == checkpoint.seq \
        and detail.get("checkpoint_sha256") == _digest(checkpoint.detail)


def _verify(cur: Cursor) -> ChainReport:
    head_row = cur.execute("SELECT seq, hash, unchained FROM audit_head WHERE chain = ?", (CHAIN,)).fetchone()
    try:
        head = (int(head_row[0]), str(head_row[1]), int(head_row[2]))
    except (TypeError, ValueError):
        return _broken("the chain's head row is missing or was edited (audit_head): the newest link cannot be "
                       "checked", head=None if head_row is None else [str(v) for v in head_row])
    unchained = int(cur.execute("SELECT COUNT(*) FROM events WHERE seq IS NULL").fetchone()[0])
    record, contradiction = _unlinked_record(cur)
    if contradiction is not None:
        return _broken(contradiction)
    undated = _unlinked_not_a_time(cur) if unchained else None
    if undated is not None:
        # rotator always wrote ts() text: anything else is no time at all ('' sorts before every time,
        # so the check of its date below would take it for an event from before the chain)
        return _broken(f"an event without a chain link, whose time {_q(repr(str(undated[0])))} is not one rotator "
                       f"writes, was inserted: {_q(undated[2])} of policy {_q(undated[1])}",
                       at=str(undated[0]), policy=str(undated[1]), step=str(undated[2]))  # fmt: skip
    began = _chain_began(cur)
    late = None if began is None else cur.execute(
        "SELECT at, policy, step FROM events WHERE seq IS NULL AND at > ? ORDER BY at LIMIT 1", (began,)).fetchone()
    if late is not None:
        # Events without a link are those written before the upgrade that added the chain; one dated
        # after the chain's first link was inserted since (with the head's count raised to hide it).
        return _broken(f"an event without a chain link, dated after the chain began, was inserted: {_q(late[2])} "
                       f"of policy {_q(late[1])} at {_q(late[0])}", at=str(late[0]), policy=str(late[1]),
                       step=str(late[2]))  # fmt: skip
    if record is not None:
        # The chain recorded the newest event from before it, exactly: a later one (within the day
        # of clock slack above) was inserted since. None recorded: any such row is an insertion.
        late = cur.execute("SELECT at, policy, step FROM events WHERE seq IS NULL AND at > ? ORDER BY at LIMIT 1",
                           (record.newest or "",)).fetchone()  # fmt: skip
        if late is not None:
            what = (f"dated after the newest one the chain recorded ({_q(record.newest)}, at event seq {record.seq})"
                    if record.newest else f"where the chain recorded none (at event seq {record.seq})")
            return _broken(f"an event without a chain link, {what}, was inserted: {_q(late[2])} of policy "
                           f"{_q(late[1])} at {_q(late[0])}", at=str(late[0]), policy=str(late[1]),
                           step=str(late[2]))  # fmt: skip
    try:
        checkpoint = latest_checkpoint(cur)
    except (ValueError, TypeError) as exc:
        return _broken(f"the latest pruning checkpoint was altered: {exc}")
    prunes: list[Mapping[str, Any]] = []
    expected = head if record is None else (head[0], head[1], record.count)
    report = verify_rows(_pages(cur, prunes), expected, unchained, checkpoint)
    if report.ok:
        _check_every_link_walked(cur, report)
    if report.ok and record is not None and head[2] != record.count:
        report.ok, report.head_at = False, None
        report.problem = (f"the chain's head row (audit_head) counts {head[2]} event(s) without a chain link, and "
                          f"the chain recorded {record.count} (at event seq {record.seq}): the head row was edited")
        report.broken = {"unchained": head[2], "recorded": record.count, "recorded_at_seq": record.seq}
    if report.ok and checkpoint is not None:
        # The checkpoint row sits outside the chain: it counts only if a chained `prune` event names it.
        named = next((r for r in prunes if _named_by(r, checkpoint)), None)
        if named is None:
            report.ok, report.head_at = False, None
            report.problem = (f"the pruning checkpoint at seq {checkpoint.seq} is not the one the chain recorded "
                              "(its `prune` event names another last link or summary): checkpoint replaced or "
                              "altered")
            report.broken = {"checkpoint_seq": checkpoint.seq, "checkpoint_hash": checkpoint.hash}
        elif named["at"] != checkpoint.at or checkpoint.detail.get("at", checkpoint.at) != checkpoint.at:
            # a prune writes its checkpoint and its event at one time; the checkpoint's `at` column is
            # covered by no digest but through that event (and, since it records it, its own summary)
            report.ok, report.head_at = False, None
            report.problem = (f"the pruning checkpoint at seq {checkpoint.seq} was altered: its time "
                              f"{_q(checkpoint.at)} is not that of the prune that wrote it ({_q(named['at'])})")
            report.broken = {"checkpoint_seq": checkpoint.seq, "checkpoint_at": checkpoint.at}
        else:
            try:
                _check_earlier_checkpoints(cur, checkpoint, report)
            except (ValueError, TypeError) as exc:  # a detail that is no longer JSON
                report.ok = False
                report.problem = f"a pruning checkpoint before seq {checkpoint.seq} was altered: {exc}"
                report.broken = {"checkpoint_seq": checkpoint.seq}
            if not report.ok:
                report.head_at = None
    return report


def _check_every_link_walked(cur: Cursor, report: ChainReport) -> None:
    """Break ``report`` unless the walk checked every linked row. The walk reads a page after the last
    seq of the one before, so a second row carrying a seq already walked (possible once the unique
    index on seq is dropped) is read by no page when it sits at a page's end, and the report would
    take it as evidence: a forged `revoke_old ok` showing a failed revocation done. (A row before the
    checkpoint, or a second row inside a page, already broke the walk.)"""
    total = int(cur.execute("SELECT COUNT(*) FROM events WHERE seq IS NOT NULL").fetchone()[0])
    if total == report.checked:
        return
    report.ok, report.head_at = False, None
    twin = cur.execute("SELECT seq, COUNT(*) FROM events WHERE seq IS NOT NULL GROUP BY seq HAVING COUNT(*) > 1 "
                       "ORDER BY seq LIMIT 1").fetchone()  # fmt: skip
    if twin is None:  # (not seen: the count and the walk read one snapshot)
        report.problem = (f"the journal holds {total} linked event(s) and the chain links {report.checked}: rows "
                          "were inserted outside rotator")
        report.broken = {"linked_rows": total, "checked": report.checked}
        return
    rows = cur.execute("SELECT at, policy, step, result FROM events WHERE seq = ? ORDER BY at",
                       (twin[0],)).fetchall()  # fmt: skip
    shown = "; ".join(f"{_q(r[1])} {_q(r[2])} {_q(r[3])} at {_q(r[0])}" for r in rows[:5])
    report.problem = (f"{int(twin[1])} events carry seq {_q(twin[0])} ({shown}), which one link only may carry: rows "
                      "were inserted outside rotator, which writes each seq once under the unique index events_seq "
                      f"(dropped or replaced since); {total - report.checked} row(s) in all are not links of the chain")
    report.broken = {"seq": twin[0], "rows": int(twin[1]), "linked_rows": total, "checked": report.checked}


def _check_earlier_checkpoints(cur: Cursor, latest: Checkpoint, report: ChainReport) -> None:
    """Walk back from the latest checkpoint (vouched for by the chain): each names the SHA-256 of the
    one before it, back to the first checkpoint, or to one written before checkpoints named their
    predecessor (nothing to check that one against)."""
    newer = latest
    for older in _checkpoints_before(cur, latest.seq):
        if "previous_checkpoint_sha256" not in newer.detail:
            return
        if (newer.detail["previous_checkpoint_sha256"] != _digest(older.detail)
                or older.detail.get("last_pruned_hash") != older.hash
                or older.detail.get("last_pruned_seq") != older.seq
                or older.detail.get("at", older.at) != older.at):
            report.ok = False
            report.problem = (f"the pruning checkpoint at seq {older.seq} is not the one the checkpoint at seq "
                              f"{newer.seq} names as its predecessor: checkpoint replaced, altered or inserted")
            report.broken = {"checkpoint_seq": older.seq, "checkpoint_hash": older.hash}
            return
        newer = older
    if newer.detail.get("previous_checkpoint_sha256"):
        report.ok = False
        report.problem = (f"the checkpoint at seq {newer.seq} names a predecessor that is not in the journal: "
                          "checkpoint deleted")
        report.broken = {"checkpoint_seq": newer.seq}


def _checkpoints_before(cur: Cursor, seq: int) -> Iterator[Checkpoint]:
    """The checkpoints before ``seq``, newest first, read one by one: a year of daily prunes at 1,000
    policies is ~400 rows of ~130 KB, and psycopg would hold a whole result in memory at once."""
    while True:
        row = cur.execute("SELECT seq, hash, at, detail FROM audit_checkpoints WHERE seq < ? ORDER BY seq DESC "
                          "LIMIT 1", (seq,)).fetchone()  # fmt: skip
        if row is None:
            return
        seq = int(row[0])
        yield _checkpoint(row)


def _checkpoint(row: Sequence[Any]) -> Checkpoint:
    """A checkpoint row; ValueError when it is not what a prune writes (an altered row: the verifier
    reports it as tampering)."""
    try:
        detail = json.loads(row[3])
        seq = int(row[0])
    except (TypeError, ValueError):
        detail, seq = None, None
    if seq is None or not isinstance(detail, dict):
        raise ValueError(f"the checkpoint row at seq {_q(repr(row[0]))} is not what a prune writes (its detail is "
                         "not a JSON object)")
    return Checkpoint(seq, str(row[1]), str(row[2]), detail)


def latest_checkpoint(cur: Cursor) -> Checkpoint | None:
    row = cur.execute("SELECT seq, hash, at, detail FROM audit_checkpoints ORDER BY seq DESC LIMIT 1").fetchone()
    return None if row is None else _checkpoint(row)


def checkpoints(journal: _JournalLike) -> list[Checkpoint]:
    """Every checkpoint, oldest first; ValueError if one was altered (see :func:`_checkpoint`)."""
    with journal.audit_transaction(write=False) as (cur, _lock):
        rows = cur.execute("SELECT seq, hash, at, detail FROM audit_checkpoints ORDER BY seq").fetchall()
    return [_checkpoint(r) for r in rows]


def chained_events(journal: _JournalLike, start: str, end: str) -> list[dict[str, Any]]:
    """Events with ``start <= at < end`` (journal time text), oldest first, detail parsed."""
    with journal.audit_transaction(write=False) as (cur, _lock):
        began = _unlinked_until(cur)
        rows = cur.execute(
            f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE at >= ? AND at < ? "
            "AND (seq IS NOT NULL OR at <= ?) ORDER BY at, seq", (start, end, "9999" if began is None else began)
        ).fetchall()  # an inserted row without a link (verify names it) is not evidence
    # (nor one whose time is not a journal time: verify names it too)
    events = [dict(zip(EVENT_COLUMNS, r, strict=True)) for r in rows]
    events = [e for e in events if e["seq"] is not None or is_journal_time(e["at"])]
    for event in events:
        try:
            detail = json.loads(event["detail"])
        except (ValueError, TypeError):
            detail = None
        # An edited row (verification names it) must not stop the report that shows the chain broken.
        event["detail"] = detail if isinstance(detail, dict) else {"unreadable": True}
    return events


@dataclass(frozen=True)
class PruneResult:
    events: int
    runs: int
    revocations: int
    checkpoint: Checkpoint | None
    #: ``stop`` said so before the last batch: the next prune goes on from ``checkpoint``
    stopped: bool = False

    def text(self) -> str:
        stopped = " (stopped before the end; the next prune goes on from there)" if self.stopped else ""
        if self.checkpoint is None and not (self.events or self.runs or self.revocations):
            return "nothing pruned" + stopped if self.stopped else "nothing older than the retention period"
        where = f"; checkpoint at seq {self.checkpoint.seq}" if self.checkpoint else ""
        return f"pruned {self.events} events, {self.runs} runs, {self.revocations} revocations{where}{stopped}"


FINAL_RUN_STATES = ("done", "failed", "aborted")


#: events deleted per write transaction of a prune. A batch's links are checked before its write
#: transaction, which only reads them again to compare (and deletes them), so a prune of millions
#: of events holds rotations up for a fraction of a second at a time (bench/prune_lock.py)
PRUNE_BATCH = 50_000
#: runs (or revocations) deleted per write transaction of a prune, after its last `prune` event: a
#: few set-based statements that take neither the audit head nor more than a fraction of a second
#: (SQLite's write lock), so a backlog of 100,000s of old runs holds no event write up and stays
#: within any transaction deadline (one run at a time under the head: minutes, cut, nothing pruned)
PRUNE_ROW_BATCH = 4000
#: keys per DELETE statement: their bound parameters stay under SQLite's oldest limit (999), and an OR
#: of them under its expression depth (1,000)
_KEYS_PER_STATEMENT = 400

_FINAL_STATES_SQL = ", ".join(f"'{state}'" for state in FINAL_RUN_STATES)
#: a run an unfinished revocation needs: its scheduling run, and the runs that minted (or
#: bootstrapped) its token, since the revocation rule revokes only a token rotator's own records say
#: it minted (without them the revocation would be refused and the old token left valid). The only
#: reason to keep an old finished run that can arise after a prune found it (a revocation scheduled
#: again), so each DELETE checks it again. (state < 'done' OR state > 'done'): state <> 'done' read
#: through the index on (state, due_at), the few unfinished rows, not every revocation at each DELETE.
_RUN_NEEDED = (
    "(runs.run_id IN (SELECT v.run_id FROM revocations v WHERE v.state < 'done' OR v.state > 'done') "
    "OR EXISTS (SELECT 1 FROM revocations v WHERE v.policy = runs.policy AND v.token_id = runs.new_token_id "
    "AND v.state <> 'done'))"
)
#: a run a person abandoned (Engine.abandon_run: failed, its ``error`` starting with the note's prefix),
#: kept for good as a dismissed revocation is: its row names the candidate that may still be valid
#: where it was minted, and the reason. (SUBSTR, not LIKE: SQLite's LIKE ignores case, PostgreSQL's
#: does not; COALESCE: a NULL error would make the NOT below NULL, and keep every failed run.)
#: revocation_rule.ABANDONED_PREFIX, written out: importing it loads contracts and logging, which the
#: cached `status` path must not (tests/runners/test_cli_startup.py); tests/observe/test_prune_abandoned.py
#: checks the two agree
ABANDONED_PREFIX = "abandoned by hand: "
_ABANDONED_RUN = (f"(runs.state = 'failed' AND SUBSTR(COALESCE(runs.error, ''), 1, {len(ABANDONED_PREFIX)}) "
                  f"= '{ABANDONED_PREFIX}')")
#: a run a prune deletes (one parameter, the cutoff): finished before the cutoff, not its policy's
#: newest successful run (it names the current token; a newer one only ever replaces it), not
#: abandoned by a person, not needed
_PRUNABLE_RUN = (
    f"runs.state IN ({_FINAL_STATES_SQL}) AND COALESCE(runs.finished_at, runs.updated_at) < ? "
    "AND NOT (runs.state IN ('published', 'done') AND runs.published_at IS NOT NULL AND runs.published_at = "
    "(SELECT MAX(o.published_at) FROM runs o WHERE o.policy = runs.policy AND o.state IN ('published', 'done'))) "
    f"AND NOT {_ABANDONED_RUN} AND NOT {_RUN_NEEDED}"
)
#: a done revocation a kept run replaced its token again (one parameter, the cutoff): a token current
#: again after an older store version was restored; the report checks that run's revocation against
#: its row. Can arise after a prune found the row (a rotation meanwhile), so each DELETE checks it again.
_REVOCATION_NEEDED = ("EXISTS (SELECT 1 FROM runs r WHERE r.policy = revocations.policy "
                      "AND r.old_token_id = revocations.token_id AND r.published_at >= ?)")
#: a revocation a prune deletes (two parameters, the cutoff twice): done before the cutoff (a done row
#: stays done: journal._insert_revocation), not needed
_PRUNABLE_REVOCATION = f"revocations.state = 'done' AND revocations.done_at < ? AND NOT {_REVOCATION_NEEDED}"


@dataclass(frozen=True)
class _Rows:
    """One table whose old rows a prune deletes: its key columns, which rows may go (``prunable``, taking
    the cutoff ``cutoffs`` times), and why one found so may have to stay since (``needed``, taking it
    ``needed_cutoffs`` times). The rest of ``prunable`` cannot change once true, and is not checked
    again: SQLite's planner would read a DELETE's rows through an index on it (every done revocation
    through the one on state) instead of the primary key."""

    table: str
    key: tuple[str, ...]
    prunable: str
    cutoffs: int
    needed: str
    needed_cutoffs: int


_RUNS = _Rows("runs", ("run_id",), _PRUNABLE_RUN, 1, _RUN_NEEDED, 0)
_REVOCATIONS = _Rows("revocations", ("policy", "token_id"), _PRUNABLE_REVOCATION, 2, _REVOCATION_NEEDED, 1)


def prune(journal: _JournalLike, cutoff: str, now: str, *, batch: int = PRUNE_BATCH,
          stop: Callable[[], bool] | None = None, row_batch: int = PRUNE_ROW_BATCH) -> PruneResult:  # fmt: skip
    """Delete events, finished runs and done revocations older than ``cutoff`` (journal time text).

    Events go as a prefix of the chain; a checkpoint records the last pruned link and per-policy
    summaries, and a chained ``prune`` event names the checkpoint, so the chain stays verifiable.
    A broken chain is never pruned (that would erase the evidence of tampering): ValueError.
    The newest successful run of each policy is kept (it names the current token), and every run a
    person abandoned (its row names a candidate that may still be valid where it was minted).

    Only the deletions take the journal's write lock, and briefly: the whole chain is verified in a
    read transaction first, and then the prefix goes in batches of at most ``batch`` events. A batch's
    links are checked in a read transaction; its write transaction reads them again, deletes them
    only if they are still exactly what was checked (an edit in between: ValueError, and they stay),
    and writes the batch's checkpoint and ``prune`` event. The last batch's read also finds the old
    runs and revocations, which its ``prune`` event counts (with its cutoff), and which then go
    ``row_batch`` at a time, each batch in a write transaction of its own that does not take the
    chain's head (:data:`PRUNE_ROW_BATCH`). Each batch starts from the latest checkpoint, and a row
    still there is found again, so a prune that failed part-way (or ran beside another) is finished
    by running it again. ``stop`` is asked before each batch (a daemon that stops): True ends the
    prune there. The result counts the runs and revocations this call deleted.
    """
    if batch < 1 or row_batch < 1:
        raise ValueError(f"a prune batch holds at least one event and one row, not {min(batch, row_batch)}")
    if stop is not None and stop():
        return PruneResult(0, 0, 0, None, stopped=True)
    with journal.audit_transaction(write=False) as (cur, _lock):
        state = _verify(cur)
        if not state.ok:
            raise ValueError(f"the audit chain is broken, not pruning: {state.problem}")
        first_kept = cur.execute("SELECT MIN(seq) FROM events WHERE seq IS NOT NULL AND at >= ?",
                                 (cutoff,)).fetchone()[0]  # fmt: skip
        # the events without a link, as verified: each prune event records what it leaves of them
        count, newest = cur.execute("SELECT COUNT(*), MAX(at) FROM events WHERE seq IS NULL").fetchone()
        recorded = _unlinked_record(cur, check=False)[0] is not None
    unlinked = (int(count), None if newest is None else str(newest))
    last_pruned = (int(first_kept) - 1) if first_kept is not None else state.head_seq
    pruned_events, checkpoint = 0, None
    while True:
        if stop is not None and stop():
            return PruneResult(pruned_events, 0, 0, checkpoint, stopped=True)
        with journal.audit_transaction(write=False) as (cur, _lock):
            previous = latest_checkpoint(cur)
            start_seq = previous.seq if previous else 0
            end_seq = min(start_seq + batch, last_pruned)
            rows = _event_rows(cur, start_seq, end_seq) if end_seq > start_seq else []
            last_published, token_since, token_ids = _carried_all(cur, previous) if rows else ({}, {}, {})
            row_dues = _row_dues(cur, _dues_not_chained(rows, previous)) if rows else {}
            final = end_seq >= last_pruned
            # found here, deleted after the write transaction below, which holds the head only briefly
            found = {_RUNS: _prunable_keys(cur, _RUNS, cutoff)} if final else {}
        made = (_checkpoint_for(rows, previous, last_published, end_seq, now, token_since, token_ids, row_dues)
                if end_seq > start_seq else None)
        counts = {"events": 0, "runs": len(found.get(_RUNS, ())), "revocations": 0}
        with journal.audit_transaction() as (cur, lock_head):
            read_head(cur, lock_head)  # first: a prune beside this one waits here, then sees its checkpoint
            if latest_checkpoint(cur) != previous:
                continue  # another prune went on meanwhile: check this batch again from where it stopped
            if made is not None:
                _delete_checked(cur, lock_head, rows, made)
                counts["events"] = len(rows)
            legacy = 0
            if final:
                legacy, left = _prune_unlinked(cur, cutoff, unlinked[0])
                # With the cutoff that lets them go, not after it: the report counts a done revocation
                # older than the latest chained cutoff that is still there as written outside rotator
                # (one set-based statement: what took long under the head was one DELETE per run).
                counts["revocations"] = cur.execute(f"DELETE FROM revocations WHERE {_PRUNABLE_REVOCATION}",
                                                    (cutoff,) * _REVOCATIONS.cutoffs).rowcount
            else:  # (another prune may have deleted some meanwhile: the head row counts them off)
                left = min(unlinked[0], int(cur.execute("SELECT unchained FROM audit_head WHERE chain = ?",
                                                        (CHAIN,)).fetchone()[0]))  # fmt: skip
            # A chain an earlier version began records no count: its first prune records it even when
            # it deletes nothing, so that the daemon's daily prune protects an upgraded journal at once.
            # (An empty journal has nothing to record: its first link will, as every new chain's does.)
            upgraded = final and not recorded and (state.head_seq > 0 or unlinked[0] > 0)
            if made is not None or legacy or upgraded:
                # runs: those this prune found and deletes once this commits, outside the head's lock;
                # revocations: those deleted here. Chained with the cutoff: the report excuses a missing
                # row older than the latest chained cutoff, so none goes before the chain says it may.
                # (A prune cut part-way leaves the rest of the runs to the next, which deletes them, and
                # counts them again if it writes a `prune` event of its own: twice, never left out.)
                detail: dict[str, Any] = {**counts, "cutoff": cutoff, UNLINKED_COUNT: left,
                                          UNLINKED_NEWEST: unlinked[1] if left else None}
                if made is not None:
                    detail.update(last_pruned_seq=made.seq, last_pruned_hash=made.hash,
                                  checkpoint_sha256=_digest(made.detail))
                append_event(cur, lock_head, {
                    "at": now, "policy": JOURNAL_POLICY, "run_id": None, "step": "prune", "result": "ok",
                    "detail": json.dumps(detail, sort_keys=True),
                })  # fmt: skip
        pruned_events += counts["events"]
        checkpoint = made or checkpoint
        if final:
            deleted, stopped = _delete_prunable(journal, found, cutoff, row_batch, stop)
            return PruneResult(pruned_events, deleted[_RUNS], counts["revocations"], checkpoint, stopped=stopped)


def _event_rows(cur: Cursor, start_seq: int, end_seq: int, lock: str = "") -> list[tuple[Any, ...]]:
    return [
        tuple(r) for r in cur.execute(
            f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE seq > ? AND seq <= ? ORDER BY seq{lock}",
            (start_seq, end_seq),
        ).fetchall()
    ]  # fmt: skip


def _checkpoint_for(rows: Sequence[tuple[Any, ...]], previous: Checkpoint | None, last_published: dict[str, str],
                    end_seq: int, now: str, token_since: dict[str, str] | None = None,
                    token_ids: dict[str, str] | None = None,
                    row_dues: Mapping[tuple[str, str], str] | None = None) -> Checkpoint:  # fmt: skip
    """The checkpoint after pruning ``rows`` (the links after ``previous`` up to ``end_seq``), once they
    check out as unedited links of the chain (ValueError if not). ``last_published``: each policy's
    last publish time before them (:func:`_last_published`); ``token_ids``: the id of the token it
    published then, where the checkpoints record it (:func:`_carried_all`); ``row_dues``: the due
    times of the revocations done in them whose due time the chain does not say (:func:`_row_dues`)."""
    start_seq, prev = (previous.seq, previous.hash) if previous else (0, GENESIS)
    events = [dict(zip(EVENT_COLUMNS, r, strict=True)) for r in rows]
    walk = _walk(events, start_seq, prev)
    if walk.problem is None and walk.checked != end_seq - start_seq:
        walk.problem = f"the chain ends at seq {start_seq + walk.checked}, before seq {end_seq}"
    if walk.problem is not None:
        raise _changed(f"from seq {start_seq + 1}", walk.problem)
    detail = _summary(events, last_published, token_since, full=_writes_full_map(previous), token_ids=token_ids,
                      open_before=_open_failed_runs(previous), revoking=_Revoking(_open_revocations(previous),
                                                                                   row_dues or {}))
    # The chain vouches for the latest checkpoint only (its `prune` event); each one vouches for the
    # one before it, so an edited or removed earlier checkpoint shows too (_check_earlier_checkpoints).
    # `at`: the checkpoint row's time, which its digest (in the chained `prune` event) then covers too
    detail.update(last_pruned_seq=end_seq, last_pruned_hash=walk.last_hash, at=now,
                  previous_checkpoint_sha256=_digest(previous.detail) if previous else None)
    return Checkpoint(end_seq, walk.last_hash, now, detail)


def _delete_checked(cur: Cursor, lock: str, rows: Sequence[tuple[Any, ...]], made: Checkpoint) -> None:
    """Inside the write transaction: delete the checked ``rows`` and record ``made``, if the rows are
    still those that were checked and the chain goes on from the last of them. ``lock``: the
    backend's row-lock suffix; PostgreSQL's READ COMMITTED would otherwise let an edit commit
    between this comparison and the DELETE (SQLite's writer holds the whole database already)."""
    start_seq = made.seq - len(rows)
    if _event_rows(cur, start_seq, made.seq, lock) != list(rows):
        raise _changed(f"from seq {start_seq + 1}",
                       f"event(s) seq {start_seq + 1}..{made.seq} were edited after they were checked")
    following = cur.execute("SELECT prev_hash FROM events WHERE seq = ?", (made.seq + 1,)).fetchone()
    if following is not None and following[0] != made.hash:
        raise _changed(f"from seq {start_seq + 1}",
                       f"event seq {made.seq + 1} does not follow the last link to prune (seq {made.seq})")
    cur.execute("INSERT INTO audit_checkpoints (seq, hash, at, detail) VALUES (?, ?, ?, ?)",
                (made.seq, made.hash, made.at, json.dumps(made.detail, sort_keys=True)))  # fmt: skip
    cur.execute("DELETE FROM events WHERE seq IS NOT NULL AND seq > ? AND seq <= ?", (start_seq, made.seq))


def _changed(what: str, problem: str) -> ValueError:
    """A prune's refusal when the chain changed after its verification: the evidence stays."""
    return ValueError(f"the audit chain changed while pruning, not pruning {what}: {problem}")


def _prune_unlinked(cur: Cursor, cutoff: str, verified: int) -> tuple[int, int]:
    """Inside the last write transaction: delete the unchained events older than ``cutoff``; returns
    how many it deleted and how many are left. ``verified``: how many the prune's verification found."""
    # Events from before the chain existed (migration 2) have no link; the head counts them. Deleted
    # first and counted after, both in this transaction, so that a row inserted since the
    # verification (at any moment, PostgreSQL's READ COMMITTED included) makes the sum exceed that
    # count: the transaction then rolls back and the evidence stays. (The head's count may be lower
    # than the verified one, after another prune; it is never higher but by an edit.)
    expected = min(verified, int(cur.execute("SELECT unchained FROM audit_head WHERE chain = ?",
                                             (CHAIN,)).fetchone()[0]))  # fmt: skip
    legacy = cur.execute("DELETE FROM events WHERE seq IS NULL AND at < ?", (cutoff,)).rowcount
    left = int(cur.execute("SELECT COUNT(*) FROM events WHERE seq IS NULL").fetchone()[0])
    if legacy + left > expected:
        raise _changed("the events without a link",
                       f"{legacy + left - expected} event(s) without a chain link were inserted")
    if legacy:
        cur.execute("UPDATE audit_head SET unchained = unchained - ? WHERE chain = ?", (legacy, CHAIN))
    return legacy, left


def _prunable_keys(cur: Cursor, kind: _Rows, cutoff: str) -> list[tuple[str, ...]]:
    """The keys of ``kind``'s rows a prune with ``cutoff`` deletes, in key order: one set-based read."""
    key = ", ".join(kind.key)
    return [tuple(str(v) for v in r) for r in cur.execute(
        f"SELECT {key} FROM {kind.table} WHERE {kind.prunable} ORDER BY {key}", (cutoff,) * kind.cutoffs,
    ).fetchall()]  # fmt: skip


def _delete_prunable(journal: _JournalLike, found: Mapping[_Rows, Sequence[tuple[str, ...]]], cutoff: str,
                     row_batch: int, stop: Callable[[], bool] | None) -> tuple[dict[_Rows, int], bool]:  # fmt: skip
    """Delete the rows ``found`` (:func:`_prunable_keys`), ``row_batch`` per write transaction, none of
    which takes the chain's head: a concurrent event write waits for none of them on PostgreSQL, and
    for one batch at most on SQLite (whose writer holds the database). Returns how many of each went,
    and whether ``stop`` ended it early (the next prune finds the rest again)."""
    deleted = {kind: 0 for kind in found}
    for kind, keys in found.items():
        for start in range(0, len(keys), row_batch):
            if stop is not None and stop():
                return deleted, True
            with journal.audit_transaction() as (cur, _lock):
                deleted[kind] += _delete_rows(cur, kind, keys[start:start + row_batch], cutoff)
    return deleted, False


def _delete_rows(cur: Cursor, kind: _Rows, keys: Sequence[tuple[str, ...]], cutoff: str) -> int:
    """Delete the rows of ``kind`` with these ``keys`` (found prunable with ``cutoff``, in key order)
    unless they are needed since (:attr:`_Rows.needed`); returns how many went."""
    deleted = 0
    for start in range(0, len(keys), _KEYS_PER_STATEMENT):
        match, params = _any_key(kind.key, keys[start:start + _KEYS_PER_STATEMENT])
        deleted += cur.execute(f"DELETE FROM {kind.table} WHERE {match} AND NOT {kind.needed}",
                               (*params, *(cutoff,) * kind.needed_cutoffs)).rowcount  # fmt: skip
    return deleted


def _any_key(key: Sequence[str], keys: Sequence[tuple[str, ...]]) -> tuple[str, list[str]]:
    """SQL matching any of ``keys`` (values of the columns ``key``, in key order), and its parameters,
    which both backends read through the primary key: an IN list of the last column, under an OR of
    the other columns' values (SQLite reads a row value IN (VALUES ...) by scanning the table, and
    PostgreSQL plans an OR of hundreds of terms for milliseconds)."""
    terms, params = [], []
    for prefix, group in itertools.groupby(keys, key=lambda k: k[:-1]):
        last = [k[-1] for k in group]
        terms.append(" AND ".join([*(f"{column} = ?" for column in key[:-1]),
                                   f"{key[-1]} IN ({', '.join('?' * len(last))})"]))  # fmt: skip
        params += [*prefix, *last]
    return "(" + " OR ".join(f"({term})" for term in terms) + ")", params


#: the policy name of the journal's own events (a prune), which belong to no policy
JOURNAL_POLICY = "(journal)"
#: the results of an event that is a failure of its own (a revocation that gave up, an emergency's
#: revocation that failed): each such event counts once, unless it is one of a run's own failure
#: (:data:`RUN_FAILURE_EVENTS`). The checkpoint summary and the report both count by
#: :func:`counts_as_failure`, so a period shows as many failures before a prune as after it.
FAILED_RESULTS = ("failed", "error", "partial")
#: the events (step, result) that say their run failed. A run that fails before publishing writes no
#: `mint` / `verify` failure: the engine discards its candidate, and `revoke_new` / `start` (carrying
#: the error) is the event that says the run failed (a refused mint or verify, a conflict at the first
#: store, a crashed run that recovery discards). Also a discard's revocation that failed, a store
#: write that failed part-way, a bootstrap that failed, a recovery of an interrupted run that failed
#: or closed an interrupted bootstrap as failed, and a person's `recover --abandon` of an open run
#: (closed as failed; not of a published run's tag search). Not `recover` / `aborted`: a run
#: interrupted before it minted, with nothing to undo. A run may write several of them (a discard
#: that every recovery tries again): it is one failure, counted at the first.
RUN_FAILURE_EVENTS = frozenset({
    ("revoke_new", "start"), ("revoke_new", "failed"), ("publish", "partial"), ("bootstrap", "failed"),
    ("recover", "error"), ("recover", "bootstrap_closed"), ("recover", "abandoned"),
})
#: the events (step, result) that say a failed run is failing still: a later try of its discard
#: failed too (`failed_again`: the token it could not revoke was reported already; `search_failed`:
#: the listing of its tag failed). They name their run (:data:`FAILED_RUNS`) but never count: the
#: try's `revoke_new` / `start` came first, and the run counts once, at its first failure event.
RUN_STILL_FAILING_EVENTS = frozenset({("revoke_new", "failed_again"), ("revoke_new", "search_failed")})
#: the events after which a run writes no failure event any more: it closed (done, failed, aborted,
#: abandoned) or published (a `recover` / `abandoned` of its tag search is no failure). A checkpoint
#: stops carrying a failed run on at its closing event (:data:`OPEN_FAILED_RUNS`).
RUN_CLOSED_EVENTS = frozenset({
    ("published", "ok"), ("revoke_new", "ok"), ("bootstrap", "ok"), ("bootstrap", "failed"),
    ("recover", "bootstrap_closed"), ("recover", "aborted"), ("recover", "abandoned"),
})
#: a checkpoint summary's per-policy key: the runs that :data:`RUN_FAILURE_EVENTS` (and
#: :data:`RUN_STILL_FAILING_EVENTS`) in its range say failed, in the order of their first such event
#: there, whether it counted them or a checkpoint before it did (a run whose events lie on both sides
#: of a batch counts once, in the first). The report counts no kept event of a run a summary it shows
#: names, so that a run whose failure events a prune split counts once. Absent: none (or a checkpoint
#: written by an earlier version, which counted the results in :data:`FAILED_RESULTS` only).
FAILED_RUNS = "failed_runs"
#: a checkpoint's detail key: policy -> the failed runs still open at its end, oldest first: those it
#: or a checkpoint before it named (:data:`FAILED_RUNS`) without a closing event since
#: (:data:`RUN_CLOSED_EVENTS`). The next checkpoint counts none of them again, however many ranges
#: (of daily prunes, of batches) lie between their failure events, and ranges holding none of their
#: events. At most :data:`OPEN_FAILED_MAX` a policy (the newest): a policy has one open run at a time
#: but for runs whose closing event was lost (a kill between the close and its event), which go first.
#: Absent: a checkpoint of an earlier version; the next one starts from its summaries' FAILED_RUNS.
OPEN_FAILED_RUNS = "open_failed_runs"
OPEN_FAILED_MAX = 20


def failed_run(row: Mapping[str, Any]) -> str | None:
    """The run an event says failed (:data:`RUN_FAILURE_EVENTS`) or is failing still
    (:data:`RUN_STILL_FAILING_EVENTS`); None for any other event, and for such an event without a run
    id (not what rotator writes: counted on its own)."""
    step, result, run_id = row["step"], row["result"], row.get("run_id")
    if ((step, result) not in RUN_FAILURE_EVENTS and (step, result) not in RUN_STILL_FAILING_EVENTS) or not run_id:
        return None
    if step == "recover" and result == "abandoned" and _detail_of(row).get("tag_search"):
        return None  # a published run's tag search ended by a person: the run did not fail
    return str(run_id)


def counts_as_failure(row: Mapping[str, Any], counted: set[str]) -> bool:
    """Whether an event counts as a failure: the first that says its run failed, or one whose result
    is a failure of its own (:data:`FAILED_RESULTS`). ``counted``: the runs already counted as failed,
    to which the run of an event counted here is added. One rule for the checkpoint summary and the
    report. A :data:`RUN_STILL_FAILING_EVENTS` event never counts (nor marks its run counted: the
    next try's start, in a report's period that began after this try's, counts)."""
    if (row["step"], row["result"]) in RUN_STILL_FAILING_EVENTS:
        return False
    run_id = failed_run(row)
    if run_id is None:
        return row["result"] in FAILED_RESULTS or (row["step"], row["result"]) in RUN_FAILURE_EVENTS
    if run_id in counted:
        return False
    counted.add(run_id)
    return True


def failed_runs(summary: Mapping[str, Any]) -> list[str]:
    """A checkpoint summary's policy entry's :data:`FAILED_RUNS` ([] for one without: none, or an
    earlier version's, or one edited into another shape, which verification reports)."""
    runs = summary.get(FAILED_RUNS)
    return [str(r) for r in runs if isinstance(r, str)] if isinstance(runs, list) else []


def _open_failed_runs(checkpoint: Checkpoint | None) -> dict[str, list[str]]:
    """Policy -> the failed runs still open at ``checkpoint``'s end (:data:`OPEN_FAILED_RUNS`). One
    written before it carried them: the runs its summaries name (:data:`FAILED_RUNS`), all it knew of."""
    if checkpoint is None:
        return {}
    carried = checkpoint.detail.get(OPEN_FAILED_RUNS)
    if isinstance(carried, dict):
        return {str(policy): [str(r) for r in runs if isinstance(r, str)]
                for policy, runs in carried.items() if isinstance(runs, list)}  # fmt: skip
    policies = checkpoint.detail.get("policies")
    entries = policies.items() if isinstance(policies, dict) else ()
    named = {str(policy): failed_runs(entry) for policy, entry in entries if isinstance(entry, dict)}
    return {policy: runs for policy, runs in named.items() if runs}


def _carry_open(still_open: dict[str, list[str]], row: Mapping[str, Any]) -> None:
    """Keep ``still_open`` (policy -> its failed runs not closed yet) as of ``row``: the run it says
    failed joins it, and a run it closes leaves it (both for an event that does both: a bootstrap that
    failed)."""
    policy = str(row["policy"])
    failed = failed_run(row)
    runs = still_open.setdefault(policy, [])
    if failed is not None and failed not in runs:
        runs.append(failed)
    if (row["step"], row["result"]) in RUN_CLOSED_EVENTS and row.get("run_id") and str(row["run_id"]) in runs:
        runs.remove(str(row["run_id"]))
    if not runs:
        del still_open[policy]
#: a checkpoint's detail key: the last publish time of every policy with no event in its range, a
#: full copy of what is carried from checkpoint to checkpoint (a token published before the range
#: and replaced after it). Written by earlier versions in every checkpoint, whose size then grew with
#: the number of policies (~0.5 MB a daily prune at 10,000); now only by the first prune after a
#: checkpoint of a version that carried nothing (:func:`_writes_full_map`). A reader walking back
#: through the checkpoints stops at the first that has it.
LAST_PUBLISHED_ELSEWHERE = "last_published_elsewhere"
#: a checkpoint's detail key, beside it: when the token then current began to age, where that is
#: before its publication (a bootstrapped token's creation at the issuer), for those policies; a
#: summary's own policies have it as their entry's ``token_since``
TOKEN_SINCE_ELSEWHERE = "token_since_elsewhere"
#: a checkpoint's detail key, beside those two: the id of the token then current, for those policies
#: (where known); a summary's own policies have it as their entry's ``token_id``
TOKEN_ID_ELSEWHERE = "token_id_elsewhere"
#: a checkpoint's detail key (true) in place of those two: the policies without an event in its range
#: have their last publish in the earlier checkpoints' summaries, back to one with a full copy or to
#: the first. A policy's carried values change only with its own events, which its summary holds, so
#: a checkpoint grows with the events it prunes, not with the number of policies. Each checkpoint
#: names its predecessor's digest, so the chain covers every one a reader walks through.
ELSEWHERE_IN_EARLIER = "last_published_elsewhere_in_earlier_checkpoints"


#: a checkpoint summary's per-policy keys for what people decided, with their reasons, in its range,
#: which would otherwise go with the pruned events (each present only where the range holds one; a
#: summary without it, an earlier version's too, holds none). Each reason is kept masked
#: (every token-shaped part as ``***``), as the report shows it:
#: `recover` / `abandoned` events: run_id, at, token_id, minted_on, reason, tag_search
ABANDONED = "abandoned"
#: `emergency` / `start` events (`rotate --revoke-previous-now`): at, run_id (None: none found, see
#: :func:`emergency_run`), reason
EMERGENCIES = "emergencies"
#: `bootstrap` / `replace` events (`bootstrap --replace`): at, run_id, token_id, replaced, reason
REPAIRS = "repairs"
#: an emergency rotation's events that name its run, written after the run published
_EMERGENCY_RUN_RESULTS = ("revoke_now", "ok", "failed")


def masked_reason(value: Any) -> str | None:
    """A person's ``--reason`` as a checkpoint keeps it: token-shaped parts as ``***`` (a journal from
    before `--reason` refused them may hold one), None when there is none."""
    return mask_tokens(str(value)) if value else None


def emergency_run(following: Mapping[str, Any] | None) -> str | None:
    """The run an `emergency` / `start` event began: ``following``, the policy's next event in chain
    order, when it is the `plan` of a run that says it is the emergency's (its detail's ``emergency``,
    which Engine.rotate writes since); None otherwise: the rotation stopped before it planned a run
    (a store it could not read), and the next run planned is someone's ordinary rotation, whatever
    its time. The run's own `emergency` events (:data:`_EMERGENCY_RUN_RESULTS`) name it too, once it
    published (the only link a journal written before that field has)."""
    if following is None or following.get("step") != "plan" or not following.get("run_id"):
        return None
    return str(following["run_id"]) if _detail_of(following).get("emergency") is True else None


def names_emergency_run(row: Mapping[str, Any]) -> bool:
    """Whether an event is one of an emergency rotation's that name its run (after it published)."""
    return row.get("step") == "emergency" and row.get("result") in _EMERGENCY_RUN_RESULTS and bool(row.get("run_id"))


def _detail_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """An event row's detail as a dict (the column holds its JSON text); {} when it is not an object."""
    detail = row.get("detail")
    if isinstance(detail, str):
        try:
            detail = json.loads(detail)
        except ValueError:
            return {}
    return detail if isinstance(detail, dict) else {}


def _summary(rows: Sequence[Mapping[str, Any]], last_published: Mapping[str, str],
             token_since: Mapping[str, str] | None = None, *, full: bool = False,
             token_ids: Mapping[str, str] | None = None,
             open_before: Mapping[str, Sequence[str]] | None = None,
             revoking: _Revoking | None = None) -> dict[str, Any]:  # fmt: skip
    """Per policy over the pruned events: rotations, revocations, failures, the longest a published
    token lived before the next one (max token age, seconds), the last publish time (carried on:
    ``last_published`` is each policy's before these events; ``token_since``, when its token then
    began to age where that was earlier, a bootstrapped token's creation) and that token's id
    (``token_id``; carried on from ``token_ids``). A publication of the token already current (the
    same bootstrap run again) is no rotation: its token ages on from its first publication. What
    people decided, with their reasons (:data:`ABANDONED`, :data:`EMERGENCIES`, :data:`REPAIRS`).
    Failures as :func:`counts_as_failure` counts them, and the runs that failed (:data:`FAILED_RUNS`);
    ``open_before``: the failed runs still open at the checkpoint before (counted there or earlier: not
    again), carried on with those of this range to the ones still open at its end (:data:`OPEN_FAILED_RUNS`).
    ``revoking``: the revocations still open at the checkpoint before, followed through these events to
    those done late (:data:`LATE_REVOCATIONS`) and those still open at their end (:data:`OPEN_REVOCATIONS`).
    ``full``: the other policies' carried values too (:data:`LAST_PUBLISHED_ELSEWHERE`), else
    :data:`ELSEWHERE_IN_EARLIER`."""
    policies: dict[str, dict[str, Any]] = {}
    #: per policy, when its current token was created where that is before its publication (a
    #: bootstrapped token's creation, from its event): its age counts from then
    created: dict[str, str] = dict(token_since or {})
    #: per policy, the id of its current token, where known
    current: dict[str, str] = dict(token_ids or {})
    #: per policy, its emergency start when that is its last event so far (its run's plan comes next)
    starting: dict[str, tuple[Mapping[str, Any], dict[str, Any]]] = {}
    still_open = {policy: list(runs) for policy, runs in (open_before or {}).items() if runs}
    revoking = revoking if revoking is not None else _Revoking({}, {})
    counted = {run for runs in still_open.values() for run in runs}
    for row in rows:
        if row["step"] == "prune":
            continue
        _carry_open(still_open, row)
        entry = policies.setdefault(str(row["policy"]), {
            "rotations": 0, "revocations": 0, "failures": 0, "max_token_age_seconds": 0,
            "last_published_at": last_published.get(str(row["policy"])),
        })  # fmt: skip
        step, result = row["step"], row["result"]
        _decisions(entry, row, starting)
        revoking.see(row, entry)
        if step in ("published", "bootstrap") and result == "ok":
            token = _detail_of(row).get("token_id")
            token = token if isinstance(token, str) and token else None
            if token is not None and current.get(str(row["policy"])) == token:
                continue  # published again, not replaced: no rotation, and its age runs on
            if token is not None:
                current[str(row["policy"])] = token
            else:
                current.pop(str(row["policy"]), None)
            entry["rotations"] += 1
            since = created.pop(str(row["policy"]), None) or entry["last_published_at"]
            if since:
                age = (_parse(row["at"]) - _parse(since)).total_seconds()
                entry["max_token_age_seconds"] = max(entry["max_token_age_seconds"], int(age))
            entry["last_published_at"] = row["at"]
            made = _detail_of(row).get("token_created_at") if step == "bootstrap" else None
            if isinstance(made, str) and made < str(row["at"]):
                created[str(row["policy"])] = made
        elif step == "revoke_old" and result == "ok":
            entry["revocations"] += 1
        else:
            _failure(entry, row, counted)
    for name, since in created.items():
        if name in policies:
            policies[name]["token_since"] = since
    for name, token in current.items():
        if name in policies:
            policies[name]["token_id"] = token
    detail = {
        "events": len(rows),
        "from": rows[0]["at"] if rows else None,
        "to": rows[-1]["at"] if rows else None,
        "first_seq": rows[0]["seq"] if rows else None,
        "policies": policies,
        # (always written, {} for none: its absence says an earlier version wrote the checkpoint)
        OPEN_FAILED_RUNS: {policy: runs[-OPEN_FAILED_MAX:] for policy, runs in sorted(still_open.items())},
        OPEN_REVOCATIONS: revoking.still_open(),
        LATE_REVOCATIONS_SLACK_S: int(LATE_REVOCATION_SLACK.total_seconds()),
    }
    if not full:
        detail[ELSEWHERE_IN_EARLIER] = True
        return detail
    detail[LAST_PUBLISHED_ELSEWHERE] = {k: v for k, v in sorted(last_published.items()) if k not in policies}
    elsewhere = {k: v for k, v in sorted(created.items()) if k not in policies}
    if elsewhere:
        detail[TOKEN_SINCE_ELSEWHERE] = elsewhere
    tokens = {k: v for k, v in sorted(current.items()) if k not in policies}
    if tokens:
        detail[TOKEN_ID_ELSEWHERE] = tokens
    return detail


def _failure(entry: dict[str, Any], row: Mapping[str, Any], counted: set[str]) -> None:
    """Count ``row`` in a summary's ``entry`` if it is a failure (:func:`counts_as_failure`), and name
    the run it says failed (:data:`FAILED_RUNS`) once, counted here or before."""
    run_id = failed_run(row)
    if run_id is not None and run_id not in entry.setdefault(FAILED_RUNS, []):
        entry[FAILED_RUNS].append(run_id)
    if counts_as_failure(row, counted):
        entry["failures"] += 1


def _decisions(entry: dict[str, Any], row: Mapping[str, Any],
               starting: dict[str, tuple[Mapping[str, Any], dict[str, Any]]]) -> None:  # fmt: skip
    """Record in a summary's ``entry`` what a person decided in ``row`` (:data:`ABANDONED`,
    :data:`EMERGENCIES`, :data:`REPAIRS`), with the reason masked; ``starting``: per policy, its
    emergency start whose run's `plan` may be ``row`` (:func:`emergency_run`)."""
    policy, step, result = str(row["policy"]), row["step"], row["result"]
    started = starting.pop(policy, None)
    if started is not None:
        started[1]["run_id"] = emergency_run(row)
    detail = _detail_of(row)
    run_id = str(row["run_id"]) if row.get("run_id") else None
    if step == "recover" and result == "abandoned":
        entry.setdefault(ABANDONED, []).append({
            "run_id": run_id, "at": row["at"], "token_id": detail.get("token_id") or None,
            "minted_on": detail.get("minted_on") or None, "reason": masked_reason(detail.get("reason")),
            "tag_search": bool(detail.get("tag_search")),
        })  # fmt: skip
    elif step == "emergency" and result == "start":
        record = {"at": row["at"], "run_id": None, "reason": masked_reason(detail.get("reason"))}
        entry.setdefault(EMERGENCIES, []).append(record)
        starting[policy] = (row, record)
    elif names_emergency_run(row) and entry.get(EMERGENCIES) and entry[EMERGENCIES][-1]["run_id"] is None:
        entry[EMERGENCIES][-1]["run_id"] = run_id  # (a journal from before the plan said it is the emergency's)
    elif step == "bootstrap" and result == "replace":
        entry.setdefault(REPAIRS, []).append({
            "at": row["at"], "run_id": run_id, "token_id": detail.get("token_id") or None,
            "replaced": detail.get("replaced") or None, "reason": masked_reason(detail.get("reason")),
        })  # fmt: skip


#: a checkpoint's detail key: policy -> token id -> what the chain said, by the checkpoint's end, of that
#: token's revocation, scheduled (or tried) and not ended (`revoke_old` ok or dismissed) by then: ``due_at``,
#: the due time its scheduling events carry (the latest; None where none that pruned history held says),
#: ``due_by``, its first try (or emergency) since, by which it was due, and ``failed_at``, when a try of it
#: first failed since (a failed revocation stays failed until done: the engine tries it again as failed).
#: Carried from checkpoint to checkpoint as :data:`OPEN_FAILED_RUNS` is, so that a revocation scheduled
#: in one prune's range and done in a later one's is judged by the chain's times. Always written ({}
#: for none): absent, an earlier version wrote the checkpoint, which kept no revocation's times.
OPEN_REVOCATIONS = "open_revocations"
#: at most so many a policy (the newest): a policy has one or two open at a time. One left out is
#: judged, once done, by its row's due time (:func:`_row_dues`), as one scheduled before the chain.
OPEN_REVOCATIONS_MAX = 50
#: a checkpoint summary's per-policy key: the revocations done (`revoke_old` ok) in its range that
#: `rotator status --check` would have called overdue at some moment before (failed first, or done more
#: than :data:`LATE_REVOCATION_SLACK` after their due time), each with token_id, due_at (the chain's,
#: or ``due_at_from_row`` true: its row's, where pruned history did not say; None: neither did, and
#: every one done so is listed), failed_at (None: never failed) and done_at (its event's time). The
#: report counts them overdue in a period that ended between their due time (plus its slack) and
#: done_at, as it did before their events and rows went. Absent: none (or an earlier version's
#: checkpoint, without :data:`OPEN_REVOCATIONS`, which kept none: the report says it cannot tell).
LATE_REVOCATIONS = "late_revocations"
#: the slack past its due time a pending revocation has before it counts as overdue, as `rotator
#: status --check` allows it: compliance.DEFAULT_SLACK, written out (core imports nothing of observe;
#: tests/observe/test_report_overdue.py checks the two agree)
LATE_REVOCATION_SLACK = timedelta(hours=1)
#: a checkpoint's detail key beside :data:`OPEN_REVOCATIONS`: that slack, in seconds, as it was when the
#: checkpoint was written. A report that allows less cannot tell from its records what was overdue.
LATE_REVOCATIONS_SLACK_S = "late_revocations_slack_s"


def _time_text(value: Any) -> str | None:
    """A time an event's detail carries (``str(datetime)``, or the journal's text) as journal time text."""
    try:
        moment = datetime.fromisoformat(str(value).removesuffix("Z")) if value else None
    except ValueError:
        return None
    if moment is None:
        return None
    return rfc3339_micro(moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC))


def _ids(value: Any) -> list[str]:
    return [t for t in str(value or "").split(",") if t]


class _Revoking:
    """The revocations a summary follows through its events (:data:`OPEN_REVOCATIONS`,
    :data:`LATE_REVOCATIONS`), by the rules the report reads the chain's own by: scheduled by a
    rotation's `published` event (the token its `plan` names) or a bootstrap's, due by their first try
    (or emergency) since, failed from their first failed try, ended by `revoke_old` ok or dismissed."""

    def __init__(self, open_before: Mapping[str, Mapping[str, Mapping[str, Any]]],
                 row_dues: Mapping[tuple[str, str], str]) -> None:  # fmt: skip
        self.open = {policy: {token: dict(rec) for token, rec in tokens.items()}
                     for policy, tokens in open_before.items()}  # fmt: skip
        #: (policy, token) -> its row's due time, for those done here whose due time the chain does not say
        self.row_dues = row_dues
        #: (policy, token) of those done here whose due time the chain does not say
        self.unknown: list[tuple[str, str]] = []
        self.plans: dict[str, str | None] = {}
        self.replaced: dict[str, list[str]] = {}

    def see(self, row: Mapping[str, Any], entry: dict[str, Any]) -> None:
        """Follow one event (chain order); a revocation it ends late goes into its policy's ``entry``."""
        policy, step, result, at = str(row["policy"]), row["step"], row["result"], str(row["at"])
        detail, run_id = _detail_of(row), str(row.get("run_id") or "")
        if step == "plan":
            self.plans[run_id] = str(detail["old_token_id"]) if detail.get("old_token_id") else None
        elif step == "bootstrap" and result == "replace":
            self.replaced[run_id] = _ids(detail.get("replaced"))
        elif step in ("published", "bootstrap") and result == "ok":
            self._published(policy, run_id, step, detail)
        elif step == "revoke_old" and detail.get("token_id"):
            self._tried(policy, str(detail["token_id"]), at, str(result), entry)
        elif step == "emergency" and result == "revoke_now":
            for token in (detail.get("token_id"), detail.get("also_revoke")):
                if token:
                    self._due_by(self._record(policy, str(token)), at)

    def _published(self, policy: str, run_id: str, step: str, detail: Mapping[str, Any]) -> None:
        also = str(detail["also_revoke"]) if detail.get("also_revoke") else None
        if step == "bootstrap":
            kept = set(_ids(detail.get("kept_dismissed")))
            for token in (self.replaced.get(run_id, []) if detail.get("replace") else [also] if also else []):
                if token not in kept:
                    self._scheduled(policy, token, _time_text(detail.get("revoke_at")))
            return
        due = _time_text(detail.get("revoke_old_at"))
        # (a run whose `plan` an earlier range held: its token is not known here, and its row's due
        # time stands in once it is done)
        old = self.plans.get(run_id)
        if detail.get("revoke_old_at") and old:
            self._scheduled(policy, old, due)
        if also:
            self._scheduled(policy, also, _time_text(detail.get("also_revoke_at")) or due)

    def _record(self, policy: str, token: str) -> dict[str, Any]:
        return self.open.setdefault(policy, {}).setdefault(token, {"due_at": None, "due_by": None, "failed_at": None})

    def _scheduled(self, policy: str, token: str, due: str | None) -> None:
        """Scheduled (again): pending, due at the latest time scheduled (a row keeps the later one)."""
        before = self.open.get(policy, {}).pop(token, None)
        earlier = before.get("due_at") if before else None
        latest = max(earlier, due) if earlier and due else due
        self._record(policy, token).update(due_at=latest)

    @staticmethod
    def _due_by(record: dict[str, Any], at: str) -> None:
        record["due_by"] = min(record["due_by"], at) if record["due_by"] else at

    def _tried(self, policy: str, token: str, at: str, result: str, entry: dict[str, Any]) -> None:
        record = self._record(policy, token)
        self._due_by(record, at)
        if result == "failed":
            record["failed_at"] = record["failed_at"] or at
        if result not in ("ok", "dismissed"):
            return
        del self.open[policy][token]
        if not self.open[policy]:
            del self.open[policy]
        if result == "ok":
            self._done(policy, token, record, at, entry)

    def _done(self, policy: str, token: str, record: Mapping[str, Any], at: str, entry: dict[str, Any]) -> None:
        """A revocation done at ``at``: into ``entry``'s :data:`LATE_REVOCATIONS` if it was overdue before."""
        from_row = record["due_at"] is None and (policy, token) in self.row_dues
        due = record["due_at"] or self.row_dues.get((policy, token))
        if record["due_at"] is None:
            self.unknown.append((policy, token))
        # (tried only once due: never due after its first try, as the report bounds it)
        due = min(due, record["due_by"]) if due else None
        late = due is None or record["failed_at"] is not None or _parse(at) - _parse(due) > LATE_REVOCATION_SLACK
        if late:
            entry.setdefault(LATE_REVOCATIONS, []).append({
                "token_id": token, "due_at": due, "failed_at": record["failed_at"], "done_at": at,
                **({"due_at_from_row": True} if from_row and due is not None else {}),
            })  # fmt: skip

    def still_open(self) -> dict[str, dict[str, dict[str, Any]]]:
        """:data:`OPEN_REVOCATIONS` at the range's end."""
        return {policy: dict(list(tokens.items())[-OPEN_REVOCATIONS_MAX:])
                for policy, tokens in sorted(self.open.items()) if tokens}  # fmt: skip


def _open_revocations(checkpoint: Checkpoint | None) -> dict[str, dict[str, dict[str, Any]]]:
    """The revocations still open at ``checkpoint``'s end (:data:`OPEN_REVOCATIONS`; {} for one written
    before checkpoints kept them, or for none)."""
    carried = checkpoint.detail.get(OPEN_REVOCATIONS) if checkpoint is not None else None
    if not isinstance(carried, dict):
        return {}
    return {str(policy): {str(token): {k: rec.get(k) if isinstance(rec.get(k), str) else None
                                       for k in ("due_at", "due_by", "failed_at")}
                          for token, rec in tokens.items() if isinstance(rec, dict)}
            for policy, tokens in carried.items() if isinstance(tokens, dict)}  # fmt: skip


def _dues_not_chained(rows: Sequence[tuple[Any, ...]], previous: Checkpoint | None) -> list[tuple[str, str]]:
    """(policy, token) of the revocations done in ``rows`` (event rows of the links after ``previous``)
    whose due time neither they nor the checkpoints say: scheduled before the chain, before a checkpoint
    of an earlier version, or by a run whose `plan` an earlier range held."""
    revoking = _Revoking(_open_revocations(previous), {})
    entry: dict[str, Any] = {}
    for row in rows:
        event = dict(zip(EVENT_COLUMNS, row, strict=True))
        if event["step"] != "prune":
            revoking.see(event, entry)
    return revoking.unknown


def _row_dues(cur: Cursor, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(policy, token) -> the due time the revocations table holds for each of ``keys`` that has a row:
    what stands in where the chain does not say (the report reads the same row while it is there)."""
    found: dict[tuple[str, str], str] = {}
    keys = sorted(set(keys))
    for start in range(0, len(keys), _KEYS_PER_STATEMENT):
        match, params = _any_key(("policy", "token_id"), keys[start:start + _KEYS_PER_STATEMENT])
        for policy, token, due in cur.execute(f"SELECT policy, token_id, due_at FROM revocations WHERE {match}",
                                              params).fetchall():  # fmt: skip
            text = _time_text(due)
            if text is not None:
                found[(str(policy), str(token))] = text
    return found


def _writes_full_map(previous: Checkpoint | None) -> bool:
    """Whether the checkpoint after ``previous`` carries a full copy (:data:`LAST_PUBLISHED_ELSEWHERE`).
    Only after a checkpoint of a version that carried nothing (neither key): the walk back from it
    went through checkpoints written before each named its predecessor's digest, which the chain
    does not cover, so what it found is fixed once under the digests (as that upgrade's first prune
    did before). Otherwise the walk back from any checkpoint ends at a full copy or at the first
    checkpoint, through digest-covered ones only."""
    return previous is not None and LAST_PUBLISHED_ELSEWHERE not in previous.detail \
        and ELSEWHERE_IN_EARLIER not in previous.detail


def pruned_current(newest_first: Iterable[Checkpoint]) -> dict[str, tuple[str, str | None]]:
    """Policy -> (its last publish time among the pruned events, when that token began to age if
    earlier: a bootstrapped token's creation, else None), from the checkpoints (newest first): their
    summaries, back to the first with a full copy (:data:`LAST_PUBLISHED_ELSEWHERE`), else all of them."""
    return {name: (at, since) for name, (at, since, _token) in _pruned_state(newest_first).items()}


def _pruned_state(newest_first: Iterable[Checkpoint]) -> dict[str, tuple[str, str | None, str | None]]:
    """:func:`pruned_current`, with the id of each policy's token then (None where no checkpoint
    records it: those written before checkpoints did)."""
    found: dict[str, tuple[str, str | None, str | None]] = {}
    for checkpoint in newest_first:
        for name, entry in checkpoint.detail.get("policies", {}).items():
            if isinstance(entry, dict) and entry.get("last_published_at"):
                since, token = entry.get("token_since"), entry.get("token_id")
                found.setdefault(str(name), (str(entry["last_published_at"]), str(since) if since else None,
                                             str(token) if token else None))
        elsewhere = checkpoint.detail.get(LAST_PUBLISHED_ELSEWHERE)
        if isinstance(elsewhere, dict):
            origins = checkpoint.detail.get(TOKEN_SINCE_ELSEWHERE)
            origins = origins if isinstance(origins, dict) else {}
            tokens = checkpoint.detail.get(TOKEN_ID_ELSEWHERE)
            tokens = tokens if isinstance(tokens, dict) else {}
            for name, at in elsewhere.items():
                since, token = origins.get(name), tokens.get(name)
                found.setdefault(str(name), (str(at), str(since) if since else None, str(token) if token else None))
            break
    return found


def _last_published(cur: Cursor, latest: Checkpoint | None) -> dict[str, str]:
    """Policy -> its last publish time up to the ``latest`` checkpoint (see :func:`_carried`)."""
    return _carried(cur, latest)[0]


def _carried(cur: Cursor, latest: Checkpoint | None) -> tuple[dict[str, str], dict[str, str]]:
    """What a prune carries on from the ``latest`` checkpoint: policy -> its last publish time, and
    policy -> when that token began to age where that was before its publication (see
    :func:`pruned_current`). A checkpoint names only its own range's policies (and, written by an
    earlier version, the others' in :data:`LAST_PUBLISHED_ELSEWHERE`): they are merged, newest first,
    back to one with that full copy, else to the first, one row at a time."""
    return _carried_all(cur, latest)[:2]


def _carried_all(cur: Cursor, latest: Checkpoint | None) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """:func:`_carried`, and policy -> the id of that token, where the checkpoints record it."""
    if latest is None:
        return {}, {}, {}
    current = _pruned_state(itertools.chain([latest], _checkpoints_before(cur, latest.seq)))
    return ({name: at for name, (at, _since, _token) in current.items()},
            {name: since for name, (_at, since, _token) in current.items() if since},
            {name: token for name, (_at, _since, token) in current.items() if token})


def _digest(detail: Mapping[str, Any]) -> str:
    """SHA-256 of a checkpoint's detail (summaries included), recorded in the chained ``prune`` event."""
    return _sha256(json.dumps(detail, sort_keys=True, separators=(",", ":")).encode())


def _parse(text: str) -> datetime:
    # fromisoformat, not strptime (several times slower): a prune parses one time per published event
    return datetime.fromisoformat(text.removesuffix("Z")).replace(tzinfo=UTC)
