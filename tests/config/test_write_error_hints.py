"""What a failed write of `rotator bundle`'s output says, and its exit code (rotator/config/policy_source.py
`output_write_error`, used by the bundle and by `report --output-file`).

Finding: every OSError was a ConfigError (exit 2, "invalid input") whose fix was "pass -o/--bundle a file
path in an existing directory this user may write", also for an I/O error or a full disk, where the path
given was right and another one would not help.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from rotator.config.policy_source import disk_write_hint, output_write_error
from rotator.core.errors import ConfigError, TransientError
from rotator.runners.cli import main as cli

POLICY = """
[[policy]]
name = "mgmt"
schedule = "7d"
[policy.issuer]
type = "influxctl-management"
auth = { method = "mgmt_token", token = { file = "secrets/mgmt" } }
[policy.issuer.profile]
product = "clustered"
host = "cluster.example.com"
[[policy.store]]
type = "aws-secretsmanager"
secret_id = "influx/mgmt"
region = "us-east-1"
"""

ACCESS_HINT = "pass -o/--bundle a file path in an existing directory this user may write"


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "rotator.toml"
    path.write_text(POLICY)
    return path


def _failing(err: int) -> Any:
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(err, os.strerror(err))

    return fail


def _bundle(policy_file: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli(["bundle", str(policy_file), "-o", str(out)])
    return code, capsys.readouterr().err


def test_an_io_error_is_said_so_and_exits_1(
        policy_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / "out.json"
    out.write_text("the previous bundle")
    monkeypatch.setattr(os, "fsync", _failing(errno.EIO))
    code, err = _bundle(policy_file, out, capsys)
    assert code == 1, err
    assert f"rotator: error: cannot write -o/--bundle {out}: Input/output error" in err
    assert (f"fix: the file system that holds {tmp_path} failed the write (EIO: Input/output error): check its "
            "health") in err
    assert "run the same command again" in err
    assert "existing directory" not in err and "may write" not in err
    assert out.read_text() == "the previous bundle"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "rotator.toml"]  # no temporary file left


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EDQUOT], ids=["full", "quota"])
def test_a_full_file_system_is_said_so_and_exits_1(
        policy_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], err: int) -> None:  # fmt: skip
    monkeypatch.setattr(os, "fsync", _failing(err))
    code, text = _bundle(policy_file, tmp_path / "out.json", capsys)
    assert code == 1, text
    assert (f"fix: free space (or quota) on the file system that holds {tmp_path}, then run the same command "
            "again") in text
    assert ACCESS_HINT not in text


def test_a_refused_write_keeps_the_access_hint_and_exits_2(
        policy_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setattr(os, "replace", _failing(errno.EACCES))
    code, err = _bundle(policy_file, tmp_path / "out.json", capsys)
    assert code == 2, err
    assert "Permission denied" in err and f"fix: {ACCESS_HINT}" in err
    assert "file system" not in err


def test_a_missing_directory_keeps_the_existing_directory_hint_and_exits_2(
        policy_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _bundle(policy_file, tmp_path / "no-such-dir" / "out.json", capsys)
    assert code == 2, err
    assert "No such file or directory" in err and f"fix: {ACCESS_HINT}" in err


@pytest.mark.parametrize(("err", "kind"), [
    (errno.EACCES, ConfigError), (errno.EPERM, ConfigError), (errno.EROFS, ConfigError),
    (errno.ENOENT, ConfigError), (errno.ENOTDIR, ConfigError), (errno.EISDIR, ConfigError),
    (errno.ENOSPC, TransientError), (errno.EDQUOT, TransientError), (errno.EIO, TransientError),
    (errno.EFBIG, TransientError),
])  # fmt: skip
def test_output_write_error_picks_the_error_by_errno(tmp_path: Path, err: int, kind: type) -> None:
    error = output_write_error(OSError(err, os.strerror(err)), tmp_path / "out", "-o", hint="the caller's hint")
    assert type(error) is kind
    assert (error.hint == "the caller's hint") == (kind is ConfigError)


def test_a_file_size_limit_is_not_called_a_failing_file_system(tmp_path: Path) -> None:
    hint = disk_write_hint(OSError(errno.EFBIG, os.strerror(errno.EFBIG)), tmp_path)
    assert "`ulimit -f`" in hint and "run the same command again" in hint and "health" not in hint


def test_an_os_error_without_errno_still_names_what_failed(tmp_path: Path) -> None:
    hint = disk_write_hint(OSError("something odd"), tmp_path)
    assert f"the file system that holds {tmp_path} failed the write (OSError)" in hint
