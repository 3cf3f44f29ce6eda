"""Group commit of the SQLite journal (rotator.core.group_sync): a durable commit returns only after
an fdatasync of the WAL that began after its COMMIT, that flush runs outside SQLite's write lock,
and concurrent commits share flushes."""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.core import group_sync
from rotator.core.errors import JournalError
from rotator.core.group_sync import GroupSync, fdatasync_path
from rotator.core.journal import RunRecord, RunState, open_journal

NOW = datetime(2026, 3, 1, tzinfo=UTC)


class _Log:
    """An ordered log of what the threads and the flushes did."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: list[tuple[str, Any]] = []

    def add(self, what: str, who: Any) -> None:
        with self.lock:
            self.entries.append((what, who))

    def index(self, what: str, who: Any) -> int:
        return self.entries.index((what, who))


def test_every_caller_returns_after_a_flush_that_began_after_its_call_and_callers_share_flushes() -> None:
    log, callers = _Log(), 12
    numbers = iter(range(1, 1000))
    all_called = threading.Event()

    def flush() -> None:
        number = next(numbers)
        log.add("start", number)
        if number == 1:  # hold the first flush until every caller waits behind it
            all_called.wait(5)
            time.sleep(0.05)
        log.add("end", number)

    sync = GroupSync(flush)

    def caller(who: int) -> None:
        log.add("call", who)
        if sum(1 for what, _ in log.entries if what == "call") == callers:
            all_called.set()
        sync.wait()
        log.add("return", who)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    flushes = [who for what, who in log.entries if what == "start"]
    assert 1 < len(flushes) < callers, f"callers did not share flushes: {log.entries}"
    for who in range(callers):
        called, returned = log.index("call", who), log.index("return", who)
        assert any(called < log.index("start", n) and log.index("end", n) < returned for n in flushes), (
            f"caller {who} returned without a flush begun after its call: {log.entries}")
    starts_and_ends = [(what, who) for what, who in log.entries if what in ("start", "end")]
    assert starts_and_ends == [(w, n) for n in flushes for w in ("start", "end")], "flushes overlapped"


def test_a_failed_flush_raises_in_its_callers_and_the_next_call_flushes_again() -> None:
    calls: list[int] = []

    def flush() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError(errno.EIO, "Input/output error")

    sync = GroupSync(flush)
    with pytest.raises(OSError, match="Input/output"):
        sync.wait()
    sync.wait()  # the cause gone (here: the second flush succeeds), the same call succeeds
    assert len(calls) == 2


def test_fdatasync_path_of_a_missing_file_is_nothing_to_do(tmp_path: Path) -> None:
    fdatasync_path(str(tmp_path / "absent-wal"))
    present = tmp_path / "present"
    present.write_bytes(b"x")
    fdatasync_path(str(present))
    with pytest.raises(NotADirectoryError):  # any error but "no such file" is the caller's
        fdatasync_path(str(present / "x"))


def _record_datasyncs(monkeypatch: pytest.MonkeyPatch, during: Any = None) -> list[str]:
    """Replace the fdatasync the journal uses with one that records the file it syncs."""
    synced: list[str] = []
    real = group_sync._datasync

    def datasync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        if during is not None:
            during()
        real(fd)

    monkeypatch.setattr(group_sync, "_datasync", datasync)
    return synced


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names a descriptor's file through /proc")
def test_a_durable_sqlite_commit_is_flushed_after_commit_outside_the_write_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "journal.db"
    journal = open_journal(f"sqlite:///{path}")
    seen: list[tuple[str | None, bool]] = []

    def during() -> None:
        # While the flush runs, the commit is already in the database and the write lock is free.
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            row = other.execute("SELECT state FROM runs WHERE run_id = 'r1'").fetchone()
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            seen.append((row[0] if row else None, True))
        finally:
            other.close()

    synced = _record_datasyncs(monkeypatch, during)
    before = journal.stats.snapshot()
    fence = journal.acquire_lease("p", "A", timedelta(minutes=1), NOW)
    journal.begin_run(RunRecord("r1", "p", RunState.PLANNED, "rotate", NOW, NOW), fence=fence)
    assert synced == [f"{path}-wal"] * 2, "one WAL flush per durable commit"
    assert seen[-1] == ("planned", True), "flushed after COMMIT, with the write lock released"
    assert (journal.stats.synced - before.synced, journal.stats.flushes - before.flushes) == (2, 2)
    with journal.transaction(durable=False):
        journal.release_lease("p", "A")
    assert len(synced) == 2, "a commit nothing waits on is not flushed"
    journal.close()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names a descriptor's file through /proc")
def test_a_failed_flush_is_a_journal_error_and_the_same_call_succeeds_once_the_disk_is_healthy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")
    broken = [True]

    def failing(fd: int) -> None:
        if broken[0]:
            raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(group_sync, "_datasync", failing)
    with pytest.raises(JournalError, match="committed, but could not sync it to disk") as caught:
        journal.acquire_lease("p", "A", timedelta(minutes=1), NOW)
    assert "recover" in str(caught.value.hint)
    broken[0] = False
    fence = journal.acquire_lease("p", "A", timedelta(minutes=1), NOW)  # the same holder takes it again
    assert fence >= 1
    journal.close()


def test_concurrent_durable_commits_share_wal_flushes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = open_journal(f"sqlite:///{tmp_path / 'journal.db'}")
    real = group_sync._datasync

    def slow(fd: int) -> None:  # a slow disk: commits pile up behind the flush in progress
        time.sleep(0.02)
        real(fd)

    monkeypatch.setattr(group_sync, "_datasync", slow)
    before = journal.stats.snapshot()
    workers, each = 8, 5

    def work(i: int) -> None:
        for j in range(each):
            journal.acquire_lease(f"p{i}-{j}", "A", timedelta(minutes=1), NOW)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    synced, flushes = journal.stats.synced - before.synced, journal.stats.flushes - before.flushes
    assert synced == workers * each
    assert flushes < synced, (flushes, synced)
    journal.close()
    with sqlite3.connect(tmp_path / "journal.db") as db:
        assert db.execute("SELECT COUNT(*) FROM leases").fetchone() == (workers * each,)
