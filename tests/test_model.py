from __future__ import annotations

import math

import pytest
import torch
from conftest import make_model

from training.model import ModelConfig, causal_mask, sinusoidal_table


def test_positional_encoding_matches_the_paper_formula():
    d = 16
    table = sinusoidal_table(50, d)
    for pos in (0, 1, 7, 49):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_causal_mask_convention_true_means_may_attend():
    m = causal_mask(3, 2, torch.device("cpu"))
    assert m.shape == (3, 5)
    assert m.tolist() == [
        [True, True, True, False, False],
        [True, True, True, True, False],
        [True, True, True, True, True],
    ]


def _src(tok, words):
    from g2p.tokenization import pad_batch

    ids, mask = pad_batch(tok.encode_source(words))
    return torch.as_tensor(ids), torch.as_tensor(mask)


@pytest.mark.parametrize("norm_first", [True, False])
def test_changing_later_target_tokens_leaves_earlier_logits_unchanged(tokenizers, torch_threads, norm_first):
    model = make_model(tokenizers, norm_first=norm_first)
    src, mask = _src(tokenizers, ["apple", "dog"])
    tgt = torch.randint(4, tokenizers.tgt_vocab_size, (2, 6))
    changed = tgt.clone()
    changed[:, 4:] = torch.randint(4, tokenizers.tgt_vocab_size, (2, 2))
    with torch.no_grad():
        a, b = model(src, mask, tgt), model(src, mask, changed)
    torch.testing.assert_close(a[:, :4], b[:, :4], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_source_padding_does_not_change_outputs(tiny_model, tokenizers):
    tgt = torch.tensor([[1, 5, 6, 7]])
    alone_src, alone_mask = _src(tokenizers, ["dog"])
    batch_src, batch_mask = _src(tokenizers, ["dog", "zebra-apple"])  # "dog" gets padded
    with torch.no_grad():
        alone = tiny_model(alone_src, alone_mask, tgt)
        padded = tiny_model(batch_src, batch_mask, tgt.repeat(2, 1))[:1]
    assert batch_src.shape[1] > alone_src.shape[1]
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tie", [True, False])
def test_cached_incremental_decoding_equals_full_decoding(tokenizers, torch_threads, tie):
    model = make_model(tokenizers, tie_embeddings=tie)
    src, mask = _src(tokenizers, ["quick", "x-ray", "o'neil"])
    tgt = torch.randint(4, tokenizers.tgt_vocab_size, (3, 7))
    with torch.no_grad():
        full = model(src, mask, tgt)
        ck, cv = model.cross_kv(model.encode(src, mask))
        # first two positions at once (a prefix), then one token per step with the growing cache
        logits, pk, pv = model.decode(tgt[:, :2], ck, cv, mask)
        steps = [logits]
        for t in range(2, tgt.shape[1]):
            logits, pk, pv = model.decode(tgt[:, t : t + 1], ck, cv, mask, pk, pv)
            steps.append(logits)
    assert pk.shape == (2, 3, 4, 7, 8)  # (L, B, H, T, Dh)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)


def test_tied_embeddings_share_one_matrix(tokenizers):
    model = make_model(tokenizers, tie_embeddings=True)
    assert model.generator.weight.data_ptr() == model.tgt_embed.tokens.weight.data_ptr()
    untied = make_model(tokenizers, tie_embeddings=False)
    assert untied.num_parameters() == model.num_parameters() + tokenizers.tgt_vocab_size * 32


def test_config_round_trip_and_validation():
    cfg = ModelConfig(src_vocab_size=30, tgt_vocab_size=70, d_model=64, n_heads=4)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(src_vocab_size=30, tgt_vocab_size=70, d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="dropout"):
        ModelConfig(src_vocab_size=30, tgt_vocab_size=70, dropout=1.5)
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({**cfg.to_dict(), "n_layers": 3})
