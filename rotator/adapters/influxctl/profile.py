"""influxctl-profile: publish the current token as ``mgmt_token`` (or ``token``) of an influxctl profile.

Policy settings::

    [[policy.store]]
    type = "influxctl-profile"
    config = "/var/lib/influxctl/.config/influxctl/config.toml"  # default: influxctl's own default
    profile = "default"                                          # the [[profile]] to write; must exist
    key = "mgmt_token"                                           # or "token"

``key`` is the profile key written. ``mgmt_token`` (the default) is the management token
influxctl's ``management``/``token``/``database``... commands authenticate with: only tokens of
the ``influxctl-management`` issuer go there. ``token`` is the database token influxctl's
``query`` and ``write`` commands use (with the profile's ``database``): tokens of every other
issuer go there (``influxctl-database``, ``management-api``; an ``influxdb3``/``influxdb2``
token too, for which the profile is just a file that holds the token). :func:`key_problem`
states the rule; ``publish`` refuses a record of the wrong issuer before it writes anything.
The settings cannot see the policy's issuer, so the rule is checked at publish (the first
``rotator bootstrap`` meets it), not by ``rotator validate``.

What rotator keeps where::

    <config>               the influxctl config.toml: rotator changes only the one line
                           ``<key> = "..."`` of the named profile (or adds that one line)
    <config>.rotator.json  the sidecar (mode 0600): per profile, entries naming the key they
                           describe, the token id, issuer, policy, created/expires times and a
                           salted SHA-256 of the value written there: the newest first, one for
                           each of the last values rotator wrote there (see History below)

One sidecar serves every store writing the file: a ``mgmt_token`` store and a ``token`` store
of the same profile (a management policy and a database policy for one automation host) keep
their own entries, and each publish keeps the other key's entries as they are. An entry
without ``key`` (written before the setting existed) describes ``mgmt_token``.

Why a sidecar and not a marker comment on the ``<key>`` line: influxctl refuses unknown
keys, so metadata cannot be a key; a trailing comment would work for influxctl, but it puts
rotator's bookkeeping into a file that people and configuration management own and diff.
With the sidecar the config file differs from the operator's version by the token value only.

Managed, record, version. ``read_current`` looks up the profile's ``<key>`` value in the
sidecar by its salted hash: found (among all the key's entries: the value just written, or an
older one put back), the profile is managed and the record is that entry plus the value; not
found (someone edited the value by hand, or never rotated it), the value is unmanaged
(``managed=False``, ``record=None``, a warning when the sidecar has entries for the key).
``version`` is a fingerprint of the value (16 hex digits of a domain-separated SHA-256;
not reversible, safe for the journal), with ``-g<n>`` once the same record was written again at
its own version (recovery's fencing write: the entry's ``generation`` moves, the config file does
not change), so compare-and-set protects the one value rotator owns:
edits elsewhere in the file (other profiles, comments) between PLAN and PUBLISH do not
conflict, and are kept. A profile without ``<key>`` (or with ``<key> = ""``) is
"absent": version ``None``.

History. A publish keeps the entries of the values written before, not only the one it replaces:
a config put back from a backup, or rewritten by configuration management with the token it knew,
holds an older value, and that value must still name its token. Unrecognised, the profile would
hold no token for the engine, whose revocation rule (never revoke a token a store holds) would
then revoke the very token influxctl uses once its grace passed; recognised, the revocation is
refused ("still current in store") and the next rotation replaces it. Vault and AWS stores get
this from their payload, which names the token id. Kept: the newest :data:`_KEEP` entries
(whatever their tokens' expiry), and beyond those the entries of tokens that may still be valid
(not expired, or no expiry), up to :data:`_KEEP_MAX` in all; the entry of the value the config
holds is always among them (crash safety, below). An expired token's value put back fails influxctl
whether or not it is recognised, so the tokens that may still be valid are the ones that matter (a
policy's lifetime outlasts its schedule interval and grace: a replaced token is valid until its
revocation is due).
Sidecars written before kept two entries per key, and read as before; an older rotator reading a
longer list looks the value up among all entries as this one does, and keeps two when it writes.

Crash safety. ``publish`` holds an exclusive ``flock`` on the config's directory (``read_current``
a shared one), then writes the sidecar with the new entry added (the entry of the value still
in the config is kept, right after it), then the config. Each file is replaced atomically: a
temporary file in the same directory, written, fsync'ed, renamed over the original, and the
directory fsync'ed. A crash between the two renames leaves the old value in the config, which
the sidecar still describes, so the store reads as its old, consistent self. Temporary files left by a killed
writer (they may hold a token) are removed by the next write. The directory is opened once, under
the lock, and every later step goes through that descriptor, never the path (:class:`_Dir`).

Other writers. The lock only keeps rotator processes apart: a person's editor or configuration
management may replace or rewrite the config between the read and the renames. So the read
records the file's identity (device, inode, mtime, size, SHA-256 of its bytes), and each rename
is preceded by a check that the config is still that file. If it is not, the temporary file is
removed and nothing more is written: ConflictError if the profile's ``<key>`` changed (the
compare-and-set, made late), TransientError otherwise (the retry reads the new file and edits
it). What is left is the time between the last check and the rename (microseconds): an edit
saved exactly then is still replaced.

File properties. Both files are written with mode 0600 (an adopt of the value already there
writes the config again, the same bytes, when others could read it; a publish that writes no config
sets its mode to 0600 in place) and keep the config file's owner and
group (``chown`` when running as root; otherwise rotator must be the owner, and is refused
before anything is written if it is not). A symlinked config is written through to its target.
The profile is never created: influxctl needs ``product``, ``host``/``account_id``... that
rotator does not know, so a missing file or profile is a ConfigError.

Where the token goes. influxctl sends a profile's ``mgmt_token`` to the cluster the profile names, so
:meth:`InfluxctlProfileStore.target` names that cluster in the spelling of the influxctl issuers'
``target()`` (``clustered <host>:<port>``, ``dedicated <account_id>/<cluster_id>``: one function,
:func:`rotator.adapters.influxctl.common.profile_target`), and the engine refuses to mint for a policy
whose issuer names another (rotator/core/contracts.py, Store). ``rotator sync`` makes the same check
against the policy file (rotator/runners/sync.py). A ``token`` store answers None (nothing compared):
the issuers whose tokens go there name their place in other terms (``influxdb3``: ``<host>:<port>``).
The version covers the value only, so ``publish`` (either key) checks under its lock that the profile
still names the cluster of the store's last read: a profile pointed at another cluster while the run
minted and verified is a ConflictError, and nothing is written.

A file rotator cannot parse (TOML syntax, a value nested thousands deep or an integer of
thousands of digits, or ``profile`` that is not an array of tables, a duplicate profile name, a
``<key>`` value that is not a string) is left untouched: ConfigError naming the file and, where
the parser gives them, the line and column, never the content. Every edit is checked before it is
written: the new file must parse to exactly the old data with only that ``<key>`` changed,
and differ from the old text in that one line only; otherwise nothing is written.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import errno
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import sys
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache, partial
from pathlib import Path
from stat import S_ISDIR, S_ISREG
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

import tomlkit
import tomlkit.exceptions
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tomlkit.items import AoT, String, Table

from rotator.adapters.influxctl.common import ProfileSettings, profile_target
from rotator.config.policy_source import ACCESS_ERRNOS, PATH_ERRNOS, disk_write_hint
from rotator.config.timefmt import parse_rfc3339, rfc3339_seconds
from rotator.core.clock import Clock
from rotator.core.contracts import (
    AdapterContext,
    Store,
    StoreState,
    TokenRecord,
    checked_settings,
    target_host_port,
)
from rotator.core.errors import ConfigError, ConflictError, MalformedPayload, PermanentError, TransientError

__all__ = [
    "CONNECTION_KEYS",
    "DEFAULT_KEY",
    "MANAGEMENT_TOKEN_ISSUERS",
    "SIDECAR_SUFFIX",
    "InfluxctlProfileSettings",
    "InfluxctlProfileStore",
    "ProfileKey",
    "Replace",
    "connection_target",
    "default_config_path",
    "key_problem",
    "value_version",
]

logger = logging.getLogger("rotator.adapters.influxctl_profile")

MANAGED_BY = "rotator"
SIDECAR_SUFFIX = ".rotator.json"
SIDECAR_SCHEMA = 1
#: The profile keys a store may write: influxctl's management token, or its data-plane token.
ProfileKey = Literal["mgmt_token", "token"]
DEFAULT_KEY: ProfileKey = "mgmt_token"
#: The keys of a profile that say which cluster influxctl talks to (none of them is a credential).
CONNECTION_KEYS = ("product", "host", "port", "account_id", "cluster_id")
#: Issuers whose tokens are management tokens: they go to ``mgmt_token``, and only they do.
MANAGEMENT_TOKEN_ISSUERS = frozenset({"influxctl-management"})
#: Entries kept per profile and key in the sidecar, whatever their tokens' expiry: the value just
#: written, the one it replaced, and three before those (a config put back from a backup a few
#: rotations old, or a rotation and an emergency one since the backup, still names its token).
_KEEP = 5
#: With those, the entries of tokens that may still be valid (their revocation may be pending: a
#: policy whose grace spans many rotations), up to this many: the sidecar stays small (about 400
#: bytes an entry) whatever a schedule does (tokens of no expiry, emergency rotations in a loop).
_KEEP_MAX = 32
_LOCK_TIMEOUT = timedelta(seconds=10)
_LOCK_POLL_S = 0.05
_VERSION_DOMAIN = b"rotator influxctl-profile version\0"
_TOMLLIB_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")
_KEY_LINES = {key: re.compile(rf"""^[ \t]*({key}|"{key}"|'{key}')[ \t]*=""") for key in get_args(ProfileKey)}
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.rotator-(?P<pid>\d+)-[A-Za-z0-9_]+\.tmp\Z")

_ERR_MISSING = "{where}: the config file does not exist"
_HINT_MISSING = (
    "create it with the [[profile]] (name, product, host or account_id/cluster_id) influxctl needs; "
    "rotator only writes mgmt_token or token into an existing profile"
)
_ERR_READ = "{where}: cannot read {path}: {reason}"
_ERR_ENCODING = "{where}: {path} is not UTF-8 text (byte {offset}); the file was left untouched"
_ERR_SYNTAX = "{where}: {path} is not valid TOML: syntax error at {position}; the file was left untouched"
_HINT_SYNTAX = "fix the TOML at that position by hand (an unquoted value? a missing quote?), then run again"
#: What tomllib refuses with no position (RecursionError, or ValueError from int()) and tomlkit with RecursionError.
_UNREADABLE_AT = "an unknown position (a value nested too deep, or an integer of thousands of digits)"
_HINT_UNREADABLE = (
    "look for an array or inline table nested hundreds of levels deep, or an integer of more than 4,300 digits, "
    "which influxctl never writes; remove it by hand, then run again"
)
_ERR_SHAPE = "{where}: {path}: {problem}; the file was left untouched"
_HINT_SHAPE = "edit the file so that every profile is a [[profile]] table with a unique name"
_ERR_NO_PROFILE = "{where}: {path} has no [[profile]] named {profile!r} (profiles: {known})"
_HINT_NO_PROFILE = (
    "add the profile with its product and host/account settings first (rotator never creates one), "
    "or set `profile` to one of the existing names"
)
_ERR_SIDECAR = "{where}: the sidecar {path} is malformed: {problem}"
_HINT_SIDECAR = (
    "restore it from a backup, or delete it: the profile then reads as not managed by rotator, and the next "
    "publish needs `adopt = true` (rotator sync: --adopt)"
)
#: The store's own fix for an entry it cannot read (MalformedPayload): contracts.MALFORMED_HINT says to
#: restore the secret's last good version, which a file has not; its backup of the sidecar is that here.
#: `--replace` works on this store (publish writes over such an entry at the version it read).
_HINT_MALFORMED = (
    "write a working token over it with `rotator bootstrap POLICY --replace --reason TEXT --token-file FILE "
    "--token-id ID` (docs/operations.md), or put back the sidecar {sidecar} from a backup"
)
_ERR_CONFLICT = "{where}: compare-and-set lost: expected {expected}, the profile now holds {actual}"
_HINT_CONFLICT = (
    "someone changed {key} of this profile after rotator read it (a hand edit, or another rotator "
    "writing the same profile); check who writes it, then rotate again"
)
_WHILE_WRITING = (
    " (changed while rotator was writing the file; the config file was left as the other writer saved it)"
)
_ERR_CHANGED = (
    "{where}: {path} was changed by another writer while rotator was writing it ({key} of this profile "
    "was not); the config file was left as that writer left it"
)
_ERR_CHANGED_UNREADABLE = (
    "{where}: {path} was changed by another writer while rotator was writing it, and cannot be read "
    "right now ({error}); the config file was left as that writer left it"
)
_ERR_RELINKED = (
    "{where}: {path} now points to another file ({new}) than {old}, which rotator read; the config file was not "
    "written"
)
_ERR_MOVED = (
    "{where}: the directory {directory} was moved or replaced while rotator was using it; nothing more was written"
)
_HINT_CHANGED = (
    "rotator reads the file again and retries; if this keeps happening, something rewrites the file all the "
    "time (configuration management?): find out what"
)
_ERR_OWNER = (
    "{where}: {path} belongs to uid {uid}, rotator runs as uid {euid} and is not root: it cannot keep the owner"
)
_HINT_OWNER = "run rotator as the file's owner (the user that runs influxctl), or as root"
_ERR_WRITE = "{where}: cannot write {path}: {reason}"
_HINT_WRITE = "rotator needs write access to the directory {directory} (temporary file + rename)"
_HINT_GONE = (
    "check that the directory {directory} still exists and that {path} is a file (not a directory), then run the "
    "same command again"
)
_ERR_EDIT = (
    "{where}: editing {path} would change more than the {key} line of profile {profile!r} "
    "({problem}); nothing was written"
)
_HINT_EDIT = 'add the line `{key} = ""` to the profile by hand, then publish again'
_ERR_BUSY = "{where}: another process has been writing {directory} for {seconds:g}s"
_HINT_BUSY = "rotator retries; check for a hung `rotator sync` or rotation writing the same file"
#: :meth:`InfluxctlProfileStore.target` before the store's first read
_UNREAD: Any = object()
_ERR_MOVED_PROFILE = (
    "{where}: profile {profile!r} of {path} now sends its tokens to {now}, and sent them to {before} when "
    "rotator read it; nothing was written"
)
_HINT_MOVED_PROFILE = (
    "someone pointed the profile at another cluster while the rotation ran; if that is meant, point the "
    "policy's issuer at that cluster too (for mgmt_token, rotator refuses to mint for a profile of another "
    "cluster than the issuer's), then rotate again"
)
_ERR_ISSUER = "{where}: token {token_id} of issuer {issuer!r} is not written to {key}: {problem}"
_HINT_ISSUER = (
    'set key = "mgmt_token" for the management token of an influxctl-management policy and key = "token" for '
    "every other issuer's token (docs/sync.md#the-stores-settings)"
)

#: ``replace(src, dst, dir_fd)``: the rename step of an atomic write, ``src`` and ``dst`` names in the
#: directory ``dir_fd`` (the config's directory as the store opened it); the seam where tests inject a crash.
Replace = Callable[[str, str, int], None]


def _replace_in(src: str, dst: str, dir_fd: int) -> None:
    """The default :data:`Replace`: ``rename(2)`` of ``src`` over ``dst``, both in the directory ``dir_fd``."""
    os.replace(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


class InfluxctlProfileSettings(BaseModel):
    """``[[policy.store]] type = "influxctl-profile"`` settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: Path | None = Field(
        default=None,
        description="influxctl config.toml; relative to the policy file, ~ expanded; default: influxctl's own "
        "default path ($XDG_CONFIG_HOME/influxctl/config.toml or ~/.config/influxctl/config.toml on Linux)",
    )
    profile: str = Field(
        default="default", min_length=1, description="name of the existing [[profile]] whose key is written"
    )
    key: ProfileKey = Field(
        default=DEFAULT_KEY,
        description='the profile key written: "mgmt_token" (a management token, influxctl-management policies '
        'only) or "token" (the database token of influxctl query/write; any other issuer\'s token)',
    )

    @field_validator("profile")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if value != value.strip() or any(ord(c) < 0x20 for c in value):
            raise ValueError("must not have surrounding spaces or control characters")
        return value

    def issuer_problem(self, issuer_type: str) -> str | None:
        """Why this store cannot hold the tokens of ``issuer_type`` (None: it can); see :func:`key_problem`."""
        return key_problem(self.key, issuer_type)

    def secret_locations(self, base_dir: Path) -> list[str]:
        """The profile key this store writes, for rotator/config/policy.py, which refuses two stores that
        write one (the second policy's runs would fail, or overwrite the first's token with ``adopt``):
        the config file as the store opens it (:meth:`InfluxctlProfileStore.from_config`), its
        symbolic links resolved as a write does, the profile and the key."""
        config = default_config_path() if self.config is None else self.config.expanduser()
        return [f"influxctl profile {self.profile!r} key {self.key} in {_real_config(config, base_dir)!r}"]


