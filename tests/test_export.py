"""Export of a tiny random model: structure, dynamic axes, the parity gate (passing and failing), variants."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import ROOT, WORDS, make_model, save_checkpoint

from export.bundle_export import ExportOptions, export_bundle
from export.graphs import EXAMPLE, EncoderGraph, ExportError, check_graph, export_graphs, specs_for
from export.parity import tensor_checks
from g2p.bundle import GRAPH_NAMES, BundleError, Manifest, verify_bundle
from g2p.decoding import DecodeOptions
from g2p.ort_backend import OrtBackend
from g2p.pipeline import transcribe
from g2p.tokenization import pad_batch
from training import checkpoint as ckpt
from training.backend import TorchBackend

pytestmark = pytest.mark.slow


def test_bundle_layout_and_manifest(bundle):
    path, ck = bundle
    assert path.name == "1" and path.parent.name == "tiny"
    assert path.stat().st_mode & 0o777 == 0o755  # readable by a server running as another user
    manifest = verify_bundle(path)  # every file present with its sha256, parity ok
    assert manifest.checkpoint_sha256 == ckpt_sha(ck)
    assert set(manifest.variants) == {"fp32", "fused", "optimized", "int8", "fp16"}
    for info in manifest.variants.values():
        assert all((path / f).is_file() for f in info.files.values())
    assert manifest.graphs["decoder_step"].input_names() == ["tgt_ids", "past_k", "past_v", "cross_k", "cross_v",
                                                             "src_mask"]  # fmt: skip
    assert manifest.versions["torch"].startswith("2.13")
    assert manifest.parity.deterministic_reexport is True
    int8 = manifest.variants["int8"].details
    assert int8["scheme"] == "static" and int8["batch_invariant"] is True and int8["quantised_from"] == "fused"
    assert int8["calibration"]["words"] > 0 and all(n > 0 for n in int8["quantised_matmuls"].values())
    labels = {c.variant for c in manifest.parity.decode_checks}
    assert {"int8", "int8 (alone vs batched)"} <= labels  # both gates ran and passed (verify_bundle: parity ok)
    raw = json.loads((path / "manifest.json").read_text())
    assert raw["model_config"]["d_model"] == 32


def ckpt_sha(path: Path) -> str:
    from g2p.bundle import sha256_file

    return sha256_file(path)


def test_tensor_parity_covers_the_required_shapes(bundle):
    manifest = Manifest.read(bundle[0])
    cases = [c.case for c in manifest.parity.tensor_checks]
    assert all(c.ok for c in manifest.parity.tensor_checks)
    for b in (1, 3, 8, 32):
        assert any(f"batch={b} " in c for c in cases)
    for s in (1, 2, 7, manifest.limits.max_source_len):
        assert any(f"src_len={s}" in c for c in cases)
    assert any("past_len=1 tgt_len=1" in c for c in cases)  # a single decoder step
    worst = max(d.max_abs for c in manifest.parity.tensor_checks for d in c.outputs.values())
    assert worst < 1e-4


def test_graph_inputs_keep_every_dynamic_axis(bundle):
    manifest = Manifest.read(bundle[0])
    for name in GRAPH_NAMES:
        model = onnx.load(str(bundle[0] / manifest.variants["fp32"].files[name]))
        for value in model.graph.input:
            dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
            spec = next(t for t in manifest.graphs[name].inputs if t.name == value.name)
            assert dims == spec.shape


@pytest.mark.parametrize("variant", ["fp32", "fused", "optimized", "int8", "fp16"])
def test_every_variant_decodes_through_the_shared_code(bundle, tokenizers, variant):
    backend = OrtBackend(bundle[0], variant)
    out = transcribe(backend, tokenizers, WORDS, DecodeOptions(beam_size=3, nbest=2, max_len=12))
    assert len(out) == len(WORDS) and all(len(r) == 2 for r in out)


def test_onnx_and_torch_give_identical_nbest(bundle, tokenizers):
    model = ckpt.load_model(bundle[1]).model
    opts = DecodeOptions(beam_size=4, nbest=4, max_len=12)
    a = transcribe(TorchBackend(model), tokenizers, WORDS, opts)
    b = transcribe(OrtBackend(bundle[0], "fp32"), tokenizers, WORDS, opts)
    assert [[p.phonemes for p in r] for r in a] == [[p.phonemes for p in r] for r in b]
    assert np.allclose([p.logprob for r in a for p in r], [p.logprob for r in b for p in r], atol=1e-3)


@pytest.mark.parametrize("beam", [1, 4])
def test_io_binding_keeps_the_cache_in_ort_values_with_identical_results(bundle, tokenizers, beam):
    opts = DecodeOptions(beam_size=beam, nbest=beam, max_len=12)
    plain = transcribe(OrtBackend(bundle[0]), tokenizers, WORDS, opts, batch_size=5)
    bound_backend = OrtBackend(bundle[0], io_binding=True)
    bound = transcribe(bound_backend, tokenizers, WORDS, opts, batch_size=5)
    assert [[(p.phonemes, round(p.logprob, 4)) for p in r] for r in plain] == [
        [(p.phonemes, round(p.logprob, 4)) for p in r] for r in bound
    ]
    src, mask = pad_batch(tokenizers.encode_source(WORDS[:3]))
    _, state = bound_backend.step(np.full(3, 1), bound_backend.encode(src, mask))
    _, state = bound_backend.step(np.full(3, 5), state)
    assert type(state.past_k).__name__ == "OrtValue" and type(state.cross_k).__name__ == "OrtValue"


def test_parallel_transcriber_equals_one_backend(bundle, tokenizers):
    from g2p.pipeline import ParallelTranscriber

    opts = DecodeOptions(beam_size=3, nbest=2, max_len=12)
    one = transcribe(OrtBackend(bundle[0]), tokenizers, WORDS * 3, opts, batch_size=4)
    par = ParallelTranscriber([OrtBackend(bundle[0], config=1, io_binding=True) for _ in range(2)])
    assert par.transcribe(tokenizers, WORDS * 3, opts, batch_size=4) == one  # 9 batches over 2 sessions
    assert par.transcribe(tokenizers, WORDS[:2], opts, batch_size=4) == one[:2]  # one batch: decoded in place


def test_a_fixed_axis_fails_the_structural_check(tokenizers, tmp_path):
    model = make_model(tokenizers)
    src = torch.randint(4, tokenizers.src_vocab_size, (EXAMPLE["batch"], EXAMPLE["src_len"]))
    path = tmp_path / "encoder.onnx"
    torch.onnx.export(EncoderGraph(model).eval(), (src, src > 0), str(path), dynamo=True, external_data=False,
                      input_names=["src_ids", "src_mask"], output_names=["memory"])  # fmt: skip  # no dynamic_shapes
    with pytest.raises(ExportError, match=r"axis 0 \(batch\) came out fixed as 3"):
        check_graph(path, specs_for(model)["encoder"])


def test_the_tensor_gate_catches_a_wrong_graph(tokenizers, tmp_path):
    model = make_model(tokenizers)
    paths = export_graphs(model, tmp_path)
    for path in paths.values():  # torch.onnx's source stack traces are dropped: layout changes re-export the same
        assert not any(node.metadata_props for node in onnx.load(str(path)).graph.node)
    graph = onnx.load(str(paths["decoder_step"]))
    init = max(graph.graph.initializer, key=lambda t: np.prod(t.dims))  # a weight matrix
    arr = onnx.numpy_helper.to_array(init).copy()
    arr *= 1.5  # (adding a constant would cancel: LayerNorm outputs sum to zero)
    init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    onnx.save(graph, str(paths["decoder_step"]))
    checks = tensor_checks(model, paths, atol=1e-4, rtol=1e-4)
    assert all(c.ok for c in checks if c.graph != "decoder_step")
    assert not any(c.ok for c in checks if c.graph == "decoder_step")


def test_a_failed_gate_fails_the_export_and_keeps_a_report(tokenizers, tmp_path, words_file, monkeypatch):
    import export.bundle_export as be

    real = be.export_graphs

    def broken(model, out_dir, prefix=""):
        paths = real(model, out_dir, prefix)
        graph = onnx.load(str(paths["encoder"]))
        for node in graph.graph.node:
            if node.op_type == "Relu":
                node.op_type = "Sigmoid"  # a wrong activation: structurally valid, numerically wrong
        onnx.save(graph, str(paths["encoder"]))
        return paths

    monkeypatch.setattr(be, "export_graphs", broken)
    ck = save_checkpoint(tokenizers, tmp_path / "ckpt")
    opts = ExportOptions(checkpoint=ck, name="bad", root=tmp_path / "models", words_file=words_file, beams=(1,),
                         variants=(), check_determinism=False, threads=1, log=lambda m: None)  # fmt: skip
    with pytest.raises(ExportError, match=r"parity gate failed: encoder\["):
        export_bundle(opts)
    assert not (tmp_path / "models" / "bad" / "1").exists()
    report = json.loads((tmp_path / "models" / "bad" / "1.failed" / "parity_report.json").read_text())
    assert report["ok"] is False
    assert any(not c["ok"] for c in report["tensor_checks"])


def test_verify_bundle_rejects_tampering(bundle, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle[0], copy)
    verify_bundle(copy)
    (copy / "encoder.onnx").write_bytes((copy / "encoder.onnx").read_bytes() + b"\0")
    with pytest.raises(BundleError, match=r"encoder\.onnx does not match its sha256"):
        verify_bundle(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match="not a model bundle"):
        verify_bundle(copy)


def test_cli_errors(tmp_path, bundle):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "export", *args], cwd=ROOT, capture_output=True, text=True,
                              check=False, timeout=300)  # fmt: skip

    proc = run("--checkpoint", str(tmp_path / "missing.pt"))
    assert proc.returncode == 1 and "checkpoint not found" in proc.stderr and "Traceback" not in proc.stderr
    root = bundle[0].parent.parent
    proc = run("--checkpoint", str(bundle[1]), "--root", str(root), "--name", "tiny", "--version", "1")
    assert proc.returncode == 1 and "already exists" in proc.stderr
    proc = run("--checkpoint", str(bundle[1]), "--name", "../escape")
    assert proc.returncode == 2 and "plain directory name" in proc.stderr


def _gpu_check():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _has_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.mark.skipif(_has_cuda(), reason="this machine has CUDA; the gpu test runs instead")
def test_gpu_check_says_clearly_when_there_is_no_cuda(bundle, words_file):
    report = _gpu_check().run(bundle[0], 12, words_file)
    assert "CUDAExecutionProvider is not available" in report["error"]


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="needs onnxruntime-gpu and an NVIDIA GPU")
def test_cuda_provider_parity(bundle, words_file):
    report = _gpu_check().run(bundle[0], 12, words_file)
    assert report["ok"], report
    assert report["checks"]["fp16"]["providers"]["decoder_step"][0] == "CUDAExecutionProvider"
