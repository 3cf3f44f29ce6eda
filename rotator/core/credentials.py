"""References to credentials (Vault tokens, AppRole secret ids, ...) held outside the policy file.

A policy never holds a secret inline: it names a file or an environment variable, and the
value is read when the adapter needs it (so a file rotated by another tool is picked up).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from rotator.core.errors import ConfigError
from rotator.core.secret import Secret

__all__ = ["SECRET_LOOKING_KEYS", "SETTINGS_CONFIG", "CredentialRef", "SettingsValue"]

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
        if self.env is not None and not self.env:
            raise ValueError("`env` must name an environment variable")

    def describe(self) -> str:
        return f"file {self.file}" if self.file is not None else f"environment variable {self.env}"

    def resolve(self, base_dir: Path = Path(".")) -> Secret:
        """Read the credential now; ConfigError names where it looked, never the value.

        Surrounding white space and a byte-order mark (an editor's UTF-8 signature) are dropped; a
        control or format character left inside (a line break, a zero-width space, a NUL) is
        refused: a credential is one line, and an HTTP client would fail on one with the value in
        its message (a webhook key from `base64` wraps at 76 columns: `base64 -w0` writes one line)."""
        if self.env is not None:
            value = _plain(os.environ.get(self.env, ""))
            if not value:
                raise ConfigError(
                    f"environment variable {self.env} is unset or empty",
                    hint=f"export {self.env} before starting rotator",
                )
            return _printable(value, f"environment variable {self.env}")
        assert self.file is not None
        path = self.file if self.file.is_absolute() else base_dir / self.file
        try:
            value = _plain(path.read_text(encoding="utf-8"))
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
        if not value:
            raise ConfigError(f"credential file {path} is empty", hint="write the credential into it")
        return _printable(value, f"credential file {path}")


def _plain(text: str) -> str:
    return text.strip().lstrip("\ufeff").strip()


def _printable(value: str, where: str) -> Secret:
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
