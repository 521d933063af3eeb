"""What an export is asked to do, and the held-out words its gates decode (shared by the exporter and the variants,
so neither imports the other)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from g2p.lexicon import read_test_split
from training.train import DEFAULT_TEST_SPLIT


@dataclass
class ExportOptions:
    checkpoint: Path
    name: str
    root: Path = Path("models")
    version: int | None = None
    atol: float = 1e-4
    rtol: float = 1e-4
    parity_words: int = 500
    words_file: Path = DEFAULT_TEST_SPLIT
    beams: tuple[int, ...] = (1, 5)
    variants: tuple[str, ...] = ("fused", "int8", "fp16")
    int8_max_wer_increase: float = 0.5
    int8_eval_words: int | None = None  # None = the whole test split
    check_determinism: bool = True
    lexicon: bool = True  # ship the CMU dictionary in the bundle (the text front end's lexicon)
    threads: int = 2
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr))


def held_out_words(path: Path, n: int | None, alphabet: set[str]) -> list[str]:
    """``n`` words spread evenly over the sorted test split (all when n is None), readable by the model."""
    words = sorted(w for w in read_test_split(path) if set(w) <= alphabet)
    if n is None or n >= len(words):
        return words
    stride = len(words) / n
    return [words[int(i * stride)] for i in range(n)]
