"""Continuous (iteration-level) batching of greedy and beam-search decoding: rows join a running batch at the next
decoder step and leave it when they finish, so a short request never waits for a long batch to end.

A ``RowBatch`` holds the decoder state of every row in flight on one backend (its ``prefill`` and ``rows_step``
graphs, see ``g2p.bundle``; a bundle without ``prefill``: its ``encoder`` and ``decoder``):

- ``add`` encodes newcomers (one batch: the ``prefill`` graph gives their cross-attention keys/values) and merges
  them into the batch with ``<s>`` at position 0 as their next input: they take their first decoder step in the
  next ``step``, with every other row (without ``prefill``: the encoder and a first decoder step of their own, two
  runs). The batch's self-attention cache is ``width`` slots wide; a newcomer's slot goes on the right (real keys
  and values after a first step of its own, else masked) and the slots to its left are masked (``past_mask``),
  which the ``rows_step`` graph turns into an attention bias; each row feeds its own position. Cross-attention
  keys/values are padded to the widest source (masked by ``src_mask``).
- ``step`` runs one ``rows_step`` for every row and returns the words that ended (``</s>`` or their length limit);
  ``on_emit``, when set, is called with each greedy row's key and token as it is emitted (streaming).
- A word searched with a beam of K takes K rows (newcomers by the ``prefill`` graph only): its beams' book-keeping is
  ``g2p.decoding.WordBeams`` (the same candidates, ties and ends as ``beam_search``), and after each
  step its rows' self-attention caches are reordered among themselves (each new beam continues its parent's row;
  the cross-attention keys/values and masks are the same in all K rows). Its rows are its K rows in ascending
  order, which joining, reuse of dead rows and compaction all keep.
- An ended row stays in the arrays as a dead row (all its slots masked, decoded and ignored) until a newcomer
  takes its place in place (no copy of the batch) or dead rows reach 1/``COMPACT_EVERY`` of the batch; slots that
  every row has masked are cut from the left. Both keep the per-step copying small.

Every greedy row's tokens equal those of ``g2p.decoding.greedy_search`` for the same source (the same argmax and the
same log-probability arithmetic; the graph's masking adds exact zeros), and every beam word's n-best those of
``beam_search``, whatever else is in the batch: the export's parity gate checks the graph against PyTorch, and the
tests check this class against the step-by-step loops.
Everything here is numpy; no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from g2p.bundle import PREFILL, ROWS_STEP
from g2p.decoding import DecodeOptions, Hypothesis, WordBeams, greedy_pick
from g2p.ort_backend import OrtBackend
from g2p.tokenization import BOS_ID, EOS_ID, pad_batch

COMPACT_EVERY = 4
TRIM_AT = 8
"""Leading cache slots that every row has masked are cut once there are this many (a copy of the cache)."""


@dataclass(frozen=True)
class _Newcomers:
    """Rows about to join the batch, each with a (L, n, H, 1, Dh) self-attention slot: after a first decoder step
    of their own (``tokens``: the token it emitted, their next input; the slot: its keys/values), or, from the
    ``prefill`` graph, before it (the slot masked, ``tokens`` ``<s>`` at position 0: the first step is taken in
    the batch's step)."""

    keys: list[Hashable]
    tokens: np.ndarray  # each row's next input
    position: int  # ... at this position (1 after a first step, 0 before it)
    limits: np.ndarray
    logprob: np.ndarray
    past_k: np.ndarray
    past_v: np.ndarray
    cross_k: np.ndarray
    cross_v: np.ndarray
    src_mask: np.ndarray
    beam: int = 1  # rows a word (K consecutive rows each)

    @property
    def stepped(self) -> bool:
        """Whether they took their first step (their slot holds real keys/values, their token was emitted)."""
        return self.position > 0

    def part(self, start: int) -> _Newcomers:
        """The newcomers from ``start`` on."""
        r = slice(start, None)
        return _Newcomers(self.keys[r], self.tokens[r], self.position, self.limits[r], self.logprob[r],
                          self.past_k[:, r], self.past_v[:, r], self.cross_k[:, r], self.cross_v[:, r],
                          self.src_mask[r], self.beam)  # fmt: skip


@dataclass(frozen=True)
class Ended:
    """A word that left the batch: its key (what ``add`` was given) and its hypotheses, best first (one for greedy,
    the n-best for a beam)."""

    key: Hashable
    hypotheses: tuple[Hypothesis, ...]

    @property
    def hypothesis(self) -> Hypothesis:
        return self.hypotheses[0]


def supports_rows(backend: object, beam: bool = False) -> bool:
    """True when ``backend`` can run a ``RowBatch`` (an ONNX Runtime backend whose variant has the graph); with
    ``beam``, beam-search words too (they join by the ``prefill`` graph)."""
    if not isinstance(backend, OrtBackend) or ROWS_STEP not in backend.sessions:
        return False
    return not beam or PREFILL in backend.sessions


class RowBatch:
    def __init__(self, backend: OrtBackend) -> None:
        if not supports_rows(backend):
            raise ValueError(f"the {backend.variant!r} variant has no {ROWS_STEP} graph")
        self.backend = backend
        self.session = backend.sessions[ROWS_STEP]
        self.prefill = backend.sessions.get(PREFILL)  # None: an older bundle (newcomers take a first step apart)
        self.keys: list[Hashable | None] = []  # None: a dead row; a beam word's key on each of its rows
        self.groups: dict[Hashable, WordBeams] = {}  # the beam words in the batch
        self.on_emit: Callable[[Hashable, int], None] | None = None  # each greedy token as it is emitted
        self._empty()

    def _empty(self) -> None:
        self.keys = []
        self.beam = np.zeros(0, np.int64)  # each row's beam size (1: greedy)
        self.tokens = np.zeros(0, np.int64)  # each row's next input token
        self.positions = np.zeros(0, np.int64)  # ... and its position
        self.limits = np.zeros(0, np.int64)
        self.logprob = np.zeros(0, np.float64)
        self.out = np.zeros((0, 1), np.int64)  # emitted tokens
        none = np.zeros(0, np.float32)  # the caches (L, rows, H, ., Dh) come with the first rows
        self.past_k: np.ndarray = none
        self.past_v: np.ndarray = none
        self.cross_k: np.ndarray = none
        self.cross_v: np.ndarray = none
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
    def words(self) -> int:
        """Live words (a beam word's K rows count once)."""
        return self.live - sum(g.size - 1 for g in self.groups.values())

    @property
    def width(self) -> int:
        """Self-attention cache slots."""
        return self.past_mask.shape[1]

    @property
    def source_width(self) -> int:
        return self.src_mask.shape[1]

    # ------------------------------------------------------------------ joining
    def add(self, keys: Sequence[Hashable], sources: Sequence[Sequence[int]], options: DecodeOptions) -> list[Ended]:
        """Newcomers: encode them and merge them into the batch. With the bundle's ``prefill`` graph that is one run
        (their cross keys/values) and they take their first step in the next ``step``; without it, the encoder and
        a first decoder step of their own, and those that ended there (``</s>`` first, or a limit of one token) are
        returned at once. ``sources`` are token ids (with ``</s>``); ``options`` gives their length limits and
        beam (a beam of K: K rows a word, by the ``prefill`` graph only)."""
        if not keys:
            return []
        k = options.beam_size
        if k > 1 and self.prefill is None:
            raise ValueError(f"beam search in a row batch needs the variant's {PREFILL} graph")
        if k > 1 and (set(keys) & self.groups.keys() or len(set(keys)) < len(keys)):
            raise ValueError("a beam word's key is already in the batch")
        src, mask = pad_batch([list(s) for s in sources])
        limits = options.limits(mask)
        ended: list[Ended] = []
        new: _Newcomers | None
        if self.prefill is not None:
            ck, cv = self.prefill.run(["cross_k", "cross_v"], {"src_ids": src.astype(np.int64), "src_mask": mask})
            if k > 1:  # K rows a word, the same source in each
                ck, cv = np.repeat(ck, k, axis=1), np.repeat(cv, k, axis=1)
                mask, limits = np.repeat(mask, k, axis=0), np.repeat(limits, k)
            n = len(keys) * k
            shape = (ck.shape[0], n, ck.shape[2], 1, ck.shape[4])  # one masked slot each: no past yet
            new = _Newcomers([key for key in keys for _ in range(k)], np.full(n, BOS_ID, np.int64), 0, limits,
                             np.zeros(n), np.zeros(shape, np.float32), np.zeros(shape, np.float32), ck, cv,
                             mask, k)  # fmt: skip
        else:
            new, ended = self._first_step(list(keys), src, mask, limits)
        if new is None:
            return ended
        if k > 1:
            for key, limit in zip(keys, limits[::k].tolist(), strict=True):
                self.groups[key] = WordBeams.start(options, int(limit))
        placed = self._reuse(new)
        if placed < len(new.keys):
            self._merge(new.part(placed))
        return ended

    def _first_step(
        self, keys: list[Hashable], src: np.ndarray, mask: np.ndarray, limits: np.ndarray
    ) -> tuple[_Newcomers | None, list[Ended]]:
        """A bundle without the ``prefill`` graph: the newcomers' encoder run and first step; those that ended
        there, and the others (None when none is left)."""
        b = self.backend
        state = b.encode(src, mask)
        logits, state = b.step(np.full(len(keys), BOS_ID, np.int64), state)
        best, chosen = _pick(logits)
        eos = best == EOS_ID
        if self.on_emit is not None:
            for i in np.flatnonzero(~eos).tolist():
                self.on_emit(keys[i], int(best[i]))
        ended, stay = [], []
        for i, key in enumerate(keys):
            if eos[i] or limits[i] <= 1:
                tokens = () if eos[i] else (int(best[i]),)
                ended.append(Ended(key, (Hypothesis(tokens, float(chosen[i]), float(chosen[i]), bool(eos[i])),)))
            else:
                stay.append(i)
        if not stay:
            return None, ended
        new = _Newcomers(
            [keys[i] for i in stay],
            best[stay],
            1,
            limits[stay],
            chosen[stay].astype(np.float64),
            b._numpy(state.past_k)[:, stay],
            b._numpy(state.past_v)[:, stay],
            b._numpy(state.cross_k)[:, stay],
            b._numpy(state.cross_v)[:, stay],
            mask[stay],
        )
        return new, ended

    def _reuse(self, new: _Newcomers) -> int:
        """Put newcomers into dead rows in place (no copy of the batch): as many as there are dead rows, when
        their sources fit the batch's source width and their limits its output buffer. Returns how many."""
        dead = [i for i, k in enumerate(self.keys) if k is None]
        if not dead or new.src_mask.shape[1] > self.source_width or int(new.limits.max()) > self.out.shape[1]:
            return 0
        n = min(len(dead), len(new.keys))
        rows, s = np.asarray(dead[:n]), new.src_mask.shape[1]
        for i, key in zip(rows.tolist(), new.keys[:n], strict=True):
            self.keys[i] = key
        self.tokens[rows], self.positions[rows], self.limits[rows] = new.tokens[:n], new.position, new.limits[:n]
        self.beam[rows] = new.beam
        self.logprob[rows] = new.logprob[:n]
        self.out[rows] = 0
        if new.stepped:
            self.out[rows, 0] = new.tokens[:n]
        self.past_mask[rows] = False
        self.past_mask[rows, -1] = new.stepped  # its one slot, on the right: real after a first step
        self.past_k[:, rows, :, -1:] = new.past_k[:, :n]
        self.past_v[:, rows, :, -1:] = new.past_v[:, :n]
        self.src_mask[rows] = False
        self.src_mask[rows, :s] = new.src_mask[:n]
        self.cross_k[:, rows, :, :s] = new.cross_k[:, :n]
        self.cross_v[:, rows, :, :s] = new.cross_v[:, :n]
        return n

    def _merge(self, new: _Newcomers) -> None:
        """Append newcomers (one cache slot each) to the batch: dead rows are dropped first, the caches padded to
        the common widths (masked slots on the left of the self-attention cache, on the right of the source)."""
        self._compact(force=True)
        n = len(new.keys)
        out = np.zeros((n, max(int(new.limits.max()), self.out.shape[1])), np.int64)
        if new.stepped:
            out[:, 0] = new.tokens
        positions = np.full(n, new.position, np.int64)
        if not self.keys:
            self.keys = list(new.keys)
            self.tokens, self.positions, self.limits = new.tokens, positions, new.limits
            self.beam = np.full(n, new.beam, np.int64)
            self.logprob, self.out = new.logprob, out
            self.past_k, self.past_v = np.ascontiguousarray(new.past_k), np.ascontiguousarray(new.past_v)
            self.cross_k, self.cross_v = np.ascontiguousarray(new.cross_k), np.ascontiguousarray(new.cross_v)
            self.past_mask, self.src_mask = np.full((n, 1), new.stepped), new.src_mask
            return
        width, source = self.width, max(self.source_width, new.src_mask.shape[1])

        def widen(x: np.ndarray, axis: int) -> np.ndarray:  # to the common source width
            return _pad(x, axis, source - x.shape[axis])

        self.past_k = np.concatenate([self.past_k, _pad(new.past_k, 3, width - 1, before=True)], axis=1)
        self.past_v = np.concatenate([self.past_v, _pad(new.past_v, 3, width - 1, before=True)], axis=1)
        slot = np.eye(1, width, width - 1, dtype=bool) & new.stepped
        self.past_mask = np.concatenate([self.past_mask, slot.repeat(n, 0)])
        self.cross_k = np.concatenate([widen(self.cross_k, 3), widen(new.cross_k, 3)], axis=1)
        self.cross_v = np.concatenate([widen(self.cross_v, 3), widen(new.cross_v, 3)], axis=1)
        self.src_mask = np.concatenate([widen(self.src_mask, 1), widen(new.src_mask, 1)])
        self.keys += new.keys
        self.tokens = np.concatenate([self.tokens, new.tokens])
        self.positions = np.concatenate([self.positions, positions])
        self.beam = np.concatenate([self.beam, np.full(n, new.beam, np.int64)])
        self.limits = np.concatenate([self.limits, new.limits])
        self.logprob = np.concatenate([self.logprob, new.logprob])
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
        greedy = live & (self.beam == 1)
        self.logprob[greedy] += chosen[greedy]
        eos = best == EOS_ID
        emit = greedy & ~eos
        self.out[emit, self.positions[emit]] = best[emit]
        if self.on_emit is not None:
            for i in np.flatnonzero(emit).tolist():
                self.on_emit(self.keys[i], int(best[i]))
        done = greedy & (eos | (steps >= self.limits))
        ended = []
        for i in np.flatnonzero(done).tolist():
            length = int(self.positions[i]) + (0 if eos[i] else 1)
            tokens = tuple(self.out[i, :length].tolist())
            ended.append(Ended(self.keys[i], (Hypothesis(tokens, float(self.logprob[i]), float(self.logprob[i]),
                                                          bool(eos[i])),)))  # fmt: skip
            self._kill([i])
        self.tokens = np.where(emit, best, EOS_ID).astype(np.int64)
        if self.groups:
            ended += self._search(logits.reshape(len(self.keys), -1), steps)
        self.positions = np.minimum(self.positions + 1, self.limits - 1)  # a dead row stays within the table
        self._compact()
        self._trim()
        return ended

    def _search(self, logits: np.ndarray, steps: np.ndarray) -> list[Ended]:
        """One step of every beam word, from its rows' ``logits`` (rows, V) at output length ``steps`` (per row): a
        word that is done leaves (its n-best), the others' rows get their caches reordered (each new beam continues
        its parent's row) and their next tokens."""
        ended = []
        for key, rows in self._group_rows().items():
            beams = self.groups[key]
            parents = beams.advance(logits[rows], int(steps[rows[0]]))
            if parents is None:
                ended.append(Ended(key, beams.best()))
                del self.groups[key]
                self._kill(rows)
                continue
            source = rows[parents]
            if (source != rows).any():
                self.past_k[:, rows] = self.past_k[:, source]
                self.past_v[:, rows] = self.past_v[:, source]
            self.tokens[rows] = beams.next_tokens()
        return ended

    def _group_rows(self) -> dict[Hashable, np.ndarray]:
        """Each beam word's rows, in beam order (ascending)."""
        rows: dict[Hashable, list[int]] = {}
        for i in np.flatnonzero(self.beam > 1).tolist():
            key = self.keys[i]
            if key is not None:
                rows.setdefault(key, []).append(i)
        return {key: np.asarray(r) for key, r in rows.items()}

    def _kill(self, rows: Sequence[int] | np.ndarray) -> None:
        """Rows that left: dead (every slot masked) until reused or compacted away."""
        for i in rows:
            self.keys[int(i)] = None
        self.past_mask[rows] = False

    def drop(self, dead: Sequence[Hashable]) -> list[Ended]:
        """Remove the live words whose keys are in ``dead`` (cancelled, expired): their hypotheses as they stand,
        unfinished (a beam word's live beams, as ``beam_search`` gives them up)."""
        gone = set(dead)
        ended = []
        for i, key in enumerate(self.keys):
            if key is not None and key in gone and self.beam[i] == 1:
                n = int(self.positions[i])
                tokens = tuple(self.out[i, :n].tolist())
                ended.append(Ended(key, (Hypothesis(tokens, float(self.logprob[i]), float(self.logprob[i]), False),)))
                self._kill([i])
        for key, rows in self._group_rows().items():
            if key in gone:
                beams = self.groups.pop(key)
                beams.give_up(int(self.positions[rows[0]]))
                ended.append(Ended(key, beams.best()))
                self._kill(rows)
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
        for name in ("tokens", "positions", "limits", "beam", "logprob", "out", "past_mask", "src_mask"):
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


def decode_joining(
    backend: OrtBackend, sources: Sequence[Sequence[int]], options: DecodeOptions, join: int = 7, rows: int = 32
) -> list[Hypothesis]:
    """The best hypothesis of each of ``sources`` (token ids) decoded by one ``RowBatch`` (greedy, or a beam of
    ``options.beam_size`` rows a word): up to ``join`` newcomers join at each step while rows are free (``rows`` at
    most), so words start at different steps beside different batch-mates (what the export's gate and the tests
    check against the step-by-step loops)."""
    batch = RowBatch(backend)
    out: dict[Hashable, Hypothesis] = {}
    pending = list(range(len(sources)))
    while pending or batch.live:
        take = min(join, max((rows - batch.live) // options.beam_size, 0))
        new, pending = pending[:take], pending[take:]
        for e in batch.add(new, [sources[i] for i in new], options) + batch.step():
            out[e.key] = e.hypothesis
    return [out[i] for i in range(len(sources))]


def _pick(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``greedy_pick`` of one step's logits, (N, 1, V) or (N, V): tokens as int64."""
    best, chosen = greedy_pick(np.asarray(logits).reshape(logits.shape[0], -1))
    return best.astype(np.int64), chosen


def _pad(x: np.ndarray, axis: int, n: int, before: bool = False) -> np.ndarray:
    """``x`` with ``n`` zeros (False) added along ``axis``, after its values (or ``before`` them)."""
    if n <= 0:
        return x
    width = [(0, 0)] * x.ndim
    width[axis] = (n, 0) if before else (0, n)
    return np.pad(x, width)
