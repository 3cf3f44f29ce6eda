"""Issuer ``influxdb2``: InfluxDB v2 (OSS 2.x, Cloud TSM) authorizations over ``/api/v2/authorizations``.

- **mint**: ``POST /api/v2/authorizations`` -> 201 with ``orgID``, the run's description (which
  carries the tag ``rotator:<policy>:<run id>``) and the permissions from the policy, or copied
  from a template authorization (``copy_from_authorization_id``). The credential grants only
  what it holds itself: OSS answers 403 ``permission <action>:<resource> is not allowed`` for any
  other permission. v2 authorizations have no expiry: a token lives until it is made inactive or
  deleted, so rotator's revocation is its end.
- **verify**: ``GET /api/v2/buckets?limit=1`` with ``Authorization: Token <new token>``: a
  bucket in the answer proves the token active; an unknown token gets 401, retried until
  ``verify_timeout``. An empty list proves nothing (OSS answers an *inactive* token so too), and
  ``GET /api/v2/me`` with the token decides: see :meth:`InfluxDB2Issuer.verify`.
- **revoke** in two stages, because the engine calls ``revoke`` once:

  1. ``PATCH {status: "inactive"}``: the server rejects the token from then on, and an operator
     can undo it (``influx auth active --id ID``). rotator appends the marker
     ``[rotator-revoked:<policy>:<id>@<unix time>]`` to the description in the same PATCH, so
     that stage 2 only ever deletes what rotator itself deactivated and nobody changed since (not
     a token a human set inactive, nor one whose description was copied from a retired token).
  2. ``DELETE``: at every later ``revoke`` of the policy, inactive authorizations carrying the
     marker with their own id, not updated more than ``_MARKER_SKEW`` after its time, whose
     ``updatedAt`` (the time of the PATCH; the server sets it on every update) is older than
     ``delete_after`` (default 7 days) are deleted: at most :data:`PURGE_PER_CALL` per
     revocation, the longest inactive first, so that ``revoke`` keeps to its request count
     (``requests_per_call``, of which ``call_timeout_seconds`` is made); the rest wait for the
     next revocations. So an inactive token is deleted at the first revocation after
     ``delete_after`` has passed (a later one when more than that many are due at once): at
     most ``delete_after`` plus one schedule interval after it became inactive. A failure here
     is logged and retried at the next revocation; it never fails the revocation that has just
     succeeded. A server that leaves ``updatedAt`` out gives no time of the PATCH: such an
     authorization stays inactive and is never deleted by rotator (delete it with ``influx auth
     delete``).

  ``list_tokens`` changes nothing (``rotate --dry-run`` calls it).
- **Never match by value**: OSS 2.9+ stores only hashes of tokens, and Cloud answers
  ``token: redacted``; rotator identifies authorizations by id alone. Older OSS servers return
  every token value in ``GET /api/v2/authorizations``: rotator drops them as it parses, and
  never logs a body.

Policy settings::

    [policy.issuer]
    type = "influxdb2"
    base_url = "https://influxdb.example.com:8086"
    org_id = "0123456789abcdef"
    credential = { file = "/run/secrets/influxdb2-admin" }   # or { env = "VAR" } or "self"
    delete_after = "7d"                  # stage 2: delete this long after deactivation
    # user_id = "..."                    # scope new tokens to this user (default: the credential's user)
    permissions = [
      { action = "read",  resource = { type = "buckets", id = "fedcba9876543210" } },
      { action = "write", resource = { type = "buckets", id = "fedcba9876543210" } },
    ]
    # or: copy_from_authorization_id = "0a1b2c3d4e5f6a7b"
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rotator.adapters.http.common import (
    CredentialSetting,
    HttpIssuer,
    HttpSettings,
    auth_header,
    bad_token_id,
    error_code,
    error_text,
    expect,
    json_body,
    map_http_errors,
    parse_time,
    path_segment,
    redact_detail,
    token_value,
)
from rotator.config.durations import Duration
from rotator.config.schedule import format_duration
from rotator.core.contracts import Issuer, MintedToken, MintRequest, TokenInfo
from rotator.core.errors import IssuerOutputError, NeedsAttention, RotatorError, TransientError
from rotator.core.secret import Secret

__all__ = ["InfluxDB2Issuer", "InfluxDB2Settings", "V2Permission", "V2Resource"]

logger = logging.getLogger("rotator.adapters.influxdb2")

AUTHORIZATIONS = "/api/v2/authorizations"
BUCKETS = "/api/v2/buckets"
ME = "/api/v2/me"
#: How OSS words a permission check that a token's permission set fails (authorizer.isAllowedAll:
#: ``"%s is unauthorized"`` of the permission, ``read:users/<id>``): that set was read, so the token is
#: active. An inactive token's fails before with "token is inactive" (Authorization.PermissionSet).
_PERMISSION_REFUSED = re.compile(r"(?:read|write):\S+ is unauthorized")
_ID = r"^[0-9a-f]{16}$"
#: An authorization id as the v2 API writes it (platform.ID: 16 lowercase hex digits).
_AUTH_ID = re.compile(_ID)
#: how much later than its marker says an authorization's updatedAt may be and still be the PATCH
#: that wrote the marker (the server's clock against rotator's)
_MARKER_SKEW = timedelta(minutes=10)
#: Stage 2 reads again and deletes at most this many authorizations per revocation (each a GET
#: and a DELETE): a revocation adds one inactive token, so two a call also work off a backlog.
PURGE_PER_CALL = 2

#: Resource types of the OSS v2 spec (``components.schemas.Resource.properties.type``).
RESOURCE_TYPES = (
    "authorizations", "buckets", "dashboards", "orgs", "tasks", "telegrafs", "users", "variables",
    "secrets", "labels", "views", "documents", "notificationRules", "notificationEndpoints", "checks",
    "dbrp", "annotations", "sources", "scrapers", "notebooks", "remotes", "replications", "instance",
    "flows", "functions", "subscriptions",
)  # fmt: skip

ERR_NO_VALUE = "{what}: authorization {auth_id} was created, but the answer has no `token` string"
ERR_NO_ID = "{what}: the answer has no authorization `id`"
ERR_NOT_INACTIVE = "authorization {auth_id} was updated but its status is {status!r}, not 'inactive'"
#: A 200 that is not the authorization asked for (a gateway or mock that echoes the request, another
#: service behind base_url): it says nothing of that authorization, so nothing counts as revoked.
ERR_NOT_THE_AUTHORIZATION = (
    "{what}: the {call} answer (HTTP 200) is not authorization {auth_id} (its `id` is missing or names "
    "another), so it says nothing of that authorization; not counted as revoked"
)
HINT_NOT_THE_AUTHORIZATION = (
    "check that `base_url` reaches InfluxDB itself, and any proxy or gateway in front of it (one that echoes "
    "requests or answers for another service); rotator tries again on the next run"
)
HINT_401 = (
    "the credential is not accepted, or lacks a permission (InfluxDB v2 answers 401 for both): it needs "
    "read and write on authorizations, and read and write on the user new tokens belong to; see "
    "docs/issuers.md#influxdb2"
)
#: OSS refuses to grant what the credential does not hold itself (authorizer.VerifyPermissions: 403
#: ``permission <action>:<resource> is not allowed``): the one 403 of these calls.
HINT_403_MINT = (
    "the credential may grant only permissions it holds itself: give it every permission new tokens get (those in "
    "`permissions`, or the template authorization's with copy_from_authorization_id); the message names the "
    "missing one; see docs/issuers.md#influxdb2"
)
HINT_TEMPLATE = "check copy_from_authorization_id: the template authorization must exist and be readable"
HINT_INVALID = "the server refused the request; check org_id, user_id and the permissions against docs/issuers.md"


class V2Resource(BaseModel):
    """``resource = { type = "buckets", id = "...", orgID = "..." }``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(description="a resource type of the v2 API, e.g. buckets")
    id: str | None = Field(default=None, pattern=_ID, description="one resource; default: every one of the type")
    orgID: str | None = Field(default=None, pattern=_ID, description="the owning organization")

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in RESOURCE_TYPES:
            raise ValueError(f"unknown resource type {value!r}; one of: {', '.join(RESOURCE_TYPES)}")
        return value


