"""One loaded model version: its bundle checked, ONNX Runtime sessions on the chosen providers, warmed up.

No torch here: the bundle (graphs + tokenizers + manifest) is the whole contract with the offline side.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from g2p.bundle import ENCODER, BundleError, Manifest, bundle_file, verify_bundle
from g2p.continuous import supports_rows
from g2p.decoding import DecodeOptions
from g2p.lexicon import read_lexicon_file
from g2p.ort_backend import CPU, CUDA, OrtBackend, Provider, SessionConfig, ort_replicas, provider_name
from g2p.pipeline import ParallelTranscriber, Pronunciation
from g2p.text.phonemizer import Phonemizer
from g2p.tokenization import G2PTokenizers
from service.settings import NOT_BATCH_INVARIANT, Settings

# words every healthy G2P model must decode to a finished, non-empty pronunciation (the load-time test decode)
SMOKE_WORDS = ("hello", "world", "speech", "phoneme", "o'neil", "x-ray")


class ProviderError(RuntimeError):
    """The execution providers asked for cannot run here (e.g. ``cuda`` on a machine without a GPU)."""


def resolve_providers(settings: Settings) -> list[Provider]:
    """``cpu``, ``cuda`` (fails when CUDA cannot run) or ``auto`` (CUDA when it is present, else CPU)."""
    import onnxruntime as ort

    cuda: Provider = (
        CUDA,
        {"device_id": str(settings.cuda_device_id), "use_tf32": "1" if settings.cuda_use_tf32 else "0"},
    )
    if settings.providers == "cpu":
        return [CPU]
    has_cuda = CUDA in ort.get_available_providers()
    if settings.providers == "cuda":
        if not has_cuda:
            raise ProviderError(
                "providers=cuda (G2P_PROVIDERS): CUDAExecutionProvider is not available in this onnxruntime "
                f"build (available: {ort.get_available_providers()}); install onnxruntime-gpu on a machine "
                "with an NVIDIA GPU, or set G2P_PROVIDERS=cpu"
            )
        return [cuda, CPU]
    return [cuda, CPU] if has_cuda else [CPU]


def on_gpu(providers: list[Provider]) -> bool:
    return provider_name(providers[0]) == CUDA


def session_config(settings: Settings, gpu: bool = False) -> SessionConfig:
    return SessionConfig(
        intra_op_threads=settings.threads(gpu),
        inter_op_threads=settings.inter_op_threads,
        graph_optimization=settings.graph_optimization,
        memory_arena=settings.memory_arena,
        allow_spinning=False,  # a server shares its CPUs with the gRPC threads: no busy-waiting
    )


@dataclass(frozen=True, eq=False)
class ModelVersion:
    """A ready-to-serve bundle version: immutable once loaded, so a request that took it keeps a working model
    whatever the repository does meanwhile. Its decode threads stop when the last reference to it goes (the
    repository's after an unload, then each request's): see ``load_version``."""

    name: str
    version: int
    path: Path
    manifest: Manifest
    tokenizers: G2PTokenizers
    backend: OrtBackend
    parallel: ParallelTranscriber  # one backend per decoding worker (``backend`` is the first)
    variant: str
    providers_used: list[str]
    alphabet: frozenset[str]
    load_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def phonemizer(self) -> Phonemizer:
        """The text front end over this version's dictionary (``text_front_end``)."""
        ph: Phonemizer = self.extra["phonemizer"]
        return ph

    @property
    def rows_capable(self) -> bool:
        """Whether this version can decode by continuous batching (its variant has the ``rows_step`` graph, opened
        when the server schedules continuously)."""
        return supports_rows(self.backend)

    @property
    def rows_beam_capable(self) -> bool:
        """Whether beam search too can decode by continuous batching (the variant also has the ``prefill`` graph)."""
        return supports_rows(self.backend, beam=True)

    @property
    def max_output_tokens(self) -> int:
        return self.manifest.limits.max_target_len

    @property
    def max_input_chars(self) -> int:
        return self.manifest.limits.max_word_chars

    @property
    def d_model(self) -> int:
        return int(self.manifest.model_config_["d_model"])

    @property
    def cache_bytes_per_position(self) -> int:
        """Bytes of one row's attention keys and values for one position (self-attention: per output step;
        cross-attention: per source token): decoder layers x heads x head_dim (= d_model) x 2 (k, v) x 4 bytes."""
        return int(self.manifest.model_config_["n_decoder_layers"]) * self.d_model * 2 * 4

    def normalize(self, word: str) -> str:
        """The tokenizer's own normalisation (NFKC, lower case, strip): what the model really sees."""
        return str(self.tokenizers.src.normalizer.normalize_str(word))

    def transcribe(
        self,
        words: Sequence[str],
        options: DecodeOptions,
        on_token: Callable[[int, int], None] | None = None,
        alive: Callable[[int], bool] | None = None,
        batch_size: int = 256,
    ) -> list[list[Pronunciation]]:
        return self.parallel.transcribe(self.tokenizers, words, options, batch_size, on_token=on_token, alive=alive)

    def encode(self, src_ids: np.ndarray, src_mask: np.ndarray) -> np.ndarray:
        """The encoder graph alone (the KServe tensor model): memory (B, S, d_model) float32."""
        (memory,) = self.backend.sessions[ENCODER].run(
            ["memory"], {"src_ids": src_ids.astype(np.int64), "src_mask": src_mask.astype(bool)}
        )
        return np.asarray(memory, dtype=np.float32)


