"""A policy file compiled for the AWS Lambda function's cold start: ``rotator.bundle.json``.

Validating a policy file takes pydantic and the adapters' settings models, about 100 ms of a
Lambda cold start. ``rotator bundle rotator.toml`` (and deploy/aws/build_zip.py) validate the file
with the full loader once, at build time, and write what came out as JSON next to it:

- every policy with its defaults applied (durations in seconds, the schedule as written);
- each adapter's settings, dumped as JSON; a settings dataclass is decoded back at cold start
  by :func:`decode` (no pydantic), a pydantic settings model is validated again (pydantic is
  then imported: the HTTP issuers' settings are such models);
- the entry-point value (``module:Class``) of each adapter used, so that cold start imports the
  adapters without scanning every installed distribution's metadata;
- the SHA-256 of the policy file it came from.

The writer reads the bundle back and compares it with what the loader built, so a bundle that
would not reproduce the validated policies is never written. At cold start the Lambda function
uses the bundle only if the policy file beside it still has that digest; otherwise it logs why
and validates the policy file itself (slower, never wrong).

The bundle is as trusted as the code it is packaged with: it holds no secrets (a policy file
cannot), and decoding builds only the settings dataclasses the adapters declare.

This module imports no pydantic; :func:`write_bundle` imports the loader when it is called.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import types
import typing
from collections.abc import Mapping
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Union

import rotator
from rotator.config import registry
from rotator.config.policy_types import Policy, StoreBinding, find_policy
from rotator.core.errors import ConfigError
from rotator.core.retry import RetryPolicy

if typing.TYPE_CHECKING:
    from rotator.config.policy import Config

__all__ = [
    "FORMAT", "READABLE_FORMATS", "BundleError", "PolicyBundle", "bundle_path", "decode", "mint_revokes_credential",
    "read_bundle", "refuse_in_lambda", "write_bundle",
]

#: /2: the adapters' targets name rotator.adapters.* (the layout by role, issue 14).
FORMAT = "rotator-policy-bundle/2"
#: Read for one release: the same content, with the built-in adapters' targets in the old top-level
#: ``adapters`` package, which :func:`rotator.config.registry.load_resolved` maps to the new modules.
READABLE_FORMATS = (FORMAT, "rotator-policy-bundle/1")
_HINT_REBUILD = "rebuild it: rotator bundle <policy file> (deploy/aws/build_zip.py does this)"


class BundleError(ConfigError):
    """The bundle is unusable (absent, unreadable, another format, stale); the policy file is not."""


class PolicyBundle(NamedTuple):
    """The policies and retry settings the Lambda function needs, from a bundle or a policy file."""

    #: The policy file these came from (for messages).
    path: Path
    policies: tuple[Policy, ...]
    retry: RetryPolicy

    @classmethod
    def from_config(cls, config: Config) -> PolicyBundle:
        r = config.settings.retry
        retry = RetryPolicy(r.attempts, r.base_delay.total_seconds(), r.max_delay.total_seconds())
        return cls(config.path, config.policies, retry)

    def policy(self, name: str) -> Policy:
        return find_policy(self.policies, name, self.path)


def mint_revokes_credential(issuer_settings: Any) -> bool:
    """Whether minting with these issuer settings revokes, at that moment, the token the stores hold:
    an issuer that declares it has no grace period (``allow_no_grace``, which InfluxDB 3's
    ``kind = "operator"`` requires: regenerating ``_admin`` kills the previous value at once)."""
    return getattr(issuer_settings, "allow_no_grace", False) is True or getattr(issuer_settings, "kind", None) == (
        "operator"
    )


def refuse_in_lambda(policy: Policy, path: Path) -> None:
    """ConfigError if the AWS Lambda rotation function cannot rotate ``policy`` (of the file at ``path``)
    safely: its issuer revokes the token it mints with (:func:`mint_revokes_credential`). createSecret
    mints with the AWSCURRENT token, so AWSCURRENT would stop working before the new token is tested or
    published; setSecret then lists tokens with that dead value, and the rotation never finishes.
    Called where the function resolves a secret's policy, and when a bundle is written."""
    if not mint_revokes_credential(policy.issuer_settings):
        return
    kind = getattr(policy.issuer_settings, "kind", None)
    raise ConfigError(
        f"{path}: policy {policy.name!r}: its issuer ([policy.issuer] type = {policy.issuer_type!r}"
        + (f", kind = {kind!r}" if isinstance(kind, str) else "")
        + ") revokes the token it mints with at that very moment (InfluxDB 3 regenerates _admin), which the AWS "
        "Lambda rotation function cannot do safely: the secret's AWSCURRENT would stop working at createSecret, "
        "before the new token is tested or published, and the rotation could never finish",
        hint='in the function, rotate a named admin token instead: kind = "named_admin", credential = "self", '
        "no allow_no_grace, and a named admin token bootstrapped into the secret (docs/issuers.md#influxdb3); "
        "rotate _admin itself with `rotator rotate` (the CLI or the daemon), from a policy file the function "
        "does not use (docs/aws-lambda.md#which-issuer-which-build)",
    )


