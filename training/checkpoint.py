"""Checkpoints: a plain dict of tensors and primitives, loaded with ``torch.load(weights_only=True)``.

A checkpoint holds the model config (so the network is rebuilt from the file alone), the training config,
the weights and, for ``last.pt``, the optimiser and RNG state needed to resume. The tokenizers live as JSON
files in the same directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from g2p.tokenization import G2PTokenizers
from training.model import ModelConfig, Transformer

FORMAT = "g2p-transformer/1"


class CheckpointError(ValueError):
    pass


def save(path: str | Path, payload: dict[str, Any]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    torch.save({"format": FORMAT, **payload}, tmp)
    tmp.replace(p)  # atomic: a crash never leaves a half-written checkpoint


def load_raw(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{p} is not a readable checkpoint: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{p} is not a {FORMAT} checkpoint")
    return data


@dataclass
class LoadedModel:
    model: Transformer
    config: ModelConfig
    tokenizers: G2PTokenizers
    raw: dict[str, Any]


def load_model(path: str | Path, tokenizer_dir: str | Path | None = None) -> LoadedModel:
    """Rebuild the network and its tokenizers from a checkpoint file (tokenizers default to its directory)."""
    raw = load_raw(path)
    cfg = ModelConfig.from_dict(raw["model_config"])
    model = Transformer(cfg)
    model.load_state_dict(raw["model"])
    model.eval()
    tok_dir = Path(tokenizer_dir) if tokenizer_dir is not None else Path(path).parent
    try:
        tok = G2PTokenizers.load(tok_dir)
    except Exception as exc:
        raise CheckpointError(f"tokenizer files not found or unreadable in {tok_dir}: {exc}") from exc
    if (tok.src_vocab_size, tok.tgt_vocab_size) != (cfg.src_vocab_size, cfg.tgt_vocab_size):
        raise CheckpointError(
            f"tokenizers in {tok_dir} (vocab {tok.src_vocab_size}/{tok.tgt_vocab_size}) do not match the "
            f"checkpoint (vocab {cfg.src_vocab_size}/{cfg.tgt_vocab_size})"
        )
    return LoadedModel(model, cfg, tok, raw)


def average_state_dicts(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of several state dicts of the same network (checkpoint averaging)."""
    if not states:
        raise ValueError("nothing to average")
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            out[key] = torch.stack([s[key].float() for s in states]).mean(0).to(first.dtype)
        else:
            out[key] = first.clone()
    return out
