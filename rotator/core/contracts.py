"""The contracts between the engine and its adapters.

An *issuer* mints, verifies and revokes tokens; a *store* publishes the current token for its
consumers. Adapters implement these Protocols and are registered as entry points
(``rotator.issuers``, ``rotator.stores``); see docs/adapters.md.

Error semantics for every method: raise :class:`~rotator.core.errors.TransientError` for anything
worth retrying (timeouts, 5xx, throttling, a token that is not active yet) and
:class:`~rotator.core.errors.PermanentError` (or a subclass) otherwise. Never put a token value in
an exception message.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Protocol, TypeVar, runtime_checkable

from rotator.config.timefmt import parse_rfc3339, rfc3339
from rotator.core.clock import SYSTEM_CLOCK, Clock
from rotator.core.secret import Secret, value_sha256

__all__ = [
    "DEFAULT_CALL_TIMEOUT_S",
    "MAX_TOKEN_ID",
    "NO_CURRENT_TOKEN_FIX",
    "AdapterContext",
    "Issuer",
    "MintRequest",
    "MintedToken",
    "Store",
    "StoreState",
    "TokenInfo",
    "TokenRecord",
    "call_timeout_of",
    "checked_settings",
    "side_effect_start_deadline",
    "target_of",
    "dedicated_target",
    "target_host_port",
    "target_id",
    "token_id_problem",
]


# The data types are NamedTuples: immutable records compared by value, like frozen dataclasses,
# but created ~8 times faster (~0.07 ms against ~0.5 ms each on CPython 3.11), which the AWS
# Lambda function's cold start, importing them all, measures (bench/lambda_cold_import.py).


class AdapterContext(NamedTuple):
    """What the core hands an adapter factory besides its settings."""

    policy: str
    #: Directory of the policy file; relative paths in settings are resolved against it.
    base_dir: Path = Path(".")
    #: The system clock unless a test gives a FakeClock (SystemClock holds no state to share).
    clock: Clock = SYSTEM_CLOCK


_SettingsT = TypeVar("_SettingsT")


def checked_settings(adapter: type, settings: object, model: type[_SettingsT]) -> _SettingsT:
    """``settings`` if it is an instance of ``model`` (the adapter's ``settings_model``).

    Every ``from_config`` starts with it: the registry hands an adapter the settings its own model
    validated, so anything else is a programming error (a test or a caller building adapters by
    hand), reported as a TypeError naming the adapter, the model and what came instead.
    """
    if not isinstance(settings, model):
        kind = getattr(adapter, "kind", adapter.__name__)
        raise TypeError(f"{kind} needs {model.__name__}, got {type(settings).__name__}")
    return settings


class MintRequest(NamedTuple):
    """What an issuer is asked to mint."""

    policy: str
    run_id: str
    #: Carries the tag ``rotator:<policy>:<run-id>`` so a token whose value was lost is findable.
    description: str
    expires_at: datetime


class MintedToken(NamedTuple):
    """What an issuer minted: the value, its id, and the expiry it set (if it says)."""

    value: Secret
    token_id: str
    expires_at: datetime | None


class TokenInfo(NamedTuple):
    """What an issuer says about a token, never its value."""

    token_id: str
    description: str
    created_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    #: the first characters of the token's value, where the issuer's listing shows them (influxctl's
    #: ``token_prefix``, which it prints in its own tables)
    value_prefix: str | None = None
    #: the SHA-256 of the token's value, where the listing shows the value (InfluxDB v2 OSS without
    #: hashed tokens): the value itself is never kept
    value_sha256: str | None = None
    #: set where the issuer's lookup by id (``token_info``) found the token outside the scope its
    #: settings name: whose it is, in words, e.g. InfluxDB v2's "organization X, not org_id Y". Such
    #: a token exists (a pending revocation of it is not done: the revocation rule judges it as any
    #: token), but it is not one to bootstrap into this policy. None: the issuer's own, or it cannot tell.
    foreign: str | None = None

    def is_active(self, now: datetime) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > now

    def value_matches(self, value: Secret) -> bool | None:
        """Whether ``value`` is this token's, by what the listing shows of its value; None when it
        shows nothing of it (most issuers: a token's value is shown once, at its creation)."""
        if self.value_sha256 is not None:
            return value_sha256(value) == self.value_sha256
        if self.value_prefix:
            return value.reveal().startswith(self.value_prefix)
        return None


@runtime_checkable
class Issuer(Protocol):
    """Where tokens are minted and revoked.

    ``credential`` is the token currently published in the policy's stores. An issuer that
    authenticates with it (self-rotation) uses it; one with its own credential ignores it.

    Optional (not part of the structural check, read with :func:`call_timeout_of`):
    ``call_timeout_seconds: float``, the longest one call (``mint``, ``revoke`` ...) may take,
    child processes included. Recovery waits that long after a dead run's last mint started
    before it decides that no token with the run's tag can still appear.
    ``listing_is_complete: bool`` (true when absent): false where ``list_tokens`` may leave out
    tokens that exist (InfluxDB v2 lists only the authorizations of users the credential may
    read). Such an issuer has ``token_info(token_id, credential) -> TokenInfo | None``, one token
    looked up by id (None: the issuer has no such token; an error: it cannot tell), which
    :func:`with_unlisted` asks about a token the revocation rule must judge.
    ``mints_expiring: bool`` (true when absent): false where the issuer's tokens never expire by
    themselves (InfluxDB v2 authorizations have no expiry: ``mint`` returns ``expires_at=None``), so
    that a rotation later than the policy's lifetime leaves a working token (the Lambda's schedule check).
    ``target() -> str | None`` (read with :func:`target_of`): a short, stable text naming where this
    issuer's tokens live, e.g. ``clustered cluster-a.example.com:443`` or ``dedicated <account>/<cluster>``
    (:func:`target_host_port` spells a host the same way everywhere). The journal keeps it with each run,
    and the engine never revokes, searches for or finds gone a token at an issuer whose target differs
    from the one its run recorded: a token of another cluster is not listed here, and "not listed" would
    read as "revoked". It changes only when the settings name another place (cosmetic edits keep it: a
    host's case, a trailing dot, an explicit default port, an IP address's or a Unicode name's other
    spelling, a UUID's); None: unknown, and the token is judged wherever the
    issuer points. An error (e.g. a file it reads is gone) is raised as any issuer error.

    The start of a side effect (``mint``, ``revoke``) is bounded: the engine confirms its lease
    just before the call, and another rotator may take the lease over while this process is
    paused after that check. So what creates or revokes must begin before
    :func:`side_effect_start_deadline`, or not at all (a TransientError: the engine checks its
    lease again before a retry). A child process gets that from
    :func:`rotator.core.child_process.die_with_parent`; an in-process request must check it
    itself, just before it is written (the HTTP issuers: ``rotator.adapters.http.common.send``).
    Reads made inside the call (a listing after a create) are not bounded: inside
    :func:`rotator.core.child_process.reading` the deadline is None.
    """

    #: The entry-point name, e.g. ``influxctl-management``.
    kind: ClassVar[str]
    #: A pydantic model or a standard-library dataclass; see rotator/config/adapter_settings.py.
    settings_model: ClassVar[type[Any]]

    @classmethod
    def from_config(cls, settings: Any, ctx: AdapterContext) -> Issuer:
        """Build the adapter from its validated settings (an instance of ``settings_model``)."""
        ...

    def mint(self, request: MintRequest, credential: Secret | None) -> MintedToken:
        """Create a token with ``request.description`` and ``request.expires_at``.

        Raises IssuerOutputError if the token or its id cannot be read safely from the answer.
        """
        ...

    def verify(self, token: Secret) -> None:
        """Use ``token`` against the issuer; TransientError while it is not active yet."""
        ...

    def revoke(self, token_id: str, credential: Secret | None) -> None:
        """Revoke ``token_id`` and confirm it; revoking a revoked or unknown token is not an error."""
        ...

    def list_tokens(self, credential: Secret | None) -> list[TokenInfo]:
        """Every token the issuer knows, revoked ones included."""
        ...


def read_for_reading(store: Store, log: logging.Logger) -> StoreState:
    """``store.read_current()`` for a caller that only reads (``rotator sync``'s source, the
    inventory's credential): a store that refuses writes for now but read its current value
    (errors.WriteBlocked with a ``state``, e.g. AWS during another rotator's rotation) gives that
    value, with a warning."""
    from rotator.core.errors import WriteBlocked

    try:
        return store.read_current()
    except WriteBlocked as exc:
        if not isinstance(exc.state, StoreState):
            raise
        log.warning("%s; only reading, so its current value is used all the same", exc)
        return exc.state


def side_effect_start_deadline() -> float | None:
    """The ``time.monotonic()`` after which the side effect under way must not begin (None: no bound,
    outside a side effect or inside :func:`rotator.core.child_process.reading`). See :class:`Issuer`."""
    # The same bound the engine gives influxctl's children (Engine._fenced_call), read where it is kept.
    from rotator.core.child_process import start_deadline

    return start_deadline()


def with_unlisted(issuer: object, tokens: list[TokenInfo], token_id: str, credential: Secret | None) -> list[TokenInfo]:
    """``tokens`` (the issuer's listing), plus what the issuer says of ``token_id`` when the listing
    may leave tokens out and does not show it (:class:`Issuer`'s ``listing_is_complete``): "not
    listed" proves nothing there, and the revocation rule needs the token's description to judge."""
    if getattr(issuer, "listing_is_complete", True) is not False or any(t.token_id == token_id for t in tokens):
        return tokens
    info = issuer.token_info(token_id, credential)  # type: ignore[attr-defined]
    return tokens if info is None else [*tokens, info]


def target_of(issuer: object) -> str | None:
    """The issuer's (or store's) ``target()`` (see :class:`Issuer`, :class:`Store`), stripped; None when
    it has none or says none.

    Errors of the adapter's own pass through; a method that answers something other than text is a
    programming error of the adapter, reported as a TypeError naming it."""
    method = getattr(issuer, "target", None)
    if method is None:
        return None
    value = method()
    if value is None:
        return None
    if not isinstance(value, str):
        kind = getattr(issuer, "kind", type(issuer).__name__)
        raise TypeError(f"{kind}: target() returned {type(value).__name__}, not text or None")
    return value.strip() or None


# The spelling of a target (target_host_port, target_id) is part of the journal's format: each run
# records its issuer's target as text (runs.issuer_target) and later targets are compared with it as
# text. Changing how a place is spelled makes the runs recorded before compare unequal to the same,
# unchanged settings: their revocations and recoveries would then need attention. Change it only
# together with a journal migration that rewrites the recorded targets.

#: the full stops IDNA reads as label separators (RFC 3490 3.1), as httpx's idna does: one name
_IDNA_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


def target_host_port(host: str, port: int | None, default_port: int = 443) -> str:
    """``host:port`` as every issuer's :meth:`Issuer.target` spells it: a name in lower case without a
    trailing dot and in its ASCII (punycode) form, an IP address in its shortest form (IPv6 in
    brackets), and the port always written (``default_port`` when None), so that
    ``Cluster-A.example.com`` and ``cluster-a.example.com:443``, ``bücher.example`` and
    ``xn--bcher-kva.example``, ``[2001:db8:0:0:0:0:0:1]`` and ``[2001:db8::1]`` each name one place."""
    name = host.strip().strip("[]").translate(_IDNA_DOTS).rstrip(".").lower()
    address = _ip_address(name)
    if address is not None:
        name = f"[{address}]" if ":" in address else address
    elif not name.isascii():
        name = _ascii_name(name)
    return f"{name}:{port if port is not None else default_port}"


def _ip_address(name: str) -> str | None:
    """``name``'s shortest spelling if it is an IP address, else None."""
    import ipaddress  # here, not at the top: the Lambda function's cold start imports this module

    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # Python 3.13 writes ::ffff:192.0.2.1, older ones ::ffff:c000:201: one spelling whatever runs rotator
        return f"::ffff:{address.ipv4_mapped}" + (f"%{address.scope_id}" if address.scope_id else "")
    return address.compressed


def _ascii_name(name: str) -> str:
    """A lower-case host name in the form httpx sends (IDNA 2008: each label that is not ASCII as
    ``xn--`` and its punycode, without IDNA 2003's mapping of e.g. ``ß`` to ``ss``), so that an influxctl
    profile's ``bücher.example`` and a URL's ``xn--bcher-kva.example`` name one place. Written with the
    standard library: the core needs no IDNA package, and the spelling must not depend on one."""
    import unicodedata

    labels = []
    for label in name.split("."):
        if label.isascii():
            labels.append(label)
            continue
        try:
            labels.append("xn--" + unicodedata.normalize("NFC", label).encode("punycode").decode("ascii"))
        except UnicodeError:  # not expected of punycode; the name as written is still one spelling
            return name
    return ".".join(labels)


def target_id(text: str) -> str:
    """An id as targets spell it (e.g. a Dedicated account or cluster): a UUID in its canonical form
    (lower case with hyphens, however it was written: without hyphens, in capitals, in braces), other
    text stripped and in lower case."""
    import uuid

    text = text.strip()
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return text.lower()


def dedicated_target(account_id: str | None, cluster_id: str | None) -> str:
    """The target of a Cloud Dedicated cluster, ``dedicated <account_id>/<cluster_id>``, as the influxctl
    issuers and the management-api issuer spell it (:func:`target_id`)."""
    return f"dedicated {target_id(account_id or '')}/{target_id(cluster_id or '')}"


#: What :func:`call_timeout_of` assumes for an issuer that does not say (seconds).
DEFAULT_CALL_TIMEOUT_S = 300.0


def call_timeout_of(issuer: object) -> float:
    """The issuer's ``call_timeout_seconds`` (see :class:`Issuer`), or a safe default."""
    value = getattr(issuer, "call_timeout_seconds", None)
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < float("inf"):
        return float(value)
    return DEFAULT_CALL_TIMEOUT_S


#: what to do about a managed secret whose payload rotator cannot read (errors.MalformedPayload)
MALFORMED_HINT = (
    "write a working token over it with "
    "`rotator bootstrap POLICY --replace --reason TEXT --token-file FILE --token-id ID` "
    "(docs/operations.md), or restore the secret's last good version in the store"
)


class TokenRecord(NamedTuple):
    """One published token: the value and what a consumer or auditor needs to know of it."""

    value: Secret
    token_id: str
    issuer: str
    policy: str
    created_at: datetime
    expires_at: datetime | None

    def payload(self) -> dict[str, Any]:
        """The JSON payload every store writes (the only place the value is revealed for a store)."""
        return {
            "token": self.value.reveal(),
            "token_id": self.token_id,
            "issuer": self.issuer,
            "policy": self.policy,
            "created_at": rfc3339(self.created_at),
            "expires_at": rfc3339(self.expires_at) if self.expires_at else None,
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], where: str) -> TokenRecord:
        """Parse a store payload; raises PermanentError naming ``where`` and the bad key."""
        from rotator.core.errors import MalformedPayload

        def bad(key: str, why: str) -> MalformedPayload:
            return MalformedPayload(f"{where}: payload key {key!r} {why}", hint=MALFORMED_HINT)

        if not isinstance(payload, Mapping):
            raise bad("<root>", "is not a JSON object")
        value = payload.get("token")
        if not isinstance(value, str) or not value:
            raise bad("token", "is missing or empty")
        token_id = payload.get("token_id")
        if not isinstance(token_id, str) or not token_id:
            raise bad("token_id", "is missing or empty")
        problem = token_id_problem(token_id)
        if problem is not None:
            raise bad("token_id", problem)
        expires_at = payload.get("expires_at")
        # Missing or null is "never expires", the one form payload() has ever written for it. Any other value
        # that is not text was read as that too (0, false, "", [], {}), so an edit of the store could hide an
        # expired token from sync's warning and the Lambda's expiry check; it is refused now.
        if expires_at is not None and (not isinstance(expires_at, str) or not expires_at):
            raise bad(
                "expires_at",
                f"is {_json_kind(expires_at)}, not an RFC 3339 time: write the expiry as a "
                'string such as "2026-04-02T12:00:00Z", or null if the token never expires',
            )
        try:
            created = _parse_iso(payload.get("created_at"))
            expires = _parse_iso(expires_at)
        except (TypeError, ValueError) as exc:
            raise bad("created_at/expires_at", f"is not an RFC 3339 time ({type(exc).__name__})") from None
        if created is None:
            raise bad("created_at", "is missing")
        return cls(
            value=Secret(value),
            token_id=token_id,
            issuer=_payload_text(payload, "issuer", "the issuer's type (e.g. influxctl-management)", bad),
            policy=_payload_text(payload, "policy", "the policy's name", bad),
            created_at=created,
            expires_at=expires,
        )


def _payload_text(payload: Mapping[str, Any], key: str, what: str, bad: Callable[[str, str], Exception]) -> str:
    """A payload's ``issuer`` or ``policy``: text, or "" where the payload does not name one.

    Missing, null and "" are all "not named", which callers already handle (sync and the profile store
    skip the issuer check, the engine reads the store as holding another policy's token). Anything else
    went through str(): null became the policy named "None", 5 the policy "5". The message never quotes
    the value (a payload with its fields swapped holds the token there)."""
    value = payload.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise bad(key, f"is {_json_kind(value)}, not text: write {what} as a JSON string, or remove the key")
    problem = _control_character_problem(value)
    if problem is not None:
        raise bad(key, f"{problem}; write {what} without it")
    return value


def _json_kind(value: object) -> str:
    """What a JSON value is, in JSON's words, for a message that must not quote the value itself."""
    if isinstance(value, bool):  # before int: bool is an int to Python
        return "a JSON boolean"
    if isinstance(value, int | float):
        return "a JSON number"
    if isinstance(value, str):
        return "an empty string" if not value else "a JSON string"
    if isinstance(value, Mapping):
        return "a JSON object"
    if isinstance(value, list | tuple):
        return "a JSON array"
    return f"a {type(value).__name__}"


def _control_character_problem(text: str) -> str | None:
    """Which control character ``text`` holds and where, without quoting the rest of it, or None."""
    from rotator.core.one_line import one_line

    shown = one_line(text)
    if shown == text:
        return None
    at = next(i for i, (a, b) in enumerate(zip(text, shown, strict=False)) if a != b)
    return f"holds a control character ({one_line(text[at])} at index {at})"


#: the longest token id of any issuer's (a UUID, 16 hex digits, `_admin@<hash>`, an InfluxDB 3 token name
#: of at most 256 characters)
MAX_TOKEN_ID = 256


def token_id_problem(token_id: str) -> str | None:
    """Why ``token_id`` (from a store's payload, or given by a person) is no issuer's token id, or None.

    One that is not would otherwise surface far from where it came in: a NUL refused by PostgreSQL as
    the journal's fault, a newline or escape forging a log line, a token value (the payload's fields
    swapped) shown wherever ids are, unmasked. The text never quotes the id."""
    if len(token_id) > MAX_TOKEN_ID:
        return f"is {len(token_id)} characters long; no issuer's token id is over {MAX_TOKEN_ID}"
    problem = _control_character_problem(token_id)
    if problem is not None:
        return f"{problem}; no issuer's token id does"
    if _influx_token_value().fullmatch(token_id):
        return "has the shape of a token value, not of an id (token and token_id swapped?)"
    return None


def _influx_token_value() -> re.Pattern[str]:
    """A whole InfluxDB token value, the one thing a swapped payload puts in ``token_id``: a management
    token (``M.V1.``), an ``apiv1_``/``apiv3_`` token, a v2 API token (86 base64 characters and ``==``).
    Only those, and only whole: inline_secrets' wider search (Vault's ``s.`` and 20 characters anywhere)
    matched rotator's own InfluxDB 3 token names (``rotator-eu.s.app-<run id>``)."""
    global _INFLUX_TOKEN_VALUE
    if _INFLUX_TOKEN_VALUE is None:  # compiled on first use: the Lambda's cold start imports this module
        _INFLUX_TOKEN_VALUE = re.compile(
            r"M\.V\d+\.[A-Za-z0-9._~+/=-]{20,}|apiv\d_[A-Za-z0-9+/_-]{20,}={0,2}"
            r"|[A-Za-z0-9+/_-]{86}=="
        )
    return _INFLUX_TOKEN_VALUE


_INFLUX_TOKEN_VALUE: re.Pattern[str] | None = None


#: The first fix an issuer that authenticates with the stores' current token (``self``) names when the engine
#: passes none: a store's current version deleted by hand or by Vault's delete_version_after reads as no token,
#: though one is published and still valid (a bootstrap would replace it needlessly)
NO_CURRENT_TOKEN_FIX = (
    "if `rotator status POLICY` names a current token, a store's current version was deleted (Vault: `vault kv "
    "delete`, or delete_version_after): undelete it (`vault kv undelete -versions=N -mount=MOUNT PATH`; the token "
    "is still valid) and run the same command again (a destroyed version cannot be undeleted: then bootstrap)"
)


class StoreState(NamedTuple):
    """What a store holds now.

    ``version`` is the store's version id used for compare-and-set (``None``: the secret does not
    exist yet). ``record`` is ``None`` when the secret is absent or holds no rotator payload.
    ``marker_policy``: the policy the secret's own managed-by marker names (Vault's custom_metadata
    ``policy``, the AWS tag ``policy``), None where there is no such marker or the store keeps
    none. It outlives the current version's payload (a deleted current version, a secret with no
    AWSCURRENT), so it is what still says whose secret it is when ``record`` is None.
    """

    version: str | None
    managed: bool
    record: TokenRecord | None
    marker_policy: str | None = None

    @property
    def token_id(self) -> str | None:
        return self.record.token_id if self.record else None


@runtime_checkable
class Store(Protocol):
    """Where the current token is published for consumers.

    Optional (not part of the structural check, read with :func:`target_of`): ``target() -> str | None``,
    for a store whose consumers send the token to a place of their own: where they send it, spelled as
    the issuers' :meth:`Issuer.target` spell it (e.g. an influxctl profile's ``mgmt_token`` goes to the
    cluster the profile names: ``clustered <host>:<port>``). The engine compares it with the issuer's
    target in PLAN, as it read the store there (answer from what ``read_current`` read last, not from a
    second read), and refuses the run before it mints when both are known and differ (a ConfigError:
    the token would go to another cluster, where it authenticates nothing and is exposed). None: no
    such place, or not known yet (nothing compared). An error is raised as ``read_current``'s are.
    """

    kind: ClassVar[str]
    #: A pydantic model or a standard-library dataclass; see rotator/config/adapter_settings.py.
    settings_model: ClassVar[type[Any]]

    @classmethod
    def from_config(cls, settings: Any, ctx: AdapterContext) -> Store:
        """Build the adapter from its validated settings (an instance of ``settings_model``)."""
        ...

    @property
    def location(self) -> str:
        """A human-readable address of the secret (no credentials), for messages and status."""
        ...

    def read_current(self) -> StoreState:
        """Read the current version. PermanentError if a managed payload is malformed."""
        ...

    def publish(self, record: TokenRecord, expected_version: str | None) -> str:
        """Write ``record`` as the new current version and mark it managed by rotator.

        Compare-and-set against ``expected_version`` (``None``: the secret must not exist).
        Raises ConflictError when the store changed since. Returns the new version id.
        """
        ...


def _parse_iso(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("not a string")
    return parse_rfc3339(value)
