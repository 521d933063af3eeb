"""The batching engine with a fake model: batching, backpressure, deadlines, cancellation, draining."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import pytest

from g2p.decoding import DecodeOptions
from g2p.pipeline import Pronunciation
from service.engine import DECODE_NICENESS, Cancelled, DeadlineExceeded, Engine, EngineStopped, Job, QueueFull
from service.metrics import Metrics


class FakeModel:
    """Decodes a word to its letters; blocks while ``gate`` is clear; records every batch. (Per-batch scheduling:
    continuous batching needs a real model's graphs, see tests/test_continuous.py.)"""

    rows_capable = False

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.batches: list[list[str]] = []
        self.decoded: list[str] = []  # the words alive when their batch decoded
        self.started = threading.Event()
        self.on_batch: Callable[[list[str]], None] | None = None  # called as a batch starts

    def transcribe(self, words, options, on_token=None, alive=None, batch_size=256):
        self.batches.append(list(words))
        self.started.set()
        if self.on_batch is not None:
            self.on_batch(list(words))
        self.gate.wait(10)
        out = []
        for i, w in enumerate(words):
            if alive is not None and not alive(i):
                out.append([Pronunciation((), 0.0, 0.0, False)])
                continue
            self.decoded.append(w)
            if on_token is not None:
                for t in range(len(w)):
                    on_token(i, t)
            out.append([Pronunciation(tuple(w.upper()), -1.0, -1.0, True)])
        return out


GREEDY = DecodeOptions()


def make(max_batch=8, delay=0.05, queue=4, workers=1):
    return Engine(max_batch, delay, queue, Metrics(), workers)


def test_concurrent_jobs_share_a_batch_and_keep_their_order():
    eng, model = make(), FakeModel()
    model.gate.clear()
    first = eng.submit(Job(model, ["a"], GREEDY))  # occupies the worker
    assert model.started.wait(5)
    jobs = [Job(model, [w, w + w], GREEDY) for w in "xyz"]
    futures = [eng.submit(j) for j in jobs]
    model.gate.set()
    assert first.result(5)[0][0].phonemes == ("A",)
    assert [[r[0].phonemes for r in f.result(5)] for f in futures] == [
        [(w.upper(),), (w.upper(), w.upper())] for w in "xyz"
    ]
    assert model.batches[1] == ["x", "xx", "y", "yy", "z", "zz"]  # one batch for the three waiting jobs
    eng.stop()
    sample = eng.metrics.registry.get_sample_value
    assert sample("g2p_batch_seconds_count") == len(model.batches) == 2  # one decode time per batch
    assert sample("g2p_batch_size_count") == 2 and sample("g2p_batch_seconds_sum") > 0


def test_different_options_are_not_mixed():
    eng, model = make(), FakeModel()
    model.gate.clear()
    eng.submit(Job(model, ["a"], GREEDY))
    assert model.started.wait(5)
    f1 = eng.submit(Job(model, ["b"], GREEDY))
    f2 = eng.submit(Job(model, ["c"], DecodeOptions(beam_size=4)))
    model.gate.set()
    f1.result(5), f2.result(5)
    assert ["b"] in model.batches and ["c"] in model.batches
    eng.stop()


def test_a_full_engine_refuses_at_once_and_counts_it():
    """max_queue_size bounds the jobs in the engine, queued or decoding (each holds an RPC thread)."""
    eng, model = make(queue=2), FakeModel()
    model.gate.clear()
    decoding = eng.submit(Job(model, ["b"], GREEDY))
    assert model.started.wait(5)
    queued = eng.submit(Job(model, ["c"], DecodeOptions(beam_size=2)))
    for _ in range(2):
        with pytest.raises(QueueFull, match=r"2 requests already queued or decoding \(max_queue_size=2\)"):
            eng.submit(Job(model, ["d"], GREEDY))
    with pytest.raises(QueueFull):
        eng.run(Job(model, ["e"], GREEDY))
    ran: list[int] = []
    with pytest.raises(QueueFull):  # a tensor job (the v2 encoder model) is bounded alike, and never run
        eng.submit(Job(model, [], GREEDY, work=lambda: ran.append(1)))
    assert not ran
    assert eng.metrics.registry.get_sample_value("g2p_rejected_requests_total", {"reason": "queue"}) == 4
    model.gate.set()
    assert decoding.result(5) and queued.result(5)
    eng.submit(Job(model, ["f"], GREEDY)).result(5)  # settled jobs leave room
    eng.stop()


def test_expired_and_cancelled_jobs_are_dropped_before_decoding():
    eng, model = make(), FakeModel()
    model.gate.clear()
    eng.submit(Job(model, ["a"], GREEDY))
    assert model.started.wait(5)
    late = Job(model, ["late"], GREEDY, deadline=time.monotonic() + 0.01)
    gone = Job(model, ["gone"], GREEDY)
    fl, fg = eng.submit(late), eng.submit(gone)
    gone.cancelled.set()
    time.sleep(0.05)
    model.gate.set()
    with pytest.raises(DeadlineExceeded):
        fl.result(5)
    with pytest.raises(Cancelled):
        fg.result(5)
    assert all("late" not in b and "gone" not in b for b in model.batches)
    eng.stop()


def dropped(eng: Engine, reason: str) -> float:
    return eng.metrics.registry.get_sample_value("g2p_dropped_requests_total", {"reason": reason}) or 0.0


def test_an_idle_engine_does_not_decode_a_dead_job_inline():
    eng, model = make(), FakeModel()
    late = Job(model, ["late"], GREEDY, deadline=time.monotonic() - 0.001)
    gone = Job(model, ["gone"], GREEDY)
    gone.cancelled.set()
    with pytest.raises(DeadlineExceeded):
        eng.run(late).result(5)
    with pytest.raises(Cancelled):
        eng.run(gone).result(5)
    assert model.batches == [] and (dropped(eng, "deadline"), dropped(eng, "cancelled")) == (1, 1)
    assert eng.run(Job(model, ["ok"], GREEDY)).result(5)[0][0].phonemes == ("O", "K")
    eng.stop()


def test_a_plain_greedy_batch_drops_a_job_that_died_after_the_batch_was_taken():
    eng, model = make(), FakeModel()
    model.gate.clear()
    first = eng.submit(Job(model, ["a"], GREEDY))  # occupies the worker
    assert model.started.wait(5)
    kept, gone = Job(model, ["kept"], GREEDY), Job(model, ["gone"], GREEDY)
    fk, fg = eng.submit(kept), eng.submit(gone)
    model.on_batch = lambda words: gone.cancelled.set() if "gone" in words else None  # between the checks
    model.gate.set()
    assert first.result(5) and fk.result(5)[0][0].phonemes == ("K", "E", "P", "T")
    with pytest.raises(Cancelled):
        fg.result(5)
    assert ["kept", "gone"] in model.batches and "gone" not in model.decoded
    assert dropped(eng, "cancelled") == 1
    eng.stop()


def test_streaming_tokens_reach_their_own_job():
    eng, model = make(), FakeModel()
    seen: dict[str, list[tuple[int, int]]] = {"p": [], "q": []}
    f = eng.submit(Job(model, ["ab", "c"], GREEDY, on_token=lambda i, t: seen["p"].append((i, t))))
    f.result(5)
    assert seen["p"] == [(0, 0), (0, 1), (1, 0)]
    eng.stop()


def test_drain_finishes_queued_work_and_refuses_new():
    eng, model = make(), FakeModel()
    model.gate.clear()
    futures = [eng.submit(Job(model, [w], GREEDY)) for w in "ab"]
    threading.Timer(0.1, model.gate.set).start()
    assert eng.drain(5)
    assert all(f.done() and not f.exception() for f in futures)
    with pytest.raises(EngineStopped):
        eng.submit(Job(model, ["c"], GREEDY))
    eng.stop()


def test_workers_decode_batches_at_once():
    eng, model = make(workers=2), FakeModel()
    model.gate.clear()
    f1 = eng.submit(Job(model, ["a"], GREEDY))
    f2 = eng.submit(Job(model, ["b"], DecodeOptions(beam_size=2)))  # another batch: the second worker takes it
    deadline = time.monotonic() + 5
    while len(model.batches) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(map(tuple, model.batches)) == [("a",), ("b",)]  # both started while the first is still blocked
    model.gate.set()
    assert f1.result(5)[0][0].phonemes == ("A",) and f2.result(5)[0][0].phonemes == ("B",)
    assert eng.drain(5)
    eng.stop()


def test_an_idle_worker_hands_free_memory_back_once_after_work(monkeypatch):
    released = threading.Event()
    calls = []

    def release() -> None:
        calls.append(time.monotonic())
        released.set()

    monkeypatch.setattr("service.engine.release_memory", release)
    monkeypatch.setattr("service.engine.IDLE_RELEASE_S", 0.05)
    eng, model = make(), FakeModel()
    time.sleep(0.2)
    assert calls == []  # no work yet: nothing to give back
    eng.submit(Job(model, ["a"], GREEDY)).result(5)
    assert released.wait(5)
    time.sleep(0.3)
    assert len(calls) == 1  # once per idle spell, not on every wake-up
    eng.stop()


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="thread niceness is a Linux feature")
def test_decode_workers_run_nicer_than_the_rpc_threads():
    """Under overload the RPC threads must get the CPU to read and answer (or refuse) new requests: the decode
    workers' threads run DECODE_NICENESS nicer; the caller's thread (an RPC handler) keeps its priority."""
    eng, model = make(workers=2), FakeModel()
    seen: list[int] = []
    model.on_batch = lambda words: seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
    model.gate.clear()
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    f1 = eng.submit(Job(model, ["a"], GREEDY))
    f2 = eng.submit(Job(model, ["b"], DecodeOptions(beam_size=2)))
    model.gate.set()
    f1.result(5), f2.result(5)
    assert seen == [min(base + DECODE_NICENESS, 19)] * 2
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base
    assert eng.drain(5)
    eng.stop()


def test_the_mmap_threshold_is_fixed_where_glibc_runs_the_server():
    """glibc (Linux, the images) takes the fixed threshold; the behaviour it buys, RSS back after a burst, is
    tests/test_service_limits.py::test_a_burst_of_wide_beams_stays_within_the_memory_budget."""
    import platform

    from service.engine import MMAP_THRESHOLD_BYTES, fix_mmap_threshold

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    assert fix_mmap_threshold(MMAP_THRESHOLD_BYTES) is True