class V2Permission(BaseModel):
    """``{ action = "read" | "write", resource = {...} }``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Literal["read", "write"]
    resource: V2Resource

    def body(self) -> dict[str, Any]:
        return {"action": self.action, "resource": self.resource.model_dump(exclude_none=True)}


class InfluxDB2Settings(HttpSettings):
    """Settings of the ``influxdb2`` issuer."""

    org_id: str = Field(pattern=_ID, description="the organization new authorizations belong to (16 hex digits)")
    credential: CredentialSetting = Field(
        description="the token that mints: {file=...}/{env=...}, or 'self' (the token the stores hold now)"
    )
    permissions: list[V2Permission] = Field(default_factory=list, description="what new tokens may do")
    copy_from_authorization_id: str | None = Field(
        default=None, pattern=_ID, description="copy the permissions of this authorization instead"
    )
    user_id: str | None = Field(default=None, pattern=_ID, description="scope new tokens to this user")
    delete_after: Duration = Field(
        default="7d", validate_default=True, description="delete a token this long after rotator made it inactive"
    )

    @model_validator(mode="after")
    def _one_source_of_permissions(self) -> InfluxDB2Settings:
        if bool(self.permissions) == (self.copy_from_authorization_id is not None):
            raise ValueError("give exactly one of `permissions` (at least one) or `copy_from_authorization_id`")
        return self


class InfluxDB2Issuer(HttpIssuer[InfluxDB2Settings]):
    """Mints, verifies, lists and retires InfluxDB v2 authorizations."""

    kind: ClassVar[str] = "influxdb2"
    settings_model: ClassVar[type[BaseModel]] = InfluxDB2Settings
    #: The longest call, ``revoke``: GET, PATCH, stage 2's list, then a GET and a DELETE for each
    #: of at most PURGE_PER_CALL authorizations (``mint`` and ``verify``: two requests each).
    requests_per_call: ClassVar[int] = 3 + 2 * PURGE_PER_CALL
    #: GET /api/v2/authorizations leaves out, silently, the authorizations of every user the
    #: credential may not read (the OSS spec says so); GET /api/v2/authorizations/{id} answers 401
    #: for them. A token the listing does not show is looked up by :meth:`token_info`.
    listing_is_complete: ClassVar[bool] = False
    #: an authorization has no expiry: it works until it is revoked (core/contracts.py, Issuer)
    mints_expiring: ClassVar[bool] = False

    @property
    def marker(self) -> str:
        """The start of what stage 1 appends to the description (:meth:`_marker_for`)."""
        return f"[rotator-revoked:{self._policy}"

    def _marker_for(self, token_id: str) -> str:
        """What stage 1 appends: the policy, the authorization's own id and the time of the PATCH.
        Stage 2 deletes an authorization only if its marker names its own id (not one copied with
        a description onto another token) and it was not updated since (re-activated and made
        inactive again by someone else: not rotator's to delete)."""
        return f"{self.marker}:{token_id}@{int(self._clock.now().timestamp())}]"

    def _retired_by_rotator(self, token_id: str, description: str, updated: datetime | None) -> bool:
        """Whether ``description`` carries this policy's marker for ``token_id`` and the authorization
        was last updated by that PATCH (``updated``: its updatedAt; None: unknown). The marker of
        rotator before it named the id (``[rotator-revoked:<policy>]``) does not count: nothing ties
        it to the token that carries it (a description copied onto a token a human then set
        inactive). A token rotator retired under it stays inactive; docs/issuers.md says how to
        delete it by hand."""
        times = [int(found[2]) for found in re.finditer(re.escape(self.marker) + r":([0-9a-f]{16})@([0-9]{1,11})\]",
                                                         description) if found[1] == token_id]
        if not times:
            return False
        try:  # the latest: a token made active again by hand and revoked again carries one per PATCH
            marked = datetime.fromtimestamp(max(times), UTC)
        except (ValueError, OverflowError, OSError):  # a time no datetime holds: not a marker rotator wrote
            return False
        if updated is None or updated <= marked + _MARKER_SKEW:
            return True
        logger.info("authorization %s carries rotator's marker of %s but was updated at %s, after it; not "
                    "deleting it (made active and inactive again by someone, or the server's clock is more "
                    "than %s ahead of rotator's)", token_id, marked.isoformat(), updated.isoformat(),
                    format_duration(_MARKER_SKEW))
        return False

    # -- the Issuer protocol -------------------------------------------------------------------

    def mint(self, request: MintRequest, credential: Secret | None) -> MintedToken:
        """``POST /api/v2/authorizations`` with the run's description; v2 tokens do not expire."""
        auth = self._credential(credential)
        body: dict[str, Any] = {
            "orgID": self.settings.org_id,
            "description": request.description,
            "status": "active",
            "permissions": self._permissions(auth),
        }
        if self.settings.user_id is not None:
            body["userID"] = self.settings.user_id
        what = "create authorization"
        with map_http_errors(what, hints={401: HINT_401, 400: HINT_INVALID, 403: HINT_403_MINT}):
            response = expect(self._send("POST", AUTHORIZATIONS, json=body, headers=auth_header("Token", auth)), 201)
        answer, value = _split(json_body(response, what, created="an authorization"), what)
        auth_id = answer.get("id")
        if not isinstance(auth_id, str) or not auth_id:
            raise IssuerOutputError(
                ERR_NO_ID.format(what=what), hint=f"look for an authorization with description {request.description!r}"
            )
        if not _AUTH_ID.fullmatch(auth_id):
            # Never logged nor recorded: an id rotator could not revoke later (revoke checks it), and
            # whatever a server put there may be a secret.
            raise IssuerOutputError(
                f"{what}: the answer's `id` is not a v2 authorization id (16 lowercase hex digits); an authorization "
                "may have been created",
                hint="check the server (or a proxy in front of it), then delete the authorization with description "
                f"{request.description!r} in InfluxDB (rotator cannot: it only revokes v2 ids)",
            )
        secret = token_value(value)
        if secret is None:
            raise IssuerOutputError(
                ERR_NO_VALUE.format(what=what, auth_id=auth_id),
                hint="rotator revokes it by its id; check the server version",
            )
        logger.info("created authorization %s", auth_id)
        return MintedToken(value=secret, token_id=auth_id, expires_at=None)

    def verify(self, token: Secret) -> None:
        """Use ``token``: a bucket it may read, or its own user, proves it active; 401 is retried.

        ``GET /api/v2/buckets?limit=1``: a bucket in the answer proves it. No bucket proves nothing:
        OSS authenticates an *inactive* token as well (http/authentication_middleware.go looks it
        up by value and never checks its status), its permission set then fails every check
        ("token is inactive", EUnauthorized) and AuthorizeFindBuckets (authorizer/authorize_find.go)
        skips every bucket that fails so: 200 ``{"buckets": []}``, as for an active token that may
        read no bucket (a write-only one).

        Then ``GET /api/v2/me`` with the token: its handler reads the token's user through a check
        that fails rather than filters (tenant/middleware_user_auth.go, AuthorizeReadResource of
        read:users/<id>), so it tells the two apart: 200 (active, may read its user); 401 "read:users/
        <id> is unauthorized" (active: its permission set was read, and lacks that); 401 "token is
        inactive" or "unauthorized access" (unknown): NotYetAccepted. Not ``GET
        /api/v2/authorizations`` with the token: a list, filtered like the buckets, empty for both
        an inactive token and an active one that may not read authorizations. The spec documents
        200 and 401 for ``/api/v2/me``.
        """
        what = "verify the new token"
        with map_http_errors(what, unauthenticated_is_transient=True):
            response = expect(self._send("GET", BUCKETS, params={"limit": 1}, headers=auth_header("Token", token)), 200)
        answer = json_body(response, what)
        buckets = answer.get("buckets") if isinstance(answer, dict) else None
        if not isinstance(buckets, list):
            raise IssuerOutputError(f"{what}: the answer of GET {BUCKETS} has no `buckets` list")
        if buckets:
            return
        with map_http_errors(what, unauthenticated_is_transient=True):
            response = self._send("GET", ME, headers=auth_header("Token", token))
            refusal = error_text(response, ("message",), plain_text=False).strip()
            if response.status_code == 401 and _PERMISSION_REFUSED.fullmatch(refusal):
                return  # active: refused by a permission check, not as inactive
            expect(response, 200)
        # An SPA, login page or catch-all route answers 200 to any path: only InfluxDB's own answer,
        # a UserResponse carrying the user's id, proves that the server accepted the token.
        if not _is_user(response.content):
            raise IssuerOutputError(
                f"{what}: the answer of GET {ME} (HTTP 200, {len(response.content)} bytes, Content-Type "
                f"{redact_detail(response.headers.get('content-type', 'none'))!r}) is not InfluxDB's: expected a "
                "JSON user with an `id` of 16 lowercase hex digits; the token is not verified",
                hint="check that `base_url` reaches InfluxDB itself, not a web UI, login page or proxy that answers "
                "every path",
            )

    def revoke(self, token_id: str, credential: Secret | None) -> None:
        """Stage 1: make ``token_id`` inactive (confirmed by the answer); then stage 2 for older ones.

        An authorization that is gone, or already made inactive by rotator, counts as revoked; one
        whose organization was deleted does not (NeedsAttention: see :meth:`_gone`).
        """
        _check_id(token_id)
        auth = self._credential(credential)
        what = f"revoke authorization {token_id}"
        with map_http_errors(what, hints={401: HINT_401}):
            response = expect(self._send("GET", _authorization(token_id), headers=auth_header("Token", auth)), 200, 404)
        gone = self._gone(response, what, token_id)
        if gone is not None:
            logger.warning("authorization %s %s; treating it as revoked", token_id, gone)
        else:
            current = _split(json_body(response, what), what)[0]
            # Another object's description and status would decide (and be written back by the PATCH).
            if current.get("id") != token_id:
                raise TransientError(
                    ERR_NOT_THE_AUTHORIZATION.format(what=what, call="GET", auth_id=token_id),
                    hint=HINT_NOT_THE_AUTHORIZATION,
                )
            description = current.get("description") if isinstance(current.get("description"), str) else ""
            if current.get("status") == "inactive" and self._retired_by_rotator(token_id, str(description), None):
                logger.info("authorization %s is inactive already", token_id)
            else:
                self._deactivate(token_id, str(description), auth)
        self._purge(auth)

    def token_info(self, token_id: str, credential: Secret | None) -> TokenInfo | None:
        """``GET /api/v2/authorizations/{id}``: the authorization, or None when InfluxDB says it has none
        (its own 404 ``authorization not found``, or ``user not found``: see :meth:`_gone`); a 401 (the
        credential may not read that authorization's user) is an error, and so is a 404 ``organization
        not found`` (the authorization exists, its token may still work): "not readable" is never
        taken for "gone".

        An authorization of another organization than ``org_id`` is returned as well: it exists, and
        None would make the engine record a pending revocation of it as done while it stays active
        (``org_id`` corrected meanwhile). Whose it is the revocation rule decides, by rotator's own
        record of the id and the policy's tag in its description (revocation_rule.py), as for any
        token; ``revoke`` works across organizations. It is marked ``foreign`` (which organization,
        which org_id), so that ``rotator bootstrap`` refuses it: another org's token is no token of
        this policy's issuer, whatever bucket it may read."""
        _check_id(token_id)
        what = f"look up authorization {token_id}"
        with map_http_errors(what, hints={401: HINT_401}):
            response = expect(
                self._send("GET", _authorization(token_id), headers=auth_header("Token", self._credential(credential))),
                200, 404,
            )  # fmt: skip
        gone = self._gone(response, what, token_id)
        if gone is not None:
            logger.info("authorization %s %s", token_id, gone)
            return None
        item, listed_value = _split(json_body(response, what), what)
        _keep_digest(item, listed_value)
        if item.get("id") != token_id:
            raise IssuerOutputError(f"{what}: the answer is not authorization {token_id}")
        org = item.get("orgID")
        if org == self.settings.org_id:
            return self._info(item)
        shown = org if isinstance(org, str) and _AUTH_ID.fullmatch(org) else "no valid orgID"
        logger.warning("authorization %s belongs to organization %s, not to org_id %s; the listing by org_id does "
                       "not show it (and stage 2 never deletes it)", token_id, shown, self.settings.org_id)
        # Marked, so that bootstrap refuses to publish it into this policy's stores.
        whose = (f"organization {shown}" if shown != "no valid orgID"
                 else "no organization (its orgID is missing or not 16 hex digits)")
        return self._info(item)._replace(foreign=f"{whose}, not org_id {self.settings.org_id}")

    def list_tokens(self, credential: Secret | None) -> list[TokenInfo]:
        """Every authorization of ``org_id``; inactive ones have ``revoked_at`` = their ``updatedAt``."""
        return [self._info(a) for a in self._authorizations(self._credential(credential))]

    # -- helpers --------------------------------------------------------------------------------

    def _permissions(self, auth: Secret) -> list[dict[str, Any]]:
        if self.settings.permissions:
            return [p.body() for p in self.settings.permissions]
        template = _check_id(self.settings.copy_from_authorization_id or "")
        what = f"read template authorization {template}"
        with map_http_errors(what, hints={401: HINT_401, 404: HINT_TEMPLATE, 400: HINT_TEMPLATE}):
            response = expect(self._send("GET", _authorization(template), headers=auth_header("Token", auth)))
        answer = _split(json_body(response, what), what)[0]
        permissions = answer.get("permissions")
        if not isinstance(permissions, list) or not permissions:
            raise IssuerOutputError(f"{what}: the answer has no `permissions` list", hint=HINT_TEMPLATE)
        out = []
        for index, item in enumerate(permissions):
            resource = item.get("resource") if isinstance(item, dict) else None
            if not isinstance(resource, dict) or item.get("action") not in ("read", "write"):
                raise IssuerOutputError(f"{what}: permission {index} is not {{action, resource}}")
            # name and org are derived by the server from id and orgID: send only what defines access.
            kept = {k: resource[k] for k in ("type", "id", "orgID") if isinstance(resource.get(k), str)}
            if "type" not in kept:
                raise IssuerOutputError(f"{what}: permission {index} has no resource `type`")
            out.append({"action": item["action"], "resource": kept})
        return out

    def _gone(self, response: httpx.Response, what: str, token_id: str) -> str | None:
        """Why ``response`` says the authorization ``token_id`` is gone, for the log (None: it is no 404).

        Only InfluxDB's own 404 ``authorization not found`` counts, and ``user not found`` (its user
        was deleted: the token authenticates no more). ``organization not found`` is NeedsAttention:
        the authorization exists and its token may still work. Any other 404 (a proxy's, the
        router's ``path not found``, another message) says nothing of it: TransientError."""
        if response.status_code != 404:
            return None
        if error_code(response) != "not found":
            raise _not_influxdb_404(what, None)
        message = error_text(response, ("message",), plain_text=False).strip()
        if message.lower() == _AUTH_NOT_FOUND:
            return "was not found"
        if message.lower() == _USER_NOT_FOUND:
            return "belongs to a user that was deleted (InfluxDB refuses its token)"
        if message.lower() == _ORG_NOT_FOUND:
            raise self._org_deleted(what, token_id)
        raise _not_influxdb_404(what, message)

    def _org_deleted(self, what: str, token_id: str) -> NeedsAttention:
        """The 404 ``organization not found`` of an authorization whose organization was deleted: it
        still exists, its token may still authenticate, and the listing no longer shows it. A DELETE
        by id still works (it does not name the org: 204); rotator does not send it, because only a
        human knows whether that token must go now."""
        return NeedsAttention(
            f"{what}: InfluxDB answered 404 `{_ORG_NOT_FOUND}`: the authorization still exists but its "
            "organization was deleted, and its token may still authenticate (InfluxDB checks only its user); "
            "not counted as revoked",
            hint=f"delete it by id (InfluxDB answers 204 although its organization is gone; `influx auth list` no "
            f"longer shows it): curl -X DELETE -H \"Authorization: Token $INFLUX_TOKEN\" "
            f"{self.settings.base_url}{_authorization(token_id)} ; then `rotator revoke-expired --retry-failed "
            f"{self._policy}` records it as gone",
        )

    def _deactivate(self, token_id: str, description: str, auth: Secret) -> None:
        what = f"revoke authorization {token_id}"
        body = {"status": "inactive", "description": f"{description} {self._marker_for(token_id)}".strip()}
        with map_http_errors(what, hints={401: HINT_401}):
            response = self._send("PATCH", _authorization(token_id), json=body, headers=auth_header("Token", auth))
            gone = self._gone(response, what, token_id)
            if gone is not None:
                logger.warning("authorization %s %s while being revoked; treating it as revoked", token_id, gone)
                return
            expect(response, 200)
        answer = _split(json_body(response, what), what)[0]
        # A gateway that echoes the request body ({"status": "inactive", ...}) changed nothing: only
        # the authorization itself, as InfluxDB answers it, confirms the deactivation.
        if answer.get("id") != token_id:
            raise TransientError(
                ERR_NOT_THE_AUTHORIZATION.format(what=what, call="PATCH", auth_id=token_id),
                hint=HINT_NOT_THE_AUTHORIZATION,
            )
        status = answer.get("status")
        if status != "inactive":
            shown = redact_detail(status) if isinstance(status, str) else None
            raise TransientError(
                ERR_NOT_INACTIVE.format(auth_id=token_id, status=shown),
                hint="check the authorization in InfluxDB (`influx auth list --json`) and any proxy in front of it; "
                "rotator tries again on the next run",
            )
        logger.info(
            "authorization %s is inactive (stage 1; deleted after %s)",
            token_id,
            format_duration(self.settings.delete_after),
        )

    def _purge(self, auth: Secret) -> None:
        """Stage 2: delete what rotator made inactive at least ``delete_after`` ago, at most
        :data:`PURGE_PER_CALL` of them (the longest inactive first); the rest at the next revocations."""
        cutoff = self._clock.now() - self.settings.delete_after
        try:
            due: list[tuple[datetime, TokenInfo, Mapping[str, Any]]] = []
            for item in self._authorizations(auth):
                info = self._info(item)
                if item.get("status") != "inactive" or info.revoked_at is None or info.revoked_at > cutoff:
                    continue
                updated = parse_time(item.get("updatedAt"), f"authorization {info.token_id} `updatedAt`")
                if not self._retired_by_rotator(info.token_id, info.description, updated):
                    continue
                if not _AUTH_ID.fullmatch(info.token_id):
                    logger.warning("authorization %r has no v2 id; not deleting it", info.token_id[:40])
                    continue
                due.append((info.revoked_at, info, item))
            due.sort(key=lambda entry: entry[0])
            if len(due) > PURGE_PER_CALL:
                logger.info("%d inactive authorizations are due for deletion; deleting %d now, the rest at the next "
                            "revocations", len(due), PURGE_PER_CALL)
            for revoked_at, info, item in due[:PURGE_PER_CALL]:
                if not self._unchanged_since_listed(info.token_id, item, auth):
                    continue
                with map_http_errors(f"delete authorization {info.token_id}", hints={401: HINT_401}):
                    path = _authorization(info.token_id)
                    expect(self._send("DELETE", path, headers=auth_header("Token", auth)), 204, 404)
                logger.info(
                    "deleted authorization %s, inactive since %s (stage 2)", info.token_id, revoked_at.isoformat()
                )
        except RotatorError as exc:
            logger.warning("deleting old inactive authorizations failed, retried at the next revocation: %s", exc)

    def _unchanged_since_listed(self, auth_id: str, listed: Mapping[str, Any], auth: Secret) -> bool:
        """Whether ``auth_id`` is, read again just before its deletion, as the listing showed it: still
        inactive and not updated since. Someone may have made it active again meanwhile (a consumer
        still needed it) while rotator was paused; v2 has no conditional DELETE, so this narrows the
        window to one request."""
        what = f"read authorization {auth_id} before deleting it"
        with map_http_errors(what, hints={401: HINT_401}):
            response = expect(self._send("GET", _authorization(auth_id), headers=auth_header("Token", auth)), 200, 404)
        if response.status_code == 404:
            return False  # gone already
        current = _split(json_body(response, what), what)[0]
        if current.get("status") == "inactive" and current.get("updatedAt") == listed.get("updatedAt"):
            return True
        logger.info("authorization %s changed since it was listed (status %r); not deleting it", auth_id,
                    current.get("status"))
        return False

    def _authorizations(self, auth: Secret) -> list[Mapping[str, Any]]:
        what = "list authorizations"
        with map_http_errors(what, hints={401: HINT_401}):
            response = expect(
                self._send(
                    "GET", AUTHORIZATIONS, params={"orgID": self.settings.org_id}, headers=auth_header("Token", auth)
                )
            )
        answer = json_body(response, what)
        items = answer.get("authorizations") if isinstance(answer, dict) else None
        if not isinstance(items, list):
            raise IssuerOutputError(f"{what}: the answer has no `authorizations` list")
        out: list[Mapping[str, Any]] = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise IssuerOutputError(f"{what}: item {index} is not an object")
            # a value in clear text (OSS before hashed tokens): never kept, only its digest
            _keep_digest(item, item.pop("token", None))
            if not isinstance(item.get("id"), str) or not item["id"]:
                raise IssuerOutputError(f"{what}: item {index} has no string `id`")
            out.append(item)
        return out

    def _info(self, item: Mapping[str, Any]) -> TokenInfo:
        auth_id = str(item["id"])
        where = f"authorization {auth_id}"
        description = item.get("description")
        inactive = item.get("status") == "inactive"
        updated = parse_time(item.get("updatedAt"), f"{where} `updatedAt`")
        created = parse_time(item.get("createdAt"), f"{where} `createdAt`")
        return TokenInfo(
            token_id=auth_id,
            description=description if isinstance(description, str) else "",
            created_at=created,
            expires_at=None,
            # Inactive is v2's (reversible) revocation; updatedAt is when it happened, or later. Without
            # it the time is unknown: "now" (never createdAt, which would make stage 2 delete it at once).
            revoked_at=(updated or self._clock.now()) if inactive else None,
            value_sha256=item.get(_DIGEST_KEY),
        )


if TYPE_CHECKING:  # static conformance: mypy checks InfluxDB2Issuer against the Issuer Protocol
    _conforms: type[Issuer] = InfluxDB2Issuer


#: where an answer's item keeps the SHA-256 of the ``token`` it showed (TokenInfo.value_sha256)
_DIGEST_KEY = "rotator:value_sha256"


def _keep_digest(item: dict[str, Any], token: object) -> None:
    """Put in ``item`` the SHA-256 of the ``token`` an answer showed, where the server shows values
    (OSS before 2.9, or without hashed tokens); nothing where it does not (hashed tokens: no field;
    Cloud: ``redacted``; anything that is not a whole token)."""
    item.pop(_DIGEST_KEY, None)  # a server's own key of that name is not a digest rotator made
    if isinstance(token, str) and len(token) >= 16 and token != "redacted" and "*" not in token \
            and not token.startswith("$") and token == token.strip():  # ($: a PHC-format hash, not a value)
        item[_DIGEST_KEY] = hashlib.sha256(token.encode()).hexdigest()


#: What InfluxDB v2's router answers, with the code `not found`, for a path it does not serve
#: (kit/transport/http: ``ErrNotFound``): a URL rotator got wrong, nothing about an authorization.
_PATH_NOT_FOUND = "path not found"
#: OSS's 404 message for an authorization that does not exist (authorization/error.go ErrAuthNotFound;
#: the spec's example and the facts file §4 say the same): the authorization is gone.
_AUTH_NOT_FOUND = "authorization not found"
#: OSS's 404 message when the authorization exists but its user was deleted: the handler looks the
#: user up to name it in the answer (authorization/http_server.go newAuthResponse; ErrUserNotFound).
#: Its token is dead all the same: the authentication middleware refuses every token whose user it
#: cannot find (http/authentication_middleware.go isUserActive), as the docs say ("tokens stop
#: working when the user who created the token is deleted").
_USER_NOT_FOUND = "user not found"
#: OSS's 404 message when the authorization exists but its organization was deleted (newAuthResponse
#: looks the org up before the user; tenant ErrOrgNotFound). DeleteOrganization leaves the org's
#: authorizations in place and the middleware checks only the user: the token still authenticates.
_ORG_NOT_FOUND = "organization not found"


def _not_influxdb_404(what: str, message: str | None) -> TransientError:
    """A 404 that says nothing of the authorization: one without InfluxDB's ``not found`` code (a
    proxy's: ``message`` None), the router's ``path not found``, or a ``not found`` with a message
    rotator does not know to mean "gone"."""
    if message is not None and message.lower() == _PATH_NOT_FOUND:
        return TransientError(
            f"{what}: HTTP 404 `{_PATH_NOT_FOUND}`: the server does not serve this URL, which says nothing of "
            "the authorization",
            hint="check `base_url` (scheme, host and port only) and any proxy in front of InfluxDB that rewrites "
            "paths; rotator tries again on the next run",
        )
    if message is not None:
        return TransientError(
            f"{what}: HTTP 404 `not found` with the message {redact_detail(message)!r}, not InfluxDB's "
            f"`{_AUTH_NOT_FOUND}`: it does not say that the authorization is gone",
            hint="check the server's log for this request and `base_url`; rotator tries again on the next run",
        )
    return TransientError(
        f"{what}: HTTP 404 without InfluxDB's `not found` answer (a proxy or another service?)",
        hint="check `base_url` (it must reach InfluxDB itself); rotator tries again on the next run",
    )


def _check_id(token_id: str) -> str:
    """``token_id`` if it is a v2 authorization id (16 hex digits), else PermanentError: it goes into a URL path."""
    if not isinstance(token_id, str) or not _AUTH_ID.fullmatch(token_id):
        raise bad_token_id(token_id, "influxdb2", "an authorization id (16 lowercase hex digits)")
    return token_id


def _authorization(token_id: str) -> str:
    """``/api/v2/authorizations/<id>``, the id percent-encoded (it was checked already)."""
    return f"{AUTHORIZATIONS}/{path_segment(token_id)}"


def _is_user(content: bytes) -> bool:
    """Whether ``content`` is what ``GET /api/v2/me`` answers with 200: a UserResponse, whose ``id``
    is a platform.ID (16 lowercase hex digits)."""
    try:
        user = json.loads(content)
    except (ValueError, RecursionError):
        return False
    return isinstance(user, dict) and isinstance(user.get("id"), str) and bool(_AUTH_ID.fullmatch(user["id"]))


def _split(answer: object, what: str) -> tuple[dict[str, Any], object]:
    """The answer object without its ``token``, and the token apart (only mint keeps it; nothing logs it)."""
    if not isinstance(answer, dict):
        raise IssuerOutputError(f"{what}: the answer is a JSON {type(answer).__name__}, expected an object")
    return answer, answer.pop("token", None)
