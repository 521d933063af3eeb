"""Request checks shared by both APIs. Each failure names the field and the limit (-> INVALID_ARGUMENT).

Everything in a request is checked before any of it is queued, so a bad input never costs decoding time and
a request is either served whole or refused whole.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from g2p.decoding import DecodeOptions
from service.runtime import ModelVersion
from service.settings import Settings


class InvalidArgument(ValueError):
    pass


def input_chars_limit(model: ModelVersion, settings: Settings) -> tuple[int, str]:
    """The most characters a word may have, and which limit that is: ``max_input_chars``, or the model's source
    positions (the manifest's ``max_source_len``, one of them for ``</s>``; a longer word cannot be encoded)."""
    if settings.max_input_chars <= model.max_input_chars:
        return settings.max_input_chars, "max_input_chars"
    positions = model.manifest.limits.max_source_len
    return model.max_input_chars, f"the model's max_source_len: {positions} source positions, one for </s>"


def check_inputs(field: str, inputs: Sequence[str], model: ModelVersion, settings: Settings) -> list[str]:
    """The normalised words (what the model sees), or ``InvalidArgument`` naming the first bad one."""
    if not inputs:
        raise InvalidArgument(f"{field}: empty batch; send 1 to {settings.max_inputs_per_request} inputs")
    if len(inputs) > settings.max_inputs_per_request:
        raise InvalidArgument(
            f"{field}: {len(inputs)} inputs exceed the limit of {settings.max_inputs_per_request} per request"
        )
    limit, which = input_chars_limit(model, settings)
    words = []
    for i, raw in enumerate(inputs):
        word = model.normalize(raw)
        if not word:
            raise InvalidArgument(f"{field}[{i}]: empty string")
        if len(word) > limit:
            raise InvalidArgument(f"{field}[{i}]: {len(word)} characters exceed the limit of {limit} ({which})")
        bad = sorted({c for c in word if c not in model.alphabet})
        if bad:
            shown = ", ".join(repr(c) for c in bad[:10])
            raise InvalidArgument(
                f"{field}[{i}]: characters outside the model's alphabet: {shown} "
                f"(accepted: {''.join(sorted(model.alphabet))}, case-insensitive)"
            )
        words.append(word)
    return words


def decode_options(
    model: ModelVersion,
    settings: Settings,
    beam_size: int | None,
    num_hypotheses: int | None,
    max_output_tokens: int | None,
    length_penalty: float | None,
    prefix: str = "options.",
) -> DecodeOptions:
    """``None`` = not given (the default applies); an explicit 0 or out-of-range value is an error."""
    beam = settings.default_beam_size if beam_size is None else beam_size
    if not 1 <= beam <= settings.max_beam_size:
        raise InvalidArgument(f"{prefix}beam_size: {beam} is out of range [1, {settings.max_beam_size}]")
    nbest = 1 if num_hypotheses is None else num_hypotheses
    if not 1 <= nbest <= beam:
        raise InvalidArgument(f"{prefix}num_hypotheses: {nbest} is out of range [1, beam_size={beam}]")
    limit = min(settings.max_output_tokens, model.max_output_tokens)
    max_len = limit if max_output_tokens is None else max_output_tokens
    if not 1 <= max_len <= limit:
        raise InvalidArgument(f"{prefix}max_output_tokens: {max_len} is out of range [1, {limit}]")
    lp = 1.0 if length_penalty is None else float(length_penalty)
    if not (math.isfinite(lp) and 0.0 <= lp <= 10.0):
        raise InvalidArgument(f"{prefix}length_penalty: {lp} is out of range [0, 10]")
    return DecodeOptions(beam_size=beam, nbest=nbest, length_penalty=lp, max_len=max_len)
