"""Engines side by side on the shipped model, in one run: PyTorch eager, ONNX Runtime (the torch.onnx fp32
graphs; the fused fp32 variant, the service's default on the CPU; int8 quantised from it), CTranslate2 (fp32, int8,
converted from the same checkpoint), the peer g2p_en, and the machine's matmul peak.

    python bench/engines.py [--threads 2] [--batch1-words 300] [--out bench/results/engines]   (make bench)
    python bench/engines.py --quick     # smoke (make bench-quick, CI): a few words; every engine runs and agrees

Every engine decodes the same held-out test words with the same number of threads. Greedy and beam 5, batch 1
(a sample) and batch 32 (all 11,994 words). Results: Markdown + JSON + a PNG plot. Ratios are taken within the run.

The ONNX Runtime vs CTranslate2 targets are also measured head to head: both engines stay loaded in their own
processes and take turns on the same greedy batch-32 run, several rounds; the ratio is the median of the rounds'
ratios, so a slow minute on this shared machine hits both sides of a round.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from g2p.decoding import DecodeOptions  # noqa: E402
from g2p.lexicon import read_test_split  # noqa: E402
from g2p.metrics import error_rates  # noqa: E402
from g2p.ort_backend import SessionConfig, ort_replicas  # noqa: E402
from g2p.pipeline import ParallelTranscriber, transcribe  # noqa: E402
from g2p.tokenization import G2PTokenizers  # noqa: E402

CHECKPOINT = ROOT / "checkpoints" / "cmudict-default" / "best.pt"
BUNDLE = ROOT / "models" / "g2p" / "1"
TEST = ROOT / "data" / "cmudict-0.7b.test"

Decoder = Callable[[list[str], int, int], list[str]]  # (words, beam, batch) -> phoneme strings


@dataclass
class Row:
    engine: str
    precision: str
    decoding: str
    batch: int
    words: int
    seconds: float
    tokens: int

    @property
    def words_per_s(self) -> float:
        return self.words / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


# ------------------------------------------------------------------------------------------------ engines
def torch_engine(tok: G2PTokenizers, threads: int) -> Decoder:
    import torch

    from training import checkpoint as ckpt
    from training.backend import TorchBackend

    torch.set_num_threads(threads)
    backend = TorchBackend(ckpt.load_model(CHECKPOINT).model)

    def run(words: list[str], beam: int, batch: int) -> list[str]:
        with torch.inference_mode():
            out = transcribe(backend, tok, words, DecodeOptions(beam_size=beam, max_len=48), batch_size=batch)
        return [" ".join(r[0].phonemes) for r in out]

    return run


def ort_engine(tok: G2PTokenizers, threads: int, variant: str) -> Decoder:
    """``threads`` sessions of one intra-op thread each, decoding different batches at once (ParallelTranscriber);
    spinning off, IO binding: the server's settings."""
    config = SessionConfig(intra_op_threads=1, allow_spinning=False)
    engine = ParallelTranscriber(ort_replicas(BUNDLE, threads, variant, config=config))

    def run(words: list[str], beam: int, batch: int) -> list[str]:
        out = engine.transcribe(tok, words, DecodeOptions(beam_size=beam, max_len=48), batch_size=batch)
        return [" ".join(r[0].phonemes) for r in out]

    return run


def ct2_engine(tok: G2PTokenizers, threads: int, quantization: str | None, workdir: Path, inter: bool) -> Decoder:
    """``inter``: ``threads`` translator replicas of one thread each (CTranslate2's own data parallelism, the same
    layout as our ONNX Runtime engine); else one replica with ``threads`` intra-op threads."""
    import ctranslate2
    from ct2_convert import convert

    path = convert(CHECKPOINT, workdir / f"ct2-{quantization or 'float32'}", quantization)
    layout = {"intra_threads": 1, "inter_threads": threads} if inter else {"intra_threads": threads, "inter_threads": 1}
    translator = ctranslate2.Translator(str(path), device="cpu", **layout)

    def run(words: list[str], beam: int, batch: int) -> list[str]:
        src = [[tok.src.id_to_token(i) for i in ids] for ids in tok.encode_source(words)]
        order = sorted(range(len(src)), key=lambda i: len(src[i]))  # same length bucketing as ours
        res = translator.translate_batch(
            [src[i] for i in order], beam_size=beam, max_decoding_length=48, max_batch_size=batch
        )
        out = [""] * len(words)
        for i, r in zip(order, res, strict=True):
            out[i] = " ".join(r.hypotheses[0])
        return out

    return run