def key_problem(key: str, issuer_type: str) -> str | None:
    """Why tokens of ``issuer_type`` may not be written to profile key ``key`` (None: they may).

    ``mgmt_token`` holds management tokens (the ``influxctl-management`` issuer), which influxctl's
    administrative commands authenticate with; ``token`` holds the token of ``query``/``write``,
    which a management token cannot be. An empty ``issuer_type`` (a payload that does not name
    its issuer) is not checked.
    """
    if key not in get_args(ProfileKey):
        return f"{key!r} is not a profile key rotator writes (mgmt_token, token)"
    if not issuer_type:
        return None
    management = issuer_type in MANAGEMENT_TOKEN_ISSUERS
    if key == "mgmt_token" and not management:
        return (
            f"mgmt_token holds a management token, and {issuer_type} tokens are not management tokens: "
            'use key = "token"'
        )
    if key == "token" and management:
        return (
            "token holds the database token of influxctl query/write, and a management token grants no "
            'access to data: use key = "mgmt_token"'
        )
    return None


def connection_target(connection: Mapping[str, Any]) -> str | None:
    """Where influxctl sends the tokens of a profile with these :data:`CONNECTION_KEYS`, spelled as the
    influxctl issuers' ``target()`` (:func:`~rotator.adapters.influxctl.common.profile_target`), so that
    ``Cluster-A.example.com.`` with no port and ``cluster-a.example.com`` with ``port = "443"`` name one
    cluster. None when the profile names no cluster yet: no ``product`` influxctl knows, or not the keys
    that name a cluster of it (``host``; ``account_id`` and ``cluster_id``), or those keys empty.
    A ``port`` that is no port number stays in the text as written: it names no cluster the issuer does."""

    def text(key: str) -> str | None:
        value = connection.get(key)
        return (value.strip() or None) if isinstance(value, str) else None

    product = text("product")
    if product == "dedicated":
        account_id, cluster_id = text("account_id"), text("cluster_id")
        if account_id is None or cluster_id is None:
            return None
        return profile_target(ProfileSettings(product="dedicated", account_id=account_id, cluster_id=cluster_id))
    host = text("host")
    if product != "clustered" or host is None:
        return None
    raw = connection.get("port")
    port = str(raw).strip() if isinstance(raw, str | int) and not isinstance(raw, bool) else ""
    if not port:
        return profile_target(ProfileSettings(product="clustered", host=host))
    if port.isascii() and port.isdigit() and 1 <= int(port) <= 65535:  # influxctl's config: port = "443"
        return profile_target(ProfileSettings(product="clustered", host=host, port=int(port)))
    return f"clustered {target_host_port(host, None).rpartition(':')[0]}:{port}"


