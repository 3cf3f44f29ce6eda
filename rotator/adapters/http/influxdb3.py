"""Issuer ``influxdb3``: InfluxDB 3 Core / Enterprise admin and resource tokens over HTTP.

Three kinds of token (setting ``kind``):

``named_admin`` (default)
    ``POST /api/v3/configure/token/named_admin {token_name, expiry_secs}`` -> 201. Each rotation
    uses a new name, ``<token_name_prefix>-<run id>``, so the name carries the run tag: InfluxDB 3
    tokens have no description, and the engine finds a token whose value was lost by its tag.
``resource`` (Enterprise)
    ``POST /api/v3/enterprise/configure/token {token_name, permissions, expiry_secs}`` -> 201,
    named the same way. Needs an admin token as ``credential`` (a resource token cannot mint).
``operator``
    ``POST /api/v3/configure/token/admin/regenerate`` -> 201: a new value for ``_admin``. The
    server revokes the previous value **at once**, so there is no grace period: consumers of the
    old value fail until they read the new one. Allowed only with ``allow_no_grace = true``.

The token id rotator journals and publishes is the token **name** (DELETE takes a name; names
are unique on the server, and rotator's carry the run id, so none is reused). The operator
token keeps its name and numeric id across regenerations, so its generations are told apart by
the server's hash of the value: ``_admin@<first 9 hex digits of the SHA-512>``. ``system.tokens``
shows no more of the hash than that (``influxdb3_server/src/system_tables/tokens.rs`` writes
``&hex::encode(&token.hash)[..9]``, and no ``hash`` column at all on a server started without
auth); the 201 answer of a regeneration holds the whole hash, of which the id keeps as much.
Not secret: ``influxdb3 show tokens`` prints it. rotator before this format recorded 16 digits
(``_admin@<16 hex>``); such ids from a journal or a store are matched by their first 9 digits
(:meth:`InfluxDB3Issuer.token_info`, :meth:`InfluxDB3Issuer.revoke`).

Listing is SQL: ``SELECT * FROM system.tokens`` on database ``_internal`` through
``POST /api/v3/query_sql`` with ``format = "jsonl"`` (the spec's JSON schema for ``format=json``
does not describe what servers send; JSON lines is a plain string in the spec and one object per
row on the server). A name ``<prefix>-<run id>`` is reported with the description
``rotator:<policy>:<run id>``, the tag the engine searches for. Deleted tokens disappear; there
is no revoked state.

Every request goes through :func:`rotator.adapters.http.common.send`: a whole request ends
within ``3 * timeout_s`` (``call_timeout_seconds`` counts on it).

Verification uses the new token (see :meth:`InfluxDB3Issuer.verify`): the ``system.tokens``
query for admin tokens (its answer must list the new token's own row), ``SELECT 1`` on its
database for a resource token (its answer must be that one row; a 403 counts only where a
made-up token gets 401); 401 is retried until ``verify_timeout``.

Policy settings::

    [policy.issuer]
    type = "influxdb3"
    base_url = "https://influxdb3.example.com:8181"
    kind = "named_admin"                  # or "resource" (Enterprise) or "operator"
    credential = "self"                   # or { file = "/run/secrets/influxdb3-admin" } / { env = "VAR" }
    token_name_prefix = "rotator-app"     # default "rotator-<policy>"
    former_token_name_prefixes = []       # prefixes used before, e.g. ["rotator-<policy>"]
    timeout_s = 10
    ca_bundle = "ca.pem"                  # PEM CA bundle (relative to the policy file); tls_verify = true
    # kind = "resource":
    # permissions = [{ resource_type = "db", resource_names = ["sensors"], actions = ["read", "write"] }]
    # kind = "operator":
    # allow_no_grace = true
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import secrets
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from rotator.adapters.http.common import (
    CredentialSetting,
    HttpIssuer,
    HttpSettings,
    auth_header,
    bad_token_id,
    expect,
    is_self,
    json_body,
    map_http_errors,
    parse_time,
    redact_detail,
    token_value,
)
from rotator.core.child_process import reading
from rotator.core.contracts import Issuer, MintedToken, MintRequest, TokenInfo
from rotator.core.errors import IssuerOutputError, NeedsAttention, PermanentError, TransientError
from rotator.core.secret import Secret

__all__ = ["InfluxDB3Issuer", "InfluxDB3Settings", "ResourcePermission", "operator_token_id"]

logger = logging.getLogger("rotator.adapters.influxdb3")

NAMED_ADMIN = "/api/v3/configure/token/named_admin"
RESOURCE = "/api/v3/enterprise/configure/token"
REGENERATE = "/api/v3/configure/token/admin/regenerate"
DELETE = "/api/v3/configure/token"
QUERY = "/api/v3/query_sql"
#: The endpoints a token with only ``system`` permissions may read, in the order verify tries them.
SYSTEM_ENDPOINTS = ("health", "ping", "metrics")
LIST_SQL = "SELECT * FROM system.tokens"
VERIFY_SQL = "SELECT 1"
#: Requests of ``verify`` with ``SELECT 1``: the new token's, then (on a 403) a made-up token's.
VERIFY_QUERY_REQUESTS = 2
OPERATOR = "_admin"
#: Hex digits of the SHA-512 an operator token id keeps: all that system.tokens shows.
OPERATOR_HASH_DIGITS = 9
#: ``_admin@<9 hex digits>``, or ``_admin@<16 hex digits>`` as rotator wrote them before (matched by their first 9)
_OPERATOR_ID = re.compile(r"^_admin@(?P<hash>[0-9a-f]{9}(?:[0-9a-f]{7})?)\Z")
#: the ``hash`` of a system.tokens row or a 201 answer: hex, at least the digits an id keeps
_HASH = re.compile(r"[0-9a-fA-F]{9,}")  # OPERATOR_HASH_DIGITS or more
#: The Accept header of a query. InfluxDB 3 reads it before the body (influxdb3_server/src/http.rs,
#: ``extract_query_request``: ``QueryFormat::try_from_headers``) and knows only parquet, text/csv,
#: text/plain, application/json and ``*/*`` (influxdb3_types/src/http.rs): anything else, the spec's
#: ``application/jsonl`` included, answers HTTP 500 "invalid mime type (...)" without running the
#: query. The body's ``format`` ("jsonl") takes precedence over the header's format.
QUERY_ACCEPT = "application/json"
_NAME_PREFIX = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
#: a run id in a token name: the engine's (letters and digits) or a UUID (the AWS Lambda function's
#: ClientRequestToken); nothing else with a hyphen, so ``<prefix>-x-y`` is no run of ``<prefix>``
_RUN_ID = re.compile(r"^(?:[A-Za-z0-9]+|[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12})\Z")

ERR_NO_VALUE = "{what}: token {name} was created, but the answer has no `token` string"
ERR_OTHER_NAME = (
    "{what}: the 201 answer names the created token {got} in `{key}`, not {name}: it is not the token "
    "asked for, or not InfluxDB 3's answer"
)
HINT_OTHER_NAME = (
    "rotator deletes a token named {name} by its run tag, if one was created; a token under another name is not "
    "found that way: look for it with `influxdb3 show tokens` and delete it (`influxdb3 delete token --token-name "
    "NAME`). Check that base_url reaches the InfluxDB 3 server itself, not a proxy"
)
ERR_VERIFY_NOT_LISTED = (
    "verify the new token: the system.tokens answer lists no row with the new token's hash: it does not come "
    "from the server that issued the token"
)
ERR_VERIFY_SELECT_1 = (
    "verify the new token: the answer to SELECT 1 on database {database!r} is {got}, not the one row "
    "InfluxDB 3 answers (a value 1): it proves nothing about the new token"
)
ERR_VERIFY_403 = (
    "verify the new token: SELECT 1 on database {database!r} answered 403, and the same query with a made-up "
    "token answered {status}: a 403 there proves nothing about the new token (the answer does not come from a "
    "server that checks tokens first)"
)
HINT_VERIFY_403 = (
    "check that base_url reaches the InfluxDB 3 server itself, not a proxy or firewall that refuses the query; "
    "or give the token read on its first database, so that SELECT 1 answers 200"
)
ERR_NOT_DELETED = "token {name} was deleted (HTTP {status}) but system.tokens still lists it"
ERR_OPERATOR_LIVE = (
    "token {token_id} is (or may be) the operator token's current value: revoking it means regenerating _admin, "
    "which would leave no one holding a working operator token"
)
ERR_OPERATOR_UNKNOWN = (
    "token {token_id} is a generation of the operator token, but system.tokens shows no hash of the live one "
    "(no _admin row, or a server started without auth): whether {token_id} is still valid cannot be told"
)
HINT_OPERATOR_LIVE = (
    "this happens when a run regenerated _admin and could not publish the new value; see "
    "docs/issuers.md#influxdb3 'Recovering the operator token'"
)
ERR_OPERATOR_NOT_OURS = (
    "token {token_id} is the operator token (_admin), which kind = '{kind}' never deletes or regenerates"
)
HINT_OPERATOR_NOT_OURS = (
    "bootstrap this policy with a named admin token instead of _admin; the operator token stays valid "
    "until you regenerate it (`influxdb3 create token --admin --regenerate`)"
)
HINT_OPERATOR_401 = (
    "with kind = 'operator' the credential must be the current _admin value; if a run regenerated _admin and "
    "did not publish it, the stores hold a dead value: see docs/issuers.md#influxdb3 'Recovering the operator token'"
)
HINT_DUPLICATE = (
    "a token with this name exists already: delete it (`influxdb3 delete token --token-name NAME`) "
    "or change token_name_prefix (and list the old one in former_token_name_prefixes: tokens named with it stay "
    "this policy's)"
)
HINT_NO_ENTERPRISE = "resource tokens need InfluxDB 3 Enterprise (Core answers 404); use kind = 'named_admin' on Core"
HINT_NOT_ADMIN = "the credential must be an admin token (operator or named admin) to mint and list tokens"
HINT_NO_ROWS = "check `base_url`: it must reach the InfluxDB 3 server itself"
HINT_BAD_TIME = (
    "system.tokens shows a time of one of rotator's own tokens that rotator cannot read; check the server's "
    "version, and the row with `influxdb3 show tokens`"
)
WARN_BAD_TIME = "%s; that token is not this policy's, so its %s is left unknown"
WARN_NO_EXPIRY = (
    "%s token %s was created with an expiry of %ss, but the server's answer %s: it does not expire by itself; "
    "rotator still revokes it after its grace"
)
ERR_UNVERIFIABLE = (
    "verify the new token: it may only read {paths}, and the server answers there without checking tokens "
    "(it accepted a made-up one): a 200 would prove nothing about the new token"
)
HINT_UNVERIFIABLE = (
    "the server likely runs with `--disable-authz` for these endpoints (/metrics may never check tokens): add "
    "a permission the server checks, e.g. read on a database (verified with SELECT 1) or system:health / "
    "system:ping on a server that does not exempt it; or remove the endpoint from --disable-authz"
)


class ResourcePermission(BaseModel):
    """One permission of an Enterprise resource token (``PermissionDetailsApi`` in the spec)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    resource_type: Literal["db", "system"]
    resource_names: list[str] = Field(min_length=1, description='database names, or "*" for all')
    actions: list[Literal["read", "write"]] = Field(min_length=1)

    @field_validator("resource_names")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        if any(not name.strip() for name in value):
            raise ValueError("resource names must not be empty")
        return value

    @model_validator(mode="after")
    def _system_is_read_only(self) -> ResourcePermission:
        if self.resource_type == "system":
            if set(self.actions) != {"read"}:
                raise ValueError("system resources (health, metrics, ping, *) only have the action 'read'")
            unknown = sorted(set(self.resource_names) - {"health", "metrics", "ping", "*"})
            if unknown:
                raise ValueError(f"unknown system resource(s) {unknown}; use health, metrics, ping or *")
        return self


