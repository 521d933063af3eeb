"""Shared fixtures: a tiny random model and its tokenizers, built in memory in milliseconds."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

WORDS = ["cat", "dog", "bird", "tree", "apple", "zebra", "quick", "jumps", "over", "lazy", "x-ray", "o'neil"]
PRONS = [
    "K AE1 T", "D AO1 G", "B ER1 D", "T R IY1", "AE1 P AH0 L", "Z IY1 B R AH0", "K W IH1 K",
    "JH AH1 M P S", "OW1 V ER0", "L EY1 Z IY0", "EH1 K S R EY2", "OW0 N IY1 L",
]  # fmt: skip


@pytest.fixture(scope="session")
def torch_threads() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizers():
    from g2p.tokenization import G2PTokenizers

    return G2PTokenizers.build(WORDS, PRONS)


def make_model(tok, seed: int = 0, **overrides):
    import torch

    from training.model import ModelConfig, Transformer

    torch.manual_seed(seed)
    cfg = ModelConfig(
        src_vocab_size=tok.src_vocab_size,
        tgt_vocab_size=tok.tgt_vocab_size,
        d_model=32,
        n_heads=4,
        n_encoder_layers=2,
        n_decoder_layers=2,
        d_ff=64,
        dropout=0.0,
        max_source_len=32,
        max_target_len=32,
        **overrides,
    )
    return Transformer(cfg).eval()


@pytest.fixture()
def tiny_model(tokenizers, torch_threads):
    return make_model(tokenizers)
