"""Dynamic batching across concurrent requests, with backpressure, deadlines and cancellation.

``workers`` threads decode batches at once, each on its own ONNX Runtime sessions (see
``g2p.pipeline.ParallelTranscriber``: K single-threaded sessions scale better than one K-threaded session at these
matrix sizes). A worker takes the oldest waiting job, then gathers jobs with the same model version and decoding
options until ``max_batch_size`` inputs or ``max_queue_delay`` has passed, and decodes them as one padded batch:
words of different lengths are padded together, and a word that finishes (or whose request was cancelled or ran out of
time) leaves the batch at the next decoder step.

Two schedulings (``scheduling``, the setting ``G2P_SCHEDULING``):
- ``batch`` (default): a job arriving while a batch decodes waits for the next batch (at most one batch's
  decoding time plus the queue delay); a greedy batch is one run of the fused variant's ``greedy`` graph.
- ``continuous``: non-streamed jobs go to a worker's running ``g2p.continuous.RowBatch``: their words join it at
  its next decoder step and leave it as they end (``_run_rows``, ``_RowSession``); a word searched with a beam of K
  takes K rows, beside greedy words and words of other beam sizes. A job already decoding leaves ``HEADROOM`` of
  the rows free, and free rows go first to the job with the fewest rows, so a one-word request sent while every
  worker decodes long requests finishes long before them; streamed (greedy) jobs get each token as its step
  emits it. It needs the bundle's ``rows_step`` graph (beam search also its ``prefill`` graph; else the model's
  jobs go by batch), and costs
  throughput: the per-step runs and the newcomers' encoder runs do more work than the ``greedy`` graph's loop
  (``bench/results/scheduling.md``).

A lone request (empty queue, last batch not shared) starts at once: the queue delay is only waited under load,
and ``run`` decodes it in the caller's thread when no batch is decoding (with continuous scheduling, only a job of
at most ``INLINE_ROWS_WORDS`` rows, words x beam: a longer one would hold a backend that a worker needs). A job
whose deadline passed or whose client went away is never decoded: every batch, the inline one too, checks its
jobs before it starts; a plain greedy batch runs whole (the fused variant's ``greedy`` graph: one ONNX Runtime
run) and checks its rows once more just before that run; streaming, beam search and continuous batching go step by
step and drop dead rows at the next step. Each dropped job is counted in ``g2p_dropped_requests_total{reason}``.
The engine is bounded: at most ``max_queue_size`` jobs in it (queued or decoding; each holds its RPC's thread while
it waits); beyond it ``submit`` and ``run`` raise ``QueueFull`` at once, counted in
``g2p_rejected_requests_total{reason="queue"}``. In the server, gRPC's own limit on concurrent RPCs is the same
number and refuses first, more cheaply (before a thread reads the request; ``reason="rpcs"``, see
``service.metrics.MetricsInterceptor``); this bound then guards the engine's other callers.

Memory is bounded by design: ``memory_share`` is what one batch may take (the server's memory budget less what the
loaded process holds, divided among the batches that can decode at once: every worker and the inline decode). A
batch's memory is estimated (``batch_bytes``: its rows' attention caches, x ``MEMORY_COPIES``); jobs join a batch
only while the estimate fits, and a job too large for a share alone (many words, a wide beam) is decoded in
chunks, one after the other, each within the share. After a large batch, freed memory goes back to the system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, cast

from g2p.continuous import Ended, RowBatch
from g2p.decoding import DecodeOptions
from g2p.pipeline import Pronunciation, pronunciation
from service import allocator
from service.metrics import Metrics
from service.runtime import ModelVersion

log = logging.getLogger("g2p.engine")


MEMORY_COPIES = 3
"""A batch's peak memory over the warm process, in units of its rows' attention caches (measured: the 128 longest
test words at beam 16, 2.8x): a step's input and output caches live together, and beam search's reorder copies
them out and back."""
IDLE_RELEASE_S = 1.0
"""A worker that found no work for this long after some hands the C heap's free memory back (``malloc_trim``)."""
RELEASE_AFTER_BYTES = 64 * 1024 * 1024
"""A batch estimated at this or more hands its freed memory back to the system (``malloc_trim``) when done."""


