"""Service settings: the CPU quota that sets the default thread count, and field-named errors."""

from __future__ import annotations

import os

import pytest

from service.settings import SettingsError, cpu_quota, load_settings


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "150000 100000\n"}, 1),  # 1.5 CPUs -> 1 thread
        ({"cpu.max": "100000 100000\n"}, 1),
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # cgroup v1, half a CPU
    ],
)
def test_cpu_quota_follows_the_cgroup_limit(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cpu_quota(tmp_path) == expected


def test_cpu_quota_without_a_limit_is_the_affinity_mask(tmp_path):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_quota(tmp_path) == len(os.sched_getaffinity(0))
    assert cpu_quota(tmp_path / "missing") == len(os.sched_getaffinity(0))


def test_worker_and_thread_defaults():
    s = load_settings()
    assert s.decode_workers(on_gpu=True) == 1
    assert 1 <= s.decode_workers() <= 8
    assert s.threads() >= 1
    assert load_settings(workers=3, intra_op_threads=2).threads() == 2


def test_settings_errors_name_the_field():
    with pytest.raises(SettingsError, match=r"max_queue_size \(G2P_MAX_QUEUE_SIZE\)"):
        load_settings(max_queue_size=0)
    with pytest.raises(SettingsError, match=r"default_beam_size .* exceeds max_beam_size"):
        load_settings(default_beam_size=20, max_beam_size=16)


def test_rpc_threads_cover_what_grpc_admits():
    """Every admitted RPC (at most max_queue_size, gRPC's limit) holds a thread: with fewer threads, requests would
    wait for one unseen."""
    assert load_settings().rpc_threads() == 256  # derived from max_queue_size by default
    assert load_settings(max_queue_size=8).rpc_threads() == 8
    assert load_settings(grpc_workers=300).rpc_threads() == 300
    with pytest.raises(SettingsError, match=r"grpc_workers \(G2P_GRPC_WORKERS=64\) must be at least max_queue_size "
                       r"\(G2P_MAX_QUEUE_SIZE=256\), gRPC's limit"):  # fmt: skip
        load_settings(grpc_workers=64)
