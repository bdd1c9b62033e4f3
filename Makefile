# pricing_store developer commands. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# DATABASE_URL, or the embedded development database under .pgdata/ when it is unset.
WITH_DATABASE = DATABASE_URL="$${DATABASE_URL:-$$($(BIN)/python -m pricing_store.ops.devdb)}"

.DEFAULT_GOAL := help
.PHONY: help install test lint format bench workload chaos demo migrate downgrade migrate-sql revision roles devdb-stop

help: ## List the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install: ## Create .venv and install the package (editable) with the dev extra
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'

test: ## Run the test suites on a real PostgreSQL (docs/development.md); PYTEST_ARGS=... to narrow
	$(BIN)/pytest $(PYTEST_ARGS)
	$(if $(PYTEST_ARGS),,cd examples/host_app && ../../$(BIN)/pytest)

lint: ## ruff check, ruff format --check and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict
	cd examples/host_app && ../../$(BIN)/mypy

bench: ## Measure against raw asyncpg on the same server (ratios; docs/development.md)
	$(BIN)/python bench/bench.py

workload: ## The production shape: 4 services, LLM generation on demand, a writer (WORKLOAD_ARGS=--json)
	$(BIN)/python bench/workload.py $(WORKLOAD_ARGS)

chaos: ## Faults on a pg_auto_failover formation, the history checked (seed=N seconds=M history=FILE)
	$(BIN)/python bench/chaos.py $(if $(seed),--seed $(seed)) $(if $(seconds),--seconds $(seconds)) $(if $(history),--history $(history))

format: ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

migrate: ## Apply the migrations on DATABASE_URL (or the embedded dev database); debug=1 for tracebacks
	@$(BIN)/pricing-store migrate $(if $(debug),--debug)

downgrade: ## One revision down on the dev database; on a DATABASE_URL only with confirm=yes
	@$(BIN)/pricing-store downgrade $(if $(filter yes,$(confirm)),--yes) $(if $(debug),--debug)

migrate-sql: ## Print the upgrade SQL without connecting (offline mode)
	@$(BIN)/pricing-store migrate-sql

devdb-stop: ## Stop the embedded development database (its data stays in .pgdata/)
	@$(BIN)/python -m pricing_store.ops.devdb stop

demo: ## Migrate the dev database, load the samples, show lookups and stats
	@$(WITH_DATABASE) sh -c '\
	  $(BIN)/pricing-store migrate && \
	  $(BIN)/pricing-store import examples/pricing_sample.jsonl && \
	  $(BIN)/pricing-store import examples/models_sample.jsonl && \
	  $(BIN)/pricing-store lookup "Levi'"'"'s" jeans "Big E" && \
	  $(BIN)/pricing-store lookup Nike sneakers "Air Jordan 1" --json && \
	  $(BIN)/pricing-store stats'

roles: ## Create the owner and app roles (pricing_store/ops/roles.sql) on DATABASE_URL, as an admin
	@$(WITH_DATABASE) $(BIN)/python -m pricing_store.ops.roles

revision: ## Create a new revision: make revision m="add something"
	@test -n "$(m)" || { echo 'usage: make revision m="what it changes"'; exit 2; }
	$(BIN)/alembic revision -m "$(m)"
