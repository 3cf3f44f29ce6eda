"""Child processes that cannot outlive the process that started them.

A child is re-parented, not killed, when its parent dies: a ``kill -9`` of rotator (a supervisor,
the OOM killer, a killed test run) would leave an ``influxctl`` call that may still mint a token
after recovery looked, or an OpenBao dev server holding its port for hours. On Linux,
``prctl(PR_SET_PDEATHSIG, SIGKILL)`` in the child, between ``fork`` and ``exec``, has the kernel
kill it when its parent goes. Elsewhere there is no such mechanism and :func:`die_with_parent`
returns ``None`` (the callers still kill their children on every path they see).

Nor does a child stop when its parent is *paused* (SIGSTOP, a GC pause, a frozen VM): rotator's
own timeout cannot fire then. A side effect's child runs under ``child_watchdog.py``, a process of
its own that kills it at its deadline (:func:`side_effect_command`), and starts only within a
deadline of its lease check (:func:`start_children_within`).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

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


#: the script that bounds a side effect's child while rotator is paused (stdlib only, run by path)
_WATCHDOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "child_watchdog.py")
#: what the watchdog exits with when it cannot execute the command, and its stderr line's start
_WATCHDOG_NOT_EXECUTED = 127  # = child_watchdog.EXIT_NOT_EXECUTED (the script imports nothing of rotator)
_WATCHDOG_ERRNO_PREFIX = "rotator-child-watchdog: errno "  # = child_watchdog.ERRNO_PREFIX
#: the watchdog kills a side effect's child this long after the caller's own timeout would have
WATCHDOG_MARGIN_S = 1.0

#: the CLOCK_MONOTONIC time after which a child about to be started must not run (None: no limit)
_FORK_DEADLINE: ContextVar[float | None] = ContextVar("rotator_fork_deadline", default=None)
#: what a child that starts past its deadline exits with, before it runs anything
EXIT_PAST_DEADLINE = 124


#: the CLOCK_MONOTONIC time after which an in-process request that changes something must not be sent
_REQUEST_DEADLINE: ContextVar[float | None] = ContextVar("rotator_request_deadline", default=None)


@contextmanager
def start_children_within(seconds: float, requests_within: float | None = None) -> Iterator[None]:
    """Children started (:func:`die_with_parent`) in this block, in this thread, run only if they start
    within ``seconds`` from now: a side effect whose lease was just confirmed must not begin after a
    pause (SIGSTOP, a GC pause) long enough for the lease to be taken over meanwhile.

    ``requests_within`` (default ``seconds``): the same bound for a request an in-process issuer
    writes (:func:`start_deadline`). It is the whole call's: such a call makes its own reads first
    (a template, a listing) and connects for each request, which a slow but working server may
    take seconds for, where a child only has to start."""
    now = time.monotonic()
    token = _FORK_DEADLINE.set(now + seconds)
    request_token = _REQUEST_DEADLINE.set(now + (seconds if requests_within is None else requests_within))
    try:
        yield
    finally:
        _REQUEST_DEADLINE.reset(request_token)
        _FORK_DEADLINE.reset(token)


@contextmanager
def reading() -> Iterator[None]:
    """Children started in this block only read (a list after a create or a revoke): no start
    deadline. One started late changes nothing, and refusing it would fail a side effect that
    happened already (a slow ``create`` whose id is read by the ``list`` after it)."""
    token = _FORK_DEADLINE.set(None)
    request_token = _REQUEST_DEADLINE.set(None)
    try:
        yield
    finally:
        _REQUEST_DEADLINE.reset(request_token)
        _FORK_DEADLINE.reset(token)


def start_deadline() -> float | None:
    """The ``time.monotonic()`` after which an in-process request that changes something must not be
    sent (None: no limit): :func:`start_children_within`'s ``requests_within``."""
    return _REQUEST_DEADLINE.get()


_watchdog_works: bool | None = None
#: prepare_watchdog ran its self-test already (it tries once per process)
_watchdog_prepared = False
_watchdog_lock = threading.Lock()
#: errnos of a failed start that say nothing of the watchdog itself (no memory, no descriptor...)
_PASSING_ERRNOS = frozenset({errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE, errno.EINTR})


