# Developer entry points. Each target creates .venv and installs the package with its
# dev extras on first use, and installs again only when pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

# Size of the benchmark run: `make bench BENCH_EVENTS=20000000 BENCH_ACCOUNTS=200000`.
# The results go to benchmarks/results/<events>.json, and docs/benchmarks.png is
# drawn again from every file there.
BENCH_EVENTS ?= 2000000
BENCH_ACCOUNTS ?= 20000
BENCH_REPEAT ?= 3

.PHONY: install demo test lint docs bench

install: $(INSTALLED)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/healthscore demo

test: $(INSTALLED)
	$(BIN)/pytest

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

docs: $(INSTALLED)
	$(BIN)/python scripts/gen_docs.py

bench: $(INSTALLED)
	$(BIN)/python benchmarks/run.py --events $(BENCH_EVENTS) \
		--accounts $(BENCH_ACCOUNTS) --repeat $(BENCH_REPEAT) \
		--json benchmarks/results/$(BENCH_EVENTS).json
	$(BIN)/python benchmarks/plot.py
