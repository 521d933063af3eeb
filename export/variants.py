"""Bundle variants beside the fp32 graphs, each with its own gate.

- ``fused``: the graphs built layer by layer on onnxruntime's fused kernels (``export.fused``), plus the
  ``greedy`` graph that decodes a whole batch in one run. Gates: tensor parity vs PyTorch at the fp32 tolerances,
  and identical decoding vs PyTorch (greedy through the ``greedy`` graph AND step by step, and every beam size).
  The ``int8`` variant quantises these graphs when they pass.

- ``optimized``: onnxruntime's transformer optimizer (fusions that apply to our graphs) followed by ONNX
  Runtime's own extended graph optimisations, saved offline; the runtime loads it without re-optimising.
  CPU only (the saved graph may hold CPU-specific fused kernels). Gate: identical decoding vs PyTorch.
- ``int8``: dynamic quantisation of the MatMul weights (``quantize_dynamic``). The weight format (signed,
  signed with reduced range, unsigned) is chosen by measured logit error, and recorded. Gate: test-set WER
  within ``int8_max_wer_increase`` points of fp32, otherwise the variant is refused and the manifest says so.
- ``fp16``: float16 weights and float16 memory/caches/logits for the CUDA execution provider. Checked
  structurally here; its parity/speed check needs an NVIDIA GPU (``bench/gpu_check.py``).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from export.graphs import check_graph
from export.options import ExportOptions, held_out_words
from export.parity import decode_check, rows_decode_check, rows_step_checks, tensor_checks
from g2p.bundle import DECODER_STEP, GRAPH_NAMES, ROWS_STEP, DecodeCheck, GraphSpec, Manifest, TensorCheck, VariantInfo
from g2p.decoding import Backend, DecodeOptions
from g2p.lexicon import read_test_split
from g2p.metrics import error_rates
from g2p.ort_backend import CPU, CUDA, OrtBackend, SessionConfig
from g2p.pipeline import transcribe
from g2p.tokenization import G2PTokenizers
from training.model import Transformer


@dataclass
class VariantResult:
    name: str
    info: VariantInfo | None  # None = refused
    checks: list[DecodeCheck] = field(default_factory=list)
    tensor_checks: list[TensorCheck] = field(default_factory=list)


Log = Callable[[str], None]


@dataclass
class VariantContext:
    """What every variant builder reads: the staged fp32 bundle and the model it came from."""

    staging: Path
    paths: dict[str, Path]  # graph name -> fp32 graph file
    model: Transformer
    tok: G2PTokenizers
    manifest: Manifest
    torch_backend: Backend
    words: list[str]  # held-out words for decode checks
    opts: ExportOptions
    log: Log
    fused: dict[str, Path] | None = None  # the fused variant's graphs once it has passed its gates


def build_variants(names: tuple[str, ...], ctx: VariantContext) -> list[VariantResult]:
    builders = {"fused": fused_variant, "optimized": optimized_variant, "int8": int8_variant, "fp16": fp16_variant}
    unknown = [n for n in names if n not in builders]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {sorted(builders)}")
    return [builders[n](ctx) for n in sorted(set(names), key=list(builders).index)]  # fused before int8


def _with_variant(manifest: Manifest, name: str, info: VariantInfo) -> Manifest:
    m = manifest.model_copy(deep=True)
    m.variants[name] = info
    return m


# ---------------------------------------------------------------------------------------------------------
# optimized
# ---------------------------------------------------------------------------------------------------------
FUSED_SESSION = {"disabled_optimizers": ["SkipLayerNormFusion"]}
"""onnxruntime re-fuses some Add + LayerNormalization pairs of the fused graphs into SkipLayerNormalization,
whose CPU kernel is slower here than the two ops it replaces (measured: about 3% of a greedy batch)."""


def fused_variant(ctx: VariantContext) -> VariantResult:
    from export.fused import build_fused_graphs
    from export.graphs import ExportError

    staging, manifest, opts, log, cfg = ctx.staging, ctx.manifest, ctx.opts, ctx.log, ctx.model.cfg
    paths = build_fused_graphs(ctx.model, staging, prefix="fused_")
    tensors = tensor_checks(ctx.model, {g: paths[g] for g in GRAPH_NAMES}, opts.atol, opts.rtol)
    tensors += rows_step_checks(ctx.model, paths[ROWS_STEP], opts.atol, opts.rtol)
    for c in tensors:
        c.graph = f"fused_{c.graph}"
    worst = max((d.max_abs for c in tensors for d in c.outputs.values()), default=0.0)
    log(f"tensor parity fused: {sum(c.ok for c in tensors)}/{len(tensors)} cases ok, max abs diff {worst:.2e}")
    if not all(c.ok for c in tensors):
        failed = ", ".join(f"{c.graph}[{c.case}]" for c in tensors if not c.ok)
        raise ExportError("fused variant: tensor parity failed: " + failed)
    info = VariantInfo(
        files={g: p.name for g, p in paths.items()},
        providers=[CPU],
        notes="fp32 graphs built from the checkpoint on onnxruntime's fused kernels (MultiHeadAttention with the "
        "KV cache inside, one MatMul for Q/K/V), a greedy graph that decodes a whole batch in one run "
        "(ONNX Loop), and a rows-step graph (each row at its own position, masked cache slots) for continuous "
        "batching. onnxruntime only; checked here on the CPU provider.",
        details={"graphs": sorted(paths), "session": FUSED_SESSION},
    )
    m = _with_variant(manifest, "fused", info)
    whole = OrtBackend(staging, "fused", [CPU], config=opts.threads, manifest=m)
    steps = OrtBackend(staging, "fused", [CPU], config=opts.threads, manifest=m, greedy_graph=False)
    checks = []
    for beam in opts.beams:
        runs = [("fused", whole)] + ([("fused (step by step)", steps)] if beam == 1 else [])
        for label, backend in runs:
            check, _ = decode_check(label, ctx.torch_backend, backend, ctx.tok, ctx.words, beam, cfg.max_target_len)
            checks.append(check)
            log(f"decode parity {label} beam {beam}: {check.identical}/{check.words} identical")
    rows = rows_decode_check("fused (continuous batching)", ctx.torch_backend, steps, ctx.tok, ctx.words,
                             cfg.max_target_len)  # fmt: skip
    checks.append(rows)
    log(f"decode parity fused (continuous batching) beam 1: {rows.identical}/{rows.words} identical")
    if not all(c.ok for c in checks):
        raise _gate_error("fused", checks)
    ctx.fused = paths
    return VariantResult("fused", info, checks, tensors)


def optimized_variant(ctx: VariantContext) -> VariantResult:
    staging, paths, manifest, opts, log = ctx.staging, ctx.paths, ctx.manifest, ctx.opts, ctx.log
    from onnxruntime.transformers.optimizer import optimize_model

    cfg = ctx.model.cfg
    files, fusions = {}, {}
    for graph, src in paths.items():
        with contextlib.redirect_stdout(io.StringIO()):
            fused = optimize_model(
                str(src), model_type="bert", num_heads=cfg.n_heads, hidden_size=cfg.d_model, opt_level=0
            )
        fusions[graph] = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
        with tempfile.TemporaryDirectory() as tmp:
            fused_path = Path(tmp) / "fused.onnx"
            fused.save_model_to_file(str(fused_path))
            dst = staging / f"optimized_{graph}.onnx"
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            so.optimized_model_filepath = str(dst)
            ort.InferenceSession(str(fused_path), so, providers=[CPU])
        files[graph] = dst.name
    info = VariantInfo(
        files=files,
        providers=[CPU],
        notes=(
            "onnxruntime transformer optimizer + ORT extended graph optimisations, saved offline; load with "
            "graph optimisations disabled. Attention/MultiHeadAttention fusion does not apply: our attention is "
            "exported from F.scaled_dot_product_attention with a boolean mask (Where + Softmax + IsNaN guard) "
            "while the fusion expects an additive mask before Softmax; SkipLayerNormalization does fuse."
        ),
        details={"fusions": fusions, "session_graph_optimization": "disable_all"},
    )
    candidate = OrtBackend(staging, "optimized", [CPU], config=opts.threads,
                           manifest=_with_variant(manifest, "optimized", info))  # fmt: skip
    checks = []
    for beam in opts.beams:
        check, _ = decode_check("optimized", ctx.torch_backend, candidate, ctx.tok, ctx.words, beam, cfg.max_target_len)
        checks.append(check)
        log(f"decode parity optimized beam {beam}: {check.identical}/{check.words} identical")
    if not all(c.ok for c in checks):
        raise _gate_error("optimized", checks)
    log(f"optimized variant: fusions {fusions}")
    return VariantResult("optimized", info, checks)


def _gate_error(name: str, checks: list[DecodeCheck]) -> Exception:
    from export.graphs import ExportError

    bad = [f"beam {c.beam_size}: {c.identical}/{c.words} identical, e.g. {c.examples[:2]}" for c in checks if not c.ok]
    return ExportError(f"{name} variant decodes differently from PyTorch: " + "; ".join(bad))


# ---------------------------------------------------------------------------------------------------------
# int8
# ---------------------------------------------------------------------------------------------------------
INT8_CANDIDATES: dict[str, dict[str, Any]] = {  # in order of preference: the u8 x s8 product is native (VNNI)
    "qint8": {"weight_type": "QInt8", "reduce_range": False},
    "qint8_reduce_range": {"weight_type": "QInt8", "reduce_range": True},
    "quint8": {"weight_type": "QUInt8", "reduce_range": False},
}


def _quantize(src: Path, dst: Path, setting: dict[str, Any]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(dst),
        weight_type=getattr(QuantType, setting["weight_type"]),
        reduce_range=setting["reduce_range"],
        op_types_to_quantize=["MatMul"],
        # the fused graphs' contrib ops have no ONNX shape inference: their outputs are float
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "EnableSubgraph": True},
    )
    _fix_subgraph_casts(dst)


def _fix_subgraph_casts(path: Path) -> None:
    """onnxruntime's quantizer writes the int32 -> float Cast after each MatMulInteger of a subgraph (the greedy
    graph's Loop body) with ``to`` undefined (0): every quantised MatMul here is float32, so set it."""
    model = onnx.load(str(path))
    changed = 0

    def visit(graph: onnx.GraphProto) -> None:
        nonlocal changed
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)
            if node.op_type == "Cast" and node.name.endswith("_quantized_cast"):
                for attr in node.attribute:
                    if attr.name == "to" and attr.i == onnx.TensorProto.UNDEFINED:
                        attr.i = onnx.TensorProto.FLOAT
                        changed += 1

    visit(model.graph)
    if changed:
        onnx.save(model, str(path))


