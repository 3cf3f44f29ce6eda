"""rotator/core/one_line.py wrote out C0/C1 controls but not U+2028 LINE SEPARATOR and U+2029 PARAGRAPH
SEPARATOR, where str.splitlines() (and some log viewers) end a line: a server's text quoted in a text log
line could seem to start a log record of its own."""

from __future__ import annotations

import io
import logging
import random
import sys

from rotator.core.one_line import _CONTROL, one_line
from rotator.observe.logs import setup_logging

#: every character that str.splitlines() ends a line at (\n, \r, \v, \f, \x1c-\x1e, \x85, U+2028, U+2029)
LINE_BREAKS = [c for c in range(sys.maxunicode + 1) if len(f"a{chr(c)}b".splitlines()) > 1]


def test_every_line_break_python_knows_is_written_out() -> None:
    assert {0x0A, 0x0D, 0x85, 0x2028, 0x2029} <= set(LINE_BREAKS)
    for code in LINE_BREAKS:
        escaped = one_line(f"a{chr(code)}b")
        assert escaped == (f"a\\x{code:02x}b" if code <= 0xFF else f"a\\u{code:04x}b"), hex(code)
        assert len(escaped.splitlines()) == 1, hex(code)


def test_a_text_log_record_quoting_a_line_separator_stays_one_record() -> None:
    stream = io.StringIO()
    setup_logging("info", stream=stream)
    forged = "2026-01-01 00:00:00,000 INFO rotator.engine: revoked token t-old"
    log = logging.getLogger("rotator.test_one_line")
    log.warning("HTTP 403: %s", f"denied\u2028{forged}\u2029{forged}\x85{forged}")
    try:
        raise ValueError(f"bad answer\u2028{forged}")
    except ValueError:
        log.exception("the call failed")
    text = stream.getvalue()
    assert "\u2028" not in text and "\u2029" not in text and "\x85" not in text, repr(text)
    assert f"denied\\u2028{forged}\\u2029{forged}\\x85" in text
    assert f"ValueError: bad answer\\u2028{forged}" in text
    # Every line that starts without indentation is a record of its own: the two logged, no forged one.
    records = [line for line in text.splitlines() if line and not line.startswith(" ")]
    assert len(records) == 2 and not any(r.startswith("2026-01-01") for r in records), records


def test_one_lines_shortcut_for_printable_text_is_exact() -> None:
    """one_line returns a text that str.isprintable accepts as it is, without the expression's pass: exact
    only because every character the expression writes out is one isprintable refuses (checked over all
    of Unicode), so that no such text holds one."""
    assert [hex(c) for c in range(sys.maxunicode + 1) if _CONTROL.match(chr(c)) and chr(c).isprintable()] == []
    rng = random.Random(12)
    alphabet = [chr(c) for c in (*range(0x20, 0x7F), 0xE9, 0x2013, 0x4E2D, 0x1F600, 0x85, 0x2028, 0x202E, 0x0A, 0x1B)]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
        assert one_line(text) == _CONTROL.sub(
            lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) <= 0xFF else f"\\u{ord(m.group()):04x}", text), text
