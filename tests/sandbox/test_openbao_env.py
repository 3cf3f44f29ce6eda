"""The sandbox's children get an allow-list of rotator's environment, never its credentials.

`rotator demo` and the tests start an OpenBao dev server (rotator/sandbox/openbao_dev.py) and run the
influxctl simulator (rotator/runners/demo.py `_simulator_version`); docs/security.md: children get an
allow-list. They got everything but VAULT_*/BAO_*, and the simulator everything.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from rotator.runners import demo
from rotator.sandbox import openbao_dev

PROC = Path("/proc")
#: What rotator's environment may hold and no sandbox child has use for.
CREDENTIALS = {
    "AWS_SECRET_ACCESS_KEY": "sentinel-aws-secret",
    "PGPASSWORD": "sentinel-pg-password",
    "ROTATOR_WEBHOOK_KEY": "sentinel-webhook-key",
    "VAULT_TOKEN": "sentinel-vault-token",
    "BAO_ADDR": "http://sentinel.invalid:8200",
    "INFLUXCTL_PROFILE": "sentinel-profile",
}
#: What they keep: a locale, a time zone, a search path.
KEPT = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC"}


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**CREDENTIALS, **KEPT}.items():
        monkeypatch.setenv(name, value)


def _environ(pid: int) -> dict[str, str]:
    raw = (PROC / str(pid) / "environ").read_bytes()
    return dict(entry.split("=", 1) for entry in raw.decode().split("\0") if "=" in entry)


@pytest.mark.skipif(not (PROC / "self" / "environ").is_file(), reason="needs /proc (Linux)")
def test_the_dev_server_gets_none_of_rotator_s_credentials(environment: None, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[subprocess.Popen[bytes]] = []
    launch = openbao_dev._launch

    def recorded(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        started.append(launch(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(openbao_dev, "_launch", recorded)
    with openbao_dev.openbao_dev_server() as (_url, root_token):
        (server,) = started
        env = _environ(server.pid)
    passed = sorted(name for name in CREDENTIALS if name in env)
    assert passed == [], f"the dev server got {passed}"
    assert not [name for name, value in env.items() if value in CREDENTIALS.values()]
    assert {name: env.get(name) for name in KEPT} == KEPT
    assert "PATH" in env and Path(env["HOME"]).name.startswith("openbao-dev-"), "HOME: its temp directory"
    given_its_root_token = env.get("BAO_DEV_ROOT_TOKEN_ID") == root_token  # a bool: a failure must not print it
    assert given_its_root_token
    allowed = openbao_dev.ENV_KEEP | {"HOME", "BAO_DEV_ROOT_TOKEN_ID"}
    assert sorted(n for n in env if n not in allowed and not n.startswith("LC_")) == [], "an allow-list"


def test_the_demo_runs_its_simulator_as_the_issuer_does(environment: None, tmp_path: Path) -> None:
    """Its `--version` run: with influxctl's allow-list (rotator/adapters/influxctl/common.py), not rotator's
    environment. A launcher that prints what it got stands in for the simulator's."""
    launcher = tmp_path / "influxctl-simulator"
    launcher.write_text("#!/bin/sh\nexec env\n")
    launcher.chmod(0o700)
    env = dict(line.split("=", 1) for line in demo._simulator_version(launcher).splitlines() if "=" in line)
    passed = sorted(name for name in CREDENTIALS if name in env)
    assert passed == [], f"the simulator got {passed}"
    assert {name: env.get(name) for name in KEPT} == KEPT and "PATH" in env
