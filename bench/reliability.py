"""Reliability suites against the real server (``python -m service`` in its own process): overload, hot reload under
load, and a soak of mixed traffic. Each check passes or fails; the exit code says whether all passed.

    python bench/reliability.py all [--out bench/results/reliability]     # make soak: about 13 minutes
    python bench/reliability.py overload|reload|soak
    python bench/reliability.py all --quick                               # make bench-quick: about 1 minute

- overload: the capacity of 8 closed-loop single-word clients, then an open loop (Poisson arrivals) at 4x that for
  30 s, then bursts of the heaviest valid requests (the most inputs, the longest words, the largest beam), 4 at once:
  every answer OK or RESOURCE_EXHAUSTED, the p99 of accepted requests <= the time to drain what the two queues can
  hold at the measured capacity plus one batch (its own), RSS after <= 1.2x before, SERVING after; the server's
  side of the wait reported.
- reload: 16 clients for 60 s while 10 new versions appear in the model repository, one of them corrupt (a
  truncated graph) and one that failed its parity gate: 0 failed requests, both bad ones FAILED with their reason,
  the last good one serving.
- soak: 10 minutes of mixed traffic (Generate greedy and beam 5, GenerateStream, Phonemize, v2 g2p and g2p_text,
  cancellations, short deadlines), RSS sampled every 5 s: growth <= 5 % after the first minute (the median of the
  last minute's samples against the second minute's: one sample swings by about 5 %), 0 unexpected statuses; the
  RSS curve as a PNG.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

from common import rss_mb  # noqa: E402  (bench/: this script's folder)
from service_bench import build_loadgen, free_port, wait_ready  # noqa: E402

from g2p.lexicon import read_test_split  # noqa: E402
from service import allocator  # noqa: E402
from service.api.g2p.v1 import g2p_pb2 as pb  # noqa: E402
from service.api.g2p.v1 import g2p_pb2_grpc as pb_grpc  # noqa: E402
from service.api.inference import grpc_service_pb2 as v2  # noqa: E402
from service.api.inference import grpc_service_pb2_grpc as v2_grpc  # noqa: E402
from service.client import G2PClient  # noqa: E402
from service.server import PENDING_CALLS_HARD_LIMIT  # noqa: E402
from service.settings import Settings  # noqa: E402

WORDS = sorted(read_test_split(ROOT / "data" / "cmudict-0.7b.test"))
SENTENCES = [
    "Dr. Smith paid $5.20 on the 3rd, didn't he?",
    "The FBI met NASA at 10:30am in Wrocław.",
    "Zorbleflax and glarbonic snerfwood cost 50% less in 1990.",
    "Hello, world! 😀 你好",
]


# ------------------------------------------------------------------------------------------------ the server
@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    start_s: float

    def rss_mb(self) -> float:
        return rss_mb(self.proc.pid)

    def allocator(self) -> str:
        """The C allocator the server process runs on (``allocator`` setting: jemalloc where installed)."""
        return allocator.active(Path(f"/proc/{self.proc.pid}/maps"))

    def serving(self) -> bool:
        with G2PClient(f"127.0.0.1:{self.port}") as c:
            return c.wait_serving(5.0)

    def model(self) -> pb.ModelInfo:
        with G2PClient(f"127.0.0.1:{self.port}") as c:
            return c.get_model()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start(root: Path = ROOT / "models", **env: str) -> Server:
    port = free_port()
    full = os.environ | {"G2P_PORT": str(port), "G2P_MODEL_REPOSITORY": str(root), "G2P_METRICS_PORT": "-1",
                         "G2P_LOG_LEVEL": "WARNING"} | env  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=full)
    wait_ready(proc, port, health=True)
    return Server(proc, port, time.monotonic() - t0)


# ------------------------------------------------------------------------------------------------ requests
@dataclass
class Record:
    kind: str
    code: str
    seconds: float


@dataclass
class Log:
    records: list[Record] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, code: str, seconds: float) -> None:
        with self.lock:
            self.records.append(Record(kind, code, seconds))

    def codes(self, kind: str | None = None) -> Counter[str]:
        return Counter(r.code for r in self.records if kind is None or r.kind == kind)

    def p99_ok(self, kind: str | None = None) -> float:
        ok = sorted(r.seconds for r in self.records if r.code == "OK" and (kind is None or r.kind == kind))
        return ok[int(0.99 * (len(ok) - 1))] if ok else float("nan")


def timed(log: Log, kind: str, fn: Callable[[], Any]) -> None:
    t0 = time.perf_counter()
    try:
        fn()
        code = "OK"
    except grpc.RpcError as exc:
        code = exc.code().name
    except grpc.FutureCancelledError:
        code = "CANCELLED"
    except Exception as exc:  # anything else is recorded (an unexpected status), never kills the client thread
        code = type(exc).__name__
    log.add(kind, code, time.perf_counter() - t0)


def v2_text(model: str, texts: list[str]) -> v2.ModelInferRequest:
    request = v2.ModelInferRequest(model_name=model)
    t = request.inputs.add(name="text_input", datatype="BYTES", shape=[len(texts)])
    t.contents.bytes_contents.extend(s.encode() for s in texts)
    return request


class Clients:
    """``n`` threads, each with its own channel, calling ``one(stubs, rng)`` until ``stop`` is set."""

    def __init__(self, port: int, n: int, one: Callable[[Any, random.Random], None]) -> None:
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(port, one, i), daemon=True) for i in range(n)]

    def _run(self, port: int, one: Callable[[Any, random.Random], None], seed: int) -> None:
        rng = random.Random(seed)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stubs = (pb_grpc.G2PStub(ch), v2_grpc.GRPCInferenceServiceStub(ch))
            while not self.stop.is_set():
                one(stubs, rng)

    def __enter__(self) -> Clients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def check(results: dict[str, Any], name: str, ok: bool, detail: str) -> None:
    results.setdefault("checks", []).append({"check": name, "ok": bool(ok), "detail": detail})
    print(f"  [{'ok' if ok else 'FAILED'}] {name}: {detail}", flush=True)


# ------------------------------------------------------------------------------------------------ overload
def metric_samples(metrics_port: int, name: str) -> list[tuple[str, dict[str, str], float]]:
    """The samples (name, labels, value) of one metric family of a server's /metrics page."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as page:
        text = page.read().decode()
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text)
            if family.name == name for s in family.samples]  # fmt: skip


