"""The gRPC service through the wire: a real server on port 0, the shipped bundle, waited on through health."""

from __future__ import annotations

import json
import logging
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import ROOT
from grpc_health.v1 import health_pb2, health_pb2_grpc
from service_helpers import SHIPPED_BUNDLE, running_server, server_process, shipped_checkpoint

from g2p.decoding import DecodeOptions
from g2p.lexicon import read_test_split
from g2p.ort_backend import OrtBackend
from g2p.pipeline import transcribe
from g2p.tokenization import G2PTokenizers, pad_batch
from service import allocator
from service.api.g2p.v1 import g2p_pb2 as pb
from service.api.g2p.v1 import g2p_pb2_grpc as pb_grpc
from service.runtime import ModelVersion

pytestmark = pytest.mark.skipif(not SHIPPED_BUNDLE.is_dir(), reason="the shipped bundle models/g2p/1 is missing")

N_WORDS = 200


@pytest.fixture(scope="module")
def server():
    with running_server() as s:
        yield s


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel):
    return pb_grpc.G2PStub(channel)


@pytest.fixture(scope="module")
def test_words():
    words = sorted(read_test_split(ROOT / "data" / "cmudict-0.7b.test"))
    return words[:: len(words) // N_WORDS][:N_WORDS]


def py(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter in the repository root (env: only PATH plus ``env`` when given)."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, input=stdin, capture_output=True, text=True, timeout=120,
                          check=False, env=None if env is None else {"PATH": "/usr/bin:/bin"} | env)  # fmt: skip


def generate(stub, words, **options):
    return stub.Generate(pb.GenerateRequest(inputs=words, options=pb.GenerateOptions(**options)), timeout=60)


# ------------------------------------------------------------------------------------------------ parity
@pytest.mark.parametrize("beam", [1, 5])
def test_generate_equals_in_process_onnx_and_pytorch(stub, test_words, beam, torch_threads):
    import torch  # the offline side, in the test process only

    from training import checkpoint as ckpt
    from training.backend import TorchBackend

    words = test_words
    resp = generate(stub, words, beam_size=beam)
    wire = [o.hypotheses[0].text for o in resp.outputs]
    assert [o.input for o in resp.outputs] == words
    assert resp.model == "g2p" and resp.model_version == 1

    tok = G2PTokenizers.load(SHIPPED_BUNDLE)
    opts = DecodeOptions(beam_size=beam, max_len=48)
    ort_out = [" ".join(r[0].phonemes) for r in transcribe(OrtBackend(SHIPPED_BUNDLE), tok, words, opts)]
    loaded = ckpt.load_model(shipped_checkpoint())
    with torch.inference_mode():
        torch_out = [" ".join(r[0].phonemes) for r in transcribe(TorchBackend(loaded.model), tok, words, opts)]
    assert wire == ort_out
    assert wire == torch_out


def test_nbest_and_scores(stub):
    resp = generate(stub, ["reading"], beam_size=5, num_hypotheses=3)
    hyps = resp.outputs[0].hypotheses
    assert len(hyps) == 3
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
    assert all(h.text == " ".join(h.tokens) for h in hyps)
    assert len({h.text for h in hyps}) == 3


def test_stream_equals_generate(stub, test_words):
    words = test_words[:20]
    tokens: dict[int, list[str]] = {i: [] for i in range(len(words))}
    finals = {}
    for msg in stub.GenerateStream(pb.GenerateRequest(inputs=words), timeout=60):
        if msg.WhichOneof("event") == "token":
            assert msg.token.position == len(tokens[msg.index])
            tokens[msg.index].append(msg.token.token)
        else:
            assert msg.index not in finals
            finals[msg.index] = msg.final.hypotheses[0].text
    plain = [o.hypotheses[0].text for o in generate(stub, words).outputs]
    assert [finals[i] for i in range(len(words))] == plain
    assert [" ".join(tokens[i]) for i in range(len(words))] == plain


# ------------------------------------------------------------------------------------------------ KServe v2
def test_tritonclient_text_model_and_encoder_tensor_model(server, stub, test_words):
    words = test_words[:16]
    tok = G2PTokenizers.load(SHIPPED_BUNDLE)
    ids, mask = pad_batch(tok.encode_source(words[:4]))
    proc = py(str(ROOT / "tests" / "v2_probe.py"), f"127.0.0.1:{server.port}", *words, stdin=json.dumps(ids.tolist()))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["live"] and r["ready"] and r["model_ready"] == [True, True, False]
    assert r["metadata"]["inputs"] == [["text_input", "BYTES", [-1]]]
    assert r["metadata"]["outputs"] == [["text_output", "BYTES", [-1]]]
    assert "CPUExecutionProvider" in r["metadata"]["platform"] and r["version"] == "1"
    for beam in (1, 5):
        assert r[f"beam{beam}"] == [o.hypotheses[0].text for o in generate(stub, words, beam_size=beam).outputs]
    local = OrtBackend(SHIPPED_BUNDLE).encode(ids, mask).memory
    np.testing.assert_allclose(np.array(r["memory"], dtype=np.float32), local, atol=1e-5)
    e = r["errors"]
    expected = {
        "datatype": "datatype 'INT64', expected 'BYTES'",
        "shape": "shape [3] but 2 elements",
        "alphabet": "text_input[0]: characters outside",
        "name": "unknown input 'words'",
        "beam": "parameters.beam_size: 0 is out of range",
        "ids": "src_ids): token ids must be in [0, ",
        "ids_shape": "expected [batch, src_len]",
    }
    for key, message in expected.items():
        assert e[key][0] == "StatusCode.INVALID_ARGUMENT" and message in e[key][1], (key, e[key])
    assert e["model"][0] == "StatusCode.NOT_FOUND"
    # the README's tritonclient example, as written
    example = py("examples/tritonclient_g2p.py", "--target", f"127.0.0.1:{server.port}", "--beam", "5", *words[:3])
    assert example.returncode == 0, example.stderr
    assert example.stdout.splitlines() == [f"{w}\t{p}" for w, p in zip(words[:3], r["beam5"][:3], strict=True)]
    enc = py("examples/tritonclient_g2p.py", "--target", f"127.0.0.1:{server.port}", "--encoder", "--bundle",
             str(SHIPPED_BUNDLE), "hello")  # fmt: skip
    assert json.loads(enc.stdout)["shape"][:2] == [1, 6], enc.stderr


# ------------------------------------------------------------------------------------------------ health
def test_health_check_watch_and_reflection(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "g2p.v1.G2P", "inference.GRPCInferenceService"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == 1
    watch = health.Watch(health_pb2.HealthCheckRequest(service="g2p.v1.G2P"), timeout=5)
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()

    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    db = ProtoReflectionDescriptorDatabase(channel)
    services = set(db.get_services())
    assert {"g2p.v1.G2P", "inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services
    assert db.FindFileContainingSymbol("g2p.v1.G2P") is not None


def test_get_model_reports_providers_and_limits(stub):
    info = stub.GetModel(pb.GetModelRequest(), timeout=5)
    assert info.name == "g2p" and info.default_version == 1
    assert info.versions[0].state == pb.MODEL_STATE_READY
    assert list(info.versions[0].execution_providers) == ["CPUExecutionProvider"]
    assert info.limits.max_inputs == 256 and info.limits.max_beam_size == 16
    assert set("abcxyz'-.") <= set(info.source_alphabet)
    assert stub.ListModels(pb.ListModelsRequest(), timeout=5).models[0].name == "g2p"


# ------------------------------------------------------------------------------------------------ bad requests
BAD = [
    (dict(inputs=[]), "inputs: empty batch"),
    (dict(inputs=["cat", ""]), "inputs[1]: empty string"),
    (dict(inputs=["a" * 49]), "inputs[0]: 49 characters exceed the limit of"),
    (dict(inputs=["caf3"]), "inputs[0]: characters outside the model's alphabet: '3'"),
    (dict(inputs=["x"] * 257), "inputs: 257 inputs exceed the limit of 256"),
    (dict(inputs=["cat"], options=pb.GenerateOptions(beam_size=0)), "options.beam_size: 0 is out of range [1, 16]"),
    (dict(inputs=["cat"], options=pb.GenerateOptions(beam_size=10**6)), "options.beam_size: 1000000 is out of range"),
    (dict(inputs=["cat"], options=pb.GenerateOptions(beam_size=2, num_hypotheses=3)), "options.num_hypotheses: 3"),
    (dict(inputs=["cat"], options=pb.GenerateOptions(max_output_tokens=500)), "options.max_output_tokens: 500"),
    (dict(inputs=["cat"], options=pb.GenerateOptions(length_penalty=-1)), "options.length_penalty"),
]


@pytest.mark.parametrize(("fields", "message"), BAD)
def test_bad_requests_are_invalid_argument(stub, fields, message):
    with pytest.raises(grpc.RpcError) as err:
        stub.Generate(pb.GenerateRequest(**fields), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()


def test_unknown_model_or_version_is_not_found(stub):
    for req in (pb.GenerateRequest(inputs=["cat"], model="nope"), pb.GenerateRequest(inputs=["cat"], model_version=7)):
        with pytest.raises(grpc.RpcError) as err:
            stub.Generate(req, timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        stub.GetModel(pb.GetModelRequest(model="nope"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_stream_refuses_beam_search(stub):
    with pytest.raises(grpc.RpcError) as err:
        list(stub.GenerateStream(pb.GenerateRequest(inputs=["cat"], options=pb.GenerateOptions(beam_size=4))))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("method", ["Generate", "GenerateStream"])
def test_an_unexpected_error_is_internal_with_a_logged_trace_id(server, stub, method, monkeypatch, caplog):
    def broken(job):
        raise RuntimeError("the engine broke")

    monkeypatch.setattr(server.engine, "run", broken)
    monkeypatch.setattr(server.engine, "submit", broken)
    request = pb.GenerateRequest(inputs=["cat"])
    with caplog.at_level(logging.ERROR, logger="g2p.service"), pytest.raises(grpc.RpcError) as err:
        if method == "Generate":
            stub.Generate(request, timeout=10)
        else:
            list(stub.GenerateStream(request, timeout=10))
    assert err.value.code() == grpc.StatusCode.INTERNAL
    found = re.search(rf"internal error in {method} \(trace id (\w+), logged on the server\)", err.value.details())
    assert found, err.value.details()
    logged = [r for r in caplog.records if getattr(r, "trace_id", None) == found.group(1)]
    assert len(logged) == 1 and logged[0].exc_info and "the engine broke" in str(logged[0].exc_info[1])


# ------------------------------------------------------------------------------------------------ load
def test_32_concurrent_clients_are_batched(server, stub, test_words):
    errors: list[BaseException] = []
    results: dict[str, str] = {}

    def client(k: int) -> None:
        try:
            for w in test_words[k::32][:6]:
                results[w] = stub.Generate(pb.GenerateRequest(inputs=[w]), timeout=60).outputs[0].hypotheses[0].text
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    batch = generate(stub, list(results))
    assert [o.hypotheses[0].text for o in batch.outputs] == list(results.values())
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics.http_port}/metrics", timeout=5).read().decode()
    bucket1 = float(_metric(text, 'g2p_batch_size_bucket{le="1.0"}'))
    count = float(_metric(text, "g2p_batch_size_count"))
    assert count > bucket1, "no batch held more than one request"
    assert float(_metric(text, 'g2p_requests_total{code="OK",method="Generate"}')) >= 32 * 6


def test_overload_is_refused_at_the_door_at_once_and_counted(monkeypatch):
    """4 requests fill the server (max_queue_size=4, their decoding held): the next ones are RESOURCE_EXHAUSTED at
    once by gRPC's limit on concurrent RPCs, before a thread reads them, each counted (reason rpcs); the 4 then
    finish. Meanwhile the health side port answers SERVING, while the main port's health check is refused too."""
    gate = threading.Event()
    transcribe = ModelVersion.transcribe

    def held(self, *args, **kwargs):
        gate.wait(30)
        return transcribe(self, *args, **kwargs)

    with (
        running_server(max_queue_size=4, health_port=0) as server,
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch,
        grpc.insecure_channel(f"127.0.0.1:{server.health_port}") as side,
    ):
        stub = pb_grpc.G2PStub(ch)
        monkeypatch.setattr(ModelVersion, "transcribe", held)
        try:
            words = ["cat", "dog", "bird", "tree"]
            admitted = [stub.Generate.future(pb.GenerateRequest(inputs=[w]), timeout=60) for w in words]
            _wait_for(lambda: server.engine.admitted == 4)
            refused = [stub.Generate.future(pb.GenerateRequest(inputs=["cat"]), timeout=60) for _ in range(6)]
            errors = [f.exception(timeout=10) for f in refused]
            check = health_pb2.HealthCheckRequest(service="")
            with pytest.raises(grpc.RpcError) as main_health:
                health_pb2_grpc.HealthStub(ch).Check(check, timeout=10)
            side_health = health_pb2_grpc.HealthStub(side).Check(check, timeout=10)
            assert not any(f.done() for f in admitted)
        finally:
            gate.set()
        phonemes = [f.result().outputs[0].hypotheses[0].text for f in admitted]
    assert phonemes == ["K AE1 T", "D AO1 G", "B ER1 D", "T R IY1"]
    assert {e.code() for e in errors} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert main_health.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert side_health.status == health_pb2.HealthCheckResponse.SERVING
    metrics = server.metrics.registry
    assert metrics.get_sample_value("g2p_rejected_requests_total", {"reason": "rpcs"}) == 6 + 1  # + the health check
    assert metrics.get_sample_value("g2p_rejected_requests_total", {"reason": "queue"}) is None
    assert metrics.get_sample_value("g2p_requests_total", {"method": "Generate", "code": "RESOURCE_EXHAUSTED"}) == 6


def _metric(text: str, name: str) -> str:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return line.split()[-1]
    raise AssertionError(f"metric {name} not found")


@pytest.fixture(scope="module")
def loadgen() -> str:
    """The service bench's C++ load generator, built here (skips where Debian's gRPC C++ packages are missing:
    ``make loadgen`` installs them)."""
    build = ROOT / "bench" / "loadgen" / "build.sh"
    done = subprocess.run(["bash", str(build)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"bench/loadgen does not build here: {done.stderr.strip()[:200]}")
    return done.stdout.strip().splitlines()[-1]


def test_cpp_load_generator_gets_the_in_process_outputs(server, test_words, loadgen, tmp_path):
    """16 single-word clients from another process and another gRPC implementation (C++): every word comes back
    as the server's engine decodes it in process, and the report is what the bench reads."""
    words_file = tmp_path / "words.txt"
    words_file.write_text("\n".join(test_words) + "\n")
    done = subprocess.run(
        [loadgen, "--target", f"127.0.0.1:{server.port}", "--words", str(words_file), "--clients", "16"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    report = json.loads(done.stdout)
    model = server.repo.get("", 0)
    local = model.transcribe(test_words, DecodeOptions(beam_size=1, max_len=model.max_output_tokens))
    assert report["errors"] == {}
    assert report["requests"] == len(test_words) == len(report["latencies_ms"])
    assert all(ms > 0 for ms in report["latencies_ms"]) and report["wall_s"] > 0
    assert report["outputs"] == {w: " ".join(r[0].phonemes) for w, r in zip(test_words, local, strict=True)}


def test_cpp_load_generator_summary_and_an_unreachable_server(server, loadgen, tmp_path):
    lexicon = tmp_path / "lexicon.txt"  # dictionary lines: the first field is the word
    lexicon.write_text("HELLO  HH AH0 L OW1\nWORLD  W ER1 L D\n\nSPEECH  S P IY1 CH\n")
    done = subprocess.run(
        [loadgen, "--target", f"127.0.0.1:{server.port}", "--words", str(lexicon), "--clients", "2", "--summary",
         "--beam", "3"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "2 clients, 3 single-word requests" in done.stdout and "failed: 0" in done.stdout
    assert "latency ms: p50" in done.stdout
    dead = subprocess.run(
        [loadgen, "--target", "127.0.0.1:1", "--words", str(lexicon), "--timeout-ms", "300", "--summary"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert dead.returncode == 1 and "failed (above); nothing measured" in dead.stderr and dead.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--clients", "0"], "--clients must be in 1..4096"),
        (["--timeout-ms", "0"], "--timeout-ms must be >= 1"),
        (["--beam", "-1"], "--beam must be >= 1"),
        (["--words", "-", "--clients", "2"], "--words - drives one client"),
        (["--words", "/nonexistent"], "cannot read --words /nonexistent"),
        (["--bogus", "1"], "unknown argument --bogus"),
        (["--clients"], "missing value after --clients"),
    ],
)
def test_cpp_load_generator_refuses_bad_arguments(loadgen, args, message, tmp_path):
    words_file = tmp_path / "words.txt"
    words_file.write_text("cat\n")
    base = ["--target", "127.0.0.1:1"] + ([] if "--words" in args else ["--words", str(words_file)])
    done = subprocess.run([loadgen, *base, *args], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert message in done.stderr and done.stdout == ""


def test_deadline_is_honoured(server, stub, monkeypatch):
    """A request whose deadline passes while it waits is dropped by the engine, never decoded, and counted."""
    gate = threading.Event()
    seen: list[str] = []
    transcribe = ModelVersion.transcribe

    def held(self, words, *args, **kwargs):
        seen.extend(words)
        gate.wait(30)
        return transcribe(self, words, *args, **kwargs)

    def dropped() -> float:
        return server.metrics.registry.get_sample_value("g2p_dropped_requests_total", {"reason": "deadline"}) or 0.0

    before = dropped()
    monkeypatch.setattr(ModelVersion, "transcribe", held)
    busy = []
    try:
        for word in ["cat", "dog", "bird"][: server.settings.decode_workers() + 1]:  # the RPC thread and workers
            busy.append(stub.Generate.future(pb.GenerateRequest(inputs=[word]), timeout=60))
            _wait_for(lambda w=word: w in seen)  # one batch each: every decoder is held
        with pytest.raises(grpc.RpcError) as err:
            stub.Generate(pb.GenerateRequest(inputs=["deadline"]), timeout=0.3)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        gate.set()
    assert all(f.result().outputs for f in busy)
    _wait_for(lambda: dropped() == before + 1)  # taken from the queue after its deadline: dropped, counted
    assert "deadline" not in seen  # and never decoded
    assert generate(stub, ["cat"]).outputs[0].hypotheses[0].text == "K AE1 T"  # and the server goes on


# ------------------------------------------------------------------------------------------------ lifecycle
@pytest.mark.slow
def test_sigterm_drains_in_flight_requests_then_exits_0(test_words):
    with server_process({}) as (proc, port), grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        # allocator=auto: where jemalloc is installed, the same process (the PID we signal) runs on it
        on_jemalloc = "libjemalloc" in Path(f"/proc/{proc.pid}/maps").read_text()
        assert on_jemalloc == (allocator.jemalloc_library() is not None)
        stub = pb_grpc.G2PStub(ch)
        slow = stub.Generate.future(
            pb.GenerateRequest(inputs=test_words, options=pb.GenerateOptions(beam_size=8)), timeout=60
        )
        time.sleep(0.3)  # the request is in the engine
        proc.send_signal(signal.SIGTERM)
        assert len(slow.result().outputs) == len(test_words)  # finished within the grace period
        assert proc.wait(timeout=30) == 0
        log = proc.stderr.read()
        assert "shutting down" in log and "stopped" in log


@pytest.mark.slow
def test_new_version_is_picked_up_and_a_corrupted_one_refused(tmp_path, test_words):
    repo = tmp_path / "models"
    shutil.copytree(SHIPPED_BUNDLE, repo / "g2p" / "1")
    with running_server(model_repository=repo) as server, grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = pb_grpc.G2PStub(ch)
        failures: list[BaseException] = []
        served: set[int] = set()
        stop = threading.Event()

        def traffic() -> None:
            while not stop.is_set():
                try:
                    served.add(stub.Generate(pb.GenerateRequest(inputs=test_words[:8]), timeout=30).model_version)
                except BaseException as exc:
                    failures.append(exc)

        t = threading.Thread(target=traffic)
        t.start()
        try:
            staging = repo / "g2p" / ".incoming-2"
            shutil.copytree(SHIPPED_BUNDLE, staging)
            staging.rename(repo / "g2p" / "2")  # how export publishes a version: complete, then renamed
            _wait_for(lambda: stub.GetModel(pb.GetModelRequest(), timeout=5).default_version == 2)
            bad = repo / "g2p" / ".incoming-3"
            shutil.copytree(SHIPPED_BUNDLE, bad)
            with (bad / "encoder.onnx").open("r+b") as f:
                f.seek(100)
                f.write(b"\x00\x01\x02")
            bad.rename(repo / "g2p" / "3")
            _wait_for(lambda: any(v.version == 3 and v.state == pb.MODEL_STATE_FAILED
                                  for v in stub.GetModel(pb.GetModelRequest(), timeout=5).versions))  # fmt: skip
            time.sleep(0.3)
        finally:
            stop.set()
            t.join()
        info = stub.GetModel(pb.GetModelRequest(), timeout=5)
        assert info.default_version == 2
        v3 = next(v for v in info.versions if v.version == 3)
        assert "sha256" in v3.error
        assert not failures
        assert 2 in served
        pinned = stub.Generate(pb.GenerateRequest(inputs=["cat"], model_version=1), timeout=10)
        assert pinned.model_version == 1


def _wait_for(cond, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


# ------------------------------------------------------------------------------------------------ start-up
def _has_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.mark.skipif(_has_cuda(), reason="this machine has CUDA")
def test_cuda_is_refused_at_start_up_where_it_cannot_run():
    proc = py("-m", "service", env={"G2P_PROVIDERS": "cuda", "G2P_PORT": "0"})
    assert proc.returncode == 1
    assert "providers=cuda (G2P_PROVIDERS): CUDAExecutionProvider is not available" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="needs onnxruntime-gpu and an NVIDIA GPU")
def test_cuda_server_matches_cpu_through_the_wire(stub, test_words):
    with running_server(providers="cuda") as gpu, grpc.insecure_channel(f"127.0.0.1:{gpu.port}") as ch:
        gstub = pb_grpc.G2PStub(ch)
        info = gstub.GetModel(pb.GetModelRequest(), timeout=5)
        assert info.versions[0].execution_providers[0] == "CUDAExecutionProvider"
        for beam in (1, 5):
            on_gpu = [o.hypotheses[0].text for o in generate(gstub, test_words, beam_size=beam).outputs]
            on_cpu = [o.hypotheses[0].text for o in generate(stub, test_words, beam_size=beam).outputs]
            assert on_gpu == on_cpu


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"G2P_PORT": "99999"}, "port (G2P_PORT): Input should be less than or equal to 65535"),
        ({"G2P_PROVIDERS": "tpu"}, "providers (G2P_PROVIDERS)"),
        ({"G2P_TLS_CERT": "/nonexistent.pem"}, "tls_cert and tls_key go together"),
        ({"G2P_MAX_BATCH_SIZE": "0"}, "max_batch_size (G2P_MAX_BATCH_SIZE)"),
        ({"G2P_GRPC_WORKERS": "64"}, "grpc_workers (G2P_GRPC_WORKERS=64) must be at least max_queue_size"),
    ],
)
def test_invalid_settings_stop_start_up_naming_the_field(env, message):
    proc = py("-m", "service", env=env)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_bundle_fails_start_up_with_a_message(tmp_path):
    proc = py("-m", "service", env={"G2P_MODEL_REPOSITORY": str(tmp_path), "G2P_PORT": "0"})
    assert proc.returncode == 1
    assert "no loadable version of model 'g2p'" in proc.stderr


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_tls(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    with running_server(tls_cert=cert, tls_key=key, metrics_port=-1) as server:
        out = py("-m", "service.client", "--target", f"localhost:{server.port}", "--tls-ca", str(cert), "cat")
        assert out.returncode == 0, out.stderr
        assert out.stdout == "cat\tK AE1 T\n"
        plain = py("-m", "service.client", "--target", f"localhost:{server.port}", "--timeout", "2", "cat")
        assert plain.returncode == 1 and plain.stderr.startswith("error: UNAVAILABLE")


# ------------------------------------------------------------------------------------------------ client
def test_client_command_prints_word_tab_phonemes(server):
    target = f"127.0.0.1:{server.port}"
    out = py("-m", "service.client", "--target", target, "cat", "Dog")
    assert out.stdout.splitlines() == ["cat\tK AE1 T", "Dog\tD AO1 G"]
    streamed = py("-m", "service.client", "--target", target, "--stream", stdin="cat\n\ndog\n")
    assert streamed.stdout.splitlines() == ["cat\tK AE1 T", "dog\tD AO1 G"]
    bad = py("-m", "service.client", "--target", target, "c#t")
    assert bad.returncode == 1 and bad.stderr.startswith("error: INVALID_ARGUMENT: inputs[0]")


def test_committed_stubs_match_the_protos():
    proc = py("-m", "service.protogen", "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
