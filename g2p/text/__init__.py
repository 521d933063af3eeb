"""The text front end (torch-free): normalisation, tokens with spoken words, phoneme alphabets, and the
:class:`Phonemizer` that pronounces them (lexicons first, the model for the rest). See docs/text-front-end.md."""

from g2p.text.alphabets import strip_stress, to_ipa
from g2p.text.phonemizer import Phonemizer, TextPron
from g2p.text.tokens import Token, tokenize

__all__ = ["Phonemizer", "TextPron", "Token", "strip_stress", "to_ipa", "tokenize"]
