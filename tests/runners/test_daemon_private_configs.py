"""No private influxctl config (it holds the credential in use) outlives the rotator process that made it.

A thread may be inside an influxctl call when its process ends: a worker of a run the daemon parks
(``os._exit`` after shutdown_timeout), or a daemon thread (the inventory) at a normal exit. Its
directory then stayed: with its lock released, for the next process's sweep; caught mid-removal (its
lock file unlinked first, the rest not yet), for _UNLOCKED_GRACE_S, which the sweeps spare (seen in
CI: test_daemon.py's parked run left one that the restarted daemon did not remove).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from rotator.adapters.influxctl import common
from rotator.core.errors import TransientError
from tests.harness import REPO

#: A process with a thread in an influxctl call: ``inside`` its call (the child running), or ``removing``
#: its config, the lock file unlinked already (rmtree's order on some file systems), when the process
#: ends: ``parked`` (the daemon's os._exit, through cmd_daemon) or ``normal`` (a daemon thread at exit).
SCRIPT = r'''
import argparse, shutil, sys, threading, time
from pathlib import Path
from rotator.adapters.influxctl import common
from rotator.runners import daemon

mode, end = sys.argv[1], sys.argv[2]
reached = threading.Event()


def call():
    with common.private_config('[profiles.rotator]\ntoken = "M.V1.not-a-real-token"\n'):
        if mode == "inside":
            reached.set()
            time.sleep(60)


if mode == "removing":
    real_rmtree = shutil.rmtree

    def slow_rmtree(path, *args, **kwargs):
        if threading.current_thread().name == "call":
            (Path(path) / "lock").unlink()
            reached.set()
            time.sleep(1)
        real_rmtree(path, *args, **kwargs)

    shutil.rmtree = slow_rmtree

thread = threading.Thread(target=call, name="call", daemon=end == "normal")


class Parked:
    """A daemon whose serve() returns with a run parked: its worker is in the call."""
    policies = ()
    exit_status = 0

    def __init__(self, *args, **kwargs):
        pass

    def start(self):
        pass

    def serve(self):
        thread.start()
        if not reached.wait(30):
            sys.exit(3)
        return True


if end == "parked":
    daemon.Daemon = Parked
    sys.exit(daemon.cmd_daemon(argparse.Namespace(listen=None, config="unused.toml")))
thread.start()
if not reached.wait(30):
    sys.exit(3)
'''


@pytest.mark.parametrize("end", ["parked", "normal"])
@pytest.mark.parametrize("mode", ["inside", "removing"])
def test_a_process_that_ends_with_a_thread_in_an_influxctl_call_leaves_no_private_config(
        tmp_path: Path, mode: str, end: str) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    env.update(PYTHONPATH=str(REPO), TMPDIR=str(tmpdir))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, mode, end], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert list(tmpdir.glob("rotator-influxctl-*")) == [], "a private config (it holds a token) outlived its process"
    assert "could not remove" not in proc.stderr, proc.stderr


@pytest.fixture
def own_configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh record of this process's configs (remove_own_configs closes it for good), in tmp_path."""
    monkeypatch.setattr(common, "_OWN_CONFIGS", common._OwnConfigs())
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_a_call_whose_config_the_end_removed_finishes_quietly_and_no_new_call_starts(
        own_configs: Path, caplog: pytest.LogCaptureFixture) -> None:
    entered, leave = threading.Event(), threading.Event()
    seen: list[Path] = []
    failures: list[BaseException] = []

    def call() -> None:
        try:
            with common.private_config('token = "x"\n') as path:
                seen.append(path)
                entered.set()
                leave.wait(10)
        except BaseException as exc:  # noqa: BLE001  (reported by the test's thread)
            failures.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    assert entered.wait(10)
    caplog.set_level(logging.DEBUG, logger="rotator.adapters.influxctl")
    common.remove_own_configs()
    assert not seen[0].parent.exists(), "removed while the call is still inside"
    with pytest.raises(TransientError, match="rotator is ending"), common.private_config("x = 1\n"):
        pass
    assert list(own_configs.glob("rotator-influxctl-*")) == [], "the refused call made no directory"
    leave.set()
    thread.join(10)
    assert failures == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "nothing to warn of: the end removed it"


def test_the_end_waits_for_a_call_removing_its_config(own_configs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A call mid-way through its removal (its lock file gone) is let finish, not cut off, by the end."""
    halfway, resume = threading.Event(), threading.Event()
    real_rmtree = common.shutil.rmtree

    def paused_rmtree(path: Path, *args: object, **kwargs: object) -> None:
        if threading.current_thread().name == "call":
            (Path(path) / "lock").unlink()
            halfway.set()
            resume.wait(10)
        real_rmtree(path)

    monkeypatch.setattr(common.shutil, "rmtree", paused_rmtree)

    def one_call() -> None:
        with common.private_config("x = 1\n"):
            pass

    call = threading.Thread(target=one_call, name="call")
    call.start()
    assert halfway.wait(10)
    ending = threading.Thread(target=common.remove_own_configs)
    ending.start()
    ending.join(0.3)
    assert ending.is_alive(), "the end waits for the removal in progress"
    resume.set()
    call.join(10)
    ending.join(10)
    assert list(own_configs.glob("rotator-influxctl-*")) == []
