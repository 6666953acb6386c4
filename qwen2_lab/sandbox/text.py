"""clean_text: what a program printed, made safe to show in a terminal, a web page or the next model turn.

A program (or a model that echoes it) can print raw control characters and ANSI escape sequences: they can clear a
terminal, rewrite lines (carriage returns), retitle a window (OSC), or reorder text on screen (Unicode bidi
controls, as in "Trojan Source"), or hide text from a reader in invisible characters (tag characters, zero-width
and other format characters, variation selectors) that a model still reads. Every text the sandbox and the checks hand back goes through this one function.
"""

from __future__ import annotations

import re

# CSI (ESC [ params intermediates final), OSC (ESC ] ... BEL or ST, or to the end), any other ESC + one byte.
# Each alternative scans forward once over disjoint character classes: linear time on any input.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]?|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?|\x9b[0-?]*[ -/]*[@-~]?")
_KEEP = {"\t", "\n"}
_DROP = {c: None for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)] if chr(c) not in _KEEP}
# Invisible characters: every format character (Unicode category Cf: bidi controls, zero-width spaces and joiners,
# soft hyphen, word joiner, BOM, tag characters U+E0000-E007F), the variation selectors (data can be hidden in
# runs of them after a visible character) and the Hangul fillers that render as nothing.
_FORMAT = [(0xAD, 0xAD), (0x600, 0x605), (0x61C, 0x61C), (0x6DD, 0x6DD), (0x70F, 0x70F), (0x890, 0x891)]
_FORMAT += [(0x8E2, 0x8E2), (0x180E, 0x180E), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x2064)]
_FORMAT += [(0x2066, 0x206F), (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB), (0x110BD, 0x110BD), (0x110CD, 0x110CD)]
_FORMAT += [(0x13430, 0x1343F), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE007F)]
_INVISIBLE = [*_FORMAT, (0x034F, 0x034F), (0x180B, 0x180F), (0xFE00, 0xFE0F), (0xE0100, 0xE01EF)]
_INVISIBLE += [(0x115F, 0x1160), (0x3164, 0x3164), (0xFFA0, 0xFFA0)]
_DROP |= {c: None for first, last in _INVISIBLE for c in range(first, last + 1)}
_DROP |= {0x2028: "\n", 0x2029: "\n"}  # line and paragraph separators: plain newlines


def clean_text(text: str) -> str:
    """`text` without ANSI escape sequences, control characters and invisible characters (newline and tab stay; a
    carriage return, a line or paragraph separator becomes a newline, so that no line can overwrite another)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _ESCAPES.sub("", text).translate(_DROP)
