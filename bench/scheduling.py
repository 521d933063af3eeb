"""Per-batch against continuous scheduling, side by side in one run: two servers on the same bundle, one with
``G2P_SCHEDULING=batch``, one with ``continuous``, loaded in turns with the same requests.

    python bench/scheduling.py [--bundle-root models] [--seconds 20] [--loads 0.5 0.8 0.95]
                               [--out bench/results/scheduling]
    python bench/scheduling.py --quick   # smoke (CI): short phases, checks answers and status codes, writes nothing

Measures, single greedy words unless said:
- idle: one word at a time on an idle server, p50 (alternating the servers request by request);
- capacity: closed loop, 16 client threads, words/s of each server; the per-batch server's figure is the reference
  for the offered loads;
- open loop (Poisson arrivals, the same arrival times and words for both servers) at each ``--loads`` fraction of
  that capacity: p50 / p99 latency, throughput, status codes;
- a short request behind long ones: every worker busy with a 256-word request, then one single word: its latency
  against the long requests' (median of ``--long-rounds``); the same with beam search (``--beam``, every request);
- answers: the full test split through each server in requests of 64 words, every word's tokens compared with the
  in-process engine's, greedy (``Generate`` and streamed by ``GenerateStream``) and with the beam (every hypothesis
  of the n-best, ``--nbest``).

The load generator is Python threads in this process (gRPC futures for the open loop): it shares the machine's
CPUs with the server, the same for both servers.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import finish  # noqa: E402  (bench/: this script's folder)
from service_bench import InProcess, pct, start_server  # noqa: E402

from g2p.bundle import resolve_bundle  # noqa: E402
from g2p.lexicon import read_test_split  # noqa: E402
from service.api.g2p.v1 import g2p_pb2 as pb  # noqa: E402
from service.api.g2p.v1 import g2p_pb2_grpc as pb_grpc  # noqa: E402

MODES = ("batch", "continuous")
LONG_WORDS = 256


class Target:
    """One server and a stub per client thread (each its own channel)."""

    def __init__(self, mode: str, root: Path, workers: int, max_batch: int) -> None:
        self.mode = mode
        env = {"G2P_SCHEDULING": mode, "G2P_MAX_BATCH_SIZE": str(max_batch)}
        self.proc, self.port, self.start_s = start_server(root, workers, env)
        self._local = threading.local()

    def stub(self) -> pb_grpc.G2PStub:
        stub = getattr(self._local, "stub", None)
        if stub is None:
            channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
            stub = self._local.stub = pb_grpc.G2PStub(channel)
        return stub

    def generate(self, words: list[str], timeout: float = 120, beam: int = 1, nbest: int = 1) -> list[str]:
        """Each word's hypotheses (best first), joined by ' | '."""
        options = pb.GenerateOptions(beam_size=beam, num_hypotheses=nbest)
        reply = self.stub().Generate(pb.GenerateRequest(inputs=words, options=options), timeout=timeout)
        return [" | ".join(h.text for h in o.hypotheses) for o in reply.outputs]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def idle_p50(targets: list[Target], words: list[str]) -> dict[str, float]:
    times: dict[str, list[float]] = {t.mode: [] for t in targets}
    for w in words:
        for t in targets:
            t0 = time.perf_counter()
            t.generate([w])
            times[t.mode].append((time.perf_counter() - t0) * 1000)
    return {m: round(pct(v, 50), 2) for m, v in times.items()}


def capacity(target: Target, words: list[str], seconds: float, clients: int = 16) -> float:
    end = time.monotonic() + seconds
    counts = [0] * clients

    def client(k: int) -> None:
        rng = random.Random(k)
        while time.monotonic() < end:
            target.generate([rng.choice(words)])
            counts[k] += 1

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return sum(counts) / seconds


def open_loop(target: Target, arrivals: list[tuple[float, str]]) -> dict:
    """Send each word at its arrival time (seconds from the start) without waiting for answers."""
    channel = grpc.insecure_channel(f"127.0.0.1:{target.port}")
    stub = pb_grpc.G2PStub(channel)
    latencies: list[float] = []
    codes: dict[str, int] = {}
    lock = threading.Lock()
    pending = []
    start = time.perf_counter()
    for at, word in arrivals:
        delay = start + at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        t0 = time.perf_counter()
        fut = stub.Generate.future(pb.GenerateRequest(inputs=[word]), timeout=60)

        def done(f: grpc.Future, t0: float = t0) -> None:
            exc = f.exception()
            code = "OK" if exc is None else exc.code().name
            with lock:
                codes[code] = codes.get(code, 0) + 1
                if exc is None:
                    latencies.append((time.perf_counter() - t0) * 1000)

        fut.add_done_callback(done)
        pending.append(fut)
    for f in pending:
        f.exception()
    wall = time.perf_counter() - start
    channel.close()
    return {"p50_ms": round(pct(latencies, 50), 2), "p99_ms": round(pct(latencies, 99), 2),
            "throughput_rps": round(codes.get("OK", 0) / wall, 1), "codes": codes}  # fmt: skip


