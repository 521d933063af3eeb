"""Continuous batching: rows joining a running batch at any step decode exactly as the step-by-step loops (greedy
and beam search) do for each word alone, and in the engine a short job does not wait for a long one."""

from __future__ import annotations

import random

import numpy as np
import pytest
from conftest import WORDS

from g2p.bundle import PREFILL, ROWS_STEP, verify_bundle
from g2p.continuous import RowBatch, supports_rows
from g2p.decoding import DecodeOptions, beam_search, greedy_search
from g2p.ort_backend import CPU, OrtBackend, ort_replicas
from g2p.pipeline import ParallelTranscriber
from g2p.tokenization import G2PTokenizers, pad_batch
from service.engine import Engine, Job, batch_bytes
from service.metrics import Metrics
from service.runtime import ModelVersion

pytestmark = pytest.mark.slow


def _alone(backend, ids, options):
    """Each word decoded alone by the step-by-step loop (no batch-mates at all)."""
    out = []
    for seq in ids:
        src, mask = pad_batch([seq])
        out.append(greedy_search(backend, src, mask, options)[0])
    return out


def _words(n, seed=0):
    rng = random.Random(seed)
    return [rng.choice(WORDS) + rng.choice(["", "s", "ing", "ed"]) for _ in range(n)]


@pytest.mark.parametrize("prefill", [True, False], ids=["prefill", "first-step-apart"])
@pytest.mark.parametrize("max_len", [48, 4, 1])
def test_rows_joining_at_random_steps_decode_as_each_word_alone(bundle, tokenizers, max_len, prefill):
    """Newcomers join by the prefill graph (their first step in the batch's step) or, as from a bundle without
    it, by an encoder run and a first step of their own; a limit of 1 token ends every word at its first step."""
    backend = OrtBackend(bundle[0], "fused", greedy_graph=False)
    assert supports_rows(backend) and not supports_rows(OrtBackend(bundle[0], "fp32"))
    assert PREFILL in backend.sessions
    words = _words(120)
    ids = tokenizers.encode_source(words)
    options = DecodeOptions(max_len=max_len)
    expected = _alone(backend, ids, options)
    rows, got, rng, pending = RowBatch(backend), {}, random.Random(1), list(range(len(words)))
    if not prefill:
        rows.prefill = None
    streamed: dict[int, list[int]] = {}
    rows.on_emit = lambda key, token: streamed.setdefault(key, []).append(token)
    widths = []
    while pending or rows.live:
        k = rng.choice([0, 0, 1, 3, 9])
        new, pending = pending[:k], pending[k:]
        for e in rows.add(new, [ids[i] for i in new], options) + rows.step():
            assert e.key not in got
            got[e.key] = e.hypothesis
        widths.append(rows.width)
    assert len(got) == len(words)
    for i in range(len(words)):
        assert got[i].tokens == expected[i].tokens, words[i]
        assert got[i].finished == expected[i].finished
        assert got[i].logprob == pytest.approx(expected[i].logprob, abs=1e-4)
        assert tuple(streamed.get(i, [])) == got[i].tokens  # each token streamed once, in order, as emitted
    assert rows.rows == 0 and rows.width == 0  # everything left; the arrays are empty again
    assert max(widths) <= max_len + 8  # masked slots on the left are cut as the batch goes on


@pytest.mark.parametrize("max_len", [48, 3])
def test_beam_words_joining_beside_greedy_rows_search_as_each_word_alone(bundle, tokenizers, max_len):
    """Beam words (K rows each, two beam sizes) and greedy words join one batch at random steps, beside each
    other and into rows freed by words that ended: each beam word's n-best equals ``beam_search`` of it alone (the
    same tokens, order, ends and scores), each greedy word's tokens the greedy loop's."""
    backend = OrtBackend(bundle[0], "fused", greedy_graph=False)
    assert supports_rows(backend, beam=True)
    words = _words(60, seed=7)
    ids = tokenizers.encode_source(words)
    kinds = [
        DecodeOptions(max_len=max_len),
        DecodeOptions(beam_size=3, nbest=3, max_len=max_len),
        DecodeOptions(beam_size=5, nbest=2, length_penalty=0.6, max_len=max_len),
    ]
    option = [kinds[i % 3] for i in range(len(words))]
    expected = []
    for seq, options in zip(ids, option, strict=True):
        src, mask = pad_batch([seq])
        expected.append(beam_search(backend, src, mask, options)[0] if options.beam_size > 1 else
                        greedy_search(backend, src, mask, options))  # fmt: skip
    rows, got, rng, pending = RowBatch(backend), {}, random.Random(8), list(range(len(words)))
    while pending or rows.live:
        take = rng.choice([0, 0, 1, 2, 5])
        new, pending = pending[:take], pending[take:]
        for options in kinds:
            mine = [i for i in new if option[i] is options]
            for e in rows.add(mine, [ids[i] for i in mine], options):
                got[e.key] = e.hypotheses
        for e in rows.step():
            assert e.key not in got
            got[e.key] = e.hypotheses
    assert len(got) == len(words) and not rows.groups
    for i in range(len(words)):
        assert [h.tokens for h in got[i]] == [h.tokens for h in expected[i]], words[i]
        assert [h.finished for h in got[i]] == [h.finished for h in expected[i]]
        assert [h.score for h in got[i]] == pytest.approx([h.score for h in expected[i]], abs=1e-4)
    assert rows.rows == 0