class InfluxDB3Settings(HttpSettings):
    """Settings of the ``influxdb3`` issuer."""

    kind: Literal["named_admin", "resource", "operator"] = Field(
        default="named_admin", description="named_admin, resource (Enterprise) or operator (_admin, no grace)"
    )
    credential: CredentialSetting = Field(
        description="the admin token that mints: 'self' (the token the stores hold now) or {file=...}/{env=...}"
    )
    token_name_prefix: str | None = Field(
        default=None,
        pattern=_NAME_PREFIX,
        description="new tokens are named <prefix>-<run id>; default rotator-<policy>",
    )
    former_token_name_prefixes: list[Annotated[str, StringConstraints(pattern=_NAME_PREFIX)]] = Field(
        default_factory=list,
        description="prefixes this policy named its tokens with before: those tokens stay its own (revoked after "
        "their grace, found by recovery); the default prefix is rotator-<policy>",
    )
    permissions: list[ResourcePermission] = Field(default_factory=list, description="kind = 'resource' only")
    allow_no_grace: bool = Field(
        default=False, description="kind = 'operator' only: accept that regenerating _admin kills the old value at once"
    )

    def tag_namespaces(self, policy: str) -> list[str]:
        """Where this policy's tags come from (rotator/config/policy.py refuses two policies that
        share one): the token name prefixes it reads as its own on this server; for ``operator``,
        the one ``_admin`` token, which two policies would regenerate in turn (each regeneration
        kills the value the other's stores hold, with no grace, and ``credential = "self"`` of the
        other is then dead for good)."""
        url = httpx.URL(self.base_url)  # one spelling per server: the host's case, a default port
        host = (url.host or "").rstrip(".")
        server = f"{url.scheme}://{host}:{url.port or {'https': 443, 'http': 80}.get(url.scheme, 0)}"
        if self.kind == "operator":
            return [f"the operator token {OPERATOR} on {server}"]
        prefixes = [self.token_name_prefix or f"rotator-{policy}", *self.former_token_name_prefixes]
        return [f"token names {prefix}-<run id> on {server}" for prefix in dict.fromkeys(prefixes)]

    def tag_namespace_conflict(self) -> tuple[str, str] | None:
        """What two policies sharing a namespace of this one cause, and the fix (None: the generic words
        of rotator/config/policy.py, about token name prefixes)."""
        if self.kind != "operator":
            return None
        return ("both regenerate it: each rotation revokes, at once, the value the other policy's stores hold, and "
                "that policy can never rotate again (its credential is that dead value)",
                "rotate the operator token with one policy, and list every secret that needs it as a "
                "[[policy.store]] of that policy")

    @model_validator(mode="after")
    def _kind_needs(self) -> InfluxDB3Settings:
        if self.kind == "resource":
            if not self.permissions:
                raise ValueError("kind = 'resource' needs `permissions` (at least one)")
            if is_self(self.credential):
                raise ValueError(
                    "kind = 'resource' cannot use credential = 'self': a resource token cannot mint tokens; "
                    "give an admin token as credential = { file = ... } or { env = ... }"
                )
        elif self.permissions:
            raise ValueError("`permissions` is only for kind = 'resource'")
        if self.kind == "operator":
            if not self.allow_no_grace:
                raise ValueError(
                    "kind = 'operator' regenerates _admin, and InfluxDB revokes the previous value at that very "
                    "moment: there is no grace period, every consumer of the old value fails until it reads the "
                    "new one. Prefer kind = 'named_admin'; if you accept this, set allow_no_grace = true"
                )
            if self.token_name_prefix is not None or self.former_token_name_prefixes:
                raise ValueError("`token_name_prefix` and `former_token_name_prefixes` have no effect with "
                                 "kind = 'operator' (the name is _admin)")
        elif self.allow_no_grace:
            raise ValueError("`allow_no_grace` is only for kind = 'operator'; every other kind keeps the grace period")
        return self


