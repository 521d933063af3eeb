"""The gRPC service against the in-process ONNX Runtime engine, side by side in one run.

    python bench/service_bench.py [--bundle-root models] [--words 1000] [--threads 2] [--rounds 5]
                                  [--generator auto|cpp|python] [--out bench/results/service]
    python bench/service_bench.py --quick   # smoke (make bench-quick, CI): 96 words, 1 round; checks outputs and
                                            # errors, writes nothing, claims no speed

Measures, on held-out test words of the shipped bundle, greedy decoding:
- in-process (the server's engine without the wire: ``threads`` single-threaded sessions): single-word latency
  p50/p95 and words/s at batch 1 and batch 32;
- through the wire (``python -m service`` in its own process): single-word requests from 1, 8 and 32 concurrent
  clients: words/s, latency p50/p95/p99, the CPU the server and the load generator spent per request, and whether
  every word came back as the in-process engine decodes it;
- the wire's floor: the same load against a bare gRPC server (same proto, same thread pool, a fixed answer, no
  decoding): what any Python gRPC service costs on this machine before it does any work;
- the server: time from process start to health SERVING, resident memory after warm-up and after the load.

The load generator is ``bench/loadgen`` (C++, built here with Debian's gRPC packages: ``bench/loadgen/build.sh``)
when it builds, else threads in this process (``--generator python``); the report says which ran. Each client
has its own connection and sends one word at a time.

On a machine with more cores, ``--server-cpus 0-1 --client-cpus 2-7`` keeps the load generator off the server's
CPUs (``taskset``): the server, the bare servers and the in-process engine share the first set, and the bound no
longer counts the generator's CPU.

The two headline ratios are taken in ``--rounds`` alternating rounds (in process, then over the wire, on the same
words), and the median of the per-round ratios is reported: this machine is shared, and a slow minute then hits
both sides of a round.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import finish, rss_mb  # noqa: E402  (bench/: this script's folder)

from g2p.bundle import resolve_bundle, verify_bundle  # noqa: E402
from g2p.decoding import DecodeOptions  # noqa: E402
from g2p.lexicon import read_test_split  # noqa: E402
from g2p.ort_backend import SessionConfig, ort_replicas  # noqa: E402
from g2p.pipeline import ParallelTranscriber  # noqa: E402
from g2p.tokenization import G2PTokenizers  # noqa: E402
from service import allocator  # noqa: E402
from service.api.g2p.v1 import g2p_pb2 as pb  # noqa: E402
from service.api.g2p.v1 import g2p_pb2_grpc as pb_grpc  # noqa: E402
from service.client import G2PClient  # noqa: E402
from service.runtime import choose_variant  # noqa: E402
from service.settings import Settings  # noqa: E402

LOADGEN = ROOT / "bench" / "loadgen" / "build" / "loadgen"
CLIENTS = (1, 8, 32)
LATENCY_WORDS = 300  # single-word latency: the first 300 words


def pct(ms: list[float] | np.ndarray, q: float) -> float:
    return float(np.percentile(np.asarray(ms), q))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"


def parse_cpus(text: str) -> set[int]:
    """``0-1,4`` -> {0, 1, 4}"""
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        try:
            cpus.update(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a CPU list: {text!r} (e.g. 0-1,4)") from None
    if not cpus:
        raise argparse.ArgumentTypeError(f"an empty CPU list: {text!r}")
    return cpus


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------- in process
class InProcess:
    """The server's decoding engine without the wire: ``threads`` single-threaded sessions (ParallelTranscriber),
    the variant the server serves with its default settings."""

    def __init__(self, bundle: Path, threads: int) -> None:
        self.tok = G2PTokenizers.load(bundle)
        manifest = verify_bundle(bundle)
        self.variant = choose_variant("auto", manifest, gpu=False)
        config = SessionConfig(intra_op_threads=1, allow_spinning=False)
        self.engine = ParallelTranscriber(ort_replicas(bundle, threads, self.variant, config=config, manifest=manifest))
        self.opts = DecodeOptions(beam_size=1, max_len=int(manifest.limits.max_target_len))

    def decode(self, words: list[str], batch_size: int = 32, beam: int = 1, nbest: int = 1) -> list[str]:
        """Each word's hypotheses (best first; one unless ``nbest``), joined by ' | '."""
        opts = replace(self.opts, beam_size=beam, nbest=nbest)
        found = self.engine.transcribe(self.tok, words, opts, batch_size)
        return [" | ".join(" ".join(p.phonemes) for p in r) for r in found]

    def throughput(self, words: list[str]) -> dict:
        cpu, t = time.process_time(), time.perf_counter()
        self.decode(words, 32)
        wall = time.perf_counter() - t
        return {"words_per_s": len(words) / wall, "cpu_ms_per_word": (time.process_time() - cpu) / len(words) * 1000}