def choose_variant(setting: str, manifest: Manifest, gpu: bool) -> str:
    """``auto``: the ``fused`` graphs on the CPU where the bundle has them (same outputs as fp32, faster), else
    ``fp32``; any other value is taken as given, except a variant whose answers may depend on the batch
    (``NOT_BATCH_INVARIANT``, unless the manifest marks it ``batch_invariant``: ``BundleError``)."""
    variant = setting if setting != "auto" else "fused" if not gpu and "fused" in manifest.variants else "fp32"
    info = manifest.variants.get(variant)
    if variant in NOT_BATCH_INVARIANT and not (info is not None and info.details.get("batch_invariant") is True):
        raise BundleError(f"variant {variant!r} is not served (G2P_VARIANT): {NOT_BATCH_INVARIANT[variant]}")
    return variant


def warm_up(
    path: Path, parallel: ParallelTranscriber, tokenizers: G2PTokenizers, max_len: int, runs: int
) -> dict[str, str]:
    """Warm the sessions up (greedy and beam search) and test-decode ``SMOKE_WORDS``: their pronunciations, or
    ``BundleError`` when one does not finish."""
    greedy = DecodeOptions(beam_size=1, max_len=max_len)
    words = list(SMOKE_WORDS)
    for _ in range(max(runs, 1)):
        out = parallel.transcribe(tokenizers, words, greedy)
        parallel.transcribe(tokenizers, words[:2], DecodeOptions(beam_size=4, nbest=2, max_len=max_len))
    bad = [w for w, r in zip(words, out, strict=True) if not r[0].finished or not r[0].phonemes]
    if bad:
        raise BundleError(f"{path}: test decode failed: no finished pronunciation for {bad}")
    return {w: " ".join(r[0].phonemes) for w, r in zip(words, out, strict=True)}


def text_front_end(path: Path, manifest: Manifest, settings: Settings) -> Phonemizer:
    """This version's phonemizer: the bundle's dictionary (none in older bundles: the model alone), no model
    function of its own (the servicer passes one that goes through the engine)."""
    lexicon = read_lexicon_file(bundle_file(path, manifest.lexicon_file)) if manifest.lexicon_file else None
    return Phonemizer(lexicon, None, manifest.limits.max_word_chars, cache_size=settings.model_cache_size)


def load_version(path: Path, settings: Settings, providers: list[Provider] | None = None) -> ModelVersion:
    """Verify, open, warm up and test-decode one bundle version; ``BundleError`` says why it is refused."""
    t0 = time.monotonic()
    manifest = verify_bundle(path)  # checksums of every file + the export's parity verdict
    providers = providers if providers is not None else resolve_providers(settings)
    gpu = on_gpu(providers)
    variant = choose_variant(settings.variant, manifest, gpu)
    if variant not in manifest.variants:
        raise BundleError(f"{path}: no variant {variant!r} (has {sorted(manifest.variants)}; G2P_VARIANT)")
    tokenizers = G2PTokenizers.load(path)
    # the continuous-batching graphs only where they are used (each session holds its own copy of its weights)
    backends = ort_replicas(path, settings.decode_workers(gpu), variant, providers,
                            session_config(settings, gpu), manifest, settings.io_binding,
                            rows_graphs=settings.scheduling == "continuous")  # fmt: skip
    backend = backends[0]
    used = sorted({p for s in backend.sessions.values() for p in s.get_providers()})
    parallel = ParallelTranscriber(backends)
    try:
        smoke = warm_up(path, parallel, tokenizers, manifest.limits.max_target_len, settings.warmup_runs)
    except BaseException:
        parallel.close()
        raise
    mv = ModelVersion(
        name=path.parent.name,
        version=int(path.name),
        path=path,
        manifest=manifest,
        tokenizers=tokenizers,
        backend=backend,
        parallel=parallel,
        variant=variant,
        providers_used=[provider_name(p) for p in providers if provider_name(p) in used],
        alphabet=frozenset(manifest.source_alphabet),
        load_seconds=time.monotonic() - t0,
        extra={"smoke": smoke, "phonemizer": text_front_end(path, manifest, settings)},
    )
    weakref.finalize(mv, parallel.close)  # the last holder gone (an unloaded version): its decode threads stop
    return mv
