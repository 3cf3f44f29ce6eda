"""How the vault-kv2 store talks to Vault: the narrowed client and the token it carries.

:class:`VaultAPI` is the handful of hvac calls the store makes (the seam for fakes) and
:class:`HvacAPI` implements it over an ``hvac.Client``.

:class:`VaultLogin` keeps one token valid for a long-running daemon:

- token auth reads the token from its CredentialRef, looks it up (``lookup-self``) and
  renews it (``renew-self``) once less than 1/3 of its creation TTL is left; a token it cannot
  renew is re-read from its file/variable, so a token rotated by Vault Agent is picked up (only a
  new token is looked up again: the expiry of the same one is known);
- AppRole logs in with role_id + secret_id, renews the same way, and logs in again when the
  token cannot be renewed any further (max TTL) or after Vault refused it and no longer knows it;
- Kubernetes logs in with the pod's service account JWT, read from ``jwt_file`` at every login
  (the kubelet refreshes a projected token in place), and otherwise behaves like AppRole, but for
  the hold on a refused credential below.

Renewal is scheduled from whatever is known, and retried: a failed login, lookup or renewal
(Vault down, 503...) is tried again after a short backoff (1 s doubling to 30 s, and never later
than a quarter of what is left of the token's TTL), not only when the next rotation needs Vault.
A login Vault refused (a wrong secret_id, a JWT its role does not bind) is checked again after a
backoff from 1 s to 300 s. An AppRole secret_id Vault refused is not sent again before
:data:`REFUSED_LOGIN_RESEND`, by any store of the process, and the stores that log in with the same
one at the same moment send it one at a time (Vault's user lockout counts failed AppRole logins); a
changed secret_id (its file written again) is sent at the next check, which costs a file read. A
Kubernetes JWT is sent at every check: Vault has no user lockout for Kubernetes auth.
A token that Vault refuses to look up, or whose renewal it refuses, is checked with a call any
token Vault knows may make: a revoked or mistyped token is a failure, not a token "without renewal".
So is a token a store call was refused with (:meth:`VaultLogin.forget`): a given one revoked mid-life
is a failure then, not at its renewal; a login token Vault still knows was denied a capability, which
a new login would not grant.
:meth:`VaultLogin.due` tells the daemon when to call :meth:`VaultLogin.ensure` between runs, and
:meth:`VaultLogin.status` reports a token close to expiry (for ``/readyz`` and a metric).

It raises hvac's exceptions as they are: the store maps them with its ``_map_errors()``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple, Protocol, TypedDict, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rotator.adapters.transport import RequestCounter
from rotator.config.registry import lazy_sdk
from rotator.core.clock import Clock
from rotator.core.credentials import (  # the same guards as a `{file = ...}` credential's read
    CredentialRef,
    plain_text,
    printable_secret,
    read_credential_file,
)
from rotator.core.errors import ConfigError
from rotator.core.retry import doubling
from rotator.core.secret import Secret

if TYPE_CHECKING:
    import hvac
    import hvac.exceptions
    import hvac.utils
    import requests
else:  # imported on first use: loading a policy file needs the settings models only (issue 12)
    hvac = lazy_sdk("hvac")

__all__ = [
    "DEFAULT_K8S_JWT_FILE",
    "AnswerTooLarge",
    "AppRoleAuth",
    "AuthAPI",
    "HvacAPI",
    "KubernetesAuth",
    "NoAnswerInTime",
    "TokenAuth",
    "VaultAPI",
    "VaultAuth",
    "VaultLogin",
    "CredentialStatus",
    "error_body",
    "mount_segments",
    "not_vault_answer",
    "plain_segments",
    "transient_status",
]

logger = logging.getLogger("rotator.adapters.vault_kv2")

_DUE_NOW = datetime(1970, 1, 1, tzinfo=UTC)
#: Backoff of a failed login, lookup or renewal (seconds): doubles from the first to the second.
RETRY_DELAYS = (1.0, 30.0)
#: The cap for a login that Vault refused (a wrong or used-up secret_id, a role that does not bind
#: this service account) or that could not start (no token file): trying it every 30 s does not fix
#: it, and failed AppRole logins count toward Vault's user lockout, which then refuses the fixed one.
#: An AppRole secret_id is sent at these checks only once it changed (REFUSED_LOGIN_RESEND).
REFUSED_LOGIN_CAP = 300.0
#: An AppRole secret_id Vault refused at a login is not sent again before this (seconds), unless it
#: changed. Not for Kubernetes auth: Vault's user lockout covers userpass, ldap and approle only.
#: Vault's user lockout (AppRole) locks a role_id out for lockout_duration after lockout_threshold (5)
#: failed logins with no pause of lockout_counter_reset (15 min by default) between them: at most one
#: try per 30 minutes, twice that pause, never adds up to a lockout, whatever the backoff or the number of
#: stores sharing the role. The cost: a fix made in Vault alone (the role's bound CIDRs, a lockout
#: lifted) is seen up to 30 minutes late, or at once after a restart or a SIGHUP.
REFUSED_LOGIN_RESEND = 1800.0
#: The client's timeout per request when it does not say (VaultKV2Settings.timeout_s's default)
_DEFAULT_TIMEOUT_S = 10.0
#: A time of day this much behind the real time passed, or less, is the two clocks read a moment apart
#: (or NTP slewing), not a step back: planned times are not moved for it.
_STEP_TOLERANCE = timedelta(seconds=1)
#: Statuses worth retrying as they are (a new login would not help and, for AppRole, would only
#: leave tokens behind): Vault sealed, standby behind, rate limited, 5xx. UnexpectedError is any
#: other status: in practice 412 (a standby behind) or 504. The store's error mapping uses it too.
@functools.cache
def transient_status() -> tuple[type[hvac.exceptions.VaultError], ...]:
    """The statuses above as hvac's exception classes (a function: hvac is imported on first use)."""
    return (
        hvac.exceptions.PreconditionFailed,
        hvac.exceptions.RateLimitExceeded,
        hvac.exceptions.InternalServerError,
        hvac.exceptions.BadGateway,
        hvac.exceptions.VaultDown,
        hvac.exceptions.UnexpectedError,
    )


