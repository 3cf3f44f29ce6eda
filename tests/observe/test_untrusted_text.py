"""rotator/observe/untrusted_text.py: outside text made safe for one line of a terminal or a comment."""

from __future__ import annotations

import sys
import unicodedata

from rotator.observe.untrusted_text import one_line

#: Unicode's Bidi_Control property (PropList.txt): the characters that reorder what a reader sees
BIDI_CONTROL = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
#: the explicit formatting classes (UAX #9): every character in them is a bidi control
_EXPLICIT = {"LRE", "RLE", "PDF", "LRO", "RLO", "LRI", "RLI", "FSI", "PDI"}


def test_every_bidi_control_is_escaped() -> None:
    """U+061C ARABIC LETTER MARK was missing: it reorders text like U+200F does (Trojan Source)."""
    for code in BIDI_CONTROL:
        char = chr(code)
        assert one_line(f"a{char}b") == f"a\\u{code:04x}b", hex(code)


def test_the_list_covers_every_explicit_bidi_formatting_character() -> None:
    explicit = [c for c in range(sys.maxunicode + 1) if unicodedata.bidirectional(chr(c)) in _EXPLICIT]
    assert explicit and set(explicit) <= set(BIDI_CONTROL)
    marks = {c for c in BIDI_CONTROL if c not in explicit}
    assert marks == {0x061C, 0x200E, 0x200F}, "the three implicit marks (ALM, LRM, RLM)"
    assert [unicodedata.name(chr(c)) for c in sorted(marks)] == [
        "ARABIC LETTER MARK", "LEFT-TO-RIGHT MARK", "RIGHT-TO-LEFT MARK"]
