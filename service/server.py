"""Assemble and run the server: repository -> engine -> servicers -> gRPC (+ health, reflection, metrics).

Lifecycle: models are loaded, warmed up and test-decoded before the port answers SERVING; SIGTERM/SIGINT
turns health NOT_SERVING, stops new RPCs, lets in-flight ones finish within ``shutdown_grace_s``, then exits 0.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from g2p.decoding import DecodeOptions
from service import allocator
from service.api.g2p.v1 import g2p_pb2, g2p_pb2_grpc
from service.api.inference import grpc_service_pb2, grpc_service_pb2_grpc
from service.engine import Engine, MemoryBudgetError, batch_bytes, fix_mmap_threshold, process_rss
from service.metrics import Metrics, MetricsInterceptor
from service.repository import ModelRepository
from service.runtime import ModelVersion, on_gpu, resolve_providers
from service.servicers import G2PServicer, InferenceServicer
from service.settings import Settings
from service.text import UserLexicon

log = logging.getLogger("g2p.server")

G2P_SERVICE = g2p_pb2.DESCRIPTOR.services_by_name["G2P"].full_name
V2_SERVICE = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


class JsonFormatter(logging.Formatter):
    STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        row: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        row |= {k: v for k, v in record.__dict__.items() if k not in self.STANDARD}
        if record.exc_info:
            row["exc"] = self.formatException(record.exc_info)
        return json.dumps(row, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extra = {k: v for k, v in record.__dict__.items() if k not in JsonFormatter.STANDARD}
        return base + ("  " + " ".join(f"{k}={v}" for k, v in extra.items()) if extra else "")


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if settings.log_format == "json"
        else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)


MAX_PENDING_CALLS = 100_000
"""gRPC core's soft cap on calls it holds before the Python server picks them up: above it, core CANCELS calls
that waited (default about a thousand, seen as 830 CANCELLED at 4x capacity); raised so that it never acts."""
PENDING_CALLS_HARD_LIMIT = 64
"""gRPC core's hard cap on those calls: a call beyond it is refused at once with RESOURCE_EXHAUSTED (uncounted by
g2p_rejected_requests_total: the Python server never sees it). Without it a flood waits in core's queue unbounded
(open loop at 4x capacity from the C++ load generator, 30 s, one run each: accepted requests' p99 18.1 s with
100,000; 2.2 s with 300; 1.6 s with 64; 4.4 s with 16: the runs are noisy; bench/reliability.py overload), while
the engine's own queue wait stayed <= 1 s."""


