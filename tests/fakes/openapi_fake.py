"""HTTP fakes that validate every request and every response against an official OpenAPI spec.

A fake is a real HTTP server on ``127.0.0.1`` (a free port, served from a background thread)
plus handler functions keyed by ``(METHOD, path template)``. Adapters reach it over real HTTP,
exactly as they reach the real service: no patching inside the process.

Every request is validated (path, method, parameters, security, body) against the spec with
openapi-core before its handler runs; every response the handler returns is validated against
the same operation's documented responses before it is sent. A request or response that does
not match the spec is a **mismatch**: it is recorded, the client gets a ``500`` (so the adapter
sees an error, not a plausible answer), and :meth:`OpenApiFake.assert_clean` raises
:class:`SpecMismatchError` listing every mismatch. :meth:`OpenApiFake.running` calls it when the
fake stops, so a fixture built on it fails the test at teardown.

Defining a fake::

    from tests.fakes.openapi_fake import FakeRequest, FakeResponse, OpenApiFake, json_response, load_spec

    fake = OpenApiFake(load_spec("influxdb3-core-influxdb3-core-openapi.yaml"), name="influxdb3")

    @fake.route("POST", "/api/v3/configure/token/named_admin")   # a path key of the spec, verbatim
    def create_named_admin(req: FakeRequest) -> FakeResponse:
        if req.bearer() != ADMIN:
            return json_response(401, {"error": "unauthorized", "data": None})
        req.principal = "admin"                                   # recorded in fake.calls
        body = req.json()
        return json_response(201, {"id": 1, "name": body["token_name"], ...})

    # in a fixture:
    with fake.running():           # serves on fake.url; raises SpecMismatchError at exit if any
        yield fake

Routes are the spec's own path keys (relative to the spec's server URL: ``/tokens/{tokenId}``
for the Management API, whose server is ``https://console.influxdata.com/api/v0``); a route the
spec does not have is refused when it is defined. Clients use :attr:`OpenApiFake.base_url`
(``http://127.0.0.1:PORT`` plus the server's base path, e.g. ``/api/v0``).

Handlers run one at a time under :attr:`OpenApiFake.lock` (hold it too when a test inspects
state a handler mutates). Faults replace or delay answers without touching the handlers, and
are validated like any answer (injecting a status the spec does not document is a mismatch)::

    fake.inject("POST", "/tokens", Fault(response=json_response(500, {"code": 500, "message": "x"})))  # next call
    fake.inject("GET", "/tokens", Fault(delay_s=5), times=2)               # a client with a shorter timeout times out
    fake.inject("POST", "/tokens", Fault(drop=True, after_handler=True))   # the effect happens, the answer is lost

A test that sends a deliberately malformed request takes the mismatches it expects with
:meth:`OpenApiFake.take_mismatches`; whatever is left fails the test.

When the real service answers something its spec does not document (a status, a content type),
do not loosen the fake: add a :class:`SpecPatch` that documents the deviation, with its source.
All five specs in :data:`SPECS_DIR` load (``load_spec(name)``, cached per process; the 20k-line
InfluxDB v2 spec takes about 2 s once).

Spec workarounds (see :data:`SPEC_PATCHES` and :class:`Spec`), each explicit, none silent:

1. Servers. Requests are validated as if sent to the spec's first server URL (variables at
   their defaults), e.g. ``https://console.influxdata.com/api/v0``: the fake listens on
   127.0.0.1, which no spec lists. The Clustered Management API spec's ``servers`` block even
   names console.influxdata.com, where the real API is ``https://<cluster-host>/api/v0``
   (facts file §7, inconsistency 6). Only the host is substituted: the base path, the path,
   the method, parameters, security and bodies are all validated.
2. Document defects. Some specs are not valid OpenAPI documents (openapi-core refuses to load
   them). Each defect is fixed by a named :class:`SpecPatch` with its reason; a patch whose
   defect is gone fails loudly (remove it), and the patched document is validated strictly.
3. ``$ref`` siblings (OpenAPI 3.1 only). openapi-core resolves a ``$ref`` and drops the keywords
   beside it, so e.g. the Management API's ``Unauthorized`` response (``properties: {code:
   {enum: [401]}}`` next to ``$ref: Error``) would accept ``{"code": 403}``. JSON Schema 2020-12
   (OpenAPI 3.1) applies those siblings, so JSON bodies of 3.1 specs are validated a second time
   against the raw schema with jsonschema's own ``$ref`` semantics. (OpenAPI 3.0 says siblings
   of ``$ref`` are ignored, so 3.0 specs get no second pass.)
"""

