"""Logging set-up: text or JSON lines, with every known secret value redacted.

Redaction is the second line of defence (the first is that no code formats a token value into
a message): the filter runs on every record that reaches rotator's handlers, including records
from SDKs, and rewrites any registered secret value to ``***``.

Some SDK loggers print credentials that rotator never held as a :class:`~rotator.core.secret.Secret`
(botocore's DEBUG canonical request carries the STS session token, urllib3/requests/httpx log
headers and URLs): :data:`QUIET_LOGGERS` stay at WARNING whatever ``--log-level`` says.
The ``--log-file`` is created 0600, and never opened through a symbolic link
(rotator/core/private_append.py). A level or ``--log-file`` that cannot be used is a
:class:`~rotator.core.errors.ConfigError` (exit 2), raised before the logging tree is touched.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from rotator.core.errors import ConfigError
from rotator.core.one_line import one_line
from rotator.core.private_append import NotAPlainFile, open_append
from rotator.core.secret import REDACTOR

__all__ = ["LEVELS", "QUIET_LOGGERS", "JsonFormatter", "PrivateFileHandler", "RedactingFilter", "setup_logging"]

#: SDK loggers that can print credentials at DEBUG/INFO (request headers, signed canonical
#: requests, bodies); kept at WARNING. Children (botocore.auth, httpcore.http11...) follow.
QUIET_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3", "requests", "httpx", "httpcore", "hvac",
                 "psycopg", "hpack", "h2")

#: the levels of ``--log-level`` and ``$ROTATOR_LOG_LEVEL`` (rotator/runners/cli_options.py LOG_LEVELS)
LEVELS = ("debug", "info", "warning", "error")

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    """Token values out of every record; ``rewrite``: applied to the message too (the command line's
    hints that quote a rotator command made to name its policy file)."""

    def __init__(self, rewrite: Callable[[str], str] | None = None) -> None:
        super().__init__()
        self._rewrite = rewrite

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception as exc:  # a caller's bad format or arguments: logging never raises into its caller
            message = f"unformattable log message {_shown(record.msg)}: {type(exc).__name__}: {exc}"
        redacted = REDACTOR.redact(message if self._rewrite is None else self._rewrite(message))
        if record.exc_info and record.exc_info[1] is not None:
            # Render the traceback now so it passes the redactor too.
            record.exc_text = REDACTOR.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        record.msg, record.args = redacted, None
        fields = record.__dict__
        for key in fields.keys() - _STANDARD:
            value = fields[key]
            # (a text shorter than the shortest value the redactor knows cannot hold one)
            if isinstance(value, str) and len(value) >= REDACTOR.min_len:
                fields[key] = REDACTOR.redact(value)
        return True


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    """An exception no code of a thread caught, as a record: Python's default hook prints its
    traceback straight to stderr, past the redacting filter (an SDK's error text, a local value)."""
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    exc_info = (args.exc_type, args.exc_value, args.exc_traceback) if args.exc_value is not None else None
    logging.getLogger("rotator").error("uncaught exception in thread %s", name, exc_info=exc_info)


def _shown(msg: object) -> str:
    try:
        return repr(msg)
    except Exception:
        return f"<{type(msg).__name__}>"


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
    """One line per record (a traceback keeps its lines, indented), with control characters written out: a
    message quotes text from outside (a server's error body, a store's path), and an escape sequence
    in it must not act on the terminal or the pager that shows the log, nor a newline forge a record."""

    #: (whole second, its text): a rotation logs several records a second, and logging.Formatter.formatTime
    #: converts and formats the same second for each (a tuple: one assignment, safe between threads)
    _second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second, text = self._second
        whole = int(record.created)
        if whole != second:
            text = time.strftime(self.default_time_format, self.converter(whole))
            self._second = (whole, text)
        return self.default_msec_format % (text, record.msecs) if self.default_msec_format else text

    def format(self, record: logging.LogRecord) -> str:
        # logging.Formatter.format, with each part written out; the traceback text is escaped here,
        # not in formatException: another handler (a JSON file, pytest's) may have cached it first
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = self.formatMessage(record)
        fields = record.__dict__
        extras = sorted(k for k in fields.keys() - _STANDARD if not k.startswith("_"))
        if extras:
            text += " " + " ".join(f"{k}={fields[k]}" for k in extras)
        text = one_line(text)  # (written out character by character: once for the whole line)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + _lines(record.exc_text)
        if record.stack_info:
            text += "\n" + _lines(self.formatStack(record.stack_info))
        return text


def _lines(text: str) -> str:
    # Indented: a record's own line starts with its time, and a traceback's lines never do, so a
    # newline inside an exception's message (a server's text, an SDK's) cannot pose as a record.
    return "\n".join("  " + one_line(line) for line in text.split("\n"))


class PrivateFileHandler(logging.FileHandler):
    """A FileHandler whose file, when it creates it, is readable by its owner only (0600).

    When the file was moved or removed (logrotate), the next record opens a new one at the same
    path, so a daemon's ``--log-file`` rotates like its audit file, without ``copytruncate``. That is
    the standard library's WatchedFileHandler, not used because ``logging.handlers`` costs ~5 ms
    of import on paths with a start-up budget (the CLI, the Lambda's cold start).
    """

    _identity: tuple[int, int] | None = None

    def _open(self) -> Any:
        fd = open_append(self.baseFilename)
        st = os.fstat(fd)
        self._identity = (st.st_dev, st.st_ino)
        return open(fd, self.mode, encoding=self.encoding, errors=self.errors)  # noqa: SIM115 - the handler closes it

    def emit(self, record: logging.LogRecord) -> None:
        try:
            st = os.stat(self.baseFilename)
            moved = (st.st_dev, st.st_ino) != self._identity
        except FileNotFoundError:
            moved = True
        except OSError:
            moved = False  # cannot tell: keep writing where it writes
        if moved and self.stream is not None:
            stream, self.stream = self.stream, None  # FileHandler.emit opens the path again
            try:
                stream.flush()
            finally:
                stream.close()
        if self.stream is None:
            # FileHandler.emit would open it outside its own try, raising into whatever code logged
            try:
                self.stream = self._open()
            except OSError:
                self.handleError(record)  # logging's way: a report on stderr, and the caller goes on
                return
        super().emit(record)


def _file_handler(file: str) -> PrivateFileHandler:
    try:
        return PrivateFileHandler(file, encoding="utf-8")
    except OSError as exc:
        directory = os.path.dirname(os.path.abspath(file))
        if isinstance(exc, FileNotFoundError):
            hint = f"create the directory {directory} first, or pass a --log-file in an existing directory"
        elif isinstance(exc, NotAPlainFile):
            hint = "pass a --log-file that names a regular file (or a path where none exists yet), not a link to one"
        else:
            hint = "pass a --log-file that names a file this user may write (or drop --log-file)"
        raise ConfigError(f"cannot open --log-file {file}: {exc.strerror or exc}", hint=hint) from None


def setup_logging(
    level: str = "info", fmt: str = "text", stream: TextIO | None = None, file: str | None = None,
    rewrite: Callable[[str], str] | None = None,
) -> None:
    """Configure the ``rotator`` logger tree (and the root for SDK records) once per process.

    ConfigError, with the logging tree left as it was, if ``level`` is not one of :data:`LEVELS`
    (argparse checks ``--log-level``, not the ``$ROTATOR_LOG_LEVEL`` default) or ``file`` cannot be opened.
    """
    if level not in LEVELS:
        raise ConfigError(f"log level {level!r} is not one of {', '.join(LEVELS)}",
                          hint=f"set --log-level or $ROTATOR_LOG_LEVEL to one of {', '.join(LEVELS)}")
    handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stderr)]
    if file:
        handlers.append(_file_handler(file))
    formatter: logging.Formatter = (
        JsonFormatter() if fmt == "json" else _TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(RedactingFilter(rewrite))
        root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    threading.excepthook = _log_thread_exception
