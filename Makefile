# mlops-loop: one entry point for the stack, the tests and the tools.
# Every target bootstraps the project's virtualenv (.venv) from the lock when it is missing or
# older than the lock, so a fresh clone needs only python3 (3.11) and make.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-from-lock
export PYTHONPATH := $(CURDIR)
export PATH := $(CURDIR)/$(BIN):$(PATH)
PY := $(BIN)/python
STACK := $(PY) -m tooling.stack
PYTEST_ARGS ?=

.PHONY: help venv up down status logs clean test test-fast test-postgres lint format unit dags integration live lock replay bench-serving trigger demo demo-fast demo-cpu

help:
	@echo "make bench     every benchmark, then one table in benchmarks/README.md"
	@echo "make demo      the whole loop, live: reset, start, replay 2013 with fire drills (FAST=1: Jan-Apr)"
	@echo "make backtest  replay a spec's history through the loop's decisions in event time, vs frozen/scheduled/oracle (ARGS='--start 2013-01-01 --end 2013-06-30')"
	@echo "make up        start Airflow, MLflow and the Evidently UI on 127.0.0.1 (bootstraps .venv; MLOPS_BACKEND=postgres: on PostgreSQL)"
	@echo "make down      stop everything 'make up' started"
	@echo "make status    show each service, its pid, URL and health"
	@echo "make logs      tail the service logs (SERVICE=airflow-scheduler to pick one)"
	@echo "make clean     stop everything and delete all local state (.local/)"
	@echo "make test      lint + unit + DAG integrity + integration + live-stack tests (SQLite, then PostgreSQL)"
	@echo "make test-postgres  the integration and live-stack tiers on a throwaway PostgreSQL"
	@echo "make replay    write label batches into the landing folder (ARGS='--start 2013-01-01 --days 7')"
	@echo "make trigger   run a DAG now and wait (DAG=train_candidate CONF='{\"train_end\": \"2013-01-31\"}')"
	@echo "make lock      regenerate requirements*.txt from requirements*.in"
	@echo "make demo-cpu  make demo, with the CPU seconds of every Airflow task and stack process (FAST=1: short run)"
	@echo "make bench-serving  serving API vs mlflow models serve under wrk (needs wrk: apt-get install -y wrk)"
	@echo "make bench-threads  the loop's task workloads with default thread pools vs one thread per task"

$(STAMP): requirements-dev.txt requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing the locked dependencies into $(VENV) (first run takes a few minutes)..."
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@touch $@

venv: $(STAMP)

up: venv
	@$(STACK) up

down:
	@if [ -x $(PY) ]; then $(STACK) down; else $(PYTHON) -m tooling.stack down; fi

status:
	@if [ -x $(PY) ]; then $(STACK) status; else $(PYTHON) -m tooling.stack status; fi

logs:
	@if [ -x $(PY) ]; then $(STACK) logs $(SERVICE); else $(PYTHON) -m tooling.stack logs $(SERVICE); fi

clean:
	@if [ -x $(PY) ]; then $(STACK) clean; else $(PYTHON) -m tooling.stack clean; fi

# The whole loop, live: resets the demo state, starts the stack, replays 2013 with fire drills.
demo: venv
	@$(PY) -m tooling.demo $(if $(FAST),--fast,) $(ARGS)

demo-fast: venv
	@$(PY) -m tooling.demo --fast $(ARGS)

replay: venv
	@$(PY) -m tooling.replay $(ARGS)

# The loop's decisions replayed in event time, in-process (no Airflow, MLflow or servers), against
# frozen, scheduled and oracle policies on the same rows: a table, .local/backtest/<spec>/backtest.{json,png,txt}.
.PHONY: backtest
backtest: venv
	@$(PY) -m tooling.backtest $(if $(SPEC),--spec $(SPEC),) $(ARGS)

