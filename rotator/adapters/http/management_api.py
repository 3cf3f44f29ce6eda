"""Issuer ``management-api``: InfluxDB Cloud Dedicated / Clustered database tokens over the Management API v0.

Database tokens are created, listed, read and revoked over HTTPS with a *management* token
(``Authorization: Bearer``):

    Cloud Dedicated  https://console.influxdata.com/api/v0/accounts/{accountId}/clusters/{clusterId}/tokens[/{tokenId}]
    Clustered        https://<cluster-host>/api/v0/tokens[/{tokenId}]

``POST`` answers 200 with ``accessToken`` (the only time the value is shown), ``GET`` never
includes it, ``DELETE`` answers 204. A new token is verified on the cluster's data plane with
the InfluxDB v1-compatible ``GET /query?db=<verify.database>&q=<verify.query>`` and the token as
``Authorization: Bearer``; it answers 401 for "a few seconds to a few minutes" after creation,
which is a TransientError (the engine retries until ``verify_timeout``).

Where the management token comes from (read at every call, never cached):

- ``management_token = {file = ...}`` or ``{env = ...}`` (a CredentialRef), or
- ``management_token_from = {type = "vault-kv2", ...}``: the current token of another policy's
  store (any store adapter; its settings beside ``type``). So a management token rotated by an
  ``influxctl-management`` policy is used by the next database-token call (docs/issuers.md,
  "management-api", on ordering and failures of dependent policies).

Policy settings::

    [policy.issuer]
    type = "management-api"
    product = "dedicated"                                  # or "clustered"
    account_id = "11111111-1111-4111-8111-111111111111"    # dedicated only
    cluster_id = "33333333-3333-4333-8333-333333333333"    # dedicated only
    cluster_host = "https://cluster-id.a.influxdb.io"      # data plane, for verify
    # base_url = "https://console.influxdata.com/api/v0"   # default; clustered: <cluster_host>/api/v0
    permissions = [{action = "read", resource = "telemetry"}, {action = "write", resource = "telemetry"}]
    verify = {database = "telemetry"}                      # query = "SHOW MEASUREMENTS LIMIT 1"
    timeout_s = 30
    # tls_verify = true, ca_bundle = "ca.pem"              # relative to the policy file
    [policy.issuer.management_token_from]                  # or: management_token = {file = "..."}
    type = "vault-kv2"
    url = "https://vault.example:8200"
    path = "influxdb/management-token"
    auth = {method = "token", token = {file = "/run/secrets/vault-token"}}

Errors go through ``http_common.on_http_failure`` (which tells the failures apart, as for the
other HTTP issuers) and ``_error()`` (which words them). Management API: 400/403/404/409 and
401 are PermanentErrors with a hint; 408, 425, 429, every 5xx, timeouts and connection failures
are TransientErrors (a gateway's 520-524 on a create says nothing of whether the token was made:
the engine searches for it by its tag, where a PermanentError would mean "nothing was created").
Data plane (verify): 401 is a NotYetAccepted (a TransientError: not active yet; at bootstrap, a
token that will not become active); 408, 425, 429 and 5xx are transient, 400/403/404 permanent; a 200
that is not InfluxDB's query answer (no result, or a result without its ``statement_id``: a catch-all's
``{"results": []}``, an HTML page) is an IssuerOutputError.
A transient status's ``Retry-After`` becomes the error's ``retry_after``. Every request goes
through ``http_common.send``: a whole request ends within ``3 * timeout_s``, and an answer is read
up to a size limit.
Messages carry the operation, the URL (which never holds a secret: credentials travel only
in the Authorization header) and the server's ``message``, redacted; never a token or a body.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from rotator.adapters.http.common import _TOKEN_SHAPES as GENERIC_TOKEN_SHAPES
from rotator.adapters.http.common import (
    HINT_NOT_SENT,
    AnswerTooLarge,
    DeadlineExceeded,
    HttpFailure,
    bad_token_id,
    call_timeout,
    check_tls_choice,
    error_code,
    error_text,
    header_token_from,
    is_header_token,
    new_client,
    on_http_failure,
    path_segment,
    redact_detail,
    redirect_hint,
    retry_after,
    send,
    stored_token_error,
    token_value,
    url_target,
    wait_asked,
)
from rotator.adapters.transport import (
    QUERY_OR_FRAGMENT,
    http_address_problem,
    plain_http_warning,
    tls_verify_warning,
)
from rotator.config import registry
from rotator.config.adapter_settings import validate_settings
from rotator.config.timefmt import rfc3339_seconds
from rotator.core.contracts import (
    AdapterContext,
    Issuer,
    MintedToken,
    MintRequest,
    Store,
    TokenInfo,
    checked_settings,
    dedicated_target,
    read_for_reading,
)
from rotator.core.credentials import CredentialRef
from rotator.core.errors import (
    ConfigError,
    IssuerOutputError,
    NotYetAccepted,
    PermanentError,
    RotatorError,
    TransientError,
)
from rotator.core.one_line import one_line
from rotator.core.secret import Secret

__all__ = [
    "DEDICATED_BASE_URL",
    "ManagementApiIssuer",
    "ManagementApiSettings",
    "Permission",
    "StoreRef",
    "VerifySettings",
]

logger = logging.getLogger("rotator.adapters.management_api")

DEDICATED_BASE_URL = "https://console.influxdata.com/api/v0"
DEFAULT_VERIFY_QUERY = "SHOW MEASUREMENTS LIMIT 1"

_ERR_HTTP = "{where}: {operation} failed: HTTP {status}{detail}"
_ERR_UNREACHABLE = "{where}: {operation} failed: cannot reach {url} ({cause})"
_ERR_TIMEOUT = "{where}: {operation} failed: no answer from {url} within {timeout:g}s"
_ERR_DEADLINE = "{where}: {operation} failed: no complete answer from {url} within {timeout:g}s (a request's limit)"
_ERR_NOT_SENT = ("{where}: {operation}: the request to {url} was not sent: rotator was paused (or starved) for longer "
                 "than allowed between its lease check and the request")
_PROBLEM_TOO_LARGE = "the answer from {url} is longer than {limit} bytes (not read further)"
_ERR_TLS = "{where}: {operation} failed: TLS handshake with {url} failed (untrusted certificate, or not TLS)"
_ERR_OUTPUT = "{where}: {operation}: {problem}"
_HINT_TLS = "set `ca_bundle` to the CA that signed the server's certificate"
_HINT_RETRY = "rotator retries; check that the cluster is reachable from here"
_HINT_400 = (
    "the Management API refused the request: check `permissions` (actions read/write, resources a database "
    "name of 1-64 characters or '*') and the policy's lifetime (the token's expiry)"
)
_HINT_401 = "the management token from {source} is not accepted (expired or revoked?)"
_HINT_403 = (
    "the management token from {source} may not manage database tokens of this cluster; create one that may "
    "(influxctl management create, or the Admin UI)"
)
_HINT_401_STORE = (
    "the management token in {source} is not accepted (expired or revoked?): {policy} must publish a valid "
    "one there (rotate it, or bootstrap it with a new token) before this policy can run"
)
_HINT_403_STORE = (
    "the management token in {source} may not manage database tokens of this cluster: {policy} must publish "
    "one that may"
)
_HINT_404_DEDICATED = "check `account_id`, `cluster_id` and `base_url` (default {default})"
_HINT_404_CLUSTERED = (
    "check `base_url` (the cluster's /api/v0; Clustered exposes the Management API since release 20250508-1719206)"
)
_HINT_409 = "the Management API reports a conflict with an existing token; list the cluster's tokens and retry"
_HINT_OTHER = "check the issuer settings and the cluster's status"
_HINT_VERIFY_400 = "the data plane refused the verification query: check `verify.query` (InfluxQL)"
_HINT_VERIFY_403 = "the new token may not read `verify.database` {database!r}: check `permissions` and `verify`"
_HINT_VERIFY_404 = "database {database!r} (`verify.database`) does not exist on {url}"
_HINT_DEPENDENCY = (
    "this policy reads its management token from {location}, which another policy rotates: rotate or "
    "bootstrap that policy first, and check that this policy's own credentials for that store may read it"
)
_HINT_NOT_ACTIVE = "a new database token can take a few seconds to a few minutes to become active"
_HINT_NOT_INFLUXDB = (
    "check `cluster_host`: it must reach the cluster's data plane itself, not a proxy, a login page or another "
    "service; InfluxDB's v1 /query answers a JSON object whose `results` holds one result per statement, each with "
    "its `statement_id`"
)
#: transient besides every 5xx (as http_common's wording of the other HTTP issuers)
_TRANSIENT_STATUS = frozenset({408, 425, 429})
#: Token shapes masked in server text: Cloud Dedicated / Clustered ones first (a generic run stops at
#: their dots and would leave the rest of the token), then the shapes every HTTP issuer masks
#: (common's: ``apiv*_`` and any long base64/hex run), so that a token of another shape a server or a
#: proxy echoes (a management token, a v2 token) is masked here too.
_TOKEN_SHAPES = re.compile(r"M\.V1\.[A-Za-z0-9+/=_.-]{8,}|" + GENERIC_TOKEN_SHAPES.pattern)
_MAX_DETAIL = 300
#: what :meth:`ManagementApiIssuer._request` returns for an allowed 404 that is the API's own "not found"
_NOT_FOUND: Any = object()
#: Token ids are UUIDs (the spec's ``UuidV4``; any version is accepted).
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
#: Times an API writes for "unset": the zero protobuf Timestamp (epoch zero, as influxctl shows an unset
#: expiry or revocation, facts §1.5) and Go's zero time.Time. Read as a time, an unset revokedAt would
#: make a live token revoked (a failed DELETE "confirmed", the tag sweep skipping it) and an unset
#: expiresAt would make it expired since 1970.
_UNSET_TIMES = frozenset({datetime(1970, 1, 1, tzinfo=UTC), datetime(1, 1, 1, tzinfo=UTC)})
_UUID_HINT = "a UUID such as 11111111-1111-4111-8111-111111111111 (the Admin UI or `influxctl cluster list` shows it)"


# --------------------------------------------------------------------------------------------
# Settings


class Permission(BaseModel):
    """``{action = "read", resource = "telemetry"}``; ``resource = "*"`` means every database."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Literal["read", "write"]
    resource: str = Field(min_length=1, max_length=64, description="a database name or '*'")