def not_vault_answer(exc: BaseException) -> bool:
    """Whether ``exc`` is hvac's exception for an error answer whose body is not Vault's: Vault sends every
    error as a JSON object with an ``errors`` list, or as its response envelope (KV v2's 404 for a deleted
    version, or for a path it has no endpoint for, with a warning), so a body with neither (a proxy's page, an
    ingress's "404 page not found" or ``null``, Go's "Client sent an HTTP request to an HTTPS server" to plain
    HTTP on Vault's TLS port) did not come from Vault: a 400 or 403 of it refuses no credential, a 404 finds
    no secret absent. hvac then keeps the body's text and no ``errors``; an exception made without an answer
    (no text: a test's fake, rotator's own) is Vault's."""
    return (isinstance(exc, hvac.exceptions.VaultError) and exc.errors is None
            and getattr(exc, "text", None) is not None and not _envelope(getattr(exc, "json", None)))


#: The keys of the envelope of every answer of Vault (and OpenBao) that is not an error list: a gateway's own
#: JSON has a few of its own (Kong's: message and request_id), never all of these
_ENVELOPE = frozenset({"request_id", "lease_id", "renewable", "lease_duration", "data"})


def _envelope(body: object) -> bool:
    return isinstance(body, Mapping) and _ENVELOPE.issubset(body.keys())


#: The media type of an error body decoded as JSON (Vault sends exactly this)
_JSON = "application/json"


def error_body(answer: requests.Response) -> tuple[Any, list[str] | None]:
    """An error answer's decoded body and Vault's ``errors`` in it. The body is decoded only when its media
    type is JSON: the type alone, in any case, as a proxy or gateway may add "; charset=utf-8" to Vault's own
    answer (None: not JSON after all, or nested thousands deep). ``errors`` only when the body is Vault's, a
    JSON object whose ``errors`` is a list of strings; otherwise None, which :func:`not_vault_answer` reads as
    an answer that did not come from Vault."""
    body: Any = None
    if answer.headers.get("Content-Type", "").split(";")[0].strip().lower() == _JSON:
        try:
            body = answer.json()
        except (ValueError, RecursionError):
            body = None
    errors = body.get("errors") if isinstance(body, dict) else None
    if not (isinstance(errors, list) and all(isinstance(e, str) for e in errors)):
        errors = None
    return body, errors