from __future__ import annotations

import copy
import functools
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Self
from urllib.parse import parse_qsl, urlsplit

import yaml
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_schema_validator import OAS31Validator, oas31_format_checker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from werkzeug.datastructures import Headers, ImmutableMultiDict

from rotator.core.secret import REDACTOR

__all__ = [
    "SPECS_DIR",
    "SPEC_PATCHES",
    "Call",
    "Fault",
    "FakeRequest",
    "FakeResponse",
    "Handler",
    "Mismatch",
    "OpenApiFake",
    "ServedFake",
    "Spec",
    "SpecMismatchError",
    "SpecPatch",
    "empty_response",
    "json_response",
    "load_spec",
    "text_response",
]

#: The official InfluxDB specs vendored in tests/specs (``ROTATOR_SPECS_DIR`` overrides).
SPECS_DIR = Path(os.environ.get("ROTATOR_SPECS_DIR", Path(__file__).resolve().parents[1] / "specs"))

_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_SPEC_URI = "urn:rotator-test:spec"


# --------------------------------------------------------------------------------------------
# Spec documents and their explicit patches


def _pointer(*parts: str) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def _resolve(raw: Mapping[str, Any], pointer: str) -> Any:
    node: Any = raw
    for part in pointer.lstrip("/").split("/") if pointer else ():
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


@dataclass(frozen=True)
class SpecPatch:
    """One fix to a spec *document* that is not valid OpenAPI, applied before loading.

    ``apply`` edits the raw document in place and raises ``LookupError`` if the defect it fixes
    is no longer there (the spec was fixed upstream: delete the patch).
    """

    where: str
    why: str
    apply: Callable[[dict[str, Any]], None]


def _require_path_param(path: str, method: str, name: str) -> Callable[[dict[str, Any]], None]:
    def apply(raw: dict[str, Any]) -> None:
        params = raw["paths"][path][method]["parameters"]
        param = next(p for p in params if p.get("name") == name and p.get("in") == "path")
        if param.get("required") is True:
            raise LookupError("already required")
        param["required"] = True

    return apply


def _declare_path_param(path: str, method: str, name: str) -> Callable[[dict[str, Any]], None]:
    def apply(raw: dict[str, Any]) -> None:
        operation = raw["paths"][path][method]
        params = operation.setdefault("parameters", [])
        if any(p.get("name") == name and p.get("in") == "path" for p in params):
            raise LookupError("already declared")
        params.append({"name": name, "in": "path", "required": True, "schema": {"type": "string"}})

    return apply


def _drop_example_key(path: str, method: str, example: str, key: str) -> Callable[[dict[str, Any]], None]:
    def apply(raw: dict[str, Any]) -> None:
        examples = raw["paths"][path][method]["requestBody"]["content"]["application/json"]["examples"]
        if key not in examples[example]:
            raise LookupError("key not there")
        del examples[example][key]

    return apply


def _boolean_required_to_list(schema: str, prop: str) -> Callable[[dict[str, Any]], None]:
    def apply(raw: dict[str, Any]) -> None:
        node = raw["components"]["schemas"][schema]
        if node["properties"][prop].pop("required", None) is not True:
            raise LookupError("no boolean `required`")
        required = node.setdefault("required", [])
        if prop not in required:
            required.append(prop)

    return apply