class VerifySettings(BaseModel):
    """How a new token is tried on the data plane: ``GET /query?db=<database>&q=<query>``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    database: str = Field(min_length=1, max_length=64, description="a database the new token may read")
    query: str = Field(default=DEFAULT_VERIFY_QUERY, min_length=1, description="an InfluxQL query")


class StoreRef(BaseModel):
    """Another store to read the management token from: ``{type = "vault-kv2", <its settings>}``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str = Field(min_length=1, description="a store adapter, e.g. vault-kv2")
    _settings: Any = PrivateAttr()

    @model_validator(mode="after")
    def _store_settings(self) -> StoreRef:
        try:
            cls = registry.load("store", self.type)
        except ConfigError as exc:
            raise ValueError(f"{exc} ({exc.hint})" if exc.hint else str(exc)) from None
        try:
            self._settings = validate_settings(cls.settings_model, dict(self.model_extra or {}))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<table>'}: {err['msg']}"
                for err in exc.errors(include_url=False, include_input=False)
            )
            raise ValueError(f"settings of store {self.type!r} are invalid: {problems}") from None
        return self

    def build(self, ctx: AdapterContext) -> Store:
        cls = registry.load("store", self.type)
        return cls.from_config(self._settings, ctx)


def _url(value: str, what: str) -> str:
    if not value.isprintable() or " " in value:  # urlsplit drops a newline: httpx would refuse it later
        raise ValueError(f"{what} must not contain spaces or control characters (a line break copied with it?)")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an https:// address, e.g. https://cluster-id.a.influxdb.io")
    if parts.username or parts.password:
        raise ValueError(f"{what} must not carry credentials")
    if "?" in value or "#" in value:  # not parts.query: an empty one is "" and reads as none
        raise ValueError(f"{what} {QUERY_OR_FRAGMENT}")
    problem = http_address_problem(value)
    if problem:
        raise ValueError(f"{what} {problem}")
    return value.rstrip("/")


