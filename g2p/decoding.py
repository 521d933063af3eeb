"""Greedy and beam-search decoding, written once against a small backend interface.

A backend (PyTorch in ``training.backend``, ONNX Runtime in the service) implements three calls:

- ``encode(src_ids, src_mask) -> state``: run the encoder for a batch of sources, shapes (B, S).
- ``step(tokens, state) -> (logits, state)``: feed one token per row (N,), get next-token logits (N, V)
  and the state grown by one position (the KV cache).
- ``reorder(state, rows) -> state``: keep/duplicate/permute the rows of the state (beam bookkeeping and
  dropping finished sources).

Optionally ``greedy(src_ids, src_mask, limits) -> (tokens, scores) | None``: a whole batch decoded greedily in one
call (the ONNX Runtime backend's fused variant runs its ``greedy`` graph); ``greedy_search`` uses it when no
per-step callback is asked for, and cuts each row exactly as the step loop would.

Everything here is numpy; no torch. Evaluation of a checkpoint and the service therefore decode the same way
by construction, and the parity of two backends can be checked step by step and word by word.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from g2p.tokenization import BOS_ID, EOS_ID


class Backend(Protocol):
    def encode(self, src_ids: np.ndarray, src_mask: np.ndarray) -> Any: ...

    def step(self, tokens: np.ndarray, state: Any) -> tuple[np.ndarray, Any]: ...

    def reorder(self, state: Any, rows: np.ndarray) -> Any: ...


@dataclass(frozen=True)
class Hypothesis:
    """One output sequence: token ids (without ``</s>``), its total log-probability and ranking score."""

    tokens: tuple[int, ...]
    logprob: float
    score: float
    finished: bool = True


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode. ``beam_size == 1`` is greedy search."""

    beam_size: int = 1
    nbest: int = 1
    length_penalty: float = 1.0
    """Beam hypotheses are ranked by logprob / length**length_penalty (0 = raw log-probability)."""
    max_len_a: float = 1.5
    max_len_b: int = 8
    """A source of S tokens may produce at most a*S + b output tokens (and never more than ``max_len``)."""
    max_len: int = 48

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        if not 1 <= self.nbest <= self.beam_size:
            raise ValueError(f"nbest must be in [1, beam_size={self.beam_size}], got {self.nbest}")
        if self.length_penalty < 0:
            raise ValueError(f"length_penalty must be >= 0, got {self.length_penalty}")
        if self.max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {self.max_len}")

    def limits(self, src_mask: np.ndarray) -> np.ndarray:
        """Per-source maximum number of output tokens (including ``</s>``)."""
        src_len = src_mask.sum(axis=1)
        return np.minimum(np.ceil(self.max_len_a * src_len + self.max_len_b), self.max_len).astype(np.int64)