class AnswerTooLarge(Exception):
    """An answer longer than ``limit`` bytes (decoded): the store's session stops reading it there and uses
    none of it (rotator/adapters/vault/kv2.py, MAX_ANSWER_BYTES). No answer of Vault's to the store is near
    that size: something else answers at the store's url (a proxy, an ingress, a relay)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"an answer longer than {limit} bytes")
        self.limit = limit


class NoAnswerInTime(Exception):
    """No complete answer within ``timeout_s`` of the request's start, its redirects included (the store's
    session ends every request there: requests' own timeout bounds each read of the socket only)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"no complete answer within {timeout_s:g}s")
        self.timeout_s = timeout_s


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says that Vault did not answer (a connection error, a timeout, an answer cut off at
    the session's bounds) or answered that it is unwell (:func:`transient_status`): nothing learned about
    the token, a retry may tell."""
    import requests  # hvac's transport, loaded with it by then: not imported with the settings models (issue 12)

    return isinstance(exc, (requests.exceptions.RequestException, AnswerTooLarge, NoAnswerInTime, *transient_status()))


class CredentialStatus(TypedDict):
    """What the daemon shows of a store's Vault token (no value, no accessor)."""

    logged_in: bool
    #: None: the token does not expire, or its expiry is not known yet
    expires_at: datetime | None
    renewable: bool | None
    #: failed logins/lookups/renewals in a row
    failures: int
    #: the last failure, as an exception class name
    error: str | None
    #: False when the token is expired, close to expiry (less than 1/6 of its TTL left, or 1/3
    #: after a failed renewal), or when nothing is known about it after a failure
    ok: bool
    #: when ``ok`` turns false with time alone (None: it does not, or is false already): the daemon
    #: reads the status again then, instead of asking every store at every scrape
    ok_until: datetime | None


#: Characters that would let a path leave its place in ``/v1/<mount>/data/<path>`` or
#: ``/v1/auth/<mount_path>/login``: the HTTP client sends the path as it is, and the client or Vault
#: decodes ``%2e%2e`` and resolves ``..`` (``x/../../../sys/policy/evil`` becomes
#: ``/v1/sys/policy/evil``); ``?`` and ``#`` end the path.
_PATH_BREAKERS = frozenset("%\\?#")
_ERR_PATH = (
    "{problem}: write segments joined by single slashes, e.g. {example} (no '.' or '..' segment, no empty "
    "segment, no leading or trailing '/', none of % \\ ? # or control characters)"
)


def plain_segments(value: str, example: str = "influx/mgmt") -> str:
    """``value`` if it is ``seg/seg/...`` with plain segments, else ValueError (see :data:`_PATH_BREAKERS`)."""

    def bad(problem: str) -> ValueError:
        return ValueError(_ERR_PATH.format(problem=problem, example=example))

    if value.startswith("/"):
        raise bad("starts with '/'")
    segments = value.split("/")
    if "" in segments:
        raise bad("has an empty segment ('//' or a trailing '/')")
    if any(segment in (".", "..") for segment in segments):
        raise bad("has a '.' or '..' segment")
    breakers = sorted(_PATH_BREAKERS.intersection(value))
    if breakers:
        raise bad(f"contains {' '.join(repr(c) for c in breakers)}")
    if not value.isprintable():
        raise bad("contains a control character")
    return value


def mount_segments(value: str, example: str = "influx/mgmt") -> str:
    """A mount as the settings take it: outer slashes dropped (``/team/kv/`` is ``team/kv``, as the
    Vault CLI reads it), the rest :func:`plain_segments`."""
    if not value.strip("/"):
        raise ValueError("must not be empty")
    return plain_segments(value.strip("/"), example)


#: Where Kubernetes mounts a pod's service account token (automountServiceAccountToken).
DEFAULT_K8S_JWT_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class TokenAuth(BaseModel):
    """``auth = {method = "token", token = {file = "/run/secrets/vault-token"}}``"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["token"]
    token: CredentialRef


class AppRoleAuth(BaseModel):
    """``auth = {method = "approle", role_id = "…", secret_id = {env = "VAULT_SECRET_ID"}}``"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["approle"]
    #: Not a secret in Vault's model, so it may be written inline; a CredentialRef works too.
    role_id: str | CredentialRef
    secret_id: CredentialRef
    mount_path: str = Field(default="approle", min_length=1)

    @field_validator("mount_path")
    @classmethod
    def _plain_mount_path(cls, value: str) -> str:
        # It becomes auth/<mount_path>/login: a '..' segment would send role_id and secret_id elsewhere.
        return mount_segments(value, "approle or team-a/approle")


class KubernetesAuth(BaseModel):
    """``auth = {method = "kubernetes", role = "rotator"}``: log in as the pod's service account.

    ``jwt_file`` (relative to the policy file if not absolute) is read at every login, so a
    projected token the kubelet refreshed is picked up; it is never written anywhere.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["kubernetes"]
    role: str = Field(min_length=1, description="the Kubernetes auth role in Vault")
    jwt_file: Path = Field(default=DEFAULT_K8S_JWT_FILE, description="the service account token (a JWT)")
    mount_path: str = Field(default="kubernetes", min_length=1)

    # `role` goes in the login's JSON body, not its URL: only mount_path needs the path check.
    @field_validator("mount_path")
    @classmethod
    def _plain_mount_path(cls, value: str) -> str:
        # It becomes auth/<mount_path>/login: a '..' segment would send the service account JWT elsewhere.
        return mount_segments(value, "kubernetes or cluster-1/kubernetes")


#: The methods that log in and get a token of their own (as opposed to a given token).
LoginAuth = AppRoleAuth | KubernetesAuth

VaultAuth = Annotated[TokenAuth | AppRoleAuth | KubernetesAuth, Field(discriminator="method")]


class AuthAPI(Protocol):
    """The token and AppRole calls of hvac that :class:`VaultLogin` makes."""

    def set_token(self, token: Secret | None) -> None: ...

    def lookup_self(self) -> Mapping[str, Any]: ...

    def renew_self(self) -> Mapping[str, Any]: ...

    def approle_login(self, mount_path: str, role_id: str, secret_id: Secret) -> Mapping[str, Any]: ...

    def kubernetes_login(self, mount_path: str, role: str, jwt: Secret) -> Mapping[str, Any]: ...

    def check_token(self) -> None:
        """A call Vault answers for any token it knows, whatever its policies, and refuses (403) for a
        token it does not know (expired, revoked, never issued): tells a dead token from one that may
        not look itself up."""
        ...


class _Refusal(NamedTuple):
    """A login Vault refused: when, and what it answered (not the exception: its traceback holds the
    frames that sent the credential)."""

    at: datetime
    kind: type[hvac.exceptions.VaultError]
    errors: Any


class _Sending:
    """One key's login lock, and how many callers hold it or wait for it (the entry goes when none do)."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0


class _Refusals:
    """The logins Vault refused lately, shared by every :class:`VaultLogin` of the process, by where they
    went and a keyed digest of what they sent (never the credential): N stores sharing a wrong secret_id
    send it once, not N times toward Vault's user lockout, also when they log in at the same moment
    (:meth:`sending`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[tuple[object, bytes], _Refusal] = {}
        self._sending: dict[tuple[object, bytes], _Sending] = {}

    @contextmanager
    def sending(self, key: tuple[object, bytes], wait: float) -> Iterator[None]:
        """One login of ``key`` at a time, a lock per key (other Vaults and credentials do not wait): without
        it, the stores logging in at once (the run workers and the keep-alive thread) each looked at the
        registry before the first refusal was in it, and all sent the refused credential. A caller waits
        ``wait`` seconds at most (a login is one request, which the store's session ends ``timeout_s`` after
        its start: :func:`_login_wait`), then goes on regardless."""
        with self._lock:
            entry = self._sending.setdefault(key, _Sending())
            entry.users += 1
        held = False
        try:
            held = entry.lock.acquire(timeout=wait)
            if not held:
                logger.debug("a login with the same credential has not answered for %.1fs; logging in anyway", wait)
            yield
        finally:
            if held:
                entry.lock.release()
            with self._lock:
                entry.users -= 1
                if not entry.users:
                    del self._sending[key]

    def get(self, key: tuple[object, bytes]) -> _Refusal | None:
        with self._lock:
            return self._by_key.get(key)

    def add(self, key: tuple[object, bytes], refusal: _Refusal) -> None:
        with self._lock:
            oldest = refusal.at - timedelta(seconds=REFUSED_LOGIN_RESEND)
            self._by_key = {k: r for k, r in self._by_key.items() if r.at > oldest}
            self._by_key[key] = refusal

    def discard(self, key: tuple[object, bytes]) -> None:
        with self._lock:
            self._by_key.pop(key, None)


_REFUSALS = _Refusals()
#: Keys the digests of :class:`_Refusals`: drawn per process, so that a digest tells nothing outside it.
_DIGEST_KEY = os.urandom(32)


def _elapsed_source(clock: Clock) -> Callable[[], float]:
    """Seconds on a monotonic clock, which a step of the time of day does not move: the clock's own
    ``monotonic()`` where it has one (a FakeClock's, which knows nothing of real time: a step back
    then counts from the last read), the system's otherwise (the daemon's clock wraps the system clock)."""
    own = getattr(clock, "monotonic", None)
    return cast("Callable[[], float]", own) if callable(own) else time.monotonic


class VaultLogin:
    """Keeps a valid token on one client.

    :meth:`ensure` and :meth:`forget` take one caller at a time (the store's job). :meth:`status` and
    :meth:`due` may be called meanwhile from other threads (the daemon's /readyz and /metrics): they
    move the planned times back after a clock step, so every read-modify-write of those times (and
    of ``_seen``, what a step is measured from) holds ``_times_lock``. It is never held across a call
    to Vault or a file read."""

    def __init__(self, auth: TokenAuth | AppRoleAuth | KubernetesAuth, base_dir: Path, clock: Clock) -> None:
        self._auth = auth
        self._base_dir = base_dir
        self._clock = clock
        self._token: Secret | None = None
        self._renewable: bool | None = None  # None: not known (never looked up)
        self._creation_ttl = 0
        self._expires_at: datetime | None = None
        self._check_at: datetime | None = None  # None: the token does not expire
        self._failures = 0
        self._error: str | None = None
        self._retry_at: datetime | None = None  # after a failed login: when to try again
        #: the latest time of day read and the monotonic clock then: a step back is how far a later time of
        #: day falls behind the real time passed since
        self._seen: tuple[datetime, float] | None = None
        self._elapsed = _elapsed_source(clock)
        #: guards _check_at, _expires_at, _retry_at, _creation_ttl and _seen: two threads that both saw a step back
        #: before either recorded it moved the planned times back twice (an early expiry, ok=false)
        self._times_lock = threading.Lock()
        #: this token was looked up, and its expiry has passed since: a denied lookup means expired
        self._expired = False
        #: the last login failed because Vault refused it, or it could not start (not that Vault was down)
        self._refused = False
        #: counts the tokens carried so far (see :attr:`generation`)
        self._generation = 0
        #: refusals of other stores older than this are not this store's: a store set up by a reload
        #: (SIGHUP, an operator's "try again now") sends its credential once
        self._born = clock.now()
        #: where this store's logins go when its client does not say (a fake): its own
        self._own_origin = object()
        #: the same credential is not sent to Vault before this (a login Vault refused); None: no refusal
        self._resend_at: datetime | None = None
        #: an AppRole login was refused with 400 (a wrong secret_id) since the last success: a 403 may
        #: then be Vault's user lockout
        self._invalid_logins = False
        #: this token may not look itself up (Vault knows it): nothing is planned for it
        self._lookup_denied = False
        #: Vault refused renew-self for this token, which still looks itself up: not renewed again
        self._renew_denied = False

    @property
    def endpoint(self) -> tuple[str, str]:
        """The auth path Vault is asked, and the hint when it refuses."""
        if isinstance(self._auth, AppRoleAuth):
            hint = "check the AppRole role_id, secret_id (it can expire or run out of uses) and mount_path"
            if self._invalid_logins:
                hint += (
                    "; a 403 after failed logins is Vault's user lockout: it refuses every login of this role_id, "
                    "the right secret_id too, for lockout_duration (15m by default): `vault read sys/locked-users` "
                    "lists it, `vault write -f sys/locked-users/<approle mount accessor>/unlock/<role_id>` ends it"
                )
            return f"auth/{self._auth.mount_path}/login", hint + self._resend_hint()
        if isinstance(self._auth, KubernetesAuth):
            return (
                f"auth/{self._auth.mount_path}/login",
                f"check that Vault's Kubernetes auth role {self._auth.role!r} binds this service account and "
                f"namespace (and its audience, if set), that Vault can reach the Kubernetes TokenReview API, "
                f"and that {self._jwt_path()} holds this pod's current service account token",
            )
        return "auth/token/lookup-self", f"check the token in {self._auth.token.describe()}: expired or revoked?"

    @property
    def label(self) -> str:
        """What the log calls this store's Vault credential: the auth method configured, and where."""
        if isinstance(self._auth, AppRoleAuth):
            return f"Vault AppRole login (auth/{self._auth.mount_path})"
        if isinstance(self._auth, KubernetesAuth):
            return f"Vault Kubernetes login (auth/{self._auth.mount_path}, role {self._auth.role!r})"
        return f"Vault token ({self._auth.token.describe()})"

    def _resend_hint(self) -> str:
        if self._resend_at is None:
            return ""
        return (f"; rotator sends the same secret_id again at {self._resend_at.isoformat(timespec='seconds')} "
                f"at the soonest (failed logins count toward Vault's user lockout), a changed one within 5 minutes "
                f"(a restart or a SIGHUP sends it again at once)")

    @property
    def generation(self) -> int:
        """A number that changes whenever another token is put on the client (a login, a new token
        read from the file or variable). What Vault refused one token says nothing of the next."""
        return self._generation

    def ensure(self, api: AuthAPI) -> None:
        """Make sure ``api`` carries a token that is not about to expire."""
        with self._times_lock:
            now = self._now()
            check_at = self._check_at
        if self._token is None:
            self._attempt(api, self._login)
        elif check_at is not None and now >= check_at:
            self._attempt(api, self._refresh)

    def _now(self) -> datetime:
        """The time of day, with the planned times moved back by as much as the clock stepped back.

        Vault counts a token's TTL in its own time: after a step back of an hour, a renewal planned
        at a time of day would come an hour after the token expired. The step is how far the time of
        day is behind the last one read plus the real time passed since (a monotonic clock): the
        daemon asks an idle store only at its planned times, so "behind the last one read" missed all
        the time between (a 1 h step 20 minutes after the last read moved the renewal back 40 minutes,
        to the token's expiry). A step forward moves nothing: renewing early is safe.

        The caller holds ``_times_lock`` (the clocks are read under it too: a reading older than
        ``_seen`` would look like a step back). Every time planned is planned from this reading: one
        read past it (a step during a call to Vault) would be moved back by that step at the next read,
        although it was planned after it."""
        now, elapsed = self._clock.now(), self._elapsed()
        if self._seen is not None:
            seen, seen_elapsed = self._seen
            step = seen + timedelta(seconds=elapsed - seen_elapsed) - now
            if step > _STEP_TOLERANCE:
                self._check_at = self._check_at - step if self._check_at is not None else None
                self._expires_at = self._expires_at - step if self._expires_at is not None else None
                self._retry_at = self._retry_at - step if self._retry_at is not None else None
        self._seen = (now, elapsed)
        return now

    def due(self) -> datetime | None:
        """When :meth:`ensure` has work to do (log in, look up, renew, retry); None: nothing planned."""
        with self._times_lock:
            self._now()
            if self._token is None:
                return self._retry_at or _DUE_NOW  # a fixed time: "now" would move on with every call
            return self._check_at

    def status(self) -> CredentialStatus:
        """How the token stands now; safe to call while a job of the store runs (see the class)."""
        with self._times_lock:
            now = self._now()
            expires_at, creation_ttl = self._expires_at, self._creation_ttl
        ok, ok_until = True, None
        if expires_at is not None:
            left = (expires_at - now).total_seconds()
            ttl = max(creation_ttl, 1)
            ok = left > ttl / 6 and not (self._failures and left < ttl / 3)
            if ok:
                ok_until = expires_at - timedelta(seconds=ttl / 3 if self._failures else ttl / 6)
        elif self._failures and (self._token is None or self._renewable is None):
            ok = False  # nothing known about a token we could not log in with or look up
        return CredentialStatus(logged_in=self._token is not None, expires_at=expires_at,
                                renewable=self._renewable, failures=self._failures, error=self._error, ok=ok,
                                ok_until=ok_until)

    def _attempt(self, api: AuthAPI, step: Any) -> None:
        self._refused, self._resend_at = False, None
        try:
            step(api)
        except Exception as exc:
            self._failed(exc)
            raise
        if self._failures:
            logger.info("%s: %s again after %d failure(s)", self.label, "renewed" if self._token else "ok",
                        self._failures)
        with self._times_lock:
            self._retry_at = None
        self._failures, self._error = 0, None
        self._invalid_logins = False

    def _failed(self, exc: Exception) -> None:
        """Try again soon: a renewal that waits for the next rotation may come after the token expired."""
        self._failures += 1
        self._error = type(exc).__name__
        first, cap = RETRY_DELAYS
        if self._refused:
            cap = REFUSED_LOGIN_CAP
        delay = doubling(first, cap, self._failures)
        with self._times_lock:
            now = self._now()
            if self._expires_at is not None and not self._refused:  # a refused login is not hurried by expiry
                left = (self._expires_at - now).total_seconds()
                if left > 0:
                    delay = min(delay, max(left / 4, 0.5))
            self._retry_at = now + timedelta(seconds=delay)
            if self._token is not None:
                self._check_at = self._retry_at
        if self._resend_at is not None:
            logger.warning("%s: login refused (%s, %d in a row); the same credential is not sent again "
                           "before %s, a changed one at the next check in %.1fs", self.label, self._error,
                           self._failures, self._resend_at.isoformat(timespec="seconds"), delay)
            return
        if self._token is not None:
            what = "lookup or renewal"
        else:
            what = "login" if isinstance(self._auth, LoginAuth) else "reading the token"
        # "not before": a one-shot command exits with the error; a daemon's next use tries again
        logger.warning("%s: %s failed (%s, %d in a row); not tried again before %.1fs", self.label, what, self._error,
                       self._failures, delay)

    def forget(self, api: AuthAPI) -> bool:
        """After Vault refused the token (403): drop it. True if a new login may help.

        A login token that Vault still knows is valid, whether or not it may look itself up (a role with
        ``token_no_default_policy``): the 403 was a missing capability, which a new login would not grant
        (and it would leave a live token behind and use up a secret_id limited to a few logins). Vault
        unreachable meanwhile raises that (a transient error): the 403 may have been an expired token's,
        which a login fixes once Vault answers again."""
        if isinstance(self._auth, LoginAuth):
            try:
                api.lookup_self()
            except hvac.exceptions.Forbidden as exc:
                if not_vault_answer(exc):
                    return False  # a proxy's 403: keep the token, report the 403
                try:
                    known = self._vault_knows(api)
                except Exception as exc:
                    if _unreachable(exc):
                        raise
                    return False  # keep the token, report the 403
                if known:
                    return False
                # expired or revoked (or not told, as before the check): a new login may help
            except Exception as exc:
                if _unreachable(exc):
                    raise
                return False  # not Vault's answer: keep the token, report the 403
            else:
                return False
            self._token = None
            with self._times_lock:
                self._expires_at = self._check_at = None  # the dropped token's times hurry nothing any more
            api.set_token(None)
            return True
        fresh = self._auth.token.resolve(self._base_dir)
        if fresh != self._token:
            self._token = None
            return True
        # The same token. Its planned renewal, weeks away for a long TTL, is the only other check: this 403
        # may be the first sign that it was revoked. Vault no longer knowing it is a failure of the
        # credential (status, /readyz), checked again with backoff (a new token in the file is picked up
        # then); a token Vault knows was denied a capability. One request, after a 403 only.
        try:
            known = self._known_to_vault(api)
        except Exception:  # noqa: BLE001 - Vault unreachable now: report the 403 only
            return False
        if not known:
            self._lookup_denied, self._renewable = False, None
            with self._times_lock:
                self._expires_at = None  # its expiry says nothing of a token Vault does not know
            self._refused = True
            self._failed(hvac.exceptions.Forbidden("permission denied"))
        return False  # the same token again: retrying cannot help

    def _login(self, api: AuthAPI, *, look_up: bool = False) -> None:
        try:
            self._log_in(api, look_up=look_up)
        except (ConfigError, hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden) as exc:
            # A wrong or used-up secret_id, a role that does not bind, no token file: trying every
            # 30 s fixes nothing, and failed AppRole logins count toward Vault's lockout. Not an answer
            # that is not Vault's (plain HTTP to its TLS port, a proxy): no credential was refused.
            if not not_vault_answer(exc):
                self._refused = True
            raise

    def _log_in(self, api: AuthAPI, *, look_up: bool = False) -> None:
        """Log in, or read the token (``look_up``: look up even the same token whose expiry is known)."""
        if isinstance(self._auth, TokenAuth):
            token = self._auth.token.resolve(self._base_dir)
            with self._times_lock:
                left = (self._expires_at - self._now()).total_seconds() if self._expires_at else 0
            if token == self._token and self._renewable is not None and left >= 1 and not look_up:
                # The same token again (not replaced in its file) whose expiry is known: a lookup
                # would only count down the same TTL. Check again at half of what is left.
                self._schedule(int(left), self._creation_ttl, self._renewable)
                return
            if token != self._token:
                self._expired = self._lookup_denied = self._renew_denied = False
                self._generation += 1
            elif self._expires_at is not None and left < 1:
                self._expired = True
            self._token = token
            api.set_token(self._token)
            # Until the lookup answers nothing is known: if it fails, _failed() schedules a new
            # one soon (before, the renewal stayed unset and a renewable token ran out).
            self._renewable = None
            with self._times_lock:
                self._expires_at, self._check_at = None, self._now()
            self._lookup(api)
            return
        if isinstance(self._auth, KubernetesAuth):
            k8s = self._auth
            jwt = self._read_jwt()
            # Sent at every check, refused or not: Vault has no user lockout for Kubernetes auth, and a fix
            # made in Vault (the role's bindings, its TokenReview access) is then seen within minutes.
            answer = api.kubernetes_login(k8s.mount_path, k8s.role, jwt)
            method = "Kubernetes auth"
        else:
            approle = self._auth
            role_id = approle.role_id
            role = role_id if isinstance(role_id, str) else role_id.resolve(self._base_dir).reveal()
            secret_id = approle.secret_id.resolve(self._base_dir)
            answer = self._send_login(api, ("approle", approle.mount_path, role, secret_id.reveal()),
                                      lambda: api.approle_login(approle.mount_path, role, secret_id))
            method = "AppRole"
        auth = answer["auth"]
        if not _token_shaped(auth.get("client_token")):
            # A CR/LF in it made requests refuse the header at the next call, reported as "cannot reach
            # Vault"; whatever sent it is not Vault (the value is never shown: it may be a real token)
            raise NotVaultAnswer("auth.client_token")
        self._token = Secret(auth["client_token"])
        self._generation += 1
        api.set_token(self._token)
        ttl = _seconds(auth.get("lease_duration"))
        self._schedule(ttl, ttl, bool(auth.get("renewable")))
        logger.debug("logged in to Vault with %s at auth/%s (ttl %ss)", method, self._auth.mount_path, ttl)

    def _send_login(self, api: AuthAPI, sent: tuple[str, ...], login: Callable[[], Mapping[str, Any]]
                    ) -> Mapping[str, Any]:
        """An AppRole ``login()``, unless Vault refused what it sends (``sent``: where and the credential)
        less than REFUSED_LOGIN_RESEND ago, here or in another store since this one was set up: then that
        refusal again, without a request. Every failed login counts toward Vault's user lockout, so stores
        logging in with the same credential at once send it one after the other, each after looking at
        what the one before was answered."""
        # The client's origin (URL and namespace) where it tells it: the same role_id may log in to two Vaults.
        origin = getattr(api, "origin", None) or self._own_origin
        key = (origin, hmac.new(_DIGEST_KEY, "\0".join(sent).encode(), hashlib.sha256).digest())
        with _REFUSALS.sending(key, _login_wait(api)):
            now = self._clock.now()  # after the wait: a refusal recorded meanwhile is not "in the future"
            refusal = _REFUSALS.get(key)
            resend = timedelta(seconds=REFUSED_LOGIN_RESEND)
            if refusal is not None and self._born <= refusal.at <= now < refusal.at + resend:
                self._refused_with(refusal)
                raise refusal.kind(errors=refusal.errors)
            try:
                answer = login()
            except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden) as exc:
                if not_vault_answer(exc):
                    raise  # Vault never saw the credential: nothing to hold back, no lockout counted
                refusal = _Refusal(now, type(exc), exc.errors)
                _REFUSALS.add(key, refusal)
                self._refused_with(refusal)
                raise
            _REFUSALS.discard(key)
            return answer

    def _refused_with(self, refusal: _Refusal) -> None:
        self._resend_at = refusal.at + timedelta(seconds=REFUSED_LOGIN_RESEND)
        if issubclass(refusal.kind, hvac.exceptions.InvalidRequest):
            self._invalid_logins = True

    def _jwt_path(self) -> Path:
        assert isinstance(self._auth, KubernetesAuth)
        path = self._auth.jwt_file
        return path if path.is_absolute() else self._base_dir / path

    def _read_jwt(self) -> Secret:
        """The service account token, read now: the kubelet replaces a projected one before it expires
        (a symbolic link swap of ``..data``, which the read follows). Read as a ``{file = ...}`` credential
        is: a FIFO, a device or a file larger than any JWT is refused (it would block the login, inside a
        lease, or fill the memory, or be sent to Vault), and so is a control character."""
        path = self._jwt_path()
        what = "the Kubernetes service account token"
        fix = ("mount the pod's service account token (a JWT, plain text) there or set `jwt_file` in the "
               "store's auth settings")  # fmt: skip
        try:
            value = plain_text(read_credential_file(path, what).decode("utf-8"))
        except ConfigError as exc:  # not a regular file, or too large
            raise ConfigError(str(exc), hint=fix) from None
        except OSError as exc:
            raise ConfigError(
                f"cannot read {what} {path}: {exc.strerror}",
                hint="mount the pod's service account token there (automountServiceAccountToken or a projected "
                "serviceAccountToken volume) or set `jwt_file` in the store's auth settings",
            ) from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{what} {path} is not UTF-8 text (byte {exc.start + 1})",
                hint=fix,
            ) from None
        if not value:
            raise ConfigError(f"{what} {path} is empty", hint="check the volume mount")
        try:
            return printable_secret(value, f"{what} {path}")
        except ConfigError as exc:
            raise ConfigError(str(exc), hint=fix) from None

    def _lookup(self, api: AuthAPI) -> None:
        try:
            data = api.lookup_self()["data"]
        except hvac.exceptions.Forbidden as exc:
            # Vault answers 403 for a token it does not know (expired, revoked, mistyped) as for one
            # that may not look itself up. The same token past the expiry its own lookup gave is
            # expired; otherwise Vault is asked. A failure, so that status and /readyz say so.
            if not_vault_answer(exc) or self._expired or not self._known_to_vault(api):
                raise
            # A token without the `default` policy: it may still be allowed to write the secret.
            if not self._lookup_denied:
                logger.warning("cannot look up the Vault token (lookup-self denied), which Vault knows: renewal is off")
            self._lookup_denied = True
            self._schedule(0, 0, False)
            return
        self._expired = self._lookup_denied = False
        self._schedule(_seconds(data.get("ttl")), _seconds(data.get("creation_ttl")), bool(data.get("renewable")))
        logger.debug(
            "Vault token: ttl %ss of %ss, renewable=%s",
            data.get("ttl"),
            data.get("creation_ttl"),
            data.get("renewable"),
        )

    def _known_to_vault(self, api: AuthAPI) -> bool:
        """After a 403 for the token: False if Vault does not know it (:meth:`AuthAPI.check_token`).
        True too when that cannot be told (a Vault or a proxy without that call): as before, the
        store's calls say it."""
        return self._vault_knows(api) is not False

    def _vault_knows(self, api: AuthAPI) -> bool | None:
        """:meth:`_known_to_vault`, with None when it cannot be told."""
        try:
            api.check_token()
        except hvac.exceptions.Forbidden as exc:
            if not_vault_answer(exc):  # a proxy's 403 tells nothing of the token
                logger.debug("cannot tell whether Vault knows its token (a 403 that is not Vault's answer)")
                return None
            return False
        except transient_status():
            raise  # Vault is unwell: retried (_failed)
        except (hvac.exceptions.VaultError, NotVaultAnswer) as exc:
            logger.debug("cannot tell whether Vault knows its token (%s)", type(exc).__name__)
            return None
        return True

    def _refresh(self, api: AuthAPI) -> None:
        if self._renewable is None:  # the lookup after the login failed: learn the token's TTL first
            if isinstance(self._auth, TokenAuth):
                self._login(api)  # reads the token file again: an operator may have fixed it meanwhile
            else:
                self._lookup(api)
            return
        if self._renewable and not self._renew_denied:
            try:
                ttl = _seconds(api.renew_self()["auth"].get("lease_duration"))
            except transient_status():
                raise  # Vault is unwell: retry the renewal (_failed), a new login would not help
            except hvac.exceptions.VaultError as exc:
                if not_vault_answer(exc):
                    raise  # not Vault's refusal: a new login or lookup would meet the same answer
                if isinstance(self._auth, TokenAuth) and isinstance(exc, hvac.exceptions.Forbidden):
                    self._renewal_refused(api)
                    return
                logger.debug("Vault token renewal failed (%s); logging in again", type(exc).__name__)
                ttl = 0
            if ttl * 3 > self._creation_ttl:
                logger.debug("renewed the Vault token (ttl %ss)", ttl)
                self._schedule(ttl, self._creation_ttl, True)
                return
        self._login(api)  # max TTL reached or not renewable: a fresh login / a re-read token

    def _renewal_refused(self, api: AuthAPI) -> None:
        """renew-self answered 403 for a given token: revoked early, or renew-self not granted. Vault is
        asked (the file read again, the token looked up), not the expiry known: a dead token is a
        failure now, not once 1/6 of its TTL is left."""
        assert isinstance(self._auth, TokenAuth)
        generation = self._generation
        self._login(api, look_up=True)  # a 403 of the lookup (a token Vault no longer knows) raises
        if self._generation == generation and self._renewable and not self._renew_denied:
            self._renew_denied = True
            logger.warning(
                "Vault refused to renew the token in %s (renew-self: 403), which still looks itself up: it is not "
                "renewed and expires at %s; grant it `auth/token/renew-self` (update; Vault's default policy does)",
                self._auth.token.describe(),
                self._expires_at.isoformat(timespec="seconds") if self._expires_at else "(not known)",
            )

    def _schedule(self, ttl: int, creation_ttl: int, renewable: bool) -> None:
        """Check again once less than 1/3 of the creation TTL is left (Vault Agent's 2/3 rule).

        A token already past that point (max TTL, or a token rotated elsewhere) is checked at
        half its remaining TTL, so the checks do not run on every call.
        """
        with self._times_lock:
            self._renewable, self._creation_ttl = renewable, creation_ttl
            now = self._now()  # recorded as the last time read: a step before it is not applied to these times
            if ttl <= 0:
                self._check_at = self._expires_at = None
                return
            self._expires_at = now + timedelta(seconds=ttl)
            wait = max(ttl - creation_ttl / 3, ttl / 2)
            self._check_at = now + timedelta(seconds=wait)


