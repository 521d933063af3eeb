"""Several checkpoints decoded as one model: at each step the members' log-probabilities are averaged.

    backend, tok = load_ensemble(["t1/best.pt", "t2/best.pt"], device="cuda")
    transcribe(backend, tok, words, DecodeOptions(beam_size=5))

It implements the shared decoding interface (``g2p.decoding.Backend``), so greedy search, beam search and the
evaluation treat an ensemble exactly like one model. Members must share their tokenizers (the same symbols with the
same ids); their shapes may differ. A single checkpoint gives a plain ``TorchBackend``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from g2p.decoding import log_softmax
from g2p.tokenization import G2PTokenizers
from training import checkpoint as ckpt
from training.backend import TorchBackend, TorchState
from training.model import ModelConfig


class EnsembleBackend:
    """The mean of the members' log-softmax at every step (the decoder renormalises it)."""

    def __init__(self, members: Sequence[TorchBackend]) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = list(members)

    def encode(self, src_ids: np.ndarray, src_mask: np.ndarray) -> list[TorchState]:
        return [m.encode(src_ids, src_mask) for m in self.members]

    def step(self, tokens: np.ndarray, state: list[TorchState]) -> tuple[np.ndarray, list[TorchState]]:
        outs = [m.step(tokens, s) for m, s in zip(self.members, state, strict=True)]
        mean = np.mean([log_softmax(logits) for logits, _ in outs], axis=0)
        return mean.astype(np.float32), [s for _, s in outs]

    def reorder(self, state: list[TorchState], rows: np.ndarray) -> list[TorchState]:
        return [m.reorder(s, rows) for m, s in zip(self.members, state, strict=True)]


def load_ensemble(
    paths: Sequence[str | Path], device: str | torch.device = "cpu"
) -> tuple[TorchBackend | EnsembleBackend, G2PTokenizers, list[ModelConfig]]:
    """Load every checkpoint with its tokenizers; refuse members whose vocabularies differ from the first's."""
    loaded = [ckpt.load_model(p) for p in paths]
    if not loaded:
        raise ValueError("no checkpoint given")
    first = loaded[0].tokenizers
    for path, other in zip(paths[1:], loaded[1:], strict=True):
        if (other.tokenizers.src.get_vocab(), other.tokenizers.tgt.get_vocab()) != (
            first.src.get_vocab(),
            first.tgt.get_vocab(),
        ):
            raise ckpt.CheckpointError(f"{path}: its vocabularies differ from {paths[0]}'s; an ensemble needs one")
    backends = [TorchBackend(m.model, device) for m in loaded]
    backend = backends[0] if len(backends) == 1 else EnsembleBackend(backends)
    return backend, first, [m.config for m in loaded]