# ---------------------------------------------------------------------------------------------- servers
class Echo(pb_grpc.G2PServicer):
    """The wire's floor: answers every Generate with a fixed pronunciation, and every Phonemize with one fixed
    pronunciation a whitespace-separated token (a response of the same shape as the service's), decodes nothing;
    with ``hold_ms``, keeps its thread busy that long first (numpy products, which release the GIL like
    onnxruntime does), as a decode would."""

    def __init__(self, hold_ms: float) -> None:
        self.hold = hold_ms / 1000
        self.a = np.ones((64, 64), np.float32)

    def _busy(self) -> None:
        end = time.perf_counter() + self.hold
        while time.perf_counter() < end:
            self.a @ self.a

    def Phonemize(self, request: pb.PhonemizeRequest, context: grpc.ServicerContext) -> pb.PhonemizeResponse:  # noqa: N802
        self._busy()
        results = []
        for text in request.texts:
            tokens = []
            for m in re.finditer(r"\S+", text):
                word = pb.SpokenWord(word=m.group().lower(), phonemes="HH AH0 L OW1", source=pb.SOURCE_LEXICON)
                tokens.append(pb.TextToken(text=m.group(), start=m.start(), end=m.end(), kind=pb.TOKEN_KIND_WORD,
                                           words=[word]))  # fmt: skip
            results.append(pb.TextResult(phonemes=" | ".join("HH AH0 L OW1" for _ in tokens), tokens=tokens))
        return pb.PhonemizeResponse(results=results, model="echo")

    def Generate(self, request: pb.GenerateRequest, context: grpc.ServicerContext) -> pb.GenerateResponse:  # noqa: N802
        self._busy()
        hyp = pb.Hypothesis(text="HH AH0 L OW1", tokens=["HH", "AH0", "L", "OW1"], finished=True)
        return pb.GenerateResponse(outputs=[pb.Output(input=w, hypotheses=[hyp]) for w in request.inputs], model="echo")


