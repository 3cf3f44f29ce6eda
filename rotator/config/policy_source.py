"""A policy file's bytes: read only from a regular file of sensible size, else a clear error. And the
files that come with it, which nothing rotator writes may replace: the policy file and its SQLite journal
(with the journal's -wal, -shm and -journal files), checked by ``rotator`` (--log-file, report
--output-file) and by the policy bundle's build alike (:func:`refuse_to_overwrite`). And how those outputs
are written (:func:`write_replacing`), and what a failed write tells the user (:func:`output_write_error`).
And who else may change a file rotator trusts (:func:`refuse_untrusted_file`): the policy file, the credential
files it names, the influxctl binary and the SQLite journal are refused when a user other than rotator's own
and root may write them or the directory that holds them (as ssh's StrictModes).

Light on purpose (no pydantic, no journal module): `rotator status` reads the file through it on its fast
path (rotator/config/policy_summary.py), the daemon hashes it at every watch, and every command checks its
--log-file before it imports anything heavy.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from stat import S_IMODE, S_ISDIR, S_ISREG, S_ISVTX, S_IWGRP, S_IWOTH

from rotator.core.errors import ConfigError, TransientError

__all__ = ["ACCESS_ERRNOS", "MAX_POLICY_BYTES", "PATH_ERRNOS", "disk_write_hint", "journal_files",
           "output_write_error", "read_policy_file", "refuse_to_overwrite", "refuse_untrusted_directory",
           "refuse_untrusted_file", "same_file", "sqlite_path", "untrusted_writers", "write_replacing"]

#: far above any real policy file (10,000 policies take ~3 MB), far below what would hurt to read
MAX_POLICY_BYTES = 16 * 1024 * 1024

_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def read_policy_file(path: Path) -> bytes:
    """The file's bytes; ConfigError (what, where, how to fix) for one that is missing, unreadable,
    not a regular file (a FIFO would block, a device would never end) or larger than
    :data:`MAX_POLICY_BYTES`. Opened without blocking, so that a FIFO is refused, not waited on."""
    try:
        fd = os.open(path, _FLAGS)
    except OSError as exc:
        raise ConfigError(f"cannot read policy file {path}: {exc.strerror or exc}", hint=_hint(exc)) from None
    try:
        st = os.fstat(fd)
        if not S_ISREG(st.st_mode):
            kind = "a directory" if S_ISDIR(st.st_mode) else "not a regular file"
            raise ConfigError(f"policy file {path} is {kind}",
                              hint="pass -c (or $ROTATOR_CONFIG) the path of the TOML policy file itself")
        refuse_untrusted_file(path, "policy file", st,
                              why="whoever may change it chooses the programs rotator runs with the tokens")
        chunks: list[bytes] = []
        total = 0
        while st.st_size <= MAX_POLICY_BYTES and total <= MAX_POLICY_BYTES and (chunk := os.read(fd, 1 << 20)):
            chunks.append(chunk)
            total += len(chunk)
        if st.st_size > MAX_POLICY_BYTES or total > MAX_POLICY_BYTES:
            raise ConfigError(f"policy file {path} is larger than {MAX_POLICY_BYTES // (1024 * 1024)} MiB, "
                              "far more than any policy file holds",
                              hint="check that -c (or $ROTATOR_CONFIG) names the policy file")
        return b"".join(chunks)
    except OSError as exc:
        raise ConfigError(f"cannot read policy file {path}: {exc.strerror or exc}", hint=_hint(exc)) from None
    finally:
        os.close(fd)


def _hint(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return ("check the path; without -c, rotator reads the file $ROTATOR_CONFIG names, else ./rotator.toml "
                "in the directory it runs in")
    if isinstance(exc, PermissionError):
        return "give the user rotator runs as read access to the file (and search access to its directories)"
    return "check the path"


# -- what no output may be ---------------------------------------------------------------------------


def sqlite_path(url: str) -> str | None:
    """The file of a ``sqlite:///absolute/path`` URL (None for another scheme). Absolute, as the docs
    write it: the third slash begins the path (``sqlite:////path``, SQLAlchemy's spelling, is the
    same path), never a path relative to the directory a command happens to run in.

    Here, not in rotator.core.journal (which imports it from here under the same name): the checks of
    :func:`journal_files` run before any command imports the journal module."""
    if not url.startswith("sqlite:///"):
        return None
    return "/" + url[len("sqlite:///"):].lstrip("/")


def journal_files(url: str, name: str = "the journal") -> list[tuple[str, Path]]:
    """The files of the SQLite journal at ``url``, each as (what a message calls it, path): the database
    (``name``) and the -wal, -shm and -journal files SQLite keeps beside it; none for a PostgreSQL journal."""
    path = sqlite_path(url)
    if path is None:
        return []
    return [(name, Path(path)),
            *((f"{name}'s {suffix} file", Path(path + suffix)) for suffix in ("-wal", "-shm", "-journal"))]


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file: the same inode when both exist (another spelling, a symbolic
    or hard link), else the same path once symbolic links are resolved."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # (one of them does not exist yet, or cannot be reached)
        pass
    except ValueError:  # a NUL in a path: no file at all
        return False
    return os.path.realpath(a) == os.path.realpath(b)


def refuse_to_overwrite(output: str | Path, inputs: Iterable[tuple[str, Path]], *, given_as: str, hint: str,
                        writing: str = "writing") -> None:  # fmt: skip
    """ConfigError (exit 2) when the file ``output`` (named in the message as ``given_as``, e.g. the flag
    that gave it) is one of ``inputs`` (what a message calls it, path; e.g. :func:`journal_files`):
    ``writing`` there would destroy the policy file or the journal's records."""
    for what, path in inputs:
        if same_file(Path(output), path):
            raise ConfigError(f"{given_as} {output} is {what} ({path}): {writing} there would destroy it", hint=hint)


