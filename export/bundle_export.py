"""Checkpoint -> versioned model bundle ``models/<name>/<version>/``, gated by parity with PyTorch.

The bundle is assembled in a staging directory and renamed into place only when every check passed. When a
check fails, the staging directory is kept as ``<version>.failed`` with ``parity_report.json`` and the export
ends with an error.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import onnx
import onnxruntime as ort
import torch

from export.graphs import OPSET, ExportError, export_graphs, specs_for
from export.options import ExportOptions, held_out_words
from export.parity import decode_check, tensor_checks
from export.variants import VariantContext, VariantResult, build_variants
from g2p.bundle import (
    GRAPH_NAMES,
    LEXICON_FILE,
    Limits,
    Manifest,
    ParityReport,
    SpecialTokens,
    VariantInfo,
    next_version,
    sha256_file,
)
from g2p.lexicon import read_cmudict, write_lexicon_file
from g2p.ort_backend import CPU, OrtBackend
from g2p.tokenization import SRC_TOKENIZER_FILE, TGT_TOKENIZER_FILE, UnknownSymbolError
from training import checkpoint as ckpt
from training.backend import TorchBackend
from training.train import DEFAULT_TEST_SPLIT


def export_bundle(opts: ExportOptions) -> Path:
    log = opts.log
    torch.set_num_threads(opts.threads)
    loaded = ckpt.load_model(opts.checkpoint)
    model, tok, cfg = loaded.model.eval(), loaded.tokenizers, loaded.config
    version = opts.version if opts.version is not None else next_version(opts.root, opts.name)
    final = opts.root / opts.name / str(version)
    if final.exists():
        raise ExportError(f"{final} already exists; bundles are immutable, pick another --version")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.staging-", dir=final.parent))
    report = ParityReport(atol=opts.atol, rtol=opts.rtol)
    try:
        # 1. the fp32 graphs, checked structurally (onnx checker, shape inference, dynamic axes)
        log(f"exporting {opts.checkpoint} -> {final}")
        paths = export_graphs(model, staging)

        # 2. tensor-level parity at shapes other than the export example
        report.tensor_checks = tensor_checks(model, paths, opts.atol, opts.rtol)
        worst = max((d.max_abs for c in report.tensor_checks for d in c.outputs.values()), default=0.0)
        log(f"tensor parity: {sum(c.ok for c in report.tensor_checks)}/{len(report.tensor_checks)} cases ok, "
            f"max abs diff {worst:.2e}")  # fmt: skip

        # 3. the bundle's fixed files, so the ORT backend can load it from staging
        tok.save(staging)
        if opts.lexicon:
            write_lexicon_file(staging / LEXICON_FILE, read_cmudict())
        files = {g: p.name for g, p in paths.items()}
        specs = specs_for(model)
        variants = {"fp32": VariantInfo(files=files, providers=[CPU, "CUDAExecutionProvider"])}
        manifest = _manifest(opts, loaded, version, specs, variants, report)
        manifest.write(staging)

        # 4. decode-level parity: the same decoding code over torch and ONNX Runtime, identical tokens
        words = held_out_words(opts.words_file, opts.parity_words, set(tok.source_alphabet()))
        torch_backend = TorchBackend(model)
        ort_backend = OrtBackend(staging, "fp32", [CPU], config=opts.threads, manifest=manifest)
        for beam in opts.beams:
            check, _ = decode_check("fp32", torch_backend, ort_backend, tok, words, beam, cfg.max_target_len)
            report.decode_checks.append(check)
            log(f"decode parity fp32 beam {beam}: {check.identical}/{check.words} identical")

        # 5. determinism: a second export decodes identically
        if opts.check_determinism:
            report.deterministic_reexport = _reexport_matches(model, staging, paths, manifest, words, opts)
            log(f"re-export deterministic: {report.deterministic_reexport}")

        if report.failures():
            raise ExportError("parity gate failed: " + ", ".join(report.failures()))

        # 6. variants (each with its own gate; a refused variant is left out and the manifest says why)
        ctx = VariantContext(staging, paths, model, tok, manifest, torch_backend, words, opts, log)
        results: list[VariantResult] = build_variants(opts.variants, ctx)
        for r in results:
            if r.info is not None:
                variants[r.name] = r.info
            report.decode_checks.extend(r.checks)
            report.tensor_checks.extend(r.tensor_checks)

        # 7. the manifest with every file's sha256, then the atomic rename into place
        report.ok = True
        manifest = _manifest(opts, loaded, version, specs, variants, report)
        manifest.sha256 = {
            p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file() and p.name != "manifest.json"
        }
        manifest.write(staging)
        staging.chmod(0o755)  # mkdtemp makes it 0700: a server running as another user must read the bundle
        staging.rename(final)
        log(f"bundle written: {final}")
        return final
    except Exception:
        failed = final.parent / f"{version}.failed"
        shutil.rmtree(failed, ignore_errors=True)
        staging.rename(failed)
        (failed / "parity_report.json").write_text(report.model_dump_json(indent=2) + "\n")
        log(f"export failed; staging kept at {failed} with parity_report.json")
        raise


def _reexport_matches(model, staging: Path, paths, manifest: Manifest, words: Sequence[str], opts) -> bool:  # type: ignore[no-untyped-def]
    """Export again; identical bytes, or else identical greedy decoding of the held-out words."""
    with tempfile.TemporaryDirectory(dir=staging.parent) as tmp:
        again = export_graphs(model, Path(tmp))
        if all(sha256_file(again[g]) == sha256_file(paths[g]) for g in GRAPH_NAMES):
            return True
        for f in (SRC_TOKENIZER_FILE, TGT_TOKENIZER_FILE):
            shutil.copy(staging / f, Path(tmp) / f)
        first = OrtBackend(staging, "fp32", [CPU], manifest=manifest)
        second = OrtBackend(Path(tmp), "fp32", [CPU], manifest=manifest)
        tok = ckpt.G2PTokenizers.load(staging)
        check, _ = decode_check("reexport", first, second, tok, words, 1, manifest.limits.max_target_len)
        return check.ok


def _manifest(opts: ExportOptions, loaded: ckpt.LoadedModel, version: int, specs, variants, report) -> Manifest:  # type: ignore[no-untyped-def]
    cfg = loaded.config
    return Manifest(
        name=opts.name,
        version=version,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        model_config_=cfg.to_dict(),
        special_tokens=SpecialTokens(pad=cfg.pad_id, bos=cfg.bos_id, eos=cfg.eos_id),
        limits=Limits(max_source_len=cfg.max_source_len, max_target_len=cfg.max_target_len),
        source_alphabet=loaded.tokenizers.source_alphabet(),
        tokenizer_files={"source": SRC_TOKENIZER_FILE, "target": TGT_TOKENIZER_FILE},
        lexicon_file=LEXICON_FILE if opts.lexicon else None,
        graphs=specs,
        variants=variants,
        opset=OPSET,
        versions={
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
            "python": platform.python_version(),
        },
        sha256={},
        checkpoint_sha256=sha256_file(opts.checkpoint),
        parity=report,
    )


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m export", description="Export a checkpoint to a model bundle.")
    ap.add_argument("--checkpoint", required=True, type=Path)
    ap.add_argument("--name", default="g2p", help="bundle name = the served model name (default g2p)")
    ap.add_argument("--root", default=Path("models"), type=Path, help="bundle root directory (default models/)")
    ap.add_argument("--version", type=int, default=None, help="version number (default: the next free one)")
    ap.add_argument("--variants", nargs="*", default=["fused", "int8", "fp16"],
                    choices=["fused", "optimized", "int8", "fp16"])  # fmt: skip
    ap.add_argument("--parity-words", type=int, default=500)
    ap.add_argument("--words-file", type=Path, default=DEFAULT_TEST_SPLIT,
                    help="held-out words for the decode checks (test-split format)")  # fmt: skip
    ap.add_argument("--int8-eval-words", type=int, default=None, help="words for the int8 WER gate (default all)")
    ap.add_argument("--no-determinism-check", action="store_true")
    ap.add_argument("--no-lexicon", action="store_true", help="leave the CMU dictionary out (the model alone serves)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if not args.name or "/" in args.name or args.name.startswith("."):
        print(f"error: --name {args.name!r} must be a plain directory name", file=sys.stderr)
        return 2
    if args.version is not None and args.version < 1:
        print(f"error: --version must be >= 1, got {args.version}", file=sys.stderr)
        return 2
    opts = ExportOptions(
        checkpoint=args.checkpoint,
        name=args.name,
        root=args.root,
        version=args.version,
        parity_words=args.parity_words,
        words_file=args.words_file,
        variants=tuple(args.variants),
        int8_eval_words=args.int8_eval_words,
        check_determinism=not args.no_determinism_check,
        lexicon=not args.no_lexicon,
        threads=args.threads,
    )
    try:
        path = export_bundle(opts)
    except (ckpt.CheckpointError, ExportError, UnknownSymbolError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"bundle": str(path)}))
    return 0