def _logit_error(fp32_step: Path, quant_step: Path, manifest: Manifest) -> float:
    """Max |logit difference| of the decoder step on a fixed random batch."""
    cfg = manifest.model_config_
    rng = np.random.default_rng(0)
    n, s, p = 16, 9, 5
    layers, heads, dh = cfg["n_decoder_layers"], cfg["n_heads"], cfg["d_model"] // cfg["n_heads"]
    feeds = {
        "tgt_ids": rng.integers(4, cfg["tgt_vocab_size"], (n, 1)).astype(np.int64),
        "past_k": rng.standard_normal((layers, n, heads, p, dh)).astype(np.float32),
        "past_v": rng.standard_normal((layers, n, heads, p, dh)).astype(np.float32),
        "cross_k": rng.standard_normal((layers, n, heads, s, dh)).astype(np.float32),
        "cross_v": rng.standard_normal((layers, n, heads, s, dh)).astype(np.float32),
        "src_mask": np.ones((n, s), dtype=bool),
    }
    a = ort.InferenceSession(str(fp32_step), providers=[CPU]).run(["logits"], feeds)[0]
    b = ort.InferenceSession(str(quant_step), providers=[CPU]).run(["logits"], feeds)[0]
    return float(np.abs(a - b).max())


def test_wer(backend: Backend, tok: G2PTokenizers, words: list[str], refs: dict[str, list[list[str]]],
             max_len: int) -> float:  # fmt: skip
    out = transcribe(backend, tok, words, DecodeOptions(beam_size=1, max_len=max_len))
    hyps = {w: list(r[0].phonemes) for w, r in zip(words, out, strict=True)}
    return error_rates(hyps, {w: refs[w] for w in words}, stress=False).wer


