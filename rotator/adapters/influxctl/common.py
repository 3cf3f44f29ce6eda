"""What every issuer that drives the closed-source ``influxctl`` CLI shares.

influxctl has no API we could call in-process: management tokens exist only behind its gRPC
client. So an issuer writes a private, single-profile ``config.toml`` for each call, runs
``influxctl --config <file> --profile rotator --timeout <d> <command...>`` as a subprocess and
reads stdout. The token in use goes into that file only (mode 0600 in a 0700 directory under
$TMPDIR): never on a command line, never in the child's environment. The call removes it when it
ends, however it ends, as long as rotator lives; a rotator killed mid-call (``kill -9``, the OOM
killer, a node's power) cannot, and the file stays until the next rotator process of the same user
with the same $TMPDIR sweeps it (:func:`sweep_stale_configs`: before each influxctl call, and when a
command loads a policy file with an influxctl issuer). Hence a $TMPDIR that no disk keeps (the Helm
chart's /tmp is memory-backed) or that goes with the service (systemd's ``PrivateTmp=yes`` removes
the unit's /tmp when it stops).

The seam for tests is :data:`Runner`, the subprocess equivalent of an HTTP transport: the CLI
wrapper receives it and calls ``run(argv, timeout_s)``.

Used by ``influxctl-management`` (management tokens) and ``influxctl-database`` (database
tokens, verified with ``influxctl query`` and the new token as the profile's ``token``). Both
are :class:`InfluxctlIssuer` subclasses: they name their commands, say how they authenticate
and write ``mint`` and ``verify``; construction, ``revoke`` (confirmed by the list) and
``list_tokens`` are written once, here.
"""

from __future__ import annotations

import atexit
import dataclasses
import errno
import fcntl
import json
import logging
import os
import re
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Generic, Literal, NamedTuple, Self, TypeVar

from rotator.config.policy_source import refuse_untrusted_file
from rotator.config.timefmt import rfc3339_seconds
from rotator.core.child_process import (
    EXIT_PAST_DEADLINE,
    die_with_parent,
    exec_error,
    prepare_watchdog,
    reading,
    side_effect_command,
    start_deadline,
)
from rotator.core.clock import SYSTEM_CLOCK
from rotator.core.contracts import (
    NO_CURRENT_TOKEN_FIX,
    AdapterContext,
    MintedToken,
    TokenInfo,
    checked_settings,
    dedicated_target,
    target_host_port,
)
from rotator.core.credentials import SETTINGS_CONFIG, CredentialRef, SettingsValue
from rotator.core.errors import (
    BadTokenId,
    ConfigError,
    IssuerOutputError,
    NotYetAccepted,
    PermanentError,
    RotatorError,
    TransientError,
)
from rotator.core.one_line import one_line
from rotator.core.secret import REDACTOR, Secret

__all__ = [
    "AUTH_BY_METHOD",
    "PROFILE_NAME",
    "InfluxctlCLI",
    "InfluxctlIssuer",
    "InfluxctlNotFound",
    "InfluxctlSettings",
    "MgmtTokenAuth",
    "ProfileAuth",
    "ProfileSettings",
    "Runner",
    "SelfAuth",
    "TLSSettings",
    "TokenFileAuth",
    "CHILD_ENV_NAMES",
    "EXTRA_ENV_VARIABLE",
    "check_token_id",
    "child_environment",
    "command_name",
    "default_run",
    "error_for_exit",
    "go_duration",
    "is_not_found",
    "is_permission_denied",
    "minted_token",
    "output_error",
    "parse_json_array",
    "parse_timestamp",
    "private_config",
    "profile_target",
    "remove_own_configs",
    "render_profile",
    "rfc3339",
    "refuse_untrusted_binary",
    "sweep_stale_configs",
    "table_value",
    "token_from_output",
    "token_info",
]

logger = logging.getLogger("rotator.adapters.influxctl")

#: ``run(argv, timeout_s)``: run influxctl and return what it printed (stdout, stderr as text).
Runner = Callable[[Sequence[str], float], subprocess.CompletedProcess[str]]

#: The only profile in the private config file.
PROFILE_NAME = "rotator"

# Error texts (the command is always e.g. "influxctl management create"; never stdout or a token).
ERR_NOT_STARTED = "cannot run influxctl binary {binary!r}: {reason}"
HINT_NOT_STARTED = 'install influxctl or set `influxctl = "/path/to/influxctl"` in the issuer settings'
ERR_TIMEOUT = "{command} did not finish within {timeout:g}s"
HINT_TIMEOUT = "the cluster may be slow or unreachable; raise `timeout_s` if this keeps happening"
HINT_UNREACHABLE = ("the cluster did not answer: check the profile's host and port and the network path to it; "
                    "rotator retries this call and a later run retries the rotation")
HINT_KILLED = "influxctl was killed by a signal (out of memory? a timeout of the host?); the call is retried"
HINT_NOT_STARTED_TRANSIENT = "the machine is short of processes or memory; the call is retried"
ERR_CONFIG_NOT_WRITTEN = (
    "cannot run {command}: its private configuration could not be written in {directory} ({reason}); "
    "no influxctl command was started"
)
HINT_CONFIG_NOT_WRITTEN = (
    "{remedy}, or set TMPDIR to a writable local directory for rotator; rotator writes each influxctl call's "
    "configuration there (mode 0600, removed after the call), and a later run tries again"
)
ERR_EXIT = "{command} failed (exit {code})"
ERR_SIGNAL = "{command} was killed by signal {signal}"
HINT_UNAUTHENTICATED = (
    "the minting credential is not accepted (expired or revoked?); check the token or token file that `auth` points at"
)
HINT_PERMISSION_DENIED = (
    "the credential may not manage management tokens; use auth.method = 'token_file' (a Clustered "
    "admin token) or 'mgmt_token' (a token that may)"
)
HINT_OTHER = "run the same influxctl command by hand to see the full output"
HINT_NOT_FOUND = "the server does not know that token id; check the id, and that the profile names the right cluster"
HINT_NOT_FOUND_PLACE = ("the server does not know what the command names: check that the profile names the right "
                        "cluster (Cloud Dedicated: account_id and cluster_id; Clustered: host and port)")
HINT_USAGE = ("this influxctl refused the command line rotator gave it: run `influxctl version`; rotator needs "
              "influxctl 2.9.7 or later (2.10.0 or later for database tokens)")
HINT_UNKNOWN_FLAG = ("this influxctl does not know the flag --{flag}{needs}: run `influxctl version`, and upgrade it "
                     "(rotator needs influxctl 2.9.7 or later, 2.10.0 or later for database tokens)")
HINT_SERVER_ERROR = ("the cluster (or a proxy in front of it) failed with an error of its own (gRPC Internal, Unknown "
                     "or Canceled) without saying whether the command took effect; rotator tries again (a token "
                     "the cluster made is found by its run's tag). If it persists, run the same influxctl command "
                     "by hand to see the full output")
ERR_TOO_MUCH_OUTPUT = "{command} wrote more than {limit} MiB to {stream} and was stopped"
HINT_TOO_MUCH_OUTPUT = ("check that the policy's `influxctl` names the influxctl binary (run it with `version`), "
                        "and that nothing in its environment turns on debug output")
ERR_OUTPUT = "{command}: {problem}"
HINT_OUTPUT = ("check the influxctl version (rotator reads the output of influxctl 2.9.7 and later; database tokens "
               "need 2.10.0 or later)")
ERR_TOKEN_FILE = "auth.token_file {path} is not a readable file"
ERR_NO_CREDENTIAL = ("auth.method = 'self' needs the current management token, but no store holds one: no token is "
                     "published yet, or the store's current version was deleted")
#: (the whole command: `rotator bootstrap` alone is refused for its missing arguments; the issuer does not
#: know its policy's name)
HINT_NO_CREDENTIAL = (
    f"{NO_CURRENT_TOKEN_FIX}; else store the first token with `rotator bootstrap POLICY --token-file FILE "
    "--token-id ID`, or authenticate with auth.method = 'token_file' or 'mgmt_token'"
)
ERR_NOT_REVOKED = "{command} {token_id} succeeded but the token is not listed as revoked"

