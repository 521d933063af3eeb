"""The gRPC servicers: the task API (g2p.v1.G2P) and KServe v2 (inference.GRPCInferenceService).

Servicers translate wire messages to engine jobs and back; every failure leaves as a gRPC status with a
message naming the field and the limit, never as a stack trace.
"""

from __future__ import annotations

import inspect
import logging
import queue
import struct
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, NoReturn

import grpc
import numpy as np

from g2p.decoding import DecodeOptions
from g2p.pipeline import Pronunciation
from g2p.text.phonemizer import ALPHABETS as TEXT_ALPHABETS
from g2p.text.phonemizer import TextPron
from g2p.tokenization import PAD_ID
from service.api.g2p.v1 import g2p_pb2 as pb
from service.api.g2p.v1 import g2p_pb2_grpc as pb_grpc
from service.api.inference import grpc_service_pb2 as v2
from service.api.inference import grpc_service_pb2_grpc as v2_grpc
from service.engine import Cancelled, DeadlineExceeded, Engine, EngineStopped, Job, QueueFull
from service.repository import FAILED, LOADING, READY, UNLOADED, ModelNotFound, ModelRepository
from service.runtime import ModelVersion
from service.settings import Settings
from service.text import ALPHABETS, UserLexicon, check_texts, overrides_of, to_proto
from service.text import model_options as text_model_options
from service.validation import InvalidArgument, check_inputs, decode_options

log = logging.getLogger("g2p.service")

STATES = {
    LOADING: pb.MODEL_STATE_LOADING,
    READY: pb.MODEL_STATE_READY,
    FAILED: pb.MODEL_STATE_FAILED,
    UNLOADED: pb.MODEL_STATE_UNLOADED,
}


def abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("unreachable")  # context.abort raises


STATUS: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (ModelNotFound, grpc.StatusCode.NOT_FOUND),
    (QueueFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (EngineStopped, grpc.StatusCode.UNAVAILABLE),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (Cancelled, grpc.StatusCode.CANCELLED),
)
SERVICE_ERRORS = tuple(cls for cls, _ in STATUS)


def fail(context: grpc.ServicerContext, exc: Exception) -> NoReturn:
    """End the RPC with the status code of one of the service's exceptions and its message."""
    code = next(code for cls, code in STATUS if isinstance(exc, cls))
    abort(context, code, str(exc))