def _drop_default_outside_enum(path: str, method: str, param: str) -> Callable[[dict[str, Any]], None]:
    def apply(raw: dict[str, Any]) -> None:
        params = raw["paths"][path][method]["parameters"]
        schema = next(p for p in params if p.get("name") == param)["schema"]
        if schema.get("default") in schema.get("enum", ()) or "default" not in schema:
            raise LookupError("default is valid")
        del schema["default"]

    return apply


_TOKEN_ID = "/accounts/{accountId}/clusters/{clusterId}/tokens/{tokenId}"
_TRIGGER = "/api/v3/configure/processing_engine_trigger"

#: Defects of the spec documents in :data:`SPECS_DIR`, by file name. openapi-core validates a
#: document before it loads it and refuses each of these; none touches an operation's
#: request or response schemas beyond what the defect itself broke.
SPEC_PATCHES: dict[str, tuple[SpecPatch, ...]] = {
    "influxdb3-cloud-dedicated-management-openapi.yml": (
        SpecPatch(
            f"paths {_TOKEN_ID} patch parameters tokenId",
            "a path parameter without `required: true` (OpenAPI: path parameters MUST be required; "
            "the same parameter is required on GET and DELETE)",
            _require_path_param(_TOKEN_ID, "patch", "tokenId"),
        ),
    ),
    "influxdb3-core-influxdb3-core-openapi.yaml": (
        SpecPatch(
            f"paths {_TRIGGER} post requestBody examples all_tables",
            "`trigger_settings` written beside `value` in an Example Object (which allows only "
            "summary/description/value/externalValue); examples are not used for validation",
            _drop_example_key(_TRIGGER, "post", "all_tables", "trigger_settings"),
        ),
    ),
    "influxdb3-enterprise-influxdb3-enterprise-openapi.yaml": (
        SpecPatch(
            f"paths {_TRIGGER} post requestBody examples all_tables",
            "as in the Core spec: `trigger_settings` beside `value` in an Example Object",
            _drop_example_key(_TRIGGER, "post", "all_tables", "trigger_settings"),
        ),
        SpecPatch(
            "paths /api/v3/users/{id} get parameters",
            "the operation does not declare its path parameter `id` (declared here as a string)",
            _declare_path_param("/api/v3/users/{id}", "get", "id"),
        ),
    ),
    "influxdb-v2-influxdb-oss-v2-openapi.yaml": (
        SpecPatch(
            "components schemas DBRPGet properties content",
            "`required: true` inside a property schema (a JSON Schema `required` is a list on the "
            "object): moved to DBRPGet.required, which is what it means",
            _boolean_required_to_list("DBRPGet", "content"),
        ),
        SpecPatch(
            "paths /api/v2/tasks get parameters type",
            "`default: ''` is not one of the parameter's own enum values (basic, system); dropped",
            _drop_default_outside_enum("/api/v2/tasks", "get", "type"),
        ),
    ),
}