#: Longest token name rotator sends: its own are ``<prefix up to 100>-<run id>``; a bootstrapped
#: human token may be named otherwise (the API takes any string), within reason.
_MAX_NAME = 256


def _check_name(token_id: str) -> str:
    """``token_id`` if it can be a token name, else PermanentError (it goes into the ``token_name`` query)."""
    if (
        not isinstance(token_id, str)
        or not 0 < len(token_id) <= _MAX_NAME
        or not token_id.isprintable()
        or token_id != token_id.strip()
    ):
        raise bad_token_id(
            token_id, "influxdb3", f"a token name (1-{_MAX_NAME} printable characters, no surrounding spaces)"
        )
    return token_id


def operator_token_id(hash_hex: str) -> str:
    """The id of one generation of the operator token, from the server's hex SHA-512 of its value
    (the whole of it, or the 9 digits system.tokens shows)."""
    return f"{OPERATOR}@{hash_hex[:OPERATOR_HASH_DIGITS].lower()}"


def _decoy() -> Secret:
    """A made-up token in InfluxDB 3's shape, a value no server issued: where the server refuses it, the
    server checks tokens, and its answer to the new token says something about that token."""
    return Secret("apiv3_rotator-decoy-" + secrets.token_urlsafe(32))


def _value_hash(value: Secret) -> str:
    """The hex SHA-512 of a token's value: how the server hashes tokens (system.tokens shows its
    first 9 digits). Not secret (``influxdb3 show tokens`` prints it); the value never leaves here."""
    return hashlib.sha512(value.reveal().encode()).hexdigest()


