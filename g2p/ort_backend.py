"""The ONNX Runtime backend of the shared decoding code (see ``g2p.decoding.Backend``). No torch.

The first decoder call runs the ``decoder`` graph (no cache; it also returns the cross-attention keys/values
once), every later call the ``decoder_step`` graph with the growing self-attention cache.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from g2p.bundle import (
    DECODER,
    DECODER_STEP,
    ENCODER,
    GRAPH_NAMES,
    GREEDY,
    OPTIONAL_GRAPHS,
    PREFILL,
    ROWS_STEP,
    BundleError,
    Manifest,
    verify_bundle,
)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


@dataclass
class OrtState:
    """Tensors are numpy arrays, or ``onnxruntime.OrtValue`` on the session's device with IO binding."""

    source: np.ndarray  # (N,) which source each row decodes
    src_mask: np.ndarray  # (N, S) bool
    memory: Any  # (N, S, D) until the first decoder call
    cross_k: Any = None  # (L, N, H, S, Dh) after it
    cross_v: Any = None
    past_k: Any = None  # (L, N, H, P, Dh)
    past_v: Any = None


Provider = str | tuple[str, dict[str, Any]]
"""An execution provider by name, or ``(name, provider options)``."""


@dataclass(frozen=True)
class SessionConfig:
    """ONNX Runtime session options (the service's settings map onto this)."""

    intra_op_threads: int = 0  # 0 = onnxruntime's default
    inter_op_threads: int = 1
    graph_optimization: str = "all"  # disable | basic | extended | all
    memory_arena: bool = True
    allow_spinning: bool = True  # intra-op threads busy-wait between ops (fast alone, wasteful when shared)


def provider_name(p: Provider) -> str:
    return p if isinstance(p, str) else p[0]


def make_session(
    path: str | Path,
    providers: list[Provider],
    config: SessionConfig | int = 0,
    disabled_optimizers: Sequence[str] = (),
) -> Any:
    """An inference session whose first execution provider is really the one asked for.

    Asking for a provider this onnxruntime does not have, or one that fails to start (CUDA without a GPU),
    raises ``BundleError``: never a silent fallback to the CPU. (The CUDA provider itself assigns a few
    shape-computation nodes to the CPU by design: that is allowed; the model's compute runs on CUDA.)
    ``disabled_optimizers``: onnxruntime graph rewrites to skip (a variant's manifest entry may name some).
    """
    import onnxruntime as ort

    cfg = config if isinstance(config, SessionConfig) else SessionConfig(intra_op_threads=config)
    opts = ort.SessionOptions()
    if cfg.intra_op_threads:
        opts.intra_op_num_threads = cfg.intra_op_threads
    opts.inter_op_num_threads = cfg.inter_op_threads
    opts.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[cfg.graph_optimization]
    opts.enable_cpu_mem_arena = cfg.memory_arena
    if not cfg.allow_spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    names = [provider_name(p) for p in providers]
    if any(n != CPU for n in names):
        _preload_cuda_libraries(ort)
    available = ort.get_available_providers()
    missing = [n for n in names if n not in available]
    if missing:
        raise BundleError(f"execution provider(s) {missing} not available in this onnxruntime (has {available})")
    try:
        session = ort.InferenceSession(
            str(path), sess_options=opts, providers=providers, disabled_optimizers=list(disabled_optimizers)
        )
    except Exception as exc:
        raise BundleError(f"{path}: cannot create a session on {names}: {exc}") from exc
    used = session.get_providers()
    if used[0] != names[0]:
        raise BundleError(f"{path}: asked for {names[0]} but the session runs on {used}")
    return session


@functools.cache
def _preload_cuda_libraries(ort: Any) -> None:
    """Load the CUDA/cuDNN libraries from the nvidia-* wheels when they are installed (onnxruntime >= 1.21);
    a system-wide CUDA on the library path needs nothing, so a miss here is not an error (session creation
    reports what is really missing)."""
    if hasattr(ort, "preload_dlls"):
        with contextlib.suppress(Exception):
            ort.preload_dlls()


