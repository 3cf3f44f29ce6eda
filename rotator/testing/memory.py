"""An issuer and a store that live in memory, for tests of the engine and of code built on it.

Both implement the Protocols of :mod:`rotator.core.contracts` fully, pass the same contract suites as
the built-in adapters (:mod:`rotator.testing.suites`), and take a clock, so that a test moves
time with a :class:`~rotator.core.clock.FakeClock` instead of sleeping. Failures are injected with
``fail_next(operation, error)``: the next call of ``operation`` raises ``error`` (a store's
publish may raise it *after* its write landed, as a lost answer does).

Several adapter instances may share one state (:class:`MemoryTokens`, :class:`MemorySecrets`),
as two processes share a server: build a second adapter on the same state to act as
"another rotator" or as "a person with the backend's own tool".

    issuer = MemoryIssuer(clock=clock)
    store = MemoryStore("a", clock=clock)
    value, token_id = issuer.tokens.create("made by a human")   # a bootstrap token
"""

from __future__ import annotations

import itertools
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from rotator.core.clock import Clock, SystemClock
from rotator.core.contracts import (
    MALFORMED_HINT,
    AdapterContext,
    MintedToken,
    MintRequest,
    StoreState,
    TokenInfo,
    TokenRecord,
)
from rotator.core.errors import ConflictError, MalformedPayload, PermanentError
from rotator.core.secret import Secret

__all__ = [
    "MemoryIssuer",
    "MemoryIssuerSettings",
    "MemorySecrets",
    "MemoryStore",
    "MemoryStoreSettings",
    "MemoryTokens",
]

T = TypeVar("T")
_TOKEN_PREFIX = "memtok-"
_ID_PREFIX = "mem-"


class _Faults:
    """Errors to raise on the next calls of named operations (one entry per call)."""

    def __init__(self, operations: tuple[str, ...]) -> None:
        self._operations = operations
        self._queued: dict[str, list[tuple[BaseException, bool]]] = {}
        self._lock = threading.Lock()

    def add(self, operation: str, error: BaseException, times: int, after: bool) -> None:
        if operation not in self._operations:
            raise ValueError(f"unknown operation {operation!r}; one of {', '.join(self._operations)}")
        with self._lock:
            self._queued.setdefault(operation, []).extend([(error, after)] * times)

    def take(self, operation: str, *, after: bool) -> BaseException | None:
        with self._lock:
            queued = self._queued.get(operation)
            if queued and queued[0][1] == after:
                return queued.pop(0)[0]
        return None

    def call(self, operation: str, fn: Callable[[], T]) -> T:
        before = self.take(operation, after=False)
        if before is not None:
            raise before
        result = fn()
        after = self.take(operation, after=True)
        if after is not None:
            raise after
        return result


# --------------------------------------------------------------------------------------------- issuer


@dataclass
class _Token:
    value: str
    description: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None = None


class MemoryTokens:
    """The token database of a :class:`MemoryIssuer`: what a test inspects and sets up."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self._tokens: dict[str, _Token] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def create(self, description: str, expires_at: datetime | None = None) -> tuple[str, str]:
        """A new active token, as a person or the issuer's own tool makes it: ``(value, token_id)``."""
        with self._lock:
            token_id = f"{_ID_PREFIX}{next(self._ids):04d}"
            value = f"{_TOKEN_PREFIX}{secrets.token_hex(16)}"
            self._tokens[token_id] = _Token(value, description, self.clock.now(), expires_at)
        return value, token_id

    def revoke(self, token_id: str) -> bool:
        """Revoke ``token_id``; False if it was unknown or revoked already (the first time stays)."""
        with self._lock:
            token = self._tokens.get(token_id)
            if token is None or token.revoked_at is not None:
                return False
            token.revoked_at = self.clock.now()
            return True

    def info(self, token_id: str) -> TokenInfo | None:
        with self._lock:
            token = self._tokens.get(token_id)
            return None if token is None else _info(token_id, token)

    def all(self) -> list[TokenInfo]:
        """Every token, revoked ones included, oldest first."""
        with self._lock:
            return [_info(token_id, token) for token_id, token in self._tokens.items()]

    def active(self) -> list[TokenInfo]:
        now = self.clock.now()
        return [t for t in self.all() if t.is_active(now)]

    def id_of(self, value: str) -> str | None:
        with self._lock:
            return next((i for i, t in self._tokens.items() if t.value == value), None)

    def is_active(self, value: str) -> bool:
        token_id = self.id_of(value)
        info = self.info(token_id) if token_id else None
        return info is not None and info.is_active(self.clock.now())


def _info(token_id: str, token: _Token) -> TokenInfo:
    return TokenInfo(token_id, token.description, token.created_at, token.expires_at, token.revoked_at)


