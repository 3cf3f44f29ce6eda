"""Text that comes from outside (an issuer's token description, a server's error message), made safe
for where rotator writes it: one line of a terminal or a TOML comment, a spreadsheet cell."""

from __future__ import annotations

import re
from typing import Any

from rotator.config.inline_secrets import mask_tokens

__all__ = ["csv_cell", "masked", "one_line", "spreadsheet_cell"]

#: C0 and C1 controls and DEL (xterm reads \x9b as CSI), and the bidi controls that reorder what a
#: reader sees (Trojan Source): every character of Unicode's Bidi_Control property (U+061C ARABIC
#: LETTER MARK, U+200E/U+200F, U+202A-U+202E, U+2066-U+2069; tests/observe check the list against it)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
#: what a spreadsheet reads as the start of a formula (OWASP's list for CSV injection)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def masked(text: Any) -> str | None:
    """A note or an error as rotator shows it (the report, the status page): every token-shaped part
    written as ``***``. People's reasons and servers' messages may hold a pasted or quoted token,
    which journals from before `--reason` refused one still keep. None stays None."""
    return None if text is None else mask_tokens(str(text))


def one_line(text: str) -> str:
    """``text`` with control characters written as ``\\xNN`` (``\\uNNNN`` above 0xff): a newline cannot end
    a comment line or add a line to a table, and an escape sequence cannot reach the terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) <= 0xFF else f"\\u{ord(m.group()):04x}",
                        text)


def spreadsheet_cell(value: Any) -> Any:
    """``value`` for a CSV cell: text that a spreadsheet would run as a formula gets a leading ``'``
    (a lone ``-``, the report's "none", runs nothing and stays as it is)."""
    if isinstance(value, str) and len(value) > 1 and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_cell(value: Any) -> Any:
    """``value`` for a CSV cell that may be printed to a terminal and opened in a spreadsheet: text
    on one line (:func:`one_line`), and never read as a formula (:func:`spreadsheet_cell`)."""
    return spreadsheet_cell(one_line(value) if isinstance(value, str) else value)
