"""A fake InfluxDB v2 (OSS 2.x) server for API tokens, on :mod:`tests.fakes.openapi_fake`.

Every request and response is validated against ``influxdb-v2-influxdb-oss-v2-openapi.yaml``.
Behaviour, as documented (facts file §4, the spec's descriptions) and, where silent, as chosen here:

- one organization (:data:`ORG_ID`) and one user (:data:`USER_ID`); an operator token with
  every permission exists from the start (:attr:`InfluxDB2Fake.operator_value`);
- ``POST /api/v2/authorizations`` -> **201** ``Authorization`` with the token value: the only
  time it is shown when :attr:`hashed_tokens` is true (OSS 2.9+ ``use-hashed-tokens``, the
  default here): the fake keeps a SHA-256 and nothing else. With ``hashed_tokens = False``
  (older OSS) every ``GET`` answer carries the values in clear text, as the spec warns;
- ``GET /api/v2/authorizations[?orgID=&userID=]`` -> 200 ``{authorizations, links}``, filtered
  to what the token may read (``read:authorizations`` in the org, and ``read`` on the user an
  authorization belongs to: OSS leaves out, silently, every authorization of a user the token
  may not read, as the spec warns), possibly empty;
- ``GET|PATCH|DELETE /api/v2/authorizations/{authID}``: an id that is not 16 hex digits -> 400
  ``{"code": "invalid", "message": "id must have a length of 16 bytes"}``; unknown -> 404
  ``{"code": "not found", "message": "authorization not found"}``; PATCH sets ``status`` and/or
  ``description`` and ``updatedAt``; DELETE -> 204; each needs ``read`` (GET) or ``write``
  (PATCH, DELETE) on the authorization's user as well, else 401 ``read:users/<id> is unauthorized``;
  ``POST`` needs ``write`` on the new authorization's user;
- ``GET /api/v2/buckets`` -> 200 with the buckets the token may read (possibly none);
- ``GET /api/v2/me`` -> 200 with the token's user if it may read that user (``read:users/<id>``,
  tenant/middleware_user_auth.go), else 401 ``read:users/<id> is unauthorized``;
- authentication is ``Authorization: Token <value>``; an unknown token, or one not active yet
  (:attr:`activation_delay_s`, 0 by default: v2 documents no delay) -> 401 ``{"code":
  "unauthorized", "message": "unauthorized access"}``; a missing permission -> 401 too
  (``"write:orgs/<id>/authorizations is unauthorized"``, as OSS answers);
- an **inactive** token, as OSS treats it: the authentication middleware
  (http/authentication_middleware.go) finds it by value and does not look at its status, so it is
  authenticated; its permission set then fails every check (``Authorization.PermissionSet``:
  EUnauthorized ``token is inactive``). A check of one resource answers 401 ``token is inactive``
  (create, get, patch, delete, ``/api/v2/me``); a listing leaves out what fails so
  (``AuthorizeFind*``, authorizer/authorize_find.go): ``GET /api/v2/buckets`` and ``GET
  /api/v2/authorizations`` answer **200 with an empty list**;
- a permission whose ``resource.orgID`` is not the authorization's ``orgID``, or an unknown
  ``orgID`` -> 400 ``invalid``;
- a credential grants only what it holds itself: ``POST /api/v2/authorizations`` asking for a
  permission the caller's own set does not match -> **403** ``{"code": "forbidden", "message":
  "permission read:orgs/<org>/buckets/<id> is not allowed"}`` (authorizer/authorization.go
  CreateAuthorization -> VerifyPermissions, EForbidden; matched as ``Permission.Matches`` does,
  the resource written as ``Resource.Path`` does);
- :meth:`InfluxDB2Fake.delete_org` deletes the organization as OSS's ``DeleteOrganization`` does
  (tenant/service_org.go): its buckets go, **its authorizations stay**. Their tokens still
  authenticate (the middleware checks only the user), but every answer that names an
  authorization looks its org up first (authorization/http_server.go ``newAuthResponse``): ``GET``
  of one -> 404 ``{"code": "not found", "message": "organization not found"}``; ``PATCH`` applies
  the change, then answers that same 404; the listing leaves them out without an error;
  ``DELETE`` names no org and deletes it (204).

Faults: :meth:`fail_next` (``create``, ``list``, ``get``, ``patch``, ``delete``, ``buckets``, ``me``;
optionally with response headers such as ``Retry-After``),
:meth:`delay_next`, :meth:`drop_next`; :meth:`age` moves a token's times into the past (stage-2
deletion after ``delete_after``).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.fakes.openapi_fake import (
    FakeRequest,
    FakeResponse,
    Fault,
    OpenApiFake,
    ServedFake,
    empty_response,
    json_response,
    load_spec,
)

__all__ = ["BUCKET_ID", "ORG_ID", "SPEC", "USER_ID", "InfluxDB2Fake"]

SPEC = "influxdb-v2-influxdb-oss-v2-openapi.yaml"
ORG_ID = "0a0b0c0d0e0f1011"
USER_ID = "1a1b1c1d1e1f2021"
BUCKET_ID = "2a2b2c2d2e2f3031"
ORG_NAME, USER_NAME, BUCKET_NAME = "example-org", "rotator-admin", "telegraf"
OPERATIONS: dict[str, tuple[str, str]] = {
    "create": ("POST", "/api/v2/authorizations"),
    "list": ("GET", "/api/v2/authorizations"),
    "get": ("GET", "/api/v2/authorizations/{authID}"),
    "patch": ("PATCH", "/api/v2/authorizations/{authID}"),
    "delete": ("DELETE", "/api/v2/authorizations/{authID}"),
    "buckets": ("GET", "/api/v2/buckets"),
    "me": ("GET", "/api/v2/me"),
}
_ID = re.compile(r"^[0-9a-f]{16}$")
_CODES = {400: "invalid", 401: "unauthorized", 403: "forbidden", 404: "not found", 409: "conflict",
          429: "too many requests", 500: "internal error", 503: "unavailable"}  # fmt: skip
#: OSS's error for any permission check of an inactive token (Authorization.PermissionSet).
INACTIVE = "token is inactive"
ALL_TYPES = ("authorizations", "buckets", "dashboards", "orgs", "tasks", "telegrafs", "users", "variables")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _new_value() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(64)).decode()


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> FakeResponse:
    return json_response(status, {"code": _CODES.get(status, "internal error"), "message": message}, headers)


def _permission_text(perm: dict[str, Any]) -> str:
    """``read:orgs/<org>/buckets/<id>``: a permission as OSS writes it (Permission.String, Resource.Path)."""
    res = perm["resource"]
    path = res["type"] if res.get("id") is None else f"{res['type']}/{res['id']}"
    if res.get("orgID") is not None:
        path = f"orgs/{res['orgID']}/{path}"
    return f"{perm['action']}:{path}"


def _matches(held: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether the permission ``held`` covers ``wanted``, as OSS's Permission.Matches decides: same
    action and type; then a held one without org and id covers every resource of the type, one with
    an org only every resource of that org, one with an id that resource (its org not compared)."""
    have, want = held["resource"], wanted["resource"]
    if held["action"] != wanted["action"] or have["type"] != want["type"]:
        return False
    if have.get("orgID") is None and have.get("id") is None:
        return True
    if have.get("id") is None:
        return want.get("orgID") is not None and want.get("orgID") == have.get("orgID")
    return want.get("id") is not None and want.get("id") == have.get("id")


