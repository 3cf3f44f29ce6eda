"""What the HTTP issuers (``influxdb3``, ``influxdb2``, ``management-api``) share: settings, the client, error mapping.

- :class:`HttpSettings` holds the connection part of an issuer's settings (``base_url``,
  ``tls_verify``, ``ca_bundle``, ``timeout_s``: named as in the vault-kv2 store and the
  management-api issuer) and :func:`new_client` turns those into an ``httpx.Client`` that reads
  nothing from the environment (no proxy variables, no ``SSL_CERT_FILE``, no ``.netrc``): what
  ``rotator validate`` checked is what runs. Tests inject a transport (``httpx.MockTransport``)
  through the ``transport`` argument, the seam for failures a fake server cannot produce.
- :func:`send` makes one request and reads its answer in full, within a deadline for the whole
  request (:data:`REQUEST_PHASES` times ``timeout_s``) and a size limit (:data:`MAX_ANSWER_BYTES`):
  httpx's ``timeout_s`` bounds each phase only, so a server that trickles its answer in would
  otherwise hold a call for ever. Every request of the HTTP issuers goes through it.
- :class:`HttpIssuer` is what ``influxdb3`` and ``influxdb2`` share: construction, the client
  built on first use, the minting credential.
- :func:`on_http_failure` is the one place where httpx exceptions and unexpected HTTP statuses
  are told apart (:class:`HttpFailure`: a status, a timeout, a TLS failure, no connection...);
  each issuer words them. :func:`map_http_errors` is the wording of ``influxdb3`` and ``influxdb2``::

      timeouts, connection failures, 408/425/429, 5xx    -> TransientError (retry_after: the
                                                            answer's Retry-After, if any)
      TLS verification failure                           -> PermanentError (hint: ca_bundle)
      400/401/403/404/409/422 and any other status       -> PermanentError with a hint
      401 while verifying a fresh token                  -> TransientError (unauthenticated_is_transient)

  Inside the block, :func:`expect` raises for a status that is not one of the expected ones.
  Messages name the operation, method, path and status plus the server's own error text
  (:func:`error_text`, through :func:`redact_detail`: redacted, truncated); never a header, a
  request body or a token.
- :data:`CredentialSetting` is ``credential = { file = ... } | { env = ... } | "self"``: the token
  an issuer authenticates with to mint, list and revoke. :func:`resolve_credential` reads it.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, Protocol, Self, TypeVar, cast

import httpcore
import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from rotator.adapters.transport import (
    QUERY_OR_FRAGMENT,
    http_address_problem,
    plain_http_warning,
    tls_verify_warning,
)
from rotator.core.clock import SYSTEM_CLOCK
from rotator.core.contracts import (
    NO_CURRENT_TOKEN_FIX,
    AdapterContext,
    checked_settings,
    side_effect_start_deadline,
    target_host_port,
)
from rotator.core.credentials import CredentialRef
from rotator.core.errors import (
    BadTokenId,
    ConfigError,
    IssuerOutputError,
    MalformedPayload,
    NotYetAccepted,
    PermanentError,
    RotatorError,
    TransientError,
)
from rotator.core.one_line import one_line
from rotator.core.secret import REDACTOR, Secret

__all__ = [
    "AnswerTooLarge",
    "CredentialSetting",
    "DeadlineExceeded",
    "FAR_FUTURE",
    "HttpFailure",
    "HttpIssuer",
    "HttpSettings",
    "IssuerSettings",
    "NotSent",
    "SelfCredential",
    "UnexpectedStatus",
    "auth_header",
    "CALL_MARGIN_S",
    "MAX_ANSWER_BYTES",
    "REQUEST_PHASES",
    "bad_token_id",
    "call_timeout",
    "check_tls_choice",
    "error_code",
    "error_text",
    "expect",
    "header_token_from",
    "is_header_token",
    "is_self",
    "json_body",
    "map_http_errors",
    "new_client",
    "on_http_failure",
    "parse_time",
    "path_segment",
    "redact_detail",
    "redirect_hint",
    "resolve_credential",
    "retry_after",
    "send",
    "stored_token_error",
    "token_value",
    "url_target",
    "wait_asked",
]

logger = logging.getLogger("rotator.adapters.http")

# Error texts: {what} is the operation ("create named admin token"), {call} is "POST /path".
ERR_TIMEOUT = "{what}: {call} timed out after {timeout:g}s"
ERR_DEADLINE = "{what}: {call} got no complete answer within {timeout:g}s (the limit of a whole request)"
ERR_NOT_SENT = ("{what}: {call} was not sent: rotator was paused (or starved) for longer than allowed between its "
                "lease check and the request")
ERR_TOO_LARGE = "{what}: {call} answered more than {limit} bytes; rotator reads no further"
ERR_UNREACHABLE = "{what}: cannot reach {url} ({cause})"
ERR_TLS = "{what}: TLS handshake with {url} failed (untrusted certificate, or not a TLS endpoint)"
ERR_STATUS = "{what}: {call} answered HTTP {status}{detail}"
ERR_BAD_URL = "{what}: {url} is not a usable URL ({cause})"
ERR_OTHER = "{what}: {call} failed ({cause})"
HINT_RETRY = "rotator retries; check that the server is up and reachable from here"
HINT_TLS = "set ca_bundle to the CA that signed the server's certificate (tls_verify = false only for tests)"
HINT_UNAUTHENTICATED = "the credential is not accepted (expired, deleted or inactive?); check `credential`"
HINT_FRESH_TOKEN = "a new token may take a moment to be accepted; rotator retries until verify_timeout"
HINT_FORBIDDEN = "the credential lacks a permission this call needs (see docs/issuers.md)"
HINT_NOT_FOUND = "check base_url (scheme, host, port, no path) and that the server is the product this issuer is for"
HINT_CONFLICT = "the resource exists already"
HINT_BAD_REQUEST = "the server refused the request; check the issuer settings against docs/issuers.md"
HINT_OTHER = "check the server's log for this request"
HINT_REDIRECT = (
    "the server answers with a redirect{target}, and rotator follows none (a redirect could take the token "
    "elsewhere): set `{key}` to the address that answers without one"
)
HINT_NOT_SENT = "rotator checks its lease again before it retries"
#: (the whole command: `rotator bootstrap` alone is refused for its missing arguments)
HINT_SELF = (NO_CURRENT_TOKEN_FIX + "; else store the first token with "  # (a format string: it holds no brace)
             "`rotator bootstrap {policy} --token-file FILE --token-id ID`, or set credential = {{ file = ... }} / "
             "{{ env = ... }}")
_DEFAULT_HINTS = {
    400: HINT_BAD_REQUEST,
    401: HINT_UNAUTHENTICATED,
    403: HINT_FORBIDDEN,
    404: HINT_NOT_FOUND,
    409: HINT_CONFLICT,
    422: HINT_BAD_REQUEST,
}
_TRANSIENT_STATUS = frozenset({408, 425, 429})
#: Token-shaped strings redacted from server error text even when the REDACTOR does not know them:
#: InfluxDB 3 tokens (``apiv3_`` + base64) and long base64/hex runs such as v2 tokens.
_TOKEN_SHAPES = re.compile(r"apiv[0-9]_[A-Za-z0-9+/=_-]{8,}|[A-Za-z0-9+/_-]{40,}={0,2}")
#: A resource as InfluxDB v2 writes it in a refusal (``permission read:orgs/<org id>/buckets/<id> is
#: not allowed``; Resource.Path): a type name and 16-hex ids between slashes, at least one slash.
#: Past 40 characters it has the shape of a standard-base64 token, but it is what the operator must
#: read to grant the missing permission; a random token has this exact form with odds below 2^-40.
_RESOURCE_PATH = re.compile(r"orgs/[0-9a-f]{16}/[a-z][A-Za-z]*(?:/[0-9a-f]{16})?|[a-z][A-Za-z]*/[0-9a-f]{16}")
#: One word of printable ASCII: what an API token is, and all an HTTP header carries without h11
#: refusing it (a refusal that would surface as "cannot reach the server", retried for ever).
_HEADER_TOKEN = re.compile(r"[\x21-\x7e]+")
_MAX_DETAIL = 200


# --------------------------------------------------------------------------------------------
# Settings


class HttpSettings(BaseModel):
    """The connection part of an HTTP issuer's settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(description="the server, e.g. https://influxdb.example.com:8181 (no path)")
    tls_verify: bool = Field(default=True, description="verify the server's certificate (false: tests only)")
    ca_bundle: Path | None = Field(default=None, description="PEM CA bundle; relative to the policy file")
    timeout_s: float = Field(default=10, gt=0, le=600, description="limit of each HTTP call")

    @model_validator(mode="after")
    def _one_tls_choice(self) -> HttpSettings:
        check_tls_choice(self.tls_verify, self.ca_bundle)
        return self

    @field_validator("base_url")
    @classmethod
    def _plain_http_url(cls, value: str) -> str:
        if not value.isprintable() or " " in value:
            raise ValueError("must not contain spaces or control characters (a line break copied with it?)")
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL:
            problem = http_address_problem(value) or "is not a URL; write e.g. https://influxdb.example.com:8181"
            raise ValueError(problem) from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an http:// or https:// address with a host")
        if url.userinfo:
            raise ValueError("must not carry credentials; use `credential`")
        if "?" in value or "#" in value:  # not url.query: an empty one is b"" and reads as none
            raise ValueError(QUERY_OR_FRAGMENT)
        if url.path not in ("", "/"):
            # The journal records where each token lives by scheme, host and port (target(): url_target):
            # two servers behind one gateway at two paths would be one place, and a token of one judged
            # at the other, where "not listed" is no proof it was revoked. (The docs always said no path.)
            raise ValueError(
                "must be the server's address without a path (rotator adds /api/v2/... or /api/v3/... itself, "
                "and tells servers apart by scheme, host and port): write scheme, host and port only, e.g. "
                "https://influxdb.example.com:8086; a server reached only under a gateway's path needs its own "
                "host name or port there"
            )
        unusable = http_address_problem(value)
        if unusable:
            raise ValueError(unusable)
        return value.rstrip("/")

    def transport_warnings(self) -> list[str]:
        """Settings that expose the tokens on the wire (see rotator/adapters/transport.py)."""
        return [*plain_http_warning(self.base_url, "base_url"), *tls_verify_warning(self.tls_verify, self.base_url)]


