"""Load through one DNS name over every server replica, and what each replica served (its Prometheus metrics).

Runs inside the compose network (the ``load`` service of the ``replicas`` profile: the serving image, this directory
mounted), while the driver on the host (``docker/replicas-smoke.sh``) stops or kills a server container mid-load:

    python bench/replicas.py --target dns:///g2p-replica:50051 --seconds 20 --expect-replicas 3 --expect-down 1
    python bench/replicas.py --target dns:///g2p:50051 --seconds 30 --timeout 30 --wait-for-ready --expect-down 1

- ``--threads`` closed-loop threads send ``Generate`` requests (``--batch`` words each) through one
  ``G2PClient(target)``: its service config balances round robin over the name's addresses and retries UNAVAILABLE.
  ``--wait-for-ready`` adds gRPC's wait-for-ready to every call (a call waits for a connection, up to its deadline,
  instead of failing while no replica answers), ``--timeout`` is each call's deadline.
- A scraper resolves the name (Docker's DNS: one address per running replica) every ``--scrape-interval`` seconds and
  reads ``g2p_requests_total{method="Generate",code="OK"}`` from every address it has seen, on ``--metrics-port``
  (the server's G2P_METRICS_HOST must be 0.0.0.0 in a container, as the serving image sets it). A replica that stops
  answering is marked down; one that answers again with a smaller counter restarted (the counts before the restart
  are kept). A stopped replica's last requests after its last scrape are what the client counted OK minus what the
  metrics counted: printed as ``unscraped``.
- The report: requests OK / failed (by status code), latency percentiles and the slowest, a per-second timeline
  around every down period, and per replica its address, container name (reverse DNS), requests served, down
  periods. Exit 1 when a request failed, fewer than ``--expect-replicas`` replicas served, or fewer than
  ``--expect-down`` replicas went down. ``--json`` writes the whole result.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import socket
import sys
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.client import SERVICE_CONFIG, G2PClient  # noqa: E402

FALLBACK_WORDS = [
    *("hello", "world", "speech", "synthesis", "tensor", "replica", "balance", "network", "container", "compose"),
    *("grapheme", "phoneme", "pronunciation", "language", "stress", "vowel", "consonant", "syllable", "zorbleflax"),
]
OK_LINE = re.compile(r"^g2p_requests_total\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)", re.M)


def load_words(path: Path) -> list[str]:
    if path.exists():
        words = [ln.split()[0].lower() for ln in path.read_text(encoding="latin-1").splitlines() if ln.strip()]
        return [w for w in words if w.isalpha()] or FALLBACK_WORDS
    return FALLBACK_WORDS


def host_of(target: str) -> tuple[str, int]:
    """``dns:///g2p:50051`` or ``g2p:50051`` -> (``g2p``, 50051)."""
    rest = target.split("///", 1)[1] if "///" in target else target
    parts = urlsplit("//" + rest)
    return parts.hostname or rest, parts.port or 50051


def generate_ok(text: str) -> float:
    """The number of Generate RPCs that ended OK, from a /metrics page."""
    total = 0.0
    for m in OK_LINE.finditer(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m["labels"]))
        if labels.get("method") == "Generate" and labels.get("code") == "OK":
            total += float(m["value"])
    return total


@dataclass
class Replica:
    ip: str
    name: str
    first_seen: float
    count: float = 0.0  # the counter at the last scrape
    before_restarts: float = 0.0  # what earlier lives of this address served (the counter restarted from 0)
    up: bool = True
    last_ok: float = 0.0
    down: list[tuple[float, float | None]] = field(default_factory=list)  # (last scrape OK, OK again or None)
    restarts: int = 0

    @property
    def served(self) -> float:
        return self.before_restarts + self.count


