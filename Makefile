# One task runner for the project. Every target sets up the virtual environment it needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CKPT   ?= checkpoints/cmudict-default/best.pt
BEAM   ?= 5

.PHONY: help install serve evaluate test lint typecheck unit export train clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[train,export,dev]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv with the training, export and development dependencies

serve: $(STAMP)  ## main job (until the service lands): evaluate the shipped model on the 12k test words
	$(PY) -m training.evaluate --checkpoint $(CKPT) --beam 1 $(BEAM)

evaluate: serve  ## same as serve

test: lint typecheck unit  ## everything CI runs: lint, type check, unit tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(PY) -m pytest

export: $(STAMP)  ## export the shipped checkpoint to a parity-gated bundle under models/g2p-cmudict/
	$(PY) -m export --checkpoint $(CKPT) --name g2p-cmudict

train: $(STAMP)  ## reproduce the shipped model (about 2 hours on 2 CPU cores)
	$(PY) -m training.train --out checkpoints/cmudict-default

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
