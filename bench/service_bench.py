"""The gRPC service against the in-process ONNX Runtime engine, side by side in one run.

    python bench/service_bench.py [--bundle-root models] [--words 1000] [--threads 2] [--out bench/results/service]

Measures, on held-out test words of the shipped bundle, greedy decoding:
- in-process (OrtBackend, the server's session settings): single-word latency p50/p95, and words/s at batch 1
  and batch 32;
- through the wire (`python -m service` in its own process, a load generator of threads here): single-word
  requests from 1, 8 and 32 concurrent clients: words/s and latency p50/p95/p99;
- the server: time from process start to health SERVING, resident memory after warm-up and after the load.
Ratios are computed within this run (this machine is shared and noisy; absolute numbers drift).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from g2p.bundle import resolve_bundle, verify_bundle  # noqa: E402
from g2p.decoding import DecodeOptions  # noqa: E402
from g2p.lexicon import read_test_split  # noqa: E402
from g2p.ort_backend import SessionConfig, ort_replicas  # noqa: E402
from g2p.pipeline import ParallelTranscriber  # noqa: E402
from g2p.tokenization import G2PTokenizers  # noqa: E402
from service.api.g2p.v1 import g2p_pb2 as pb  # noqa: E402
from service.api.g2p.v1 import g2p_pb2_grpc as pb_grpc  # noqa: E402
from service.runtime import choose_variant  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def in_process(bundle: Path, words: list[str], threads: int) -> dict:
    """The server's decoding engine without the wire: ``threads`` single-threaded sessions (ParallelTranscriber)."""
    tok = G2PTokenizers.load(bundle)
    config = SessionConfig(intra_op_threads=1, allow_spinning=False)
    manifest = verify_bundle(bundle)
    variant = choose_variant("auto", manifest, gpu=False)  # what the server serves with its default settings
    engine = ParallelTranscriber(ort_replicas(bundle, threads, variant, config=config, manifest=manifest))
    opts = DecodeOptions(beam_size=1, max_len=48)
    engine.transcribe(tok, words[:64], opts)  # warm-up
    lat = []
    for w in words[:300]:
        t = time.perf_counter()
        engine.transcribe(tok, [w], opts)
        lat.append(time.perf_counter() - t)
    t = time.perf_counter()
    engine.transcribe(tok, words, opts, batch_size=32)
    b32 = len(words) / (time.perf_counter() - t)
    return {"p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95), "batch1_words_per_s": len(lat) / sum(lat),
            "batch32_words_per_s": b32, "variant": variant}  # fmt: skip


def start_server(root: Path, threads: int) -> tuple[subprocess.Popen[bytes], int, float]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"G2P_PORT": str(port), "G2P_MODEL_REPOSITORY": str(root), "G2P_METRICS_PORT": "-1",
                        "G2P_WORKERS": str(threads), "G2P_INTRA_OP_THREADS": "1",
                        "G2P_LOG_LEVEL": "WARNING"}  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=env)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        while True:
            if proc.poll() is not None:
                raise SystemExit("server exited during start-up")
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=0.5).status == 1:
                    break
            except grpc.RpcError:
                time.sleep(0.01)
    return proc, port, time.monotonic() - t0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(port: int, words: list[str], clients: int, server_pid: int) -> dict:
    """``clients`` threads, each sending single-word requests one after another; with the CPU time the server and
    this load generator spent per request."""
    server_cpu, own_cpu = cpu_seconds(server_pid), time.process_time()
    lat: list[float] = []
    lock = threading.Lock()
    errors = []

    def worker(k: int) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.G2PStub(ch)
            mine = []
            for w in words[k::clients]:
                t = time.perf_counter()
                try:
                    stub.Generate(pb.GenerateRequest(inputs=[w]), timeout=30)
                except grpc.RpcError as exc:
                    errors.append(exc.code().name)
                mine.append(time.perf_counter() - t)
            with lock:
                lat.extend(mine)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    server_ms = (cpu_seconds(server_pid) - server_cpu) / len(words) * 1000
    client_ms = (time.process_time() - own_cpu) / len(words) * 1000
    return {"clients": clients, "words_per_s": len(words) / wall, "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95),
            "p99_ms": pct(lat, 99), "errors": len(errors), "server_cpu_ms_per_request": server_ms,
            "client_cpu_ms_per_request": client_ms}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle-root", type=Path, default=ROOT / "models")
    ap.add_argument("--name", default="g2p")
    ap.add_argument("--words", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "service")
    args = ap.parse_args()
    bundle = resolve_bundle(args.bundle_root, args.name)
    all_words = sorted(read_test_split(ROOT / "data" / "cmudict-0.7b.test"))
    words = all_words[:: max(len(all_words) // args.words, 1)][: args.words]

    local = in_process(bundle, words, args.threads)
    proc, port, to_serving = start_server(args.bundle_root, args.threads)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:  # warm the channel and the server
            pb_grpc.G2PStub(ch).Generate(pb.GenerateRequest(inputs=words[:32]), timeout=30)
        rss_warm = rss_mb(proc.pid)
        wire = [load(port, words if c > 1 else words[:300], c, proc.pid) for c in (1, 8, 32)]
        rss_loaded = rss_mb(proc.pid)
    finally:
        proc.terminate()
        code = proc.wait(30)
    result = {
        "machine": f"{os.cpu_count()} CPUs visible, {args.threads} workers x 1 intra-op thread", "bundle": str(bundle),
        "words": len(words), "in_process": local, "wire": wire, "seconds_to_serving": to_serving,
        "rss_mb_after_warmup": rss_warm, "rss_mb_after_load": rss_loaded, "exit_code_after_sigterm": code,
        "ratio_32_clients_vs_in_process_batch32": wire[2]["words_per_s"] / local["batch32_words_per_s"],
        "p50_overhead_ms_1_client": wire[0]["p50_ms"] - local["p50_ms"],
    }  # fmt: skip
    lines = [
        f"# Service vs in-process engine ({result['machine']}; {len(words)} test words, greedy)",
        "",
        "| path | clients / batch | words/s | p50 ms | p95 ms | p99 ms | server CPU ms/req | client CPU ms/req |",
        "|---|---|---|---|---|---|---|---|",
        f"| in-process | batch 1 | {local['batch1_words_per_s']:.0f} | {local['p50_ms']:.2f} | "
        f"{local['p95_ms']:.2f} | | | |",
        f"| in-process | batch 32 | {local['batch32_words_per_s']:.0f} | | | | | |",
        *[f"| gRPC | {w['clients']} clients | {w['words_per_s']:.0f} | {w['p50_ms']:.2f} | {w['p95_ms']:.2f} | "
          f"{w['p99_ms']:.2f} | {w['server_cpu_ms_per_request']:.2f} | {w['client_cpu_ms_per_request']:.2f} |"
          for w in wire],
        "",
        f"- 32 clients vs in-process batch 32: {result['ratio_32_clients_vs_in_process_batch32']:.2f}x",
        f"- single-word p50 over the wire minus in-process: {result['p50_overhead_ms_1_client']:+.2f} ms",
        f"- start to SERVING: {to_serving:.2f} s; RSS after warm-up {rss_warm:.0f} MB, after the load "
        f"{rss_loaded:.0f} MB; exit code after SIGTERM: {code}",
        f"- errors: {sum(w['errors'] for w in wire)}",
    ]  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
