"""Request checks: a word longer than the model's source positions is refused naming the limit and the input."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from g2p.bundle import Limits
from service.settings import load_settings
from service.validation import InvalidArgument, check_inputs


def model(max_source_len: int = 64) -> SimpleNamespace:
    """The parts of a ModelVersion that check_inputs reads."""
    limits = Limits(max_source_len=max_source_len, max_target_len=64)
    return SimpleNamespace(
        normalize=str.lower, alphabet=frozenset("ab"), manifest=SimpleNamespace(limits=limits),
        max_input_chars=limits.max_word_chars,
    )  # fmt: skip


def test_a_word_longer_than_the_models_source_positions_is_invalid_argument():
    settings = load_settings(max_input_chars=100)  # the model's limit is the tighter one
    assert check_inputs("inputs", ["ab", "a" * 63], model(), settings) == ["ab", "a" * 63]
    with pytest.raises(InvalidArgument) as err:
        check_inputs("inputs", ["ab", "a" * 64], model(), settings)
    assert str(err.value) == (
        "inputs[1]: 64 characters exceed the limit of 63 "
        "(the model's max_source_len: 64 source positions, one for </s>)"
    )


def test_the_settings_limit_is_named_when_it_is_the_tighter_one():
    with pytest.raises(
        InvalidArgument, match=r"^inputs\[0\]: 49 characters exceed the limit of 48 \(max_input_chars\)$"
    ):
        check_inputs("inputs", ["a" * 49], model(), load_settings(max_input_chars=48))
