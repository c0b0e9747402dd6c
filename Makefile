# e2i_platform — `make run` and `make test` work on a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.synced
# Use uv from PATH; otherwise bootstrap it with pip into .tools/ (no global install).
UV      := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
HOST    ?= 127.0.0.1
PORT    ?= 3000

.PHONY: help install run worker report releases dev feast rollback test test-preflight test-release test-unit test-integration test-e2e test-distributed mutation bench lint clean

help:
	@echo "make run    - install (first time) and materialize every asset with its gates"
	@echo "make worker - a Celery worker for E2I_EXECUTOR=celery runs (ARGS=\"--name w1 --concurrency 2\")"
	@echo "make test   - install (first time) and run the test lanes (ARGS=--keep-going: past a failed preflight)"
	@echo "make test-release - the must-pass list (tests/release.txt), under two minutes"
	@echo "make report - per asset: runs, p50/p95 step time, failure/refusal/reuse rates; gate pass rates; failing gates (ARGS=\"--since 30d --json\")"
	@echo "make dev    - Dagster UI on http://$(HOST):$(PORT) (same instance as make run)"
	@echo "make feast ARGS=plan - the Feast CLI on feature_repo/ with the platform's settings"
	@echo "make rollback REASON=\"...\" - make the previous release's model champion again"
	@echo "make releases [REPAIR=\"why\"] - releases with their verification status; REPAIR= recovers a broken CURRENT"
	@echo "make mutation - mutation score of the gate modules against the fast lanes (ARGS=\"--module lib/gates.py\")"
	@echo "make bench  - benchmarks;  make lint - ruff;  make clean - remove .venv and .e2i"

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/python -m pip install --quiet uv

# Reinstall only when the lock or the project metadata changed.
$(STAMP): pyproject.toml uv.lock | $(if $(filter .tools/bin/uv,$(UV)),.tools/bin/uv)
	$(UV) sync --frozen --python 3.11 --compile-bytecode
	@touch $@

install: $(STAMP)

run: $(STAMP)
	$(PY) -m e2i_platform.ops.run $(ARGS)

# A Celery worker that runs steps of E2I_EXECUTOR=celery runs (README: Running on several machines).
worker: $(STAMP)
	exec $(PY) -m e2i_platform.ops.worker $(ARGS)

# Run costs, reuse and gate pass rates from the instance's event log, e.g. make report ARGS="--since 30d --json"
report: $(STAMP)
	$(PY) -m e2i_platform.ops.report $(ARGS)

# exec: SIGTERM to make reaches the wrapper, which stops dagster dev's whole group in 10 s.
dev: $(STAMP)
	exec $(PY) -m e2i_platform.ops.dev --host $(HOST) --port $(PORT)

# Restore the previous release (recorded as a release and a champion_model materialization).
rollback: $(STAMP)
	@test -n "$(REASON)" || { echo 'make rollback needs REASON="why"' >&2; exit 2; }
	$(PY) -m e2i_platform.ops.rollback --reason "$(REASON)"

# Releases with their verification status; REPAIR="why" recovers a broken CURRENT (ARGS="--to RELEASE_ID").
releases: $(STAMP)
	$(PY) -m e2i_platform.ops.releases $(if $(REPAIR),--repair --reason "$(REPAIR)") $(ARGS)

# The Feast CLI on feature_repo/ with the platform's settings, e.g. make feast ARGS=plan
feast: $(STAMP)
	$(PY) -m e2i_platform.features.cli $(ARGS)

test: $(STAMP)
	$(PY) tests/lanes.py $(ARGS)

test-preflight test-release test-unit test-integration test-e2e test-distributed: $(STAMP)
	$(PY) tests/lanes.py $(subst test-,,$@)

# Mutants of the gate modules (tests/mutation.toml) in temp copies of the tree; not part of `make test`.
mutation: $(STAMP)
	$(PY) tests/mutation.py $(ARGS)

bench: $(STAMP)
	$(PY) bench/run.py

lint: $(STAMP)
	$(VENV)/bin/ruff check e2i_platform tests bench
	$(VENV)/bin/ruff format --check e2i_platform tests bench

clean:
	rm -rf $(VENV) .tools .e2i