def greedy_pick(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The most likely token of each row of ``logits`` (N, V) and its log-probability: the arithmetic of
    ``log_softmax``, for the chosen tokens only. Greedy search and continuous batching both pick with this."""
    x = logits.astype(np.float32, copy=False)
    best = x.argmax(axis=-1)
    z = x - x.max(axis=-1, keepdims=True)
    return best, z[np.arange(len(best)), best] - np.log(np.exp(z).sum(axis=-1))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float32, copy=False)
    m = x.max(axis=-1, keepdims=True)
    z = x - m
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


OnToken = Callable[[int, int], None]
"""``on_token(source, token)``: called as greedy search emits each output token (not ``</s>``) of a source."""
Alive = Callable[[int], bool]
"""``alive(source)``: False drops the source from the batch at the next step (a cancelled or expired request);
its hypothesis is returned as it stands, marked unfinished."""


def decode(
    backend: Backend,
    src_ids: np.ndarray,
    src_mask: np.ndarray,
    options: DecodeOptions,
    on_token: OnToken | None = None,
    alive: Alive | None = None,
) -> list[list[Hypothesis]]:
    """n-best hypotheses (best first) for each source row; greedy when ``options.beam_size == 1``.
    ``on_token`` (streaming) applies to greedy search only."""
    if options.beam_size == 1:
        return [[h] for h in greedy_search(backend, src_ids, src_mask, options, on_token, alive)]
    return beam_search(backend, src_ids, src_mask, options, alive)


def greedy_search(
    backend: Backend,
    src_ids: np.ndarray,
    src_mask: np.ndarray,
    options: DecodeOptions,
    on_token: OnToken | None = None,
    alive: Alive | None = None,
) -> list[Hypothesis]:
    """Pick the most likely token at every step; rows that emitted ``</s>`` leave the batch.

    Vectorised over the batch: per step, one argmax and one log-sum-exp for all rows (no per-row Python unless
    ``on_token`` or ``alive`` is given). Without ``on_token``, a backend's whole-batch ``greedy`` is used when it has
    one: ``alive`` is then asked once per row, just before that run, and a dead row is not decoded (an empty,
    unfinished hypothesis).
    """
    n = src_ids.shape[0]
    limits = options.limits(src_mask)
    whole = getattr(backend, "greedy", None)
    if whole is not None and on_token is None and n:
        hyps = _whole_batch(whole, src_ids, src_mask, limits, alive)
        if hyps is not None:
            return hyps
    state = backend.encode(src_ids, src_mask)
    active = np.arange(n)  # source index of each state row
    tokens = np.full(n, BOS_ID, dtype=np.int64)
    out = np.zeros((n, int(limits.max()) if n else 0), dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    logprob = np.zeros(n, dtype=np.float64)
    finished = np.zeros(n, dtype=bool)
    t = 0
    while active.size:
        logits, state = backend.step(tokens, state)
        best, chosen = greedy_pick(logits)
        t += 1
        ok = np.ones(len(active), dtype=bool) if alive is None else np.array([alive(int(s)) for s in active], bool)
        logprob[active[ok]] += chosen[ok]
        eos = best == EOS_ID
        finished[active[ok & eos]] = True
        emit = ok & ~eos
        out[active[emit], t - 1] = best[emit]
        lengths[active[emit]] = t
        if on_token is not None:
            for src, tok in zip(active[emit].tolist(), best[emit].tolist(), strict=True):
                on_token(src, tok)
        rows = np.flatnonzero(emit & (t < limits[active]))
        if len(rows) < len(active):
            active, best = active[rows], best[rows]
            if active.size:
                state = backend.reorder(state, rows)
        tokens = best.astype(np.int64)
    return [
        Hypothesis(tuple(out[i, : lengths[i]].tolist()), float(logprob[i]), float(logprob[i]), bool(finished[i]))
        for i in range(n)
    ]


def _whole_batch(
    whole: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None],
    src_ids: np.ndarray,
    src_mask: np.ndarray,
    limits: np.ndarray,
    alive: Alive | None,
) -> list[Hypothesis] | None:
    """A backend's whole-batch greedy run on the rows alive now (a dead row is not decoded: an empty, unfinished
    hypothesis); None when the backend has no such run."""
    rows = [i for i in range(src_ids.shape[0]) if alive is None or alive(i)]
    hyps = [Hypothesis((), 0.0, 0.0, False) for _ in range(src_ids.shape[0])]
    if not rows:
        return hyps
    decoded = whole(src_ids[rows], src_mask[rows], limits[rows])
    if decoded is None:
        return None
    for row, hyp in zip(rows, _cut(decoded[0], decoded[1], limits[rows]), strict=True):
        hyps[row] = hyp
    return hyps


def _cut(tokens: np.ndarray, scores: np.ndarray, limits: np.ndarray) -> list[Hypothesis]:
    """Hypotheses from a batch decoded to its longest row (``tokens``/``scores`` (B, T), every row run to T steps):
    a row ends at its first ``</s>`` (finished; its log-probability counts) or after ``limits`` tokens
    (unfinished) — what the step-by-step loop above returns for the same choices."""
    n, t = tokens.shape
    steps = np.arange(t)
    in_limit = steps[None, :] < limits[:, None]
    eos = (tokens == EOS_ID) & in_limit
    finished = eos.any(axis=1)
    length = np.where(finished, eos.argmax(axis=1), np.minimum(limits, t))  # output tokens, without </s>
    counted = steps[None, :] < (length + finished)[:, None]
    logprob = np.where(counted, scores, 0.0).astype(np.float64).sum(axis=1)
    return [
        Hypothesis(tuple(tokens[i, : length[i]].tolist()), float(logprob[i]), float(logprob[i]), bool(finished[i]))
        for i in range(n)
    ]


@dataclass
class _Beams:
    """Book-keeping of one source during beam search.

    ``live`` always holds exactly K beams, best first as ranked at the last step; a beam with logprob ``-inf`` is
    padding (there were fewer than K finite candidates) and never yields a hypothesis. ``finished`` collects
    hypotheses in the order they end.
    """

    live: list[tuple[tuple[int, ...], float]] = field(default_factory=list)  # (tokens, logprob)
    finished: list[Hypothesis] = field(default_factory=list)


class _Candidate(NamedTuple):
    """One way to extend a source's beams by one token: live beam ``parent`` (0..K-1) followed by ``token``, with
    the extended sequence's total log-probability ``score``."""

    parent: int
    token: int
    score: float


