# Two commands on a fresh clone: `make run` and `make test`. Both bootstrap uv.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv on PATH, else the copy pip installs (`python3 -m uv`).
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
RUN := $(UV) run --frozen
# Recursively expanded (=), so `db list` runs only in a recipe that names $(DATABASES)
# (migrate-all), never when the Makefile is read.
DATABASES = $(shell $(RUN) db list 2>/dev/null | cut -f1)
m ?=
# `install` syncs the environment only when uv.lock or a pyproject.toml is newer than this
# stamp (or there is no environment yet); otherwise every target starts at once.
VENV := $(or $(UV_PROJECT_ENVIRONMENT),.venv)
SYNCED := $(VENV)/.synced
SYNC_INPUTS := $(wildcard uv.lock pyproject.toml libs/*/pyproject.toml apps/*/pyproject.toml)

# Settings treat an unset ENVIRONMENT as production (a URL required, no embedded server,
# development commands refused). The developer's targets below choose development
# explicitly, by prefixing $(DEV), unless ENVIRONMENT / APP_ENV is already set in the
# environment, on the make command line or in .env. Deploys (db-%-deploy, migrate-remote)
# and the tests (the pytest plugin sets ENVIRONMENT=test) never get it.
ENV_CHOSEN := $(strip $(ENVIRONMENT)$(APP_ENV)$(shell grep -isE '^[[:space:]]*(export[[:space:]]+)?(ENVIRONMENT|APP_ENV)[[:space:]]*=' .env 2>/dev/null))
DEV := $(if $(ENV_CHOSEN),,ENVIRONMENT=development)

.PHONY: help bootstrap install run run-bibikos migrate-all migrate-remote images test lint format typecheck pytest clean-data db-list

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z%_-]+:.*## / {printf "  \033[36m%-24s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  % is a database name; found: $$(ls -d libs/*_db 2>/dev/null | sed 's|libs/||; s|_db$$||' | tr '\n' ' ')"

bootstrap: ## Install uv with pip if it is missing
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || { \
	  echo "uv not found: installing it with pip"; \
	  python3 -m pip install --quiet uv 2>/dev/null || \
	  python3 -m pip install --quiet --user uv 2>/dev/null || \
	  python3 -m pip install --quiet --user --break-system-packages uv; }

install: $(SYNCED) ## Create .venv with every workspace member and dev tool (uv.lock, frozen)

# uv is bootstrapped only when a sync is due; the stamp is written after a successful sync.
$(SYNCED): $(SYNC_INPUTS)
	@$(MAKE) --no-print-directory bootstrap
	@UV_PYTHON_DOWNLOADS=never $(UV) sync --frozen --all-packages
	@touch $@

run: install ## my_api on http://127.0.0.1:8000 (docs at /docs), core database migrated and seeded
	@$(DEV) $(RUN) db core migrate
	@$(DEV) $(RUN) db core seed
	@url=$$($(DEV) $(RUN) db core dev-url) && \
	  $(DEV) env $${url:+DATABASE_URL=$$url} $(RUN) uvicorn my_api.main:create_app --factory --host 127.0.0.1 --port $(or $(PORT),8000)

run-bibikos: install ## bibikos_api on http://127.0.0.1:8001, bibikos database migrated and seeded
	@$(DEV) $(RUN) db bibikos migrate
	@$(DEV) $(RUN) db bibikos seed
	@url=$$($(DEV) $(RUN) db bibikos dev-url) && \
	  $(DEV) env $${url:+BIBIKOS_DATABASE_URL=$$url} $(RUN) uvicorn bibikos_api.main:create_app --factory --host 127.0.0.1 --port $(or $(PORT),8001)

migrate-all: install ## Migrate every database (embedded PostgreSQL unless URLs are set) and print status
	@for db in $(DATABASES); do $(DEV) $(RUN) db $$db migrate || exit 1; done
	@for db in $(DATABASES); do $(DEV) $(RUN) db $$db status || exit 1; done

migrate-remote: install ## Deploy MIGRATE_DATABASES to the URLs set (what run_migrations' container runs)
	@$(RUN) python run_migrations/entrypoint.py $(dbs)

images: install ## Build the migration and app images (BuildKit, host CA as a secret; stand-ins where no registry answers)
	@$(RUN) python -m db_tools.containers

test: install lint typecheck pytest ## Lint, type-check and run the test suite (real PostgreSQL)

lint: install ## ruff lint and format check
	@$(RUN) ruff check .
	@$(RUN) ruff format --check .

format: install ## ruff fix and format
	@$(RUN) ruff check --fix .
	@$(RUN) ruff format .

typecheck: install ## mypy (strict on libs/)
	@$(RUN) mypy

pytest: install ## Only the test suite
	@$(RUN) pytest $(PYTEST_ARGS)

db-list: install ## The databases the db CLI knows
	@$(RUN) db list

db-%-generate: install ## Autogenerate a revision: make db-core-generate m="add column"
	@test -n "$(m)" || { echo 'usage: make $@ m="message"'; exit 2; }
	@$(DEV) $(RUN) db $* generate -m "$(m)"

db-%-create: install ## An empty revision to write by hand: make db-core-create m="..."
	@test -n "$(m)" || { echo 'usage: make $@ m="message"'; exit 2; }
	@$(DEV) $(RUN) db $* create -m "$(m)"

db-%-migrate: install ## Development: upgrade to head
	@$(DEV) $(RUN) db $* migrate

db-%-deploy: install ## Production: upgrade to head, refuse on drift (never chooses development)
	@$(RUN) db $* deploy

db-%-status: install ## Current vs head, pending revisions, drift
	@$(DEV) $(RUN) db $* status

db-%-history: install ## Every revision
	@$(DEV) $(RUN) db $* history

db-%-downgrade: install ## Development: downgrade, make db-core-downgrade rev=-1
	@$(DEV) $(RUN) db $* downgrade "$(or $(rev),-1)"

db-%-reset: install ## Development: drop and rebuild (asks)
	@$(DEV) $(RUN) db $* reset

db-%-push: install ## Development: apply model changes without a revision
	@$(DEV) $(RUN) db $* push

db-%-seed: install ## Development seed data
	@$(DEV) $(RUN) db $* seed

db-%-studio: install ## Web UI over the tables on 127.0.0.1:5555, read-only: tenant=acme write=1 port=5556
	@$(DEV) $(RUN) db $* studio $(if $(tenant),--tenant "$(tenant)") $(if $(write),--write) $(if $(port),--port "$(port)") $(if $(host),--host "$(host)")

clean-data: ## Stop the embedded PostgreSQL and delete .data/
	@if [ -d .data/postgres/pgdata ]; then $(RUN) python -c "from db_tools.embedded import EmbeddedPostgres; from pathlib import Path; EmbeddedPostgres(Path('.data/postgres')).stop()"; fi
	@rm -rf .data