@dataclass(frozen=True)
class MemoryIssuerSettings:
    """Settings of ``memory`` issuers built by :meth:`MemoryIssuer.from_config` (a registry test)."""

    #: issuers built with the same name share one :class:`MemoryTokens`
    name: str = "default"
    #: refuse calls whose credential is not an active token of this issuer (as a self-rotating
    #: issuer does); False: ignore the credential (an issuer with a credential of its own)
    check_credential: bool = False


class MemoryIssuer:
    """An :class:`~rotator.core.contracts.Issuer` whose tokens live in a :class:`MemoryTokens`.

    ``verify`` accepts an active token and refuses any other with a PermanentError;
    ``revoke`` of a revoked or unknown id succeeds; ids look like ``mem-0001``, and a
    malformed id is refused with a PermanentError before anything is looked up.

    ``target``: what :meth:`target` answers (contracts.Issuer), None by default (unknown). Two
    issuers on two :class:`MemoryTokens`, each with its own target, act as two clusters; a test
    points a policy from one to the other by setting the attribute (or building the other issuer).
    """

    kind: ClassVar[str] = "memory"
    settings_model: ClassVar[type[Any]] = MemoryIssuerSettings
    call_timeout_seconds: ClassVar[float] = 5.0
    OPERATIONS: ClassVar[tuple[str, ...]] = ("mint", "verify", "revoke", "list_tokens")
    _shared: ClassVar[dict[str, MemoryTokens]] = {}

    def __init__(self, tokens: MemoryTokens | None = None, *, clock: Clock | None = None,
                 check_credential: bool = False, target: str | None = None) -> None:  # fmt: skip
        self.tokens = tokens if tokens is not None else MemoryTokens(clock)
        self.check_credential = check_credential
        #: where this issuer's tokens live (None: it does not say)
        self.target_name = target
        self.calls: list[str] = []
        self._faults = _Faults(self.OPERATIONS)

    @classmethod
    def from_config(cls, settings: Any, ctx: AdapterContext) -> MemoryIssuer:
        if not isinstance(settings, MemoryIssuerSettings):
            raise TypeError(f"{cls.kind} needs MemoryIssuerSettings, got {type(settings).__name__}")
        tokens = cls._shared.setdefault(settings.name, MemoryTokens(ctx.clock))
        return cls(tokens, check_credential=settings.check_credential)

    def __repr__(self) -> str:
        return f"MemoryIssuer(tokens={len(self.tokens.all())})"

    def fail_next(self, operation: str, error: BaseException, times: int = 1, *, after: bool = False) -> None:
        """The next ``times`` calls of ``operation`` raise ``error`` (``after``: once it took effect)."""
        self._faults.add(operation, error, times, after)

    # -- the contract -------------------------------------------------------------------------------

    def target(self) -> str | None:
        """Where the tokens live (``target`` at construction; None: unknown). Not counted in ``calls``:
        it asks no backend."""
        return self.target_name

    def mint(self, request: MintRequest, credential: Secret | None) -> MintedToken:
        self.calls.append("mint")

        def mint() -> MintedToken:
            self._check(credential, "mint")
            value, token_id = self.tokens.create(request.description, request.expires_at)
            return MintedToken(Secret(value), token_id, request.expires_at)

        return self._faults.call("mint", mint)

    def verify(self, token: Secret) -> None:
        self.calls.append("verify")

        def verify() -> None:
            if not self.tokens.is_active(token.reveal()):
                raise PermanentError("memory issuer: the token is unknown, revoked or expired",
                                     hint="mint a new token; this one will never work")  # fmt: skip

        self._faults.call("verify", verify)

    def revoke(self, token_id: str, credential: Secret | None) -> None:
        self.calls.append("revoke")
        _check_id(token_id)

        def revoke() -> None:
            self._check(credential, "revoke")
            self.tokens.revoke(token_id)

        self._faults.call("revoke", revoke)

    def list_tokens(self, credential: Secret | None) -> list[TokenInfo]:
        self.calls.append("list_tokens")

        def list_tokens() -> list[TokenInfo]:
            self._check(credential, "list")
            return self.tokens.all()

        return self._faults.call("list_tokens", list_tokens)

    def _check(self, credential: Secret | None, what: str) -> None:
        if self.check_credential and (credential is None or not self.tokens.is_active(credential.reveal())):
            raise PermanentError(f"memory issuer: {what} refused: the credential is not an active token",
                                 hint="bootstrap the stores with a working token")  # fmt: skip


def _check_id(token_id: str) -> None:
    if not (isinstance(token_id, str) and token_id.startswith(_ID_PREFIX) and token_id[len(_ID_PREFIX):].isdigit()):
        raise PermanentError(f"memory issuer: {token_id!r} is not a token id (mem-<digits>)",
                             hint="a token id comes from rotator's journal or the issuer's listing")  # fmt: skip


