"""Unlabeled English words for distillation: a word list minus every word the CMU dictionary or the test split holds.

    apt-get download wamerican-huge && dpkg -x wamerican-huge_*.deb /tmp/wam
    python -m training.unlabeled_words /tmp/wam/usr/share/dict/american-english-huge --out .gpu/unlabeled.txt

Keeps lower-cased words of letters (with at most one inner apostrophe, no possessive ``'s``), 2 to 30 characters.
Dropping every dictionary word keeps dev and test words out whatever split a run draws; the teachers' labels for
these words are then the only pronunciations a student sees of them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

from g2p.lexicon import read_cmudict, read_test_split
from training.train import DEFAULT_TEST_SPLIT

WORD = re.compile(r"^[a-z]+(?:'[a-z]+)?$")


def unlabeled(lines: list[str], known: set[str]) -> list[str]:
    words = set()
    for line in lines:
        w = line.strip().lower()
        if 2 <= len(w) <= 30 and WORD.match(w) and not w.endswith("'s") and w not in known:
            words.add(w)
    return sorted(words)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.unlabeled_words", description=__doc__)
    ap.add_argument("wordlist")
    ap.add_argument("--out", required=True)
    ap.add_argument("--test-split", default=str(DEFAULT_TEST_SPLIT))
    args = ap.parse_args(argv)
    src = Path(args.wordlist)
    if not src.is_file():
        print(f"error: word list not found: {src}", file=sys.stderr)
        return 2
    known = {w for w, _ in read_cmudict()} | set(read_test_split(args.test_split))
    words = unlabeled(src.read_text(encoding="utf-8", errors="replace").splitlines(), known)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(w + "\n" for w in words), encoding="utf-8")
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    src_digest = hashlib.sha256(src.read_bytes()).hexdigest()
    print(
        json.dumps(
            {"source": str(src), "source_sha256": src_digest, "out": str(out), "words": len(words), "sha256": digest}
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
