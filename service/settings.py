"""Every setting of the server, in one pydantic-settings class.

Sources, highest priority first: keyword arguments (tests), environment variables ``G2P_<FIELD>`` (e.g.
``G2P_PORT=50051``, ``G2P_PROVIDERS=cuda``), a dotenv file named by ``G2P_ENV_FILE`` (default ``.env`` when
present), then the defaults below. An invalid value stops start-up with a message naming the field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.allocator import AllocatorChoice

ProviderChoice = Literal["cpu", "cuda", "auto"]
MAX_AUTO_WORKERS = 8  # each worker holds its own sessions (memory): more rarely pays on one host

NOT_BATCH_INVARIANT = {
    "int8": "this bundle's int8 quantises activations dynamically, one scale per tensor, i.e. per batch, so a "
    "word's output depends on the other words batched with it (990 of 1,000 test words identical alone vs in a "
    "batch of 32); bundles exported since fixed activation scales mark their int8 batch_invariant and serve it",
}
"""Variants the service refuses to serve unless the bundle's manifest marks them ``batch_invariant`` (their export
checked that each word decodes alone as in a batch): a served answer must not depend on who else is batched."""


class SettingsError(ValueError):
    """Settings that cannot work; the message names the field(s)."""


def cpu_quota(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may really use: the cgroup CPU quota (containers: v2 ``cpu.max``, v1
    ``cpu.cfs_quota_us / cpu.cfs_period_us``), else its affinity mask; at least 1."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 1
    quota = None
    try:  # cgroup v2
        fields = (cgroup / "cpu.max").read_text().split()
        if fields and fields[0] != "max":
            quota = float(fields[0]) / float(fields[1])
    except (OSError, ValueError, IndexError):
        try:  # cgroup v1
            q = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
            p = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
            if q > 0 and p > 0:
                quota = q / p
        except (OSError, ValueError):
            pass
    if quota is not None:
        usable = min(usable, max(1, int(quota)))
    return max(1, usable)


MEMORY_FRACTION = 0.5
"""Without a cgroup memory limit, the default memory budget is this fraction of the machine's physical memory."""


