from __future__ import annotations

import random

import pytest

from g2p.lexicon import LexiconError, read_cmudict, read_test_split, read_tsv
from training.data import Example, collate, make_splits, token_batches
from training.train import DEFAULT_TEST_SPLIT, TrainConfig, prepare


@pytest.fixture(scope="module")
def cmudict_entries():
    return read_cmudict()


def test_cmudict_reading(cmudict_entries):
    words = {w for w, _ in cmudict_entries}
    assert len(cmudict_entries) > 130_000
    assert ("abbey", "AE1 B IY0") in cmudict_entries
    assert all("(" not in w and "#" not in p for w, p in cmudict_entries[:5000])
    # alternates become extra pronunciations of the same word
    assert sum(1 for w, _ in cmudict_entries if w == "tomato") >= 2
    assert "'bout" in words


def test_no_test_word_reaches_train_or_dev(cmudict_entries):
    test_words = set(read_test_split(DEFAULT_TEST_SPLIT))
    assert len(test_words) == 11_994
    splits = make_splits(cmudict_entries, test_words, dev_words=2000, seed=1234)
    assert not test_words & splits.words("train")
    assert not test_words & splits.words("dev")
    assert not splits.words("train") & splits.words("dev")
    assert len(splits.words("dev")) == 2000
    assert splits.words("test") == test_words  # every benchmark word is in the package's dictionary
    # the prepared training examples are exactly the train split
    prepared = prepare(TrainConfig(dev_words=2000, seed=1234))
    assert prepared.counts["train_pairs"] == len(splits.train)
    assert not set(prepared.dev_refs) & test_words


def test_dev_split_is_seeded(cmudict_entries):
    a = make_splits(cmudict_entries, set(), dev_words=100, seed=1)
    b = make_splits(cmudict_entries, set(), dev_words=100, seed=1)
    c = make_splits(cmudict_entries, set(), dev_words=100, seed=2)
    assert a.words("dev") == b.words("dev") != c.words("dev")


def test_tsv_reading_and_errors(tmp_path):
    good = tmp_path / "good.tsv"
    good.write_text("# comment\nHello\tHH AH0 L OW1\n\nworld\tW ER1  L D\n")
    assert read_tsv(good) == [("hello", "HH AH0 L OW1"), ("world", "W ER1 L D")]
    bad = tmp_path / "bad.tsv"
    bad.write_text("hello\tHH AH0 L OW1\nno tab here\n")
    with pytest.raises(LexiconError, match=r"bad.tsv:2: expected 'source<TAB>target'"):
        read_tsv(bad)
    empty = tmp_path / "empty.tsv"
    empty.write_text("\n# nothing\n")
    with pytest.raises(LexiconError, match="no entries"):
        read_tsv(empty)
    with pytest.raises(LexiconError, match="not found"):
        read_tsv(tmp_path / "missing.tsv")


def test_token_batches_respect_the_budget_and_cover_everything():
    rng = random.Random(0)
    examples = [Example([5] * rng.randint(2, 20), [6] * rng.randint(2, 20)) for _ in range(500)]
    batches = token_batches(examples, max_tokens=100, rng=rng)
    assert sorted(i for b in batches for i in b) == list(range(500))
    for b in batches:
        longest = max(max(len(examples[i].src), len(examples[i].tgt)) for i in b)
        assert longest * len(b) <= 100


def test_collate_shifts_the_target_right():
    batch = collate([Example([7, 8, 2], [9, 10, 2]), Example([7, 2], [9, 2])])
    assert batch.tgt_in.tolist() == [[1, 9, 10], [1, 9, 0]]
    assert batch.tgt_out.tolist() == [[9, 10, 2], [9, 2, 0]]
    assert batch.src_mask.tolist() == [[True, True, True], [True, True, False]]