def histogram_quantile(metrics_port: int, name: str, q: float) -> float:
    """The upper bound of the bucket that holds the ``q`` quantile of a server histogram (its /metrics page)."""
    buckets = sorted((float(labels["le"]), v) for n, labels, v in metric_samples(metrics_port, name)
                     if n == f"{name}_bucket")  # fmt: skip
    total = buckets[-1][1] if buckets else 0.0
    return next((le for le, n in buckets if n >= q * total), float("nan")) if total else float("nan")


def histogram_totals(metrics_port: int, name: str) -> tuple[float, float]:
    """A server histogram's _sum and _count (both 0 before its first observation)."""
    values = {n: v for n, _, v in metric_samples(metrics_port, name)}
    return values.get(f"{name}_sum", 0.0), values.get(f"{name}_count", 0.0)


def overload(quick: bool) -> dict[str, Any]:
    print("overload", flush=True)
    res: dict[str, Any] = {}
    metrics_port = free_port()
    server = start(G2P_METRICS_PORT=str(metrics_port))
    res["allocator"] = server.allocator()
    try:
        warm = server.rss_mb()
        log = Log()
        seconds = 3.0 if quick else 10.0

        def single(stubs: Any, rng: random.Random) -> None:
            w = rng.choice(WORDS)
            timed(log, "closed", lambda: stubs[0].Generate(pb.GenerateRequest(inputs=[w]), timeout=30))

        with Clients(server.port, 8, single):
            time.sleep(seconds)
        capacity = sum(c for k, c in log.codes("closed").items() if k == "OK") / seconds
        res["capacity_rps"] = round(capacity, 1)

        # open loop at 4x capacity: arrivals do not wait for answers
        rate, duration = 4 * capacity, (5.0 if quick else 30.0)
        binary = build_loadgen()
        res["open_loop_generator"] = "C++ (bench/loadgen --rate)" if binary else "Python (gRPC futures)"
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = pb_grpc.G2PStub(ch)
            batches_before = histogram_totals(metrics_port, "g2p_batch_seconds")
            if binary:
                open_loop_cpp(binary, server.port, log, rate, duration)
            else:
                open_loop_python(stub, log, rate, duration)
            # where accepted requests waited: the engine's queue (server side) against what clients saw
            res["server_queue_wait_p99_le_s"] = histogram_quantile(metrics_port, "g2p_queue_time_seconds", 0.99)
            # the handlers' own view (start to answer): refusals are the fastest answers, so the accepted calls'
            # p99 is about the all-calls quantile 1 - 1 % x accepted share
            opened = log.codes("open")
            q_ok = 1 - 0.01 * opened["OK"] / max(1, sum(opened.values()))
            res["server_rpc_p99_accepted_le_s"] = histogram_quantile(metrics_port, "g2p_request_latency_seconds", q_ok)
            # who refused: gRPC's door (max_queue_size RPCs in) or the engine, as the server counted them; the rest
            # of the clients' RESOURCE_EXHAUSTED came from gRPC core's cap on calls not yet picked up (uncounted)
            res["server_rejected"] = {labels["reason"]: v for n, labels, v in
                                      metric_samples(metrics_port, "g2p_rejected_requests")
                                      if n == "g2p_rejected_requests_total"}  # fmt: skip
            # the mean time of the engine's batches during the open loop
            batch_sum, batches = (a - b for a, b in zip(histogram_totals(metrics_port, "g2p_batch_seconds"),
                                                         batches_before, strict=True))  # fmt: skip
            res["batch_time_mean_s"] = round(batch_sum / batches, 4) if batches else float("nan")
            # the heaviest valid requests, 4 at once
            info = server.model()
            n = info.limits.max_inputs
            longest = sorted(WORDS, key=len)[-(64 if quick else n) :]
            beam = 4 if quick else info.limits.max_beam_size
            heavy = pb.GenerateRequest(inputs=longest, options=pb.GenerateOptions(beam_size=beam))
            threads = [
                threading.Thread(target=timed, args=(log, "burst", lambda: stub.Generate(heavy, timeout=300)))
                for _ in range(4)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        time.sleep(2.0)  # the load is over: an idle server hands freed memory back within a second or so
        after = server.rss_mb()
        codes = log.codes("open") + log.codes("burst")
        # an accepted request waits behind at most what the two bounded queues hold: gRPC core's pending calls
        # (PENDING_CALLS_HARD_LIMIT, not yet seen by the server) and the engine's queue (max_queue_size), drained
        # at the measured capacity, then for its own batch (the open loop's mean batch time)
        admitted = Settings().max_queue_size + PENDING_CALLS_HARD_LIMIT
        batch_s = res["batch_time_mean_s"]
        queue_bound = admitted / capacity + batch_s if capacity else float("nan")
        res |= {"open_loop_rps": round(rate, 1), "open_loop_s": duration, "codes": dict(codes),
                "queue_bound_s": round(queue_bound, 3),
                "open_codes": dict(log.codes("open")),
                "burst_codes": dict(log.codes("burst")), "p99_accepted_s": round(log.p99_ok("open"), 3),
                "rss_warm_mb": round(warm, 1), "rss_after_mb": round(after, 1)}  # fmt: skip
        check(res, "only OK or RESOURCE_EXHAUSTED", set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, str(dict(codes)))
        check(res, "some refused at 4x capacity", codes["RESOURCE_EXHAUSTED"] > 0, str(codes["RESOURCE_EXHAUSTED"]))
        if quick:  # a few seconds' load on a shared machine: reported; judged on the full run (make soak)
            print(f"  [info] RSS warm -> 2 s after the load: {warm:.0f} -> {after:.0f} MB", flush=True)
        else:
            check(res, "RSS after <= 1.2x warm", after <= 1.2 * warm, f"{warm:.0f} -> {after:.0f} MB")
        p99, bound = res["p99_accepted_s"], res["queue_bound_s"]
        detail = (
            f"{p99} s <= (max_queue_size + pending-call cap) / capacity + its own batch = {admitted} / "
            f"{capacity:.1f} + {batch_s} = {bound} s"
        )
        if quick:  # 5 s of load: the queues have barely filled; judged on the full run
            print(f"  [info] accepted p99 {detail.replace('<=', 'vs')}", flush=True)
        else:
            check(res, "accepted requests' p99 <= queue bound", p99 <= bound, detail)
        check(res, "SERVING after", server.serving(), "health Check")
        print(
            f"  [info] server side (bucket bounds): in the engine's queue p99 <= {res['server_queue_wait_p99_le_s']} "
            f"s; handler start to answer, accepted p99 <= {res['server_rpc_p99_accepted_le_s']} s; refusals counted "
            f"{res['server_rejected']}",
            flush=True,
        )
    finally:
        server.stop()
    return res


def open_loop_python(stub: pb_grpc.G2PStub, log: Log, rate: float, duration: float) -> None:
    """Poisson arrivals from this process (gRPC futures): each answer's status and latency into ``log``."""
    rng, pending, t_end = random.Random(1), [], time.monotonic() + duration
    next_at = time.monotonic()
    while time.monotonic() < t_end:
        next_at += rng.expovariate(rate)
        time.sleep(max(0.0, next_at - time.monotonic()))
        t0 = time.perf_counter()
        fut = stub.Generate.future(pb.GenerateRequest(inputs=[rng.choice(WORDS)]), timeout=60)
        fut.add_done_callback(lambda f, t0=t0: log.add("open", _code(f), time.perf_counter() - t0))
        pending.append(fut)
    for f in pending:
        f.exception()


STATUS_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}


