"""The Python client's channel: retries of UNAVAILABLE (a replica restarting) and round robin over addresses."""

from __future__ import annotations

import json
import threading
from concurrent import futures

import grpc

from service.api.g2p.v1 import g2p_pb2 as pb
from service.api.g2p.v1 import g2p_pb2_grpc as pb_grpc
from service.client import CHANNEL_OPTIONS, G2PClient


class Flaky(pb_grpc.G2PServicer):
    """UNAVAILABLE for the first ``failures`` calls, then an answer."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.lock = threading.Lock()

    def GetModel(self, request, context):
        with self.lock:
            self.calls += 1
            n = self.calls
        if n <= self.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        return pb.ModelInfo(name="g2p")


def serve(servicer):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_G2PServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def test_unavailable_is_retried_until_an_answer():
    flaky = Flaky(failures=3)
    server, port = serve(flaky)
    try:
        with G2PClient(f"127.0.0.1:{port}", timeout=10) as client:
            assert client.get_model().name == "g2p"
        assert flaky.calls == 4
    finally:
        server.stop(0)


def test_retries_give_up_after_the_policy_s_attempts():
    flaky = Flaky(failures=100)
    server, port = serve(flaky)
    try:
        with G2PClient(f"127.0.0.1:{port}", timeout=10) as client:
            try:
                client.get_model()
                raise AssertionError("expected UNAVAILABLE")
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE
        attempts = json.loads(dict(CHANNEL_OPTIONS)["grpc.service_config"])["methodConfig"][0]["retryPolicy"]
        assert flaky.calls == attempts["maxAttempts"]
    finally:
        server.stop(0)


def test_round_robin_spreads_calls_over_every_address():
    a, b = Flaky(0), Flaky(0)
    (sa, pa), (sb, pb_) = serve(a), serve(b)
    try:
        with G2PClient(f"ipv4:127.0.0.1:{pa},127.0.0.1:{pb_}", timeout=10) as client:
            for _ in range(20):
                client.get_model()
        assert a.calls >= 5 and b.calls >= 5
    finally:
        sa.stop(0)
        sb.stop(0)