# Markers in influxctl's stderr (gRPC status codes as printed by Go, plus common transport text).
_UNAUTHENTICATED = ("unauthenticated", "unauthorized")
_TRANSIENT = (
    "unavailable",
    "deadlineexceeded",
    "deadline exceeded",
    "resourceexhausted",
    "connection refused",
    "connection reset",
    "i/o timeout",
)
#: gRPC status codes (as Go prints them, lower-cased) -> what they mean for a retry
_GRPC_KINDS = {"unauthenticated": "unauthenticated", "permissiondenied": "permission", "unavailable": "transient",
               "deadlineexceeded": "transient", "resourceexhausted": "transient", "aborted": "transient",
               "notfound": "not_found", "internal": "server_error", "unknown": "server_error",
               "canceled": "server_error"}
#: The influxctl release that added each flag rotator passes beyond the oldest it supports (facts file 1.7
#: and 2.1): ``--timeout`` (every call), and the database tokens' ``--include-revoked`` and ``--expires-at``.
_FLAG_SINCE = {"timeout": "2.9.7", "include-revoked": "2.10.0", "expires-at": "2.10.0"}
#: urfave/cli's refusal of a command line (Go's flag package names the flag with one dash)
_UNKNOWN_FLAG = r"flag provided but not defined: -{1,2}([A-Za-z0-9][A-Za-z0-9_.-]*)"
_USAGE_MARKERS = ("Incorrect Usage", "flag provided but not defined")
#: OS errors when starting the binary that may go away by themselves.
_TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE, errno.EINTR})
#: Values shaped like InfluxDB tokens, redacted from stderr even when the REDACTOR does not know them.
#: Compiled on first use (by re's cache): only failures need it, and the Lambda's cold start pays for
#: every pattern compiled at import.
_TOKEN_SHAPES = r"M\.V1\.[A-Za-z0-9+/=_.-]{8,}|apiv[0-9]_[A-Za-z0-9+/=_-]{16,}"
_MAX_DETAIL = 300


# --------------------------------------------------------------------------------------------
# Settings shared by influxctl-based issuers

#: The ranges __post_init__ holds ``profile.port`` and ``timeout_s`` to. Each field's metadata
#: "json_schema_extra" states the same constant in the policy file's JSON schema, so an editor that
#: reads the schema refuses what the loader would (a bound in pydantic's own ``ge``/``le`` would
#: move the check before __post_init__ and change its message and where it is reported).
_PORTS = (1, 65535)
_LONGEST_TIMEOUT_S = 3600


@dataclass(frozen=True, eq=False, repr=False)
class TLSSettings(SettingsValue):
    """``[profile.tls]``; relative paths are resolved against the policy file's directory."""

    __pydantic_config__: ClassVar[dict[str, Any]] = SETTINGS_CONFIG

    insecure: bool = False
    disable: bool = False
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None


@dataclass(frozen=True, eq=False, repr=False)
class ProfileSettings(SettingsValue):
    """The connection part of an influxctl profile (no credential: rotator adds that per call)."""

    __pydantic_config__: ClassVar[dict[str, Any]] = SETTINGS_CONFIG

    product: Literal["clustered", "dedicated"]
    host: str | None = None
    port: int | None = field(default=None, metadata={"json_schema_extra": {"minimum": _PORTS[0],
                                                                           "maximum": _PORTS[1]}})
    account_id: str | None = None
    cluster_id: str | None = None
    tls: TLSSettings = TLSSettings()

    def __post_init__(self) -> None:
        for key in ("host", "account_id", "cluster_id"):
            if getattr(self, key) == "":
                raise ValueError(f"`{key}` must not be empty")
        low, high = _PORTS
        if self.port is not None and not low <= self.port <= high:
            raise ValueError(f"`port` must be between {low} and {high}")
        self._product_needs()

    def _product_needs(self) -> None:
        if self.product == "clustered" and self.host is None:
            raise ValueError("product 'clustered' needs `host`")
        if self.product == "dedicated" and (self.account_id is None or self.cluster_id is None):
            raise ValueError("product 'dedicated' needs `account_id` and `cluster_id`")

    def resolved(self, base_dir: Path) -> ProfileSettings:
        """A copy whose TLS file paths are absolute (``self`` when it names no TLS file)."""
        tls = self.tls
        if tls.cert is None and tls.key is None and tls.ca is None:
            return self  # frozen: nothing to resolve (a daemon builds one issuer per policy)

        def absolute(path: Path | None) -> Path | None:
            return None if path is None else _resolve(path, base_dir)

        tls = dataclasses.replace(tls, cert=absolute(tls.cert), key=absolute(tls.key), ca=absolute(tls.ca))
        return dataclasses.replace(self, tls=tls)


@dataclass(frozen=True, eq=False, repr=False)
class SelfAuth(SettingsValue):
    """Authenticate with the token currently published in the store (self-rotation)."""

    __pydantic_config__: ClassVar[dict[str, Any]] = SETTINGS_CONFIG

    method: Literal["self"] = "self"


@dataclass(frozen=True, eq=False, repr=False)
class TokenFileAuth(SettingsValue):
    """Authenticate with a Clustered admin token file (``[profile.auth.token] token_file``)."""

    __pydantic_config__: ClassVar[dict[str, Any]] = SETTINGS_CONFIG

    method: Literal["token_file"]
    token_file: Path


@dataclass(frozen=True, eq=False, repr=False)
class MgmtTokenAuth(SettingsValue):
    """Authenticate with a separate management token read from a file or environment variable."""

    __pydantic_config__: ClassVar[dict[str, Any]] = SETTINGS_CONFIG

    method: Literal["mgmt_token"]
    token: CredentialRef


#: ``dataclasses.field`` metadata of an ``auth`` union: pydantic passes a field's metadata on to
#: its ``Field`` (a standard-library way to say ``Field(discriminator="method")``), so a policy
#: table is validated as the member its ``method`` names. Without it pydantic would try every
#: member and report every member's errors ("auth.SelfAuth.method: Input should be 'self'", ...).
AUTH_BY_METHOD: Mapping[str, Any] = MappingProxyType({"discriminator": "method"})


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class InfluxctlSettings(SettingsValue):
    """The settings every influxctl issuer has; an issuer adds its own and may narrow ``auth``."""

    __pydantic_config__: ClassVar[dict[str, Any]] = SETTINGS_CONFIG

    #: The influxctl binary: a name looked up on PATH or a path (relative to the policy file).
    influxctl: str = "influxctl"
    profile: ProfileSettings
    auth: SelfAuth | TokenFileAuth | MgmtTokenAuth = field(default=SelfAuth(), metadata=AUTH_BY_METHOD)
    #: Limit for each influxctl call, also passed as influxctl's ``--timeout``.
    timeout_s: float = field(default=60, metadata={"json_schema_extra": {"exclusiveMinimum": 0,
                                                                          "maximum": _LONGEST_TIMEOUT_S}})

    def __post_init__(self) -> None:
        if not self.influxctl:
            raise ValueError("`influxctl` must name the influxctl binary (a name on PATH or a path)")
        if not 0 < self.timeout_s <= _LONGEST_TIMEOUT_S:  # False for NaN too
            raise ValueError(f"`timeout_s` must be more than 0 and at most {_LONGEST_TIMEOUT_S} (seconds)")

    def transport_warnings(self) -> list[str]:
        """Profile TLS settings that expose the tokens influxctl sends (see rotator/adapters/transport.py)."""
        from rotator.adapters.transport import is_loopback_host  # the CLI and the engine ask; the Lambda does not

        tls, host = self.profile.tls, self.profile.host
        target = host or "the Cloud Dedicated API"
        warnings = []
        if tls.insecure and not tls.disable:
            warnings.append(
                f"`profile.tls.insecure = true`: influxctl does not check the certificate of {target}, so anyone "
                "on the path can read the tokens; set `profile.tls.ca` instead (insecure is meant for tests)"
            )
        if tls.disable and not is_loopback_host(host):
            warnings.append(
                f"`profile.tls.disable = true`: influxctl talks to {target} without TLS: tokens travel "
                "unencrypted (meant for loopback only)"
            )
        return warnings


