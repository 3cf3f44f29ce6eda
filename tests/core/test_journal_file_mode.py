"""The SQLite journal's directories and who else may change it (rotator/core/journal.py
`_make_private_directories`, `_refuse_untrusted_journal`).

Under umask 000 the journal's new directories were 0777 (Path.mkdir gives parents the umask's mode):
another user moved journal.db away ("there is no journal") or put one of their own there. A journal that
others may write was used silently, and SQLite gives its -wal and -shm files the journal's mode. Now each
new directory is 0700, and a journal file, companion file or directory that a user other than rotator's
own and root may write is refused (exit 2) with the fix; group read stays (an auditors' group).

The tests run as root: "another user" is nobody (uid 65534), a group of other users nogroup (65534).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator.core.errors import ConfigError
from rotator.core.journal import open_journal
from tests.harness import REPO

NOBODY = 65534
NOGROUP = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="makes files of another user (chown): needs root")


@pytest.fixture
def umask_000() -> Iterator[None]:
    before = os.umask(0)
    try:
        yield
    finally:
        os.umask(before)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _journal(directory: Path) -> Path:
    """A journal made by rotator (0600 in an existing directory), closed."""
    path = directory / "journal.db"
    open_journal(f"sqlite:///{path}").close()
    return path


def test_new_directories_are_0700_under_umask_000(tmp_path: Path, umask_000: None) -> None:
    path = tmp_path / "state" / "j" / "deeper" / "journal.db"
    open_journal(f"sqlite:///{path}").close()
    made = [tmp_path / "state", tmp_path / "state" / "j", tmp_path / "state" / "j" / "deeper"]
    assert [oct(_mode(d)) for d in made] == [oct(0o700)] * 3
    assert _mode(path) == 0o600
    assert _mode(tmp_path) == 0o700  # an existing directory is left as it is


def test_an_existing_directory_is_not_changed(tmp_path: Path, umask_000: None) -> None:
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o750)
    open_journal(f"sqlite:///{mine / 'new' / 'journal.db'}").close()
    assert (_mode(mine), _mode(mine / "new")) == (0o750, 0o700)


@pytest.mark.parametrize("mode", [0o666, 0o606, 0o660], ids=oct)
def test_a_journal_others_may_write_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = _journal(tmp_path)
    os.chown(path, 0, NOGROUP)  # (0660: a group that holds nobody)
    path.chmod(mode)
    for read_only in (False, True):  # `status` too: what it shows would be whoever's
        with pytest.raises(ConfigError) as caught:
            open_journal(f"sqlite:///{path}", read_only=read_only)
        assert f"the journal {path} may be written by" in str(caught.value)
        assert f"(mode {mode:04o})" in str(caught.value)
        assert caught.value.hint.startswith(f"run `chmod go-w {path}`")


def test_rotator_status_exits_2_on_a_journal_any_user_may_write(tmp_path: Path) -> None:
    path = _journal(tmp_path)
    path.chmod(0o666)
    policy = tmp_path / "rotator.toml"
    policy.write_text(f'[rotator]\njournal = "{path}"\n')
    proc = subprocess.run([sys.executable, "-m", "rotator.runners.cli", "status", "-c", str(policy)],
                          capture_output=True, text=True, cwd=REPO, timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"the journal {path} may be written by any user (mode 0666)" in proc.stderr
    assert f"fix: run `chmod go-w {path}`" in proc.stderr


@pytest.mark.parametrize("mode", [0o640, 0o600], ids=oct)
def test_a_journal_its_group_may_read_is_used(tmp_path: Path, mode: int) -> None:
    path = _journal(tmp_path)
    os.chown(path, 0, NOGROUP)  # (a group that holds another user: reading is all it may do)
    path.chmod(mode)
    open_journal(f"sqlite:///{path}").close()
    open_journal(f"sqlite:///{path}", read_only=True).close()


def test_a_wal_file_others_may_write_is_refused(tmp_path: Path) -> None:
    path = _journal(tmp_path)
    wal = Path(f"{path}-wal")
    wal.touch()
    wal.chmod(0o666)
    with pytest.raises(ConfigError, match=f"the journal's -wal file {wal} may be written by any user"):
        open_journal(f"sqlite:///{path}")


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o770], ids=["0777", "sticky", "group-of-others"])
def test_a_journal_in_a_directory_others_may_write_is_refused(tmp_path: Path, mode: int) -> None:
    """Not even a sticky one: anyone may create the -wal or -shm file there before SQLite does."""
    shared = tmp_path / "shared"
    shared.mkdir()
    path = _journal(shared)
    os.chown(shared, 0, NOGROUP)
    shared.chmod(mode)
    with pytest.raises(ConfigError) as caught:
        open_journal(f"sqlite:///{path}")
    assert f"the journal {path} is in the directory {shared}, which may be written by" in str(caught.value)
    assert caught.value.hint.startswith(f"run `chmod go-w {shared}`, or move the journal")


def test_a_new_journal_in_a_directory_others_may_write_is_refused_before_it_is_made(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(ConfigError, match="which may be written by any user"):
        open_journal(f"sqlite:///{shared / 'journal.db'}")
    assert list(shared.iterdir()) == []


def test_a_journal_of_another_user_is_refused_to_a_writer_not_to_a_reader(tmp_path: Path) -> None:
    """root (or an auditor) reads the service user's journal; a command that writes it must be that user."""
    path = _journal(tmp_path)
    os.chown(path, NOBODY, NOGROUP)
    with pytest.raises(ConfigError) as caught:
        open_journal(f"sqlite:///{path}")
    assert "is owned by nobody (uid 65534), who may change it" in str(caught.value)
    assert caught.value.hint.startswith(f"run `chown root {path}`")
    open_journal(f"sqlite:///{path}", read_only=True).close()


def test_group_write_of_a_group_only_rotator_s_user_is_in_is_accepted(tmp_path: Path) -> None:
    """The Helm chart's volume: its fsGroup (10001, the image user's own group) makes the journal 0660 and its
    directory 2775; root's group, which holds only root, stands in for it here."""
    path = _journal(tmp_path)
    os.chown(tmp_path, 0, 0)
    tmp_path.chmod(0o2775)
    path.chmod(0o660)
    open_journal(f"sqlite:///{path}").close()