def g2p_en_engine() -> Callable[[list[str]], list[str]]:
    """The peer (PyPI g2p_en 2.1.0, numpy GRU): its neural predictor only; its dictionary lookup would answer
    every CMUdict word from the dictionary, and its nltk tagger/corpus downloads are skipped (offline)."""
    import importlib
    import types

    import nltk

    nltk.download = lambda *a, **k: True  # type: ignore[assignment]  # the module asks at import: offline here
    module = importlib.import_module("g2p_en.g2p")
    g = module.G2p.__new__(module.G2p)
    proto = types.SimpleNamespace()
    module.G2p.__init__.__globals__["cmudict"] = types.SimpleNamespace(dict=lambda: {})
    module.G2p.__init__(g)  # graphemes, phonemes, weights; an empty dictionary
    del proto

    def run(words: list[str]) -> list[str]:
        return [" ".join(g.predict(w)) for w in words]

    return run


# ------------------------------------------------------------------------------------------------ helpers
def matmul_peak_gflops(threads: int, n: int = 1024, repeat: int = 20) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return 2 * n**3 * repeat / (time.perf_counter() - t) / 1e9


def model_flops(tok: G2PTokenizers, words: list[str], outputs: list[str]) -> float:
    """Multiply-adds x 2 of the projections and FFNs (attention scores are small at these lengths)."""
    cfg = json.loads((BUNDLE / "manifest.json").read_text())["model_config"]
    d, f, le, ld, v = (
        cfg["d_model"],
        cfg["d_ff"],
        cfg["n_encoder_layers"],
        cfg["n_decoder_layers"],
        cfg["tgt_vocab_size"],
    )
    src_tokens = sum(len(ids) for ids in tok.encode_source(words))
    tgt_tokens = sum(len(o.split()) + 1 for o in outputs)
    per_src = le * (4 * d * d + 2 * d * f) + ld * 2 * d * d  # encoder + cross-attention K/V once
    per_tgt = ld * (6 * d * d + 2 * d * f) + d * v
    return 2.0 * (src_tokens * per_src + tgt_tokens * per_tgt)