def test_a_dropped_beam_word_leaves_and_the_others_are_unchanged(bundle, tokenizers):
    backend = OrtBackend(bundle[0], "fused", greedy_graph=False)
    words = _words(6, seed=9)
    ids = tokenizers.encode_source(words)
    options = DecodeOptions(beam_size=4, nbest=2)
    expected = []
    for seq in ids:
        src, mask = pad_batch([seq])
        expected.append(beam_search(backend, src, mask, options)[0])
    rows = RowBatch(backend)
    rows.add(list(range(6)), ids, options)
    rows.step()
    gone = rows.drop([2])
    assert [e.key for e in gone] == [2] and all(not h.finished for h in gone[0].hypotheses)
    assert rows.live == 5 * 4 and 2 not in rows.groups
    got = {}
    while rows.live:
        got |= {e.key: e.hypotheses for e in rows.step()}
    assert sorted(got) == [0, 1, 3, 4, 5]
    for i in got:
        assert [h.tokens for h in got[i]] == [h.tokens for h in expected[i]]


def test_a_dropped_row_leaves_and_the_others_are_unchanged(bundle, tokenizers):
    backend = OrtBackend(bundle[0], "fused", greedy_graph=False)
    words = _words(10, seed=2)
    ids = tokenizers.encode_source(words)
    options = DecodeOptions()
    expected = _alone(backend, ids, options)
    rows = RowBatch(backend)
    got = {e.key: e.hypothesis for e in rows.add(list(range(10)), ids, options)}
    gone = rows.drop([3, 7])
    assert {e.key for e in gone} <= {3, 7} and all(not e.hypothesis.finished for e in gone)
    while rows.live:
        got |= {e.key: e.hypothesis for e in rows.step()}
    for i in set(range(10)) - {3, 7}:
        assert got[i].tokens == expected[i].tokens


def _engine(bundle, scheduling, workers=1, max_batch=16, memory_share=0):
    """An engine and the tiny bundle's fused variant as a served version (``load_version`` without its
    test-decode of English words, which the tiny model's alphabet lacks)."""
    path = bundle[0]
    manifest = verify_bundle(path)
    backends = ort_replicas(path, workers, "fused", [CPU], 1, manifest)
    model = ModelVersion(
        name=path.parent.name, version=int(path.name), path=path, manifest=manifest,
        tokenizers=G2PTokenizers.load(path), backend=backends[0], parallel=ParallelTranscriber(backends),
        variant="fused", providers_used=[CPU], alphabet=frozenset(manifest.source_alphabet),
    )  # fmt: skip
    engine = Engine(max_batch, 0.002, 64, Metrics(), workers, memory_share=memory_share, scheduling=scheduling)
    return engine, model


