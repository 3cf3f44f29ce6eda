"""Validating, dumping and describing an adapter's settings type.

An adapter's ``settings_model`` is either a pydantic model or a standard-library dataclass. pydantic
validates both (a dataclass through a ``TypeAdapter``: its field types, ``extra = "forbid"`` from
the class attribute ``__pydantic_config__``, then its ``__post_init__`` checks). A dataclass keeps
the adapter's module importable without pydantic, which is what the AWS Lambda function's cold
start needs (docs/aws-lambda.md, "Cold start"); the built-in AWS store and influxctl issuers use
dataclasses for that reason, the HTTP adapters pydantic models.

This module imports pydantic; the policy loader, ``rotator sync`` and the bundle writer use it,
never the Lambda's cold path.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any, TypeGuard

from pydantic import BaseModel, TypeAdapter

__all__ = ["dump_settings", "plain_string_fields", "settings_json_schema", "validate_settings"]


@cache
def _adapter(model: type) -> TypeAdapter[Any]:
    """The adapter of a settings dataclass, for validating, dumping and the JSON schema (one per class)."""
    return TypeAdapter(model)


def _is_model(model: type) -> TypeGuard[type[BaseModel]]:
    return isinstance(model, type) and issubclass(model, BaseModel)


def validate_settings(model: type, data: Mapping[str, Any]) -> Any:
    """An instance of ``model`` from a policy table; raises pydantic's ValidationError."""
    if _is_model(model):
        return model.model_validate(dict(data))
    return _adapter(model).validate_python(dict(data))


def dump_settings(model: type, value: Any) -> dict[str, Any]:
    """``value`` as JSON-compatible data that :func:`validate_settings` accepts again."""
    if _is_model(model):
        dumped: dict[str, Any] = value.model_dump(mode="json")
    else:
        dumped = _adapter(model).dump_python(value, mode="json")
    return dumped


def settings_json_schema(model: type, ref_template: str) -> dict[str, Any]:
    if _is_model(model):
        schema: dict[str, Any] = model.model_json_schema(ref_template=ref_template)
    else:
        schema = _adapter(model).json_schema(ref_template=ref_template)
    return schema


def plain_string_fields(model: type) -> frozenset[str]:
    """Top-level fields declared as plain strings (an AWS ``secret_id`` is a name, not a secret)."""
    found = _plain_fields.get(model)
    if found is None:  # once per class: the loader asks for every adapter table of the file
        found = _plain_fields[model] = _plain_string_fields(model)
    return found


_plain_fields: dict[type, frozenset[str]] = {}


def _plain_string_fields(model: type) -> frozenset[str]:
    plain = (str, str | None)
    if _is_model(model):
        return frozenset(name for name, f in model.model_fields.items() if f.annotation in plain)
    if dataclasses.is_dataclass(model):
        hints = _type_hints(model)
        return frozenset(f.name for f in dataclasses.fields(model) if hints.get(f.name) in plain)
    return frozenset()


@cache  # once per class: per adapter, get_type_hints was a quarter of a 10,000-policy daemon's start
def _type_hints(model: type) -> dict[str, Any]:
    return typing.get_type_hints(model)
