"""Where the in-process ONNX Runtime engine spends its time: per graph, per operator type, and outside the runtime.

    python bench/ort_profile.py [--words 2000] [--variant fused] [--batch 32] [--out bench/results/ort_profile]

One session set, one intra-op thread, greedy, batch ``--batch``, with onnxruntime's own profiler on. Wall time is split
into: time inside each graph's runs (from the profiler's per-run events), the operators inside them (by type),
ONNX Runtime's per-run overhead (run time not spent in any operator: input/output binding, allocation, scheduling),
and Python (the decoding loop, log-softmax, tokenization, reordering the cache). Per decoder step: the operators run
and their time divided by the decoder steps of the timed run (at batch 1, a word's steps are its output tokens and
``</s>``: the per-step cost of one word).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from g2p.bundle import verify_bundle  # noqa: E402
from g2p.decoding import DecodeOptions  # noqa: E402
from g2p.lexicon import read_test_split  # noqa: E402
from g2p.ort_backend import OrtBackend, SessionConfig  # noqa: E402
from g2p.pipeline import transcribe  # noqa: E402
from g2p.tokenization import G2PTokenizers  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=ROOT / "models" / "g2p" / "1")
    ap.add_argument("--variant", default="fused")
    ap.add_argument("--words", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=32, help="words per run (1: the per-step cost of one word)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ort_profile")
    args = ap.parse_args()
    import onnxruntime as ort

    words = sorted(read_test_split(ROOT / "data" / "cmudict-0.7b.test"))
    words = words[:: max(len(words) // args.words, 1)][: args.words]
    tok = G2PTokenizers.load(args.bundle)
    manifest = verify_bundle(args.bundle)
    backend = OrtBackend(args.bundle, args.variant, config=SessionConfig(intra_op_threads=1, allow_spinning=False),
                         manifest=manifest, io_binding=True)  # fmt: skip
    opts = DecodeOptions(max_len=48)
    transcribe(backend, tok, words[:64], opts, batch_size=args.batch)  # warm-up, unprofiled
    t = time.perf_counter()
    found = transcribe(backend, tok, words, opts, batch_size=args.batch)
    unprofiled = time.perf_counter() - t
    steps = decoder_steps([r[0].phonemes for r in found], [r[0].finished for r in found], args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        profiled = {}
        for g in manifest.variants[args.variant].files:
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            so.inter_op_num_threads = 1
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(tmp) / g)
            info = manifest.variants[args.variant]
            profiled[g] = ort.InferenceSession(
                str(args.bundle / info.files[g]), so, providers=["CPUExecutionProvider"],
                disabled_optimizers=info.disabled_optimizers,
            )  # fmt: skip
        backend.sessions = profiled
        transcribe(backend, tok, words[:64], opts, batch_size=args.batch)
        t = time.perf_counter()
        transcribe(backend, tok, words, opts, batch_size=args.batch)
        wall = time.perf_counter() - t
        files = {g: Path(s.end_profiling()) for g, s in profiled.items()}
        by_graph: dict[str, float] = {}
        runs: dict[str, int] = {}
        by_op: dict[str, float] = defaultdict(float)
        calls: dict[str, int] = defaultdict(int)
        for g, f in files.items():
            events = json.loads(f.read_text())
            model_runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
            # the last len(words)-run events belong to the timed run; profile everything after the warm-up
            by_graph[g] = sum(e["dur"] for e in model_runs) / 1e6
            runs[g] = len(model_runs)
            for e in events:
                # a Loop's or an If's own time contains its subgraph's nodes, which have their own events: count those
                if (
                    e.get("cat") == "Node"
                    and e["name"].endswith("_kernel_time")
                    and e["args"]["op_name"] not in ("Loop", "If", "Scan")
                ):
                    by_op[e["args"]["op_name"]] += e["dur"] / 1e6
                    calls[e["args"]["op_name"]] += 1
    # the profile covers warm-up + timed run: scale to the timed run by the share of words
    scale = len(words) / (len(words) + 64)
    inside = sum(by_graph.values()) * scale
    ops = sum(by_op.values()) * scale
    rows = sorted(((op, sec * scale) for op, sec in by_op.items()), key=lambda r: -r[1])
    per_step_calls = sum(calls.values()) * scale / steps
    lines = [
        f"# Where the time goes: ONNX Runtime {ort.__version__}, {args.variant}, 1 thread, greedy, batch {args.batch}, "
        f"{len(words)} words",
        "",
        f"Wall {wall:.3f} s ({len(words) / wall:.0f} words/s). Inside onnxruntime runs: {inside:.3f} s "
        f"({inside / wall:.0%}); in operators: {ops:.3f} s ({ops / wall:.0%}); runtime per-run overhead: "
        f"{inside - ops:.3f} s ({(inside - ops) / wall:.0%}); Python (decoding loop, softmax, cache reorder, "
        f"tokenization): {wall - inside:.3f} s ({(wall - inside) / wall:.0%}). Without the profiler the same run "
        f"takes {unprofiled:.3f} s ({len(words) / unprofiled:.0f} words/s): the profiler's own cost per node inflates "
        "the small operators and the overhead shares.",
        "",
        f"Per decoder step ({steps} steps{', one word each' if args.batch == 1 else ''}): "
        f"{per_step_calls:.0f} operator runs, {ops / steps * 1e6:.1f} us in operators, "
        f"{(inside - ops) / steps * 1e6:.1f} us runtime overhead, {(wall - inside) / steps * 1e6:.1f} us outside "
        "onnxruntime (profiled run).",
        "",
        "| graph | runs | seconds |",
        "|---|---|---|",
        *[f"| {g} | {runs[g]} | {sec * scale:.3f} |" for g, sec in by_graph.items()],
        "",
        "| operator | seconds | share of wall | calls | us per call | calls per step | us per step |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {op} | {sec:.3f} | {sec / wall:.1%} | {calls[op]} | {sec / scale / calls[op] * 1e6:.1f} | "
            f"{calls[op] * scale / steps:.1f} | {sec / steps * 1e6:.1f} |"
            for op, sec in rows[:15]
        ],
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    return 0


def decoder_steps(phonemes: list[list[str]], finished: list[bool], batch: int) -> int:
    """Decoder steps of a greedy run in batches of ``batch`` (in order): a batch steps until its longest word ends
    (its output tokens and ``</s>``; an unfinished word stops at its limit without one)."""
    lengths = [len(p) + int(f) for p, f in zip(phonemes, finished, strict=True)]
    return sum(max(lengths[i : i + batch]) for i in range(0, len(lengths), batch))


if __name__ == "__main__":
    raise SystemExit(main())