def profile_target(profile: ProfileSettings) -> str:
    """The issuer target (contracts.Issuer) of the cluster ``profile`` names: see InfluxctlIssuer.target.
    Spelled by contracts.dedicated_target and target_host_port, as the management-api issuer spells it."""
    if profile.product == "dedicated":
        return dedicated_target(profile.account_id, profile.cluster_id)
    return f"clustered {target_host_port(profile.host or '', profile.port)}"


class ProfileAuth(NamedTuple):
    """The credential one influxctl call runs with: exactly one of the three (render_profile checks).

    A management token or an admin token file for management and ``token`` commands, or a
    database token (the profile's ``token`` key) for the data commands ``query`` and ``write``.
    A NamedTuple, as the contract types are (rotator/core/contracts.py: cheap to create at cold start).
    """

    mgmt_token: Secret | None = None
    token_file: Path | None = None
    db_token: Secret | None = None


# --------------------------------------------------------------------------------------------
# The private config file


def render_profile(profile: ProfileSettings, auth: ProfileAuth) -> str:
    """One ``[[profile]]`` named :data:`PROFILE_NAME`, with only keys influxctl knows.

    influxctl refuses unknown keys (since v2.0.1), so nothing else is ever written.
    """
    if sum(value is not None for value in auth) != 1:
        raise ValueError("ProfileAuth needs exactly one of mgmt_token, token_file or db_token")
    lines = [
        "[[profile]]",
        f"name = {_toml_str('name', PROFILE_NAME)}",
        f"product = {_toml_str('product', profile.product)}",
    ]
    for key in ("host", "account_id", "cluster_id"):
        value = getattr(profile, key)
        if value is not None:
            lines.append(f"{key} = {_toml_str(key, value)}")
    if profile.port is not None:
        lines.append(f"port = {_toml_str('port', str(profile.port))}")  # a string in influxctl's config
    if auth.mgmt_token is not None:
        lines.append(f"mgmt_token = {_toml_str('mgmt_token', auth.mgmt_token.reveal())}")
    if auth.db_token is not None:
        lines.append(f"token = {_toml_str('token', auth.db_token.reveal())}")
    tls = profile.tls
    tls_lines = [f"{key} = true" for key in ("insecure", "disable") if getattr(tls, key)]
    tls_lines += [
        f"{key} = {_toml_str(key, str(path))}"
        for key in ("cert", "key", "ca")
        if (path := getattr(tls, key)) is not None
    ]
    if tls_lines:
        lines += ["", "[profile.tls]", *tls_lines]
    if auth.token_file is not None:
        lines += ["", "[profile.auth.token]", f"token_file = {_toml_str('token_file', str(auth.token_file))}"]
    return "\n".join(lines) + "\n"


_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_str(key: str, value: str) -> str:
    """A TOML basic string. Raises ConfigError naming ``key`` (never the value) if TOML cannot hold it."""
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:  # a lone surrogate (undecodable bytes): not valid UTF-8
            raise ConfigError(f"the value of `{key}` for influxctl contains bytes that are not UTF-8")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


_CONFIG_PREFIX = "rotator-influxctl-"
#: The file in each private config directory whose flock() says "my process is alive".
_LOCK_NAME = "lock"
#: The empty directory in each private config directory that influxctl runs in (:func:`_child_cwd`).
_CWD_NAME = "cwd"
#: A directory without a lock file is left alone this long (seconds): its creator may be between
#: ``mkdtemp`` and placing the lock (microseconds), or it is a leftover of a rotator before
#: version 0.x that had no lock file (removed once it is this old).
_UNLOCKED_GRACE_S = 60.0


def sweep_stale_configs() -> None:
    """Remove the private configs (each holds a token) left by rotator processes that died mid-call.

    Whether a directory's owner is alive is asked of the kernel, not of a process id: each
    directory holds a lock file that its owner keeps ``flock()``-ed for as long as the
    directory exists, and the kernel drops that lock when the owner dies, whatever killed it.
    A directory whose lock can be taken is a dead process's and is removed. Process ids would
    lie: rotator runs as PID 1 in a container (``kill(1, 0)`` always succeeds, and its own pid
    is skipped), and a Lambda sandbox or a restarted pod reuses pids.

    Called before every influxctl call and, through :meth:`InfluxctlIssuer.remove_leftovers`,
    by every command that loads a policy file with an influxctl issuer (rotator/config/registry.py).
    Never raises: a sweep that cannot look is retried by the next one.
    """
    try:
        candidates = list(Path(tempfile.gettempdir()).glob(f"{_CONFIG_PREFIX}*"))
    except OSError:
        return
    for directory in candidates:
        try:
            _remove_if_dead(directory)
        except OSError as exc:
            logger.debug("cannot check private influxctl config %s: %s", directory, exc.strerror)


