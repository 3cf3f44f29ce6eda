"""Logging set-up: text or JSON lines, with every known secret value redacted.

Redaction is the second line of defence (the first is that no code formats a token value into
a message): the filter runs on every record that reaches rotator's handlers, including records
from SDKs, and rewrites any registered secret value to ``***``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from rotator.secret import REDACTOR

__all__ = ["JsonFormatter", "RedactingFilter", "setup_logging"]

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = REDACTOR.redact(message)
        if record.exc_info and record.exc_info[1] is not None:
            # Render the traceback now so it passes the redactor too.
            record.exc_text = REDACTOR.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        record.msg, record.args = redacted, None
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD and isinstance(value, str):
                record.__dict__[key] = REDACTOR.redact(value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
        if extras:
            base += " " + " ".join(f"{k}={v}" for k, v in sorted(extras.items()))
        return base


def setup_logging(
    level: str = "info", fmt: str = "text", stream: TextIO | None = None, file: str | None = None
) -> None:
    """Configure the ``rotator`` logger tree (and the root for SDK records) once per process."""
    handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stderr)]
    if file:
        handlers.append(logging.FileHandler(file, encoding="utf-8"))
    formatter: logging.Formatter = (
        JsonFormatter() if fmt == "json" else _TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(RedactingFilter())
        root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
