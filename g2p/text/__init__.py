"""The text front end's pure-text stages (torch-free, model-free): normalisation, tokens with spoken words, and
phoneme alphabets."""

from g2p.text.alphabets import strip_stress, to_ipa
from g2p.text.tokens import Token, tokenize

__all__ = ["Token", "strip_stress", "to_ipa", "tokenize"]
