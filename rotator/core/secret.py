"""A token value that cannot be printed by accident, and the process-wide redactor.

Every token value rotator handles lives in a :class:`Secret`. Its ``str``/``repr`` are
redacted; only :meth:`Secret.reveal` returns the value, and each call site of ``reveal`` is a
place where the value legitimately leaves the process (an issuer call, a store write).
Each Secret also registers its value with :data:`REDACTOR`, which the log handlers use as a
second line of defence for values that reached a message some other way (e.g. an SDK error).

The redactor counts references per value: a value is known while any :class:`Secret` holding it
is alive, or while it is *pinned* (the engine pins a token it published until that token is
revoked, so that output produced after the run ended, such as a post-publish hook's, is still
redacted).

Deadlock-freedom: a ``Secret`` is freed by the garbage collector, which may run inside any
allocation, including one made while the redactor's lock is held by the same thread. So the
finalizer never takes the lock: it only appends the value to a queue (``deque.append`` is atomic),
and ordinary code drains the queue under the lock. :meth:`Redactor.redact` takes no lock (unless
values wait in that queue): it looks values up in an index of their 8-character pieces, whose
entries are immutable tuples replaced under the lock.

Cost (issue 12): a daemon pins a token per policy, so at a thousand policies the redactor knows
thousands of values, and it redacts every audit line and log record. Looking for each known value
in the text cost ~0.1-0.3 ms per line. The index holds the 8-character pieces of each value that
start at its first 8 offsets; any occurrence of a value of 15 characters or more then covers a
multiple of 8 in the text, so looking up the text's pieces at offsets 0, 8, 16... finds it: a few
dict lookups per line, whatever the number of values. Shorter values (8 to 14 characters, rare
for tokens) are indexed by their first 8 characters, looked up at every offset of the text while
there are any.
"""

from __future__ import annotations

import collections
import hashlib
import sys
import threading
import weakref

__all__ = ["REDACTOR", "Redactor", "Secret", "value_sha256"]

REDACTED = "***"


