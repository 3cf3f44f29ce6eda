"""A ``{ file = ... }`` credential is read only from a regular file of a credential's size.

Read at every use (the daemon inside a lease, `rotator validate`, the Lambda function): a FIFO would
block the reader until a writer came, a device such as /dev/zero would be read until memory ran out.
Symbolic links stay allowed: Kubernetes mounts a secret's keys as links into a ``..data`` directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rotator.core.credentials import MAX_CREDENTIAL_BYTES, CredentialRef
from rotator.core.errors import ConfigError
from tests.config.policy_text import POLICY
from tests.harness import REPO

#: The reads below take milliseconds; a reader that waits for a FIFO's writer is released after this.
WAIT_S = 5.0


def _resolve_in_a_thread(path: Path) -> ConfigError | str:
    """What resolving ``path`` gives (the error, or the value), failing the test instead of hanging when
    the read blocks: the test then opens the FIFO for writing and closes it, so that the reader ends."""
    outcome: list[ConfigError | str] = []

    def read() -> None:
        try:
            outcome.append(CredentialRef(file=path).resolve().reveal())
        except ConfigError as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(WAIT_S)
    if reader.is_alive():
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))  # be the writer it waits for: EOF, and it ends
        reader.join(WAIT_S)
        pytest.fail(f"reading the credential file {path} blocked for {WAIT_S} s")
    return outcome[0]


def test_a_fifo_is_refused_at_once_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "vault-token"
    os.mkfifo(fifo)
    outcome = _resolve_in_a_thread(fifo)
    assert isinstance(outcome, ConfigError), outcome
    assert str(outcome) == f"cannot read credential file {fifo}: it is a FIFO (named pipe), not a regular file"
    assert "regular file" in outcome.hint


@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero"])
def test_a_device_is_refused(device: str) -> None:
    """/dev/zero in a child whose address space is bounded: read to its end, it ends in a MemoryError
    (not a ConfigError) instead of exhausting the machine running the tests."""
    if not Path(device).exists():
        pytest.skip(f"no {device} here")
    probe = f"""
import resource
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from pathlib import Path
from rotator.core.credentials import CredentialRef
from rotator.core.errors import ConfigError
try:
    CredentialRef(file=Path({device!r})).resolve()
except ConfigError as exc:
    print(exc)
    print(exc.hint)
"""
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60,
                          check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    message, hint = proc.stdout.splitlines()
    assert message == f"cannot read credential file {device}: it is a character device, not a regular file"
    assert "regular file" in hint


def test_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    with pytest.raises(ConfigError, match=r"credential file .*secrets: it is a directory, not a regular file"):
        CredentialRef(file=Path("secrets")).resolve(tmp_path)


def test_a_file_larger_than_any_credential_is_refused_without_its_content(tmp_path: Path) -> None:
    (tmp_path / "at-the-bound").write_text("k" * MAX_CREDENTIAL_BYTES)
    assert len(CredentialRef(file=Path("at-the-bound")).resolve(tmp_path).reveal()) == MAX_CREDENTIAL_BYTES
    (tmp_path / "too-large").write_text("k" * (MAX_CREDENTIAL_BYTES + 1))
    with pytest.raises(ConfigError, match=r"too-large is larger than 64 KiB") as caught:
        CredentialRef(file=Path("too-large")).resolve(tmp_path)
    assert "kkkk" not in str(caught.value) and "names the file" in caught.value.hint


def test_a_file_that_says_it_is_empty_is_still_read_only_up_to_the_bound() -> None:
    """A procfs file says it has 0 bytes (fstat) and reads far more: the bound is on what is read too."""
    big = Path("/proc/kallsyms")
    if not os.access(big, os.R_OK):
        pytest.skip("no /proc/kallsyms this user may read here")
    with pytest.raises(ConfigError, match="is larger than 64 KiB"):
        CredentialRef(file=big).resolve()


def test_symbolic_links_to_a_regular_file_are_followed_as_kubernetes_mounts_them(tmp_path: Path) -> None:
    mount = tmp_path / "mount"
    (mount / "..2024_01_01_00_00_00.1").mkdir(parents=True)
    (mount / "..2024_01_01_00_00_00.1" / "token").write_text("tok-123\n")
    (mount / "..data").symlink_to("..2024_01_01_00_00_00.1")
    (mount / "token").symlink_to("..data/token")
    assert CredentialRef(file=mount / "token").resolve().reveal() == "tok-123"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    (tmp_path / "to-a-pipe").symlink_to(fifo)
    outcome = _resolve_in_a_thread(tmp_path / "to-a-pipe")
    assert isinstance(outcome, ConfigError) and "FIFO" in str(outcome), outcome


def test_validate_with_a_fifo_as_webhook_secret_ends(tmp_path: Path) -> None:
    """`rotator validate` reads each webhook secret (rotator/runners/cli.py _check_webhook_secrets): one it
    cannot read is a warning, and a FIFO is one it cannot read, not one it waits on."""
    os.mkfifo(tmp_path / "hook-key")
    (tmp_path / "rotator.toml").write_text(
        '[[daemon.webhooks]]\nurl = "https://hooks.example/rotator"\nsecret = { file = "hook-key" }\n'
        + POLICY.format(name="p1", schedule="30d", extra="")
    )
    try:
        proc = subprocess.run([sys.executable, "-m", "rotator.runners.cli", "validate", str(tmp_path / "rotator.toml")],
                              capture_output=True, text=True, cwd=REPO, timeout=30, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("rotator validate blocked on a FIFO named as a webhook secret")
    assert proc.returncode == 0, proc.stderr
    assert "a webhook secret was not checked" in proc.stderr and "FIFO (named pipe)" in proc.stderr, proc.stderr
