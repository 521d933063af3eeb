"""The parity gate: ONNX Runtime vs PyTorch, tensor by tensor and word by word. A miss fails the export."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from g2p.bundle import DECODER, DECODER_STEP, ENCODER, PREFILL, ROWS_STEP, DecodeCheck, OutputDiff, TensorCheck
from g2p.continuous import decode_joining
from g2p.decoding import Backend, DecodeOptions
from g2p.ort_backend import CPU, OrtBackend, make_session
from g2p.pipeline import transcribe
from g2p.tokenization import G2PTokenizers
from training.model import Transformer

BATCHES = (1, 3, 8, 32)
STEP_PAST = (1, 6)  # past lengths for the decoder-step checks (a single new token, and a 3-token block)


def source_lengths(max_source_len: int) -> list[int]:
    return sorted({n for n in (1, 2, 7, 33, max_source_len) if n <= max_source_len})


def diff(actual: np.ndarray, expected: np.ndarray, atol: float, rtol: float) -> tuple[bool, OutputDiff]:
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        return False, OutputDiff(max_abs=float("inf"), max_rel=float("inf"))
    abs_err = np.abs(a - e)
    rel = abs_err / np.maximum(np.abs(e), 1e-12)
    ok = bool(np.all(abs_err <= atol + rtol * np.abs(e)))
    return ok, OutputDiff(max_abs=float(abs_err.max(initial=0.0)), max_rel=float(rel.max(initial=0.0)))


def _random_sources(model: Transformer, batch: int, length: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Random ids; row 0 is full length, the others random lengths in [1, length] (padded batches)."""
    ids = torch.randint(4, model.cfg.src_vocab_size, (batch, length), generator=g)
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    lengths[0] = length
    mask = torch.arange(length)[None, :] < lengths[:, None]
    return ids.masked_fill(~mask, model.cfg.pad_id), mask


def _check(
    session: Any,
    graph: str,
    case: str,
    feeds: dict[str, torch.Tensor],
    expected: dict[str, torch.Tensor],
    atol: float,
    rtol: float,
) -> TensorCheck:
    """Run ``session`` on ``feeds`` and compare every output named in ``expected``."""
    got = session.run(list(expected), {k: v.numpy() for k, v in feeds.items()})
    results = {n: diff(o, expected[n].numpy(), atol, rtol) for n, o in zip(expected, got, strict=True)}
    return TensorCheck(
        graph=graph,
        case=case,
        ok=all(ok for ok, _ in results.values()),
        outputs={n: d for n, (_, d) in results.items()},
    )


