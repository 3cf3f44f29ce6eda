"""A token value that cannot be printed by accident, and the process-wide redactor.

Every token value rotator handles lives in a :class:`Secret`. Its ``str``/``repr`` are
redacted; only :meth:`Secret.reveal` returns the value, and each call site of ``reveal`` is a
place where the value legitimately leaves the process (an issuer call, a store write).
Each Secret also registers its value with :data:`REDACTOR`, which the log handlers use as a
second line of defence for values that reached a message some other way (e.g. an SDK error).
"""

from __future__ import annotations

import threading
import weakref

__all__ = ["REDACTOR", "Redactor", "Secret"]

REDACTED = "***"


class Redactor:
    """Replaces every known secret value in a text by ``***``."""

    _MIN_LEN = 8  # shorter strings would redact ordinary words

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()

    def add(self, value: str) -> None:
        if len(value) >= self._MIN_LEN:
            with self._lock:
                self._values.add(value)

    def discard(self, value: str) -> None:
        with self._lock:
            self._values.discard(value)

    def redact(self, text: str) -> str:
        with self._lock:
            values = list(self._values)
        for value in values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text


REDACTOR = Redactor()


class Secret:
    """An opaque token value."""

    __slots__ = ("_value", "__weakref__")

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise TypeError("Secret needs a non-empty string")
        self._value = value
        REDACTOR.add(value)
        weakref.finalize(self, REDACTOR.discard, value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")