class ManagementApiSettings(BaseModel):
    """Settings of the ``management-api`` issuer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    product: Literal["dedicated", "clustered"]
    base_url: str | None = Field(
        default=None,
        description=f"Management API base; default {DEDICATED_BASE_URL} (dedicated), <cluster_host>/api/v0 (clustered)",
    )
    account_id: str | None = Field(default=None, description="dedicated only: the account's UUID")
    cluster_id: str | None = Field(default=None, description="dedicated only: the cluster's UUID")
    cluster_host: str = Field(description="the cluster's data plane, e.g. https://cluster-id.a.influxdb.io")
    permissions: list[Permission] = Field(min_length=1, description="what the database tokens may do")
    verify: VerifySettings
    management_token: CredentialRef | None = Field(default=None, description="{file = ...} or {env = ...}")
    management_token_from: StoreRef | None = Field(
        default=None, description="a store holding the management token (another policy's), {type = ..., ...}"
    )
    tls_verify: bool = True
    ca_bundle: Path | None = Field(default=None, description="PEM CA bundle; relative to the policy file")
    timeout_s: float = Field(default=30, gt=0, le=600, description="per HTTP request")

    @field_validator("management_token", mode="before")
    @classmethod
    def _no_inline_token(cls, value: object) -> object:
        if isinstance(value, str):
            raise ValueError(
                "inline secrets are refused: a policy file is not a safe place for a credential; write "
                'management_token = { file = "/path/to/file" } or { env = "VAR" }'
            )
        return value

    @field_validator("cluster_host")
    @classmethod
    def _cluster_host(cls, value: str) -> str:
        if "://" not in value:
            value = "https://" + value
        url = _url(value, "cluster_host")
        if urlsplit(url).path not in ("", "/"):
            raise ValueError(
                "cluster_host is the cluster's address without a path, e.g. https://cluster-id.a.influxdb.io"
            )
        return url

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        return _url(value, "base_url") if value is not None else None

    @field_validator("account_id", "cluster_id")
    @classmethod
    def _uuid(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError(f"must be {_UUID_HINT}") from None

    @model_validator(mode="after")
    def _consistent(self) -> ManagementApiSettings:
        if self.product == "dedicated":
            missing = [key for key in ("account_id", "cluster_id") if getattr(self, key) is None]
            if missing:
                raise ValueError(f"product 'dedicated' needs {' and '.join(missing)}: {_UUID_HINT}")
        elif self.account_id is not None or self.cluster_id is not None:
            raise ValueError("account_id and cluster_id are for product 'dedicated'; Clustered paths have neither")
        if (self.management_token is None) == (self.management_token_from is None):
            raise ValueError(
                "give exactly one of `management_token` ({file = ...} or {env = ...}) or `management_token_from` "
                "(a store, e.g. {type = 'vault-kv2', ...})"
            )
        database = self.verify.database
        if not any(p.action == "read" and p.resource in (database, "*") for p in self.permissions):
            raise ValueError(
                f"verify.database {database!r} is not readable with `permissions`: add "
                f'{{action = "read", resource = "{database}"}}, or verify with a database the token may read'
            )
        check_tls_choice(self.tls_verify, self.ca_bundle)
        return self

    def transport_warnings(self) -> list[str]:
        """Settings that expose the tokens on the wire, the management token's store included."""
        warnings = [
            *plain_http_warning(self.management_base, "base_url"),
            *plain_http_warning(self.cluster_host, "cluster_host"),
            *tls_verify_warning(self.tls_verify, self.management_base),
            # verify sends the new token to the cluster's data plane, which may be another host
            *(tls_verify_warning(self.tls_verify, self.cluster_host)
              if _origin(self.cluster_host) != _origin(self.management_base) else []),
        ]
        source = self.management_token_from
        check = getattr(source._settings if source is not None else None, "transport_warnings", None)
        if callable(check):
            warnings += [f"management_token_from: {warning}" for warning in check()]
        return warnings

    @property
    def management_base(self) -> str:
        if self.base_url is not None:
            return self.base_url
        return DEDICATED_BASE_URL if self.product == "dedicated" else f"{self.cluster_host}/api/v0"


