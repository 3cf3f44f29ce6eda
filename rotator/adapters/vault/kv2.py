"""vault-kv2: publish the current token into a HashiCorp Vault (or OpenBao) KV v2 secret.

What rotator keeps in Vault::

    <mount>/data/<path>       one version per publish, holding TokenRecord.payload()
    <mount>/metadata/<path>   custom_metadata {managed-by: rotator, policy, token_id, rotated_at}

Versions. The *current* version is the secret's ``current_version`` and
``StoreState.version`` is that number: the compare-and-set id ``publish`` sends as ``cas``.
A current version that was soft-deleted or destroyed holds no token, so ``read_current``
returns its number with ``record=None`` (and ``managed`` from custom_metadata, which survives
deletion): a managed secret is re-published over it with ``cas`` = that number, which is what
Vault expects; an unmanaged one still needs ``adopt``. The *previous* version is the highest
lower version Vault still serves (neither deleted nor destroyed). KV v2 keeps ``max_versions``
(0 on the mount means 10); fewer than 3 can evict the previous token during its grace
period, so the store warns once. ``delete_version_after`` (the secret's, or the mount's: Vault
takes the shorter) soft-deletes each version that long after it is written, whether or not it
is still current: consumers then read nothing (404). The store warns when a version can be
deleted before its token expires: once from its first read (the settings, against the current
token's lifetime), and at every publish (the deletion time Vault set on the new version). It
does not refuse: it knows neither the schedule nor the grace period, and a refused rotation
would leave the current version to be deleted all the same.

The Vault policy rotator's token needs (relative to the namespace, if any) is
deploy/vault/rotator-policy.hcl (tested against OpenBao in tests/deploy/test_deploy_daemon.py)::

    path "<mount>/data/<path>"     { capabilities = ["create", "read", "update"] }
    path "<mount>/metadata/<path>" { capabilities = ["read", "update", "patch"] }
    path "auth/token/lookup-self"  { capabilities = ["read"] }    # in Vault's `default` policy too
    path "auth/token/renew-self"   { capabilities = ["update"] }  # idem
    path "<mount>/config"          { capabilities = ["read"] }    # optional: max_versions, delete_version_after

Authentication (``auth``): a token from a file or variable, AppRole, or Kubernetes (the pod's
service account JWT); see rotator/adapters/vault/auth.py.

Marking the secret managed. After the ``cas`` write, ``publish`` sends rotator's own
custom_metadata keys (managed-by, policy, token_id, rotated_at) as a JSON merge patch (PATCH of
``<mount>/metadata/<path>``, Vault 1.9 and later, OpenBao): Vault merges them into the map it holds
then, so an operator's own keys stay, even one written a moment before (``kv metadata patch``).
PATCH needs the ``patch`` capability. When Vault refuses it (403: a policy that grants only
``update``) or does not know it (405: Vault before 1.9), the store reads the metadata and POSTs the
whole map, its keys merged into what it read: one more request, and a key an operator writes
between that read and the POST is lost. It logs that once (a warning for the 403: grant ``patch``).
A 405 holds for the store's life. A 403 is taken for a missing ``patch`` only once the same token
has then read and written the metadata (a token that expired or was revoked is refused everything:
that is a credential problem, and the next publish tries PATCH again); it holds while the store
carries that token (a new login, a new token in the file, a restart or a daemon reload tries PATCH
again). Vault takes at most 64 keys in a write of the whole map: one that would hold more (an operator's
keys and rotator's 4) is not sent, and the error says how many keys to remove (or to grant ``patch``:
Vault checks a PATCH's keys alone). Unlike the ``cas`` write, no compare-and-set fences the metadata
write: it starts within the publish's lease-check window or not at all, and one Vault answers after that
window is checked against a newer version (``VaultKV2Store._claim`` gives the rule): the keys end naming
the current version's token.

Requests. ``read_current`` is one GET of ``<mount>/data/<path>``, whose answer carries the
version, its payload and the secret's custom_metadata (a secret without a version, made with
``kv metadata put``, answers 404: then its metadata is read too, whose marker may name another
policy); ``publish`` is the ``cas`` write and the custom_metadata PATCH (without ``patch``: the
metadata read and the POST; a metadata read more, after a write answered past the publish's start
window). A store's first read also reads the secret's metadata and, unless
the secret sets max_versions, the mount's config (the max_versions and delete_version_after
checks; when it is refused, the mount's lookup as well: see below), and the login adds its own
(token auth: one lookup-self). The HTTP client takes nothing from the environment (proxy variables,
``REQUESTS_CA_BUNDLE``, ``~/.netrc``): the settings alone decide. It ends every request ``timeout_s``
after it started, redirects included, and reads at most :data:`MAX_ANSWER_BYTES` of an answer
(:class:`_Deadline`): past either, a TransientError naming Vault's address (requests' own timeout
bounds each read of the socket, not a request). ``request_count`` is the number of HTTP requests
the store sent (tests/adapters/test_store_requests.py asserts them).

Where ``mount`` points. ``mount`` is the engine's path as ``vault secrets list`` shows it (``secret``), not the
API path (``secret/data``): written so, rotator would read and write the secret ``data/<path>`` of ``secret``.
The first read finds out before anything is written. The mount's config read cannot answer as a KV v2
config then (a 404, or a secret named "config"); nor does a path inside a mount, or a KV v1 engine. Only
then, or when that read is refused (deploy/vault/rotator-policy.hcl leaves it out: a KV v1 engine's 404s for
the data and the metadata then look like an absent KV v2 secret, and its first write would keep the token
as a plain secret), or when a first read fails and ``mount`` has a ``data`` or ``metadata`` segment (a real
mount may be named so), the store asks Vault which mount serves ``<mount>/<path>`` (GET
``sys/internal/ui/mounts/<mount>/<path>``, one request per store, no capability of its own) and raises a
ConfigError naming the ``mount`` and ``path`` to set, or a PermanentError if the engine is not KV version 2.
A store whose token may read the config sends nothing more.

Every Vault call goes through ``_map_errors()``: unreachable, timeouts, 412, 429, 5xx and
other unexpected statuses become TransientError; TLS failures, 403 (the hint names the path
and capability) and other 4xx become PermanentError; a 4xx whose body is not Vault's JSON error
object (a proxy's, or Go's answer to plain HTTP on a TLS port: the hint then gives the https://
url) is "not Vault's answer", never a refused credential, and a 404 never an absent secret or version
(auth.not_vault_answer, _adapter_class, _absent). An answer to the ``cas`` write naming another version than
cas + 1 (the only one Vault writes) is not Vault's either: a TransientError, since the write may have landed.
Messages name the location, operation, path and status plus Vault's own error strings (redacted);
never the SDK's text or a token.
"""

from __future__ import annotations

import contextvars
import functools
import io
import json
import logging
import os
import re
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol, TypeVar, runtime_checkable
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rotator.adapters.transport import RequestCounter, http_address_problem, plain_http_warning, tls_verify_warning
from rotator.adapters.vault.auth import (
    AnswerTooLarge,
    AppRoleAuth,
    CredentialStatus,
    HvacAPI,
    KubernetesAuth,
    NoAnswerInTime,
    NotVaultAnswer,
    TokenAuth,
    VaultAPI,
    VaultAuth,
    VaultLogin,
    error_body,
    mount_segments,
    not_vault_answer,
    plain_segments,
    transient_status,
)
from rotator.config.registry import lazy_sdk
from rotator.config.schedule import format_duration
from rotator.config.timefmt import rfc3339_seconds
from rotator.core.contracts import (
    MALFORMED_HINT,
    AdapterContext,
    Store,
    StoreState,
    TokenRecord,
    checked_settings,
    side_effect_start_deadline,
)
from rotator.core.errors import (
    ConfigError,
    ConflictError,
    MalformedPayload,
    PermanentError,
    RotatorError,
    TransientError,
)
from rotator.core.secret import REDACTOR

if TYPE_CHECKING:
    import hvac
    import hvac.exceptions
    import requests
    import requests.adapters
    import urllib3
else:  # imported on first use: loading a policy file needs the settings models only (issue 12)
    hvac = lazy_sdk("hvac")
    requests = lazy_sdk("requests")

__all__ = [
    "MAX_ANSWER_BYTES",
    "AppRoleAuth",
    "ClientFactory",
    "KubernetesAuth",
    "TokenAuth",
    "VaultAPI",
    "VaultKV2Settings",
    "VaultKV2Store",
    "hvac_client",
]

logger = logging.getLogger("rotator.adapters.vault_kv2")

MANAGED_BY = "rotator"
_MIN_VERSIONS = 3
_LONGEST_TIMEOUT_S = 300
_DEFAULT_MAX_VERSIONS = 10  # a mount's max_versions of 0 means 10
_CAS_MISMATCH = "check-and-set parameter did not match"
#: Vault's limits on custom_metadata (vault-plugin-secrets-kv, validateCustomMetadata): keys in one write of the
#: map, bytes of a key, bytes of a value. A PATCH is checked alone, not merged with the keys Vault holds.
_MAX_CUSTOM_KEYS = 64
_MAX_CUSTOM_KEY_BYTES = 128
_MAX_CUSTOM_VALUE_BYTES = 512
#: What Vault's 400 says when a custom_metadata write breaks those limits
_CUSTOM_INVALID = "custom_metadata validation failed"
_CUSTOM_COUNT = "must contain at most"
#: Writes of a newer version's keys after a write answered late, at most (VaultKV2Store._claim)
_CLAIM_WRITES = 3
_MULTIERROR_HEAD = re.compile(r"^\s*\d+ errors? occurred:")

