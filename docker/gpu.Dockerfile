# The GPU serving image: onnxruntime-gpu on a CUDA runtime base; the server starts with the cuda provider
# (and refuses to start where CUDA cannot run). Build context: the repository root.
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEBIAN_FRONTEND=noninteractive

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv libjemalloc2 \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
COPY docker/requirements-gpu.txt /app/docker/requirements-gpu.txt
RUN pip install --no-cache-dir -r /app/docker/requirements-gpu.txt

COPY g2p /app/g2p
COPY service /app/service
COPY docker/healthcheck.py /app/docker/healthcheck.py
COPY models/g2p /models/g2p

RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin g2p
USER 10001

ENV PYTHONPATH=/app \
    G2P_HOST=0.0.0.0 \
    G2P_PORT=50051 \
    G2P_HEALTH_PORT=50052 \
    G2P_METRICS_HOST=0.0.0.0 \
    G2P_METRICS_PORT=8000 \
    G2P_MODEL_REPOSITORY=/models \
    G2P_PROVIDERS=cuda \
    G2P_LOG_FORMAT=json
EXPOSE 50051 50052 8000
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 CMD ["python", "/app/docker/healthcheck.py"]
ENTRYPOINT ["python", "-m", "service"]
