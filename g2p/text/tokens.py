"""Text -> tokens with their spoken words: the pure-text stage of the TTS front end.

:func:`tokenize` normalises the input (:mod:`g2p.text.normalize`), cuts the normalised text with one regular
expression whose alternatives are tried in a fixed order at each position (:data:`_ALTERNATIVES`), reads each piece
(:data:`_READERS`), then maps every token back to its span of the ORIGINAL input: ``text[t.start:t.end] ==
t.text``. Spans are ordered and never overlap; whitespace belongs to no token (except inside one token such as
"3 p.m." or "$1 million").

Conventions:

- A hyphenated compound is ONE token with the words of all its parts: "well-known" -> ("well", "known"),
  "COVID-19" -> ("covid", "nineteen"), "19-year-old" -> ("nineteen", "year", "old"). Letters and digits inside a
  word are read separately: "MP3" -> ("m", "p", "three"). Such a token is of the kind its parts share, else "word".
- Possessives and contractions stay one word: "didn't", "john's"; the plural possessive "students'" -> "students".
- An all-caps word of 2 to 5 letters that ``known`` does not have is spelled: "FBI" -> ("f", "b", "i"),
  "FBI's" -> ("f", "b", "i's"), "CDs" -> ("c", "d's"). A single letter other than "a" and "I" is an initialism
  ("x"); a spoken single letter means that letter's name. Dotted initialisms: "U.S." -> ("u", "s").
- Adjacent punctuation characters form one token ('."' or "?!"); so do adjacent skipped characters.
- Numbers: see :mod:`g2p.text.numbers` (American style, no "and" inside numbers).
- A period that ends an abbreviation, a dotted initialism or "p.m." at the end of a sentence belongs to that token
  (no separate punctuation token for it).

Not handled (read literally, piece by piece): dates ("12/25/2020" -> twelve slash twenty five slash twenty
twenty), decimal commas ("5,50"), Roman numerals, seconds in times ("10:30:15"), scores and phone formats other
than ddd-ddd-dddd (a "3-2" score reads as a range), signs after amounts ("5$" -> five, dollars), context beyond
the next word (homographs such as "read", "St." at a sentence end before a capitalised word reads "saint").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from g2p.text import numbers
from g2p.text.normalize import normalize
from g2p.text.tables import (
    ABBREVIATIONS,
    ADDRESS_SPELLED,
    ADDRESS_SYMBOLS,
    BEFORE_NAME,
    BEFORE_NUMBER,
    CURRENCIES,
    SCALES,
    SHORT_SCALES,
    SYMBOLS,
    TLDS,
    UNITS,
)

KINDS = ("word", "number", "abbreviation", "initialism", "punctuation", "symbol", "url", "email", "skipped")

Words = tuple[str, ...]
Known = Callable[[str], bool]
SPOKEN_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


@dataclass(frozen=True)
class Token:
    """One token: its original text and span, its kind (one of :data:`KINDS`) and its spoken words."""

    text: str
    """The original text of the token: ``original_input[start:end]``."""
    start: int
    end: int
    kind: str
    spoken: Words
    """Lowercase dictionary-style words (letters and inner apostrophes); () for punctuation and skipped text."""
    reason: str = ""
    """For kind "skipped": why, naming the characters."""


def _never_known(word: str) -> bool:
    return False


# ---------------------------------------------------------------------------------------------------- patterns


def _either(keys: Iterable[str]) -> str:
    """A regex alternation of the literal ``keys``, longest first."""
    return "|".join(re.escape(k) for k in sorted(keys, key=len, reverse=True))


_NUM = r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?(?!\d)|\d+(?:\.\d+)?)"
_SIGNED = rf"(?:(?<![\w.,)\]-])-)?{_NUM}"
_MERIDIEM = r"(?P<{}>[AaPp])(?:\.\s?[Mm]\.?|[Mm])(?![A-Za-z0-9])"
_URL_CHAR = r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]"
_URL_END = r"[A-Za-z0-9/_=#~+-]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_PART = r"[A-Za-z0-9]+(?:'[A-Za-z]+)*"

# Abbreviation keys made of letters only ("mr", "vs"): a "plain" word must not be one of them.
_LETTER_KEYS = sorted(k for k in (*ABBREVIATIONS, *BEFORE_NUMBER) if k.isalpha())
# A run of letters followed by none of these cannot start an e-mail address, a URL, a dotted initialism or a table
# abbreviation (their first non-letter is one of them), nor continue a "word" match.
_PLAIN_END = r"(?![A-Za-z0-9._%+@:'-])"
assert all(re.match(rf"[a-z]*{_PLAIN_END}", k) is None for k in (*ABBREVIATIONS, *BEFORE_NUMBER) if not k.isalpha())

_ALTERNATIVES = {
    # The alternatives are tried in order at each position. The three common cases come first, each matching only
    # where the text would be cut the same without it (tests/test_text.py checks it on many texts):
    # whitespace (no other alternative starts with it);
    "space": r"\s+",
    # a run of letters, maybe with inner apostrophes ("didn't"), where none of the alternatives before "word" can
    # match and "word" would match the same characters (:func:`scan` reads it to the same result, faster);
    "plain": rf"(?!(?i:{_either(_LETTER_KEYS)})(?![A-Za-z0-9]))[A-Za-z]++"
    rf"(?:(?:'[A-Za-z]++)++(?![A-Za-z0-9'-])|{_PLAIN_END})",
    # one character no alternative but "other" can start with (all the others start with a letter, a digit, a
    # currency sign, or one of ' # . - before a digit), read as "other".
    "lone": r"[^A-Za-z0-9'#.$\u00a3\u20ac\u00a5-]|[.'#-](?!\d)",
    "email": rf"[A-Za-z0-9](?:[A-Za-z0-9._%+-]*[A-Za-z0-9])?@{_LABEL}(?:\.{_LABEL})*\.[A-Za-z]{{2,}}(?![A-Za-z0-9-])",
    "url": rf"(?i:https?://|ftp://|www\.){_URL_CHAR}*{_URL_END}"
    rf"|{_LABEL}(?:\.{_LABEL})*\.(?i:{_either(TLDS)})(?![A-Za-z0-9-])(?:/(?:{_URL_CHAR}*{_URL_END})?)?",
    "time": rf"(?<![\d:.,])(?P<t_h>[01]?\d|2[0-3]):(?P<t_m>[0-5]\d)(?![\d:])(?:\s?{_MERIDIEM.format('t_ap')})?",
    "clock": rf"(?<![\d:.,])(?P<c_h>1[0-2]|0?[1-9])\s?{_MERIDIEM.format('c_ap')}",
    "money": rf"(?P<m_cur>{_either(CURRENCIES)})\s?(?P<m_num>{_NUM})(?:\s(?P<m_scale>(?i:{_either(SCALES)}))|"
    rf"(?P<m_short>{_either(SHORT_SCALES)}))?(?![A-Za-z0-9])",
    "phone": r"(?<![\w-])\d{3}-\d{3}-\d{4}(?![\w-])",
    "ordinal": r"(?<![\w.])(?P<o_n>\d+)(?:st|nd|rd|th|ST|ND|RD|TH)(?![A-Za-z0-9])",
    "decade": r"(?<![\w'])'?(?P<d_n>\d+0)'?s(?![A-Za-z0-9])",
    "range": r"(?<![\w.,-])(?P<r_a>\d+)-(?P<r_b>\d+)(?![\w-]|[.,]\d)",
    "fraction": r"(?<![\w./-])(?:(?P<f_w>\d+)\s)?(?P<f_n>\d+)/(?P<f_d>\d+)(?![\w/]|[.,]\d)",
    "percent": rf"(?P<p_n>{_SIGNED})\s?%",
    "measure": rf"(?P<u_n>{_SIGNED})\s?(?P<u_unit>{_either(UNITS)})(?![A-Za-z0-9])",
    "hashnum": r"(?<![\w#])\#(?P<h_n>\d+)(?!\w)",
    "before_number": rf"(?<![\w.])(?i:{_either(BEFORE_NUMBER)})(?=\s?\d)",
    "abbreviation": rf"(?<![\w.])(?i:{_either(ABBREVIATIONS)})(?![A-Za-z0-9])",
    "dotted": r"(?<![\w.])(?:[A-Za-z]\.){2,}(?![A-Za-z0-9])",
    "number": rf"{_SIGNED}(?![A-Za-z0-9]|-[A-Za-z0-9])|(?<![\w.,])\.\d+(?![A-Za-z0-9])",
    "word": rf"{_PART}(?:-{_PART})*(?:(?<=[sS])'(?![A-Za-z0-9]))?",
    "other": r".",
}
_PATTERN = re.compile("|".join(f"(?P<{name}>{rx})" for name, rx in _ALTERNATIVES.items()), re.ASCII | re.DOTALL)

# ---------------------------------------------------------------------------------------------------- readers

Reading = tuple[str, Words]  # (kind, spoken words)
_CAPS = re.compile(r"(?P<base>[A-Z]{2,5})(?P<s>'s|s)?")
_PIECE = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*'?|[0-9]+")
_ADDRESS_PIECE = re.compile(r"[A-Za-z]+|[0-9]+|.", re.DOTALL)
_NEXT_NAME = re.compile(r"\s*[A-Z][a-z]")
_VOWELS = frozenset("aeiouy")


def read_letters(word: str, known: Known) -> Reading:
    """A run of letters (with inner apostrophes): a word, or an initialism spelled letter by letter."""
    word = word.rstrip("'")
    lower = word.lower()
    caps = _CAPS.fullmatch(word)
    if caps and not known(caps["base"].lower()) and not known(lower):
        letters = list(caps["base"].lower())
        if caps["s"]:
            letters[-1] += "'s"
        return "initialism", tuple(letters)
    if len(lower) == 1 and lower not in ("a", "i"):
        return "initialism", (lower,)
    return "word", (lower,)


def _read_piece(piece: str, known: Known) -> Reading:
    return ("number", numbers.cardinal(piece)) if piece.isdigit() else read_letters(piece, known)


def read_word(text: str, known: Known) -> Reading:
    """A word, maybe hyphenated, maybe mixing letters and digits: the words of all its pieces."""
    readings = [_read_piece(p, known) for p in _PIECE.findall(text)]
    kinds = {kind for kind, _ in readings}
    return (kinds.pop() if len(kinds) == 1 else "word"), tuple(w for _, ws in readings for w in ws)


def _address_word(letters: str, known: Known) -> Words:
    """A run of letters inside an address: a word, or spelled when it is short, vowel-less or customary."""
    lower = letters.lower()
    spelled = lower in ADDRESS_SPELLED or (not known(lower) and (len(lower) <= 2 or not _VOWELS.intersection(lower)))
    return tuple(lower) if spelled else (lower,)


def read_address(text: str, known: Known) -> Words:
    """A URL or an e-mail address read out: "www.example.com" -> "w w w dot example dot com"."""
    out: list[str] = []
    for piece in _ADDRESS_PIECE.findall(text):
        if piece.isalpha():
            out += _address_word(piece, known)
        elif piece.isdigit():
            out += numbers.cardinal(piece) if len(piece) <= 4 else numbers.digits(piece)
        else:
            out += ADDRESS_SYMBOLS.get(piece, "").split()
    return tuple(out)


def read_money(m: re.Match[str]) -> Words:
    """ "$5.20" -> five dollars and twenty cents; "$1 million" -> one million dollars; "¥500" -> five hundred yen."""
    cur = CURRENCIES[m["m_cur"]]
    amount = m["m_num"].replace(",", "")
    scale = (m["m_scale"] or SHORT_SCALES.get(m["m_short"] or "", "")).lower()
    if scale:
        return (*numbers.number(amount), scale, cur.many)
    whole, _, cents = amount.partition(".")
    if len(cents) != 2 or not cur.cent:
        return (*numbers.number(amount), cur.one if amount == "1" else cur.many)
    main = (*numbers.cardinal(whole), cur.one if whole == "1" else cur.many)
    if int(cents) == 0:
        return main
    small = (*numbers.cardinal(str(int(cents))), cur.cent if int(cents) == 1 else cur.cents)
    return small if int(whole) == 0 else (*main, "and", *small)


def read_abbreviation(m: re.Match[str]) -> Words:
    """A table abbreviation; a :data:`BEFORE_NAME` one is read differently before a capitalised word."""
    key = m.group().lower()
    if key in BEFORE_NAME and _NEXT_NAME.match(m.string, m.end()):
        return tuple(BEFORE_NAME[key].split())
    return tuple(ABBREVIATIONS[key].split())


def read_fraction(m: re.Match[str]) -> Words:
    """ "3/4" -> three quarters; "2 1/2" -> two and one half."""
    part = numbers.fraction(m["f_n"], m["f_d"])
    return (*numbers.cardinal(m["f_w"]), "and", *part) if m["f_w"] else part


def read_measure(m: re.Match[str]) -> Words:
    """ "5 km" -> five kilometers; "1 kg" -> one kilogram; "25°C" -> twenty five degrees celsius."""
    one, many = UNITS[m["u_unit"]]
    return (*numbers.number(m["u_n"]), *(one if numbers.is_one(m["u_n"]) else many).split())


def read_range(m: re.Match[str]) -> Words:
    """ "1990-2000" -> nineteen ninety to two thousand; "5-10" -> five to ten."""
    return (*numbers.year_or_number(m["r_a"]), "to", *numbers.year_or_number(m["r_b"]))


def read_other(ch: str) -> Reading:
    """One character no other alternative took: a symbol, punctuation, or skipped."""
    if ch in SYMBOLS:
        return "symbol", tuple(SYMBOLS[ch].split())
    if unicodedata.category(ch).startswith("P"):
        return "punctuation", ()
    return "skipped", ()


_READERS: dict[str, Callable[[re.Match[str], Known], Reading]] = {
    "email": lambda m, known: ("email", read_address(m.group(), known)),
    "url": lambda m, known: ("url", read_address(m.group(), known)),
    "time": lambda m, known: ("number", numbers.clock(m["t_h"], m["t_m"], m["t_ap"] or "")),
    "clock": lambda m, known: ("number", numbers.clock(m["c_h"], "00", m["c_ap"])),
    "money": lambda m, known: ("number", read_money(m)),
    "phone": lambda m, known: ("number", numbers.digits(m.group().replace("-", ""))),
    "ordinal": lambda m, known: ("number", numbers.ordinal(m["o_n"])),
    "decade": lambda m, known: ("number", numbers.decade(m["d_n"])),
    "range": lambda m, known: ("number", read_range(m)),
    "fraction": lambda m, known: ("number", read_fraction(m)),
    "percent": lambda m, known: ("number", (*numbers.number(m["p_n"]), "percent")),
    "measure": lambda m, known: ("number", read_measure(m)),
    "hashnum": lambda m, known: ("number", ("number", *numbers.cardinal(m["h_n"]))),
    "before_number": lambda m, known: ("abbreviation", tuple(BEFORE_NUMBER[m.group().lower()].split())),
    "abbreviation": lambda m, known: ("abbreviation", read_abbreviation(m)),
    "dotted": lambda m, known: ("initialism", tuple(c.lower() for c in m.group() if c.isalpha())),
    "number": lambda m, known: ("number", numbers.year_or_number(m.group())),
    "word": lambda m, known: read_word(m.group(), known),
    "other": lambda m, known: read_other(m.group()),
    "lone": lambda m, known: read_other(m.group()),
}

# ---------------------------------------------------------------------------------------------------- skipped text

_EMOJI_RANGES = ((0x2600, 0x27BF), (0x2B00, 0x2BFF), (0x1F000, 0x1FAFF))
_CJK_NAMES = ("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "BOPOMOFO", "IDEOGRAPHIC", "HALFWIDTH KATAKANA")
_LABELS = {"Cc": "control character", "Cs": "lone surrogate", "Co": "private use", "Cn": "unassigned"}


def describe(ch: str) -> str:
    """``ch`` for a human: "U+1F600 GRINNING FACE (emoji)", "U+0007 (control character)"."""
    name = unicodedata.name(ch, "")
    category = unicodedata.category(ch)
    if category in _LABELS:
        label = _LABELS[category]
    elif name.startswith(_CJK_NAMES):
        label = "CJK"
    elif category.startswith("S") and any(lo <= ord(ch) <= hi for lo, hi in _EMOJI_RANGES):
        label = "emoji"
    elif category[0] in "LN" and name:
        label = f"{name.split()[0].lower()} {'letter' if category[0] == 'L' else 'number'}"
    else:
        label = {"S": "symbol", "M": "mark", "Z": "separator"}.get(category[0], "character")
    return f"U+{ord(ch):04X}{' ' + name if name else ''} ({label})"


def skip_reason(text: str, limit: int = 5) -> str:
    """Why ``text`` is skipped, naming its distinct visible characters (at most ``limit``)."""
    visible = [c for c in text if not c.isspace() and unicodedata.category(c) not in ("Mn", "Me", "Mc", "Cf")]
    distinct = list(dict.fromkeys(visible or text))
    shown = ", ".join(describe(c) for c in distinct[:limit])
    more = f" and {len(distinct) - limit} more" if len(distinct) > limit else ""
    return f"no pronunciation for {shown}{more}"


# ---------------------------------------------------------------------------------------------------- assembly


Row = tuple[str, int, int, str, Words]
"""A token before it is a :class:`Token`: (original text, start, end, kind, spoken words)."""

_MERGING_KINDS = ("punctuation", "skipped")


def _clean(words: Words) -> Words:
    """Spoken words reduced to the :data:`SPOKEN_WORD` shape (a safety net: readers already produce it)."""
    return tuple(w for word in words for w in SPOKEN_WORD.findall(word.lower()))


def _read_plain(word: str, known: Known) -> Reading:
    """A "plain" match (letters, maybe inner apostrophes): what ``read_word`` reads, lowercase and capitalised
    words without its general path."""
    if word.islower() or (word[0].isupper() and word[1:].islower()):  # no all-caps part: never an initialism
        lower = word.lower()
        return ("word" if len(lower) > 1 or lower in ("a", "i") else "initialism"), (lower,)
    kind, spoken = read_letters(word, known)
    return kind, _clean(spoken)


def scan(text: str, known: Known = _never_known) -> list[Row]:
    """The rows of :func:`tokenize` (its tokens without the :class:`Token` objects and skip reasons).

    The normalised text is cut by :data:`_PATTERN` and each piece read; a piece joins the one before it when they
    share an original character (one character normalised to several that were cut apart, e.g. "⑴" -> "(1)"), or
    when both are punctuation, or both skipped, and they touch."""
    norm = normalize(text)
    spans = norm.spans
    rows: list[Row] = []
    last_end = -1
    last_kind = ""
    for m in _PATTERN.finditer(norm.text):
        group = m.lastgroup
        if group == "plain":
            kind, spoken = _read_plain(m.group(), known)
        elif group == "space" or group is None:
            continue
        else:
            kind, spoken = _READERS[group](m, known)
            spoken = _clean(spoken)
        if spans is None:
            start, end = m.span()
        else:
            start, end = spans[m.start()][0], spans[m.end() - 1][1]
        if start < last_end or (start == last_end and kind == last_kind and kind in _MERGING_KINDS):
            _, start, prev_end, prev_kind, prev_spoken = rows.pop()
            kind = prev_kind if prev_spoken or not spoken else kind
            spoken = prev_spoken + spoken
            end = max(prev_end, end)
        rows.append((text[start:end], start, end, kind, spoken))
        last_end, last_kind = end, kind
    return rows


def tokenize(text: str, known: Known = _never_known) -> list[Token]:
    """``text`` as tokens in order; ``known(word)`` (lowercase) says whether the lexicon has a word (an unknown
    all-caps word of 2-5 letters is spelled). Never raises on any ``str``; see the module docstring."""
    return [Token(*row, token_reason(row[0], row[3])) for row in scan(text, known)]


def token_reason(text: str, kind: str) -> str:
    """A token's ``reason``: why it is skipped (kind "skipped"), else ""."""
    return skip_reason(text) if kind == "skipped" else ""
