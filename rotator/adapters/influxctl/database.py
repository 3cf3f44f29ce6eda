"""Issuer ``influxctl-database``: InfluxDB Clustered / Cloud Dedicated database tokens via influxctl.

Database tokens grant read and/or write on databases (``*``: all). They are created, listed and
revoked with ``influxctl token create|list|revoke`` authenticated by a *management* credential,
and used with the data commands: a new token is verified with ``influxctl query`` against one
database, the token in the private profile's ``token`` key (never on the command line). Each call
runs with a private one-profile config (see :mod:`rotator.adapters.influxctl.common`).

A database token cannot mint database tokens, so ``auth.method = "self"`` is refused: the minting
credential is a management token (``mgmt_token``, from a file or an environment variable, e.g.
one that an ``influxctl-management`` policy keeps current in a file) or, on Clustered, the admin
token file (``token_file``).

Policy settings::

    [policy.issuer]
    type = "influxctl-database"
    influxctl = "/usr/local/bin/influxctl"       # default: "influxctl" on PATH
    timeout_s = 60                               # per influxctl call
    permissions = { read = ["db1", "*"], write = ["db1"] }   # at least one; "*" = every database
    database = "db1"                             # default: the first read database that is not "*"
    verify_query = "SELECT 1"                    # run as the new token to verify it
    [policy.issuer.profile]
    product = "clustered"                        # or "dedicated" (then account_id + cluster_id)
    host = "influxdb.example.com"
    [policy.issuer.auth]
    method = "mgmt_token"                        # a management token: token = { env = ... } / { file = ... }
    token = { file = "/run/secrets/influx-mgmt-token" }
    # method = "token_file", token_file = "/etc/influxdb/token.json"   (Clustered admin token)

Verification: new database tokens answer 401 (Unauthenticated) for "a few seconds to a few
minutes"; that is a TransientError, retried by the engine until ``verify_timeout``. A token that
may read ``database`` must answer the query (PermissionDenied is retried too: its permissions
may still be synchronising; a database that does not exist is a PermanentError). A write-only
token (no read permission on ``database``) cannot query; for it, PermissionDenied proves that
the server knows and accepts the token, which is what verification needs (INFER: the server
tells an unknown token, Unauthenticated, from a known one without the permission,
PermissionDenied).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from rotator.adapters.influxctl.common import (
    AUTH_BY_METHOD,
    InfluxctlIssuer,
    InfluxctlNotFound,
    InfluxctlSettings,
    MgmtTokenAuth,
    ProfileAuth,
    TokenFileAuth,
    is_not_found,
    is_permission_denied,
    minted_token,
    output_error,
    parse_json_array,
    rfc3339,
    token_info,
)
from rotator.core.contracts import Issuer, MintedToken, MintRequest
from rotator.core.credentials import SETTINGS_CONFIG
from rotator.core.errors import PermanentError, TransientError
from rotator.core.secret import Secret

__all__ = [
    "DatabasePermissions",
    "InfluxctlDatabaseIssuer",
    "InfluxctlDatabaseListingSettings",
    "InfluxctlDatabaseSettings",
]

logger = logging.getLogger("rotator.adapters.influxctl")

CREATE = ("token", "create")
LIST = ("token", "list", "--include-revoked", "--format", "json")
LIVE_LIST = ("token", "list", "--format", "json")
REVOKE = ("token", "revoke", "--force")
QUERY = ("query",)
CREATE_CMD = "influxctl token create"
LIST_CMD = "influxctl token list"
QUERY_CMD = "influxctl query"

#: "apiv<N>_<base64-encoded 512-bit random string>"; the Management API spec says minLength 64.
MIN_TOKEN_LENGTH = 64
#: A permission on every database.
ALL_DATABASES = "*"
#: ClusterDatabaseName in the Management API spec: 1-64 characters.
MAX_DATABASE_NAME = 64

ERR_SELF_AUTH = (
    "auth.method = 'self' cannot work for database tokens: a database token may not create, list or "
    "revoke database tokens"
)
HINT_SELF_AUTH = (
    "set auth.method = 'mgmt_token' with token = { file = ... } or { env = ... } (a management token), "
    "or auth.method = 'token_file' (the Clustered admin token file)"
)
ERR_NO_AUTH = "`auth` is required: database tokens are minted with a management credential"
ERR_ID_NOT_FOUND = (
    "printed no token id, and `influxctl token list` shows {count} live tokens with description {description!r}"
)
HINT_MANAGE_DENIED = (
    "the management credential may not manage database tokens; on Cloud Dedicated use a management "
    "token an Admin created, on Clustered the admin token file or such a management token"
)
HINT_NO_DATABASE = (
    "database {database!r}, which verification queries, does not exist on this cluster (NotFound): check "
    "`database` (or, without it, the first database of `permissions`) and the profile's cluster"
)
HINT_NOT_YET_READABLE = (
    "the new token has read permission on {database} but was refused (PermissionDenied); permissions can "
    "take a while to synchronise: raise `verify_timeout` if this keeps happening"
)


def _check_database_name(name: str, key: str) -> str:
    if name == ALL_DATABASES:
        return name
    if not name.strip() or len(name) > MAX_DATABASE_NAME:
        raise ValueError(f"`{key}`: {name!r} is not a database name (1-{MAX_DATABASE_NAME} characters) or '*'")
    if "," in name or not name.isprintable() or name != name.strip():
        raise ValueError(f"`{key}`: {name!r} has a comma, a control character or surrounding spaces")
    return name


class _BeforeCheck:
    """Run ``check`` on the raw policy value before pydantic validates it, as ``BeforeValidator`` would.

    ``Annotated`` metadata of a field, or returned by a settings class's own hook. pydantic calls
    ``__get_pydantic_core_schema__`` only when it validates a policy table, so this module still
    imports no pydantic (the AWS Lambda function's cold start); the schema is pydantic-core's
    before-validator around the one pydantic would have built. ``check`` raises
    ValueError, which the policy loader reports at the field (or the table).
    """

    def __init__(self, check: Callable[[Any], Any]) -> None:
        self.check = check

    def __get_pydantic_core_schema__(self, source: Any, handler: Callable[[Any], Any]) -> Any:
        from pydantic_core import core_schema  # only while pydantic validates, never at import

        return core_schema.no_info_before_validator_function(self.check, handler(source))


def _auth_given(data: Any) -> Any:
    if isinstance(data, Mapping) and "auth" not in data:
        raise ValueError(f"{ERR_NO_AUTH} ({HINT_SELF_AUTH})")
    return data


def _not_self(value: Any) -> Any:
    if isinstance(value, Mapping) and value.get("method", "self") == "self":
        raise ValueError(f"{ERR_SELF_AUTH} ({HINT_SELF_AUTH})")
    return value


@dataclass(frozen=True)
class DatabasePermissions:
    """``{read = ["db1", "*"], write = ["db1"]}``: ``--read-database`` / ``--write-database``."""

    __pydantic_config__: ClassVar[dict[str, Any]] = SETTINGS_CONFIG

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for key in ("read", "write"):
            checked = [_check_database_name(name, key) for name in getattr(self, key)]
            object.__setattr__(self, key, tuple(dict.fromkeys(checked)))  # duplicates dropped, order kept
        if not self.read and not self.write:
            raise ValueError('grant at least one permission, e.g. permissions = { read = ["db1"] }')

    def may_read(self, database: str) -> bool:
        return database in self.read or ALL_DATABASES in self.read

    def covers(self, database: str) -> bool:
        return self.may_read(database) or database in self.write or ALL_DATABASES in self.write

    def flags(self) -> list[str]:
        return [f"--read-database={db}" for db in self.read] + [f"--write-database={db}" for db in self.write]


# influxctl, profile and timeout_s as every influxctl issuer has them; auth narrowed (never "self").
@dataclass(frozen=True, kw_only=True)
class InfluxctlDatabaseSettings(InfluxctlSettings):
    """Settings of the ``influxctl-database`` issuer."""

    #: The management credential that mints, lists and revokes database tokens (never "self": a
    #: table whose ``method`` is "self" or missing gets ERR_SELF_AUTH from ``_not_self``).
    auth: Annotated[TokenFileAuth | MgmtTokenAuth, _BeforeCheck(_not_self)] = field(metadata=AUTH_BY_METHOD)
    permissions: DatabasePermissions
    #: The database the verification query runs against (default: see :attr:`verify_database`).
    database: str | None = None
    verify_query: str = "SELECT 1"

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Callable[[Any], Any]) -> Any:
        """A policy table without ``auth`` gets ERR_NO_AUTH, not pydantic's "Field required"."""
        return _BeforeCheck(_auth_given).__get_pydantic_core_schema__(source, handler)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.auth, TokenFileAuth | MgmtTokenAuth):  # built in code, not from a policy table
            raise ValueError(f"{ERR_SELF_AUTH} ({HINT_SELF_AUTH})")
        if self.database is not None:
            _check_database_name(self.database, "database")
            if self.database == ALL_DATABASES:
                raise ValueError("`database` must name one database to query, not '*'")
        if not self.verify_query.strip() or self.verify_query.lstrip().startswith("-"):
            raise ValueError("`verify_query` must be a query such as 'SELECT 1' (not blank, not starting with '-')")
        self._verifiable()

    def _verifiable(self) -> None:
        if self.profile.product == "dedicated" and self.profile.host is None:
            # Cloud Dedicated's profile `host` serves only `query` and `write`; management commands reach
            # the account and cluster without it. Verification is a `query`: without the host it reaches
            # no cluster, and every rotation would fail at VERIFY after minting.
            raise ValueError(
                "product 'dedicated' needs `host` (the cluster's URL, e.g. 'CLUSTER_ID.a.influxdb.io') for "
                "influxctl-database: verification runs `influxctl query`, which reaches the cluster through it"
            )
        if self.database is None and self._default_database() is None:
            raise ValueError(
                "`database` is required when `permissions` names no database but '*': "
                "set the database that verification queries"
            )
        if self.database is not None and not self.permissions.covers(self.database):
            raise ValueError(
                f"`database` {self.database!r} is in neither permissions.read nor permissions.write: "
                "verification would prove nothing; pick a database the token may use"
            )

    def _default_database(self) -> str | None:
        named = [db for db in (*self.permissions.read, *self.permissions.write) if db != ALL_DATABASES]
        return named[0] if named else None

    @property
    def verify_database(self) -> str:
        """``database``, else the first read permission that is not ``*``, else the first write one."""
        database = self.database or self._default_database()
        assert database is not None  # guaranteed by _verifiable
        return database


