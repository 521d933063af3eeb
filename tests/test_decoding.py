from __future__ import annotations

import numpy as np
import pytest
from conftest import WORDS, make_model

from g2p.decoding import DecodeOptions, beam_search, decode, greedy_search
from g2p.pipeline import transcribe
from g2p.tokenization import BOS_ID, EOS_ID, pad_batch
from training.backend import TorchBackend


class TableBackend:
    """A backend whose next-token distribution depends only on the previous token (a Markov chain).

    Vocabulary: 0 pad, 1 <s>, 2 </s>, 3 unk, 4 "a", 5 "b". Greedy takes "a" first (0.6) but every
    continuation after "a" is poor, while "b" leads to a sure end: beam search must prefer "b </s>".
    """

    probs = {
        BOS_ID: {4: 0.6, 5: 0.4},
        4: {4: 0.35, 5: 0.35, EOS_ID: 0.3},
        5: {EOS_ID: 1.0},
    }

    def encode(self, src_ids, src_mask):
        return np.zeros((src_ids.shape[0], 0), dtype=np.int64)  # state = token history per row

    def step(self, tokens, state):
        logits = np.full((len(tokens), 6), -1e9, dtype=np.float32)
        for row, tok in enumerate(tokens):
            for nxt, p in self.probs.get(int(tok), {EOS_ID: 1.0}).items():
                logits[row, nxt] = np.log(p)
        return logits, np.concatenate([state, tokens[:, None]], axis=1)

    def reorder(self, state, rows):
        return state[rows]


def _src(n: int):
    return np.full((n, 3), 7, dtype=np.int64), np.ones((n, 3), dtype=bool)


def test_beam_search_finds_the_better_sequence_that_greedy_misses():
    src, mask = _src(2)
    greedy = greedy_search(TableBackend(), src, mask, DecodeOptions())
    assert greedy[0].tokens[0] == 4
    beams = beam_search(TableBackend(), src, mask, DecodeOptions(beam_size=3, nbest=3, length_penalty=0.0))
    best = beams[0][0]
    assert best.tokens == (5,)
    assert best.logprob == pytest.approx(np.log(0.4), abs=1e-6)
    assert [h.score for h in beams[0]] == sorted((h.score for h in beams[0]), reverse=True)
    assert beams[0] == beams[1]


def test_length_limit_stops_decoding_and_marks_unfinished():
    class Loop(TableBackend):
        probs = {BOS_ID: {4: 1.0}, 4: {4: 0.9, EOS_ID: 0.1}}

    src, mask = _src(1)
    opts = DecodeOptions(max_len=5)
    (hyp,) = greedy_search(Loop(), src, mask, opts)
    assert hyp.tokens == (4,) * 5 and not hyp.finished
    (beams,) = beam_search(Loop(), src, mask, DecodeOptions(beam_size=2, max_len=5))
    assert len(beams[0].tokens) <= 5


def test_options_are_validated():
    with pytest.raises(ValueError, match="beam_size"):
        DecodeOptions(beam_size=0)
    with pytest.raises(ValueError, match="nbest"):
        DecodeOptions(beam_size=2, nbest=3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_equals_beam_size_one_on_a_random_model(tokenizers, torch_threads, seed):
    model = make_model(tokenizers, seed=seed)
    src, mask = pad_batch(tokenizers.encode_source(WORDS))
    backend = TorchBackend(model)
    opts = DecodeOptions(max_len=12)
    greedy = greedy_search(backend, src, mask, opts)
    beam1 = beam_search(backend, src, mask, opts)
    assert [g.tokens for g in greedy] == [b[0].tokens for b in beam1]
    assert [g.logprob for g in greedy] == pytest.approx([b[0].logprob for b in beam1], abs=1e-4)


def test_batched_decoding_equals_one_by_one(tiny_model, tokenizers):
    backend = TorchBackend(tiny_model)
    opts = DecodeOptions(beam_size=3, nbest=2, max_len=10)
    together = transcribe(backend, tokenizers, WORDS, opts, batch_size=5)
    alone = [transcribe(backend, tokenizers, [w], opts)[0] for w in WORDS]
    assert [[p.phonemes for p in r] for r in together] == [[p.phonemes for p in r] for r in alone]


def test_decode_dispatches_on_beam_size(tiny_model, tokenizers):
    src, mask = pad_batch(tokenizers.encode_source(["cat"]))
    out = decode(TorchBackend(tiny_model), src, mask, DecodeOptions(beam_size=4, nbest=4, max_len=6))
    assert len(out[0]) == 4


def test_the_whole_batch_greedy_run_skips_rows_that_are_dead_before_it():
    """A backend's ``greedy`` (one run for the whole batch) gets only the rows alive just before it runs."""

    class Whole(TableBackend):
        def __init__(self) -> None:
            self.runs: list[list[int]] = []

        def greedy(self, src_ids, src_mask, limits):
            self.runs.append(src_ids[:, 0].tolist())
            tokens = np.tile(np.array([[5, EOS_ID]]), (len(src_ids), 1))
            return tokens, np.zeros(tokens.shape, dtype=np.float32)

    src, mask = _src(3)
    src[:, 0] = [10, 11, 12]
    backend = Whole()
    hyps = greedy_search(backend, src, mask, DecodeOptions(), alive=lambda row: row != 1)
    assert backend.runs == [[10, 12]]  # row 1 was not decoded
    assert [(h.tokens, h.finished) for h in hyps] == [((5,), True), ((), False), ((5,), True)]
    assert greedy_search(backend, src, mask, DecodeOptions(), alive=lambda row: False) == [hyps[1]] * 3
    assert backend.runs == [[10, 12]]  # nothing alive: no run at all
