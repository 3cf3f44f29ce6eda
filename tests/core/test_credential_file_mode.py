"""A credential file any user may read is warned about, once per path and process, and still used.

Every credential file is read by rotator/core/credentials.py `read_credential_file`: `{ file = ... }`
credentials (store auth tokens, AppRole secret ids, issuer tokens, webhook secrets), the Kubernetes
service account token, `bootstrap --token-file`. Not refused: a Kubernetes Secret volume is 0644 unless
its defaultMode says otherwise, and a rotation stopped over a mode would leave the old token in use.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from rotator.core.credentials import CredentialRef, read_credential_file
from tests.config.policy_text import POLICY
from tests.harness import REPO

TOKEN = "hvs.XXXXXXXXXXXXXXXXXXXXXXXX"
#: A Standard Webhooks secret `rotator validate` accepts (whsec_ + base64 of 24 bytes).
WEBHOOK_KEY = "whsec_YS13ZWJob29rLWtleS1vZi0yNC1ieXRlcw=="


def _credential(tmp_path: Path, mode: int, name: str = "vault-token") -> Path:
    path = tmp_path / name
    path.write_text(TOKEN + "\n")
    path.chmod(mode)
    return path


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "rotator.credentials"]


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o444], ids=oct)
def test_a_file_others_may_read_is_warned_about_once_and_still_used(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int) -> None:
    path = _credential(tmp_path, mode)
    with caplog.at_level(logging.WARNING):
        assert CredentialRef(file=path).resolve().reveal() == TOKEN
        assert CredentialRef(file=path).resolve().reveal() == TOKEN  # read at every use: one line all the same
    [warning] = _warnings(caplog)
    assert f"credential file {path} is readable by any user (mode {mode:04o})" in warning
    assert f"chmod 0400 {path}" in warning
    assert TOKEN not in caplog.text


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o640, 0o440], ids=oct)
def test_a_file_of_its_owner_or_group_only_is_read_without_a_word(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int) -> None:
    path = _credential(tmp_path, mode)
    with caplog.at_level(logging.DEBUG):
        assert CredentialRef(file=path).resolve().reveal() == TOKEN
    assert _warnings(caplog) == []


def test_a_link_is_judged_by_the_file_it_names_as_kubernetes_mounts_secrets(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A Secret volume's key is a link (0777 itself) into ..data: the mode that counts is the file's."""
    data = tmp_path / "..data"
    data.mkdir()
    _credential(data, 0o644, "token")
    (tmp_path / "token").symlink_to("..data/token")
    private = tmp_path / "private"
    private.mkdir()
    _credential(private, 0o400, "token")
    (tmp_path / "private-token").symlink_to("private/token")
    with caplog.at_level(logging.WARNING):
        CredentialRef(file=tmp_path / "token").resolve()
        CredentialRef(file=tmp_path / "private-token").resolve()
    [warning] = _warnings(caplog)
    assert f"credential file {tmp_path / 'token'} is readable by any user (mode 0644)" in warning


def test_each_reader_names_what_it_reads(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`bootstrap --token-file` and the Kubernetes service account token go through the same check."""
    path = _credential(tmp_path, 0o644, "first-token")
    with caplog.at_level(logging.WARNING):
        assert read_credential_file(path, "--token-file").decode().strip() == TOKEN
    [warning] = _warnings(caplog)
    assert warning.startswith(f"--token-file {path} is readable by any user (mode 0644)")


def _validate(tmp_path: Path, mode: int) -> subprocess.CompletedProcess[str]:
    key = tmp_path / "hook-key"
    key.write_text(WEBHOOK_KEY)
    key.chmod(mode)
    (tmp_path / "rotator.toml").write_text(
        '[[daemon.webhooks]]\nurl = "https://hooks.example/rotator"\nsecret = { file = "hook-key" }\n'
        + POLICY.format(name="p1", schedule="30d", extra="")
    )
    return subprocess.run([sys.executable, "-m", "rotator.runners.cli", "validate", str(tmp_path / "rotator.toml")],
                          capture_output=True, text=True, cwd=REPO, timeout=60, check=False)  # fmt: skip


def test_rotator_validate_says_it_of_a_webhook_secret_it_reads(tmp_path: Path) -> None:
    """`validate` reads each webhook secret (to check it): the warning shows there, before the daemon starts."""
    proc = _validate(tmp_path, 0o644)
    assert proc.returncode == 0, proc.stderr
    assert f"{tmp_path / 'hook-key'} is readable by any user (mode 0644)" in proc.stderr, proc.stderr
    assert "chmod 0400" in proc.stderr and WEBHOOK_KEY not in proc.stderr + proc.stdout
    quiet = _validate(tmp_path, 0o600)
    assert quiet.returncode == 0 and "readable by any user" not in quiet.stderr, quiet.stderr
