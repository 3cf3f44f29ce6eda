"""Issuer ``influxctl-management``: InfluxDB Clustered / Cloud Dedicated management tokens.

Management tokens have no HTTP API; they are created, listed and revoked only through
``influxctl management create|list|revoke`` (influxctl >= 2.9.7 for ``--timeout``). Each call
runs with a private one-profile config (see :mod:`adapters.influxctl_common`).

Policy settings::

    [policy.issuer]
    type = "influxctl-management"
    influxctl = "/usr/local/bin/influxctl"       # default: "influxctl" on PATH
    timeout_s = 60                               # per influxctl call
    [policy.issuer.profile]
    product = "clustered"                        # or "dedicated" (then account_id + cluster_id)
    host = "influxdb.example.com"
    port = 443
    tls = { ca = "ca.pem" }                      # also insecure, disable, cert, key
    [policy.issuer.auth]
    method = "self"                              # default: the token the store holds now
    # method = "token_file", token_file = "/etc/influxdb/token.json"   (Clustered admin token)
    # method = "mgmt_token", token = { env = "INFLUX_MGMT_TOKEN" }     (a separate token; or file = ...)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from adapters.influxctl_common import (
    InfluxctlCLI,
    MgmtTokenAuth,
    ProfileAuth,
    ProfileSettings,
    Runner,
    SelfAuth,
    TokenFileAuth,
    default_run,
    output_error,
    parse_json_array,
    parse_timestamp,
    rfc3339,
    table_value,
    token_from_output,
)
from rotator.contracts import AdapterContext, MintedToken, MintRequest, TokenInfo
from rotator.errors import ConfigError, RotatorError, TransientError
from rotator.secret import Secret

__all__ = ["InfluxctlManagementIssuer", "InfluxctlManagementSettings"]

logger = logging.getLogger("rotator.adapters.influxctl")

CREATE = ("management", "create")
LIST = ("management", "list", "--format", "json")
REVOKE = ("management", "revoke", "--force")
CREATE_CMD = "influxctl management create"
LIST_CMD = "influxctl management list"

ERR_NO_CREDENTIAL = "auth.method = 'self' needs the current management token, but no token is published yet"
HINT_NO_CREDENTIAL = (
    "store the first token with `rotator bootstrap`, or authenticate with auth.method = 'token_file' or 'mgmt_token'"
)
ERR_TOKEN_FILE = "auth.token_file {path} is not a readable file"
ERR_ID_NOT_FOUND = (
    "printed no token id, and `influxctl management list` shows {count} tokens with description {description!r} "
    "and the new token's prefix"
)
ERR_NOT_REVOKED = "influxctl management revoke {token_id} succeeded but the token is not listed as revoked"


class InfluxctlManagementSettings(BaseModel):
    """Settings of the ``influxctl-management`` issuer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The influxctl binary: a name looked up on PATH or a path (relative to the policy file).
    influxctl: str = Field(default="influxctl", min_length=1)
    profile: ProfileSettings
    auth: Annotated[SelfAuth | TokenFileAuth | MgmtTokenAuth, Field(discriminator="method")] = SelfAuth()
    #: Limit for each influxctl call, also passed as influxctl's ``--timeout``.
    timeout_s: float = Field(default=60, gt=0, le=3600)


