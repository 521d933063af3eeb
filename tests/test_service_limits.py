"""Issue 13 (reliability), continued: every path bounded (the KServe encoder model), batch-invariant answers,
memory bounded by design, mutual TLS. Real servers on port 0, waited on through health."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
from conftest import ROOT
from service_helpers import SHIPPED_BUNDLE, running_server, server_process

from g2p.bundle import BundleError, verify_bundle
from g2p.decoding import DecodeOptions
from g2p.lexicon import read_test_split
from g2p.ort_backend import CPU
from service.api.g2p.v1 import g2p_pb2 as pb
from service.api.g2p.v1 import g2p_pb2_grpc as pb_grpc
from service.api.inference import grpc_service_pb2 as v2
from service.api.inference import grpc_service_pb2_grpc as v2_grpc
from service.client import G2PClient
from service.runtime import ModelVersion, choose_variant, load_version
from service.settings import SettingsError, load_settings, memory_limit

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
    and the size); the server's bound on requests (RESOURCE_EXHAUSTED, refused at gRPC's door before computing; the
    engine's own bound on tensor jobs: tests/test_engine.py) and the deadline (DEADLINE_EXCEEDED, dropped and never
    computed) apply to it as to every other request."""
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
            assert (1, 5) not in encoded
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
    the same tokens alone and in a batch of 32 (mixed lengths, greedy and beam 5). The shipped int8 (fixed
    activation scales) is among them; an int8 its manifest does not mark batch_invariant (the dynamic quantisation
    of older bundles: one activation scale per batch tensor) is refused with the reason, and ``auto`` never picks
    int8."""
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
    assert {"fused", "fp32", "int8"} <= set(served), refused
    assert (
        choose_variant("auto", manifest, gpu=False) == "fused" and choose_variant("auto", manifest, gpu=True) == "fp32"
    )
    older = manifest.model_copy(deep=True)
    older.variants["int8"].details.pop("batch_invariant")
    with pytest.raises(BundleError, match=r"'int8' is not served .*depends on the other words batched with it"):
        choose_variant("int8", older, gpu=False)


# ------------------------------------------------------------------------------------------------ #12
def _memory_mib(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (the peak) of a process, in MiB."""
    fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))  # noqa: SIM115
    return {k: int(fields[k].split()[0]) // 1024 for k in ("VmRSS", "VmHWM")}


@pytest.mark.slow
@pytest.mark.parametrize("scheduling", ["batch", "continuous"])
def test_a_burst_of_wide_beams_stays_within_the_memory_budget(scheduling):
    """Two concurrent requests of the 128 longest test words at beam 16 (unbounded: 3.3 GB peak, 2.7 GB left after):
    the server in its own process, with a 700 MiB memory budget, peaks under the budget and comes back within 1.2x
    of its warm RSS (within 5 s: glibc returns the large blocks at once, jemalloc within about a second); the
    answers are those of an unbounded run (the first words, decoded alone). Both schedulings: per batch (chunks
    within the share) and continuous (beam rows within the share)."""
    words = sorted(read_test_split(ROOT / "data" / "cmudict-0.7b.test"), key=lambda w: (-len(w), w))[:128]
    budget = 700
    with (
        server_process({"G2P_MEMORY_BUDGET_MB": str(budget), "G2P_SCHEDULING": scheduling}) as (proc, port),
        grpc.insecure_channel(f"127.0.0.1:{port}") as ch,
    ):
        stub = pb_grpc.G2PStub(ch)
        alone = [
            stub.Generate(pb.GenerateRequest(inputs=[w], options=pb.GenerateOptions(beam_size=16)), timeout=60)
            .outputs[0]
            .hypotheses[0]
            .text
            for w in words[:3]
        ]
        warm = _memory_mib(proc.pid)
        request = pb.GenerateRequest(inputs=words, options=pb.GenerateOptions(beam_size=16))
        burst = [stub.Generate.future(request, timeout=120) for _ in range(2)]
        answers = [[o.hypotheses[0].text for o in f.result().outputs] for f in burst]
        after = _memory_mib(proc.pid)
        settle = time.monotonic() + 5  # jemalloc (the default where installed) returns freed pages after 1 s
        while after["VmRSS"] > 1.2 * warm["VmRSS"] and time.monotonic() < settle:
            time.sleep(0.25)
            after = _memory_mib(proc.pid)
    assert after["VmHWM"] < budget, (warm, after)
    assert after["VmRSS"] <= 1.2 * warm["VmRSS"], (warm, after)
    assert answers[0] == answers[1] and answers[0][:3] == alone


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"memory.max": "1073741824\n"}, 1 << 30),
        ({"memory.max": "max\n"}, None),
        ({"memory/memory.limit_in_bytes": "536870912\n"}, 1 << 29),  # cgroup v1
        ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, None),  # v1 without a limit
        ({}, None),
    ],
)
def test_the_memory_budget_defaults_to_the_cgroup_limit(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert memory_limit(tmp_path) == expected
    assert load_settings(memory_budget_mb=512).memory_budget() == 512 << 20
    assert load_settings().memory_budget() > 0


def test_a_memory_budget_too_small_for_one_request_stops_start_up():
    proc = subprocess.run(
        [sys.executable, "-m", "service"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "G2P_PORT": "0", "G2P_METRICS_PORT": "-1", "G2P_MEMORY_BUDGET_MB": "220",
             "G2P_WORKERS": "2", "G2P_INTRA_OP_THREADS": "1", "G2P_MODEL_REPOSITORY": str(ROOT / "models")},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "memory_budget_mb (G2P_MEMORY_BUDGET_MB): a budget of 220 MiB" in proc.stderr
    assert "one word of 48 characters at beam 16 needs" in proc.stderr


# ------------------------------------------------------------------------------------------------ #7
def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _ca(d, name: str) -> tuple:
    cert, key = d / f"{name}.pem", d / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
             str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}")  # fmt: skip
    return cert, key


def _signed(d, name: str, ca: tuple, ext: str) -> tuple:
    """A certificate for ``name`` signed by ``ca`` (cert, key), with the extensions ``ext``."""
    cert, key, csr, extfile = d / f"{name}.pem", d / f"{name}.key", d / f"{name}.csr", d / f"{name}.ext"
    extfile.write_text(ext + "\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key),
             "-out", str(csr), "-subj", f"/CN={name}")  # fmt: skip
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial", "-out",
             str(cert), "-days", "1", "-extfile", str(extfile))  # fmt: skip
    return cert, key


def _healthcheck(port: int, **env: object) -> subprocess.CompletedProcess[str]:
    """docker/healthcheck.py as the image runs it: the server's own G2P_* environment, plus ``env``."""
    full = {"PATH": os.environ["PATH"], "G2P_PORT": str(port)} | {k: str(v) for k, v in env.items()}
    return subprocess.run([sys.executable, str(ROOT / "docker" / "healthcheck.py")], env=full, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make certificates")
def test_mutual_tls_refuses_a_client_without_a_certificate_and_accepts_one_with(tmp_path):
    """tls_client_ca: a client with a certificate signed by that CA is served (library, command line, the Docker
    healthcheck); one without a certificate, or with one signed by another CA, is refused. Reflection off."""
    server_ca, client_ca, other_ca = _ca(tmp_path, "server-ca"), _ca(tmp_path, "client-ca"), _ca(tmp_path, "other-ca")
    server = _signed(tmp_path, "localhost", server_ca, "subjectAltName=DNS:localhost")
    client = _signed(tmp_path, "client", client_ca, "extendedKeyUsage=clientAuth")
    rogue = _signed(tmp_path, "rogue", other_ca, "extendedKeyUsage=clientAuth")
    settings = {"tls_cert": server[0], "tls_key": server[1], "tls_client_ca": client_ca[0]}
    with running_server(tls_ca=server_ca[0], client_tls=client, metrics_port=-1, reflection=False, **settings) as srv:
        target = f"localhost:{srv.port}"
        with G2PClient(target, 10, server_ca[0], *client) as c:
            assert c.transcribe(["cat"]) == [["K AE1 T"]]
            from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
                ProtoReflectionDescriptorDatabase,
            )

            with pytest.raises(grpc.RpcError) as off:
                ProtoReflectionDescriptorDatabase(c.channel).get_services()
            assert off.value.code() == grpc.StatusCode.UNIMPLEMENTED
        for who in (None, rogue):
            with G2PClient(target, 3, server_ca[0], *(who or (None, None))) as c, pytest.raises(grpc.RpcError) as err:
                c.transcribe(["cat"])
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, who
        cli = [sys.executable, "-m", "service.client", "--target", target, "--tls-ca", str(server_ca[0]), "cat"]
        ok = subprocess.run([*cli, "--tls-cert", str(client[0]), "--tls-key", str(client[1])], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert ok.returncode == 0 and ok.stdout == "cat\tK AE1 T\n", ok.stderr
        refused = subprocess.run(
            [*cli, "--timeout", "3"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
        )
        assert refused.returncode == 1 and refused.stderr.startswith("error: UNAVAILABLE")
        env = {"G2P_TLS_CERT": server[0], "G2P_TLS_CLIENT_CA": client_ca[0], "G2P_HEALTHCHECK_CA": server_ca[0]}
        healthy = _healthcheck(srv.port, **env, G2P_HEALTHCHECK_CERT=client[0], G2P_HEALTHCHECK_KEY=client[1])
        assert healthy.returncode == 0, healthy.stderr
        unhealthy = _healthcheck(srv.port, **env)
        assert unhealthy.returncode == 1 and "G2P_HEALTHCHECK_CERT" in unhealthy.stderr


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_the_docker_healthcheck_speaks_tls_when_the_server_does(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
             str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext",
             "subjectAltName=DNS:localhost")  # fmt: skip
    with running_server(tls_cert=cert, tls_key=key, metrics_port=-1, health_port=0) as srv:
        done = _healthcheck(srv.port, G2P_TLS_CERT=cert, G2P_TLS_KEY=key)  # the image's environment
        assert done.returncode == 0, done.stderr
        # with the images' health side port: plaintext there, beside the TLS main port
        side = _healthcheck(srv.port, G2P_TLS_CERT=cert, G2P_TLS_KEY=key, G2P_HEALTH_PORT=srv.health_port)
        assert side.returncode == 0, side.stderr
        with grpc.insecure_channel(f"127.0.0.1:{srv.health_port}") as ch, pytest.raises(grpc.RpcError) as only:
            pb_grpc.G2PStub(ch).Generate(pb.GenerateRequest(inputs=["cat"]), timeout=5)
        assert only.value.code() == grpc.StatusCode.UNIMPLEMENTED  # the side port answers health only
    with running_server(metrics_port=-1) as srv:
        done = _healthcheck(srv.port)
        assert done.returncode == 0, done.stderr
