"""The model bundle: the only contract between the offline side (training, export) and the service.

A bundle is a directory ``models/<name>/<version>/`` holding the ONNX graphs, the tokenizer files and
``manifest.json``, a :class:`Manifest`. This module names every graph's inputs, outputs and dynamic axes in one
place (:func:`graph_specs`); the exporter, the parity gate and the runtime all read it.

Graphs (L = decoder layers, H = heads, Dh = head size, V = target vocabulary):

- ``encoder``: ``src_ids (batch, src_len) int64``, ``src_mask (batch, src_len) bool`` -> ``memory``.
- ``decoder`` (first step(s), no cache): ``tgt_ids (batch, tgt_len)``, ``memory``, ``src_mask`` ->
  ``logits (batch, tgt_len, V)``, ``present_k/v (L, batch, H, tgt_len, Dh)``, ``cross_k/v (L, batch, H,
  src_len, Dh)`` (the cross-attention keys/values, computed once per source).
- ``decoder_step``: ``tgt_ids``, ``past_k/v (L, batch, H, past_len, Dh)``, ``cross_k/v``, ``src_mask`` ->
  ``logits``, ``present_k/v (L, batch, H, past_len + tgt_len, Dh)``; the cross cache is not re-emitted.
- ``greedy`` (optional, the ``fused`` variants only): ``src_ids``, ``src_mask``, ``limits (batch,) int64`` (each
  row's maximum number of output tokens) -> ``tokens (batch, steps) int64`` and ``scores (batch, steps)`` (each
  chosen token's log-probability): a whole batch decoded greedily in one run (an ONNX ``Loop``). A row's output
  ends at its first ``</s>`` or at its limit; what follows is padding.

Masks are bool, True = a real token (the model's one convention).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_FILE = "manifest.json"
LEXICON_FILE = "lexicon.tsv.gz"
BUNDLE_FORMAT = "g2p-bundle/1"

ElemType = Literal["int64", "bool", "float32", "float16"]
Variant = Literal["fp32", "fused", "optimized", "int8", "fp16"]


class TensorSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    dtype: ElemType
    shape: list[str | int]
    """Each axis is a symbolic name (dynamic) or a fixed size."""

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}


class GraphSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


ENCODER, DECODER, DECODER_STEP, GREEDY = "encoder", "decoder", "decoder_step", "greedy"
ROWS_STEP, PREFILL = "rows_step", "prefill"
GRAPH_NAMES = (ENCODER, DECODER, DECODER_STEP)
"""The graphs every variant has."""
OPTIONAL_GRAPHS = (GREEDY, ROWS_STEP, PREFILL)
"""``greedy``: a whole batch decoded in one run. ``rows_step``: one decoder step where each row has its own position
and a mask over its cache slots (rows that joined the batch later hold masked slots): what continuous batching
runs. ``prefill``: sources -> every decoder layer's cross-attention keys and values (the encoder and the cross
projections in one run), so that newcomers to a continuous batch take their first step in the batch's step."""


