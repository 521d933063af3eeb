"""Words in, pronunciations out: tokenization + batching + the shared decoding, over any backend."""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from g2p.decoding import Backend, DecodeOptions, Hypothesis, decode
from g2p.tokenization import G2PTokenizers, pad_batch


@dataclass(frozen=True)
class Pronunciation:
    phonemes: tuple[str, ...]
    logprob: float
    score: float
    finished: bool


def pronunciation(tok: G2PTokenizers, h: Hypothesis) -> Pronunciation:
    return Pronunciation(tuple(tok.decode_target(h.tokens)), h.logprob, h.score, h.finished)


def _decode_chunk(
    backend: Backend,
    tok: G2PTokenizers,
    ids: list[list[int]],
    chunk: list[int],
    options: DecodeOptions,
    on_token: Callable[[int, int], None] | None,
    alive: Callable[[int], bool] | None,
) -> list[list[Pronunciation]]:
    src, mask = pad_batch([ids[i] for i in chunk])
    hyps: list[list[Hypothesis]] = decode(
        backend,
        src,
        mask,
        options,
        None if on_token is None else (lambda row, t: on_token(chunk[row], t)),
        None if alive is None else (lambda row: alive(chunk[row])),
    )
    return [[pronunciation(tok, h) for h in nbest] for nbest in hyps]


def _chunks(tok: G2PTokenizers, words: Sequence[str], batch_size: int) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids, and word indices cut into batches of similar length (less padding)."""
    ids = tok.encode_source(words)
    order = sorted(range(len(words)), key=lambda i: len(ids[i]))
    return ids, [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def transcribe(
    backend: Backend,
    tok: G2PTokenizers,
    words: Sequence[str],
    options: DecodeOptions,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
    on_token: Callable[[int, int], None] | None = None,
    alive: Callable[[int], bool] | None = None,
) -> list[list[Pronunciation]]:
    """n-best pronunciations of each word, in input order.

    Words are batched by length (less padding); unknown characters raise ``UnknownSymbolError`` before any
    decoding starts. ``on_token(word_index, token_id)`` streams greedy output; ``alive(word_index)`` False
    drops a word from its batch (see ``g2p.decoding``). Both take indices into ``words``.
    """
    ids, chunks = _chunks(tok, words, batch_size)
    results: list[list[Pronunciation]] = [[] for _ in words]
    for chunk in chunks:
        for i, r in zip(chunk, _decode_chunk(backend, tok, ids, chunk, options, on_token, alive), strict=True):
            results[i] = r
        if progress is not None:
            progress(len(chunk))
    return results


class ParallelTranscriber:
    """Data-parallel decoding: one backend per worker thread, each batch decoded by whichever backend is free.

    With ONNX Runtime, K sessions of one intra-op thread each decode K batches at once on K cores (the runtime
    releases the GIL while it computes); at these matrix sizes this scales better than one session with K
    intra-op threads. Thread-safe: concurrent callers share the backends. ``close`` stops its threads.
    """

    def __init__(self, backends: Sequence[Backend]) -> None:
        self.backends = list(backends)
        self._free: queue.SimpleQueue[Backend] = queue.SimpleQueue()
        for b in self.backends:
            self._free.put(b)
        self._pool = ThreadPoolExecutor(len(self.backends), thread_name_prefix="decode")
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop the pool's threads without waiting (safe from any thread, one of the pool's own included).
        Decoding a single chunk still works after it; spreading several chunks raises ``RuntimeError``."""
        self._closed = True
        self._pool.shutdown(wait=False)

    @contextlib.contextmanager
    def borrow(self) -> Iterator[Backend]:
        """A free backend for the caller's exclusive use until the block ends (waits for one)."""
        backend = self._free.get()
        try:
            yield backend
        finally:
            self._free.put(backend)

    def transcribe(
        self,
        tok: G2PTokenizers,
        words: Sequence[str],
        options: DecodeOptions,
        batch_size: int = 256,
        on_token: Callable[[int, int], None] | None = None,
        alive: Callable[[int], bool] | None = None,
    ) -> list[list[Pronunciation]]:
        ids, chunks = _chunks(tok, words, batch_size)

        def work(chunk: list[int]) -> list[list[Pronunciation]]:
            with self.borrow() as backend:
                return _decode_chunk(backend, tok, ids, chunk, options, on_token, alive)

        results: list[list[Pronunciation]] = [[] for _ in words]
        # one chunk: nothing to spread, decode here on a free backend
        parts = [work(chunks[0])] if len(chunks) == 1 else list(self._pool.map(work, chunks))
        for chunk, part in zip(chunks, parts, strict=True):
            for i, r in zip(chunk, part, strict=True):
                results[i] = r
        return results
