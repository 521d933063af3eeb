"""Word and phoneme error rates for G2P, scored the way the literature does (rapidfuzz edit distance).

A word is correct when the output equals ANY of its reference pronunciations. Its phoneme errors are the edit
distance to the CLOSEST reference; PER = total phoneme errors / total length of those closest references.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

_STRESS = re.compile(r"[0-9]+$")


def strip_stress(phones: Sequence[str]) -> tuple[str, ...]:
    """``("AH0", "B", "AW1", "T")`` -> ``("AH", "B", "AW", "T")``."""
    return tuple(_STRESS.sub("", p) for p in phones)


@dataclass(frozen=True)
class WordScore:
    correct: bool
    errors: int
    ref_len: int


def score_word(hyp: Sequence[str], refs: Sequence[Sequence[str]]) -> WordScore:
    """Score one output against every reference; ties on distance go to the shorter reference list order."""
    if not refs:
        raise ValueError("a word needs at least one reference pronunciation")
    best: tuple[int, int] | None = None
    for ref in refs:
        dist = Levenshtein.distance(list(hyp), list(ref))
        if best is None or dist < best[0]:
            best = (dist, len(ref))
    assert best is not None
    return WordScore(best[0] == 0, best[0], best[1])


@dataclass(frozen=True)
class ErrorRates:
    words: int
    word_errors: int
    phone_errors: int
    ref_phones: int

    @property
    def wer(self) -> float:
        return 100.0 * self.word_errors / self.words if self.words else 0.0

    @property
    def per(self) -> float:
        return 100.0 * self.phone_errors / self.ref_phones if self.ref_phones else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {"words": self.words, "wer": round(self.wer, 3), "per": round(self.per, 3)}


def error_rates(
    hyps: Mapping[str, Sequence[str]], refs: Mapping[str, Sequence[Sequence[str]]], stress: bool
) -> ErrorRates:
    """WER/PER of ``hyps`` (word -> phonemes) against ``refs`` (word -> pronunciations).

    ``stress=False`` removes stress digits from both sides first (the literature's scoring).
    Every reference word must have a hypothesis.
    """
    missing = [w for w in refs if w not in hyps]
    if missing:
        raise ValueError(f"{len(missing)} reference words have no hypothesis, e.g. {missing[:3]}")
    wrong = errors = length = 0
    for word, prons in refs.items():
        hyp = tuple(hyps[word])
        candidates = [tuple(p) for p in prons]
        if not stress:
            hyp = strip_stress(hyp)
            candidates = [strip_stress(p) for p in candidates]
        s = score_word(hyp, candidates)
        wrong += not s.correct
        errors += s.errors
        length += s.ref_len
    return ErrorRates(len(refs), wrong, errors, length)