def open_loop_cpp(binary: str, port: int, log: Log, rate: float, duration: float) -> None:
    """Poisson arrivals from the C++ load generator (its own process, asynchronous calls: it never waits for a
    thread of its own, so the latencies are the server's): each OK latency and every status count into ``log``."""
    words = random.Random(1).sample(WORDS, len(WORDS))
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
        f.write("\n".join(words) + "\n")
        f.flush()
        cmd = [binary, "--target", f"127.0.0.1:{port}", "--words", f.name, "--clients", "8", "--rate", f"{rate:.1f}",
               "--duration-s", str(duration), "--timeout-ms", "60000", "--seed", "1"]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=duration + 180)
    data = json.loads(done.stdout)
    for ms in data["ok_latencies_ms"]:
        log.add("open", "OK", ms / 1000)
    for code, n in data["codes"].items():
        if int(code) != 0:
            for _ in range(n):
                log.add("open", STATUS_NAMES.get(int(code), code), float("nan"))


def _code(f: grpc.Future) -> str:
    exc = f.exception()
    return "OK" if exc is None else exc.code().name


# ------------------------------------------------------------------------------------------------ reload
def add_version(root: Path, version: int, kind: str) -> None:
    """A copy of the shipped bundle as ``version``: ``good``, ``corrupt`` (its greedy graph truncated) or
    ``parity`` (its export's parity verdict failed)."""
    src, dst = ROOT / "models" / "g2p" / "1", root / "g2p" / f".{version}.tmp"
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    if kind == "corrupt":  # re-hashed, so that it passes the checksums and onnxruntime itself meets the bad graph
        graph = dst / "fused_greedy.onnx"
        graph.write_bytes(graph.read_bytes()[:1000])
        manifest["sha256"][graph.name] = hashlib.sha256(graph.read_bytes()).hexdigest()
    elif kind == "parity":
        manifest["parity"]["ok"] = False
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2))
    dst.rename(root / "g2p" / str(version))  # appears whole


