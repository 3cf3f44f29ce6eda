"""rotator/observe/logs.py: the redacting filter on every record."""

from __future__ import annotations

import inspect
import io
import logging
import threading

import pytest

from rotator.core.secret import Secret
from rotator.observe.logs import RedactingFilter, setup_logging


def test_a_record_whose_message_cannot_be_formatted_never_raises_into_the_caller() -> None:
    """The standard library reports a bad record (Handler.handleError) and lets its caller go on; the
    filter called record.getMessage() unguarded, so a library's bad call raised TypeError in it."""
    stream = io.StringIO()
    setup_logging("info", stream=stream)
    logging.getLogger("urllib3.connectionpool").warning("Retrying %s after %d", "x")  # one argument short
    text = stream.getvalue()
    assert "unformattable log message 'Retrying %s after %d'" in text and "TypeError" in text


def test_an_unformattable_record_is_still_redacted() -> None:
    value = Secret("tok-" + "z" * 40)
    record = logging.LogRecord("rotator.x", logging.ERROR, __file__, 1, f"bad {value.reveal()} %d %s", ("a",),
                               None)
    assert RedactingFilter().filter(record) is True
    assert value.reveal() not in record.getMessage() and "***" in record.getMessage()
    assert record.args is None and "unformattable" in record.getMessage()


def test_text_logs_write_control_characters_out() -> None:
    """A message quotes text from outside (a server's error body): its escape sequences must not act on
    the terminal or pager showing the log, nor a newline forge a record. A traceback keeps its lines."""
    stream = io.StringIO()
    setup_logging("info", stream=stream)
    log = logging.getLogger("rotator.test_logs")
    log.warning("HTTP 403: %s", "denied \x1b]0;PWNED\x07\x1b[2J\n2026-01-01 00:00:00,000 INFO rotator: all fine",
                extra={"policy": "p\x1b[31m"})
    try:
        raise ValueError("bad \x1b[8m answer\n2026-01-01 00:00:00,000 INFO rotator.engine: revoked token t-old")
    except ValueError:
        log.exception("the call failed")
    text = stream.getvalue()
    assert "\x1b" not in text and "\x07" not in text, repr(text)
    assert "denied \\x1b]0;PWNED\\x07\\x1b[2J\\x0a2026-01-01" in text and "policy=p\\x1b[31m" in text
    assert text.count("\n") > 3 and "  Traceback (most recent call last):\n" in text, "a traceback keeps its lines"
    assert "ValueError: bad \\x1b[8m answer" in text
    # Every line that starts without indentation is a record of its own: the two logged, no forged one.
    records = [line for line in text.splitlines() if line and not line.startswith(" ")]
    assert len(records) == 2 and "2026-01-01 00:00:00,000" not in "".join(r[:23] for r in records), records


def test_text_lines_carry_the_time_the_standard_formatter_writes() -> None:
    """The text formatter keeps the last second's text (a rotation logs several records a second): each
    record still carries its own second and milliseconds, as logging.Formatter writes them."""
    stream = io.StringIO()
    setup_logging("info", stream=stream)
    formatter = next(h for h in logging.getLogger().handlers if getattr(h, "stream", None) is stream).formatter
    assert formatter is not None
    standard = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for created in (1_767_225_599.999, 1_767_225_600.0, 1_767_225_600.5, 1_767_225_599.25, 1_767_225_601.001):
        record = logging.makeLogRecord({"msg": "m", "levelno": logging.INFO, "levelname": "INFO"})
        record.created, record.msecs = created, int((created - int(created)) * 1000)
        assert formatter.formatTime(record) == standard.formatTime(record), created


def test_every_extra_field_that_could_hold_a_token_is_redacted_and_short_ones_are_kept() -> None:
    value = Secret("tok-" + "q" * 40)
    stream = io.StringIO()
    setup_logging("info", stream=stream)
    logging.getLogger("rotator.test_logs").info("event", extra={"detail": f"was {value.reveal()}", "step": "mint",
                                                                "n": 3})
    text = stream.getvalue()
    assert value.reveal() not in text and "detail=was ***" in text
    assert "step=mint" in text and "n=3" in text


def test_an_exception_no_thread_caught_is_logged_redacted_not_printed_raw(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Python's default thread hook printed the traceback straight to stderr, past the redactor (an
    SDK's error text may quote what it was sent)."""
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)  # restored after the test
    value = Secret("tok-" + "q" * 40)
    stream = io.StringIO()
    setup_logging("info", stream=stream)

    def fails() -> None:
        raise RuntimeError(f"server said: bad token {value.reveal()}")

    worker = threading.Thread(target=fails, name="metrics-inventory")
    worker.start()
    worker.join()
    text = stream.getvalue() + capsys.readouterr().err
    assert "uncaught exception in thread metrics-inventory" in text
    assert "RuntimeError: server said: bad token ***" in text
    assert value.reveal() not in text


def test_setup_logging_routes_thread_exceptions_to_the_log_for_the_process() -> None:
    """(The first of a pair: the next test checks that the fixture gave pytest its own hook back.)"""
    from rotator.observe import logs

    setup_logging("info", stream=io.StringIO())
    assert threading.excepthook is logs._log_thread_exception


def test_the_next_test_has_pytests_thread_hook_back() -> None:
    """Left in place, rotator's hook hid every later test's thread exceptions from pytest's
    unhandled-thread-exception report (tests/conftest.py _logging_as_it_was puts it back)."""
    from rotator.observe import logs

    assert threading.excepthook is not logs._log_thread_exception


def test_the_engines_audit_record_is_the_one_audit_logger_info_makes() -> None:
    """Engine._announce makes its record without logging's walk of the stack (Logger.findCaller): the
    record is the one ``audit_logger.info("%s %s", step, result, extra=...)`` made, its caller's file,
    function and line included, and it passes the handlers' redaction and formatting the same way."""
    from types import SimpleNamespace

    from rotator.core import engine as engine_module

    value = Secret("tok-" + "w" * 40)
    stream = io.StringIO()
    setup_logging("info", stream=stream)
    records: list[logging.LogRecord] = []
    keep = logging.Handler()
    keep.emit = records.append  # type: ignore[method-assign]
    audit = logging.getLogger("rotator.audit")
    audit.addHandler(keep)
    try:
        fake = SimpleNamespace(listeners=[], policy=SimpleNamespace(name="pol"), log=logging.getLogger("rotator.x"))
        detail = {"token_id": "t-1", "note": f"saw {value.reveal()}", "n": 3}
        engine_module.Engine._announce(fake, engine_module.datetime(2026, 3, 1), "mint", "ok", "run-1",  # type: ignore[arg-type]
                                       detail)
        audit.info("%s %s", "mint", "ok", extra={"policy": "pol", "run_id": "run-1", "step": "mint", "result": "ok",
                                                 **{f"detail_{k}": v for k, v in detail.items()}})
    finally:
        audit.removeHandler(keep)
    made, standard = records
    assert made.pathname == engine_module.__file__ and made.funcName == "_announce" and made.module == "engine"
    source, first = inspect.getsourcelines(engine_module.Engine._announce)
    assert "sys._getframe()" in source[made.lineno - first]
    assert made.stack_info is None and made.exc_info is None
    skip = {"pathname", "filename", "module", "funcName", "lineno", "created", "msecs", "relativeCreated", "asctime"}
    assert {k: v for k, v in vars(made).items() if k not in skip} == \
           {k: v for k, v in vars(standard).items() if k not in skip}
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[0][23:] == lines[1][23:], lines
    assert "detail_note=saw ***" in lines[0] and value.reveal() not in stream.getvalue()
