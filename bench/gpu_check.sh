#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: install onnxruntime-gpu (from wheels in $WHEELS if set, for machines with no
# network, else from the package index) into its own environment, then check a bundle on the CUDA provider.
#   bench/gpu_check.sh models/g2p/1 [--words 500] [--out report.json]
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=${1:?usage: bench/gpu_check.sh <bundle dir> [gpu_check.py options]}
shift
if [[ -n "${WHEELS:-}" ]]; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/gpu-site "$WHEELS"/*.whl
    export PYTHONPATH=/tmp/gpu-site
    PY=python3
else
    python3 -m venv .venv-gpu
    .venv-gpu/bin/pip install -q "onnxruntime-gpu>=1.20,<1.33" "numpy>=1.26,<3" "tokenizers>=0.20,<0.24" \
        "rapidfuzz>=3.6,<4" "pydantic>=2.7,<3"
    PY=.venv-gpu/bin/python
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec "$PY" bench/gpu_check.py "$BUNDLE" "$@"