# --------------------------------------------------------------------------------------------
# The issuer


@dataclass(frozen=True)
class _Op:
    """One kind of call, for messages and error mapping."""

    name: str
    plane: Literal["management", "data"]
    url: str


class _ManagementToken:
    """Where the management token comes from; read at every call."""

    def __init__(self, settings: ManagementApiSettings, ctx: AdapterContext, store: Store | None) -> None:
        self._ref = settings.management_token
        self._base_dir = ctx.base_dir
        self._clock = ctx.clock
        self._store = store
        if self._ref is None and store is None:
            assert settings.management_token_from is not None
            self._store = settings.management_token_from.build(ctx)

    @property
    def source(self) -> str:
        if self._store is not None:
            return self._store.location
        assert self._ref is not None
        return self._ref.describe()

    def read(self) -> Secret:
        if self._store is None:
            assert self._ref is not None
            return header_token_from(self._ref, self._base_dir, "management token", "management token")
        location = self._store.location
        hint = _HINT_DEPENDENCY.format(location=location)
        try:  # only read: AWSCURRENT stays valid while another rotation of that secret is under way
            state = read_for_reading(self._store, logger)
        except RotatorError as exc:
            cause = str(exc).removeprefix(f"{location}: ")  # store messages start with their location
            message = f"cannot read the management token from {location}: {cause}"
            if isinstance(exc, TransientError):
                raise TransientError(message, hint=exc.hint or hint) from None
            raise PermanentError(message, hint=f"{exc.hint}; {hint}" if exc.hint else hint) from None
        record = state.record
        if record is None:
            raise PermanentError(f"{location} holds no management token", hint=hint)
        if record.expires_at is not None and record.expires_at <= self._clock.now():
            raise PermanentError(
                f"the management token in {location} (token {record.token_id}, policy {record.policy!r}) "
                f"expired at {record.expires_at.isoformat()}",
                hint=hint,
            )
        if not is_header_token(record.value.reveal()):  # (the payload's id and policy: text of the store's)
            where = f"the management token in {location} (token {one_line(record.token_id)}, policy {record.policy!r})"
            raise stored_token_error(where, one_line(record.policy) or "POLICY")
        return record.value

    def refused_hint(self, status: int) -> str:
        """The hint for a 401/403 of the Management API: which token, and who publishes it."""
        if self._store is None:
            return (_HINT_401 if status == 401 else _HINT_403).format(source=self.source)
        try:
            record = read_for_reading(self._store, logger).record
        except RotatorError:
            record = None
        source, policy = self.source, "the policy"
        if record is not None:
            source += f" (token {record.token_id}, published by policy {record.policy!r})"
            policy = f"policy {record.policy!r}"
        return (_HINT_401_STORE if status == 401 else _HINT_403_STORE).format(source=source, policy=policy)


