"""Torch -> ONNX for the three graphs of a bundle, with the structural checks that fail an export.

Each graph is a thin ``nn.Module`` around the model's own ``encode`` / ``cross_kv`` / ``decode``, so the ONNX
decoder step is exactly the model's incremental decoding. Names and dynamic axes come from
``g2p.bundle.graph_specs``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import onnx
import torch
from torch import Tensor, nn
from torch.export import Dim

from g2p.bundle import DECODER, DECODER_STEP, ENCODER, GraphSpec, graph_specs
from training.model import Transformer

OPSET = 18


class ExportError(RuntimeError):
    """An export failed one of its checks; the message says which."""


class EncoderGraph(nn.Module):
    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, src_ids: Tensor, src_mask: Tensor) -> Tensor:
        return self.model.encode(src_ids, src_mask)  # (B, S, D)


class DecoderGraph(nn.Module):
    """First decoder call: no self-attention cache; computes the cross-attention keys/values once."""

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, tgt_ids: Tensor, memory: Tensor, src_mask: Tensor) -> tuple[Tensor, ...]:
        cross_k, cross_v = self.model.cross_kv(memory)  # (L, B, H, S, Dh)
        logits, present_k, present_v = self.model.decode(tgt_ids, cross_k, cross_v, src_mask)
        return logits, present_k, present_v, cross_k, cross_v


class DecoderStepGraph(nn.Module):
    """Later decoder calls: new tokens + past self-attention cache + cross keys/values."""

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, tgt_ids: Tensor, past_k: Tensor, past_v: Tensor, cross_k: Tensor, cross_v: Tensor, src_mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        return self.model.decode(tgt_ids, cross_k, cross_v, src_mask, past_k, past_v)


def specs_for(model: Transformer) -> dict[str, GraphSpec]:
    c = model.cfg
    return graph_specs(c.n_decoder_layers, c.n_heads, c.head_dim, c.d_model, c.tgt_vocab_size)


# Example sizes: every dynamic dimension >= 2 (0 and 1 get specialised) and all distinct.
EXAMPLE = {"batch": 3, "src_len": 5, "tgt_len": 2, "past_len": 4}


def example_inputs(model: Transformer) -> dict[str, tuple[Tensor, ...]]:
    g = torch.Generator().manual_seed(0)
    b, s, t, p = EXAMPLE["batch"], EXAMPLE["src_len"], EXAMPLE["tgt_len"], EXAMPLE["past_len"]
    c = model.cfg
    src_ids = torch.randint(4, c.src_vocab_size, (b, s), generator=g)
    src_mask = torch.ones(b, s, dtype=torch.bool)
    src_mask[0, -2:] = False  # a padded row
    tgt_ids = torch.randint(4, c.tgt_vocab_size, (b, t), generator=g)
    with torch.no_grad():
        memory = model.encode(src_ids, src_mask)
        ck, cv = model.cross_kv(memory)
        _, pk, pv = model.decode(torch.randint(4, c.tgt_vocab_size, (b, p), generator=g), ck, cv, src_mask)
    return {
        ENCODER: (src_ids, src_mask),
        DECODER: (tgt_ids, memory, src_mask),
        DECODER_STEP: (tgt_ids, pk, pv, ck, cv, src_mask),
    }


def _dims(model: Transformer) -> dict[str, Dim]:
    c = model.cfg
    return {
        "batch": Dim("batch", min=1, max=65536),
        "src_len": Dim("src_len", min=1, max=c.max_source_len),
        "tgt_len": Dim("tgt_len", min=1, max=c.max_target_len),
        "past_len": Dim("past_len", min=1, max=c.max_target_len - 1),
    }


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.onnx prints progress and benign warnings; keep the export's own report readable."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        level = logging.getLogger("torch").level
        logging.getLogger("torch").setLevel(logging.ERROR)
        try:
            yield
        finally:
            logging.getLogger("torch").setLevel(level)


def export_graphs(model: Transformer, out_dir: Path, prefix: str = "") -> dict[str, Path]:
    """Export encoder, decoder and decoder step of ``model`` (in eval mode) into ``out_dir``."""
    model = model.eval()
    specs = specs_for(model)
    examples = example_inputs(model)
    dims = _dims(model)
    wrappers: dict[str, nn.Module] = {
        ENCODER: EncoderGraph(model),
        DECODER: DecoderGraph(model),
        DECODER_STEP: DecoderStepGraph(model),
    }
    paths = {}
    for name, wrapper in wrappers.items():
        spec = specs[name]
        dynamic_shapes = {t.name: {axis: dims[sym] for axis, sym in t.dynamic_axes.items()} for t in spec.inputs}
        path = out_dir / f"{prefix}{name}.onnx"
        with _quiet(), torch.no_grad():
            torch.onnx.export(
                wrapper.eval(),
                examples[name],
                str(path),
                dynamo=True,
                input_names=spec.input_names(),
                output_names=spec.output_names(),
                dynamic_shapes=dynamic_shapes,
                opset_version=OPSET,
                external_data=False,
            )
        strip_node_metadata(path)
        check_graph(path, spec)
        paths[name] = path
    return paths


def all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and of the graphs inside its nodes (Loop bodies, If branches), depth first."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from all_nodes(attr.g)
            for sub in attr.graphs:
                yield from all_nodes(sub)


def strip_node_metadata(path: Path) -> None:
    """Drop torch.onnx's per-node metadata (source stack traces with line numbers, FX node text, scopes): it does
    not change what the graph computes, and without it a graph re-exports byte-identically after code elsewhere in
    the model's file moved."""
    model = onnx.load(str(path))
    for node in all_nodes(model.graph):
        del node.metadata_props[:]
    onnx.save(model, str(path))