def graph_specs(
    n_layers: int, n_heads: int, head_dim: int, d_model: int, vocab: int, float_type: ElemType = "float32"
) -> dict[str, GraphSpec]:
    """The graphs' signatures for a model of this shape."""
    f = float_type

    def cache(name: str, length: str) -> TensorSpec:
        return TensorSpec(name=name, dtype=f, shape=[n_layers, "batch", n_heads, length, head_dim])

    src_ids = TensorSpec(name="src_ids", dtype="int64", shape=["batch", "src_len"])
    src_mask = TensorSpec(name="src_mask", dtype="bool", shape=["batch", "src_len"])
    tgt_ids = TensorSpec(name="tgt_ids", dtype="int64", shape=["batch", "tgt_len"])
    memory = TensorSpec(name="memory", dtype=f, shape=["batch", "src_len", d_model])
    logits = TensorSpec(name="logits", dtype=f, shape=["batch", "tgt_len", vocab])
    return {
        ENCODER: GraphSpec(name=ENCODER, inputs=[src_ids, src_mask], outputs=[memory]),
        DECODER: GraphSpec(
            name=DECODER,
            inputs=[tgt_ids, memory, src_mask],
            outputs=[
                logits,
                cache("present_k", "tgt_len"),
                cache("present_v", "tgt_len"),
                cache("cross_k", "src_len"),
                cache("cross_v", "src_len"),
            ],
        ),
        DECODER_STEP: GraphSpec(
            name=DECODER_STEP,
            inputs=[
                tgt_ids,
                cache("past_k", "past_len"),
                cache("past_v", "past_len"),
                cache("cross_k", "src_len"),
                cache("cross_v", "src_len"),
                src_mask,
            ],
            outputs=[logits, cache("present_k", "past_len + tgt_len"), cache("present_v", "past_len + tgt_len")],
        ),
        ROWS_STEP: GraphSpec(
            name=ROWS_STEP,
            inputs=[
                TensorSpec(name="tgt_ids", dtype="int64", shape=["batch", 1]),
                TensorSpec(name="positions", dtype="int64", shape=["batch", 1]),
                cache("past_k", "past_len"),
                cache("past_v", "past_len"),
                TensorSpec(name="past_mask", dtype="bool", shape=["batch", "past_len"]),
                cache("cross_k", "src_len"),
                cache("cross_v", "src_len"),
                src_mask,
            ],
            outputs=[
                TensorSpec(name="logits", dtype=f, shape=["batch", 1, vocab]),
                cache("present_k", "past_len + 1"),
                cache("present_v", "past_len + 1"),
            ],
        ),
        PREFILL: GraphSpec(
            name=PREFILL, inputs=[src_ids, src_mask], outputs=[cache("cross_k", "src_len"), cache("cross_v", "src_len")]
        ),
        GREEDY: GraphSpec(
            name=GREEDY,
            inputs=[src_ids, src_mask, TensorSpec(name="limits", dtype="int64", shape=["batch"])],
            outputs=[
                TensorSpec(name="tokens", dtype="int64", shape=["batch", "steps"]),
                TensorSpec(name="scores", dtype=f, shape=["batch", "steps"]),
            ],
        ),
    }


class SpecialTokens(BaseModel):
    pad: int = 0
    bos: int = 1
    eos: int = 2
    unk: int = 3


class Limits(BaseModel):
    max_source_len: int = Field(description="source tokens including </s>: a word may have max_source_len-1 chars")
    max_target_len: int = Field(description="decoder positions: at most this many output tokens")

    @property
    def max_word_chars(self) -> int:
        return self.max_source_len - 1


class OutputDiff(BaseModel):
    max_abs: float
    max_rel: float


class TensorCheck(BaseModel):
    graph: str
    case: str
    ok: bool
    outputs: dict[str, OutputDiff]


class DecodeCheck(BaseModel):
    variant: str
    beam_size: int
    words: int
    identical: int
    ok: bool
    wer: float | None = None
    reference_wer: float | None = None
    examples: list[str] = Field(default_factory=list)


class ParityReport(BaseModel):
    atol: float
    rtol: float
    tensor_checks: list[TensorCheck] = Field(default_factory=list)
    decode_checks: list[DecodeCheck] = Field(default_factory=list)
    deterministic_reexport: bool | None = None
    ok: bool = False

    def failures(self) -> list[str]:
        out = [f"{c.graph}[{c.case}]" for c in self.tensor_checks if not c.ok]
        out += [f"decode {c.variant} beam {c.beam_size}" for c in self.decode_checks if not c.ok]
        if self.deterministic_reexport is False:
            out.append("re-export is not deterministic")
        return out


class VariantInfo(BaseModel):
    files: dict[str, str]
    """graph name -> file name inside the bundle."""
    providers: list[str]
    """execution providers the variant is meant for."""
    notes: str = ""
    details: dict[str, Any] = Field(default_factory=dict)

    @property
    def disabled_optimizers(self) -> list[str]:
        """onnxruntime graph rewrites this variant's sessions must skip (``details.session``)."""
        return list(self.details.get("session", {}).get("disabled_optimizers", []))