SCHEDULING = ("continuous", "batch")
INLINE_ROWS_WORDS = 8
"""Continuous batching: a lone job of at most this many rows (words x beam) on an idle engine is still decoded at
once in the caller's thread (its whole-batch run takes milliseconds); a longer one goes to a worker's running batch."""
HEADROOM = 0.125
"""Continuous batching: the share of a batch's words that a job already decoding leaves free, so that a request
arriving next joins at the next step instead of waiting for a word to end."""


DECODE_NICENESS = 10
"""The decode workers' threads run this much nicer than the rest of the process (Linux): under overload, gRPC's
I/O threads and the RPC handlers still get the CPU to read each arriving request and answer it (queued, or refused
at once when the queue is full), instead of requests waiting unread in the transport while decoding holds every
core. Below saturation nothing changes (the threads it yields to have little work each); under a flood fewer
requests are accepted, each answered sooner (docs/notes/2026-11-30-decode-niceness.md). With ``intra_op_threads``
> 1, onnxruntime's own pool threads keep the process's priority."""


def _lower_priority() -> None:
    """Make the calling thread ``DECODE_NICENESS`` nicer (a no-op where threads have no niceness of their own)."""
    if hasattr(os, "setpriority") and hasattr(threading, "get_native_id"):
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + DECODE_NICENESS)
        except OSError as exc:  # not permitted or not supported here: decoding runs at the process's priority
            log.debug("decode threads keep the process's priority: %s", exc)


class QueueFull(RuntimeError):
    pass


class MemoryBudgetError(RuntimeError):
    """The memory budget cannot hold what the server must be able to decode (one longest word at the widest beam)."""


def batch_bytes(model: ModelVersion, words: int, longest: int, options: DecodeOptions) -> int:
    """Estimated memory of decoding ``words`` words (the longest of ``longest`` characters) as one batch: each row
    (word x beam) holds self-attention keys/values over its output steps and cross-attention keys/values over its
    source, ``model.cache_bytes_per_position`` each, times ``MEMORY_COPIES``."""
    src = longest + 1  # and </s>
    steps = min(options.max_len, math.ceil(options.max_len_a * src + options.max_len_b))
    return words * options.beam_size * (steps + src) * model.cache_bytes_per_position * MEMORY_COPIES