@dataclass
class _Auth:
    id: str
    hash: str
    description: str
    status: str
    org_id: str
    user_id: str
    permissions: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime
    active_from: datetime
    value: str | None = None  # kept only when the server does not hash tokens
    extra: dict[str, Any] = field(default_factory=dict)

    def may(self, action: str, rtype: str, org_id: str | None, res_id: str | None = None) -> bool:
        """Whether the permission set allows it (an inactive token's allows nothing: see :meth:`refusal`)."""
        if self.status != "active":
            return False
        for perm in self.permissions:
            res = perm["resource"]
            if perm["action"] != action or res["type"] != rtype:
                continue
            if res.get("orgID") not in (None, org_id):
                continue
            if res.get("id") not in (None, res_id):
                continue
            return True
        return False

    def refusal(self, permission: str) -> FakeResponse:
        """OSS's 401 when a check of ``permission`` (``read:users/<id>``) fails for this token."""
        return _error(401, INACTIVE if self.status != "active" else f"{permission} is unauthorized")


class InfluxDB2Fake(ServedFake):
    """One InfluxDB OSS v2 server; see the module docstring."""

    operations = OPERATIONS

    def __init__(self, *, hashed_tokens: bool = True) -> None:
        self.api = OpenApiFake(load_spec(SPEC), name="influxdb2")
        self.hashed_tokens = hashed_tokens
        self.activation_delay_s = 0.0
        self._auths: dict[str, _Auth] = {}
        #: Every value's sha256 this fake ever issued, deleted since or not -> its id (the leak check
        #: hashes what rotator wrote: tests/harness.py assert_no_leak's ``issued``)
        self._issued: dict[str, str] = {}
        #: Ids deleted so far, in order.
        self.deleted: list[str] = []
        #: When each id was made inactive through the API (PATCH), the first time.
        self.inactive_since: dict[str, datetime] = {}
        #: Organizations deleted by :meth:`delete_org` (their authorizations are kept).
        self.deleted_orgs: set[str] = set()
        operator = [{"action": a, "resource": {"type": t}} for t in ALL_TYPES for a in ("read", "write")]
        self.operator_value, self.operator_id = self.add_authorization("operator token", operator)
        for operation, (method, path) in OPERATIONS.items():
            self.api.add_route(method, path, getattr(self, f"_{operation}"))

    # -- lifecycle and inspection ----------------------------------------------------------------

    def add_authorization(
        self, description: str, permissions: list[dict[str, Any]], *, status: str = "active"
    ) -> tuple[str, str]:
        """An authorization made by a human (active at once); returns ``(value, id)``."""
        with self.api.lock:
            auth, value = self._new_auth(description, permissions, status, USER_ID, activation=False)
            return value, auth.id

    def authorizations(self) -> list[dict[str, Any]]:
        """Every authorization as the API shows it, never with its value."""
        with self.api.lock:
            return [self._view(a, with_value=False) for a in self._auths.values()]

    def issued(self) -> dict[str, str]:
        """``{sha256 hex of the value: id}`` of every authorization this fake ever issued (no value)."""
        with self.api.lock:
            return dict(self._issued)

    def authorization(self, auth_id: str) -> dict[str, Any] | None:
        return next((a for a in self.authorizations() if a["id"] == auth_id), None)

    def problem(self, value: str) -> str | None:
        """Why the server would refuse ``value`` (None: it is accepted); "inactive": authenticated, but
        every permission check fails."""
        with self.api.lock:
            auth = self._by_value(value)
            if auth is None:
                return "unknown token"
            if auth.status != "active":
                return "inactive"
            if self.now() < auth.active_from:
                return "not active yet"
            return None

    def age(self, auth_id: str, seconds: float) -> None:
        """Move an authorization's createdAt/updatedAt ``seconds`` into the past."""
        with self.api.lock:
            auth = self._auths[auth_id]
            auth.created_at -= timedelta(seconds=seconds)
            auth.updated_at -= timedelta(seconds=seconds)

    def set_description(self, auth_id: str, description: str) -> None:
        """What ``influx auth`` editing a description does (updatedAt moves)."""
        with self.api.lock:
            auth = self._auths[auth_id]
            auth.description, auth.updated_at = description, self.now()

    def delete_org(self, org_id: str = ORG_ID) -> None:
        """What ``influx org delete`` does: the organization and its buckets go, its authorizations stay
        (and their tokens keep authenticating); see the module docstring for the answers that follow."""
        with self.api.lock:
            self.deleted_orgs.add(org_id)

    def set_status(self, auth_id: str, status: str) -> None:
        """What ``influx auth active|inactive`` does (updatedAt moves)."""
        with self.api.lock:
            auth = self._auths[auth_id]
            auth.status, auth.updated_at = status, self.now()

    # -- faults ----------------------------------------------------------------------------------

    def fail_next(
        self, operation: str, status: int, *, times: int = 1, message: str = "injected",
        headers: dict[str, str] | None = None,
    ) -> None:
        method, path = OPERATIONS[operation]
        response = empty_response(status, headers) if status == 204 else _error(status, message, headers)
        self.api.inject(method, path, Fault(response=response), times=times)

    # -- state -------------------------------------------------------------------------------------

    def _new_auth(
        self, description: str, permissions: list[dict[str, Any]], status: str, user_id: str, *, activation: bool
    ) -> tuple[_Auth, str]:
        value = _new_value()
        now = self.now()
        auth_id = secrets.token_hex(8)
        auth = _Auth(
            id=auth_id, hash=_sha(value), description=description, status=status, org_id=ORG_ID, user_id=user_id,
            permissions=[{"action": p["action"], "resource": dict(p["resource"])} for p in permissions],
            created_at=now, updated_at=now,
            active_from=now + timedelta(seconds=self.activation_delay_s if activation else 0),
            value=None if self.hashed_tokens else value,
        )  # fmt: skip
        self._auths[auth_id] = auth
        self._issued[auth.hash] = auth_id
        return auth, value

    def _by_value(self, value: str) -> _Auth | None:
        digest = _sha(value)
        return next((a for a in self._auths.values() if a.hash == digest), None)

    def _view(self, auth: _Auth, *, with_value: bool, value: str | None = None) -> dict[str, Any]:
        permissions = []
        for perm in auth.permissions:
            resource = dict(perm["resource"])
            if resource.get("orgID") == ORG_ID:
                resource["org"] = ORG_NAME
            if resource.get("id") == BUCKET_ID:
                resource["name"] = BUCKET_NAME
            permissions.append({"action": perm["action"], "resource": resource})
        view: dict[str, Any] = {
            "id": auth.id, "description": auth.description, "status": auth.status,
            "orgID": auth.org_id, "org": ORG_NAME, "userID": auth.user_id, "user": USER_NAME,
            "permissions": permissions, "createdAt": _iso(auth.created_at), "updatedAt": _iso(auth.updated_at),
            "links": {"self": f"/api/v2/authorizations/{auth.id}", "user": f"/api/v2/users/{auth.user_id}"},
        }  # fmt: skip
        shown = value if value is not None else (auth.value if with_value else None)
        if shown is not None:
            view["token"] = shown
        return view

    def _authenticate(self, req: FakeRequest) -> tuple[_Auth | None, FakeResponse | None]:
        """The caller, found by its value: an inactive one too (its status is not looked at here)."""
        value = req.auth("Token")
        problem = self.problem(value) if value else "no token"
        if problem is not None and problem != "inactive":
            return None, _error(401, "unauthorized access")
        auth = self._by_value(value or "")
        assert auth is not None
        req.principal = auth.id
        return auth, None

    def _target(self, req: FakeRequest) -> tuple[_Auth | None, FakeResponse | None]:
        auth_id = req.path_params["authID"]
        if not _ID.match(auth_id):
            return None, _error(400, "id must have a length of 16 bytes")
        target = self._auths.get(auth_id)
        if target is None:
            return None, _error(404, "authorization not found")
        return target, None

    # -- handlers ----------------------------------------------------------------------------------

    def _create(self, req: FakeRequest) -> FakeResponse:
        caller, refusal = self._authenticate(req)
        if refusal:
            return refusal
        assert caller is not None
        body = req.json()
        org_id = body["orgID"]
        if org_id != ORG_ID or org_id in self.deleted_orgs:
            return _error(400, f"organization {org_id} not found")
        if not caller.may("write", "authorizations", org_id):
            return caller.refusal(f"write:orgs/{org_id}/authorizations")
        owner = body.get("userID", caller.user_id)
        if not caller.may("write", "users", None, owner):
            return caller.refusal(f"write:users/{owner}")
        for perm in body["permissions"]:
            if perm["resource"].get("orgID") not in (None, org_id):
                return _error(400, f"permission {_permission_text(perm)} is not for org id {org_id}")
        for perm in body["permissions"]:
            if not any(_matches(held, perm) for held in caller.permissions):
                return _error(403, f"permission {_permission_text(perm)} is not allowed")
        auth, value = self._new_auth(
            body.get("description", ""), body["permissions"], body.get("status", "active"),
            body.get("userID", caller.user_id), activation=True,
        )  # fmt: skip
        return json_response(201, self._view(auth, with_value=True, value=value))

    def _list(self, req: FakeRequest) -> FakeResponse:
        caller, refusal = self._authenticate(req)
        if refusal:
            return refusal
        assert caller is not None
        org, user = req.arg("orgID"), req.arg("userID")
        items = [
            self._view(a, with_value=True)
            for a in self._auths.values()
            if (org is None or a.org_id == org) and (user is None or a.user_id == user)
            and a.org_id not in self.deleted_orgs  # newAuthResponse fails: skipped without an error
            and caller.may("read", "authorizations", a.org_id) and caller.may("read", "users", None, a.user_id)
        ]  # fmt: skip
        return json_response(200, {"authorizations": items, "links": {"self": "/api/v2/authorizations"}})

    def _get(self, req: FakeRequest) -> FakeResponse:
        target, refusal = self._authorized_target(req, "read")
        if refusal:
            return refusal
        assert target is not None
        return self._answer(target)

    def _answer(self, target: _Auth) -> FakeResponse:
        """The authorization as GET and PATCH answer it: newAuthResponse looks its org up to name it."""
        if target.org_id in self.deleted_orgs:
            return _error(404, "organization not found")
        return json_response(200, self._view(target, with_value=True))

    def _authorized_target(self, req: FakeRequest, action: str) -> tuple[Any, FakeResponse | None]:
        """The authorization the path names, if the caller may ``action`` it (else the refusal)."""
        caller, refusal = self._authenticate(req)
        if refusal:
            return None, refusal
        assert caller is not None
        target, missing = self._target(req)
        if missing:
            return None, missing
        assert target is not None
        if not caller.may(action, "authorizations", target.org_id):
            return None, caller.refusal(f"{action}:orgs/{target.org_id}/authorizations")
        if not caller.may(action, "users", None, target.user_id):
            return None, caller.refusal(f"{action}:users/{target.user_id}")
        return target, None

    def _patch(self, req: FakeRequest) -> FakeResponse:
        target, refusal = self._authorized_target(req, "write")
        if refusal:
            return refusal
        assert target is not None
        body = req.json()
        if "status" in body:
            target.status = body["status"]
            if target.status == "inactive":
                self.inactive_since.setdefault(target.id, self.now())
        if "description" in body:
            target.description = body["description"]
        target.updated_at = self.now()
        return self._answer(target)  # updated already, whatever the answer

    def _delete(self, req: FakeRequest) -> FakeResponse:
        target, refusal = self._authorized_target(req, "write")
        if refusal:
            return refusal
        assert target is not None
        del self._auths[target.id]
        self.deleted.append(target.id)
        return empty_response(204)

    def _buckets(self, req: FakeRequest) -> FakeResponse:
        caller, refusal = self._authenticate(req)
        if refusal:
            return refusal
        assert caller is not None
        buckets = []
        if ORG_ID not in self.deleted_orgs and caller.may("read", "buckets", ORG_ID, BUCKET_ID):
            buckets.append(
                {
                    "id": BUCKET_ID,
                    "name": BUCKET_NAME,
                    "orgID": ORG_ID,
                    "type": "user",
                    "retentionRules": [{"type": "expire", "everySeconds": 0}],
                }
            )
        limit = int(req.arg("limit") or 20)
        return json_response(200, {"buckets": buckets[:limit], "links": {"self": "/api/v2/buckets"}})

    def _me(self, req: FakeRequest) -> FakeResponse:
        caller, refusal = self._authenticate(req)
        if refusal:
            return refusal
        assert caller is not None
        if not caller.may("read", "users", None, caller.user_id):
            return caller.refusal(f"read:users/{caller.user_id}")
        user = {"id": caller.user_id, "name": USER_NAME, "status": "active",
                "links": {"self": f"/api/v2/users/{caller.user_id}"}}  # fmt: skip
        return json_response(200, user)
