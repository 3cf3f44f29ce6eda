"""Text from outside (a server's error message, an issuer's token description) on one line of a
terminal or a log: its control characters written out, so that none acts where it is shown."""

from __future__ import annotations

import re

__all__ = ["one_line"]

#: C0 and C1 controls and DEL (xterm reads \x9b as CSI), U+2028 LINE SEPARATOR and U+2029 PARAGRAPH
#: SEPARATOR (str.splitlines(), JavaScript and some log viewers end a line there, as at U+0085 NEXT LINE,
#: a C1 control: a server's text would seem to start a log record of its own), and the bidi controls
#: that reorder what a reader sees (Trojan Source): every character of Unicode's Bidi_Control property
#: (U+061C ARABIC LETTER MARK, U+200E/U+200F, U+202A-U+202E, U+2066-U+2069; tests/observe check the list
#: against it)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def one_line(text: str) -> str:
    """``text`` with control characters written as ``\\xNN`` (``\\uNNNN`` above 0xff): a newline cannot end
    a comment line or add a line to a table, and an escape sequence cannot reach the terminal."""
    if text.isprintable():
        # Every character _CONTROL matches is one str.isprintable refuses (Unicode's Cc, Cf, Zl and Zp
        # categories; tests/core/test_one_line_separators.py checks all of Unicode): a text without any
        # needs no pass of the expression, which walks it character by character (~12,000 instructions
        # for a log line)
        return text
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) <= 0xFF else f"\\u{ord(m.group()):04x}",
                        text)
