"""Loads issuer and store adapters by name from entry points (``rotator.issuers``, ``rotator.stores``),
and builds a policy's adapters from them.

Built-in adapters are registered the same way as third-party ones (pyproject.toml). Classes are
loaded lazily, cached, and checked against the contract. :func:`build_issuer` and
:func:`build_stores` are the one way the engine, the CLI, the daemon and the Lambda function get a
policy's adapters: each adapter's ``from_config`` receives the settings its ``settings_model``
validated and an :class:`~rotator.core.contracts.AdapterContext` (the caller's clock included).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, cast, overload

from rotator.core.contracts import AdapterContext, Issuer, Store
from rotator.core.errors import ConfigError

if TYPE_CHECKING:
    from rotator.config.policy_types import Policy

__all__ = [
    "MOVED_MODULES",
    "Kind",
    "available",
    "build_issuer",
    "build_stores",
    "current_target",
    "force_register",
    "lazy_sdk",
    "load",
    "load_resolved",
    "one_scan",
    "target",
]

Kind = Literal["issuer", "store"]
_GROUPS: dict[Kind, str] = {"issuer": "rotator.issuers", "store": "rotator.stores"}
_REQUIRED: dict[Kind, tuple[str, ...]] = {
    "issuer": ("mint", "verify", "revoke", "list_tokens", "from_config"),
    "store": ("read_current", "publish", "from_config"),
}
#: The built-in adapters' modules before the layout by role (issue 14): the top-level ``adapters``
#: package. A policy bundle built by an older rotator records these; they load for one release.
MOVED_MODULES: dict[str, str] = {
    "adapters.influxctl_management": "rotator.adapters.influxctl.management",
    "adapters.influxctl_database": "rotator.adapters.influxctl.database",
    "adapters.influxctl_profile": "rotator.adapters.influxctl.profile",
    "adapters.management_api": "rotator.adapters.http.management_api",
    "adapters.influxdb3": "rotator.adapters.http.influxdb3",
    "adapters.influxdb2": "rotator.adapters.http.influxdb2",
    "adapters.vault_kv2": "rotator.adapters.vault.kv2",
    "adapters.aws_secretsmanager": "rotator.adapters.aws.secretsmanager",
}
_lock = threading.Lock()
_cache: dict[tuple[Kind, str], type] = {}
_forced: dict[tuple[Kind, str], type] = {}


#: per thread, inside :func:`one_scan`: each kind's entry points (or the error of reading them)
_scan = threading.local()


@contextmanager
def one_scan() -> Iterator[None]:
    """Inside this block, the installed distributions' entry points are read once for both kinds.

    Reading them walks every distribution's metadata (hundreds in a typical environment); loading a
    policy file used to do it once for its first issuer type and again for its first store type.
    Outside the block (and after it) every lookup reads them afresh, as before, so a long-running
    process sees adapters installed since its last policy file load.
    """
    outer = getattr(_scan, "found", None)
    if outer is None:
        _scan.found = {}
    try:
        yield
    finally:
        if outer is None:
            _scan.found = None


def _entry_points(kind: Kind) -> dict[str, EntryPoint]:
    memo: dict[Kind, dict[str, EntryPoint] | ConfigError] | None = getattr(_scan, "found", None)
    if memo is None:
        return _named(kind, entry_points(group=_GROUPS[kind]))
    if not memo:
        everything = entry_points()
        for k, group in _GROUPS.items():
            try:
                memo[k] = _named(k, everything.select(group=group))
            except ConfigError as exc:  # raised when that kind is asked for, as without the block
                memo[k] = exc
    found = memo[kind]
    if isinstance(found, ConfigError):
        raise ConfigError(str(found), hint=found.hint)
    return found


def _named(kind: Kind, eps: Iterable[EntryPoint]) -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in eps:
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


@overload
def load(kind: Literal["issuer"], name: str) -> type[Issuer]: ...
@overload
def load(kind: Literal["store"], name: str) -> type[Store]: ...
@overload
def load(kind: Kind, name: str) -> type[Issuer] | type[Store]: ...


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
        from rotator.config.extras import install_hint  # only this failure needs it: off the cold path

        raise ConfigError(
            f"{kind} adapter {name!r} cannot be imported: {exc}",
            hint=install_hint(exc),
        ) from None
    except AttributeError as exc:  # the entry point names an attribute its module does not have
        raise ConfigError(
            f"{kind} adapter {name!r} ({eps[name].value}) cannot be loaded: {exc}",
            hint=_BROKEN_ADAPTER,
        ) from None
    return _remember(kind, name, cls)


#: The fix of an installed adapter that breaks the contract: nothing in the policy file can mend it.
_BROKEN_ADAPTER = ("the package that registers it is broken or made for another rotator version: upgrade or "
                   "uninstall it (`pip show` names it), or use another adapter type")


def target(kind: Kind, name: str) -> str:
    """The ``module:attribute`` the entry point ``name`` points at (for a policy bundle)."""
    eps = _entry_points(kind)
    if name not in eps:
        raise ConfigError(f"no {kind} adapter named {name!r}", hint="install the distribution that provides it")
    return eps[name].value


def current_target(value: str) -> str:
    """``value`` (``module:attribute``) with a built-in adapter's old module replaced by its new one."""
    module, sep, attribute = value.partition(":")
    return f"{MOVED_MODULES.get(module.strip(), module)}{sep}{attribute}"


