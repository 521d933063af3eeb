"""Numbers read as words. Every number word comes from ``num2words`` (English).

Style: American. The ``and`` that ``num2words`` puts after hundreds and thousands is dropped ("one hundred one",
"two thousand five"); commas and hyphens of its output are dropped too ("twenty-one" -> "twenty", "one"). An
``and`` that this package adds itself stays: "five dollars and twenty cents", "two and three quarters".

Every function returns a tuple of lowercase words (letters and apostrophes only). Integer arguments are strings
of ASCII digits; a string longer than :data:`MAX_DIGITS` digits, or one with a leading zero, is read digit by
digit ("007" -> "zero zero seven").
"""

from __future__ import annotations

import re

from num2words import num2words

Words = tuple[str, ...]

MAX_DIGITS = 15
_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_SPLIT = re.compile(r"[\s,\-]+")


def words(spelled: str) -> Words:
    """``num2words`` output as words: split at spaces, commas and hyphens, ``and`` dropped."""
    return tuple(w for w in _SPLIT.split(spelled.lower()) if w and w != "and")


def digits(s: str) -> Words:
    """Each digit of ``s`` as a word: "2024" -> "two zero two four"."""
    return tuple(_DIGIT_WORDS[int(d)] for d in s)


def _read_whole(s: str) -> bool:
    """Whether ``s`` is read as a whole number rather than digit by digit."""
    return len(s) <= MAX_DIGITS and (s == "0" or not s.startswith("0"))


def cardinal(s: str) -> Words:
    """An unsigned integer: "1000000" -> "one million"."""
    return words(num2words(int(s))) if _read_whole(s) else digits(s)


def ordinal(s: str) -> Words:
    """An ordinal: "22" -> "twenty second"; one too long to read whole is read digit by digit."""
    return words(num2words(int(s), to="ordinal")) if _read_whole(s) else digits(s)


def is_year(s: str) -> bool:
    """A year-like number: four digits from 1100 to 2099, no sign, no separators."""
    return len(s) == 4 and s.isdigit() and 1100 <= int(s) <= 2099


def year(s: str) -> Words:
    """A year: "1990" -> "nineteen ninety", "2005" -> "two thousand five", "1905" -> "nineteen oh five"."""
    return words(num2words(int(s), to="year"))


def plural(ws: Words) -> Words:
    """The last word made plural: "ninety" -> "nineties", "hundred" -> "hundreds", "six" -> "sixes"."""
    last = ws[-1]
    if last.endswith("y"):
        last = last[:-1] + "ies"
    elif last.endswith(("x", "s")):
        last += "es"
    else:
        last += "s"
    return (*ws[:-1], last)


def decade(s: str) -> Words:
    """A decade or a round plural from its digits (without the "s"): "1990" -> "nineteen nineties", "90" ->
    "nineties", "00" -> "two thousands", "100" -> "hundreds", "500" -> "five hundreds"."""
    if s == "00":
        return ("two", "thousands")
    if is_year(s):
        return plural(year(s))
    ws = plural(cardinal(s))
    return ws[1:] if len(s) > 2 and len(ws) == 2 and ws[0] == "one" else ws


def number(s: str) -> Words:
    """A number as written: optional ``-``, thousands commas, decimals: "-1,234.5" -> "minus one thousand two
    hundred thirty four point five"; ".5" -> "point five"."""
    sign: Words = ("minus",) if s.startswith("-") else ()
    whole, _, decimals = s.lstrip("-").replace(",", "").partition(".")
    head = cardinal(whole) if whole else ()
    tail = ("point", *digits(decimals)) if decimals else ()
    return sign + head + tail


def year_or_number(s: str) -> Words:
    """A standalone number: a year when :func:`is_year` ("1990" -> "nineteen ninety"), else :func:`number`."""
    return year(s) if is_year(s) else number(s)


def is_one(s: str) -> bool:
    """Whether the written number ``s`` is exactly (minus) one, which takes a singular unit."""
    return s.lstrip("-") == "1"


def fraction(numerator: str, denominator: str) -> Words:
    """A fraction: "1/2" -> "one half", "3/4" -> "three quarters", "5/8" -> "five eighths"; a denominator of 0 or
    1 (or one too long) -> "n over d"."""
    top = cardinal(numerator)
    if not _read_whole(denominator) or int(denominator) < 2:
        return (*top, "over", *cardinal(denominator))
    single = numerator.lstrip("0") == "1"
    names = {2: ("half", "halves"), 4: ("quarter", "quarters")}
    if int(denominator) in names:
        return (*top, names[int(denominator)][0 if single else 1])
    bottom = ordinal(denominator)
    return top + (bottom if single else plural(bottom))


def clock(hour: str, minute: str, meridiem: str = "") -> Words:
    """A time of day: ("10", "30") -> "ten thirty"; ("10", "05") -> "ten oh five"; ("10", "00") -> "ten o'clock",
    ("14", "00") -> "fourteen hundred"; ``meridiem`` "a" or "p" adds "a m" / "p m" (and no "o'clock")."""
    head = cardinal(str(int(hour)))
    tail: Words = (meridiem.lower(), "m") if meridiem else ()
    if minute == "00":
        if meridiem:
            return head + tail
        return (*head, "o'clock") if 1 <= int(hour) <= 12 else (*head, "hundred")
    mins = ("oh", *cardinal(minute[1])) if minute.startswith("0") else cardinal(minute)
    return head + mins + tail