class InfluxctlManagementIssuer:
    """Mints, verifies, lists and revokes management tokens with ``influxctl management``."""

    kind: ClassVar[str] = "influxctl-management"
    settings_model: ClassVar[type[BaseModel]] = InfluxctlManagementSettings

    def __init__(
        self,
        settings: InfluxctlManagementSettings,
        *,
        base_dir: Path = Path("."),
        run: Runner = default_run,
    ) -> None:
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
    def from_config(cls, settings: BaseModel, ctx: AdapterContext) -> InfluxctlManagementIssuer:
        if not isinstance(settings, InfluxctlManagementSettings):
            raise TypeError(f"{cls.kind} needs InfluxctlManagementSettings, got {type(settings).__name__}")
        return cls(settings, base_dir=ctx.base_dir)

    # -- the Issuer protocol -------------------------------------------------------------------

    def mint(self, request: MintRequest, credential: Secret | None) -> MintedToken:
        """``influxctl management create``; the token is the last stdout line.

        The id comes from the table influxctl >= 2.11 prints, else from ``management list``
        (see :meth:`_created_id`).
        """
        auth = self._auth(credential)
        expires = rfc3339(request.expires_at)  # refuses a naive datetime
        stdout = self._cli.run([*CREATE, "--description", request.description, "--expires-at", expires], auth)
        token_id = table_value(stdout, "id")
        value = Secret(token_from_output(stdout, CREATE_CMD, token_id=token_id))
        if token_id is None:
            token_id = self._created_id(value, request.description, auth)
        expires_at = request.expires_at.astimezone(UTC).replace(microsecond=0)  # what influxctl was given
        return MintedToken(value=value, token_id=token_id, expires_at=expires_at)

    def verify(self, token: Secret) -> None:
        """``influxctl management list`` as ``token``; TransientError while it is not accepted yet."""
        stdout = self._cli.run(LIST, ProfileAuth(mgmt_token=token), unauthenticated_is_transient=True)
        parse_json_array(stdout, LIST_CMD)

    def revoke(self, token_id: str, credential: Secret | None) -> None:
        """``influxctl management revoke --force``, confirmed by ``revoked_at`` in the list.

        A token that is already revoked, or not listed at all, counts as revoked.
        """
        auth = self._auth(credential)
        failure: RotatorError | None = None
        try:
            self._cli.run([*REVOKE, token_id], auth)
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
            logger.warning("management token %s is not listed by influxctl; treating it as revoked", token_id)
            return
        if match.revoked_at is not None:
            if failure is not None:
                logger.info("management token %s is revoked although the revoke command failed", token_id)
            return
        if failure is not None:
            raise failure
        raise TransientError(ERR_NOT_REVOKED.format(token_id=token_id))

    def list_tokens(self, credential: Secret | None) -> list[TokenInfo]:
        """Every management token influxctl lists, revoked ones included."""
        return self._list_tokens(self._auth(credential))

    # -- helpers --------------------------------------------------------------------------------

    def _auth(self, credential: Secret | None) -> ProfileAuth:
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

    def _list(self, auth: ProfileAuth) -> list[Mapping[str, Any]]:
        return parse_json_array(self._cli.run(LIST, auth), LIST_CMD)

    def _list_tokens(self, auth: ProfileAuth) -> list[TokenInfo]:
        return [_token_info(index, item) for index, item in enumerate(self._list(auth))]

    def _created_id(self, value: Secret, description: str, auth: ProfileAuth) -> str:
        """The id of the token just created, when influxctl (<= 2.10) printed no table.

        It is the listed token with the run's description whose ``token_prefix`` (the first
        characters of the value) matches: a retried mint may have left one of the same name.
        """
        matches = []
        for index, item in enumerate(self._list(auth)):
            info, prefix = _token_info(index, item), item.get("token_prefix")
            if info.description == description and (not isinstance(prefix, str) or value.reveal().startswith(prefix)):
                matches.append(info.token_id)
        if len(matches) != 1:
            raise output_error(CREATE_CMD, ERR_ID_NOT_FOUND.format(count=len(matches), description=description))
        return matches[0]


def _token_info(index: int, item: Mapping[str, Any]) -> TokenInfo:
    """One item of ``management list --format json`` (protobuf field names, snake_case)."""
    token_id = item.get("id")
    if not isinstance(token_id, str) or not token_id:
        raise output_error(LIST_CMD, f"item {index} has no string `id`")
    description = item.get("description", "")
    if not isinstance(description, str):
        raise output_error(LIST_CMD, f"item {index} has a `description` that is not a string")
    return TokenInfo(
        token_id=token_id,
        description=description,
        created_at=parse_timestamp(item.get("created_at"), f"item {index} `created_at`", LIST_CMD),
        expires_at=parse_timestamp(item.get("expires_at"), f"item {index} `expires_at`", LIST_CMD),
        revoked_at=parse_timestamp(item.get("revoked_at"), f"item {index} `revoked_at`", LIST_CMD),
    )
