"""Loads issuer and store adapters by name from entry points (``rotator.issuers``, ``rotator.stores``).

Built-in adapters are registered the same way as third-party ones (pyproject.toml). Classes are
loaded lazily, cached, and checked against the contract.
"""

from __future__ import annotations

import dataclasses
import threading
from importlib.metadata import EntryPoint, entry_points
from typing import Literal

from rotator.contracts import Issuer, Store
from rotator.errors import ConfigError
from rotator.extras import install_hint

__all__ = ["Kind", "available", "force_register", "load", "load_resolved", "target"]

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
    known = _known(kind, name)
    if known is not None:
        return known
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
            hint=install_hint(exc),
        ) from None
    return _remember(kind, name, cls)


def target(kind: Kind, name: str) -> str:
    """The ``module:attribute`` the entry point ``name`` points at (for a policy bundle)."""
    eps = _entry_points(kind)
    if name not in eps:
        raise ConfigError(f"no {kind} adapter named {name!r}", hint="install the distribution that provides it")
    return eps[name].value


def load_resolved(kind: Kind, name: str, value: str) -> type[Issuer] | type[Store]:
    """The adapter ``name`` from an entry-point value resolved earlier (``module:attribute``).

    A policy bundle records the values when it is built, so the Lambda function's cold start
    imports its two adapters without scanning every installed distribution's metadata.
    """
    known = _known(kind, name)
    if known is not None:
        return known
    try:
        cls = EntryPoint(name=name, value=value, group=_GROUPS[kind]).load()
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"{kind} adapter {name!r} ({value}) cannot be imported: {exc}",
            hint="rebuild the policy bundle with the adapters installed (see docs/aws-lambda.md)",
        ) from None
    return _remember(kind, name, cls)


def _known(kind: Kind, name: str) -> type[Issuer] | type[Store] | None:
    with _lock:
        return _forced.get((kind, name)) or _cache.get((kind, name))


def _remember(kind: Kind, name: str, cls: object) -> type[Issuer] | type[Store]:
    _check(kind, name, cls)
    with _lock:
        _cache[(kind, name)] = cls  # type: ignore[assignment]
    # An adapter may clean up what a dead rotator process left (influxctl: private configs that
    # hold a token): every command that loads a policy file loads its adapters here, once.
    remove_leftovers = getattr(cls, "remove_leftovers", None)
    if callable(remove_leftovers):
        remove_leftovers()
    return cls  # type: ignore[return-value]


def force_register(kind: Kind, name: str, cls: type) -> None:
    """Register or replace an adapter without an entry point. For tests only."""
    _check(kind, name, cls)
    with _lock:
        _forced[(kind, name)] = cls


def _check(kind: Kind, name: str, cls: object) -> None:
    missing = [attr for attr in _REQUIRED[kind] if not hasattr(cls, attr)]
    model = getattr(cls, "settings_model", None)
    # A pydantic model (has model_validate) or a dataclass; checked without importing pydantic.
    settings_type = isinstance(model, type) and (hasattr(model, "model_validate") or dataclasses.is_dataclass(model))
    if missing or not settings_type:
        raise TypeError(
            f"{kind} adapter {name!r} ({cls!r}) does not implement the contract: "
            f"missing {missing or ['settings_model (a pydantic model or a dataclass)']}"
        )
