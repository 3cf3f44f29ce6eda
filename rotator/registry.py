"""Loads issuer and store adapters by name from entry points (``rotator.issuers``, ``rotator.stores``).

Built-in adapters are registered the same way as third-party ones (pyproject.toml). Classes are
loaded lazily, cached, and checked against the contract.
"""

from __future__ import annotations

import threading
from importlib.metadata import EntryPoint, entry_points
from typing import Literal

from pydantic import BaseModel

from rotator.contracts import Issuer, Store
from rotator.errors import ConfigError

__all__ = ["Kind", "available", "force_register", "load"]

Kind = Literal["issuer", "store"]
_GROUPS: dict[Kind, str] = {"issuer": "rotator.issuers", "store": "rotator.stores"}
_REQUIRED: dict[Kind, tuple[str, ...]] = {
    "issuer": ("mint", "verify", "revoke", "list_tokens", "from_config"),
    "store": ("read_current", "publish", "from_config"),
}
_lock = threading.Lock()
_cache: dict[tuple[Kind, str], type] = {}
_forced: dict[tuple[Kind, str], type] = {}


def _entry_points(kind: Kind) -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=_GROUPS[kind]):
        if ep.name in found and found[ep.name].value != ep.value:
            raise ConfigError(
                f"two installed packages register the {kind} adapter {ep.name!r}: "
                f"{found[ep.name].value} and {ep.value}",
                hint="uninstall one of them; rotator will not guess which one you meant",
            )
        found[ep.name] = ep
    return found


def available(kind: Kind) -> list[str]:
    return sorted(set(_entry_points(kind)) | {name for k, name in _forced if k == kind})


def load(kind: Kind, name: str) -> type[Issuer] | type[Store]:
    """The adapter class registered as ``name``; ConfigError (a LookupError) if there is none."""
    key = (kind, name)
    with _lock:
        if key in _forced:
            return _forced[key]
        if key in _cache:
            return _cache[key]
    eps = _entry_points(kind)
    if name not in eps:
        raise ConfigError(
            f"no {kind} adapter named {name!r}",
            hint=f"use one of: {', '.join(available(kind)) or '(none installed)'}; "
            "third-party adapters register under the entry-point group " + _GROUPS[kind],
        )
    try:
        cls = eps[name].load()
    except ImportError as exc:
        raise ConfigError(
            f"{kind} adapter {name!r} cannot be imported: {exc}",
            hint="install the extra it needs, e.g. pip install 'rotator[all]'",
        ) from None
    _check(kind, name, cls)
    with _lock:
        _cache[key] = cls
    return cls  # type: ignore[no-any-return]


def force_register(kind: Kind, name: str, cls: type) -> None:
    """Register or replace an adapter without an entry point. For tests only."""
    _check(kind, name, cls)
    with _lock:
        _forced[(kind, name)] = cls


def _check(kind: Kind, name: str, cls: object) -> None:
    missing = [attr for attr in _REQUIRED[kind] if not hasattr(cls, attr)]
    model = getattr(cls, "settings_model", None)
    if missing or not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(
            f"{kind} adapter {name!r} ({cls!r}) does not implement the contract: "
            f"missing {missing or ['settings_model (a pydantic model)']}"
        )