class G2PServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.health = health.HealthServicer(experimental_non_blocking=True)
        self.serving = False
        self.port = 0
        self.started_at = time.monotonic()
        self._stopped = threading.Event()
        self.repo: ModelRepository | None = None
        self.engine: Engine | None = None
        self.grpc_server: grpc.Server | None = None
        self.health_server: grpc.Server | None = None
        self.health_port = 0

    # ------------------------------------------------------------------ start
    def start(self) -> int:
        """Load the model (or raise), start serving; returns the bound gRPC port."""
        s = self.settings
        for name in ("", G2P_SERVICE, V2_SERVICE):
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        providers = resolve_providers(s)  # ProviderError when cuda is asked for and cannot run
        fix_mmap_threshold()  # large buffers go back to the system when freed: RSS after a burst does not drift
        self.repo = ModelRepository(s, providers, on_change=self._models_changed)
        model = self.repo.load_initial()
        gpu = on_gpu(providers)
        log.info(
            "model ready",
            extra={
                "model": model.name,
                "version": model.version,
                "providers": model.providers_used,
                "variant": model.variant,
                "workers": s.decode_workers(gpu),
                "threads_per_worker": s.threads(gpu),
                "load_seconds": round(model.load_seconds, 3),
            },
        )
        self.engine = Engine(
            s.max_batch_size,
            s.max_queue_delay_ms / 1000,
            s.max_queue_size,
            self.metrics,
            s.decode_workers(gpu),
            memory_share=self.memory_share(model, gpu),
            scheduling=s.scheduling,
        )
        # overload is refused at gRPC's door: at most max_queue_size RPCs at once, each with a thread of its own
        # (at least that many threads: no RPC waits for one unseen); a call beyond it is answered RESOURCE_EXHAUSTED
        # before a thread reads it, which costs far less CPU than a refusal by the engine (measured under a flood:
        # docs/notes/2026-11-30-cheap-refusals.md), and the interceptor counts it
        interceptor = MetricsInterceptor(self.metrics)
        server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=s.rpc_threads(), thread_name_prefix="rpc", initializer=allocator.disable_thread_cache
            ),
            interceptors=[interceptor],
            options=[
                ("grpc.max_receive_message_length", s.max_message_bytes),
                ("grpc.max_send_message_length", s.max_message_bytes),
                ("grpc.so_reuseport", 0),
                # calls gRPC's core has accepted but this Python server has not yet picked up: never cancelled by
                # age; beyond a small hard cap refused at once (RESOURCE_EXHAUSTED), so a flood does not wait there
                # and meets the engine's queue, which refuses it too (bench/reliability.py overload)
                ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
                ("grpc.server.max_pending_requests_hard_limit", PENDING_CALLS_HARD_LIMIT),
                # clients reconnect now and then (after in-flight calls finish), so replicas added later get traffic
                ("grpc.max_connection_age_ms", int(s.max_connection_age_s * 1000)),
                ("grpc.max_connection_age_grace_ms", int(s.shutdown_grace_s * 1000)),
            ],
            maximum_concurrent_rpcs=s.max_queue_size,
        )
        if not interceptor.watch(server):
            log.warning("this grpcio's server state was not found: refusals at its door go uncounted")
        # a bad user lexicon stops the start (LexiconError naming its line); later, a bad edit keeps the previous one
        user = UserLexicon(s.user_lexicon, model.tokenizers.phoneme_inventory(), s.user_lexicon_check_s)
        g2p_pb2_grpc.add_G2PServicer_to_server(G2PServicer(s, self.repo, self.engine, user), server)
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(s, self.repo, self.engine, lambda: self.serving, user), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if s.reflection:
            reflection.enable_server_reflection(
                (
                    G2P_SERVICE,
                    V2_SERVICE,
                    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                    reflection.SERVICE_NAME,
                ),
                server,
            )
        address = f"{s.host}:{s.port}"
        if s.tls_cert is not None and s.tls_key is not None:
            # mutual TLS with tls_client_ca: a client without a certificate signed by it fails the handshake
            client_ca = s.tls_client_ca.read_bytes() if s.tls_client_ca is not None else None
            creds = grpc.ssl_server_credentials(
                [(s.tls_key.read_bytes(), s.tls_cert.read_bytes())],
                root_certificates=client_ca,
                require_client_auth=client_ca is not None,
            )
            self.port = server.add_secure_port(address, creds)
        else:
            self.port = server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot bind {address} (G2P_HOST / G2P_PORT)")
        server.start()
        self.grpc_server = server
        self.health_server, self.health_port = self._health_side_port()
        if s.metrics_port >= 0:
            self.metrics.serve(s.metrics_host, s.metrics_port)
        self.repo.start_watching()
        self.serving = True
        self.metrics.server_ready.set(1)
        for name in ("", G2P_SERVICE, V2_SERVICE):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "SERVING",
            extra={"address": f"{s.host}:{self.port}", "metrics_port": self.metrics.http_port,
                   "health_port": self.health_port or None, "allocator": allocator.active(),
                   "seconds_to_serving": round(time.monotonic() - self.started_at, 3)},
        )  # fmt: skip
        return self.port

    def _health_side_port(self) -> tuple[grpc.Server | None, int]:
        """The plaintext side port (``health_port``) that answers grpc.health.v1 only, on threads of its own and
        without the main port's limit on concurrent RPCs: probes get an answer while the main port refuses a
        flood, and the kubelet's gRPC probe (plaintext) works beside a TLS main port."""
        s = self.settings
        if s.health_port < 0:
            return None, 0
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="health"), options=[("grpc.so_reuseport", 0)]
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        port = server.add_insecure_port(f"{s.host}:{s.health_port}")
        if port == 0:
            raise OSError(f"cannot bind {s.host}:{s.health_port} (G2P_HOST / G2P_HEALTH_PORT)")
        server.start()
        return server, port

    def memory_share(self, model: ModelVersion, gpu: bool) -> int:
        """What one decoding batch may take: the memory budget less this process's memory with the model loaded,
        shared among the batches that can decode at once (every worker and the inline decode); the largest request
        allowed (one longest word at the widest beam) must fit, or ``MemoryBudgetError``."""
        s = self.settings
        budget, rss, batches = s.memory_budget(), process_rss(), s.decode_workers(gpu) + 1
        share = (budget - rss) // batches
        chars = min(s.max_input_chars, model.max_input_chars)
        widest = DecodeOptions(beam_size=s.max_beam_size, max_len=min(s.max_output_tokens, model.max_output_tokens))
        need = batch_bytes(model, 1, chars, widest)
        mib = 1024 * 1024
        if share < need:
            raise MemoryBudgetError(
                f"memory_budget_mb (G2P_MEMORY_BUDGET_MB): a budget of {budget // mib} MiB, less the {rss // mib} "
                f"MiB the server holds with the model loaded, leaves {max(share, 0) // mib} MiB to each of {batches} "
                f"batches decoding at once (workers + 1); one word of {chars} characters at beam {s.max_beam_size} "
                f"needs {need // mib + 1} MiB: raise the budget, or lower G2P_MAX_BEAM_SIZE or G2P_WORKERS"
            )
        log.info(
            "memory budget",
            extra={"budget_mib": budget // mib, "rss_mib": rss // mib, "batches": batches, "share_mib": share // mib},
        )
        return share

    def _models_changed(self, repo: ModelRepository) -> None:
        for r in repo.records():
            self.metrics.model_state.labels(repo.name, str(r.version)).set(1 if r.state == "READY" else 0)

    # ------------------------------------------------------------------ stop
    def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING, refuse new RPCs, finish in-flight ones within the grace period, then release all."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.settings.shutdown_grace_s if grace is None else grace
        self.serving = False
        self.metrics.server_ready.set(0)
        self.health.enter_graceful_shutdown()
        log.info("shutting down", extra={"grace_s": grace})
        if self.grpc_server is not None:
            done = self.grpc_server.stop(grace)
            if self.engine is not None:
                self.engine.drain(grace)
            done.wait(grace + 1)
        if self.engine is not None:
            self.engine.stop()
        if self.repo is not None:
            self.repo.stop()
        if self.health_server is not None:  # NOT_SERVING until the end
            self.health_server.stop(0)
        log.info("stopped")

    def wait(self) -> None:
        self._stopped.wait()

    def run_until_signal(self) -> int:
        def handle(signum: int, _frame: Any) -> None:
            log.info("signal received", extra={"signal": signal.Signals(signum).name})
            threading.Thread(target=self.stop, name="shutdown").start()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
        self.wait()
        # stop() runs in its own thread; wait for the grace period to play out
        while threading.active_count() > 1 and any(t.name == "shutdown" for t in threading.enumerate()):
            time.sleep(0.05)
        return 0