def _words_per_s(backend: Backend, tok: G2PTokenizers, words: list[str], max_len: int) -> float:
    """Greedy words/s at batch 32 (best of two runs), one thread: how the int8 formats compare on this CPU."""
    opts = DecodeOptions(beam_size=1, max_len=max_len)
    transcribe(backend, tok, words[:32], opts, batch_size=32)
    best = float("inf")
    for _ in range(2):
        t = time.perf_counter()
        transcribe(backend, tok, words, opts, batch_size=32)
        best = min(best, time.perf_counter() - t)
    return len(words) / best


def int8_variant(ctx: VariantContext) -> VariantResult:
    """Dynamic int8 quantisation of the MatMul weights. Every weight format is quantised, timed on this CPU and its
    decoder step's logit error measured (all recorded); the first in the order of ``INT8_CANDIDATES`` that passes
    the accuracy gate (test-set WER within the allowed increase over fp32) is kept: u8 x s8 is the native VNNI
    product, reduce_range avoids overflow on CPUs without VNNI, u8 x u8 needs extra work. (Choosing by this run's
    timing made the bundle depend on the exporting machine's load: qint8 was 2,638 words/s on a quiet run and 506
    on a loaded one, against 2,329 and 1,058 for qint8_reduce_range.)"""
    staging, paths, tok, manifest, opts, log = ctx.staging, ctx.paths, ctx.tok, ctx.manifest, ctx.opts, ctx.log
    words = held_out_words(opts.words_file, opts.int8_eval_words, set(tok.source_alphabet()))
    refs = {w: [p.split() for p in prons] for w, prons in read_test_split(opts.words_file).items()}
    max_len = manifest.limits.max_target_len
    timing_words = words[:: max(len(words) // 500, 1)][:500]
    single = SessionConfig(intra_op_threads=1, allow_spinning=False)
    candidates: dict[str, VariantInfo] = {}
    errors, speed = {}, {}
    source = ctx.fused if ctx.fused is not None else paths  # the fused graphs when they passed: faster
    source = {g: p for g, p in source.items() if g != ROWS_STEP}  # int8 is never served: no continuous batching
    for key, setting in INT8_CANDIDATES.items():
        files = {}
        for graph, src in source.items():
            dst = staging / f"int8-{key}_{graph}.onnx"
            _quantize(src, dst, setting)
            files[graph] = dst.name
        errors[key] = _logit_error(paths[DECODER_STEP], staging / files[DECODER_STEP], manifest)
        session = {"session": FUSED_SESSION} if ctx.fused else {}
        candidates[key] = VariantInfo(files=files, providers=[CPU], notes="", details=session)
        backend = OrtBackend(
            staging, "int8", [CPU], config=single, manifest=_with_variant(manifest, "int8", candidates[key])
        )
        speed[key] = round(_words_per_s(backend, tok, timing_words, max_len), 1)
    log(f"int8 weight formats: greedy words/s (1 thread) {speed}; max logit error of the decoder step {errors}")
    fp32 = OrtBackend(staging, "fp32", [CPU], config=opts.threads, manifest=manifest)
    wer32 = test_wer(fp32, tok, words, refs, max_len)
    chosen, checks, gate = None, [], {}
    # in the fixed order of INT8_CANDIDATES (not by this run's timing, which a loaded machine turns around: the
    # same checkpoint then re-exports to the same bundle); the first that passes the gate is kept
    order = list(INT8_CANDIDATES)
    for key in order:
        info = candidates[key]
        int8 = OrtBackend(staging, "int8", [CPU], config=opts.threads, manifest=_with_variant(manifest, "int8", info))
        wer8 = test_wer(int8, tok, words, refs, max_len)
        ok = wer8 <= wer32 + opts.int8_max_wer_increase
        gate[key] = round(wer8, 3)
        checks.append(DecodeCheck(variant="int8", beam_size=1, words=len(words), identical=0, ok=ok,
                                  wer=round(wer8, 3), reference_wer=round(wer32, 3)))  # fmt: skip
        log(f"int8 gate ({key}): WER {wer8:.2f} vs fp32 {wer32:.2f} on {len(words)} words -> "
            f"{'accepted' if ok else 'refused'}")  # fmt: skip
        if ok:
            chosen = key
            info.details = {"choice": key, "setting": INT8_CANDIDATES[key], "words_per_s_1_thread": speed,
                            "logit_error": errors, "wer": round(wer8, 3), "fp32_wer": round(wer32, 3),
                            "words": len(words), "gate_wer_by_format": gate}  # fmt: skip
            break
    for key, info in candidates.items():  # keep only the chosen graphs, under their final names
        for graph, name in info.files.items():
            if key == chosen:
                (staging / name).rename(staging / f"int8_{graph}.onnx")
            else:
                (staging / name).unlink()
    if chosen is None:  # refused: the bundle goes on without int8; the manifest's checks say why
        return VariantResult("int8", None, checks)
    final = candidates[chosen]
    final.files = {graph: f"int8_{graph}.onnx" for graph in source}
    final.notes = (
        f"dynamic int8 quantisation of MatMul weights ({chosen}) of the {'fused' if ctx.fused else 'fp32'} graphs: "
        "the first format in the order of preference (qint8, qint8_reduce_range, quint8) that passed the WER gate"
    )
    final.details["quantised_from"] = "fused" if ctx.fused else "fp32"
    if ctx.fused:
        final.details["session"] = FUSED_SESSION
    return VariantResult("int8", final, checks[-1:])


# ---------------------------------------------------------------------------------------------------------
# fp16
# ---------------------------------------------------------------------------------------------------------
def fp16_specs(manifest: Manifest) -> dict[str, GraphSpec]:
    from g2p.bundle import graph_specs

    c = manifest.model_config_
    return graph_specs(
        c["n_decoder_layers"], c["n_heads"], c["d_model"] // c["n_heads"], c["d_model"], c["tgt_vocab_size"], "float16"
    )


def fp16_variant(ctx: VariantContext) -> VariantResult:
    staging, paths, tok, manifest, opts, log = ctx.staging, ctx.paths, ctx.tok, ctx.manifest, ctx.opts, ctx.log
    from onnxruntime.transformers.float16 import convert_float_to_float16

    specs = fp16_specs(manifest)
    files = {}
    for graph, src in paths.items():
        # ORT's CUDA LayerNormalization and Softmax kernels accumulate float16 inputs in float32.
        converted = convert_float_to_float16(onnx.load(str(src)), keep_io_types=False)
        dst = staging / f"fp16_{graph}.onnx"
        onnx.save(converted, str(dst))
        check_graph(dst, specs[graph])
        files[graph] = dst.name
    info = VariantInfo(
        files=files,
        providers=[CUDA],
        notes="float16 weights, memory, caches and logits for the CUDA execution provider; its GPU parity and "
        "speed are checked on a GPU machine by bench/gpu_check.py. Here it is checked on the CPU provider.",
        details={"gpu_checked": False},
    )
    # What the CPU can check: the float16 graphs run, and greedy decoding mostly agrees with fp32.
    m16 = _with_variant(manifest, "fp16", info)
    fp32 = OrtBackend(staging, "fp32", [CPU], config=opts.threads, manifest=manifest)
    fp16 = OrtBackend(staging, "fp16", [CPU], config=opts.threads, manifest=m16)
    check, _ = decode_check("fp16 (CPU provider)", fp32, fp16, tok, ctx.words, 1, manifest.limits.max_target_len)
    agreement = check.identical / max(check.words, 1)
    check.ok = agreement >= FP16_MIN_AGREEMENT
    info.details |= {"cpu_token_agreement": round(agreement, 4), "cpu_words": check.words}
    log(f"fp16 variant on the CPU provider: {check.identical}/{check.words} words identical to fp32")
    if not check.ok:
        for f in files.values():
            (staging / f).unlink()
        return VariantResult("fp16", None, [check])
    return VariantResult("fp16", info, [check])


FP16_MIN_AGREEMENT = 0.98
