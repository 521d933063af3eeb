"""export.int8_static on small cases: which calibration a fused weight takes, the quantisation parameters, and a
rewritten MatMul whose rows do not depend on each other."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.int8_static import activation_qparams, module_of, quantize_graph_file, weight_qparams


def test_each_fused_weight_takes_the_calibration_of_its_module_input():
    assert module_of("decoder_layers.1.ff.fc1.w") == "decoder_layers.1.ff.fc1"
    assert module_of("encoder_layers.0.self_attn.qkv_w") == "encoder_layers.0.self_attn.q_proj"  # Q, K, V: one input
    assert module_of("cross_k.w") == module_of("cross_v.w") == "decoder_layers.0.cross_attn.k_proj"  # the memory
    assert module_of("generator.w") == "generator"
    assert module_of("pe") is None and module_of("decoder_layers.0.ff.fc1.b") is None


def test_quantisation_parameters():
    scale, zero = activation_qparams(-1.0, 3.0)
    assert scale == pytest.approx(4.0 / 255) and zero == 64  # zero is exact: round(1 / (4 / 255))
    scale, zero = activation_qparams(0.5, 2.0)  # a range that does not hold 0 is widened to it
    assert zero == 0 and scale == pytest.approx(2.0 / 255)
    w = np.array([[1.0, -0.5, 0.0], [-2.0, 0.25, 0.0]], np.float32)
    q, s = weight_qparams(w)
    assert q.dtype == np.int8 and q[1, 0] == -63 and q[0, 0] in (31, 32) and np.all(q[:, 2] == 0) and s[2] == 1.0
    assert np.abs(q * s - w).max() <= s.max() / 2 + 1e-7


def test_a_rewritten_matmul_is_close_and_its_rows_are_independent(tmp_path):
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((16, 8)).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "layer.w"], ["y"]), helper.make_node("Add", ["y", "layer.b"], ["out"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 8])],
        [numpy_helper.from_array(w, "layer.w"), numpy_helper.from_array(b, "layer.b")],
    )
    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    assert quantize_graph_file(src, dst, {"layer": (-3.0, 3.0)}) == 1
    ops = [n.op_type for n in onnx.load(str(dst)).graph.node]
    assert ops == ["QuantizeLinear", "MatMulIntegerToFloat"]  # the bias Add folded into the product
    session = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    x = rng.uniform(-2, 2, (5, 16)).astype(np.float32)
    out = session.run(["out"], {"x": x})[0]
    assert np.abs(out - (x @ w + b)).max() < 0.15
    big = np.concatenate([x, 50 * rng.standard_normal((3, 16)).astype(np.float32)])  # batch-mates far out of range
    assert np.array_equal(session.run(["out"], {"x": big})[0][:5], out)  # fixed scales: rows unaffected
    assert all(np.array_equal(session.run(["out"], {"x": x[i : i + 1]})[0][0], out[i]) for i in range(5))
