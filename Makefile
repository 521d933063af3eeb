# One task runner for the project. Every target sets up the virtual environment it needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CKPT   ?= checkpoints/cmudict-default/best.pt
BEAM   ?= 5

.PHONY: help install serve client evaluate protos test lint typecheck compose-check compose-smoke bench bench-quick loadgen loadtest unit export train clean soak

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[train,export,serve,bench,dev]"
	touch $(STAMP)

# the serving environment: onnxruntime + grpc, never torch
SERVE_VENV  := .venv-serve
SERVE_PY    := $(SERVE_VENV)/bin/python
SERVE_STAMP := $(SERVE_VENV)/.installed

$(SERVE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_PY) -m pip install --quiet --upgrade pip
	$(SERVE_PY) -m pip install --quiet -e ".[serve]"
	touch $(SERVE_STAMP)

install: $(STAMP)  ## create .venv with the training, export, serving and development dependencies

serve: $(SERVE_STAMP)  ## main job: the gRPC server on the shipped bundle at 127.0.0.1:50051 (G2P_* settings)
	$(SERVE_PY) -m service

client: $(SERVE_STAMP)  ## call the running server: make client TEXT="Hello, world!" (or WORDS="hello world")
	$(SERVE_PY) -m service.client $(if $(TEXT),--text "$(TEXT)",$(WORDS))

evaluate: $(STAMP)  ## evaluate the shipped checkpoint on the 12k test words (greedy and beam)
	$(PY) -m training.evaluate --checkpoint $(CKPT) --beam 1 $(BEAM)

protos: $(STAMP)  ## regenerate service/api/ from protos/
	$(PY) -m service.protogen

test: lint typecheck compose-check k8s-check unit bench-quick  ## everything CI runs: lint, types, compose and k8s checks, tests, bench smoke

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

compose-check: $(STAMP)  ## docker-compose.yml (every profile) and the Dockerfiles, without a Docker engine
	for p in "" export train gpu client replicas; do $(VENV)/bin/docker-compose $${p:+--profile $$p} config -q || exit 1; done
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
	$(VENV)/bin/hadolint docker/*.Dockerfile

.PHONY: k8s-check
k8s-check: $(STAMP)  ## deploy/k8s: render every kustomize overlay, validate it against the Kubernetes schemas
	deploy/k8s/validate.sh

bench: $(STAMP) loadgen  ## engines side by side (PyTorch, ONNX Runtime, CTranslate2, g2p_en) + the service; bench/results/
	$(PY) bench/engines.py
	$(PY) bench/service_bench.py
	$(PY) bench/service_bench.py --server-cpus 0 --client-cpus 1 --out bench/results/service_split
	$(PY) bench/ort_profile.py
	$(PY) bench/text_bench.py
	$(PY) bench/scheduling.py

bench-quick: $(STAMP) loadgen  ## benchmark smoke (CI): every engine and the service run on a few words and agree
	$(PY) bench/engines.py --quick
	$(PY) bench/service_bench.py --quick
	$(PY) bench/text_bench.py --quick
	$(PY) bench/reliability.py all --quick
	$(PY) bench/scheduling.py --quick
	if [ "$$(nproc)" -ge 2 ] && [ -x bench/loadgen/build/loadgen ]; then \
		$(PY) bench/service_bench.py --quick --server-cpus 0 --client-cpus 1; \
	else echo "bench-quick: no second CPU or no C++ load generator: the split service run is skipped"; fi

# Debian's gRPC C++ packages, apt-get as root when missing; where that fails, its tests skip and the service bench
# says so and uses its Python load generator.
TARGET  ?= 127.0.0.1:50051
CLIENTS ?= 32
LOAD_WORDS ?= data/cmudict-0.7b.test
LOAD_ARGS ?=

loadtest: loadgen  ## load a running server: make loadtest TARGET=host:port CLIENTS=32 LOAD_WORDS=file LOAD_ARGS="--beam 5"
	bench/loadgen/build/loadgen --target $(TARGET) --clients $(CLIENTS) --words $(LOAD_WORDS) --summary $(LOAD_ARGS)

loadgen:  ## build the service bench's C++ load generator (optional: where it cannot, the bench uses Python's)
	-bench/loadgen/build.sh --install

soak: $(STAMP)  ## reliability suites against the real server: overload, reload under load, 10-min soak (~13 min)
	$(PY) bench/reliability.py all

compose-smoke:  ## the real run: up --build --wait, client, re-export, down (docker/compose-smoke.sh)
	docker/compose-smoke.sh

.PHONY: replicas-smoke
replicas-smoke:  ## real runs: 3 replicas, one stopped under load; SIGKILL + restart policy (docker/replicas-smoke.sh)
	docker/replicas-smoke.sh

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP) loadgen
	$(PY) -m pytest

export: $(STAMP)  ## export the shipped checkpoint to a parity-gated bundle under models/g2p/
	$(PY) -m export --checkpoint $(CKPT) --name g2p

RUN ?= runs/cmudict-default
# The shipped recipe in one run: the shipped checkpoint is this recipe's 52 epochs, trained as 30 + 3 resumes of the
# same run (checkpoints/cmudict-default/README.md); a resume continues optimiser, schedule and RNG, so one run of 52
# epochs is the same training. An existing RUN is refused (pass RUN=... or resume it: --resume RUN/last.pt).
train: $(STAMP)  ## train the shipped recipe into RUN=runs/cmudict-default (52 epochs, about 3 hours on 2 CPU cores)
	$(PY) -m training.train --out $(RUN) --epochs 52

clean:
	rm -rf $(VENV) $(SERVE_VENV) .pytest_cache .mypy_cache .ruff_cache
