"""Errors rotator raises, and how the engine reacts to each.

    RotatorError
      + TransientError        retried with backoff (timeouts, 5xx, throttling, not yet active);
      |                       retry_after: the wait a server asked for (Retry-After)
      |   + LeaseBusy         another process holds the policy's lease
      |   + JournalUnavailable the journal timed out or its connection broke (also a JournalError)
      + LeaseLost             this run's lease (fencing number) was taken over: the run stops
      + PermanentError        not retried (auth, bad output, not found, misconfiguration)
      |   + ConfigError       bad policy file or CLI argument (also a LookupError for registry misses)
      |   + OwnershipError    a store holds a secret rotator does not manage
      |   + ConflictError     compare-and-set lost: someone else wrote the store
      |   + IssuerOutputError the issuer answered something we cannot parse safely
      |   + NeedsAttention    going on could break an invariant: a human must decide
      + JournalError          the journal cannot be read or written
          + JournalSchemaNewer a newer rotator upgraded the journal's schema: this process writes it no more

No message may contain a token value: adapters build messages from token ids, commands and
status codes only. :func:`describe` is the one way an error becomes a line of a log, the journal
or an event (the engine's and the daemon's), redacted once more on the way.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rotator.config.timefmt import rfc3339_seconds
from rotator.core.secret import REDACTOR

__all__ = [
    "ConfigError",
    "ConflictError",
    "IssuerOutputError",
    "JournalError",
    "JournalSchemaNewer",
    "JournalUnavailable",
    "LeaseBusy",
    "LeaseLost",
    "NeedsAttention",
    "NotYetAccepted",
    "OwnershipError",
    "PermanentError",
    "RotatorError",
    "TransientError",
    "describe",
]


class RotatorError(Exception):
    """Root of every error rotator raises on purpose."""

    #: What an operator should do about it; shown by the CLI under the message.
    hint: str = ""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        if hint:
            self.hint = hint


class TransientError(RotatorError):
    """May succeed when tried again later.

    ``retry_after``: the seconds the other side asked to wait before the next try (an HTTP
    ``Retry-After``), or None; :func:`rotator.core.retry.call_with_retry` waits at least that long
    (within its own bounds)."""

    retry_after: float | None = None

    def __init__(self, message: str, *, hint: str = "", retry_after: float | None = None) -> None:
        super().__init__(message, hint=hint)
        if retry_after is not None:
            self.retry_after = retry_after


class NotYetAccepted(TransientError):
    """The issuer refused a token when asked to verify it: one minted moments ago may not be active
    yet (retried), but a token a person gives to ``bootstrap`` is not going to become active."""


class LeaseBusy(TransientError):
    """Another rotator holds the lease of this policy; ``expires_at``: when that lease ends unless renewed
    (None when unknown), for the hint."""

    def __init__(self, policy: str, holder: str, expires_at: datetime | None = None) -> None:
        super().__init__(f"policy {policy!r} is being rotated by {holder}", hint=_busy_hint(policy, expires_at))
        self.policy = policy
        self.holder = holder
        self.expires_at = expires_at


def _busy_hint(policy: str, expires_at: datetime | None) -> str:
    # Nothing renews the lease of a process that crashed on another host: until it expires, the one way
    # out is the documented deletion (a holder on this host is taken over at once when its process is gone).
    until = "" if expires_at is None else f" at {_second_after(expires_at)} unless its holder renews it"
    return (f"wait for that run to finish or for its lease to expire{until}; if the holder is a process that died "
            'on another host, see docs/operations.md, "A lease held by a dead process", to delete its lease '
            f"and run `rotator recover {policy}`")


def _second_after(at: datetime) -> str:
    """``at`` in RFC 3339, whole seconds, rounded up: the lease is still live at the second a fraction
    would have been cut to."""
    if at.microsecond:
        at = at.replace(microsecond=0) + timedelta(seconds=1)
    return rfc3339_seconds(at if at.tzinfo is not None else at.replace(tzinfo=UTC))


class LeaseLost(RotatorError):
    """This process no longer holds the policy's lease: another run took over (fencing number moved).

    Neither transient (retrying the same step would act on a run someone else now owns) nor a
    problem to fix: the run stops before its next side effect and writes nothing over the newer
    run's state. The CLI exits 1; the daemon counts a failure.
    """

    def __init__(self, policy: str, fence: int | None, current: int | None, what: str) -> None:
        now = "" if current is None else f"; the policy's lease now has fencing number {current}"
        super().__init__(
            f"policy {policy!r}: this run (lease fencing number {fence}) was overtaken by another rotator "
            f"and stopped before {what}{now}",
            hint="another rotator took the policy over (this process was paused or slow past lease_ttl); "
            "nothing to undo here: `rotator status` shows what the other run did. If this happens without a "
            "pause, check that the hosts' clocks agree (replicas: rotator_clock_offset_seconds), then raise "
            "lease_ttl",
        )
        self.policy = policy
        self.fence = fence
        self.current = current
        self.what = what


class PermanentError(RotatorError):
    """Will fail again until someone changes something."""


class ConfigError(PermanentError, LookupError):
    """A policy file, CLI argument or adapter name is wrong."""


class BadTokenId(PermanentError):
    """A token id that does not have the issuer's id format: nothing was sent to the issuer."""


class OwnershipError(PermanentError):
    """The store holds a secret without rotator's managed-by marker."""


class MalformedPayload(PermanentError):
    """A store holds a rotator-managed secret whose payload is not a token record rotator can read.

    ``state`` (a StoreState with ``record=None``): what the store holds, its version and marker, set by
    the store that read it, so that `rotator bootstrap --replace` can write a valid payload over it
    with compare-and-set; None when the store could not say."""

    state: object | None = None


class WriteBlocked(PermanentError):
    """A store's current value can be read, but the store refuses writes for now (e.g. another
    rotator's unfinished rotation of the same secret). A writer stops; a reader (``rotator sync``,
    the inventory) may use ``state``, the current value as the store read it (a StoreState), or
    None when the store could not read it."""

    state: object | None = None


class ConflictError(PermanentError):
    """A compare-and-set write lost: the store changed since PLAN read it."""


class IssuerOutputError(PermanentError):
    """The issuer printed or returned something that cannot be parsed safely."""


class NeedsAttention(PermanentError):
    """The engine stopped where going on could break an invariant; a human must decide."""


class JournalError(RotatorError):
    """The journal could not be read or written."""


class JournalSchemaNewer(JournalError):
    """A rotator of a newer version upgraded the journal's schema past this code's.

    Not transient: only a process of the newer version can use the journal, so waiting or retrying
    changes nothing (a daemon stops starting work: docs/daemon.md, *Superseded*). A class of its own
    so that callers need not match the message. ``version``: the journal's schema version;
    ``supported``: this code's (journal.SCHEMA_VERSION)."""

    def __init__(self, message: str, *, version: int, supported: int, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.version = version
        self.supported = supported


class JournalUnavailable(JournalError, TransientError):
    """The journal did not answer in time (connect, statement or lock timeout) or its connection broke."""


def describe(exc: BaseException) -> str:
    """``exc`` as one line for logs, the journal and events: its message (or its type's name when
    it has none) and ``(fix: <hint>)`` when it carries a hint, passed through the redactor."""
    text = str(exc) or type(exc).__name__
    hint = getattr(exc, "hint", "")
    if hint:
        text += f" (fix: {hint})"
    return REDACTOR.redact(text)
