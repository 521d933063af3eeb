"""Bundle variants beside the fp32 graphs, each with its own gate.

- ``fused``: the graphs built layer by layer on onnxruntime's fused kernels (``export.fused``), plus the
  ``greedy`` graph that decodes a whole batch in one run. Gates: tensor parity vs PyTorch at the fp32 tolerances,
  and identical decoding vs PyTorch (greedy through the ``greedy`` graph AND step by step, and every beam size).
  The ``int8`` variant quantises these graphs when they pass.

- ``optimized``: onnxruntime's transformer optimizer (fusions that apply to our graphs) followed by ONNX
  Runtime's own extended graph optimisations, saved offline; the runtime loads it without re-optimising.
  CPU only (the saved graph may hold CPU-specific fused kernels). Gate: identical decoding vs PyTorch.
- ``int8``: int8 MatMuls with fixed activation scales calibrated with PyTorch (``export.int8_static``), from the
  fused graphs. Gates: test-set WER within ``int8_max_wer_increase`` points of fp32, and the parity words decoded
  alone and in mixed batches to the same tokens; otherwise the variant is refused and the manifest says so.
- ``fp16``: float16 weights and float16 memory/caches/logits for the CUDA execution provider. Checked
  structurally here; its parity/speed check needs an NVIDIA GPU (``bench/gpu_check.py``).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort

from export.graphs import check_graph
from export.options import ExportOptions, held_out_words
from export.parity import decode_check, rows_decode_check, rows_step_checks, tensor_checks
from g2p.bundle import GRAPH_NAMES, PREFILL, ROWS_STEP, DecodeCheck, GraphSpec, Manifest, TensorCheck, VariantInfo
from g2p.decoding import Backend, DecodeOptions
from g2p.lexicon import read_test_split
from g2p.metrics import error_rates
from g2p.ort_backend import CPU, CUDA, OrtBackend
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
    tensors = tensor_checks(ctx.model, {g: paths[g] for g in (*GRAPH_NAMES, PREFILL)}, opts.atol, opts.rtol)
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
        "(ONNX Loop), and for continuous batching a rows-step graph (each row at its own position, masked cache "
        "slots) and a prefill graph (sources -> cross keys/values). onnxruntime only; checked here on the CPU "
        "provider.",
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
    for beam in opts.beams:
        rows = rows_decode_check("fused (continuous batching)", ctx.torch_backend, steps, ctx.tok, ctx.words,
                                 cfg.max_target_len, beam)  # fmt: skip
        checks.append(rows)
        log(f"decode parity fused (continuous batching) beam {beam}: {rows.identical}/{rows.words} identical")
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
def test_wer(backend: Backend, tok: G2PTokenizers, words: list[str], refs: dict[str, list[list[str]]],
             max_len: int) -> float:  # fmt: skip
    out = transcribe(backend, tok, words, DecodeOptions(beam_size=1, max_len=max_len))
    hyps = {w: list(r[0].phonemes) for w, r in zip(words, out, strict=True)}
    return error_rates(hyps, {w: refs[w] for w in words}, stress=False).wer


CALIBRATION_WORDS = 2000
CALIBRATION_SEED = 0


def calibration_batches(tok: G2PTokenizers, exclude: set[str]) -> list[tuple[Any, Any, Any]]:
    """Teacher-forced batches of ``CALIBRATION_WORDS`` CMU dictionary entries (a seeded sample, none of ``exclude``:
    the test words) for ``export.int8_static.calibrate``."""
    import random

    from g2p.lexicon import read_cmudict
    from training.data import collate, encode_entries
    from training.train import encodable

    entries = read_cmudict()
    random.Random(CALIBRATION_SEED).shuffle(entries)
    chosen = []
    for word, pron in entries:
        if word not in exclude and encodable(tok, word, [pron]):
            chosen.append((word, pron))
            if len(chosen) == CALIBRATION_WORDS:
                break
    examples = encode_entries(tok, chosen)
    batches = [collate(examples[i : i + 64]) for i in range(0, len(examples), 64)]
    return [(b.src, b.src_mask, b.tgt_in) for b in batches]


def batch_invariance_check(
    label: str, backend: Backend, tok: G2PTokenizers, words: list[str], max_len: int
) -> DecodeCheck:
    """Greedy tokens of each word decoded alone against the same word in batches of 32 mixed words (a seeded
    shuffle): a served answer must not depend on who else is batched."""
    import random

    from export.parity import same_outputs

    options = DecodeOptions(beam_size=1, max_len=max_len)
    alone = [r[0].phonemes for r in transcribe(backend, tok, words, options, batch_size=1)]
    mixed = random.Random(0).sample(range(len(words)), len(words))
    batched: dict[int, tuple[str, ...]] = {}
    for s in range(0, len(mixed), 32):
        chunk = mixed[s : s + 32]
        out = transcribe(backend, tok, [words[i] for i in chunk], options, batch_size=32)
        batched |= {i: r[0].phonemes for i, r in zip(chunk, out, strict=True)}
    return same_outputs(label, 1, words, alone, [batched[i] for i in range(len(words))])


def int8_variant(ctx: VariantContext) -> VariantResult:
    """int8 with fixed activation scales (``export.int8_static``), built from the fused graphs: activation ranges
    calibrated with PyTorch on CMU dictionary words that are not test words, weights per column. Gates: test-set
    WER within ``int8_max_wer_increase`` of fp32, and every parity word decoded alone and in mixed batches of 32
    to the same tokens (which makes the variant servable: ``batch_invariant`` in its details). (The dynamic
    quantisation used before took one activation scale per batch tensor: 982-990 of 1,000 test words identical
    alone vs batched.)"""
    from export.graphs import ExportError
    from export.int8_static import calibrate, quantize_graph_file

    staging, tok, manifest, opts, log = ctx.staging, ctx.tok, ctx.manifest, ctx.opts, ctx.log
    if ctx.fused is None:
        raise ExportError("the int8 variant is built from the fused graphs: export with --variants fused int8")
    refs = {w: [p.split() for p in prons] for w, prons in read_test_split(opts.words_file).items()}
    words = held_out_words(opts.words_file, opts.int8_eval_words, set(tok.source_alphabet()))
    max_len = manifest.limits.max_target_len
    ranges = calibrate(ctx.model, calibration_batches(tok, set(refs)))
    files, rewritten = {}, {}
    for graph, src in ctx.fused.items():
        if graph in (ROWS_STEP, PREFILL):  # continuous batching stays fp32 (fused)
            continue
        dst = staging / f"int8_{graph}.onnx"
        rewritten[graph] = quantize_graph_file(src, dst, ranges)
        files[graph] = dst.name
    info = VariantInfo(
        files=files,
        providers=[CPU],
        notes="int8 MatMuls with fixed activation scales (calibrated on CMU dictionary words that are not test "
        "words) and per-column weight scales, built from the fused graphs: a word's answer does not depend on its "
        "batch-mates",
        details={"session": FUSED_SESSION, "quantised_from": "fused", "scheme": "static",
                 "calibration": {"words": CALIBRATION_WORDS, "seed": CALIBRATION_SEED, "source": "cmudict minus "
                                 "the test words"}, "quantised_matmuls": rewritten},
    )  # fmt: skip
    m8 = _with_variant(manifest, "int8", info)
    fp32 = OrtBackend(staging, "fp32", [CPU], config=opts.threads, manifest=manifest)
    int8 = OrtBackend(staging, "int8", [CPU], config=opts.threads, manifest=m8)
    wer32, wer8 = test_wer(fp32, tok, words, refs, max_len), test_wer(int8, tok, words, refs, max_len)
    gate = DecodeCheck(variant="int8", beam_size=1, words=len(words), identical=0,
                       ok=wer8 <= wer32 + opts.int8_max_wer_increase, wer=round(wer8, 3),
                       reference_wer=round(wer32, 3))  # fmt: skip
    log(f"int8 gate: WER {wer8:.2f} vs fp32 {wer32:.2f} on {len(words)} words -> {'ok' if gate.ok else 'refused'}")
    invariant = batch_invariance_check("int8 (alone vs batched)", int8, tok, ctx.words, max_len)
    log(f"int8 alone vs in mixed batches of 32: {invariant.identical}/{invariant.words} identical")
    checks = [gate, invariant]
    if not all(c.ok for c in checks):  # refused: the bundle goes on without int8; the manifest's checks say why
        for f in files.values():
            (staging / f).unlink()
        return VariantResult("int8", None, checks)
    info.details |= {"wer": round(wer8, 3), "fp32_wer": round(wer32, 3), "words": len(words), "batch_invariant": True}
    return VariantResult("int8", info, checks)


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
