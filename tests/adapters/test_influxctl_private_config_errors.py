"""`rotator rotate` when influxctl's private config cannot be written (a full, unwritable or read-only
temporary directory), end to end on the fake influxctl: a clear error, not "internal error: OSError", and
a failed run that is closed (the mint never started a child), not one left open for recovery.

The unit tests of the error itself are in tests/adapters/test_influxctl_management_errors.py.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from rotator.adapters.influxctl import common
from rotator.runners import cli
from tests.fakes.fixtures import FakeInfluxctlFixture

POLICY = "mgmt"


def _policy_file(directory: Path, binary: Path) -> Path:
    path = directory / "rotator.toml"
    path.write_text(f"""[rotator]
journal = "journal.db"
[rotator.retry]
attempts = 2
base_delay = "1s"
max_delay = "1s"

[[policy]]
name = "{POLICY}"
schedule = "30d"
grace = "1h"
[policy.issuer]
type = "influxctl-management"
influxctl = {json.dumps(str(binary))}
[policy.issuer.profile]
product = "clustered"
host = "influxdb.example.test"
[[policy.store]]
type = "influxctl-profile"
config = "influxctl/config.toml"
profile = "default"
""")
    return path


def _rotator(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str, str]:
    code = cli.main([args[0], "-c", str(config), *args[1:]])
    out = capsys.readouterr()
    return code, out.out, out.err


def _status(capsys: pytest.CaptureFixture[str], config: Path) -> dict[str, Any]:
    code, out, err = _rotator(capsys, config, "status", "--output", "json")
    assert code == 0, err
    (status,) = json.loads(out)
    return dict(status)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES], ids=errno.errorcode.get)
def test_rotate_with_a_config_that_cannot_be_written_fails_cleanly_and_the_next_rotate_succeeds(
    fake_influxctl: FakeInfluxctlFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], code: int,
) -> None:  # fmt: skip
    temp_dir = tmp_path / "tmp"
    temp_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp_dir))
    config = _policy_file(tmp_path, fake_influxctl.binary)
    (tmp_path / "influxctl").mkdir()
    fake_influxctl.profile(tmp_path / "influxctl" / "config.toml", name="default", host="influxdb.example.test")
    first = tmp_path / "first"
    value, first_id = fake_influxctl.state.add_token("bootstrap")
    first.write_text(value)
    first.chmod(0o600)
    status, _, err = _rotator(capsys, config, "bootstrap", POLICY, "--token-file", str(first), "--token-id", first_id)
    assert status == 0, err

    # The temporary directory fails only for the mint: the plan's listing before it works, and so
    # does the listing after it that would find a token the mint made (there is none).
    real_run = common.InfluxctlCLI.run
    real_mkdtemp = tempfile.mkdtemp

    def failing_mkdtemp(*_args: Any, **_kwargs: Any) -> str:
        raise OSError(code, os.strerror(code))

    def run(self: common.InfluxctlCLI, command: Sequence[str], *args: Any, **kwargs: Any) -> str:
        if list(command[:2]) == ["management", "create"]:
            monkeypatch.setattr(tempfile, "mkdtemp", failing_mkdtemp)
            try:
                return real_run(self, command, *args, **kwargs)
            finally:
                monkeypatch.setattr(tempfile, "mkdtemp", real_mkdtemp)
        return real_run(self, command, *args, **kwargs)

    monkeypatch.setattr(common.InfluxctlCLI, "run", run)
    status, out, err = _rotator(capsys, config, "rotate", POLICY)
    assert status == 1, out + err
    assert "internal error" not in err and "OSError" not in err, err
    assert f"its private configuration could not be written in {temp_dir}" in err, err
    assert "no influxctl command was started" in err and "TMPDIR" in err, err
    assert value not in out + err
    assert list(temp_dir.iterdir()) == [], "a private config directory was left behind"
    after = _status(capsys, config)
    assert after["last_run_state"] == "failed", after
    assert (after["open_runs"], after["stuck_runs"], after["interrupted_runs"]) == (0, 0, 0), after
    assert after["current_token_id"] == first_id
    assert len(fake_influxctl.state.tokens()) == 1, "nothing was minted"

    monkeypatch.setattr(common.InfluxctlCLI, "run", real_run)  # the fault is gone
    status, out, err = _rotator(capsys, config, "rotate", POLICY)
    assert status == 0, out + err
    assert "recovering run" not in err, "the failed run was left for recovery"
    assert _status(capsys, config)["last_run_state"] == "published"
