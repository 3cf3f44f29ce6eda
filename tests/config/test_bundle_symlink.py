"""`rotator bundle -o OUT` in a directory others may write (rotator/config/policy_bundle.py `_write_replacing`).

The bundle is written to a temporary file beside OUT, then moved over it. That temporary name was
OUT.tmp, known in advance, and written through: a symbolic link planted there made rotator truncate
any file its user may write, and then moved the link itself over the bundle.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator.runners.cli import main as cli
from tests.config.test_policy_bundle import POLICIES

VICTIM_TEXT = "someone else's file\n"


@pytest.fixture
def scene(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(policy file, victim, output path in a directory of its own)."""
    policy = tmp_path / "rotator.toml"
    policy.write_text(POLICIES)
    victim = tmp_path / "victim"
    victim.write_text(VICTIM_TEXT)
    out = tmp_path / "shared" / "bundle.json"
    out.parent.mkdir()
    return policy, victim, out


@pytest.fixture
def umask_022() -> Iterator[None]:
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


def test_a_link_planted_at_the_old_temporary_name_is_neither_followed_nor_moved(
        scene: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    policy, victim, out = scene
    planted = out.parent / "bundle.json.tmp"
    planted.symlink_to(victim)  # by whoever may write the directory
    assert cli(["bundle", str(policy), "-o", str(out)]) == 0, capsys.readouterr().err
    assert victim.read_text() == VICTIM_TEXT, "the link's target was written through"
    assert not out.is_symlink(), "the planted link was moved over the bundle"
    assert json.loads(out.read_text())["source"]["name"] == "rotator.toml"
    assert planted.is_symlink(), "a file rotator did not create is left alone"
    assert sorted(p.name for p in out.parent.iterdir()) == ["bundle.json", "bundle.json.tmp"], "no temporary left"


def test_a_link_at_the_output_itself_is_replaced_not_written_through(
        scene: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    policy, victim, out = scene
    out.symlink_to(victim)
    assert cli(["bundle", str(policy), "-o", str(out)]) == 0, capsys.readouterr().err
    assert victim.read_text() == VICTIM_TEXT
    assert not out.is_symlink() and json.loads(out.read_text())["format"]


def test_the_temporary_name_is_not_known_in_advance(
        scene: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Two bundles written in a row use two temporary names (seen as the rename's source)."""
    policy, _victim, out = scene
    sources: list[str] = []
    replace = os.replace

    def recorded(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        sources.append(os.fspath(src))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", recorded)
    assert cli(["bundle", str(policy), "-o", str(out)]) == 0
    assert cli(["bundle", str(policy), "-o", str(out)]) == 0
    assert len(sources) == 2 and sources[0] != sources[1], sources
    for source in sources:
        name = Path(source).name
        assert Path(source).parent == out.parent and name.startswith(".bundle.json.") and name.endswith(".tmp")


def test_the_bundle_is_still_readable_as_the_umask_says(scene: tuple[Path, Path, Path], umask_022: None) -> None:
    """No secret in it, and whatever packages it (another user, a container build) must read it."""
    policy, _victim, out = scene
    assert cli(["bundle", str(policy), "-o", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
