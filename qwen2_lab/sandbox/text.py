"""clean_text: what a program printed, made safe to show in a terminal, a web page or the next model turn.

A program (or a model that echoes it) can print raw control characters and ANSI escape sequences: they can clear a
terminal, rewrite lines (carriage returns), retitle a window (OSC), or reorder text on screen (Unicode bidi
controls, as in "Trojan Source"). Every text the sandbox and the checks hand back goes through this one function.
"""

from __future__ import annotations

import re

# CSI (ESC [ params intermediates final), OSC (ESC ] ... BEL or ST, or to the end), any other ESC + one byte.
# Each alternative scans forward once over disjoint character classes: linear time on any input.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]?|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?|\x9b[0-?]*[ -/]*[@-~]?")
_KEEP = {"\t", "\n"}
_DROP = {c: None for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)] if chr(c) not in _KEEP}
_DROP |= dict.fromkeys([0x200E, 0x200F, 0x061C, *range(0x202A, 0x202F), *range(0x2066, 0x206A)])  # bidi controls


def clean_text(text: str) -> str:
    """`text` without ANSI escape sequences and control characters (newline and tab stay; a carriage return becomes
    a newline, so that no line can overwrite another)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _ESCAPES.sub("", text).translate(_DROP)
