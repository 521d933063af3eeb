"""The ``fused`` graphs: the three step graphs (same names, inputs, outputs and dynamic axes as the torch.onnx
export) and the ``greedy`` graph, built layer by layer from the checkpoint's weights on ONNX Runtime's fused
transformer kernels.

torch.onnx writes attention as ~20 small operators per layer (reshapes, transposes, two batched MatMuls, a
masked softmax, the cache concatenation) and onnxruntime's transformer optimizer does not recognise that
pattern. Here every attention is one ``com.microsoft.MultiHeadAttention`` (Q/K/V biases, the scaled dot product,
the padding and causal masks and the KV-cache concatenation inside one kernel), Q, K and V come from one MatMul,
and the embedding scale is folded into the embedding tables. The ``greedy`` graph adds the decoding loop itself
(an ONNX ``Loop``), so a whole batch is one run. The graphs run on onnxruntime only; the portable torch.onnx
graphs stay the bundle's reference, and the export checks these against PyTorch like any other variant.

Pre-norm and post-norm models are both built: a sub-layer's output joins the residual stream, and the LayerNorm
of the sum is the next block's pre-norm (pre-norm) or the block's own norm (post-norm). (Add + LayerNormalization
rather than onnxruntime's SkipLayerNormalization, whose CPU kernel measured slower here.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.graphs import OPSET, check_graph, specs_for
from g2p.bundle import DECODER, DECODER_STEP, ENCODER, GREEDY, PREFILL, ROWS_STEP
from training.model import Transformer

MS = "com.microsoft"
LN_EPS = 1e-5  # nn.LayerNorm's default, used by every norm of the model
COMPACT_EVERY = 8  # the greedy loop drops its done rows once they are >= 1/8 of the rows still in it
MASK_FILTER = -10000.0  # MultiHeadAttention's own value for masked keys (softmax weight exactly 0 in float32)


_Dims = list[str | int | None]  # a value's shape: symbolic names, sizes, or unknown


@dataclass(frozen=True)
class _Carried:
    """One loop-carried value of the greedy ``Loop``: the body reads it as ``<name>_in`` and writes it as
    ``<name>_out``, of type ``elem_type`` and shape ``dims``; ``initial`` is its value entering the loop (an
    outer-graph name). ``per_row``: it has the row axis, and the rows that leave the loop leave it too (the
    compaction ``If``); else a full-batch buffer."""

    name: str
    elem_type: int
    dims: _Dims
    initial: str
    per_row: bool

    @property
    def body_input(self) -> str:
        return f"{self.name}_in"

    @property
    def body_output(self) -> str:
        return f"{self.name}_out"


@dataclass(frozen=True)
class _FirstStep:
    """The greedy graph's values after its first decoder step, outside the loop."""

    batch: str  # [B]
    cross: list[tuple[str, str]]  # each layer's cross keys/values (B, H, S, Dh)
    cross_bias: str  # (B, 1, 1, S): the source padding as an additive attention bias
    present: list[tuple[str, str]]  # each layer's self-attention keys/values (B, H, 1, Dh)
    token: str  # (B, 1) int64
    logprob: str  # (B, 1) float


def _cache_name(kind: str, kv: str, layer: int) -> str:
    """A layer's keys (``kv`` "k") or values ("v") of the ``kind`` cache ("past" or "cross") as a carried name."""
    return f"{kind}_{kv}_{layer}"


def _cache_by_name(kind: str, layers: list[tuple[str, str]]) -> dict[str, str]:
    """Each layer's (keys, values) of the ``kind`` cache by carried name, layer by layer, keys first."""
    return {
        _cache_name(kind, kv, i): value for i, pair in enumerate(layers) for kv, value in zip("kv", pair, strict=True)
    }


def _cache_from_names(values: dict[str, str], kind: str, n_layers: int) -> list[tuple[str, str]]:
    """The inverse of ``_cache_by_name``: each layer's (keys, values) of the ``kind`` cache from ``values``."""
    return [(values[_cache_name(kind, "k", i)], values[_cache_name(kind, "v", i)]) for i in range(n_layers)]


def _carried_cache(kind: str, layers: list[tuple[str, str]], dims: _Dims) -> list[_Carried]:
    """Each layer's (keys, values) of the ``kind`` cache as per-row float carried values, of shape ``dims``."""
    return [
        _Carried(name, TensorProto.FLOAT, dims, value, per_row=True)
        for name, value in _cache_by_name(kind, layers).items()
    ]