class SelfCredential(BaseModel):
    """Authenticate with the token the policy's stores hold now (self-rotation)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["self"] = "self"


#: ``credential = "self"`` (or ``{ method = "self" }``), ``{ file = "..." }`` or ``{ env = "VAR" }``.
CredentialSetting = Literal["self"] | SelfCredential | CredentialRef


def is_self(setting: CredentialSetting) -> bool:
    """Whether ``setting`` means "the token the stores hold now"."""
    return not isinstance(setting, CredentialRef)


def is_header_token(text: str) -> bool:
    """Whether ``text`` is one word of printable ASCII (no white space, no control character)."""
    return _HEADER_TOKEN.fullmatch(text) is not None


def stored_token_error(where: str, policy: str) -> MalformedPayload:
    """The error for a token a store holds that no HTTP header can carry (a payload written by hand,
    with a line break?): ``where`` names it, ``policy`` is the policy that publishes it. Never the value."""
    return MalformedPayload(
        f"{where} holds white space, a control character or a character that is not ASCII, which an HTTP "
        "header cannot carry (a payload written by hand, with a line break?)",
        hint=f"write the token again as one word, as it was issued: `rotator bootstrap {policy} --replace --reason "
        "TEXT --token-file FILE --token-id ID` (docs/operations.md), or restore the secret's last good version in "
        "the store",
    )


def header_token_from(ref: CredentialRef, base_dir: Path, what: str, token: str) -> Secret:
    """The token ``ref`` names ({file} or {env}), checked to be one word of printable ASCII
    (:func:`is_header_token`); ConfigError naming ``what`` it is otherwise, never the value."""
    value = ref.resolve(base_dir)
    if not is_header_token(value.reveal()):
        raise ConfigError(
            f"the {what} in {ref.describe()} holds white space or a character that is not ASCII, which an HTTP "
            "header cannot carry",
            hint=f"write the {token} again as it was issued (one word: ASCII letters, digits and punctuation)",
        )
    return value


def resolve_credential(
    setting: CredentialSetting, current: Secret | None, base_dir: Path, *, hint_self: str, policy: str
) -> Secret:
    """The token to authenticate with: the store's current one for ``self``, else the reference's.

    Either is checked to be one word of printable ASCII (:func:`is_header_token`): h11 refuses any
    other header value, and httpx reports that as a server it cannot reach. ``policy`` is the
    policy whose stores hold ``current``, for the hint."""
    if isinstance(setting, CredentialRef):
        return header_token_from(setting, base_dir, "credential", "API token")
    if current is None:
        raise ConfigError(
            "credential = 'self' needs the token the stores hold now, but no store holds one: no token is published "
            "yet, or the store's current version was deleted",
            hint=hint_self,
        )
    if not is_header_token(current.reveal()):
        raise stored_token_error(f"the token the stores of policy {policy!r} hold now (credential = 'self')", policy)
    return current


def check_tls_choice(tls_verify: bool, ca_bundle: Path | None) -> None:
    """Refuse (ValueError) a ``ca_bundle`` that ``tls_verify = false`` would ignore."""
    if ca_bundle is not None and not tls_verify:
        raise ValueError("`ca_bundle` has no effect with `tls_verify = false`; drop one")


def new_client(
    *,
    tls_verify: bool,
    ca_bundle: Path | None,
    timeout_s: float,
    base_dir: Path,
    base_url: str = "",
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """An ``httpx.Client``: explicit TLS (``ca_bundle`` relative to ``base_dir``), no environment, no redirects.

    Connections are not kept alive between requests: each request opens its own, so the watchdog
    of :func:`send` knows the socket to shut down when the request's deadline passes (a pooled
    connection's socket is not known before its answer arrives). rotator sends a few requests per
    rotation; a connection each costs nothing that matters.
    """
    verify: bool | ssl.SSLContext = tls_verify
    if ca_bundle is not None:
        path = ca_bundle if ca_bundle.is_absolute() else base_dir / ca_bundle
        try:
            verify = ssl.create_default_context(cafile=str(path))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"ca_bundle {path} cannot be loaded ({type(exc).__name__})",
                hint="point ca_bundle at a readable PEM file",
            ) from None
    return httpx.Client(
        base_url=base_url,
        verify=verify,
        timeout=timeout_s,
        trust_env=False,
        follow_redirects=False,
        transport=transport,
        headers={"User-Agent": "rotator"},
        limits=httpx.Limits(max_keepalive_connections=0),
    )


#: Seconds on top of the requests' deadlines: building the client, reading a credential, the
#: issuer's own work, the watchdog's reaction (see :func:`send`).
CALL_MARGIN_S = 5.0
#: The phases httpx bounds one by one with ``timeout_s``: connecting, sending, waiting for data.
#: :func:`send` bounds a whole request by as many ``timeout_s``.
REQUEST_PHASES = 3
#: The largest answer :func:`send` reads (a listing of thousands of tokens is a few MB): a larger
#: one is cut off (:class:`AnswerTooLarge`), and nothing of it is used.
MAX_ANSWER_BYTES = 32 * 1024 * 1024


def call_timeout(requests: int, timeout_s: float) -> float:
    """The longest ``requests`` sequential requests made with :func:`send` take, plus a margin.

    Each request ends within ``REQUEST_PHASES * timeout_s`` of its start, answered or not (see
    :func:`send`). rotator retries between issuer calls (the engine), never inside one. Recovery
    relies on this bound (the engine's mint window: after it, no try of a mint can still land).
    """
    return requests * REQUEST_PHASES * timeout_s + CALL_MARGIN_S


class DeadlineExceeded(httpx.TimeoutException):
    """A request got no complete answer within its deadline (:func:`send`): a timeout, so transient,
    and for a mint "unanswered" (the token may exist: the engine searches for it by its tag)."""

    def __init__(self, deadline_s: float, *, request: httpx.Request) -> None:
        super().__init__(f"no complete answer within {deadline_s:g}s", request=request)
        self.deadline_s = deadline_s


class NotSent(httpx.TransportError):
    """A side effect's request refused at its start deadline (:func:`send`): not written, or its body
    not (an incomplete request, which a server does not carry out). A request without a body is
    never refused once its headers are written: they are the whole request. Still never taken for
    "nothing was done": a TransientError (for a mint, a try without an answer, whose tag is
    searched), after which the engine checks its lease again before a retry, as for an influxctl
    child started too late."""

    def __init__(self, *, request: httpx.Request | None) -> None:
        super().__init__("the side effect's start deadline passed before the request was sent", request=request)


class AnswerTooLarge(httpx.HTTPError):
    """An answer longer than :data:`MAX_ANSWER_BYTES`: not read further, not used."""

    def __init__(self, limit: int, *, request: httpx.Request) -> None:
        super().__init__(f"the answer is longer than {limit} bytes")
        self.request = request
        self.limit = limit


#: httpcore's ``trace`` events after which a connection is made (TLS wraps the socket into a new object).
_CONNECTED = ("connection.connect_tcp.complete", "connection.start_tls.complete")
#: httpcore's ``trace`` events just before a byte of the request is written.
_SENDING = ("http11.send_request_headers.started", "http11.send_request_body.started")
#: The event before the body: for a request without one, its headers were the whole request.
_BODY = "http11.send_request_body.started"


class _Watchdog:
    """Ends one request at its deadline (``ends``, a ``time.monotonic()`` value): shuts its socket
    down (the blocked read or write then fails at once, and :func:`send` raises DeadlineExceeded);
    a request whose deadline has passed before it is written sends nothing.

    Two ways, because either alone can come too late:

    - a timer thread calls :meth:`expire` at the deadline, which ends a read or write that blocks;
    - the request's own thread compares the clock with ``ends`` when a connection is made and
      just before the request's headers and its body are written (:meth:`trace`). A process
      paused (SIGSTOP) and resumed after the deadline runs on in the thread that was sending,
      most often before the timer thread gets to run: the timer alone would let a mint out after
      the engine's mint window. Only a pause between that comparison and the write itself (a few
      instructions) remains.

    The socket is learnt from httpcore's ``trace`` extension (:data:`_CONNECTED`). The socket's own
    class method shuts it down: ``ssl.SSLSocket.shutdown`` would also drop the TLS state under the
    thread that reads.

    ``start_by`` (a ``time.monotonic()`` value, None: none): a side effect's start deadline
    (contracts.side_effect_start_deadline). Past it, the same checks refuse to connect or write
    with :class:`NotSent`; unlike ``ends`` it does not cut an answer short (a request written in
    time may take its whole deadline).

    A request without a body (``request``'s headers say so: a DELETE, InfluxDB 3's POST
    .../admin/regenerate) is whole once its headers are written: the server carries it out, so
    neither deadline refuses it before its (empty) body. Its answer is read as any other's: for
    a regenerate it is the only copy of the new value. Without ``request`` a body is assumed."""

    def __init__(self, ends: float, start_by: float | None = None, request: httpx.Request | None = None) -> None:
        self._ends = ends
        self._start_by = start_by
        self._request = request
        self._bodiless = request is not None and _without_body(request)
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._done = False
        self.expired = False

    def _too_late_to_start(self) -> bool:
        return self._start_by is not None and time.monotonic() >= self._start_by

    def trace(self, event: str, info: Mapping[str, Any]) -> None:
        if event in _SENDING:
            if event == _BODY and self._bodiless:
                return  # the headers written were the whole request: too late to refuse it
            if self._passed():
                raise httpcore.WriteTimeout("the request's deadline passed before it was sent")
            if self._too_late_to_start():
                # (also before the body: headers whose body never comes are not a request a server carries out)
                raise NotSent(request=self._request)
            return
        if event not in _CONNECTED:
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        with self._lock:
            if isinstance(sock, socket.socket):
                self._socket = sock
        if self._passed():  # connected (DNS, the handshake or a pause took that long): send nothing any more
            if stream is not None:
                stream.close()
            raise httpcore.ConnectTimeout("the request's deadline passed while connecting")
        if self._too_late_to_start():
            if stream is not None:
                stream.close()
            raise NotSent(request=self._request)

    def _passed(self) -> bool:
        """Whether the deadline has passed, by the timer or by the clock (then it counts as expired)."""
        with self._lock:
            if not self._done and not self.expired and time.monotonic() >= self._ends:
                self.expired = True
            return self.expired

    def expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            sock = self._socket
        if sock is not None:
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:  # closed already, or not connected yet
                pass

    def finish(self) -> None:
        with self._lock:
            self._done = True


def send(
    client: httpx.Client, method: str, url: str, *, timeout_s: float, max_bytes: int = MAX_ANSWER_BYTES,
    **kwargs: Any,
) -> httpx.Response:
    """``client.request(method, url, **kwargs)`` with its answer read in full, the whole of it bounded.

    httpx's ``timeout_s`` bounds each phase (connect, each write, each wait for data), not the
    request: a server that sends one byte every ``timeout_s / 2`` holds a request for ever. Here
    the request ends ``REQUEST_PHASES * timeout_s`` after it started (what :func:`call_timeout`
    counts on): a watchdog shuts the connection down then, and DeadlineExceeded (a timeout) is
    raised. An answer read whole (its Content-Length, or its last chunk) is returned even if the
    deadline passes a moment later; one that ends with the connection, only if that came first.
    A request not written by its deadline is not written at all: after DNS resolution (beyond
    the watchdog), or a pause of the process (SIGSTOP), that held it that long. An answer longer
    than ``max_bytes`` raises AnswerTooLarge.

    Inside a side effect (:func:`~rotator.core.contracts.side_effect_start_deadline`), a request
    that may change something (any method but GET, HEAD, OPTIONS) is not written after that
    deadline either, counted from the engine's lease check, not from this call: raises
    :class:`NotSent`. A process paused between its lease check and here could otherwise create
    a token after another rotator took the lease over and closed the run (its search for the
    run's tag done), as an influxctl child started that late would (core/child_process.py).

    Returns a response whose body has been read (no connection left open).
    """
    deadline_s = REQUEST_PHASES * timeout_s
    ends = time.monotonic() + deadline_s
    request = client.build_request(method, url, **kwargs)
    start_by = None if request.method in _SAFE_METHODS else side_effect_start_deadline()
    if start_by is not None and time.monotonic() >= start_by:
        raise NotSent(request=request)
    watchdog = _Watchdog(ends, start_by, request)
    request.extensions["trace"] = watchdog.trace
    timer = threading.Timer(deadline_s, watchdog.expire)
    timer.daemon = True
    timer.start()
    try:
        response = client.send(request, stream=True)
        try:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise AnswerTooLarge(max_bytes, request=request)
                if time.monotonic() > ends and not _complete(response):  # a transport without a socket
                    raise DeadlineExceeded(deadline_s, request=request)
        finally:
            watchdog.finish()
            response.close()
        # Read to its end without an error. Only an answer delimited by the end of the connection
        # may still be cut short: the watchdog's shutdown "ends" it too.
        if watchdog.expired and not _read_whole(response):
            raise DeadlineExceeded(deadline_s, request=request)
    except httpx.HTTPError as exc:  # a read or write the watchdog cut short, a body it truncated...
        if watchdog.expired and not isinstance(exc, DeadlineExceeded | AnswerTooLarge | NotSent):
            raise DeadlineExceeded(deadline_s, request=request) from None
        raise
    finally:
        timer.cancel()
        watchdog.finish()
    # The body is decoded (Content-Encoding undone) already: the headers that described the wire
    # form go, and the Response computes its own Content-Length. The headers are copied as the
    # bytes that came (a value need not be ASCII: a proxy's `X-Served-By: nœud-3`), not as text,
    # which httpx would have to encode again.
    headers = [(k, v) for k, v in response.headers.raw if k.lower() not in _WIRE_HEADERS]
    return httpx.Response(response.status_code, headers=headers, content=bytes(body), request=request)


#: Methods that change nothing at the server (RFC 9110 "safe"): a read, not bounded by a side
#: effect's start deadline (a check after a create, the listing before a delete).
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

#: Headers that describe the form of an answer on the wire, not what :func:`send` returns.
_WIRE_HEADERS = (b"content-encoding", b"content-length", b"transfer-encoding")


def _without_body(request: httpx.Request) -> bool:
    """Whether ``request`` has no body, as h11 frames it: ``Content-Length: 0``, or neither that
    header nor ``Transfer-Encoding`` (httpx sends a DELETE without content so)."""
    length = request.headers.get("Content-Length")
    if length is not None:
        return _number(length.strip()) == 0
    return "Transfer-Encoding" not in request.headers


def _complete(response: httpx.Response) -> bool:
    """Whether all of ``response``'s body has arrived by what its head says: the bytes its
    Content-Length announced, or no body at all (204, 304, an answer to HEAD)."""
    if response.status_code in (204, 304) or response.request.method == "HEAD":
        return True
    length = _number(response.headers.get("Content-Length", ""))
    return length is not None and response.num_bytes_downloaded >= length


def _read_whole(response: httpx.Response) -> bool:
    """Whether ``response``, whose body was read to its end without an error, is whole: a body
    with a Content-Length, or a chunked one (its end is the last, empty chunk: a connection that
    ends before it is an error), unlike one that ends where the connection ends."""
    return _complete(response) or "chunked" in response.headers.get("Transfer-Encoding", "").lower()


#: The most digits :func:`_number` converts (int() refuses more than 4300, and is slow long before).
_MAX_DIGITS = 18


def _number(value: str) -> int | None:
    """A header's non-negative decimal number (ASCII digits only), else None; one of more than
    :data:`_MAX_DIGITS` digits (leading zeros aside) is taken as 10**_MAX_DIGITS."""
    if not (value.isascii() and value.isdigit()):
        return None
    digits = value.lstrip("0") or "0"
    return 10**_MAX_DIGITS if len(digits) > _MAX_DIGITS else int(digits)


#: A sanity bound of a Retry-After in seconds (about 30 years): any larger number means the same.
_MAX_RETRY_AFTER_S = 10**9


def retry_after(response: httpx.Response) -> float | None:
    """The seconds a ``Retry-After`` header of ``response`` asks to wait (delay-seconds, or an
    HTTP-date compared with the answer's own ``Date``), else None. Not capped here: the retry
    helper bounds the wait (rotator/core/retry.py)."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    seconds = _number(value)  # digits only: "²" is a digit to str.isdigit(), not to int()
    if seconds is not None:
        return float(min(seconds, _MAX_RETRY_AFTER_S))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None  # not an HTTP-date (which is always GMT)
    try:
        now = parsedate_to_datetime(response.headers.get("Date", ""))
    except (TypeError, ValueError, IndexError, OverflowError):
        now = SYSTEM_CLOCK.now()
    if now.tzinfo is None:
        now = SYSTEM_CLOCK.now()
    return max(0.0, (when - now).total_seconds())


def wait_asked(seconds: float | None) -> str:
    """What an error message says of a Retry-After (empty without one)."""
    return "" if seconds is None else f"; the server asks to wait {seconds:g}s before trying again (Retry-After)"


def bad_token_id(token_id: str, issuer: str, expected: str) -> BadTokenId:
    """The error for a token id that does not have ``issuer``'s id format (``expected`` says which)."""
    shown = repr(_mask_shapes(_TOKEN_SHAPES, REDACTOR.redact(str(token_id)))[:80])
    return BadTokenId(
        f"{issuer}: token id {shown} is not {expected}; rotator sends no such id to the server",
        hint="the id came from rotator's journal or a store payload: check it (`rotator status`, the store's "
        "token_id) and correct the record",
    )


def path_segment(value: str) -> str:
    """``value`` percent-encoded as one URL path segment (``/``, ``..``, ``?`` and ``%`` included)."""
    from urllib.parse import quote

    encoded = quote(value, safe="")
    return encoded.replace(".", "%2E") if encoded in (".", "..") else encoded


def auth_header(scheme: str, token: Secret) -> dict[str, str]:
    """``{"Authorization": "<scheme> <token>"}``: one of the few places a token is revealed."""
    return {"Authorization": f"{scheme} {token.reveal()}"}


def url_target(url: str) -> str:
    """An issuer's target (contracts.Issuer) from the URL of its server: its host and port, the port
    written also when it is the scheme's default. Not the scheme: a server that starts speaking TLS on
    the same port keeps its tokens (and one port has one listener).

    The host as httpx sends it (``raw_host``: a name in its ASCII form), not ``host``, which decodes a
    punycode name to Unicode (and fails on an invalid one): targets spell names in ASCII, as influxctl
    profiles do (contracts.target_host_port)."""
    parsed = httpx.URL(url)
    host = parsed.raw_host.decode("ascii")
    if ":" in host:  # an IPv6 zone id is written %25 in a URL (RFC 6874), % in an influxctl profile
        host = host.replace("%25", "%")
    return target_host_port(host, parsed.port, {"https": 443, "http": 80}.get(parsed.scheme, 443))


class IssuerSettings(Protocol):
    """What :class:`HttpIssuer` reads: the fields of :class:`HttpSettings` and ``credential``."""

    @property
    def base_url(self) -> str: ...

    @property
    def tls_verify(self) -> bool: ...

    @property
    def ca_bundle(self) -> Path | None: ...

    @property
    def timeout_s(self) -> float: ...

    @property
    def credential(self) -> CredentialSetting: ...


SettingsT = TypeVar("SettingsT", bound=IssuerSettings)


class HttpIssuer(Generic[SettingsT]):
    """What ``influxdb3`` and ``influxdb2`` share: construction, the client, the minting credential.

    Nothing is contacted when the issuer is made: the client is built on first use
    (:meth:`_http`), with ``transport`` in it if one is given (tests).
    """

    kind: ClassVar[str]
    settings_model: ClassVar[type[BaseModel]]

    def __init__(
        self, settings: SettingsT, ctx: AdapterContext, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.settings = settings
        self._policy = ctx.policy
        self._base_dir: Path = ctx.base_dir
        self._clock = ctx.clock
        self._transport = transport
        self._client: httpx.Client | None = None

    @classmethod
    def from_config(
        cls, settings: BaseModel, ctx: AdapterContext, *, transport: httpx.BaseTransport | None = None
    ) -> Self:
        """Nothing is contacted here; the HTTP client is built on first use."""
        checked = checked_settings(cls, settings, cls.settings_model)
        return cls(cast(Any, checked), ctx, transport=transport)  # an instance of settings_model, i.e. SettingsT

    #: HTTP requests in the longest issuer call (a subclass with longer calls raises it; one whose
    #: settings make a call longer overrides :meth:`requests_in_longest_call`).
    requests_per_call: ClassVar[int] = 2

    def requests_in_longest_call(self) -> int:
        """The HTTP requests of this issuer's longest call, with its settings."""
        return self.requests_per_call

    @property
    def call_timeout_seconds(self) -> float:
        """The longest one issuer call (``mint``, ``revoke``...) can take: see :func:`call_timeout`."""
        return call_timeout(self.requests_in_longest_call(), self.settings.timeout_s)

    def target(self) -> str:
        """Where the tokens live (contracts.Issuer): ``base_url``'s host and port, e.g.
        ``influxdb.example.com:8181``."""
        return url_target(self.settings.base_url)

    def _http(self) -> httpx.Client:
        if self._client is None:
            settings = self.settings
            self._client = new_client(
                tls_verify=settings.tls_verify,
                ca_bundle=settings.ca_bundle,
                timeout_s=settings.timeout_s,
                base_dir=self._base_dir,
                base_url=settings.base_url,
                transport=self._transport,
            )
        return self._client

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request with :func:`send`: read in full, bounded as a whole."""
        return send(self._http(), method, url, timeout_s=self.settings.timeout_s, **kwargs)

    def _credential(self, current: Secret | None) -> Secret:
        """The token that mints, lists and revokes (``current``: the one the stores hold now)."""
        return resolve_credential(self.settings.credential, current, self._base_dir,
                                  hint_self=HINT_SELF.format(policy=self._policy), policy=self._policy)


# --------------------------------------------------------------------------------------------
# Errors


class UnexpectedStatus(Exception):
    """Raised by :func:`expect` inside :func:`map_http_errors`; never leaves it."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def expect(response: httpx.Response, *statuses: int) -> httpx.Response:
    """Return ``response`` if its status is one of ``statuses`` (default 200), else raise UnexpectedStatus."""
    if response.status_code not in (statuses or (200,)):
        raise UnexpectedStatus(response)
    return response


@dataclass(frozen=True)
class HttpFailure:
    """One failed HTTP call, told apart by :func:`on_http_failure`; the issuer words the error.

    ``kind``: ``status`` (an answer with a status the caller did not expect: ``response``),
    ``timeout`` (a phase's, or the whole request's: :class:`DeadlineExceeded`), ``tls`` (the TLS
    handshake failed), ``unreachable`` (no connection, or it broke), ``bad_url`` (httpx cannot
    use the URL), ``too_large`` (:class:`AnswerTooLarge`), ``not_sent`` (:class:`NotSent`) or
    ``other`` (any other httpx error).
    ``exc`` is what was raised; its text may hold a URL, never a header or a body.
    """

    kind: Literal["status", "timeout", "tls", "unreachable", "bad_url", "too_large", "not_sent", "other"]
    exc: Exception
    response: httpx.Response | None = None


@contextmanager
def on_http_failure(to_error: Callable[[HttpFailure], RotatorError]) -> Iterator[None]:
    """Raise ``to_error(failure)`` (``from None``) for each httpx failure and unexpected status in the block.

    An unexpected status is :class:`UnexpectedStatus` (from :func:`expect`) or httpx's own
    ``HTTPStatusError`` (from ``raise_for_status``). A rotator error raised in the block passes.
    """
    try:
        yield
    except (UnexpectedStatus, httpx.HTTPStatusError) as exc:
        raise to_error(HttpFailure("status", exc, exc.response)) from None
    except httpx.TimeoutException as exc:
        raise to_error(HttpFailure("timeout", exc)) from None
    except httpx.ConnectError as exc:
        raise to_error(HttpFailure("tls" if _is_tls_failure(exc) else "unreachable", exc)) from None
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise to_error(HttpFailure("bad_url", exc)) from None
    except AnswerTooLarge as exc:
        raise to_error(HttpFailure("too_large", exc)) from None
    except NotSent as exc:  # (a TransportError, but nothing was tried: not "unreachable")
        raise to_error(HttpFailure("not_sent", exc)) from None
    except httpx.TransportError as exc:  # read/write errors, a dropped connection, protocol errors
        raise to_error(HttpFailure("unreachable", exc)) from None
    except httpx.HTTPError as exc:  # e.g. an answer that cannot be decoded
        raise to_error(HttpFailure("other", exc)) from None
    except UnicodeEncodeError:  # a header value httpx cannot encode: its message holds the value (a token)
        raise ConfigError(
            "a credential or a header holds a character that is not ASCII, which HTTP cannot carry",
            hint="write the token again as it was issued (ASCII letters, digits and punctuation)",
        ) from None


@contextmanager
def map_http_errors(
    what: str,
    *,
    hints: Mapping[int, str] | None = None,
    unauthenticated_is_transient: bool = False,
) -> Iterator[None]:
    """Translate httpx failures and unexpected statuses raised in the block into rotator errors.

    ``hints`` replaces the default hint per status. ``unauthenticated_is_transient``: a 401 means
    "not active yet" (verifying a token minted a moment ago), so it is retried.
    """

    def to_error(failure: HttpFailure) -> RotatorError:
        exc = failure.exc
        if failure.response is not None:
            return _status_error(what, failure.response, hints or {}, unauthenticated_is_transient)
        if failure.kind == "timeout":
            request = _request_of(exc)
            if isinstance(exc, DeadlineExceeded):
                message = ERR_DEADLINE.format(what=what, call=_call(request), timeout=exc.deadline_s)
            else:
                message = ERR_TIMEOUT.format(what=what, call=_call(request), timeout=_timeout_of(request))
            return TransientError(message, hint=HINT_RETRY)
        if failure.kind == "not_sent":
            return TransientError(ERR_NOT_SENT.format(what=what, call=_call(_request_of(exc))), hint=HINT_NOT_SENT)
        if failure.kind == "too_large" and isinstance(exc, AnswerTooLarge):
            message = ERR_TOO_LARGE.format(what=what, call=_call(_request_of(exc)), limit=exc.limit)
            return IssuerOutputError(message, hint="check that base_url points at the server itself, not at a proxy")
        if failure.kind == "tls":
            return PermanentError(ERR_TLS.format(what=what, url=_origin(exc)), hint=HINT_TLS)
        if failure.kind == "bad_url":
            message = ERR_BAD_URL.format(what=what, url=_origin(exc), cause=type(exc).__name__)
            return ConfigError(message, hint="check base_url")
        if failure.kind == "unreachable":
            return TransientError(
                ERR_UNREACHABLE.format(what=what, url=_origin(exc), cause=_cause(exc)), hint=HINT_RETRY
            )
        message = ERR_OTHER.format(what=what, call=_call(_request_of(exc)), cause=type(exc).__name__)
        return PermanentError(message, hint=HINT_OTHER)

    with on_http_failure(to_error):
        yield


def _status_error(
    what: str, response: httpx.Response, hints: Mapping[int, str], fresh: bool
) -> TransientError | PermanentError:
    status = response.status_code
    detail = redact_detail(error_text(response))
    message = ERR_STATUS.format(
        what=what, call=_call(response.request), status=status, detail=f": {detail}" if detail else ""
    )
    if status == 401 and fresh:
        return NotYetAccepted(message, hint=HINT_FRESH_TOKEN)
    if status in _TRANSIENT_STATUS or status >= 500:
        asked = retry_after(response)
        return TransientError(message + wait_asked(asked), hint=HINT_RETRY, retry_after=asked)
    if 300 <= status < 400 and status not in hints:
        return PermanentError(message, hint=redirect_hint(response, "base_url"))
    return PermanentError(message, hint=hints.get(status) or _DEFAULT_HINTS.get(status, HINT_OTHER))


def redirect_hint(response: httpx.Response, key: str) -> str:
    """The hint of a 3xx answer: rotator follows no redirect, so ``key`` (the setting that holds the
    server's address) must name the final one. Of the ``Location``, only its scheme, host and port are
    named: its path or query could carry anything (a login page's state, a signed link)."""
    target = _redirect_origin(response)
    return HINT_REDIRECT.format(target=f" to {target}" if target else "", key=key)


def _redirect_origin(response: httpx.Response) -> str | None:
    """``scheme://host:port`` of the answer's ``Location`` (a relative one is on the request's server),
    else None (none, or not an http(s) URL httpx can read)."""
    location = response.headers.get("Location", "").strip()
    if not location or not location.isprintable():
        return None
    request = _request_of(response)
    try:
        url = request.url.join(location) if request is not None else httpx.URL(location)
        host = url.raw_host.decode("ascii")
        port = url.port or {"https": 443, "http": 80}.get(url.scheme)
    except (httpx.InvalidURL, UnicodeDecodeError, ValueError):
        return None
    if url.scheme not in ("http", "https") or not host:
        return None
    origin = f"{url.scheme}://{f'[{host}]' if ':' in host else host}:{port}"
    return redact_detail(origin, limit=120)  # the host is text the server chose: masked as any other


def error_text(
    response: httpx.Response, keys: tuple[str, ...] = ("error", "message"), *, plain_text: bool = True
) -> str:
    """The server's own error message, its known secrets redacted already; :func:`redact_detail` still
    masks the token shapes and cuts it for a message.

    The first of ``keys`` with a non-blank string in a JSON object (InfluxDB 3 writes
    ``{"error": ...}``, v2 and the Management API ``{"code", "message"}``); a body that is not
    JSON as one line if ``plain_text``; else "". Only the first :data:`_ERROR_CHARS` characters of
    the body are read (:func:`_error_head`).
    """
    try:
        raw = response.read()
    except httpx.HTTPError:
        return ""
    if not raw:
        return ""
    text = _error_head(raw)
    try:
        data = json.loads(text)
    except ValueError:
        return " ".join(text.split()) if plain_text else ""
    except RecursionError:  # nested thousands deep: no server's error message
        return ""
    if isinstance(data, dict):
        for key in keys:
            value = data.get(key)
            if isinstance(value, str) and value.strip():
                return value
    return ""


#: The characters of an error answer's body that :func:`error_text` reads.
_ERROR_CHARS = 4096
#: The bytes of the body :func:`_error_head` redacts at first: 64 KiB costs a few milliseconds, where
#: all of an answer (up to MAX_ANSWER_BYTES) would cost seconds.
_REDACT_WINDOW = 64 * 1024
#: How much redacted text :func:`_error_head` wants past what it keeps: a known secret cut by the end
#: of the redacted window (so not redacted) cannot reach back into the kept part unless it is longer
#: than this, far more than a header (how every secret rotator knows travels) carries.
_SECRET_ROOM = 48 * 1024


def _error_head(raw: bytes) -> str:
    """The first :data:`_ERROR_CHARS` characters of the body ``raw``, redacted **before** they are cut:
    a known secret cut at the end would leave a prefix that the redactor does not match. When the body
    was cut, its last (maybe partial) word goes too: a token the redactor does not know, cut short,
    would be too short for the token shapes :func:`redact_detail` masks."""
    window = _REDACT_WINDOW
    while True:  # redaction only shortens the text: widen the window until enough is left after it
        text = REDACTOR.redact(raw[:window].decode("utf-8", errors="replace"))
        whole = window >= len(raw)
        if whole or len(text) >= _ERROR_CHARS + _SECRET_ROOM:
            break
        window *= 4
    if whole and len(text) <= _ERROR_CHARS:
        return text
    # Cut: either the whole text is longer, or the body went on past the window (and then the loop
    # left more than _ERROR_CHARS), so text[_ERROR_CHARS] exists.
    head = text[:_ERROR_CHARS]
    if head[-1].isspace() or text[_ERROR_CHARS].isspace():
        return head  # cut between two words
    return head[: len(head) - len(head.split()[-1])]


def redact_detail(text: str, *, shapes: re.Pattern[str] = _TOKEN_SHAPES, limit: int = _MAX_DETAIL) -> str:
    """Server text fit for a message: known secrets and words of the token ``shapes`` removed, cut at
    ``limit``, control characters written out (the message reaches terminals and log files)."""
    text = one_line(_mask_shapes(shapes, REDACTOR.redact(text.strip())))
    return text if len(text) <= limit else text[:limit] + "..."


def _mask_shapes(shapes: re.Pattern[str], text: str) -> str:
    """``text`` with every match of ``shapes`` replaced by ``***``, but for an InfluxDB resource path."""
    return shapes.sub(lambda found: found[0] if _RESOURCE_PATH.fullmatch(found[0]) else "***", text)


def _call(request: httpx.Request | None) -> str:
    return f"{request.method} {request.url.path}" if request is not None else "the request"


def _origin(exc: object) -> str:
    request = exc if isinstance(exc, httpx.Request) else _request_of(exc)
    if request is None:
        return "the server"
    url = request.url
    return f"{url.scheme}://{url.netloc.decode('ascii', errors='replace')}"


def _request_of(exc: object) -> httpx.Request | None:
    try:
        request = exc.request  # type: ignore[attr-defined]  # raises RuntimeError when unset
    except (AttributeError, RuntimeError):
        return None
    return request if isinstance(request, httpx.Request) else None


def _timeout_of(request: httpx.Request | None) -> float:
    if request is None:
        return 0.0
    timeouts = request.extensions.get("timeout") or {}
    values = [v for v in timeouts.values() if isinstance(v, int | float)]
    return float(max(values)) if values else 0.0


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what caused it, innermost last (each once: a chain can loop)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _cause(exc: BaseException) -> str:
    """A short, secret-free cause: the innermost OS error name, else the exception class."""
    for inner in _chain(exc):
        if isinstance(inner, OSError) and inner.strerror:
            return inner.strerror.lower()
    return type(exc).__name__


def _is_tls_failure(exc: BaseException) -> bool:
    """Whether a connection failed in the TLS handshake for a reason a retry cannot fix (an untrusted
    certificate, a wrong host name, no common protocol): an ``ssl.SSLError`` in its chain, or its
    text says so. A handshake cut short (EOF, a reset: a load balancer restarting) is not one of
    them: that is an unreachable server, and transient."""
    for inner in _chain(exc):
        if isinstance(inner, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError)):
            return False
        if isinstance(inner, ssl.SSLError):
            return True
    text = str(exc)
    if "UNEXPECTED_EOF" in text or "EOF occurred" in text:
        return False
    return "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text


# --------------------------------------------------------------------------------------------
# Answers


def json_body(response: httpx.Response, what: str, *, created: str = "") -> Any:
    """The JSON body of ``response`` (any content type: InfluxDB 3 sends ``Content-Type: json``).

    ``created`` names a resource that exists now although its answer is unreadable, for the message.
    """
    prefix = f"{created} was created, but " if created else ""
    try:
        return json.loads(response.content)
    except ValueError:
        problem = "is not JSON"
    except RecursionError:
        problem = "is JSON nested too deeply to be an answer of this API"
    raise IssuerOutputError(
        f"{what}: {prefix}the answer ({response.status_code}, {len(response.content)} bytes) {problem}",
        hint="check that base_url points at the server itself, not at a proxy or login page",
    )


def error_code(response: httpx.Response) -> object:
    """The ``code`` of an answer's JSON error body (the InfluxDB APIs' Error object), else None: tells
    the server's own 404 from a proxy's or a router's, which says nothing about a token."""
    try:
        body = response.json()
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the decoder goes
        return None
    return body.get("code") if isinstance(body, dict) else None


def token_value(value: object) -> Secret | None:
    """The token in an answer's token field: one word of printable ASCII (:func:`is_header_token`;
    surrounding white space dropped), else None: a value no header can carry authenticates nothing."""
    if not isinstance(value, str) or not is_header_token(value.strip()):
        return None
    return Secret(value.strip())


#: What :func:`parse_time` reads a year past 9999 as, which no datetime holds: InfluxDB 3 prints the
#: expiry of a token made with ``--expiry 20000y`` as ``+22025-06-01T10:00:00.123`` (chrono writes a
#: year past 9999 with a sign). Every comparison with a time rotator meets gives the same answer as the
#: real one would; ``FAR_FUTURE - now`` works (a timedelta of some 8000 years), adding to it overflows.
FAR_FUTURE = datetime.max.replace(tzinfo=UTC)
#: A date whose year has a sign or more than 4 digits (ISO 8601's expanded years): the sign, the
#: digits, the rest from the month on.
_EXPANDED_YEAR = re.compile(r"([+-]?)([0-9]+)(-.*)", re.DOTALL)


def parse_time(value: object, where: str) -> datetime | None:
    """An RFC 3339 / ISO 8601 time (a naive one is UTC) or epoch milliseconds, as aware UTC; None stays None.

    A year past 9999 (``+22025-...``, ``22025-...``) is :data:`FAR_FUTURE`; a year before 1 is out of range."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise IssuerOutputError(f"{where} is a boolean, expected a time")
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            raise IssuerOutputError(f"{where} is out of range") from None
    if not isinstance(value, str):
        raise IssuerOutputError(f"{where} is a JSON {type(value).__name__}, expected a time")
    text = value.strip().replace(" ", "T", 1)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)  # nanoseconds: Python keeps microseconds
    expanded = _EXPANDED_YEAR.fullmatch(text)
    if expanded and (expanded[1] or len(expanded[2]) > 4):
        sign, digits, rest = expanded[1], expanded[2].lstrip("0"), expanded[3]
        if sign == "-" or not digits:
            raise IssuerOutputError(f"{where} is out of range (a year before 1)")
        if len(digits) <= 4:  # +2025-...: a sign no one needed
            text = digits.zfill(4) + rest
        else:
            try:  # the rest must still be a time: year 2000 has every month and day another year has
                datetime.fromisoformat("2000" + rest)
            except ValueError:
                raise IssuerOutputError(f"{where} is not an RFC 3339 time") from None
            return FAR_FUTURE
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise IssuerOutputError(f"{where} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:  # 9999-12-31T23:30:00-01:00 is a valid text whose UTC time is past the year 9999
        return parsed.astimezone(UTC)
    except OverflowError:
        raise IssuerOutputError(f"{where} is out of range") from None
