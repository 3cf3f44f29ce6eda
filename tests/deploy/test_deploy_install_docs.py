"""The shell install steps the docs give, run on a fresh scratch root.

deploy/systemd/README.md's install block is run for real (GNU ``install``) under a temporary
prefix: absolute paths are moved under it, ``-o``/``-g`` are dropped (the users need not exist, nor
the test be root) and remembered instead, so that what each user may then open is worked out from
the modes ``install`` really set and the owners the docs asked for. The users and paths come from
rotator-sync.service, not from this file.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "deploy" / "systemd"
#: Directories a fresh Debian/Ubuntu host has, root-owned 0755.
SYSTEM_DIRS = ("/etc", "/var", "/var/lib")


def shell_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", markdown, re.M | re.S)


def commands(block: str) -> list[list[str]]:
    """The block's commands, split as sh would (continuations joined, comments dropped)."""
    joined = block.replace("\\\n", " ")
    return [argv for line in joined.splitlines() if (argv := shlex.split(line, comments=True))]


@dataclass
class ScratchRoot:
    """A fresh host's file system under ``base``, with the owners the docs asked for."""

    base: Path
    owners: dict[str, tuple[str, str]] = field(default_factory=dict)  # path -> (user, group)

    def __post_init__(self) -> None:
        for path in SYSTEM_DIRS:
            self.mkdir(path, 0o755)

    def host(self, path: str) -> Path:
        return self.base / path.lstrip("/")

    def mkdir(self, path: str, mode: int, owner: tuple[str, str] = ("root", "root")) -> None:
        self.host(path).mkdir(parents=True, exist_ok=True)
        self.host(path).chmod(mode)
        self.owners[path] = owner

    def run(self, argv: list[str], workdir: Path) -> None:
        """Run one documented command: `install` for real, `useradd --create-home` as its home directory."""
        if argv[0] == "useradd" and "--create-home" in argv:
            home = argv[argv.index("--home-dir") + 1]
            self.mkdir(home, 0o700, (argv[-1], argv[-1]))  # useradd's HOME_MODE on Debian
            return
        if argv[0] != "install":
            return  # cp to /etc/systemd/system, systemctl: nothing a later step reads
        user: str | None = None
        group: str | None = None
        args = [argv[0]]
        options = iter(argv[1:])
        for arg in options:
            if arg == "-o":
                user = next(options)
            elif arg == "-g":
                group = next(options)
            else:
                args.append(str(self.host(arg)) if arg.startswith("/") else arg)
        result = subprocess.run(args, cwd=workdir, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, f"{shlex.join(argv)}: {result.stderr}"
        targets = argv[-1:] if "-d" not in argv else [a for a in argv[1:] if a.startswith("/")]
        for target in targets:
            # without -o/-g install keeps an existing directory's owner and group; new ones are root's
            before = self.owners.get(target, ("root", "root")) if "-d" in argv else ("root", "root")
            self.owners[target] = (user or before[0], group or before[1])

    def may(self, user: str, groups: set[str], path: str, want: str) -> bool:
        """Whether ``user`` may traverse down to ``path`` and then ``want`` ("r", "w", "x") it."""
        parts = PurePosixPath(path).parts
        for depth in range(2, len(parts) + 1):
            here = str(PurePosixPath(*parts[:depth]))
            if not self.allowed(user, groups, here, want if depth == len(parts) else "x"):
                return False
        return True

    def allowed(self, user: str, groups: set[str], path: str, want: str) -> bool:
        mode = stat.S_IMODE(self.host(path).stat().st_mode)
        owner, group = self.owners.get(path, ("root", "root"))  # a parent install -d made: root's
        shift = 6 if owner == user else 3 if group in groups else 0
        bits = (mode >> shift) & 0o7
        need = sum({"r": 4, "w": 2, "x": 1}[c] for c in want)
        return bits & need == need


def sync_unit() -> dict[str, str]:
    """rotator-sync.service's user and the files `rotator sync` opens as that user."""
    text = (SYSTEMD / "rotator-sync.service").read_text().replace("\\\n", " ")
    value = {m[1]: m[2].strip() for m in re.finditer(r"^(\w+)=(.*)$", text, re.M)}
    argv = shlex.split(value["ExecStart"])
    policy_file = argv[argv.index("--from") + 1].rsplit(":", 1)[0]
    credential = value["LoadCredential"].split(":", 1)[1]
    return {
        "user": value["User"],
        "group": value["Group"],
        "policy_file": policy_file,
        "config": argv[argv.index("--config") + 1],
        "rw_dir": value["ReadWritePaths"],
        "credential": credential,
    }


def readme_install_block() -> str:
    text = (SYSTEMD / "README.md").read_text()
    block = next(b for b in shell_blocks(text.split("\nInstall:\n", 1)[1]))
    assert "useradd" in block and "install" in block
    return block


@pytest.fixture
def fresh_host(tmp_path: Path) -> Iterator[tuple[ScratchRoot, Path]]:
    if (
        shutil.which("install") is None
        or "GNU" not in subprocess.run(["install", "--version"], capture_output=True, text=True).stdout
    ):
        pytest.skip("needs GNU coreutils' install, as the documented hosts have")
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    for name in ("config.toml", "sync.toml", "vault-token", "policies.toml"):  # the files the steps copy
        (workdir / name).write_text("# placeholder\n")
    old = os.umask(0o022)  # root's usual umask: parents install -d makes are 0755
    try:
        yield ScratchRoot(tmp_path / "root"), workdir
    finally:
        os.umask(old)


def install_sync_host(root: ScratchRoot, workdir: Path) -> dict[str, str]:
    for argv in commands(readme_install_block()):
        root.run(argv, workdir)
    return sync_unit()


def test_systemd_readme_install_steps_work_on_a_fresh_host(fresh_host):
    """Every step succeeds where /etc/rotator does not exist yet, and leaves the unit's user able to
    read its policy file and write its profile, and unable to read the Vault token (systemd does)."""
    root, workdir = fresh_host

    unit = install_sync_host(root, workdir)

    user, groups = unit["user"], {unit["group"]}
    assert root.may(user, groups, unit["policy_file"], "r"), "rotator sync cannot read its policy file"
    assert root.may(user, groups, unit["rw_dir"], "wx"), "rotator sync cannot replace the profile"
    assert root.may(user, groups, unit["config"], "rw")
    assert not root.may(user, groups, unit["credential"], "r"), "only systemd reads the Vault token"
    assert not root.may("nobody", {"nogroup"}, unit["policy_file"], "r")


def daemon_install_lines(page: Path) -> list[list[str]]:
    """The page's `install -d ... /etc/rotator` step (the daemon's install)."""
    found = [
        argv
        for block in shell_blocks(page.read_text())
        for argv in commands(block)
        if argv[0] == "install" and "-d" in argv and argv[-1] == "/etc/rotator"
    ]
    assert found, f"{page.name} creates /etc/rotator"
    return found


@pytest.mark.parametrize(
    "page",
    [ROOT / "docs" / "operations.md", SYSTEMD / "DAEMON.md"],
    ids=["operations.md", "DAEMON.md"],
)  # fmt: skip
def test_the_daemons_install_keeps_the_sync_policy_file_readable_on_a_shared_host(fresh_host, page):
    """The daemon installed after `rotator sync` on the same host: its /etc/rotator step runs last."""
    root, workdir = fresh_host
    unit = install_sync_host(root, workdir)

    for argv in daemon_install_lines(page):
        root.run(argv, workdir)

    assert root.may(unit["user"], {unit["group"]}, unit["policy_file"], "r"), shlex.join(argv)


def test_the_daemon_units_configuration_directory_mode_is_the_installed_one():
    """rotator.service's ConfigurationDirectory= defaulted to 0755 while every install makes /etc/rotator 0751:
    systemd, which never changes an existing configuration directory's mode, warned at every start."""
    unit = (SYSTEMD / "rotator.service").read_text()
    value = {m[1]: m[2].strip() for m in re.finditer(r"^(\w+)=(.*)$", unit, re.M)}
    assert value["ConfigurationDirectory"] == "rotator"
    unit_mode = int(value.get("ConfigurationDirectoryMode", "0755"), 8)  # systemd's default

    for page in (ROOT / "docs" / "operations.md", SYSTEMD / "DAEMON.md", SYSTEMD / "README.md"):
        for argv in daemon_install_lines(page):
            assert oct(int(argv[argv.index("-m") + 1], 8)) == oct(unit_mode), f"{page.name}: {shlex.join(argv)}"


def test_the_daemons_credentials_are_readable_by_its_one_shot_commands(fresh_host):
    """The credential files DAEMON.md has the policy file name are read by the daemon and by the one-shot commands
    of docs/operations.md run as its user (bootstrap, rotate, recover): a LoadCredential= copy in
    /run/credentials/rotator.service/ exists only while the unit runs, and only for it."""
    root, workdir = fresh_host
    unit = (SYSTEMD / "rotator.service").read_text()
    user = re.search(r"^User=(.*)$", unit, re.M)[1].strip()  # type: ignore[index]
    text = (SYSTEMD / "DAEMON.md").read_text()
    section = text.split("\n## Credentials\n", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r'\{ *file *= *"([^"]+)" *\}', "".join(re.findall(r"^```toml\n(.*?)^```", section, re.M | re.S)))
    steps = [argv for block in shell_blocks(section) for argv in commands(block) if argv[0] == "install"]
    assert named and steps

    for argv in daemon_install_lines(SYSTEMD / "DAEMON.md") + steps:
        if "-d" not in argv and not (workdir / argv[-2]).exists():
            (workdir / argv[-2]).write_text("placeholder\n")  # the credential an operator has at hand
        root.run(argv, workdir)

    for path in named:
        assert not path.startswith("/run/"), f"{path}: only the running unit has it"
        assert root.may(user, {user}, path, "r"), f"{user} cannot read {path}"
        assert not root.may("nobody", {"nogroup"}, path, "r"), f"anyone may read {path}"
    one_shots = [
        argv for block in shell_blocks(section) for argv in commands(block)
        if (argv[:3] == ["sudo", "-u", user] or (argv[0] == "systemd-run" and f"User={user}" in argv))
        and any(a.endswith("/rotator") and argv[i + 1] in {"bootstrap", "rotate", "recover"}
                for i, a in enumerate(argv[:-1]))
    ]  # fmt: skip
    assert one_shots, "DAEMON.md shows how to run a one-shot command with the daemon's credentials"


@pytest.mark.parametrize("page", [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
                                  *sorted((ROOT / "deploy").glob("*/*.md"))], ids=lambda p: p.name)
def test_no_documented_command_runs_a_relative_path_after_changing_directory(page: Path) -> None:
    """docs/demo.md's one-liner made a venv in `v`, did `cd /`, then ran `v/bin/rotator`: not found (exit 127)
    for everyone who copied it."""
    wrong = []
    for block in shell_blocks(page.read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.commenters = "#"
            moved, first, after_cd = False, True, False
            for word in lexer:
                if word in ("&&", "||", ";", "|", "(", ")"):
                    moved = moved or after_cd  # a bare `cd`: home
                    first, after_cd = True, False
                    continue
                if first and moved and "/" in word and not word.startswith(("/", "$", "~")):
                    wrong.append(line.strip())
                if after_cd:  # `cd sub && sub-relative/path` is fine; `cd /` (or ~, $DIR) leaves the venv behind
                    moved = moved or word.startswith(("/", "~", "$"))
                first, after_cd = False, first and word == "cd"
    assert not wrong, f"{page.name}: a relative command path after `cd` (use an absolute one): {wrong}"
