"""A fake InfluxDB 3 Core / Enterprise server for token management, on :mod:`tests.fakes.openapi_fake`.

Every request and response is validated against the official spec of the edition
(``influxdb3-core-influxdb3-core-openapi.yaml`` or ``influxdb3-enterprise-influxdb3-enterprise-openapi.yaml``).
Behaviour, as documented (facts file §3) and, where the docs are silent, as chosen here:

- the operator token ``_admin`` exists from the start (:attr:`InfluxDB3Fake.operator_value`);
  ``POST /api/v3/configure/token/admin/regenerate`` with the current operator value gives it a
  new value and the old one stops working **at once** (same id, new hash, ``updated_at`` set);
- ``POST /api/v3/configure/token/named_admin {token_name, expiry_secs}`` -> 201
  ``{id, name, token, hash, created_at, expiry}``; a name that exists -> **409**;
- ``POST /api/v3/enterprise/configure/token`` (Enterprise only) -> 201 with the spec's
  ``ResourceTokenObject`` fields plus the server's real ones (``id, name, token, hash, ...``;
  facts §3.2: the spec's schema lacks ``token``, an object schema allows the extra keys);
- :attr:`InfluxDB3Fake.honours_expiry` ``False`` models a server that ignores ``expiry_secs``
  (one that predates it, or a proxy that drops it): the token never expires, and the 201 answer
  says so as the spec does, ``"expiry": null`` (the ``AdminTokenObject`` example);
- the token string is in the 201 answer only: the fake keeps a SHA-512 (as the server does,
  ``hash`` = hex) and no value. The 201 answer holds the whole hex hash
  (``CreateTokenWithPermissionsResponse``, influxdb3_types/src/http.rs); ``system.tokens`` shows
  only its first 9 digits, and has no ``hash`` column at all on a server started without auth
  (``influxdb3_server/src/system_tables/tokens.rs``: ``&hex::encode(&token.hash)[..9]`` when
  ``started_with_auth``): :attr:`InfluxDB3Fake.started_with_auth`;
- ``DELETE /api/v3/configure/token?token_name=`` -> 200, or 404 for an unknown name; ``_admin``
  cannot be deleted: **405** ``cannot delete operator token``, plain text without a content type
  (influxdb3_catalog ``delete_token`` -> ``CatalogError::CannotDeleteOperatorToken``;
  influxdb3_server/src/http.rs ``IntoResponse``: METHOD_NOT_ALLOWED; the issuer never sends it);
- ``POST /api/v3/query_sql``: the ``Accept`` header is read first, as the server does
  (``extract_query_request`` -> ``QueryFormat::try_from_headers``, influxdb3_types/src/http.rs):
  only ``application/vnd.apache.parquet``, ``text/csv``, ``text/plain``, ``application/json``,
  ``*/*``, no header, or a value containing ``text/html`` or ``*/*`` pass; any other value (the
  spec's own ``application/jsonl`` included) answers **500** ``invalid mime type (<value>)``, plain
  text without a content type (``Error::Influxdb3TypesHttp`` falls to the default arm of the
  server's ``IntoResponse``) before the body is read. The spec documents no 500 here: :func:`_spec`
  adds it. Then, with ``format = "jsonl"``: ``SELECT * FROM system.tokens`` on
  ``_internal`` (admin tokens only, else 403) answers one JSON object per row, with the columns
  of ``influxdb3_server/src/system_tables/tokens.rs`` and timestamps as Arrow's JSON writer
  prints a ``Timestamp(Millisecond, None)`` (``2025-06-01T10:00:00.123``, no zone);
  ``SELECT 1`` on a database of :attr:`databases` answers 200 to a token that may read it and
  403 to one that may not; any other query or format -> 400;
- ``GET /health`` and ``GET /ping``: 200 (``OK``; the version JSON and headers) for an admin
  token or a resource token with ``system:health`` / ``system:ping`` (or ``system:*``), else 401
  (the spec documents no 403 here). ``disable_authz`` (``influxdb3 serve --disable-authz
  health,ping,metrics``, facts §3.5) names the endpoints that answer 200 without looking at the
  token at all: any value, known or not, gets in;
- ``GET /metrics``: 200 to every request, token or not: the spec documents no other answer
  (no 401), so the fake serves it as if ``metrics`` were always in ``disable_authz``;
- authentication: no/unknown/expired token -> 401 ``{"error": ..., "data": null}``; a token not
  active yet (:attr:`activation_delay_s` after its creation; 0 by default, InfluxDB 3 documents
  no delay) -> 401; on the token endpoints a token that is not an admin token -> 401 too (their
  spec documents no 403).

Workaround for the framework (:mod:`tests.fakes.openapi_fake` is not ours to change): openapi-core
deserializes a body by media type and knows no ``application/jsonl``, so it hands the bytes to
the spec's ``type: string`` schema and reports every JSON-lines answer as invalid. The fake
therefore validates against a copy of the loaded spec whose openapi-core object also decodes
``application/jsonl`` (and ``text/csv``) as text, like ``text/plain`` (:func:`_spec`). The same
copy documents the answers the server gives and the spec lacks (:data:`SERVER_ANSWERS`: the
500 of an unknown ``Accept`` on ``/api/v3/query_sql``, the 405 of a DELETE of ``_admin``). Every
other check is the framework's own.

Differences from the real server, kept on purpose: answers carry ``Content-Type:
application/json`` (the server sends the literal ``json``, facts §3.2, which the spec does not
allow: the fake cannot send it, the issuer does not depend on it).

Faults: :meth:`fail_next` answers a documented status for the next N calls of an operation
(``named_admin``, ``resource``, ``regenerate``, ``delete``, ``query``, ``health``, ``ping``),
:meth:`delay_next` / :meth:`drop_next` make the client time out or lose the connection,
optionally after the effect.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import json
import re
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from openapi_core import Config, OpenAPI

from tests.fakes.openapi_fake import (
    FakeRequest,
    FakeResponse,
    Fault,
    OpenApiFake,
    ServedFake,
    Spec,
    empty_response,
    json_response,
    load_spec,
    text_response,
)

__all__ = ["InfluxDB3Fake", "SPECS", "new_value", "token_hash"]

Edition = Literal["core", "enterprise"]
SPECS: dict[str, str] = {
    "core": "influxdb3-core-influxdb3-core-openapi.yaml",
    "enterprise": "influxdb3-enterprise-influxdb3-enterprise-openapi.yaml",
}
OPERATIONS: dict[str, tuple[str, str]] = {
    "named_admin": ("POST", "/api/v3/configure/token/named_admin"),
    "resource": ("POST", "/api/v3/enterprise/configure/token"),
    "regenerate": ("POST", "/api/v3/configure/token/admin/regenerate"),
    "delete": ("DELETE", "/api/v3/configure/token"),
    "query": ("POST", "/api/v3/query_sql"),
    "health": ("GET", "/health"),
    "ping": ("GET", "/ping"),
    "metrics": ("GET", "/metrics"),
}
#: What ``--disable-authz`` may name.
AUTHZ_EXEMPTABLE = frozenset({"health", "ping", "metrics"})
ADMIN = "*:*:*"
#: The server version ``/ping`` reports.
VERSION = "3.8.0"
_SPACES = re.compile(r"\s+")


#: Answers the server gives that the spec does not document, added to the fake's copy of the spec:
#: (path, method, status) -> the Response Object, with the source that shows the server sends it.
SERVER_ANSWERS: dict[tuple[str, str, str], dict[str, Any]] = {
    ("/api/v3/query_sql", "post", "500"): {
        "description": "An Accept header the server does not know: `invalid mime type (<value>)`, plain text "
        "(influxdb3_types/src/http.rs QueryFormat::try_from_headers -> Error::InvalidMimeType; "
        "influxdb3_server/src/http.rs IntoResponse for Error: the default arm, 500)",
    },
    ("/api/v3/configure/token", "delete", "405"): {
        "description": "The operator token `_admin` cannot be deleted: `cannot delete operator token`, plain text "
        "(influxdb3_catalog Catalog::delete_token -> CatalogError::CannotDeleteOperatorToken; "
        "influxdb3_server/src/http.rs IntoResponse for Error: METHOD_NOT_ALLOWED)",
    },
}
#: What ``QueryFormat::try_from_headers`` (influxdb3_types/src/http.rs) takes as it is.
KNOWN_ACCEPT = frozenset({"application/vnd.apache.parquet", "text/csv", "text/plain", "application/json", "*/*"})


def _as_text(value: bytes | str, **parameters: str) -> str:
    """A request body as text: a media type deserializer (openapi-core's public Config hook)."""
    return value if isinstance(value, str) else value.decode(parameters.get("charset", "utf-8"), "surrogateescape")


@functools.cache
def _spec(name: str) -> Spec:
    """The loaded spec ``name`` plus :data:`SERVER_ANSWERS`, validated by an openapi-core object that
    reads JSON lines as text."""
    base = load_spec(name)
    spec = copy.copy(base)  # a shallow copy: the cached Spec other fakes use stays as it is
    raw = copy.deepcopy(base.raw)
    for (path, method, status), answer in SERVER_ANSWERS.items():
        responses = raw["paths"][path][method]["responses"]
        if status in responses:
            raise RuntimeError(f"{name} documents {method.upper()} {path} {status} now: drop it from SERVER_ANSWERS")
        responses[status] = answer
    spec.raw = raw
    text = {"application/jsonl": _as_text, "text/csv": _as_text}
    spec.openapi = OpenAPI.from_dict(raw, config=Config(extra_media_type_deserializers=text))
    return spec


def cannot_delete_operator() -> FakeResponse:
    """The server's answer to a DELETE of the operator token (see SERVER_ANSWERS); a new one each time
    (a FakeResponse's headers are mutable)."""
    return FakeResponse(405, b"cannot delete operator token", None)


def accept_refusal(accept: str | None) -> FakeResponse | None:
    """The server's answer to a query with this ``Accept`` header before it reads the body (None: it goes on)."""
    if accept is None or accept in KNOWN_ACCEPT or "text/html" in accept or "*/*" in accept:
        return None
    return FakeResponse(500, f"invalid mime type ({accept})".encode(), None)


def new_value() -> str:
    """``apiv3_`` + base64 of 64 random bytes, as the server makes them."""
    return "apiv3_" + base64.b64encode(secrets.token_bytes(64)).decode()


def token_hash(value: str) -> str:
    return hashlib.sha512(value.encode()).hexdigest()


def _arrow_ms(moment: datetime | None) -> str | None:
    """A ``Timestamp(Millisecond, None)`` as arrow-json writes it: ISO 8601, no zone."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def _rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class _Token:
    id: int
    name: str
    hash: str
    created_at: datetime
    expiry: datetime | None
    permissions: str
    active_from: datetime
    updated_at: datetime | None = None

    @property
    def is_admin(self) -> bool:
        return self.permissions == ADMIN

    def row(self, *, with_hash: bool = True) -> dict[str, Any]:
        """The token's row of system.tokens: the first 9 hex digits of its hash, and no ``hash`` column
        on a server started without auth (tokens.rs)."""
        row = {
            "token_id": self.id, "name": self.name, "hash": self.hash[:9],
            "created_at": _arrow_ms(self.created_at), "description": None, "created_by_token_id": None,
            "updated_at": _arrow_ms(self.updated_at), "updated_by_token_id": None,
            "expiry": _arrow_ms(self.expiry), "permissions": self.permissions,
        }  # fmt: skip
        if not with_hash:
            del row["hash"]
        return row

    def may(self, resource_type: str, name: str, action: str) -> bool:
        if self.is_admin:
            return True
        for part in self.permissions.split(";"):
            rtype, _, rest = part.partition(":")
            names, _, actions = rest.partition(":")
            if rtype == resource_type and (name in names.split(",") or "*" in names.split(",")):
                if action in actions.split(","):
                    return True
        return False


class InfluxDB3Fake(ServedFake):
    """One InfluxDB 3 server of ``edition``; see the module docstring."""

    operations = OPERATIONS

    def __init__(self, edition: Edition = "core", *, disable_authz: Iterable[str] = ()) -> None:
        self.edition = edition
        #: Endpoints served without authentication (``--disable-authz``): any token gets in.
        self.disable_authz = frozenset(disable_authz)
        if not self.disable_authz <= AUTHZ_EXEMPTABLE:
            raise ValueError(f"--disable-authz takes {sorted(AUTHZ_EXEMPTABLE)}, not {sorted(self.disable_authz)}")
        self.api = OpenApiFake(_spec(SPECS[edition]), name=f"influxdb3-{edition}")
        self.activation_delay_s = 0.0
        #: False: ``expiry_secs`` is ignored, new tokens never expire (and the answer says so).
        self.honours_expiry = True
        self.process_id = str(uuid.uuid4())
        #: False: system.tokens has no ``hash`` column (``influxdb3 serve --without-auth``; the fake
        #: still checks tokens, only the listing changes).
        self.started_with_auth = True
        self.databases: set[str] = {"sensors"}
        #: Names of the tokens deleted so far, in order, and when.
        self.deleted: list[str] = []
        self.deleted_at: dict[str, datetime] = {}
        self._tokens: dict[int, _Token] = {}
        #: Every value's hash this fake ever issued, deleted or regenerated since -> the token's name
        #: (the leak check hashes what rotator wrote: tests/harness.py assert_no_leak's ``issued``)
        self._issued: dict[str, str] = {}
        self._next_id = 0
        #: The operator token's current value (tests only; the server itself keeps no value).
        self.operator_value = self._create("_admin", ADMIN, None, activation=False)[1]
        api = self.api
        api.add_route(*OPERATIONS["named_admin"], self._named_admin)
        api.add_route(*OPERATIONS["regenerate"], self._regenerate)
        api.add_route(*OPERATIONS["delete"], self._delete)
        api.add_route(*OPERATIONS["query"], self._query)
        api.add_route(*OPERATIONS["health"], self._health)
        api.add_route(*OPERATIONS["ping"], self._ping)
        api.add_route(*OPERATIONS["metrics"], self._metrics)
        if edition == "enterprise":
            api.add_route(*OPERATIONS["resource"], self._resource)

    # -- lifecycle and inspection ----------------------------------------------------------------

    def add_named_admin(self, name: str, expiry_s: float | None = None) -> str:
        """A named admin token as a human would make it (active at once); returns its value."""
        with self.api.lock:
            expiry = self.now() + timedelta(seconds=expiry_s) if expiry_s is not None else None
            return self._create(name, ADMIN, expiry, activation=False)[1]

    def add_resource_token(self, name: str, permissions: str, expiry_s: float | None = None) -> str:
        """A resource token with ``permissions`` such as ``db:sensors:read``; returns its value."""
        with self.api.lock:
            expiry = self.now() + timedelta(seconds=expiry_s) if expiry_s is not None else None
            return self._create(name, permissions, expiry, activation=False)[1]

    def tokens(self) -> list[dict[str, Any]]:
        """Every token as system.tokens shows it (no values)."""
        with self.api.lock:
            return [t.row(with_hash=self.started_with_auth) for t in sorted(self._tokens.values(), key=lambda t: t.id)]

    def token(self, name: str) -> dict[str, Any] | None:
        return next((t for t in self.tokens() if t["name"] == name), None)

    def names(self) -> set[str]:
        return {t["name"] for t in self.tokens()}

    def problem(self, value: str) -> str | None:
        """Why the server would refuse ``value`` (None: it is accepted)."""
        with self.api.lock:
            token = self._by_value(value)
            if token is None:
                return "unknown token"
            now = self.now()
            if token.expiry is not None and now >= token.expiry:
                return "expired"
            if now < token.active_from:
                return "not active yet"
            return None

    def issued(self) -> dict[str, str]:
        """``{token_hash(value): name}`` of every value this fake ever issued (no value)."""
        with self.api.lock:
            return dict(self._issued)

    def recover_operator(self) -> str:
        """What ``influxdb3 serve --admin-token-recovery-http-bind`` + ``create token --admin --regenerate
        --host <recovery address>`` do out of band (that endpoint is in no spec): a new _admin value."""
        with self.api.lock:
            token = self._by_name("_admin")
            assert token is not None
            value = new_value()
            token.hash, token.updated_at = token_hash(value), self.now()
            self._issued[token.hash] = token.name
            self.operator_value = value
            return value

    def hash_of(self, name: str) -> str:
        """The whole hex SHA-512 of token ``name`` (system.tokens shows its first 9 digits)."""
        with self.api.lock:
            token = self._by_name(name)
            assert token is not None, f"no token named {name}"
            return token.hash

    # -- faults ----------------------------------------------------------------------------------

    def fail_next(self, operation: str, status: int, *, times: int = 1, message: str = "injected") -> None:
        """The next ``times`` calls of ``operation`` answer ``status`` (with the spec's body, if it has one)."""
        method, path = OPERATIONS[operation]
        body: FakeResponse
        if status == 401:
            body = json_response(401, {"error": message, "data": None})
        elif operation == "health" and status == 500:
            body = text_response(500, "service unavailable")
        else:
            body = empty_response(status)
        self.api.inject(method, path, Fault(response=body), times=times)

    # -- state -------------------------------------------------------------------------------------

    def _create(self, name: str, permissions: str, expiry: datetime | None, *, activation: bool) -> tuple[_Token, str]:
        value = new_value()
        now = self.now()
        token = _Token(
            id=self._next_id, name=name, hash=token_hash(value), created_at=now, expiry=expiry,
            permissions=permissions,
            active_from=now + timedelta(seconds=self.activation_delay_s if activation else 0),
        )  # fmt: skip
        self._next_id += 1
        self._tokens[token.id] = token
        self._issued[token.hash] = name
        return token, value

    def _by_value(self, value: str) -> _Token | None:
        digest = token_hash(value)
        return next((t for t in self._tokens.values() if t.hash == digest), None)

    def _by_name(self, name: str) -> _Token | None:
        return next((t for t in self._tokens.values() if t.name == name), None)

    def _authenticate(self, req: FakeRequest) -> tuple[_Token | None, FakeResponse | None]:
        value = req.bearer()
        problem = self.problem(value) if value else "no token"
        if problem is not None:
            return None, json_response(401, {"error": f"cannot authenticate token ({problem})", "data": None})
        token = self._by_value(value or "")
        assert token is not None
        req.principal = token.name
        return token, None

    def _admin(self, req: FakeRequest) -> tuple[_Token | None, FakeResponse | None]:
        token, refusal = self._authenticate(req)
        if token is not None and not token.is_admin:
            return None, json_response(401, {"error": "this action needs an admin token", "data": None})
        return token, refusal

    @staticmethod
    def _created(token: _Token, value: str) -> dict[str, Any]:
        return {
            "id": token.id, "name": token.name, "token": value, "hash": token.hash,
            "created_at": _rfc3339(token.created_at), "expiry": _rfc3339(token.expiry),
        }  # fmt: skip

    # -- handlers ----------------------------------------------------------------------------------

    def _named_admin(self, req: FakeRequest) -> FakeResponse:
        _, refusal = self._admin(req)
        if refusal:
            return refusal
        body = req.json()
        name, expiry_secs = body["token_name"], body.get("expiry_secs") if self.honours_expiry else None
        if self._by_name(name) is not None:
            return json_response(409, {"error": f"token name already exists, {name}", "data": None})
        expiry = self.now() + timedelta(seconds=expiry_secs) if expiry_secs is not None else None
        token, value = self._create(name, ADMIN, expiry, activation=True)
        return json_response(201, self._created(token, value))

    def _resource(self, req: FakeRequest) -> FakeResponse:
        _, refusal = self._admin(req)
        if refusal:
            return refusal
        body = req.json()
        name, expiry_secs = body["token_name"], body.get("expiry_secs") if self.honours_expiry else None
        if self._by_name(name) is not None:
            # As named_admin does; the Enterprise spec documents no 409 for this operation, so this
            # answer is a (recorded) mismatch: the issuer's names are unique, it never provokes it.
            return json_response(409, {"error": f"token name already exists, {name}", "data": None})
        permissions = ";".join(
            f"{p['resource_type']}:{','.join(p['resource_names'])}:{','.join(p['actions'])}"
            for p in body["permissions"]
        )
        expiry = self.now() + timedelta(seconds=expiry_secs) if expiry_secs is not None else None
        token, value = self._create(name, permissions, expiry, activation=True)
        answer = {
            "token_name": name,
            "permissions": body["permissions"],
            "expiry_secs": expiry_secs,
            **self._created(token, value),
        }
        if expiry_secs is None:
            del answer["expiry_secs"]  # an integer in the spec, not nullable
        return json_response(201, answer)

    def _regenerate(self, req: FakeRequest) -> FakeResponse:
        token, refusal = self._authenticate(req)
        if refusal:
            return refusal
        assert token is not None
        if token.name != "_admin":
            return json_response(401, {"error": "only the operator token can regenerate _admin", "data": None})
        value = new_value()
        token.hash, token.updated_at = token_hash(value), self.now()
        self._issued[token.hash] = token.name
        self.operator_value = value
        return json_response(201, self._created(token, value))

    def _delete(self, req: FakeRequest) -> FakeResponse:
        _, refusal = self._admin(req)
        if refusal:
            return refusal
        name = req.arg("token_name") or ""
        if name == "_admin":  # refused by name before any lookup (Catalog::delete_token)
            return cannot_delete_operator()
        token = self._by_name(name)
        if token is None:
            return empty_response(404)
        del self._tokens[token.id]
        self.deleted.append(name)
        self.deleted_at[name] = self.now()
        return empty_response(200)

    def _query(self, req: FakeRequest) -> FakeResponse:
        token, refusal = self._authenticate(req)
        if refusal:
            return refusal
        assert token is not None
        refusal = accept_refusal(req.headers.get("Accept"))
        if refusal is not None:
            return refusal
        body = req.json()
        query = _SPACES.sub(" ", str(body.get("q", "")).strip().rstrip(";")).lower()
        db = body.get("db")
        if body.get("format") != "jsonl":
            return empty_response(400)  # only JSON lines: the spec's JSON schema cannot hold rows
        if query == "select * from system.tokens" and db == "_internal":
            if not token.is_admin:
                return empty_response(403)
            rows = [t.row(with_hash=self.started_with_auth) for t in sorted(self._tokens.values(), key=lambda t: t.id)]
            return FakeResponse(200, "".join(_jsonl(r) for r in rows).encode(), "application/jsonl")
        if query == "select 1":
            if db not in self.databases:
                return empty_response(404)
            if not token.may("db", str(db), "read"):
                return empty_response(403)
            return FakeResponse(200, b'{"Int64(1)":1}\n', "application/jsonl")
        return empty_response(400)

    def _system(self, req: FakeRequest, endpoint: str) -> FakeResponse | None:
        """None when ``req`` may read the system endpoint ``endpoint``, else the refusal."""
        if endpoint in self.disable_authz:
            return None  # the server does not even look at the token
        token, refusal = self._authenticate(req)
        if refusal:
            return refusal
        assert token is not None
        if not token.may("system", endpoint, "read"):
            return json_response(401, {"error": f"not allowed to read {endpoint}", "data": None})
        return None

    def _health(self, req: FakeRequest) -> FakeResponse:
        return self._system(req, "health") or text_response(200, "OK")

    def _ping(self, req: FakeRequest) -> FakeResponse:
        build = "Enterprise" if self.edition == "enterprise" else "Core"
        headers = {"x-influxdb-version": VERSION, "x-influxdb-build": build}
        body = {"version": VERSION, "revision": "83b589b883", "process_id": self.process_id}
        return self._system(req, "ping") or json_response(200, body, headers)

    def _metrics(self, req: FakeRequest) -> FakeResponse:
        return empty_response(200)  # the spec's only answer; the fake keeps no metrics


def _jsonl(row: dict[str, Any]) -> str:
    return json.dumps(row, separators=(",", ":")) + "\n"
