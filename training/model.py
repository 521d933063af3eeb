"""Encoder-decoder Transformer (Vaswani et al., 2017, "Attention Is All You Need").

Classes follow the paper's order: embeddings + positional encoding, attention, feed-forward, encoder layer,
decoder layer, the encoder-decoder.

Mask convention (one, everywhere): a boolean mask is True where attention MAY look (a real token / an
allowed position) and False where it must not (padding / the future). This is the convention of
``F.scaled_dot_product_attention``.

Departures from the paper, each one line:
- Pre-norm (LayerNorm before each sub-layer, plus a final LayerNorm) is the default because it trains stably
  with a short warm-up; ``norm_first=False`` gives the paper's post-norm.
- The source sequence ends with ``</s>`` and the decoder starts from ``<s>`` (fairseq convention).

Incremental decoding: :meth:`Transformer.decode` takes the self-attention cache of earlier steps
(``past_k``/``past_v``, stacked over layers) and the cross-attention keys/values computed once per source by
:meth:`Transformer.cross_kv`, and returns the grown self-attention cache. The ONNX decoder-step graph mirrors
exactly this signature.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(kw_only=True)
class Architecture:
    """The network's shape and regularisation: what a training run chooses (``--d-model`` ...). The defaults are
    the shipped recipe's."""

    d_model: int = 192
    n_heads: int = 4
    n_encoder_layers: int = 3
    n_decoder_layers: int = 3
    d_ff: int = 768
    dropout: float = 0.1
    norm_first: bool = True
    tie_embeddings: bool = True

    def architecture(self) -> dict[str, Any]:
        """These fields alone, by name (a subclass adds others)."""
        return {f.name: getattr(self, f.name) for f in fields(Architecture)}


