"""A SQLite journal that the user running rotator may not reach or open (rotator/core/journal.py
`_unreachable_journal`, `_writer_shut_out`).

The documented install keeps the journal in /var/lib/rotator, the service user's 0700 directory. Any
other user's `rotator status` (or recover, rotate...) ended in "internal error: PermissionError ...
fix: this is a bug", exit 1: the path's first stat failed before SQLite or the trust checks could
say anything. Now it is a configuration error (exit 2) naming the directory and as whom to run. And a
writing command on a journal file this user may not open said only "unable to open database file"
with a generic fix; now it names the file's owner, as the read-only commands already said what to do.

The tests run as root and run rotator as another user (setpriv): the journal's owner is nobody
(uid 65534), the user shut out a uid without a name.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rotator.core.journal import open_journal
from tests.config.policy_text import POLICY
from tests.core import test_journal_file_mode
from tests.harness import REPO

NOBODY = 65534
NOGROUP = 65534
OTHER = 4242  # the user shut out (no name: the message says "uid 4242")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="makes files of another user (chown): needs root"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="runs rotator as another user: setpriv"),
]

#: a directory of root's (0755) other users can reach: the file-mode tests' fixture
reachable = test_journal_file_mode.reachable


def _policy(directory: Path, journal: Path) -> Path:
    policy = directory / "rotator.toml"
    policy.write_text(f'[rotator]\njournal = "{journal}"\n' + POLICY.format(name="p1", schedule="30d", extra=""))
    return policy


def _rotator_as(uid: int, args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    home = cwd / f"home-{uid}"
    home.mkdir(exist_ok=True)
    os.chown(home, uid, uid)
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", sys.executable, "-m",
                           "rotator.runners.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=60,
                          check=False, env={**os.environ, "PYTHONPATH": str(REPO), "HOME": str(home),
                                            "ROTATOR_CACHE_DIR": str(home / "cache"), **env})  # fmt: skip


def _ran(args: list[str]) -> str:
    """The command line the fix runs again as another user: this one (policy_source.command_line)."""
    return shlex.join([sys.executable, "-m", "rotator.runners.cli", *args])


def _service_journal(state: Path) -> Path:
    """The documented layout: `install -d -o rotator -m 0700 STATE`, and a journal the service made there."""
    state.mkdir(mode=0o700)
    journal = state / "journal.db"
    open_journal(f"sqlite:///{journal}").close()
    for path in (state, journal):
        os.chown(path, NOBODY, NOGROUP)
    return journal


@pytest.mark.parametrize("command", ["status", "recover"])
def test_a_journal_in_a_directory_this_user_may_not_enter_is_a_configuration_error(reachable: Path,
                                                                                    command: str) -> None:
    state = reachable / "state"
    journal = _service_journal(state)
    args = [command, "-c", str(_policy(reachable, journal))]
    proc = _rotator_as(OTHER, args, reachable)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "internal error" not in proc.stderr
    assert f"rotator: error: the journal {journal} cannot be reached: this user, uid {OTHER}, may not enter the " \
           f"directory {state} (owned by nobody (uid 65534), mode 0700)\n" in proc.stderr, proc.stderr
    assert f"fix: run the command as the journal's owner, likely nobody (uid 65534), who owns {state}: " \
           f"`sudo -u nobody {_ran(args)}`; or give uid {OTHER} search access to {state} " in proc.stderr, proc.stderr


def test_the_directory_that_shuts_the_user_out_may_be_further_up(reachable: Path) -> None:
    """Who owns the journal cannot be seen: the owner of the directory this user cannot enter is all there is."""
    outer = reachable / "outer"
    outer.mkdir(mode=0o700)
    journal = open_journal(f"sqlite:///{outer / 'inner' / 'journal.db'}")
    journal.close()
    os.chown(outer, NOBODY, NOGROUP)
    args = ["status", "-c", str(_policy(reachable, outer / "inner" / "journal.db"))]
    proc = _rotator_as(OTHER, args, reachable)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"may not enter the directory {outer} (owned by nobody (uid 65534), mode 0700)" in proc.stderr
    assert f"fix: run the command as the journal's owner, whom this user cannot see ({outer} is nobody (uid " \
           f"65534)'s): e.g. `sudo -u nobody {_ran(args)}`" in proc.stderr, proc.stderr


@pytest.mark.parametrize("mode", [0o600, 0o644], ids=oct)
@pytest.mark.parametrize("command", [["recover"], ["rotate", "p1"]], ids=" ".join)
def test_a_writing_command_says_whose_journal_it_may_not_open(reachable: Path, mode: int,
                                                              command: list[str]) -> None:
    """The directory is open to this user; the journal file is root's."""
    state = reachable / "state"
    state.mkdir(mode=0o755)
    journal = state / "journal.db"
    open_journal(f"sqlite:///{journal}").close()
    journal.chmod(mode)
    args = [*command, "-c", str(_policy(reachable, journal))]
    proc = _rotator_as(OTHER, args, reachable)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    verb = "read" if mode == 0o600 else "write"
    assert f"rotator: error: journal {journal}: cannot be opened for writing: this user, uid {OTHER}, may not " \
           f"{verb} it (owned by root (uid 0), mode {mode:04o})\n" in proc.stderr, proc.stderr
    assert f"fix: run the command as root (uid 0), who owns it: `sudo {_ran(args)}`" in proc.stderr
    assert "check the journal path/URL" not in proc.stderr


