"""The tests' CLI calls are children forked from a process that imported rotator once (tests/cli_zygote.py):
each must still be the process `python -m rotator.runners.cli` would be."""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import pytest

from tests.cli_zygote import forking, run_cli

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "rotator.runners.cli"]


def _module_level_environment_reads(path: Path) -> list[int]:
    """Lines of ``path`` that read the environment outside every function (when the module is imported)."""
    tree = ast.parse(path.read_text())
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            inside.update(id(n) for n in ast.walk(node))
    return [node.lineno for node in ast.walk(tree) if id(node) not in inside and isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name) and node.value.id == "os" and node.attr in ("environ", "getenv")]


def test_no_module_of_rotator_reads_the_environment_when_imported() -> None:
    """What the zygote imported once would otherwise keep its own environment for every child."""
    found = {str(p.relative_to(REPO)): lines for p in sorted((REPO / "rotator").rglob("*.py"))
             if (lines := _module_level_environment_reads(p))}
    assert not found, found


@pytest.mark.skipif(not forking(), reason="ROTATOR_TEST_CLI_FORK=0: every call is a fresh process")
def test_a_forked_call_has_its_own_environment_directory_exit_code_and_pid(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path), "ROTATOR_LOG_LEVEL": "loud"}
    proc = run_cli([*CLI, "status", "-c", "missing.toml"], env=env, cwd=tmp_path, timeout=60)
    # the child's own environment (its log level refused) and working directory (the relative path)
    assert proc.returncode == 2 and "ROTATOR_LOG_LEVEL" in proc.stderr, proc.stderr
    env.pop("ROTATOR_LOG_LEVEL")
    (tmp_path / "here.toml").write_text("[rotator]\n")
    proc = run_cli([*CLI, "validate", "here.toml"], env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0 and proc.stdout == "here.toml: valid, 0 policies\n", (proc.stdout, proc.stderr)
    assert "ROTATOR_LOG_LEVEL" not in proc.stderr, "the previous call's environment stayed"