class ManagementApiIssuer:
    """Mints, verifies, lists and revokes database tokens with the Management API v0."""

    kind: ClassVar[str] = "management-api"
    settings_model: ClassVar[type[BaseModel]] = ManagementApiSettings

    def __init__(
        self,
        settings: ManagementApiSettings,
        ctx: AdapterContext,
        *,
        client: httpx.Client | None = None,
        token_store: Store | None = None,
    ) -> None:
        self.settings = settings
        self._client = client
        self._token = _ManagementToken(settings, ctx, token_store)
        self._where = f"management-api ({settings.product})"
        base = settings.management_base
        if settings.product == "dedicated":
            base += f"/accounts/{settings.account_id}/clusters/{settings.cluster_id}"
        self._tokens_url = f"{base}/tokens"

    @classmethod
    def from_config(
        cls,
        settings: BaseModel,
        ctx: AdapterContext,
        *,
        client: httpx.Client | None = None,
        token_store: Store | None = None,
    ) -> ManagementApiIssuer:
        """Contacts nothing: the HTTP client is built on first use (``client`` replaces it, for tests)."""
        settings = checked_settings(cls, settings, ManagementApiSettings)
        if settings.ca_bundle is not None and not settings.ca_bundle.is_absolute():
            settings = settings.model_copy(update={"ca_bundle": ctx.base_dir / settings.ca_bundle})
        return cls(settings, ctx, client=client, token_store=token_store)

    def target(self) -> str:
        """Where the tokens live (contracts.Issuer): the place that lists and revokes them.

        Clustered: the host and port the management calls go to, ``clustered <host>:<port>``: ``base_url``'s
        when it is set, else ``cluster_host``'s (the default ``base_url`` is ``<cluster_host>/api/v0``), so a
        ``base_url`` moved to another cluster is a move even with ``cluster_host`` left as it was (a token of
        the first cluster is not listed at the second, and "not listed" would read as "revoked"). Without
        ``base_url`` this is what an ``influxctl`` issuer of the same cluster names.

        Dedicated: the account and cluster ids, ``dedicated <account_id>/<cluster_id>``, as influxctl names
        them: the calls go to the account API (``base_url``, one for every account and cluster), and the
        ids in its paths name the place."""
        settings = self.settings
        if settings.product == "dedicated":
            return dedicated_target(settings.account_id, settings.cluster_id)
        return f"clustered {url_target(settings.management_base)}"

    @property
    def call_timeout_seconds(self) -> float:
        """The longest one issuer call can take (``revoke``: DELETE, GET and, after a 404, the listing that
        confirms it; each after reading the management token, which from a store is up to three requests of
        that store's ``timeout_s``)."""
        store = self.settings.management_token_from
        read_token = 0.0 if store is None else call_timeout(3, float(getattr(store._settings, "timeout_s", 10.0)))
        return 3 * (call_timeout(1, self.settings.timeout_s) + read_token)

    # -- the Issuer protocol -------------------------------------------------------------------

    def mint(self, request: MintRequest, credential: Secret | None) -> MintedToken:
        """``POST .../tokens`` with the policy's permissions and ``request.expires_at``.

        ``credential`` (the current database token) is not used: the management token authenticates.
        """
        op = _Op("create a database token", "management", self._tokens_url)
        body = {
            "description": request.description,
            "permissions": [{"action": p.action, "resource": p.resource} for p in self.settings.permissions],
            "expiresAt": rfc3339_seconds(request.expires_at),
        }
        data = self._management(op, "POST", self._tokens_url, body=body)
        if not isinstance(data, Mapping):
            raise self._output_error(op, f"the answer is a JSON {type(data).__name__}, expected an object")
        token_id = data.get("id")
        if not isinstance(token_id, str) or not token_id:
            raise self._output_error(op, "the answer has no token `id` (a token may have been created)")
        if not _UUID.fullmatch(token_id):  # never logged nor recorded: revoke refuses it, and it may be a secret
            raise self._output_error(op, "the answer's token `id` is not a UUID (a token may have been created)")
        secret = token_value(data.get("accessToken"))
        if secret is None:
            raise self._output_error(op, f"token {token_id} was created, but the answer has no usable `accessToken`")
        # Only an expiry the answer confirms is returned: a server that ignored `expiresAt` (the
        # Dedicated how-to also sends `expirationType`, which the spec does not have) made a token
        # that never expires, and the safety net "it expires by itself" is gone.
        # The zero time (an unset expiry, as influxctl shows it) is no expiry either (_time).
        expires = self._time(op, data.get("expiresAt"), "expiresAt")
        if expires is None:
            logger.warning(
                "database token %s was created with expiresAt %s, but the answer has no `expiresAt` (or the zero "
                "time, meaning unset): it does not expire by itself; rotator still revokes it after its grace",
                token_id, body["expiresAt"])
        else:
            try:  # only to judge expiresAt: an unreadable createdAt must not fail a mint that made a token
                created = self._time(op, data.get("createdAt"), "createdAt")
            except IssuerOutputError:
                created = None
            if _implausible(expires, created, equal_too=True):
                # Not an expiry the API set (it refuses one in the past): the token may never expire, and
                # recorded as expired it would count as gone by itself and never be revoked.
                logger.warning(
                    "database token %s was created with expiresAt %s, but the answer's `expiresAt` %s is not after "
                    "its `createdAt` %s: read as no expiry (it may not expire by itself); rotator still revokes it "
                    "after its grace", token_id, body["expiresAt"], _shown(expires), _shown(created))
                expires = None
        logger.info("created database token %s", token_id)
        return MintedToken(value=secret, token_id=token_id, expires_at=expires)

    def verify(self, token: Secret) -> None:
        """``GET <cluster_host>/query`` with the new token; TransientError while it answers 401. A 200 passes only
        as InfluxDB's query answer: a non-empty ``results`` list, each result with its ``statement_id``."""
        url = f"{self.settings.cluster_host}/query"
        op = _Op(f"query database {self.settings.verify.database!r} with the new token", "data", url)
        params = {"db": self.settings.verify.database, "q": self.settings.verify.query}
        data = self._request(op, "GET", url, token, params=params)
        results = data.get("results") if isinstance(data, Mapping) else None
        # InfluxDB answers each statement of the query with a result naming its statement_id (a failed one too):
        # anything less (a catch-all server's `{"results": []}`) proves nothing about the token, and a verify
        # passed on it would publish a token the cluster may never have accepted.
        if not isinstance(results, list):
            raise self._output_error(op, "the answer is not InfluxDB's: it has no `results` list")
        if not results:
            raise self._output_error(op, "the answer is not InfluxDB's: its `results` list is empty, where InfluxDB "
                                         "answers every statement with a result")
        for index, result in enumerate(results):
            statement = result.get("statement_id") if isinstance(result, Mapping) else None
            if not isinstance(statement, int) or isinstance(statement, bool):
                raise self._output_error(op, f"the answer is not InfluxDB's: result {index} has no integer "
                                             "`statement_id`")
        errors = [r.get("error") for r in results if isinstance(r, Mapping) and r.get("error")]
        if errors:
            raise PermanentError(
                f"{self._where}: {op.name}: the query failed: {_clean(str(errors[0]))}",
                hint="check `verify.query` and `verify.database`",
            )

    def revoke(self, token_id: str, credential: Secret | None) -> None:
        """``DELETE .../tokens/{id}``, confirmed by ``GET`` (a ``revokedAt`` that is a time, not the zero time,
        and not before ``createdAt``; or a 404 that the listing confirms, see :meth:`_confirm_gone`). Unknown
        ids count as revoked."""
        if not isinstance(token_id, str) or not _UUID.fullmatch(token_id):
            raise bad_token_id(token_id, self._where, "a database token id (a UUID, as the Management API writes it)")
        url = f"{self._tokens_url}/{path_segment(token_id)}"
        delete = _Op(f"revoke database token {token_id}", "management", url)
        failure: RotatorError | None = None
        deleted: Any = None
        try:
            deleted = self._management(delete, "DELETE", url, allow=(404,))
        except RotatorError as exc:
            failure = exc
        get = _Op(f"confirm the revocation of database token {token_id}", "management", url)
        try:
            data = self._management(get, "GET", url, allow=(404,))
        except RotatorError:
            if failure is not None:
                raise failure from None
            raise
        if data is _NOT_FOUND:
            self._confirm_gone(token_id, deleted, failure)
            return
        if data is None:  # a 2xx without a body (a gateway's?) proves neither "gone" nor "revoked"
            if failure is not None:
                raise failure
            raise self._output_error(get, "the answer has no body, expected the token (or 404)")
        info = self._token_info(get, data, 0)
        if info.token_id.lower() != token_id.lower():  # (UUIDs: any case) another token's revokedAt proves nothing
            if failure is not None:
                raise failure
            raise self._output_error(get, f"the answer is not database token {token_id}")
        if info.revoked_at is not None:
            if failure is not None:
                logger.info("database token %s is revoked although the DELETE failed", token_id)
            return
        # `revokedAt` present but not read as a revocation (_token_info): the zero time (unset) or one
        # before the token's creation. Either way the token may still work.
        shown = data.get("revokedAt") if isinstance(data.get("revokedAt"), str) else None
        if failure is not None:
            if shown is not None:
                logger.info("database token %s: the DELETE failed and GET shows revokedAt %s, which is no "
                            "revocation (unset, or before the token's creation)", token_id, one_line(shown))
            raise failure
        if shown is not None and deleted is not _NOT_FOUND:
            raise TransientError(
                f"{self._where}: database token {token_id} is not shown revoked after a successful DELETE (HTTP 2xx): "
                f"GET answers revokedAt {one_line(shown)!r}, which is no revocation (the zero time, meaning unset, "
                "or a time before the token's createdAt)",
                hint="rotator tries again on the next run; if this persists, check that `base_url` reaches the "
                "Management API itself (not a proxy that rewrites its answers) and revoke the token by hand",
            )
        if deleted is _NOT_FOUND:
            # The API said "no such token" and then lists it active: one of its answers is wrong, and
            # the token may still work; retried like any revocation not confirmed yet.
            raise TransientError(
                f"{self._where}: database token {token_id} is not revoked: the server contradicts itself, DELETE "
                "answered 404 (not found) but GET still shows the token, not revoked",
                hint="rotator tries again on the next run; if this persists, check that `base_url` reaches a "
                "single cluster's Management API and revoke the token by hand",
            )
        raise TransientError(
            f"{self._where}: database token {token_id} is not revoked yet after a successful DELETE (HTTP 2xx)"
        )

    def _confirm_gone(self, token_id: str, deleted: Any, failure: RotatorError | None) -> None:
        """After GET answered the API's own 404 for ``token_id``: gone only if the listing agrees (as
        influxdb3's revoke confirms a DELETE). A gateway that routes ``/tokens`` but not ``/tokens/{id}``
        answers with a JSON ``{"code": 404, ...}`` of its own, the same shape as the API's: taken for
        "gone", the revocation would be recorded done while the token still works (an orphan)."""
        listing = _Op(f"list database tokens to confirm that token {token_id} is gone", "management",
                      self._tokens_url)
        try:
            listed = [info for info in self._list(listing) if info.token_id.lower() == token_id.lower()]
        except RotatorError:
            if failure is not None:
                raise failure from None
            raise
        if not listed:
            logger.info("database token %s is gone (not found, and not listed)", token_id)
            return
        if all(info.revoked_at is not None for info in listed):
            logger.info("database token %s is revoked (not found, and listed with revokedAt)", token_id)
            return
        which = "DELETE and GET" if deleted is _NOT_FOUND else "GET"
        if failure is not None:  # the DELETE's own failure says more about what to fix
            logger.info("database token %s: %s answered 404 (not found) but the listing shows it active",
                        token_id, which)
            raise failure
        raise TransientError(
            f"{self._where}: database token {token_id} is not revoked: the server contradicts itself, {which} "
            "answered 404 (not found) for the token, but the listing of the cluster's tokens shows it active",
            hint="check `base_url`: it must reach the Management API itself, not a gateway that routes "
            "/tokens but not /tokens/{id} (whose own JSON 404 reads as the API's); rotator tries again on "
            "the next run; if this persists, revoke the token by hand",
        )

    def list_tokens(self, credential: Secret | None) -> list[TokenInfo]:
        """``GET .../tokens``: every database token of the cluster (revoked ones too, where listed)."""
        return self._list(_Op("list database tokens", "management", self._tokens_url))

    def _list(self, op: _Op) -> list[TokenInfo]:
        data = self._management(op, "GET", self._tokens_url)
        if not isinstance(data, list):
            raise self._output_error(op, f"the answer is a JSON {type(data).__name__}, expected an array")
        return [self._token_info(op, item, index) for index, item in enumerate(data)]

    # -- HTTP ----------------------------------------------------------------------------------

    def _management(self, op: _Op, method: str, url: str, *, body: Any = None, allow: tuple[int, ...] = ()) -> Any:
        return self._request(op, method, url, self._token.read(), body=body, allow=allow)

    def _request(
        self,
        op: _Op,
        method: str,
        url: str,
        token: Secret,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        allow: tuple[int, ...] = (),
    ) -> Any:
        """One call; returns the JSON answer, None for an empty body, :data:`_NOT_FOUND` for an allowed 404
        (the API's own `not found`)."""
        headers = {"Authorization": f"Bearer {token.reveal()}", "Accept": "application/json"}
        started = time.monotonic()  # the request's duration for the log line, not a time of day
        outcome = "no answer"
        try:
            with on_http_failure(partial(self._error, op)):
                response = send(self._http(), method, url, timeout_s=self.settings.timeout_s, headers=headers,
                                json=body, params=params)
                outcome = f"HTTP {response.status_code}"
                if response.status_code in allow:
                    if response.status_code == 404 and error_code(response) != 404:
                        # A proxy's or a router's 404 says nothing about the token: not "gone".
                        raise TransientError(
                            f"{self._where}: {op.name}: HTTP 404 without the Management API's `not found` answer "
                            "(a proxy or another service?)",
                            hint="check `base_url` / `cluster_host` (they must reach the API itself); rotator tries "
                            "again on the next run",
                        )
                    return _NOT_FOUND
                response.raise_for_status()
        finally:
            logger.info("%s: %s %s -> %s in %.2fs", self._where, method, op.url, outcome, time.monotonic() - started)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:  # JSONDecodeError, UnicodeDecodeError, and an integer of more than 4300 digits
            raise self._output_error(op, f"the answer (HTTP {response.status_code}) is not JSON") from None
        except RecursionError:
            raise self._output_error(
                op, f"the answer (HTTP {response.status_code}) is JSON nested too deeply"
            ) from None

    def _http(self) -> httpx.Client:
        if self._client is None:
            bundle = self.settings.ca_bundle
            if bundle is not None and not bundle.is_file():
                raise ConfigError(f"{self._where}: ca_bundle {bundle} is not a readable file", hint=_HINT_TLS)
            # Absolute URLs (two planes); ca_bundle was made absolute by from_config.
            self._client = new_client(
                tls_verify=self.settings.tls_verify,
                ca_bundle=bundle,
                timeout_s=self.settings.timeout_s,
                base_dir=Path("."),
            )
        return self._client

    def _error(self, op: _Op, failure: HttpFailure) -> RotatorError:
        """The rotator error for a failed call (see :func:`rotator.adapters.http.common.on_http_failure`)."""
        if failure.response is not None:
            return self._status_error(op, failure.response)
        url = _origin(op.url)
        if failure.kind == "timeout":
            exc = failure.exc
            template, timeout = ((_ERR_DEADLINE, exc.deadline_s) if isinstance(exc, DeadlineExceeded)
                                 else (_ERR_TIMEOUT, self.settings.timeout_s))
            message = template.format(where=self._where, operation=op.name, url=url, timeout=timeout)
            return TransientError(message, hint=_HINT_RETRY)
        if failure.kind == "not_sent":  # tried again after a lease check
            message = _ERR_NOT_SENT.format(where=self._where, operation=op.name, url=url)
            return TransientError(message, hint=HINT_NOT_SENT)
        if failure.kind == "too_large" and isinstance(failure.exc, AnswerTooLarge):
            return self._output_error(op, _PROBLEM_TOO_LARGE.format(url=url, limit=failure.exc.limit))
        if failure.kind == "tls":
            return PermanentError(_ERR_TLS.format(where=self._where, operation=op.name, url=url), hint=_HINT_TLS)
        if failure.kind == "unreachable":
            cause = type(failure.exc).__name__
            message = _ERR_UNREACHABLE.format(where=self._where, operation=op.name, url=url, cause=cause)
            return TransientError(message, hint=_HINT_RETRY)
        # A URL httpx cannot use, or an answer it cannot decode: will not get better by itself.
        return PermanentError(f"{self._where}: {op.name} failed: {type(failure.exc).__name__}", hint=_HINT_OTHER)

    def _status_error(self, op: _Op, response: httpx.Response) -> RotatorError:
        status = response.status_code
        detail = _server_message(response)
        message = _ERR_HTTP.format(
            where=self._where, operation=op.name, status=status, detail=f" ({detail})" if detail else ""
        )
        if 300 <= status < 400:
            key = "cluster_host" if op.plane == "data" else "base_url"
            return PermanentError(message, hint=redirect_hint(response, key))
        transient = status in _TRANSIENT_STATUS or status >= 500
        asked = retry_after(response) if transient else None
        if op.plane == "data":
            database = self.settings.verify.database
            if status == 401:
                # As the other HTTP issuers: "not accepted (yet)", retried after a mint; at bootstrap, where
                # a person's token will not become active, the engine stops at once.
                return NotYetAccepted(message, hint=_HINT_NOT_ACTIVE)
            if transient:
                return TransientError(message + wait_asked(asked), hint=_HINT_RETRY, retry_after=asked)
            hints = {
                400: _HINT_VERIFY_400,
                403: _HINT_VERIFY_403.format(database=database),
                404: _HINT_VERIFY_404.format(database=database, url=self.settings.cluster_host),
            }
            return PermanentError(message, hint=hints.get(status, _HINT_OTHER))
        if transient:
            return TransientError(message + wait_asked(asked), hint=_HINT_RETRY, retry_after=asked)
        if status in (401, 403):
            return PermanentError(message, hint=self._token.refused_hint(status))
        if status == 404:
            hint = (
                _HINT_404_DEDICATED.format(default=DEDICATED_BASE_URL)
                if self.settings.product == "dedicated"
                else _HINT_404_CLUSTERED
            )
            return PermanentError(message, hint=hint)
        hints = {400: _HINT_400, 409: _HINT_409}
        return PermanentError(message, hint=hints.get(status, _HINT_OTHER))

    # -- answers -------------------------------------------------------------------------------

    def _output_error(self, op: _Op, problem: str) -> IssuerOutputError:
        # verify's answers come from the data plane (InfluxDB's query API, at `cluster_host`): the Management
        # API's hint would name the wrong document and setting
        hint = (_HINT_NOT_INFLUXDB if op.plane == "data"
                else "check `base_url` / `cluster_host`: the answer is not what the Management API v0 documents")
        return IssuerOutputError(_ERR_OUTPUT.format(where=self._where, operation=op.name, problem=problem), hint=hint)

    def _token_info(self, op: _Op, item: object, index: int) -> TokenInfo:
        """A listed (or got) token; its times as :meth:`_time` reads them, and read as unset where they
        contradict its ``createdAt`` (see :func:`_implausible`)."""
        if not isinstance(item, Mapping):
            raise self._output_error(op, f"item {index} is a JSON {type(item).__name__}, expected an object")
        token_id = item.get("id")
        if not isinstance(token_id, str) or not token_id:
            raise self._output_error(op, f"item {index} has no string `id`")
        description = item.get("description", "")
        if not isinstance(description, str):
            raise self._output_error(op, f"token {token_id} has a `description` that is not a string")
        created = self._time(op, item.get("createdAt"), f"token {token_id} `createdAt`")
        expires = self._time(op, item.get("expiresAt"), f"token {token_id} `expiresAt`")
        revoked = self._time(op, item.get("revokedAt"), f"token {token_id} `revokedAt`")
        if _implausible(revoked, created, equal_too=False):
            # A revocation before the token existed (a proxy's or a broken server's value) proves nothing:
            # read as revoked, a live token would never be revoked (an orphan); read as live, it is revoked
            # again, which is harmless.
            logger.warning("%s: %s: token %s shows revokedAt %s, before its createdAt %s: read as not revoked",
                           self._where, op.name, token_id, _shown(revoked), _shown(created))
            revoked = None
        if _implausible(expires, created, equal_too=True):
            # As mint reads it: an expiry at or before the creation is no expiry the API can have set
            # (it refuses one in the past); read as a time, the token would list expired and never be revoked.
            logger.warning("%s: %s: token %s shows expiresAt %s, not after its createdAt %s: read as no expiry",
                           self._where, op.name, token_id, _shown(expires), _shown(created))
            expires = None
        return TokenInfo(token_id=token_id, description=description, created_at=created, expires_at=expires,
                         revoked_at=revoked)

    def _time(self, op: _Op, value: object, where: str) -> datetime | None:
        """An RFC 3339 time as UTC; None for none and for the zero times that mean "unset" (:data:`_UNSET_TIMES`)."""
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._output_error(op, f"{where} is not an RFC 3339 string")
        # RFC 3339 (5.6) allows a lower-case "z" (and "t", which fromisoformat reads already).
        text = value[:-1] + "Z" if value.endswith("z") else value
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise self._output_error(op, f"{where} is not an RFC 3339 time") from None
        if parsed.tzinfo is None:
            raise self._output_error(op, f"{where} has no time zone")
        try:  # 9999-12-31T23:30:00-01:00 is a valid text whose UTC time is past the year 9999
            parsed = parsed.astimezone(UTC)
        except OverflowError:
            raise self._output_error(op, f"{where} is out of range") from None
        return None if parsed in _UNSET_TIMES else parsed


if TYPE_CHECKING:  # static conformance: mypy checks ManagementApiIssuer against the Issuer Protocol
    _conforms: type[Issuer] = ManagementApiIssuer


def _implausible(moment: datetime | None, created: datetime | None, *, equal_too: bool) -> bool:
    """Whether ``moment`` (a token's revocation or expiry) is before (or, ``equal_too``, at) its creation."""
    if moment is None or created is None:
        return False
    return moment <= created if equal_too else moment < created


def _shown(moment: datetime | None) -> str:
    return moment.isoformat() if moment is not None else "(none)"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _clean(text: str) -> str:
    """Server text on one line, redacted (Cloud Dedicated / Clustered token shapes too) and cut."""
    return redact_detail(" ".join(text.split()), shapes=_TOKEN_SHAPES, limit=_MAX_DETAIL)


def _server_message(response: httpx.Response) -> str:
    """The error's own words: ``message`` of ``{code, message}`` (or ``error`` of ``{error, data}``); JSON only."""
    return _clean(error_text(response, ("message", "error"), plain_text=False))
