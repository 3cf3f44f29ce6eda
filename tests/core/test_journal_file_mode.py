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

import grp
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator.core.errors import ConfigError
from rotator.core.journal import open_journal
from tests.config.policy_text import POLICY
from tests.harness import REPO

NOBODY = 65534
NOGROUP = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="makes files of another user (chown): needs root")


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
    """root (or an auditor) reads the service user's journal; a command that writes it must be that user.
    `chown root` (the hint was) would shut the service out of its own journal."""
    path = _journal(tmp_path)
    os.chown(path, NOBODY, NOGROUP)
    with pytest.raises(ConfigError) as caught:
        open_journal(f"sqlite:///{path}")
    assert "is owned by nobody (uid 65534), who may change it" in str(caught.value)
    assert caught.value.hint.startswith("run the command as nobody, who may change it anyway: "
                                        "`sudo -u nobody rotator ...`"), caught.value.hint
    assert "chown" not in caught.value.hint
    open_journal(f"sqlite:///{path}", read_only=True).close()


@pytest.fixture
def reachable(tmp_path: Path) -> Iterator[Path]:
    """A directory of root's (0755) where other users can reach it (pytest's tmp_path is root's 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="rotator-journal-", dir="/tmp"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _as(uid: int, gid: int, argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv],
                          capture_output=True, text=True, cwd=cwd, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO), "HOME": str(cwd),
                               "ROTATOR_CACHE_DIR": str(cwd / "cache")})  # fmt: skip


def _service_user() -> pwd.struct_passwd:
    """A user other than root whose own group holds no other user (as the image's rotator, 10001), and
    who is not nobody (nogroup holds other users here)."""
    users = pwd.getpwall()
    for user in sorted(users, key=lambda u: u.pw_name != "www-data"):
        try:
            named = grp.getgrgid(user.pw_gid).gr_mem
        except KeyError:
            continue
        if user.pw_uid not in (0, NOBODY) and set(named) <= {user.pw_name} and all(
                other.pw_uid in (0, user.pw_uid) for other in users if other.pw_gid == user.pw_gid):
            return user
    pytest.skip("no user whose own group holds no other user")


needs_setpriv = pytest.mark.skipif(shutil.which("setpriv") is None, reason="runs rotator as another user: setpriv")


@needs_setpriv
def test_the_documented_install_tells_root_to_run_the_command_as_the_service_user(reachable: Path) -> None:
    """docs/operations.md, "Install": `install -d -o rotator -g rotator -m 0700 /var/lib/rotator`; then root ran
    `rotator bootstrap` and was told `chown root /var/lib/rotator`, which shuts the daemon out of its journal.
    The fix is the command that root ran, as the directory's owner, and it works."""
    state = reachable / "state"
    state.mkdir(mode=0o700)
    journal = _journal(state)  # (the daemon's, as it runs as the service user)
    for path in (state, journal):
        os.chown(path, NOBODY, NOGROUP)
    policy = reachable / "rotator.toml"
    policy.write_text(f'[rotator]\njournal = "{state / "journal.db"}"\n' + POLICY.format(name="p1", schedule="30d",
                                                                                     extra=""))
    argv = [sys.executable, "-m", "rotator.runners.cli", "recover", "-c", str(policy)]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=reachable, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"is in the directory {state}, which is owned by nobody (uid 65534), who may change it, not by root" \
        in proc.stderr
    assert f"fix: run the command as nobody, who may change it anyway: `sudo -u nobody {shlex.join(argv)}`\n" \
        in proc.stderr, proc.stderr
    assert "chown" not in proc.stderr
    proc = _as(NOBODY, NOGROUP, argv, reachable)  # what the fix says
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {path.stat().st_uid for path in state.iterdir()} == {NOBODY}, "nothing of root's left for the service"


@needs_setpriv
def test_the_helm_chart_s_fsgroup_directory_does_not_tell_root_to_shut_the_service_out(reachable: Path) -> None:
    """The chart's volume: root's directory, 2775, of the fsGroup (the image user's own group). `chmod go-w` (the
    hint was) takes the service's write access away: root is told so, and what works instead."""
    user = _service_user()
    state = reachable / "state"
    state.mkdir()
    os.chown(state, 0, user.pw_gid)
    state.chmod(0o2775)
    with pytest.raises(ConfigError) as caught:
        open_journal(f"sqlite:///{state / 'journal.db'}")
    group = grp.getgrgid(user.pw_gid).gr_name
    assert f"which may be written by the users of group {group} (gid {user.pw_gid}) (mode 2775): {user.pw_name} " \
           f"(uid {user.pw_uid})" in str(caught.value)
    assert caught.value.hint == (f"run `chmod go-w {state}` if {user.pw_name} need not write it; else run the command "
                                 f"as {user.pw_name}, who may change it anyway: `sudo -u {user.pw_name} rotator ...`, "
                                 "or move the journal to a directory only rotator's user and root may write")
    script = f"from rotator.core.journal import open_journal; open_journal('sqlite:///{state / 'journal.db'}').close()"
    proc = _as(user.pw_uid, user.pw_gid, [sys.executable, "-c", script], reachable)  # what the fix says
    assert proc.returncode == 0, proc.stderr


@needs_setpriv
def test_a_user_who_is_not_root_is_told_sudo_for_what_only_root_may_run(reachable: Path) -> None:
    """`chown nobody PATH` (the hint was) only root may run; and chmod of another's file."""
    service = _service_user()
    theirs = reachable / "theirs"
    theirs.mkdir()
    os.chown(theirs, service.pw_uid, service.pw_gid)
    roots = reachable / "roots.toml"
    roots.write_text("")
    roots.chmod(0o666)
    mine = reachable / "mine.toml"
    mine.write_text("")
    os.chown(mine, NOBODY, NOGROUP)
    mine.chmod(0o666)
    script = ("from pathlib import Path; from rotator.core.errors import ConfigError\n"
              "from rotator.core.journal import open_journal\n"
              "from rotator.config.policy_source import read_policy_file\n"
              f"for call in (lambda: open_journal('sqlite:///{theirs / 'journal.db'}'), "
              f"lambda: read_policy_file(Path('{roots}')), lambda: read_policy_file(Path('{mine}'))):\n"
              "    try:\n        call()\n    except ConfigError as exc:\n        print(exc.hint)\n")
    proc = _as(NOBODY, NOGROUP, [sys.executable, "-c", script], reachable)
    assert proc.returncode == 0, proc.stderr
    name = service.pw_name
    assert proc.stdout.splitlines() == [
        f"run the command as {name}, who may change it anyway: `sudo -u {name} rotator ...`; or, to make it "
        f"nobody's, `sudo chown nobody {theirs}`",
        f"run `sudo chmod go-w {roots}` (rotator uses a file that only its own user and root may change)",
        f"run `chmod go-w {mine}` (rotator uses a file that only its own user and root may change)",  # its own
    ], proc.stdout


def test_group_write_of_a_group_only_rotator_s_user_is_in_is_accepted(tmp_path: Path) -> None:
    """The Helm chart's volume: its fsGroup (10001, the image user's own group) makes the journal 0660 and its
    directory 2775; root's group, which holds only root, stands in for it here."""
    path = _journal(tmp_path)
    os.chown(tmp_path, 0, 0)
    tmp_path.chmod(0o2775)
    path.chmod(0o660)
    open_journal(f"sqlite:///{path}").close()
