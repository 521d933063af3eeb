"""Output alphabets: ARPAbet with stress digits (the model's and CMUdict's) to IPA, and stress removal.

IPA conventions (broad American transcription, as CMUdict describes General American):

- stress marks ``ˈ`` (primary, digit 1) and ``ˌ`` (secondary, digit 2) go at the START OF THE SYLLABLE, i.e.
  before the longest run of consonants in front of the vowel that can begin an English syllable
  (:data:`ONSETS`; the maximal onset principle): "HH AH0 L OW1" -> "həˈloʊ", "AE1 B S T R AE2 K T" ->
  "ˈæbˌstɹækt"; unstressed (0) vowels get no mark;
- ``AH0`` -> ``ə`` and ``ER0`` -> ``ɚ`` (reduced); stressed ``AH`` -> ``ʌ``, ``ER`` -> ``ɝ``; a vowel written
  without a digit (after :func:`strip_stress`) takes the stressed quality;
- ``R`` -> ``ɹ``, ``G`` -> ``ɡ`` (U+0261), ``Y`` -> ``j``; no length marks (``IY`` -> ``i``, ``UW`` -> ``u``);
  diphthongs and affricates are written without tie bars (``aɪ``, ``tʃ``).
"""  # noqa: RUF002 (IPA)

from __future__ import annotations

import re
from collections.abc import Sequence

# Vowels: base phoneme -> (IPA when stressed or written without a digit, IPA when unstressed (digit 0)).
VOWELS: dict[str, tuple[str, str]] = {
    "AA": ("ɑ", "ɑ"), "AE": ("æ", "æ"), "AH": ("ʌ", "ə"), "AO": ("ɔ", "ɔ"), "AW": ("aʊ", "aʊ"),
    "AY": ("aɪ", "aɪ"), "EH": ("ɛ", "ɛ"), "ER": ("ɝ", "ɚ"), "EY": ("eɪ", "eɪ"), "IH": ("ɪ", "ɪ"),
    "IY": ("i", "i"), "OW": ("oʊ", "oʊ"), "OY": ("ɔɪ", "ɔɪ"), "UH": ("ʊ", "ʊ"), "UW": ("u", "u"),
}  # fmt: skip

CONSONANTS: dict[str, str] = {
    "B": "b", "CH": "tʃ", "D": "d", "DH": "ð", "F": "f", "G": "ɡ", "HH": "h", "JH": "dʒ", "K": "k", "L": "l",
    "M": "m", "N": "n", "NG": "ŋ", "P": "p", "R": "ɹ", "S": "s", "SH": "ʃ", "T": "t", "TH": "θ", "V": "v",
    "W": "w", "Y": "j", "Z": "z", "ZH": "ʒ",
}  # fmt: skip

STRESS_MARKS = {"0": "", "1": "ˈ", "2": "ˌ"}

# Consonant clusters that may begin an English syllable (besides any single consonant but NG).
ONSETS: frozenset[tuple[str, ...]] = frozenset(
    tuple(c.split())
    for c in (
        "P R", "P L", "B R", "B L", "T R", "D R", "K R", "K L", "G R", "G L", "F R", "F L", "TH R", "SH R",
        "T W", "D W", "K W", "G W", "TH W", "S W", "P Y", "B Y", "K Y", "G Y", "F Y", "V Y", "M Y", "HH Y",
        "S P", "S T", "S K", "S M", "S N", "S L", "S F",
        "S P R", "S P L", "S T R", "S K R", "S K W", "S K L", "S P Y", "S K Y",
    )
) | frozenset((c,) for c in CONSONANTS if c != "NG")  # fmt: skip

_PHONEME = re.compile(r"(?P<base>[A-Z]+)(?P<stress>[012]?)")


class UnknownPhonemeError(ValueError):
    """A phoneme is not ARPAbet (or carries a stress digit on a consonant)."""


def _as_list(phonemes: Sequence[str] | str) -> list[str]:
    """A space-separated string or a sequence of phonemes, as a list."""
    return phonemes.split() if isinstance(phonemes, str) else list(phonemes)


def strip_stress(phonemes: Sequence[str] | str) -> list[str]:
    """The phonemes without their stress digits: ["HH", "AH0", "L", "OW1"] -> ["HH", "AH", "L", "OW"]."""
    return [p.rstrip("012") for p in _as_list(phonemes)]


def _parse(phoneme: str) -> tuple[str, str]:
    """(base, stress digit or "") of one ARPAbet phoneme; raises :class:`UnknownPhonemeError`."""
    m = _PHONEME.fullmatch(phoneme)
    if not m or (m["base"] not in VOWELS and (m["base"] not in CONSONANTS or m["stress"])):
        raise UnknownPhonemeError(f"not an ARPAbet phoneme: {phoneme!r}")
    return m["base"], m["stress"]


def _onset_start(bases: list[str], vowel: int) -> int:
    """Index where the syllable of the vowel at ``vowel`` starts: the longest legal onset before it."""
    first = vowel
    while first > 0 and bases[first - 1] in CONSONANTS:
        first -= 1
    if first == 0:  # the word's first syllable takes all the consonants before its vowel
        return 0
    for start in range(first, vowel):
        if tuple(bases[start:vowel]) in ONSETS:
            return start
    return vowel


def to_ipa(phonemes: Sequence[str] | str) -> str:
    """ARPAbet (a sequence, or a space-separated string) -> IPA with stress marks at syllable starts:
    "HH AH0 L OW1" -> "həˈloʊ". Raises :class:`UnknownPhonemeError` naming a phoneme it does not know."""  # noqa: RUF002
    parsed = [_parse(p) for p in _as_list(phonemes)]
    bases = [base for base, _ in parsed]
    marks = [""] * len(parsed)
    for i, (base, stress) in enumerate(parsed):
        if base in VOWELS and stress in ("1", "2"):
            marks[_onset_start(bases, i)] = STRESS_MARKS[stress]
    out = []
    for mark, (base, stress) in zip(marks, parsed, strict=True):
        sound = VOWELS[base][stress == "0"] if base in VOWELS else CONSONANTS[base]
        out.append(mark + sound)
    return "".join(out)
