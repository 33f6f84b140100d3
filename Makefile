# profile-engine: every set-up step lives here so that a fresh clone needs only
# Python 3.11+, Java 17+ and Maven. `make help` lists the targets.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
CLI := $(BIN)/profile-engine
# Re-install only when the project's metadata changes.
STAMP := $(VENV)/.install-stamp
PYTEST_ARGS ?=
# Test processes (pytest-xdist); each starts its own broker when a test needs one.
TEST_WORKERS ?= 2
DEMO_DIR := .cache
BENCHMARKS := benchmarks/bench_publish.py benchmarks/bench_fold.py \
              benchmarks/bench_queries.py benchmarks/bench_import.py benchmarks/bench_scale.py \
              benchmarks/bench_serve.py benchmarks/bench_validate.py
# `make bench` runs bench_scale.py at sizes for a quick run; with no arguments it runs the
# issue's sizes (500000,2000000,10000000; the 10M size needs about 7 GB of scratch space).
BENCH_SCALE_ARGS ?= --events 50000,200000
# DuckDB 1.x clients the storage-compatibility test opens a fresh projection with.
DUCKDB_CLIENTS := 1.4.4 1.5.6
DUCKDB_CLIENTS_DIR := .cache/duckdb-clients

# The first interpreter on PATH that is Python 3.11 or newer (override with PYTHON=...).
PYTHON ?= $(shell for candidate in python3.13 python3.12 python3.11 python3; do \
	command -v $$candidate >/dev/null 2>&1 && \
	$$candidate -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && \
	{ echo $$candidate; break; }; done)

.PHONY: help install kafka broker-start broker-stop broker-status test lint format bench demo \
        clean clean-all browser duckdb-clients serve

help: ## List the targets with what they do
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' \
		$(MAKEFILE_LIST)

install: $(STAMP) ## Create .venv (Python 3.11+) and install the project with test and dev extras

$(STAMP): pyproject.toml
	@if [ ! -x $(PY) ]; then \
		if [ -z "$(PYTHON)" ]; then \
			echo "error: Python 3.11 or newer is required; none found on PATH" >&2; exit 1; \
		fi; \
		echo "creating $(VENV) with $(PYTHON)"; \
		$(PYTHON) -m venv $(VENV) || exit 1; \
	fi
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
		echo "error: $(VENV) runs Python < 3.11; remove it and run make install" >&2; exit 1; }
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,dev]'
	@touch $(STAMP)

kafka: install ## Fetch the Apache Kafka jars with Maven into ~/.cache/profile-engine (once)
	$(CLI) broker fetch

broker-start: kafka ## Start the local Kafka broker (data in .kafka/, port 9092) and wait for it
	$(CLI) broker start

broker-stop: ## Stop the local Kafka broker
	@if [ -x $(CLI) ]; then $(CLI) broker stop; else echo "nothing to stop: not installed"; fi

broker-status: install ## Exit 0 only when the local broker runs and answers
	$(CLI) broker status

browser: ## Install Debian's Chromium for the browser tests (once; apt-get, as root)
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium (Debian package) for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
			>/dev/null || exit 1; \
	else \
		echo "note: chromium is not installed and this is not root: the browser tests will" \
			"be skipped (apt-get install chromium)" >&2; \
	fi

duckdb-clients: install ## Virtualenvs with DuckDB 1.x clients for the storage-compatibility test
	@for version in $(DUCKDB_CLIENTS); do \
		venv=$(DUCKDB_CLIENTS_DIR)/$$version; \
		if [ ! -x $$venv/bin/python ]; then \
			echo "creating $$venv (duckdb==$$version)"; \
			$(PY) -m venv $$venv && \
			$$venv/bin/pip install --quiet --disable-pip-version-check duckdb==$$version \
				|| { rm -rf $$venv; exit 1; }; \
		fi; \
	done

test: install kafka browser duckdb-clients ## Run the test suite; pytest starts its own real Kafka broker
	@$(BIN)/pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=25 $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; \
	exit $$status

lint: install ## ruff check, ruff format --check and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install ## Format the code and apply ruff's safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install broker-start ## Run each benchmark script in benchmarks/ that exists
	@for script in $(BENCHMARKS); do \
		if [ -f $$script ]; then \
			args=""; [ $$script = benchmarks/bench_scale.py ] && args="$(BENCH_SCALE_ARGS)"; \
			echo "== $$script $$args"; $(PY) $$script $$args || exit 1; \
		else \
			echo "== $$script: not present, skipped"; \
		fi; \
	done

serve: install broker-start ## Serve the demo projection at http://127.0.0.1:8321 (run make demo first)
	$(CLI) serve --db $(DEMO_DIR)/demo.duckdb

demo: install broker-start ## Publish a realistic sample stream, fold it and print reachability
	@mkdir -p $(DEMO_DIR)
	$(CLI) topics create
	$(CLI) generate --events 20000 --seed 7 --out $(DEMO_DIR)/demo-events.jsonl
	@# The sample holds a few deliberately invalid lines: publish reports them, keeps them in
	@# a rejects file and exits 1; anything worse stops the demo.
	$(CLI) publish $(DEMO_DIR)/demo-events.jsonl || [ $$? -eq 1 ]
	$(CLI) consume --db $(DEMO_DIR)/demo.duckdb --once
	$(CLI) counts --db $(DEMO_DIR)/demo.duckdb --month 2026-02 --format table

clean: ## Remove caches and demo outputs (keeps .venv, the broker and its data)
	rm -rf $(DEMO_DIR) artifacts .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -path ./$(VENV) -prune -o -name '*.egg-info' -type d -prune -exec rm -rf {} +

clean-all: broker-stop clean ## Also stop the broker and remove .kafka/ and .venv/
	rm -rf .kafka $(VENV)