_ERR_UNREACHABLE = "{where}: cannot reach Vault at {url} ({cause})"
_ERR_TLS = "{where}: TLS handshake with {url} failed (untrusted certificate, or not a TLS endpoint)"
_ERR_HTTP = "{where}: Vault refused to {operation} {path}: HTTP {status}{detail}"
_ERR_CONFLICT = "{where}: compare-and-set lost: expected version {expected}, Vault is at version {actual}"
_ERR_NOT_KV2 = "{where}: Vault's answer to the write has no version: is mount {mount!r} a KV version 2 engine?"
_ERR_NOT_CAS_ANSWER = (
    "{where}: the answer of {url} to {operation} {path} with cas={cas} is not Vault's: it names version {version}, "
    "but a compare-and-set write Vault accepts with cas={cas} is always version {expected}"
)
_HINT_NOT_CAS_ANSWER = (
    "check url: it must reach Vault's API itself, not a proxy or cache that answers writes on its own; the write may "
    "have reached Vault all the same: rotator sends it again with the same cas (which Vault refuses if it landed; the "
    "secret is then read to find the version holding the token) and reads the secret before it revokes the new token"
)
_HINT_RETRY = "rotator retries; check that Vault is up, unsealed and reachable from here"
_HINT_TLS = "set `ca_bundle` to the CA that signed Vault's certificate"
_HINT_TLS_FILES = "put the `ca_bundle` file back where the policy file says (or fix the path), then run it again"
_HINT_FORBIDDEN = (
    "rotator's Vault token needs {caps} on path {path!r}{namespace}; or it expired or was revoked. A policy added "
    "to an AppRole or Kubernetes role reaches the token at its next login: restart rotator (or reload the daemon)"
)
_HINT_CONFLICT = (
    "another writer changed the secret after rotator read it: inspect it with "
    "`bao kv metadata get {namespace}-mount={mount} {path}` (or `vault kv ...`), then rotate again"
)
_HINT_VAULT = "check the store settings (url, namespace, mount, path) and the Vault server's log"
_ERR_NOT_KV2_MOUNT = "{where}: mount {mount!r} is not a KV version 2 secrets engine ({why})"
_WHY_KV1 = "it answers as KV version 1"
_WHY_NO_CONFIG = "its config does not answer as a KV v2 engine's: a KV version 1 engine, or a path inside a mount"
_HINT_NOT_KV2 = (
    "point `mount` at a KV v2 engine (its path as `vault secrets list` shows it, e.g. `secret`, never the API path "
    "`secret/data`), or upgrade this one (`vault kv enable-versioning MOUNT`)"
)
_HINT_NOT_KV2_WRITTEN = (
    _HINT_NOT_KV2 + "; a KV v1 mount keeps what was written to <mount>/data/<path> as a plain secret: delete it "
    "(`vault delete MOUNT/data/PATH`)"
)
_ERR_MOUNT_ELSEWHERE = (
    "{where}: `mount` {mount!r} is not where a secrets engine is mounted: Vault serves {full!r} from the {kind} "
    "mounted at {real!r}"
)
_HINT_MOUNT_ELSEWHERE = (
    "set mount = {mount_toml} and path = {path_toml} in the store's settings: `mount` is the engine's path as "
    "`vault secrets list` shows it{api_path}; rotator writes nothing until then"
)
_HINT_API_PATH = ", without the /{segment}/ of the API path"
_HINT_MOUNT_ONLY = "set mount = {mount_toml} in the store's settings, and `path` to the secret's path inside it"
_HINT_ELSEWHERE_NOT_KV2 = (
    "point `mount` and `path` at a KV version 2 engine: the engine that serves this path is not one (`mount` is an "
    "engine's path as `vault secrets list` shows it{api_path})"
)
#: Path segments that make `mount` look like a KV v2 API path (`secret/data`): the mount is then looked up when a
#: first read fails too (a real mount may have such a name: the server decides).
_API_SEGMENTS = frozenset({"data", "metadata"})
_ERR_NOT_VAULT = "{where}: the answer of {url} to {operation} {path} is not Vault's (not the JSON object Vault sends)"
_HINT_NOT_VAULT = (
    "check url: it must reach Vault's API itself (an ingress's default page, a proxy, or another service on that "
    "port answered)"
)
_ERR_NOT_VAULT_STATUS = (
    "{where}: the answer of {url} to {operation} {path} is not Vault's: HTTP {status} without the JSON error "
    "object Vault sends"
)
#: What Go's HTTP server (Vault's, OpenBao's) answers a plain HTTP request on a TLS listener, as HTTP 400.
_GO_PLAIN_HTTP_TO_TLS = "HTTP request to an HTTPS server"
_ERR_PLAIN_HTTP_TO_TLS = (
    "{where}: {url} answered {operation} {path} with HTTP 400 \"Client sent an HTTP request to an HTTPS server\": "
    "the server there speaks TLS"
)
_HINT_PLAIN_HTTP_TO_TLS = (
    "set url = {https_url} in the store's settings (https://, the same host and port), and `ca_bundle` if Vault's "
    "certificate is not signed by a CA this host trusts"
)
_ERR_REDIRECT = (
    "{where}: Vault at {url} answered a request to {operation} {path} with a redirect to {target}; rotator "
    "follows no redirect to another scheme, host or port, which would send its Vault token (and a token payload) "
    "there"
)
_ERR_REDIRECT_LOOP = (
    "{where}: {url} answered a request to {operation} {path} with redirects that never end (a loop: rotator gave "
    "up after 30)"
)
_HINT_REDIRECT_LOOP = (
    "check url: it must be the address of Vault's API itself; the server there (a proxy, a load balancer or an "
    "ingress rule) redirects the request back to where it came from; `curl -sI <url>/v1/sys/health` shows the "
    "Location it sends"
)
_ERR_TOO_LARGE = (
    "{where}: the answer of {url} to {operation} {path} is longer than {limit} bytes, far more than Vault sends "
    "for it: rotator stopped reading it there"
)
_HINT_TOO_LARGE = (
    "check url: it must reach Vault's API itself, not a proxy, an ingress or a relay that answers in its place "
    "(`curl -sI <url>/v1/sys/health` shows who answers); rotator retries"
)
_ERR_NO_ANSWER_IN_TIME = (
    "{where}: no complete answer from {url} to {operation} {path} within timeout_s = {timeout:g} s (the limit of "
    "the whole request, its redirects included)"
)
_HINT_NO_ANSWER_IN_TIME = (
    "rotator retries; check that Vault answers at url promptly, and whatever stands between (a proxy or a load "
    "balancer that holds an answer back or passes it on a little at a time); raise `timeout_s` if Vault is only slow"
)
_HINT_REDIRECT = (
    "set url to an address that answers itself: Vault's active node, or a load balancer in front of nodes that "
    "forward requests to it (a standby redirects only when request forwarding is off)"
)

#: The status behind each hvac exception (hvac keeps only the class).
@functools.cache
def _status() -> dict[type[hvac.exceptions.VaultError], str]:
    return {
        hvac.exceptions.InvalidRequest: "400",
        hvac.exceptions.Unauthorized: "401",
        hvac.exceptions.Forbidden: "403",
        hvac.exceptions.InvalidPath: "404",
        hvac.exceptions.PreconditionFailed: "412",
        hvac.exceptions.RateLimitExceeded: "429",
        hvac.exceptions.InternalServerError: "500",
        hvac.exceptions.VaultNotInitialized: "501",
        hvac.exceptions.BadGateway: "502",
        hvac.exceptions.VaultDown: "503",
    }

T = TypeVar("T")


class _Op(NamedTuple):
    """A kind of Vault call, for messages: what it does, on which path, the hint if refused."""

    name: str
    path: str
    refused_hint: str
    #: A login: any 4xx means the credentials are wrong, not the settings.
    auth: bool = False


class _Refused(Exception):
    """A 403 that a new token did not (or could not) cure, for a call whose caller has another way."""


class VaultKV2Settings(BaseModel):
    """``[[policy.stores]] kind = "vault-kv2"`` settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="Vault address, e.g. https://vault.example:8200")
    mount: str = Field(default="secret", min_length=1, description="KV v2 mount path")
    path: str = Field(min_length=1, description="secret path inside the mount")
    namespace: str | None = Field(default=None, description="Vault Enterprise / OpenBao namespace")
    tls_verify: bool = True
    ca_bundle: Path | None = Field(default=None, description="PEM CA bundle; relative to the policy file")
    # At most 300 s, as in the AWS store (_bounded_timeout): inf (TOML allows it) overflowed the socket's
    # timeout at the first request, and a huge one let a hung call outlive the policy's lease. The
    # maximum is stated for the JSON schema only: pydantic's `le` would check it before the validator,
    # whose message says what the range is.
    timeout_s: float = Field(default=10, gt=0, json_schema_extra={"maximum": _LONGEST_TIMEOUT_S})
    auth: VaultAuth

    @field_validator("url")
    @classmethod
    def _plain_http_url(cls, value: str) -> str:
        if not value.isprintable() or " " in value:  # urlsplit drops a newline: requests would refuse it later
            raise ValueError("must not contain spaces or control characters (a line break copied with it?)")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// address")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials; use `auth`")
        problem = http_address_problem(value)
        if problem:
            raise ValueError(problem)
        return value.rstrip("/")

    @field_validator("timeout_s")
    @classmethod
    def _bounded_timeout(cls, value: float) -> float:
        if not 0 < value <= _LONGEST_TIMEOUT_S:  # False for NaN too
            raise ValueError(f"must be more than 0 and at most {_LONGEST_TIMEOUT_S} (seconds)")
        return value

    @field_validator("mount", "namespace")
    @classmethod
    def _no_outer_slashes(cls, value: str | None) -> str | None:
        return mount_segments(value) if value is not None else None

    @field_validator("namespace")
    @classmethod
    def _ascii_namespace(cls, value: str | None) -> str | None:
        # hvac sends it as the X-Vault-Namespace header: http.client cannot encode a character beyond
        # Latin-1 (the failure then read as a bad token), and Vault reads the header's bytes as UTF-8.
        if value is not None and not value.isascii():
            odd = next(c for c in value if not c.isascii())
            raise ValueError(f"must be ASCII (it travels in an HTTP header, which cannot carry {odd!r}); write the "
                             "namespace's path as Vault lists it (`vault namespace list`)")
        return value

    @field_validator("path")
    @classmethod
    def _plain_path(cls, value: str) -> str:
        return plain_segments(value)

    @model_validator(mode="after")
    def _one_tls_choice(self) -> VaultKV2Settings:
        if self.ca_bundle is not None and not self.tls_verify:
            raise ValueError("`ca_bundle` has no effect with `tls_verify = false`; drop one")
        return self

    def transport_warnings(self) -> list[str]:
        """Settings that expose the tokens on their way to Vault (see rotator/adapters/transport.py)."""
        return [*plain_http_warning(self.url, "url"), *tls_verify_warning(self.tls_verify, self.url)]

    def secret_locations(self, base_dir: Path) -> list[str]:  # noqa: ARG002 - the hook's signature
        """The secret this store writes, for rotator/config/policy.py, which refuses two stores that write
        one (the second policy's runs would fail, or overwrite the first's token with ``adopt``).

        One spelling per server: the scheme and host in any case, a default port. Namespace, mount and
        path are compared as written (normalised by their validators): Vault reads them case-sensitively,
        and a namespace written into the mount is not taken for the same secret (no false alarm)."""
        parts = urlsplit(self.url)
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower().rstrip(".")
        try:
            port = parts.port or {"http": 80, "https": 443}.get(scheme)
        except ValueError:  # not a port: hvac will refuse it; compare it as written
            port = None
        origin = f"{scheme}://{f'[{host}]' if ':' in host else host}" + (f":{port}" if port else "")
        namespace = f" namespace {self.namespace}" if self.namespace is not None else ""
        return [f"Vault {origin}{parts.path.rstrip('/')}{namespace} mount {self.mount} path {self.path}"]


#: Builds the client from the settings; the seam where tests inject a fake.
ClientFactory = Callable[[VaultKV2Settings], VaultAPI]


def _session(counter: RequestCounter, verify: bool | str, timeout_s: float) -> requests.Session:
    """A session that counts every request it sends, bounds each one (``timeout_s`` for the whole request,
    :data:`MAX_ANSWER_BYTES` of answer: :class:`_Deadline`) and takes nothing from the environment
    (``trust_env`` off: no proxy variables, no REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE, no ~/.netrc lookup
    per request). Its class is made on first use: a module-level subclass of ``requests.Session``
    would import requests whenever a policy file naming this store is loaded."""
    session = _session_class()(counter, timeout_s)
    session.trust_env = False
    session.verify = verify  # hvac prefers the session's own verify over its argument
    return session


#: The largest answer (bytes, once decoded) the store reads from Vault. Vault's answers to the store are a few KB
#: (a secret's payload and metadata, a token's lookup, a login); a larger one comes from whatever else answers at
#: ``url`` (a proxy, an ingress, a relay) and is cut off there (AnswerTooLarge), not held in memory whole. The bound
#: of the HTTP issuers (MAX_ANSWER_BYTES of rotator/adapters/http/common.py), not imported from there: an adapter
#: family imports no other (tests/core/test_layout.py), and that module imports httpx, which Vault does not need.
MAX_ANSWER_BYTES = 32 * 1024 * 1024
#: The most bytes one read of an answer's body asks for; a read returns what has arrived (``read1``: one read of
#: the socket), so the deadline is checked whenever data comes, however little.
_READ_SIZE = 64 * 1024


class _Deadline:
    """The end of one request to Vault: ``timeout_s`` after it started, its redirects included.

    requests' ``timeout`` bounds the connect and each read of the socket, not the request: a server that sent a
    byte every half ``timeout_s`` held a call (a run, a daemon's worker) for ever. As in the HTTP issuers'
    ``send`` (rotator/adapters/http/common.py), two things end it:

    - the body is read in small reads (:data:`_READ_SIZE`), and the clock is checked after each;
    - a watchdog shuts the connection's socket down at the deadline (:meth:`watching`), which ends a read that
      blocks: the status line and headers (http.client reads them line by line, each read within the timeout).
      The socket is learnt once connected, or before the answer is read for a connection the pool kept
      (:func:`_transport_class`).

    A connect does not count (:meth:`paused`): each address has its own connect timeout, ``timeout_s``, and so
    has each read of a TLS handshake, not the handshake: the socket is learnt from the connection's public
    ``connect()``, which returns once the handshake is done, out of the watchdog's reach (a server that trickles
    its handshake, each read within that timeout, holds a hop past the deadline). A hop that would start (a
    redirect) after the deadline sends nothing."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.ends = time.monotonic() + timeout_s
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        #: The watchdog shut the socket down: an answer that ends where the connection ends may be cut short
        self.cut = False

    def left(self) -> float:
        return self.ends - time.monotonic()

    @property
    def expired(self) -> bool:
        return self.cut or self.left() <= 0

    def attach(self, sock: socket.socket) -> None:
        """The socket the hop uses from now on; shut down at once if the deadline has passed."""
        with self._lock:
            self._socket = sock
        if self.expired:
            _shut(sock)

    def expire(self) -> None:
        with self._lock:
            self.cut = True
            sock = self._socket
        if sock is not None:
            _shut(sock)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """A connect: the name lookup, each of the host's addresses in turn (each with a connect timeout of
        ``timeout_s``, as requests gives it), the TLS handshake. Its time does not count: with it counted, a host
        whose first address drops connection attempts (a broken IPv6 route behind an AAAA record) spent the
        whole deadline there, and its second address, which answered before, could never be reached."""
        _WATCHDOG.remove(self)
        started = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self.ends += time.monotonic() - started
                self.cut = False  # (nothing was attached to shut while it connected)
            _WATCHDOG.add(self)

    @contextmanager
    def watching(self) -> Iterator[None]:
        """One hop, ended at the deadline by the watchdog. Its socket is forgotten after: the pool may keep it."""
        _WATCHDOG.add(self)
        try:
            yield
        finally:
            _WATCHDOG.remove(self)
            with self._lock:
                self._socket = None