def beam_search(
    backend: Backend,
    src_ids: np.ndarray,
    src_mask: np.ndarray,
    options: DecodeOptions,
    alive: Alive | None = None,
) -> list[list[Hypothesis]]:
    """Batched beam search with length normalisation.

    Each step expands every live beam of every active source and takes the 2K best candidates of each
    source: those ending in ``</s>`` among the K best join the finished list, the best K others stay live.
    A source is done when it holds K finished hypotheses (or hits its length limit; its live beams then
    count as unfinished).
    Done sources leave the batch, so the backend computes only what is still needed.

    Layout: the state and the token fed at each step have K rows per active source, in the order of ``active``:
    the i-th active source's beam b is row ``i * K + b``.
    """
    beam_size = options.beam_size
    n_sources = src_ids.shape[0]
    limits = options.limits(src_mask)
    state = backend.encode(src_ids, src_mask)
    state = backend.reorder(state, np.repeat(np.arange(n_sources), beam_size))
    beams = [_start(beam_size) for _ in range(n_sources)]
    active = list(range(n_sources))
    tokens = np.full(n_sources * beam_size, BOS_ID, dtype=np.int64)
    t = 0  # output tokens produced so far, </s> included
    while active:
        logits, state = backend.step(tokens, state)
        t += 1
        candidates = _expand(logits, [beams[source] for source in active])
        continuing: list[tuple[int, list[int]]] = []  # (position in ``active``, parents of the new live beams)
        for position, source in enumerate(active):
            if alive is not None and not alive(source):
                _give_up(beams[source], _real(beams[source].live), t, options.length_penalty)
                continue
            at_limit = bool(t >= limits[source])
            parents = _advance(beams[source], candidates[position], t, at_limit, options.length_penalty)
            if parents is not None:
                continuing.append((position, parents))
        active = [active[position] for position, _ in continuing]
        if active:
            state = backend.reorder(state, _next_state_rows(continuing, beam_size))
            tokens = _next_tokens([beams[source] for source in active])
    return [_ranked(source_beams.finished, options.nbest) for source_beams in beams]


@dataclass
class WordBeams:
    """One source's beam search stepped from outside, a step at a time (``g2p.continuous``: a word's K rows in a
    batch shared with other words): the same book-keeping as ``beam_search`` (``_expand`` / ``_advance``), so the
    same candidates, ties, ends and n-best."""

    beams: _Beams
    limit: int
    length_penalty: float
    nbest: int

    @classmethod
    def start(cls, options: DecodeOptions, limit: int) -> WordBeams:
        return cls(_start(options.beam_size), limit, options.length_penalty, options.nbest)

    @property
    def size(self) -> int:
        """K: the rows this source takes."""
        return len(self.beams.live)

    def advance(self, logits: np.ndarray, t: int) -> np.ndarray | None:
        """One step from the next-token ``logits`` (K, V) of this source's K rows, at output length ``t``: each new
        beam's parent row (0..K-1), or None when the source is done (``best`` then holds its n-best)."""
        candidates = _expand(logits, [self.beams])[0]
        parents = _advance(self.beams, candidates, t, t >= self.limit, self.length_penalty)
        return None if parents is None else np.asarray(parents, np.int64)

    def next_tokens(self) -> np.ndarray:
        """The token each of the K rows feeds at the next step."""
        return _next_tokens([self.beams])

    def give_up(self, t: int) -> None:
        """Stop before the end (a cancelled or expired request): the live beams join ``best``, unfinished."""
        _give_up(self.beams, _real(self.beams.live), t, self.length_penalty)

    def best(self) -> tuple[Hypothesis, ...]:
        return tuple(_ranked(self.beams.finished, self.nbest))


def _start(beam_size: int) -> _Beams:
    """A source before the first step: one empty beam with logprob 0 and K-1 padding beams."""
    empty: tuple[int, ...] = ()
    return _Beams(live=[(empty, 0.0)] + [(empty, -np.inf)] * (beam_size - 1))


