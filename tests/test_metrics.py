from __future__ import annotations

import pytest

from g2p.metrics import error_rates, score_word, strip_stress


def test_strip_stress():
    assert strip_stress(["AH0", "B", "AW1", "T", "ER2"]) == ("AH", "B", "AW", "T", "ER")


def test_any_reference_counts_and_closest_gives_phone_errors():
    refs = [["T", "AH", "M", "EY", "T", "OW"], ["T", "AH", "M", "AA", "T", "OW"]]
    assert score_word(["T", "AH", "M", "AA", "T", "OW"], refs).correct
    s = score_word(["T", "AH", "M", "AA", "T"], refs)
    assert (s.correct, s.errors, s.ref_len) == (False, 1, 6)


def test_error_rates_with_and_without_stress():
    hyps = {"a": ["AH0"], "b": ["B", "IY1"], "c": ["S", "IY0"]}
    refs = {"a": [["AH0"], ["EY1"]], "b": [["B", "IY0"]], "c": [["S", "IY1"]]}
    plain = error_rates(hyps, refs, stress=False)
    assert (plain.wer, plain.per) == (0.0, 0.0)
    stressed = error_rates(hyps, refs, stress=True)
    assert stressed.word_errors == 2
    assert stressed.per == pytest.approx(100 * 2 / 5)


def test_missing_hypothesis_is_an_error():
    with pytest.raises(ValueError, match="no hypothesis"):
        error_rates({}, {"a": [["AH0"]]}, stress=False)