def bundle_path(policy_file: Path) -> Path:
    """Where the bundle of ``policy_file`` lives: ``rotator.toml`` -> ``rotator.bundle.json``."""
    return policy_file.with_suffix(".bundle.json")


# -- reading (the cold path) --------------------------------------------------------------------


def read_bundle(path: Path, policy_file: Path | None = None) -> PolicyBundle:
    """The bundle at ``path``; BundleError if it is unusable or ``policy_file`` changed since.

    Relative paths in the adapters' settings resolve against the bundle's directory, as they
    do against the policy file's: keep the two side by side.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read policy bundle {path}: {exc.strerror}", hint=_HINT_REBUILD) from None
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("format") not in READABLE_FORMATS:
            raise BundleError(f"{path} is not a {FORMAT} bundle", hint=_HINT_REBUILD)
        _check_builder(path, data)
        if policy_file is not None:
            _check_source(path, data, policy_file)
        return _parse(path, data)
    except BundleError:
        raise
    except ConfigError as exc:
        # Above all an adapter target that cannot be imported (registry.load_resolved): the bundle is unusable,
        # and the Lambda function falls back to the policy file only on a BundleError ("slower, never wrong");
        # if the file itself is wrong, its loader says so.
        raise BundleError(f"policy bundle {path} cannot be used: {exc}", hint=exc.hint or _HINT_REBUILD) from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BundleError(f"policy bundle {path} is malformed ({type(exc).__name__}: {exc})",
                          hint=_HINT_REBUILD) from None  # fmt: skip


def _check_builder(path: Path, data: Mapping[str, Any]) -> None:
    """A bundle is the policy file as the rotator that built it validated it, with that rotator's defaults
    filled in: another release may check more (a policy it now refuses) or default otherwise, so its
    bundle is stale for this one (then the policy file is validated here: slower, never wrong)."""
    built_by = data.get("rotator_version")
    if built_by != rotator.__version__:
        shown = repr(built_by)[:40] if not isinstance(built_by, str) or len(built_by) > 40 else built_by
        raise BundleError(f"policy bundle {path} is stale: built by rotator {shown}, this is rotator "
                          f"{rotator.__version__} (its checks and defaults may differ)", hint=_HINT_REBUILD)


def _check_source(path: Path, data: Mapping[str, Any], policy_file: Path) -> None:
    try:
        digest = hashlib.sha256(policy_file.read_bytes()).hexdigest()
    except FileNotFoundError:
        return  # a package may carry the bundle alone
    except OSError as exc:
        raise BundleError(f"cannot read policy file {policy_file}: {exc.strerror}", hint="check the path") from None
    if data["source"]["sha256"] != digest:
        raise BundleError(f"policy bundle {path} is stale: {policy_file} changed after it was built",
                          hint=_HINT_REBUILD)  # fmt: skip


def _parse(path: Path, data: Mapping[str, Any]) -> PolicyBundle:
    base_dir = path.parent.resolve()
    targets: Mapping[str, Mapping[str, str]] = data["adapters"]

    def settings(kind: registry.Kind, entry: Mapping[str, Any]) -> Any:
        cls = registry.load_resolved(kind, entry["type"], targets[kind][entry["type"]])
        if entry["form"] == "dataclass":
            return decode(cls.settings_model, entry["settings"])
        from rotator.config.adapter_settings import validate_settings  # a pydantic model: validate it again

        return validate_settings(cls.settings_model, entry["settings"])

    policies = []
    for p in data["policies"]:
        policies.append(
            Policy(
                name=p["name"],
                enabled=p["enabled"],
                issuer_type=p["issuer"]["type"],
                issuer_settings=settings("issuer", p["issuer"]),
                stores=tuple(StoreBinding(b["name"], b["type"], settings("store", b)) for b in p["stores"]),
                schedule_text=p["schedule"],
                window_text=p["window"],
                grace=timedelta(seconds=p["grace_s"]),
                lifetime=timedelta(seconds=p["lifetime_s"]),
                verify_timeout=timedelta(seconds=p["verify_timeout_s"]),
                adopt=p["adopt"],
                description=p["description"],
                base_dir=base_dir,
                max_age=timedelta(seconds=p["max_age_s"]) if p.get("max_age_s") is not None else None,
            )
        )
    r = data["retry"]
    source = Path(data["source"]["name"])
    return PolicyBundle(path.parent / source, tuple(policies), RetryPolicy(r["attempts"], r["base_delay_s"],
                                                                          r["max_delay_s"]))  # fmt: skip


# -- decoding settings dataclasses without pydantic ---------------------------------------------


class _Undecodable(TypeError):
    pass


@cache
def _field_types(cls: type) -> dict[str, Any]:
    """The types of a dataclass's init fields. Annotations are strings here (``from __future__
    import annotations``): each is evaluated once, in the module of the class that declares it."""
    types = {}
    for f in dataclasses.fields(cls):
        if f.init:
            owner = next(c for c in cls.__mro__ if f.name in vars(c).get("__annotations__", {}))
            types[f.name] = _annotation(f.type, owner.__module__) if isinstance(f.type, str) else f.type
    return types


@cache
def _annotation(text: str, module: str) -> Any:
    return eval(text, vars(sys.modules[module]))  # the adapter's own source code, not bundle data


def decode(tp: Any, value: Any) -> Any:
    """``value`` (JSON data) as an instance of ``tp``: a settings dataclass, its field types.

    For data the writer produced from a validated instance, so it checks types, not meaning;
    a dataclass's ``__post_init__`` checks run all the same. TypeError if it does not fit.
    """
    origin = typing.get_origin(tp)
    if origin is Annotated:  # metadata for pydantic's validation, which this checks not
        return decode(typing.get_args(tp)[0], value)
    if tp is Any:
        return value
    if tp is type(None):
        if value is None:
            return None
        raise _Undecodable("expected null")
    if origin in (Union, types.UnionType):
        for member in typing.get_args(tp):
            try:
                return decode(member, value)
            except (TypeError, ValueError):
                continue
        raise _Undecodable(f"{value!r} fits no member of {tp}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise _Undecodable(f"{value!r} is not one of {typing.get_args(tp)}")
    if origin in (tuple, list):
        if not isinstance(value, list):
            raise _Undecodable("expected an array")
        args = typing.get_args(tp)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise _Undecodable("wrong tuple length")
            return tuple(decode(a, v) for a, v in zip(args, value, strict=True))
        items = [decode(args[0] if args else Any, v) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        key_type, value_type = typing.get_args(tp) or (Any, Any)
        if not isinstance(value, dict) or key_type not in (str, Any):
            raise _Undecodable("expected an object with string keys")
        return {k: decode(value_type, v) for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _Undecodable(f"expected an object for {tp.__name__}")
        names = {f.name for f in dataclasses.fields(tp) if f.init}
        if not set(value) <= names:
            raise _Undecodable(f"{tp.__name__} has no {sorted(set(value) - names)}")
        field_types = _field_types(tp)
        return tp(**{k: decode(field_types[k], v) for k, v in value.items()})
    return _scalar(tp, value)


def _scalar(tp: Any, value: Any) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) and issubclass(tp, Path):
        if isinstance(value, str):
            return Path(value)
    else:
        raise _Undecodable(f"cannot decode {tp!r} without pydantic")
    raise _Undecodable(f"{value!r} is not a {tp.__name__}")


# -- writing (build time) -----------------------------------------------------------------------


def _refuse_to_overwrite(output: Path, what: str, policy_file: Path, journal_url: str) -> None:
    """ConfigError when the bundle's ``output`` is the policy file it is compiled from, or its SQLite
    journal (or one of the journal's -wal, -shm and -journal files): the bundle would replace it."""
    from rotator.config.policy_source import journal_files, refuse_to_overwrite

    refuse_to_overwrite(output, [("the policy file it is compiled from", policy_file),
                                 *journal_files(journal_url, "the policy file's journal")],
                        given_as=what, writing="writing the bundle",
                        hint="pass -o/--bundle another file, e.g. rotator.bundle.json (default: beside the policy "
                        "file, named after it)")


def _refuse_special(output: Path, what: str) -> None:
    """ConfigError for an ``output`` that is a FIFO, a device or a socket: the bundle's file is moved over what is
    at its name (a symbolic link there is replaced, not written through: tests/config/test_bundle_symlink.py), and
    moved over a device node it replaced that node for every process on the host (as root, `bundle -o
    /dev/null`)."""
    import stat

    try:
        mode = os.lstat(output).st_mode
    except OSError:  # (absent, or unreadable: the write says why)
        return
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode) or stat.S_ISDIR(mode)):
        raise ConfigError(f"{what} {output} is not a regular file (a FIFO, a device or a socket): the bundle "
                          "would replace it", hint="pass -o/--bundle the path of a file; `rotator validate FILE` "
                          "checks a policy file without writing anything")