def _absolute(path: Path, base_dir: Path) -> Path:
    """``path`` (``~`` expanded) against the policy file's directory, normalised."""
    return Path(os.path.abspath(path if path.is_absolute() else base_dir / path))


@lru_cache(maxsize=1024)
def _absolute_config(config: Path, base_dir: Path, home: str | None) -> Path:  # noqa: ARG001 - home: the cache key
    """:func:`_absolute` of ``config``, ``~`` expanded; remembered (a daemon builds one store per policy)."""
    return _absolute(config.expanduser(), base_dir)


@lru_cache(maxsize=1024)
def _real_config(config: Path, base_dir: Path) -> str:
    """The file ``config`` (relative to ``base_dir``) is, symbolic links resolved; remembered (a file of many
    policies names a few config files)."""
    return os.path.realpath(_absolute(config, base_dir))


def default_config_path(env: Mapping[str, str] | None = None, platform: str | None = None) -> Path:
    """influxctl's default config file: Go's ``os.UserConfigDir()`` + ``influxctl/config.toml``."""
    env = os.environ if env is None else env
    platform = platform or sys.platform
    home = env.get("HOME") or str(Path.home())
    if platform == "darwin":
        base = Path(home, "Library", "Application Support")
    elif platform.startswith("win"):
        base = Path(env.get("APPDATA") or Path(home, "AppData", "Roaming"))
    else:
        base = Path(env.get("XDG_CONFIG_HOME") or Path(home, ".config"))
    return base / "influxctl" / "config.toml"


def value_version(value: str, generation: int = 0) -> str:
    """The version id of a profile holding ``value``: a fingerprint, not the value; ``-g<n>`` added
    once the same value was written again at its own version ``n`` times (its sidecar entry's
    ``generation``): recovery's fencing write, which must move the version (docs/design-notes.md)."""
    fingerprint = hashlib.sha256(_VERSION_DOMAIN + value.encode("utf-8")).hexdigest()[:16]
    return f"{fingerprint}-g{generation}" if generation > 0 else fingerprint


def _generation(entry: Mapping[str, Any] | None) -> int:
    value = entry.get("generation") if entry is not None else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


#: What tells the config file read from a later one: (st_dev, st_ino, st_mtime_ns, st_size, SHA-256 of the
#: bytes). The digest is there because an in-place rewrite of the same size can keep the inode, and
#: its mtime too where the file system's clock ticks coarser than the rewrite (a few ms on Linux).
_Identity = tuple[int, int, int, int, bytes]


class _NotRegularFile(OSError):
    """The name is a directory, FIFO, device or socket: not read (a FIFO would block, a device never end)."""

    def __init__(self, mode: int) -> None:
        directory = S_ISDIR(mode)
        super().__init__(errno.EISDIR if directory else errno.EINVAL, "is a directory" if directory else
                         "not a regular file")  # fmt: skip


