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

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.graphs import OPSET, check_graph, specs_for
from g2p.bundle import DECODER, DECODER_STEP, ENCODER, GREEDY, ROWS_STEP
from training.model import Transformer

MS = "com.microsoft"
LN_EPS = 1e-5  # nn.LayerNorm's default, used by every norm of the model
COMPACT_EVERY = 8  # the greedy loop drops its done rows once they are >= 1/8 of the rows still in it
MASK_FILTER = -10000.0  # MultiHeadAttention's own value for masked keys (softmax weight exactly 0 in float32)


_Dims = list[str | int | None]  # a value's shape: symbolic names, sizes, or unknown


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
        g, c = self.g, self.cfg
        n, heads, dh = c.n_decoder_layers, c.n_heads, c.head_dim
        mask = g.op1("Cast", ["src_mask"], to=TensorProto.INT32)
        if first:
            # every layer's cross K and V in one MatMul each: (B, S, L*D) -> (L, B, H, S, Dh)
            stacked = []
            for p in "kv":
                ws, bs = zip(*(self.w.linear(f"decoder_layers.{i}.cross_attn.{p}_proj") for i in range(n)), strict=True)
                y = g.op1("MatMul", ["memory", g.const(f"cross_{p}.w", np.concatenate(ws, axis=1))])
                y = g.op1("Add", [y, g.const(f"cross_{p}.b", np.concatenate(bs))])
                y = g.op1("Reshape", [y, g.const("cross_shape", np.array([0, 0, n, heads, dh], np.int64))])
                stacked.append(g.op1("Transpose", [y], perm=[2, 0, 3, 1, 4]))
            g.rename_output(stacked[0], "cross_k")
            g.rename_output(stacked[1], "cross_v")
            past = None
        else:
            past = list(zip(self.per_layer("past_k"), self.per_layer("past_v"), strict=True))
        cross = list(zip(self.per_layer("cross_k"), self.per_layer("cross_v"), strict=True))
        logits, present = self.decoder_stack("tgt_ids", past, cross, {"key_padding_mask": mask})
        g.rename_output(logits, "logits")
        self.stack_present(present)

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

    def greedy(self) -> None:
        """Encoder, cross keys/values, first decoder step and an ONNX ``Loop`` over the later steps: a whole
        batch decoded greedily in one run. Each layer's cache is a loop-carried value (no stacking). A row is done
        at ``</s>`` or at its length limit; once at least ``1 / COMPACT_EVERY`` of the rows still in the loop are
        done, they leave it (every per-row value compacted in one ``If`` branch), so the finished rows stop
        costing compute without a copy at every step. Each step's tokens are written into full-batch buffers
        (``ScatterND`` at the row's original index); the loop ends when every row is done."""
        g, c = self.g, self.cfg
        n = c.n_decoder_layers
        f, i64, b = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
        one = g.const("one1", np.ones(1, np.int64))
        mask = g.op1("Cast", ["src_mask"], to=TensorProto.INT32)
        memory = self.encoder_stack("src_ids", mask)
        cross = self.cross_kv(memory)
        # the cross-attention mask as an additive bias (B, 1, 1, S), computed once for every step
        where = g.op1("Where", ["src_mask", g.const("zero_f", np.zeros((), np.float32)),
                                g.const("mask_filter", np.array(MASK_FILTER, np.float32))])  # fmt: skip
        bias = g.op1("Unsqueeze", [where, g.const("axes12", np.array([1, 2], np.int64))])
        batch = self.shape_dim("src_ids", 0)  # [B]
        bos = g.op1(
            "Expand", [g.const("bos", np.full((1, 1), c.bos_id, np.int64)), g.op1("Concat", [batch, one], axis=0)]
        )
        logits, present = self.decoder_stack(
            bos, None, cross, {"attention_bias": bias}, g.const("zero1", np.zeros(1, np.int64))
        )
        tok0, lp0 = self.pick(logits)
        limits = g.op1("Unsqueeze", ["limits", one])  # (B, 1)
        eos = g.const("eos", np.array(c.eos_id, np.int64))
        done0 = g.op1("Or", [g.op1("Equal", [tok0, eos]), g.op1("LessOrEqual", [limits, one])])
        steps = g.op1("ReduceMax", ["limits"], keepdims=1)  # [T]
        rest = g.op1("Concat", [batch, g.op1("Sub", [steps, one])], axis=0)  # [B, T - 1]
        zeros_i = g.op1("ConstantOfShape", [rest], value=helper.make_tensor("z", i64, [1], [c.pad_id]))
        zeros_f = g.op1("ConstantOfShape", [rest], value=helper.make_tensor("zf", f, [1], [0.0]))
        out_tok0 = g.op1("Concat", [tok0, zeros_i], axis=1)  # (B, T): column 0 is the first step's token
        out_lp0 = g.op1("Concat", [lp0, zeros_f], axis=1)
        zero1 = g.const("zero1", np.zeros(1, np.int64))
        scalar_b = g.op1("Squeeze", [batch, zero1])
        rows0 = g.op1(
            "Range", [g.const("zero", np.array(0, np.int64)), scalar_b, g.const("one", np.array(1, np.int64))]
        )
        trips = g.op1("Squeeze", [g.op1("Sub", [steps, one]), zero1])

        # loop-carried values: those with a row axis (compacted together), then the two full-batch buffers
        per_row: list[tuple[str, int, _Dims]] = [
            ("rows", i64, ["rows"]), ("tok", i64, ["rows", 1]), ("done", b, ["rows", 1]), ("lim", i64, ["rows", 1]),
            ("bias", f, ["rows", 1, 1, None]),
        ]  # fmt: skip
        cache: _Dims = ["rows", c.n_heads, None, c.head_dim]
        per_row += [(f"{kind}_{x}_{i}", f, cache) for kind in ("past", "cross") for i in range(n) for x in "kv"]
        buffers: list[tuple[str, int, _Dims]] = [("out_tok", i64, ["batch", None]), ("out_lp", f, ["batch", None])]
        initial = [rows0, tok0, done0, limits, bias, *(x for kv in present for x in kv),
                   *(x for kv in cross for x in kv), out_tok0, out_lp0]  # fmt: skip

        outer = g.nodes
        g.nodes = []
        past_in = [(f"past_k_{i}_in", f"past_v_{i}_in") for i in range(n)]
        cross_in = [(f"cross_k_{i}_in", f"cross_v_{i}_in") for i in range(n)]
        position = g.op1("Add", [g.op1("Unsqueeze", ["iter", g.const("zero1", np.zeros(1, np.int64))]), one])
        logits_b, present_b = self.decoder_stack("tok_in", past_in, cross_in, {"attention_bias": "bias_in"}, position)
        tok, lp = self.pick(logits_b)
        column = g.op1("Expand", [g.op1("Unsqueeze", [position, one]), g.op1("Shape", [tok])])  # (Ba, 1)
        where_out = g.op1("Concat", [g.op1("Unsqueeze", ["rows_in", one]), column], axis=1)  # (Ba, 2)
        flat = g.const("minus1", np.array([-1], np.int64))
        out_tok = g.op1("ScatterND", ["out_tok_in", where_out, g.op1("Reshape", [tok, flat])])
        out_lp = g.op1("ScatterND", ["out_lp_in", where_out, g.op1("Reshape", [lp, flat])])
        step = g.op1("Add", ["iter", g.const("two", np.array(2, np.int64))])  # this token's 1-based position
        finished = g.op1("Or", [g.op1("Equal", [tok, eos]), g.op1("LessOrEqual", ["lim_in", step])])
        done = g.op1("Or", ["done_in", finished])
        keep = g.op1("Reshape", [g.op1("Not", [done]), flat])  # (Ba,)
        active = g.op1("ReduceSum", [g.op1("Cast", [keep], to=i64)], keepdims=0)
        cond = g.op1("Greater", [active, g.const("zero", np.array(0, np.int64))])
        rows_now = g.op1("Size", [keep])
        gone = g.op1(
            "Mul", [g.op1("Sub", [rows_now, active]), g.const("compact_every", np.array(COMPACT_EVERY, np.int64))]
        )
        compact = g.op1("And", [cond, g.op1("GreaterOrEqual", [gone, rows_now])])
        values = [
            "rows_in",
            tok,
            done,
            "lim_in",
            "bias_in",
            *(x for kv in present_b for x in kv),
            *(x for kv in cross_in for x in kv),
        ]
        branches = {}
        for branch in ("then", "else"):
            nodes, outs = [], []
            for k, v in enumerate(values):
                name = f"{branch}_{k}"
                if branch == "then":
                    nodes.append(helper.make_node("Compress", [v, keep], [name], name=f"compress_{k}", axis=0))
                else:
                    nodes.append(helper.make_node("Identity", [v], [name], name=f"keep_{k}"))
                outs.append(helper.make_tensor_value_info(name, per_row[k][1], None))
            branches[branch] = helper.make_graph(nodes, f"compact_{branch}", [], outs)
        compacted = g.op("If", [compact], len(values), then_branch=branches["then"], else_branch=branches["else"])
        body_outs = [cond, *compacted, out_tok, out_lp]
        out_names = ["cond_out", *(f"{name}_out" for name, _, _ in per_row + buffers)]
        for src, dst in zip(body_outs, out_names, strict=True):
            g.rename_output(src, dst)
        body_nodes, g.nodes = g.nodes, outer
        carried = per_row + buffers
        body = helper.make_graph(
            body_nodes,
            "greedy_step",
            [helper.make_tensor_value_info("iter", i64, []), helper.make_tensor_value_info("cond_in", b, []),
             *(helper.make_tensor_value_info(f"{name}_in", t, shape) for name, t, shape in carried)],
            [helper.make_tensor_value_info("cond_out", b, None),  # one element (onnxruntime infers shape [1])
             *(helper.make_tensor_value_info(f"{name}_out", t, shape) for name, t, shape in carried)],
        )  # fmt: skip
        loop_out = g.op("Loop", [trips, self.any_not_done(done0), *initial], len(carried), body=body)
        g.rename_output(loop_out[-2], "tokens")
        g.rename_output(loop_out[-1], "scores")

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
    """Write the fused encoder, decoder, decoder step, greedy and rows-step graphs of ``model`` into ``out_dir``;
    each is checked against its spec (names, types, dynamic axes), then by the caller's parity gates.

    The graphs hold the same weights under the same names: each weight is stored once, in
    ``<prefix>weights.bin`` (ONNX external data), which every graph references.
    """
    specs = specs_for(model)
    models = {}
    for name in (ENCODER, DECODER, DECODER_STEP, GREEDY, ROWS_STEP):
        b = _Builder(model.eval())
        if name == ENCODER:
            b.encoder()
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
