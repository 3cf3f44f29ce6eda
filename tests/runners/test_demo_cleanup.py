"""`rotator demo` leaves nothing behind: not in the user's cache, not on SIGTERM/SIGHUP, not when
its environment stops it (a temporary directory that cannot run programs, an OpenBao that does not
start); and those environment problems are reported as such (exit 2), never as a bug.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import rotator.runners.demo as demo
import rotator.sandbox.openbao_dev as openbao_dev
from rotator.runners.cli import main

ROTATOR = Path(sys.executable).parent / "rotator"
CLEARED = ("PYTHON", "FAKE_INFLUXCTL_STATE", "ROTATOR_CACHE_DIR", "XDG_CACHE_HOME")


def _env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A fresh HOME and XDG_CACHE_HOME (nothing of the user's), and a fresh TMPDIR."""
    home, cache, tmp = tmp_path / "home", tmp_path / "xdg-cache", tmp_path / "tmp"
    for folder in (home, cache, tmp):
        folder.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(CLEARED)}
    return {**env, "HOME": str(home), "XDG_CACHE_HOME": str(cache), "TMPDIR": str(tmp)}, tmp


def _left_under(*folders: Path) -> list[str]:
    return sorted(str(p) for folder in folders for p in folder.rglob("*"))


def test_demo_writes_nothing_outside_its_temporary_directory(tmp_path: Path) -> None:
    env, tmp = _env(tmp_path)
    done = subprocess.run([str(ROTATOR), "demo"], cwd=tmp, env=env, capture_output=True, text=True, timeout=90,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "status" in done.stdout  # the nested validate and status ran (they write the status cache)
    assert _left_under(tmp_path / "home", tmp_path / "xdg-cache", tmp) == []


def _bao_children(pid: int) -> list[int]:
    """The bao processes ``pid`` started (their parent is ``pid``)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"server\0-dev" in cmdline:
            found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for(predicate: Callable[[], object], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: signal.Signals(s).name)
def test_a_stop_signal_cleans_up_like_ctrl_c(signum: int, tmp_path: Path) -> None:
    env, tmp = _env(tmp_path)
    proc = subprocess.Popen([str(ROTATOR), "demo"], cwd=tmp, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        # vault-token is written once OpenBao answers: both temporary directories exist then
        assert _wait_for(lambda: list(tmp.glob("rotator-demo-*/vault-token")), 60), "the demo did not start"
        servers = _bao_children(proc.pid)
        assert servers and list(tmp.glob("openbao-dev-*"))
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signum, err
    assert f"stopped by {signal.Signals(signum).name}" in err
    assert _left_under(tmp) == []
    assert not [pid for pid in servers if _running(pid)], "the OpenBao dev server outlived the demo"


def _launcher_not_executable(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a temporary directory mounted noexec: running the launcher fails with EACCES (root too)."""
    write = demo._write_launcher

    def written(workdir: Path, state_path: Path) -> Path:
        path = write(workdir, state_path)
        path.chmod(0o600)
        return path

    monkeypatch.setattr(demo, "_write_launcher", written)


def test_a_temporary_directory_that_cannot_run_programs_is_named_with_its_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    _launcher_not_executable(monkeypatch)
    handlers = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)]
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert f"the temporary directory {tmp_path} does not allow running programs" in err
    assert "fix: set TMPDIR to a directory that allows executables" in err
    assert "bug" not in err and "internal error" not in err
    assert _left_under(tmp_path) == []
    assert [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)] == handlers  # restored


def _fake_bao(folder: Path) -> Path:
    """A bao that logs its arguments, dev mode's root token line (the token from its environment) and
    unseal key line, then fails."""
    folder.mkdir()
    path = folder / "bao"
    path.write_text('#!/bin/sh\nfor a in "$@"; do echo "arg $a"; done\necho "Root Token: $BAO_DEV_ROOT_TOKEN_ID"\n'
                    'echo "Unseal Key: UNSEAL-SECRET"\n'
                    'echo "Error initializing listener: permission denied"\nexit 1\n', encoding="utf-8")
    path.chmod(0o700)
    return path


@pytest.mark.parametrize("how", ["exits", "not healthy in time"])
def test_an_openbao_that_does_not_start_is_named_with_what_to_check(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    if how == "exits":
        bao = str(_fake_bao(tmp_path / "bin"))
        monkeypatch.setattr(demo, "find_bao", lambda: bao)
    else:
        bao = openbao_dev.find_bao()
        monkeypatch.setattr(openbao_dev, "_STARTUP_TIMEOUT_S", 0.0)
    started: list[subprocess.Popen[bytes]] = []
    launch = openbao_dev._launch
    monkeypatch.setattr(openbao_dev, "_launch", lambda *a, **k: started.append(launch(*a, **k)) or started[-1])
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert f"rotator: error: the demo's OpenBao dev server ({bao}) did not start on 127.0.0.1" in err
    assert f"check that `{bao} server -dev` starts on this machine" in err
    assert "bug" not in err and "internal error" not in err
    if how == "exits":
        assert "bao exited with status 1" in err
        assert "  Error initializing listener: permission denied" in err and "read its log above" in err
        assert "Root Token: ***" in err and "Unseal Key: ***" in err and "arg -dev-root-token" not in err
        assert "UNSEAL-SECRET" not in err
    assert _left_under(tmp) == []
    assert started and all(p.poll() is not None for p in started)


def test_an_interrupted_start_stops_the_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C (or the demo's SIGTERM) while waiting for health: the server is not left running."""
    bao = tmp_path / "bao"
    bao.write_text("#!/bin/sh\nexec sleep 60\n", encoding="utf-8")
    bao.chmod(0o700)
    started: list[subprocess.Popen[bytes]] = []
    launch = openbao_dev._launch
    monkeypatch.setattr(openbao_dev, "_launch", lambda *a, **k: started.append(launch(*a, **k)) or started[-1])

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(openbao_dev, "_wait_healthy", interrupted)
    try:
        with pytest.raises(KeyboardInterrupt), openbao_dev.openbao_dev_server(bao=str(bao)):
            pass
        assert started and started[0].poll() is not None
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