def median_run(runs: list[dict]) -> dict:
    """The rounds of one open-loop phase: the median of each figure, the status codes summed, every round kept."""
    codes: dict[str, int] = {}
    for run in runs:
        for code, n in run["codes"].items():
            codes[code] = codes.get(code, 0) + n
    med = {k: round(statistics.median(run[k] for run in runs), 2) for k in ("p50_ms", "p99_ms", "throughput_rps")}
    return med | {"codes": codes, "rounds": runs}


def short_behind_long(target: Target, words: list[str], workers: int, rounds: int, beam: int = 1) -> dict:
    """Every worker busy with a 256-word request, then one word (all of them with ``beam``): its latency and the
    long requests'."""
    ratios, short_ms, long_ms = [], [], []
    rng = random.Random(7)
    for _ in range(rounds):
        longs = [rng.sample(words, LONG_WORDS) for _ in range(workers)]
        with ThreadPoolExecutor(workers + 1) as pool:
            t0 = time.perf_counter()
            futs = [pool.submit(target.generate, batch, beam=beam) for batch in longs]
            time.sleep(0.02)  # the long requests are decoding
            t1 = time.perf_counter()
            target.generate([rng.choice(words)], beam=beam)
            short = (time.perf_counter() - t1) * 1000
            for f in futs:
                f.result()
            long = (time.perf_counter() - t0) * 1000
        ratios.append(short / long)
        short_ms.append(short)
        long_ms.append(long)
    return {"short_ms": round(statistics.median(short_ms), 1), "long_ms": round(statistics.median(long_ms), 1),
            "ratio": round(statistics.median(ratios), 3), "rounds": rounds}  # fmt: skip


def streamed(target: Target, words: list[str], expected: list[str]) -> int:
    """Words streamed by ``GenerateStream`` (in requests of 64) whose token events or final answer differ from the
    in-process engine's greedy tokens."""
    bad = 0
    for s in range(0, len(words), 64):
        part = words[s : s + 64]
        tokens: list[list[str]] = [[] for _ in part]
        final: list[str] = ["" for _ in part]
        for event in target.stub().GenerateStream(pb.GenerateRequest(inputs=part), timeout=120):
            if event.HasField("token"):
                tokens[event.index].append(event.token.token)
            else:
                final[event.index] = event.final.hypotheses[0].text
        bad += sum(" ".join(t) != e or f != e for t, f, e in zip(tokens, final, expected[s : s + 64], strict=True))
    return bad


