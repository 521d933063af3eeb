"""The data the tokenizer reads words from: abbreviations, symbols, currencies, units, address parts.

Keys are matched case-insensitively unless a table says otherwise; values are spoken forms (space-separated
lowercase words).
"""

from __future__ import annotations

from typing import NamedTuple

# Always expanded (keys lowercase, matched case-insensitively, as whole words).
ABBREVIATIONS: dict[str, str] = {
    "mr.": "mister", "mr": "mister", "mrs.": "missus", "mrs": "missus", "ms.": "miz", "dr.": "doctor",
    "prof.": "professor", "st.": "street", "ave.": "avenue", "blvd.": "boulevard", "mt.": "mount",
    "jr.": "junior", "sr.": "senior", "vs.": "versus", "vs": "versus", "etc.": "et cetera", "e.g.": "for example",
    "i.e.": "that is", "approx.": "approximately", "dept.": "department", "inc.": "incorporated",
    "ltd.": "limited", "corp.": "corporation", "jan.": "january", "feb.": "february", "aug.": "august",
    "sept.": "september", "oct.": "october", "nov.": "november", "dec.": "december",
}  # fmt: skip

# Read so instead when the next word is capitalised ("St. Louis" -> saint, "Main St." -> street).
BEFORE_NAME: dict[str, str] = {"st.": "saint"}

# Abbreviations only before a number ("No. 5" -> number five); elsewhere they are ordinary words ("No.").
BEFORE_NUMBER: dict[str, str] = {
    "no.": "number", "nos.": "numbers", "vol.": "volume", "p.": "page", "pp.": "pages", "fig.": "figure",
    "ch.": "chapter", "art.": "article", "sec.": "section",
}  # fmt: skip

# Single characters read aloud when they stand alone (not inside a number, address or word).
SYMBOLS: dict[str, str] = {
    "&": "and", "+": "plus", "=": "equals", "%": "percent", "@": "at", "#": "hash", "°": "degrees",
    "×": "times", "÷": "divided by", "<": "less than", ">": "greater than", "/": "slash", "\\": "backslash",
    "~": "tilde", "^": "caret", "|": "bar", "*": "star", "_": "underscore", "$": "dollars", "£": "pounds",
    "€": "euros", "¥": "yen", "§": "section", "©": "copyright", "®": "registered", "±": "plus or minus",
}  # fmt: skip


class Currency(NamedTuple):
    """Spoken names of a currency and of its hundredth ("" when amounts are read with decimals)."""

    one: str
    many: str
    cent: str = ""
    cents: str = ""


CURRENCIES: dict[str, Currency] = {
    "$": Currency("dollar", "dollars", "cent", "cents"),
    "£": Currency("pound", "pounds", "penny", "pence"),
    "€": Currency("euro", "euros", "cent", "cents"),
    "¥": Currency("yen", "yen"),
}

# Scale words that may follow a currency amount: "$1 million" -> "one million dollars"; and their short forms
# written right after the number ("$5m", "$2bn", "$10k").
SCALES: tuple[str, ...] = ("thousand", "million", "billion", "trillion")
SHORT_SCALES: dict[str, str] = {"k": "thousand", "m": "million", "bn": "billion", "b": "billion", "tn": "trillion"}

# Units after a number (case-sensitive keys): (singular, plural).
UNITS: dict[str, tuple[str, str]] = {
    "mm": ("millimeter", "millimeters"), "cm": ("centimeter", "centimeters"), "m": ("meter", "meters"),
    "km": ("kilometer", "kilometers"), "mg": ("milligram", "milligrams"), "g": ("gram", "grams"),
    "kg": ("kilogram", "kilograms"), "lb": ("pound", "pounds"), "lbs": ("pounds", "pounds"),
    "oz": ("ounce", "ounces"), "ft": ("foot", "feet"), "mi": ("mile", "miles"),
    "mph": ("mile per hour", "miles per hour"), "km/h": ("kilometer per hour", "kilometers per hour"),
    "kph": ("kilometer per hour", "kilometers per hour"), "ml": ("milliliter", "milliliters"),
    "ms": ("millisecond", "milliseconds"), "sec": ("second", "seconds"), "min": ("minute", "minutes"),
    "mins": ("minutes", "minutes"), "hr": ("hour", "hours"), "hrs": ("hours", "hours"),
    "KB": ("kilobyte", "kilobytes"), "MB": ("megabyte", "megabytes"), "GB": ("gigabyte", "gigabytes"),
    "TB": ("terabyte", "terabytes"), "Hz": ("hertz", "hertz"), "kHz": ("kilohertz", "kilohertz"),
    "MHz": ("megahertz", "megahertz"), "GHz": ("gigahertz", "gigahertz"), "kW": ("kilowatt", "kilowatts"),
    "°C": ("degree celsius", "degrees celsius"), "°F": ("degree fahrenheit", "degrees fahrenheit"),
    "°": ("degree", "degrees"),
}  # fmt: skip

# Top-level domains recognised without "www." or a scheme ("example.com").
TLDS: tuple[str, ...] = (
    "com", "org", "net", "edu", "gov", "io", "co", "uk", "de", "fr", "ai", "dev", "app", "info", "biz", "us",
    "ca", "au",
)  # fmt: skip

# Inside URLs and e-mail addresses.
ADDRESS_SYMBOLS: dict[str, str] = {
    ".": "dot", "/": "slash", ":": "colon", "-": "dash", "_": "underscore", "@": "at", "?": "question mark",
    "=": "equals", "&": "and", "#": "hash", "%": "percent", "~": "tilde", "+": "plus",
}  # fmt: skip

# Address parts spelled although they hold a vowel.
ADDRESS_SPELLED: frozenset[str] = frozenset({"www", "edu", "html", "ftp", "http", "https"})