def write_bundle(policy_file: Path, output: Path | None = None) -> tuple[Path, PolicyBundle]:
    """Validate ``policy_file`` and write its bundle (default: beside it); PolicyFileError if invalid,
    ConfigError if a policy the function would serve has an issuer it cannot rotate (:func:`refuse_in_lambda`).

    ConfigError if the policy file cannot be read or the bundle cannot be written (``output`` in a
    directory that does not exist or this user may not write, a directory itself...); TransientError
    (exit 1) if the file system failed the write (full, EIO...); no ``.tmp`` file is then left behind.
    """
    from rotator.config.adapter_settings import dump_settings
    from rotator.config.policy import load_config_bytes
    from rotator.config.policy_source import read_policy_file

    # as every command reads it: a regular file of sensible size (a FIFO is refused, not waited on)
    source = read_policy_file(policy_file)
    config = load_config_bytes(source, policy_file)  # the bytes whose digest the bundle holds
    for policy in config.policies:
        # The policies the function can serve (one store, the secret it rotates; rotator/runners/lambda_rotation.py
        # refuses any other): refused now, at build time, rather than at the first rotation.
        if len(policy.stores) == 1 and policy.stores[0].type == "aws-secretsmanager":
            refuse_in_lambda(policy, policy_file)
    what = "-o/--bundle" if output is not None else "the policy bundle"
    output = output or bundle_path(policy_file)
    _refuse_to_overwrite(output, what, policy_file, config.journal_url())
    targets: dict[str, dict[str, str]] = {"issuer": {}, "store": {}}

    def entry(kind: registry.Kind, type_: str, value: Any) -> dict[str, Any]:
        targets[kind][type_] = registry.target(kind, type_)
        model = registry.load(kind, type_).settings_model
        dumped = dump_settings(model, value)
        form = "pydantic"
        if dataclasses.is_dataclass(model):
            try:
                form = "dataclass" if decode(model, json.loads(json.dumps(dumped))) == value else "pydantic"
            except (TypeError, ValueError):
                pass
        return {"type": type_, "form": form, "settings": dumped}

    policies = []
    for p in config.policies:
        issuer = entry("issuer", p.issuer_type, p.issuer_settings)
        stores = [{"name": b.name, **entry("store", b.type, b.settings)} for b in p.stores]
        policies.append({
            "name": p.name, "enabled": p.enabled, "adopt": p.adopt, "description": p.description,
            "grace_s": p.grace.total_seconds(), "lifetime_s": p.lifetime.total_seconds(),
            "verify_timeout_s": p.verify_timeout.total_seconds(),
            "max_age_s": p.max_age.total_seconds() if p.max_age is not None else None,
            "schedule": p.schedule_text, "window": p.window_text,
            "issuer": issuer, "stores": stores,
        })  # fmt: skip
    expected = PolicyBundle.from_config(config)
    data = {
        "format": FORMAT,
        "rotator_version": rotator.__version__,
        "source": {"name": policy_file.name, "sha256": hashlib.sha256(source).hexdigest()},
        "retry": {"attempts": expected.retry.attempts, "base_delay_s": expected.retry.base_delay,
                  "max_delay_s": expected.retry.max_delay},
        "adapters": targets,
        "policies": policies,
    }  # fmt: skip
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    back = _parse(output, json.loads(text))
    moved = output.parent.resolve() != policy_file.parent.resolve()
    if back.retry != expected.retry or (not moved and back.policies != expected.policies):
        raise ConfigError(
            f"the bundle of {policy_file} would not reproduce its validated policies",
            hint="this is a rotator bug: report it with the policy file (it holds no secrets)",
        )
    from rotator.config.policy_source import output_write_error, write_replacing

    _refuse_special(output, what)
    try:
        write_replacing(output, text)  # (0644: no secret, read by whatever packages it)
    except OSError as exc:
        raise output_write_error(exc, output, what, hint="pass -o/--bundle a file path in an existing directory "
                                 "this user may write (default: beside the policy file)") from None
    return output, back

