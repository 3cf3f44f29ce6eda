"""References to credentials (Vault tokens, AppRole secret ids, ...) held outside the policy file.

A policy never holds a secret inline: it names a file or an environment variable, and the
value is read when the adapter needs it (so a file rotated by another tool is picked up).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator

from rotator.errors import ConfigError
from rotator.secret import Secret

__all__ = ["SECRET_LOOKING_KEYS", "CredentialRef"]

#: Keys that, written inline in a policy, would hold a secret. The validator refuses them with
#: a message that points at the ``*_file`` / ``*_env`` form instead.
SECRET_LOOKING_KEYS = frozenset(
    {
        "token", "mgmt_token", "management_token", "password", "secret", "secret_id", "client_secret",
        "api_key", "access_key",
    }
)


class CredentialRef(BaseModel):
    """``{file = "/run/secrets/vault-token"}`` or ``{env = "VAULT_TOKEN"}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: Path | None = None
    env: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> CredentialRef:
        if (self.file is None) == (self.env is None):
            raise ValueError("give exactly one of `file` or `env`")
        return self

    def describe(self) -> str:
        return f"file {self.file}" if self.file is not None else f"environment variable {self.env}"

    def resolve(self, base_dir: Path = Path(".")) -> Secret:
        """Read the credential now; ConfigError names where it looked, never the value."""
        if self.env is not None:
            value = os.environ.get(self.env, "").strip()
            if not value:
                raise ConfigError(
                    f"environment variable {self.env} is unset or empty",
                    hint=f"export {self.env} before starting rotator",
                )
            return Secret(value)
        assert self.file is not None
        path = self.file if self.file.is_absolute() else base_dir / self.file
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read credential file {path}: {exc.strerror}",
                hint="check the path and that rotator's user may read it",
            ) from None
        if not value:
            raise ConfigError(f"credential file {path} is empty", hint="write the credential into it")
        return Secret(value)
