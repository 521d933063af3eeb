"""The shipped checkpoint loads from the repository alone and pronounces common words correctly."""

from __future__ import annotations

import torch
from conftest import ROOT

from g2p.decoding import DecodeOptions
from g2p.lexicon import group, read_cmudict
from g2p.pipeline import transcribe
from training import checkpoint as ckpt
from training.backend import TorchBackend

SHIPPED = ROOT / "checkpoints" / "cmudict-default"

# Common training words; a word is right when the output is one of the dictionary's pronunciations.
COMMON = ["cat", "dog", "house", "water", "phone", "speech", "computer", "language", "running", "people"]


def test_shipped_checkpoint_pronounces_common_words(torch_threads):
    loaded = ckpt.load_model(SHIPPED / "best.pt")
    assert (SHIPPED / "best.pt").stat().st_size < 30 * 2**20
    lexicon = group(read_cmudict())
    out = transcribe(TorchBackend(loaded.model), loaded.tokenizers, COMMON, DecodeOptions(beam_size=5, max_len=32))
    wrong = {w: " ".join(r[0].phonemes) for w, r in zip(COMMON, out, strict=True)
             if " ".join(r[0].phonemes) not in lexicon[w]}  # fmt: skip
    assert not wrong


def test_shipped_checkpoint_is_loaded_safely():
    # weights_only loading: the file holds tensors and plain data only
    raw = torch.load(SHIPPED / "best.pt", map_location="cpu", weights_only=True)
    assert raw["format"] == ckpt.FORMAT
    assert set(raw["model_config"]) >= {"d_model", "n_heads", "n_encoder_layers", "n_decoder_layers"}
