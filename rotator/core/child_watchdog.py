"""Run a side effect's command so that it ends by a deadline, even while rotator is paused.

Usage: ``python -I -S child_watchdog.py DEADLINE -- COMMAND [ARG...]``, DEADLINE a CLOCK_MONOTONIC
time (``time.monotonic()`` in the process that started this one; the clock is the host's).

rotator kills an influxctl child that outlives its call timeout, and the kernel kills it when rotator
dies (``PR_SET_PDEATHSIG``). Neither happens while rotator is *paused* (SIGSTOP, a frozen VM, a
swapped-out process): the child runs on, and a ``create`` can land after another rotator's recovery
waited for the run's mint window and searched the run's tag. This process is the child's bound that
does not need rotator to run: at DEADLINE it SIGKILLs its process group (the command and itself).

- rotator starts it as the leader of a new process group, with ``PR_SET_PDEATHSIG`` set to SIGTERM:
  when rotator dies, the SIGTERM handler below kills the group. (Before the handler is installed,
  SIGTERM's default action ends this process, which has started nothing yet.)
- The command gets ``PR_SET_PDEATHSIG`` SIGKILL itself: it dies with this process, however that dies.
- The command's exit status is this process's: an exit code as such, a signal by the same signal.
- A command that cannot be executed: exit 127 and one stderr line, ``rotator-child-watchdog: errno N``
  (see ``rotator.core.child_process.exec_error``).

Standard library only, run by path without ``site`` (``-S``): it starts in a few milliseconds and
imports nothing of rotator.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import NoReturn

EXIT_NOT_EXECUTED = 127
ERRNO_PREFIX = "rotator-child-watchdog: errno "
#: the deadline had passed before the command was started: nothing ran (= child_process.EXIT_PAST_DEADLINE)
EXIT_PAST_DEADLINE = 124
_PR_SET_PDEATHSIG = 1

#: the command's pid once it is started, and its wait status when the deadline's handler reaped it
_child = 0
_reaped: int | None = None


def _kill_group(_signum: int = 0, _frame: object = None) -> None:
    os.killpg(0, signal.SIGKILL)  # the command, anything it started, and this process


def _at_deadline(_signum: int = 0, _frame: object = None) -> None:
    """SIGALRM: kill the group, unless the command has ended already. The alarm can fire after the
    command's exit, before the main flow reaped it or cancelled the timer (this process paused
    in between): that command finished, and must not be reported killed."""
    global _reaped
    if _child:
        try:
            pid, status = os.waitpid(_child, os.WNOHANG)
        except ChildProcessError:
            return  # reaped by the main flow: it ended before its deadline was handled
        if pid:
            _reaped = status
            return
    _kill_group()


def _die_with_this_process() -> None:
    """In the child, before exec: SIGKILL when this process (its parent) dies."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return


def _not_executed(exc: OSError) -> NoReturn:
    sys.stderr.write(f"{ERRNO_PREFIX}{exc.errno or 0}\n")
    sys.stderr.flush()
    os._exit(EXIT_NOT_EXECUTED)


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write("usage: child_watchdog.py DEADLINE -- COMMAND [ARG...]\n")
        os._exit(2)
    deadline, command = float(argv[0]), argv[2:]
    global _child
    signal.signal(signal.SIGTERM, _kill_group)
    signal.signal(signal.SIGALRM, _at_deadline)
    remaining = deadline - time.monotonic()
    if remaining <= 0:  # nothing is started: say so, as a child started past its start deadline does
        os._exit(EXIT_PAST_DEADLINE)
    parent = os.getpid()
    try:
        report_r, report_w = os.pipe()  # close-on-exec: the read sees EOF once the command runs
        pid = os.fork()
    except OSError as exc:  # no descriptor, no memory, too many processes: the command was not started
        _not_executed(exc)
    if pid == 0:
        try:
            os.close(report_r)
            _die_with_this_process()
            if os.getppid() != parent:
                os._exit(137)
            # As subprocess does (restore_signals): Python ignores these, and an ignored signal
            # stays ignored across exec.
            for name in ("SIGPIPE", "SIGXFSZ"):
                if hasattr(signal, name):
                    signal.signal(getattr(signal, name), signal.SIG_DFL)
            if time.monotonic() >= deadline:  # paused since the check above: start nothing
                os._exit(EXIT_PAST_DEADLINE)
            os.execvp(command[0], command)
        except OSError as exc:
            os.write(report_w, str(exc.errno or 0).encode())
        finally:
            os._exit(EXIT_NOT_EXECUTED)
    os.close(report_w)
    _child = pid
    # The timer counts from now: time spent since ``remaining`` was computed (a pause before the fork,
    # or here) is caught by the check after it is armed, which a pause after it cannot defeat.
    signal.setitimer(signal.ITIMER_REAL, max(deadline - time.monotonic(), 1e-6))
    if time.monotonic() >= deadline:
        _at_deadline()
    with os.fdopen(report_r, "rb") as report:
        failed = report.read()
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:  # the deadline's handler reaped it (it had ended)
        assert _reaped is not None
        status = _reaped
    signal.setitimer(signal.ITIMER_REAL, 0)
    if failed:
        _not_executed(OSError(int(failed.decode() or 0), ""))
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


if __name__ == "__main__":
    main(sys.argv[1:])
