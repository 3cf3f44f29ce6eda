"""Text that comes from outside (an issuer's token description, a server's error message), made safe
for where rotator writes it: one line of a terminal or a TOML comment, a spreadsheet cell."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["one_line", "spreadsheet_cell"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: what a spreadsheet reads as the start of a formula (OWASP's list for CSV injection)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def one_line(text: str) -> str:
    """``text`` with control characters written as ``\\xNN``: a newline cannot end a comment line or add
    a line to a table, and an escape sequence cannot reach the terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def spreadsheet_cell(value: Any) -> Any:
    """``value`` for a CSV cell: text that a spreadsheet would run as a formula gets a leading ``'``
    (a lone ``-``, the report's "none", runs nothing and stays as it is)."""
    if isinstance(value, str) and len(value) > 1 and value.startswith(_FORMULA_START):
        return "'" + value
    return value