def _read_regular(dir_fd: int, name: str) -> tuple[bytes, os.stat_result]:
    """The bytes of the regular file ``name`` in the directory ``dir_fd``, and its fstat. Never through a
    symbolic link (O_NOFOLLOW: ELOOP): the name was resolved when the directory was opened, and a link
    found there now was put there since. O_NONBLOCK: the open of a FIFO does not wait for a writer."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        stat = os.fstat(fd)
        if not S_ISREG(stat.st_mode):
            raise _NotRegularFile(stat.st_mode)
        with open(fd, "rb", closefd=False) as fh:
            return fh.read(), stat
    finally:
        os.close(fd)


def _read_identified(dir_fd: int, name: str) -> tuple[bytes, os.stat_result, _Identity]:
    """The file's bytes, and the stat and identity of the very file those bytes came from (fstat of
    the descriptor read: a ``stat`` of the path could see a file that replaced it in between)."""
    raw, stat = _read_regular(dir_fd, name)
    return raw, stat, (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size, hashlib.sha256(raw).digest())


def _dev_ino(stat: os.stat_result) -> tuple[int, int]:
    return stat.st_dev, stat.st_ino


@dataclass(frozen=True)
class _Dir:
    """The config's directory, opened once under the lock. Every later step names its files relative
    to ``fd``, never by path: the directory swapped for a symlink meanwhile (by a user who owns its
    parent, while rotator runs as root) then cannot send a read to one directory and a write to another."""

    fd: int
    path: Path  # the real directory as resolved when opened: for messages (and the re-check) only
    name: str  # the config file's name in it (symlinks resolved)
    locked: bool  # False: the file system refused the lock (ENOLCK)

    @property
    def config(self) -> Path:
        return self.path / self.name

    @property
    def sidecar(self) -> str:
        return self.name + SIDECAR_SUFFIX


@dataclass
class _Snapshot:
    """The config file and its sidecar as read under the directory lock."""

    path: Path  # the real file (symlinks resolved)
    stat: os.stat_result
    identity: _Identity  # of the file read, to tell whether another writer replaced or edited it since
    text: str
    doc: tomlkit.TOMLDocument
    data: dict[str, Any]
    index: int  # of the profile in the `profile` array
    table: Table
    value: str | None  # None: no value under the key, or an empty one
    sidecar: dict[str, Any]
    entries: list[dict[str, Any]]  # the sidecar's entries for this profile and key


class InfluxctlProfileStore:
    """The current token as ``mgmt_token`` (or ``token``) of one profile in an influxctl config file."""

    kind: ClassVar[str] = "influxctl-profile"
    settings_model: ClassVar[type[BaseModel]] = InfluxctlProfileSettings

    def __init__(
        self, path: Path, profile: str, clock: Clock, replace: Replace = _replace_in, key: ProfileKey = DEFAULT_KEY
    ) -> None:
        self._path = path
        self._profile = profile
        self._clock = clock
        self._replace = replace
        self._key = key
        #: the profile's CONNECTION_KEYS as the last read found them (target(): PLAN's read, not another)
        self._connection: dict[str, Any] = _UNREAD
        suffix = "" if key == DEFAULT_KEY else f".{key}"
        self._location = f"influxctl-profile:{path}#{profile}{suffix}"

    @classmethod
    def from_config(
        cls, settings: BaseModel, ctx: AdapterContext, replace: Replace | None = None
    ) -> InfluxctlProfileStore:
        """Nothing is read here; the file is read on each call."""
        settings = checked_settings(cls, settings, InfluxctlProfileSettings)
        if settings.config is None:
            path = _absolute(default_config_path(), ctx.base_dir)
        elif ctx.base_dir.is_absolute():
            path = _absolute_config(settings.config, ctx.base_dir, os.environ.get("HOME"))
        else:  # relative to the working directory, which may change
            path = _absolute(settings.config.expanduser(), ctx.base_dir)
        return cls(path, settings.profile, ctx.clock, replace or _replace_in, settings.key)

    @property
    def location(self) -> str:
        return self._location

    @property
    def path(self) -> Path:
        return self._path

    @property
    def key(self) -> ProfileKey:
        return self._key

    @property
    def sidecar_path(self) -> Path:
        with contextlib.suppress(OSError):  # (for messages: a path being swapped right now is named as configured)
            return _sidecar(Path(os.path.realpath(self._path)))
        return _sidecar(self._path)

    def read_current(self) -> StoreState:
        """The profile's value under ``key`` and, if the sidecar knows that value, its record.

        ConfigError if the file or profile is missing or the file cannot be parsed;
        PermanentError if the sidecar is malformed.
        """
        self._connection = _UNREAD  # (a failed read leaves no answer of an older file behind)
        with self._locked(exclusive=False) as directory:
            snap = self._read(directory)
        self._connection = _connection_of(snap.data["profile"][snap.index])
        state = self._state(snap, warn=True)
        logger.debug(
            "%s: version %s, managed=%s, token_id=%s", self._location, state.version, state.managed, state.token_id
        )
        return state

    def target(self) -> str | None:
        """Where influxctl sends this profile's ``mgmt_token``, in the influxctl issuers' spelling (see
        :func:`connection_target`; contracts.Store): the engine refuses, before it mints, to rotate a
        policy whose issuer names another cluster. None (nothing compared) for a ``token`` store, and
        for a profile that names no cluster yet.

        The profile as the last :meth:`read_current` read it (PLAN's read: no second read of the file
        per rotation); before any, the file is read now, and raises as :meth:`read_current` does."""
        if self._key != "mgmt_token":
            return None
        if self._connection is _UNREAD:
            with self._locked(exclusive=False) as directory:
                snap = self._read(directory)
            self._connection = _connection_of(snap.data["profile"][snap.index])
        return connection_target(self._connection)

    def connections(self) -> dict[str, dict[str, Any]]:
        """Every profile's :data:`CONNECTION_KEYS`, as the file has them (a key it lacks is left out),
        by profile name: where influxctl sends each profile's tokens. No credential is returned.

        For ``rotator sync``, which must not write a policy's token into a profile of another
        cluster. Raises as :meth:`read_current` does (the store's own profile must exist).
        """
        with self._locked(exclusive=False) as directory:
            snap = self._read(directory)
        return {entry["name"]: _connection_of(entry) for entry in snap.data["profile"]
                if isinstance(entry.get("name"), str)}  # fmt: skip

    def publish(self, record: TokenRecord, expected_version: str | None) -> str:
        """Write ``record`` as the profile's value under ``key``, compare-and-set on ``expected_version``.

        ConflictError if the profile's value changed since, or if the profile names another cluster
        than at this store's last read (:meth:`target` answered from that read; the version does not
        cover the cluster): nothing is written. A record that already is the current
        value returns its version without writing anything, unless ``expected_version`` is that
        version: then only its sidecar entry's generation moves, and so the version (recovery's
        fencing write). A write that leaves the value as it was (an adopt) moves the generation
        too, so that every write moves the version and a retry of it (at the version before) writes
        nothing. PermanentError, before anything is read or written, for a record whose issuer does
        not belong under ``key``. A value whose sidecar entry rotator cannot read (MalformedPayload at
        :meth:`read_current`) is written over at the version that error carries: `bootstrap --replace`.
        """
        problem = key_problem(self._key, record.issuer)
        if problem is not None:
            raise PermanentError(
                _ERR_ISSUER.format(
                    where=self._location, token_id=record.token_id, issuer=record.issuer, key=self._key, problem=problem
                ),
                hint=_HINT_ISSUER,
            )
        value = record.value.reveal()
        if not value or value != value.strip() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise PermanentError(
                f"{self._location}: token {record.token_id} has surrounding spaces or control characters; not written",
                hint="check the issuer's output for this token",
            )
        new_version = value_version(value)
        with self._locked(exclusive=True) as directory:
            snap = self._read(directory)
            state = self._state_to_write(snap)
            current = state.record
            if current is not None and current.token_id == record.token_id and current.value == record.value:
                if expected_version is None or expected_version != state.version:
                    # (a publish that completes one that landed: the Store contract, nothing to write)
                    self._restrict_mode(directory, snap)
                    logger.info("%s already holds token %s; nothing to write", self._location, record.token_id)
                    return str(state.version)
                # Written again at its own version: recovery fencing a publish that may still be under
                # way. The value stays; its entry's generation, and so the version, moves on, so that
                # such a publish (compare-and-set on the version before) fails.
                return self._next_generation(directory, snap, state.version)
            self._check_same_place(snap)
            if state.version != expected_version:
                raise ConflictError(
                    _ERR_CONFLICT.format(
                        where=self._location,
                        expected=_describe_version(expected_version, self._key),
                        actual=_describe_version(state.version, self._key),
                    ),
                    hint=_HINT_CONFLICT.format(key=self._key),
                )
            owner = self._owner(snap)
            self._remove_stale_temp_files(directory)
            text = snap.text if snap.value == value else self._edit(snap, value)
            entry = _entry(record, value, self._key, self._clock)
            if snap.value == value:  # the value stays (an adopt): the version moves by the generation
                same = [e for e in snap.entries if _matches(e, value)]
                entry["generation"] = max((_generation(e) for e in same), default=0) + 1
                new_version = value_version(value, entry["generation"])
            history = _history(entry, snap.entries, snap.value, value, self._clock.now())
            sidecar = _with_entries(snap.sidecar, self._profile, self._key, history)
            # The lock keeps other rotators out, not people or configuration management: each rename
            # first checks that the config is still the file read, or the edit made meanwhile is lost.
            unchanged = partial(self._check_unchanged, directory, snap, state.version)
            # 1. The sidecar first: until the config is replaced, it still describes the old value.
            self._write(directory, directory.sidecar, _dump_sidecar(sidecar), owner, check=unchanged)
            # 2. The config: readers see the old or the new file, never a mix. An adopt leaves the value
            # as it is; a file others may read is still written (the same bytes, mode 0600): from now on
            # it holds a token rotator manages, as every file rotator writes does.
            readable = snap.stat.st_mode & 0o077
            if text != snap.text or readable:
                if readable:
                    logger.warning("%s: %s was readable by others (mode %o): written again with mode 0600",
                                   self._location, snap.path, snap.stat.st_mode & 0o777)
                self._write(directory, directory.name, text.encode("utf-8"), owner, check=unchanged)
        logger.info(
            "published token %s to %s of profile %r of %s (was %s)",
            record.token_id,
            self._key,
            self._profile,
            self._path,
            state.token_id or ("an unmanaged value" if state.version else f"no {self._key}"),
        )
        return new_version

    def _check_same_place(self, snap: _Snapshot) -> None:
        """ConflictError unless the profile names the cluster it named at this store's last read.

        The compare-and-set version covers the value only: a profile pointed at another cluster after
        PLAN read it (and after the engine compared :meth:`target` with the issuer's) would otherwise
        be written, and influxctl would send the token minted for one cluster to the other. Before
        the store's first read (a fresh store) there is nothing to compare with."""
        before = self._connection
        if before is _UNREAD:
            return
        now = _connection_of(snap.data["profile"][snap.index])
        if _same_place(before, now):
            return
        raise ConflictError(
            _ERR_MOVED_PROFILE.format(where=self._location, profile=self._profile, path=snap.path,
                                      before=_describe_connection(before), now=_describe_connection(now)),
            hint=_HINT_MOVED_PROFILE,
        )

    def _next_generation(self, directory: _Dir, snap: _Snapshot, version: str | None) -> str:
        assert snap.value is not None
        entry = next(e for e in snap.entries if _matches(e, snap.value))
        generation = _generation(entry) + 1
        history = _history({**entry, "generation": generation}, snap.entries, snap.value, snap.value, self._clock.now())
        sidecar = _with_entries(snap.sidecar, self._profile, self._key, history)
        owner = self._owner(snap)
        self._restrict_mode(directory, snap)
        # (the new version names the value read: it must still be the config's when the sidecar says so)
        self._write(directory, directory.sidecar, _dump_sidecar(sidecar), owner,
                    check=partial(self._check_unchanged, directory, snap, version))
        logger.info("%s: token %s written again at its own version (generation %d)", self._location,
                    entry.get("token_id"), generation)
        return value_version(snap.value, generation)

    # -- reading -------------------------------------------------------------------------

    def _real_path(self) -> Path:
        """The configured path, symbolic links resolved (a symlinked config is written through to its target)."""
        try:
            return Path(os.path.realpath(self._path))
        except OSError as exc:
            # realpath() raises when a component changes while it resolves it (EINVAL: a symlink at
            # lstat is none at readlink): the path is being swapped, the retry resolves it again.
            reason = exc.strerror or type(exc).__name__
            raise _os_error(exc, _ERR_READ.format(where=self._location, path=self._path, reason=reason)) from None

    def _read(self, directory: _Dir) -> _Snapshot:
        path = directory.config
        try:
            raw, stat, identity = _read_identified(directory.fd, directory.name)
        except FileNotFoundError:
            raise ConfigError(_ERR_MISSING.format(where=self._location), hint=_HINT_MISSING) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                # A symlink where the path resolved to a file: relinked since (TransientError), unless
                # the path names itself (a symlink loop, which realpath leaves unresolved).
                self._check_directory(directory)
            raise _os_error(exc, _ERR_READ.format(where=self._location, path=path, reason=exc.strerror)) from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                _ERR_ENCODING.format(where=self._location, path=path, offset=exc.start), hint="save the file as UTF-8"
            ) from None
        data, doc = self._parse(path, text)
        index, table = self._find_profile(path, data, doc)
        value = data["profile"][index].get(self._key)
        if value is not None and not isinstance(value, str):
            problem = f"{self._key} of profile {self._profile!r} is not a string"
            raise ConfigError(_ERR_SHAPE.format(where=self._location, path=path, problem=problem),
                              hint=f'write it as a quoted string ({self._key} = "..."), or delete the line and let '
                              "rotator write it")
        sidecar = self._read_sidecar(directory)
        entries = [e for e in sidecar["profiles"].get(self._profile, []) if _entry_key(e) == self._key]
        return _Snapshot(path, stat, identity, text, doc, data, index, table, value or None, sidecar, entries)

    def _parse(self, path: Path, text: str) -> tuple[dict[str, Any], tomlkit.TOMLDocument]:
        # tomllib is the reference parser; tomlkit edits. Both must accept the file.
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            match = _TOMLLIB_POSITION.search(str(exc))
            position = f"line {match[1]}, column {match[2]}" if match else "the end of the file"
            raise self._syntax_error(path, position) from None
        except (ValueError, RecursionError):
            # Valid syntax tomllib cannot hold: its recursive descent overflows on a value nested a few
            # thousand deep, and int() refuses more than 4,300 digits. No position comes with either.
            raise self._syntax_error(path, _UNREADABLE_AT, _HINT_UNREADABLE) from None
        try:
            doc = tomlkit.parse(text)
        except tomlkit.exceptions.ParseError as exc:
            raise self._syntax_error(path, f"line {exc.line}, column {exc.col + 1}") from None
        except tomlkit.exceptions.TOMLKitError:
            raise self._syntax_error(path, "an unknown position (tomlkit refused it)") from None
        except RecursionError:  # tomlkit caps nesting at 100 levels itself; this guards what its cap misses
            raise self._syntax_error(path, _UNREADABLE_AT, _HINT_UNREADABLE) from None
        return data, doc

    def _syntax_error(self, path: Path, position: str, hint: str = _HINT_SYNTAX) -> ConfigError:
        # Never the parser's own text: it may quote the file, and the file holds tokens.
        return ConfigError(
            _ERR_SYNTAX.format(where=self._location, path=path, position=position),
            hint=hint,
        )

    def _find_profile(self, path: Path, data: dict[str, Any], doc: tomlkit.TOMLDocument) -> tuple[int, Table]:
        def shape(problem: str) -> ConfigError:
            return ConfigError(_ERR_SHAPE.format(where=self._location, path=path, problem=problem), hint=_HINT_SHAPE)

        profiles = data.get("profile", [])
        if not isinstance(profiles, list) or not all(isinstance(p, dict) for p in profiles):
            raise shape("`profile` is not an array of [[profile]] tables")
        names = [p.get("name") for p in profiles]
        matches = [i for i, n in enumerate(names) if n == self._profile]
        if not matches:
            known = ", ".join(repr(n) for n in names if isinstance(n, str)) or "none"
            raise ConfigError(
                _ERR_NO_PROFILE.format(where=self._location, path=path, profile=self._profile, known=known),
                hint=_HINT_NO_PROFILE,
            )
        if len(matches) > 1:
            raise shape(f"{len(matches)} profiles are named {self._profile!r}")
        container = doc.get("profile")
        if not isinstance(container, AoT):
            raise shape("`profile` is written as an inline array; rotator edits [[profile]] tables only")
        tables = [t for t in container.body if t.get("name") == self._profile]
        if len(tables) != 1:
            raise shape(f"profile {self._profile!r} could not be located for editing")
        return matches[0], tables[0]

    def _read_sidecar(self, directory: _Dir) -> dict[str, Any]:
        path = directory.path / directory.sidecar
        empty: dict[str, Any] = {"managed-by": MANAGED_BY, "schema": SIDECAR_SCHEMA, "profiles": {}}
        try:
            raw = _read_regular(directory.fd, directory.sidecar)[0].decode("utf-8")
        except FileNotFoundError:
            return empty
        except _NotRegularFile as exc:
            raise self._bad_sidecar(path, exc.strerror or "not a regular file") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # rotator writes it as a file; a link would read another file's entries
                raise self._bad_sidecar(path, "a symbolic link") from None
            raise _os_error(exc, _ERR_READ.format(where=self._location, path=path, reason=exc.strerror)) from None
        except UnicodeDecodeError:
            raise self._bad_sidecar(path, "not UTF-8 text") from None
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nested thousands deep, which rotator never writes
            raise self._bad_sidecar(path, "not JSON") from None
        if not isinstance(doc, dict) or doc.get("managed-by") != MANAGED_BY:
            raise self._bad_sidecar(path, 'not a JSON object with "managed-by": "rotator"')
        if doc.get("schema") != SIDECAR_SCHEMA:
            raise self._bad_sidecar(path, f"schema {doc.get('schema')!r}, this rotator reads schema {SIDECAR_SCHEMA}")
        profiles = doc.get("profiles")
        if not isinstance(profiles, dict) or not all(
            isinstance(v, list) and all(isinstance(e, dict) for e in v) for v in profiles.values()
        ):
            raise self._bad_sidecar(path, '"profiles" is not an object of lists of entries')
        return doc

    def _bad_sidecar(self, path: Path, problem: str) -> PermanentError:
        return PermanentError(_ERR_SIDECAR.format(where=self._location, path=path, problem=problem), hint=_HINT_SIDECAR)

    def _state(self, snap: _Snapshot, *, warn: bool) -> StoreState:
        if snap.value is None:
            return StoreState(version=None, managed=bool(snap.entries), record=None)
        # Any of the key's entries, not only the newest: a value rotator wrote before, put back (a config
        # restored from a backup, configuration management's copy), must still name its token, or the engine
        # would find no store holding that token and revoke it once its grace passed.
        entry = next((e for e in snap.entries if _matches(e, snap.value)), None)
        if entry is not None and entry is not snap.entries[0] and warn:
            logger.warning(
                "%s: %s holds token %s, which rotator wrote before token %s (a config put back from a backup, or "
                "a publish that did not finish?); rotator does not revoke it while the profile holds it",
                self._location,
                self._key,
                entry.get("token_id"),
                snap.entries[0].get("token_id"),
            )
        if entry is None:
            if warn and snap.entries:
                logger.warning(
                    "%s: %s is none of the values rotator wrote (the last: token %s): changed by hand? "
                    "It reads as not managed by rotator",
                    self._location,
                    self._key,
                    snap.entries[0].get("token_id"),
                )
            return StoreState(version=value_version(snap.value), managed=False, record=None)
        payload = {k: v for k, v in entry.items() if k not in ("key", "salt", "sha256", "written_at", "generation")}
        try:
            record = TokenRecord.from_payload({**payload, "token": snap.value},
                                              f"{self._location} ({_sidecar(snap.path)})")  # fmt: skip
        except MalformedPayload as exc:
            exc.state = StoreState(version=value_version(snap.value, _generation(entry)), managed=True, record=None)
            exc.hint = _HINT_MALFORMED.format(sidecar=_sidecar(snap.path))
            raise
        return StoreState(version=value_version(snap.value, _generation(entry)), managed=True, record=record)

    def _state_to_write(self, snap: _Snapshot) -> StoreState:
        """What a publish compares against: :meth:`_state`, where an entry rotator cannot read
        (MalformedPayload) is no record at its version, as `bootstrap --replace` read it. The
        compare-and-set on that version lets the repair write over the entry, as a Vault or AWS store
        writes over a malformed payload; a rotation never publishes over it unseen, its PLAN read
        fails on the entry. The entry stays in the sidecar after the config no longer holds its value, as
        every older entry does (the module's docstring, History): that value put back fails the read
        again, which stops revocations too, instead of reading as a value rotator never wrote."""
        try:
            return self._state(snap, warn=False)
        except MalformedPayload as exc:
            assert isinstance(exc.state, StoreState)  # _state sets it
            return exc.state

    # -- writing -------------------------------------------------------------------------

    def _edit(self, snap: _Snapshot, value: str) -> str:
        """The config text with only the profile's ``key`` set to ``value``, checked."""
        doc, table, key = snap.doc, snap.table, self._key  # a snapshot is used once: edit it in place
        newline = "\r\n" if "\r\n" in snap.text.split("\n", 1)[0] + "\n" else "\n"
        if key in table:
            old = table.value.item(key)
            # A single-line literal string stays literal (as_string(): String.type is tomlkit >= 0.14).
            written = old.as_string() if isinstance(old, String) else ""
            literal = written.startswith("'") and not written.startswith("'''") and "'" not in value
            table[key] = tomlkit.string(value, literal=literal)
        else:
            _add_after_last_plain_key(table, key, value, newline)
        text = doc.as_string()
        problem = _edit_problem(snap.text, text, snap.data, snap.index, key, value, newline)
        if problem:
            raise PermanentError(
                _ERR_EDIT.format(where=self._location, path=snap.path, key=key, profile=self._profile, problem=problem),
                hint=_HINT_EDIT.format(key=key),
            )
        return text

    def _owner(self, snap: _Snapshot) -> tuple[int, int]:
        uid, gid = snap.stat.st_uid, snap.stat.st_gid
        euid = os.geteuid()
        if euid != 0 and uid != euid:
            raise PermanentError(
                _ERR_OWNER.format(where=self._location, path=snap.path, uid=uid, euid=euid), hint=_HINT_OWNER
            )
        return uid, gid

    def _write(
        self, directory: _Dir, name: str, data: bytes, owner: tuple[int, int], check: Callable[[], None] | None = None
    ) -> None:
        """Replace ``name`` of ``directory`` atomically: temp file in that directory, fsync, rename, fsync the
        directory (each rename is durable before the next file is written: the order matters).

        ``check`` runs last before the rename, as close to it as it can be: when it raises, the
        temporary file is removed and nothing is replaced."""
        path = directory.path / name
        tmp = f".{name}.rotator-{os.getpid()}-{secrets.token_hex(6)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, 0o600, dir_fd=directory.fd)
        except OSError as exc:
            raise self._write_error(path, exc) from None
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fchmod(fh.fileno(), 0o600)  # exactly 0600, whatever the umask
                _chown(fh.fileno(), owner)
                os.fsync(fh.fileno())
            if check is not None:
                check()
            self._replace(tmp, name, directory.fd)
        except OSError as exc:
            # Nothing was replaced: the file is as it was (the rename is all or nothing).
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=directory.fd)
            raise self._write_error(path, exc) from None
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=directory.fd)
            raise
        self._sync_dir(directory.fd, path)

    def _restrict_mode(self, directory: _Dir, snap: _Snapshot) -> None:
        """A config others may read, where the publish writes no config (it holds the record already, or
        only its generation moves): mode 0600 set in place. fchmod keeps the inode, bytes and mtime, so
        the file is otherwise the one the caller was told is left as it was."""
        mode = snap.stat.st_mode & 0o777
        if not mode & 0o077:
            return
        try:
            fd = os.open(directory.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=directory.fd)  # fmt: skip
            try:
                if _dev_ino(os.fstat(fd)) != _dev_ino(snap.stat):
                    return  # replaced since the read: not the file read (the retry, or the next run, sees it)
                os.fchmod(fd, 0o600)
            finally:
                os.close(fd)
        except OSError as exc:
            # The token itself is not written by this publish: failing it would not make the file private.
            logger.warning("%s: %s is readable by others (mode %o) and rotator cannot set mode 0600 (%s): "
                           "run chmod 600 on it", self._location, snap.path, mode, exc.strerror)  # fmt: skip
            return
        logger.warning("%s: %s was readable by others (mode %o): set to mode 0600", self._location, snap.path, mode)

    def _check_directory(self, directory: _Dir) -> None:
        """Raise TransientError unless the configured path still resolves to ``directory``'s config file:
        the same name in the very directory ``directory.fd`` is (device and inode, not just its path)."""
        real = self._real_path()
        if real != directory.config:
            # The configured path is a symlink that now points elsewhere (configuration management
            # swapped it): the file read is no longer the one influxctl reads. The retry reads the new one.
            raise TransientError(
                _ERR_RELINKED.format(where=self._location, path=self._path, new=real, old=directory.config),
                hint=_HINT_CHANGED,
            )
        try:
            same = _dev_ino(os.stat(real.parent)) == _dev_ino(os.fstat(directory.fd))
        except OSError:
            same = False
        if not same:
            # The directory was moved, or swapped for a symlink: the path no longer leads to the directory
            # the lock is held on and the files were read from. Writing there would write where no one reads.
            raise TransientError(
                _ERR_MOVED.format(where=self._location, directory=directory.path), hint=_HINT_CHANGED
            )

    def _check_unchanged(self, directory: _Dir, snap: _Snapshot, version: str | None) -> None:
        """Raise unless the config file is still the one ``snap`` read (the same file, the same bytes).

        Other writers (a person's editor, configuration management, an operator pasting an emergency
        token) do not take rotator's lock. Replacing a file one of them wrote since the read would
        silently drop their edit, and write a token over a value compare-and-set never saw. So:
        ConflictError when the profile's ``key`` now holds another version than ``version`` (what
        the publish compared against: the store changed since it was read); TransientError for an
        edit elsewhere in the file, so that the retry reads the file again and edits the new text.
        """
        self._check_directory(directory)
        try:
            identity: _Identity | None = _read_identified(directory.fd, directory.name)[2]
        except (FileNotFoundError, _NotRegularFile):
            identity = None  # deleted, or being replaced: the read below says which
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                reason = exc.strerror or type(exc).__name__
                raise _os_error(exc, _ERR_READ.format(where=self._location, path=snap.path, reason=reason)) from None
            identity = None  # replaced by a symlink: the read below says what it holds now
        if identity == snap.identity:
            return
        # Read again (the lock is still held), to tell the two cases apart. The other writer may be
        # half-way through its save (an editor that truncates, or unlinks then creates): a file
        # missing or not valid TOML now is not yet an answer, so the retry reads it again (and
        # reports it, if it stays so).
        try:
            now = self._state_to_write(self._read(directory)).version
        except (ConfigError, PermanentError) as exc:
            raise TransientError(
                _ERR_CHANGED_UNREADABLE.format(where=self._location, path=snap.path, error=exc), hint=_HINT_CHANGED
            ) from None
        if now != version:
            raise ConflictError(
                _ERR_CONFLICT.format(
                    where=self._location,
                    expected=_describe_version(version, self._key),
                    actual=_describe_version(now, self._key),
                )
                + _WHILE_WRITING,
                hint=_HINT_CONFLICT.format(key=self._key),
            )
        raise TransientError(
            _ERR_CHANGED.format(where=self._location, path=snap.path, key=self._key), hint=_HINT_CHANGED
        )

    def _write_error(self, path: Path, exc: OSError) -> PermanentError | TransientError:
        message = _ERR_WRITE.format(where=self._location, path=path, reason=exc.strerror or type(exc).__name__)
        if exc.errno in ACCESS_ERRNOS:
            return PermanentError(message, hint=_HINT_WRITE.format(directory=path.parent))
        if exc.errno in PATH_ERRNOS:
            return PermanentError(message, hint=_HINT_GONE.format(directory=path.parent, path=path))
        # (full, or failing: the retry, or the same command once it is dealt with, writes it)
        return TransientError(message, hint=disk_write_hint(exc, path.parent) + ": nothing was replaced")

    def _sync_dir(self, dir_fd: int, path: Path) -> None:
        try:
            os.fsync(dir_fd)
        except OSError as exc:
            # The rename happened; only its durability is in doubt: a retry finds the record there.
            raise TransientError(
                f"{self._location}: wrote {path} but could not fsync its directory: {exc.strerror}",
                hint="check the file system's health",
            ) from None

    def _remove_stale_temp_files(self, directory: _Dir) -> None:
        """Temp files of a writer killed between write and rename (they may hold a token).

        Called under the exclusive lock, which every writer holds from its temp file to its rename:
        each one found then (``directory.locked``) is a dead writer's, whatever its process id says
        (rotator as PID 1 in a container, or in another PID namespace, names a process id that is
        alive). Only where the lock could not be taken (ENOLCK) is a file whose writer's id is alive
        left alone."""
        wanted = {directory.name, directory.sidecar}
        with contextlib.suppress(OSError):
            for name in os.listdir(directory.fd):
                match = _TEMP_NAME.match(name)
                if match and match["name"] in wanted and (directory.locked or not _pid_alive(int(match["pid"]))):
                    with contextlib.suppress(OSError):
                        os.unlink(name, dir_fd=directory.fd)
                        logger.warning("%s: removed %s, left by a writer that was killed", self._location,
                                       directory.path / name)  # fmt: skip

    @contextmanager
    def _locked(self, *, exclusive: bool) -> Iterator[_Dir]:
        """flock on the config's directory (the files themselves are replaced, so cannot carry a lock),
        opened once: every read and write of the store goes through this descriptor (see :class:`_Dir`)."""
        real = self._real_path()
        directory = real.parent
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ConfigError(_ERR_MISSING.format(where=self._location), hint=_HINT_MISSING) from None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise _os_error(exc, _ERR_READ.format(where=self._location, path=directory, reason=reason)) from None
        try:
            deadline = self._clock.now() + _LOCK_TIMEOUT
            operation = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
            held = False
            while True:
                try:
                    fcntl.flock(fd, operation)
                    held = True
                    break
                except BlockingIOError:
                    if self._clock.now() >= deadline:
                        seconds = _LOCK_TIMEOUT.total_seconds()
                        message = _ERR_BUSY.format(where=self._location, directory=directory, seconds=seconds)
                        raise TransientError(message, hint=_HINT_BUSY) from None
                    self._clock.sleep(_LOCK_POLL_S)
                except OSError as exc:  # e.g. ENOLCK on a network file system: go on without
                    logger.warning(
                        "%s: cannot lock %s (%s); writing without a lock", self._location, directory, exc.strerror
                    )
                    break
            opened = _Dir(fd, directory, real.name, held)
            # A component swapped between realpath() and open(): the descriptor may be another directory.
            self._check_directory(opened)
            yield opened
        finally:
            os.close(fd)