def write_replacing(output: Path, text: str, *, private: bool = False) -> None:
    """``text`` into a new file beside ``output``, then moved over it: whole or not at all (a full disk or
    a kill leaves the file it replaces as it was). A symbolic link at ``output`` itself is replaced.

    The temporary name is random and created with O_EXCL: whoever may write the directory (a shared
    build directory) cannot plant a link at a name known in advance and have rotator truncate its
    target, nor have the link moved over the output. ``private``: mode 0600 (a report names token ids);
    else 0644 (a policy bundle: whoever may write it chooses what the Lambda function runs). Either
    whatever the umask: a umask of 000 would otherwise leave a bundle any user may rewrite. Removed on
    any failure."""
    tmp = output.with_name(f".{output.name}.{os.urandom(8).hex()}.tmp")  # (no `secrets`: the Lambda imports this)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never through a link
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), 0o600 if private else 0o644)  # set, not asked of open(): the umask removes bits
            out.write(text)
            out.flush()
            os.fsync(out.fileno())  # the data on disk before the rename that makes it the output
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_output(path: Path, text: str, *, private: bool = False) -> None:
    """``text`` into ``path``, a file a command writes on request (``report --output-file``), whole or not at
    all: written to a new file beside it, then moved over it (:func:`write_replacing`, with ``private``), so
    that a full disk or a kill leaves the file it replaces as it was. A symbolic link's target is what is
    replaced; a FIFO or a device (/dev/stdout, a shell's ``>(...)``, /dev/null), which cannot be replaced, is
    written to. (``bundle -o`` replaces a link and refuses the rest: policy_bundle._refuse_special.) OSError
    as writing raises it."""
    # This process's own stdout or stderr, whatever the shell made it (a pipe, or a file opened with >>):
    # written to as it is. Resolved, /dev/stdout names a pipe no rename can reach, or the file of a >>,
    # which the replacement below would wipe (and leave 0600).
    stream = {"/dev/stdout": sys.stdout, "/dev/fd/1": sys.stdout, "/proc/self/fd/1": sys.stdout,
              "/dev/stderr": sys.stderr, "/dev/fd/2": sys.stderr, "/proc/self/fd/2": sys.stderr}.get(
        os.path.abspath(path))
    if stream is not None:
        stream.write(text)
        stream.flush()
        return
    try:
        mode = os.stat(path).st_mode  # (through links: what a write would reach)
    except FileNotFoundError:
        mode = None
    if mode is not None and not S_ISREG(mode):
        with open(path, "w", encoding="utf-8") as out:  # a FIFO, a device, a shell's >(...); a directory raises
            out.write(text)
        return
    write_replacing(Path(os.path.realpath(path)), text, private=private)