def timed(fn: Callable[[], list[str]]) -> tuple[list[str], float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


# ------------------------------------------------------------------------------------------------ main
ENGINES = {
    ("pytorch", "fp32"): lambda tok, threads, tmp: torch_engine(tok, threads),
    ("onnxruntime", "fp32"): lambda tok, threads, tmp: ort_engine(tok, threads, "fp32"),
    ("onnxruntime-fused", "fp32"): lambda tok, threads, tmp: ort_engine(tok, threads, "fused"),
    ("onnxruntime", "int8"): lambda tok, threads, tmp: ort_engine(tok, threads, "int8"),
    ("ctranslate2", "fp32"): lambda tok, threads, tmp: ct2_engine(tok, threads, None, tmp, inter=True),
    ("ctranslate2", "int8"): lambda tok, threads, tmp: ct2_engine(tok, threads, "int8", tmp, inter=True),
    ("ctranslate2-intra", "fp32"): lambda tok, threads, tmp: ct2_engine(tok, threads, None, tmp, inter=False),
    ("ctranslate2-intra", "int8"): lambda tok, threads, tmp: ct2_engine(tok, threads, "int8", tmp, inter=False),
}


def measure_one(engine: str, precision: str, threads: int, words: list[str], sample: list[str]) -> dict:
    """One engine in this (fresh) interpreter: no other runtime's thread pool competes with it."""
    tok = G2PTokenizers.load(BUNDLE)
    with tempfile.TemporaryDirectory() as tmp:
        run = ENGINES[(engine, precision)](tok, threads, Path(tmp))
        run(words[:32], 1, 32)  # warm-up
        rows, outputs = [], {}
        for beam, decoding in ((1, "greedy"), (5, "beam 5")):
            for batch, ws in ((32, words), (1, sample)):
                out, secs = timed(lambda ws=ws, beam=beam, batch=batch: run(ws, beam, batch))
                rows.append(
                    Row(engine, precision, decoding, batch, len(ws), secs, sum(len(o.split()) + 1 for o in out))
                )
                if batch == 32:
                    outputs[decoding] = out
                print(f"{engine:12s} {precision} {decoding:7s} batch {batch:2d}: {len(ws) / secs:8.1f} words/s",
                      file=sys.stderr)  # fmt: skip
    return {"rows": [r.__dict__ for r in rows], "outputs": outputs}


DUELS = (
    (("onnxruntime-fused", "fp32"), ("ctranslate2", "fp32")),
    (("onnxruntime", "int8"), ("ctranslate2", "int8")),
)


def serve_one(engine: str, precision: str, threads: int, words: list[str], sample: list[str]) -> None:
    """``--serve``: load one engine, then per line on stdin time greedy decoding: ``run`` one batch-32 run of
    ``words``; ``one`` each word of ``sample`` alone, one after another (each word's milliseconds); ``all`` the
    sample in one call at batch 1 (the engine's workers decode different words at once)."""
    tok = G2PTokenizers.load(BUNDLE)
    with tempfile.TemporaryDirectory() as tmp:
        run = ENGINES[(engine, precision)](tok, threads, Path(tmp))
        run(words[:64], 1, 32)  # warm-up
        run(sample[:16], 1, 1)
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "run":
                out, secs = timed(lambda: run(words, 1, 32))
                reply = {"seconds": secs, "tokens": sum(len(o.split()) + 1 for o in out)}
            elif command == "one":
                ms = [timed(lambda w=w: run([w], 1, 1))[1] * 1e3 for w in sample]
                reply = {"seconds": sum(ms) / 1e3, "words": len(sample), "ms": ms}
            elif command == "all":
                _, secs = timed(lambda: run(sample, 1, 1))
                reply = {"seconds": secs, "words": len(sample)}
            else:
                break
            print(json.dumps(reply), flush=True)


def _reply(proc: subprocess.Popen) -> dict:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"engine process exited with {proc.wait()}")


Contender = tuple[str, str, int]  # engine, precision, threads


