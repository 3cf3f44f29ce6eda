"""Opening a file rotator appends its own lines to (``--log-file``, the daemon's audit file).

Such a file is named by the operator but often lives in a directory others may write (``/tmp``, a
shared log directory), and rotator runs as root under cron, systemd and the Lambda's sandbox. The
last path component is never followed as a symbolic link (a planted link would make rotator append
its lines to ``/etc/shadow``, or to any file it can write), and only a regular file is written: a
FIFO without a reader would block the process at open, a device would swallow or mangle the lines.
A logrotate'd file is opened again at the same path, so the check holds at every re-open, not only
at start.
"""

from __future__ import annotations

import errno
import os
import stat

__all__ = ["NotAPlainFile", "open_append"]


class NotAPlainFile(OSError):
    """The path names a symbolic link, a FIFO, a device or a directory, not a regular file."""


def open_append(path: str | os.PathLike[str]) -> int:
    """A descriptor of ``path`` opened for appending (created 0600); NotAPlainFile if it is not a
    regular file. The caller owns the descriptor."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotAPlainFile(errno.ELOOP, "is a symbolic link (rotator does not follow one here)",
                                os.fspath(path)) from None
        if exc.errno == errno.ENXIO:  # a FIFO with no reader, opened without blocking
            raise NotAPlainFile(errno.ENXIO, "is a FIFO, not a regular file", os.fspath(path)) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotAPlainFile(errno.EINVAL, "is not a regular file", os.fspath(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd
