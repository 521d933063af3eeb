"""The allocator setting: python -m service re-executes itself on jemalloc (auto: where installed)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT

from service import allocator
from service.allocator import AllocatorError, preload_env
from service.settings import SettingsError, load_settings


@pytest.fixture
def glibc_process(monkeypatch):
    """This process as if jemalloc were not mapped (a test run may itself be preloaded)."""
    monkeypatch.setattr(allocator, "active", lambda: "system")


def test_active_reads_the_process_maps(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert allocator.active(maps) == "system"
    maps.write_text(maps.read_text() + "7f02-7f03 r-xp 0 08:01 2 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n")
    assert allocator.active(maps) == "jemalloc"
    assert allocator.active(tmp_path / "absent") == "system"


def test_auto_and_jemalloc_preload_the_installed_library(glibc_process, monkeypatch):
    monkeypatch.setattr(allocator, "jemalloc_library", lambda: "libjemalloc.so.2")
    for choice in ("auto", "jemalloc"):
        env = preload_env(choice, {"PATH": "/bin", "LD_PRELOAD": "libother.so"})
        assert env is not None
        assert env["LD_PRELOAD"] == "libjemalloc.so.2 libother.so"  # the user's preload kept, after ours
        assert env["MALLOC_CONF"] == allocator.MALLOC_CONF
        assert env["PATH"] == "/bin"
    own = preload_env("auto", {"MALLOC_CONF": "dirty_decay_ms:0"})
    assert own is not None and own["MALLOC_CONF"] == "dirty_decay_ms:0"  # the operator's options win
    assert preload_env("system", {}) is None


def test_without_jemalloc_auto_falls_back_and_jemalloc_refuses(glibc_process, monkeypatch):
    monkeypatch.setattr(allocator, "jemalloc_library", lambda: None)
    assert preload_env("auto", {}) is None
    with pytest.raises(AllocatorError, match=r"allocator=jemalloc \(G2P_ALLOCATOR\): libjemalloc is not installed"):
        preload_env("jemalloc", {})


def test_a_failed_preload_never_loops(glibc_process, monkeypatch):
    """Re-executed once and still on glibc (the loader ignored the preload): auto goes on, jemalloc refuses."""
    monkeypatch.setattr(allocator, "jemalloc_library", lambda: "libjemalloc.so.2")
    reexecuted = {"G2P_ALLOCATOR_REEXEC": "1"}
    assert preload_env("auto", reexecuted) is None
    with pytest.raises(AllocatorError):
        preload_env("jemalloc", reexecuted)


def test_already_on_jemalloc_needs_no_reexec(monkeypatch):
    monkeypatch.setattr(allocator, "active", lambda: "jemalloc")
    assert preload_env("jemalloc", {}) is None


def test_the_setting_is_validated():
    assert load_settings().allocator == "auto"
    with pytest.raises(SettingsError, match="allocator"):
        load_settings(allocator="tcmalloc")


@pytest.mark.skipif(allocator.jemalloc_library() is None, reason="jemalloc (libjemalloc2) is not installed")
def test_rpc_threads_hold_no_thread_cache_except_while_decoding_inline():
    """On jemalloc (preloaded as python -m service does): a thread that ran the RPC pool's initializer has no cache,
    gets one for an inline decode and hands it back after; other threads (the engine's workers) keep theirs."""
    code = """
import threading
from concurrent.futures import ThreadPoolExecutor
from service import allocator
seen = []
def rpc():
    seen.append(allocator.thread_cache_enabled())
    with allocator.thread_cache():
        bytearray(1 << 16)
        seen.append(allocator.thread_cache_enabled())
    seen.append(allocator.thread_cache_enabled())
with ThreadPoolExecutor(1, initializer=allocator.disable_thread_cache) as pool:
    pool.submit(rpc).result()
worker = threading.Thread(target=lambda: seen.append(allocator.thread_cache_enabled()))
worker.start(); worker.join()
print(allocator.active(), seen)
"""
    env = os.environ | {"LD_PRELOAD": str(allocator.jemalloc_library())}
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    assert proc.stdout.split() == ["jemalloc", "[False,", "True,", "False,", "True]"]


def test_on_glibc_the_thread_cache_calls_do_nothing():
    code = (
        "from service import allocator as a\na.disable_thread_cache()\n"
        "with a.thread_cache(): print(a.active(), a.thread_cache_enabled())"
    )
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    assert proc.stdout.split() == ["system", "None"]
