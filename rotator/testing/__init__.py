"""rotator's test kit, shipped for adapter authors (docs/adapters.md, "Run the contract kit").

- :class:`StoreContract`, :class:`IssuerContract`: the contract test suites every store and
  issuer adapter must pass (rotator/testing/suites.py; they need pytest, imported only when
  one of them is first used, so ``import rotator.testing`` works without it);
- :class:`MemoryIssuer`, :class:`MemoryStore` (and their shared states :class:`MemoryTokens`,
  :class:`MemorySecrets`): in-memory adapters that pass the same suites, with failure injection;
- :class:`FakeClock`: a clock that moves only when told to (re-exported from rotator.core.clock).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rotator.core.clock import FakeClock
from rotator.testing.memory import (
    MemoryIssuer,
    MemoryIssuerSettings,
    MemorySecrets,
    MemoryStore,
    MemoryStoreSettings,
    MemoryTokens,
)

if TYPE_CHECKING:
    from rotator.testing.suites import IssuerContract, StoreContract

__all__ = [
    "FakeClock",
    "IssuerContract",
    "MemoryIssuer",
    "MemoryIssuerSettings",
    "MemorySecrets",
    "MemoryStore",
    "MemoryStoreSettings",
    "MemoryTokens",
    "StoreContract",
]


def __getattr__(name: str) -> Any:
    if name in ("IssuerContract", "StoreContract"):
        from rotator.testing import suites  # imports pytest: only a test run asks for these

        return getattr(suites, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
