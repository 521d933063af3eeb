#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: the service with the cuda provider, through the wire.
#   bench/gpu_service_check.sh            (WHEELS=dir: install onnxruntime-gpu and the serving wheels from there,
#                                          for machines with no package index; else from the index)
# 1. the bundle on the CUDA provider (bench/gpu_check.py: providers really used, parity vs CPU, speed);
# 2. a server started with G2P_PROVIDERS=cuda answers Generate identically to a CPU server (greedy and beam 5,
#    200 test words) and reports CUDAExecutionProvider in GetModel (tests/test_service.py -m gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${WHEELS:-}" ]]; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/gpu-site "$WHEELS"/*.whl
    export PYTHONPATH=/tmp/gpu-site:$PWD
    PY=python3
else
    python3 -m venv .venv-gpu
    .venv-gpu/bin/pip install -q -e ".[serve]" "onnxruntime-gpu>=1.20,<1.33" pytest pytest-timeout
    .venv-gpu/bin/pip uninstall -q -y onnxruntime  # onnxruntime-gpu provides the same module
    PY=.venv-gpu/bin/python
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" bench/gpu_check.py models/g2p/1 --words 500
"$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_service.py
