"""Continuous (iteration-level) batching of greedy decoding: rows join a running batch at the next decoder step
and leave it when they finish, so a short request never waits for a long batch to end.

A ``RowBatch`` holds the decoder state of every row in flight on one backend (its ``encoder``, ``decoder`` and
``rows_step`` graphs, see ``g2p.bundle``):

- ``add`` encodes newcomers (one batch), runs their first decoder step, and merges them into the batch. The batch's
  self-attention cache is ``width`` slots wide; a newcomer's one real slot goes on the right and the slots to its
  left are masked (``past_mask``), which the ``rows_step`` graph turns into an attention bias; each row feeds its own
  position. Cross-attention keys/values are padded to the widest source (masked by ``src_mask``).
- ``step`` runs one ``rows_step`` for every row and returns the rows that ended (``</s>`` or their length limit).
- An ended row stays in the arrays as a dead row (all its slots masked, decoded and ignored) until newcomers
  take its place or dead rows reach 1/``COMPACT_EVERY`` of the batch; slots that every row has masked are cut from
  the left. Both keep the per-step copying small.

Every row's tokens equal those of ``g2p.decoding.greedy_search`` for the same source (the same argmax and the same
log-probability arithmetic; the graph's masking adds exact zeros), whatever else is in the batch: the export's
parity gate checks the graph against PyTorch, and the tests check this class against the step-by-step loop.
Everything here is numpy; no torch.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from g2p.bundle import ROWS_STEP
from g2p.decoding import DecodeOptions, Hypothesis
from g2p.ort_backend import OrtBackend
from g2p.tokenization import BOS_ID, EOS_ID, pad_batch

COMPACT_EVERY = 8
TRIM_AT = 8
"""Leading cache slots that every row has masked are cut once there are this many (a copy of the cache)."""


@dataclass(frozen=True)
class Ended:
    """A row that left the batch: its key (what ``add`` was given) and its hypothesis."""

    key: Hashable
    hypothesis: Hypothesis


def supports_rows(backend: object) -> bool:
    """True when ``backend`` can run a ``RowBatch`` (an ONNX Runtime backend whose variant has the graph)."""
    return isinstance(backend, OrtBackend) and ROWS_STEP in backend.sessions


class RowBatch:
    def __init__(self, backend: OrtBackend) -> None:
        if not supports_rows(backend):
            raise ValueError(f"the {backend.variant!r} variant has no {ROWS_STEP} graph")
        self.backend = backend
        self.session = backend.sessions[ROWS_STEP]
        self.keys: list[Hashable | None] = []  # None: a dead row
        self._empty()

    def _empty(self) -> None:
        self.keys = []
        self.tokens = np.zeros(0, np.int64)  # each row's next input token
        self.positions = np.zeros(0, np.int64)  # ... and its position
        self.limits = np.zeros(0, np.int64)
        self.logprob = np.zeros(0, np.float64)
        self.out = np.zeros((0, 1), np.int64)  # emitted tokens
        self.past_k = self.past_v = self.cross_k = self.cross_v = None
        self.past_mask = np.zeros((0, 0), bool)
        self.src_mask = np.zeros((0, 0), bool)

    # ------------------------------------------------------------------ state
    @property
    def rows(self) -> int:
        """Rows in the arrays, dead ones included."""
        return len(self.keys)

    @property
    def live(self) -> int:
        return sum(k is not None for k in self.keys)

    @property
    def width(self) -> int:
        """Self-attention cache slots."""
        return self.past_mask.shape[1]

    @property
    def source_width(self) -> int:
        return self.src_mask.shape[1]

    # ------------------------------------------------------------------ joining
    def add(self, keys: Sequence[Hashable], sources: Sequence[Sequence[int]], options: DecodeOptions) -> list[Ended]:
        """Newcomers: encode them, run their first step, and merge those that did not end there. ``sources`` are
        token ids (with ``</s>``); ``options`` gives their length limits (greedy). Returns the rows that ended at
        once (``</s>`` first, or a limit of one token)."""
        if not keys:
            return []
        src, mask = pad_batch([list(s) for s in sources])
        limits = options.limits(mask)
        b = self.backend
        state = b.encode(src, mask)
        logits, state = b.step(np.full(len(keys), BOS_ID, np.int64), state)
        best, chosen = _pick(logits)
        eos = best == EOS_ID
        ended, stay = [], []
        for i, key in enumerate(keys):
            if eos[i] or limits[i] <= 1:
                tokens = () if eos[i] else (int(best[i]),)
                ended.append(Ended(key, Hypothesis(tokens, float(chosen[i]), float(chosen[i]), bool(eos[i]))))
            else:
                stay.append(i)
        if stay:
            rows = np.asarray(stay)
            self._merge(
                [keys[i] for i in rows],
                best[rows],
                limits[rows],
                chosen[rows].astype(np.float64),
                np.take(b._numpy(state.past_k), rows, axis=1),
                np.take(b._numpy(state.past_v), rows, axis=1),
                np.take(b._numpy(state.cross_k), rows, axis=1),
                np.take(b._numpy(state.cross_v), rows, axis=1),
                mask[rows],
            )
        return ended

    def _merge(
        self,
        keys: list[Hashable],
        first: np.ndarray,
        limits: np.ndarray,
        logprob: np.ndarray,
        past_k: np.ndarray,
        past_v: np.ndarray,
        cross_k: np.ndarray,
        cross_v: np.ndarray,
        src_mask: np.ndarray,
    ) -> None:
        """Append rows after their first step (one cache slot, first token emitted) to the batch: dead rows are
        dropped first, the caches padded to the common widths (masked slots on the left of the self-attention
        cache, on the right of the source)."""
        self._compact(force=True)
        n = len(keys)
        out = np.zeros((n, max(int(limits.max()), self.out.shape[1])), np.int64)
        out[:, 0] = first
        if not self.keys:
            self.keys = list(keys)
            self.tokens, self.positions, self.limits, self.logprob = first, np.ones(n, np.int64), limits, logprob
            self.out = out
            self.past_k, self.past_v, self.cross_k, self.cross_v = past_k, past_v, cross_k, cross_v
            self.past_mask, self.src_mask = np.ones((n, 1), bool), src_mask
            return
        width, source = self.width, max(self.source_width, src_mask.shape[1])
        left = width - 1
        self.past_k = np.concatenate([self.past_k, _pad(past_k, 3, left, before=True)], axis=1)
        self.past_v = np.concatenate([self.past_v, _pad(past_v, 3, left, before=True)], axis=1)
        self.past_mask = np.concatenate([self.past_mask, np.eye(1, width, width - 1, dtype=bool).repeat(n, 0)])
        self.cross_k = np.concatenate(
            [_pad(self.cross_k, 3, source - self.source_width), _pad(cross_k, 3, source - cross_k.shape[3])], axis=1
        )
        self.cross_v = np.concatenate(
            [_pad(self.cross_v, 3, source - self.source_width), _pad(cross_v, 3, source - cross_v.shape[3])], axis=1
        )
        self.src_mask = np.concatenate(
            [_pad(self.src_mask, 1, source - self.source_width), _pad(src_mask, 1, source - src_mask.shape[1])]
        )
        self.keys += keys
        self.tokens = np.concatenate([self.tokens, first])
        self.positions = np.concatenate([self.positions, np.ones(n, np.int64)])
        self.limits = np.concatenate([self.limits, limits])
        self.logprob = np.concatenate([self.logprob, logprob])
        self.out = np.concatenate([_pad(self.out, 1, out.shape[1] - self.out.shape[1]), out])

    # ------------------------------------------------------------------ stepping
    def step(self) -> list[Ended]:
        """One decoder step for every row; returns the live rows that ended at it."""
        if not self.keys:
            return []
        logits, self.past_k, self.past_v = self.session.run(
            ["logits", "present_k", "present_v"],
            {
                "tgt_ids": self.tokens[:, None],
                "positions": self.positions[:, None],
                "past_k": self.past_k,
                "past_v": self.past_v,
                "past_mask": self.past_mask,
                "cross_k": self.cross_k,
                "cross_v": self.cross_v,
                "src_mask": self.src_mask,
            },
        )
        live = np.fromiter((k is not None for k in self.keys), bool, len(self.keys))
        self.past_mask = np.concatenate([self.past_mask, live[:, None]], axis=1)
        best, chosen = _pick(logits)
        steps = self.positions + 1  # tokens emitted once this one counts
        self.logprob[live] += chosen[live]
        eos = best == EOS_ID
        emit = live & ~eos
        self.out[emit, self.positions[emit]] = best[emit]
        done = live & (eos | (steps >= self.limits))
        ended = []
        for i in np.flatnonzero(done):
            length = int(self.positions[i]) + (0 if eos[i] else 1)
            tokens = tuple(self.out[i, :length].tolist())
            ended.append(Ended(self.keys[i], Hypothesis(tokens, float(self.logprob[i]), float(self.logprob[i]),
                                                         bool(eos[i]))))  # fmt: skip
            self.keys[i] = None
            self.past_mask[i] = False
        self.tokens = np.where(emit, best, EOS_ID).astype(np.int64)
        self.positions = np.minimum(self.positions + 1, self.limits - 1)  # a dead row stays within the table
        self._compact()
        self._trim()
        return ended

    def drop(self, dead: Sequence[Hashable]) -> list[Ended]:
        """Remove the live rows whose keys are in ``dead`` (cancelled, expired): their hypotheses as they stand,
        unfinished."""
        gone = set(dead)
        ended = []
        for i, key in enumerate(self.keys):
            if key is not None and key in gone:
                n = int(self.positions[i])
                tokens = tuple(self.out[i, :n].tolist())
                ended.append(Ended(key, Hypothesis(tokens, float(self.logprob[i]), float(self.logprob[i]), False)))
                self.keys[i] = None
                self.past_mask[i] = False
        self._compact()
        return ended

    # ------------------------------------------------------------------ housekeeping
    def _compact(self, force: bool = False) -> None:
        """Drop dead rows once they are 1/``COMPACT_EVERY`` of the batch (or at all, ``force``)."""
        dead = self.rows - self.live
        if not dead or (not force and dead * COMPACT_EVERY < self.rows):
            return
        if dead == self.rows:
            self._empty()
            return
        keep = np.fromiter((k is not None for k in self.keys), bool, self.rows)
        self.keys = [k for k in self.keys if k is not None]
        for name in ("tokens", "positions", "limits", "logprob", "out", "past_mask", "src_mask"):
            setattr(self, name, getattr(self, name)[keep])
        for name in ("past_k", "past_v", "cross_k", "cross_v"):
            setattr(self, name, np.compress(keep, getattr(self, name), axis=1))
        self._trim(at=1)

    def _trim(self, at: int = TRIM_AT) -> None:
        """Cut the leading self-attention slots that every row has masked, once there are ``at`` of them."""
        if not self.keys:
            return
        used = self.past_mask.any(axis=0)
        lead = int(used.argmax()) if used.any() else self.width
        if lead >= at:
            self.past_mask = np.ascontiguousarray(self.past_mask[:, lead:])
            self.past_k = np.ascontiguousarray(self.past_k[:, :, :, lead:])
            self.past_v = np.ascontiguousarray(self.past_v[:, :, :, lead:])


def _pick(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy choice from the logits of one step, (N, 1, V) or (N, V): the tokens and their log-probabilities,
    computed as ``g2p.decoding.greedy_search`` does."""
    x = np.asarray(logits, dtype=np.float32).reshape(logits.shape[0], -1)
    best = x.argmax(axis=-1)
    z = x - x.max(axis=-1, keepdims=True)
    chosen = z[np.arange(len(best)), best] - np.log(np.exp(z).sum(axis=-1))
    return best.astype(np.int64), chosen


def _pad(x: np.ndarray, axis: int, n: int, before: bool = False) -> np.ndarray:
    """``x`` with ``n`` zeros (False) added along ``axis``, after its values (or ``before`` them)."""
    if n <= 0:
        return x
    width = [(0, 0)] * x.ndim
    width[axis] = (n, 0) if before else (0, n)
    return np.pad(x, width)
