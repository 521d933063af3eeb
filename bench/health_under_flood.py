"""Health answers while the main port refuses a flood: the compose server under an open loop from the C++ load
generator, its main port's grpc.health.v1 and the image's Docker healthcheck (the health side port) polled meanwhile.

    docker compose up -d --wait g2p && python bench/health_under_flood.py [--rate 1500] [--seconds 15]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from collections import Counter
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="127.0.0.1:50051")
    ap.add_argument("--rate", type=float, default=1500.0)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--polls", type=int, default=10)
    args = ap.parse_args()
    words = ROOT / "bench" / "results" / ".flood-words.txt"
    test = (ROOT / "data" / "cmudict-0.7b.test").read_text().splitlines()
    words.write_text("\n".join(sorted(ln.split()[0].lower() for ln in test if ln.strip())[:3000]) + "\n")
    flood = subprocess.Popen([str(ROOT / "bench/loadgen/build/loadgen"), "--target", args.target, "--words", str(words),
                              "--clients", "8", "--rate", str(args.rate), "--duration-s", str(args.seconds),
                              "--timeout-ms", "60000", "--seed", "1"], stdout=subprocess.PIPE, text=True)  # fmt: skip
    seen: Counter[str] = Counter()
    time.sleep(3.0)  # the queue has filled
    with grpc.insecure_channel(args.target) as ch:
        for _ in range(args.polls):
            try:
                status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                seen[f"main port health: {health_pb2.HealthCheckResponse.ServingStatus.Name(status.status)}"] += 1
            except grpc.RpcError as exc:
                seen[f"main port health: {exc.code().name}"] += 1
            check = ["docker", "compose", "exec", "-T", "g2p", "python", "/app/docker/healthcheck.py"]
            done = subprocess.run(check, cwd=ROOT, capture_output=True, text=True, check=False)
            seen[f"docker healthcheck (side port): exit {done.returncode}"] += 1
            time.sleep(0.5)
    codes = json.loads(flood.communicate()[0])["codes"]
    words.unlink()
    names = {"0": "OK", "8": "RESOURCE_EXHAUSTED"}
    print(
        f"flood {args.rate:.0f}/s for {args.seconds:.0f} s: "
        + ", ".join(f"{names.get(k, k)} {v}" for k, v in codes.items())
    )
    for k, v in sorted(seen.items()):
        print(f"{k}: {v} of {args.polls}")
    return 0 if seen["docker healthcheck (side port): exit 0"] == args.polls else 1


if __name__ == "__main__":
    raise SystemExit(main())