class Spec:
    """One loaded spec: openapi-core's validators plus what the fake framework needs of the raw document."""

    def __init__(self, path: Path, raw: dict[str, Any]) -> None:
        self.path = path
        self.name = path.name
        self.raw = raw
        self.openapi = OpenAPI.from_dict(raw)  # validates the (patched) document strictly
        self.is_31 = str(raw.get("openapi", "")).startswith("3.1")
        server = (raw.get("servers") or [{"url": "/"}])[0]
        url = server["url"]
        for var, spec in (server.get("variables") or {}).items():
            url = url.replace("{" + var + "}", str(spec["default"]))
        parts = urlsplit(url)
        #: Where requests are validated as if they had been sent (workaround 1 in the module doc).
        self.host_url = f"{parts.scheme}://{parts.netloc}" if parts.netloc else "http://localhost"
        self.base_path: str = parts.path.rstrip("/")
        self._registry: Registry[Any] = Registry().with_resource(
            _SPEC_URI, Resource.from_contents(raw, default_specification=DRAFT202012)
        )

    def __repr__(self) -> str:
        return f"Spec({self.name!r})"

    def operation(self, method: str, template: str) -> Mapping[str, Any] | None:
        item = self.raw.get("paths", {}).get(template)
        op = item.get(method.lower()) if isinstance(item, Mapping) else None
        return op if isinstance(op, Mapping) else None

    def operation_id(self, method: str, template: str) -> str:
        op = self.operation(method, template)
        return str(op.get("operationId", f"{method} {template}")) if op else f"{method} {template}"

    # -- the second pass for OpenAPI 3.1 (workaround 3) -------------------------------------

    def raw_body_errors(
        self, method: str, template: str, status: int | None, content_type: str, body: bytes
    ) -> list[str]:
        """Errors of a JSON body against the raw 3.1 schema (``$ref`` siblings applied)."""
        if not self.is_31 or not body:
            return []
        media = content_type.split(";")[0].strip().lower()
        if not (media == "application/json" or media.endswith("+json")):
            return []
        pointer = self._schema_pointer(method, template, status, media)
        if pointer is None:
            return []  # no schema for it: openapi-core has already reported that if it matters
        try:
            instance = json.loads(body)
        except ValueError:
            return []  # openapi-core reports a body that is not JSON
        validator = OAS31Validator(
            {"$ref": f"{_SPEC_URI}#{pointer}"}, registry=self._registry, format_checker=oas31_format_checker
        )
        return [
            f"{'/'.join(map(str, e.absolute_path)) or '<body>'}: {e.message}" for e in validator.iter_errors(instance)
        ]

    def _schema_pointer(self, method: str, template: str, status: int | None, media: str) -> str | None:
        pointer = _pointer("paths", template, method.lower())
        op = self.operation(method, template)
        if op is None:
            return None
        if status is None:
            node, pointer = self._deref(op.get("requestBody"), pointer + "/requestBody")
        else:
            responses = op.get("responses") or {}
            key = next((k for k in (str(status), f"{str(status)[0]}XX", "default") if k in responses), None)
            if key is None:
                return None
            node, pointer = self._deref(responses[key], pointer + _pointer("responses", key))
        content = (node or {}).get("content") or {}
        if media not in content or "schema" not in content[media]:
            return None
        return pointer + _pointer("content", media, "schema")

    def _deref(self, node: Any, pointer: str) -> tuple[Any, str]:
        while isinstance(node, Mapping) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#"):
            pointer = node["$ref"][1:]
            node = _resolve(self.raw, pointer)
        return node, pointer


@functools.cache
def _load(path: str) -> Spec:
    file = Path(path)
    raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    patched = copy.deepcopy(raw)
    for patch in SPEC_PATCHES.get(file.name, ()):
        try:
            patch.apply(patched)
        except LookupError as exc:
            raise RuntimeError(
                f"{file.name}: spec patch for {patch.where!r} no longer applies ({exc}): the defect "
                "looks fixed; remove the patch from SPEC_PATCHES"
            ) from None
    return Spec(file, patched)


def load_spec(name: str | Path) -> Spec:
    """The spec ``name`` (a file in :data:`SPECS_DIR`, or a path), patched and loaded once per process."""
    path = Path(name)
    if not path.is_absolute() and not path.exists():
        path = SPECS_DIR / path
    return _load(str(path.resolve()))


# --------------------------------------------------------------------------------------------
# Requests, responses, faults, records


@dataclass
class FakeRequest:
    """A request as a handler sees it (already validated against the spec)."""

    method: str
    path: str
    template: str
    path_params: dict[str, str]
    query: dict[str, list[str]]
    headers: Headers
    body: bytes
    #: Set by the handler: who authenticated (a token id, never a value); kept in :class:`Call`.
    principal: str | None = None

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def bearer(self) -> str | None:
        """The credential of an ``Authorization: Bearer ...`` header, if that is what was sent."""
        return self.auth("Bearer")

    def auth(self, scheme: str) -> str | None:
        value = self.headers.get("Authorization") or ""
        given, _, credential = value.partition(" ")
        return credential.strip() or None if given == scheme else None


@dataclass
class FakeResponse:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> FakeResponse:
    return FakeResponse(status, json.dumps(payload).encode(), "application/json", dict(headers or {}))