def _compaction_branch(values: list[tuple[_Carried, str]], keep: str | None) -> onnx.GraphProto:
    """A branch of the compaction ``If``: ``compact_then`` keeps each value's ``keep`` rows (``Compress``),
    ``compact_else`` (``keep`` None) passes each value on as it is. Output ``k`` is ``<then|else>_<k>``."""
    branch = "else" if keep is None else "then"
    nodes, outputs = [], []
    for k, (carried, value) in enumerate(values):
        out = f"{branch}_{k}"
        if keep is None:
            nodes.append(helper.make_node("Identity", [value], [out], name=f"keep_{k}"))
        else:
            nodes.append(helper.make_node("Compress", [value, keep], [out], name=f"compress_{k}", axis=0))
        outputs.append(helper.make_tensor_value_info(out, carried.elem_type, None))
    return helper.make_graph(nodes, f"compact_{branch}", [], outputs)


class _Graph:
    """A small graph builder: named initializers from numpy, nodes with generated output names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, onnx.TensorProto] = {}
        self._n = 0

    def const(self, name: str, value: np.ndarray) -> str:
        if name not in self.inits:
            self.inits[name] = numpy_helper.from_array(np.ascontiguousarray(value), name)
        return name

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, domain: str = "", **attrs: Any) -> list[str]:
        self._n += 1
        outs = [f"{op_type.lower()}_{self._n}_{i}" for i in range(n_out)]
        node = helper.make_node(op_type, inputs, outs, name=f"{op_type}_{self._n}", domain=domain, **attrs)
        self.nodes.append(node)
        return outs

    def op1(self, op_type: str, inputs: list[str], domain: str = "", **attrs: Any) -> str:
        return self.op(op_type, inputs, 1, domain, **attrs)[0]

    def rename_output(self, produced: str, name: str) -> None:
        """Give a produced value a graph-output name."""
        for node in self.nodes:
            node.output[:] = [name if o == produced else o for o in node.output]
            node.input[:] = [name if i == produced else i for i in node.input]


class _Weights:
    """The checkpoint's parameters as float32 numpy arrays, MatMul-ready (Linear weights transposed)."""

    def __init__(self, model: Transformer) -> None:
        self.sd = {k: v.detach().cpu().float().numpy() for k, v in model.state_dict().items()}
        self.model = model

    def linear(self, prefix: str) -> tuple[np.ndarray, np.ndarray | None]:
        w = self.sd[f"{prefix}.weight"].T
        return w, self.sd.get(f"{prefix}.bias")

    def norm(self, prefix: str) -> tuple[np.ndarray, np.ndarray]:
        return self.sd[f"{prefix}.weight"], self.sd[f"{prefix}.bias"]


