"""The fused variant: graphs built from the weights on onnxruntime's fused kernels, and the whole-batch greedy
graph. Parity with PyTorch (tensors, words), with the step-by-step loop (including rows cut at their length limit
and a loop that runs zero times), post-norm models, the shared weights file, and the int8 variant built from it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import WORDS, make_model

from export.fused import build_fused_graphs
from export.parity import tensor_checks
from g2p.bundle import GRAPH_NAMES, GREEDY, PREFILL, ROWS_STEP, Manifest, verify_bundle
from g2p.decoding import DecodeOptions
from g2p.ort_backend import OrtBackend, make_session
from g2p.pipeline import transcribe
from g2p.tokenization import pad_batch
from training.backend import TorchBackend

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("norm_first", [True, False])
def test_fused_graphs_match_pytorch_tensor_by_tensor(tokenizers, tmp_path, norm_first):
    model = make_model(tokenizers, seed=3, norm_first=norm_first).eval()
    paths = build_fused_graphs(model, tmp_path)
    checks = tensor_checks(model, {g: paths[g] for g in GRAPH_NAMES}, atol=1e-4, rtol=1e-4)
    assert checks and all(c.ok for c in checks), [c.case for c in checks if not c.ok]
    assert any("past_len=6 tgt_len=3" in c.case for c in checks)  # a causal block after a cache


def test_fused_graphs_use_the_fused_kernels_and_share_one_weights_file(tokenizers, tmp_path):
    model = make_model(tokenizers, seed=3).eval()
    paths = build_fused_graphs(model, tmp_path)
    step = onnx.load(str(paths["decoder_step"]), load_external_data=False)
    ops = [n.op_type for n in step.graph.node]
    assert ops.count("MultiHeadAttention") == 2 * model.cfg.n_decoder_layers
    assert "Softmax" not in ops and "Where" not in ops  # the attention is inside the fused kernel
    greedy = onnx.load(str(paths["greedy"]), load_external_data=False)
    body = next(n for n in greedy.graph.node if n.op_type == "Loop").attribute[0].g
    compact = next(n for n in body.node if n.op_type == "If")  # done rows leave the loop
    then = next(a.g for a in compact.attribute if a.name == "then_branch")
    assert {n.op_type for n in then.node} == {"Compress"}
    weights = tmp_path / "fused_weights.bin"
    params = sum(p.numel() for p in model.parameters()) * 4
    assert params * 0.9 < weights.stat().st_size < params * 1.5  # each weight once, not once per graph
    for path in paths.values():
        assert path.stat().st_size < weights.stat().st_size / 4


def _greedy_both_ways(bundle_dir, variant, tok, words, options):
    whole = OrtBackend(bundle_dir, variant)
    steps = OrtBackend(bundle_dir, variant, greedy_graph=False)
    assert GREEDY in whole.sessions and GREEDY not in steps.sessions
    return transcribe(whole, tok, words, options), transcribe(steps, tok, words, options)


@pytest.mark.parametrize("max_len", [48, 3, 1])
def test_greedy_graph_equals_the_step_by_step_loop(bundle, tokenizers, max_len):
    # max_len 3 cuts most rows at their limit (unfinished); 1 makes the loop run zero times
    opts = DecodeOptions(beam_size=1, max_len=max_len)
    a, b = _greedy_both_ways(bundle[0], "fused", tokenizers, WORDS, opts)
    for x, y in zip(a, b, strict=True):
        assert x[0].phonemes == y[0].phonemes and x[0].finished == y[0].finished
        assert x[0].logprob == pytest.approx(y[0].logprob, abs=1e-4)
    if max_len < 3:
        assert not any(r[0].finished for r in a) or all(len(r[0].phonemes) <= max_len for r in a)


def test_fused_variant_decodes_like_pytorch(bundle, tokenizers):
    from training import checkpoint as ckpt

    model = ckpt.load_model(bundle[1]).model
    for opts in (DecodeOptions(beam_size=1, max_len=12), DecodeOptions(beam_size=3, nbest=3, max_len=12)):
        ref = transcribe(TorchBackend(model), tokenizers, WORDS, opts)
        got = transcribe(OrtBackend(bundle[0], "fused"), tokenizers, WORDS, opts)
        assert [[h.phonemes for h in r] for r in got] == [[h.phonemes for h in r] for r in ref]


def test_the_export_records_the_fused_gates(bundle):
    manifest = verify_bundle(bundle[0])
    fused = manifest.variants["fused"]
    assert set(fused.files) == {*GRAPH_NAMES, GREEDY, ROWS_STEP, PREFILL}
    assert "fused_weights.bin" in manifest.sha256  # tampering with the shared weights is caught too
    labels = {(c.variant, c.beam_size) for c in manifest.parity.decode_checks}
    assert {
        ("fused", 1),
        ("fused (step by step)", 1),
        ("fused", 3),
        ("fused (continuous batching)", 1),
        ("fused (continuous batching)", 3),
    } <= labels
    assert any(c.graph.startswith("fused_") for c in manifest.parity.tensor_checks)
    assert any(c.graph == f"fused_{ROWS_STEP}" for c in manifest.parity.tensor_checks)
    assert any(c.graph == f"fused_{PREFILL}" for c in manifest.parity.tensor_checks)
    int8 = manifest.variants["int8"]
    assert int8.details["quantised_from"] == "fused" and GREEDY in int8.files
    assert PREFILL not in int8.files and ROWS_STEP not in int8.files  # continuous batching stays fp32


def test_int8_greedy_graph_is_quantised_inside_its_loop(bundle):
    manifest = Manifest.read(bundle[0])
    model = onnx.load(str(bundle[0] / manifest.variants["int8"].files[GREEDY]))
    loop = next(n for n in model.graph.node if n.op_type == "Loop")
    body_ops = {n.op_type for n in loop.attribute[0].g.node}
    assert {"QuantizeLinear", "MatMulIntegerToFloat"} <= body_ops and "MatMul" not in body_ops
    assert "DynamicQuantizeLinear" not in body_ops  # fixed activation scales: no per-batch range
    session = make_session(bundle[0] / manifest.variants["int8"].files[GREEDY], ["CPUExecutionProvider"])
    tok_ids = np.array([[5, 6, 7, 2]], dtype=np.int64)
    tokens, scores = session.run(None, {"src_ids": tok_ids, "src_mask": np.ones((1, 4), bool),
                                        "limits": np.array([6], np.int64)})  # fmt: skip
    assert tokens.shape == scores.shape and tokens.shape[0] == 1 and 1 <= tokens.shape[1] <= 6
    assert np.all(scores <= 0)


def test_greedy_graph_rows_are_independent_of_their_batch(bundle, tokenizers):
    """fp32: a word decodes the same alone and inside a padded batch of longer words (padding and finished rows
    must not leak into other rows)."""
    backend = OrtBackend(bundle[0], "fused")
    ids = tokenizers.encode_source(WORDS)
    src, mask = pad_batch(ids)
    limits = DecodeOptions(max_len=12).limits(mask)
    batch_tokens, _ = backend.greedy(src, mask, limits)
    for i, row in enumerate(ids):
        s1, m1 = pad_batch([row])
        alone, _ = backend.greedy(s1, m1, limits[i : i + 1])
        n = min(alone.shape[1], int(limits[i]))
        assert np.array_equal(alone[0, :n], batch_tokens[i, :n])