@overload
def load_resolved(kind: Literal["issuer"], name: str, value: str) -> type[Issuer]: ...
@overload
def load_resolved(kind: Literal["store"], name: str, value: str) -> type[Store]: ...
@overload
def load_resolved(kind: Kind, name: str, value: str) -> type[Issuer] | type[Store]: ...


def load_resolved(kind: Kind, name: str, value: str) -> type[Issuer] | type[Store]:
    """The adapter ``name`` from an entry-point value resolved earlier (``module:attribute``).

    A policy bundle records the values when it is built, so the Lambda function's cold start
    imports its two adapters without scanning every installed distribution's metadata. A value
    naming a built-in adapter's old module (:data:`MOVED_MODULES`) loads the adapter from its new one.
    """
    known = _known(kind, name)
    if known is not None:
        return known
    value = current_target(value)
    try:
        cls = EntryPoint(name=name, value=value, group=_GROUPS[kind]).load()
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"{kind} adapter {name!r} ({value}) cannot be imported: {exc}",
            hint="rebuild the policy bundle with the adapters installed (see docs/aws-lambda.md)",
        ) from None
    return _remember(kind, name, cls)


def _known(kind: Kind, name: str) -> type[Issuer] | type[Store] | None:
    # No lock: a dict lookup is atomic, and the loader asks twice per policy.
    return _forced.get((kind, name)) or _cache.get((kind, name))


def _remember(kind: Kind, name: str, found: object) -> type[Issuer] | type[Store]:
    try:
        _check(kind, name, found)
    except TypeError as exc:  # an installed adapter's fault, said as a problem of the file that names it
        raise ConfigError(str(exc), hint=_BROKEN_ADAPTER) from None
    # _check made sure it is a class with the contract's attributes (the Protocols' methods are
    # checked statically, for built-in adapters by the conformance line in each adapter module).
    cls = cast("type[Issuer] | type[Store]", found)
    with _lock:
        _cache[(kind, name)] = cls
    # An adapter may clean up what a dead rotator process left (influxctl: private configs that
    # hold a token): every command that loads a policy file loads its adapters here, once.
    remove_leftovers = getattr(cls, "remove_leftovers", None)
    if callable(remove_leftovers):
        remove_leftovers()
    return cls


def build_issuer(policy: Policy, ctx: AdapterContext | None = None) -> Issuer:
    """The policy's issuer, built from its validated settings; nothing is contacted yet.

    ``ctx`` defaults to :meth:`Policy.context` (the system clock); the engine passes its own clock.
    """
    cls = load("issuer", policy.issuer_type)
    return cls.from_config(policy.issuer_settings, ctx if ctx is not None else policy.context())


def build_stores(policy: Policy, ctx: AdapterContext | None = None) -> list[tuple[str, Store]]:
    """The policy's stores as ``(name, store)`` in the policy's order; nothing is contacted yet."""
    ctx = ctx if ctx is not None else policy.context()
    return [(b.name, load("store", b.type).from_config(b.settings, ctx)) for b in policy.stores]


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


class _LazySDK:
    """A vendor SDK module that is imported when an attribute of it is first used."""

    __slots__ = ("_module", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        try:
            return getattr(module, attr)
        except AttributeError:  # a submodule its package does not import itself (hvac.utils)?
            if importlib.util.find_spec(f"{self._name}.{attr}") is None:
                raise
            return importlib.import_module(f"{self._name}.{attr}")

    def __repr__(self) -> str:
        return f"<SDK {self._name} ({'imported' if self._module is not None else 'not imported yet'})>"


def lazy_sdk(name: str) -> Any:
    """The top-level SDK module ``name`` (``hvac``, ``botocore``, ``httpx``), imported on first use.

    An adapter module binds its SDK with it, so that loading a policy file (``rotator validate``,
    ``rotator status``), which needs only the adapters' settings models, imports no SDK. Use it
    only inside functions (``except hvac.exceptions.Forbidden``, ``hvac.Client(...)``), never at
    module level, or the import happens there. A missing SDK is still refused at once
    (ModuleNotFoundError, which :func:`load` turns into "install rotator[<extra>]"); mypy sees the
    real module through an ``if TYPE_CHECKING: import <name>`` beside it.
    """
    if importlib.util.find_spec(name) is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    return _LazySDK(name)
