"""The model repository: failed loads end FAILED once, versions are immutable snapshots, unloads free resources."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import ROOT
from onnxruntime.capi.onnxruntime_pybind11_state import Fail

from g2p.decoding import DecodeOptions
from service import repository
from service.repository import FAILED, READY, UNLOADED, ModelNotFound, ModelRepository
from service.runtime import CPU
from service.settings import load_settings

SHIPPED_BUNDLE = ROOT / "models" / "g2p" / "1"


def fake_version(root: Path, version: int) -> Path:
    """A version directory the scan picks up (its loader is replaced in these tests)."""
    path = root / "g2p" / str(version)
    path.mkdir(parents=True)
    (path / "manifest.json").write_text("{}")
    return path


def test_an_onnxruntime_error_while_loading_fails_the_version_once(tmp_path, monkeypatch):
    path = fake_version(tmp_path, 1)
    calls: list[Path] = []

    def load_version(p, settings, providers):
        calls.append(p)
        raise Fail("[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Add node")

    monkeypatch.setattr(repository, "load_version", load_version)
    repo = ModelRepository(load_settings(model_repository=tmp_path), [CPU])
    assert repo.scan()
    (rec,) = repo.records()
    assert rec.state == FAILED
    assert rec.error.startswith("Fail: [ONNXRuntimeError]") and rec.model is None
    assert not repo.scan() and not repo.scan()  # the same files: no reload loop
    assert len(calls) == 1 and repo.records()[0].state == FAILED
    manifest = path / "manifest.json"
    manifest.write_text('{"changed": true}')
    os.utime(manifest, ns=(0, 0))
    assert repo.scan()  # changed files are tried again
    assert len(calls) == 2


def test_a_failed_start_up_names_the_reason(tmp_path, monkeypatch):
    fake_version(tmp_path, 1)

    def load_version(p, settings, providers):
        raise RuntimeError("warm-up exploded")

    monkeypatch.setattr(repository, "load_version", load_version)
    repo = ModelRepository(load_settings(model_repository=tmp_path), [CPU])
    with pytest.raises(repository.BundleError, match="version 1: RuntimeError: warm-up exploded"):
        repo.load_initial()
    assert [r.state for r in repo.records()] == [FAILED]
    assert READY not in {r.state for r in repo.records()}


@pytest.mark.skipif(not SHIPPED_BUNDLE.is_dir(), reason="the shipped bundle models/g2p/1 is missing")
def test_a_version_a_request_holds_outlives_its_unload_then_stops_its_decode_threads(tmp_path):
    shutil.copytree(SHIPPED_BUNDLE, tmp_path / "g2p" / "1")
    settings = load_settings(model_repository=tmp_path, workers=2, intra_op_threads=1, warmup_runs=1)
    repo = ModelRepository(settings, [CPU])
    repo.load_initial()
    before = repo.records()
    model = repo.get("g2p")  # what a request takes, once
    shutil.rmtree(tmp_path / "g2p" / "1")
    assert repo.scan()
    (after,) = repo.records()
    assert (after.state, after.model) == (UNLOADED, None)
    assert (before[0].state, before[0].model) == (READY, model)  # a snapshot a reader holds never changes
    with pytest.raises(ModelNotFound):
        repo.get("g2p")
    words = ["hello", "world", "speech"]
    out = model.transcribe(words, DecodeOptions(max_len=model.max_output_tokens), batch_size=1)  # the pool at work
    assert [" ".join(r[0].phonemes) for r in out] == [model.extra["smoke"][w] for w in words]
    parallel = model.parallel
    assert not parallel.closed
    del model, before
    assert parallel.closed  # the last holder let go: the unloaded version's decode threads stop


@pytest.mark.parametrize("scheduling", ["batch", "continuous"])
def test_the_continuous_batching_graphs_are_opened_only_for_continuous_scheduling(scheduling):
    """Each ONNX Runtime session holds its own copy of the weights it reads: a server that schedules by batch
    never runs rows_step or prefill, so it does not open them (26 MB less RSS at start with the shipped bundle)."""
    from g2p.bundle import PREFILL, ROWS_STEP
    from service.runtime import load_version

    settings = load_settings(model_repository=ROOT / "models", scheduling=scheduling, workers=1, warmup_runs=1)
    model = load_version(SHIPPED_BUNDLE, settings, [CPU])
    try:
        opened = {ROWS_STEP, PREFILL} & set(model.backend.sessions)
        assert opened == ({ROWS_STEP, PREFILL} if scheduling == "continuous" else set())
        assert model.rows_capable == (scheduling == "continuous")
    finally:
        model.parallel.close()
