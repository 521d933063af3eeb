"""Data for training: splits that keep the benchmark test words out, token-count batches, collation."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from g2p.lexicon import Entry, group
from g2p.tokenization import BOS_ID, PAD_ID, G2PTokenizers


@dataclass(frozen=True)
class Splits:
    train: list[Entry]
    dev: list[Entry]
    test: list[Entry]  # the held-out entries of the test words found in the lexicon (with stress)

    def words(self, name: str) -> set[str]:
        return {w for w, _ in getattr(self, name)}


def make_splits(entries: Sequence[Entry], test_words: set[str], dev_words: int, seed: int) -> Splits:
    """Test = every entry of a test word; dev = ``dev_words`` other words drawn with ``seed``; train = the rest.

    Splitting is by word, so all pronunciations of a word land in the same split.
    """
    by_word = group(list(entries))
    rest = sorted(w for w in by_word if w not in test_words)
    if dev_words >= len(rest):
        raise ValueError(f"dev split of {dev_words} words leaves no training words (only {len(rest)} available)")
    dev = set(random.Random(seed).sample(rest, dev_words))
    train = [(w, p) for w, p in entries if w not in test_words and w not in dev]
    dev_entries = [(w, p) for w, p in entries if w in dev]
    test = [(w, p) for w, p in entries if w in test_words]
    return Splits(train, dev_entries, test)


@dataclass(frozen=True)
class Example:
    src: list[int]  # characters + </s>
    tgt: list[int]  # phonemes + </s>


def encode_entries(tok: G2PTokenizers, entries: Sequence[Entry]) -> list[Example]:
    src = tok.encode_source([w for w, _ in entries])
    tgt = tok.encode_target([p for _, p in entries])
    return [Example(s, t) for s, t in zip(src, tgt, strict=True)]


def token_batches(examples: Sequence[Example], max_tokens: int, rng: random.Random) -> list[list[int]]:
    """Length-bucketed batches: indices sorted by length (random tie-break), cut so that
    batch_size * longest sequence <= ``max_tokens``; batch order shuffled."""
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i].src), len(examples[i].tgt), rng.random()))
    batches: list[list[int]] = []
    cur: list[int] = []
    longest = 0
    for i in order:
        n = max(len(examples[i].src), len(examples[i].tgt))
        if cur and max(longest, n) * (len(cur) + 1) > max_tokens:
            batches.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, n)
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches


@dataclass
class Batch:
    src: Tensor  # (B, S) int64
    src_mask: Tensor  # (B, S) bool, True = token
    tgt_in: Tensor  # (B, T) <s> + target[:-1]
    tgt_out: Tensor  # (B, T) target (ends with </s>), PAD where padded

    @property
    def n_target_tokens(self) -> int:
        return int((self.tgt_out != PAD_ID).sum())

    @property
    def n_source_tokens(self) -> int:
        return int(self.src_mask.sum())


def collate(examples: Sequence[Example]) -> Batch:
    b = len(examples)
    s = max(len(e.src) for e in examples)
    t = max(len(e.tgt) for e in examples)
    src = torch.full((b, s), PAD_ID, dtype=torch.long)
    tgt_in = torch.full((b, t), PAD_ID, dtype=torch.long)
    tgt_out = torch.full((b, t), PAD_ID, dtype=torch.long)
    for i, e in enumerate(examples):
        src[i, : len(e.src)] = torch.tensor(e.src)
        tgt_out[i, : len(e.tgt)] = torch.tensor(e.tgt)
        tgt_in[i, 0] = BOS_ID
        tgt_in[i, 1 : len(e.tgt)] = torch.tensor(e.tgt[:-1])
    return Batch(src, src != PAD_ID, tgt_in, tgt_out)


def iterate_batches(examples: Sequence[Example], max_tokens: int, rng: random.Random) -> Iterator[Batch]:
    for idx in token_batches(examples, max_tokens, rng):
        yield collate([examples[i] for i in idx])


@dataclass
class Shard:
    """One process's part of a global batch, and what it needs to know about the whole."""

    batch: Batch  # this process's examples (a stand-in example when it has none; see ``weight``)
    weight: float  # 1.0, or 0.0 when the stand-in is computed only so that every process runs a step
    global_source_tokens: int
    global_target_tokens: int  # the loss of the global batch is a mean over these


def shard_batches(
    examples: Sequence[Example], max_tokens: int, rng: random.Random, rank: int, world_size: int
) -> Iterator[Shard]:
    """The global batches of ``token_batches`` (``max_tokens`` is the budget of the GLOBAL batch), each split
    across ``world_size`` processes: process ``rank`` takes examples ``rank::world_size`` of it.

    Every process draws the same batches from the same seeded ``rng`` (so they agree without talking), and
    together they see exactly what one process with the same ``max_tokens`` sees.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    for idx in token_batches(examples, max_tokens, rng):
        mine = idx[rank::world_size]
        yield Shard(
            batch=collate([examples[i] for i in mine or idx[:1]]),
            weight=1.0 if mine else 0.0,
            global_source_tokens=sum(len(examples[i].src) for i in idx),
            global_target_tokens=sum(len(examples[i].tgt) for i in idx),
        )