# -- who else may change a file rotator trusts ------------------------------------------------------


def refuse_untrusted_file(path: Path, what: str, st: os.stat_result | None = None, *, why: str,
                          sticky_directory_ok: bool = True, check_owner: bool = True,
                          check_directory: bool = True) -> None:
    """ConfigError (exit 2) when a user other than rotator's own and root may change the file at ``path``
    (``what``: how messages name it; ``st``: its stat, e.g. of the descriptor that reads it; else
    ``os.stat``): the file is owned by another user or may be written by others or by a group that
    holds other users (:func:`untrusted_writers`); so is the directory that holds it
    (:func:`refuse_untrusted_directory`, unless ``check_directory`` is false). ``why``: what such a user
    would gain, for the message. As ssh's StrictModes: whoever may write the policy file, a credential
    file or the influxctl binary chooses what rotator runs with the tokens, and where they go.

    A symbolic link is judged by the file it leads to and that file's directory, not by the directory
    that holds the link: a Kubernetes ConfigMap or Secret volume is a 0777 (1777) directory the kubelet
    makes, holding links into ``..data``, whose target is root's directory of root's 0644 files.
    Another user who replaced such a link could only lead it to a file that root or rotator's user owns
    and nobody else may write. ``check_owner=False``: only the modes count (a command that only reads a
    file its service's user owns). OSError (the file or its directory cannot be looked at) is the caller's."""
    real = os.path.realpath(path)
    # A file on a read-only mount (a container's `-v FILE:FILE:ro`, owned by the host's user) nobody here
    # may change, whatever its owner and mode say: its directory is still checked (unless read-only too)
    found = None if _read_only_mount(real) else untrusted_writers(
        real, st if st is not None else os.stat(real), check_owner=check_owner)
    if found is not None:
        problem, fix = found
        raise ConfigError(f"{what} {_shown(path, real)} {problem}: {why}",
                          hint=f"{fix} (rotator uses a file that only its own user and root may change)")
    if check_directory:
        refuse_untrusted_directory(path, what, why=why, sticky_ok=sticky_directory_ok, check_owner=check_owner)


def refuse_untrusted_directory(path: Path, what: str, *, why: str, sticky_ok: bool = True,
                               check_owner: bool = True) -> None:
    """ConfigError (exit 2) when a user other than rotator's own and root may write the directory that
    holds the file at ``path`` (its symbolic links resolved; the file need not exist): that user may put
    a file of their own in its place. ``sticky_ok``: a directory with the sticky bit (``/tmp``) is
    accepted, as others may add names there but not rename or remove a file they do not own. Other
    arguments and OSError as :func:`refuse_untrusted_file`."""
    real = os.path.realpath(path)
    parent = os.path.dirname(real)
    st = os.stat(parent)
    if _read_only_mount(parent):  # (a container's `-v DIR:DIR:ro`): nobody here may put a file in it
        return
    found = untrusted_writers(parent, st, directory=True, sticky_ok=sticky_ok, check_owner=check_owner)
    if found is not None:
        problem, fix = found
        sticky = " (a directory with the sticky bit, as /tmp, is accepted)" if sticky_ok else ""
        # Not to another place where the other user's service could no longer write it: run as that user
        move = "" if fix.startswith(_RUN_AS) else (f", or move {what} to a directory only rotator's user and root "
                                                   f"may write{sticky}")
        raise ConfigError(f"{what} {_shown(path, real)} is in the directory {parent}, which {problem}: whoever may "
                          f"write there may put a file of their own in its place, and {why}", hint=f"{fix}{move}")