_ONNX_TYPES = {
    "int64": onnx.TensorProto.INT64,
    "bool": onnx.TensorProto.BOOL,
    "float32": onnx.TensorProto.FLOAT,
    "float16": onnx.TensorProto.FLOAT16,
}


def check_graph(path: Path, spec: GraphSpec) -> None:
    """Full ``onnx.checker``, strict shape inference, then names, element types and dynamic axes vs the spec.

    An axis the spec declares dynamic that came out as a fixed number fails the export.
    """
    try:
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path))
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:
        raise ExportError(f"{path.name}: onnx checker / shape inference failed: {exc}") from exc
    graph = model.graph
    problems = []
    for kind, actual, expected in (("input", graph.input, spec.inputs), ("output", graph.output, spec.outputs)):
        names = [v.name for v in actual]
        if names != [t.name for t in expected]:
            problems.append(f"{kind} names {names} != {[t.name for t in expected]}")
            continue
        for value, t in zip(actual, expected, strict=True):
            tt = value.type.tensor_type
            if tt.elem_type != _ONNX_TYPES[t.dtype]:
                problems.append(f"{kind} {t.name}: element type {tt.elem_type}, expected {t.dtype}")
            dims = list(tt.shape.dim)
            if len(dims) != len(t.shape):
                problems.append(f"{kind} {t.name}: rank {len(dims)}, expected {len(t.shape)}")
                continue
            for axis, (d, want) in enumerate(zip(dims, t.shape, strict=True)):
                if isinstance(want, str):
                    if not d.dim_param:
                        problems.append(f"{kind} {t.name} axis {axis} ({want}) came out fixed as {d.dim_value}")
                    elif kind == "input" and d.dim_param != want:
                        problems.append(f"{kind} {t.name} axis {axis} is {d.dim_param!r}, expected {want!r}")
                elif d.dim_value != want:
                    problems.append(f"{kind} {t.name} axis {axis} is {d.dim_param or d.dim_value}, expected {want}")
    if problems:
        raise ExportError(f"{path.name} does not match its spec: " + "; ".join(problems))