if TYPE_CHECKING:  # static conformance: mypy checks InfluxctlProfileStore against the Store Protocol
    _conforms: type[Store] = InfluxctlProfileStore


# -- helpers ------------------------------------------------------------------------------


def _connection_of(profile: Mapping[str, Any]) -> dict[str, Any]:
    """The profile's :data:`CONNECTION_KEYS` that it has (none of them is a credential)."""
    return {key: profile[key] for key in CONNECTION_KEYS if key in profile}


def _same_place(before: Mapping[str, Any], now: Mapping[str, Any]) -> bool:
    """Whether two :data:`CONNECTION_KEYS` sets send tokens to one place: the same cluster however
    spelled (:func:`connection_target`); where neither names a cluster, the same keys as written."""
    was, is_ = connection_target(before), connection_target(now)
    return was == is_ if was is not None or is_ is not None else dict(before) == dict(now)


def _describe_connection(connection: Mapping[str, Any]) -> str:
    target = connection_target(connection)
    if target is not None:
        return target
    keys = ", ".join(f"{key} = {value!r}" for key, value in connection.items())
    return f"no cluster rotator can name ({keys or 'no ' + ', '.join(CONNECTION_KEYS)})"


def _sidecar(config: Path) -> Path:
    return config.with_name(config.name + SIDECAR_SUFFIX)