class _Builder:
    def __init__(self, model: Transformer) -> None:
        self.model = model
        self.cfg = model.cfg
        self.w = _Weights(model)
        self.g = _Graph()

    # --- pieces ------------------------------------------------------------------------------
    def linear(self, x: str, prefix: str, with_bias: bool = True) -> str:
        w, b = self.w.linear(prefix)
        y = self.g.op1("MatMul", [x, self.g.const(f"{prefix}.w", w)])
        if with_bias and b is not None:
            y = self.g.op1("Add", [y, self.g.const(f"{prefix}.b", b)])
        return y

    def layer_norm(self, x: str, prefix: str) -> str:
        g, b = self.w.norm(prefix)
        return self.g.op1(
            "LayerNormalization", [x, self.g.const(f"{prefix}.g", g), self.g.const(f"{prefix}.beta", b)],
            axis=-1, epsilon=LN_EPS,
        )  # fmt: skip

    def join(self, out: str, x: str, norm: str | None) -> tuple[str, str]:
        """Residual join of a sub-layer output ``out`` into the stream ``x``: returns (the next block's input, the
        new stream). ``norm`` is the LayerNorm applied to the sum (None: after the last block of a post-norm
        stack, which has no final LayerNorm)."""
        s = self.g.op1("Add", [out, x])
        if norm is None:
            return s, s
        normed = self.layer_norm(s, norm)
        return normed, (s if self.cfg.norm_first else normed)

    def norms_after(self, blocks: list[str], final: str) -> list[str | None]:
        """The LayerNorm applied after each block's residual sum (see the module docstring)."""
        if self.cfg.norm_first:
            return [*blocks[1:], final]
        return list(blocks)

    def mha(self, prefix: str, h: str, key_value: tuple[str, str] | None, **inputs: str) -> list[str]:
        """One attention, output projection included. ``key_value`` None: self-attention (Q, K, V in one MatMul,
        their biases inside the kernel); else cross-attention over given (B, H, S, Dh) keys/values. Extra inputs
        by MultiHeadAttention's names. Returns the projected output and, with a cache, present keys/values."""
        g = self.g
        c = self.cfg
        if key_value is None:
            # one MatMul for the three projections (one pass over ``h``; one activation quantisation in int8)
            ws, biases = zip(*(self.w.linear(f"{prefix}.{p}_proj") for p in "qkv"), strict=True)
            qkv = g.op1("MatMul", [h, g.const(f"{prefix}.qkv_w", np.concatenate(ws, axis=1))])
            q, k, v = g.op("Split", [qkv], 3, num_outputs=3, axis=-1)
            bias = g.const(f"{prefix}.qkv_b", np.concatenate(biases))
        else:
            q = self.linear(h, f"{prefix}.q_proj")
            k, v = key_value
            bias = ""
        names = ["key_padding_mask", "attention_bias", "past_key", "past_value"]
        args = [q, k, v, bias, *(inputs.get(n, "") for n in names)]
        while args[-1] == "":
            args.pop()
        n_out = 3 if "past_key" in inputs or inputs.get("present") else 1
        outs = g.op("MultiHeadAttention", args, n_out, MS, num_heads=c.n_heads,
                    unidirectional=1 if key_value is None and inputs.get("causal") else 0)  # fmt: skip
        return [self.linear(outs[0], f"{prefix}.out_proj"), *outs[1:]]

    def feed_forward(self, h: str, prefix: str) -> str:
        return self.linear(self.g.op1("Relu", [self.linear(h, f"{prefix}.fc1")]), f"{prefix}.fc2")

    def shape_dim(self, x: str, axis: int) -> str:
        return self.g.op1("Shape", [x], start=axis, end=axis + 1)

    def embed(self, ids: str, table: str, offset: str | None, position: str | None = None) -> str:
        """Gather from the (pre-scaled) token table + the sinusoidal rows [offset, offset + T), or the row
        ``position`` (a (1,) tensor) when each row has a single new token at that position."""
        g = self.g
        emb = getattr(self.model, table)
        scaled = (emb.tokens.weight.detach().float() * emb.scale).numpy()
        pe = g.const("pe", emb.pe.numpy())
        tok = g.op1("Gather", [g.const(f"{table}.scaled", scaled), ids])
        if position is not None:
            return g.op1("Add", [tok, g.op1("Gather", [pe, position])])
        start = offset or g.const("zero1", np.zeros(1, np.int64))
        end = g.op1("Add", [start, self.shape_dim(ids, 1)])
        pos = g.op1("Slice", [pe, start, end, g.const("zero1", np.zeros(1, np.int64))])
        return g.op1("Add", [tok, pos])

    # --- graphs -------------------------------------------------------------------------------
    def encoder_stack(self, src_ids: str, mask: str) -> str:
        """memory (B, S, D) of source ids; ``mask`` is the int32 key-padding mask."""
        c = self.cfg
        x = self.embed(src_ids, "src_embed", None)
        blocks = [f"encoder_layers.{i}.{r}" for i in range(c.n_encoder_layers) for r in ("res_attn", "res_ff")]
        norms = self.norms_after([f"{b}.norm" for b in blocks], "encoder_norm")
        h = self.layer_norm(x, f"{blocks[0]}.norm") if c.norm_first else x
        for j, block in enumerate(blocks):
            layer = block.rsplit(".", 1)[0]
            if block.endswith("res_attn"):
                (out,) = self.mha(f"{layer}.self_attn", h, None, key_padding_mask=mask)
            else:
                out = self.feed_forward(h, f"{layer}.ff")
            h, x = self.join(out, x, norms[j])
        return h

    def decoder_stack(
        self,
        ids: str,
        past: list[tuple[str, str]] | None,
        cross: list[tuple[str, str]],
        cross_mask: dict[str, str],
        position: str | None = None,
        self_mask: dict[str, str] | None = None,
    ) -> tuple[str, list[tuple[str, str]]]:
        """Logits of new target ids given each layer's past self-attention keys/values (B, H, P, Dh) (None: no
        past) and cross keys/values (B, H, S, Dh); returns the logits and each layer's grown cache.
        ``cross_mask``: the cross-attention's mask input by name (``key_padding_mask`` or ``attention_bias``).
        ``position``: the absolute position of a single new token per row, when the caller knows it: (1,) for
        every row, or (B, 1) each row its own. ``self_mask``: the self-attention's mask input by name (a single
        new token per row attends to its valid cache slots; without it, every cached position and causal)."""
        c = self.cfg
        offset = None if past is None or position is not None else self.shape_dim(past[0][0], 2)
        x = self.embed(ids, "tgt_embed", offset, position)
        parts = ("res_self", "res_cross", "res_ff")
        blocks = [f"decoder_layers.{i}.{r}" for i in range(c.n_decoder_layers) for r in parts]
        norms = self.norms_after([f"{b}.norm" for b in blocks], "decoder_norm")
        h = self.layer_norm(x, f"{blocks[0]}.norm") if c.norm_first else x
        present: list[tuple[str, str]] = []
        for j, block in enumerate(blocks):
            i = int(block.split(".")[1])
            layer = f"decoder_layers.{i}"
            if block.endswith("res_self"):
                extra = {"causal": "1", "present": "1"} if self_mask is None else {"present": "1", **self_mask}
                if past is not None:
                    extra |= {"past_key": past[i][0], "past_value": past[i][1]}
                out, pk, pv = self.mha(f"{layer}.self_attn", h, None, **extra)
                present.append((pk, pv))
            elif block.endswith("res_cross"):
                (out,) = self.mha(f"{layer}.cross_attn", h, cross[i], **cross_mask)
            else:
                out = self.feed_forward(h, f"{layer}.ff")
            h, x = self.join(out, x, norms[j])
        emb = self.w.sd["tgt_embed.tokens.weight"] if c.tie_embeddings else self.w.sd["generator.weight"]
        return self.g.op1("MatMul", [h, self.g.const("generator.w", emb.T)]), present

    def cross_kv(self, memory: str) -> list[tuple[str, str]]:
        """Each decoder layer's cross-attention keys and values (B, H, S, Dh)."""
        g, c = self.g, self.cfg
        shape = g.const("heads_shape", np.array([0, 0, c.n_heads, c.head_dim], np.int64))
        out = []
        for i in range(c.n_decoder_layers):
            kv = []
            for p in "kv":
                y = self.linear(memory, f"decoder_layers.{i}.cross_attn.{p}_proj")
                kv.append(g.op1("Transpose", [g.op1("Reshape", [y, shape])], perm=[0, 2, 1, 3]))
            out.append((kv[0], kv[1]))
        return out

    def encoder(self) -> None:
        mask = self.g.op1("Cast", ["src_mask"], to=TensorProto.INT32)
        self.g.rename_output(self.encoder_stack("src_ids", mask), "memory")

    def decoder(self, first: bool) -> None:
        """``first``: the decoder graph (computes the cross keys/values from ``memory``, no past); else the step.
        Both keep the bundle's stacked (L, B, H, ., Dh) cache layout at their inputs and outputs."""
        g = self.g
        mask = g.op1("Cast", ["src_mask"], to=TensorProto.INT32)
        if first:
            self.stacked_cross("memory")
            past = None
        else:
            past = list(zip(self.per_layer("past_k"), self.per_layer("past_v"), strict=True))
        cross = list(zip(self.per_layer("cross_k"), self.per_layer("cross_v"), strict=True))
        logits, present = self.decoder_stack("tgt_ids", past, cross, {"key_padding_mask": mask})
        g.rename_output(logits, "logits")
        self.stack_present(present)

    def stacked_cross(self, memory: str) -> None:
        """The outputs ``cross_k`` / ``cross_v``: every decoder layer's cross keys and values, one MatMul each for
        all layers: (B, S, L*D) -> (L, B, H, S, Dh)."""
        g, c = self.g, self.cfg
        n, heads, dh = c.n_decoder_layers, c.n_heads, c.head_dim
        for p in "kv":
            ws, bs = zip(*(self.w.linear(f"decoder_layers.{i}.cross_attn.{p}_proj") for i in range(n)), strict=True)
            y = g.op1("MatMul", [memory, g.const(f"cross_{p}.w", np.concatenate(ws, axis=1))])
            y = g.op1("Add", [y, g.const(f"cross_{p}.b", np.concatenate(bs))])
            y = g.op1("Reshape", [y, g.const("cross_shape", np.array([0, 0, n, heads, dh], np.int64))])
            g.rename_output(g.op1("Transpose", [y], perm=[2, 0, 3, 1, 4]), f"cross_{p}")

    def prefill(self) -> None:
        """Sources -> the decoder's cross keys/values (the encoder, then ``stacked_cross``): what a newcomer to a
        continuous batch needs before its first step, which it then takes in the batch's ``rows_step``."""
        mask = self.g.op1("Cast", ["src_mask"], to=TensorProto.INT32)
        self.stacked_cross(self.encoder_stack("src_ids", mask))

    def rows_step(self) -> None:
        """One decoder step for rows at different positions (continuous batching): each row feeds one token at
        its own ``positions`` entry and attends to the cache slots ``past_mask`` marks valid, plus its new one
        (rows that joined the batch later hold masked slots on the left). Otherwise the decoder step's graph: the
        stacked (L, B, H, ., Dh) caches in and out."""
        g = self.g
        mask = g.op1("Cast", ["src_mask"], to=TensorProto.INT32)
        new_slot = g.op1(
            "Expand", [g.const("true11", np.ones((1, 1), bool)), g.op1("Shape", ["tgt_ids"])]
        )  # (B, 1): the new token's own slot
        valid = g.op1("Concat", ["past_mask", new_slot], axis=1)  # (B, P + 1)
        where = g.op1("Where", [valid, g.const("zero_f", np.zeros((), np.float32)),
                                g.const("mask_filter", np.array(MASK_FILTER, np.float32))])  # fmt: skip
        bias = g.op1("Unsqueeze", [where, g.const("axes12", np.array([1, 2], np.int64))])  # (B, 1, 1, P + 1)
        past = list(zip(self.per_layer("past_k"), self.per_layer("past_v"), strict=True))
        cross = list(zip(self.per_layer("cross_k"), self.per_layer("cross_v"), strict=True))
        logits, present = self.decoder_stack(
            "tgt_ids", past, cross, {"key_padding_mask": mask}, "positions", {"attention_bias": bias}
        )
        g.rename_output(logits, "logits")
        self.stack_present(present)

    def stack_present(self, present: list[tuple[str, str]]) -> None:
        """Each layer's grown cache -> the graph outputs ``present_k`` / ``present_v`` (L, B, H, T, Dh)."""
        g, n = self.g, self.cfg.n_decoder_layers
        for name, values in (("present_k", [k for k, _ in present]), ("present_v", [v for _, v in present])):
            zero = g.const("zero1", np.zeros(1, np.int64))
            stacked_out = [g.op1("Unsqueeze", [v, zero]) for v in values]
            g.rename_output(g.op1("Concat", stacked_out, axis=0) if n > 1 else stacked_out[0], name)

    def pick(self, logits: str) -> tuple[str, str]:
        """Greedy choice from logits (B, 1, V): the token (B, 1) int64 and its log-probability (B, 1) float."""
        g = self.g
        last = g.op1("Squeeze", [logits, g.const("one1", np.ones(1, np.int64))])  # (B, V)
        best = g.op1("ArgMax", [last], axis=-1, keepdims=1)
        lp = g.op1("GatherElements", [g.op1("LogSoftmax", [last], axis=-1), best], axis=1)
        return best, lp

    # --- the greedy graph ---------------------------------------------------------------------
    def greedy(self) -> None:
        """Encoder, cross keys/values, first decoder step and an ONNX ``Loop`` over the later steps: a whole
        batch decoded greedily in one run. Each layer's cache is a loop-carried value (no stacking). A row is done
        at ``</s>`` or at its length limit; once at least ``1 / COMPACT_EVERY`` of the rows still in the loop are
        done, they leave it (every per-row value compacted in one ``If`` branch), so the finished rows stop
        costing compute without a copy at every step. Each step's tokens are written into full-batch buffers
        (``ScatterND`` at the row's original index); the loop ends when every row is done.

        The loop-carried values are one list of ``_Carried`` (``loop_start``); the body's inputs and outputs, the
        compaction ``If`` and the ``Loop``'s inputs and outputs all follow its order."""
        carried, trips, first_done = self.loop_start(self.first_step())
        body = self.loop_body(carried)
        initial = [value.initial for value in carried]
        finals = self.g.op("Loop", [trips, self.any_not_done(first_done), *initial], len(carried), body=body)
        final = dict(zip((value.name for value in carried), finals, strict=True))
        self.g.rename_output(final["out_tok"], "tokens")
        self.g.rename_output(final["out_lp"], "scores")

    def first_step(self) -> _FirstStep:
        """Outside the loop: the encoder, each layer's cross keys/values, the source padding as an attention bias
        and the first decoder step (every row fed ``<s>`` at position 0, no past)."""
        g, c = self.g, self.cfg
        one = g.const("one1", np.ones(1, np.int64))
        mask = g.op1("Cast", ["src_mask"], to=TensorProto.INT32)
        cross = self.cross_kv(self.encoder_stack("src_ids", mask))
        # the cross-attention mask as an additive bias (B, 1, 1, S), computed once for every step
        where = g.op1("Where", ["src_mask", g.const("zero_f", np.zeros((), np.float32)),
                                g.const("mask_filter", np.array(MASK_FILTER, np.float32))])  # fmt: skip
        cross_bias = g.op1("Unsqueeze", [where, g.const("axes12", np.array([1, 2], np.int64))])
        batch = self.shape_dim("src_ids", 0)  # [B]
        bos = g.op1(
            "Expand", [g.const("bos", np.full((1, 1), c.bos_id, np.int64)), g.op1("Concat", [batch, one], axis=0)]
        )
        logits, present = self.decoder_stack(
            bos, None, cross, {"attention_bias": cross_bias}, g.const("zero1", np.zeros(1, np.int64))
        )
        token, logprob = self.pick(logits)
        return _FirstStep(batch, cross, cross_bias, present, token, logprob)

    def loop_start(self, first: _FirstStep) -> tuple[list[_Carried], str, str]:
        """The ``Loop``'s inputs after the first step: the carried values, each with its initial value (the rows
        first, then the two output buffers), the trip count (the longest limit - 1, as a scalar) and the rows
        done at the first step ((B, 1) bool, for the loop's first condition)."""
        g, c = self.g, self.cfg
        one = g.const("one1", np.ones(1, np.int64))
        limits = g.op1("Unsqueeze", ["limits", one])  # (B, 1)
        done = self.finished(first.token, limits, one)
        max_steps = g.op1("ReduceMax", ["limits"], keepdims=1)  # [T]
        out_tokens, out_scores = self.output_buffers(first, max_steps)
        rows = self.row_indices(first.batch)
        trips = g.op1("Squeeze", [g.op1("Sub", [max_steps, one]), g.const("zero1", np.zeros(1, np.int64))])
        int64, boolean, float32 = TensorProto.INT64, TensorProto.BOOL, TensorProto.FLOAT
        cache: _Dims = ["rows", c.n_heads, None, c.head_dim]
        carried = [
            _Carried("rows", int64, ["rows"], rows, per_row=True),
            _Carried("tok", int64, ["rows", 1], first.token, per_row=True),
            _Carried("done", boolean, ["rows", 1], done, per_row=True),
            _Carried("lim", int64, ["rows", 1], limits, per_row=True),
            _Carried("bias", float32, ["rows", 1, 1, None], first.cross_bias, per_row=True),
            *_carried_cache("past", first.present, cache),
            *_carried_cache("cross", first.cross, cache),
            _Carried("out_tok", int64, ["batch", None], out_tokens, per_row=False),
            _Carried("out_lp", float32, ["batch", None], out_scores, per_row=False),
        ]
        return carried, trips, done

    def finished(self, token: str, limits: str, length: str) -> str:
        """Whether each row is finished (bool, the shape of ``token``): its token is ``</s>`` or its output,
        ``length`` tokens long, has reached its limit."""
        g = self.g
        eos = g.const("eos", np.array(self.cfg.eos_id, np.int64))
        return g.op1("Or", [g.op1("Equal", [token, eos]), g.op1("LessOrEqual", [limits, length])])

    def output_buffers(self, first: _FirstStep, max_steps: str) -> tuple[str, str]:
        """The full-batch (B, T) token and log-probability buffers: column 0 holds the first step's choice, the
        other columns ``<pad>`` and 0 until the loop writes them."""
        g = self.g
        later = g.op1("Concat", [first.batch, g.op1("Sub", [max_steps, g.const("one1", np.ones(1, np.int64))])], axis=0)
        pads = g.op1(
            "ConstantOfShape", [later], value=helper.make_tensor("z", TensorProto.INT64, [1], [self.cfg.pad_id])
        )
        zeros = g.op1("ConstantOfShape", [later], value=helper.make_tensor("zf", TensorProto.FLOAT, [1], [0.0]))
        return g.op1("Concat", [first.token, pads], axis=1), g.op1("Concat", [first.logprob, zeros], axis=1)

    def row_indices(self, batch: str) -> str:
        """0 .. B - 1 (B,): each row's index in the batch, which it keeps after rows before it leave the loop."""
        g = self.g
        size = g.op1("Squeeze", [batch, g.const("zero1", np.zeros(1, np.int64))])
        start, step = g.const("zero", np.array(0, np.int64)), g.const("one", np.array(1, np.int64))
        return g.op1("Range", [start, size, step])

    def loop_body(self, carried: list[_Carried]) -> onnx.GraphProto:
        """The ``Loop`` body ``greedy_step``: inputs ``iter``, ``cond_in`` and each carried value's ``<name>_in``;
        outputs ``cond_out`` (some row is not done) and each carried value's ``<name>_out``, in ``carried``'s
        order. Its nodes are kept apart from the outer graph's; the initializers stay the outer graph's (the body
        reads them from the enclosing scope)."""
        g = self.g
        outer, g.nodes = g.nodes, []
        cond, stepped = self.body_step(carried)
        g.rename_output(cond, "cond_out")
        for value in carried:
            g.rename_output(stepped[value.name], value.body_output)
        nodes, g.nodes = g.nodes, outer
        return helper.make_graph(
            nodes,
            "greedy_step",
            [helper.make_tensor_value_info("iter", TensorProto.INT64, []),
             helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
             *(helper.make_tensor_value_info(v.body_input, v.elem_type, v.dims) for v in carried)],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, None),  # onnxruntime infers shape [1]
             *(helper.make_tensor_value_info(v.body_output, v.elem_type, v.dims) for v in carried)],
        )  # fmt: skip

    def body_step(self, carried: list[_Carried]) -> tuple[str, dict[str, str]]:
        """One later step, inside the body: decode, write the tokens, update the done rows and compact. Returns
        the loop condition and each carried value's value after the step, by name (the per-row ones as the
        compaction ``If`` gives them; the buffers as written)."""
        g = self.g
        inputs = {value.name: value.body_input for value in carried}
        position, token, logprob, present = self.body_decode(inputs)
        out_tok, out_lp = self.write_step(inputs, position, token, logprob)
        length = g.op1("Add", ["iter", g.const("two", np.array(2, np.int64))])  # this token's 1-based position
        done = g.op1("Or", [inputs["done"], self.finished(token, inputs["lim"], length)])
        keep, cond, compact = self.compaction_test(done)
        # before the compaction, the values the step leaves alone are still their body inputs
        stepped = inputs | _cache_by_name("past", present)
        stepped |= {"tok": token, "done": done, "out_tok": out_tok, "out_lp": out_lp}
        per_row = [value for value in carried if value.per_row]
        compacted = self.compact(compact, keep, [(value, stepped[value.name]) for value in per_row])
        return cond, stepped | {value.name: after for value, after in zip(per_row, compacted, strict=True)}

    def body_decode(self, inputs: dict[str, str]) -> tuple[str, str, str, list[tuple[str, str]]]:
        """The decoder step inside the body (``inputs``: the body inputs by carried name): each row's last token
        at position ``iter + 1`` ((1,)), with its past cache and the source through its cross keys/values and
        bias. Returns the position, the token and log-probability chosen ((Ba, 1) each, Ba the rows still in
        the loop) and each layer's grown cache."""
        g = self.g
        past = _cache_from_names(inputs, "past", self.cfg.n_decoder_layers)
        cross = _cache_from_names(inputs, "cross", self.cfg.n_decoder_layers)
        one = g.const("one1", np.ones(1, np.int64))
        position = g.op1("Add", [g.op1("Unsqueeze", ["iter", g.const("zero1", np.zeros(1, np.int64))]), one])
        logits, present = self.decoder_stack(inputs["tok"], past, cross, {"attention_bias": inputs["bias"]}, position)
        token, logprob = self.pick(logits)
        return position, token, logprob, present

    def write_step(self, inputs: dict[str, str], position: str, token: str, logprob: str) -> tuple[str, str]:
        """The full-batch buffers with this step's tokens and log-probabilities written (``ScatterND``) at each
        row's original index and column ``position``."""
        g = self.g
        one = g.const("one1", np.ones(1, np.int64))
        column = g.op1("Expand", [g.op1("Unsqueeze", [position, one]), g.op1("Shape", [token])])  # (Ba, 1)
        index = g.op1("Concat", [g.op1("Unsqueeze", [inputs["rows"], one]), column], axis=1)  # (Ba, 2)
        flat = g.const("minus1", np.array([-1], np.int64))
        out_tok = g.op1("ScatterND", [inputs["out_tok"], index, g.op1("Reshape", [token, flat])])
        out_lp = g.op1("ScatterND", [inputs["out_lp"], index, g.op1("Reshape", [logprob, flat])])
        return out_tok, out_lp

    def compaction_test(self, done: str) -> tuple[str, str, str]:
        """From the done flags (Ba, 1): ``keep`` (Ba,) the rows not done, ``cond`` whether there is one (the loop
        goes on) and ``compact`` whether the done rows leave the loop now (some row goes on, and at least
        ``1 / COMPACT_EVERY`` of the rows are done)."""
        g = self.g
        keep = g.op1("Reshape", [g.op1("Not", [done]), g.const("minus1", np.array([-1], np.int64))])
        active = g.op1("ReduceSum", [g.op1("Cast", [keep], to=TensorProto.INT64)], keepdims=0)
        cond = g.op1("Greater", [active, g.const("zero", np.array(0, np.int64))])
        rows = g.op1("Size", [keep])
        gone = g.op1("Mul", [g.op1("Sub", [rows, active]), g.const("compact_every", np.array(COMPACT_EVERY, np.int64))])
        compact = g.op1("And", [cond, g.op1("GreaterOrEqual", [gone, rows])])
        return keep, cond, compact

    def compact(self, compact: str, keep: str, values: list[tuple[_Carried, str]]) -> list[str]:
        """The per-row values (each beside its carried value) through one ``If``: only their ``keep`` rows when
        ``compact``, else unchanged; the ``If``'s outputs in ``values``' order."""
        then_branch, else_branch = _compaction_branch(values, keep), _compaction_branch(values, None)
        return self.g.op("If", [compact], len(values), then_branch=then_branch, else_branch=else_branch)

    def any_not_done(self, done: str) -> str:
        """The loop condition: some row of ``done`` (B, 1) is still false."""
        g = self.g
        not_done = g.op1("Cast", [g.op1("Not", [done])], to=TensorProto.INT32)
        return g.op1("Cast", [g.op1("ReduceMax", [not_done], keepdims=0)], to=TensorProto.BOOL)

    def per_layer(self, stacked: str) -> list[str]:
        """(L, ...) graph input -> L tensors without the layer axis."""
        n = self.cfg.n_decoder_layers
        zero = self.g.const("zero1", np.zeros(1, np.int64))
        parts = self.g.op("Split", [stacked], n, num_outputs=n, axis=0) if n > 1 else [stacked]
        return [self.g.op1("Squeeze", [p, zero]) for p in parts]