def _token_shaped(value: object) -> bool:
    """Whether ``value`` can be a token of Vault's (or OpenBao's): one word of printable ASCII, as every
    token format is (``hvs.``/``hvb.``/``s.`` and base62 or base64url), which the X-Vault-Token header can carry."""
    # ASCII isprintable() leaves out every control character (CR, LF, tab, NUL); the space is the only blank left
    return isinstance(value, str) and bool(value) and value.isascii() and value.isprintable() and " " not in value


def _login_wait(api: AuthAPI) -> float:
    """How long a login through ``api`` may take (seconds). The store's session (kv2.hvac_client) ends a
    request, redirects included, within its client's timeout (``api.timeout`` where it says; the store's
    default otherwise), but for the name lookup (DNS), a connect to each of several addresses of the host and
    a TLS handshake, which only the connect timeout bounds (a handshake's, each read): twice the timeout and a
    second cover that."""
    timeout = getattr(api, "timeout", None)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        timeout = _DEFAULT_TIMEOUT_S
    return 2 * float(timeout) + 1


class VaultAPI(AuthAPI, Protocol):
    """The hvac calls the store makes; answers are Vault's JSON bodies."""

    def read_latest(self, mount: str, path: str) -> Mapping[str, Any]:
        """GET ``<mount>/data/<path>``: the current version's ``data`` and ``metadata`` (version,
        custom_metadata, deletion_time, destroyed). A deleted or destroyed current version answers
        404 with that body, which is returned (``data.data`` null); a secret that does not exist
        raises InvalidPath with Vault's empty ``errors``, a path without a mount InvalidPath with errors.
        A 404 that is not Vault's (:func:`not_vault_answer`: an ingress without a route for the path, a
        proxy) raises InvalidPath too, with ``errors`` None: it says nothing of the secret."""
        ...

    def read_metadata(self, mount: str, path: str) -> Mapping[str, Any]: ...

    def read_version(self, mount: str, path: str, version: int) -> Mapping[str, Any]:
        """GET ``<mount>/data/<path>?version=``: that version, its 404s as :meth:`read_latest`'s (a version
        deleted, destroyed, or never written or evicted, which Vault answers with empty ``errors``)."""
        ...

    def write_version(self, mount: str, path: str, data: Mapping[str, Any], cas: int) -> Mapping[str, Any]: ...

    def write_custom_metadata(self, mount: str, path: str, custom_metadata: Mapping[str, str]) -> None:
        """POST ``<mount>/metadata/<path>`` with ``custom_metadata``: Vault replaces the whole map with it."""
        ...

    def patch_custom_metadata(self, mount: str, path: str, custom_metadata: Mapping[str, str]) -> None:
        """PATCH ``<mount>/metadata/<path>`` (a JSON merge patch, Vault 1.9 and later, OpenBao): sets these
        keys of custom_metadata and leaves the others as Vault holds them then. Needs the ``patch``
        capability (403 without it); a Vault without PATCH answers 405, raised as
        ``hvac.exceptions.UnsupportedOperation``."""
        ...

    def read_mount_config(self, mount: str) -> Mapping[str, Any]: ...


