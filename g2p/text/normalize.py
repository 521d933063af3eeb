"""Unicode clean-up that remembers, for every character it outputs, where that character came from.

:func:`normalize` works one original code point at a time:

1. a character of :data:`REPLACEMENTS` (curly quotes, dashes, the minus sign, ``ß``, ``æ``...) becomes its entry;
2. otherwise its NFKC form (``…`` -> ``...``, NBSP -> space, fullwidth ``\\uff21`` -> ``A``, ``½`` -> ``1/2``), each
   character of which is again looked up in :data:`REPLACEMENTS`, then folded to ASCII when dropping its
   combining marks leaves ASCII (``é`` -> ``e``); a character that does not fold (``д``, ``你``, emoji) is kept;
3. any whitespace becomes one space ``" "`` (one for one: runs are not collapsed);
4. combining marks and invisible format characters (ZWJ, variation selectors, soft hyphen, BOM, bidi marks) are
   dropped; their original span is added to the previous output character (so ``cafe\\u0301`` -> ``cafe`` whose
   ``e`` spans the ``e`` and the accent).

Em dashes are kept as they are (a break, i.e. punctuation); en dashes, figure dashes and the minus sign become
``-`` (ranges, negative numbers). Every output character has a non-empty original span ``[start, end)``; spans
never decrease, and characters produced by one original character share its span.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass

Span = tuple[int, int]

REPLACEMENTS: dict[str, str] = {
    # quotes and apostrophes
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u02bc": "'", "`": "'", "\u00b4": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2039": '"', "\u203a": '"',
    # dashes that join (ranges, compounds, negative numbers); the em dash and the horizontal bar stay breaks
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2212": "-", "\u2043": "-",
    # slashes
    "\u2044": "/", "\u2215": "/",
    # Latin letters that do not decompose
    "\u00df": "ss", "\u00e6": "ae", "\u00c6": "AE", "\u0153": "oe", "\u0152": "OE", "\u00f8": "o", "\u00d8": "O",
    "\u0142": "l", "\u0141": "L", "\u0111": "d", "\u0110": "D", "\u00f0": "d", "\u00d0": "D", "\u00fe": "th",
    "\u00de": "Th", "\u0131": "i", "\u0127": "h", "\u0126": "H",
}  # fmt: skip

_DROPPED_CATEGORIES = frozenset({"Mn", "Me", "Mc", "Cf"})


@dataclass(frozen=True)
class Normalized:
    """The normalised ``text`` and, for each of its characters, the original ``[start, end)`` it came from."""

    text: str
    spans: tuple[Span, ...] | None
    """None: character ``i`` came from original character ``i`` (an ASCII text: every change is one for one)."""

    def span(self, start: int, end: int) -> Span:
        """The original span of the normalised characters ``[start, end)`` (``start < end``)."""
        if self.spans is None:
            return start, end
        return self.spans[start][0], self.spans[end - 1][1]


def fold(ch: str) -> str:
    """``ch`` without its combining marks when that leaves ASCII (``é`` -> ``e``), else ``ch`` unchanged."""
    if ch.isascii():
        return ch
    bare = "".join(c for c in unicodedata.normalize("NFD", ch) if not unicodedata.combining(c))
    return bare if bare and bare.isascii() else ch


def _convert(ch: str) -> str:
    """The normalised form of one character of an NFKC expansion."""
    if ch in REPLACEMENTS:
        return REPLACEMENTS[ch]
    if ch.isspace():
        return " "
    if unicodedata.category(ch) in _DROPPED_CATEGORIES:
        return ""
    return fold(ch)


@functools.cache
def _ascii_table() -> dict[int, str]:
    table = {i: replacement(chr(i)) for i in range(128) if replacement(chr(i)) != chr(i)}
    assert all(len(v) == 1 for v in table.values()), "an ASCII replacement must keep the text's length"
    return table


@functools.lru_cache(maxsize=4096)
def replacement(ch: str) -> str:
    """What one original character becomes: its :data:`REPLACEMENTS` entry or its converted NFKC form; ``""``
    for a combining mark or an invisible format character."""
    if ch in REPLACEMENTS:
        return REPLACEMENTS[ch]
    if unicodedata.category(ch) in _DROPPED_CATEGORIES:
        return ""
    return "".join(_convert(c) for c in unicodedata.normalize("NFKC", ch))


def normalize(text: str) -> Normalized:
    """Normalise ``text`` (see the module docstring) keeping each output character's original span."""
    if text.isascii():  # the common case, in one C call: ASCII changes are all one character for one
        return Normalized(text.translate(_ascii_table()), None)
    chars: list[str] = []
    spans: list[Span] = []
    for i, ch in enumerate(text):
        out = replacement(ch)
        if not out:
            if spans:  # a dropped character belongs to the character before it
                spans[-1] = (spans[-1][0], i + 1)
            continue
        chars.extend(out)
        spans.extend([(i, i + 1)] * len(out))
    return Normalized("".join(chars), tuple(spans))
