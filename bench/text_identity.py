"""The text front end's outputs, compared byte for byte between two trees of this project (a change's "no output
changes" check): every token (text, span, kind, spoken words, skip reason), every word's pronunciation, source,
alternatives, score and cached flag, the flat strings and the service's messages (``service.text.to_proto``) in the
3 alphabets, and the model calls made, on text_bench's fortunes sample plus a few edge texts; one text per call
(cold model cache), again (warm), 64 texts per call, and 64 per call with a user lexicon and request overrides.

    git worktree add /tmp/before HEAD~3
    python bench/text_identity.py /tmp/before            # vs this tree; exit 1 when anything differs

Each tree runs in its own process with the same bundle (``--bundle``, default this tree's models/g2p/1).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EDGE_TEXTS = [
    "", " ", "ÄÖÜ café naïve 你好 😀", "U.S. FBI's CDs MP3 COVID-19 19-year-old $5.20 3 p.m. 10:30am", "x", "A", "I",
    "students' john's didn't www.example.com a.b@c.de 1990s '90s #5 No. 5 St. Louis Main St.", "a" * 300,
    "supercalifragilisticexpialidociousxx" * 3, "\u00e9\u0301\u200d", "ℌ⑴½ ﬁ",
]  # fmt: skip
ALPHABETS = ("arpabet", "arpabet-nostress", "ipa")


def dump(texts: list[str], bundle: str, out: Path) -> None:
    """In the tree on PYTHONPATH: one JSON line per text and mode, then the mode's model calls."""
    import g2p
    from g2p.text.phonemizer import Phonemizer
    from service.text import to_proto

    assert Path(g2p.__file__).resolve().is_relative_to(Path.cwd().resolve()), f"g2p from {g2p.__file__}"
    ph = Phonemizer.from_bundle(bundle)
    lexicon = ph.lexicon
    some = sorted(lexicon)[::5000]
    user = {w: (("HH", "AH0"), *lexicon[w][:1]) for w in some[:10]} | {"zorblex": (("Z", "AO1", "R"),)}
    over = {w: (("T", "EH1", "S", "T"),) for w in ["the", "a", "i", "b", some[3]]}
    calls: list[list[str]] = []
    real = ph.model
    assert real is not None
    ph.model = lambda words: (calls.append(list(words)), real(words))[1]

    def record(r: Any) -> dict:
        tokens = [[t.token.text, t.token.start, t.token.end, t.token.kind, list(t.token.spoken), t.token.reason,
                   [[w.word, list(w.phonemes), w.source, [list(a) for a in w.alternatives], w.score, w.cached]
                    for w in t.words]] for t in r.tokens]  # fmt: skip
        protos = {
            a: hashlib.sha256(to_proto(r, a).SerializeToString(deterministic=True)).hexdigest() for a in ALPHABETS
        }
        return {"tokens": tokens, "flat": {a: r.phonemes(a) for a in ALPHABETS}, "protos": protos,
                "sources": r.sources()}  # fmt: skip

    batches = [texts[i : i + 64] for i in range(0, len(texts), 64)]
    with out.open("w") as f:
        for mode in ("one text per call", "warm cache", "64 per call", "64 per call, user lexicon and overrides"):
            if mode != "warm cache":
                ph.cache = type(ph.cache)(ph.cache.capacity)
            if mode in ("one text per call", "warm cache"):
                results = [ph(t) for t in texts]
            elif mode == "64 per call":
                results = [r for b in batches for r in ph(b)]
            else:
                results = [r for b in batches for r in ph.phonemize(b, over, None, user)]
            for i, r in enumerate(results):
                f.write(json.dumps({"mode": mode, "text": i} | record(r), ensure_ascii=False) + "\n")
            f.write(json.dumps({"mode": mode, "model calls": calls}) + "\n")
            calls.clear()


def run_tree(tree: Path, texts_file: Path, bundle: str, out: Path) -> None:
    env = os.environ | {"PYTHONPATH": str(tree)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--dump", str(texts_file), "--bundle", bundle, str(out)]
    subprocess.run(cmd, cwd=tree, env=env, check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before", type=Path, help="the other tree (e.g. a git worktree of an earlier commit)")
    ap.add_argument("after", type=Path, nargs="?", default=ROOT, help="default: this tree")
    ap.add_argument("--texts", type=int, default=2000, help="fortunes sampled as text_bench samples them")
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--bundle", default=str(ROOT / "models" / "g2p" / "1"))
    ap.add_argument("--dump", type=Path, help=argparse.SUPPRESS)  # a child: the texts file; the positional: out
    args = ap.parse_args()
    if args.dump:
        dump(json.loads(args.dump.read_text()), args.bundle, args.before)
        return 0
    sys.path.insert(0, str(ROOT))
    from text_bench import fortunes_dir, read_fortunes  # this folder's script: the bench's corpus, read the same way

    with tempfile.TemporaryDirectory() as tmp:
        corpus, _ = read_fortunes(fortunes_dir(Path(tmp))[0])
        texts = random.Random(args.seed).sample(corpus, args.texts) + EDGE_TEXTS
        texts_file = Path(tmp) / "texts.json"
        texts_file.write_text(json.dumps(texts))
        outs = [Path(tmp) / "before.jsonl", Path(tmp) / "after.jsonl"]
        for tree, out in zip((args.before, args.after), outs, strict=True):
            run_tree(tree.resolve(), texts_file, args.bundle, out)
        before, after = (o.read_text().splitlines() for o in outs)
    differ = [(a, b) for a, b in zip(before, after, strict=False) if a != b]
    print(f"{len(texts)} texts ({args.texts} fortunes, seed {args.seed}, + {len(EDGE_TEXTS)} edge texts) x 4 modes: "
          f"{len(before)} / {len(after)} lines (records and model calls), {len(differ)} differ")  # fmt: skip
    for a, b in differ[:3]:
        print(f"  before: {a[:300]}\n  after:  {b[:300]}")
    return 1 if differ or len(before) != len(after) else 0


if __name__ == "__main__":
    raise SystemExit(main())
