"""`rotator report --output-file` (rotator/runners/cli.py `_write_whole`): the file is its owner's alone,
and its temporary name is nobody's to guess.

A report names token ids and holds masked error texts: it was created under the umask (0666 under
umask 000). Its temporary file was `.{name}.{pid}.tmp`: a file planted at that name made the report fail.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from rotator.core.journal import open_journal
from rotator.runners import cli

POLICY = """[rotator]
journal = "journal.db"

[[policy]]
name = "p1"
schedule = "30d"
[policy.issuer]
type = "influxctl-management"
[policy.issuer.profile]
product = "clustered"
host = "h.example"
[[policy.store]]
type = "vault-kv2"
url = "https://vault.example:8200"
path = "influx/mgmt"
[policy.store.auth]
method = "token"
token = { env = "VAULT_TOKEN" }
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    """p1 with its journal, made and empty: a report that needs nothing else."""
    path = tmp_path / "rotator.toml"
    path.write_text(POLICY)
    open_journal(f"sqlite:///{tmp_path / 'journal.db'}").close()
    return path


def _report(policy_file: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["-c", str(policy_file), "report", "--format", "csv", "--output-file", str(out)])
    assert code == 0, capsys.readouterr().err


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_report_is_created_0600_whatever_the_umask(
        policy_file: Path, tmp_path: Path, umask_000: None, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "q1.csv"
    _report(policy_file, out, capsys)
    assert _mode(out) == 0o600
    assert "record" in out.read_text()


def test_a_report_it_replaces_is_0600_after(
        policy_file: Path, tmp_path: Path, umask_000: None, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "q1.csv"
    out.write_text("last quarter's report")
    out.chmod(0o666)
    _report(policy_file, out, capsys)
    assert _mode(out) == 0o600 and "last quarter" not in out.read_text()


def test_a_file_planted_at_the_old_temporary_name_cannot_make_it_fail(
        policy_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "q1.csv"
    victim = tmp_path / "victim"
    victim.write_text("someone else's file")
    planted = tmp_path / f".q1.csv.{os.getpid()}.tmp"
    planted.symlink_to(victim)
    _report(policy_file, out, capsys)
    assert "record" in out.read_text() and not out.is_symlink()
    assert victim.read_text() == "someone else's file" and planted.is_symlink(), "left alone"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == [planted.name], "no temporary left"


def test_a_linked_output_file_still_has_its_target_replaced(
        policy_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """As before (rotator/runners/cli.py `_write_whole`): the link is the operator's way to name the file."""
    (tmp_path / "reports").mkdir()
    target = tmp_path / "reports" / "current.csv"
    target.write_text("last quarter's report")
    link = tmp_path / "q1.csv"
    link.symlink_to(target)
    _report(policy_file, link, capsys)
    assert link.is_symlink() and "record" in target.read_text() and _mode(target) == 0o600
    assert [p.name for p in (tmp_path / "reports").iterdir()] == ["current.csv"], "the temporary beside the target"


def test_report_to_dev_stdout_reaches_a_pipe_and_a_file_opened_for_append(policy_file: Path, tmp_path: Path) -> None:
    """`--output-file /dev/stdout` resolved to /proc/self/fd/1: in a pipe, to `pipe:[...]`, and the
    report failed ("cannot write"); after `>> app.log`, to app.log, which the replacement wiped and left
    0600. This process's stdout is written to as the shell made it."""
    import subprocess
    import sys

    argv = [sys.executable, "-m", "rotator.runners.cli", "-c", str(policy_file), "report", "--format", "csv",
            "--output-file", "/dev/stdout"]
    piped = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.startswith("record,"), piped.stdout[:200]
    log = tmp_path / "app.log"
    log.write_text("an earlier line\n")
    log.chmod(0o644)
    with log.open("a") as appended:
        done = subprocess.run(argv, stdout=appended, stderr=subprocess.PIPE, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    text = log.read_text()
    assert text.startswith("an earlier line\nrecord,"), text[:200]
    assert stat.S_IMODE(log.stat().st_mode) == 0o644


# ------------------------------------------------------------------------------ a write that fails
# Finding: every OSError was a ConfigError (exit 2, "invalid input") whose fix was "pass a --output-file in an
# existing directory this user may write", also for an I/O error or a full disk, where the path was right.

_ACCESS_HINT = "fix: pass a --output-file in an existing directory this user may write"


def _failing(err: int) -> Any:
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(err, os.strerror(err))

    return fail


def _failed_report(policy_file: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(["-c", str(policy_file), "report", "--format", "csv", "--output-file", str(out)])
    return code, capsys.readouterr().err


def test_an_io_error_writing_the_report_is_said_so_and_exits_1(
        policy_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    (tmp_path / "reports").mkdir()
    target = tmp_path / "reports" / "q1.csv"
    target.write_text("last quarter's report")
    link = tmp_path / "q1.csv"
    link.symlink_to(target)
    monkeypatch.setattr(os, "fsync", _failing(errno.EIO))
    code, err = _failed_report(policy_file, link, capsys)
    assert code == 1, err
    assert f"rotator: error: cannot write --output-file {link}: Input/output error" in err
    # the directory the write went to: the link's target's
    assert (f"fix: the file system that holds {tmp_path / 'reports'} failed the write (EIO: Input/output error): "
            "check its health") in err
    assert "run the same command again" in err and "existing directory" not in err
    assert target.read_text() == "last quarter's report"
    assert [p.name for p in (tmp_path / "reports").iterdir()] == ["q1.csv"], "no temporary file left"


def test_a_full_disk_under_the_report_is_said_so_and_exits_1(
        policy_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setattr(os, "fsync", _failing(errno.ENOSPC))
    code, err = _failed_report(policy_file, tmp_path / "q1.csv", capsys)
    assert code == 1, err
    assert (f"fix: free space (or quota) on the file system that holds {tmp_path}, then run the same command "
            "again") in err
    assert _ACCESS_HINT not in err


def test_a_refused_report_write_keeps_the_access_hint_and_exits_2(
        policy_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setattr(os, "replace", _failing(errno.EACCES))
    code, err = _failed_report(policy_file, tmp_path / "q1.csv", capsys)
    assert code == 2, err
    assert "Permission denied" in err and _ACCESS_HINT in err
    assert "file system" not in err


def test_a_report_in_a_missing_directory_keeps_the_existing_directory_hint_and_exits_2(
        policy_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _failed_report(policy_file, tmp_path / "no-such-dir" / "q1.csv", capsys)
    assert code == 2, err
    assert "No such file or directory" in err and _ACCESS_HINT in err
