"""Tokenizers for both sides of the task, built on the Hugging Face `tokenizers` library.

Source side: one token per character of the normalised spelling (NFKC, then lowercase).
Target side: one token per whitespace-separated phoneme (ARPAbet with stress digits, e.g. ``AH0``).

Both vocabularies start with the same four special tokens, so their ids are fixed:
``<pad>=0``, ``<s>=1`` (decoder start), ``</s>=2`` (end of sequence), ``<unk>=3``.

The tokenizers are saved as JSON files next to a checkpoint (and later inside a model bundle) and are
loaded without torch. An input holding characters the source vocabulary does not know raises
:class:`UnknownSymbolError` naming them; it is never silently mapped to ``<unk>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

SRC_TOKENIZER_FILE = "src_tokenizer.json"
TGT_TOKENIZER_FILE = "tgt_tokenizer.json"


class UnknownSymbolError(ValueError):
    """An input holds symbols that the vocabulary does not contain."""

    def __init__(self, text: str, symbols: Sequence[str], side: str) -> None:
        self.text = text
        self.symbols = list(symbols)
        self.side = side
        shown = ", ".join(repr(s) for s in self.symbols)
        super().__init__(f"{side} {text!r} holds unsupported symbol(s): {shown}")


def _source_normalizer() -> normalizers.Normalizer:
    return normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase(), normalizers.Strip()])


def _vocab(symbols: Iterable[str]) -> dict[str, int]:
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for sym in sorted(set(symbols)):
        if sym not in vocab:
            vocab[sym] = len(vocab)
    return vocab


def build_source_tokenizer(words: Iterable[str]) -> Tokenizer:
    """Character-level tokenizer whose vocabulary is every character of the normalised ``words``."""
    norm = _source_normalizer()
    chars = {c for w in words for c in norm.normalize_str(w)}
    chars.discard(" ")
    tok = Tokenizer(WordLevel(_vocab(chars), unk_token=UNK))
    tok.normalizer = _source_normalizer()
    # Every character becomes its own token ("isolated" keeps each regex match as a piece).
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok


def build_target_tokenizer(pronunciations: Iterable[str]) -> Tokenizer:
    """Whitespace tokenizer over phoneme symbols."""
    symbols = {p for pron in pronunciations for p in pron.split()}
    tok = Tokenizer(WordLevel(_vocab(symbols), unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok


@dataclass(frozen=True)
class G2PTokenizers:
    """The source and target tokenizers of one model, with validation and padding helpers."""

    src: Tokenizer
    tgt: Tokenizer

    # ---- construction / persistence -------------------------------------------------------
    @classmethod
    def build(cls, words: Iterable[str], pronunciations: Iterable[str]) -> G2PTokenizers:
        return cls(build_source_tokenizer(words), build_target_tokenizer(pronunciations))

    @classmethod
    def load(cls, directory: str | Path) -> G2PTokenizers:
        d = Path(directory)
        return cls(
            Tokenizer.from_file(str(d / SRC_TOKENIZER_FILE)),
            Tokenizer.from_file(str(d / TGT_TOKENIZER_FILE)),
        )

    def save(self, directory: str | Path) -> list[Path]:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        paths = [d / SRC_TOKENIZER_FILE, d / TGT_TOKENIZER_FILE]
        self.src.save(str(paths[0]))
        self.tgt.save(str(paths[1]))
        return paths

    # ---- vocabulary facts ------------------------------------------------------------------
    @property
    def src_vocab_size(self) -> int:
        return int(self.src.get_vocab_size(with_added_tokens=True))

    @property
    def tgt_vocab_size(self) -> int:
        return int(self.tgt.get_vocab_size(with_added_tokens=True))

    def source_alphabet(self) -> list[str]:
        """The characters an input word may hold (after normalisation)."""
        return sorted(s for s in self.src.get_vocab() if s not in SPECIAL_TOKENS)

    def phoneme_inventory(self) -> list[str]:
        return sorted(s for s in self.tgt.get_vocab() if s not in SPECIAL_TOKENS)

    def normalize(self, word: str) -> str:
        normalizer = self.src.normalizer
        assert normalizer is not None
        return str(normalizer.normalize_str(word))

    # ---- encoding ----------------------------------------------------------------------------
    def encode_source(self, words: Sequence[str]) -> list[list[int]]:
        """Token ids of each word followed by ``</s>``; raises on an empty word or an unknown character."""
        encs = self.src.encode_batch(list(words), add_special_tokens=False)
        out: list[list[int]] = []
        for word, enc in zip(words, encs, strict=True):
            if UNK_ID in enc.ids:
                raise UnknownSymbolError(word, _unknown(word, enc), "word")
            if not enc.ids:
                raise ValueError(f"word {word!r} is empty after normalisation")
            out.append([*enc.ids, EOS_ID])
        return out

    def encode_target(self, pronunciations: Sequence[str]) -> list[list[int]]:
        """Decoder *output* ids of each pronunciation: phonemes then ``</s>`` (no ``<s>``)."""
        encs = self.tgt.encode_batch(list(pronunciations), add_special_tokens=False)
        out: list[list[int]] = []
        for pron, enc in zip(pronunciations, encs, strict=True):
            if UNK_ID in enc.ids:
                raise UnknownSymbolError(pron, _unknown(pron, enc), "pronunciation")
            out.append([*enc.ids, EOS_ID])
        return out

    def decode_target(self, ids: Sequence[int]) -> list[str]:
        """Phonemes of one output sequence; stops at ``</s>`` and skips other special tokens."""
        phones: list[str] = []
        for i in ids:
            if i == EOS_ID:
                break
            if i < len(SPECIAL_TOKENS):
                continue
            tok = self.tgt.id_to_token(int(i))
            if tok is not None:
                phones.append(tok)
        return phones


def _unknown(text: str, enc: Encoding) -> list[str]:
    """The pieces of the original text that mapped to ``<unk>`` (offsets point into the original)."""
    return sorted({text[a:b] for (a, b), i in zip(enc.offsets, enc.ids, strict=True) if i == UNK_ID})


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int = PAD_ID) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id lists into ``ids (B, T) int64`` and ``mask (B, T) bool`` (True = real token)."""
    if not seqs:
        raise ValueError("cannot pad an empty batch")
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=bool)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = True
    return ids, mask
