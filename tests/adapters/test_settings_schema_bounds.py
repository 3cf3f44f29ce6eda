"""The policy file's JSON schema states the same number limits as the adapters' own validation.

An editor or CI job that validates a policy file against `rotator schema` (docs/policy.schema.json)
must refuse what the policy loader refuses and accept what it accepts. Every numeric setting of every
built-in adapter is found in the schema (nested ones too, e.g. an influxctl issuer's ``profile.port``)
and probed on both sides of each bound the schema states; where the schema states none, a far-out
value must then pass the code too (else the code has a limit the schema does not tell).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from rotator.config import registry
from rotator.config.adapter_settings import validate_settings
from rotator.config.policy import config_json_schema

PROFILE = {"product": "clustered", "host": "cluster.example"}
VAULT_AUTH = {"method": "token", "token": {"env": "VAULT_TOKEN"}}
#: A valid settings table of each built-in adapter: the probes change one number in it.
VALID: dict[tuple[str, str], dict[str, Any]] = {
    ("issuer", "influxctl-management"): {"profile": PROFILE},
    ("issuer", "influxctl-database"): {"profile": PROFILE, "auth": {"method": "mgmt_token", "token": {"env": "M"}},
                                       "permissions": {"read": ["db1"]}},
    ("issuer", "influxdb2"): {"base_url": "https://influx2.example:8086", "org_id": "0123456789abcdef",
                              "credential": "self", "copy_from_authorization_id": "0123456789abcdef"},
    ("issuer", "influxdb3"): {"base_url": "https://influx3.example:8181", "credential": "self"},
    ("issuer", "management-api"): {"product": "clustered", "cluster_host": "https://cluster.example",
                                   "permissions": [{"action": "read", "resource": "telemetry"}],
                                   "verify": {"database": "telemetry"}, "management_token": {"env": "M"}},
    ("store", "aws-secretsmanager"): {"secret_id": "influx/mgmt", "region": "eu-west-1"},
    ("store", "influxctl-profile"): {"config": "influxctl/config.toml"},
    ("store", "vault-kv2"): {"url": "https://vault.example:8200", "path": "influx/mgmt", "auth": VAULT_AUTH},
}  # fmt: skip
#: The numeric settings that have limits in the code: the walk below must find each one bounded.
BOUNDED = {
    ("issuer", "influxctl-management", "timeout_s"), ("issuer", "influxctl-management", "profile.port"),
    ("issuer", "influxctl-database", "timeout_s"), ("issuer", "influxctl-database", "profile.port"),
    ("issuer", "influxdb2", "timeout_s"), ("issuer", "influxdb3", "timeout_s"),
    ("issuer", "management-api", "timeout_s"),
    ("store", "aws-secretsmanager", "max_attempts"), ("store", "aws-secretsmanager", "timeout_s"),
    ("store", "vault-kv2", "timeout_s"),
}  # fmt: skip
_BOUND_KEYS = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")
#: Stands for "no limit" where the schema states none.
_FAR = 1e9


def _schema() -> dict[str, Any]:
    return config_json_schema()


SCHEMA = _schema()
DEFS = SCHEMA["$defs"]


def _variant(kind: str, name: str) -> dict[str, Any]:
    """The adapter's branch of the schema's IssuerAdapter / StoreAdapter, with the $defs it refers to."""
    variants = DEFS[f"{kind.capitalize()}Adapter"]["oneOf"]
    (variant,) = [v for v in variants if v["properties"]["type"] == {"const": name}]
    return {**variant, "$defs": DEFS}


def _resolve(node: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in node:
        node = DEFS[node["$ref"].rsplit("/", 1)[1]]
    return node


def _numbers(node: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, str, dict[str, float]]]:
    """(dotted path, "integer" or "number", the bounds stated) of every numeric property under ``node``."""
    for key, prop in _resolve(node).get("properties", {}).items():
        where = f"{path}{key}"
        branches = [_resolve(b) for b in prop.get("anyOf", [prop])]
        bounds = {k: prop[k] for k in _BOUND_KEYS if k in prop}
        for branch in branches:
            bounds |= {k: branch[k] for k in _BOUND_KEYS if k in branch}
            if branch.get("type") in ("integer", "number"):
                yield where, branch["type"], bounds
            elif "properties" in branch:
                yield from _numbers(branch, f"{where}.")


def _settings_with(kind: str, name: str, path: str, value: float) -> dict[str, Any]:
    settings = {k: dict(v) if isinstance(v, dict) else v for k, v in VALID[(kind, name)].items()}
    *parents, leaf = path.split(".")
    table = settings
    for parent in parents:
        table = table[parent]
    table[leaf] = value
    return settings


def _schema_accepts(kind: str, name: str, settings: dict[str, Any]) -> bool:
    return jsonschema.Draft202012Validator(_variant(kind, name)).is_valid({"type": name, **settings})


def _code_accepts(kind: str, name: str, settings: dict[str, Any]) -> bool:
    try:
        validate_settings(registry.load(kind, name).settings_model, settings)
    except ValidationError:
        return False
    return True


def _probes(kind: str, bounds: Mapping[str, float]) -> list[tuple[float, bool]]:
    """(value, whether the bound lets it in): either side of each bound, a far-out value where none is."""
    def step(value: float, up: bool) -> float:
        if kind == "integer":
            return value + (1 if up else -1)
        return math.nextafter(value, math.inf if up else -math.inf)

    probes = []
    if "minimum" in bounds:
        probes += [(bounds["minimum"], True), (step(bounds["minimum"], up=False), False)]
    elif "exclusiveMinimum" in bounds:
        probes += [(step(bounds["exclusiveMinimum"], up=True), True), (bounds["exclusiveMinimum"], False)]
    else:
        probes.append((-_FAR, True))
    if "maximum" in bounds:
        probes += [(bounds["maximum"], True), (step(bounds["maximum"], up=True), False)]
    elif "exclusiveMaximum" in bounds:
        probes += [(step(bounds["exclusiveMaximum"], up=False), True), (bounds["exclusiveMaximum"], False)]
    else:
        probes.append((_FAR, True))
    return probes


NUMERIC = [(kind, name, path, type_, bounds) for kind, name in VALID
           for path, type_, bounds in _numbers(_variant(kind, name))]  # fmt: skip


def test_every_built_in_adapter_has_a_valid_table() -> None:
    assert set(VALID) == {(kind, name) for kind in ("issuer", "store") for name in registry.available(kind)}
    for (kind, name), settings in VALID.items():
        assert _code_accepts(kind, name, settings) and _schema_accepts(kind, name, settings), (kind, name)


def test_the_schema_bounds_every_limited_setting() -> None:
    """The settings the code limits are found in the schema, and each is bounded on both sides there."""
    found = {(kind, name, path): bounds for kind, name, path, _, bounds in NUMERIC}
    assert BOUNDED <= set(found)
    unbounded = {key for key in BOUNDED if not found[key].keys() & {"minimum", "exclusiveMinimum"}
                 or not found[key].keys() & {"maximum", "exclusiveMaximum"}}  # fmt: skip
    assert not unbounded


@pytest.mark.parametrize(("kind", "name", "path", "type_", "bounds"), NUMERIC,
                         ids=[f"{n}.{p}" for _, n, p, _, _ in NUMERIC])  # fmt: skip
def test_schema_and_code_agree_at_each_bound(kind: str, name: str, path: str, type_: str,
                                             bounds: dict[str, float]) -> None:
    for value, inside in _probes(type_, bounds):
        settings = _settings_with(kind, name, path, value)
        schema, code = _schema_accepts(kind, name, settings), _code_accepts(kind, name, settings)
        assert (schema, code) == (inside, inside), (
            f"{name} {path} = {value!r}: the schema {'accepts' if schema else 'refuses'} it, the code "
            f"{'accepts' if code else 'refuses'} it (schema bounds: {bounds or 'none'})"
        )