def _generation(token_id: str) -> str | None:
    """The 9 hex digits that tell an operator token generation ``_admin@<hash>`` apart (of an id
    with 16, as rotator wrote them before, the first 9: the same generation), else None."""
    match = _OPERATOR_ID.fullmatch(token_id)
    return match["hash"][:OPERATOR_HASH_DIGITS] if match else None


class InfluxDB3Issuer(HttpIssuer[InfluxDB3Settings]):
    """Mints, verifies, lists and revokes InfluxDB 3 tokens over the v3 HTTP API."""

    kind: ClassVar[str] = "influxdb3"
    settings_model: ClassVar[type[BaseModel]] = InfluxDB3Settings
    #: system.tokens lists every token, but names the live operator token generation by 9 hex
    #: digits of its hash, where an id recorded by rotator before holds 16: the engine asks
    #: :meth:`token_info` about an id the listing does not show, and gets the generation under it.
    listing_is_complete: ClassVar[bool] = False

    @staticmethod
    def listed_token_id(token_id: str) -> str:
        """The id under which a listing shows the token the journal records as ``token_id``: the same,
        but for an operator token generation recorded with 16 hex digits (before system.tokens' 9 were
        known), which is listed as ``_admin@<its first 9>`` (`rotator inventory` matches by it)."""
        generation = _generation(token_id)
        return operator_token_id(generation) if generation is not None else token_id

    @property
    def prefix(self) -> str:
        """New tokens are named ``<prefix>-<run id>``."""
        return self.settings.token_name_prefix or f"rotator-{self._policy}"

    @property
    def _hints(self) -> dict[int, str]:
        return {401: HINT_OPERATOR_401} if self.settings.kind == "operator" else {}

    # -- the Issuer protocol -------------------------------------------------------------------

    def mint(self, request: MintRequest, credential: Secret | None) -> MintedToken:
        """Create a token named ``<prefix>-<run id>`` expiring at ``request.expires_at`` (or regenerate _admin)."""
        auth = self._credential(credential)
        if self.settings.kind == "operator":
            return self._regenerate(auth)
        name = self.token_name(request.run_id)
        # InfluxDB 3 takes a lifetime, not a time: round up so the token never ends early.
        expiry_secs = max(1, math.ceil((request.expires_at - self._clock.now()).total_seconds()))
        body: dict[str, Any] = {"token_name": name, "expiry_secs": expiry_secs}
        if self.settings.kind == "resource":
            what, path = f"create resource token {name}", RESOURCE
            body = {
                "token_name": name,
                "permissions": [p.model_dump() for p in self.settings.permissions],
                "expiry_secs": expiry_secs,
            }
            hints = {404: HINT_NO_ENTERPRISE, 409: HINT_DUPLICATE, 403: HINT_NOT_ADMIN}
        else:
            what, path = f"create named admin token {name}", NAMED_ADMIN
            hints = {409: HINT_DUPLICATE, 403: HINT_NOT_ADMIN}
        with map_http_errors(what, hints=hints):
            response = expect(self._send("POST", path, json=body, headers=auth_header("Bearer", auth)), 201)
        answer = self._object(json_body(response, what, created=f"token {name}"), what, name)
        self._check_created_name(answer, what, name)
        value = self._value(answer, what, name)
        expires_at = self._confirmed_expiry(answer, what, name, expiry_secs, request.expires_at)
        logger.info("created %s token %s, expires %s", self.settings.kind, name,
                    expires_at.isoformat() if expires_at else "never, by the server's answer")
        return MintedToken(value=value, token_id=name, expires_at=expires_at)

    def verify(self, token: Secret) -> None:
        """Use ``token`` as its kind allows; 401 means "not accepted yet" and is retried.

        Only an answer that can come from the InfluxDB 3 server that issued the token counts: a
        proxy, a firewall or a login page in front of ``base_url`` answers too, and taking its
        answer for the token's would publish a token that may not work.

        Admin kinds: the system.tokens query (what the next self-rotation needs), whose rows must
        be system.tokens rows (a ``name`` each) and, where the server shows hashes, include the new
        token's own (:meth:`_verify_admin`). Resource tokens: ``SELECT 1`` on the first database
        they name (``*``: ``_internal``), answered with its one row, or with 403 ("accepted, but may
        not read": a write-only token) where a made-up token gets 401 (:meth:`_verify_query`); a
        token with only system permissions: ``GET /health``, ``/ping`` or ``/metrics``, the first
        it may read where the server refuses a made-up token (see :meth:`_verify_system`).
        """
        what = "verify the new token"
        if self.settings.kind != "resource":
            self._verify_admin(token, what)
            return
        database = next((p.resource_names[0] for p in self.settings.permissions if p.resource_type == "db"), None)
        if database is not None:
            self._verify_query(token, "_internal" if database == "*" else database, what)
            return
        self._verify_system(token, what)

    def revoke(self, token_id: str, credential: Secret | None) -> None:
        """Delete the token named ``token_id`` and confirm it is gone; unknown names count as revoked.

        An operator-token generation is not deleted: a past one is dead already (confirmed
        against the live hash); the live one raises NeedsAttention (see ERR_OPERATOR_LIVE).
        """
        auth = self._credential(credential)
        _check_name(token_id)
        if token_id == OPERATOR or _OPERATOR_ID.fullmatch(token_id):
            self._retire_operator(token_id, auth)
            return
        what = f"delete token {token_id}"
        with map_http_errors(what, hints={403: HINT_NOT_ADMIN}):
            response = expect(
                self._send("DELETE", DELETE, params={"token_name": token_id}, headers=auth_header("Bearer", auth)),
                # The spec answers 200; a proxy or a later server version may say 204. The listing below
                # decides either way.
                200,
                204,
                404,
            )
        if any(info.token_id == token_id for info in self._list(auth)):
            raise TransientError(ERR_NOT_DELETED.format(name=token_id, status=response.status_code))
        if response.status_code == 404:
            logger.warning("token %s was not found; treating it as revoked", token_id)
        else:
            logger.info("deleted token %s", token_id)

    def list_tokens(self, credential: Secret | None) -> list[TokenInfo]:
        """Every token in system.tokens; names ``<prefix>-<run id>`` carry the run tag as description."""
        return self._list(self._credential(credential))

    def token_info(self, token_id: str, credential: Secret | None) -> TokenInfo | None:
        """What system.tokens says of ``token_id``, which the listing does not show under that id.

        Only an operator token id as rotator recorded them before, ``_admin@<16 hex digits>`` (in a
        journal, a store's payload), can be listed under another id: the live generation is
        listed as ``_admin@<its first 9 digits>``. If those match, that generation is returned under
        the id asked about (so the engine sees the token as live, and never records the only valid
        operator token as revoked); else None, a past generation (gone). Any other id the listing
        does not show does not exist: None, without a request."""
        match = _OPERATOR_ID.fullmatch(token_id) if isinstance(token_id, str) else None
        if match is None or len(match["hash"]) == OPERATOR_HASH_DIGITS:
            return None
        for row, info in self._listed(self._credential(credential)):
            if row.get("name") == OPERATOR and _generation(info.token_id) == _generation(token_id):
                return info._replace(token_id=token_id)
        return None

    # -- helpers --------------------------------------------------------------------------------

    def _verify_admin(self, token: Secret, what: str) -> None:
        """An admin token's verify: the system.tokens query must answer rows of system.tokens, the
        new token's own among them where the server shows hashes."""
        hints = {403: "the new token cannot query _internal; is it an admin token?"}
        with map_http_errors(what, unauthenticated_is_transient=True, hints=hints):
            response = expect(self._query(token), 200)
        rows = self._answer_rows(response, what)
        if not rows:
            # As for a listing (_listed): the token that asked is a row of system.tokens; an empty
            # 200 comes from something that is not the server (a catch-all host, a proxy).
            raise IssuerOutputError(f"{what}: the system.tokens query answered no row, not even the new "
                                    "token's own", hint=HINT_NO_ROWS)
        for number, row in enumerate(rows, start=1):
            try:
                self._info(number, row, what)  # a `name` each, as system.tokens rows have
            except IssuerOutputError as exc:
                raise IssuerOutputError(str(exc), hint=exc.hint or HINT_NO_ROWS) from None
        if not any("hash" in row for row in rows):
            return  # a server started without auth shows no hash (tokens.rs): rows with names are all there is
        own = _value_hash(token)[:OPERATOR_HASH_DIGITS]
        # system.tokens shows the first 9 hex digits of each hash: the new token's row is the one with its own 9
        if not any(isinstance(row.get("hash"), str) and row["hash"][:OPERATOR_HASH_DIGITS].lower() == own
                   for row in rows):
            raise IssuerOutputError(ERR_VERIFY_NOT_LISTED, hint=HINT_NO_ROWS)

    def _verify_query(self, token: Secret, database: str, what: str) -> None:
        """A resource token's verify on a database: ``SELECT 1``.

        A 200 counts only with the one row InfluxDB 3 answers (``{"Int64(1)":1}``): a login page
        or a catch-all answers 200 too. A 403 ("may not read") counts only where the same query
        with a made-up token gets 401: then the server checked the token and knew the new one;
        a firewall or a proxy answers 403 to any token.
        """
        hints = {404: f"database {database!r} does not exist; create it, or list an existing one first"}
        with map_http_errors(what, unauthenticated_is_transient=True, hints=hints):
            response = expect(self._query(token, database, VERIFY_SQL), 200, 403)
        if response.status_code == 200:
            rows = self._answer_rows(response, what)
            values = [list(row.values()) for row in rows]
            if len(values) != 1 or len(values[0]) != 1 or type(values[0][0]) is not int or values[0][0] != 1:
                got = f"{len(rows)} row(s)" if len(rows) != 1 else "a row without the value 1"
                raise IssuerOutputError(ERR_VERIFY_SELECT_1.format(database=database, got=got), hint=HINT_NO_ROWS)
            return
        decoy = _decoy()
        with map_http_errors(f"{what}: check that SELECT 1 on {database!r} refuses an unknown token"):
            control = expect(self._query(decoy, database, VERIFY_SQL), 200, 401, 403)
        if control.status_code != 401:
            raise PermanentError(ERR_VERIFY_403.format(database=database, status=control.status_code),
                                 hint=HINT_VERIFY_403)

    def _answer_rows(self, response: httpx.Response, what: str) -> list[Mapping[str, Any]]:
        """The rows of a query answer to verify; one that is no rows (HTML, garbage) is an output
        error that says where the answer likely came from."""
        try:
            return list(self._rows(response, what))
        except IssuerOutputError as exc:
            raise IssuerOutputError(str(exc), hint=HINT_NO_ROWS) from None

    def _verify_system(self, token: Secret, what: str) -> None:
        """Verify a token with only ``system`` permissions on an endpoint that checks tokens.

        A 200 from ``/health``, ``/ping`` or ``/metrics`` proves the token only if the endpoint
        authenticates: ``influxdb3 serve --disable-authz health,ping,metrics`` exempts them, and
        the spec documents no 401 for ``/metrics`` at all. So each endpoint the token may read is
        first asked with a made-up token: only where that one is refused is the new token's 200
        worth anything. No such endpoint: PermanentError (the engine deletes the unverified token).
        """
        unchecked = []
        for endpoint in self._system_endpoints():
            path = f"/{endpoint}"
            decoy = _decoy()
            with map_http_errors(f"{what}: check that {path} refuses an unknown token"):
                control = expect(self._send("GET", path, headers=auth_header("Bearer", decoy)), 200, 401, 403)
            if control.status_code == 200:
                unchecked.append(path)
                continue
            with map_http_errors(what, unauthenticated_is_transient=True):
                expect(self._send("GET", path, headers=auth_header("Bearer", token)), 200)
            return
        raise PermanentError(ERR_UNVERIFIABLE.format(paths=", ".join(unchecked)), hint=HINT_UNVERIFIABLE)

    def _system_endpoints(self) -> list[str]:
        """The endpoints of SYSTEM_ENDPOINTS a resource token's ``system`` permissions let it read."""
        names = {n for p in self.settings.permissions if p.resource_type == "system" for n in p.resource_names}
        return [n for n in SYSTEM_ENDPOINTS if n in names or "*" in names]

    def requests_in_longest_call(self) -> int:
        """Two (``revoke``: DELETE, then the listing that confirms it), or more for ``verify`` of a
        resource token: ``SELECT 1`` with the token, then (on a 403) with a made-up one
        (:meth:`_verify_query`); with only ``system`` permissions, a made-up token's request to
        each endpoint it may read until one refuses that, then the token's own (:meth:`_verify_system`)."""
        if self.settings.kind != "resource":
            return self.requests_per_call
        if any(p.resource_type == "db" for p in self.settings.permissions):
            return max(self.requests_per_call, VERIFY_QUERY_REQUESTS)
        return max(self.requests_per_call, len(self._system_endpoints()) + 1)

    def _confirmed_expiry(
        self, answer: Mapping[str, Any], what: str, name: str, expiry_secs: int, requested: datetime
    ) -> datetime | None:
        """The expiry the 201 answer confirms, or None (with a WARNING) when it confirms none.

        ``expiry`` is the server's own (spec ``AdminTokenObject``: null = never expires). Without
        that key, a resource token's answer (the spec's ``ResourceTokenObject``) may echo
        ``expiry_secs``: the lifetime asked for, so the time asked for, to the second.
        """
        if "expiry" in answer:
            expires_at = parse_time(answer["expiry"], f"{what}: `expiry`")
            if expires_at is not None:
                return expires_at
            said = "says `expiry: null` (never expires)"
        elif type(answer.get("expiry_secs")) is int and answer["expiry_secs"] == expiry_secs:
            return requested.replace(microsecond=0)
        else:
            said = "confirms no expiry"
        # The engine still records the time it asked for; the log is where the difference shows.
        logger.warning(WARN_NO_EXPIRY, self.settings.kind, name, expiry_secs, said)
        return None

    def token_name(self, run_id: str) -> str:
        if not _RUN_ID.match(run_id):
            raise PermanentError(f"run id {run_id!r} cannot be part of an InfluxDB 3 token name",
                                 hint="a run id is letters and digits, or a UUID (the Lambda function's "
                                 "ClientRequestToken: start the rotation again with a UUID)")
        return f"{self.prefix}-{run_id}"

    def _tag_of(self, name: str) -> str | None:
        """The run tag a name ``<prefix>-<run id>`` stands for, else None. The prefixes this policy
        used before count too: a token minted before a change of ``token_name_prefix`` is still
        revoked after its grace (the revocation rule wants its tag) and found by recovery. The
        operator kind mints no named token: no name is its tag."""
        if self.settings.kind == "operator":
            return None
        for prefix in (self.prefix, *self.settings.former_token_name_prefixes):
            run_id = name.removeprefix(f"{prefix}-")
            if run_id != name and _RUN_ID.match(run_id):
                return f"rotator:{self._policy}:{run_id}"
        return None

    def _query(self, token: Secret, database: str = "_internal", sql: str = LIST_SQL) -> httpx.Response:
        body = {"db": database, "q": sql, "format": "jsonl"}
        headers = {**auth_header("Bearer", token), "Accept": QUERY_ACCEPT}  # not httpx's */*, which the spec lacks
        # A POST that only reads (a SELECT), also inside a revoke (the listing that confirms the delete):
        # not bounded by that side effect's start deadline (common.send).
        with reading():
            return self._send("POST", QUERY, json=body, headers=headers)

    def _list(self, auth: Secret) -> list[TokenInfo]:
        return [info for _row, info in self._listed(auth)]

    def _listed(self, auth: Secret) -> list[tuple[Mapping[str, Any], TokenInfo]]:
        """system.tokens: each row with what it says of its token."""
        what = "list tokens (system.tokens)"
        with map_http_errors(what, hints={403: HINT_NOT_ADMIN, **self._hints}):
            response = expect(self._query(auth), 200)
        rows = self._rows(response, what)
        listed = [(row, self._info(number, row, what)) for number, row in enumerate(rows, start=1)]
        if not listed:
            # The admin token that asked is one of system.tokens' rows: an empty answer (a catch-all
            # host, a proxy) would make every token look revoked, and every orphan search find nothing.
            raise IssuerOutputError(f"{what}: the answer has no row, not even the token that asked",
                                    hint=HINT_NO_ROWS)
        return listed

    def _rows(self, response: httpx.Response, what: str) -> Iterator[Mapping[str, Any]]:
        """The rows of a query answer: JSON lines, or a JSON array (``format=json`` servers). Messages
        number rows from 1, as lines are (they differ only where blank lines are left out)."""
        text = response.text.strip()
        if text.startswith("["):
            try:
                rows = json.loads(text)
            except (ValueError, RecursionError):  # RecursionError: nested thousands deep
                raise IssuerOutputError(f"{what}: the answer is not a JSON array of rows") from None
        else:
            rows = []
            for number, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    raise IssuerOutputError(f"{what}: line {number} of the answer is not JSON") from None
                except RecursionError:
                    raise IssuerOutputError(f"{what}: line {number} of the answer is JSON nested too deeply") from None
        for number, row in enumerate(rows, start=1):
            if not isinstance(row, dict):
                raise IssuerOutputError(f"{what}: row {number} is a JSON {type(row).__name__}, expected an object")
            yield row

    def _info(self, number: int, row: Mapping[str, Any], what: str) -> TokenInfo:
        """What row ``number`` (from 1) of system.tokens says of its token."""
        name = row.get("name")
        if not isinstance(name, str) or not name:
            raise IssuerOutputError(f"{what}: row {number} has no string `name`")
        description = row.get("description")
        description = description if isinstance(description, str) else ""
        token_id = name
        if name == OPERATOR:
            # The live generation, by the 9 digits system.tokens shows. A server started without auth
            # has no `hash` column (tokens.rs): the row stays `_admin`, and no generation can be told
            # apart there (_retire_operator refuses to guess).
            digest = row.get("hash")
            if digest is not None:
                if not isinstance(digest, str) or not _HASH.fullmatch(digest):
                    raise IssuerOutputError(f"{what}: the _admin row's `hash` is not hex of at least "
                                            f"{OPERATOR_HASH_DIGITS} digits")
                token_id = operator_token_id(digest)
        tag = self._tag_of(name)
        if tag is not None and tag not in description:
            description = f"{tag} {description}".strip()
        ours = tag is not None or (name == OPERATOR and self.settings.kind == "operator")
        return TokenInfo(
            token_id=token_id,
            description=description,
            created_at=self._row_time(row, "created_at", number, token_id, ours, what),
            expires_at=self._row_time(row, "expiry", number, token_id, ours, what),
        )

    def _row_time(
        self, row: Mapping[str, Any], column: str, number: int, token_id: str, ours: bool, what: str
    ) -> datetime | None:
        """A time column of a system.tokens row. One that cannot be read fails the listing only for a
        token of this policy's (``ours``), whose times the engine acts on; of anyone else's token it
        is left unknown, with a WARNING: one human's odd token must not stop every revocation, orphan
        search and recovery on the server."""
        # (repr: a name of anyone's token may hold any character; the message never holds the value)
        where = f"{what}: row {number} (token {token_id[:_MAX_NAME]!r}) `{column}`"
        try:
            return parse_time(row.get(column), where)
        except IssuerOutputError as exc:
            if ours:
                raise IssuerOutputError(str(exc), hint=HINT_BAD_TIME) from None
            logger.warning(WARN_BAD_TIME, exc, column)
            return None

    def _object(self, answer: object, what: str, name: str) -> Mapping[str, Any]:
        if not isinstance(answer, dict):
            raise IssuerOutputError(
                f"{what}: token {name} was created, but the answer is a JSON {type(answer).__name__}, "
                "expected an object"
            )
        return answer

    def _check_created_name(self, answer: Mapping[str, Any], what: str, name: str) -> None:
        """IssuerOutputError when the 201 answer names another token than ``name``: the value in it
        would be published under an id (``name``) that is not its token's, and revoked by a name
        that is not its own. ``name`` is the server's (``AdminTokenObject``), ``token_name`` the
        Enterprise spec's ``ResourceTokenObject``; an answer without either is not refused (the
        spec requires neither)."""
        for key in ("name", "token_name"):
            if key in answer and answer[key] != name:
                got = answer[key]
                # (the name is the server's, untrusted: shown cut short, token-shaped words masked, and
                # not at all where it repeats the answer's token, whatever its shape)
                if not isinstance(got, str):
                    shown = f"a JSON {type(got).__name__}"
                elif isinstance(answer.get("token"), str) and answer["token"].strip() in got:
                    shown = "(the answer's own `token` value, not shown)"
                else:
                    shown = redact_detail(repr(got)[:_MAX_NAME])
                raise IssuerOutputError(ERR_OTHER_NAME.format(what=what, got=shown, key=key, name=name),
                                        hint=HINT_OTHER_NAME.format(name=name))

    def _value(self, answer: Mapping[str, Any], what: str, name: str) -> Secret:
        value = token_value(answer.get("token"))
        if value is None:
            raise IssuerOutputError(
                ERR_NO_VALUE.format(what=what, name=name),
                hint="rotator deletes the token by its name; check the server version",
            )
        return value

    def _regenerate(self, auth: Secret) -> MintedToken:
        what = "regenerate the operator token _admin"
        with map_http_errors(what, hints={**self._hints, 403: "only the operator token can regenerate _admin"}):
            response = expect(self._send("POST", REGENERATE, headers=auth_header("Bearer", auth)), 201)
        answer = self._object(json_body(response, what, created="a new _admin value"), what, OPERATOR)
        value = self._value(answer, what, OPERATOR)
        digest = answer.get("hash")
        if not isinstance(digest, str) or not _HASH.fullmatch(digest):
            digest = _value_hash(value)
        # The answer holds the whole hash, system.tokens its first 9 digits: the id keeps those 9, so
        # that the listing names this generation by the very id recorded now.
        token_id = operator_token_id(digest)
        logger.warning("regenerated the operator token: %s is now _admin and the previous value is revoked", token_id)
        expires_at = parse_time(answer.get("expiry"), f"{what}: `expiry`")
        return MintedToken(value=value, token_id=token_id, expires_at=expires_at)

    def _retire_operator(self, token_id: str, auth: Secret) -> None:
        if self.settings.kind != "operator":
            raise NeedsAttention(
                ERR_OPERATOR_NOT_OURS.format(token_id=token_id, kind=self.settings.kind), hint=HINT_OPERATOR_NOT_OURS
            )
        # The live generation is the row *named* _admin: a named token may be called "_admin@...", and
        # its id (its name) would otherwise pass for the live generation.
        live = next((info.token_id for row, info in self._listed(auth) if row.get("name") == OPERATOR), None)
        if token_id == OPERATOR:
            raise NeedsAttention(ERR_OPERATOR_LIVE.format(token_id=token_id), hint=HINT_OPERATOR_LIVE)
        if live is None or _generation(live) is None:
            # No _admin row, or one without a hash (a server started without auth): which generation
            # is live cannot be told, so none is reported revoked.
            raise NeedsAttention(ERR_OPERATOR_UNKNOWN.format(token_id=token_id), hint=HINT_OPERATOR_LIVE)
        # By the first 9 digits: an id rotator recorded before holds 16, the listing shows 9.
        if _generation(token_id) == _generation(live):
            raise NeedsAttention(ERR_OPERATOR_LIVE.format(token_id=token_id), hint=HINT_OPERATOR_LIVE)
        logger.info("operator token generation %s was revoked when %s replaced it", token_id, live)


if TYPE_CHECKING:  # static conformance: mypy checks InfluxDB3Issuer against the Issuer Protocol
    _conforms: type[Issuer] = InfluxDB3Issuer
