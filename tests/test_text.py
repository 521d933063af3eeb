"""The text front end's pure-text stages: normalisation with offsets, tokens and their spoken words."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from g2p.text import Token, tokenize
from g2p.text import tokens as tokens_module
from g2p.text.normalize import normalize
from g2p.text.tokens import KINDS

LEXICON = {"nasa", "unicef", "it", "us"}


def known(word: str) -> bool:
    return word in LEXICON


def read(text: str) -> list[tuple[str, str, str]]:
    """(original text, kind, spoken words joined by spaces) of every token."""
    return [(t.text, t.kind, " ".join(t.spoken)) for t in tokenize(text, known)]


def said(text: str) -> str:
    """All the spoken words of ``text``, joined by spaces."""
    return " ".join(w for t in tokenize(text, known) for w in t.spoken)


def check_spans(text: str, tokens: list[Token]) -> None:
    end = 0
    for t in tokens:
        assert end <= t.start < t.end <= len(text)
        assert text[t.start : t.end] == t.text
        end = t.end


SPOKEN = re.compile(r"^[a-z]+('[a-z]+)*$")


def test_words_keep_possessives_and_contractions():
    assert read("John's dog didn't bark; the students' books aren't here.") == [
        ("John's", "word", "john's"), ("dog", "word", "dog"), ("didn't", "word", "didn't"), ("bark", "word", "bark"),
        (";", "punctuation", ""), ("the", "word", "the"), ("students'", "word", "students"),
        ("books", "word", "books"), ("aren't", "word", "aren't"), ("here", "word", "here"), (".", "punctuation", ""),
    ]  # fmt: skip


def test_hyphenated_compound_is_one_token_with_its_parts():
    text = "A well-known 19-year-old got COVID-19."
    tokens = tokenize(text, known)
    check_spans(text, tokens)
    assert [(t.text, t.spoken) for t in tokens[1:4]] == [
        ("well-known", ("well", "known")), ("19-year-old", ("nineteen", "year", "old")),
        ("got", ("got",)),
    ]  # fmt: skip
    assert tokens[4].text == "COVID-19" and tokens[4].spoken == ("c", "o", "v", "i", "d", "nineteen")
    assert said("pre- and post-war") == "pre and post war"


def test_cardinals_negative_decimal_thousands():
    assert read("-3 and 3.14 of 1,000,000 (-2.5) .5") == [
        ("-3", "number", "minus three"), ("and", "word", "and"), ("3.14", "number", "three point one four"),
        ("of", "word", "of"), ("1,000,000", "number", "one million"), ("(", "punctuation", ""),
        ("-2.5", "number", "minus two point five"), (")", "punctuation", ""), (".5", "number", "point five"),
    ]  # fmt: skip
    assert said("101 and 1,234,567") == (
        "one hundred one and one million two hundred thirty four thousand five hundred sixty seven"
    )
    assert said("007 and 12345678901234567890") == "zero zero seven and " + " ".join(
        ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "zero"] * 2
    )


def test_ordinals():
    assert said("1st 2nd 3rd 4th 22nd 101st 11TH") == (
        "first second third fourth twenty second one hundred first eleventh"
    )


def test_years_only_in_year_range_without_separators():
    assert said("In 1990, 2005 and 1905.") == "in nineteen ninety two thousand five and nineteen oh five"
    assert said("2010 and 1100") == "twenty ten and eleven hundred"
    assert said("1,990 and 3000 and 1000") == "one thousand nine hundred ninety and three thousand and one thousand"


def test_decades():
    assert read("the 1990s, '90s and 1900s; 80s") == [
        ("the", "word", "the"), ("1990s", "number", "nineteen nineties"), (",", "punctuation", ""),
        ("'90s", "number", "nineties"), ("and", "word", "and"), ("1900s", "number", "nineteen hundreds"),
        (";", "punctuation", ""), ("80s", "number", "eighties"),
    ]  # fmt: skip
    assert said("100s and 1000s of 500s in the 2000s") == "hundreds and thousands of five hundreds in the two thousands"


def test_currency():
    cases = {
        "$5.20": "five dollars and twenty cents", "£3": "three pounds", "€1.50": "one euro and fifty cents",
        "$1 million": "one million dollars", "$1": "one dollar", "$0.99": "ninety nine cents", "$0.01": "one cent",
        "$2.00": "two dollars", "£1.01": "one pound and one penny", "£2.50": "two pounds and fifty pence",
        "$1,250": "one thousand two hundred fifty dollars", "$2.5 billion": "two point five billion dollars",
        "$5m": "five million dollars", "¥500": "five hundred yen", "$3.5": "three point five dollars",
        "$2005": "two thousand five dollars",
    }  # fmt: skip
    for text, words in cases.items():
        assert read(text) == [(text, "number", words)], text


def test_percentages():
    assert said("50% of 3.5 % and -2%") == "fifty percent of three point five percent and minus two percent"


def test_times():
    cases = {
        "10:30": "ten thirty", "3pm": "three p m", "3 p.m.": "three p m", "10:30am": "ten thirty a m",
        "10:05": "ten oh five", "9:00": "nine o'clock", "14:00": "fourteen hundred", "11 AM": "eleven a m",
        "7:45 p.m.": "seven forty five p m", "12:00pm": "twelve p m",
    }  # fmt: skip
    for text, words in cases.items():
        assert read(text) == [(text, "number", words)], text
    assert said("I am 3") == "i am three"  # "am" after a word is not a time


def test_ranges():
    assert read("1990-2000") == [("1990-2000", "number", "nineteen ninety to two thousand")]
    assert read("5-10") == [("5-10", "number", "five to ten")]
    assert said("pages 5–10 in 1990–95") == "pages five to ten in nineteen ninety to ninety five"  # en dashes


def test_fractions():
    cases = {
        "1/2": "one half", "3/4": "three quarters", "1/3": "one third", "2/3": "two thirds", "5/8": "five eighths",
        "1/4": "one quarter", "3/2": "three halves", "2 1/2": "two and one half", "7/1": "seven over one",
        "½": "one half",
    }  # fmt: skip
    for text, words in cases.items():
        assert read(text) == [(text, "number", words)], text


def test_units_after_numbers():
    assert said("5 km, 1 kg, 25°C and 3.5GB") == (
        "five kilometers one kilogram twenty five degrees celsius and three point five gigabytes"
    )
    assert said("5 grapes") == "five grapes"


def test_abbreviations_from_tables():
    assert read("Dr. Smith met Mrs. Jones vs. Prof. Lee, Jr. on Mt. Hood.") == [
        ("Dr.", "abbreviation", "doctor"), ("Smith", "word", "smith"), ("met", "word", "met"),
        ("Mrs.", "abbreviation", "missus"), ("Jones", "word", "jones"), ("vs.", "abbreviation", "versus"),
        ("Prof.", "abbreviation", "professor"), ("Lee", "word", "lee"), (",", "punctuation", ""),
        ("Jr.", "abbreviation", "junior"), ("on", "word", "on"), ("Mt.", "abbreviation", "mount"),
        ("Hood", "word", "hood"), (".", "punctuation", ""),
    ]  # fmt: skip
    assert said("e.g. apples, i.e. fruit, etc.") == "for example apples that is fruit et cetera"


def test_abbreviations_depend_on_the_next_word():
    assert said("St. Louis is on Main St. near 5th") == "saint louis is on main street near fifth"
    assert said("No. 5 and Vol. 2, p. 7") == "number five and volume two page seven"
    assert read("No.") == [("No", "word", "no"), (".", "punctuation", "")]


def test_initialisms():
    assert read("The FBI and NASA") == [
        ("The", "word", "the"), ("FBI", "initialism", "f b i"), ("and", "word", "and"), ("NASA", "word", "nasa"),
    ]  # fmt: skip
    assert said("UNICEF, the U.S.A. and the FBI's CDs") == "unicef the u s a and the f b i's c d's"
    assert said("IT and US SHOUTED") == "it and us shouted"  # known, known, longer than 5 letters
    assert read("plan B") == [("plan", "word", "plan"), ("B", "initialism", "b")]
    assert read("I saw a") == [("I", "word", "i"), ("saw", "word", "saw"), ("a", "word", "a")]
    assert said("MP3") == "m p three"


def test_urls_and_emails():
    assert read("Go to www.example.com now") == [
        ("Go", "word", "go"), ("to", "word", "to"), ("www.example.com", "url", "w w w dot example dot com"),
        ("now", "word", "now"),
    ]  # fmt: skip
    assert read("Mail bob@example.org.") == [
        ("Mail", "word", "mail"), ("bob@example.org", "email", "bob at example dot org"), (".", "punctuation", ""),
    ]  # fmt: skip
    assert read("https://github.com/a-b/c_d?q=10.") == [
        ("https://github.com/a-b/c_d?q=10", "url",
         "h t t p s colon slash slash github dot com slash a dash b slash c underscore d question mark q equals ten"),
        (".", "punctuation", ""),
    ]  # fmt: skip
    assert read("example.co.uk") == [("example.co.uk", "url", "example dot c o dot u k")]


def test_punctuation_and_symbols():
    assert read('"Hi," she said... Tom & Jerry + 2 = 4!?') == [
        ('"', "punctuation", ""), ("Hi", "word", "hi"), (',"', "punctuation", ""), ("she", "word", "she"),
        ("said", "word", "said"), ("...", "punctuation", ""), ("Tom", "word", "tom"), ("&", "symbol", "and"),
        ("Jerry", "word", "jerry"), ("+", "symbol", "plus"), ("2", "number", "two"), ("=", "symbol", "equals"),
        ("4", "number", "four"), ("!?", "punctuation", ""),
    ]  # fmt: skip
    assert said("# @ %") == "hash at percent"
    assert read("a—b") == [("a", "word", "a"), ("—", "punctuation", ""), ("b", "initialism", "b")]


def test_unpronounceable_text_is_skipped_with_a_reason():
    text = "Hi 😀 你好 \x07 Привет ok"
    tokens = tokenize(text, known)
    check_spans(text, tokens)
    assert [(t.text, t.kind) for t in tokens] == [
        ("Hi", "word"), ("😀", "skipped"), ("你好", "skipped"), ("\x07", "skipped"), ("Привет", "skipped"),
        ("ok", "word"),
    ]  # fmt: skip
    assert tokens[1].reason == "no pronunciation for U+1F600 GRINNING FACE (emoji)"
    assert "U+4F60" in tokens[2].reason and "U+597D" in tokens[2].reason and "(CJK)" in tokens[2].reason
    assert tokens[3].reason == "no pronunciation for U+0007 (control character)"
    assert "(cyrillic letter)" in tokens[4].reason
    assert all(t.spoken == () for t in tokens[1:5])
    family = "👨\u200d👩\u200d👧 and 👍🏽!"  # a ZWJ sequence and a skin tone modifier each stay one token
    assert [(t.text, t.kind) for t in tokenize(family)] == [
        ("👨\u200d👩\u200d👧", "skipped"), ("and", "word"), ("👍🏽", "skipped"), ("!", "punctuation"),
    ]  # fmt: skip


def test_offsets_slice_the_original_text():
    text = (
        "\u201cCafe\u0301 caf\u00e9\u201d\u00a0isn\u2019t \u2014 na\u00efve\u2026 \U0001f600 \u00bd 1\u20132 \ufb01ne"
    )
    tokens = tokenize(text)
    check_spans(text, tokens)
    assert [t.text for t in tokens] == [
        "\u201c", "Cafe\u0301", "caf\u00e9", "\u201d", "isn\u2019t", "\u2014", "na\u00efve", "\u2026", "\U0001f600",
        "\u00bd", "1\u20132", "\ufb01ne",
    ]  # fmt: skip
    assert [t.spoken for t in tokens if t.spoken] == [
        ("cafe",),
        ("cafe",),
        ("isn't",),
        ("naive",),
        ("one", "half"),
        ("one", "to", "two"),
        ("fine",),
    ]


def test_normalize_keeps_original_spans():
    norm = normalize("e\u0301\u2019\u2026\u00a0\ufb01")
    assert norm.text == "e'... fi"
    assert norm.spans == ((0, 2), (2, 3), (3, 4), (3, 4), (3, 4), (4, 5), (5, 6), (5, 6))
    assert normalize("\u200bab\u00ad").spans == ((1, 2), (2, 4))  # leading ZWSP dropped, soft hyphen joins b
    assert normalize("Stra\u00dfe \u00c6sir \u2212 5").text == "Strasse AEsir - 5"


def test_no_empty_words_and_kinds_are_known():
    text = "a" * 500 + " " + "9" * 200 + " 1" + "-1" * 100 + " '' -- ... $ % " + "A-" * 50
    tokens = tokenize(text)
    check_spans(text, tokens)
    assert all(t.kind in KINDS and all(SPOKEN.match(w) for w in t.spoken) for t in tokens)


def test_text_package_imports_no_torch_nor_onnxruntime():
    code = "import sys, g2p.text, g2p.text.tokens\nprint('torch' in sys.modules, 'onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


INTERESTING = st.sampled_from(
    [*"0123456789$£€¥%:/.,-'\"#@&+ apsmAPMkgKG°½",
     "\u2019", "\u201c", "\u2013", "\u2014", "\u00a0", "\u0301", "\u200d", "\ufe0f", "\U0001f600", "\u4f60", "\x07",
     "\ufb01", "\u2474", "\u00e9", "\u00df", "www.", "http://", ".com", "@x.org", "St. ", "No. ", "e.g.", "U.S.",
     "1990s", "'90s", "3 p.m.", "10:30", "1/2", "FBI", "didn't", "well-known", " million", "\ud800"],
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.lists(INTERESTING | st.characters(), max_size=40).map("".join)))
def test_tokenize_never_raises_and_spans_slice_back(text):
    tokens = tokenize(text, known)
    check_spans(text, tokens)
    for t in tokens:
        assert t.kind in KINDS
        assert all(SPOKEN.match(w) for w in t.spoken), t
        assert (t.kind == "skipped") == bool(t.reason)
        if t.kind in ("punctuation", "skipped"):
            assert t.spoken == ()


@pytest.mark.parametrize("text", ["", " ", "\n\t", "\u200b"])
def test_empty_and_blank_text_has_no_tokens(text):
    assert tokenize(text) == []


# The fast alternatives ("space" first, "plain", "lone") must cut and read every text as the general ones would.
_FAST_AS = {"plain": "word", "lone": "other"}
_GENERAL_NAMES = [n for n in tokens_module._ALTERNATIVES if n not in ("space", *_FAST_AS)]
_GENERAL = re.compile(
    "|".join(f"(?P<{n}>{tokens_module._ALTERNATIVES[n]})" for n in [*_GENERAL_NAMES[:-1], "space", "other"]),
    re.ASCII | re.DOTALL,
)
WORDISH = st.sampled_from(
    ["Mr", "mrs", "MRS", "vs", "Vs.", "www", "WWW.", "http", "https", "ftp", "CDs", "FBI's", "NASA", "A", "I", "x",
     "X", "don't", "DON'T", "I'm", "students'", "rock'n'roll", "o'-", "john.smith", "example", ".com", "No", "no.",
     "e", "g", "e.g", "it's", "Hs", "abc", "Hello", "hELLo", "mp3", "COVID", "-", "'", "#", ".", "..", "5", "19",
     "$", "£", "€", "¥", "@", ":", "/", "%", "+", "_", ",", "!", "?", "\"", "(", ")", " ", "  ", "\t", "\u00e9",
     "\ufb01", "\u2019", "km", "m", "p.m.", "St.", "art", "Sec"]
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.lists(WORDISH | INTERESTING | st.characters(), max_size=30).map("".join))
def test_fast_alternatives_cut_and_read_as_the_general_ones(text):
    norm = normalize(text).text
    fast = [(_FAST_AS.get(m.lastgroup, m.lastgroup), m.span()) for m in tokens_module._PATTERN.finditer(norm)]
    assert fast == [(m.lastgroup, m.span()) for m in _GENERAL.finditer(norm)]
    for m in tokens_module._PATTERN.finditer(norm):
        if m.lastgroup == "plain":
            kind, spoken = tokens_module.read_word(m.group(), known)
            assert tokens_module._read_plain(m.group(), known) == (kind, tokens_module._clean(spoken))
