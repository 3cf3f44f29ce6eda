"""Text that comes from outside (an issuer's token description, a server's error message), made safe
for where rotator writes it: one line of a terminal or a TOML comment, a spreadsheet cell."""

from __future__ import annotations

from typing import Any

from rotator.config.inline_secrets import mask_tokens
from rotator.core.one_line import one_line

__all__ = ["csv_cell", "masked", "one_line", "spreadsheet_cell"]

#: what a spreadsheet reads as the start of a formula (OWASP's list for CSV injection)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def masked(text: Any) -> str | None:
    """A note or an error as rotator shows it (the report, the status page): every token-shaped part
    written as ``***``. People's reasons and servers' messages may hold a pasted or quoted token,
    which journals from before `--reason` refused one still keep. None stays None."""
    return None if text is None else mask_tokens(str(text))


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