def process_rss() -> int:
    """This process's resident memory in bytes (0 where /proc is not there)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _libc(function: str) -> Callable[..., int] | None:
    """A function of the C library (glibc's ``malloc_trim``, ``mallopt``), or None where it has no such function."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), function) if name else None
    except (OSError, AttributeError):
        return None


def _libc_trim() -> Callable[[], None]:
    trim = _libc("malloc_trim")

    def release() -> None:
        if trim is not None:
            trim(0)

    return release


release_memory = _libc_trim()
"""Give the C heap's free memory back to the system (glibc ``malloc_trim``; a no-op elsewhere)."""

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
"""Allocations of at least this size come from ``mmap`` and go back to the system when freed (``fix_mmap_threshold``).
"""


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold for this process (``mallopt(M_MMAP_THRESHOLD)``); False where there is no glibc.

    glibc's default threshold moves up to the largest block freed so far (up to 32 MiB): after a burst of large
    batches, blocks of that size are carved from the heap instead, and how much of the heap is still held after
    the burst varies from run to run. Measured with the memory-budget test's burst (two requests of the 128 longest
    test words at beam 16, RSS right after over RSS warm; server processes started in turn): default 0.98-1.20x
    (one CI failure at 1.204x); fixed at 256 KiB, 4 MiB or 16 MiB: 0.92-0.98x every run. 256 KiB cost beam-5
    batches ~12 % (their per-step cache copies then each map and unmap); 4 MiB measured no slower than the default
    in process (4 alternating rounds: greedy batch 32, beam 5, batch 1)."""
    mallopt = _libc("mallopt")
    return bool(mallopt is not None and mallopt(M_MMAP_THRESHOLD, threshold))


class EngineStopped(RuntimeError):
    pass


class DeadlineExceeded(TimeoutError):
    pass


class Cancelled(RuntimeError):
    pass


@dataclass(eq=False)
class Job:
    model: ModelVersion
    words: list[str]
    options: DecodeOptions
    deadline: float | None = None  # time.monotonic() value
    on_token: Callable[[int, int], None] | None = None  # (index into words, token id); greedy only
    cancelled: threading.Event = field(default_factory=threading.Event)
    future: Future[Any] = field(default_factory=Future)  # the pronunciations of ``words``, or what ``work`` returns
    enqueued: float = field(default_factory=time.monotonic)
    work: Callable[[], Any] | None = None
    """A tensor job (the KServe encoder model): no words; ``work()`` runs alone, admitted, queued and dropped like
    any job, and its return value settles the future."""

    @property
    def key(self) -> tuple[int, DecodeOptions | None]:
        return (id(self.model), self.options) if self.work is None else (id(self), None)  # a tensor job runs alone

    def expired(self, now: float | None = None) -> bool:
        return self.deadline is not None and (now or time.monotonic()) >= self.deadline

    def alive(self) -> bool:
        return not self.cancelled.is_set() and not self.expired()


class Engine:
    def __init__(
        self,
        max_batch_size: int,
        max_queue_delay_s: float,
        max_queue_size: int,
        metrics: Metrics,
        workers: int = 1,
        memory_share: int = 0,
        scheduling: str = "batch",
    ) -> None:
        """``memory_share``: estimated bytes one batch may take (``batch_bytes``); 0 = unbounded.
        ``scheduling``: ``continuous`` (words join and leave a running batch step by step, where the model
        has the graph for it) or ``batch`` (every job waits for a batch of its own)."""
        if scheduling not in SCHEDULING:
            raise ValueError(f"scheduling must be one of {SCHEDULING}, got {scheduling!r}")
        self.continuous = scheduling == "continuous"
        self.max_batch_size = max_batch_size
        self.memory_share = memory_share
        self.max_delay = max_queue_delay_s
        self.max_queue_size = max_queue_size
        self.metrics = metrics
        self._queue: deque[Job] = deque()
        self._cv = threading.Condition()
        self._accepting = True
        self._running = True
        self._busy = 0  # batches being decoded
        self._worked = False  # a batch ended since the last release of free memory
        self._admitted = 0  # jobs in the engine (queued or decoding): their futures are not settled yet
        self._last_jobs = 0
        self._threads = [
            threading.Thread(target=self._loop, name=f"engine-{k}", daemon=True) for k in range(max(workers, 1))
        ]
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ API
    @property
    def admitted(self) -> int:
        """Jobs in the engine (queued or decoding), at most ``max_queue_size``."""
        with self._cv:
            return self._admitted

    def submit(self, job: Job) -> Future[Any]:
        with self._cv:
            self._admit(job)
            self._queue.append(job)
            self.metrics.queue_depth.set(len(self._queue))
            self._cv.notify_all()
        return job.future

    def run(self, job: Job) -> Future[Any]:
        """Like ``submit``, but a job that may run inline (``_inline``) is decoded at once in the calling thread:
        a lone request skips the hand-over to a worker thread and back. Otherwise it is queued and batched."""
        with self._cv:
            inline = self._inline(job)
            if inline:
                self._admit(job)
                self._busy += 1
                self._last_jobs = 1
        if not inline:
            return self.submit(job)
        with allocator.thread_cache():  # the decode's many small allocations, in an RPC thread
            self._settle([job], self._run)
        return job.future

    def _inline(self, job: Job) -> bool:
        """Whether ``job`` may be decoded in the caller's thread. The engine must be idle (accepting, nothing queued
        or decoding) and not under load (the last batch was not shared: a shared one means requests are arriving
        together, and the next should wait to join them). With continuous scheduling the job must also be short
        (``INLINE_ROWS_WORDS``): a long one would hold a backend that a worker's running batch needs. The caller
        holds the lock."""
        idle = self._accepting and not self._queue and self._busy == 0
        short = len(job.words) * job.options.beam_size <= INLINE_ROWS_WORDS or not self._joins_rows(job)
        return idle and self._last_jobs <= 1 and short

    def _admit(self, job: Job) -> None:
        """Count the job in the engine until its future is settled, or refuse it: ``EngineStopped`` when draining,
        ``QueueFull`` (counted) when ``max_queue_size`` jobs are in. The caller holds the lock."""
        if not self._accepting:
            raise EngineStopped("the server is shutting down")
        if self._admitted >= self.max_queue_size:
            self.metrics.rejected.labels("queue").inc()
            raise QueueFull(
                f"server busy: {self._admitted} requests already queued or decoding "
                f"(max_queue_size={self.max_queue_size})"
            )
        self._admitted += 1
        job.future.add_done_callback(self._settled)

    def _settled(self, _: Future[Any]) -> None:
        with self._cv:  # re-entrant: a future settled under the lock (stop) calls back at once
            self._admitted -= 1

    def drain(self, timeout: float) -> bool:
        """Stop accepting; wait until every queued and running job is done (True) or ``timeout`` passes."""
        end = time.monotonic() + timeout
        with self._cv:
            self._accepting = False
            while self._queue or self._busy:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def stop(self) -> None:
        with self._cv:
            self._accepting = False
            self._running = False
            for job in self._queue:
                job.future.set_exception(EngineStopped("the server stopped before this request ran"))
            self._queue.clear()
            self._cv.notify_all()
        for t in self._threads:
            t.join(timeout=10)

    # ------------------------------------------------------------------ worker
    def _take_batch(self) -> list[Job] | None:
        with self._cv:
            while self._running and not self._queue:
                if self._cv.wait(IDLE_RELEASE_S) or not self._worked or self._busy:
                    continue
                # idle after work (a burst, a flood of refused calls): hand the C heap's free memory back, once
                self._worked = False
                self._cv.release()
                try:
                    release_memory()
                finally:
                    self._cv.acquire()
            if not self._running:
                return None
            first = self._queue.popleft()
            self._busy += 1  # before any wait below releases the lock: drain() must see this job
            batch, n = [first], len(first.words)
            longest = max(map(len, first.words), default=0)
            # wait for company only under load (jobs queued, or the last batch was shared): a lone request
            # starts at once instead of paying max_queue_delay for nothing
            under_load = self._queue or self._last_jobs > 1
            delay = self.max_delay if under_load and first.work is None and not self._joins_rows(first) else 0.0
            until = time.monotonic() + delay
            while n < self.max_batch_size and first.work is None:
                fits = [j for j in self._queue if j.key == first.key and n + len(j.words) <= self.max_batch_size]
                for j in fits:
                    if n + len(j.words) > self.max_batch_size:
                        break
                    joined = max([longest, *map(len, j.words)])
                    if self.memory_share and batch_bytes(first.model, n + len(j.words), joined, first.options) > (
                        self.memory_share
                    ):
                        continue  # it would take the batch over its memory share: it waits for another batch
                    self._queue.remove(j)
                    batch.append(j)
                    n += len(j.words)
                    longest = joined
                left = until - time.monotonic()
                if n >= self.max_batch_size or left <= 0 or not self._running:
                    break
                self._cv.wait(left)
            self.metrics.queue_depth.set(len(self._queue))
            self._last_jobs = len(batch)
            return batch

    def _loop(self) -> None:
        _lower_priority()
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            self._settle(batch, self._run_rows if self._joins_rows(batch[0]) else self._run)

    def _joins_rows(self, job: Job) -> bool:
        """Whether ``job`` is decoded by continuous batching: words (streamed ones greedy), on a model with the
        graphs for it (``g2p.continuous``; beam search needs ``prefill`` too), when the engine schedules that way."""
        if not self.continuous or job.work is not None:
            return False
        if job.options.beam_size == 1:
            return job.model.rows_capable
        return job.on_token is None and job.model.rows_beam_capable

    def _settle(self, batch: list[Job], work: Callable[[list[Job]], None]) -> None:
        """Run ``work`` on a batch counted in ``_busy``; a failure fails the batch's unsettled jobs, never the
        thread; the batch leaves ``_busy`` either way."""
        try:
            work(batch)
        except Exception as exc:
            log.exception("batch failed")
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
        finally:
            with self._cv:
                self._busy -= 1
                self._worked = True  # an idle worker hands freed memory back (see _take_batch)
                if not self._accepting:  # only drain() waits for _busy; idle workers wait for jobs, not for this
                    self._cv.notify_all()

    def _start(self, jobs: list[Job]) -> list[Job]:
        """Drop the dead jobs among ``jobs`` (counted); the others are marked running, their queue time observed."""
        now = time.monotonic()
        live: list[Job] = []
        for job in jobs:
            if not self._dropped(job, "while queued") and job.future.set_running_or_notify_cancel():
                self.metrics.queue_time.observe(now - job.enqueued)
                live.append(job)
        return live

    def _run(self, batch: list[Job]) -> None:
        """Drop the batch's dead jobs, then decode the others."""
        live = self._start(batch)
        if live and live[0].work is not None:  # a tensor job: alone in its batch (its own key)
            for job in live:
                job.future.set_result(job.work())  # type: ignore[misc]
        elif live:
            self._decode(live)

    def _run_rows(self, batch: list[Job]) -> None:
        """Continuous batching on one of the model's backends: the batch's words and those of jobs for the same
        model queued meanwhile join a running ``RowBatch`` at its next step, while it has free rows, and leave it
        as they end; a job is settled when its last word ends. Jobs are pulled only while rows are free (the rest
        stay queued for other workers), and no longer once the oldest queued job cannot join (another model, a
        tensor job, a streamed beam): the session then ends with its last row and that job is next.
        Jobs pulled are appended to ``batch``: a failure fails them too (see ``_settle``)."""
        live = self._start(batch)
        if not live:
            return
        model = live[0].model
        with model.parallel.borrow() as backend:
            session = _RowSession(self, model, RowBatch(backend))  # type: ignore[arg-type]
            session.join(live)
            while session.busy:
                pulled = self._pull_rows(model, session.free(), bool(session.waiting))
                batch.extend(pulled)
                session.join(self._start(pulled))
                session.step()
        with self._cv:
            self._last_jobs = session.most_jobs

    def _pull_rows(self, model: ModelVersion, free: tuple[int, int], backlog: bool) -> list[Job]:
        """Queued jobs that can join a row session of ``model`` now: oldest first, those whose words and rows
        (words x beam) fit the ``free`` ones (a session without a ``backlog`` of waiting words also takes one job
        larger than that);
        larger ones stay queued for another worker or a later step. None once the oldest queued job cannot join
        (another model, a tensor job, a streamed beam): the session then ends with its rows and that job goes next."""
        free_words, free_rows = free
        if free_words <= 0 or free_rows <= 0:
            return []
        with self._cv:
            if not self._queue or self._queue[0].model is not model or not self._joins_rows(self._queue[0]):
                return []
            pulled: list[Job] = []
            for job in self._queue:
                if free_words <= 0 or free_rows <= 0:
                    break
                if job.model is not model or not self._joins_rows(job):
                    continue
                rows = len(job.words) * job.options.beam_size
                if (len(job.words) <= free_words and rows <= free_rows) or not (backlog or pulled):
                    pulled.append(job)
                    free_words, free_rows = free_words - len(job.words), free_rows - rows
            for job in pulled:
                self._queue.remove(job)
            if pulled:
                self.metrics.queue_depth.set(len(self._queue))
            return pulled

    def _chunks(self, model: ModelVersion, words: list[str], options: DecodeOptions) -> list[list[int]]:
        """The batch's word indices: all of them, or, when the batch's estimate is over the memory share, chunks
        (words by length) that each fit it (a word alone always forms a chunk)."""
        everything = list(range(len(words)))
        if not self.memory_share or batch_bytes(model, len(words), max(map(len, words)), options) <= (
            self.memory_share
        ):
            return [everything]
        chunks: list[list[int]] = [[]]
        for i in sorted(everything, key=lambda i: len(words[i])):  # ascending: a chunk's longest word is its last
            current = chunks[-1]
            if current and batch_bytes(model, len(current) + 1, len(words[i]), options) > self.memory_share:
                chunks.append(current := [])
            current.append(i)
        return chunks

    def _dropped(self, job: Job, when: str) -> bool:
        """Settle a job whose deadline passed or whose client went away, counted by reason; False if it is alive."""
        exc: Exception
        if job.expired():
            reason, exc = "deadline", DeadlineExceeded(f"deadline exceeded {when}")
        elif job.cancelled.is_set():
            reason, exc = "cancelled", Cancelled("cancelled by the client")
        else:
            return False
        self.metrics.dropped.labels(reason).inc()
        job.future.set_exception(exc)
        return True

    def _decode(self, live: list[Job]) -> None:
        """Decode admitted (running) jobs as one batch and settle their futures."""
        words: list[str] = []
        owner: list[tuple[Job, int]] = []
        for job in live:
            words.extend(job.words)
            owner.extend((job, i) for i in range(len(job.words)))
        self.metrics.batch_size.observe(len(words))
        streaming = any(j.on_token is not None for j in live)

        def on_token(src: int, token: int) -> None:
            job, i = owner[src]
            if job.on_token is not None:
                job.on_token(i, token)

        def alive(src: int) -> bool:
            return owner[src][0].alive()

        model, options = live[0].model, live[0].options
        # Streaming and beam search go step by step, dropping cancelled or expired rows at the next step. A plain
        # greedy batch is short (milliseconds) and runs whole (one run of the fused variant's greedy graph): its
        # rows are checked just before that run, and its jobs once more after it. A batch over its memory share
        # runs in chunks, one after the other.
        results: list[list[Pronunciation]] = [[] for _ in words]
        began = time.perf_counter()
        for chunk in self._chunks(model, words, options):
            part = model.transcribe(
                [words[i] for i in chunk],
                options,
                (lambda k, t, c=chunk: on_token(c[k], t)) if streaming else None,  # type: ignore[misc]
                lambda k, c=chunk: alive(c[k]),  # type: ignore[misc]
                batch_size=len(chunk),
            )
            for i, r in zip(chunk, part, strict=True):
                results[i] = r
        self.metrics.batch_time.observe(time.perf_counter() - began)
        if self.memory_share and batch_bytes(model, len(words), max(map(len, words)), options) >= (RELEASE_AFTER_BYTES):
            release_memory()
        tokens = sum(len(r[0].phonemes) + 1 for r in results if r)
        self.metrics.tokens.inc(tokens)
        start = 0
        for job in live:
            part = results[start : start + len(job.words)]
            start += len(job.words)
            if not self._dropped(job, "while decoding"):
                job.future.set_result(part)


