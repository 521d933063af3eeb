"""The text front end over gRPC: Phonemize and the v2 model g2p_text, on the shipped bundle (with its dictionary)."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
from service_helpers import running_server

from service.api.g2p.v1 import g2p_pb2 as pb
from service.api.g2p.v1 import g2p_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def user_lexicon(tmp_path_factory):
    path = tmp_path_factory.mktemp("lex") / "user.tsv"
    path.write_text("# a deployment's own words\ntomato\tT AH0 M AA1 T OW2\nzorbleflax\tZ AO1 R B AH0 L F L AE2 K S\n")
    return path


@pytest.fixture(scope="module")
def server(user_lexicon):
    with running_server(user_lexicon=user_lexicon, user_lexicon_check_s=0.0, max_texts_per_request=4,
                        max_text_chars=200) as s:  # fmt: skip
        yield s


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield pb_grpc.G2PStub(ch)


def phonemize(stub, *texts, **options):
    return stub.Phonemize(pb.PhonemizeRequest(texts=list(texts), options=pb.PhonemizeOptions(**options)), timeout=30)


def words_of(result):
    return [(w.word, w.phonemes, w.source) for t in result.tokens for w in t.words]


def test_a_sentence_gets_spans_spoken_words_and_sources(stub):
    text = "Dr. Smith paid $5.20 on the 3rd, didn't he? Zyxqwerblat!"
    r = phonemize(stub, text).results[0]
    for t in r.tokens:
        assert text[t.start : t.end] == t.text
    assert [t.text for t in r.tokens][:4] == ["Dr.", "Smith", "paid", "$5.20"]
    money = next(t for t in r.tokens if t.text == "$5.20")
    assert money.kind == pb.TOKEN_KIND_NUMBER
    assert [w.word for w in money.words] == ["five", "dollars", "and", "twenty", "cents"]
    spoken = words_of(r)
    assert ("doctor", "D AA1 K T ER0", pb.SOURCE_LEXICON) in spoken
    assert ("didn't", "D IH1 D AH0 N T", pb.SOURCE_LEXICON) in spoken
    unknown = next(w for t in r.tokens for w in t.words if w.word == "zyxqwerblat")
    assert unknown.source == pb.SOURCE_MODEL and unknown.HasField("score") and unknown.phonemes
    assert r.phonemes.startswith("D AA1 K T ER0 | S M IH1 TH | P EY1 D | F AY1 V | D AA1 L ER0 Z")
    assert " , | D IH1 D AH0 N T | HH IY1 ?" in r.phonemes


def test_lexicon_alternatives_and_alphabets(stub):
    r = phonemize(stub, "hello").results[0]
    hello = r.tokens[0].words[0]
    assert hello.phonemes == "HH AH0 L OW1" and hello.source == pb.SOURCE_LEXICON
    assert "HH EH0 L OW1" in hello.alternatives
    assert phonemize(stub, "Hello, world!", alphabet=pb.ALPHABET_IPA).results[0].phonemes == "həˈloʊ, ˈwɝld!"
    plain = phonemize(stub, "Hello, world!", alphabet=pb.ALPHABET_ARPABET_NO_STRESS).results[0].phonemes
    assert plain == "HH AH L OW , | W ER L D !"


def test_user_lexicon_and_request_overrides_win(stub):
    r = phonemize(stub, "A tomato.").results[0]
    tomato = next(w for t in r.tokens for w in t.words if w.word == "tomato")
    assert (tomato.phonemes, tomato.source) == ("T AH0 M AA1 T OW2", pb.SOURCE_USER)
    assert "T AH0 M EY1 T OW2" in tomato.alternatives  # the dictionary's pronunciation stays an alternative
    r = phonemize(stub, "A tomato.", lexicon={"tomato": "T OW1 M EY1 T OW2"}).results[0]
    tomato = next(w for t in r.tokens for w in t.words if w.word == "tomato")
    assert (tomato.phonemes, tomato.source) == ("T OW1 M EY1 T OW2", pb.SOURCE_USER)


def test_user_lexicon_reloads_and_a_bad_file_is_refused_whole(stub, user_lexicon):
    original = user_lexicon.read_text()
    try:
        user_lexicon.write_text(original + "gif\tJH IH1 F\n")
        _touch_later(user_lexicon)
        assert ("gif", "JH IH1 F", pb.SOURCE_USER) in words_of(phonemize(stub, "gif").results[0])
        user_lexicon.write_text("tomato\tT AH0 M EY1 T OW2\nbroken\tNOT A PHONEME\n")  # line 2 is bad
        _touch_later(user_lexicon)
        still = words_of(phonemize(stub, "gif tomato").results[0])
        assert ("gif", "JH IH1 F", pb.SOURCE_USER) in still  # the previous lexicon keeps serving
        assert ("tomato", "T AH0 M AA1 T OW2", pb.SOURCE_USER) in still
    finally:
        user_lexicon.write_text(original)
        _touch_later(user_lexicon)
        phonemize(stub, "x")


def _touch_later(path):
    """A new mtime even on a coarse-clock file system."""
    t = time.time() + 1 + np.random.default_rng().random()
    os.utime(path, (t, t))


def test_unpronounceable_tokens_are_skipped_not_fatal(stub):
    text = "Hi 😀 你好 there"
    r = phonemize(stub, text).results[0]
    skipped = [t for t in r.tokens if t.kind == pb.TOKEN_KIND_SKIPPED]
    assert skipped and all(t.skip_reason and not t.words for t in skipped)
    assert r.phonemes == "HH AY1 | DH EH1 R"


def test_a_word_longer_than_the_model_reads_is_split(stub):
    word = "pneumonoultramicroscopicsilicovolcanoconiosisxyzzyplughfoobarbazquux" * 2
    r = phonemize(stub, word).results[0]
    assert r.tokens[0].words[0].source == pb.SOURCE_MODEL and r.tokens[0].words[0].phonemes


@pytest.mark.parametrize(
    ("texts", "options", "message"),
    [
        (["a"] * 5, {}, "5 texts, the limit is 4 (max_texts_per_request)"),
        (["a" * 201], {}, "texts[0]: 201 characters, the limit is 200 (max_text_chars)"),
        ([], {}, "at least one text"),
        (["a"], {"lexicon": {"tomato": "TOE MAY TOE"}}, "options.lexicon: lexicon override 'tomato'"),
        (["a"], {"lexicon": {"to mato": "T OW1"}}, "options.lexicon"),
    ],
)
def test_limits_and_bad_overrides_are_invalid_argument(stub, texts, options, message):
    with pytest.raises(grpc.RpcError) as err:
        phonemize(stub, *texts, **options)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()


def test_get_model_reports_text_limits_and_lexicon_sizes(stub):
    info = stub.GetModel(pb.GetModelRequest())
    assert (info.limits.max_texts, info.limits.max_text_chars) == (4, 200)
    assert info.lexicon_words > 100_000 and info.user_lexicon_words >= 2


def test_the_same_text_gets_the_same_answer_whatever_is_batched_with_it(stub):
    alone = phonemize(stub, "Quixotically, Brzezinski zorbleflaxed.").results[0].phonemes
    together = phonemize(stub, "Quixotically, Brzezinski zorbleflaxed.", "Glarbonic snerfwood", "x").results[0]
    assert together.phonemes == alone


def test_unknown_words_are_cached(server, stub):
    phonemize(stub, "Florbtastic")
    before = server.metrics.model_cache_hits._value.get()
    phonemize(stub, "Florbtastic")
    assert server.metrics.model_cache_hits._value.get() == before + 1


TRITON_PROBE = """
import json, sys
import numpy as np
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException
client = tc.InferenceServerClient(sys.argv[1])
def infer(texts, alphabet=None):
    inp = tc.InferInput("text_input", [len(texts)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
    params = {"alphabet": alphabet} if alphabet else None
    try:
        out = client.infer("g2p_text", [inp], outputs=[tc.InferRequestedOutput("text_output")], parameters=params)
    except InferenceServerException as exc:
        return [str(exc.status()), exc.message()]
    return [b.decode() for b in out.as_numpy("text_output")]
print(json.dumps({"ready": client.is_model_ready("g2p_text"), "arpabet": infer(["Hello, world!", "It costs $3."]),
                  "ipa": infer(["Hello, world!"], "ipa"), "too_many": infer(["a"] * 5), "bad": infer(["a"], "x")}))
"""


def test_tritonclient_g2p_text(server):
    """In its own interpreter: tritonclient's protos clash with the server's in one process."""
    if importlib.util.find_spec("tritonclient") is None:
        pytest.skip("tritonclient is not installed")
    proc = subprocess.run([sys.executable, "-c", TRITON_PROBE, f"127.0.0.1:{server.port}"],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["ready"]
    assert r["arpabet"][0] == "HH AH0 L OW1 , | W ER1 L D !"
    assert r["arpabet"][1].endswith("K AA1 S T S | TH R IY1 | D AA1 L ER0 Z .")
    assert r["ipa"] == ["həˈloʊ, ˈwɝld!"]
    assert r["too_many"][0] == "StatusCode.INVALID_ARGUMENT" and "max_texts_per_request" in r["too_many"][1]
    assert r["bad"][0] == "StatusCode.INVALID_ARGUMENT" and "parameters.alphabet" in r["bad"][1]


def test_client_text_mode(server, capsys, monkeypatch):
    from service.client import main

    target = ["--target", f"127.0.0.1:{server.port}"]
    assert main(["--text", "Hello, world!", "It's 3pm.", *target]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "HH AH0 L OW1 , | W ER1 L D !",
        "IH1 T S | TH R IY1 | P IY1 | EH1 M .",
    ]
    assert main(["--text", "Hello, world!", "--ipa", *target]) == 0
    assert capsys.readouterr().out.strip() == "həˈloʊ, ˈwɝld!"
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n\nworld\n"))
    assert main(["--text", "--json", *target]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in lines] == ["hello", "world"]
    assert lines[0]["tokens"][0]["words"][0] == {
        "word": "hello", "phonemes": "HH AH0 L OW1", "source": "SOURCE_LEXICON", "alternatives": ["HH EH0 L OW1"]
    }  # fmt: skip
    assert main(["--text", "a" * 201, *target]) == 1
    assert "max_text_chars" in capsys.readouterr().err


def test_text_words_are_counted_by_source_and_cache_hits_per_occurrence():
    from g2p.text.phonemizer import Phonemizer
    from service.metrics import Metrics

    g = Phonemizer({"hello": (("HH", "AH0"),)}, lambda words: [(("Z",), -1.0) for _ in words], max_word_chars=20)
    g("zz")  # cached from now on
    m = Metrics()
    m.count_text(g.phonemize(["hello zz zz", "Hello qq!"]), cache_size=5)
    assert {s: m.text_words.labels(s)._value.get() for s in ("lexicon", "model", "user")} == {
        "lexicon": 2, "model": 3, "user": 0
    }  # fmt: skip
    assert m.model_cache_hits._value.get() == 2 and m.model_cache_size._value.get() == 5
