"""int8 with fixed activation scales: every quantised MatMul's answer for a row depends on that row alone.

Dynamic quantisation (``quantize_dynamic``) scales each MatMul's input by its range over the whole batch tensor,
so a word's output depends on the words batched with it (990 of 1,000 test words identical alone vs in a batch of
32). Here each activation's scale and zero point are constants, calibrated once with PyTorch on training words (the
range of every ``nn.Linear``'s input under teacher forcing), and each weight is quantised per output column
(symmetric int8). A MatMul ``x @ W`` becomes ``QuantizeLinear(x)`` (uint8, fixed scale) and one
``com.microsoft.MatMulIntegerToFloat`` (u8 x s8 products summed in int32, exact whatever the batch, then scaled):
elementwise ops and an integer product, so a row's output never depends on its batch-mates.

Every MatMul whose weight is a graph initializer is rewritten, in Loop bodies too (the ``greedy`` graph); the
fused graphs name each weight after its module (``export.fused``), which is how a MatMul finds its calibration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from export.graphs import all_nodes
from training.model import Transformer

MS = "com.microsoft"
WEIGHT_MAX = 63
"""Weights are 7-bit (-63..63): x86 CPUs without VNNI multiply u8 x s8 with VPMADDUBSW, which adds two products
in a saturating int16; 255 x 63 x 2 stays below 32,767 (255 x 127 x 2 does not: a wrong sum, seen as an error of
4.2 on a 16-wide product in tests/test_int8_static.py)."""


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def calibrate(model: Transformer, batches: Iterable[Batch]) -> dict[str, tuple[float, float]]:
    """(min, max) of the input of every ``nn.Linear`` of ``model`` (by module name) over teacher-forced batches of
    (src ids, src mask, target input ids)."""
    ranges: dict[str, tuple[float, float]] = {}
    hooks = []

    def hook(name: str) -> Callable[[torch.nn.Module, tuple[torch.Tensor, ...]], None]:
        def record(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach()
            lo, hi = float(x.min()), float(x.max())
            old = ranges.get(name)
            ranges[name] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))

        return record

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            hooks.append(module.register_forward_pre_hook(hook(name)))
    try:
        model.eval()
        with torch.inference_mode():
            for src, mask, tgt_in in batches:
                model(src, mask, tgt_in)
    finally:
        for h in hooks:
            h.remove()
    return ranges


def module_of(weight: str) -> str | None:
    """The ``nn.Linear`` whose input a fused graph's MatMul weight ``weight`` multiplies (None: not a weight of
    ``export.fused``'s naming)."""
    if weight == "generator.w":
        return "generator"
    if weight in ("cross_k.w", "cross_v.w"):  # every layer's cross K/V of the encoder output, in one MatMul
        return "decoder_layers.0.cross_attn.k_proj"
    if weight.endswith(".qkv_w"):
        return weight.removesuffix(".qkv_w") + ".q_proj"
    if weight.endswith(".w"):
        return weight.removesuffix(".w")
    return None


def activation_qparams(lo: float, hi: float) -> tuple[np.float32, np.uint8]:
    """uint8 scale and zero point of the calibrated range [lo, hi] (widened to hold 0, so zero is exact; inputs
    outside it saturate, the same way whatever the batch)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0 or 1.0
    zero = int(np.clip(round(-lo / scale), 0, 255))
    return np.float32(scale), np.uint8(zero)


def weight_qparams(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per output column symmetric, ``WEIGHT_MAX`` levels each side: (int8 weights, float32 column scales)."""
    scale = np.abs(w).max(axis=0) / WEIGHT_MAX
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    q = np.clip(np.round(w / scale), -WEIGHT_MAX, WEIGHT_MAX).astype(np.int8)
    return q, scale


def quantize_graph_file(src: Path, dst: Path, ranges: dict[str, tuple[float, float]]) -> int:
    """Write ``src`` (a fused graph) with every calibrated MatMul quantised to ``dst`` (weights inside the file);
    returns how many MatMuls were rewritten."""
    model = onnx.load(str(src))  # with its external weights
    inits = {t.name: t for t in model.graph.initializer}
    added: dict[str, onnx.TensorProto] = {}
    rewritten = 0

    def const(name: str, value: np.ndarray | np.generic) -> str:
        if name not in added:
            added[name] = numpy_helper.from_array(np.asarray(value), name)
        return name

    def visit(graph: onnx.GraphProto) -> None:
        nonlocal rewritten
        consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                consumers.setdefault(name, []).append(node)
        folded: set[int] = set()  # bias Adds taken into the quantised product (their node ids)
        nodes: list[onnx.NodeProto] = []
        for node in graph.node:
            if id(node) in folded:
                continue
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)
            weight = node.input[1] if node.op_type == "MatMul" and len(node.input) == 2 else None
            module = module_of(weight) if weight is not None and weight in inits else None
            if weight is None or module is None or module not in ranges:
                nodes.append(node)
                continue
            outputs, bias = list(node.output), ""
            after = consumers.get(node.output[0], [])
            if len(after) == 1 and after[0].op_type == "Add" and not _is_graph_output(graph, node.output[0]):
                other = [i for i in after[0].input if i != node.output[0]]
                if len(other) == 1 and other[0] in inits and len(inits[other[0]].dims) == 1:
                    bias, outputs = other[0], list(after[0].output)
                    folded.add(id(after[0]))
            x_scale, x_zero = activation_qparams(*ranges[module])
            wq, w_scale = weight_qparams(numpy_helper.to_array(inits[weight]))
            xq = f"{node.output[0]}_xq"
            scale, zero = const(f"{weight}.x_scale", x_scale), const(f"{weight}.x_zero", x_zero)
            nodes.append(helper.make_node("QuantizeLinear", [node.input[0], scale, zero], [xq], name=f"{node.name}_q"))
            nodes.append(helper.make_node(
                "MatMulIntegerToFloat",
                [xq, const(f"{weight}.q8", wq), scale, const(f"{weight}.w_scale", w_scale), zero, "", bias],
                outputs, name=f"{node.name}_int8", domain=MS,
            ))  # fmt: skip
            rewritten += 1
        del graph.node[:]
        graph.node.extend(nodes)

    visit(model.graph)
    used = {i for n in all_nodes(model.graph) for i in n.input}
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept + [t for name, t in added.items() if name in used])
    for t in model.graph.initializer:  # everything inside the file (the fp32 weights file is not this variant's)
        if t.data_location == onnx.TensorProto.EXTERNAL:
            t.data_location = onnx.TensorProto.DEFAULT
            del t.external_data[:]
    if not any(o.domain == MS for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS, 1))
    onnx.save(model, str(dst))
    return rewritten


def _is_graph_output(graph: onnx.GraphProto, name: str) -> bool:
    return any(o.name == name for o in graph.output)