class Redactor:
    """Replaces every known secret value in a text by ``***``."""

    _MIN_LEN = 8  # shorter strings would redact ordinary words
    #: Pinned values kept at most; past this the oldest pin is dropped (a daemon that never
    #: revokes its tokens itself, because another replica does, must not grow without bound).
    MAX_PINS = 1000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        #: key (e.g. a token id) -> value, oldest first
        self._pins: collections.OrderedDict[str, str] = collections.OrderedDict()
        #: values whose Secret was freed; appended by finalizers without any lock
        self._released: collections.deque[str] = collections.deque()
        #: what redact() reads (the module's docstring): an 8-character piece -> the values of 15
        #: characters or more that have it at one of their first 8 offsets; the first 8 characters
        #: of the shorter values -> those values. Changed under the lock, one key at a time; each
        #: entry is an immutable tuple.
        self._index: dict[str, tuple[str, ...]] = {}
        self._short: dict[str, tuple[str, ...]] = {}
        #: no value this redactor ever knew is shorter: a text shorter than this holds none (most log
        #: fields: ids, times, steps; token values are long). Lowered before a value enters the index,
        #: never raised (a lower bound stays true when values are forgotten)
        self._shortest = sys.maxsize

    def add(self, value: str) -> None:
        if len(value) >= self._MIN_LEN:
            with self._lock:
                self._count_locked(value)
                self._drain_locked()

    def release(self, value: str) -> None:
        """Drop one reference to ``value`` later. Safe in a finalizer: takes no lock, never blocks."""
        if len(value) >= self._MIN_LEN:
            self._released.append(value)

    def discard(self, value: str) -> None:
        """Drop one reference to ``value`` now (ordinary code only, never a finalizer)."""
        self.release(value)
        with self._lock:
            self._drain_locked()

    def pin(self, key: str, secret: Secret) -> None:
        """Keep ``secret``'s value known under ``key`` (a published token's id) until :meth:`unpin`,
        even after every :class:`Secret` holding it was freed."""
        value = secret.reveal()
        if len(value) < self._MIN_LEN:
            return
        with self._lock:
            if key in self._pins:
                self._pins.move_to_end(key)
                if self._pins[key] == value:
                    return
                self._released.append(self._pins[key])
            self._pins[key] = value
            self._count_locked(value)
            while len(self._pins) > self.MAX_PINS:
                _, oldest = self._pins.popitem(last=False)
                self._released.append(oldest)
            self._drain_locked()

    def unpin(self, key: str) -> None:
        """Forget the pin ``key`` (its token was revoked); other references to the value stay."""
        with self._lock:
            value = self._pins.pop(key, None)
            if value is not None:
                self._released.append(value)
            self._drain_locked()

    def knows(self, value: str) -> bool:
        with self._lock:
            self._drain_locked()
            return value in self._counts

    @property
    def min_len(self) -> int:
        """The shortest value this redactor knows (shorter ones are never registered)."""
        return self._MIN_LEN

    def redact(self, text: str) -> str:
        if self._released:
            self._drain()
        if len(text) < self._shortest:
            return text
        step = _STEP  # (no lock: each lookup is atomic, and nothing a finalizer can block)
        get, short = self._index.get, self._short
        found = [value for i in range(0, len(text) - step + 1, step) if (values := get(text[i:i + step]))
                 for value in values]
        if short:
            get = short.get
            found += [value for i in range(len(text) - step + 1) if (values := get(text[i:i + step]))
                      for value in values]
        if not found:
            return text
        for value in sorted(set(found), key=len, reverse=True):  # a value containing another one goes first
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def _drain(self) -> None:
        with self._lock:
            self._drain_locked()

    def _pieces(self, value: str) -> tuple[dict[str, tuple[str, ...]], set[str]]:
        """The index that holds ``value``, and its keys there."""
        if len(value) < _INDEXED:
            return self._short, {value[:_STEP]}
        return self._index, {value[i:i + _STEP] for i in range(_STEP)}

    def _count_locked(self, value: str) -> None:
        count = self._counts.get(value, 0)
        self._counts[value] = count + 1
        if count > 0:
            return
        if len(value) < self._shortest:  # before the index has it: redact() then looks for it
            self._shortest = len(value)
        index, pieces = self._pieces(value)
        for piece in pieces:
            index[piece] = (*index.get(piece, ()), value)

    def _drain_locked(self) -> None:
        while True:
            try:
                value = self._released.popleft()
            except IndexError:
                return
            left = self._counts.get(value, 0) - 1
            if left > 0:
                self._counts[value] = left
            elif self._counts.pop(value, None) is not None:
                index, pieces = self._pieces(value)
                for piece in pieces:
                    rest = tuple(v for v in index.get(piece, ()) if v != value)
                    if rest:
                        index[piece] = rest
                    else:
                        index.pop(piece, None)


#: The index's pieces are this long, looked up at every multiple of it in a text; values of
#: _INDEXED characters or more are found that way (module docstring).
_STEP = Redactor._MIN_LEN
_INDEXED = 2 * _STEP - 1

REDACTOR = Redactor()


class Secret:
    """An opaque token value."""

    __slots__ = ("_value", "__weakref__")

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise TypeError("Secret needs a non-empty string")
        self._value = value
        REDACTOR.add(value)
        # release(), not discard(): this runs inside the garbage collector, maybe while this very
        # thread holds the redactor's lock.
        weakref.finalize(self, REDACTOR.release, value)

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


def value_sha256(value: Secret) -> str:
    """The SHA-256 (hex) of a token value: what the journal keeps of a minted one (RunRecord.new_token_sha256),
    what an issuer may show of one (TokenInfo.value_sha256), and how two stored copies are compared without
    showing either. A token is high-entropy, so this tells nothing of it that could be used."""
    return hashlib.sha256(value.reveal().encode("utf-8", "surrogatepass")).hexdigest()
