"""Text that came from a file, a board or a user, made safe to print on a terminal.

Case reports, enrolled text, lead names, file names and board banners can carry bytes a terminal acts on:
ANSI/VT escape sequences (clear the screen, rewrite earlier lines, set the window title, OSC 8 links, on
some terminals paste-back), other C0/C1 control characters, and Unicode bidirectional overrides that make a
line read differently from what it holds ("Trojan Source"). :func:`printable` removes them all; the CLI
printers pass every such string through it. JSON output needs none of this (``json.dumps`` escapes C0
controls; a JSON consumer is not a terminal).
"""

from __future__ import annotations

import re

__all__ = ["printable", "unsafe_chars", "encodable"]

# ESC-introduced sequences: CSI (ESC [ ... final), OSC/DCS/SOS/PM/APC strings (ended by BEL or ST), and
# two-byte escapes; plus the 8-bit C1 forms of CSI (U+009B) and of the string introducers.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"  # CSI
    r"|\x1b[\]PX^_].*?(?:\x07|\x1b\\|$)"  # OSC, DCS, SOS, PM, APC
    r"|\x1b[ -/]*[0-~]?"  # other escapes (and a lone ESC)
    r"|\x9b[0-?]*[ -/]*[@-~]?"  # 8-bit CSI
    r"|[\x90\x98\x9d\x9e\x9f].*?(?:\x07|\x9c|\x1b\\|$)",  # 8-bit string introducers
    re.DOTALL,
)
# C0 (but tab and newline), DEL, C1, bidi embeddings/overrides/isolates and marks, line/paragraph separators,
# and lone surrogates (what undecodable bytes become under surrogateescape)
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_LINE_BREAKS = re.compile(r"\r\n?|\n")


def unsafe_chars(s: str, *, allow_newlines: bool = True) -> list[str]:
    """The characters of ``s`` that :func:`printable` would remove (``repr``-able, for error messages)."""
    found = _UNSAFE.findall(s)
    if not allow_newlines:
        found += [c for c in s if c in "\n\r"]
    return found


def printable(s, *, newlines: bool = False) -> str:
    """``str(s)`` without escape sequences, control characters or bidi controls.

    newlines: keep line breaks (``\\r\\n`` and ``\\r`` become ``\\n``); otherwise they become spaces. Tabs become
    spaces. Undecodable bytes (lone surrogates) become U+FFFD.
    """
    t = str(s)
    if t.isascii() and t.isprintable():  # the usual case: nothing to do
        return t
    t = _LINE_BREAKS.sub("\n", t)
    t = _ESCAPES.sub("", t)
    t = encodable(t)
    t = _UNSAFE.sub("", t).replace("\t", " ")
    return t if newlines else t.replace("\n", " ")


def encodable(s: str) -> str:
    """``s`` with every lone surrogate (what an undecodable byte of a file or port name becomes under Python's
    surrogateescape) replaced by U+FFFD, so it encodes as UTF-8: for text written to a file (a report page, a
    saved result), where keeping the raw bytes would make the whole file invalid UTF-8."""
    return _SURROGATES.sub("\ufffd", s)


_SURROGATES = re.compile("[\ud800-\udfff]")