class OrtBackend:
    def __init__(
        self,
        bundle_dir: str | Path,
        variant: str = "fp32",
        providers: list[Provider] | None = None,
        config: SessionConfig | int = 0,
        manifest: Manifest | None = None,
        io_binding: bool = False,
        greedy_graph: bool = True,
        rows_graphs: bool = True,
    ) -> None:
        """``greedy_graph``: use the variant's ``greedy`` graph (whole batches in one run) where it has one; False
        decodes greedily step by step (what streaming does anyway). ``rows_graphs``: open the variant's
        continuous-batching graphs (``rows_step``, ``prefill``) where it has them; False leaves them closed (a
        session each, its own copy of the weights it reads: memory a server that schedules by batch never uses).

        ``io_binding``: the KV cache (self- and cross-attention keys/values) stays in ONNX Runtime values
        on the session's device between decoder steps instead of coming back as numpy arrays each step; it
        is copied out only when beam search or a finished row reorders the batch."""
        self.dir = Path(bundle_dir)
        self.manifest = manifest if manifest is not None else verify_bundle(self.dir)
        if variant not in self.manifest.variants:
            raise BundleError(f"bundle has no variant {variant!r} (has {sorted(self.manifest.variants)})")
        self.variant = variant
        info = self.manifest.variants[variant]
        self.providers = providers or [CPU]
        wanted = {GREEDY: greedy_graph, ROWS_STEP: rows_graphs, PREFILL: rows_graphs}
        optional = [g for g in OPTIONAL_GRAPHS if g in info.files and wanted[g]]
        graphs = [*GRAPH_NAMES, *optional]
        disabled = info.disabled_optimizers
        self.sessions = {g: make_session(self.dir / info.files[g], self.providers, config, disabled) for g in graphs}
        step_inputs = {i.name: i.type for i in self.sessions[DECODER_STEP].get_inputs()}
        self.float_dtype = np.float16 if step_inputs["past_k"] == "tensor(float16)" else np.float32
        first = self.providers[0]
        self.device = "cuda" if provider_name(first) == CUDA else "cpu"
        self.device_id = int(first[1].get("device_id", 0)) if isinstance(first, tuple) else 0
        self.io_binding = io_binding

    def _value(self, x: Any) -> Any:
        """numpy -> OrtValue on the session's device (IO binding), else unchanged."""
        if not self.io_binding or x is None:
            return x
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x), self.device, self.device_id)

    @staticmethod
    def _numpy(x: Any) -> Any:
        return x.numpy() if hasattr(x, "numpy") and not isinstance(x, np.ndarray) else x

    def encode(self, src_ids: np.ndarray, src_mask: np.ndarray) -> OrtState:
        (memory,) = self.sessions[ENCODER].run(
            ["memory"], {"src_ids": src_ids.astype(np.int64), "src_mask": src_mask.astype(bool)}
        )
        return OrtState(np.arange(src_ids.shape[0]), src_mask.astype(bool), memory)

    def greedy(
        self, src_ids: np.ndarray, src_mask: np.ndarray, limits: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """A whole batch decoded greedily in one run of the ``greedy`` graph: (tokens, log-probabilities), each
        (B, steps); None when this variant has no such graph (see ``g2p.decoding.greedy_search``)."""
        session = self.sessions.get(GREEDY)
        if session is None:
            return None
        tokens, scores = session.run(
            ["tokens", "scores"],
            {"src_ids": src_ids.astype(np.int64), "src_mask": src_mask.astype(bool), "limits": limits.astype(np.int64)},
        )
        return tokens, np.asarray(scores, dtype=np.float32)

    def step(self, tokens: np.ndarray, state: OrtState) -> tuple[np.ndarray, OrtState]:
        tgt = tokens.astype(np.int64).reshape(-1, 1)  # (N, 1)
        if state.cross_k is None:
            logits, pk, pv, ck, cv = self.sessions[DECODER].run(
                ["logits", "present_k", "present_v", "cross_k", "cross_v"],
                {"tgt_ids": tgt, "memory": state.memory, "src_mask": state.src_mask},
            )
            v = self._value
            new = OrtState(state.source, state.src_mask, None, v(ck), v(cv), v(pk), v(pv))
        elif self.io_binding:
            session = self.sessions[DECODER_STEP]
            io = session.io_binding()
            io.bind_cpu_input("tgt_ids", tgt)
            io.bind_cpu_input("src_mask", state.src_mask)
            for name in ("past_k", "past_v", "cross_k", "cross_v"):
                io.bind_ortvalue_input(name, getattr(state, name))
            io.bind_output("logits", "cpu")
            io.bind_output("present_k", self.device, self.device_id)
            io.bind_output("present_v", self.device, self.device_id)
            session.run_with_iobinding(io)
            logits_value, pk, pv = io.get_outputs()
            logits = logits_value.numpy()
            new = OrtState(state.source, state.src_mask, None, state.cross_k, state.cross_v, pk, pv)
        else:
            logits, pk, pv = self.sessions[DECODER_STEP].run(
                ["logits", "present_k", "present_v"],
                {
                    "tgt_ids": tgt,
                    "past_k": state.past_k,
                    "past_v": state.past_v,
                    "cross_k": state.cross_k,
                    "cross_v": state.cross_v,
                    "src_mask": state.src_mask,
                },
            )
            new = OrtState(state.source, state.src_mask, None, state.cross_k, state.cross_v, pk, pv)
        return np.asarray(logits[:, -1], dtype=np.float32), new

    def reorder(self, state: OrtState, rows: np.ndarray) -> OrtState:
        source = state.source[rows]
        same_sources = np.array_equal(source, state.source)

        def per_source(x: Any, axis: int) -> Any:
            # rows of one source share these tensors: nothing to move when beams stay within their source
            if x is None or same_sources:
                return x
            return self._value(np.take(self._numpy(x), rows, axis=axis))

        def per_row(x: Any) -> Any:
            return None if x is None else self._value(np.take(self._numpy(x), rows, axis=1))

        mask = state.src_mask if same_sources else np.take(state.src_mask, rows, axis=0)
        return OrtState(
            source,
            mask,
            state.memory if state.memory is None or same_sources else np.take(state.memory, rows, axis=0),
            per_source(state.cross_k, 1),
            per_source(state.cross_v, 1),
            per_row(state.past_k),
            per_row(state.past_v),
        )


def ort_replicas(
    bundle_dir: str | Path,
    n: int,
    variant: str = "fp32",
    providers: list[Provider] | None = None,
    config: SessionConfig | int = 0,
    manifest: Manifest | None = None,
    io_binding: bool = True,
    rows_graphs: bool = True,
) -> list[OrtBackend]:
    """``n`` independent backends on one bundle (for ``g2p.pipeline.ParallelTranscriber``), verified once."""
    manifest = manifest if manifest is not None else verify_bundle(bundle_dir)
    return [OrtBackend(bundle_dir, variant, providers, config, manifest, io_binding, rows_graphs=rows_graphs)
            for _ in range(n)]  # fmt: skip