def tensor_checks(
    model: Transformer, graph_paths: dict[str, Path], atol: float, rtol: float, providers: Sequence[str] = (CPU,)
) -> list[TensorCheck]:
    """Run every graph at shapes other than the export example and compare every output (``graph_paths``: the
    three every variant has, and ``prefill`` where it is given)."""
    model = model.eval()
    sessions = {name: make_session(path, list(providers)) for name, path in graph_paths.items()}
    g = torch.Generator().manual_seed(1)
    checks: list[TensorCheck] = []

    def compare(graph: str, case: str, feeds: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
        checks.append(_check(sessions[graph], graph, case, feeds, expected, atol, rtol))

    with torch.no_grad():
        for batch in BATCHES:
            for s in source_lengths(model.cfg.max_source_len):
                case = f"batch={batch} src_len={s}"
                src, mask = _random_sources(model, batch, s, g)
                memory = model.encode(src, mask)
                compare(ENCODER, case, {"src_ids": src, "src_mask": mask}, {"memory": memory})

                # decoder, no cache: a single first step, and a 3-token prefix
                ck, cv = model.cross_kv(memory)
                if PREFILL in sessions:  # the sources straight to the cross keys/values (continuous batching)
                    compare(PREFILL, case, {"src_ids": src, "src_mask": mask}, {"cross_k": ck, "cross_v": cv})
                for t in (1, 3):
                    tgt = torch.randint(4, model.cfg.tgt_vocab_size, (batch, t), generator=g)
                    logits, pk, pv = model.decode(tgt, ck, cv, mask)
                    compare(
                        DECODER,
                        f"{case} tgt_len={t}",
                        {"tgt_ids": tgt, "memory": memory, "src_mask": mask},
                        {"logits": logits, "present_k": pk, "present_v": pv, "cross_k": ck, "cross_v": cv},
                    )
                # decoder step with a cache: one new token after P, and a block of 3
                for past, t in ((STEP_PAST[0], 1), (STEP_PAST[1], 1), (STEP_PAST[1], 3)):
                    prefix = torch.randint(4, model.cfg.tgt_vocab_size, (batch, past), generator=g)
                    _, pk, pv = model.decode(prefix, ck, cv, mask)
                    tgt = torch.randint(4, model.cfg.tgt_vocab_size, (batch, t), generator=g)
                    logits, nk, nv = model.decode(tgt, ck, cv, mask, pk, pv)
                    compare(
                        DECODER_STEP,
                        f"{case} past_len={past} tgt_len={t}",
                        {"tgt_ids": tgt, "past_k": pk, "past_v": pv, "cross_k": ck, "cross_v": cv, "src_mask": mask},
                        {"logits": logits, "present_k": nk, "present_v": nv},
                    )
    return checks


ROWS_BATCHES = (1, 5, 16)
ROWS_MAX_PAST = 7


def rows_step_checks(model: Transformer, path: Path, atol: float, rtol: float) -> list[TensorCheck]:
    """The rows-step graph vs PyTorch with every row at its own position: row r has a cache of ``p_r`` real
    positions (0 to ``ROWS_MAX_PAST``, a newcomer has none), right-aligned in the batch's ``P`` slots, the slots
    to their left masked and holding noise (what a finished or earlier row left there). Each row's logits must
    equal PyTorch decoding that row alone; its new cache slot too, and the other slots come back as they went in."""
    model = model.eval()
    session = make_session(path, [CPU])
    g = torch.Generator().manual_seed(2)
    c = model.cfg
    checks: list[TensorCheck] = []
    with torch.no_grad():
        for batch in ROWS_BATCHES:
            for s in source_lengths(c.max_source_len)[1:4]:
                src, mask = _random_sources(model, batch, s, g)
                ck, cv = model.cross_kv(model.encode(src, mask))
                lengths = torch.randint(0, ROWS_MAX_PAST + 1, (batch,), generator=g)
                lengths[0] = ROWS_MAX_PAST
                width = int(lengths.max())
                shape = (c.n_decoder_layers, batch, c.n_heads, width, c.head_dim)
                past_k, past_v = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
                past_mask = torch.zeros(batch, width, dtype=torch.bool)
                tgt = torch.randint(4, c.tgt_vocab_size, (batch, 1), generator=g)
                logits = torch.zeros(batch, 1, c.tgt_vocab_size)
                new_k, new_v = torch.zeros((*shape[:3], 1, shape[4])), torch.zeros((*shape[:3], 1, shape[4]))
                for r in range(batch):
                    p, one = int(lengths[r]), slice(r, r + 1)
                    pk = pv = None
                    if p:
                        prefix = torch.randint(4, c.tgt_vocab_size, (1, p), generator=g)
                        _, pk, pv = model.decode(prefix, ck[:, one], cv[:, one], mask[one])
                        past_k[:, r, :, width - p :], past_v[:, r, :, width - p :] = pk[:, 0], pv[:, 0]
                        past_mask[r, width - p :] = True
                    out, nk, nv = model.decode(tgt[one], ck[:, one], cv[:, one], mask[one], pk, pv)
                    logits[r], new_k[:, r], new_v[:, r] = out[0], nk[:, 0, :, -1:], nv[:, 0, :, -1:]
                feeds = {"tgt_ids": tgt, "positions": lengths[:, None], "past_k": past_k, "past_v": past_v,
                         "past_mask": past_mask, "cross_k": ck, "cross_v": cv, "src_mask": mask}  # fmt: skip
                expected = {"logits": logits, "present_k": torch.cat([past_k, new_k], 3),
                            "present_v": torch.cat([past_v, new_v], 3)}  # fmt: skip
                case = f"batch={batch} src_len={s} past_lens={lengths.tolist()}"
                checks.append(_check(session, ROWS_STEP, case, feeds, expected, atol, rtol))
    return checks


def decode_check(
    variant: str,
    reference: Backend,
    candidate: Backend,
    tok: G2PTokenizers,
    words: Sequence[str],
    beam_size: int,
    max_len: int,
) -> tuple[DecodeCheck, list[tuple[str, ...]]]:
    """Decode ``words`` with both backends through the same decoding code; token sequences must be identical."""
    options = DecodeOptions(beam_size=beam_size, nbest=1, max_len=max_len)
    ref = [r[0].phonemes for r in transcribe(reference, tok, words, options)]
    cand = [r[0].phonemes for r in transcribe(candidate, tok, words, options)]
    return same_outputs(variant, beam_size, words, ref, cand), cand


def same_outputs(
    variant: str, beam_size: int, words: Sequence[str], ref: list[tuple[str, ...]], cand: list[tuple[str, ...]]
) -> DecodeCheck:
    """The verdict of two decodings of ``words``: identical token sequences, with up to 5 differing examples."""
    same = [a == b for a, b in zip(ref, cand, strict=True)]
    rows = zip(words, ref, cand, same, strict=True)
    examples = [f"{w}: reference={' '.join(a)} candidate={' '.join(b)}" for w, a, b, s in rows if not s][:5]
    return DecodeCheck(
        variant=variant, beam_size=beam_size, words=len(words), identical=sum(same), ok=all(same), examples=examples
    )


def rows_decode_check(
    variant: str,
    reference: Backend,
    candidate: OrtBackend,
    tok: G2PTokenizers,
    words: Sequence[str],
    max_len: int,
    beam_size: int = 1,
) -> DecodeCheck:
    """Decoding by continuous batching (``g2p.continuous``: the words join a running batch a few at a time, at
    different steps; a beam word K rows) against the reference's decoding, greedy or with ``beam_size``: identical
    token sequences (the best hypothesis)."""
    options = DecodeOptions(beam_size=beam_size, nbest=1, max_len=max_len)
    ref = [r[0].phonemes for r in transcribe(reference, tok, words, options)]
    hyps = decode_joining(candidate, tok.encode_source(words), options)
    cand = [tuple(tok.decode_target(h.tokens)) for h in hyps]
    return same_outputs(variant, beam_size, words, ref, cand)
