"""Prometheus metrics (prometheus-client), on their own registry, served over HTTP on ``metrics_port``."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
if TYPE_CHECKING:
    from g2p.text.phonemizer import TextPron

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("g2p_requests", "RPCs by method and status code", ["method", "code"], registry=r)
        self.latency = Histogram(
            "g2p_request_latency_seconds", "RPC latency", ["method"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_time = Histogram(
            "g2p_queue_time_seconds", "time a request waited for its batch", buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram("g2p_batch_size", "inputs decoded together", buckets=BATCH_BUCKETS, registry=r)
        self.batch_time = Histogram(
            "g2p_batch_seconds",
            "time one batch took to decode (continuous scheduling: one step, newcomers' admission included)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("g2p_generated_tokens", "output tokens generated (incl. end tokens)", registry=r)
        self.queue_depth = Gauge("g2p_queue_depth", "requests waiting for a batch", registry=r)
        self.rejected = Counter(
            "g2p_rejected_requests",
            "requests refused at once because the server was full: by gRPC at its door, max_queue_size RPCs in "
            "(rpcs), or by the engine, max_queue_size jobs in it (queue)",
            ["reason"],
            registry=r,
        )
        self.dropped = Counter(
            "g2p_dropped_requests",
            "requests the engine dropped instead of decoding (or finishing) them: their deadline passed (deadline) "
            "or their client went away (cancelled)",
            ["reason"],
            registry=r,
        )
        self.model_state = Gauge(
            "g2p_model_loaded", "1 when a model version is loaded and ready", ["model", "version"], registry=r
        )
        self.text_words = Counter(
            "g2p_text_words", "spoken words pronounced by the text front end, by source", ["source"], registry=r
        )
        self.model_cache_hits = Counter("g2p_model_cache_hits", "unknown words answered from the cache", registry=r)
        self.model_cache_size = Gauge("g2p_model_cache_size", "model answers in the cache", registry=r)
        self.server_ready = Gauge("g2p_server_ready", "1 while the server is SERVING", registry=r)
        self.http_port: int | None = None

    def count_text(self, results: Sequence[TextPron], cache_size: int) -> None:
        """Per spoken word: its source (cache hits counted apart), and the cache's size after the request. Counted
        in one pass, then one increment per source (not one per word)."""
        counts = collections.Counter((w.source, w.cached) for r in results for w in r.words())
        by_source: collections.Counter[str] = collections.Counter()
        for (source, cached), n in counts.items():
            by_source[source] += n
            if cached:
                self.model_cache_hits.inc(n)
        for source, n in by_source.items():
            self.text_words.labels(source).inc(n)
        self.model_cache_size.set(cache_size)

    def serve(self, host: str, port: int) -> int:
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        self.http_port = int(server.server_port)
        return self.http_port


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts every RPC by method and final status code and observes its latency (unary and streaming)."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics
        self._door: Any = None

    def watch(self, server: grpc.Server) -> bool:
        """Count the calls that ``server``'s limit on concurrent RPCs (``maximum_concurrent_rpcs``) refuses: they
        never reach a handler. grpcio calls interceptors in its polling thread, under its server lock, right after
        it tested that limit and before it acts on the test, so the same test here (on grpcio's private server
        state) is its decision exactly. False (the refusals go uncounted) where that state is not found."""
        state = getattr(server, "_state", None)
        if not all(hasattr(state, a) for a in ("active_rpc_count", "maximum_concurrent_rpcs", "lock")):
            return False
        self._door = state
        return True

    def _refused_at_the_door(self) -> bool:
        door = self._door
        return (
            door is not None
            and door.maximum_concurrent_rpcs is not None
            and (door.active_rpc_count >= door.maximum_concurrent_rpcs)
        )

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method.rsplit("/", 1)[-1]
        m = self.m
        if self._refused_at_the_door():  # gRPC answers RESOURCE_EXHAUSTED without calling the handler
            m.rejected.labels("rpcs").inc()
            m.requests.labels(method, grpc.StatusCode.RESOURCE_EXHAUSTED.name).inc()
            return handler

        def record(context: Any, start: float, failed: BaseException | None) -> None:
            code = context.code() if hasattr(context, "code") else None
            if code is None:
                code = grpc.StatusCode.UNKNOWN if failed is not None else grpc.StatusCode.OK
            m.requests.labels(method, code.name).inc()
            m.latency.labels(method).observe(time.perf_counter() - start)

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            def unary(request: Any, context: Any) -> Any:
                start = time.perf_counter()
                try:
                    out = inner(request, context)
                except BaseException as exc:
                    record(context, start, exc)
                    raise
                record(context, start, None)
                return out

            return grpc.unary_unary_rpc_method_handler(unary, handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            def stream(request: Any, context: Any) -> Any:
                start = time.perf_counter()
                try:
                    yield from inner_stream(request, context)
                except BaseException as exc:
                    record(context, start, exc)
                    raise
                record(context, start, None)

            return grpc.unary_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer
            )
        return handler
