"""rotator/observe/logs.py: the redacting filter on every record."""

from __future__ import annotations

import io
import logging

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
