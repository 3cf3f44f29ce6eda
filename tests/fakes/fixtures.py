"""Pytest fixtures for the fake ``influxctl`` (loaded from tests/conftest.py via pytest_plugins).

Usage::

    def test_something(fake_influxctl):
        value, token_id = fake_influxctl.state.add_token("bootstrap")
        config = fake_influxctl.profile(mgmt_token=value)
        done = fake_influxctl.run("--config", str(config), "management", "list", "--format", "json")
        # or hand fake_influxctl.binary / fake_influxctl.env to the code under test

The fixture also puts the fake's directory first on ``PATH`` (then a ``python3`` for its shebang,
see ``_fake_python``) and sets ``$FAKE_INFLUXCTL_STATE``
(monkeypatched, so undone after the test): code that runs ``influxctl`` in a subprocess from
the test process reaches the fake without being told where it is.
"""

from __future__ import annotations

import os
import shlex
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


def _base_python_dir(directory: Path) -> Path:
    """``directory`` with a ``python3`` in it for the fake's shebang: the venv's base interpreter, started fast.

    The tests start the fake thousands of times, so its start-up is a good part of the suite's time:

    - ``#!/usr/bin/env python3`` would otherwise go through a version-manager shim (pyenv: about
      65 ms a launch, twice the fake's own start-up). The base interpreter, not the venv's, so the
      fake still cannot import anything but the standard library.
    - ``-S``: no ``site``, whose ``.pth`` files in the base interpreter's site-packages cost about 27 ms a
      start. The fake needs only the standard library and puts the checkout on ``sys.path`` itself.
    - Bytecode cached under ``directory``: with ``PYTHONDONTWRITEBYTECODE`` set, once the simulator's source is
      newer than its ``__pycache__`` (any edit), every start would compile it again (about 15 ms). The prefix
      keeps the checkout's own ``__pycache__`` untouched, as that variable asks.
    """
    directory.mkdir(parents=True, exist_ok=True)
    python = directory / "python3"
    interpreter = shlex.quote(os.path.realpath(sys.executable))
    pycache = shlex.quote(f"pycache_prefix={directory / 'pycache'}")
    python.write_text(
        "#!/bin/sh\n"
        "# The fake influxctl's python3 (tests/fakes/fixtures.py, _base_python_dir): see there why.\n"
        "unset PYTHONDONTWRITEBYTECODE\n"
        f'exec {interpreter} -S -X {pycache} "$@"\n'
    )
    python.chmod(0o755)
    return directory


@pytest.fixture(scope="session")
def _fake_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory of the fake's ``python3`` (see ``_base_python_dir``), one per test session (and xdist worker),
    so that its bytecode cache is compiled once, not once per test."""
    return _base_python_dir(tmp_path_factory.mktemp("fake-influxctl-python"))


@pytest.fixture
def fake_influxctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _fake_python: Path) -> FakeInfluxctlFixture:
    """A fresh fake influxctl server (no tokens, default options) for one test."""
    workdir = tmp_path / "fake-influxctl"
    state = FakeInfluxctl(workdir / "state.json")
    state.init()
    path = os.pathsep.join([str(FAKES_DIR), str(_fake_python), os.environ.get("PATH", "")])
    monkeypatch.setenv(STATE_ENV, str(state.path))
    monkeypatch.setenv("ROTATOR_INFLUXCTL_ENV", STATE_ENV)  # rotator passes influxctl an allow-listed env
    monkeypatch.setenv("PATH", path)
    monkeypatch.delenv("INFLUXCTL_PROFILE", raising=False)
    env = {**os.environ, "XDG_CONFIG_HOME": str(workdir / "xdg-config")}
    return FakeInfluxctlFixture(binary=BINARY, state=state, env=env, workdir=workdir)