class _Watchdog:
    """One thread that ends every hop at its deadline (:meth:`_Deadline.expire`). A ``threading.Timer`` per hop
    started a thread per request to Vault: ~0.2 ms each, a quarter of a steady store operation on loopback
    (bench/store_requests.py). It is woken only for a deadline earlier than the one it sleeps until."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # (its thread and a lock it held stay in the parent)

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._watched: dict[int, _Deadline] = {}
        self._wakes_at: float | None = None  # when the thread wakes next; None: asleep until notified, or gone
        self._thread: threading.Thread | None = None

    def add(self, deadline: _Deadline) -> None:
        with self._cond:
            self._watched[id(deadline)] = deadline
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="vault-request-deadlines", daemon=True)
                self._thread.start()
            elif self._wakes_at is None or deadline.ends < self._wakes_at:
                self._cond.notify()

    def remove(self, deadline: _Deadline) -> None:
        with self._cond:
            self._watched.pop(id(deadline), None)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for key, deadline in list(self._watched.items()):
                    if deadline.ends <= now:
                        del self._watched[key]
                        deadline.expire()
                self._wakes_at = min((d.ends for d in self._watched.values()), default=None)
                self._cond.wait(None if self._wakes_at is None else self._wakes_at - now)


_WATCHDOG = _Watchdog()


def _shut(sock: socket.socket) -> None:
    """Ends a read or write that blocks on ``sock`` (from another thread too). The socket's own class method:
    ``ssl.SSLSocket.shutdown`` would also drop the TLS state under the thread that reads."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:  # closed already, or not connected
        pass


#: The deadline of the request the session sends now, in this thread (:meth:`CountingSession.send` sets it, the
#: transport and its connections read it); None outside a request.
_DEADLINE: contextvars.ContextVar[_Deadline | None] = contextvars.ContextVar("vault_request_deadline", default=None)


def _watch(sock: socket.socket) -> None:
    """A socket a connection of the store's transport made or is about to read an answer from: the deadline's."""
    deadline = _DEADLINE.get()
    if deadline is not None:
        deadline.attach(sock)


def _read_answer(raw: urllib3.BaseHTTPResponse, deadline: _Deadline) -> bytes:
    """The body of ``raw``, decoded, within the deadline and :data:`MAX_ANSWER_BYTES`; urllib3's exceptions as
    requests' own (as ``Response.iter_content`` raises them)."""
    import urllib3.exceptions

    read = getattr(raw, "read1", raw.read)  # urllib3 before 2.2 has no read1: its read blocks until the watchdog
    body = bytearray()
    try:
        while chunk := read(_READ_SIZE, decode_content=True):
            body += chunk
            if len(body) > MAX_ANSWER_BYTES:
                raise AnswerTooLarge(MAX_ANSWER_BYTES)
            if deadline.expired and raw.length_remaining != 0:  # 0: all the Content-Length announced is here
                raise NoAnswerInTime(deadline.timeout_s)
    except urllib3.exceptions.ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from None
    except urllib3.exceptions.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from None
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.exceptions.ConnectionError(exc) from None
    except urllib3.exceptions.SSLError as exc:
        raise requests.exceptions.SSLError(exc) from None
    if deadline.cut and raw.length_remaining is None and not raw.chunked:
        # Its end is the connection's, which the watchdog's shutdown ends too: maybe not the whole answer
        raise NoAnswerInTime(deadline.timeout_s)
    return bytes(body)


@functools.cache
def _transport_class() -> Callable[[float], requests.adapters.HTTPAdapter]:
    """requests' HTTPAdapter whose hops keep to the request's :class:`_Deadline` and read at most
    :data:`MAX_ANSWER_BYTES` of an answer. The body is read here, before requests sees the answer: requests
    reads a redirect's body whole before it follows it. Made on first use, as the session's class."""
    import requests.adapters
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class WatchedConnection(HTTPConnection):
        def connect(self) -> None:
            with _connecting():
                super().connect()
            _connected(self.sock)

        def getresponse(self) -> Any:  # a connection of the pool was connected during another request
            _watch(self.sock)
            return super().getresponse()

    class WatchedTLSConnection(HTTPSConnection):
        def connect(self) -> None:  # returns after the TLS handshake: see _Deadline
            with _connecting():
                super().connect()
            _connected(self.sock)

        def getresponse(self) -> Any:
            _watch(self.sock)
            return super().getresponse()

    class WatchedPool(HTTPConnectionPool):
        ConnectionCls = WatchedConnection

    class WatchedTLSPool(HTTPSConnectionPool):
        ConnectionCls = WatchedTLSConnection

    class BoundedTransport(requests.adapters.HTTPAdapter):
        def __init__(self, timeout_s: float) -> None:
            self.timeout_s = timeout_s
            super().__init__()

        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": WatchedPool, "https": WatchedTLSPool}

        def send(
            self,
            request: requests.PreparedRequest,
            stream: bool = False,
            timeout: Any = None,
            verify: bool | str = True,
            cert: Any = None,
            proxies: Any = None,
        ) -> requests.Response:
            deadline = _DEADLINE.get() or _Deadline(self.timeout_s)
            left = deadline.left()
            if left <= 0:  # a redirect's hop after the deadline: not sent
                raise NoAnswerInTime(deadline.timeout_s)
            each = min(deadline.timeout_s, left)  # each read's timeout (a connect has timeout_s: _connecting)
            with deadline.watching():
                try:
                    response = super().send(
                        request, stream=stream, timeout=(deadline.timeout_s, each), verify=verify, cert=cert,
                        proxies=proxies,
                    )
                    try:
                        body = _read_answer(response.raw, deadline)
                    except BaseException:
                        response.close()  # closes the connection: nothing more is read from it
                        raise
                except requests.exceptions.RequestException:
                    if deadline.expired:  # a read, a connect or a handshake the deadline cut short
                        raise NoAnswerInTime(deadline.timeout_s) from None
                    raise
            response.raw.release_conn()  # read to its end: the connection goes back to the pool
            # requests reads a raw that is not urllib3's as is (no second decoding): .content, .json() read this
            response.raw = io.BytesIO(body)
            return response

    return BoundedTransport


@contextmanager
def _connecting() -> Iterator[None]:
    """A connect of the request's hop, out of its deadline (:meth:`_Deadline.paused`)."""
    deadline = _DEADLINE.get()
    if deadline is None:
        yield
        return
    with deadline.paused():
        yield


def _connected(sock: socket.socket) -> None:
    """A socket just connected (its TLS handshake done): watched, and nothing sent on it once the deadline has
    passed."""
    deadline = _DEADLINE.get()
    if deadline is not None and deadline.expired:
        sock.close()
        raise NoAnswerInTime(deadline.timeout_s)
    _watch(sock)


