"""The server's C allocator side by side: glibc's malloc (``G2P_ALLOCATOR=system``) against jemalloc with the
server's options (``jemalloc``: service/allocator.py), each in its own ``python -m service``, rounds alternating.

Per server: RSS after warm-up; a burst of two requests of the 128 longest test words at beam 16 (the memory-budget
test's, under a 700 MiB budget): the peak (VmHWM), RSS right after and 3 s later; then decode time: 10 requests of
32 words (greedy), 8 of 8 words at beam 5, 150 single words, one after the other. Ratios jemalloc / system from the
medians over rounds. The soak's RSS curve is bench/reliability.py's.

    python bench/allocator_bench.py [--rounds 3] [--out bench/results/allocator]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import grpc

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]

from common import memory_mib  # noqa: E402  (bench/: this script's folder)
from reliability import start  # noqa: E402

from g2p.lexicon import read_test_split  # noqa: E402
from service.api.g2p.v1 import g2p_pb2 as pb  # noqa: E402
from service.api.g2p.v1 import g2p_pb2_grpc as pb_grpc  # noqa: E402

CHOICES = ("system", "jemalloc")


def one_server(choice: str, longest: list[str], sample: list[str]) -> dict[str, Any]:
    server = start(G2P_ALLOCATOR=choice, G2P_MEMORY_BUDGET_MB="700", G2P_WORKERS="2", G2P_INTRA_OP_THREADS="1")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = pb_grpc.G2PStub(ch)

            def generate(words: list[str], beam: int = 1) -> None:
                opts = pb.GenerateOptions(beam_size=beam)
                stub.Generate(pb.GenerateRequest(inputs=words, options=opts), timeout=120)

            for w in longest[:3]:
                generate([w], 16)
            warm = memory_mib(server.proc.pid)["VmRSS"]
            request = pb.GenerateRequest(inputs=longest, options=pb.GenerateOptions(beam_size=16))
            for f in [stub.Generate.future(request, timeout=120) for _ in range(2)]:
                f.result()
            after = memory_mib(server.proc.pid)
            time.sleep(3.0)
            later = memory_mib(server.proc.pid)["VmRSS"]
            times = {}
            for name, calls in {
                "greedy_32": [(sample[i : i + 32], 1) for i in range(0, 320, 32)],
                "beam5_8": [(sample[i : i + 8], 5) for i in range(0, 64, 8)],
                "single_word": [([w], 1) for w in sample[:150]],
            }.items():
                t0 = time.perf_counter()
                for words, beam in calls:
                    generate(words, beam)
                times[name] = time.perf_counter() - t0
        return {"allocator": server.allocator(), "warm_mib": warm, "peak_mib": after["VmHWM"],
                "after_mib": after["VmRSS"], "after_3s_mib": later, "seconds": times}  # fmt: skip
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "allocator")
    args = ap.parse_args(argv)
    words = sorted(read_test_split(ROOT / "data" / "cmudict-0.7b.test"), key=lambda w: (-len(w), w))
    longest, sample = words[:128], random.Random(0).sample(words, 400)
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in CHOICES}
    for r in range(args.rounds):
        for choice in CHOICES if r % 2 == 0 else CHOICES[::-1]:
            runs[choice].append(one_server(choice, longest, sample))
            print(r, choice, json.dumps(runs[choice][-1]), flush=True)
    for choice, rs in runs.items():
        if any(x["allocator"] != choice for x in rs):
            print(f"error: G2P_ALLOCATOR={choice} did not run on {choice}: {[x['allocator'] for x in rs]}")
            return 1

    def med(choice: str, key: str, sub: str | None = None) -> float:
        return statistics.median(x[key][sub] if sub else x[key] for x in runs[choice])

    rows = [
        ("RSS after warm-up (MiB)", "warm_mib", None),
        ("peak during the burst (MiB)", "peak_mib", None),
        ("RSS right after the burst (MiB)", "after_mib", None),
        ("RSS 3 s after the burst (MiB)", "after_3s_mib", None),
        ("10 x 32 words greedy (s)", "seconds", "greedy_32"),
        ("8 x 8 words beam 5 (s)", "seconds", "beam5_8"),
        ("150 single words (s)", "seconds", "single_word"),
    ]
    lines = [
        "# The server's C allocator: glibc malloc vs jemalloc",
        "",
        f"`python bench/allocator_bench.py {' '.join(sys.argv[1:])}`: {args.rounds} rounds, alternating; each cell "
        "the median over rounds; one server process at a time, 2 workers x 1 intra-op thread, 700 MiB budget.",
        "",
        "| measure | system (glibc) | jemalloc | jemalloc / system |",
        "|---|---|---|---|",
    ]
    summary = {}
    for label, key, sub in rows:
        a, b = med("system", key, sub), med("jemalloc", key, sub)
        summary[label] = {"system": round(a, 3), "jemalloc": round(b, 3), "ratio": round(b / a, 3)}
        lines.append(f"| {label} | {a:.2f} | {b:.2f} | {b / a:.2f}x |")
    for choice in CHOICES:
        warm = med(choice, "warm_mib")
        lines.append("")
        lines.append(
            f"{choice}: RSS right after the burst / warm, per round: "
            + ", ".join(f"{x['after_mib'] / x['warm_mib']:.2f}x" for x in runs[choice])
            + f"; 3 s after: {med(choice, 'after_3s_mib') / warm:.2f}x (median)"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"summary": summary, "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