def take_turns(a: Contender, b: Contender, command: str, rounds: int, flags: list[str]) -> dict[Contender, list[dict]]:
    """``a`` and ``b`` loaded side by side in two ``--serve`` processes, taking turns on ``command`` (A then B in even
    rounds, B then A in odd ones): each one's replies, round by round."""
    procs = {
        k: subprocess.Popen(
            [sys.executable, __file__, "--serve", k[0], k[1], "--threads", str(k[2]), *flags],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for k in (a, b)
    }
    replies: dict[Contender, list[dict]] = {a: [], b: []}
    try:
        for p in procs.values():
            _reply(p)
        for r in range(rounds):
            for k in (a, b) if r % 2 == 0 else (b, a):
                proc = procs[k]
                assert proc.stdin is not None
                proc.stdin.write(command + "\n")
                proc.stdin.flush()
                replies[k].append(_reply(proc))
    finally:
        for p in procs.values():
            if p.stdin is not None:
                p.stdin.close()
            p.wait(timeout=60)
    return replies


def _name(k: Contender) -> str:
    return f"{k[0]}/{k[1]} x{k[2]}"


def _duel(a: Contender, b: Contender, speed: Callable[[dict], float], replies: dict[Contender, list[dict]]) -> dict:
    """A's speed over B's per round (``speed`` of a reply), and their median."""
    ratios = [speed(x) / speed(y) for x, y in zip(replies[a], replies[b], strict=True)]
    print(f"head to head {_name(a)} vs {_name(b)}: ratios {[round(x, 3) for x in ratios]}", file=sys.stderr)
    return {"speed": {_name(k): [speed(r) for r in replies[k]] for k in (a, b)}, "round_ratios": ratios,
            "median_ratio": statistics.median(ratios)}  # fmt: skip


def head_to_head(threads: int, rounds: int, quick: bool) -> dict:
    """Each pair of ``DUELS`` side by side (``take_turns``): the greedy batch-32 run on ``threads`` threads each
    (tokens/s); each sample word alone on one thread each (words/s, and each engine's p50 / p99 ms per word over
    all rounds); and batch-1 scaling: the sample at batch 1 on ``threads`` workers against one (words/s)."""
    flags = ["--quick"] if quick else []
    out: dict[str, dict] = {}
    for a, b in DUELS:
        x, y = (*a, threads), (*b, threads)
        out[f"{_name(x)} vs {_name(y)}"] = _duel(x, y, lambda r: r["tokens"] / r["seconds"],
                                                 take_turns(x, y, "run", rounds, flags))  # fmt: skip
    for a, b in DUELS:
        x, y = (*a, 1), (*b, 1)
        replies = take_turns(x, y, "one", rounds, flags)
        duel = _duel(x, y, lambda r: r["words"] / r["seconds"], replies)
        for k in (x, y):
            ms = sorted(m for r in replies[k] for m in r["ms"])
            p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
            duel[f"{_name(k)} ms per word"] = {"p50": ms[len(ms) // 2], "p99": p99}
        out[f"batch 1: {_name(x)} vs {_name(y)}"] = duel
    for engine in (DUELS[0][0], DUELS[0][1]):
        x, y = (*engine, threads), (*engine, 1)
        out[f"batch 1 scaling: {_name(x)} vs {_name(y)}"] = _duel(
            x, y, lambda r: r["words"] / r["seconds"], take_turns(x, y, "all", rounds, flags)
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch1-words", type=int, default=300, help="sample decoded one word at a time")
    ap.add_argument("--quick", action="store_true", help="smoke run: few words, checks agreement, no timing claims")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "engines")
    ap.add_argument("--rounds", type=int, default=5, help="head-to-head rounds (ORT vs CTranslate2)")
    ap.add_argument("--one", nargs=2, metavar=("ENGINE", "PRECISION"), help=argparse.SUPPRESS)
    ap.add_argument("--serve", nargs=2, metavar=("ENGINE", "PRECISION"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    t_all = time.perf_counter()
    refs = read_test_split(TEST)
    words = sorted(refs)
    if args.quick:
        words = words[:: len(words) // 64][:64]
        args.batch1_words = 8
    sample = words[:: max(len(words) // args.batch1_words, 1)][: args.batch1_words]
    if args.one:
        print(json.dumps(measure_one(*args.one, args.threads, words, sample)))
        return 0
    if args.serve:
        serve_one(*args.serve, args.threads, words, sample)
        return 0
    rows: list[Row] = []
    outputs: dict[tuple[str, str, str], list[str]] = {}
    for engine, precision in ENGINES:
        cmd = [sys.executable, __file__, "--one", engine, precision, "--threads", str(args.threads),
               "--batch1-words", str(args.batch1_words)] + (["--quick"] if args.quick else [])  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        sys.stderr.write(proc.stderr[-2000:])
        if proc.returncode != 0:
            print(f"{engine} {precision} failed", file=sys.stderr)
            return 1
        part = json.loads(proc.stdout.strip().splitlines()[-1])
        rows += [Row(**r) for r in part["rows"]]
        outputs |= {(engine, precision, d): o for d, o in part["outputs"].items()}
    tok = G2PTokenizers.load(BUNDLE)
    peer = g2p_en_engine()
    peer_out, peer_secs = timed(lambda: peer(sample))
    ours = outputs[("onnxruntime", "fp32", "greedy")]  # the torch.onnx graphs: the bundle's reference
    agreement = {
        f"{e}/{p}/{d}": sum(a == b for a, b in zip(o, ours, strict=True)) / len(ours)
        for (e, p, d), o in outputs.items()
    }
    split = {w: [p.split() for p in refs[w]] for w in words}
    wer = {
        k: error_rates(dict(zip(words, [o.split() for o in out], strict=True)), split, stress=False).wer
        for k, out in ((f"{e}/{p}/{d}", o) for (e, p, d), o in outputs.items())
    }
    peer_wer = error_rates(
        dict(zip(sample, [o.split() for o in peer_out], strict=True)), {w: split[w] for w in sample}, stress=False
    ).wer
    ours_on_sample = error_rates(
        {w: ours[words.index(w)].split() for w in sample}, {w: split[w] for w in sample}, stress=False
    ).wer
    peak = matmul_peak_gflops(args.threads)
    flops_32 = model_flops(tok, words, ours)

    def find(engine: str, precision: str, decoding: str, batch: int) -> Row:
        return next(
            r for r in rows if (r.engine, r.precision, r.decoding, r.batch) == (engine, precision, decoding, batch)
        )

    def tps(engine: str, precision: str, batch: int, decoding: str = "greedy") -> float:
        return find(engine, precision, decoding, batch).tokens_per_s

    def best_ct2(precision: str) -> float:
        return max(tps(e, precision, 32) for e in ("ctranslate2", "ctranslate2-intra"))

    duels = head_to_head(args.threads, 1 if args.quick else args.rounds, args.quick)
    medians = [d["median_ratio"] for d in duels.values()]
    ratios = {
        "ort_vs_torch_greedy_b32": tps("onnxruntime-fused", "fp32", 32) / tps("pytorch", "fp32", 32),
        "ort_vs_torch_greedy_b1": tps("onnxruntime-fused", "fp32", 1) / tps("pytorch", "fp32", 1),
        "ort_vs_best_ct2_fp32_greedy_b32": tps("onnxruntime-fused", "fp32", 32) / best_ct2("fp32"),
        "ort_vs_best_ct2_int8_greedy_b32": tps("onnxruntime", "int8", 32) / best_ct2("int8"),
        "ort_vs_ct2_fp32_greedy_b32_head_to_head": medians[0],
        "ort_vs_ct2_int8_greedy_b32_head_to_head": medians[1],
        "ort_vs_ct2_fp32_greedy_b1_1_thread_head_to_head": medians[2],
        "ort_vs_ct2_int8_greedy_b1_1_thread_head_to_head": medians[3],
        f"ort_fused_{args.threads}_workers_vs_1_greedy_b1": medians[4],
        f"ct2_{args.threads}_replicas_vs_1_greedy_b1": medians[5],
        "torch_onnx_graphs_vs_torch_greedy_b32": tps("onnxruntime", "fp32", 32) / tps("pytorch", "fp32", 32),
    }
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible",
        "threads": args.threads,
        "words_batch32": len(words),
        "words_batch1": len(sample),
        "rows": [r.__dict__ | {"words_per_s": r.words_per_s, "tokens_per_s": r.tokens_per_s} for r in rows],
        "agreement_with_onnxruntime_fp32_greedy": agreement,
        "wer_no_stress": wer,
        "g2p_en": {
            "words": len(sample),
            "words_per_s": len(sample) / peer_secs,
            "wer": peer_wer,
            "ours_wer_same_words": ours_on_sample,
        },
        "matmul_peak_gflops": peak,
        "model_gflop_greedy_all_words": flops_32 / 1e9,
        "achieved_gflops_greedy_b32": {
            f"{r.engine}/{r.precision}": flops_32 / r.seconds / 1e9
            for r in rows
            if r.decoding == "greedy" and r.batch == 32
        },
        "ratios": ratios,
        "head_to_head": duels,
        "seconds": time.perf_counter() - t_all,
    }
    # the comparison is void unless the fp32 engines decode the same words as ours (int8 schemes differ: reported only)
    failures = [k for k, v in agreement.items() if "/fp32/greedy" in k and v < 0.99]
    write(result, rows, args.out, quick=args.quick)
    if failures:
        print(f"fp32 engines disagree with onnxruntime fp32 greedy on > 1% of words: {failures}", file=sys.stderr)
        return 1
    return 0


def write(result: dict, rows: list[Row], out: Path, quick: bool) -> None:
    lines = [
        f"# Engines side by side ({result['machine']}; {result['threads']} threads each)",
        "",
        f"Batch 32: all {result['words_batch32']} test words; batch 1: a sample of {result['words_batch1']}. "
        "Tokens = output phonemes + end token.",
        "",
        "| engine | precision | decoding | batch | words/s | tokens/s | agreement | WER % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        key = f"{r.engine}/{r.precision}/{r.decoding}"
        agree = result["agreement_with_onnxruntime_fp32_greedy"].get(key) if r.batch == 32 else None
        wer = result["wer_no_stress"].get(key) if r.batch == 32 else None
        lines.append(
            f"| {r.engine} | {r.precision} | {r.decoding} | {r.batch} | {r.words_per_s:.0f} | {r.tokens_per_s:.0f} | "
            f"{'' if agree is None else f'{agree:.4f}'} | {'' if wer is None else f'{wer:.2f}'} |"
        )
    g = result["g2p_en"]
    lines += [
        "",
        f"- g2p_en 2.1.0 (neural predictor, one word at a time, {g['words']} words): {g['words_per_s']:.0f} words/s, "
        f"WER {g['wer']:.2f} % (ours on the same words: {g['ours_wer_same_words']:.2f} %); g2p_en was trained on "
        "nearly all of CMUdict, so these words are not held out for it.",
        f"- matmul peak (fp32, 1024^3, torch): {result['matmul_peak_gflops']:.0f} GFLOP/s; the model needs "
        f"{result['model_gflop_greedy_all_words']:.1f} GFLOP for the greedy batch-32 run; achieved: "
        + ", ".join(f"{k} {v:.0f}" for k, v in result["achieved_gflops_greedy_b32"].items())
        + " GFLOP/s",
        "- ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in result["ratios"].items()),
        *(_duel_line(k, d) for k, d in result["head_to_head"].items()),
        f"- run time {result['seconds']:.0f} s",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if quick:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, batch in zip(axes, (32, 1), strict=True):
        sel = [r for r in rows if r.batch == batch]
        labels = [f"{r.engine}\n{r.precision} {r.decoding}" for r in sel]
        ax.bar(range(len(sel)), [r.tokens_per_s for r in sel], color=[_color(r.engine) for r in sel])
        ax.set_xticks(range(len(sel)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"batch {batch}: tokens/s ({result['threads']} threads)")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)


def _duel_line(key: str, d: dict) -> str:
    """One head-to-head as a line: what was timed, each side's speed per round, their latencies, the median ratio."""
    what, unit = "greedy batch 32", "tokens/s"
    if key.startswith("batch 1 scaling"):
        what, unit = "the sample at batch 1, words decoded at once by the workers", "words/s"
    elif key.startswith("batch 1"):
        what, unit = "each sample word alone, 1 thread each", "words/s"
    speeds = "; ".join(f"{e} {', '.join(f'{x:.0f}' for x in v)}" for e, v in d["speed"].items())
    latencies = "".join(
        f"; {k.removesuffix(' ms per word')} p50 {v['p50']:.2f} / p99 {v['p99']:.2f} ms per word"
        for k, v in d.items()
        if k.endswith("ms per word")
    )
    return (
        f"- head to head, {key} ({what}, {len(d['round_ratios'])} alternating rounds): {unit} {speeds}{latencies}; "
        f"median ratio {d['median_ratio']:.2f}x"
    )


def _color(engine: str) -> str:
    colors = {
        "pytorch": "tab:orange",
        "onnxruntime": "tab:blue",
        "onnxruntime-fused": "tab:cyan",
        "ctranslate2": "tab:green",
    }
    return colors.get(engine, "tab:olive")


if __name__ == "__main__":
    raise SystemExit(main())