class _RedirectRefused(Exception):
    """A redirect to another origin, refused before anything was sent there."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.target = target


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or default


@functools.cache
def _session_class() -> Callable[[RequestCounter, float], requests.Session]:
    class CountingSession(requests.Session):
        def __init__(self, counter: RequestCounter, timeout_s: float) -> None:
            super().__init__()
            self.counter = counter
            self.timeout_s = timeout_s
            transport = _transport_class()(timeout_s)
            self.mount("https://", transport)
            self.mount("http://", transport)
            # requests takes a session's cookies from an answer's urllib3 raw, which the transport replaced with
            # the body it read: the answer's own jar (Response.cookies, filled before) gives them, as they came
            self.hooks["response"].append(self._keep_cookies)

        def _keep_cookies(self, response: requests.Response, **kwargs: Any) -> None:
            self.cookies.update(response.cookies)

        def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
            self.counter.add(request.method or "")
            # hvac adds $VAULT_CLIENT_CERT / $VAULT_CLIENT_KEY to every request when no cert is given:
            # rotator's identity at Vault is its auth settings, never a certificate the host exported
            kwargs["cert"] = None
            if _DEADLINE.get() is not None:  # a redirect's hop, sent from the first one's send: its deadline
                return super().send(request, **kwargs)
            started = _DEADLINE.set(_Deadline(self.timeout_s))
            try:
                return super().send(request, **kwargs)
            finally:
                _DEADLINE.reset(started)

        def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
            # requests strips only an Authorization header from a request redirected to another
            # host, and keeps a 307/308's body: the X-Vault-Token header, an AppRole secret_id or
            # a token payload would go wherever a Location header points (http included).
            old, new = _origin(response.request.url or ""), _origin(prepared_request.url or "")
            if old != new:
                scheme, host, port = new
                raise _RedirectRefused(f"{scheme}://{host}" + (f":{port}" if port else ""))
            super().rebuild_auth(prepared_request, response)  # type: ignore[no-untyped-call]

    return CountingSession


@functools.cache
def _adapter_class() -> type[Any]:
    """hvac's JSONAdapter, but for how an error answer is raised. hvac reads ``errors`` from any JSON body
    of an error answer with ``.get``: a body that is not an object (a proxy's or an ingress's ``null``,
    ``[]`` or ``"Service Unavailable"``) raised a bare AttributeError, an internal error to the CLI, and an
    outage (a 502) was not retried. Here such a body raises hvac's exception for its status, as a body that
    is not JSON does. Made on first use (hvac is imported then), through the hook hvac documents: an
    Adapter subclass whose ``request`` is overridden, passed to ``hvac.Client(adapter=...)``."""

    class VaultAnswers(hvac.adapters.JSONAdapter):  # type: ignore[misc]
        def request(self, method: str, url: str, headers: Mapping[str, str] | None = None,
                    raise_exception: bool = True, **kwargs: Any) -> Any:
            answer = super().request(method, url, headers=headers, raise_exception=False, **kwargs)
            # A 200 with a JSON body comes back decoded; any other answer as the response itself.
            if (not raise_exception or self.ignore_exceptions or not isinstance(answer, requests.Response)
                    or answer.ok):
                return answer
            _raise_for_answer(method, answer)

    return VaultAnswers


def _raise_for_answer(method: str, answer: requests.Response) -> None:
    """hvac's exception for an error answer (:func:`hvac.utils.raise_for_error`), with Vault's ``errors``
    only when the body is Vault's: a JSON object whose ``errors`` is a list of strings (hvac joins them
    into its message). Otherwise ``errors`` is None and the text is the message, as for a body that is not
    JSON; the store then says whose answer it was not (:func:`not_vault_answer`)."""
    text = answer.text
    body, errors = error_body(answer)
    hvac.utils.raise_for_error(method, answer.url, answer.status_code, text if errors is None else None,
                               errors=errors, text=text, json=body)


def hvac_client(settings: VaultKV2Settings) -> VaultAPI:
    """The real client. Url, token and TLS are always explicit: hvac would otherwise fall back to
    VAULT_ADDR / VAULT_TOKEN / ~/.vault-token / VAULT_CLIENT_CERT, and requests to proxy and CA variables
    and ~/.netrc."""
    verify: bool | str = settings.tls_verify
    if settings.ca_bundle is not None:
        if not settings.ca_bundle.is_file():
            raise ConfigError(f"ca_bundle {settings.ca_bundle} is not a readable file", hint=_HINT_TLS)
        verify = str(settings.ca_bundle)
    counter = RequestCounter()
    client = hvac.Client(
        url=settings.url,
        token="",
        verify=verify,
        timeout=settings.timeout_s,
        namespace=settings.namespace,
        session=_session(counter, verify, settings.timeout_s),
        adapter=_adapter_class(),
    )
    return _StoreAPI(client, counter, settings.timeout_s)


@runtime_checkable
class MountLookup(Protocol):
    """A call a client may offer besides :class:`VaultAPI` (:func:`hvac_client`'s does). Without it (a fake
    given as ``client_factory``) the store does not look its mount up and keeps to its other checks."""

    def mount_info(self, path: str) -> Mapping[str, Any]:
        """GET ``sys/internal/ui/mounts/<path>``: Vault's JSON body about the mount that serves ``path``
        (``data``: its ``path``, ``type``, ``options``). It needs no capability of its own: Vault answers
        for a path in any mount the token may use something of, and refuses (403) any other path, or one
        in no mount."""
        ...


class _StoreAPI(HvacAPI):
    """:class:`HvacAPI` (the calls the store shares with the login, rotator/adapters/vault/auth.py) and
    :class:`MountLookup`."""

    def __init__(self, client: Any, counter: RequestCounter, timeout: float) -> None:
        super().__init__(client, counter, timeout)
        self._hvac = client

    def mount_info(self, path: str) -> Mapping[str, Any]:
        url = hvac.utils.format_url("/v1/sys/internal/ui/mounts/{path}", path=path)
        try:
            answer = self._hvac.adapter.get(url)
        except RecursionError:  # JSON nested thousands deep: no answer of Vault's is
            raise NotVaultAnswer("nested too deep") from None
        if not isinstance(answer, Mapping) or not isinstance(answer.get("data"), Mapping):
            raise NotVaultAnswer("data")
        return answer


_KV2 = "KV version 2 engine"


class _MountEntry(NamedTuple):
    """What Vault says of the mount that serves a path."""

    #: As `vault secrets list` shows it, without the trailing slash
    path: str
    #: :data:`_KV2`, "KV version 1 engine", or another engine's type
    kind: str


def _mount_entry(answer: Mapping[str, Any]) -> _MountEntry:
    """The mount in an answer of :meth:`MountLookup.mount_info`; NotVaultAnswer when it is not Vault's."""
    data = answer["data"]
    path, engine, options = data.get("path"), data.get("type"), data.get("options")
    if not (isinstance(path, str) and path.strip("/") and isinstance(engine, str)
            and (options is None or isinstance(options, Mapping))):
        raise NotVaultAnswer("mount")
    if engine in ("kv", "generic"):  # "generic": KV version 1 under its old name
        kind = _KV2 if str((options or {}).get("version")) == "2" else "KV version 1 engine"
    else:
        kind = f"{engine[:40]!r} engine"
    return _MountEntry(path.strip("/"), kind)


class _Latest(NamedTuple):
    """What one GET of the data endpoint says about the current version."""

    version: int
    #: None: deleted or destroyed (or too deep to decode: :data:`_TOO_DEEP`)
    payload: Mapping[str, Any] | None
    #: None: Vault's answer has no custom_metadata key (Vault before 1.9), so it is not known
    custom_metadata: Mapping[str, Any] | None


