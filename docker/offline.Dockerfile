# The offline image: training and export (torch CPU build). Build context: the repository root.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY docker/requirements-offline.txt /app/docker/requirements-offline.txt
RUN pip install --no-cache-dir -r /app/docker/requirements-offline.txt

# torch 2.13.0, CPU build: from a local wheel directory when one is given (TORCH_WHEELS, inside the build
# context, e.g. docker/wheels holding torch-2.13.0+cpu-*.whl), else from the PyTorch CPU index, so the image
# carries no CUDA libraries it cannot use.
ARG TORCH_WHEELS=docker/wheels
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
COPY ${TORCH_WHEELS}/ /tmp/torch-wheels/
RUN if ls /tmp/torch-wheels/torch-2.13.0*.whl >/dev/null 2>&1; then \
        pip install --no-cache-dir /tmp/torch-wheels/torch-2.13.0*.whl; \
    else \
        pip install --no-cache-dir --index-url "${TORCH_INDEX}" torch==2.13.0; \
    fi \
    && rm -rf /tmp/torch-wheels

COPY g2p /app/g2p
COPY training /app/training
COPY export /app/export
COPY data /app/data

RUN useradd --system --uid 10001 --create-home --shell /usr/sbin/nologin g2p
USER 10001
# Compose runs export and train as the invoking user (any uid, one this image does not know): HOME and the caches
# (matplotlib, torch) in /tmp, writable by every uid; USER for tools that ask who runs them (getpass).
ENV PYTHONPATH=/app \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/.cache/matplotlib \
    USER=g2p
# python -m <module>: `export --checkpoint ...`, `training.train --out ...`, `training.evaluate ...`
ENTRYPOINT ["python", "-m"]
CMD ["export", "--help"]
