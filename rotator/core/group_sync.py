"""Group commit for the SQLite journal: one fdatasync of the WAL file makes several commits durable.

SQLite holds its single write lock through a ``synchronous=FULL`` commit's fdatasync, so with many
workers the journal's writers queue behind each other's disk flushes. The journal instead commits
with ``synchronous=NORMAL`` (the WAL is written, not synced; the lock is released at once) and
then, outside the lock, waits in :meth:`GroupSync.wait` for an fdatasync of the WAL file that began
after its commit ended. One such flush covers every commit written before it began (fdatasync acts
on the file, whichever connection or process wrote the pages), so concurrent committers share it.

The durability contract does not change: a durable commit returns only once its WAL frames are on
disk, exactly as under ``synchronous=FULL``, and no side effect runs before that. What changes is
visibility: another connection may read a commit in the short time before its flush; a power loss
in that window loses it, as it would have lost a FULL commit caught mid-flush, and whatever acted
on it did so only after its own durable commit, whose flush covered the earlier frames too.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

__all__ = ["GroupSync", "fdatasync_path"]

_datasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


def fdatasync_path(path: str) -> None:
    """fdatasync the file at ``path``; a file that does not exist has nothing unsynced.

    Opened anew for each flush: SQLite may delete and re-create the WAL file (the last connection
    to close checkpoints it, synced, and removes it), so a kept descriptor could name a stale inode.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return
    try:
        _datasync(fd)
    finally:
        os.close(fd)


class GroupSync:
    """Run ``flush`` for callers that each need one flush begun after their call; one at a time.

    A caller arriving while a flush runs cannot use it (its commit may have landed after that
    flush began), so it waits for the next one, which it shares with everyone who arrived while
    it waited. A failed flush raises its error in every caller that needed it (and in one served by
    a later flush that returns late: after a failed fdatasync the kernel may have dropped pages, so
    nothing written before it is certain).
    """

    def __init__(self, flush: Callable[[], None]) -> None:
        self._flush = flush
        self._cond = threading.Condition()
        self._started = 0
        self._finished = 0
        #: the last flush that raised, and its error
        self._failure: tuple[int, BaseException] | None = None

    def wait(self) -> None:
        """Return once a flush that began after this call has ended; raise its error if it failed."""
        with self._cond:
            needed = self._started + 1  # the first flush to begin from now on
            while self._finished < needed:
                if self._started > self._finished:  # one is running, begun before this call
                    self._cond.wait()
                    continue
                self._started += 1
                self._lead(self._started)
            failure = self._failure
        if failure is not None and failure[0] >= needed:
            raise failure[1]

    def _lead(self, number: int) -> None:
        """Run flush ``number`` without the lock (called and returning with it held)."""
        error: BaseException | None = None
        self._cond.release()
        try:
            self._flush()
        except BaseException as exc:  # noqa: BLE001 - every waiter of this flush must see it
            error = exc
        finally:
            self._cond.acquire()
            self._finished = number
            if error is not None:
                self._failure = (number, error)
            self._cond.notify_all()
