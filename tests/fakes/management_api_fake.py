"""A fake InfluxDB Cloud Dedicated / Clustered cluster for database tokens, on :mod:`tests.fakes.openapi_fake`.

Two HTTP servers share one state:

- :attr:`ManagementApiFake.api`: the **Management API v0** (``/api/v0``), validated against the
  official spec of the product (``influxdb3-cloud-dedicated-management-openapi.yml`` or
  ``influxdb3-clustered-management-openapi.yml``). Dedicated paths are
  ``/accounts/{accountId}/clusters/{clusterId}/tokens[/{tokenId}]``, Clustered ``/tokens[/{tokenId}]``.
  It authenticates ``Authorization: Bearer <management token>`` with :attr:`management_auth`.
- :attr:`ManagementApiFake.data`: the cluster's **data plane**, where a *database* token is used.
  Only the InfluxDB v1-compatible ``GET /query`` (what the ``management-api`` issuer's ``verify``
  calls). No Dedicated/Clustered data-plane spec is in tests/specs, so it is validated
  against the InfluxDB 3 Core spec's ``GET /query`` (operationId ``GetV1ExecuteQuery``,
  ``influxdb3-core-influxdb3-core-openapi.yaml``): the same v1-compatible endpoint (``db``,
  ``q``, ``Authorization: Bearer``), but its error bodies are Core's (``{error, data}``), not
  the Dedicated data API's (``{code, message}``, docs-v2
  ``api-docs/influxdb3/cloud-dedicated/influxdb3-cloud-dedicated-openapi.yaml``, not copied here).
  The issuer reads only status codes from this endpoint, so the difference does not matter to it.

Behaviour, as documented (facts file §2.2), and where the docs are silent, as chosen here:

- create answers **200** with ``accessToken`` (``apiv1_`` + base64 of 512 random bits), shown
  once: the fake keeps only its SHA-256; list and get never include it;
- a new token answers **401** on the data plane until ``activation_delay_s`` has passed
  ("from a few seconds to a few minutes"); tokens added with :meth:`add_token` are active at once;
- ``DELETE`` answers **204**; by default the token stays listed with ``revokedAt`` (Clustered
  "revoke database tokens rather than deleting them"); ``delete_mode="remove"`` makes it vanish
  (the spec's wording, "Delete a database token"). Deleting a revoked token again: 204.
  Unknown ids: 404. (GAP in the docs: both behaviours are tested against the issuer.)
- errors are ``{"code": <status>, "message": ...}``; an account or cluster id other than the
  fake's (Dedicated) answers 404 (a GAP: the real API might answer 403);
- ``expiresAt`` on create is honoured (the spec's only expiry field; the Dedicated how-to's
  ``expirationType`` is in no spec, facts §7 inconsistency 3, and is not modelled);
  :attr:`ManagementApiFake.ignores_expires_at` ``True`` models a cluster that ignores it (one
  that wants that ``expirationType`` too): the token never expires, and no answer has ``expiresAt``;
- a permission ``action`` other than read/write answers 400 (the spec types it as a string; the
  docs list read and write);
- on the data plane: a token that is unknown, revoked, expired or not active yet → 401; a token
  without read permission on ``db`` (or ``*``) → 403; a database not in :attr:`databases` → 404
  (``databases=None``: every database exists).

Faults: :meth:`fail_next` answers a status (with a spec-shaped body) for the next N calls of an
operation (``create``, ``list``, ``get``, ``delete``, ``query``); :meth:`delay_next` and
:meth:`drop_next` make the client time out or lose the connection, optionally after the effect.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from tests.fakes.openapi_fake import (
    Call,
    FakeRequest,
    FakeResponse,
    Fault,
    OpenApiFake,
    empty_response,
    json_response,
    load_spec,
)

__all__ = [
    "ACCOUNT_ID",
    "CLUSTER_ID",
    "DATA_SPEC",
    "MANAGEMENT_SPECS",
    "ManagementApiFake",
    "ManagementAuth",
    "influxctl_management_auth",
]

Product = Literal["dedicated", "clustered"]
MANAGEMENT_SPECS: dict[str, str] = {
    "dedicated": "influxdb3-cloud-dedicated-management-openapi.yml",
    "clustered": "influxdb3-clustered-management-openapi.yml",
}
DATA_SPEC = "influxdb3-core-influxdb3-core-openapi.yaml"
ACCOUNT_ID = "11111111-1111-4111-8111-111111111111"
CLUSTER_ID = "33333333-3333-4333-8333-333333333333"

#: ``authenticate(value) -> (principal id, problem)``: problem is None when the management
#: token is accepted; the principal (a token id, never a value) is recorded in each call.
ManagementAuth = Callable[[str], tuple[str | None, str | None]]

_PREFIX = {"dedicated": "/accounts/{accountId}/clusters/{clusterId}", "clustered": ""}
_MESSAGES = {
    400: "bad request",
    401: "unauthorized",
    403: "forbidden",
    404: "not found",
    409: "conflict",
    500: "internal server error",
}


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _new_database_token() -> str:
    # "apiv<N>_<base64-encoded 512-bit random string>" (security.md); the spec's minLength is 64.
    return "apiv1_" + base64.b64encode(secrets.token_bytes(64)).decode().rstrip("=")


def influxctl_management_auth(state: Any) -> ManagementAuth:
    """Accept the management tokens the fake ``influxctl`` knows (a :class:`FakeInfluxctl`).

    So a management token minted by the ``influxctl-management`` issuer (fake influxctl) works
    against this Management API, as one cluster's tokens do.
    """
    from rotator.sandbox.influxctl_state import read_state, server_now, token_problem

    def authenticate(value: str) -> tuple[str | None, str | None]:
        snapshot = read_state(state.path)
        record, problem = token_problem(snapshot, value, server_now(snapshot))
        return (str(record["id"]) if record else None), problem

    return authenticate


class ManagementApiFake:
    """The fake cluster: Management API + data plane over one token state. Start with :meth:`running`."""

    def __init__(
        self,
        product: Product = "clustered",
        *,
        management_auth: ManagementAuth | None = None,
        activation_delay_s: float = 0.0,
        delete_mode: Literal["revoke", "remove"] = "revoke",
        databases: set[str] | None = None,
    ) -> None:
        self.product: Product = product
        self.account_id = ACCOUNT_ID
        self.cluster_id = CLUSTER_ID
        self.activation_delay_s = activation_delay_s
        self.delete_mode = delete_mode
        #: True: create ignores ``expiresAt``; new tokens never expire (see the module docstring).
        self.ignores_expires_at = False
        #: Databases that exist on the data plane; None: every name exists.
        self.databases = databases
        self._management_tokens: dict[str, dict[str, Any]] = {}  # sha256 -> {id, description, revoked}
        self.management_auth: ManagementAuth = management_auth or self._own_management_auth
        self._tokens: list[dict[str, Any]] = []
        self._lock = threading.RLock()
        self.api = OpenApiFake(load_spec(MANAGEMENT_SPECS[product]), name=f"management-api-{product}")
        self.data = OpenApiFake(load_spec(DATA_SPEC), name=f"data-plane-{product}")
        # Handlers of both servers run under one lock: they share the token state.
        self.api.lock = self.data.lock = self._lock
        prefix = _PREFIX[product]
        self.templates = {
            "list": ("GET", f"{prefix}/tokens"),
            "create": ("POST", f"{prefix}/tokens"),
            "get": ("GET", f"{prefix}/tokens/{{tokenId}}"),
            "delete": ("DELETE", f"{prefix}/tokens/{{tokenId}}"),
            "query": ("GET", "/query"),
        }
        self.api.add_route(*self.templates["list"], self._list)
        self.api.add_route(*self.templates["create"], self._create)
        self.api.add_route(*self.templates["get"], self._get)
        self.api.add_route(*self.templates["delete"], self._delete)
        self.data.add_route(*self.templates["query"], self._query)

    # -- lifecycle -----------------------------------------------------------------------

    @contextmanager
    def running(self) -> Iterator[ManagementApiFake]:
        """Serve both; at exit raise SpecMismatchError if either saw a request/response off the spec."""
        with self.api.running(), self.data.running():
            yield self

    @property
    def base_url(self) -> str:
        """The Management API base, like ``https://console.influxdata.com/api/v0``."""
        return self.api.base_url

    @property
    def cluster_url(self) -> str:
        """The data plane, like ``https://cluster-id.a.influxdb.io``."""
        return self.data.url

    def take_mismatches(self) -> list[Any]:
        return self.api.take_mismatches() + self.data.take_mismatches()

    # -- test set-up and inspection (never a token value in what is returned, except add_*) --

    def add_management_token(self, description: str = "created in the Admin UI") -> tuple[str, str]:
        """A management token this fake accepts (when no ``management_auth`` was given). Returns (value, id)."""
        value = "M.V1." + base64.b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        token_id = str(uuid.uuid4())
        with self._lock:
            self._management_tokens[_sha(value)] = {"id": token_id, "description": description, "revoked": False}
        return value, token_id

    def revoke_management_token(self, token_id: str) -> None:
        with self._lock:
            for record in self._management_tokens.values():
                if record["id"] == token_id:
                    record["revoked"] = True
                    return
        raise KeyError(token_id)

    def add_token(
        self,
        description: str = "created by a human",
        permissions: list[dict[str, str]] | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[str, str]:
        """A database token created out of band (active at once). Returns (value, id). One whose
        ``expires_at`` has passed was created a day before it (the API refuses an expiry in the past)."""
        value = _new_database_token()
        now = _now()
        created = min(now, expires_at - timedelta(days=1)) if expires_at else now
        record = self._record(description, permissions or [{"action": "read", "resource": "*"}], expires_at, created,
                              created)
        record["sha256"] = _sha(value)
        with self._lock:
            self._tokens.append(record)
        return value, str(record["id"])

    def tokens(self) -> list[dict[str, Any]]:
        """Every database token record (hash, never the value), revoked/removed ones included."""
        with self._lock:
            return [dict(t) for t in self._tokens]

    def token_by_id(self, token_id: str) -> dict[str, Any] | None:
        with self._lock:
            return next((dict(t) for t in self._tokens if t["id"] == token_id), None)

    def problem(self, value: str) -> str | None:
        """Why a database token cannot be used on the data plane now, or None."""
        with self._lock:
            record = next((t for t in self._tokens if t["sha256"] == _sha(value)), None)
            return self._token_problem(record)

    def is_active(self, value: str) -> bool:
        return self.problem(value) is None

    def calls(self, operation: str | None = None) -> list[Call]:
        """Calls to the Management API (and data plane for ``query``), oldest first."""
        if operation is None:
            with self._lock:
                return list(self.api.calls)
        method, template = self.templates[operation]
        fake = self.data if operation == "query" else self.api
        return fake.calls_to(method, template)

    # -- faults ----------------------------------------------------------------------------

    def fail_next(self, operation: str, status: int, *, times: int = 1, message: str | None = None) -> None:
        """Answer ``status`` (body shaped as the spec documents it) to the next ``times`` calls."""
        method, template = self.templates[operation]
        if operation == "query":
            # Core's /query: 401 has an ErrorMessage body, the other errors none.
            response = (
                json_response(status, {"error": message or "unauthorized access", "data": None})
                if status == 401
                else empty_response(status)
            )
            self.data.inject(method, template, Fault(response=response), times=times)
            return
        body = {"code": status, "message": message or _MESSAGES.get(status, "error")}
        self.api.inject(method, template, Fault(response=json_response(status, body)), times=times)

    def delay_next(self, operation: str, seconds: float, *, times: int = 1, after_effect: bool = True) -> None:
        method, template = self.templates[operation]
        fake = self.data if operation == "query" else self.api
        fake.inject(method, template, Fault(delay_s=seconds, after_handler=after_effect), times=times)

    def drop_next(self, operation: str, *, times: int = 1, after_effect: bool = False) -> None:
        method, template = self.templates[operation]
        fake = self.data if operation == "query" else self.api
        fake.inject(method, template, Fault(drop=True, after_handler=after_effect), times=times)

    # -- state helpers ---------------------------------------------------------------------

    def _own_management_auth(self, value: str) -> tuple[str | None, str | None]:
        record = self._management_tokens.get(_sha(value))
        if record is None:
            return None, "unknown token"
        return record["id"], "token revoked" if record["revoked"] else None

    def _record(
        self,
        description: str,
        permissions: list[dict[str, str]],
        expires_at: datetime | None,
        created: datetime,
        active_at: datetime,
    ) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            "description": description,
            "permissions": [dict(p) for p in permissions],
            "createdAt": _iso(created),
            "expiresAt": _iso(expires_at) if expires_at else None,
            "revokedAt": None,
            "removed": False,
            "active_at": active_at,
            "sha256": "",
        }

    def _token_problem(self, record: dict[str, Any] | None) -> str | None:
        now = _now()
        if record is None or record["removed"]:
            return "unknown token"
        if record["revokedAt"]:
            return "token revoked"
        if record["expiresAt"] and datetime.fromisoformat(record["expiresAt"]) <= now:
            return "token expired"
        if record["active_at"] > now:
            return "token not active yet"
        return None

    def _public(self, record: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.product == "dedicated":
            out |= {"accountId": self.account_id, "clusterId": self.cluster_id}
        out |= {k: record[k] for k in ("id", "description", "permissions", "createdAt")}
        for key in ("expiresAt", "revokedAt"):
            if record[key]:
                out[key] = record[key]
        return out

    def _error(self, status: int, message: str | None = None) -> FakeResponse:
        return json_response(status, {"code": status, "message": message or _MESSAGES[status]})

    def _authorize(self, req: FakeRequest) -> FakeResponse | None:
        """None when the management token is accepted and the path names this cluster."""
        value = req.bearer()
        principal, problem = self.management_auth(value) if value else (None, "no bearer token")
        req.principal = principal
        if problem is not None:
            return self._error(401)
        if self.product == "dedicated" and (
            req.path_params.get("accountId") != self.account_id or req.path_params.get("clusterId") != self.cluster_id
        ):
            return self._error(404)
        return None

    def _find(self, token_id: str) -> dict[str, Any] | None:
        return next((t for t in self._tokens if t["id"] == token_id and not t["removed"]), None)

    # -- Management API handlers -------------------------------------------------------------

    def _list(self, req: FakeRequest) -> FakeResponse:
        refused = self._authorize(req)
        if refused:
            return refused
        return json_response(200, [self._public(t) for t in self._tokens if not t["removed"]])

    def _create(self, req: FakeRequest) -> FakeResponse:
        refused = self._authorize(req)
        if refused:
            return refused
        body = req.json()
        permissions = body.get("permissions", [])
        if any(p.get("action") not in ("read", "write") for p in permissions):
            return self._error(400)
        expires = (
            datetime.fromisoformat(body["expiresAt"]) if body.get("expiresAt") and not self.ignores_expires_at else None
        )
        now = _now()
        record = self._record(
            body["description"], permissions, expires, now, now + timedelta(seconds=self.activation_delay_s)
        )
        value = _new_database_token()
        record["sha256"] = _sha(value)
        self._tokens.append(record)
        return json_response(200, {**self._public(record), "accessToken": value})

    def _get(self, req: FakeRequest) -> FakeResponse:
        refused = self._authorize(req)
        if refused:
            return refused
        record = self._find(req.path_params["tokenId"])
        return json_response(200, self._public(record)) if record else self._error(404)

    def _delete(self, req: FakeRequest) -> FakeResponse:
        refused = self._authorize(req)
        if refused:
            return refused
        record = self._find(req.path_params["tokenId"])
        if record is None:
            return self._error(404)
        record["revokedAt"] = record["revokedAt"] or _iso(_now())
        record["removed"] = self.delete_mode == "remove"
        return empty_response(204)

    # -- data plane ------------------------------------------------------------------------

    def _query(self, req: FakeRequest) -> FakeResponse:
        value = req.bearer()
        record = next((t for t in self._tokens if value and t["sha256"] == _sha(value)), None)
        if self._token_problem(record) is not None or record is None:
            return json_response(401, {"error": "unauthorized access", "data": None})
        req.principal = record["id"]
        database = req.arg("db") or ""
        if not any(p["action"] == "read" and p["resource"] in (database, "*") for p in record["permissions"]):
            return empty_response(403)
        if self.databases is not None and database not in self.databases:
            return empty_response(404)
        return json_response(200, {"results": [{"statement_id": 0}]})