def _expand(logits: np.ndarray, active_beams: list[_Beams]) -> list[list[_Candidate]]:
    """The best candidates of each active source, best first: the top 2K of all K*V (beam, token) extensions by
    total log-probability (ties: the lower beam, then the lower token, first), cut before the first ``-inf``.

    ``logits`` (A*K, V) holds the next-token logits of the A active sources' beams, K rows per source.
    """
    n_active = len(active_beams)
    beam_size = len(active_beams[0].live)
    logp = log_softmax(logits).reshape(n_active, beam_size, -1)  # (A, K, V)
    vocab = logp.shape[-1]
    live_logprob = np.array([[logprob for _, logprob in b.live] for b in active_beams])  # (A, K)
    scores = (live_logprob[:, :, None] + logp).reshape(n_active, beam_size * vocab)  # (A, K*V)
    best = np.argsort(-scores, axis=1, kind="stable")[:, : 2 * beam_size]  # (A, 2K) flat (beam, token) indices
    best_scores = np.take_along_axis(scores, best, axis=1).tolist()
    parents, tokens = np.divmod(best, vocab)
    candidates = []
    for source_parents, source_tokens, source_scores in zip(
        parents.tolist(), tokens.tolist(), best_scores, strict=True
    ):
        ranked = []
        for parent, token, score in zip(source_parents, source_tokens, source_scores, strict=True):
            if score == -np.inf:
                break
            ranked.append(_Candidate(parent, token, score))
        candidates.append(ranked)
    return candidates


def _advance(
    beams: _Beams, candidates: list[_Candidate], t: int, at_limit: bool, length_penalty: float
) -> list[int] | None:
    """One step of one source, given its ``candidates`` (from ``_expand``) at output length ``t``.

    An ``</s>`` among the K best candidates ends a hypothesis (appended to ``finished`` in rank order); lower
    ranked ends are dropped. The best K other candidates become the live beams, padded to K with ``-inf`` beams.
    Returns each new live beam's parent beam (0 for padding), or None when the source is done: it holds K
    finished hypotheses, or it reached its length limit (``at_limit``) or has no live candidate left, and then
    its new live beams join ``finished`` as unfinished hypotheses. A done source's ``live`` is left as it was.
    """
    beam_size = len(beams.live)
    new_live: list[tuple[tuple[int, ...], float]] = []
    parents: list[int] = []
    for rank, candidate in enumerate(candidates):
        prefix = beams.live[candidate.parent][0]
        if candidate.token == EOS_ID:
            if rank < beam_size:
                beams.finished.append(
                    Hypothesis(prefix, candidate.score, _normalised(candidate.score, t, length_penalty))
                )
        elif len(new_live) < beam_size:
            new_live.append(((*prefix, candidate.token), candidate.score))
            parents.append(candidate.parent)
    if len(beams.finished) >= beam_size:
        return None
    if at_limit or not new_live:
        _give_up(beams, new_live, t, length_penalty)
        return None
    padding = beam_size - len(new_live)
    beams.live = new_live + [((), -np.inf)] * padding
    return parents + [0] * padding


def _real(live: list[tuple[tuple[int, ...], float]]) -> list[tuple[tuple[int, ...], float]]:
    """The live beams that are not padding."""
    return [(tokens, logprob) for tokens, logprob in live if logprob > -np.inf]


def _give_up(beams: _Beams, live: list[tuple[tuple[int, ...], float]], t: int, length_penalty: float) -> None:
    """End a source that stops before K hypotheses finished: its ``live`` beams join ``finished``, in order, as
    unfinished hypotheses scored at output length ``t``."""
    beams.finished.extend(
        Hypothesis(tokens, logprob, _normalised(logprob, t, length_penalty), finished=False) for tokens, logprob in live
    )


def _normalised(logprob: float, length: int, length_penalty: float) -> float:
    """The ranking score: ``logprob / length**length_penalty`` (length at least 1); the raw logprob for 0."""
    return logprob / (max(length, 1) ** length_penalty) if length_penalty else logprob


def _next_state_rows(continuing: list[tuple[int, list[int]]], beam_size: int) -> np.ndarray:
    """For each row of the next step, the current state row it continues: the j-th continuing source, at
    ``position`` in the current batch, gets next rows ``j * K + b`` (b = 0..K-1), and its new beam b continues
    current row ``position * K + parents[b]``."""
    rows = [position * beam_size + parent for position, parents in continuing for parent in parents]
    return np.asarray(rows, dtype=np.int64)


def _next_tokens(active_beams: list[_Beams]) -> np.ndarray:
    """The token fed to each row at the next step: each live beam's last token (``</s>`` for padding, whose
    output is never used), K rows per source."""
    return np.asarray([tokens[-1] if tokens else EOS_ID for b in active_beams for tokens, _ in b.live], np.int64)


def _ranked(finished: list[Hypothesis], nbest: int) -> list[Hypothesis]:
    """The ``nbest`` best hypotheses: finished ones first, each group by descending score (stable: ties keep the
    order in which they ended)."""
    return sorted(finished, key=lambda h: (not h.finished, -h.score))[:nbest]