# --------------------------------------------------------------------------------------------- store


@dataclass
class _Version:
    payload: dict[str, Any] | str
    managed: bool


@dataclass
class MemorySecrets:
    """The secrets of :class:`MemoryStore` adapters, by location; each has numbered versions."""

    secrets: dict[str, list[_Version]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __repr__(self) -> str:
        return f"MemorySecrets({sorted(self.secrets)})"


@dataclass(frozen=True)
class MemoryStoreSettings:
    """Settings of ``memory`` stores built by :meth:`MemoryStore.from_config`."""

    path: str = "default"
    #: stores built with the same space share one :class:`MemorySecrets`
    space: str = "default"


class MemoryStore:
    """A :class:`~rotator.core.contracts.Store` keeping numbered versions of one secret in memory.

    Versions are ``"1"``, ``"2"`` ...; ``publish`` is compare-and-set against the current
    version and marks the secret managed; publishing the current record again returns its
    version (a retried publish whose answer was lost). :meth:`write_foreign` writes as someone
    else would, without the managed marker.
    """

    kind: ClassVar[str] = "memory"
    settings_model: ClassVar[type[Any]] = MemoryStoreSettings
    OPERATIONS: ClassVar[tuple[str, ...]] = ("read_current", "publish")
    _shared: ClassVar[dict[str, MemorySecrets]] = {}

    def __init__(self, path: str = "default", secrets: MemorySecrets | None = None) -> None:
        self.path = path
        self.backend = secrets if secrets is not None else MemorySecrets()
        self.calls: list[str] = []
        self._faults = _Faults(self.OPERATIONS)

    @classmethod
    def from_config(cls, settings: Any, ctx: AdapterContext) -> MemoryStore:
        if not isinstance(settings, MemoryStoreSettings):
            raise TypeError(f"{cls.kind} needs MemoryStoreSettings, got {type(settings).__name__}")
        return cls(settings.path, cls._shared.setdefault(settings.space, MemorySecrets()))

    def __repr__(self) -> str:
        return f"MemoryStore({self.location!r})"

    @property
    def location(self) -> str:
        return f"memory:{self.path}"

    def fail_next(self, operation: str, error: BaseException, times: int = 1, *, after: bool = False) -> None:
        """The next ``times`` calls of ``operation`` raise ``error``; ``after``: once the write landed."""
        self._faults.add(operation, error, times, after)

    def write_foreign(self, payload: dict[str, Any] | str) -> str:
        """Write a new version as someone else would (no managed marker); returns its version."""
        with self.backend.lock:
            versions = self.backend.secrets.setdefault(self.path, [])
            versions.append(_Version(payload, managed=False))
            return str(len(versions))

    def versions(self) -> int:
        with self.backend.lock:
            return len(self.backend.secrets.get(self.path, []))

    # -- the contract -------------------------------------------------------------------------------

    def read_current(self) -> StoreState:
        self.calls.append("read_current")
        return self._faults.call("read_current", self._read)

    def publish(self, record: TokenRecord, expected_version: str | None) -> str:
        self.calls.append("publish")
        return self._faults.call("publish", lambda: self._publish(record, expected_version))

    def _read(self) -> StoreState:
        with self.backend.lock:
            versions = self.backend.secrets.get(self.path)
            if not versions:
                return StoreState(None, False, None)
            current = versions[-1]
            version = str(len(versions))
        record = None
        try:
            if isinstance(current.payload, dict) and "token_id" in current.payload:
                record = TokenRecord.from_payload(current.payload, f"{self.location} version {version}")
            elif current.managed:
                raise MalformedPayload(f"{self.location} version {version}: payload is not a rotator token record",
                                       hint=MALFORMED_HINT)  # fmt: skip
        except MalformedPayload as exc:
            exc.state = StoreState(version, current.managed, None)
            raise
        return StoreState(version, current.managed, record)

    def _publish(self, record: TokenRecord, expected_version: str | None) -> str:
        payload = record.payload()
        with self.backend.lock:
            versions = self.backend.secrets.setdefault(self.path, [])
            current = str(len(versions)) if versions else None
            if versions and versions[-1].managed and versions[-1].payload == payload:
                return str(len(versions))  # already there: a retry whose first answer was lost
            if current != expected_version:
                raise ConflictError(
                    f"{self.location}: compare-and-set lost: expected version {expected_version or 'none'}, "
                    f"the secret is at version {current or 'none'}",
                    hint="someone else wrote the secret; `rotator recover` re-reads it and decides",
                )
            versions.append(_Version(payload, managed=True))
            return str(len(versions))

