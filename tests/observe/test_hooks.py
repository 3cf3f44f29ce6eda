"""A command hook cannot outlive the daemon, nor its timeout while the daemon is paused.

Each test runs a CommandHook in a child Python (the daemon), whose hook (``/bin/sh``) starts a
grandchild in its process group and records both pids; the test then kills or pauses that child.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from rotator.config.daemon_config import HookSettings
from rotator.core import child_process
from rotator.observe.notify import CommandHook

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux only)")

ROOT = Path(__file__).resolve().parents[2]

#: the hook: a grandchild in its group, both pids written whole (renamed into place), then a wait
_HOOK = 'sleep 120 & echo "$$ $!" > pids.tmp && mv pids.tmp pids; wait'

#: the daemon: one CommandHook, its `hook` event printed as a JSON line; argv: directory, timeout
_DAEMON = f"""
import json, sys
from pathlib import Path
from rotator.config.daemon_config import HookSettings
from rotator.observe.notify import CommandHook

def emit(event):
    print(json.dumps({{k: event[k] for k in ("result", "exit_code", "error")}}), flush=True)

hook = CommandHook(HookSettings(command=["/bin/sh", "-c", {_HOOK!r}], timeout=sys.argv[2]), Path(sys.argv[1]),
                   emit=emit)
hook.submit({{"step": "published", "result": "ok", "policy": "p", "run_id": "r", "token_id": "t"}})
hook.close(120)
"""


def _state(pid: int) -> str:
    """The process's state letter (``/proc/PID/stat``); "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _alive(pid: int) -> bool:
    return _state(pid) not in ("", "Z", "X")  # a zombie has died: nobody reaped it yet


def _wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@contextmanager
def _daemon(tmp_path: Path, timeout: str) -> Iterator[tuple[subprocess.Popen[str], list[int]]]:
    """The daemon child and [hook pid, grandchild pid] once the hook runs; at the end, SIGKILL for
    every one of them still there, and for the hook's process group (the watchdog leads it)."""
    daemon = subprocess.Popen([sys.executable, "-c", _DAEMON, str(tmp_path), timeout], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    pids: list[int] = []
    group = 0
    try:
        _wait_for(lambda: (tmp_path / "pids").exists() or daemon.poll() is not None, 30, "the hook did not start")
        assert daemon.poll() is None, "the daemon ended before its hook started"
        pids.extend(int(word) for word in (tmp_path / "pids").read_text().split())
        group = os.getpgid(pids[0])
        yield daemon, pids
    finally:
        if daemon.poll() is None:
            daemon.kill()  # (SIGKILL ends a stopped process too)
            daemon.wait(timeout=10)
        if daemon.stdout is not None:
            daemon.stdout.close()
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if group:
            with suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)


def test_a_running_hook_and_its_group_die_when_the_daemon_is_killed_9(tmp_path: Path) -> None:
    """The hook, in a session of its own, was re-parented to init and ran on (past its timeout): a
    kill -9 of the daemon, or the OOM killer, left it behind with nothing left to kill it."""
    with _daemon(tmp_path, "60s") as (daemon, pids):
        assert child_process.WATCHDOG_MARGIN_S < 60, "the hook's own timeout cannot be what kills it here"
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=10)
        _wait_for(lambda: not any(_alive(pid) for pid in pids), 5,
                  "the hook or its grandchild outlived the daemon killed -9")


def test_a_hook_is_killed_at_its_timeout_while_the_daemon_is_paused(tmp_path: Path) -> None:
    """The hook's thread kills it at its timeout; while the daemon is stopped (SIGSTOP, a frozen VM)
    that thread does not run, and the hook ran on for as long as the pause lasted."""
    with _daemon(tmp_path, "1s") as (daemon, pids):
        daemon.send_signal(signal.SIGSTOP)
        _wait_for(lambda: _state(daemon.pid) == "T", 5, "the daemon did not stop")
        _wait_for(lambda: not any(_alive(pid) for pid in pids), 1 + child_process.WATCHDOG_MARGIN_S + 5,
                  "the hook or its grandchild ran on past its timeout while the daemon was paused")
        assert _state(daemon.pid) == "T", "killed while the daemon was still paused"
        daemon.send_signal(signal.SIGCONT)
        out, _ = daemon.communicate(timeout=30)
    (event,) = [json.loads(line) for line in out.splitlines()]
    assert event == {"result": "timeout", "exit_code": None, "error": "/bin/sh did not finish within 1s and was killed"}


def _run(command: list[str], directory: Path, events: list[dict[str, object]]) -> None:
    """Run one hook in this process, to its end; its `hook` event appended to ``events``."""
    hook = CommandHook(HookSettings.model_validate({"command": command, "timeout": "10s"}), directory,
                       emit=lambda event: events.append(dict(event)))
    hook.submit({"step": "published", "result": "ok", "policy": "p", "run_id": "r", "token_id": "t"})
    assert hook.close(10)


def test_a_hook_where_the_watchdog_cannot_run_runs_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The watchdog's self-test failed: the hook runs as it is (a child of this process), and ends and
    is reported as any hook."""
    monkeypatch.setattr(child_process, "_watchdog_works", False)
    script = tmp_path / "hook.sh"
    script.write_text('echo "$PPID" > parent; echo out; exit 3\n')
    events: list[dict[str, object]] = []
    _run(["/bin/sh", str(script)], tmp_path, events)
    assert int((tmp_path / "parent").read_text()) == os.getpid(), "no watchdog in between"
    ((result, code, output, error),) = [(e["result"], e["exit_code"], e["output_chars"], e["error"]) for e in events]
    assert (result, code, output, error) == ("failed", 3, 4, "/bin/sh exited with status 3")


def test_a_watched_hook_reports_its_exit_code_and_a_command_that_cannot_start(tmp_path: Path) -> None:
    """Under the watchdog, the exit code is the hook's, and a program that cannot be executed is said
    so as Popen said it (not as the watchdog's exit status 127), with no output counted."""
    script = tmp_path / "hook.sh"
    script.write_text('echo "$PPID" > parent; echo out; exit 3\n')
    events: list[dict[str, object]] = []
    for command in (["/bin/sh", str(script)], [str(tmp_path / "missing-hook")]):
        _run(command, tmp_path, events)
    if child_process._watchdog_works:
        assert int((tmp_path / "parent").read_text()) != os.getpid(), "the hook runs under the watchdog"
    ran, missing = [(e["result"], e["exit_code"], e["output_chars"], e["error"]) for e in events]
    assert ran == ("failed", 3, 4, "/bin/sh exited with status 3")
    assert missing == ("failed", None, 0, f"cannot start {tmp_path / 'missing-hook'}: No such file or directory")
