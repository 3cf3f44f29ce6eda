"""Pytest fixtures for the fake ``influxctl`` (loaded from tests/conftest.py via pytest_plugins).

Usage::

    def test_something(fake_influxctl):
        value, token_id = fake_influxctl.state.add_token("bootstrap")
        config = fake_influxctl.profile(mgmt_token=value)
        done = fake_influxctl.run("--config", str(config), "management", "list", "--format", "json")
        # or hand fake_influxctl.binary / fake_influxctl.env to the code under test

The fixture also puts the fake's directory first on ``PATH`` (then a ``python3`` for its shebang,
see ``_base_python_dir``) and sets ``$FAKE_INFLUXCTL_STATE``
(monkeypatched, so undone after the test): code that runs ``influxctl`` in a subprocess from
the test process reaches the fake without being told where it is.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rotator.sandbox.influxctl_state import STATE_ENV, FakeInfluxctl, write_profile

__all__ = ["FakeInfluxctlFixture", "fake_influxctl"]

FAKES_DIR = Path(__file__).resolve().parent
BINARY = FAKES_DIR / "influxctl"


@dataclass(frozen=True)
class FakeInfluxctlFixture:
    binary: Path
    state: FakeInfluxctl
    #: A full environment for subprocesses: the test's own plus the fake's variables, with
    #: XDG_CONFIG_HOME in the test's tmp dir so influxctl's default config path is isolated.
    env: dict[str, str]
    workdir: Path

    @property
    def config_path(self) -> Path:
        """The default ``--config`` file :meth:`profile` writes."""
        return self.workdir / "config.toml"

    def profile(self, path: Path | None = None, **kwargs: Any) -> Path:
        """Write an influxctl profile (see ``write_profile``) to ``path`` or :attr:`config_path`."""
        return write_profile(path or self.config_path, **kwargs)

    def run(
        self, *args: str, input: str | None = None, timeout: float = 10.0, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the fake with ``args`` (add ``--config`` yourself); stdin is empty unless ``input``."""
        return subprocess.run(
            [str(self.binary), *args],
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env or self.env,
            check=False,
        )


def _base_python_dir(tmp_path: Path) -> Path:
    """A directory whose ``python3`` is the venv's base interpreter, for the fake's shebang.

    ``#!/usr/bin/env python3`` would otherwise go through a version-manager shim (pyenv: about
    65 ms a launch, twice the fake's own start-up). The base interpreter, not the venv's, so the
    fake still cannot import anything but the standard library.
    """
    bin_dir = tmp_path / "fake-influxctl-python"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(os.path.realpath(sys.executable))
    return bin_dir


@pytest.fixture
def fake_influxctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeInfluxctlFixture:
    """A fresh fake influxctl server (no tokens, default options) for one test."""
    workdir = tmp_path / "fake-influxctl"
    state = FakeInfluxctl(workdir / "state.json")
    state.init()
    path = os.pathsep.join([str(FAKES_DIR), str(_base_python_dir(tmp_path)), os.environ.get("PATH", "")])
    monkeypatch.setenv(STATE_ENV, str(state.path))
    monkeypatch.setenv("ROTATOR_INFLUXCTL_ENV", STATE_ENV)  # rotator passes influxctl an allow-listed env
    monkeypatch.setenv("PATH", path)
    monkeypatch.delenv("INFLUXCTL_PROFILE", raising=False)
    env = {**os.environ, "XDG_CONFIG_HOME": str(workdir / "xdg-config")}
    return FakeInfluxctlFixture(binary=BINARY, state=state, env=env, workdir=workdir)
