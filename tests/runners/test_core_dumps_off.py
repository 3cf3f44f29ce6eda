"""rotator turns off its own core dumps (rotator/runners/cli.py `_no_core_dumps`, first thing in `main`).

A core of a rotation (`kill -ABRT` under `ulimit -c unlimited`) held the current management token eight
times. Every command now sets RLIMIT_CORE to 0 (soft and hard) and makes itself non-dumpable
(``prctl(PR_SET_DUMPABLE, 0)``): the kernel then makes its /proc/PID/environ, mem and fd root's, so
another process of the same user (an influxctl child, a hook) cannot read its environment
(VAULT_TOKEN, PGPASSWORD) either. Seen from outside, in a live `rotator daemon`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.config.policy_text import POLICY
from tests.harness import REPO

NOBODY = 65534

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)"),
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                       reason="runs rotator as nobody: needs root and setpriv"),
]


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A directory nobody owns, where nobody can reach it (pytest's tmp_path is root's 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="rotator-core-", dir="/tmp"))
    os.chown(directory, NOBODY, NOBODY)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _daemon(directory: Path, as_nobody: bool) -> subprocess.Popen[bytes]:
    policy = directory / "rotator.toml"
    policy.write_text(f'[rotator]\njournal = "{directory / "state" / "journal.db"}"\n'
                      + POLICY.format(name="p1", schedule="30d", extra=""))
    for path in (policy, directory):
        os.chown(path, NOBODY if as_nobody else 0, NOBODY if as_nobody else 0)
    prefix = ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups"] if as_nobody else []
    argv = [*prefix, sys.executable, "-m", "rotator.runners.cli", "daemon", "-c", str(policy),
            "--listen", "127.0.0.1:0"]
    env = {**os.environ, "ROTATOR_CACHE_DIR": str(directory / "cache"), "HOME": str(directory),
           "PYTHONPATH": str(REPO)}
    with open(directory / "daemon.err", "wb") as err:
        return subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err)


def _started(proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while "daemon started" not in log.read_text(errors="replace"):
        assert proc.poll() is None, f"the daemon exited {proc.returncode}: {log.read_text(errors='replace')}"
        assert time.monotonic() < deadline, log.read_text(errors="replace")
        time.sleep(0.1)


def _core_limit(pid: int) -> list[str]:
    line = next(line for line in Path(f"/proc/{pid}/limits").read_text().splitlines()
                if line.startswith("Max core file size"))
    return line.split()[4:6]


@pytest.mark.parametrize("as_nobody", [False, True], ids=["root", "nobody"])
def test_a_live_daemon_has_no_core_limit_and_is_not_dumpable(nobody_dir: Path, as_nobody: bool) -> None:
    proc = _daemon(nobody_dir, as_nobody)
    try:
        _started(proc, nobody_dir / "daemon.err")
        assert _core_limit(proc.pid) == ["0", "0"], "soft and hard: its children cannot raise it either"
        if as_nobody:
            # not dumpable: the kernel gives its /proc files to root, so nobody's other processes cannot read them
            assert os.stat(f"/proc/{proc.pid}/environ").st_uid == 0
            assert os.stat(f"/proc/{proc.pid}/stat").st_mode & 0o004, "stat stays world-readable"
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_the_check_is_not_vacuous_a_plain_process_of_nobody_is_dumpable(nobody_dir: Path) -> None:
    sleeper = subprocess.Popen(["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups",
                                "sleep", "30"])  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while os.stat(f"/proc/{sleeper.pid}/environ").st_uid != NOBODY:  # (until setpriv has switched)
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        sleeper.kill()
        sleeper.wait(timeout=10)