def answers(target: Target, words: list[str], expected: list[str], beam: int = 1, nbest: int = 1) -> int:
    """Words whose tokens over the wire (every hypothesis) differ from the in-process engine's."""
    got: list[str] = []
    for s in range(0, len(words), 64):
        got += target.generate(words[s : s + 64], beam=beam, nbest=nbest)
    return sum(a != b for a, b in zip(got, expected, strict=True))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle-root", type=Path, default=ROOT / "models")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-batch-size", type=int, default=32, help="G2P_MAX_BATCH_SIZE of both servers")
    ap.add_argument("--seconds", type=float, default=15.0, help="each open-loop phase")
    ap.add_argument("--rounds", type=int, default=3, help="open-loop rounds per load (median reported)")
    ap.add_argument("--loads", type=float, nargs="+", default=[0.5, 0.8, 0.95])
    ap.add_argument("--long-rounds", type=int, default=7)
    ap.add_argument("--beam", type=int, default=5, help="the beam of the beam-search rows")
    ap.add_argument("--nbest", type=int, default=3, help="hypotheses compared per word with the beam")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scheduling")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.loads, args.long_rounds, args.rounds = 2.0, [0.5], 1, 1
    bundle = resolve_bundle(args.bundle_root, "g2p")
    alphabet = set(InProcess(bundle, 1).tok.source_alphabet())
    test = [w for w in sorted(read_test_split(ROOT / "data" / "cmudict-0.7b.test")) if set(w) <= alphabet]
    words = test[:: max(len(test) // 2000, 1)]
    split = test[:600] if args.quick else test
    local = InProcess(bundle, args.workers)
    expected = local.decode(split, 64)
    expected_beam = local.decode(split, 64, beam=args.beam, nbest=args.nbest)
    targets = [Target(m, args.bundle_root, args.workers, args.max_batch_size) for m in MODES]
    try:
        r: dict = {"workers": args.workers, "max_batch_size": args.max_batch_size, "words": len(words),
                   "start_s": {t.mode: round(t.start_s, 2) for t in targets}}  # fmt: skip
        r["idle_p50_ms"] = idle_p50(targets, words[: 40 if args.quick else 300])
        r["capacity_rps"] = {t.mode: round(capacity(t, words, 3 if args.quick else 10), 1) for t in targets}
        reference = r["capacity_rps"]["batch"]
        r["open_loop"], r["open_loop_rounds"] = {}, args.rounds
        for load in args.loads:
            runs: dict[str, list[dict]] = {t.mode: [] for t in targets}
            for k in range(args.rounds):  # the servers take turns, round by round, on the same arrivals
                rng = random.Random(int(load * 1000) + k)
                at, arrivals = 0.0, []
                while at < args.seconds:
                    at += rng.expovariate(load * reference)
                    arrivals.append((at, rng.choice(words)))
                for t in targets if k % 2 == 0 else targets[::-1]:
                    runs[t.mode].append(open_loop(t, arrivals))
            r["open_loop"][str(load)] = {m: median_run(v) for m, v in runs.items()}
        r["short_behind_long"] = {t.mode: short_behind_long(t, words, args.workers, args.long_rounds) for t in targets}
        r["beam"], r["nbest"] = args.beam, args.nbest
        r["short_behind_long_beam"] = {
            t.mode: short_behind_long(t, words, args.workers, args.long_rounds, args.beam) for t in targets
        }
        r["answers_differing"] = {t.mode: answers(t, split, expected) for t in targets}
        r["answers_differing_streamed"] = {t.mode: streamed(t, split, expected) for t in targets}
        r["answers_differing_beam"] = {t.mode: answers(t, split, expected_beam, args.beam, args.nbest) for t in targets}
        r["answers_words"] = len(split)
    finally:
        for t in targets:
            t.stop()
    # a load above a server's capacity fills its queue: refusals (RESOURCE_EXHAUSTED) are then the right answer,
    # counted in the table; anything else is a failure
    codes_ok = all(set(v["codes"]) <= {"OK", "RESOURCE_EXHAUSTED"} for per in r["open_loop"].values()
                   for v in per.values())  # fmt: skip
    kinds = ("answers_differing", "answers_differing_streamed", "answers_differing_beam")
    same = all(n == 0 for k in kinds for n in r[k].values())
    failed = "" if codes_ok and same else f"codes ok {codes_ok}, answers identical {same}"
    return finish(report(r), r, args.out, failed, args.quick)


def report(r: dict) -> str:
    idle = r["idle_p50_ms"]["continuous"]
    lines = [
        "# Per-batch vs continuous scheduling (one run, two servers, same requests)",
        "",
        f"Command: `python bench/scheduling.py --max-batch-size {r['max_batch_size']}`; {r['workers']} decode "
        f"workers per server, G2P_MAX_BATCH_SIZE={r['max_batch_size']}, 2 shared CPUs, the Python load generator "
        "on the same CPUs.",
        "",
        "| | per batch | continuous |",
        "|---|---|---|",
        f"| one word on an idle server, p50 ms | {r['idle_p50_ms']['batch']} | {idle} |",
        f"| capacity, single words, 16 closed-loop clients, words/s | {r['capacity_rps']['batch']} | "
        f"{r['capacity_rps']['continuous']} |",
    ]

    def refused(v: dict) -> str:
        n = v["codes"].get("RESOURCE_EXHAUSTED", 0)
        return f" ({n} refused: over its capacity)" if n else ""

    for load, per in r["open_loop"].items():
        b, c = per["batch"], per["continuous"]
        lines.append(f"| open loop at {float(load):.0%} of the per-batch capacity: p50 / p99 ms of accepted, "
                     f"words/s (median of {r['open_loop_rounds']} rounds) | "
                     f"{b['p50_ms']} / {b['p99_ms']}, {b['throughput_rps']}{refused(b)} | "
                     f"{c['p50_ms']} / {c['p99_ms']}, {c['throughput_rps']}{refused(c)} |")  # fmt: skip
    sb, sc = r["short_behind_long"]["batch"], r["short_behind_long"]["continuous"]
    bb, bc = r["short_behind_long_beam"]["batch"], r["short_behind_long_beam"]["continuous"]
    k = r["beam"]
    lines += [
        f"| one word sent while every worker decodes a {LONG_WORDS}-word request: its ms / theirs (median ratio) | "
        f"{sb['short_ms']} / {sb['long_ms']} ({sb['ratio']}) | {sc['short_ms']} / {sc['long_ms']} ({sc['ratio']}) |",
        f"| the same, every request with beam {k} | {bb['short_ms']} / {bb['long_ms']} ({bb['ratio']}) | "
        f"{bc['short_ms']} / {bc['long_ms']} ({bc['ratio']}) |",
        f"| words of the test split differing from the in-process engine (of {r['answers_words']}), greedy | "
        f"{r['answers_differing']['batch']} | {r['answers_differing']['continuous']} |",
        f"| the same streamed (GenerateStream: every token event and the final answer) | "
        f"{r['answers_differing_streamed']['batch']} | {r['answers_differing_streamed']['continuous']} |",
        f"| the same with beam {k}, all {r['nbest']} hypotheses of each word compared | "
        f"{r['answers_differing_beam']['batch']} | {r['answers_differing_beam']['continuous']} |",
        "",
        "Targets (issue 15): a one-word request behind long ones finishes in under 0.15x their time "
        f"(continuous: {sc['ratio']}); single words in an open loop at 80 % of capacity: p99 <= 2x the idle "
        f"server's one-word p50 ({2 * idle:.2f} ms): "
        + (f"continuous p99 {r['open_loop']['0.8']['continuous']['p99_ms']} ms." if "0.8" in r["open_loop"] else "-"),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