def _describe_version(version: str | None, key: str) -> str:
    return f"version {version}" if version is not None else f"no {key}"


def _entry(record: TokenRecord, value: str, key: str, clock: Clock) -> dict[str, Any]:
    payload = record.payload()
    del payload["token"]
    salt = secrets.token_hex(16)
    written = rfc3339_seconds(clock.now())
    return {**payload, "key": key, "salt": salt, "sha256": _salted(salt, value), "written_at": written}


def _entry_key(entry: Mapping[str, Any]) -> object:
    """The profile key an entry describes; entries from before ``key`` existed describe mgmt_token."""
    return entry.get("key", DEFAULT_KEY)


def _salted(salt: str, value: str) -> str:
    return hmac.new(salt.encode("ascii"), value.encode("utf-8"), hashlib.sha256).hexdigest()


def _matches(entry: Mapping[str, Any], value: str | None) -> bool:
    salt, digest = entry.get("salt"), entry.get("sha256")
    # (compare_digest refuses str with non-ASCII characters: a hand-edited digest is one that does not match)
    if value is None or not isinstance(salt, str) or not isinstance(digest, str) or not salt.isascii() \
            or not digest.isascii():
        return False
    return hmac.compare_digest(_salted(salt, value), digest)


def _history(
    new: dict[str, Any], entries: list[dict[str, Any]], held: str | None, written: str, now: datetime
) -> list[dict[str, Any]]:
    """The key's entries after a publish of ``written`` over ``held`` (the config's value as read):
    ``new`` first, then the entry of ``held`` (until the config is replaced, the sidecar must still
    describe the value it holds: crash safety), then the older ones newest first; the newest
    :data:`_KEEP` of them, and beyond those the entries of tokens that may still be valid, up to
    :data:`_KEEP_MAX` (the module's docstring, History). An entry of ``written`` or ``held`` other than
    those two is dropped: ``read_current`` takes the first entry a value matches, so it is never read."""
    current = [e for e in entries if _matches(e, held) and not _matches(e, written)][:1]
    older = [e for e in entries if not _matches(e, written) and not _matches(e, held)]
    ordered = [new, *current, *older]
    kept = ordered[:_KEEP]
    for entry in ordered[_KEEP:]:
        if len(kept) >= _KEEP_MAX:
            break
        if _may_be_valid(entry, now):
            kept.append(entry)
    return kept