def build_fused_graphs(model: Transformer, out_dir: Path, prefix: str = "fused_") -> dict[str, Path]:
    """Write the fused encoder, decoder, decoder step, greedy, rows-step and prefill graphs of ``model`` into
    ``out_dir``;
    each is checked against its spec (names, types, dynamic axes), then by the caller's parity gates.

    The graphs hold the same weights under the same names: each weight is stored once, in
    ``<prefix>weights.bin`` (ONNX external data), which every graph references.
    """
    specs = specs_for(model)
    models = {}
    # prefill last: it adds no weight of its own, so the shared weights file keeps its layout
    for name in (ENCODER, DECODER, DECODER_STEP, GREEDY, ROWS_STEP, PREFILL):
        b = _Builder(model.eval())
        if name == ENCODER:
            b.encoder()
        elif name == PREFILL:
            b.prefill()
        elif name == GREEDY:
            b.greedy()
        elif name == ROWS_STEP:
            b.rows_step()
        else:
            b.decoder(first=name == DECODER)
        spec = specs[name]
        graph = helper.make_graph(
            b.g.nodes,
            f"g2p_{name}_fused",
            [_value_info(t.name, t.dtype, t.shape) for t in spec.inputs],
            [_value_info(t.name, t.dtype, t.shape) for t in spec.outputs],
            list(b.g.inits.values()),
        )
        models[name] = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS, 1)],
            producer_name="g2p-export-fused",
        )
    _share_weights(list(models.values()), out_dir / f"{prefix}weights.bin")
    paths = {}
    for name, model_proto in models.items():
        path = out_dir / f"{prefix}{name}.onnx"
        onnx.save(model_proto, str(path))
        check_graph(path, specs[name])
        paths[name] = path
    return paths