@dataclass
class ModelConfig(Architecture):
    """Everything needed to rebuild the network; stored inside every checkpoint: the :class:`Architecture`, the
    vocabularies and the length limits."""

    src_vocab_size: int
    tgt_vocab_size: int
    attention_dropout: float = 0.0
    max_source_len: int = 64  # source tokens, including </s>
    max_target_len: int = 64  # decoder positions, including <s> / </s>
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def __post_init__(self) -> None:
        problems = []
        if self.d_model % self.n_heads:
            problems.append(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        for name in ("d_model", "n_heads", "n_encoder_layers", "n_decoder_layers", "d_ff"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if min(self.src_vocab_size, self.tgt_vocab_size) <= max(self.pad_id, self.bos_id, self.eos_id):
            problems.append("vocabulary sizes must exceed the special token ids")
        if problems:
            raise ValueError("invalid model config: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**data)


# ---------------------------------------------------------------------------------------------------
# Embeddings and positional encoding
# ---------------------------------------------------------------------------------------------------
def sinusoidal_table(max_len: int, d_model: int) -> Tensor:
    """PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(pos / 10000^(2i/d)) (paper, sec. 3.5)."""
    pos = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)  # (L, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float32)  # (d/2,)
    angle = pos / torch.pow(10000.0, two_i / d_model)  # (L, d/2)
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return table


class Embedding(nn.Module):
    """Token embedding scaled by sqrt(d_model), plus the sinusoidal positional encoding, then dropout."""

    def __init__(self, vocab_size: int, d_model: int, max_len: int, dropout: float, pad_id: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        nn.init.normal_(self.tokens.weight, mean=0.0, std=d_model**-0.5)
        with torch.no_grad():
            self.tokens.weight[pad_id].zero_()
        self.scale = math.sqrt(d_model)
        self.pe: Tensor
        self.register_buffer("pe", sinusoidal_table(max_len, d_model), persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: Tensor, offset: int = 0) -> Tensor:
        # ids: (B, T); offset: number of earlier positions (the KV-cache length) -> (B, T, D)
        pos = self.pe[offset : offset + ids.shape[1]]  # (T, D)
        return self.dropout(self.tokens(ids) * self.scale + pos)


# ---------------------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------------------
class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention with explicit Q, K, V and output projections."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def split_heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of ``x`` (B, S, D), each (B, H, S, Dh)."""
        return self.split_heads(self.k_proj(x)), self.split_heads(self.v_proj(x))

    def attend(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """Queries from ``x`` (B, T, D) over given keys/values (B, H, S, Dh); mask broadcasts to (B, H, T, S)."""
        q = self.split_heads(self.q_proj(x))  # (B, H, T, Dh)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, H, T, Dh)
        b, _, t, _ = out.shape
        out = out.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)  # (B, T, D)
        return self.out_proj(out)


class FeedForward(nn.Module):
    """Position-wise feed-forward network: Linear -> ReLU -> dropout -> Linear."""

    def __init__(self, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


class Residual(nn.Module):
    """Residual connection around a sub-layer with LayerNorm before (pre-norm) or after (post-norm)."""

    def __init__(self, d_model: int, dropout: float, norm_first: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.norm_first = norm_first

    def pre(self, x: Tensor) -> Tensor:
        """The sub-layer's input."""
        return self.norm(x) if self.norm_first else x

    def post(self, x: Tensor, sublayer_out: Tensor) -> Tensor:
        """The block's output given the sub-layer's output."""
        y = x + self.dropout(sublayer_out)
        return y if self.norm_first else self.norm(y)


# ---------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------
class EncoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout)
        self.ff = FeedForward(cfg.d_model, cfg.d_ff, cfg.dropout)
        self.res_attn = Residual(cfg.d_model, cfg.dropout, cfg.norm_first)
        self.res_ff = Residual(cfg.d_model, cfg.dropout, cfg.norm_first)

    def forward(self, x: Tensor, src_mask: Tensor) -> Tensor:
        # x: (B, S, D); src_mask: (B, 1, 1, S)
        h = self.res_attn.pre(x)
        k, v = self.self_attn.project_kv(h)
        x = self.res_attn.post(x, self.self_attn.attend(h, k, v, src_mask))
        return self.res_ff.post(x, self.ff(self.res_ff.pre(x)))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout)
        self.cross_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout)
        self.ff = FeedForward(cfg.d_model, cfg.d_ff, cfg.dropout)
        self.res_self = Residual(cfg.d_model, cfg.dropout, cfg.norm_first)
        self.res_cross = Residual(cfg.d_model, cfg.dropout, cfg.norm_first)
        self.res_ff = Residual(cfg.d_model, cfg.dropout, cfg.norm_first)

    def forward(
        self,
        x: Tensor,
        past_k: Tensor | None,
        past_v: Tensor | None,
        cross_k: Tensor,
        cross_v: Tensor,
        self_mask: Tensor,
        src_mask: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        # x: (B, T, D); past_k/v: (B, H, P, Dh) or None; cross_k/v: (B, H, S, Dh)
        # self_mask: (T, P+T) causal; src_mask: (B, 1, 1, S)
        h = self.res_self.pre(x)
        k, v = self.self_attn.project_kv(h)  # (B, H, T, Dh)
        if past_k is not None and past_v is not None:
            k = torch.cat([past_k, k], dim=2)  # (B, H, P+T, Dh)
            v = torch.cat([past_v, v], dim=2)
        x = self.res_self.post(x, self.self_attn.attend(h, k, v, self_mask))
        x = self.res_cross.post(x, self.cross_attn.attend(self.res_cross.pre(x), cross_k, cross_v, src_mask))
        x = self.res_ff.post(x, self.ff(self.res_ff.pre(x)))
        return x, k, v


def causal_mask(t: int, past: int, device: torch.device) -> Tensor:
    """(T, P+T) bool: query i (absolute position P+i) may look at keys 0..P+i."""
    q = torch.arange(t, device=device).unsqueeze(1) + past  # (T, 1)
    k = torch.arange(t + past, device=device).unsqueeze(0)  # (1, P+T)
    return k <= q


# ---------------------------------------------------------------------------------------------------
# The encoder-decoder
# ---------------------------------------------------------------------------------------------------
class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        max_len = max(cfg.max_source_len, cfg.max_target_len)
        self.src_embed = Embedding(cfg.src_vocab_size, cfg.d_model, max_len, cfg.dropout, cfg.pad_id)
        self.tgt_embed = Embedding(cfg.tgt_vocab_size, cfg.d_model, max_len, cfg.dropout, cfg.pad_id)
        self.encoder_layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_encoder_layers))
        self.decoder_layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_decoder_layers))
        # Pre-norm leaves the residual stream un-normalised, so each stack ends with a LayerNorm.
        self.encoder_norm: nn.Module = nn.LayerNorm(cfg.d_model) if cfg.norm_first else nn.Identity()
        self.decoder_norm: nn.Module = nn.LayerNorm(cfg.d_model) if cfg.norm_first else nn.Identity()
        self.generator = nn.Linear(cfg.d_model, cfg.tgt_vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.generator.weight = self.tgt_embed.tokens.weight
        else:
            nn.init.normal_(self.generator.weight, mean=0.0, std=cfg.d_model**-0.5)
        self._init_linear()

    def _init_linear(self) -> None:
        for name, p in self.named_parameters():
            if p.dim() == 2 and "embed" not in name and "generator" not in name:
                nn.init.xavier_uniform_(p)

    # --- encoder -----------------------------------------------------------------------------
    def encode(self, src: Tensor, src_mask: Tensor) -> Tensor:
        """src: (B, S) ids, src_mask: (B, S) bool (True = token) -> memory (B, S, D)."""
        attn_mask = src_mask[:, None, None, :]  # (B, 1, 1, S)
        x = self.src_embed(src)
        for layer in self.encoder_layers:
            x = layer(x, attn_mask)
        return self.encoder_norm(x)

    def cross_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-attention keys and values of every decoder layer, each (L, B, H, S, Dh), computed once."""
        layers: list[DecoderLayer] = list(self.decoder_layers)  # type: ignore[arg-type]
        ks, vs = zip(*(layer.cross_attn.project_kv(memory) for layer in layers), strict=True)
        return torch.stack(ks), torch.stack(vs)

    # --- decoder -----------------------------------------------------------------------------
    def decode(
        self,
        tgt: Tensor,
        cross_k: Tensor,
        cross_v: Tensor,
        src_mask: Tensor,
        past_k: Tensor | None = None,
        past_v: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Decoder over new tokens ``tgt`` (B, T) given the self-attention cache of P earlier positions.

        cross_k/v: (L, B, H, S, Dh); src_mask: (B, S) bool; past_k/v: (L, B, H, P, Dh) or None (P = 0).
        Returns logits (B, T, V) and the grown cache ``new_k``/``new_v`` (L, B, H, P+T, Dh).
        """
        past = 0 if past_k is None else past_k.shape[3]
        x = self.tgt_embed(tgt, offset=past)  # (B, T, D)
        self_mask = causal_mask(tgt.shape[1], past, tgt.device)  # (T, P+T)
        attn_src = src_mask[:, None, None, :]  # (B, 1, 1, S)
        new_k, new_v = [], []
        for i, layer in enumerate(self.decoder_layers):
            pk = None if past_k is None else past_k[i]
            pv = None if past_v is None else past_v[i]
            x, k, v = layer(x, pk, pv, cross_k[i], cross_v[i], self_mask, attn_src)
            new_k.append(k)
            new_v.append(v)
        logits = self.generator(self.decoder_norm(x))  # (B, T, V)
        return logits, torch.stack(new_k), torch.stack(new_v)

    def forward(self, src: Tensor, src_mask: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher-forced logits (B, T, V) for decoder inputs ``tgt_in`` (``<s>`` + target[:-1])."""
        memory = self.encode(src, src_mask)
        ck, cv = self.cross_kv(memory)
        logits, _, _ = self.decode(tgt_in, ck, cv, src_mask)
        return logits

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
