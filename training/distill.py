"""Label words with a teacher ensemble's beam output, for training a student on it (sequence-level distillation).

    python -m training.distill --teacher t1/best.pt t2/best.pt t3/best.pt --words train --out distill/train.tsv
    python -m training.distill --teacher t1/best.pt t2/best.pt --words unlabeled.txt --out distill/extra.tsv

``--words train`` labels the teachers' own training words (the split their ``train_config`` records); a file gives
one word per line (``#`` comments, blank lines skipped). Words holding symbols the teachers never saw are skipped
and counted. Every test-split word and every dev word of the teachers' split is refused, so nothing distilled can
leak into a score. Writes ``word<TAB>phonemes`` (the best hypothesis, stress kept), readable by
``training.train --distill-data``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from g2p.decoding import DecodeOptions
from g2p.pipeline import transcribe
from g2p.tokenization import G2PTokenizers, UnknownSymbolError
from training import checkpoint as ckpt
from training.data import Splits
from training.ensemble import load_ensemble
from training.train import checkpoint_splits

SLICE = 8192  # words labelled between two flushes of the output


def readable(tok: G2PTokenizers, words: list[str]) -> tuple[list[str], int]:
    """The words the tokenizer can encode, and how many it could not."""
    kept = []
    for w in words:
        try:
            tok.encode_source([w])
        except UnknownSymbolError:
            continue
        kept.append(w)
    return kept, len(words) - len(kept)


def read_words(spec: str, splits: Splits) -> list[str]:
    if spec == "train":
        return sorted(splits.words("train"))
    words = []
    for line in Path(spec).read_text(encoding="utf-8").splitlines():
        w = line.split("#", 1)[0].strip().lower()
        if w:
            words.append(w)
    return sorted(set(words))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m training.distill", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--teacher", nargs="+", required=True, metavar="CKPT", help="one or more checkpoints")
    ap.add_argument("--words", required=True, help="'train' or a file of words, one per line")
    ap.add_argument("--out", required=True, help="the TSV to write (refused if it exists, unless --overwrite)")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--length-penalty", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    try:
        out = Path(args.out)
        if out.exists() and not args.overwrite:
            raise ValueError(f"--out {out} exists; pass --overwrite to replace it")
        if args.beam < 1 or args.batch_size < 1:
            raise ValueError("--beam and --batch-size must be >= 1")
        torch.set_num_threads(args.threads)
        splits = checkpoint_splits(args.teacher[0])
        held_out = splits.words("dev") | splits.words("test")
        words = read_words(args.words, splits)
        leaked = [w for w in words if w in held_out]
        words = [w for w in words if w not in held_out]
        backend, tok, configs = load_ensemble(args.teacher, args.device)
        words, unreadable = readable(tok, words)
        options = DecodeOptions(
            beam_size=args.beam, length_penalty=args.length_penalty, max_len=min(c.max_target_len for c in configs)
        )
        t0 = time.perf_counter()
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".partial")  # grows slice by slice: a stopped run keeps what it labelled
        with (
            tmp.open("w", encoding="utf-8") as f,
            tqdm(total=len(words), desc="distill", unit="word", file=sys.stderr, mininterval=5) as bar,
        ):
            for s in range(0, len(words), SLICE):
                part = words[s : s + SLICE]
                results = transcribe(backend, tok, part, options, batch_size=args.batch_size, progress=bar.update)
                for word, nbest in zip(part, results, strict=True):
                    if nbest and nbest[0].finished and nbest[0].phonemes:
                        f.write(f"{word}\t{' '.join(nbest[0].phonemes)}\n")
                f.flush()
        seconds = time.perf_counter() - t0
        tmp.replace(out)
    except (ValueError, ckpt.CheckpointError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = {
        "out": str(out),
        "teachers": list(args.teacher),
        "words": len(words),
        "skipped_held_out": len(leaked),
        "skipped_unreadable": unreadable,
        "beam": args.beam,
        "seconds": round(seconds, 1),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