def _may_be_valid(entry: Mapping[str, Any], now: datetime) -> bool:
    """Whether the entry's token may still be valid at ``now``: it has no expiry, or it is still ahead. An
    expiry rotator cannot read (an entry edited by hand) counts as passed: such an entry is kept only
    among the newest :data:`_KEEP`."""
    expires = entry.get("expires_at")
    if expires is None:
        return True
    if not isinstance(expires, str):
        return False
    try:
        return parse_rfc3339(expires) > now
    except ValueError:
        return False


def _with_entries(sidecar: dict[str, Any], profile: str, key: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The sidecar with ``profile``'s entries for ``key`` replaced; its other keys' entries as they were."""
    profiles = dict(sidecar["profiles"])
    others = [e for e in profiles.get(profile, []) if _entry_key(e) != key]
    profiles[profile] = entries + others
    return {"managed-by": MANAGED_BY, "schema": SIDECAR_SCHEMA, "profiles": profiles}


def _dump_sidecar(sidecar: Mapping[str, Any]) -> bytes:
    return (json.dumps(sidecar, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _chown(fd: int, owner: tuple[int, int]) -> None:
    uid, gid = owner
    if os.geteuid() == 0:
        os.fchown(fd, uid, gid)
    elif gid != os.getegid():
        # A non-root owner may give the file any group it belongs to; mode 0600 makes it moot.
        with contextlib.suppress(PermissionError):
            os.fchown(fd, -1, gid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != 0


def _os_error(exc: OSError, message: str) -> ConfigError | PermanentError | TransientError:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PermanentError(message, hint="check that rotator's user may read the file and its directory")
    if isinstance(exc, _NotRegularFile) or exc.errno in (errno.EISDIR, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG):
        # the path names no file (a directory, a file where a directory should be): no retry fixes that
        return ConfigError(message, hint="point the profile store's `config` (or sync's --config) at the "
                                         "influxctl config.toml file itself")
    return TransientError(message, hint="rotator retries; check the file system")


def _add_after_last_plain_key(table: Table, key: str, value: str, newline: str) -> None:
    """Add the line ``key = "value"`` to the profile right after its last plain key, indented like it.

    tomlkit's public API has no "insert after this key": ``Table.add`` puts a new key after the
    last item before the sub-tables, i.e. after the comments that follow the plain keys, and may
    add a blank line before the next sub-table header. What ends a key's line is public, though:
    the item's trivia (indent, comment, trail), whose ``trail`` holds the line break. So the new
    line is rendered there. ``_edit`` then checks the result (tomllib reads exactly the old data
    plus this key; the text differs from the old by this one line), so tomlkit's rendering can
    never slip anything else into the file.
    """
    plain = [item for k, item in table.value.body if k is not None and not isinstance(item, (Table, AoT))]
    if not plain:  # not reached while profiles are found by their plain `name` key
        table.add(key, tomlkit.string(value))
        return
    previous = plain[-1].trivia
    indent = previous.indent.rpartition("\n")[2]  # its line's indent, without the blank lines before it
    trail = previous.trail if "\n" in previous.trail else previous.trail + newline  # the file's last line
    previous.trail = f"{trail}{indent}{key} = {tomlkit.string(value).as_string()}{newline}"


def _lines(text: str, newline: str) -> list[str]:
    if text and not text.endswith("\n"):
        text += newline
    return text.splitlines(keepends=True)


def _edit_problem(
    old: str, new: str, old_data: dict[str, Any], index: int, key: str, value: str, newline: str
) -> str | None:
    """Why ``new`` is not ``old`` with just the profile's ``key`` set (None: it is)."""
    try:
        new_data = tomllib.loads(new)
    except tomllib.TOMLDecodeError:
        return "the result would not parse"
    expected = copy.deepcopy(old_data)
    expected["profile"][index][key] = value
    if new_data != expected:
        return "the result would hold other data"
    a, b = _lines(old, newline), _lines(new, newline)
    changes = [op for op in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes() if op[0] != "equal"]
    if len(changes) != 1:
        return f"{len(changes)} places would change"
    tag, i1, i2, j1, j2 = changes[0]
    line = _KEY_LINES[key]
    if tag not in ("insert", "replace") or j2 - j1 != 1 or not line.match(b[j1]):
        return f"a line other than {key} would change"
    if tag == "replace" and not line.match(a[i1]):
        return f"a line other than {key} would change"
    return None
