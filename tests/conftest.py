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


def save_checkpoint(tok, directory, seed: int = 0):
    """A tiny random model's checkpoint + tokenizer files in ``directory``; returns the checkpoint path."""
    from training import checkpoint as ckpt

    model = make_model(tok, seed=seed)
    path = directory / "best.pt"
    ckpt.save(path, {"model_config": model.cfg.to_dict(), "train_config": {}, "model": model.state_dict(),
                     "step": 0, "epoch": 0, "best_dev_wer": 100.0})  # fmt: skip
    tok.save(directory)
    return path


@pytest.fixture(scope="session")
def words_file(tmp_path_factory):
    """The tiny word list in the test-split format (held-out words for the export's gates)."""
    from g2p.metrics import strip_stress

    path = tmp_path_factory.mktemp("words") / "words.test"
    lines = [f"{w.upper()}  {' '.join(strip_stress(p.split()))}\n" for w, p in zip(WORDS, PRONS, strict=True)]
    path.write_text("".join(lines))
    return path


@pytest.fixture(scope="session")
def bundle(tokenizers, tmp_path_factory, words_file):
    """A tiny model exported with every variant: (bundle dir, checkpoint path)."""
    import torch

    from export.bundle_export import ExportOptions, export_bundle

    torch.set_num_threads(1)
    work = tmp_path_factory.mktemp("export")
    ck = save_checkpoint(tokenizers, work / "ckpt")
    opts = ExportOptions(checkpoint=ck, name="tiny", root=work / "models", words_file=words_file, beams=(1, 3),
                         variants=("int8", "fp16", "optimized", "fused"), threads=1, log=lambda m: None)  # fmt: skip
    return export_bundle(opts), ck
