"""References to credentials (Vault tokens, AppRole secret ids, ...) held outside the policy file.

A policy never holds a secret inline: it names a file or an environment variable, and the
value is read when the adapter needs it (so a file rotated by another tool is picked up).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path
from stat import S_IMODE, S_IROTH, S_ISCHR, S_ISDIR, S_ISFIFO, S_ISREG
from typing import Any, ClassVar

from rotator.config.policy_source import refuse_untrusted_file
from rotator.core.errors import ConfigError
from rotator.core.secret import Secret

__all__ = ["MAX_CREDENTIAL_BYTES", "SECRET_LOOKING_KEYS", "SETTINGS_CONFIG", "CredentialRef", "SettingsValue",
           "plain_text", "printable_secret", "read_credential_file"]

#: Far above any credential a file holds (a token, an AppRole secret id, a webhook key: under 1 KiB; a JWT
#: from an identity provider: a few KiB, sent in a header that servers and proxies commonly cap at 8 to 16 KiB),
#: far below what would hurt to read at every use. A CA bundle is not read here: the HTTP clients open it.
MAX_CREDENTIAL_BYTES = 64 * 1024

# O_NONBLOCK: a FIFO opens at once (then fstat refuses it) instead of waiting for a writer.
_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)

logger = logging.getLogger("rotator.credentials")
#: Paths already warned about as readable by others: a credential is read at every use (every run of
#: the daemon), and one line per file and process says it.
_WARNED_READABLE: set[str] = set()

#: Keys that, written inline in a policy, would hold a secret. The validator refuses them with
#: a message that points at the ``*_file`` / ``*_env`` form instead.
SECRET_LOOKING_KEYS = frozenset(
    {
        "token", "mgmt_token", "management_token", "password", "secret", "secret_id", "client_secret",
        "api_key", "access_key",
    }
)


#: ``__pydantic_config__`` of a settings dataclass (see rotator/config/adapter_settings.py): unknown keys
#: are errors. A field's description in the JSON schema is its metadata's ``"description"``
#: (``field(default=None, metadata={"description": "..."})``): pydantic passes a dataclass field's
#: metadata on to its ``Field``, without reading the module's source as attribute docstrings would need.
SETTINGS_CONFIG: dict[str, Any] = {"extra": "forbid"}


class SettingsValue:
    """``__eq__``, ``__hash__`` and ``__repr__`` of a frozen settings dataclass, made from its fields
    as ``@dataclass`` makes them. A class decorated ``@dataclass(frozen=True, eq=False, repr=False)``
    inherits these instead of having three more methods compiled for it (``exec``) when its module
    is imported: ~0.25 ms a class on CPython 3.11, on the AWS Lambda function's cold start, which
    builds the settings classes of its issuer and store (docs/performance.md). Only for frozen
    dataclasses: a mutable one would hash by values that can change."""

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return _compared(self) == _compared(other)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, f.name) for f in fields(self)  # type: ignore[arg-type]
                          if (f.compare if f.hash is None else f.hash)))

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)  # type: ignore[arg-type]
        return f"{self.__class__.__qualname__}({shown})"


def _compared(value: Any) -> tuple[Any, ...]:
    return tuple(getattr(value, f.name) for f in fields(value) if f.compare)


@dataclass(frozen=True, eq=False, repr=False)
class CredentialRef(SettingsValue):
    """``{file = "/run/secrets/vault-token"}`` or ``{env = "VAULT_TOKEN"}``.

    A dataclass, not a pydantic model: the influxctl issuers and the AWS Lambda function use it
    on a cold path that does not import pydantic. pydantic models validate it as a field.
    """

    __pydantic_config__: ClassVar[dict[str, Any]] = SETTINGS_CONFIG

    file: Path | None = None
    env: str | None = None

    def __post_init__(self) -> None:
        if (self.file is None) == (self.env is None):
            raise ValueError("give exactly one of `file` or `env`")
        if self.env is not None and (not self.env or "=" in self.env or "\x00" in self.env):
            # the environment holds NAME=value strings: a name with '=' or a NUL is never set
            raise ValueError("`env` must name an environment variable (a name holds no '=' and no NUL character)")
        if self.file is not None:
            # checked here, not at run time: os.open raises ValueError for a NUL, and "" is the
            # policy file's directory (pydantic reads it as Path("."))
            if "\x00" in str(self.file):
                raise ValueError("`file` must not hold a NUL character (\\u0000): no path can")
            if not Path(self.file).parts:
                raise ValueError("`file` is empty (or '.', a directory): write the path of the file that holds "
                                 "the credential")

    def describe(self) -> str:
        return f"file {self.file}" if self.file is not None else f"environment variable {self.env}"

    def resolve(self, base_dir: Path = Path(".")) -> Secret:
        """Read the credential now; ConfigError names where it looked, never the value.

        Surrounding white space and a byte-order mark (an editor's UTF-8 signature) are dropped; a
        control or format character left inside (a line break, a zero-width space, a NUL) is
        refused: a credential is one line, and an HTTP client would fail on one with the value in
        its message (a webhook key from `base64` wraps at 76 columns: `base64 -w0` writes one line)."""
        if self.env is not None:
            value = plain_text(os.environ.get(self.env, ""))
            if not value:
                raise ConfigError(
                    f"environment variable {self.env} is unset or empty",
                    hint=f"export {self.env} before starting rotator",
                )
            return printable_secret(value, f"environment variable {self.env}")
        assert self.file is not None
        path = self.file if self.file.is_absolute() else base_dir / self.file
        try:
            value = plain_text(read_credential_file(path).decode("utf-8"))
        except OSError as exc:
            raise ConfigError(
                f"cannot read credential file {path}: {exc.strerror}",
                hint="check the path and that rotator's user may read it",
            ) from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"credential file {path} is not UTF-8 text (byte {exc.start + 1})",
                hint="write the credential into it as plain text",
            ) from None
        except ValueError:  # os.open: a NUL in the path (a base_dir given with one; `file` refuses it)
            raise ConfigError(
                f"cannot read credential file {str(path)[:200]!r}: the path holds a NUL character",
                hint="write the path without it",
            ) from None
        if not value:
            raise ConfigError(f"credential file {path} is empty", hint="write the credential into it")
        return printable_secret(value, f"credential file {path}")


def read_credential_file(path: Path, what: str = "credential file") -> bytes:
    """The bytes of the regular file at ``path`` (a symbolic link to one is fine: Kubernetes mounts a
    secret's keys so; ``what``: how messages name it); ConfigError for anything else (a FIFO would block
    the caller, inside a lease, until a writer came; a device such as /dev/zero would never end), a
    file larger than :data:`MAX_CREDENTIAL_BYTES`, or one whose mode lets users other than its owner, rotator's
    and root change it (:func:`~rotator.config.policy_source.refuse_untrusted_file`, by mode only).
    OSError as ``os.open``, ``os.stat`` and ``os.read`` raise it."""
    fd = os.open(path, _FLAGS)
    try:
        st = os.fstat(fd)
        if not S_ISREG(st.st_mode):
            kind = ("a directory" if S_ISDIR(st.st_mode) else "a FIFO (named pipe)" if S_ISFIFO(st.st_mode)
                    else "a character device" if S_ISCHR(st.st_mode) else "not a regular file")  # fmt: skip
            raise ConfigError(f"cannot read {what} {path}: it is {kind}, not a regular file",
                              hint="point `file` at a regular file that holds the credential (a symbolic link to "
                              "one is fine)")  # fmt: skip
        # Refused, not warned about: whoever may write it could swap in a credential of their own or take
        # the store's away. Its mode only: the owner and the directory are the writer's by design where a
        # sidecar keeps it fresh (a Vault Agent sink, made by the agent's user in a pod's emptyDir, 0777).
        refuse_untrusted_file(path, what, st, why="whoever may change it chooses the credential rotator uses",
                              check_owner=False, check_directory=False)
        if st.st_mode & S_IROTH:
            _warn_readable_by_others(path, what, st.st_mode)
        chunks: list[bytes] = []
        total = 0
        # st_size first (no read at all), then what was read: a file may grow between fstat and read.
        while st.st_size <= MAX_CREDENTIAL_BYTES and total <= MAX_CREDENTIAL_BYTES and (
            chunk := os.read(fd, MAX_CREDENTIAL_BYTES + 1 - total)
        ):
            chunks.append(chunk)
            total += len(chunk)
        if st.st_size > MAX_CREDENTIAL_BYTES or total > MAX_CREDENTIAL_BYTES:
            raise ConfigError(f"{what} {path} is larger than {MAX_CREDENTIAL_BYTES // 1024} KiB, far more "
                              "than any token or key holds",
                              hint="check that `file` names the file that holds the credential, as one line of "
                              "text")  # fmt: skip
        return b"".join(chunks)
    finally:
        os.close(fd)


def _warn_readable_by_others(path: Path, what: str, mode: int) -> None:
    """A WARNING, once per path and process: any user of the machine may read the credential. Not refused:
    a Kubernetes Secret volume is 0644 unless its ``defaultMode`` says otherwise, and a rotation that
    stopped over a mode would leave the token it was to replace in use."""
    key = str(path)
    if key in _WARNED_READABLE:
        return
    _WARNED_READABLE.add(key)
    logger.warning("%s %s is readable by any user (mode %04o); fix: chmod 0400 %s (0440 for a group of readers; "
                   "in Kubernetes, defaultMode: 0440 on the Secret volume, with the pod's fsGroup)",
                   what, path, S_IMODE(mode), path)


def plain_text(text: str) -> str:
    return text.strip().lstrip("\ufeff").strip()


def printable_secret(value: str, where: str) -> Secret:
    """``value`` as a Secret, or ConfigError naming the first character no credential holds (by its
    position and code point, never the value)."""
    bad = next((i for i, c in enumerate(value) if not c.isprintable()), None)
    if bad is not None:
        raise ConfigError(
            f"{where} holds a control or format character (U+{ord(value[bad]):04X}, character {bad + 1}) that "
            "no credential has",
            hint="write the credential again as one line of plain text (a copy from a document or a chat can add "
            "invisible characters; `base64 -w0` writes a key without line breaks)",
        )
    return Secret(value)