def reload(quick: bool) -> dict[str, Any]:
    print("reload", flush=True)
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="g2p-reload-") as tmp:
        root = Path(tmp)
        (root / "g2p").mkdir()
        shutil.copytree(ROOT / "models" / "g2p" / "1", root / "g2p" / "1")
        server = start(root, G2P_WATCH_INTERVAL_S="0.5")
        try:
            log = Log()
            duration, swaps = (20.0, 4) if quick else (60.0, 10)
            plan = {v: "good" for v in range(2, swaps + 2)}
            plan[3], plan[swaps] = "corrupt", "parity"

            def one(stubs: Any, rng: random.Random) -> None:
                w = rng.choice(WORDS)
                timed(log, "unary", lambda: stubs[0].Generate(pb.GenerateRequest(inputs=[w]), timeout=30))

            with Clients(server.port, 16, one):
                for v, kind in plan.items():
                    time.sleep(duration / (swaps + 1))
                    add_version(root, v, kind)
                time.sleep(duration / (swaps + 1) + 2.0)
            info = server.model()
            states = {x.version: (pb.ModelState.Name(x.state), x.error) for x in info.versions}
            last_good = max(v for v, k in plan.items() if k == "good")
            res |= {"requests": len(log.records), "codes": dict(log.codes()), "plan": plan,
                    "states": {v: s[0] for v, s in states.items()}, "default_version": info.default_version,
                    "errors": {v: s[1] for v, s in states.items() if s[1]}}  # fmt: skip
            check(res, "0 failed requests", set(log.codes()) == {"OK"}, str(dict(log.codes())))
            for v, kind in plan.items():
                if kind != "good":
                    state, error = states.get(v, ("missing", ""))
                    failed = state == "MODEL_STATE_FAILED" and bool(error)
                    check(res, f"{kind} version {v} FAILED with its reason", failed, f"{state}: {error[:120]}")
            check(res, "the last good version serves", info.default_version == last_good,
                  f"default {info.default_version}, last good {last_good}")  # fmt: skip
        finally:
            server.stop()
    return res