class VaultKV2Store:
    """The current token as the latest version of one KV v2 secret. One caller at a time."""

    kind: ClassVar[str] = "vault-kv2"
    settings_model: ClassVar[type[BaseModel]] = VaultKV2Settings

    def __init__(self, settings: VaultKV2Settings, ctx: AdapterContext, client_factory: ClientFactory) -> None:
        self._settings = settings
        self._clock = ctx.clock
        self._factory = client_factory
        self._api: VaultAPI | None = None
        self._login = VaultLogin(settings.auth, ctx.base_dir, ctx.clock)
        self._versions_checked = False
        #: Vault's delete_version_after for this secret and where it is set; None: off (or not known)
        self._delete_after: tuple[timedelta, str] | None = None
        self._deletion_warned = False
        #: Why PATCH of the custom_metadata is not used ("403", "405"); None: it is, until Vault refuses it
        self._patch_refused: str | None = None
        #: The login generation (VaultLogin.generation) whose token Vault refused PATCH: "403" holds for it only
        self._patch_refused_to = -1
        self._patch_warned = False
        namespace = f"{settings.namespace}/" if settings.namespace else ""
        self._location = f"vault:{settings.url}/{namespace}{settings.mount}/data/{settings.path}"
        self._read_meta = self._op("read", "metadata", "read")
        self._patch_meta = self._op("update custom_metadata of", "metadata", "patch")
        self._write_meta = self._op("update custom_metadata of", "metadata", "patch",
                                    also=' (or ["read", "update"], which leaves a race with an operator\'s edits)')
        self._read_data = self._op("read", "data", "read")
        self._write_data = self._op("write", "data", "create", "update")
        self._read_config = self._op("read", "config", "read")

    @classmethod
    def from_config(
        cls, settings: BaseModel, ctx: AdapterContext, client_factory: ClientFactory | None = None
    ) -> VaultKV2Store:
        """Nothing is contacted here; the client is built and logged in on first use."""
        settings = checked_settings(cls, settings, VaultKV2Settings)
        if settings.ca_bundle is not None and not settings.ca_bundle.is_absolute():
            settings = settings.model_copy(update={"ca_bundle": ctx.base_dir / settings.ca_bundle})
        return cls(settings, ctx, client_factory or hvac_client)

    @property
    def location(self) -> str:
        return self._location

    # -- the token between runs (the daemon calls these; see VaultLogin.due/status) -------
    def credential_due(self) -> datetime | None:
        return self._login.due()

    def keep_alive(self) -> None:
        """Log in, look the token up or renew it now if it is time; errors as for any call."""
        with self._map_errors(_Op("log in to", *self._login.endpoint, auth=True)):
            self._login.ensure(self._client())

    def credential_status(self) -> CredentialStatus:
        return self._login.status()

    @property
    def request_count(self) -> int:
        """HTTP requests this store has sent to Vault (logins included); 0 with a client that does
        not count (a fake given as ``client_factory``)."""
        counter = getattr(self._api, "counter", None)
        return counter.total if isinstance(counter, RequestCounter) else 0

    def read_current(self) -> StoreState:
        """The current version. PermanentError if the secret is managed but its payload is not
        a rotator payload; a deleted or destroyed current version reads as ``record=None``."""
        first = not self._versions_checked
        meta = self._check_retention()
        latest = self._read_latest()
        if latest is None:  # also a secret whose metadata exists without a version: cas=0 creates it
            # Its custom_metadata (`kv metadata put` before any version is written) may name another
            # policy: the engine's ownership check then refuses it without `adopt`, as for a deleted
            # current version. (The first read's own metadata read found none: absent.)
            secret = meta if meta is not None or first else self._read_metadata()
            kept = self._custom_in(secret) if secret is not None else {}
            managed = _is_managed(kept)
            logger.debug("%s: %s", self._location, "absent" if secret is None else f"no version, managed={managed}")
            return StoreState(version=None, managed=managed, record=None,
                              marker_policy=_marker_policy(kept) if managed else None)
        current, payload, custom = latest
        if custom is None:  # an old Vault that does not send custom_metadata with the data
            secret = meta if meta is not None else self._read_metadata() or {}
            custom = self._custom_in(secret)
        managed = _is_managed(custom)
        try:
            record = self._parse(payload, current, strict=managed) if payload is not None else None
        except MalformedPayload as exc:
            exc.state = StoreState(version=str(current), managed=managed, record=None,
                                   marker_policy=_marker_policy(custom) if managed else None)
            raise
        logger.debug(
            "%s: version %d, managed=%s, token_id=%s%s",
            self._location,
            current,
            managed,
            record.token_id if record else None,
            "" if payload is not None else " (deleted or destroyed)",
        )
        if record is not None and self._delete_after is not None and not self._deletion_warned:
            kept_for, source = self._delete_after
            lifetime = record.expires_at - record.created_at if record.expires_at else None
            before = ("while the current token, which does not expire, is still in use" if lifetime is None
                      else f"sooner than a token lives (the current one: {format_duration(lifetime)})")
            self._warn_deleted_early(f"every version {format_duration(kept_for)} after it is written "
                                     f"({source} delete_version_after)", kept_for, lifetime, before)
        # Whose secret it is when the current version holds no payload (deleted or destroyed): the marker.
        marker = _marker_policy(custom) if record is None and managed else None
        return StoreState(version=str(current), managed=managed, record=record, marker_policy=marker)

    def read_previous(self) -> StoreState:
        """The highest version below the current one that Vault still serves.

        Its payload is parsed leniently (``record=None`` if it is not a rotator payload):
        the version before an adoption legitimately holds something else.
        """
        meta = self._read_metadata()
        if meta is None:
            return StoreState(version=None, managed=False, record=None)
        managed = _is_managed(self._custom_in(meta))
        current = self._checked(lambda: _whole(meta.get("current_version")), self._read_meta)
        versions = self._checked(lambda: _versions(meta.get("versions")), self._read_meta)
        # Vault decides what is deleted (by its clock, not ours): try the candidates newest first.
        lower = [n for n, v in versions.items() if n < current and not v.get("destroyed")]
        for number in sorted(lower, reverse=True):
            payload = self._read_version(number)
            if payload is not None:
                logger.debug("%s: previous version %d", self._location, number)
                record = self._parse(payload, number, strict=False)
                return StoreState(version=str(number), managed=managed, record=record)
        return StoreState(version=None, managed=managed, record=None)

    def publish(self, record: TokenRecord, expected_version: str | None) -> str:
        """Write ``record`` as a new version with ``cas`` = ``expected_version`` (0: create only),
        then mark the secret managed. Publishing a record that already is the current version
        (a retry after a crash or a failed metadata write) completes it instead of conflicting."""
        cas = _cas(expected_version, self._location)

        def write(api: VaultAPI) -> Mapping[str, Any] | None:
            try:
                return api.write_version(self._settings.mount, self._settings.path, record.payload(), cas)
            except hvac.exceptions.InvalidRequest as exc:
                if any(_CAS_MISMATCH in str(e) for e in exc.errors or ()):
                    return None
                raise

        answer = self._call(self._write_data, write)
        if answer is None:
            return self._settle_conflict(record, expected_version)
        data = answer.get("data")
        version_field = data.get("version") if isinstance(data, Mapping) else None
        if not isinstance(version_field, int) or isinstance(version_field, bool):
            message = _ERR_NOT_KV2.format(where=self._location, mount=self._settings.mount)
            raise PermanentError(message, hint=_HINT_NOT_KV2_WRITTEN)
        assert isinstance(data, Mapping)
        version = version_field
        if version != cas + 1:
            # Vault accepts a cas write only while current_version == cas, and writes it as current_version + 1
            # (1 for cas=0: no secret, or metadata without a version). Another number is a proxy's or a cache's
            # answer: recorded as published, the journal would name a version Vault never wrote for this token.
            # Transient, not "not Vault's" PermanentError: an answer of success is no refusal, the write may have
            # landed behind it, and a PermanentError tells the engine it did not (it discards the candidate; with
            # Vault holding it, that revocation is refused and the run is left for a person). A retry with the
            # same cas completes it instead (_settle_conflict), or the engine reads the stores before it revokes.
            op = self._write_data
            message = _ERR_NOT_CAS_ANSWER.format(where=self._location, url=self._settings.url, operation=op.name,
                                                 path=op.path, cas=cas, version=version, expected=cas + 1)
            raise TransientError(message, hint=_HINT_NOT_CAS_ANSWER)
        self._check_deletion_time(record, version, data)
        self._mark_managed(record, version, data.get("custom_metadata"))
        logger.info("published token %s to %s as version %d", record.token_id, self._location, version)
        return str(version)

    # -- internals -------------------------------------------------------------------------

    def _settle_conflict(self, record: TokenRecord, expected_version: str | None) -> str:
        latest = self._read_latest()
        actual, payload, custom = latest if latest is not None else (0, None, None)
        there = self._parse(payload, actual, strict=False) if payload is not None else None
        if there is not None and there.token_id == record.token_id and there.value == record.value:
            logger.info(
                "%s: version %d already holds token %s; completing the publish", self._location, actual, record.token_id
            )
            self._mark_managed(record, actual, custom)
            return str(actual)
        expected = expected_version or "none (create only)"
        raise ConflictError(
            _ERR_CONFLICT.format(where=self._location, expected=expected, actual=actual or "none"),
            hint=self._conflict_hint(),
        )

    def _conflict_hint(self) -> str:
        # Quoted for the shell: the command must work as printed (a path may hold spaces or quotes).
        s = self._settings
        namespace = f"-namespace={shlex.quote(s.namespace)} " if s.namespace else ""
        return _HINT_CONFLICT.format(namespace=namespace, mount=shlex.quote(s.mount), path=shlex.quote(s.path))

    def _mark_managed(self, record: TokenRecord, version: int, answered: object) -> None:
        """Set rotator's custom_metadata keys after ``version`` landed, keeping the operator's own
        (:meth:`_claim` says when they are written, and for which version).

        ``answered``: the custom_metadata Vault's answer showed (None: none, or not shown), checked
        only: it can be out of date by now, so it is never written back (see the module's docstring)."""
        ours = _our_keys(record.policy, record.token_id, rfc3339_seconds(self._clock.now()))
        try:
            # Checked here, after the write: a custom_metadata that is not Vault's fails like the
            # metadata write (the token is in the store), never as "nothing written".
            self._checked(lambda: _custom(answered), self._write_data)
            self._claim(version, ours)
        except RotatorError as exc:
            logger.warning(
                "%s: version %d is written but not marked managed yet; publishing it again "
                "with the same expected version completes it",
                self._location,
                version,
            )
            if isinstance(exc, TransientError):
                raise
            # The token is in the store now: a PermanentError says nothing was written, and the engine
            # would discard a token that the store holds (its revocation then refused for ever). As a
            # transient failure the run stays open, and recovery completes it once the cause is fixed.
            raise TransientError(
                f"{self._location}: version {version} holds token {record.token_id}, but marking the secret "
                f"managed failed: {exc}",
                hint=(exc.hint + "; then " if exc.hint else "") + "run the command again: `rotator recover` completes "
                "a rotation's publish, the same `rotator bootstrap` a bootstrap's",
            ) from exc

    def _claim(self, version: int, ours: Mapping[str, str]) -> None:
        """Write rotator's keys ``ours`` for ``version``, so that the custom_metadata ends naming the token
        of the version that is current, also when another rotator publishes a newer one meanwhile (it
        took the lease over while this process was paused between its data write and this write).

        The rule, with *deadline* the side effect's start deadline (contracts.side_effect_start_deadline,
        set by the engine's lease check before this publish):

        1. A write of the keys for ``version`` starts before the deadline or not at all (TransientError,
           nothing sent): until then the lease is still this process's, so no newer version exists yet.
        2. Without ``patch`` the metadata is read before the POST anyway: a current_version past
           ``version`` is a newer publish, whose publisher writes its own keys: nothing is written.
        3. A write whose answer comes after the deadline (a pause between the check and the write, a
           slow Vault) may have landed after a newer publisher's: the metadata is read again. While its
           current_version is past the version the keys written name, and its keys do not name the
           current version's token, the keys of that version are written (its payload's token_id and
           policy; rotated_at the time Vault wrote it: what its publisher wrote, but for the second)
           and read again, up to :data:`_CLAIM_WRITES` writes. Nothing older than current_version is
           ever written by this step: it only puts back what the newer publisher wrote.

        So rotator's last write of the keys is followed by a read that found the version they name
        current, or precedes the write of a newer version's publisher: the end state names the current
        version's token. A current version whose payload is not a rotator token (deleted, another
        writer's) is left as it is, with a warning. An answer in time costs no request more; outside a
        side effect (no deadline: nothing fences the writers, e.g. a test or a tool) 1 and 3 do not apply."""
        start_by = side_effect_start_deadline()
        if not self._write_claim(version, ours, start_by):
            return
        if start_by is None or time.monotonic() < start_by:
            return  # answered in time: no other rotator could hold the lease before the write landed
        for _ in range(_CLAIM_WRITES):
            newer = self._newer_claim(version)
            if newer is None:
                return
            version, ours = newer
            if not self._write_claim(version, ours, None):
                return
        logger.warning(
            "%s: newer versions kept coming while rotator wrote the custom_metadata back (version %d's keys now): "
            "check it with `kv metadata get`; the next publish writes it again",
            self._location,
            version,
        )

    def _write_claim(self, version: int, ours: Mapping[str, str], start_by: float | None) -> bool:
        """One write of ``ours``: the PATCH, or without it the metadata read and the POST. False: nothing
        written, a version newer than ``version`` is current (its publisher writes the keys)."""
        refused = self._patch_custom(ours, version, start_by)
        if refused is None:
            return True
        generation = self._login.generation
        written = self._merge_custom(ours, version, start_by)
        if refused == "403" and self._login.generation == generation:
            # The token PATCH was refused to has just read (and written) the metadata: it is valid,
            # so its policy lacks `patch`. Only now is that remembered (not after the 403 alone).
            self._patch_refused_for_good("403", generation)
        return written

    def _in_time(self, version: int, start_by: float | None) -> None:
        """Just before a metadata write: TransientError, nothing sent, past ``start_by`` (see :meth:`_claim`)."""
        if start_by is not None and time.monotonic() >= start_by:
            raise TransientError(
                f"{self._location}: version {version} is written, but its custom_metadata write was not sent: it "
                "would have started later than the lease check before this publish allows (this process was paused, "
                "or Vault was slow), when another rotator may hold the lease and have published a newer version",
                hint="rotator checks its lease again and publishes with the same expected version, which completes "
                "it; if another rotator took the policy over, this run stops",
            )

    def _newer_claim(self, version: int) -> tuple[int, dict[str, str]] | None:
        """After a write of the keys for ``version`` that was answered late (:meth:`_claim`, 3): the
        current version and its keys, when it is newer and the custom_metadata does not name its token;
        None when nothing is to be written."""
        meta = self._read_metadata() or {}
        current = self._checked(lambda: _whole(meta.get("current_version")), self._read_meta)
        if current <= version:
            return None
        held = self._custom_in(meta)
        payload = self._read_version(current)
        there = self._parse(payload, current, strict=False) if payload is not None else None
        if there is None:
            logger.warning(
                "%s: rotator's custom_metadata write for version %d was answered late, and version %d, current now, "
                "holds no rotator token: the custom_metadata may name version %d's token",
                self._location, version, current, version,
            )
            return None
        if _is_managed(held) and held.get("token_id") == there.token_id and held.get("policy") == there.policy:
            return None  # the newer version's publisher wrote its keys after rotator's write
        versions = self._checked(lambda: _versions(meta.get("versions")), self._read_meta)
        written_at = _whole_seconds(versions.get(current, {}).get("created_time")) or rfc3339_seconds(self._clock.now())
        logger.warning(
            "%s: rotator's custom_metadata write for version %d landed after version %d was published (this process "
            "was paused or Vault slow); writing version %d's keys (token %s) back",
            self._location, version, current, current, there.token_id,
        )
        return current, _our_keys(there.policy, there.token_id, written_at)

    def _patch_custom(self, ours: Mapping[str, str], version: int, start_by: float | None) -> str | None:
        """PATCH rotator's keys into the custom_metadata. None if done; else why not ("403", "405"),
        now or known from before (then nothing is sent)."""
        if self._patch_refused == "405" or (
            self._patch_refused == "403" and self._patch_refused_to == self._login.generation
        ):
            return self._patch_refused
        mount, path = self._settings.mount, self._settings.path

        def patch(api: VaultAPI) -> str | None:
            self._in_time(version, start_by)
            try:
                api.patch_custom_metadata(mount, path, ours)
            except hvac.exceptions.UnsupportedOperation:
                return "405"
            return None

        try:
            refused = self._call(self._patch_meta, patch, refusable=True)
        except _Refused:
            # Not remembered yet: a token that expired or was revoked after the data write is refused
            # PATCH too, and a Vault Agent may put a new one in the file before the next publish.
            logger.debug("%s: Vault refused to patch the custom_metadata (HTTP 403); trying a read and a "
                         "write of the whole map", self._location)
            return "403"
        if refused is None:
            self._patch_refused = None
        else:
            self._patch_refused_for_good(refused, self._login.generation)
        return refused

    def _patch_refused_for_good(self, status: str, generation: int) -> None:
        """Use the read-and-POST fallback from now on: for good after a 405, for this token after a 403."""
        self._patch_refused, self._patch_refused_to = status, generation
        if self._patch_warned:
            return
        self._patch_warned = True
        if status == "403":
            logger.warning(
                "%s: Vault refused to patch the custom_metadata (HTTP 403: no `patch` capability on %s); rotator "
                "reads it and writes it whole instead, which loses a key an operator writes in between; grant "
                "`patch` there (deploy/vault/rotator-policy.hcl): the store tries PATCH again with its next "
                "token (a new login or a new token in the file) or after a restart (or a daemon reload)",
                self._location,
                self._patch_meta.path,
            )
        else:
            logger.info(
                "%s: this Vault cannot patch custom_metadata (HTTP 405, Vault before 1.9); rotator reads it "
                "and writes it whole instead, which loses a key an operator writes in between",
                self._location,
            )

    def _merge_custom(self, ours: Mapping[str, str], version: int, start_by: float | None) -> bool:
        """The fallback without PATCH: read the custom_metadata now, POST it with rotator's keys set.
        False: nothing written, a version newer than ``version`` is current (see :meth:`_claim`)."""
        mount, path = self._settings.mount, self._settings.path
        meta = self._read_metadata() or {}
        current = self._checked(lambda: _whole(meta.get("current_version")), self._read_meta)
        if current > version:
            logger.info("%s: version %d is current, newer than version %d: its publisher writes the custom_metadata",
                        self._location, current, version)
            return False
        held = self._custom_in(meta)
        self._check_room(held, ours)
        custom = {**held, **ours}  # an operator's own keys stay

        def write(api: VaultAPI) -> None:
            self._in_time(version, start_by)
            api.write_custom_metadata(mount, path, custom)

        self._call(self._write_meta, write)
        return True

    def _check_room(self, held: Mapping[str, str], ours: Mapping[str, str]) -> None:
        """PermanentError, before the POST, when the whole map would have more keys than Vault takes: it
        refuses such a write with HTTP 400 at every publish, and only a person can make room."""
        others = [key for key in held if key not in ours]
        if len(others) + len(ours) <= _MAX_CUSTOM_KEYS:
            return
        raise PermanentError(
            f"{self._location}: the custom_metadata of {self._write_meta.path} holds {len(others)} keys besides "
            f"rotator's; with rotator's {len(ours)} ({', '.join(ours)}) the whole map, which rotator writes without "
            f"the `patch` capability, would have {len(others) + len(ours)}, and Vault takes at most "
            f"{_MAX_CUSTOM_KEYS}",
            hint=self._room_hint(len(others) + len(ours) - _MAX_CUSTOM_KEYS),
        )

    def _room_hint(self, excess: int | None, *, patch_helps: bool = True) -> str:
        """How to fit rotator's keys in the custom_metadata. ``excess``: how many keys too many (None: not
        known); ``patch_helps``: the write was the POST of the whole map, which a PATCH would avoid."""
        s = self._settings
        namespace = f"-namespace={shlex.quote(s.namespace)} " if s.namespace else ""
        remove = (f"`bao kv metadata patch {namespace}-mount={shlex.quote(s.mount)} -remove-custom-metadata=KEY "
                  f"{shlex.quote(s.path)}` (or `vault kv ...`; the flag once per key)")
        how_many = f"at least {excess} of the other keys" if excess is not None else "keys the secret does not need"
        patch = (f"grant `patch` on {self._write_meta.path} (deploy/vault/rotator-policy.hcl): rotator then sends "
                 "its own keys alone, which Vault merges into the map without counting it; or " if patch_helps else "")
        return f"{patch}remove {how_many} with {remove}"

    def _read_metadata(self) -> Mapping[str, Any] | None:
        def read(api: VaultAPI) -> Mapping[str, Any] | None:
            try:
                data: Mapping[str, Any] = api.read_metadata(self._settings.mount, self._settings.path)["data"]
            except hvac.exceptions.InvalidPath as exc:
                if not _absent(exc):
                    raise
                return None
            return data

        return self._call(self._read_meta, read)

    def _read_latest(self) -> _Latest | None:
        """The current version in one GET; None if the secret has no version (or does not exist)."""

        def read(api: VaultAPI) -> _Latest | None:
            try:
                answer = api.read_latest(self._settings.mount, self._settings.path)
            except hvac.exceptions.InvalidPath as exc:
                if not _absent(exc):
                    raise
                return None
            except RecursionError:  # the SDK's JSON decoder met a payload nested thousands deep
                return _Latest(0, _TOO_DEEP, None)
            data: Mapping[str, Any] = answer["data"]
            if not isinstance(data.get("metadata"), Mapping):  # a KV v1 mount: a plain secret at <mount>/data/<path>
                raise PermanentError(_ERR_NOT_KV2_MOUNT.format(where=self._location, mount=self._settings.mount,
                                                               why=_WHY_KV1), hint=_HINT_NOT_KV2_WRITTEN)
            meta: Mapping[str, Any] = data["metadata"]
            payload = data.get("data")
            # Vault decides what is deleted, by its own clock: it answers a deleted or destroyed version
            # with its data null. A live version's deletion_time is in the future when the secret or
            # the mount sets delete_version_after: it still holds the current token.
            if meta.get("destroyed"):
                payload = None
            custom = _custom(meta.get("custom_metadata")) if "custom_metadata" in meta else None
            return _Latest(_whole(meta.get("version")), payload, custom)

        latest = self._call(self._read_data, read)
        if latest is not None and latest.payload is _TOO_DEEP:  # the version is in the body that could not be decoded
            meta = self._read_metadata() or {}
            current = self._checked(lambda: _whole(meta.get("current_version")), self._read_meta)
            return _Latest(current, _TOO_DEEP, self._custom_in(meta)) if current else None
        return latest

    def _read_version(self, version: int) -> Mapping[str, Any] | None:
        """The payload of ``version``; None once Vault no longer serves it (deleted, destroyed, evicted)."""

        def read(api: VaultAPI) -> Mapping[str, Any] | None:
            try:
                answer = api.read_version(self._settings.mount, self._settings.path, version)
            except hvac.exceptions.InvalidPath as exc:
                if not _absent(exc):  # a proxy's 404 is no proof that Vault no longer serves the version
                    raise
                return None
            except RecursionError:  # the SDK's JSON decoder met a payload nested thousands deep
                return _TOO_DEEP
            data = answer["data"].get("data")
            return data if isinstance(data, Mapping) else None

        return self._call(self._read_data._replace(name=f"read version {version} of"), read)

    def _parse(self, payload: Mapping[str, Any], version: int, *, strict: bool) -> TokenRecord | None:
        where = f"{self._location} version {version}"
        try:
            if payload is _TOO_DEEP or not isinstance(payload, Mapping):
                raise MalformedPayload(
                    f"{where}: the payload is not a JSON object rotator can read (not an object, or nested "
                    "thousands of levels deep)",
                    hint=MALFORMED_HINT,
                )
            return TokenRecord.from_payload(payload, where=where)
        except PermanentError:
            if strict:
                raise
            return None

    def _check_retention(self) -> Mapping[str, Any] | None:
        """Warn once if Vault keeps fewer than 3 versions: the previous token could be evicted; learn
        the secret's delete_version_after (see the module's docstring).

        On the store's first read only (the answers are kept for the store's life): the secret's
        metadata, and the mount's config if the secret sets no max_versions (with max_versions set,
        the mount's delete_version_after is not read: the check at publish sees it). Returns the
        metadata it read (None: checked already, or no such secret).
        """
        if self._versions_checked:
            return None
        meta = self._first_read(self._read_metadata)
        kept = self._checked(lambda: _whole((meta or {}).get("max_versions")), self._read_meta)
        secret_after = self._checked(lambda: _go_duration((meta or {}).get("delete_version_after")), self._read_meta)
        mount_after: timedelta | None = None  # not read
        source = "the secret's"
        if not kept:
            config = self._first_read(lambda: self._call(self._read_config, self._mount_config))
            if config is None or config is _UNREADABLE:
                # Refused (the shipped policy grants no config read), a KV v1 engine's 404s for data and
                # metadata read as an absent KV v2 secret: ask Vault before anything is minted or written.
                self._check_mount(config_answered=config is None)  # raises if the mount is not the secret's
                config = _UNREADABLE
            kept = self._checked(lambda: _whole(config.get("max_versions")), self._read_config)
            mount_after = self._checked(lambda: _go_duration(config.get("delete_version_after")), self._read_config)
            kept, source = kept or _DEFAULT_MAX_VERSIONS, "the mount's"
        self._delete_after = _delete_after(secret_after, mount_after)
        self._versions_checked = True  # not before: a failed read is tried again by the next one
        if kept < _MIN_VERSIONS:
            logger.warning(
                "%s keeps only %d versions (%s max_versions): the previous token can be evicted during "
                "its grace period; set max_versions to %d or more",
                self._location,
                kept,
                source,
                _MIN_VERSIONS,
            )
        return meta

    def _check_deletion_time(self, record: TokenRecord, version: int, written: Mapping[str, Any]) -> None:
        """Warn if Vault set the version just written to be deleted before its token expires. Never
        raises: the token is in the store now, and a failure here would say it is not."""
        try:
            created = datetime.fromisoformat(str(written.get("created_time")))
            deletion = written.get("deletion_time")
            if not deletion:  # "": no delete_version_after
                return
            kept_for = datetime.fromisoformat(str(deletion)) - created
        except (TypeError, ValueError, OverflowError):  # not a time: Vault's answer is checked elsewhere
            logger.debug("%s: no deletion time in the answer to the write of version %d", self._location, version)
            return
        left = record.expires_at - self._clock.now() if record.expires_at else None
        before = (f"before its token expires (in {format_duration(left)})" if left is not None
                  else "while its token, which does not expire, is still in use")
        self._warn_deleted_early(f"version {version} {format_duration(kept_for)} after writing it "
                                 "(delete_version_after)", kept_for, left, before)

    def _warn_deleted_early(self, what: str, kept_for: timedelta, needed: timedelta | None, before: str) -> None:
        """``needed``: how long the token is valid (None: it does not expire); ``before``: that, in words."""
        if needed is not None and kept_for >= needed:
            return
        self._deletion_warned = True
        logger.warning(
            "%s: Vault deletes %s, %s: unless the next rotation comes sooner, consumers read no token (HTTP 404), "
            "and an issuer that authenticates with it cannot rotate; set delete_version_after to 0s (off) or to "
            "more than the policy's token lifetime, on the secret (`kv metadata put -delete-version-after=...`) "
            "and on the mount (`write %s/config delete_version_after=...`)",
            self._location,
            what,
            before,
            shlex.quote(self._settings.mount),
        )

    def _mount_config(self, api: VaultAPI) -> Mapping[str, Any] | None:
        """The mount's KV v2 config; :data:`_UNREADABLE` if the token may not read it; None if the answer
        is not a KV v2 engine's config, so `mount` is not a KV v2 engine's path (:meth:`_check_mount`)."""
        try:
            data: Mapping[str, Any] = api.read_mount_config(self._settings.mount)["data"]
        except hvac.exceptions.InvalidPath as exc:
            if _absent(exc):  # KV v2 always has a config: this 404 is of an absent secret named "config"
                return None
            raise
        except hvac.exceptions.Forbidden as exc:
            # Optional: many policies do not grant it. Unknown counts as Vault's default (10).
            logger.debug(
                "%s: cannot read %s (%s); max_versions not checked",
                self._location,
                self._read_config.path,
                type(exc).__name__,
            )
            return _UNREADABLE
        # A KV v2 config holds max_versions, never a version. A secret named "config" is something else:
        # its data or its metadata (`mount` written as the API path, secret/data or secret/metadata: the
        # metadata has max_versions too, and versions), or a KV v1 secret.
        return data if "max_versions" in data and "versions" not in data else None

    def _names_an_api_path(self) -> bool:
        """`mount` has a segment of a KV v2 API path (secret/data): a real mount may be named so, so this
        only decides whether to ask Vault (:meth:`_lookup_mount`) when nothing else tells."""
        return not _API_SEGMENTS.isdisjoint(self._settings.mount.split("/"))

    def _first_read(self, read: Callable[[], T]) -> T:
        """``read()``, one of the store's first reads. A policy written for the secret the user meant
        refuses the paths a `mount` such as secret/data makes rotator ask for (secret/data/metadata/...):
        if Vault then says `mount` is a path inside another mount, that is the error (what to set)."""
        try:
            return read()
        except PermanentError as exc:
            if isinstance(exc, ConfigError) or not self._names_an_api_path():
                raise
            entry = self._lookup_mount()
            if entry is None or entry.path == self._settings.mount:
                raise
            raise self._mount_elsewhere(entry) from None

    def _check_mount(self, *, config_answered: bool) -> None:
        """Raise unless Vault says `mount` is a KV v2 engine's path. Called on the first read, before any
        write, when the config read did not show one: ``config_answered``, its answer was not a KV v2
        config (then the mount is not a KV v2 engine's path even if Vault does not say which mount is);
        else it was refused, and nothing else tells a KV v1 engine from an absent KV v2 secret: a lookup
        that failed transiently then raises, so the first read fails and the next one asks again (passing
        here marks the check done for the store's life)."""
        entry = self._lookup_mount(strict=not config_answered)
        where, mount = self._location, self._settings.mount
        if entry is not None and entry.path != mount:
            raise self._mount_elsewhere(entry)
        if entry is not None and entry.kind != _KV2:
            why = f"Vault says it is a {entry.kind}"
            raise PermanentError(_ERR_NOT_KV2_MOUNT.format(where=where, mount=mount, why=why), hint=_HINT_NOT_KV2)
        if entry is None and config_answered:
            raise PermanentError(_ERR_NOT_KV2_MOUNT.format(where=where, mount=mount, why=_WHY_NO_CONFIG),
                                 hint=_HINT_NOT_KV2)
        logger.debug("%s: mount %r is a %s", where, mount, _KV2 if entry else "mount Vault did not describe")

    def _lookup_mount(self, *, strict: bool = False) -> _MountEntry | None:
        """The mount Vault serves `mount`/`path` from (sys/internal/ui/mounts, one request); None when it
        cannot tell: a client without the lookup, a refusal (a mount the token may use nothing of, or no
        mount), an answer that is not Vault's, or any other failure (the caller's own error then stands).
        ``strict``: a TransientError is raised instead (Vault may yet tell, and None would let the mount pass)."""
        api = self._client()
        if not isinstance(api, MountLookup):
            return None
        full = f"{self._settings.mount}/{self._settings.path}"
        op = _Op("look up the mount of", f"sys/internal/ui/mounts/{full}", _HINT_VAULT)

        def lookup(api: VaultAPI) -> _MountEntry | None:
            try:
                return _mount_entry(api.mount_info(full)) if isinstance(api, MountLookup) else None
            except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidPath):  # not to be taken for a dead token
                return None

        try:
            entry = self._call(op, lookup)
        except RotatorError as exc:
            if strict and isinstance(exc, TransientError):
                raise
            logger.debug("%s: %s", self._location, exc)
            return None
        if entry is not None and not f"{full}/".startswith(f"{entry.path}/"):
            return None  # a path Vault names some other way (a namespace written into `mount`): no advice from it
        return entry

    def _mount_elsewhere(self, entry: _MountEntry) -> ConfigError:
        """`mount` names a path inside (or above) the mount Vault serves the secret from: the settings to write."""
        s = self._settings
        full = f"{s.mount}/{s.path}"
        # The path inside the real mount, without the /data/ or /metadata/ that `mount` took from the API path
        rest = full[len(entry.path) + 1:]
        extra = s.mount[len(entry.path) + 1:].split("/")[0] if s.mount.startswith(f"{entry.path}/") else ""
        api_path = ""
        if extra in _API_SEGMENTS:
            rest = rest.split("/", 1)[1]
            api_path = _HINT_API_PATH.format(segment=extra)
        message = _ERR_MOUNT_ELSEWHERE.format(where=self._location, mount=s.mount, full=full, kind=entry.kind,
                                              real=entry.path)
        if entry.kind != _KV2:
            return ConfigError(message, hint=_HINT_ELSEWHERE_NOT_KV2.format(api_path=api_path))
        if not rest:  # `mount` and `path` together name the mount (mount = "x/data", path = "y" for x/data/y)
            return ConfigError(message, hint=_HINT_MOUNT_ONLY.format(mount_toml=json.dumps(entry.path,
                                                                                           ensure_ascii=False)))
        return ConfigError(message, hint=_HINT_MOUNT_ELSEWHERE.format(
            mount_toml=json.dumps(entry.path, ensure_ascii=False), path_toml=json.dumps(rest, ensure_ascii=False),
            api_path=api_path))

    def _op(self, name: str, kind: str, *capabilities: str, also: str = "") -> _Op:
        s = self._settings
        path = f"{s.mount}/config" if kind == "config" else f"{s.mount}/{kind}/{s.path}"
        caps = "[" + ", ".join(f'"{c}"' for c in capabilities) + "]" + also
        namespace = f" in namespace {s.namespace!r}" if s.namespace else ""
        return _Op(name, path, _HINT_FORBIDDEN.format(caps=caps, path=path, namespace=namespace))

    def _custom_in(self, metadata: Mapping[str, Any]) -> Mapping[str, str]:
        """The custom_metadata of a metadata read's answer; PermanentError if it is not Vault's."""
        return self._checked(lambda: _custom(metadata.get("custom_metadata")), self._read_meta)

    def _checked(self, read: Callable[[], T], op: _Op) -> T:
        """``read()`` of a field of ``op``'s answer, received already; PermanentError if it is not Vault's."""
        with self._map_errors(op):
            return read()

    def _client(self) -> VaultAPI:
        if self._api is None:
            self._api = self._factory(self._settings)
        return self._api

    def _call(self, op: _Op, fn: Callable[[VaultAPI], T], *, refusable: bool = False) -> T:
        """One Vault call with a valid token; after a 403, once, a new login if that may help.
        ``refusable``: a 403 that remains raises :class:`_Refused` (the caller has another way)."""
        api = self._client()
        login = _Op("log in to", *self._login.endpoint, auth=True)
        retried = False
        while True:
            with self._map_errors(login):
                self._login.ensure(api)
            with self._map_errors(op):
                try:
                    return fn(api)
                except hvac.exceptions.Forbidden as exc:
                    # A 403 that is not Vault's (a proxy's) says nothing of the token: no new login for it
                    if not_vault_answer(exc) or retried or not self._login.forget(api):
                        if refusable:
                            raise _Refused from None
                        raise
                    retried = True
            logger.debug("%s: Vault refused the token; logging in again", self._location)

    @contextmanager
    def _map_errors(self, op: _Op) -> Iterator[None]:
        """hvac and requests exceptions -> rotator errors, without the SDK's text (``from None``)."""
        url = self._settings.url
        try:
            yield
        except RotatorError:
            raise
        except UnicodeEncodeError:  # a header http.client cannot encode: its arguments hold the value (a token)
            raise ConfigError(
                f"{self._location}: the Vault token or a login credential holds a character an HTTP header cannot "
                "carry (not Latin-1)",
                hint="write the credential again as it was issued",
            ) from None
        except NotVaultAnswer:
            message = _ERR_NOT_VAULT.format(where=self._location, url=url, operation=op.name, path=op.path)
            raise PermanentError(message, hint=_HINT_NOT_VAULT) from None
        except AnswerTooLarge as exc:
            message = _ERR_TOO_LARGE.format(
                where=self._location, url=url, operation=op.name, path=op.path, limit=exc.limit
            )
            raise TransientError(message, hint=_HINT_TOO_LARGE) from None
        except NoAnswerInTime as exc:
            message = _ERR_NO_ANSWER_IN_TIME.format(
                where=self._location, url=url, operation=op.name, path=op.path, timeout=exc.timeout_s
            )
            raise TransientError(message, hint=_HINT_NO_ANSWER_IN_TIME) from None
        except _RedirectRefused as exc:
            message = _ERR_REDIRECT.format(where=self._location, url=url, operation=op.name, path=op.path,
                                           target=exc.target)
            raise PermanentError(message, hint=_HINT_REDIRECT) from None
        except requests.exceptions.SSLError:
            raise PermanentError(_ERR_TLS.format(where=self._location, url=url), hint=_HINT_TLS) from None
        except requests.exceptions.TooManyRedirects:  # Vault was reached: a retry meets the same loop
            message = _ERR_REDIRECT_LOOP.format(where=self._location, url=url, operation=op.name, path=op.path)
            raise PermanentError(message, hint=_HINT_REDIRECT_LOOP) from None
        except requests.exceptions.RequestException as exc:  # refused, reset, timeouts, ...
            cause = type(exc).__name__
            message = _ERR_UNREACHABLE.format(where=self._location, url=url, cause=cause)
            raise TransientError(message, hint=_HINT_RETRY) from None
        except OSError as exc:  # requests' own check of the TLS files, before anything is sent (ca_bundle removed)
            raise PermanentError(f"{self._location}: cannot use the TLS files to reach Vault at {url}: "
                                 f"{REDACTOR.redact(str(exc))[:300]}", hint=_HINT_TLS_FILES) from None
        except hvac.exceptions.VaultError as exc:
            raise self._vault_error(exc, op) from None

    def _vault_error(self, exc: hvac.exceptions.VaultError, op: _Op) -> RotatorError:
        status = _status().get(type(exc), "with an unexpected status")
        if not isinstance(exc, transient_status()) and not_vault_answer(exc):
            # No refusal of Vault's (a login's 400 is not a wrong credential then): a proxy, another
            # service, or Go's own answer to plain HTTP on Vault's TLS port. An outage status (a 502 with
            # a proxy's page) stays transient, below.
            return self._not_vault_error(exc, op, status)
        # Vault's own error strings name the problem ("permission denied", "invalid role or
        # secret ID"); a proxy's HTML body is left out. Known secret values are redacted anyway.
        detail = REDACTOR.redact(_vault_errors(exc.errors))[:300]
        message = _ERR_HTTP.format(
            where=self._location,
            operation=op.name,
            path=op.path,
            status=status,
            detail=f" ({detail})" if detail else "",
        )
        if isinstance(exc, transient_status()):
            return TransientError(message, hint=_HINT_RETRY)
        if isinstance(exc, hvac.exceptions.Forbidden) or op.auth:
            return PermanentError(message, hint=op.refused_hint)
        if isinstance(exc, hvac.exceptions.InvalidRequest) and _CUSTOM_INVALID in detail:
            # Not the settings: the secret's custom_metadata (an operator's keys) leaves no room for rotator's
            limits = (f"Vault takes at most {_MAX_CUSTOM_KEYS} custom_metadata keys in a write, of at most "
                      f"{_MAX_CUSTOM_KEY_BYTES} bytes, with values of at most {_MAX_CUSTOM_VALUE_BYTES} bytes; "
                      "its message names what broke them")
            if _CUSTOM_COUNT in detail:
                limits += ": " + self._room_hint(None, patch_helps=op is self._write_meta)
            return PermanentError(message, hint=limits)
        return PermanentError(message, hint=_HINT_VAULT)

    def _not_vault_error(self, exc: hvac.exceptions.VaultError, op: _Op, status: str) -> PermanentError:
        url = self._settings.url
        where = self._location
        if _GO_PLAIN_HTTP_TO_TLS in (exc.text or "") and urlsplit(url).scheme == "http":
            https_url = json.dumps("https://" + url[len("http://"):], ensure_ascii=False)
            return PermanentError(
                _ERR_PLAIN_HTTP_TO_TLS.format(where=where, url=url, operation=op.name, path=op.path),
                hint=_HINT_PLAIN_HTTP_TO_TLS.format(https_url=https_url),
            )
        message = _ERR_NOT_VAULT_STATUS.format(where=where, url=url, operation=op.name, path=op.path, status=status)
        return PermanentError(message, hint=_HINT_NOT_VAULT)


