# flowworker developer commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: help install run test test-fast lint format clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv and install flowworker with its dev tools

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# setuptools tells every editable install to beware of a folder named like
	@# the package in the working directory; this checkout has none (the package
	@# lives in worker/), so the notice is only noise.
	PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install --quiet -e '.[dev]'
	touch $@

run: install ## Run the example end to end on an embedded PostgreSQL
	$(PY) -m examples.demo

test: install lint test-deps ## Lint, type-check and run every test against a real PostgreSQL
	$(VENV)/bin/pytest

# The tier markers come from tests/conftest.py (by directory); `slow` from the tests.
test-fast: install ## Unit, SQL, integration and CLI tests, none marked slow (< 1 min; no lint)
	$(VENV)/bin/pytest -m "not acceptance and not faults and not slow"

.PHONY: test-deps chaos
test-deps: ## System packages the tests need (pgbouncer, libfaketime, tmux, chromium); apt-get as root
	bash scripts/install-test-deps.sh

chaos: install test-deps ## Crash-restart chaos + vacuum-blocked soak (CHAOS_MINUTES=20, CHAOS_SOAK_MINUTES=30)
	$(PY) -m tests.faults.chaos

lint: install ## ruff and mypy --strict
	$(VENV)/bin/ruff check .
	@# mypy cannot follow the package-dir mapping; give it a tree named flowworker.
	@rm -rf .mypy_tree && mkdir -p .mypy_tree/flowworker
	@ln -s $(CURDIR)/worker/*.py $(CURDIR)/worker/py.typed $(CURDIR)/worker/daemon $(CURDIR)/worker/client $(CURDIR)/worker/ops $(CURDIR)/worker/dashboard .mypy_tree/flowworker/
	@ln -s $(CURDIR)/cli .mypy_tree/flowworker/cli
	$(VENV)/bin/mypy

.PHONY: bench bench-quick
bench: install ## Benchmark vs PgQueuer and pgbench (5-10 min); writes docs/performance.*
	$(PY) -m bench

bench-quick: install ## The benchmark once with small N (< 2 min); writes bench/results/quick.*
	$(PY) -m bench --quick

format: install ## Format and auto-fix with ruff
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean: ## Remove the virtualenv, caches and the local database
	rm -rf $(VENV) .flowworker .pytest_cache .mypy_cache .mypy_tree .ruff_cache
