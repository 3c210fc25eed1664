# The two commands a newcomer needs: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install system-deps tools lint demo demo-stop cluster test types docs web screenshot bench-export bench-parts bench-memory bench-rpc bench-subscribers

# `make install` only builds .venv (with the project, editable, and its test tools).
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

# Debian packages the servers need; only installed when missing (the machine runs as root).
system-deps:
	@command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	@command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
	@command -v pg_ctl >/dev/null || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@command -v zstd >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zstd >/dev/null; }

# Test servers from npm, in .tools/: Azurite (Azure's blob emulator) for tests/scheduled. Installed once
# (devstack.servers.azurite_blob_binary, which the test fixture also calls when it is missing).
tools: install system-deps
	@$(BIN)/python -c 'from devstack.servers import azurite_blob_binary; azurite_blob_binary()'

# DEMO_TRACES: how many traces the first run seeds (`make demo DEMO_TRACES=1000000` for a big project);
# DEMO_WORKERS: how many `batch-export worker`s it starts (the parts of a large export run at once).
DEMO_TRACES ?= 5000
DEMO_WORKERS ?= 2
demo: install system-deps
	$(BIN)/batch-export demo --traces $(DEMO_TRACES) --workers $(DEMO_WORKERS)

demo-stop: install
	$(BIN)/batch-export demo --stop

# The service across Linux network namespaces (needs root): a data host, two API hosts, two worker hosts
# on a private bridge; one export runs through them, then everything is removed (CLUSTER_TRACES to seed).
CLUSTER_TRACES ?= 2000
cluster: install system-deps
	$(BIN)/batch-export cluster --traces $(CLUSTER_TRACES)

# pytest starts its own Postgres and Redis on free ports. Its exit code passes through unchanged,
# so "no tests collected" (5) fails the build like any other failure.
test: install system-deps tools lint
	$(BIN)/python -m pytest

# The gates before the tests: lint and formatting (ruff), then types (mypy, configured in pyproject.toml).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Regenerate clients/ts/src/types.ts and clients/ts/openrpc.json from the procedures; commit the result
# (tests/ts fails while they are stale).
types: install
	cd clients/ts && npm ci --no-audit --no-fund
	$(BIN)/batch-export codegen

# Regenerate docs/API.md and docs/COLUMNS.md from the procedures, the error table and workers/tables.py;
# commit the result (tests/test_docs.py fails while they are stale).
docs: install
	$(BIN)/batch-export docs

# Rebuild the exports page: web/public/app.js (esbuild) and web/public/tables.json (from workers/tables.py);
# commit the result (tests/web fails while they are stale). `make screenshot` retakes docs/exports-page.png.
web: install
	cd web && npm ci --no-audit --no-fund && npm run --silent typecheck && npm run --silent build
	$(BIN)/python web/scripts/tables_json.py

screenshot: install system-deps
	EXPORTS_PAGE_SCREENSHOT=$(CURDIR)/docs/exports-page.png $(BIN)/python -m pytest tests/web/test_exports_page.py -k completes -q

# Benchmarks (not tests): each prints a table and appends it to bench/RESULTS.md. Figures are
# ratios against a baseline measured in the same run; see bench/RESULTS.md for recorded runs.
bench-export: install system-deps
	$(BIN)/python bench/export_throughput.py $(ARGS)

bench-parts: install system-deps
	$(BIN)/python bench/export_parts.py $(ARGS)

bench-memory: install system-deps
	$(BIN)/python bench/export_memory.py $(ARGS)

bench-rpc: install system-deps
	@command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
	cd bench && ../$(BIN)/python rpc_inprocess.py
	$(BIN)/python bench/rpc_throughput.py $(ARGS)

# 1,000 streams following an export live on one API process: latency of each change, memory (ARGS to vary).
bench-subscribers: install system-deps
	$(BIN)/python bench/subscribers.py $(ARGS)