def memory_limit(cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The cgroup's memory limit in bytes (containers: v2 ``memory.max``, v1 ``memory/memory.limit_in_bytes``),
    None where there is none."""
    for f in (cgroup / "memory.max", cgroup / "memory" / "memory.limit_in_bytes"):
        try:
            text = f.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # v1 writes a huge number for "no limit"
            return int(text)
        return None
    return None


def physical_memory() -> int:
    return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="G2P_", env_file=os.environ.get("G2P_ENV_FILE", ".env"), extra="ignore"
    )

    # model repository: <model_repository>/<model_name>/<version>/manifest.json
    model_repository: Path = Field(Path("models"), description="the model repository: <root>/<name>/<version>/")
    model_name: str = Field("g2p", description="the model (bundle directory name) this server serves")
    variant: str = Field(
        "auto",
        description="which graphs of the bundle serve: auto (fused on the CPU when the bundle has it, else fp32), "
        "fp32, fused, optimized, int8 (when the bundle marks it batch_invariant), fp16 (fp16 wants cuda)",
    )
    max_loaded_versions: int = Field(2, ge=1, le=16, description="newest READY versions kept loaded")
    watch_interval_s: float = Field(2.0, ge=0.0, description="poll the repository for new versions; 0 = off")

    # network
    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0 in a container)")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 = any free port (tests)")
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="largest gRPC message, in and out")
    grpc_workers: int = Field(
        0,
        ge=0,
        le=4096,
        description="threads serving RPCs; 0 = auto: max_queue_size, gRPC's limit on concurrent RPCs. An admitted "
        "RPC holds its thread until it is answered, so fewer threads than that would leave requests waiting for one "
        "unseen (refused at start-up)",
    )
    health_port: int = Field(
        -1,
        ge=-1,
        le=65535,
        description="a plaintext side port that answers only grpc.health.v1 (Kubernetes' gRPC probes, the Docker "
        "healthcheck), on its own threads: it answers while the main port refuses a flood, and without TLS; "
        "-1 = off, 0 = any free port",
    )
    tls_cert: Path | None = Field(None, description="PEM server certificate (chain): the server speaks TLS")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    tls_client_ca: Path | None = Field(
        None,
        description="PEM CA certificate(s) for mutual TLS: only clients presenting a certificate signed by one of "
        "them may call (needs tls_cert and tls_key)",
    )
    reflection: bool = Field(True, description="gRPC server reflection (grpcurl without .proto files); false = off")

    # execution
    providers: ProviderChoice = Field(
        "cpu", description="cpu, cuda (fails where CUDA cannot run) or auto (CUDA when present, else CPU)"
    )
    cuda_device_id: int = Field(0, ge=0, description="the GPU to use (cuda)")
    cuda_use_tf32: bool = Field(
        False, description="TF32 matmuls on the GPU: they change fp32 results at the 1e-3 level; off keeps parity"
    )
    workers: int = Field(
        0,
        ge=0,
        le=64,
        description="decoding workers, each with its own sessions; 0 = auto (CPU: the CPU quota, at most "
        "8; CUDA: 1, the GPU parallelises inside a run)",
    )
    intra_op_threads: int = Field(0, ge=0, description="per worker; 0 = the CPU quota divided among the workers")
    inter_op_threads: int = Field(1, ge=1, description="onnxruntime inter-op threads per session")
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="onnxruntime graph optimisation level"
    )
    memory_arena: bool = Field(
        False,
        description="onnxruntime's CPU memory arena: on, a burst's peak stays reserved by the process after it; off "
        "(default), memory goes back when the burst ends (measured no slower on this project's CPU machine)",
    )
    allocator: AllocatorChoice = Field(
        "auto",
        description="the C allocator of `python -m service` (it re-executes itself with jemalloc preloaded): auto = "
        "jemalloc where installed (the images install it), else the C library's; jemalloc = refuse to start "
        "without it; system = the C library's malloc",
    )
    warmup_runs: int = Field(2, ge=0, description="decodes run at load before the version reports READY")
    io_binding: bool = Field(
        True, description="the KV cache stays in onnxruntime values (on the device) between decoder steps"
    )

    # batching
    max_batch_size: int = Field(64, ge=1, le=4096, description="inputs decoded together")
    scheduling: Literal["batch", "continuous"] = Field(
        "batch",
        description="batch: a batch decodes to its end (one run of the fused greedy graph), then the next starts; "
        "continuous: words (greedy, streamed or beam search) join a running batch at its next decoder step and leave "
        "it when done, so a short request does not wait for a long one (needs the bundle's rows_step graph, and its "
        "prefill graph for beam search). bench/results/scheduling.md measures both",
    )
    max_queue_delay_ms: float = Field(
        2.0, ge=0.0, le=10_000, description="how long a batch may wait for more requests while others decode"
    )
    max_queue_size: int = Field(
        256,
        ge=1,
        le=4096,
        description="RPCs in the server at once (queued, decoding or being answered): beyond it gRPC refuses at "
        "its door, before reading the request (RESOURCE_EXHAUSTED at once, counted in "
        'g2p_rejected_requests_total{reason="rpcs"}: the cheapest refusal, so a flood leaves the CPU to decoding); '
        "the engine also holds at most this many jobs",
    )

    memory_budget_mb: int = Field(
        0,
        ge=0,
        description="the server's memory (RSS) budget in MiB; 0 = auto: the cgroup's memory limit when there is "
        f"one, else {MEMORY_FRACTION:g} of physical memory. What the loaded model leaves of it is shared among the "
        "batches that can decode at once; the engine splits batches (a large request runs in chunks) so that each "
        "one's estimated memory fits its share",
    )

    # request limits
    max_inputs_per_request: int = Field(256, ge=1, description="words per Generate request / v2 g2p elements")
    max_input_chars: int = Field(48, ge=1, description="characters per word (also capped by the model's limit)")
    max_output_tokens: int = Field(48, ge=1, description="output tokens per word (also capped by the model's)")
    max_beam_size: int = Field(16, ge=1, description="the largest beam a request may ask for")
    default_beam_size: int = Field(1, ge=1, description="the beam when a request does not say (1 = greedy)")

    # the text front end (Phonemize, v2 g2p_text)
    max_texts_per_request: int = Field(64, ge=1, description="texts per Phonemize request / g2p_text elements")
    max_text_chars: int = Field(2000, ge=1, description="characters per text")
    user_lexicon: Path | None = Field(
        None,
        description="word<TAB>phonemes file that wins over the bundle's dictionary; re-read when it changes, a bad "
        "file is refused whole (its line named) and the previous one keeps serving",
    )
    user_lexicon_check_s: float = Field(1.0, ge=0.0, description="how often a request may stat the user lexicon")
    model_cache_size: int = Field(100_000, ge=0, description="model answers for unknown words kept (LRU); 0 = off")

    # observability and lifecycle
    log_format: Literal["text", "json"] = Field("text", description="log lines as text or one JSON object each")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="the least severe level logged")
    metrics_port: int = Field(8000, ge=-1, le=65535, description="Prometheus HTTP port; 0 = any free port, -1 = off")
    metrics_host: str = Field("127.0.0.1", description="address of the metrics HTTP server (0.0.0.0 in a container)")
    shutdown_grace_s: float = Field(
        10.0, ge=0.0, description="on SIGTERM: NOT_SERVING, then in-flight requests get this long to finish"
    )
    max_connection_age_s: float = Field(
        300.0,
        gt=0.0,
        description="close client connections after this long (gracefully), so that clients balancing "
        "over several replicas (round robin on DNS) spread onto replicas that started later",
    )

    @field_validator("model_name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or "/" in v or v.startswith("."):
            raise ValueError("must be a plain directory name")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca (mutual TLS) needs tls_cert and tls_key: the server must speak TLS")
        for f in (self.tls_cert, self.tls_key, self.tls_client_ca):
            if f is not None and not f.is_file():
                raise ValueError(f"TLS file not found: {f}")
        if self.default_beam_size > self.max_beam_size:
            raise ValueError(
                f"default_beam_size ({self.default_beam_size}) exceeds max_beam_size ({self.max_beam_size})"
            )
        if self.grpc_workers and self.grpc_workers < self.max_queue_size:
            raise ValueError(
                f"grpc_workers (G2P_GRPC_WORKERS={self.grpc_workers}) must be at least max_queue_size "
                f"(G2P_MAX_QUEUE_SIZE={self.max_queue_size}), gRPC's limit on concurrent RPCs: every admitted RPC "
                f"holds a thread; set it to {self.max_queue_size} or more, or 0 (derived)"
            )
        return self

    def rpc_threads(self) -> int:
        """Threads serving RPCs: at least gRPC's limit on concurrent RPCs (``max_queue_size``), so that no admitted
        RPC waits for a thread."""
        return self.grpc_workers or self.max_queue_size

    def memory_budget(self) -> int:
        """The memory budget in bytes (see ``memory_budget_mb``)."""
        if self.memory_budget_mb:
            return self.memory_budget_mb * 1024 * 1024
        limit = memory_limit()
        return limit if limit is not None else int(physical_memory() * MEMORY_FRACTION)

    def decode_workers(self, on_gpu: bool = False) -> int:
        return self.workers or (1 if on_gpu else min(cpu_quota(), MAX_AUTO_WORKERS))

    def threads(self, on_gpu: bool = False) -> int:
        """Intra-op threads of each worker's sessions."""
        return self.intra_op_threads or max(1, cpu_quota() // self.decode_workers(on_gpu))


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment (and overrides), or ``SettingsError`` naming each bad field."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            env = f" (G2P_{field.upper()})" if err["loc"] else ""
            problems.append(f"{field}{env}: {err['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None


def settings_table() -> str:
    """Every setting as a Markdown table (environment variable, default, what it does), from the fields themselves:
    ``docs/service.md`` holds this table, and a test fails when it is stale (``python -m service.settings``)."""
    rows = ["| variable | default | what it does |", "|---|---|---|"]
    for name, f in Settings.model_fields.items():
        default = "unset" if f.default is None else f"`{f.default}`"
        text = (f.description or "").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
        rows.append(f"| `G2P_{name.upper()}` | {default} | {text} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(settings_table(), end="")