def _remove_if_dead(directory: Path) -> None:
    info = directory.lstat()
    if not directory.is_dir() or directory.is_symlink() or info.st_uid != os.getuid():
        return
    try:
        fd = os.open(directory / _LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        # Compared with a file's mtime, which the OS stamps from the system clock: never a FakeClock.
        if SYSTEM_CLOCK.now().timestamp() - info.st_mtime > _UNLOCKED_GRACE_S:
            shutil.rmtree(directory, ignore_errors=True)
            logger.warning("removed a private influxctl config without an owner: %s", directory.name)
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # its owner is alive (maybe another thread of this very process)
        shutil.rmtree(directory, ignore_errors=True)  # while holding the lock: no one else is in it
        logger.warning("removed a private influxctl config left by a process that died: %s", directory.name)
    finally:
        os.close(fd)


def _lock_directory(directory: Path) -> int:
    """Create ``directory/lock`` already flock()-ed and return its fd (held until the directory is gone).

    The lock is taken on a file under a temporary name and then renamed: a sweep never sees a
    lock file that is not locked yet.
    """
    staging = directory / f".{_LOCK_NAME}.new"
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(staging, flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        staging.rename(directory / _LOCK_NAME)
    except BaseException:
        os.close(fd)
        raise
    return fd


#: The file in each private config directory that holds the profile, and so the credential.
_CONFIG_NAME = "config.toml"
#: How long the removal at exit waits for a call that is making or removing its directory (a
#: local file system takes microseconds; a hung one must not keep the process from ending).
_EXIT_WAIT_S = 5.0
ERR_ENDING = "rotator is ending: no influxctl command is started any more"
HINT_ENDING = "the process is stopping; the next rotator run retries the call"


class _OwnConfigs:
    """This process's private config directories, from their ``mkdtemp`` until they are removed.

    A process that ends while a thread is inside :func:`private_config` never runs that call's
    removal: a daemon thread (the inventory) when the interpreter exits, any thread at the daemon's
    parked ``os._exit``. The directory then stays with its credential; its lock dies with the
    process, but a directory caught mid-removal (its lock file unlinked, the rest not yet) is left
    alone by every sweep for _UNLOCKED_GRACE_S. :func:`remove_own_configs` removes them instead.
    ``lock`` is held while a directory is made or removed, so it never sees one half made or
    half removed.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.directories: set[Path] = set()
        #: remove_own_configs ran: the process is ending, no new directory is made
        self.closed = False


_OWN_CONFIGS = _OwnConfigs()


def remove_own_configs() -> None:
    """Remove the private configs of this process's calls still in progress, and refuse new ones.

    For a process that is ending: at exit (registered with atexit below), and by the daemon before
    its parked ``os._exit``, which runs no atexit handler. A child still running such a call is
    killed before the process is gone (SIGTERM by the daemon's parked exit, its PR_SET_PDEATHSIG
    otherwise) and read its config when it started; the thread of that call then finds its
    directory gone and says nothing of it. A call started afterwards raises TransientError before
    it makes a directory or starts a child.
    """
    own = _OWN_CONFIGS
    locked = own.lock.acquire(timeout=_EXIT_WAIT_S)
    try:
        own.closed = True
        directories = tuple(own.directories)  # (one C-level copy: safe without the lock too)
        for directory in directories:
            _remove_tree(directory)
            own.directories.discard(directory)
    finally:
        if locked:
            own.lock.release()
    if directories:
        logger.info("removed %d private influxctl config(s) of calls still in progress as rotator ends",
                    len(directories))


atexit.register(remove_own_configs)


def _remove_tree(directory: Path) -> None:
    """Remove a private config directory, its config first: a removal cut short (the process killed
    mid-way) leaves no credential in a directory without its lock file, which sweeps spare a while."""
    try:
        (directory / _CONFIG_NAME).unlink(missing_ok=True)
        shutil.rmtree(directory)
    except OSError as exc:
        logger.warning("could not remove private influxctl config %s: %s", directory, exc.strerror)


def _new_private_directory(text: str) -> tuple[Path, int]:
    """A fresh, locked 0700 directory holding ``text`` in a 0600 file, and its lock's fd."""
    own = _OWN_CONFIGS
    with own.lock:
        if own.closed:
            raise TransientError(ERR_ENDING, hint=HINT_ENDING)
        directory = Path(tempfile.mkdtemp(prefix=_CONFIG_PREFIX))  # mode 0700
        lock_fd: int | None = None
        try:
            lock_fd = _lock_directory(directory)
            (directory / _CWD_NAME).mkdir(mode=0o700)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
            fd = os.open(directory / _CONFIG_NAME, flags, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
        except BaseException:
            _remove_tree(directory)
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        own.directories.add(directory)
        return directory, lock_fd


def _remove_own(directory: Path) -> None:
    """The end of a call: remove its directory, unless the process's end removed it already."""
    own = _OWN_CONFIGS
    with own.lock:
        if directory in own.directories:
            _remove_tree(directory)
            own.directories.discard(directory)


@contextmanager
def private_config(text: str) -> Iterator[Path]:
    """Write ``text`` to a fresh 0600 file in a fresh, locked 0700 directory; remove both afterwards."""
    sweep_stale_configs()
    directory, lock_fd = _new_private_directory(text)
    try:
        yield directory / _CONFIG_NAME
    finally:
        _remove_own(directory)
        os.close(lock_fd)  # only now: a sweep must not find the directory unlocked while it exists


# --------------------------------------------------------------------------------------------
# Running influxctl

#: What influxctl gets of rotator's environment: what a Go program needs to find CAs, proxies,
#: its home, time zone and locale. Nothing else: rotator's environment can hold VAULT_TOKEN,
#: AWS_SECRET_ACCESS_KEY, PGPASSWORD... that influxctl has no use for. No ``INFLUXCTL_*``
#: either: influxctl reads a profile name and a management token from such variables (the
#: token variable's name is undocumented), and either would silently replace the profile
#: rotator wrote (e.g. make ``verify`` test an operator's token instead of the new one).
CHILD_ENV_NAMES = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR",
        "SSL_CERT_FILE", "SSL_CERT_DIR",
        "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    }
)  # fmt: skip
#: ``LC_ALL``, ``LC_CTYPE``...: the locale.
_CHILD_ENV_PREFIXES = ("LC_",)
#: Names (comma-separated) of further variables influxctl should get, for a site that needs
#: one (say, ``GODEBUG``); an ``INFLUXCTL_*`` name here is still dropped.
EXTRA_ENV_VARIABLE = "ROTATOR_INFLUXCTL_ENV"


def child_environment() -> dict[str, str]:
    """What influxctl gets: :data:`CHILD_ENV_NAMES`, ``LC_*`` and the names in :data:`EXTRA_ENV_VARIABLE`."""
    extra = {name.strip() for name in os.environ.get(EXTRA_ENV_VARIABLE, "").split(",") if name.strip()}
    return {
        key: value
        for key, value in os.environ.items()
        if (key in CHILD_ENV_NAMES or key.startswith(_CHILD_ENV_PREFIXES) or key in extra)
        and not key.upper().startswith("INFLUXCTL_")
    }


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's process group (influxctl and anything it started); SIGTERM could be ignored."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already


#: How long the pipes of a command are read once it has exited, or after its group was killed at
#: its timeout: past this, what holds them is a process it started in a session of its own.
PIPE_DRAIN_S = 2.0
#: How often a command's exit is looked at while its pipes stay open.
_EXIT_POLL_S = 0.2


#: The most a command may write to stdout, and to stderr. The largest output rotator reads is a
#: listing of every token of a cluster (a few hundred bytes a token): 64 MiB is over 100,000 tokens.
#: A binary that writes without end (a policy's ``influxctl`` naming another program, a debug
#: setting) is stopped there, instead of filling rotator's memory until its timeout.
MAX_OUTPUT_BYTES = 64 * 1024 * 1024
_READ_CHUNK = 65536


class OutputTooLarge(Exception):  # noqa: N818 - an event, not an error class of rotator's
    """A command wrote more than :data:`MAX_OUTPUT_BYTES` to ``stream``; its group was killed."""

    def __init__(self, stream: str) -> None:
        super().__init__(f"more than {MAX_OUTPUT_BYTES} bytes on {stream}")
        self.stream = stream


def _communicate(process: subprocess.Popen[bytes], timeout_s: float) -> tuple[str, str]:
    """``process.communicate(timeout=timeout_s)``, with two differences.

    It does not wait for the end of the output alone: a process the command started in a session
    of its own (a wrapper script's ``setsid ... &``) keeps the pipes open after the command exited,
    and a finished create or revoke would then be reported as timed out. Once the command has
    exited, its pipes get :data:`PIPE_DRAIN_S` more; then what was read is its output.

    It reads at most :data:`MAX_OUTPUT_BYTES` of each pipe (:class:`OutputTooLarge` past that):
    ``communicate`` keeps all of it in memory."""
    deadline = time.monotonic() + timeout_s  # a bound on a wait, not a time of day: no Clock needed
    exited_at: float | None = None
    chunks: dict[int, list[bytes]] = {}
    names: dict[int, str] = {}
    sizes: dict[int, int] = {}
    with selectors.DefaultSelector() as selector:
        for name, pipe in (("stdout", process.stdout), ("stderr", process.stderr)):
            if pipe is not None:
                selector.register(pipe, selectors.EVENT_READ)
                chunks[pipe.fileno()], names[pipe.fileno()], sizes[pipe.fileno()] = [], name, 0
        while selector.get_map():
            now = time.monotonic()
            if exited_at is None and process.poll() is not None:
                exited_at = now
            until = deadline if exited_at is None else min(deadline, exited_at + PIPE_DRAIN_S)
            if now >= until:
                if exited_at is None:
                    raise subprocess.TimeoutExpired(process.args, timeout_s)
                break  # what still holds the pipes is not the command: its output is what was read
            for key, _events in selector.select(min(until - now, _EXIT_POLL_S)):
                data = os.read(key.fd, _READ_CHUNK)
                if not data:
                    selector.unregister(key.fileobj)
                    continue
                sizes[key.fd] += len(data)
                if sizes[key.fd] > MAX_OUTPUT_BYTES:
                    raise OutputTooLarge(names[key.fd])
                chunks[key.fd].append(data)
    if exited_at is None:
        # It closed its output before it exited: wait for the exit, within the deadline.
        process.wait(timeout=max(deadline - time.monotonic(), 0))
    out, err = (b"".join(chunks.get(pipe.fileno(), [])) if pipe is not None else b""
                for pipe in (process.stdout, process.stderr))
    return _decoded(out), _decoded(err)


def _decoded(data: bytes) -> str:
    """Text as ``subprocess`` gives it in text mode: UTF-8 (bad bytes replaced), universal newlines."""
    return data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")


def _private_home(argv: Sequence[str]) -> str | None:
    """The private config directory of ``argv``'s ``--config`` (:func:`private_config`), or None."""
    try:
        config = Path(argv[list(argv).index("--config") + 1])
    except (ValueError, IndexError):
        return None
    return str(config.parent) if config.parent.name.startswith(_CONFIG_PREFIX) else None


def _child_cwd(home: str | None) -> str:
    """The working directory influxctl runs in: the empty directory of the call's private config directory
    (:func:`private_config`), else ``/``; never rotator's own. influxctl reads a file of that name where an
    argument may be a path (``influxctl query QUERY``: "command line string, path to file, or -"), so
    a file named like the policy's ``verify_query`` in a directory others may write (a daemon started in
    /tmp) would be the query. Only the user rotator runs as (and root) can write these two; every path
    rotator passes is absolute (the config, TLS files and token file, resolved against the policy file)."""
    if home is not None:
        empty = os.path.join(home, _CWD_NAME)
        if os.path.isdir(empty):
            return empty
    return "/"


def _executable(binary: str, env: Mapping[str, str]) -> str:
    """``binary`` as the child's exec finds it from :func:`_child_cwd`: a name that a relative ``PATH`` entry
    (``.``, ``bin``) finds from rotator's working directory, made absolute, so that the program checked
    (:func:`refuse_untrusted_binary`) is the one run; any other ``binary`` as it is."""
    if os.sep in binary:
        return binary
    found = shutil.which(binary, path=os.pathsep.join(os.get_exec_path(env)))
    return os.path.abspath(found) if found is not None and not os.path.isabs(found) else binary


#: the child's variables that hold a path (SSL_CERT_DIR: a list of them), which a relative value would read
#: against the child's working directory (:func:`_child_cwd`), not rotator's
_PATH_VARIABLES = ("SSL_CERT_FILE", "TMPDIR")
_PATH_LIST_VARIABLES = ("SSL_CERT_DIR",)


def _paths_made_absolute(env: dict[str, str]) -> dict[str, str]:
    """``env`` with a relative ``SSL_CERT_FILE``, ``TMPDIR`` or ``SSL_CERT_DIR`` entry made absolute against
    rotator's working directory, where it was meant: influxctl runs in a directory of its own, where a
    private CA named ``certs/ca.pem`` would not be found and every TLS call would fail."""
    for name in _PATH_VARIABLES:
        value = env.get(name)
        if value and not os.path.isabs(value):
            env[name] = os.path.abspath(value)
    for name in _PATH_LIST_VARIABLES:
        value = env.get(name)
        if value:
            env[name] = os.pathsep.join(os.path.abspath(p) if p and not os.path.isabs(p) else p
                                        for p in value.split(os.pathsep))
    return env


def default_run(argv: Sequence[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """The real :data:`Runner`: influxctl with output captured, no stdin, a minimal environment.

    The child cannot outlive this call, nor rotator: it leads its own process group, which is
    killed (SIGKILL) when the call times out, fails or returns, and on Linux it gets SIGKILL
    when rotator dies, even by ``kill -9`` of rotator's process alone (a supervisor, the OOM
    killer), so a killed rotator's ``management create`` cannot complete after recovery looked.
    A side effect's command (a create, a revoke: started in ``start_children_within``) also ends
    at ``timeout_s`` (+1 s) while rotator is paused and cannot kill it: it runs under the watchdog
    of :func:`~rotator.core.child_process.side_effect_command`.
    """
    env = _paths_made_absolute(child_environment())
    binary = _executable(argv[0], env)
    refuse_untrusted_binary(binary, env)
    home = _private_home(argv)
    if home is not None:
        # influxctl caches logins (OAuth device-flow tokens) under $HOME/.cache/influxctl and loads a cached
        # token unless the profile names an admin token file: an operator's login left in rotator's home
        # could stand in for the credential rotator wrote (and make verify prove nothing). Its home is the
        # call's private config directory: nothing is cached there, and nothing it caches outlives the call.
        env["HOME"] = home
    prepare_watchdog(env)  # on a read, before the side effects that need it (once per process)
    # a mint or a revoke: under a watchdog
    command, death_signal = side_effect_command([binary, *argv[1:]], timeout_s, env)
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=_child_cwd(home),
        process_group=0,  # its own group, so that the group can be killed as a whole
        # The thread that starts influxctl is the one that waits for it (this call returns only once
        # the child is gone), so PR_SET_PDEATHSIG fires only when rotator itself dies.
        preexec_fn=die_with_parent(death_signal),  # noqa: PLW1509  (resolved before fork, takes no lock)
    )
    try:
        stdout, stderr = _communicate(process, timeout_s)
    finally:
        # Also on success (a grandchild may linger) and on any exception (a timeout, too much
        # output, KeyboardInterrupt, SystemExit from a signal handler): nothing of this call keeps
        # running. Its output is not read any further: a process the command started in a session
        # of its own (a wrapper script's `setsid ... &`) outlives the group kill and may hold the
        # pipes for ever.
        _kill_group(process)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
        if process.poll() is None:
            process.kill()
            process.wait()
    not_executed = exec_error(process.returncode, stderr)
    if not_executed is not None:
        raise not_executed
    return subprocess.CompletedProcess(list(argv), process.returncode, stdout, stderr)


def refuse_untrusted_binary(binary: str, env: Mapping[str, str]) -> None:
    """ConfigError (exit 2) when the influxctl binary that ``binary`` names (a path, or a name looked up
    on the child's PATH as exec looks it up) may be changed by a user other than rotator's own and root,
    or lies in a directory such a user may write (:func:`~rotator.config.policy_source.refuse_untrusted_file`):
    rotator runs it with the token in use, which its ``--config`` file holds. Looked at before every
    start, not once: the file can change while a daemon runs. A binary that cannot be found or looked
    at is left to exec, whose error says so (:data:`ERR_NOT_STARTED`)."""
    found = binary if os.sep in binary else shutil.which(binary, path=os.pathsep.join(os.get_exec_path(env)))
    if found is None:
        return
    try:
        refuse_untrusted_file(Path(found), "the influxctl binary",
                              why="rotator runs it with the token it uses, so such a user would receive that token")
    except OSError:
        return


def go_duration(seconds: float) -> str:
    """A Go ``time.Duration`` string for influxctl's ``--timeout`` (``60s``, ``1500ms``)."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{max(1, round(seconds * 1000))}ms"


@contextmanager
def _map_errors(command: str, binary: str, timeout_s: float) -> Iterator[None]:
    """Translate failures to start or finish the subprocess into rotator errors."""
    try:
        yield
    except subprocess.TimeoutExpired:
        raise TransientError(ERR_TIMEOUT.format(command=command, timeout=timeout_s), hint=HINT_TIMEOUT) from None
    except OutputTooLarge as exc:
        message = ERR_TOO_MUCH_OUTPUT.format(command=command, limit=MAX_OUTPUT_BYTES // 2**20, stream=exc.stream)
        if start_deadline() is not None:
            # A create or a revoke stopped mid-way may have taken effect: not a definite refusal (the
            # engine searches a mint's tag, and a revocation is confirmed by the listing).
            raise TransientError(message + "; it may have taken effect", hint=HINT_TOO_MUCH_OUTPUT) from None
        raise IssuerOutputError(message, hint=HINT_TOO_MUCH_OUTPUT) from None
    except OSError as exc:
        message = ERR_NOT_STARTED.format(binary=binary, reason=exc.strerror or type(exc).__name__)
        if exc.errno in _TRANSIENT_ERRNOS:
            raise TransientError(message, hint=HINT_NOT_STARTED_TRANSIENT) from exc
        raise ConfigError(message, hint=HINT_NOT_STARTED) from exc


def error_for_exit(
    command: str, proc: subprocess.CompletedProcess[str], *, unauthenticated_is_transient: bool = False
) -> RotatorError:
    """The rotator error for a failed influxctl run.

    The message names the command and exit code and may quote the last stderr line, redacted; never
    stdout (which may hold a token), but for the one line where influxctl says it refused the command
    line (:func:`_usage_error`), redacted too.
    """
    if proc.returncode < 0:
        return TransientError(ERR_SIGNAL.format(command=command, signal=-proc.returncode), hint=HINT_KILLED)
    if proc.returncode == EXIT_PAST_DEADLINE and not proc.stdout and not proc.stderr:
        return TransientError(
            f"{command} was not started: rotator was paused (or starved) for longer than allowed "
            "between its lease check and the start", hint="rotator checks its lease again before it retries")
    message = ERR_EXIT.format(command=command, code=proc.returncode)
    kind = _failure_kind(proc.stderr or "")
    usage = _usage_error(proc) if kind is None else None
    if usage is not None:
        return usage.error(message)
    detail = _last_stderr_line(proc.stderr or "")
    if detail:
        message = f"{message}: {detail}"
    if kind == "unauthenticated":
        if unauthenticated_is_transient:
            return NotYetAccepted(message, hint="a new token can take a while to become active")
        return PermanentError(message, hint=HINT_UNAUTHENTICATED)
    if kind == "permission":
        return PermanentError(message, hint=HINT_PERMISSION_DENIED)
    if kind == "transient":
        return TransientError(message, hint=HINT_UNREACHABLE)
    if kind == "not_found":
        # a revoke names a token id; a list or a create names only the profile's account and cluster (a
        # query's database: rotator/adapters/influxctl/database.py gives its own hint)
        return InfluxctlNotFound(message, hint=HINT_NOT_FOUND if command.endswith(" revoke") else HINT_NOT_FOUND_PLACE)
    if kind == "server_error":
        # Outcome unknown, as after a lost connection: a mint may have made its token (the engine then
        # searches its tag before trying again), and a revocation is idempotent and confirmed by the list
        return TransientError(message, hint=HINT_SERVER_ERROR)
    return PermanentError(message, hint=HINT_OTHER)


class InfluxctlNotFound(PermanentError):
    """influxctl failed with the server's gRPC NotFound: the command named something the cluster does not
    have (a token id, a database, the profile's account or cluster). A class, not a hint, tells it: the
    hint says what to check, and each command gives its own."""


def is_not_found(exc: BaseException) -> bool:
    """Whether ``exc`` is :func:`error_for_exit`'s answer to the server's NotFound."""
    return isinstance(exc, InfluxctlNotFound)


class _Usage(NamedTuple):
    """A command line influxctl refused before it did anything (urfave/cli's ``Incorrect Usage``)."""

    line: str
    flag: str | None

    def error(self, message: str) -> PermanentError:
        if self.flag is None:
            return PermanentError(f"{message}: {self.line}", hint=HINT_USAGE)
        since = _FLAG_SINCE.get(self.flag)
        needs = f" (added in influxctl {since})" if since else ""
        return PermanentError(f"{message}: {self.line}", hint=HINT_UNKNOWN_FLAG.format(flag=self.flag, needs=needs))


def _usage_error(proc: subprocess.CompletedProcess[str]) -> _Usage | None:
    """The line of a refused command line, from stderr or else stdout: urfave/cli v2 writes ``Incorrect
    Usage: <why>`` and the help to its ``Writer``, stdout unless the program chose another, and the help
    comes last, so neither the last stderr line nor any fixed stream is where the reason is. An unknown
    flag (an influxctl older than a flag rotator passes) is named. Only that line of stdout is quoted."""
    for marker in _USAGE_MARKERS:  # urfave/cli's own line first, then how the program reported its error
        for text in (proc.stderr or "", proc.stdout or ""):
            for line in _lines(text):
                if marker in line:
                    found = re.search(_UNKNOWN_FLAG, line)
                    return _Usage(_shown_line(line), found[1] if found else None)
    return None


def _lines(text: str) -> list[str]:
    r"""``text``'s lines as influxctl writes them: split at "\n" alone (a "\r" before it dropped), not at
    everything :meth:`str.splitlines` takes for a line end (U+2028, U+2029, \v, \f, \x1c-\x1e, \x85):
    the server's own text (a gRPC status description quoting a token's description) may hold them, and
    split there the line's ``code = X`` would no longer be on the line read for it."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def _failure_kind(stderr: str) -> str | None:
    """What stopped influxctl, read from its last stderr line (its error): the gRPC status code
    there, else markers in it. Nothing else in stderr counts: a warning line before the error
    (``could not create cache dir: permission denied``), or an earlier attempt's code, says nothing
    of this answer.

    "permission" (PermissionDenied: the server knows the credential, which lets verify accept a
    write-only database token) only from the server's own gRPC status: not from a proxy's HTTP 403,
    which gRPC reports as ``code = PermissionDenied desc = unexpected HTTP status code received from
    server: 403``, nor from text such as a local file's ``permission denied``."""
    lines = [line for line in _lines(stderr) if line.strip()]
    last = lines[-1] if lines else ""
    found = re.search(r"\bcode = ([A-Za-z]+)", last)
    code_kind = _GRPC_KINDS.get(found[1].lower()) if found else None
    if code_kind == "permission" and "unexpected http status code" in last.lower():
        return None  # a proxy's (or a router's) answer, not the server's
    if code_kind is not None and code_kind != "server_error":
        return code_kind
    # A code that says only "failed" (Internal, Unknown) yields to what its text says (a reset connection)
    last = last.lower()
    for kind, markers in (("unauthenticated", _UNAUTHENTICATED), ("transient", _TRANSIENT)):
        if any(marker in last for marker in markers):
            return kind
    return code_kind


def is_permission_denied(exc: BaseException) -> bool:
    """Whether ``exc`` is :func:`error_for_exit`'s answer to PermissionDenied.

    The credential was accepted but may not do this; an issuer can give its own hint (the
    default one is about management tokens).
    """
    return isinstance(exc, PermanentError) and exc.hint == HINT_PERMISSION_DENIED


def _last_stderr_line(stderr: str) -> str:
    """influxctl's last stderr line, for an error message: values masked, cut to ``_MAX_DETAIL``, and
    its control characters written out (:func:`~rotator.core.one_line.one_line`): the text is the
    cluster's (a gRPC status message the server wrote), and it reaches terminals and logs, where an
    escape sequence or a bidi control would act."""
    lines = [line.strip() for line in _lines(stderr) if line.strip()]
    return _shown_line(lines[-1]) if lines else ""


def _shown_line(line: str) -> str:
    """One line of influxctl's output for a message: values masked, cut, control characters written out."""
    line = re.sub(_TOKEN_SHAPES, "***", REDACTOR.redact(line.strip()))
    return one_line(line if len(line) <= _MAX_DETAIL else line[:_MAX_DETAIL] + "...")


class InfluxctlCLI:
    """One influxctl binary and base profile; :meth:`run` is the only place influxctl is started."""

    def __init__(
        self,
        *,
        binary: str,
        profile: ProfileSettings,
        timeout_s: float,
        base_dir: Path = Path("."),
        run: Runner = default_run,
    ) -> None:
        # A bare name is looked up on PATH; a relative path is relative to the policy file.
        self.binary = _binary_path(binary, base_dir) if os.sep in binary else binary
        self.profile = profile.resolved(base_dir)
        self.timeout_s = timeout_s
        # No sweep of dead processes' private configs here: loading the adapter (the registry, once
        # per process) and every call (private_config) sweep, and a daemon builds one per policy.
        self._run = run

    def run(self, command: Sequence[str], auth: ProfileAuth, *, unauthenticated_is_transient: bool = False) -> str:
        """Run ``influxctl <command>`` with ``auth``; return stdout, or raise a rotator error."""
        display = command_name(command)
        text = render_profile(self.profile, auth)
        with ExitStack() as stack:
            try:
                config = stack.enter_context(private_config(text))
            except OSError as exc:
                raise _config_not_written(display, exc) from exc
            argv = [
                self.binary,
                "--config",
                str(config),
                "--profile",
                PROFILE_NAME,
                "--timeout",
                go_duration(self.timeout_s),
                *command,
            ]
            started = time.monotonic()  # the call's duration for the log line, not a time of day
            outcome = "did not finish"
            try:
                with _map_errors(display, self.binary, self.timeout_s):
                    proc = self._run(argv, self.timeout_s)
                outcome = f"exit {proc.returncode}"
            except ConfigError:  # refused before it started (a binary others may change): no run to time
                outcome = "not started (refused)"
                raise
            finally:
                logger.info("%s: %s in %.2fs", display, outcome, time.monotonic() - started)
        if proc.returncode != 0:
            raise error_for_exit(display, proc, unauthenticated_is_transient=unauthenticated_is_transient)
        return proc.stdout or ""


def _config_not_written(command: str, exc: OSError) -> PermanentError:
    """The error for a call whose private config could not be made (no space, not writable, read-only).

    Permanent, not transient: no child was started, so nothing can have happened at the issuer. The
    engine closes a run whose mint raised a PermanentError as failed; any other error counts as a mint
    without an answer and leaves the run open for a tag search that has nothing to find.
    """
    try:
        directory = tempfile.gettempdir()
    except OSError:  # no usable temporary directory at all: gettempdir() raises again
        directory = "any temporary directory ($TMPDIR, /tmp, /var/tmp, /usr/tmp, the working directory)"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        remedy = f"free space (or raise the quota) in {directory}"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        remedy = f"make {directory} writable for the user rotator runs as"
    else:  # (out of descriptors, memory, a failing disk: neither space nor rights)
        remedy = f"see to what the error names ({errno.errorcode.get(exc.errno or 0, 'no errno')}) on this host"
    return PermanentError(
        ERR_CONFIG_NOT_WRITTEN.format(command=command, directory=directory, reason=exc.strerror or type(exc).__name__),
        hint=HINT_CONFIG_NOT_WRITTEN.format(remedy=remedy),
    )


def command_name(command: Sequence[str]) -> str:
    """The command's name for messages: ``influxctl`` and up to two leading words, never a flag or an argument.

    ``management create ...`` and ``token list ...`` give two words, ``query --database d ...``
    one (a query's text is an argument, not a name).
    """
    words: list[str] = []
    for item in command[:2]:
        if item.startswith("-"):
            break
        words.append(item)
        if item in _SINGLE_WORD_COMMANDS:
            break
    return "influxctl " + " ".join(words)


#: Commands without subcommands: what follows is an argument, not part of the name.
_SINGLE_WORD_COMMANDS = frozenset({"query", "write"})


def _resolve(path: Path, base_dir: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else (base_dir / path).absolute()


def _binary_path(binary: str, base_dir: Path) -> str:
    """``binary`` (a path) made absolute against ``base_dir``; remembered for an absolute ``base_dir``
    (a daemon builds one issuer per policy, mostly with the same binary). ``~`` depends on $HOME."""
    if not base_dir.is_absolute():  # relative to the working directory, which may change
        return str(_resolve(Path(binary), base_dir))
    return _absolute_binary(binary, base_dir, os.environ.get("HOME"))


@lru_cache(maxsize=1024)
def _absolute_binary(binary: str, base_dir: Path, home: str | None) -> str:  # noqa: ARG001 - home: the cache key
    return str(_resolve(Path(binary), base_dir))


# --------------------------------------------------------------------------------------------
# Token ids

#: Management and database token ids are UUIDs (facts file 1.5; the fake refuses anything else).
#: A pattern string, compiled (and cached by ``re``) on first use: not at the Lambda's cold start.
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
ERR_BAD_ID = "{noun} id {token_id} is not a UUID; rotator passes only UUIDs to influxctl"
HINT_BAD_ID = (
    "influxctl token ids look like 11111111-1111-4111-8111-111111111111; the id came from rotator's journal or "
    "a store payload: check it (`rotator status`, the store's token_id) and correct the record"
)


def check_token_id(token_id: str, noun: str = "token") -> str:
    """``token_id`` if it is a UUID, else PermanentError: an id never reaches influxctl's argv unchecked.

    Passed after ``--`` anyway (an id starting with ``-`` would otherwise be read as a flag).
    """
    if not isinstance(token_id, str) or not re.fullmatch(_UUID, token_id):
        shown = repr(re.sub(_TOKEN_SHAPES, "***", REDACTOR.redact(str(token_id)))[:80])
        raise BadTokenId(ERR_BAD_ID.format(noun=noun, token_id=shown), hint=HINT_BAD_ID)
    return token_id


# --------------------------------------------------------------------------------------------
# Reading influxctl's output


def output_error(command: str, problem: str) -> IssuerOutputError:
    return IssuerOutputError(ERR_OUTPUT.format(command=command, problem=problem), hint=HINT_OUTPUT)


def token_from_output(stdout: str, command: str, *, token_id: str | None = None, min_length: int = 20) -> str:
    """The token string of a ``create`` command: its last non-empty stdout line.

    Raises IssuerOutputError describing the line's shape (never its content) if it is not a
    single token-like word; it names ``token_id`` if the output had one (that token exists now).
    """
    lines = [line.strip() for line in _lines(stdout) if line.strip()]
    last = lines[-1] if lines else ""
    problem = ""
    if not lines:
        problem = "is missing (stdout is empty)"
    elif last.startswith("+-") or "|" in last:
        problem = "is a table line"
    elif len(last.split()) > 1:
        problem = f"has {len(last.split())} words"
    elif len(last) < min_length:
        problem = f"is {len(last)} characters long (a token has at least {min_length})"
    elif not last.isprintable() or not last.isascii():
        problem = "contains characters a token never has"
    if problem:
        created = f"token {token_id} was created, but " if token_id else ""
        raise output_error(command, f"{created}the last non-empty stdout line {problem}, expected a single token")
    return last


_TABLE_ROW = r"^\|\s*(?P<key>[^|]*?)\s*\|\s*(?P<value>[^|]*?)\s*\|$"  # compiled on first use, as _UUID


def table_value(stdout: str, key: str) -> str | None:
    """The value of row ``key`` in a two-column ``| key | value |`` table (influxctl >= 2.11)."""
    for line in _lines(stdout):
        match = re.match(_TABLE_ROW, line.strip())
        if match and match["key"].lower() == key.lower() and match["value"]:
            return match["value"]
    return None


def minted_token(
    stdout: str, command: str, expires_at: datetime, find_id: Callable[[Secret], str], *, min_length: int = 20
) -> MintedToken:
    """The token a ``create`` command printed: the value from the last stdout line, the id from
    the table influxctl >= 2.11 prints or else from ``find_id(value)``, the expiry as influxctl
    was given it (``--expires-at``: UTC, whole seconds).
    """
    token_id = table_value(stdout, "id")
    value = Secret(token_from_output(stdout, command, token_id=token_id, min_length=min_length))
    if token_id is None:
        token_id = find_id(value)
    if not re.fullmatch(_UUID, token_id):
        shown = repr(re.sub(_TOKEN_SHAPES, "***", REDACTOR.redact(token_id))[:80])
        raise output_error(command, f"a token was created, but its id {shown} is not a UUID")
    return MintedToken(value=value, token_id=token_id, expires_at=expires_at.astimezone(UTC).replace(microsecond=0))


def token_info(index: int, item: Mapping[str, Any], command: str) -> TokenInfo:
    """Item ``index`` of a ``management list`` or ``token list --format json`` (protobuf field names, snake_case)."""
    token_id = item.get("id")
    if not isinstance(token_id, str) or not token_id:
        raise output_error(command, f"item {index} has no string `id`")
    description = item.get("description", "")
    if not isinstance(description, str):
        raise output_error(command, f"item {index} has a `description` that is not a string")
    return TokenInfo(
        token_id=token_id,
        description=description,
        created_at=parse_timestamp(item.get("created_at"), f"item {index} `created_at`", command),
        expires_at=parse_timestamp(item.get("expires_at"), f"item {index} `expires_at`", command),
        revoked_at=parse_timestamp(item.get("revoked_at"), f"item {index} `revoked_at`", command),
        value_prefix=prefix if isinstance(prefix := item.get("token_prefix"), str) and prefix else None,
    )


def parse_json_array(stdout: str, command: str) -> list[Mapping[str, Any]]:
    """The JSON array of objects a ``list --format json`` command printed (``null`` = empty)."""
    try:
        data = json.loads(stdout)
    except json.JSONDecodeError as exc:
        raise output_error(command, f"stdout is not JSON (error at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:  # arrays or objects nested thousands deep: no influxctl output is
        raise output_error(command, "stdout is JSON nested too deeply to be an influxctl answer") from None
    if data is None:
        return []
    if not isinstance(data, list):
        raise output_error(command, f"stdout is a JSON {type(data).__name__}, expected an array")
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise output_error(command, f"item {index} is a JSON {type(item).__name__}, expected an object")
    return data


def parse_timestamp(value: object, where: str, command: str) -> datetime | None:
    """A protobuf Timestamp ``{"seconds": s, "nanos": n}`` (or an RFC 3339 string) as UTC.

    ``None`` and epoch zero (how influxctl shows "unset") give ``None``.
    """
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise output_error(command, f"{where} is not an RFC 3339 time") from None
        if parsed.tzinfo is None:
            raise output_error(command, f"{where} has no time zone")
        try:  # 9999-12-31T23:30:00-01:00 is a valid text whose UTC time is past the year 9999
            parsed = parsed.astimezone(UTC)
        except OverflowError:
            raise output_error(command, f"{where} is out of range") from None
        return None if parsed == _EPOCH else parsed
    if isinstance(value, dict):
        seconds, nanos = value.get("seconds", 0), value.get("nanos", 0)
        # protojson writes int64 as a string; accept both, never a bool. ASCII digits only, at most an
        # int64's 19: str.isdigit() passed "--5" and "²" (int() then raised ValueError) and read "١٢" as 12.
        if isinstance(seconds, str) and _INT64_TEXT.fullmatch(seconds):
            seconds = int(seconds)
        if not _is_int(seconds) or not _is_int(nanos) or not 0 <= nanos < 1_000_000_000:
            raise output_error(command, f"{where} is not a {{seconds, nanos}} timestamp")
        if seconds == 0 and nanos == 0:
            return None
        try:
            return _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)
        except OverflowError:
            raise output_error(command, f"{where} is out of range") from None
    raise output_error(command, f"{where} is a JSON {type(value).__name__}, expected a timestamp")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT64_TEXT = re.compile(r"-?[0-9]{1,19}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def rfc3339(moment: datetime) -> str:
    """``2026-01-31T12:00:00Z``: UTC, whole seconds, as influxctl's ``--expires-at`` expects."""
    return rfc3339_seconds(moment)


# --------------------------------------------------------------------------------------------
# What the influxctl issuers share


SettingsT = TypeVar("SettingsT", bound=InfluxctlSettings)

#: influxctl commands in the longest issuer call (see InfluxctlIssuer.call_timeout_seconds).
_COMMANDS_PER_CALL = 2
#: Seconds to start one child and to kill its process group, on top of ``timeout_s``.
_CHILD_MARGIN_S = 5.0


class InfluxctlIssuer(Generic[SettingsT]):
    """An issuer whose tokens influxctl creates, lists (with ``revoked_at``) and revokes.

    A subclass sets the class attributes below and writes ``mint`` (see :func:`minted_token`)
    and ``verify``; it may give its own hints in :meth:`_run`.
    """

    kind: ClassVar[str]
    #: A standard-library dataclass (this module's cold path imports no pydantic).
    settings_model: ClassVar[type[Any]]
    #: What the tokens are called in log lines ("management token").
    token_noun: ClassVar[str]
    #: The list command, revoked tokens included (``management list --format json``).
    list_args: ClassVar[tuple[str, ...]]
    #: The revoke command without its token id (``management revoke --force``).
    revoke_args: ClassVar[tuple[str, ...]]

    def __init__(self, settings: SettingsT, *, base_dir: Path = Path("."), run: Runner = default_run) -> None:
        self.settings = settings
        self._base_dir = base_dir
        self._cli = InfluxctlCLI(
            binary=settings.influxctl,
            profile=settings.profile,
            timeout_s=settings.timeout_s,
            base_dir=base_dir,
            run=run,
        )

    @classmethod
    def from_config(cls, settings: Any, ctx: AdapterContext) -> Self:
        return cls(checked_settings(cls, settings, cls.settings_model), base_dir=ctx.base_dir)

    @classmethod
    def remove_leftovers(cls) -> None:
        """Called by the registry when it loads the adapter (every command that loads a policy file
        with an influxctl issuer): remove the private configs dead rotator processes left."""
        sweep_stale_configs()

    @property
    def call_timeout_seconds(self) -> float:
        """The longest one issuer call (``mint``, ``revoke``...) can take, its children included.

        The longest calls run two influxctl commands (``create`` then, for influxctl <= 2.10, a
        ``list`` for the id; ``revoke`` then ``list``), each bounded by ``timeout_s`` (the child is
        killed then, by its watchdog if rotator is paused) plus a margin to start it and kill its
        process group. A child never outlives rotator (see :func:`default_run`), so a dead or paused
        run's mint cannot complete after this.
        """
        return _COMMANDS_PER_CALL * (self.settings.timeout_s + _CHILD_MARGIN_S)

    def target(self) -> str:
        """Where the tokens live (contracts.Issuer): the cluster the profile names, by the keys that
        name it for its product (rotator/observe/cluster_keys.py): ``clustered <host>:<port>`` (port
        443 when the profile gives none) or ``dedicated <account_id>/<cluster_id>`` (a Dedicated
        profile's ``host`` serves queries and writes only: the management commands go to the account).
        The management and database issuers of one cluster name it alike."""
        return profile_target(self.settings.profile)

    def revoke(self, token_id: str, credential: Secret | None) -> None:
        """The revoke command, confirmed by ``revoked_at`` in the list.

        A token that is already revoked counts as revoked, also when the command failed; so does
        one that is not listed at all after the command succeeded or the server answered NotFound.
        Otherwise the command's error wins: a list without the token (``null``, another cluster's)
        after a failed command proves nothing. The id must be a UUID (:func:`check_token_id`) and
        goes after ``--``.
        """
        check_token_id(token_id, self.token_noun)
        auth = self._auth(credential)
        failure: RotatorError | None = None
        try:
            self._run([*self.revoke_args, "--", token_id], auth)
        except RotatorError as exc:
            failure = exc
        try:
            tokens = self._list_tokens(auth)
        except RotatorError:
            if failure is not None:
                raise failure from None
            raise
        match = next((token for token in tokens if token.token_id == token_id), None)
        if match is None:
            if failure is not None and not is_not_found(failure):
                raise failure
            logger.warning("%s %s is not listed by influxctl; treating it as revoked", self.token_noun, token_id)
            return
        if match.revoked_at is not None:
            if failure is not None:
                logger.info("%s %s is revoked although the revoke command failed", self.token_noun, token_id)
            return
        if failure is not None:
            raise failure
        raise TransientError(ERR_NOT_REVOKED.format(command=command_name(self.revoke_args), token_id=token_id))

    def list_tokens(self, credential: Secret | None) -> list[TokenInfo]:
        """Every token the list command shows, revoked ones included."""
        return self._list_tokens(self._auth(credential))

    def _auth(self, credential: Secret | None) -> ProfileAuth:
        """The credential of ``auth``, read now (never cached); ``self`` is ``credential``, what the stores hold."""
        auth = self.settings.auth
        if isinstance(auth, TokenFileAuth):
            path = auth.token_file if auth.token_file.is_absolute() else self._base_dir / auth.token_file
            if not path.is_file():
                raise ConfigError(ERR_TOKEN_FILE.format(path=path), hint="check the path in `auth.token_file`")
            return ProfileAuth(token_file=path.absolute())
        if isinstance(auth, MgmtTokenAuth):
            return ProfileAuth(mgmt_token=auth.token.resolve(self._base_dir))
        if credential is None:
            raise ConfigError(ERR_NO_CREDENTIAL, hint=HINT_NO_CREDENTIAL)
        return ProfileAuth(mgmt_token=credential)

    def _run(self, command: Sequence[str], auth: ProfileAuth) -> str:
        """A command that creates, lists or revokes; a subclass may give its own hints."""
        return self._cli.run(command, auth)

    def _list(self, auth: ProfileAuth, args: Sequence[str] | None = None) -> list[Mapping[str, Any]]:
        """The items a list command (default :attr:`list_args`) printed."""
        args = self.list_args if args is None else args
        with reading():  # also inside a side effect's call (the id after a create): it changes nothing
            return parse_json_array(self._run(args, auth), command_name(args))

    def _list_tokens(self, auth: ProfileAuth) -> list[TokenInfo]:
        name = command_name(self.list_args)
        return [token_info(index, item, name) for index, item in enumerate(self._list(auth))]