def empty_response(status: int = 204, headers: Mapping[str, str] | None = None) -> FakeResponse:
    return FakeResponse(status, b"", None, dict(headers or {}))


def text_response(status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> FakeResponse:
    return FakeResponse(status, text.encode(), content_type)


Handler = Callable[[FakeRequest], FakeResponse]


@dataclass
class Fault:
    """What to do instead of (or around) the handler for one call.

    - ``response``: answer this instead of the handler's answer (validated against the spec);
    - ``delay_s``: wait this long before answering (a client with a shorter timeout times out);
    - ``drop``: close the connection without an answer;
    - ``after_handler``: run the handler first (its side effects happen), then apply the fault.
    """

    response: FakeResponse | None = None
    delay_s: float = 0.0
    drop: bool = False
    after_handler: bool = False


@dataclass(frozen=True)
class Call:
    """One request the fake received and what it answered."""

    method: str
    path: str
    template: str | None
    operation_id: str | None
    query: dict[str, list[str]]
    status: int | None  # None: dropped
    principal: str | None


@dataclass(frozen=True)
class Mismatch:
    """A request or response that does not match the spec (or a broken handler)."""

    kind: str  # "request" | "response" | "route" | "handler"
    method: str
    path: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.method} {self.path}: {self.detail}"


class SpecMismatchError(AssertionError):
    def __init__(self, fake: str, mismatches: list[Mismatch]) -> None:
        lines = "\n".join(f"  - {m}" for m in mismatches)
        super().__init__(f"fake {fake!r}: {len(mismatches)} request(s)/response(s) did not match the spec:\n{lines}")
        self.mismatches = mismatches


# --------------------------------------------------------------------------------------------
# The fake server


@dataclass
class _Route:
    method: str
    template: str
    parts: tuple[str, ...]
    handler: Handler

    def match(self, method: str, parts: list[str]) -> dict[str, str] | None:
        if method != self.method or len(parts) != len(self.parts):
            return None
        params: dict[str, str] = {}
        for want, got in zip(self.parts, parts, strict=True):
            if want.startswith("{") and want.endswith("}"):
                if not got:
                    return None
                params[want[1:-1]] = got
            elif want != got:
                return None
        return params


class _OARequest:
    """openapi-core's Request protocol over what the fake received (workaround 1: host_url)."""

    def __init__(self, spec: Spec, method: str, path: str, query: list[tuple[str, str]], headers: Headers, body: bytes):
        self.host_url = spec.host_url
        self.path = path
        self.method = method.lower()
        self.body = body if body else None
        self.content_type = (headers.get("Content-Type") or "application/octet-stream").lower()
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(query), header=headers, cookie=ImmutableMultiDict(), path={}
        )


class _OAResponse:
    def __init__(self, response: FakeResponse) -> None:
        self.status_code = response.status
        self.data = response.body
        self.content_type = (response.content_type or "").lower()
        self.headers = Headers(
            {**response.headers, **({"Content-Type": response.content_type} if response.content_type else {})}
        )


def _errors_text(errors: list[Exception]) -> str:
    out = []
    for error in errors:
        message = str(error)
        text = message if message.startswith(type(error).__name__) else f"{type(error).__name__}: {message}"
        cause = error.__cause__
        schema_errors = getattr(cause, "schema_errors", None) or getattr(error, "schema_errors", None)
        if schema_errors:
            text += (
                " ("
                + "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '<value>'}: {e.message}" for e in schema_errors)
                + ")"
            )
        elif cause is not None:
            text += f" ({type(cause).__name__}: {cause})"
        out.append(text)
    return REDACTOR.redact("; ".join(out))[:2000]


