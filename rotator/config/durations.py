"""The one pydantic type of a duration setting, for the policy file, ``[daemon]`` and adapters' settings.

A duration is written as a quoted string of ``<number><unit>`` parts (``"90s"``, ``"15m"``,
``"1d12h"``; units ``s m h d w``; at most 100 years), parsed by the one parser,
:func:`rotator.config.schedule.parse_duration`. Anything else is refused, numbers included: ``timeout = 5``
does not say whether it means seconds or minutes. A ``timedelta`` is accepted as it is (defaults in
code, a model built from Python). In JSON (``rotator schema``, a policy bundle) a duration is
written back in the same short form, :func:`rotator.config.schedule.format_duration`.

This module imports pydantic: it is for settings models, never the Lambda function's cold path
(whose adapters' settings are dataclasses).
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

from rotator.config.schedule import MAX_DURATION_TEXT, format_duration, parse_duration

__all__ = ["DURATION_PATTERN", "Duration", "validate_duration"]

#: The JSON Schema pattern of a duration string: what the parser takes (``_DURATION`` in
#: rotator/config/schedule.py), spaces around the parts included, so that an editor checking a file
#: against the schema accepts what rotator runs (and, with ``maxLength``, refuses what it refuses).
DURATION_PATTERN = r"^\s*([0-9]+\s*[smhdw]\s*)+$"


def validate_duration(value: Any) -> timedelta:
    """A ``timedelta`` from a policy file's value; ValueError (pydantic reports it) otherwise."""
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError("write a duration as a quoted string such as '30d', '12h' or '90s'")
    return _parsed(value)


#: A policy file writes the same few durations again and again (``grace = "1h"`` in each policy).
_parsed = lru_cache(maxsize=1024)(parse_duration)


#: A duration setting: ``"30d"``, ``"12h"``, ``"90s"``, ``"1d12h"`` (see the module docstring).
Duration = Annotated[
    timedelta,
    BeforeValidator(validate_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "maxLength": MAX_DURATION_TEXT,
                    "examples": ["30d", "12h", "90s"]}),
]