class NotVaultAnswer(Exception):
    """An answer that is not Vault's JSON: an ingress's default page, a proxy, another service on
    that port (hvac hands back the raw response when the body is not JSON)."""


def _seconds(value: object) -> int:
    """A TTL field of Vault's answer (whole seconds; absent or null: 0); NotVaultAnswer otherwise."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise NotVaultAnswer("ttl")
    try:
        seconds = int(value)
    except (ValueError, OverflowError):  # "forever", Infinity, NaN
        raise NotVaultAnswer("ttl") from None
    if seconds > _LONGEST_TTL:
        raise NotVaultAnswer("ttl")
    return max(seconds, 0)  # a token about to expire: 0 means log in (or look up) again


#: Go's longest time.Duration (about 292 years): no TTL Vault sends is longer
_LONGEST_TTL = 2**63 // 10**9


def _shaped(answer: object, key: str) -> Mapping[str, Any]:
    """``answer`` if it is a JSON object whose ``key`` is an object, as every Vault answer used here is."""
    if isinstance(answer, Mapping) and isinstance(answer.get(key), Mapping):
        return answer
    raise NotVaultAnswer(key)


@contextmanager
def _decodable() -> Iterator[None]:
    """A Vault call whose answer hvac decodes with json.loads: JSON nested a few thousand deep makes
    the decoder raise RecursionError, an internal error to the engine. No answer of Vault is nested
    like that, so it is NotVaultAnswer. Not around the data reads: there the depth is the secret's
    own payload, which the store reports as such (VaultKV2Store._read_latest)."""
    try:
        yield
    except RecursionError:
        raise NotVaultAnswer("nested too deep") from None


class HvacAPI:
    """:class:`VaultAPI` over an ``hvac.Client``; ``counter``: what its session counts (if it does)."""

    def __init__(self, client: Any, counter: RequestCounter | None = None, timeout: float | None = None) -> None:
        self._client = client
        self.counter = counter
        self._timeout = timeout

    @property
    def origin(self) -> str:
        """Where the client's calls go (URL and namespace): :class:`VaultLogin` tells logins apart by it."""
        return f"{self._client.url} {getattr(self._client.adapter, 'namespace', None) or ''}"

    @property
    def timeout(self) -> float | None:
        """The time limit of a whole request (seconds) the client was built with (hvac_client passes the
        one it gives hvac: hvac has no public accessor for it), or None: bounds the wait for another store's
        login (:meth:`_Refusals.sending`)."""
        return self._timeout

    def set_token(self, token: Secret | None) -> None:
        self._client.token = token.reveal() if token is not None else ""  # sent only as X-Vault-Token

    def lookup_self(self) -> Mapping[str, Any]:
        with _decodable():
            return _shaped(self._client.auth.token.lookup_self(), "data")

    def renew_self(self) -> Mapping[str, Any]:
        with _decodable():
            return _shaped(self._client.auth.token.renew_self(), "auth")

    def check_token(self) -> None:
        # sys/internal/ui/mounts needs no capability, but a token sent with it must be one Vault knows:
        # 200 (the mounts that token may see) or 403.
        with _decodable():
            self._client.adapter.get("/v1/sys/internal/ui/mounts")

    def approle_login(self, mount_path: str, role_id: str, secret_id: Secret) -> Mapping[str, Any]:
        with _decodable():
            answer = self._client.auth.approle.login(
                role_id=role_id, secret_id=secret_id.reveal(), mount_point=mount_path, use_token=False
            )
        return _shaped(answer, "auth")

    def kubernetes_login(self, mount_path: str, role: str, jwt: Secret) -> Mapping[str, Any]:
        with _decodable():
            answer = self._client.auth.kubernetes.login(
                role=role, jwt=jwt.reveal(), use_token=False, mount_point=mount_path
            )
        return _shaped(answer, "auth")

    def read_latest(self, mount: str, path: str) -> Mapping[str, Any]:
        try:
            answer = self._client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=mount, raise_on_deleted_version=True
            )
        except hvac.exceptions.InvalidPath as exc:
            return _deleted_version(exc)
        return _shaped(answer, "data")

    def read_metadata(self, mount: str, path: str) -> Mapping[str, Any]:
        with _decodable():
            return _shaped(self._client.secrets.kv.v2.read_secret_metadata(path=path, mount_point=mount), "data")

    def read_version(self, mount: str, path: str, version: int) -> Mapping[str, Any]:
        try:
            answer = self._client.secrets.kv.v2.read_secret_version(
                path=path, version=version, mount_point=mount, raise_on_deleted_version=True
            )
        except hvac.exceptions.InvalidPath as exc:
            return _deleted_version(exc)
        return _shaped(answer, "data")

    def write_version(self, mount: str, path: str, data: Mapping[str, Any], cas: int) -> Mapping[str, Any]:
        with _decodable():
            answer = self._client.secrets.kv.v2.create_or_update_secret(
                path=path, secret=dict(data), cas=cas, mount_point=mount
            )
        return answer if isinstance(answer, Mapping) else {}  # 204 No Content: not a KV v2 mount

    def write_custom_metadata(self, mount: str, path: str, custom_metadata: Mapping[str, str]) -> None:
        # Not hvac's update_metadata: it always sends delete_version_after="0s", which would
        # reset an operator's setting. A POST with only custom_metadata leaves the rest alone.
        url = hvac.utils.format_url("/v1/{mount}/metadata/{path}", mount=mount, path=path)
        with _decodable():
            self._client.adapter.post(url, json={"custom_metadata": dict(custom_metadata)})

    def patch_custom_metadata(self, mount: str, path: str, custom_metadata: Mapping[str, str]) -> None:
        # hvac has no call for it. Its adapter maps every status it does not know (405 among them) to
        # UnexpectedError, without the status: read the answer here and tell 405 apart.
        url = hvac.utils.format_url("/v1/{mount}/metadata/{path}", mount=mount, path=path)
        with _decodable():
            answer = self._client.adapter.request(
                "patch",
                url,
                json={"custom_metadata": dict(custom_metadata)},
                headers={"Content-Type": "application/merge-patch+json"},
                raise_exception=False,
            )
            status = getattr(answer, "status_code", 200)  # a 200 with a JSON body comes back decoded
            if status < 400:
                return
        # Read as every other answer is (kv2._raise_for_answer): a gateway's "; charset=utf-8" on Vault's
        # own 400 dropped its errors, and the store said "not Vault's answer, check url" instead of them.
        body, errors = error_body(answer)
        if status == 405:
            raise hvac.exceptions.UnsupportedOperation(errors=errors, method="PATCH", url=url, json=body)
        hvac.utils.raise_for_error("PATCH", url, status, answer.text if errors is None else None, errors=errors,
                                   text=answer.text, json=body)

    def read_mount_config(self, mount: str) -> Mapping[str, Any]:
        with _decodable():
            return _shaped(self._client.secrets.kv.v2.read_configuration(mount_point=mount), "data")


def _deleted_version(exc: hvac.exceptions.InvalidPath) -> Mapping[str, Any]:
    """The body of Vault's 404 for a deleted or destroyed version, which carries the version's metadata (and
    ``data.data`` null); ``exc`` raised again for any other 404. Not hvac's raise_on_deleted_version=False: it
    raises for a version destroyed without being deleted first (deletion_time ""), whose 404 carries the
    metadata too."""
    body = exc.json if isinstance(exc.json, Mapping) else {}
    data = body.get("data")
    if isinstance(data, Mapping) and isinstance(data.get("metadata"), Mapping):
        return body
    raise exc
