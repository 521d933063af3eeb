"""Continuous batching: rows joining a running batch at any step decode exactly as the step-by-step greedy loop
does for each word alone, and in the engine a short job does not wait for a long one."""

from __future__ import annotations

import random

import numpy as np
import pytest
from conftest import WORDS

from g2p.bundle import PREFILL, ROWS_STEP, verify_bundle
from g2p.continuous import RowBatch, supports_rows
from g2p.decoding import DecodeOptions, greedy_search
from g2p.ort_backend import CPU, OrtBackend, ort_replicas
from g2p.pipeline import ParallelTranscriber
from g2p.tokenization import G2PTokenizers, pad_batch
from service.engine import Engine, Job
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
    assert rows.rows == 0 and rows.width == 0  # everything left; the arrays are empty again
    assert max(widths) <= max_len + 8  # masked slots on the left are cut as the batch goes on


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


def _engine(bundle, scheduling, workers=1, max_batch=16):
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
    engine = Engine(max_batch, 0.002, 64, Metrics(), workers, scheduling=scheduling)
    return engine, model


def test_the_engine_gives_the_same_answers_both_ways_and_a_short_job_overtakes_a_long_one(bundle):
    results = {}
    order = {}
    for scheduling in ("continuous", "batch"):
        engine, model = _engine(bundle, scheduling)
        assert model.rows_capable and ROWS_STEP in model.backend.sessions
        try:
            finished: list[str] = []
            long_job = Job(model, _words(200, seed=3), DecodeOptions())
            short_job = Job(model, ["cat"], DecodeOptions())
            beam_job = Job(model, ["dog", "cats"], DecodeOptions(beam_size=3))
            for name, job in (("long", long_job), ("short", short_job), ("beam", beam_job)):
                job.future.add_done_callback(lambda _, n=name, done=finished: done.append(n))
                engine.submit(job)
            results[scheduling] = [j.future.result(60) for j in (long_job, short_job, beam_job)]
            order[scheduling] = finished
        finally:
            engine.stop()
    for got, want in zip(results["continuous"], results["batch"], strict=True):  # the same tokens; the scores
        assert len(got) == len(want)  # come from other graphs (the batch path runs the greedy Loop graph)
        for g, w in zip(got, want, strict=True):
            assert (g[0].phonemes, g[0].finished) == (w[0].phonemes, w[0].finished)
            assert g[0].logprob == pytest.approx(w[0].logprob, abs=1e-4)
    assert order["batch"][0] == "long"  # per batch, the short job waits for the long one's batch to end
    assert order["continuous"][0] == "short"  # it joins the running batch and leaves it long before


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