class OpenApiFake:
    """A spec-validated HTTP fake; see the module docstring."""

    def __init__(self, spec: Spec, *, name: str | None = None) -> None:
        self.spec = spec
        self.name = name or spec.name
        self.lock = threading.RLock()
        self.calls: list[Call] = []
        self._routes: list[_Route] = []
        self._faults: dict[tuple[str, str], list[Fault]] = {}
        self._mismatches: list[Mismatch] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- definition ------------------------------------------------------------------------

    def route(self, method: str, template: str) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`add_route`."""

        def register(handler: Handler) -> Handler:
            self.add_route(method, template, handler)
            return handler

        return register

    def add_route(self, method: str, template: str, handler: Handler) -> None:
        method = method.upper()
        if method.lower() not in _METHODS or self.spec.operation(method, template) is None:
            raise ValueError(f"{self.spec.name} has no operation {method} {template}: routes are the spec's path keys")
        if any(r.method == method and r.template == template for r in self._routes):
            raise ValueError(f"{method} {template} already has a handler")
        self._routes.append(_Route(method, template, tuple(template.strip("/").split("/")), handler))

    def inject(self, method: str, template: str, fault: Fault, *, times: int = 1) -> None:
        """Apply ``fault`` to the next ``times`` calls of ``METHOD template`` (in order with earlier ones)."""
        method = method.upper()
        if self.spec.operation(method, template) is None:
            raise ValueError(f"{self.spec.name} has no operation {method} {template}")
        with self.lock:
            self._faults.setdefault((method, template), []).extend([fault] * times)

    def clear_faults(self) -> None:
        with self.lock:
            self._faults.clear()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no base path)."""
        if self._server is None:
            raise RuntimeError(f"fake {self.name!r} is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{port}"

    @property
    def base_url(self) -> str:
        """:attr:`url` plus the spec server's base path, e.g. ``http://127.0.0.1:PORT/api/v0``."""
        return self.url + self.spec.base_path

    def start(self) -> OpenApiFake:
        if self._server is not None:
            return self
        fake = self

        class Handler(_RequestHandler):
            owner = fake

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"fake-{self.name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> OpenApiFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @contextmanager
    def running(self) -> Iterator[OpenApiFake]:
        """Serve while the block runs; at exit stop, then raise SpecMismatchError if any are left."""
        self.start()
        try:
            yield self
        finally:
            self.stop()
        self.assert_clean()

    # -- inspection ------------------------------------------------------------------------

    @property
    def mismatches(self) -> list[Mismatch]:
        with self.lock:
            return list(self._mismatches)

    def take_mismatches(self) -> list[Mismatch]:
        """Return and forget the mismatches so far (for tests that provoke them on purpose)."""
        with self.lock:
            taken, self._mismatches = self._mismatches, []
        return taken

    def assert_clean(self) -> None:
        left = self.mismatches
        if left:
            raise SpecMismatchError(self.name, left)

    def calls_to(self, method: str, template: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.method == method.upper() and c.template == template]

    # -- one request -----------------------------------------------------------------------

    def _record(self, kind: str, method: str, path: str, detail: str) -> None:
        with self.lock:
            self._mismatches.append(Mismatch(kind, method, path, detail))

    def _failure(self, kind: str, method: str, path: str, detail: str) -> FakeResponse:
        self._record(kind, method, path, detail)
        return json_response(500, {"code": 500, "message": f"fake {self.name}: {kind} does not match the spec"})

    def handle(self, method: str, target: str, headers: Headers, body: bytes) -> tuple[FakeResponse | None, float]:
        """Validate, route, run the handler, validate the answer. Returns (response or None to drop, delay)."""
        split = urlsplit(target)
        path = split.path
        pairs = parse_qsl(split.query, keep_blank_values=True)
        query: dict[str, list[str]] = {}
        for key, value in pairs:
            query.setdefault(key, []).append(value)
        oa_request = _OARequest(self.spec, method, path, pairs, headers, body)
        with self.lock:
            errors = list(self.spec.openapi.iter_request_errors(oa_request))
        route, params = self._match(method, path)
        template = route.template if route else None
        if not errors and route is not None:
            raw = self.spec.raw_body_errors(method, route.template, None, oa_request.content_type, body)
            errors = [ValueError("request body: " + "; ".join(raw))] if raw else []

        def record(response: FakeResponse | None, principal: str | None = None) -> None:
            with self.lock:
                self.calls.append(
                    Call(
                        method,
                        path,
                        template,
                        self.spec.operation_id(method, template) if template else None,
                        query,
                        response.status if response else None,
                        principal,
                    )
                )

        if errors:
            refused = self._failure("request", method, path, _errors_text(errors))
            record(refused)
            return refused, 0.0
        if route is None:
            refused = self._failure("route", method, path, "valid for the spec, but the fake has no handler for it")
            record(refused)
            return refused, 0.0
        request = FakeRequest(method, path, route.template, params or {}, query, headers, body)
        with self.lock:
            queue = self._faults.get((method, route.template))
            fault = queue.pop(0) if queue else None
        answer: FakeResponse | None = None
        if fault is None or fault.after_handler or (fault.response is None and not fault.drop):
            try:
                with self.lock:
                    answer = route.handler(request)
            except Exception as exc:  # a broken fake must fail the test, not hang the adapter
                broken = self._failure("handler", method, path, f"{type(exc).__name__}: {exc}")
                record(broken, request.principal)
                return broken, 0.0
        delay = 0.0
        if fault is not None:
            delay = fault.delay_s
            if fault.drop:
                record(None, request.principal)
                return None, delay
            if fault.response is not None:
                answer = fault.response
        assert answer is not None
        checked = self._validated(request, oa_request, answer)
        record(checked, request.principal)
        return checked, delay

    def _validated(self, request: FakeRequest, oa_request: _OARequest, response: FakeResponse) -> FakeResponse:
        oa_response = _OAResponse(response)
        with self.lock:
            errors: list[Exception] = list(self.spec.openapi.iter_response_errors(oa_request, oa_response))
        if not errors:
            raw = self.spec.raw_body_errors(
                request.method, request.template, response.status, oa_response.content_type, response.body
            )
            errors = [ValueError(f"response {response.status} body: " + "; ".join(raw))] if raw else []
        if errors:
            return self._failure(
                "response", request.method, request.path, f"answer {response.status}: {_errors_text(errors)}"
            )
        return response

    def _match(self, method: str, path: str) -> tuple[_Route | None, dict[str, str] | None]:
        base = self.spec.base_path
        if base and not (path == base or path.startswith(base + "/")):
            return None, None
        parts = path[len(base) :].strip("/").split("/")
        for route in self._routes:
            params = route.match(method.upper(), parts)
            if params is not None:
                return route, params
        return None, None


class _RequestHandler(BaseHTTPRequestHandler):
    owner: OpenApiFake
    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle keep-alive connection does not pin a thread for ever

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        pass  # the fake records calls itself; never print request lines (or headers)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = Headers(list(self.headers.items()))
        response, delay = self.owner.handle(self.command, self.path, headers, body)
        if delay:
            time.sleep(delay)
        if response is None:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        try:
            self.send_response(response.status)
            for key, value in response.headers.items():
                self.send_header(key, value)
            if response.content_type:
                self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if response.body and self.command != "HEAD":
                self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. its timeout was shorter than a fault's delay)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve


class ServedFake:
    """Base of a product fake served by one :class:`OpenApiFake` (``self.api``)."""

    api: OpenApiFake
    #: Operation name -> (method, path template), for the fault helpers below.
    operations: ClassVar[Mapping[str, tuple[str, str]]] = {}

    def delay_next(self, operation: str, seconds: float, *, after_handler: bool = False, times: int = 1) -> None:
        method, path = self.operations[operation]
        self.api.inject(method, path, Fault(delay_s=seconds, after_handler=after_handler), times=times)

    def drop_next(self, operation: str, *, after_handler: bool = False, times: int = 1) -> None:
        method, path = self.operations[operation]
        self.api.inject(method, path, Fault(drop=True, after_handler=after_handler), times=times)

    @contextmanager
    def running(self) -> Iterator[Self]:
        """Serve while the block runs; fail with SpecMismatchError at exit if anything did not match."""
        with self.api.running():
            yield self

    @property
    def url(self) -> str:
        return self.api.url

    def now(self) -> datetime:
        return datetime.now(UTC)