class Manifest(BaseModel):
    format: str = BUNDLE_FORMAT
    name: str
    version: int
    created: str
    model_config_: dict[str, Any] = Field(alias="model_config")
    special_tokens: SpecialTokens = SpecialTokens()
    limits: Limits
    source_alphabet: list[str]
    tokenizer_files: dict[str, str]
    graphs: dict[str, GraphSpec]
    variants: dict[str, VariantInfo]
    opset: int
    versions: dict[str, str]
    sha256: dict[str, str]
    checkpoint_sha256: str
    parity: ParityReport
    lexicon_file: str | None = None
    """The pronunciation dictionary served before the model (``g2p.lexicon.write_lexicon_file``); older
    bundles have none and serve the model alone."""

    model_config = ConfigDict(populate_by_name=True, protected_namespaces=())

    def write(self, directory: str | Path) -> Path:
        path = Path(directory) / MANIFEST_FILE
        path.write_text(self.model_dump_json(indent=2, by_alias=True) + "\n")
        return path

    @classmethod
    def read(cls, directory: str | Path) -> Manifest:
        path = Path(directory) / MANIFEST_FILE
        if not path.is_file():
            raise BundleError(f"no {MANIFEST_FILE} in {directory}: not a model bundle")
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except ValueError as exc:
            raise BundleError(f"{path} is not a valid manifest: {exc}") from exc


class BundleError(ValueError):
    """A bundle is missing, incomplete, or does not match its manifest."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def named_files(manifest: Manifest) -> dict[str, str]:
    """Every file the manifest names (tokenizers, lexicon, every variant's graphs) -> where it names it first."""
    named: dict[str, str] = {}
    for key, name in manifest.tokenizer_files.items():
        named.setdefault(name, f"tokenizer_files.{key}")
    if manifest.lexicon_file:
        named.setdefault(manifest.lexicon_file, "lexicon_file")
    for variant, info in manifest.variants.items():
        for graph, name in info.files.items():
            named.setdefault(name, f"variants.{variant}.files.{graph}")
    return named


def bundle_file(directory: Path, name: str) -> Path:
    """The file a manifest calls ``name``, or ``BundleError`` when the name leaves the bundle directory (empty,
    absolute, ``..``, or a symlink on the way that points outside)."""
    parts = Path(name).parts
    if not name or Path(name).is_absolute() or ".." in parts or "\\" in name:
        raise BundleError(f"{directory}: file name {name!r} in the manifest is not a path inside the bundle")
    path = directory / name
    if not path.resolve().is_relative_to(directory.resolve()):
        raise BundleError(f"{directory}: file {name} points outside the bundle directory (to {path.resolve()})")
    return path


def verify_bundle(directory: str | Path) -> Manifest:
    """Read the manifest and check it: every file it names (tokenizers, every variant's graphs) is listed in its
    sha256 table, every listed file lies inside the bundle directory (no absolute path, ``..`` or symlink out)
    and matches its sha256, and the export's parity verdict is ok. ``BundleError`` names the first bad file."""
    d = Path(directory)
    manifest = Manifest.read(d)
    if manifest.format != BUNDLE_FORMAT:
        raise BundleError(f"{d}: bundle format {manifest.format!r}, expected {BUNDLE_FORMAT!r}")
    for name, where in named_files(manifest).items():
        if name not in manifest.sha256:
            raise BundleError(f"{d}: file {name!r} ({where}) is not listed in the manifest's sha256")
    for name, digest in manifest.sha256.items():
        f = bundle_file(d, name)
        if not f.is_file():
            raise BundleError(f"{d}: file {name} listed in the manifest is missing")
        if sha256_file(f) != digest:
            raise BundleError(f"{d}: file {name} does not match its sha256 in the manifest")
    if not manifest.parity.ok:
        raise BundleError(f"{d}: the export's parity report is not ok: {manifest.parity.failures()}")
    return manifest


def resolve_bundle(root: str | Path, name: str, version: int | None = None) -> Path:
    """``root/name/version``; the highest version when ``version`` is None."""
    base = Path(root) / name
    if version is not None:
        path = base / str(version)
        if not path.is_dir():
            raise BundleError(f"bundle {name} version {version} not found under {root}")
        return path
    versions = sorted(int(p.name) for p in base.glob("*") if p.is_dir() and p.name.isdigit())
    if not versions:
        raise BundleError(f"no versions of bundle {name!r} under {root}")
    return base / str(versions[-1])


def next_version(root: str | Path, name: str) -> int:
    base = Path(root) / name
    versions = [int(p.name) for p in base.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1
