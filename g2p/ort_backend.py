"""The ONNX Runtime backend of the shared decoding code (see ``g2p.decoding.Backend``). No torch.

The first decoder call runs the ``decoder`` graph (no cache; it also returns the cross-attention keys/values
once), every later call the ``decoder_step`` graph with the growing self-attention cache.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from g2p.bundle import DECODER, DECODER_STEP, ENCODER, GRAPH_NAMES, BundleError, Manifest, verify_bundle

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


@dataclass
class OrtState:
    source: np.ndarray  # (N,) which source each row decodes
    src_mask: np.ndarray  # (N, S) bool
    memory: np.ndarray | None  # (N, S, D) until the first decoder call
    cross_k: np.ndarray | None = None  # (L, N, H, S, Dh) after it
    cross_v: np.ndarray | None = None
    past_k: np.ndarray | None = None  # (L, N, H, P, Dh)
    past_v: np.ndarray | None = None


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


def make_session(path: str | Path, providers: list[Provider], config: SessionConfig | int = 0) -> Any:
    """An inference session whose first execution provider is really the one asked for.

    Asking for a provider this onnxruntime does not have, or one that fails to start (CUDA without a GPU),
    raises ``BundleError``: never a silent fallback to the CPU. (The CUDA provider itself assigns a few
    shape-computation nodes to the CPU by design: that is allowed; the model's compute runs on CUDA.)
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
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
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
    ) -> None:
        self.dir = Path(bundle_dir)
        self.manifest = manifest if manifest is not None else verify_bundle(self.dir)
        if variant not in self.manifest.variants:
            raise BundleError(f"bundle has no variant {variant!r} (has {sorted(self.manifest.variants)})")
        self.variant = variant
        info = self.manifest.variants[variant]
        self.providers = providers or [CPU]
        self.sessions = {g: make_session(self.dir / info.files[g], self.providers, config) for g in GRAPH_NAMES}
        step_inputs = {i.name: i.type for i in self.sessions[DECODER_STEP].get_inputs()}
        self.float_dtype = np.float16 if step_inputs["past_k"] == "tensor(float16)" else np.float32

    def encode(self, src_ids: np.ndarray, src_mask: np.ndarray) -> OrtState:
        (memory,) = self.sessions[ENCODER].run(
            ["memory"], {"src_ids": src_ids.astype(np.int64), "src_mask": src_mask.astype(bool)}
        )
        return OrtState(np.arange(src_ids.shape[0]), src_mask.astype(bool), memory)

    def step(self, tokens: np.ndarray, state: OrtState) -> tuple[np.ndarray, OrtState]:
        tgt = tokens.astype(np.int64).reshape(-1, 1)  # (N, 1)
        if state.cross_k is None:
            logits, pk, pv, ck, cv = self.sessions[DECODER].run(
                ["logits", "present_k", "present_v", "cross_k", "cross_v"],
                {"tgt_ids": tgt, "memory": state.memory, "src_mask": state.src_mask},
            )
            new = OrtState(state.source, state.src_mask, None, ck, cv, pk, pv)
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

        def per_source(x: np.ndarray | None, axis: int) -> np.ndarray | None:
            # rows of one source share these tensors: nothing to move when beams stay within their source
            if x is None or same_sources:
                return x
            return np.take(x, rows, axis=axis)

        def per_row(x: np.ndarray | None) -> np.ndarray | None:
            return None if x is None else np.take(x, rows, axis=1)

        mask = per_source(state.src_mask, 0)
        assert mask is not None
        return OrtState(
            source,
            mask,
            per_source(state.memory, 0),
            per_source(state.cross_k, 1),
            per_source(state.cross_v, 1),
            per_row(state.past_k),
            per_row(state.past_v),
        )