EXTERNAL_MIN_BYTES = 1024  # smaller tensors (shapes, biases of tiny layers) stay inside the graph files
ALIGN = 64


def _share_weights(models: list[onnx.ModelProto], path: Path) -> None:
    """Move every initializer of at least ``EXTERNAL_MIN_BYTES`` into one external-data file, each distinct name
    once (the graphs name the same weight the same way; a name with two different values is an error)."""
    offsets: dict[str, tuple[int, int, bytes]] = {}
    with path.open("wb") as fh:
        for m in models:
            for t in m.graph.initializer:
                data = t.raw_data
                if len(data) < EXTERNAL_MIN_BYTES:
                    continue
                if t.name in offsets:
                    if offsets[t.name][2] != data:
                        raise ValueError(f"two different weights named {t.name!r}")
                else:
                    pad = -fh.tell() % ALIGN
                    fh.write(b"\0" * pad)
                    offsets[t.name] = (fh.tell(), len(data), data)
                    fh.write(data)
                offset, length, _ = offsets[t.name]
                t.ClearField("raw_data")
                t.data_location = TensorProto.EXTERNAL
                del t.external_data[:]
                for key, value in (("location", path.name), ("offset", str(offset)), ("length", str(length))):
                    entry = t.external_data.add()
                    entry.key, entry.value = key, value


_ELEM = {"int64": TensorProto.INT64, "bool": TensorProto.BOOL, "float32": TensorProto.FLOAT}


def _value_info(name: str, dtype: str, shape: tuple[int | str, ...] | list[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, _ELEM[dtype], list(shape))
