"""The PyTorch backend of the shared decoding code (see ``g2p.decoding.Backend``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from training.model import Transformer


@dataclass
class TorchState:
    source: np.ndarray  # (N,) which source each row decodes; rows of one source share cross_k/v/src_mask
    cross_k: Tensor  # (L, N, H, S, Dh)
    cross_v: Tensor
    src_mask: Tensor  # (N, S) bool
    past_k: Tensor | None  # (L, N, H, P, Dh)
    past_v: Tensor | None


class TorchBackend:
    def __init__(self, model: Transformer, device: str | torch.device = "cpu") -> None:
        self.model = model.eval().to(device)
        self.device = torch.device(device)

    @torch.inference_mode()
    def encode(self, src_ids: np.ndarray, src_mask: np.ndarray) -> TorchState:
        src = torch.as_tensor(src_ids, device=self.device)
        mask = torch.as_tensor(src_mask, device=self.device)
        memory = self.model.encode(src, mask)
        ck, cv = self.model.cross_kv(memory)
        return TorchState(np.arange(src_ids.shape[0]), ck, cv, mask, None, None)

    @torch.inference_mode()
    def step(self, tokens: np.ndarray, state: TorchState) -> tuple[np.ndarray, TorchState]:
        tgt = torch.as_tensor(tokens, device=self.device).view(-1, 1)  # (N, 1)
        logits, k, v = self.model.decode(
            tgt, state.cross_k, state.cross_v, state.src_mask, state.past_k, state.past_v
        )  # (N, 1, V), (L, N, H, P+1, Dh)
        new = TorchState(state.source, state.cross_k, state.cross_v, state.src_mask, k, v)
        return logits[:, -1].float().cpu().numpy(), new

    @torch.inference_mode()
    def reorder(self, state: TorchState, rows: np.ndarray) -> TorchState:
        idx = torch.as_tensor(rows, device=self.device)
        source = state.source[rows]
        if np.array_equal(source, state.source):
            # beams moved only within their own source: the per-source tensors are already right
            ck, cv, mask = state.cross_k, state.cross_v, state.src_mask
        else:
            ck, cv = state.cross_k.index_select(1, idx), state.cross_v.index_select(1, idx)
            mask = state.src_mask.index_select(0, idx)
        return TorchState(
            source,
            ck,
            cv,
            mask,
            None if state.past_k is None else state.past_k.index_select(1, idx),
            None if state.past_v is None else state.past_v.index_select(1, idx),
        )
