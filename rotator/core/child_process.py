"""Child processes that cannot outlive the process that started them.

A child is re-parented, not killed, when its parent dies: a ``kill -9`` of rotator (a supervisor,
the OOM killer, a killed test run) would leave an ``influxctl`` call that may still mint a token
after recovery looked, or an OpenBao dev server holding its port for hours. On Linux,
``prctl(PR_SET_PDEATHSIG, SIGKILL)`` in the child, between ``fork`` and ``exec``, has the kernel
kill it when its parent goes. Elsewhere there is no such mechanism and :func:`die_with_parent`
returns ``None`` (the callers still kill their children on every path they see).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

#: ``prctl(2)`` option: the signal a process gets when the thread that created it exits.
_PR_SET_PDEATHSIG = 1

_prctl: Callable[..., int] | None = None
_prctl_loaded = False


def _load_prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` on Linux, resolved once in the parent (the child must not ``dlopen`` after fork)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function: Callable[..., int] = libc.prctl
    except (OSError, AttributeError):
        return None
    return function


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: SIGKILL the child when its parent dies, even by kill -9.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits, not the process:
    start the child from a thread that lives as long as the child should (the thread that waits
    for it, or the main thread). The setting survives ``execve`` (of a program that is not
    set-uid). If the parent died between ``fork`` and ``prctl``, the child was re-parented
    already: it exits at once. The returned function takes no lock and allocates nothing that
    a lock guards (``prctl`` was resolved here, before the fork), which ``preexec_fn`` requires
    in a process with threads.
    """
    global _prctl, _prctl_loaded
    if not _prctl_loaded:
        _prctl, _prctl_loaded = _load_prctl(), True
    prctl = _prctl
    if prctl is None:
        return None
    parent_pid = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(137)

    return preexec
