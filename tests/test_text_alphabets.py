"""ARPAbet -> IPA and stress removal, checked against the shipped model's phoneme inventory."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT

from g2p.text import strip_stress, to_ipa
from g2p.text.alphabets import CONSONANTS, VOWELS, UnknownPhonemeError


def inventory() -> list[str]:
    """The phonemes of the shipped bundle's target tokenizer, special tokens left out."""
    data = json.loads((ROOT / "models/g2p/1/tgt_tokenizer.json").read_text(encoding="utf-8"))
    special = {t["content"] for t in data["added_tokens"] if t["special"]}
    return sorted(p for p in data["model"]["vocab"] if p not in special)


def test_every_phoneme_of_the_shipped_inventory_maps():
    phonemes = inventory()
    assert len(phonemes) == 69  # 15 vowels x 3 stresses + 24 consonants
    assert {p.rstrip("012") for p in phonemes} == set(VOWELS) | set(CONSONANTS)  # the 39 CMUdict phonemes
    for p in phonemes:
        ipa = to_ipa([p])
        assert ipa and ipa.strip("ˈˌ") and not any(c.isascii() and c.isupper() for c in ipa), p


@pytest.mark.parametrize(
    ("arpabet", "ipa"),
    [
        ("HH AH0 L OW1", "həˈloʊ"),
        ("K AE1 T", "ˈkæt"),
        ("AH0 B AW1 T", "əˈbaʊt"),
        ("B ER1 D", "ˈbɝd"),
        ("OW1 V ER0", "ˈoʊvɚ"),
        ("IH2 N F ER0 M EY1 SH AH0 N", "ˌɪnfɚˈmeɪʃən"),
        ("AE1 B S T R AE2 K T", "ˈæbˌstɹækt"),
        ("EH1 K S T R AH0", "ˈɛkstɹə"),
        ("JH AH1 M P S", "ˈdʒʌmps"),
        ("TH IH1 NG K IH0 NG", "ˈθɪŋkɪŋ"),
        ("CH AY1 L D", "ˈtʃaɪld"),
        ("Y UW1 ZH AH0 W AH0 L", "ˈjuʒəwəl"),
        ("DH AH0", "ðə"),
        ("B OY1 G AO2 R", "ˈbɔɪˌɡɔɹ"),
        ("K AO1 N T R AE2 K T", "ˈkɔnˌtɹækt"),
    ],
)
def test_hand_checked_ipa(arpabet, ipa):
    assert to_ipa(arpabet.split()) == ipa
    assert to_ipa(arpabet) == ipa  # a space-separated string works too


def test_strip_stress():
    assert strip_stress(["HH", "AH0", "L", "OW1"]) == ["HH", "AH", "L", "OW"]
    assert strip_stress("IH2 N F ER0") == ["IH", "N", "F", "ER"]
    assert to_ipa(strip_stress("HH AH0 L OW1")) == "hʌloʊ"  # no digit: the stressed quality, no mark


@pytest.mark.parametrize("bad", ["XX", "K1", "ah0", "AH3", ""])
def test_unknown_phoneme_is_named(bad):
    with pytest.raises(UnknownPhonemeError, match="not an ARPAbet phoneme"):
        to_ipa([bad])
