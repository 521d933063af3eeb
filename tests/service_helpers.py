"""Start the real server (port 0, waited on through health) for the service tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from conftest import ROOT
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.server import G2PServer
from service.settings import load_settings

SHIPPED_BUNDLE = ROOT / "models" / "g2p" / "1"


def shipped_checkpoint() -> Path:
    """The checkpoint the shipped bundle was exported from (its sha256 is in the manifest)."""
    manifest = json.loads((SHIPPED_BUNDLE / "manifest.json").read_text())
    import hashlib

    for p in sorted((ROOT / "checkpoints").glob("*/best.pt")):
        if hashlib.sha256(p.read_bytes()).hexdigest() == manifest["checkpoint_sha256"]:
            return p
    raise AssertionError("no committed checkpoint matches the shipped bundle's checkpoint_sha256")


def wait_serving(
    port: int, timeout: float = 30.0, tls_ca: Path | None = None, client_tls: tuple[Path, Path] | None = None
) -> None:
    """``client_tls``: (certificate, key) this client presents (a server with mutual TLS)."""
    if tls_ca is not None:
        cert, key = (p.read_bytes() for p in client_tls) if client_tls else (None, None)
        credentials = grpc.ssl_channel_credentials(tls_ca.read_bytes(), private_key=key, certificate_chain=cert)
        channel = grpc.secure_channel(f"localhost:{port}", credentials)
    else:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    with channel as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
    raise AssertionError(f"server on port {port} not SERVING after {timeout}s")


@contextmanager
def running_server(
    tls_ca: Path | None = None, client_tls: tuple[Path, Path] | None = None, **overrides: object
) -> Iterator[G2PServer]:
    """A server on the settings' ``overrides``, waited on through health (over TLS when ``tls_cert`` is set: trusting
    ``tls_ca``, default the server's certificate, and presenting ``client_tls`` when given)."""
    settings = load_settings(
        **{
            "port": 0,
            "metrics_port": 0,
            "model_repository": ROOT / "models",
            "workers": 2,
            "intra_op_threads": 1,
            "watch_interval_s": 0.2,
            "shutdown_grace_s": 5.0,
        }
        | overrides
    )
    server = G2PServer(settings)
    server.start()
    try:
        wait_serving(server.port, tls_ca=tls_ca or settings.tls_cert, client_tls=client_tls)
        yield server
    finally:
        server.stop(2.0)


@contextmanager
def server_process(env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``python -m service`` in a subprocess (a clean interpreter: no torch), its port read from its log."""
    full = os.environ | {"G2P_PORT": "0", "G2P_METRICS_PORT": "-1", "G2P_MODEL_REPOSITORY": str(ROOT / "models"),
                         "G2P_WORKERS": "2", "G2P_INTRA_OP_THREADS": "1", "PYTHONUNBUFFERED": "1"} | env  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "service"],
        cwd=ROOT,
        env=full,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stderr is not None
    port = 0
    end = time.monotonic() + 60
    lines = []
    while time.monotonic() < end:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"SERVING\s+address=[\d.]+:(\d+)", line)
        if m:
            port = int(m.group(1))
            break
    if not port:
        proc.kill()
        raise AssertionError("server did not start:\n" + "".join(lines) + proc.stderr.read())
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
