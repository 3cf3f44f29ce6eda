"""Group commit for the SQLite journal: one fdatasync of the WAL file makes several commits durable.

SQLite holds its single write lock through a ``synchronous=FULL`` commit's fdatasync, so with many
workers the journal's writers queue behind each other's disk flushes (on a network volume, a
millisecond or more each). The journal instead commits with ``synchronous=NORMAL`` (the WAL is
written, not synced; the lock is released at once) and then, outside the lock, waits in
:meth:`GroupSync.wait` for an fdatasync of the WAL file that began after its commit ended. One such
flush covers every commit written before it began (fdatasync acts on the file, whichever connection
or process wrote the pages), so concurrent committers share it.

The durability contract does not change: a durable commit returns only once its WAL frames are on
disk, exactly as under ``synchronous=FULL``, and no side effect runs before that. What changes is
visibility: another connection may read a commit in the short time before its flush; a power loss
in that window loses it, as it would have lost a FULL commit caught mid-flush, and whatever acted
on it did so only after its own durable commit, whose flush covered the earlier frames too.

A failed flush is final, as PostgreSQL's ``data_sync_retry = off``: after an fdatasync error the
kernel may have dropped the dirty pages and a later fdatasync can succeed without them, so every
later durable commit of this journal object fails too, until it is opened again.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

__all__ = ["FlushFailed", "GroupSync", "WalFile"]

_datasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync

#: the longest a committer waits for the flush in progress and its own (a disk that hangs this long
#: is an error, not a wait)
FLUSH_WAIT_S = 120.0


class FlushFailed(OSError):
    """A flush of the WAL failed now or earlier: no commit of this journal object is known durable."""


class WalFile:
    """The WAL file of one SQLite database, flushed through a descriptor kept open.

    Kept open because Linux reports a writeback error to each open file description once: a
    descriptor opened after another one (SQLite's checkpoint) consumed the error would not see it.
    Opened again when the path names another inode (the last connection to close removes the WAL
    after a synced checkpoint, and the next one creates a new file).
    """

    def __init__(self, path: str, required: Callable[[], bool]) -> None:
        self.path = path
        #: whether the WAL must exist (the database is in WAL mode): a missing one is then an error
        #: (a path that is not the one SQLite writes), not a journal in rollback mode (synced by SQLite)
        self._required = required
        self._fd: int | None = None
        self._ino: tuple[int, int] | None = None

    def flush(self) -> bool:
        """fdatasync the WAL; False when there is none to flush (a database SQLite syncs itself)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._required():
                raise FileNotFoundError(f"the WAL {self.path} is missing after a commit in WAL mode") from None
            return False
        if self._fd is None or self._ino != (st.st_dev, st.st_ino):
            self.close()
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            self._ino = (st.st_dev, st.st_ino)
        _datasync(self._fd)
        return True

    def close(self) -> None:
        fd, self._fd, self._ino = self._fd, None, None
        if fd is not None:
            os.close(fd)


class GroupSync:
    """Run ``flush`` for callers that each need one flush begun after their call; one at a time.

    A caller arriving while a flush runs cannot use it (its commit may have landed after that
    flush began), so it waits for the next one, which it shares with everyone who arrived while
    it waited. After a flush raised an ``Exception`` every call raises :class:`FlushFailed`; an
    interrupt (``BaseException``) of the leading thread is raised in that thread only, and the
    next caller leads a new flush.
    """

    def __init__(self, flush: Callable[[], None]) -> None:
        self._flush = flush
        self._cond = threading.Condition(threading.Lock())
        self._started = 0
        self._finished = 0
        self._running = False
        self._failed: FlushFailed | None = None

    def wait(self) -> None:
        """Return once a flush that began after this call has ended; FlushFailed if any flush failed."""
        with self._cond:
            needed = self._started + 1  # the first flush to begin from now on
            while self._finished < needed:
                self.check()
                if self._running:  # begun before this call, or led by another waiter
                    if not self._cond.wait(FLUSH_WAIT_S):
                        raise FlushFailed(f"no flush of the journal's WAL ended in {FLUSH_WAIT_S:.0f} s")
                    continue
                self._lead()
            self.check()

    def check(self) -> None:
        """FlushFailed if a flush has failed (nothing this journal object commits is known durable)."""
        if self._failed is not None:
            raise FlushFailed(*self._failed.args)

    def _lead(self) -> None:
        """Run one flush without the lock (called and returning with it held)."""
        self._started += 1
        number, self._running = self._started, True
        error: Exception | None = None
        done = False
        self._cond.release()
        try:
            self._flush()
            done = True
        except Exception as exc:  # shared with every waiter, as FlushFailed
            error, done = exc, True
        finally:
            self._cond.acquire()
            self._running = False
            # Interrupted (KeyboardInterrupt...): this flush proves nothing and ``_finished`` stays;
            # a waiter then leads the next one, whose end serves every call before it.
            if done:
                self._finished = number
                if error is not None:
                    self._failed = FlushFailed(f"the journal's WAL could not be flushed to disk: {error}")
            self._cond.notify_all()
