"""The line that installs a missing extra names the interpreter running rotator, never a bare ``pip``.

``rotator`` on PyPI is an unrelated project: a bare ``pip install 'rotator[X]'`` run outside the
environment that holds this rotator installs that project (without the extra). That environment's
own pip (``<python> -m pip``) finds rotator installed, keeps it, and adds only the extra's packages.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from rotator.config import extras
from rotator.config.extras import EXTRA_OF_MODULE, install_hint, install_line
from tests.config.policy_text import POLICY
from tests.harness import REPO

#: ``pip install 'rotator[`` not run as ``<python> -m pip``: the line that fetches the unrelated project
BARE_PIP = re.compile(r"(?<!-m )\bpip install '?rotator\[")
EXTRAS = sorted({*EXTRA_OF_MODULE.values(), "all", "demo"})


def _without_installed_rotator(monkeypatch: pytest.MonkeyPatch) -> None:
    """As when rotator runs from a directory on PYTHONPATH: no distribution ``rotator`` in this environment."""

    def not_found(name: str) -> metadata.Distribution:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", not_found)


@pytest.mark.parametrize("extra", EXTRAS)
def test_the_line_runs_this_interpreters_pip(extra: str) -> None:
    line = install_line(extra)
    assert line == f"{shlex.quote(sys.executable)} -m pip install 'rotator[{extra}]'"
    assert shlex.split(line) == [sys.executable, "-m", "pip", "install", f"rotator[{extra}]"]
    assert not BARE_PIP.search(line)


def test_an_interpreter_path_with_spaces_is_quoted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "/opt/my tools/bin/python3")
    line = install_line("daemon")
    assert line.startswith("'/opt/my tools/bin/python3' -m pip install ")
    assert shlex.split(line) == ["/opt/my tools/bin/python3", "-m", "pip", "install", "rotator[daemon]"]


def test_without_an_installed_rotator_it_installs_from_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """By name, pip would fetch the unrelated project: the line names the source tree rotator runs from."""
    _without_installed_rotator(monkeypatch)
    line = install_line("vault")
    assert shlex.split(line) == [sys.executable, "-m", "pip", "install", f"{REPO}[vault]"]
    assert "'rotator[" not in line


def test_without_an_installed_rotator_nor_a_checkout_it_asks_for_the_source(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_installed_rotator(monkeypatch)
    monkeypatch.setattr(extras, "__file__", "/nowhere/site-packages/rotator/config/extras.py")
    line = install_line("aws")
    assert line == f"{shlex.quote(sys.executable)} -m pip install '/path/to/rotator-source[aws]'"


def test_an_installed_project_without_the_extra_is_not_trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    """PyPI's ``rotator`` declares none of our extras: ``rotator[demo]`` there would install nothing useful."""

    class Headers(dict[str, str]):
        def get_all(self, name: str) -> list[str] | None:
            return None  # no Provides-Extra

    class Other:
        metadata = Headers(Name="rotator")

    monkeypatch.setattr(metadata, "distribution", lambda name: Other())
    assert shlex.split(install_line("demo"))[-1] == f"{REPO}[demo]"


def test_the_hints_use_the_line() -> None:
    missing = ImportError("No module named 'apscheduler'", name="apscheduler")
    assert install_hint(missing) == f"install it with {install_line('daemon')}"
    unknown = ImportError("No module named 'nothing_of_ours'", name="nothing_of_ours")
    assert install_hint(unknown) == f"install the extra it needs, e.g. {install_line('all')}"


def test_a_validation_message_names_this_interpreter(tmp_path: Path) -> None:
    """A cron schedule without APScheduler: the problem's fix is this interpreter's pip, through the real CLI."""
    path = tmp_path / "rotator.toml"
    path.write_text(POLICY.format(name="p1", schedule="0 3 * * 1", extra=""), encoding="utf-8")
    probe = ("import sys; sys.modules['apscheduler'] = None\n"
             f"from rotator.runners.cli import main; raise SystemExit(main(['validate', {str(path)!r}]))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, check=False,
                          timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"{shlex.quote(sys.executable)} -m pip install 'rotator[daemon]'" in done.stderr, done.stderr
    assert not BARE_PIP.search(done.stderr), done.stderr


@pytest.mark.skipif(importlib.util.find_spec("tomlkit") is None, reason="needs the profile extra installed")
def test_the_line_keeps_the_installed_rotator() -> None:
    """What the line does in this environment, without the network: every requirement, rotator itself
    included, is already satisfied, so pip would install nothing (and never another ``rotator``)."""
    argv = [*shlex.split(install_line("profile")), "--dry-run", "--no-index", "--disable-pip-version-check"]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, check=False, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"Requirement already satisfied: rotator\[profile\]", done.stdout), done.stdout
    assert "Would install" not in done.stdout, done.stdout
