"""Issue 13 (reliability), continued: every path bounded (the KServe encoder model), batch-invariant answers,
memory bounded by design, mutual TLS. Real servers on port 0, waited on through health."""

from __future__ import annotations

import random
import threading
import time

import grpc
import numpy as np
import pytest
from conftest import ROOT
from service_helpers import SHIPPED_BUNDLE, running_server

from g2p.bundle import BundleError, verify_bundle
from g2p.decoding import DecodeOptions
from g2p.lexicon import read_test_split
from g2p.ort_backend import CPU
from service.api.g2p.v1 import g2p_pb2 as pb
from service.api.g2p.v1 import g2p_pb2_grpc as pb_grpc
from service.api.inference import grpc_service_pb2 as v2
from service.api.inference import grpc_service_pb2_grpc as v2_grpc
from service.runtime import ModelVersion, choose_variant, load_version
from service.settings import SettingsError, load_settings

pytestmark = pytest.mark.skipif(not SHIPPED_BUNDLE.is_dir(), reason="the shipped bundle models/g2p/1 is missing")


def _wait_for(cond, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def encoder_request(batch: int, src_len: int) -> v2.ModelInferRequest:
    ids = np.full((batch, src_len), 5, dtype=np.int64)
    request = v2.ModelInferRequest(model_name="g2p_encoder")
    request.inputs.add(name="src_ids", datatype="INT64", shape=[batch, src_len])
    request.raw_input_contents.append(ids.tobytes())
    return request


# ------------------------------------------------------------------------------------------------ #5
def test_encoder_model_is_bounded_like_the_rest(monkeypatch):
    """g2p_encoder: an answer over max_message_bytes is refused before computing (INVALID_ARGUMENT naming the limit
    and the size); the engine's queue bound (RESOURCE_EXHAUSTED) and the deadline (DEADLINE_EXCEEDED, dropped
    and never computed) apply to it as to every other request."""
    encoded: list[tuple[int, ...]] = []
    encode = ModelVersion.encode

    def counted(self, ids, mask):
        encoded.append(ids.shape)
        return encode(self, ids, mask)

    gate = threading.Event()
    transcribe = ModelVersion.transcribe

    def held(self, *args, **kwargs):
        gate.wait(30)
        return transcribe(self, *args, **kwargs)

    monkeypatch.setattr(ModelVersion, "encode", counted)
    with (
        running_server(max_queue_size=4, metrics_port=-1) as server,
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch,
    ):
        infer = v2_grpc.GRPCInferenceServiceStub(ch).ModelInfer
        ok = infer(encoder_request(2, 7), timeout=30)
        assert list(ok.outputs[0].shape) == [2, 7, 192] and encoded == [(2, 7)]
        with pytest.raises(grpc.RpcError) as err:
            infer(encoder_request(256, 64), timeout=30)  # 256 x 64 x 192 x 4 = 12.6 MB > 4 MiB
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "12582912 bytes" in err.value.details() and "max_message_bytes=4194304" in err.value.details()
        assert "256 x 64 x 192 x 4" in err.value.details()
        assert encoded == [(2, 7)]  # refused before computing

        g2p = pb_grpc.G2PStub(ch)
        monkeypatch.setattr(ModelVersion, "transcribe", held)
        try:
            busy = []
            for n, word in enumerate(["cat", "dog", "bird", "tree"], 1):  # the inline decode, the 2 workers, one queued
                busy.append(g2p.Generate.future(pb.GenerateRequest(inputs=[word]), timeout=60))
                _wait_for(lambda n=n: server.engine.admitted == n)
            with pytest.raises(grpc.RpcError) as full:
                infer(encoder_request(1, 5), timeout=30)
            assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_queue_size=4" in full.value.details()
        finally:
            gate.set()
        assert all(f.result().outputs for f in busy)

        monkeypatch.setattr(ModelVersion, "transcribe", held)
        gate.clear()
        try:
            busy = []
            for n, word in enumerate(["cat", "dog", "bird"], 1):  # every decoder held: the inline one and the 2 workers
                busy.append(g2p.Generate.future(pb.GenerateRequest(inputs=[word]), timeout=60))
                _wait_for(lambda n=n: server.engine.admitted == n)
            _wait_for(lambda: server.engine._busy == 3)
            with pytest.raises(grpc.RpcError) as late:
                infer(encoder_request(1, 6), timeout=0.3)  # queued behind held workers: its deadline passes
            assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        finally:
            gate.set()
        assert all(f.result().outputs for f in busy)
        _wait_for(lambda: server.engine.admitted == 0)
        assert (1, 6) not in encoded  # dropped, never computed
        dropped = server.metrics.registry.get_sample_value("g2p_dropped_requests_total", {"reason": "deadline"})
        assert dropped == 1


# ------------------------------------------------------------------------------------------------ #11
@pytest.mark.slow
def test_served_answers_do_not_depend_on_the_batch():
    """Every variant the service can serve on the CPU, loaded as the service loads it, gives each of 200 test words
    the same tokens alone and in a batch of 32 (mixed lengths, greedy and beam 5). int8 (one activation scale per
    batch tensor) is refused with the reason, and ``auto`` never picks it."""
    words = sorted(read_test_split(ROOT / "data" / "cmudict-0.7b.test"))
    words = words[:: len(words) // 200][:200]
    random.Random(0).shuffle(words)
    manifest = verify_bundle(SHIPPED_BUNDLE)
    served, refused = [], {}
    for variant in manifest.variants:
        try:
            settings = load_settings(variant=variant, workers=1, intra_op_threads=1, warmup_runs=1)
            model = load_version(SHIPPED_BUNDLE, settings, [CPU])
        except (SettingsError, BundleError) as exc:
            refused[variant] = str(exc)
            continue
        served.append(variant)
        for beam in (1, 5):
            options = DecodeOptions(beam_size=beam, max_len=model.max_output_tokens)
            alone = [model.transcribe([w], options, batch_size=1)[0][0].phonemes for w in words]
            batched = []
            for i in range(0, len(words), 32):
                batched += [r[0].phonemes for r in model.transcribe(words[i : i + 32], options, batch_size=32)]
            differ = [w for w, a, b in zip(words, alone, batched, strict=True) if a != b]
            assert not differ, (variant, beam, differ)
        model.parallel.close()
    assert {"fused", "fp32"} <= set(served)
    assert "int8" not in served and "depends on the other words batched with it" in refused["int8"]
    assert "variant (G2P_VARIANT)" in refused["int8"]
    assert (
        choose_variant("auto", manifest, gpu=False) == "fused" and choose_variant("auto", manifest, gpu=True) == "fp32"
    )
    with pytest.raises(BundleError, match="'int8' is not served"):
        choose_variant("int8", manifest, gpu=False)
