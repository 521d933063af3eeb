"""Evaluate a checkpoint on the benchmark test split (12k CMUdict words).

    python -m training.evaluate --checkpoint checkpoints/cmudict-default/best.pt --beam 5

Prints a table and writes it as JSON and Markdown. Two scorings:
(a) stress removed, a word is correct if it equals ANY reference pronunciation of the test file (the
    literature's scoring, comparable with published numbers);
(b) with stress, against the stressed pronunciations the ``cmudict`` package gives for the same words.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from g2p.decoding import DecodeOptions
from g2p.lexicon import LexiconError, group, read_cmudict, read_test_split
from g2p.metrics import error_rates
from g2p.pipeline import transcribe
from g2p.tokenization import UnknownSymbolError
from training import checkpoint as ckpt
from training.ensemble import load_ensemble
from training.train import DEFAULT_TEST_SPLIT, checkpoint_splits


def references(checkpoint: str | Path, split: str, test_split: str | Path) -> dict[str, list[str]]:
    """{word: plain (unstressed or stressed) reference pronunciations} of the test file or the run's dev words."""
    if split == "test":
        return read_test_split(test_split)
    if split == "dev":
        return group(checkpoint_splits(checkpoint).dev)
    raise ValueError(f"--split must be test or dev, got {split!r}")


def evaluate(
    checkpoint: str | Path | Sequence[str | Path],
    test_split: str | Path = DEFAULT_TEST_SPLIT,
    beams: tuple[int, ...] = (1, 5),
    length_penalty: float = 1.0,
    limit: int | None = None,
    threads: int = 2,
    split: str = "test",
    device: str = "cpu",
    batch_size: int = 256,
) -> dict[str, Any]:
    """Score one checkpoint, or several as an ensemble (their log-probabilities averaged at each step)."""
    torch.set_num_threads(threads)
    paths = [checkpoint] if isinstance(checkpoint, str | Path) else list(checkpoint)
    backend, tokenizers, configs = load_ensemble(paths, device)
    loaded = ckpt.load_model(paths[0])
    refs = references(paths[0], split, test_split)
    plain_refs = {w: [p.split() for p in prons] for w, prons in refs.items()}
    words = sorted(plain_refs)[:limit] if limit else sorted(plain_refs)
    plain_refs = {w: plain_refs[w] for w in words}
    stressed_all = group(read_cmudict())
    stressed_refs = {w: [p.split() for p in stressed_all[w]] for w in words if w in stressed_all}
    try:
        tokenizers.encode_source(words)
    except UnknownSymbolError as exc:
        raise LexiconError(f"the {split} words hold characters this model cannot read: {exc}") from exc

    rows = []
    for beam in beams:
        max_len = min(c.max_target_len for c in configs)
        options = DecodeOptions(beam_size=beam, length_penalty=length_penalty, max_len=max_len)
        t0 = time.perf_counter()
        with tqdm(total=len(words), desc=f"beam {beam}", unit="word", file=sys.stderr) as bar:
            out = transcribe(backend, tokenizers, words, options, batch_size=batch_size, progress=bar.update)
        seconds = time.perf_counter() - t0
        hyps = {w: list(r[0].phonemes) for w, r in zip(words, out, strict=True)}
        plain = error_rates(hyps, plain_refs, stress=False)
        stressed = error_rates({w: hyps[w] for w in stressed_refs}, stressed_refs, stress=True)
        rows.append(
            {
                "beam": beam,
                "length_penalty": length_penalty,
                "words": plain.words,
                "wer": round(plain.wer, 2),
                "per": round(plain.per, 2),
                "wer_stress": round(stressed.wer, 2),
                "per_stress": round(stressed.per, 2),
                "stress_words": stressed.words,
                "seconds": round(seconds, 1),
                "words_per_s": round(len(words) / seconds, 1),
            }
        )
    cfg = loaded.config
    return {
        "checkpoint": str(paths[0]) if len(paths) == 1 else [str(p) for p in paths],
        "split": split,
        "test_split": str(test_split) if split == "test" else f"dev words of {paths[0]}",
        "model": {
            "parameters": loaded.model.num_parameters(),
            "d_model": cfg.d_model,
            "layers": f"{cfg.n_encoder_layers}+{cfg.n_decoder_layers}",
            "heads": cfg.n_heads,
            "d_ff": cfg.d_ff,
            "epoch": loaded.raw.get("epoch"),
            "step": loaded.raw.get("step"),
            "averaged_epochs": loaded.raw.get("averaged_epochs", 1),
            "ensemble_members": len(paths),
        },
        "hardware": f"{platform.processor() or platform.machine()}, {threads} threads, {device}, "
        f"torch {torch.__version__}",
        "results": rows,
    }


def _split_name(report: dict[str, Any]) -> str:
    return Path(report["test_split"]).name if report.get("split", "test") == "test" else str(report["test_split"])


def to_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Checkpoint `{report['checkpoint']}` on `{_split_name(report)}` "
        f"({report['results'][0]['words']} words); model {report['model']}.",
        "",
        "| decoding | WER % (no stress, any ref) | PER % (no stress) | WER % (stress) | PER % (stress) | words/s |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        name = "greedy" if r["beam"] == 1 else f"beam {r['beam']} (lp {r['length_penalty']})"
        lines.append(
            f"| {name} | {r['wer']:.2f} | {r['per']:.2f} | {r['wer_stress']:.2f} | {r['per_stress']:.2f} "
            f"| {r['words_per_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m training.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkpoint", required=True, nargs="+", help="one checkpoint, or several: an ensemble")
    ap.add_argument("--split", default="test", choices=["test", "dev"], help="the test file or the run's dev words")
    ap.add_argument("--test-split", default=str(DEFAULT_TEST_SPLIT))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--beam", type=int, nargs="+", default=[1, 5], help="beam sizes to evaluate (1 = greedy)")
    ap.add_argument("--length-penalty", type=float, default=1.0)
    ap.add_argument("--limit", type=int, default=None, help="evaluate only the first N test words")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--report", default=None, help="write <report>.json and <report>.md")
    args = ap.parse_args(argv)
    try:
        if any(b < 1 for b in args.beam):
            raise ValueError(f"--beam sizes must be >= 1, got {args.beam}")
        if args.limit is not None and args.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {args.limit}")
        report = evaluate(
            args.checkpoint,
            args.test_split,
            tuple(args.beam),
            args.length_penalty,
            args.limit,
            args.threads,
            args.split,
            args.device,
            args.batch_size,
        )
    except (ValueError, ckpt.CheckpointError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    md = to_markdown(report)
    print(md)
    if args.report:
        base = Path(args.report)
        base.parent.mkdir(parents=True, exist_ok=True)
        base.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        base.with_suffix(".md").write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
