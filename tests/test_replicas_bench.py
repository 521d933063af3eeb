"""bench/replicas.py's pure parts: the target's host and port, and the Generate OK count from a /metrics page."""

from __future__ import annotations

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))

from replicas import generate_ok, host_of


def test_host_of_targets():
    assert host_of("dns:///g2p-replica:50051") == ("g2p-replica", 50051)
    assert host_of("g2p:6000") == ("g2p", 6000)


def test_generate_ok_counts_only_generate_ok():
    page = (
        "# HELP g2p_requests_total RPCs by method and status code\n"
        'g2p_requests_total{code="OK",method="Generate"} 41.0\n'
        'g2p_requests_total{code="UNAVAILABLE",method="Generate"} 2.0\n'
        'g2p_requests_total{code="OK",method="Check"} 7.0\n'
        'g2p_requests_created{code="OK",method="Generate"} 1.7e9\n'
    )
    assert generate_ok(page) == 41.0