class Scraper(threading.Thread):
    def __init__(self, host: str, port: int, interval: float) -> None:
        super().__init__(name="scraper", daemon=True)
        self.host, self.port, self.interval = host, port, interval
        self.replicas: dict[str, Replica] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.pool = ThreadPoolExecutor(8)

    def resolve(self) -> set[str]:
        try:
            return {str(a[4][0]) for a in socket.getaddrinfo(self.host, self.port, socket.AF_INET, socket.SOCK_STREAM)}
        except socket.gaierror:
            return set()

    def fetch(self, ip: str) -> float | None:
        try:
            with urllib.request.urlopen(f"http://{ip}:{self.port}/metrics", timeout=min(self.interval, 1.0)) as r:
                return generate_ok(r.read().decode())
        except OSError:
            return None

    def scrape(self) -> None:
        now = time.time()
        for ip in self.resolve() - self.replicas.keys():
            try:
                name = socket.gethostbyaddr(ip)[0].split(".")[0]
            except OSError:
                name = "?"
            self.replicas[ip] = Replica(ip, name, now, last_ok=now)
        ips = list(self.replicas)
        for ip, value in zip(ips, self.pool.map(self.fetch, ips), strict=True):
            r = self.replicas[ip]
            with self.lock:
                if value is None:
                    if r.up:
                        r.up = False
                        r.down.append((r.last_ok, None))
                    continue
                if not r.up:
                    r.up = True
                    r.down[-1] = (r.down[-1][0], now)
                if value < r.count:  # a new process at this address: its counter starts again
                    r.restarts += 1
                    r.before_restarts += r.count
                r.count, r.last_ok = value, now

    def run(self) -> None:
        while not self.stopping.is_set():
            start = time.monotonic()
            self.scrape()
            self.stopping.wait(max(0.0, self.interval - (time.monotonic() - start)))

    def stop(self) -> None:
        self.stopping.set()
        self.join()
        self.scrape()  # the final counts


@dataclass
class Calls:
    ok: list[tuple[float, float]] = field(default_factory=list)  # (start, latency)
    failed: list[tuple[float, str, str]] = field(default_factory=list)  # (start, code, details)
    lock: threading.Lock = field(default_factory=threading.Lock)


def worker(client: G2PClient, words: list[str], args: argparse.Namespace, end: float, seed: int, calls: Calls) -> None:
    rng = random.Random(seed)
    while time.time() < end:
        batch = rng.sample(words, args.batch)
        start = time.time()
        try:
            response = client.stub.Generate(
                client.request(batch), timeout=args.timeout, wait_for_ready=args.wait_for_ready
            )
            if len(response.outputs) != len(batch) or not all(o.hypotheses for o in response.outputs):
                raise ValueError("an answer without a hypothesis per word")
        except grpc.RpcError as exc:
            with calls.lock:
                calls.failed.append((start, exc.code().name, exc.details() or ""))
            continue
        except ValueError as exc:
            with calls.lock:
                calls.failed.append((start, "BAD_ANSWER", str(exc)))
            continue
        with calls.lock:
            calls.ok.append((start, time.time() - start))


def clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 10)}"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--target", default="dns:///g2p-replica:50051", help="gRPC target (default %(default)s)")
    ap.add_argument("--seconds", type=float, default=20.0, help="how long to send requests (default %(default)s)")
    ap.add_argument("--threads", type=int, default=8, help="closed-loop sending threads (default %(default)s)")
    ap.add_argument("--batch", type=int, default=4, help="words per request (default %(default)s)")
    ap.add_argument("--timeout", type=float, default=5.0, help="each call's deadline, s (default %(default)s)")
    ap.add_argument("--wait-for-ready", action="store_true", help="calls wait for a connection up to the deadline")
    ap.add_argument("--metrics-port", type=int, default=8000, help="the replicas' metrics port (default %(default)s)")
    ap.add_argument("--scrape-interval", type=float, default=0.25, help="seconds between scrapes (default %(default)s)")
    ap.add_argument("--words", type=Path, default=ROOT / "data" / "cmudict-0.7b.test", help="word list (1st column)")
    ap.add_argument("--expect-replicas", type=int, default=1, help="replicas that must serve requests")
    ap.add_argument("--expect-down", type=int, default=0, help="replicas that must go down (stopped or killed)")
    ap.add_argument("--ready-timeout", type=float, default=60.0, help="wait this long for SERVING first")
    ap.add_argument("--json", type=Path, default=None, help="write the whole result here")
    args = ap.parse_args(argv)

    words = load_words(args.words)
    host, _ = host_of(args.target)
    client = G2PClient(args.target, timeout=args.timeout)
    if not client.wait_serving(args.ready_timeout):
        print(f"error: {args.target} not SERVING after {args.ready_timeout} s", file=sys.stderr)
        return 1
    scraper = Scraper(host, args.metrics_port, args.scrape_interval)
    scraper.scrape()
    baseline = {ip: r.count for ip, r in scraper.replicas.items()}  # what they served before this run (healthchecks
    # are Check RPCs, not counted; the client container's own hello world is)
    scraper.start()
    calls = Calls()
    t0 = time.time()
    end = t0 + args.seconds
    retry = cast("list[dict[str, Any]]", SERVICE_CONFIG["methodConfig"])[0]["retryPolicy"]
    print(f"{clock(t0)} load: {args.threads} threads x Generate({args.batch} words) for {args.seconds:g} s "
          f"through G2PClient({args.target!r}), deadline {args.timeout:g} s, wait_for_ready={args.wait_for_ready}; "
          f"retry policy {json.dumps(retry)}", flush=True)  # fmt: skip
    print(f"{clock(t0)} {host} resolves to {sorted(scraper.replicas)}", flush=True)
    threads = [
        threading.Thread(target=worker, args=(client, words, args, end, i, calls), name=f"load-{i}")
        for i in range(args.threads)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    t1 = time.time()
    scraper.stop()
    client.close()

    ok_n, failed_n = len(calls.ok), len(calls.failed)
    latencies = [lat for _, lat in calls.ok]
    replicas = sorted(scraper.replicas.values(), key=lambda r: r.name)
    served = {r.ip: r.served - baseline.get(r.ip, 0.0) for r in replicas}
    unscraped = ok_n - sum(served.values())
    print(f"\n{clock(t1)} done: {ok_n} requests OK, {failed_n} failed in {t1 - t0:.1f} s "
          f"({ok_n / (t1 - t0):.0f} req/s); latency p50 {percentile(latencies, 0.5) * 1e3:.1f} ms, "
          f"p99 {percentile(latencies, 0.99) * 1e3:.1f} ms, max {max(latencies, default=0) * 1e3:.0f} ms; "
          f"{sum(lat > 1 for lat in latencies)} requests took over 1 s")  # fmt: skip
    if calls.failed:
        print("failed by code:", dict(Counter(code for _, code, _ in calls.failed)))
        for start, code, details in calls.failed[:5]:
            print(f"  {clock(start)} {code}: {details[:160]}")

    print("\n| replica (container) | address | Generate OK (metrics) | down (last scrape OK -> answering again) |")
    print("|---|---|---:|---|")
    for r in replicas:
        downs = ", ".join(f"{clock(a)} -> {clock(b) if b else 'stopped'}" for a, b in r.down) or "-"
        restarted = f" ({r.restarts} restart{'s' * (r.restarts != 1)})" if r.restarts else ""
        print(f"| {r.name} | {r.ip} | {served[r.ip]:.0f}{restarted} | {downs} |")
    print(f"| unscraped | | {unscraped:.0f} | OK at the client, not in any final scrape: a replica's requests after "
          f"its last scrape before it went away (or answers lost with a killed process: negative) |")  # fmt: skip

    for r, a, b in [(rep, a, b) for rep in replicas for a, b in rep.down]:
        lo, hi = int(a - t0) - 2, int((b if b else a) - t0) + 3
        print(f"\ntimeline around {r.name} going down (s since start: requests started OK / failed, max latency):")
        for s in range(max(lo, 0), min(hi, int(t1 - t0) + 1)):
            oks = [lat for st, lat in calls.ok if s <= st - t0 < s + 1]
            bad = sum(s <= st - t0 < s + 1 for st, _, _ in calls.failed)
            print(f"  {clock(t0 + s)} +{s:>3}s  {len(oks):>5} OK  {bad:>3} failed  max {max(oks, default=0):.2f} s")

    serving = [r for r in replicas if served[r.ip] > 0]
    went_down = [r for r in replicas if r.down]
    checks = {
        f"0 failed requests ({failed_n})": failed_n == 0,
        f"every replica served (>= {args.expect_replicas}: {len(serving)})": len(serving) >= args.expect_replicas,
        f"replicas that went down >= {args.expect_down} ({len(went_down)})": len(went_down) >= args.expect_down,
    }
    print()
    for name, passed in checks.items():
        print(f"{'PASS' if passed else 'FAIL'} {name}")
    if args.json:
        result = {
            "target": args.target, "seconds": t1 - t0, "threads": args.threads, "batch": args.batch,
            "timeout": args.timeout, "wait_for_ready": args.wait_for_ready, "ok": ok_n, "failed": failed_n,
            "failed_by_code": dict(Counter(code for _, code, _ in calls.failed)),
            "latency_s": {"p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
                          "max": max(latencies, default=0.0)},
            "replicas": [asdict(r) | {"served_this_run": served[r.ip]} for r in replicas],
            "unscraped": unscraped, "checks": checks,
        }  # fmt: skip
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
