"""The text front end as a library: lexicon precedence, the model for the rest, caching, long words, lexicon files."""

from __future__ import annotations

import pytest

from g2p.lexicon import LexiconError, read_lexicon_file, read_user_lexicon, to_lexicon, write_lexicon_file
from g2p.text.phonemizer import ModelCache, Phonemizer, join_flat, pieces, validate_overrides

INVENTORY = {"HH", "AH0", "L", "OW1", "EH0", "T", "M", "EY1", "AA1", "OW2", "W", "ER1", "D", "Z", "IY1"}
LEXICON = to_lexicon([("hello", "HH AH0 L OW1"), ("hello", "HH EH0 L OW1"), ("tomato", "T AH0 M EY1 T OW2"),
                      ("a", "AH0"), ("a", "EY1"), ("world", "W ER1 L D")])  # fmt: skip


class FakeModel:
    """Records what it is asked; answers every word with one phoneme per letter."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, words):
        self.calls.append(list(words))
        return [(tuple(c.upper() for c in w), -0.5) for w in words]


def test_precedence_overrides_user_lexicon_model():
    model = FakeModel()
    g = Phonemizer(LEXICON, model, max_word_chars=20, user=to_lexicon([("tomato", "T AH0 M AA1 T OW2")]))
    r = g("Hello tomato qux", overrides={"hello": (("HH", "EH0", "L", "OW1"),)})
    words = [w for t in r.tokens for w in t.words]
    assert [(w.word, w.source) for w in words] == [("hello", "user"), ("tomato", "user"), ("qux", "model")]
    assert words[0].phonemes == ("HH", "EH0", "L", "OW1") and ("HH", "AH0", "L", "OW1") in words[0].alternatives
    assert words[1].alternatives == (("T", "AH0", "M", "EY1", "T", "OW2"),)
    assert words[2].phonemes == ("Q", "U", "X") and words[2].score == -0.5
    assert model.calls == [["qux"]]


def test_unknown_words_go_to_the_model_once_per_call_and_are_cached():
    model = FakeModel()
    g = Phonemizer(LEXICON, model, max_word_chars=20, cache_size=2)
    g(["blorp blorp", "zing blorp"])
    assert model.calls == [["blorp", "zing"]]
    r = g("blorp")
    assert model.calls == [["blorp", "zing"]] and r.tokens[0].words[0].cached
    g("aaa bbb ccc")  # capacity 2: the oldest entries leave
    assert len(g.cache) == 2


def test_cache_is_bounded_and_counts():
    c = ModelCache(1)
    c.put("a", (("A",), 0.0))
    c.put("b", (("B",), 0.0))
    assert c.get("a") is None and c.get("b") == (("B",), 0.0) and (c.hits, c.misses) == (1, 1)
    assert len(ModelCache(0)) == 0


def test_long_words_are_cut_into_pieces_the_model_reads():
    assert pieces("abcdefghij", 4) == ["abcd", "efgh", "ij"]
    assert all(len(p) <= 4 for p in pieces("ab'cdefgh'ijk", 4))
    model = FakeModel()
    g = Phonemizer({}, model, max_word_chars=5)
    r = g("abcdefghijkl")
    assert r.tokens[0].words[0].phonemes == tuple("ABCDEFGHIJKL")
    assert all(len(w) <= 5 for call in model.calls for w in call)


def test_spelled_letters_use_letter_names_and_the_article_stays_a_word():
    g = Phonemizer(LEXICON, FakeModel(), max_word_chars=20)
    r = g("a FBX")
    words = [(w.word, w.phonemes) for t in r.tokens for w in t.words]
    assert words[0] == ("a", ("AH0",))  # the article: the dictionary's first pronunciation
    assert words[1:] == [("f", ("EH1", "F")), ("b", ("B", "IY1")), ("x", ("EH1", "K", "S"))]


def test_flat_strings_keep_word_boundaries_and_punctuation():
    parts = [(True, "HH AH0 L OW1"), (False, ","), (True, "W ER1 L D"), (False, "!")]
    assert join_flat(parts, ipa=False) == "HH AH0 L OW1 , | W ER1 L D !"
    assert join_flat([(True, "həˈloʊ"), (False, ","), (True, "ˈwɝld"), (False, "!")], ipa=True) == "həˈloʊ, ˈwɝld!"
    g = Phonemizer(LEXICON, FakeModel(), max_word_chars=20)
    assert g("Hello, world!").phonemes() == "HH AH0 L OW1 , | W ER1 L D !"
    assert g("Hello, world!").phonemes("arpabet-nostress") == "HH AH L OW , | W ER L D !"


def test_without_a_lexicon_the_model_answers_everything():
    model = FakeModel()
    r = Phonemizer(None, model, max_word_chars=20)("hello world")
    assert [w.source for t in r.tokens for w in t.words] == ["model", "model"]


def test_lexicon_file_round_trip_is_byte_identical(tmp_path):
    entries = [("hello", "HH AH0 L OW1"), ("hello", "HH EH0 L OW1"), ("world", "W ER1 L D")]
    a = write_lexicon_file(tmp_path / "a.tsv.gz", entries).read_bytes()
    b = write_lexicon_file(tmp_path / "b.tsv.gz", entries).read_bytes()
    assert a == b
    assert read_lexicon_file(tmp_path / "a.tsv.gz") == to_lexicon(entries)
    (tmp_path / "bad.gz").write_bytes(b"not gzip")
    with pytest.raises(LexiconError, match="not a gzip-compressed"):
        read_lexicon_file(tmp_path / "bad.gz")


def test_user_lexicon_validation_names_the_line(tmp_path):
    p = tmp_path / "user.tsv"
    p.write_text("# comment\nTomato\tT AH0 M AA1 T OW2\n\ntomato\tT AH0 M EY1 T OW2\n")
    first, second = read_user_lexicon(p, INVENTORY)["tomato"]
    assert (" ".join(first), " ".join(second)) == ("T AH0 M AA1 T OW2", "T AH0 M EY1 T OW2")
    p.write_text("hello\tHH AH0 L OW1\nworld\tW ER1 L DX\n")
    with pytest.raises(LexiconError, match=r"user\.tsv:2: word 'world': phonemes \['DX'\]"):
        read_user_lexicon(p, INVENTORY)
    p.write_text("hello HH AH0 L OW1\n")  # no tab
    with pytest.raises(LexiconError, match=r":1: word ''"):
        read_user_lexicon(p, INVENTORY)
    with pytest.raises(LexiconError, match="cannot be read"):
        read_user_lexicon(tmp_path / "missing.tsv", INVENTORY)


def test_request_overrides_are_validated():
    table = validate_overrides({"Tomato": "T AH0 M AA1 T OW2"}, INVENTORY)
    assert table == {"tomato": (tuple(["T", "AH0", "M", "AA1", "T", "OW2"]),)}
    with pytest.raises(LexiconError, match="lexicon override 'x y'"):
        validate_overrides({"x y": "T"}, INVENTORY)


def test_lexicon_pronunciations_kept_across_calls_never_hide_user_words():
    g = Phonemizer(LEXICON, FakeModel(), max_word_chars=20)
    assert [w.source for w in g("hello a A").tokens[0].words] == ["lexicon"]
    mine = {"hello": (("HH", "EH0", "L", "OW1"),), "a": (("EY1",),)}
    r = g("hello a A", overrides=mine)
    assert [(w.word, w.phonemes, w.source) for t in r.tokens for w in t.words] == [
        ("hello", ("HH", "EH0", "L", "OW1"), "user"), ("a", ("EY1",), "user"), ("a", ("EY1",), "user")
    ]  # fmt: skip
    r = g.phonemize(["hello x"], user=mine | {"x": (("EH1", "K", "S", "T"),)})[0]
    assert [w.source for t in r.tokens for w in t.words] == ["user", "user"]
    assert r.tokens[1].words[0].phonemes == ("EH1", "K", "S", "T")  # a spelled letter of the user lexicon
    assert g("hello a").sources() == ["lexicon", "lexicon"]  # the kept ones again
    g.lexicon = {"hello": (("HH", "IY1"),)}  # a replaced lexicon: nothing kept from the old one
    assert g("hello").tokens[0].words[0].phonemes == ("HH", "IY1")


def test_kept_lexicon_pronunciations_are_bounded(monkeypatch):
    from g2p.text import phonemizer

    monkeypatch.setattr(phonemizer, "KEPT_PRONS", 2)
    g = Phonemizer(LEXICON, FakeModel(), max_word_chars=20)
    for _ in range(2):
        r = g("hello tomato a world hello")
        assert [w.phonemes[0] for t in r.tokens for w in t.words] == ["HH", "T", "AH0", "W", "HH"]
        assert len(g._lexicon_prons()[0]) <= 2


def test_results_build_their_tokens_on_demand_and_stay_immutable():
    import pickle
    from dataclasses import FrozenInstanceError

    from g2p.text.phonemizer import TextPron

    g = Phonemizer(LEXICON, FakeModel(), max_word_chars=20)
    r = g("Hello, world! FBX zd \U0001f600 -- world?")
    eager = TextPron(r.text, r.tokens)
    assert eager == r and hash(eager) == hash(r) and pickle.loads(pickle.dumps(r)) == r
    for alphabet in ("arpabet", "arpabet-nostress", "ipa"):  # the flat string as join_flat states it
        parts = []
        for t in r.tokens:
            if t.token.kind == "punctuation":
                parts.append((False, t.token.text.strip()))
            parts.extend((True, w.render(alphabet)) for w in t.words)
        assert eager.phonemes(alphabet) == r.phonemes(alphabet) == join_flat(parts, ipa=alphabet == "ipa")
    assert r.tokens[6].token.kind == "skipped" and "U+1F600" in r.tokens[6].token.reason
    with pytest.raises(FrozenInstanceError):
        r.text = "other"  # type: ignore[misc]


def test_from_bundle_splits_batches_of_texts_among_its_sessions_with_the_same_answers():
    from conftest import ROOT

    from g2p.text.phonemizer import MANY_WORDS

    g = Phonemizer.from_bundle(ROOT / "models" / "g2p" / "1")
    assert g.model is not None
    words = [f"zorb{'a' * i}lex" for i in range(MANY_WORDS + 4)]
    together = g.model(words)  # split between two sessions decoding at once (the second made now)
    alone = [g.model([w])[0] for w in words]  # one session
    assert [p for p, _ in together] == [p for p, _ in alone]
    texts = [f"The {w} walked." for w in words]
    assert [r.phonemes() for r in g(texts)] == [g(t).phonemes() for t in texts]