def _read_only_mount(path: str) -> bool:
    """Whether ``path`` is on a file system mounted read-only (statvfs ST_RDONLY; False if it cannot say)."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # (no statvfs: not a POSIX system)
        return False


def _shown(path: Path, real: str) -> str:
    return f"{path}" if os.path.abspath(path) == real else f"{path} (which leads to {real})"


def untrusted_writers(path: str, st: os.stat_result, *, directory: bool = False, sticky_ok: bool = False,
                      check_owner: bool = True) -> tuple[str, str] | None:
    """Who besides rotator's user and root may change ``path`` (of stat ``st``), as (the words that say
    so, the fix: a clause of a hint); None when nobody else may. Its owner, if another user
    (``check_owner``); any user, where others may write it; a group's users, where its group may write
    it, unless the group is rotator's own (:func:`_rotators_own_group`). Group read is nobody's write.
    ``directory`` and ``sticky_ok``: a directory with the sticky bit is accepted whoever may write it.

    The fix never takes a path from the one other user who may change it, where that user is a
    service's (the journal's directory, ``install -d -o rotator``, the Helm chart's fsGroup): the
    command runs as that user instead (:func:`_run_as`), which gives that user nothing: it may change
    the path already. And a command only root may run (``chown``, ``chmod`` of another's path) is
    written with ``sudo`` for a user who is not root."""
    euid = os.geteuid()
    mode = S_IMODE(st.st_mode)
    quoted = _quoted(path)
    if check_owner and st.st_uid not in (euid, 0):
        me = "root, the user rotator runs as" if euid == 0 else f"{_user(euid)}, the user rotator runs as, or root"
        fix = _run_as(st.st_uid)
        if euid != 0:
            fix += f"; or, to make it {user_name(euid)}'s, `sudo chown {user_name(euid)} {quoted}`"
        return f"is owned by {_user(st.st_uid)}, who may change it, not by {me}", fix
    if directory and sticky_ok and st.st_mode & S_ISVTX:
        return None  # others may add names there, not take over one they do not own
    chmod = f"{'sudo ' if euid not in (0, st.st_uid) else ''}chmod go-w {quoted}"
    if mode & S_IWOTH:
        return f"may be written by any user (mode {mode:04o})", f"run `{chmod}`"
    if mode & S_IWGRP and not _rotators_own_group(st.st_gid):
        users = _group_users(st.st_gid)
        writer = next(iter(users)) if users is not None and len(users) == 1 else None
        if writer is None or writer in (st.st_uid, euid):  # (its owner's write, or rotator's own: no one to run as)
            return f"may be written by the users of group {_group(st.st_gid)} (mode {mode:04o})", f"run `{chmod}`"
        # The group's one user writes by the group bit alone (the fsGroup a pod gives a root's directory):
        # chmod would shut that user, maybe the service, out
        return (f"may be written by the users of group {_group(st.st_gid)} (mode {mode:04o}): {_user(writer)}",
                f"run `{chmod}` if {user_name(writer)} need not write it; else {_run_as(writer)}")
    return None


#: how a fix that runs the command as the other user begins (:func:`_run_as`)
_RUN_AS = "run the command as "


def _run_as(uid: int) -> str:
    """The fix that runs this very command as user ``uid``, who may change the path anyway."""
    name = user_name(uid)
    if SERVICE:
        return f"run the service as {name}, who may change it anyway: {as_user(uid)}"
    return f"{_RUN_AS}{name}, who may change it anyway: {as_user(uid)}"


#: set by `rotator daemon`: a fix that would run "this command" as another user names the service's user
#: setting instead (the same command line, run by hand, would be a second daemon beside the first)
SERVICE = False


def as_user(uid: int) -> str:
    """How to run this command as user ``uid``: ```sudo -u USER COMMAND``` (the command as it was run), or,
    in the daemon, the service managers' user settings."""
    name = user_name(uid)
    if SERVICE:
        return (f"systemd's `User={name}`, the Helm chart's `securityContext.runAsUser`, or the container's "
                "`--user`")
    if uid == 0:
        return f"`sudo {command_line()}`"
    sudo_user = _quoted(name if name != str(uid) else f"#{uid}")  # (sudo takes a bare number for a name)
    return f"`sudo -u {sudo_user} {command_line()}`"


def command_line() -> str:
    """This command as it was run, when it is the rotator command (else "rotator" and an ellipsis): what
    :func:`_run_as` (and the journal's access hints) run again as another user. A policy file given by
    $ROTATOR_CONFIG is added as ``-c``: sudo does not pass the environment on."""
    import shlex  # (only for a message)
    import sys

    argv = sys.argv
    if argv and os.path.basename(argv[0]) == "rotator":  # the console script, by the path exec found it at
        words = list(argv)
    elif argv and argv[0].endswith(os.path.join("rotator", "runners", "cli.py")):  # python -m rotator.runners.cli
        words = list(sys.orig_argv)
    else:
        return "rotator ..."
    given = any(w in ("-c", "--config") or w.startswith("--config=") or (w.startswith("-c") and not
                w.startswith("--")) for w in argv[1:])  # fmt: skip
    from_env = os.environ.get("ROTATOR_CONFIG")
    if not given and from_env:
        words += ["-c", os.path.abspath(from_env)]
    return shlex.join(words)


def _rotators_own_group(gid: int) -> bool:
    """Whether group ``gid`` is rotator's user's own: rotator's user is in it and, by the user and group
    databases, no other user but root is (a user private group; the ``fsGroup`` a Kubernetes pod gives
    its volumes, writable by that group: 10001 in the chart). Its write bit lets nobody else in."""
    if gid != os.getegid() and gid not in os.getgroups():
        return False
    users = _group_users(gid)
    return users is not None and users <= {os.geteuid()}


def _group_users(gid: int) -> set[int] | None:
    """The users of group ``gid`` but root, by the user and group databases: its named members and the
    users whose own group it is; None when a named member is not a user the database knows."""
    import grp
    import pwd

    try:
        named = grp.getgrgid(gid).gr_mem
    except KeyError:  # a group only by number: no one is named in it
        named = []
    users: set[int] = set()
    for name in named:
        try:
            users.add(pwd.getpwnam(name).pw_uid)
        except KeyError:  # a member the user database does not know: not shown to be anyone's
            return None
    users.update(user.pw_uid for user in pwd.getpwall() if user.pw_gid == gid)
    users.discard(0)
    return users


def user_name(uid: int) -> str:
    """User ``uid``'s name, or its number where it has none."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _user(uid: int) -> str:
    name = user_name(uid)
    return f"uid {uid}" if name == str(uid) else f"{name} (uid {uid})"


def _group(gid: int) -> str:
    import grp

    try:
        return f"{grp.getgrgid(gid).gr_name} (gid {gid})"
    except KeyError:
        return f"gid {gid}"


def _quoted(path: str) -> str:
    import shlex  # (only for a message)

    return shlex.quote(path)


# -- why a write failed -------------------------------------------------------------------------------

#: A write refused to this user, or on a read-only file system: only another path or other rights help.
ACCESS_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
#: The path names no place for a file (no such directory, a file where a directory should be, a directory
#: where the file should be, a name too long, a loop of links): only another path helps.
PATH_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP})


def disk_write_hint(exc: OSError, directory: Path) -> str:
    """The fix for a write that failed for neither of the reasons above (:data:`ACCESS_ERRNOS`,
    :data:`PATH_ERRNOS`): the file system that holds ``directory`` is full, over quota, or failed
    (EIO...), and the same command succeeds once that is dealt with. Telling the user to pick another
    path or get write access there (what the path's errors need) would send them the wrong way."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"free space (or quota) on the file system that holds {directory}, then run the same command again"
    if exc.errno == errno.EFBIG:  # a limit, not a fault: "check its health" would send the user the wrong way
        return (f"the file grew past the largest this process may write (`ulimit -f`) or the file system that holds "
                f"{directory} allows: raise that limit or write to another file system, then run the same command "
                "again")
    name = errno.errorcode.get(exc.errno, "") if exc.errno else ""
    text = exc.strerror or (os.strerror(exc.errno) if exc.errno else type(exc).__name__)
    return (f"the file system that holds {directory} failed the write ({f'{name}: ' if name else ''}{text}): "
            "check its health (the kernel log, e.g. `dmesg`; the disk or network share under it), then run the "
            "same command again")


def output_write_error(exc: OSError, output: Path, given_as: str, hint: str) -> ConfigError | TransientError:
    """The error for ``output`` (named in the message as ``given_as``: the option that gave it, or what
    it is) that could not be written: ConfigError (exit 2, invalid input) with the caller's ``hint``
    (which option to change) where the path or this user's rights are the problem; TransientError
    (exit 1) with :func:`disk_write_hint` where the file system is (full, failing): the command was
    right, and the user's input is not what to change."""
    message = f"cannot write {given_as} {output}: {exc.strerror or exc}"
    if exc.errno in ACCESS_ERRNOS or exc.errno in PATH_ERRNOS:
        return ConfigError(message, hint=hint)
    # (its link resolved, as write_replacing writes there: the file system to see to is the target's)
    return TransientError(message, hint=disk_write_hint(exc, Path(os.path.realpath(output)).parent))