def serve_echo(port: int, hold_ms: float) -> None:
    """A bare ``grpc.server`` with the service's thread-pool size: the floor of the Python gRPC stack."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=Settings().rpc_threads()))
    pb_grpc.add_G2PServicer_to_server(Echo(hold_ms), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def wait_ready(proc: subprocess.Popen[bytes], port: int, health: bool) -> None:
    """Until the server answers: health SERVING (``G2PClient.wait_serving``), or for the bare servers, which have
    no health service, a ready channel; a server that exits first ends the run."""
    with G2PClient(f"127.0.0.1:{port}") as client:
        while proc.poll() is None:
            if health and client.wait_serving(0.5):
                return
            if not health:
                try:
                    grpc.channel_ready_future(client.channel).result(timeout=0.5)
                    return
                except grpc.FutureTimeoutError:
                    pass
            time.sleep(0.01)
    raise SystemExit(f"server on port {port} exited during start-up")


def start_server(
    root: Path, threads: int, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], int, float]:
    port = free_port()
    env = os.environ | {"G2P_PORT": str(port), "G2P_MODEL_REPOSITORY": str(root), "G2P_METRICS_PORT": "-1",
                        "G2P_WORKERS": str(threads), "G2P_INTRA_OP_THREADS": "1",
                        "G2P_LOG_LEVEL": "WARNING"} | (extra_env or {})  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=env)
    wait_ready(proc, port, health=True)
    return proc, port, time.monotonic() - t0


def start_echo(hold_ms: float = 0.0) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--echo-serve", str(port), "--hold-ms", str(hold_ms)], cwd=ROOT)
    wait_ready(proc, port, health=False)
    return proc, port


# ---------------------------------------------------------------------------------------------- load
def build_loadgen() -> str | None:
    """The C++ load generator's path, built when missing or older than its sources; None (and why) when it
    cannot be."""
    build = LOADGEN.parent.parent / "build.sh"
    done = subprocess.run(["bash", str(build)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"bench/loadgen does not build here ({done.stderr.strip()}); using the Python load generator")
        return None
    return str(LOADGEN)


def load_cpp(binary: list[str], port: int, words: list[str], clients: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
        f.write("\n".join(words) + "\n")
        f.flush()
        done = subprocess.run(
            [*binary, "--target", f"127.0.0.1:{port}", "--words", f.name, "--clients", str(clients), "--warmup", "2"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    out = json.loads(done.stdout)
    return {"wall_s": out["wall_s"], "cpu_s": out["cpu_s"], "latencies_ms": out["latencies_ms"],
            "outputs": [out["outputs"].get(w, "") for w in words], "errors": sum(out["errors"].values()),
            "generator": out["generator"], "error_messages": done.stderr.splitlines()[:5]}  # fmt: skip


def load_python(port: int, words: list[str], clients: int) -> dict:
    """``clients`` threads here, each with its own channel, sending one word at a time."""
    lat = [0.0] * len(words)
    outputs = [""] * len(words)
    errors = [0] * clients
    messages: list[str] = []
    channels = [grpc.insecure_channel(f"127.0.0.1:{port}", options=[("loadgen.client", k)]) for k in range(clients)]
    stubs = [pb_grpc.G2PStub(ch) for ch in channels]
    for k, stub in enumerate(stubs):  # warm-up: every connection up
        stub.Generate(pb.GenerateRequest(inputs=[words[k % len(words)]]), timeout=30)

    def worker(k: int) -> None:
        for i in range(k, len(words), clients):
            t = time.perf_counter()
            try:
                reply = stubs[k].Generate(pb.GenerateRequest(inputs=[words[i]]), timeout=30)
                outputs[i] = reply.outputs[0].hypotheses[0].text
            except grpc.RpcError as exc:
                errors[k] += 1
                messages.append(f"{words[i]}: {exc.code().name} {exc.details()}")
            lat[i] = (time.perf_counter() - t) * 1000

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    cpu, t = time.process_time(), time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    for ch in channels:
        ch.close()
    return {"wall_s": wall, "cpu_s": cpu, "latencies_ms": lat, "outputs": outputs, "errors": sum(errors),
            "generator": f"Python threads (grpcio {grpc.__version__})", "error_messages": messages[:5]}  # fmt: skip


class Load:
    """``binary``: the C++ generator's command line (with ``taskset`` when it has CPUs of its own), or None for the
    Python one."""

    def __init__(self, binary: list[str] | None) -> None:
        self.binary = binary

    def run(self, port: int, words: list[str], clients: int, server_pid: int) -> dict:
        server_cpu = cpu_seconds(server_pid)
        out = load_cpp(self.binary, port, words, clients) if self.binary else load_python(port, words, clients)
        server_ms = (cpu_seconds(server_pid) - server_cpu) / len(words) * 1000
        lat = out["latencies_ms"]
        return {"clients": clients, "requests": len(words), "words_per_s": len(words) / out["wall_s"],
                "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95), "p99_ms": pct(lat, 99), "errors": out["errors"],
                "server_cpu_ms_per_request": server_ms,
                "client_cpu_ms_per_request": out["cpu_s"] / len(words) * 1000,
                "generator": out["generator"], "outputs": out["outputs"],
                "error_messages": out["error_messages"]}  # fmt: skip


class Single:
    """One client driven word by word, so that its requests can alternate with in-process decodes of the same
    words: the C++ generator's ``--words -`` mode (it times each RPC itself), or a stub here."""

    def __init__(self, binary: list[str] | None, port: int) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.client: G2PClient | None = None
        if binary:
            self.proc = subprocess.Popen([*binary, "--target", f"127.0.0.1:{port}", "--words", "-"], text=True,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
        else:
            self.client = G2PClient(f"127.0.0.1:{port}", timeout=30)

    def __call__(self, word: str) -> tuple[float, bool, str]:
        """(latency ms, ok, first hypothesis)"""
        if self.proc is not None:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(word + "\n")
            self.proc.stdin.flush()
            ms, code, text = self.proc.stdout.readline().rstrip("\n").split("\t")
            return float(ms), code == "0", text
        assert self.client is not None
        t = time.perf_counter()
        try:
            reply = self.client.generate([word])
        except grpc.RpcError:
            return (time.perf_counter() - t) * 1000, False, ""
        return (time.perf_counter() - t) * 1000, True, reply.outputs[0].hypotheses[0].text

    def cpu_seconds(self) -> float | None:
        return cpu_seconds(self.proc.pid) if self.proc is not None else None

    def close(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(30)
        if self.client is not None:
            self.client.close()


def paired(local: InProcess, single: Single, words: list[str], server_pid: int) -> tuple[dict, dict]:
    """Single-word latency in process and over the wire, alternating word by word (a drifting machine hits both
    sides alike): (in-process stats, wire stats)."""
    for w in words[:10]:  # warm-up
        local.decode([w], 1)
        single(w)
    mine, theirs, outputs, errors = [], [], [], 0
    server_cpu, client_cpu = cpu_seconds(server_pid), single.cpu_seconds()
    for w in words:
        t = time.perf_counter()
        local.decode([w], 1)
        mine.append((time.perf_counter() - t) * 1000)
        ms, ok, text = single(w)
        theirs.append(ms)
        outputs.append(text)
        errors += not ok
    client_end = single.cpu_seconds()
    client_ms = None if client_cpu is None or client_end is None else (client_end - client_cpu) / len(words) * 1000
    return (
        {"p50_ms": pct(mine, 50), "p95_ms": pct(mine, 95), "words_per_s": 1000 * len(mine) / sum(mine),
         "latencies_ms": mine},
        {"clients": 1, "requests": len(words), "words_per_s": 1000 * len(theirs) / sum(theirs),
         "p50_ms": pct(theirs, 50), "p95_ms": pct(theirs, 95), "p99_ms": pct(theirs, 99), "errors": errors,
         "server_cpu_ms_per_request": (cpu_seconds(server_pid) - server_cpu) / len(words) * 1000,
         "client_cpu_ms_per_request": client_ms, "outputs": outputs, "latencies_ms": theirs,
         "error_messages": [], "generator": "C++ loadgen --words -" if single.proc else "Python stub"},
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- main
def measure(args: argparse.Namespace, binary: list[str] | None, words: list[str]) -> dict:
    """Every measurement of the run, raw: the alternating rounds, the floors, the server's start and memory."""
    load = Load(binary)
    short = words[:LATENCY_WORDS]
    local = InProcess(resolve_bundle(args.bundle_root, args.name), args.threads)
    local.decode(words[:64])  # warm-up
    reference = local.decode(words)
    proc, port, to_serving = start_server(args.bundle_root, args.threads)
    helpers: list[subprocess.Popen[bytes]] = []
    try:
        echo, echo_port = start_echo()
        helpers.append(echo)
        load.run(port, words[:64], 32, proc.pid)  # warm the server
        rss_warm = rss_mb(proc.pid)
        server_allocator = allocator.active(Path(f"/proc/{proc.pid}/maps"))
        rounds = []
        single = Single(binary, port)
        try:
            for _ in range(args.rounds):  # in process, then the same words over the wire
                b1, w1 = paired(local, single, short, proc.pid)
                b32, w32 = local.throughput(words), load.run(port, words, 32, proc.pid)
                w8 = load.run(port, words, 8, proc.pid)
                rounds.append({"in_process_batch1": b1, "in_process_batch32": b32, "wire": [w1, w8, w32]})
        finally:
            single.close()
        floor = [load.run(echo_port, short if c == 1 else words, c, echo.pid) for c in CLIENTS]
        rss_loaded = rss_mb(proc.pid)
        # the latency floor: a bare server that holds each request as long as the in-process p50 decode
        hold_ms = pct([x for r in rounds for x in r["in_process_batch1"]["latencies_ms"]], 50)
        held, held_port = start_echo(hold_ms)
        helpers.append(held)
        held_client = Single(binary, held_port)
        try:
            held_ms = [held_client(w)[0] for w in short[:10] + short][10:]
        finally:
            held_client.close()
    finally:
        for p in (proc, *helpers):
            p.terminate()
        code = proc.wait(30)
        for p in helpers:
            p.wait(30)
    return {"variant": local.variant, "reference": reference, "rounds": rounds, "floor": floor, "hold_ms": hold_ms,
            "held_ms": held_ms, "seconds_to_serving": to_serving, "rss_warm": rss_warm, "rss_loaded": rss_loaded,
            "allocator": server_allocator, "exit_code": code}  # fmt: skip


def summarize(raw: dict, args: argparse.Namespace, words: list[str]) -> dict:
    """The targets' ratios (median round for throughput, all pairs together for latency), the floors, the bound,
    the output check."""
    rounds, floor, reference = raw["rounds"], raw["floor"], raw["reference"]
    per_round = [
        {"ratio": r["wire"][2]["words_per_s"] / r["in_process_batch32"]["words_per_s"],
         "p50_overhead_ms": r["wire"][0]["p50_ms"] - r["in_process_batch1"]["p50_ms"], **r}
        for r in rounds
    ]  # fmt: skip
    ratio_round = sorted(per_round, key=lambda r: r["ratio"])[len(per_round) // 2]  # the table's batch-32 numbers
    mine = [x for r in rounds for x in r["in_process_batch1"].pop("latencies_ms")]
    theirs = [x for r in rounds for x in r["wire"][0].pop("latencies_ms")]
    cpu = {}
    for k in ("server_cpu_ms_per_request", "client_cpu_ms_per_request"):
        xs = [r["wire"][0][k] for r in rounds]
        cpu[k] = None if None in xs else float(np.mean(xs))
    w1 = {k: v for k, v in rounds[0]["wire"][0].items() if k != "outputs"} | cpu | {
        "requests": len(theirs), "words_per_s": 1000 * len(theirs) / sum(theirs), "p50_ms": pct(theirs, 50),
        "p95_ms": pct(theirs, 95), "p99_ms": pct(theirs, 99)}  # fmt: skip
    wire = [w1, ratio_round["wire"][1], ratio_round["wire"][2]]
    outputs = [(w["outputs"], reference[: len(w["outputs"])]) for r in rounds for w in r["wire"]]
    checked = sum(len(got) for got, _ in outputs)
    wrong = sum(a != b for got, want in outputs for a, b in zip(got, want, strict=True))
    errors = sum(w["errors"] for r in rounds for w in r["wire"])
    messages = [f"{w['clients']} clients: {m}" for r in rounds for w in r["wire"] for m in w["error_messages"]]
    for w in (w for r in rounds for w in r["wire"]):
        w.pop("outputs", None)
    for w in floor:
        w.pop("outputs", None)
    b32 = ratio_round["in_process_batch32"]
    # the most words/s the wire could carry here if batching were perfect: every server core busy with nothing but
    # the in-process engine's CPU per word plus the floor's server CPU per request (and the load generator's, when
    # it shares the server's cores)
    cores = len(os.sched_getaffinity(0))  # the server's (main() pins this process to them)
    f32 = floor[2]
    client_ms = 0.0 if args.client_cpus else f32["client_cpu_ms_per_request"]
    own = sorted(args.client_cpus or ())
    where = f"{plural(len(own), 'CPU')} {','.join(map(str, own))} of its own" if own else "the same CPUs"
    bound = cores * 1000 / (b32["cpu_ms_per_word"] + f32["server_cpu_ms_per_request"] + client_ms)
    held_p50 = pct(raw["held_ms"], 50)
    return {
        "machine": f"{cores} {plural(cores, 'CPU')} for the server, {args.threads} "
        f"{plural(args.threads, 'worker')} x 1 intra-op thread, on {raw['allocator']}; load generator: "
        f"{wire[2]['generator']}"
        + f" on {where}",
        "load_generator_on_own_cpus": bool(args.client_cpus),
        "cores": cores, "variant": raw["variant"], "words": len(words), "rounds": per_round,
        "in_process": {"batch1": {"p50_ms": pct(mine, 50), "p95_ms": pct(mine, 95),
                                  "words_per_s": 1000 * len(mine) / sum(mine)}, "batch32": b32},
        "wire": wire, "floor": floor, "seconds_to_serving": raw["seconds_to_serving"],
        "rss_mb_after_warmup": raw["rss_warm"], "rss_mb_after_load": raw["rss_loaded"],
        "exit_code_after_sigterm": raw["exit_code"], "errors": errors, "error_messages": messages[:10],
        "outputs_checked": checked, "outputs_different_from_in_process": wrong,
        "ratio_32_clients_vs_in_process_batch32": ratio_round["ratio"],
        "ratio_per_round": [r["ratio"] for r in per_round],
        "p50_overhead_ms_1_client": pct(theirs, 50) - pct(mine, 50), "single_word_pairs": len(mine),
        "p50_overhead_ms_per_round": [r["p50_overhead_ms"] for r in per_round],
        "held_floor": {"hold_ms": raw["hold_ms"], "p50_ms": held_p50, "overhead_ms": held_p50 - raw["hold_ms"]},
        "bound_words_per_s_32_clients": bound, "bound_ratio": bound / b32["words_per_s"],
    }  # fmt: skip


def report(r: dict) -> str:
    row = "| {} | {} | {:.0f} | {} | {} | {} | {} | {} |"

    def f(x: float | None) -> str:
        return "" if x is None else f"{x:.2f}"

    b1, b32, floor, held = r["in_process"]["batch1"], r["in_process"]["batch32"], r["floor"], r["held_floor"]
    lines = [
        f"# Service vs in-process engine ({r['machine']}; {r['words']} test words, greedy, variant {r['variant']})",
        "",
        "| path | clients / batch | words/s | p50 ms | p95 ms | p99 ms | server CPU ms/req | client CPU ms/req |",
        "|---|---|---|---|---|---|---|---|",
        row.format("in-process", "batch 1", b1["words_per_s"], f(b1["p50_ms"]), f(b1["p95_ms"]), "", "", ""),
        row.format("in-process", "batch 32", b32["words_per_s"], "", "", "", f(b32["cpu_ms_per_word"]) + " (per word)",
                   ""),
        *[row.format("gRPC", f"{w['clients']} clients", w["words_per_s"], f(w["p50_ms"]), f(w["p95_ms"]),
                     f(w["p99_ms"]), f(w["server_cpu_ms_per_request"]), f(w["client_cpu_ms_per_request"]))
          for w in r["wire"]],
        *[row.format("floor: bare gRPC server, no decoding", f"{w['clients']} clients", w["words_per_s"],
                     f(w["p50_ms"]), f(w["p95_ms"]), f(w["p99_ms"]), f(w["server_cpu_ms_per_request"]),
                     f(w["client_cpu_ms_per_request"])) for w in floor],
        "",
        f"- 32 clients vs in-process batch 32: {r['ratio_32_clients_vs_in_process_batch32']:.2f}x (median of "
        f"{len(r['rounds'])} alternating rounds: {', '.join(f'{x:.2f}' for x in r['ratio_per_round'])})",
        f"- single-word p50 over the wire minus in-process: {r['p50_overhead_ms_1_client']:+.2f} ms "
        f"({r['wire'][0]['p50_ms']:.2f} vs {b1['p50_ms']:.2f} ms over {r['single_word_pairs']} words, each decoded "
        f"in process and then requested over the wire; per round: "
        f"{', '.join(f'{x:+.2f}' for x in r['p50_overhead_ms_per_round'])}); the bare server's p50: "
        f"{floor[0]['p50_ms']:.2f} ms answering at once, {held['p50_ms']:.2f} ms when it keeps each request "
        f"{held['hold_ms']:.2f} ms (the in-process p50) on a busy thread first: {held['overhead_ms']:+.2f} ms from "
        "the Python gRPC stack alone",
        f"- the wire's bound on the server's {r['cores']} {plural(r['cores'], 'core')} (in-process CPU per word at "
        "batch 32 + the floor's server "
        + ("" if r["load_generator_on_own_cpus"] else "and client ")
        + f"CPU per request, every core busy, perfect batching): {r['bound_words_per_s_32_clients']:.0f} "
        f"words/s = {r['bound_ratio']:.2f}x in-process batch 32; 32 clients reached {r['wire'][2]['words_per_s']:.0f}",
        f"- outputs over the wire identical to the in-process engine: "
        f"{r['outputs_checked'] - r['outputs_different_from_in_process']}/{r['outputs_checked']}; errors: "
        f"{r['errors']}",
        f"- start to SERVING: {r['seconds_to_serving']:.2f} s; RSS after warm-up {r['rss_mb_after_warmup']:.0f} MB, "
        f"after the load {r['rss_mb_after_load']:.0f} MB; exit code after SIGTERM: {r['exit_code_after_sigterm']}",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle-root", type=Path, default=ROOT / "models")
    ap.add_argument("--name", default="g2p")
    ap.add_argument("--words", type=int, default=1000)
    ap.add_argument("--threads", type=int, help="decoding workers (default: the server's CPUs, or 2)")
    ap.add_argument(
        "--server-cpus",
        type=parse_cpus,
        metavar="LIST",
        help="pin the server, the bare servers and the in-process engine to these CPUs (e.g. 0-1)",
    )
    ap.add_argument(
        "--client-cpus",
        type=parse_cpus,
        metavar="LIST",
        help="run the (C++) load generator on these CPUs, apart from the server's (e.g. 2-7)",
    )
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--generator", choices=("auto", "cpp", "python"), default="auto")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "service")
    ap.add_argument("--quick", action="store_true", help="smoke run: 96 words, 1 round, no files, no speed claims")
    ap.add_argument("--echo-serve", type=int, metavar="PORT", help=argparse.SUPPRESS)  # the floor's server process
    ap.add_argument("--hold-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.echo_serve:
        serve_echo(args.echo_serve, args.hold_ms)
        return 0
    if args.quick:
        args.words, args.rounds = 96, 1
    if args.rounds < 1 or args.words < 32:
        ap.error("--rounds must be >= 1 and --words >= 32")
    available = os.sched_getaffinity(0)
    for flag, cpus in (("--server-cpus", args.server_cpus), ("--client-cpus", args.client_cpus)):
        if cpus and not cpus <= available:
            ap.error(f"{flag}: CPUs {sorted(cpus - available)} are not available here (available: {sorted(available)})")
    if args.server_cpus:
        os.sched_setaffinity(0, args.server_cpus)  # before any thread or child: all of them inherit it
    args.threads = args.threads or (len(args.server_cpus) if args.server_cpus else 2)
    path = None if args.generator == "python" else build_loadgen()
    if args.generator == "cpp" and path is None:
        print("--generator cpp: bench/loadgen/build.sh failed (bench/loadgen/build.sh --install gets its packages)")
        return 1
    if args.client_cpus and path is None:
        print("--client-cpus needs the C++ load generator (bench/loadgen/build.sh --install)")
        return 1
    cpus = ",".join(map(str, sorted(args.client_cpus or ())))
    binary = None if path is None else (["taskset", "-c", cpus, path] if args.client_cpus else [path])
    all_words = sorted(read_test_split(ROOT / "data" / "cmudict-0.7b.test"))
    words = all_words[:: max(len(all_words) // args.words, 1)][: args.words]
    result = summarize(measure(args, binary, words), args, words)
    failed = ""
    if result["outputs_different_from_in_process"] or result["errors"]:
        failed = "\n  ".join([f"{result['outputs_different_from_in_process']} outputs over the wire differ from the "
                              f"in-process engine, {result['errors']} errors", *result["error_messages"]])  # fmt: skip
    return finish(report(result), result, args.out, failed, args.quick)


if __name__ == "__main__":
    raise SystemExit(main())
