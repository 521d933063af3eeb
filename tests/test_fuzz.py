"""Fuzzing the APIs through the wire (hypothesis): random Unicode, sizes, options, tensor shapes and types.

Every answer is OK or INVALID_ARGUMENT / NOT_FOUND / RESOURCE_EXHAUSTED with a message; the server is SERVING after.
"""

from __future__ import annotations

import struct

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from service_helpers import running_server

from service.api.g2p.v1 import g2p_pb2 as pb
from service.api.g2p.v1 import g2p_pb2_grpc as pb_grpc
from service.api.inference import grpc_service_pb2 as v2
from service.api.inference import grpc_service_pb2_grpc as v2_grpc

pytestmark = pytest.mark.slow

EXPECTED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED}
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

unicode = st.characters(codec="utf-8", exclude_categories=("Cs",))
texts = st.one_of(st.text(unicode, max_size=120), st.text(st.sampled_from("abcXYZ $5.,!'-19%:@é😀 "), max_size=60))
words = st.one_of(
    st.text(unicode, max_size=70), st.text(st.sampled_from("abcdefghijklmnop'-."), min_size=1, max_size=12)
)
entries = st.one_of(
    st.just({}), st.dictionaries(words, st.sampled_from(["T AH0", "X Y", "", "HH AH0 L OW1"]), max_size=2)
)


@pytest.fixture(scope="module")
def server():
    with running_server(max_texts_per_request=8, max_text_chars=100, max_inputs_per_request=16) as s:
        yield s


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


def call(fn, request):
    """The answer, or the error: only the expected codes, each with a message."""
    try:
        answer = fn(request, timeout=30)
    except grpc.RpcError as exc:
        assert exc.code() in EXPECTED, (exc.code(), exc.details())
        assert exc.details()
        event(exc.code().name)
        return None
    event("OK")
    return answer


@FUZZ
@given(st.lists(texts, min_size=1, max_size=9), st.sampled_from([0, 1, 2, 3, 7]), entries)
def test_phonemize(channel, batch, alphabet, lexicon):
    stub = pb_grpc.G2PStub(channel)
    request = pb.PhonemizeRequest(texts=batch, options=pb.PhonemizeOptions(alphabet=alphabet, lexicon=lexicon))
    response = call(stub.Phonemize, request)
    if response is not None:
        for text, result in zip(batch, response.results, strict=True):
            for t in result.tokens:
                assert text[t.start : t.end] == t.text


@FUZZ
@given(st.lists(words, min_size=1, max_size=20), st.integers(0, 20), st.integers(0, 6), st.integers(0, 80),
       st.one_of(st.just(1.0), st.floats(allow_nan=True, allow_infinity=True, width=32)),
       st.sampled_from(["", "", "g2p", "nope"]), st.sampled_from([0, 0, 0, 1, 3]))  # fmt: skip
def test_generate(channel, inputs, beam, nbest, max_tokens, length_penalty, model, version):
    stub = pb_grpc.G2PStub(channel)
    options = pb.GenerateOptions(length_penalty=length_penalty)
    for name, value in (("beam_size", beam), ("num_hypotheses", nbest), ("max_output_tokens", max_tokens)):
        if value:
            setattr(options, name, value)
    request = pb.GenerateRequest(inputs=inputs, options=options, model=model, model_version=version)
    response = call(stub.Generate, request)
    if response is not None:
        assert len(response.outputs) == len(inputs)


def _bytes_tensor(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


@FUZZ
@given(st.sampled_from(["g2p", "g2p_text", "g2p_encoder", "other"]),
       st.sampled_from(["text_input", "src_ids", "src_mask", "x"]),
       st.sampled_from(["BYTES", "INT64", "BOOL", "FP32", "INT32"]),
       st.lists(st.integers(-2, 40), max_size=3), st.lists(words, max_size=6), st.binary(max_size=64),
       st.booleans())  # fmt: skip
def test_v2_model_infer(channel, model, name, datatype, shape, items, raw, use_raw):
    stub = v2_grpc.GRPCInferenceServiceStub(channel)
    request = v2.ModelInferRequest(model_name=model)
    t = request.inputs.add(name=name, datatype=datatype, shape=shape)
    if use_raw:
        request.raw_input_contents.append(_bytes_tensor([w.encode() for w in items]) if datatype == "BYTES" else raw)
    elif datatype == "BYTES":
        t.contents.bytes_contents.extend(w.encode() for w in items)
    call(stub.ModelInfer, request)


def test_the_server_is_serving_after_the_fuzzing(channel):
    status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
    assert status == health_pb2.HealthCheckResponse.SERVING
