# The serving image: onnxruntime + grpc, no torch. Build context: the repository root.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# jemalloc: python -m service preloads it (allocator=auto, service/allocator.py): its RSS holds flat under mixed
# traffic where glibc's arenas fragment
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libjemalloc2 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# dependencies first: a code change does not reinstall them
COPY docker/requirements-serve.txt /app/docker/requirements-serve.txt
RUN pip install --no-cache-dir -r /app/docker/requirements-serve.txt

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
    G2P_LOG_FORMAT=json
EXPOSE 50051 50052 8000
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 CMD ["python", "/app/docker/healthcheck.py"]
# exec form: the server is PID 1 and receives SIGTERM (graceful drain, exit 0)
ENTRYPOINT ["python", "-m", "service"]