def end_rpc(context: grpc.ServicerContext, method: str, exc: Exception) -> NoReturn:
    """End an RPC whose handler raised: a service exception leaves with its status code; anything else is INTERNAL
    with a trace id that the server's log names next to the traceback. An RPC the handler already aborted keeps
    its status."""
    if isinstance(exc, SERVICE_ERRORS):
        fail(context, exc)
    if context.code() is not None:  # context.abort() raised this: the RPC has its status
        raise exc
    trace_id = uuid.uuid4().hex[:16]
    log.error("internal error", exc_info=exc, extra={"method": method, "trace_id": trace_id})
    abort(context, grpc.StatusCode.INTERNAL, f"internal error in {method} (trace id {trace_id}, logged on the server)")


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Every failure of a handler, unary or server-streaming (a generator), leaves through ``end_rpc``."""
    if inspect.isgeneratorfunction(fn):

        def stream(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from fn(self, request, context)
            except Exception as exc:
                end_rpc(context, fn.__name__, exc)

        wrapper: Callable[..., Any] = stream
    else:

        def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return fn(self, request, context)
            except Exception as exc:
                end_rpc(context, fn.__name__, exc)

        wrapper = unary
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


MAX_WAIT_S = 24 * 3600.0  # clients without a deadline may send "infinite" ones (tritonclient does)


def time_remaining(context: grpc.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None or remaining > MAX_WAIT_S else max(remaining, 0.0)


def submit(
    engine: Engine, job: Job, context: grpc.ServicerContext, inline: bool = False
) -> Future[list[list[Pronunciation]]]:
    """Queue the job with the RPC's deadline; a cancelled or finished RPC marks it dead (its rows leave the batch).
    ``inline``: an idle engine decodes it in this thread (``Engine.run``)."""
    remaining = time_remaining(context)
    if remaining is not None:
        job.deadline = time.monotonic() + remaining
    context.add_callback(job.cancelled.set)  # runs when the RPC ends: cancelled, expired, or done
    return engine.run(job) if inline else engine.submit(job)


def run_job(engine: Engine, job: Job, context: grpc.ServicerContext) -> list[list[Pronunciation]]:
    """Decode the job (in this thread when the engine is idle, else queued) and wait for it within the RPC's
    deadline."""
    future = submit(engine, job, context, inline=True)
    try:
        return future.result(timeout=time_remaining(context))
    except FutureTimeout:
        job.cancelled.set()
        raise DeadlineExceeded("deadline exceeded") from None


def to_hypothesis(p: Pronunciation) -> pb.Hypothesis:
    return pb.Hypothesis(
        text=" ".join(p.phonemes), tokens=list(p.phonemes), score=p.score, logprob=p.logprob, finished=p.finished
    )


def pronounce_texts(
    engine: Engine,
    model: ModelVersion,
    texts: list[str],
    overrides: dict[str, tuple[tuple[str, ...], ...]],
    user: UserLexicon,
    context: grpc.ServicerContext,
) -> list[TextPron]:
    """The text front end for one request: its unknown words go through the engine as one job (batched with
    other requests' work), within the RPC's deadline."""

    def model_fn(words: Sequence[str]) -> list[tuple[tuple[str, ...], float]]:
        job = Job(model, list(words), text_model_options(model.max_output_tokens))
        return [(r[0].phonemes, r[0].score) for r in run_job(engine, job, context)]

    results = model.phonemizer.phonemize(texts, overrides, model_fn, user.current())
    engine.metrics.count_text(results, len(model.phonemizer.cache))
    return results


class G2PServicer(pb_grpc.G2PServicer):
    def __init__(
        self, settings: Settings, repo: ModelRepository, engine: Engine, user_lexicon: UserLexicon | None = None
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.engine = engine
        self.user_lexicon = user_lexicon or UserLexicon(None, [])

    def _prepare(
        self, request: pb.GenerateRequest, greedy_only: bool = False
    ) -> tuple[ModelVersion, list[str], DecodeOptions]:
        model = self.repo.get(request.model, request.model_version)
        words = check_inputs("inputs", list(request.inputs), model, self.settings)
        o = request.options
        options = decode_options(
            model,
            self.settings,
            o.beam_size if o.HasField("beam_size") else (1 if greedy_only else None),
            o.num_hypotheses if o.HasField("num_hypotheses") else None,
            o.max_output_tokens if o.HasField("max_output_tokens") else None,
            o.length_penalty if o.HasField("length_penalty") else None,
        )
        if greedy_only and options.beam_size != 1:
            raise InvalidArgument(
                f"options.beam_size: GenerateStream decodes greedily (beam_size 1), got {options.beam_size}"
            )
        return model, words, options

    @guarded
    def Generate(self, request: pb.GenerateRequest, context: grpc.ServicerContext) -> pb.GenerateResponse:  # noqa: N802
        model, words, options = self._prepare(request)
        results = run_job(self.engine, Job(model, words, options), context)
        return pb.GenerateResponse(
            outputs=[
                pb.Output(input=raw, hypotheses=[to_hypothesis(p) for p in r])
                for raw, r in zip(request.inputs, results, strict=True)
            ],
            model=model.name,
            model_version=model.version,
        )

    @guarded
    def GenerateStream(  # noqa: N802
        self, request: pb.GenerateRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.GenerateStreamResponse]:
        model, words, options = self._prepare(request, greedy_only=True)
        events: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
        positions = [0] * len(words)
        job = Job(model, words, options, on_token=lambda i, t: events.put((i, t)))
        future = submit(self.engine, job, context)
        tgt = model.tokenizers.tgt

        def event(i: int, tok: int) -> pb.GenerateStreamResponse:
            token = pb.TokenEvent(token=str(tgt.id_to_token(tok)), position=positions[i])
            positions[i] += 1
            return pb.GenerateStreamResponse(index=i, token=token, model=model.name, model_version=model.version)

        def drain() -> Iterator[pb.GenerateStreamResponse]:
            while True:
                try:
                    i, tok = events.get_nowait()
                except queue.Empty:
                    return
                yield event(i, tok)

        while not future.done():
            if job.expired():
                job.cancelled.set()
                raise DeadlineExceeded("deadline exceeded")
            if not context.is_active():
                job.cancelled.set()
                return
            try:
                i, tok = events.get(timeout=0.05)
            except queue.Empty:
                continue
            yield event(i, tok)
            yield from drain()
        yield from drain()
        results = future.result()
        for i, (raw, r) in enumerate(zip(request.inputs, results, strict=True)):
            final = pb.Output(input=raw, hypotheses=[to_hypothesis(p) for p in r])
            yield pb.GenerateStreamResponse(index=i, final=final, model=model.name, model_version=model.version)

    @guarded
    def Phonemize(self, request: pb.PhonemizeRequest, context: grpc.ServicerContext) -> pb.PhonemizeResponse:  # noqa: N802
        model = self.repo.get(request.model, request.model_version)
        s = self.settings
        texts = check_texts(list(request.texts), s.max_texts_per_request, s.max_text_chars)
        alphabet = ALPHABETS.get(request.options.alphabet)
        if alphabet is None:
            raise InvalidArgument(f"options.alphabet: unknown value {request.options.alphabet}")
        entries = request.options.lexicon
        overrides = overrides_of(dict(entries), model.tokenizers.phoneme_inventory()) if entries else {}
        results = pronounce_texts(self.engine, model, texts, overrides, self.user_lexicon, context)
        response = pb.PhonemizeResponse(model=model.name, model_version=model.version)
        for r in results:
            to_proto(r, alphabet, response.results.add())
        return response

    @guarded
    def ListModels(self, request: pb.ListModelsRequest, context: grpc.ServicerContext) -> pb.ListModelsResponse:  # noqa: N802
        return pb.ListModelsResponse(models=[self.model_info(0)])

    @guarded
    def GetModel(self, request: pb.GetModelRequest, context: grpc.ServicerContext) -> pb.ModelInfo:  # noqa: N802
        if request.model and request.model != self.repo.name:
            raise ModelNotFound(f"model {request.model!r} not found (this server serves {self.repo.name!r})")
        return self.model_info(request.version)

    def model_info(self, version: int) -> pb.ModelInfo:
        records = self.repo.records()
        if version:
            records = [r for r in records if r.version == version]
            if not records:
                raise ModelNotFound(f"model {self.repo.name!r} version {version} not found")
        default = self.repo.default()
        s = self.settings
        info = pb.ModelInfo(
            name=self.repo.name,
            default_version=default.version if default else 0,
            versions=[
                pb.VersionInfo(
                    version=r.version,
                    state=STATES[r.state],
                    execution_providers=r.model.providers_used if r.model else [],
                    variant=r.model.variant if r.model else "",
                    error=r.error,
                    created=r.model.manifest.created if r.model else "",
                    checkpoint_sha256=r.model.manifest.checkpoint_sha256 if r.model else "",
                )
                for r in records
            ],
        )
        if default is not None:
            info.limits.CopyFrom(
                pb.Limits(
                    max_inputs=s.max_inputs_per_request,
                    max_input_chars=min(s.max_input_chars, default.max_input_chars),
                    max_output_tokens=min(s.max_output_tokens, default.max_output_tokens),
                    max_beam_size=s.max_beam_size,
                    max_message_bytes=s.max_message_bytes,
                    max_texts=s.max_texts_per_request,
                    max_text_chars=s.max_text_chars,
                )
            )
            info.lexicon_words = len(default.phonemizer.lexicon)
            info.user_lexicon_words = len(self.user_lexicon.table)
            info.source_alphabet = "".join(sorted(default.alphabet))
            info.inputs.append(
                pb.TensorDescription(name="inputs", datatype="STRING", shape=[-1], description="words to transcribe")
            )
            info.outputs.append(
                pb.TensorDescription(
                    name="hypotheses",
                    datatype="STRING",
                    shape=[-1, -1],
                    description="n-best ARPAbet pronunciations with stress, space-separated",
                )
            )
        return info


# ------------------------------------------------------------------------------------------------------
# KServe v2 / Open Inference Protocol
# ------------------------------------------------------------------------------------------------------
def deserialize_bytes(raw: bytes) -> list[bytes]:
    """BYTES tensor contents: each element is a 4-byte little-endian length, then that many bytes."""
    out, i = [], 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise InvalidArgument("raw_input_contents: truncated BYTES element length")
        (n,) = struct.unpack_from("<I", raw, i)
        i += 4
        if i + n > len(raw):
            raise InvalidArgument("raw_input_contents: BYTES element runs past the end of the buffer")
        out.append(raw[i : i + n])
        i += n
    return out


def serialize_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


V2_NUMPY = {"INT64": np.int64, "INT32": np.int32, "BOOL": np.bool_, "FP32": np.float32}


class InferenceServicer(v2_grpc.GRPCInferenceServiceServicer):
    """Models: ``<name>`` (text: text_input BYTES [N] -> text_output BYTES [N], parameter beam_size) and
    ``<name>_encoder`` (tensors: src_ids INT64 [B, S] (+ optional src_mask BOOL [B, S]) -> memory FP32 [B, S, D])."""

    def __init__(
        self,
        settings: Settings,
        repo: ModelRepository,
        engine: Engine,
        serving: Callable[[], bool],
        user_lexicon: UserLexicon | None = None,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.engine = engine
        self.serving = serving
        self.user_lexicon = user_lexicon or UserLexicon(None, [])
        self.text_model = repo.name
        self.encoder_model = f"{repo.name}_encoder"
        self.phonemize_model = f"{repo.name}_text"
        self.models = (self.text_model, self.phonemize_model, self.encoder_model)

    def ServerLive(self, request: v2.ServerLiveRequest, context: grpc.ServicerContext) -> v2.ServerLiveResponse:  # noqa: N802
        return v2.ServerLiveResponse(live=True)

    def ServerReady(self, request: v2.ServerReadyRequest, context: grpc.ServicerContext) -> v2.ServerReadyResponse:  # noqa: N802
        return v2.ServerReadyResponse(ready=self.serving() and self.repo.default() is not None)

    def ServerMetadata(  # noqa: N802
        self, request: v2.ServerMetadataRequest, context: grpc.ServicerContext
    ) -> v2.ServerMetadataResponse:
        from service import __version__

        return v2.ServerMetadataResponse(name="g2p-service", version=__version__, extensions=[])

    def _model(self, name: str, version: str) -> ModelVersion:
        if name not in self.models:
            raise ModelNotFound(f"model {name!r} not found (models: {', '.join(self.models)})")
        if version and not version.isdigit():
            raise InvalidArgument(f"model_version: {version!r} is not a version number")
        return self.repo.get(self.repo.name, int(version or 0))

    @guarded
    def ModelReady(self, request: v2.ModelReadyRequest, context: grpc.ServicerContext) -> v2.ModelReadyResponse:  # noqa: N802
        try:
            self._model(request.name, request.version)
        except ModelNotFound:
            if request.name not in self.models:
                raise
            return v2.ModelReadyResponse(ready=False)
        return v2.ModelReadyResponse(ready=self.serving())

    @guarded
    def ModelMetadata(  # noqa: N802
        self, request: v2.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> v2.ModelMetadataResponse:
        model = self._model(request.name, request.version)
        versions = [str(m.version) for m in self.repo.ready()]
        tm = v2.ModelMetadataResponse.TensorMetadata
        providers = ",".join(model.providers_used)
        if request.name == self.phonemize_model:
            return v2.ModelMetadataResponse(
                name=request.name, versions=versions, platform=f"g2p_text_front_end[{providers}]",
                inputs=[tm(name="text_input", datatype="BYTES", shape=[-1])],
                outputs=[tm(name="text_output", datatype="BYTES", shape=[-1])],
            )  # fmt: skip
        if request.name == self.text_model:
            return v2.ModelMetadataResponse(
                name=request.name, versions=versions, platform=f"onnxruntime_g2p[{providers}]",
                inputs=[tm(name="text_input", datatype="BYTES", shape=[-1])],
                outputs=[tm(name="text_output", datatype="BYTES", shape=[-1])],
            )  # fmt: skip
        return v2.ModelMetadataResponse(
            name=request.name, versions=versions, platform=f"onnxruntime_onnx[{providers}]",
            inputs=[tm(name="src_ids", datatype="INT64", shape=[-1, -1]),
                    tm(name="src_mask", datatype="BOOL", shape=[-1, -1])],
            outputs=[tm(name="memory", datatype="FP32", shape=[-1, -1, model.d_model])],
        )  # fmt: skip

    @guarded
    def ModelInfer(self, request: v2.ModelInferRequest, context: grpc.ServicerContext) -> v2.ModelInferResponse:  # noqa: N802
        model = self._model(request.model_name, request.model_version)
        if request.raw_input_contents and len(request.raw_input_contents) != len(request.inputs):
            raise InvalidArgument(
                f"raw_input_contents: {len(request.raw_input_contents)} buffers for {len(request.inputs)} inputs"
            )
        if request.model_name == self.text_model:
            return self._infer_text(model, request, context)
        if request.model_name == self.phonemize_model:
            return self._infer_phonemize(model, request, context)
        return self._infer_encoder(model, request, context)

    def _inputs(self, request: v2.ModelInferRequest, allowed: dict[str, str], required: set[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for k, t in enumerate(request.inputs):
            where = f"inputs[{k}] ({t.name})"
            if t.name not in allowed:
                raise InvalidArgument(f"inputs[{k}]: unknown input {t.name!r} (expected {sorted(allowed)})")
            if t.datatype != allowed[t.name]:
                raise InvalidArgument(f"{where}: datatype {t.datatype!r}, expected {allowed[t.name]!r}")
            if any(d < 0 for d in t.shape):
                raise InvalidArgument(f"{where}: shape {list(t.shape)} has a negative dimension")
            found[t.name] = (k, t)
        missing = required - found.keys()
        if missing:
            raise InvalidArgument(f"inputs: missing required input(s) {sorted(missing)}")
        return found

    def _text_input(self, request: v2.ModelInferRequest) -> tuple[list[str], list[int]]:
        """The ``text_input`` BYTES [N] or [N, 1] tensor as strings, and its shape; only ``text_output`` asked."""
        found = self._inputs(request, {"text_input": "BYTES"}, {"text_input"})
        k, t = found["text_input"]
        shape = list(t.shape)
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise InvalidArgument(f"inputs[{k}] (text_input): shape {shape}, expected [N] or [N, 1]")
        items = (
            deserialize_bytes(request.raw_input_contents[k])
            if request.raw_input_contents
            else list(t.contents.bytes_contents)
        )
        if len(items) != shape[0]:
            raise InvalidArgument(f"inputs[{k}] (text_input): shape {shape} but {len(items)} elements were sent")
        try:
            texts = [b.decode("utf-8") for b in items]
        except UnicodeDecodeError as exc:
            raise InvalidArgument(f"inputs[{k}] (text_input): element is not UTF-8 ({exc.reason})") from None
        for o in request.outputs:
            if o.name != "text_output":
                raise InvalidArgument(
                    f"outputs: unknown output {o.name!r} (model {request.model_name} has text_output)"
                )
        return texts, shape

    def _infer_phonemize(
        self, model: ModelVersion, request: v2.ModelInferRequest, context: grpc.ServicerContext
    ) -> v2.ModelInferResponse:
        """``g2p_text``: each text's flat phoneme string (parameter ``alphabet``: arpabet, arpabet-nostress, ipa)."""
        texts, shape = self._text_input(request)
        s = self.settings
        texts = check_texts(texts, s.max_texts_per_request, s.max_text_chars, field="text_input")
        alphabet = "arpabet"
        if "alphabet" in request.parameters:
            alphabet = request.parameters["alphabet"].string_param
            if alphabet not in TEXT_ALPHABETS:
                raise InvalidArgument(f"parameters.alphabet: {alphabet!r}, expected one of {list(TEXT_ALPHABETS)}")
        results = pronounce_texts(self.engine, model, texts, {}, self.user_lexicon, context)
        out = [r.phonemes(alphabet).encode() for r in results]  # type: ignore[arg-type]
        resp = v2.ModelInferResponse(model_name=request.model_name, model_version=str(model.version), id=request.id)
        resp.outputs.add(name="text_output", datatype="BYTES", shape=[len(out), *shape[1:]])
        resp.raw_output_contents.append(serialize_bytes(out))
        return resp

    def _infer_text(
        self, model: ModelVersion, request: v2.ModelInferRequest, context: grpc.ServicerContext
    ) -> v2.ModelInferResponse:
        texts, shape = self._text_input(request)
        words = check_inputs("text_input", texts, model, self.settings)
        beam = None
        if "beam_size" in request.parameters:
            p = request.parameters["beam_size"]
            if p.WhichOneof("parameter_choice") not in ("int64_param", "uint64_param"):
                raise InvalidArgument("parameters.beam_size: must be an integer")
            beam = int(p.int64_param or p.uint64_param)
        options = decode_options(model, self.settings, beam, None, None, None, prefix="parameters.")
        results = run_job(self.engine, Job(model, words, options), context)
        out = [" ".join(r[0].phonemes).encode() for r in results]
        resp = v2.ModelInferResponse(model_name=request.model_name, model_version=str(model.version), id=request.id)
        resp.outputs.add(name="text_output", datatype="BYTES", shape=[len(out), *shape[1:]])
        resp.raw_output_contents.append(serialize_bytes(out))
        return resp

    def _tensor(self, request: v2.ModelInferRequest, k: int, t: Any) -> np.ndarray:
        dtype = V2_NUMPY[t.datatype]
        shape = tuple(int(d) for d in t.shape)
        if request.raw_input_contents:
            raw = request.raw_input_contents[k]
            size = int(np.prod(shape)) * np.dtype(dtype).itemsize
            if len(raw) != size:
                raise InvalidArgument(
                    f"inputs[{k}] ({t.name}): {len(raw)} bytes for shape {list(shape)} ({size} expected)"
                )
            return np.frombuffer(raw, dtype=dtype).reshape(shape)
        field = {"INT64": "int64_contents", "INT32": "int_contents", "BOOL": "bool_contents"}[t.datatype]
        values = getattr(t.contents, field)
        if len(values) != int(np.prod(shape)):
            raise InvalidArgument(f"inputs[{k}] ({t.name}): {len(values)} values for shape {list(shape)}")
        return np.asarray(values, dtype=dtype).reshape(shape)

    def _infer_encoder(
        self, model: ModelVersion, request: v2.ModelInferRequest, context: grpc.ServicerContext
    ) -> v2.ModelInferResponse:
        """The encoder graph as a tensor model: checked, its answer's size refused before any computing when it
        would not fit in ``max_message_bytes``, then run through the engine (its queue bound and the deadline)."""
        found = self._inputs(request, {"src_ids": "INT64", "src_mask": "BOOL"}, {"src_ids"})
        k, t = found["src_ids"]
        if len(t.shape) != 2:
            raise InvalidArgument(f"inputs[{k}] (src_ids): shape {list(t.shape)}, expected [batch, src_len]")
        b, s = int(t.shape[0]), int(t.shape[1])
        limit = model.manifest.limits.max_source_len
        max_b = self.settings.max_inputs_per_request
        if not 1 <= b <= max_b or not 1 <= s <= limit:
            raise InvalidArgument(f"inputs[{k}] (src_ids): shape [{b}, {s}] outside [1..{max_b}, 1..{limit}]")
        ids = self._tensor(request, k, t)
        vocab = model.tokenizers.src_vocab_size
        if ids.min() < 0 or ids.max() >= vocab:
            raise InvalidArgument(f"inputs[{k}] (src_ids): token ids must be in [0, {vocab})")
        if "src_mask" in found:
            km, tmask = found["src_mask"]
            if list(tmask.shape) != [b, s]:
                raise InvalidArgument(f"inputs[{km}] (src_mask): shape {list(tmask.shape)}, expected {[b, s]}")
            mask = self._tensor(request, km, tmask).astype(bool)
        else:
            mask = ids != PAD_ID
        if not mask.any(axis=1).all():
            raise InvalidArgument("src_mask: every row needs at least one token")
        for o in request.outputs:
            if o.name != "memory":
                raise InvalidArgument(f"outputs: unknown output {o.name!r} (model {self.encoder_model} has memory)")
        d = model.d_model
        resp = v2.ModelInferResponse(model_name=request.model_name, model_version=str(model.version), id=request.id)
        resp.outputs.add(name="memory", datatype="FP32", shape=[b, s, d])
        size = b * s * d * 4
        whole = resp.ByteSize() + size + 16  # + the raw_output_contents field's tag and length
        limit = self.settings.max_message_bytes
        if whole > limit:
            rows = max((limit - resp.ByteSize() - 16) // (s * d * 4), 0)
            raise InvalidArgument(
                f"outputs: memory [{b}, {s}, {d}] would be {size} bytes (batch x src_len x d_model x 4 = "
                f"{b} x {s} x {d} x 4), over max_message_bytes={limit} (G2P_MAX_MESSAGE_BYTES): send at most "
                f"{rows} rows of this length per request"
            )
        ids, mask = np.ascontiguousarray(ids), np.ascontiguousarray(mask)
        memory = run_job(self.engine, Job(model, [], DecodeOptions(), work=lambda: model.encode(ids, mask)), context)
        resp.raw_output_contents.append(np.asarray(memory).astype("<f4").tobytes())
        return resp