class _RowSession:
    """The jobs of one continuous-batching run (``Engine._run_rows``): their words waiting for a row, the rows
    decoding, the results gathered per job."""

    def __init__(self, engine: Engine, model: ModelVersion, rows: RowBatch) -> None:
        self.engine, self.model, self.rows = engine, model, rows
        rows.on_emit = self._emitted
        self.waiting: dict[Job, deque[int]] = {}  # word indices not yet in a row, per job, oldest job first
        self.results: dict[Job, list[list[Pronunciation]]] = {}
        self.left: dict[Job, int] = {}  # words not ended yet
        self.inflight: dict[Job, int] = {}  # words in rows now
        self.most_jobs = 0
        self.size = engine.max_batch_size  # words at most, as a batch of the batch path
        self.row_cap = self._row_cap()

    def _row_cap(self) -> int:
        """Rows at most (a beam word takes K): as many as fit the engine's memory share (``batch_bytes`` of the
        model's longest word at its longest output; at least 1). Without a share only ``size`` bounds the batch
        (its words, each at most the largest beam a request may ask for)."""
        worst = DecodeOptions(max_len=self.model.max_output_tokens)
        row = batch_bytes(self.model, 1, self.model.max_input_chars, worst)
        share = self.engine.memory_share
        return max(1, share // row) if share else sys.maxsize

    @property
    def busy(self) -> bool:
        return bool(self.left)

    def _emitted(self, key: Hashable, token: int) -> None:
        """A token a streamed job's word emitted (``RowBatch.on_emit``)."""
        job, i = cast(tuple[Job, int], key)
        if job.on_token is not None and job in self.left:
            job.on_token(i, token)

    def free(self) -> tuple[int, int]:
        """Words and rows the running batch could take now."""
        return self.size - self.rows.words, self.row_cap - self.rows.live

    def join(self, jobs: list[Job]) -> None:
        for job in jobs:
            if not job.words:
                job.future.set_result([])
                continue
            self.waiting[job] = deque(range(len(job.words)))
            self.results[job] = [[] for _ in job.words]
            self.left[job] = len(job.words)
            self.inflight[job] = 0
        self.most_jobs = max(self.most_jobs, len(self.left))

    def step(self) -> None:
        """Drop dead jobs, admit waiting words round-robin over the jobs while rows are free, run one step."""
        for job in [j for j in self.left if not j.alive()]:
            self._drop(job)
        began = time.perf_counter()
        ended = self._admit()
        if self.rows.live:
            self.engine.metrics.batch_size.observe(self.rows.words)
            ended += self.rows.step()
            self.engine.metrics.batch_time.observe(time.perf_counter() - began)
        for e in ended:
            job, i = cast(tuple[Job, int], e.key)
            if job in self.left:
                self._ended(job, i, [pronunciation(self.model.tokenizers, h) for h in e.hypotheses])

    def _admit(self) -> list[Ended]:
        """Waiting words into the free rows (a beam word takes K), one at a time to the job with the fewest words
        in rows (the oldest first among equals): a short job gets rows at the next step however many words a long
        one has waiting, and a long one keeps its turn once its rows end. A job that already has rows fills the
        batch only up to ``HEADROOM`` short of its size: rows are kept free for a job that arrives next. A beam
        wider than the batch's size joins an empty batch alone (as the batch path decodes such a word alone).
        Returns the words that ended at their first step."""
        size = self.size
        busy_cap = size - max(1, int(size * HEADROOM))
        keys: list[tuple[Job, int]] = []
        words, rows = self.rows.words, self.rows.live
        while self.waiting and words < size:
            job = min(self.waiting, key=self.inflight.__getitem__)  # dicts keep insertion order: oldest first
            need = job.options.beam_size
            if (self.inflight[job] and words >= busy_cap) or (rows and rows + need > self.row_cap):
                break
            queue = self.waiting[job]
            keys.append((job, queue.popleft()))
            words, rows = words + 1, rows + need
            self.inflight[job] += 1
            if not queue:
                del self.waiting[job]
        if not keys:
            return []
        by_options: dict[DecodeOptions, list[tuple[Job, int]]] = {}
        for key in keys:
            by_options.setdefault(key[0].options, []).append(key)
        ended = []
        tok = self.model.tokenizers
        for options, group in by_options.items():
            ids = tok.encode_source([job.words[i] for job, i in group])
            ended += self.rows.add(group, ids, options)
        return ended

    def _ended(self, job: Job, i: int, result: list[Pronunciation]) -> None:
        self.results[job][i] = result
        self.left[job] -= 1
        self.inflight[job] -= 1
        if self.left[job] == 0:
            del self.left[job], self.inflight[job]
            results = self.results.pop(job)
            self.engine.metrics.tokens.inc(sum(len(r[0].phonemes) + 1 for r in results if r))
            if not self.engine._dropped(job, "while decoding"):
                job.future.set_result(results)

    def _drop(self, job: Job) -> None:
        self.rows.drop([(job, i) for i in range(len(job.words))])
        self.waiting.pop(job, None)
        self.left.pop(job, None)
        self.inflight.pop(job, None)
        self.results.pop(job, None)
        self.engine._dropped(job, "while decoding")