@dataclass(frozen=True, kw_only=True)
class InfluxctlDatabaseListingSettings(InfluxctlDatabaseSettings):
    """Settings of an issuer that only lists database tokens: ``rotator inventory``'s bare
    ``--influxctl-profile`` target, never a policy (whose model stays :class:`InfluxctlDatabaseSettings`).

    Listing is a management command (``influxctl token list``): Cloud Dedicated is reached through the
    account and cluster ids without ``host``, and no database is queried. The checks that serve
    verification (:meth:`InfluxctlDatabaseSettings._verifiable`) do not apply; every other check does.
    ``permissions`` and ``database`` are placeholders: an issuer built with these settings only lists.
    """

    def _verifiable(self) -> None:
        """Nothing is verified with these settings."""


class InfluxctlDatabaseIssuer(InfluxctlIssuer[InfluxctlDatabaseSettings]):
    """Mints, verifies, lists and revokes database tokens with ``influxctl token`` and ``query``.

    ``revoke`` (``token revoke --force``, confirmed by ``revoked_at`` in ``token list
    --include-revoked``) and ``list_tokens`` (every database token of the cluster, revoked ones
    included) come from :class:`~rotator.adapters.influxctl.common.InfluxctlIssuer`.
    """

    kind: ClassVar[str] = "influxctl-database"
    settings_model: ClassVar[type[Any]] = InfluxctlDatabaseSettings
    #: what an issuer that only lists is built with (`rotator inventory`'s bare targets)
    listing_settings_model: ClassVar[type[Any]] = InfluxctlDatabaseListingSettings
    token_noun: ClassVar[str] = "database token"
    list_args: ClassVar[tuple[str, ...]] = LIST
    revoke_args: ClassVar[tuple[str, ...]] = REVOKE

    def mint(self, request: MintRequest, credential: Secret | None) -> MintedToken:
        """``influxctl token create`` with the policy's permissions; the token is the last stdout line.

        ``credential`` (the current database token) is not used: the management credential
        of ``auth`` mints. The id comes from the table influxctl >= 2.11 prints, else from
        ``token list`` (see :meth:`_created_id`).
        """
        auth = self._auth(credential)
        expires = rfc3339(request.expires_at)  # refuses a naive datetime
        command = [*CREATE, *self.settings.permissions.flags(), f"--expires-at={expires}"]
        if request.description.startswith("-"):
            command.append("--")  # the description is positional: never let it read as a flag
        command.append(request.description)
        stdout = self._run(command, auth)
        return minted_token(
            stdout,
            CREATE_CMD,
            request.expires_at,
            lambda _value: self._created_id(request.description, auth),
            min_length=MIN_TOKEN_LENGTH,
        )

    def verify(self, token: Secret) -> None:
        """``influxctl query --database D`` as ``token``; TransientError while it is not active yet.

        A token that may not read D (write-only) passes on PermissionDenied, which a server
        answers only to a token it knows (see the module docstring).
        """
        database = self.settings.verify_database
        command = [*QUERY, f"--database={database}", "--format=json", self.settings.verify_query]
        try:
            stdout = self._cli.run(command, ProfileAuth(db_token=token), unauthenticated_is_transient=True)
        except PermanentError as exc:
            if is_not_found(exc):  # the query names no token id: the database is what the server lacks
                raise InfluxctlNotFound(str(exc), hint=HINT_NO_DATABASE.format(database=database)) from None
            if not is_permission_denied(exc):
                raise
            if not self.settings.permissions.may_read(database):
                logger.info("new database token is accepted (PermissionDenied on %s: it may not read it)", database)
                return
            raise TransientError(str(exc), hint=HINT_NOT_YET_READABLE.format(database=database)) from None
        parse_json_array(stdout, QUERY_CMD)

    # -- helpers --------------------------------------------------------------------------------

    def _run(self, command: Sequence[str], auth: ProfileAuth) -> str:
        """A ``token`` command; PermissionDenied gets a hint about database tokens."""
        try:
            return self._cli.run(command, auth)
        except PermanentError as exc:
            if is_permission_denied(exc):
                raise PermanentError(str(exc), hint=HINT_MANAGE_DENIED) from None
            raise

    def _created_id(self, description: str, auth: ProfileAuth) -> str:
        """The id of the token just created, when influxctl (<= 2.10) printed no table.

        It is the one live (not revoked) token with the run's description. Database tokens have
        no value prefix to tell two apart, but the engine revokes a lost attempt's token before it
        mints again, and ``token list`` hides revoked tokens.
        """
        matches = [
            info.token_id
            for index, item in enumerate(self._list(auth, LIVE_LIST))
            if (info := token_info(index, item, LIST_CMD)).description == description and info.revoked_at is None
        ]
        if len(matches) != 1:
            raise output_error(CREATE_CMD, ERR_ID_NOT_FOUND.format(count=len(matches), description=description))
        return matches[0]


if TYPE_CHECKING:  # static conformance: mypy checks InfluxctlDatabaseIssuer against the Issuer Protocol
    _conforms: type[Issuer] = InfluxctlDatabaseIssuer