def _watchdog_usable(env: Mapping[str, str] | None) -> bool:
    """Whether the watchdog runs here, found out once per process by running it on an empty Python
    command in ``env`` (~20 ms): an interpreter that needs a variable the children's environment
    leaves out, or a Python without a file for the script (a zip application), cannot run it. Then
    the children run as they are, as before the watchdog, and the log says so once. A failure that
    says nothing of the watchdog (a timeout, a signal, no memory) is not kept: the next call tries
    again. The probe leads a process group of its own: the watchdog kills its group."""
    global _watchdog_works
    with _watchdog_lock:
        if _watchdog_works is not None:
            return _watchdog_works
        import subprocess

        probe = [sys.executable, "-I", "-S", "-c", ""]
        deadline = repr(time.monotonic() + 30)
        lasting = True
        try:
            with reading():  # the probe is no side effect: no start deadline for it
                preexec = die_with_parent(signal.SIGTERM)
            done = subprocess.run([sys.executable, "-I", "-S", _WATCHDOG, deadline, "--", *probe], env=env,
                                  stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False,
                                  process_group=0, preexec_fn=preexec)  # noqa: PLW1509
            works, why = done.returncode == 0, (done.stderr or b"").decode(errors="replace").strip()[-300:]
            failed = exec_error(done.returncode, why)
            lasting = done.returncode > 0 and (failed is None or failed.errno not in _PASSING_ERRNOS)
        except (OSError, subprocess.SubprocessError) as exc:
            works, why = False, str(exc)
            lasting = not isinstance(exc, subprocess.TimeoutExpired) and getattr(exc, "errno", None) not in \
                _PASSING_ERRNOS
        if not works:
            logging.getLogger("rotator.child_process").warning(
                "the watchdog that ends a child process (a mint's or a revoke's influxctl, a command hook) at its "
                "timeout while rotator is paused, and when rotator dies, cannot run here (%s): %s",
                why or "no reason given",
                "those children run without it" if lasting else "this child runs without it; the next one tries again")
        if works or lasting:
            _watchdog_works = works
        return works


def prepare_watchdog(env: Mapping[str, str] | None) -> None:
    """Run the watchdog's self-test (:func:`_watchdog_usable`) now, if it has not run and no start
    window is open: a read before a side effect (the issuer check of a rotation's PLAN) pays its
    ~20 ms, not the mint, whose child must start within a few seconds of its lease check (on a
    machine slow enough, the self-test alone would use them up and the mint be refused)."""
    global _watchdog_prepared
    if _watchdog_prepared or _watchdog_works is not None or _FORK_DEADLINE.get() is not None \
            or not sys.executable or getattr(sys, "frozen", False):
        return
    # Once per process, whatever the outcome: a failure that is not kept (a timeout, a signal) is
    # tried again by the next side effect (side_effect_command), not by every read.
    _watchdog_prepared = True
    _watchdog_usable(env)


def side_effect_command(argv: Sequence[str], timeout_s: float,
                        env: Mapping[str, str] | None = None) -> tuple[list[str], signal.Signals]:  # fmt: skip
    """The command line to start for ``argv``, and the signal it must get when rotator dies.

    A side effect's child (started in :func:`start_children_within`, outside :func:`reading`) runs
    under ``child_watchdog.py``, which kills it ``timeout_s`` (+ a margin) from now even while
    rotator is paused, when rotator's own timeout cannot fire: recovery's mint window assumes no
    child of a run outlives its call timeout. The watchdog gets SIGTERM when rotator dies and kills
    the child then. Other children run as they are, with SIGKILL, and so does every child where the
    watchdog cannot run (a frozen Python, or :func:`_watchdog_usable` said no: logged once)."""
    if _FORK_DEADLINE.get() is None:
        return list(argv), signal.SIGKILL
    if not sys.executable or getattr(sys, "frozen", False) or not _watchdog_usable(env):
        return list(argv), signal.SIGKILL
    deadline = time.monotonic() + timeout_s + WATCHDOG_MARGIN_S
    return [sys.executable, "-I", "-S", _WATCHDOG, repr(deadline), "--", *argv], signal.SIGTERM


def exec_error(returncode: int, stderr: str | None) -> OSError | None:
    """The error that kept the watchdog from executing its command (as :class:`subprocess.Popen`
    raises it when it cannot execute a command itself); None when the command ran."""
    if returncode != _WATCHDOG_NOT_EXECUTED or not stderr:
        return None
    last = stderr.rstrip("\n").rsplit("\n", 1)[-1]
    if not last.startswith(_WATCHDOG_ERRNO_PREFIX) or not last[len(_WATCHDOG_ERRNO_PREFIX):].isdigit():
        return None
    number = int(last[len(_WATCHDOG_ERRNO_PREFIX):])
    return OSError(number, os.strerror(number))


def die_with_parent(death_signal: signal.Signals = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: ``death_signal`` (SIGKILL) to the child when its
    parent dies, even by kill -9.

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
    deadline = _FORK_DEADLINE.get()
    if prctl is None and deadline is None:
        return None
    parent_pid = os.getpid()
    number = int(death_signal)

    def preexec() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, number, 0, 0, 0)
            if os.getppid() != parent_pid:
                os._exit(137)
        # In the child, after the fork: a parent paused between its lease check and the fork starts
        # nothing (CLOCK_MONOTONIC counts a SIGSTOP's time, and is the same clock in the child).
        if deadline is not None and time.monotonic() > deadline:
            os._exit(EXIT_PAST_DEADLINE)

    return preexec