def test_a_writing_command_says_whose_directory_it_may_not_write(reachable: Path) -> None:
    """SQLite makes the -wal and -shm files beside the journal: this user's own journal in root's directory."""
    state = reachable / "state"
    state.mkdir(mode=0o755)
    journal = state / "journal.db"
    open_journal(f"sqlite:///{journal}").close()
    os.chown(journal, OTHER, OTHER)
    args = ["recover", "-c", str(_policy(reachable, journal))]
    proc = _rotator_as(OTHER, args, reachable)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"may not write in the directory {state} (owned by root (uid 0), mode 0755), where SQLite makes the " \
           f"journal's -wal and -shm files\nfix: run the command as root (uid 0), who owns it: `sudo {_ran(args)}`" \
        in proc.stderr, proc.stderr


def test_the_journal_s_owner_opens_it(reachable: Path) -> None:
    """What the fix says works: the owner of the 0700 directory runs the writing command."""
    state = reachable / "state"
    journal = _service_journal(state)
    proc = _rotator_as(NOBODY, ["recover", "-c", str(_policy(reachable, journal))], reachable)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_token_file_the_service_user_may_not_read_says_how_to_hand_it_over(reachable: Path) -> None:
    """The documented bootstrap runs as the service user; a token file left in root's home cannot be read
    by it: the fix says how to give it that user (the generic "pass the regular file" sent people round)."""
    secret_dir = reachable / "root-only"
    secret_dir.mkdir(mode=0o700)
    token = secret_dir / "first-token"
    token.write_text("M.V1." + "x" * 40)
    state = reachable / "state"
    journal = _service_journal(state)
    os.chown(state, OTHER, OTHER)
    os.chown(journal, OTHER, OTHER)
    args = ["bootstrap", "p1", "--token-file", str(token), "--token-id", "8b2c5f9e-1d7a-4c3e-9f0b-2a6d4e8c1f37", "-c",
            str(_policy(reachable, journal))]
    proc = _rotator_as(OTHER, args, reachable)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"cannot read --token-file {token}: Permission denied (this command runs as {OTHER})" in proc.stderr, \
        proc.stderr
    assert f"fix: put the token where {OTHER} may read it, e.g. `sudo install -o {OTHER} -m 0400 {token} " \
           "/var/lib/rotator/first-token`" in proc.stderr, proc.stderr
    assert "x" * 40 not in proc.stdout + proc.stderr


def test_a_policy_file_from_rotator_config_is_named_in_the_command_to_run_as_the_owner(reachable: Path) -> None:
    """sudo does not pass $ROTATOR_CONFIG on: the command run as the owner would read ./rotator.toml."""
    state = reachable / "state"
    journal = _service_journal(state)
    policy = _policy(reachable, journal)
    proc = _rotator_as(OTHER, ["status"], reachable, ROTATOR_CONFIG=policy.name)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"`sudo -u nobody {_ran(['status', '-c', str(policy)])}`" in proc.stderr, proc.stderr


def test_another_user_s_wal_beside_this_user_s_journal_is_given_back_not_run_as_its_owner(reachable: Path) -> None:
    """A command once run as root left root's -wal and -shm beside the service user's journal: the service
    user was told to run as root (the daemon too), where the files only need giving back."""
    state = reachable / "state"
    state.mkdir(mode=0o755)
    journal = state / "journal.db"
    open_journal(f"sqlite:///{journal}").close()
    for suffix in ("-wal", "-shm"):
        companion = Path(f"{journal}{suffix}")
        companion.write_bytes(b"")
        companion.chmod(0o600)
    os.chown(state, OTHER, OTHER)
    os.chown(journal, OTHER, OTHER)
    proc = _rotator_as(OTHER, ["recover", "-c", str(_policy(reachable, journal))], reachable)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"may not read its -wal file {journal}-wal (owned by root (uid 0), mode 0600)" in proc.stderr, proc.stderr
    assert f"fix: run `sudo chown {OTHER} {journal}-wal` (or remove it, once no rotator runs on this journal)" \
        in proc.stderr, proc.stderr


def test_the_daemon_is_told_to_run_the_service_as_the_owner_not_a_second_daemon(monkeypatch) -> None:
    """The same command line run by hand beside the running daemon would be a second daemon."""
    from rotator.config import policy_source

    monkeypatch.setattr(policy_source, "SERVICE", True)
    fix = policy_source.as_user(NOBODY)
    assert fix.startswith("systemd's `User=nobody`") and "sudo" not in fix, fix
    monkeypatch.setattr(policy_source, "SERVICE", False)
    monkeypatch.setattr(sys, "argv", ["/usr/bin/rotator", "status"])
    monkeypatch.setenv("ROTATOR_CONFIG", "/etc/rotator/rotator.toml")
    assert policy_source.as_user(NOBODY) == "`sudo -u nobody /usr/bin/rotator status -c /etc/rotator/rotator.toml`"
    monkeypatch.setattr(sys, "argv", ["/usr/bin/rotator", "-c", "x.toml", "status"])
    assert policy_source.as_user(0) == "`sudo /usr/bin/rotator -c x.toml status`"