if TYPE_CHECKING:  # static conformance: mypy checks VaultKV2Store against the Store Protocol
    _conforms: type[Store] = VaultKV2Store


def _absent(exc: hvac.exceptions.InvalidPath) -> bool:
    """Whether a 404 is Vault's own "nothing at this path" (``{"errors": []}``, or KV v2's envelope for a path
    it has no endpoint for: the first read's mount check tells that one apart). Not one naming the route Vault
    has no handler for (no such mount), nor one that did not come from Vault (:func:`not_vault_answer`: an
    ingress without a route for the path answers "404 page not found"): read as an absent secret, that made
    the current version unknown, and a revocation found no store holding the token it was about to revoke."""
    return not exc.errors and not not_vault_answer(exc)


def _vault_errors(errors: object) -> str:
    """Vault's ``errors`` list as one line; its multierror text ("1 error occurred:\\n\\t* x") unwrapped."""
    items: list[str] = []
    for error in errors if isinstance(errors, list) else ():
        text = _MULTIERROR_HEAD.sub("", str(error))
        items += [" ".join(item.split()) for item in text.split("\n\t* ") if item.strip()]
    return "; ".join(items)


#: What :meth:`VaultKV2Store._read_version` returns for a payload too deeply nested to decode.
_TOO_DEEP: Mapping[str, Any] = MappingProxyType({})
#: What :meth:`VaultKV2Store._mount_config` returns when the token may not read the mount's config.
_UNREADABLE: Mapping[str, Any] = MappingProxyType({})


