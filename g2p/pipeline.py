"""Words in, pronunciations out: tokenization + batching + the shared decoding, over any backend."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from g2p.decoding import Backend, DecodeOptions, Hypothesis, decode
from g2p.tokenization import G2PTokenizers, pad_batch


@dataclass(frozen=True)
class Pronunciation:
    phonemes: tuple[str, ...]
    logprob: float
    score: float
    finished: bool


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
    ids = tok.encode_source(words)
    order = sorted(range(len(words)), key=lambda i: len(ids[i]))
    results: list[list[Pronunciation]] = [[] for _ in words]
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        src, mask = pad_batch([ids[i] for i in chunk])
        hyps: list[list[Hypothesis]] = decode(
            backend,
            src,
            mask,
            options,
            None if on_token is None else (lambda row, t, c=chunk: on_token(c[row], t)),  # type: ignore[misc]
            None if alive is None else (lambda row, c=chunk: alive(c[row])),  # type: ignore[misc]
        )
        for i, nbest in zip(chunk, hyps, strict=True):
            results[i] = [
                Pronunciation(tuple(tok.decode_target(h.tokens)), h.logprob, h.score, h.finished) for h in nbest
            ]
        if progress is not None:
            progress(len(chunk))
    return results
