from __future__ import annotations

import numpy as np
import pytest
from conftest import PRONS, WORDS

from g2p.tokenization import BOS_ID, EOS_ID, PAD_ID, UNK_ID, G2PTokenizers, UnknownSymbolError, pad_batch


def test_special_ids_are_fixed(tokenizers):
    for t in (tokenizers.src, tokenizers.tgt):
        assert [t.token_to_id(s) for s in ("<pad>", "<s>", "</s>", "<unk>")] == [PAD_ID, BOS_ID, EOS_ID, UNK_ID]


def test_source_is_character_level_and_case_normalised(tokenizers):
    (ids,) = tokenizers.encode_source(["CaT"])
    assert ids[-1] == EOS_ID
    assert [tokenizers.src.id_to_token(i) for i in ids[:-1]] == ["c", "a", "t"]
    assert tokenizers.normalize("  O'Neil ") == "o'neil"


def test_target_round_trip(tokenizers):
    ids = tokenizers.encode_target(PRONS)
    assert all(seq[-1] == EOS_ID for seq in ids)
    assert [" ".join(tokenizers.decode_target(seq)) for seq in ids] == PRONS


def test_unknown_characters_are_named(tokenizers):
    with pytest.raises(UnknownSymbolError) as err:
        tokenizers.encode_source(["cat", "caé7"])
    assert err.value.symbols == ["7", "é"]
    assert "'caé7'" in str(err.value)


def test_unknown_phoneme_is_named(tokenizers):
    with pytest.raises(UnknownSymbolError, match="'XX9'"):
        tokenizers.encode_target(["K XX9 T"])


def test_empty_word_is_rejected(tokenizers):
    with pytest.raises(ValueError, match="empty"):
        tokenizers.encode_source(["   "])


def test_save_and_load_round_trip(tokenizers, tmp_path):
    tokenizers.save(tmp_path)
    again = G2PTokenizers.load(tmp_path)
    assert again.encode_source(WORDS) == tokenizers.encode_source(WORDS)
    assert again.encode_target(PRONS) == tokenizers.encode_target(PRONS)
    assert again.source_alphabet() == tokenizers.source_alphabet()


def test_pad_batch():
    ids, mask = pad_batch([[5, 6, 2], [7, 2]])
    assert ids.tolist() == [[5, 6, 2], [7, 2, PAD_ID]]
    assert mask.tolist() == [[True, True, True], [True, True, False]]
    assert ids.dtype == np.int64