def _whole(value: object) -> int:
    """A whole-number field of Vault's answer (a version, max_versions; absent or null: 0);
    NotVaultAnswer when it is not one."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**18:
        return value
    if isinstance(value, str) and re.fullmatch("[0-9]{1,18}", value):
        return int(value)
    raise NotVaultAnswer("a whole number")


def _versions(value: object) -> dict[int, Mapping[str, Any]]:
    """The metadata's ``versions`` map by version number (absent or null: empty); NotVaultAnswer when
    it is not Vault's (a key that is not a version number, an entry that is not an object)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
        raise NotVaultAnswer("versions")
    return {_whole(n): v for n, v in value.items()}


def _custom(value: object) -> Mapping[str, str]:
    """The secret's ``custom_metadata`` (absent or null: none); NotVaultAnswer when it is not Vault's
    (an object of text keys and text values)."""
    if value is None:
        return {}
    if isinstance(value, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return value
    raise NotVaultAnswer("custom_metadata")


def _our_keys(policy: str, token_id: str, rotated_at: str) -> dict[str, str]:
    """rotator's custom_metadata keys for the version that holds ``token_id``."""
    return {"managed-by": MANAGED_BY, "policy": policy, "token_id": token_id, "rotated_at": rotated_at}


def _whole_seconds(value: object) -> str | None:
    """A time of Vault's answer (``created_time``: RFC 3339 in UTC, nanoseconds) as rotated_at is written
    (whole seconds); None when it is not one."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d{1,9})?Z", value) if isinstance(value, str) else None
    return f"{match[1]}Z" if match else None


def _is_managed(custom_metadata: Mapping[str, Any]) -> bool:
    return bool(custom_metadata.get("managed-by") == MANAGED_BY)


def _marker_policy(custom_metadata: Mapping[str, Any]) -> str | None:
    """The policy rotator's custom_metadata names (a string, or None): Engine._check_ownership's
    evidence when the current version holds no record."""
    value = custom_metadata.get("policy")
    return value if isinstance(value, str) and value else None


def _cas(expected_version: str | None, location: str) -> int:
    if expected_version is None:
        return 0
    if not re.fullmatch("[0-9]{1,18}", expected_version):
        raise PermanentError(f"{location}: expected version {expected_version!r} is not a KV v2 version number")
    return int(expected_version)


#: A Go duration as Vault prints one ("720h0m0s", "1m30.5s", "-1s"): a sign, then numbers with units.
_GO_DURATION = re.compile(r"(-?)((?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|μs|ms|s|m|h))+)")
_GO_PART = re.compile(r"([0-9]*\.?[0-9]*)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def _go_duration(value: object) -> timedelta:
    """A delete_version_after of Vault's answer (absent, null, "" or "0s": zero); NotVaultAnswer when
    it is not a duration (whole seconds are taken too)."""
    if value is None or value == "":
        return timedelta(0)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**12:
        return timedelta(seconds=value)
    match = _GO_DURATION.fullmatch(value) if isinstance(value, str) and len(value) < 100 else None
    if match is None:
        raise NotVaultAnswer("a duration")
    seconds = sum(float(n) * _GO_UNITS[u] for n, u in _GO_PART.findall(match[2]))
    if seconds >= 2**63 / 10**9:  # longer than Go's longest time.Duration
        raise NotVaultAnswer("a duration")
    return timedelta(seconds=-seconds if match[1] else seconds)


def _delete_after(secret: timedelta, mount: timedelta | None) -> tuple[timedelta, str] | None:
    """What Vault applies to a version written now (vault-plugin-secrets-kv's deletionTime): off when the
    mount disables it (negative), else the shorter of the two that are set. ``mount`` None: not read."""
    if mount is not None and mount < timedelta(0):
        return None
    candidates = [(d, source) for d, source in ((secret, "the secret's"), (mount, "the mount's"))
                  if d is not None and d > timedelta(0)]
    return min(candidates, key=lambda c: c[0]) if candidates else None