def test_the_engine_gives_the_same_answers_both_ways_and_a_short_job_overtakes_a_long_one(bundle):
    results, order, streams = {}, {}, {}
    for scheduling in ("continuous", "batch"):
        engine, model = _engine(bundle, scheduling)
        assert model.rows_capable and ROWS_STEP in model.backend.sessions
        try:
            finished: list[str] = []
            long_job = Job(model, _words(200, seed=3), DecodeOptions())
            short_job = Job(model, ["cat"], DecodeOptions())
            long_beam = Job(model, _words(40, seed=10), DecodeOptions(beam_size=4, nbest=2))
            beam_job = Job(model, ["dog", "cats"], DecodeOptions(beam_size=3, nbest=3))
            events: list[tuple[int, int]] = []
            on_token = events.append
            stream_job = Job(model, ["bird", "trees"], DecodeOptions(), on_token=lambda i, t, f=on_token: f((i, t)))
            jobs = {"long": long_job, "long beam": long_beam, "short": short_job, "beam": beam_job,
                    "stream": stream_job}  # fmt: skip
            for name, job in jobs.items():
                job.future.add_done_callback(lambda _, n=name, done=finished: done.append(n))
                engine.submit(job)
            results[scheduling] = [j.future.result(60) for j in jobs.values()]
            order[scheduling] = finished
            streams[scheduling] = [[t for i, t in events if i == k] for k in range(2)]
        finally:
            engine.stop()
    for got, want in zip(results["continuous"], results["batch"], strict=True):  # the same tokens; the scores
        assert len(got) == len(want)  # come from other graphs (the batch path runs the greedy Loop graph)
        for g, w in zip(got, want, strict=True):
            assert [(h.phonemes, h.finished) for h in g] == [(h.phonemes, h.finished) for h in w]
            assert [h.logprob for h in g] == pytest.approx([h.logprob for h in w], abs=1e-4)
    assert len(results["continuous"][3][0]) == 3  # the n-best of a beam job
    assert streams["continuous"] == streams["batch"] and all(streams["batch"])  # the same tokens streamed
    assert order["batch"][:2] == ["long", "long beam"]  # per batch, the short jobs wait for the long ones
    assert set(order["continuous"][:3]) == {"short", "beam", "stream"}  # they join the running batch, leave early


def test_beam_rows_stay_within_the_memory_share_and_a_wider_beam_decodes_alone(bundle, monkeypatch):
    """A memory share of 6 rows (``batch_bytes`` of the model's longest word at its longest output, x6): beam-4
    words (4 rows each) and greedy words share the batch without ever holding more rows than that, and a beam of 8
    (wider than the share) joins an empty batch alone; every answer equals the per-batch scheduler's."""
    _, probe = _engine(bundle, "batch")
    row = batch_bytes(probe, 1, probe.max_input_chars, DecodeOptions(max_len=probe.max_output_tokens))
    most: list[int] = []
    step = RowBatch.step

    def counted(self):
        most.append(self.live)
        return step(self)

    monkeypatch.setattr(RowBatch, "step", counted)
    results = {}
    for scheduling in ("continuous", "batch"):
        engine, model = _engine(bundle, scheduling, memory_share=6 * row)
        try:
            jobs = [Job(model, _words(12, seed=11), DecodeOptions(beam_size=4, nbest=2)),
                    Job(model, _words(20, seed=12), DecodeOptions()),
                    Job(model, _words(3, seed=13), DecodeOptions(beam_size=8, nbest=3))]  # fmt: skip
            for job in jobs:
                engine.submit(job)
            results[scheduling] = [j.future.result(120) for j in jobs]
        finally:
            engine.stop()
    assert most and max(most) <= 8  # 6 rows, or one beam of 8 alone
    assert 8 in most and max(m for m in most if m != 8) <= 6
    for got, want in zip(results["continuous"], results["batch"], strict=True):
        for g, w in zip(got, want, strict=True):
            assert [(h.phonemes, h.finished) for h in g] == [(h.phonemes, h.finished) for h in w]


def test_a_cancelled_job_leaves_the_running_batch(bundle):
    engine, model = _engine(bundle, "continuous")
    try:
        long_job = Job(model, _words(200, seed=4), DecodeOptions())
        doomed = Job(model, _words(30, seed=5), DecodeOptions())
        engine.submit(long_job)
        engine.submit(doomed)
        doomed.cancelled.set()
        with pytest.raises(Exception, match="cancelled"):
            doomed.future.result(60)
        assert len(long_job.future.result(60)) == 200
    finally:
        engine.stop()


def test_rows_arrays_stay_float32_and_contiguous(bundle, tokenizers):
    rows = RowBatch(OrtBackend(bundle[0], "fused"))
    rows.add([0, 1], tokenizers.encode_source(_words(2, seed=6)), DecodeOptions())
    rows.step()
    for name in ("past_k", "past_v", "cross_k", "cross_v"):
        x = getattr(rows, name)
        assert x.dtype == np.float32 and x.flags.c_contiguous, name