CONF ?= {}
trigger: venv
	@test -n "$(DAG)" || { echo "usage: make trigger DAG=<dag_id> [CONF='{...}']"; exit 2; }
	@$(PY) -m tooling.cli trigger $(DAG) --conf '$(CONF)' --wait

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

unit: venv
	$(BIN)/pytest -m unit $(PYTEST_ARGS)

dags: venv
	$(BIN)/pytest -m dags $(PYTEST_ARGS)

integration: venv
	$(BIN)/pytest -m integration $(PYTEST_ARGS)

live: venv
	$(BIN)/pytest -m live $(PYTEST_ARGS)

# The README's test command: lint, then every tier (unit, dags, integration, live stack) on
# SQLite, then the integration and live-stack tiers again on PostgreSQL (test-postgres).
# The scheduler-kill fault test (5 minutes) runs in the PostgreSQL pass only, the production backend.
test: lint
	$(BIN)/pytest --ignore=tests/e2e/test_fault_scheduler.py $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-postgres

# Integration and live-stack tiers on PostgreSQL: a throwaway cluster for the test session
# (Airflow's metadata DB, the test MLflow server's store, one ops database per test) and the
# stack's own cluster for the live tests (MLOPS_BACKEND=postgres make up), the demo's e2e included.
test-postgres: venv
	MLOPS_TEST_BACKEND=postgres $(BIN)/pytest -m "integration or live" $(PYTEST_ARGS)

# Everything but the live stack, for quick iterations.
test-fast: lint
	$(BIN)/pytest -m "not live" $(PYTEST_ARGS)

lock:
	PYTHON=$(PYTHON) bash scripts/lock.sh

# Every benchmark, then one table of their figures beside their anchors in benchmarks/README.md
# (the loop-latency rows come from the newest demo run: `make demo-fast` first). About 18 minutes.
.PHONY: bench bench-table
bench: bench-serving bench-load bench-monitoring bench-threads bench-backtest bench-table

bench-table: venv
	$(PY) benchmarks/table.py

# Serving benchmark (not part of `make test`): throwaway MLflow + state on free ports, about 3 minutes.
bench-serving: venv
	@command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install -y wrk"; exit 2; }
	$(PY) benchmarks/serving/bench.py $(ARGS)

# Load test (not part of `make test`): the serving API with a canary, a ladder of paced rates, then the
# highest one with p99 < 50 ms held for 60 s; inference-log completeness after a graceful stop. ~3 minutes.
.PHONY: bench-load
bench-load: venv
	@command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install -y wrk"; exit 2; }
	$(PY) benchmarks/serving/load.py $(ARGS)

# Where a demo run's CPU goes (not part of `make test`): runs `make demo` (FAST=1: the short run) while
# sampling every process, then a table of CPU seconds per Airflow task and per stack process.
.PHONY: demo-cpu
demo-cpu: venv
	$(PY) benchmarks/demo/cpu_by_task.py -- $(MAKE) --no-print-directory demo $(if $(FAST),FAST=1,) $(if $(ARGS),ARGS="$(ARGS)",)

# Monitoring-pass benchmark (not part of `make test`): include.mlops.domain.drift vs Evidently's DataDriftPreset
# on synthetic flights-shaped windows of 100k and 1M rows; about 5 minutes, mostly Evidently at 1M.
.PHONY: bench-monitoring
bench-monitoring: venv
	$(PY) benchmarks/monitoring/bench.py $(ARGS)

# The backtest's wall time (not part of `make test`): the whole 2013 replay of the flights spec through
# `make backtest`'s entry point, wall time and peak RSS, beside its fitting time and the 300 s budget; ~4.5 min.
.PHONY: bench-backtest
bench-backtest: venv
	$(PY) benchmarks/backtest/bench.py $(ARGS)

# Thread-pool benchmark (not part of `make test`): the loop's drift report, GX validation and training
# with the libraries' default thread pools vs one thread per task, alternating; about 6 minutes.
.PHONY: bench-threads
bench-threads: venv
	$(PY) benchmarks/threads/bench.py $(ARGS)
