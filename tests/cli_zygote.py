"""`python -m rotator.runners.cli ...` for the tests, without paying the interpreter's start and imports each time.

Most of a CLI call's CPU in the tests was its start: the interpreter, pydantic, hvac, requests, the engine
(~0.4 s of ~0.5 s a call, ~1,000 calls a run: a quarter of the suite's CPU). A zygote process per test worker
imports all that once; each call is a child forked from it. The child is a process of its own, as before:
its own pid, environment, working directory, stdin from /dev/null, stdout and stderr to files, exit code or
the signal that ended it (a crash hook's SIGKILL), its children dying with it (``die_with_parent``), a
timeout that kills it. What it shares with the zygote is modules already imported, and nothing else: no
module of rotator reads the environment when it is imported (tests/runners/test_cli_zygote.py checks that),
and ``tempfile``'s cached directory is dropped (each scenario has its own).

Tests about the process itself (its start, what it imports, signals from the terminal, kill -9 of a group)
start a real ``python -m rotator.runners.cli`` as before. ``ROTATOR_TEST_CLI_FORK=0`` makes every call do so.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from rotator.core.child_process import die_with_parent

REPO = Path(__file__).resolve().parents[1]
#: What the zygote imports before it serves: what `bootstrap`, `rotate`, `recover`, `revoke-expired`,
#: `status`, `validate` and `inventory` load for the scenarios' stores and issuers.
PRELOAD = (
    "rotator.runners.cli",
    "rotator.config.policy",
    "rotator.core.engine",
    "rotator.core.journal",
    "rotator.adapters.vault.kv2",
    "rotator.adapters.influxctl.management",
    "rotator.adapters.influxctl.database",
    "rotator.adapters.influxctl.profile",
    "rotator.adapters.http.common",
    "hvac",
    "requests",
    "httpx",
)


# -- the zygote (its own process) ------------------------------------------------------------------------------
def _serve(listener: socket.socket) -> dict[str, Any]:
    """Answer requests until stdin closes (the test worker ended); returns only in a forked child, with the
    request it is to run."""
    sel = selectors.DefaultSelector()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # (a handler, so that the wakeup fd is written)
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(sys.stdin.fileno(), selectors.EVENT_READ, "stdin")
    sel.register(wake_r, selectors.EVENT_READ, "child")
    waiting: dict[int, socket.socket] = {}
    # a child dies with the zygote (SIGKILL), as a subprocess.run child is killed by its caller's timeout: a
    # zygote killed mid-call leaves no CLI run acting on a scenario the test has left (resolved here, before any
    # fork: the function a child calls takes no lock)
    with_zygote = die_with_parent()
    while True:
        for key, _ in sel.select():
            if key.data == "stdin":
                if not os.read(sys.stdin.fileno(), 4096):
                    os._exit(0)
            elif key.data == "accept":
                conn, _ = listener.accept()
                with conn.makefile("rb") as stream:
                    request = json.loads(stream.readline())
                pid = os.fork()
                if pid == 0:
                    if with_zygote is not None:
                        with_zygote()
                    sel.close()
                    for fd in (wake_r, wake_w, listener.fileno(), *(c.fileno() for c in waiting.values())):
                        os.close(fd)
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    request["answer_fd"] = conn.detach()
                    return request
                waiting[pid] = conn
                try:
                    conn.sendall(f"{pid}\n".encode())
                except OSError:  # the caller gave up meanwhile (its timeout): nobody waits for this call
                    os.kill(pid, signal.SIGKILL)
            else:
                os.read(wake_r, 4096)
        while waiting:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            conn = waiting.pop(pid, None)
            if conn is not None:
                try:
                    conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
                except OSError:  # the test stopped waiting (its timeout killed the child)
                    pass
                conn.close()


def _become(request: dict[str, Any]) -> list[str]:
    """The forked child: the process `python -m rotator.runners.cli ARGS` would be (cwd, environment, stdio)."""
    os.close(request["answer_fd"])
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    tempfile.tempdir = None  # gettempdir() caches the zygote's; the child's TMPDIR is the scenario's own
    sys.path[0] = request["cwd"]  # as `python -m` puts the working directory first
    for fd, (path, flags) in enumerate(((os.devnull, os.O_RDONLY),
                                        (request["stdout"], os.O_WRONLY | os.O_TRUNC),
                                        (request["stderr"], os.O_WRONLY | os.O_TRUNC))):
        try:
            opened = os.open(path, flags)
        except OSError:  # the caller gave up and removed its output files: nobody waits for this call
            os._exit(70)
        os.dup2(opened, fd)
        os.close(opened)
    sys.argv = [str(REPO / "rotator" / "runners" / "cli.py"), *request["args"]]
    return list(request["args"])


def _zygote_main() -> None:
    for name in PRELOAD:
        __import__(name)
    directory = tempfile.mkdtemp(prefix="cli-zygote-")
    path = os.path.join(directory, "socket")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    print(path, flush=True)
    request = _serve(listener)
    args = _become(request)
    from rotator.runners import cli

    sys.exit(cli.main(args))


# -- the test worker's side ------------------------------------------------------------------------------------
class _Zygote:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._path = ""

    def address(self) -> str:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                env = {**os.environ, "PYTHONPATH": str(REPO)}
                self._proc = subprocess.Popen([sys.executable, "-m", "tests.cli_zygote"], cwd=REPO, env=env,
                                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                assert self._proc.stdout is not None
                self._path = self._proc.stdout.readline().strip()
                assert self._path, "the CLI zygote did not start"
            return self._path


_ZYGOTE = _Zygote()


def forking() -> bool:
    return os.environ.get("ROTATOR_TEST_CLI_FORK", "1") != "0"


def run_cli(argv: list[str], *, env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout,
    stdin=DEVNULL)`` for ``argv`` = ``[sys.executable, "-m", "rotator.runners.cli", *args]``, run as a child of
    the zygote. (Its output goes through files in the zygote's own directory, outside every scenario's.)"""
    assert argv[:3] == [sys.executable, "-m", "rotator.runners.cli"], argv
    if not forking():
        return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    address = _ZYGOTE.address()
    out, err = (Path(tempfile.mkstemp(dir=os.path.dirname(address), prefix=f"{n}-")[1]) for n in ("out", "err"))
    request = {"args": argv[3:], "env": env, "cwd": str(cwd), "stdout": str(out), "stderr": str(err)}
    pid = None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(address)
            conn.sendall(json.dumps(request).encode() + b"\n")
            conn.settimeout(timeout)
            with conn.makefile("rb") as answer:
                try:
                    pid = int(answer.readline())
                    line = answer.readline()
                except TimeoutError:
                    if pid is not None:
                        os.kill(pid, signal.SIGKILL)
                    raise subprocess.TimeoutExpired(argv, timeout, out.read_text(), err.read_text()) from None
        assert line, "the CLI zygote went away (its child died with it)"
        return subprocess.CompletedProcess(argv, int(line), out.read_text(), err.read_text())
    finally:
        out.unlink()
        err.unlink()


if __name__ == "__main__":
    _zygote_main()