# ------------------------------------------------------------------------------------------------ soak
def soak(quick: bool, out: Path | None) -> dict[str, Any]:
    print("soak", flush=True)
    res: dict[str, Any] = {}
    server = start()
    res["allocator"] = server.allocator()
    log = Log()
    allowed = {"deadline": {"OK", "DEADLINE_EXCEEDED"}, "cancel": {"OK", "CANCELLED"}}

    def one(stubs: Any, rng: random.Random) -> None:
        g2p, infer = stubs
        words = rng.sample(WORDS, rng.randint(1, 8))
        kind = rng.choice(["greedy", "beam", "stream", "text", "v2", "v2_text", "deadline", "cancel"])
        calls: dict[str, Callable[[], Any]] = {
            "greedy": lambda: g2p.Generate(pb.GenerateRequest(inputs=words), timeout=30),
            "beam": lambda: g2p.Generate(
                pb.GenerateRequest(inputs=words, options=pb.GenerateOptions(beam_size=5)), timeout=30
            ),
            "stream": lambda: list(g2p.GenerateStream(pb.GenerateRequest(inputs=words), timeout=30)),
            "text": lambda: g2p.Phonemize(pb.PhonemizeRequest(texts=[rng.choice(SENTENCES)]), timeout=30),
            "v2": lambda: infer.ModelInfer(v2_text("g2p", words), timeout=30),
            "v2_text": lambda: infer.ModelInfer(v2_text("g2p_text", rng.sample(SENTENCES, 2)), timeout=30),
            "deadline": lambda: g2p.Generate(
                pb.GenerateRequest(inputs=words, options=pb.GenerateOptions(beam_size=5)), timeout=0.003
            ),
            "cancel": lambda: _cancelled(g2p, words),
        }
        timed(log, kind, calls[kind])

    duration = 30.0 if quick else 600.0
    curve: list[tuple[float, float]] = []
    t0 = time.monotonic()
    try:
        with Clients(server.port, 8, one):
            while time.monotonic() - t0 < duration:
                curve.append((round(time.monotonic() - t0, 1), round(server.rss_mb(), 1)))
                time.sleep(1.0 if quick else 5.0)
        curve.append((round(time.monotonic() - t0, 1), round(server.rss_mb(), 1)))
        serving = server.serving()
    finally:
        server.stop()
    unexpected = Counter(f"{r.kind}:{r.code}" for r in log.records if r.code not in allowed.get(r.kind, {"OK"}))
    # one RSS sample swings by ~15 MB (5 %) from the next under this traffic: growth is judged on the median of
    # the samples in the minute after the first against the median of the last minute's
    n = max(1, int(duration // 60))  # whole minutes; the sample taken as the load ends counts in the last one
    minutes = [[m for t, m in curve if k * 60.0 <= t and (t < (k + 1) * 60.0 or k == n - 1)] for k in range(n)]
    medians = [statistics.median(ms) for ms in minutes if ms]
    base, last = (medians[1] if len(medians) > 2 else medians[0]), medians[-1]
    res |= {"duration_s": duration, "requests": len(log.records), "by_kind": dict(Counter(r.kind for r in log.records)),
            "codes": dict(log.codes()), "unexpected": dict(unexpected), "rss_curve": curve,
            "rss_minute_medians_mb": medians, "rss_after_first_minute_mb": base, "rss_end_mb": last}  # fmt: skip
    check(res, "0 unexpected statuses", not unexpected, str(dict(unexpected)) or "none")
    if not quick:  # 30 s of the quick run are still the warm-up's growth: the curve is judged on the full run only
        check(res, "RSS growth <= 5 % after the first minute", last <= 1.05 * base,
              f"{base:.0f} -> {last:.0f} MB (medians of the second and the last minute)")  # fmt: skip
    check(res, "SERVING after", serving, "health Check")
    if out is not None:
        plot(curve, out.with_suffix(".png"), duration)
    return res


def _cancelled(g2p: Any, words: list[str]) -> None:
    f = g2p.Generate.future(pb.GenerateRequest(inputs=words, options=pb.GenerateOptions(beam_size=5)), timeout=30)
    time.sleep(0.002)
    f.cancel()
    f.result()


def plot(curve: list[tuple[float, float]], png: Path, duration: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot([t for t, _ in curve], [m for _, m in curve], color="tab:blue")
    ax.set_xlabel("seconds of mixed traffic")
    ax.set_ylabel("server RSS (MB)")
    ax.set_title(f"Soak: {duration:.0f} s, 8 clients, mixed traffic")
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ report
def report(results: dict[str, dict[str, Any]], out: Path, quick: bool) -> None:
    lines = [f"# Reliability suites ({'quick' if quick else 'full'})", "",
             f"`python bench/reliability.py {' '.join(sys.argv[1:])}`; {os.cpu_count()} CPUs.", ""]  # fmt: skip
    for name, res in results.items():
        lines += [f"## {name}", "", "| check | result | detail |", "|---|---|---|"]
        lines += [f"| {c['check']} | {'ok' if c['ok'] else 'FAILED'} | {c['detail']} |" for c in res["checks"]]
        numbers = {k: v for k, v in res.items() if k not in {"checks", "rss_curve"}}
        lines += ["", "```json", json.dumps(numbers, indent=1), "```", ""]
    if "soak" in results:
        lines += [f"![RSS during the soak]({out.with_suffix('.png').name})", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("suite", choices=["all", "overload", "reload", "soak"])
    ap.add_argument("--quick", action="store_true", help="short runs (CI): same checks, writes nothing")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "reliability")
    args = ap.parse_args(argv)
    suites = ["overload", "reload", "soak"] if args.suite == "all" else [args.suite]
    out = None if args.quick else args.out
    results: dict[str, dict[str, Any]] = {}
    for s in suites:
        results[s] = soak(args.quick, out) if s == "soak" else {"overload": overload, "reload": reload}[s](args.quick)
    if out is not None:
        report(results, out, args.quick)
    failed = [c["check"] for r in results.values() for c in r["checks"] if not c["ok"]]
    print("all checks passed" if not failed else f"FAILED: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
