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

# The whole load sweep (1, 10, 20, 40, 60 callers on real speech) plus the endpointing checks: about 7 minutes.
# A shorter run: make bench BENCH_ARGS="--levels 1,10 --no-extras".
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python -m bench --out bench/results.json $(BENCH_ARGS)

serve: $(STAMP)
	$(BIN)/ivr serve --insecure-dev

flows-test: $(STAMP)
	$(BIN)/ivr flows validate && $(BIN)/ivr flows test

clean:
	rm -rf $(VENV) data .pytest_cache
