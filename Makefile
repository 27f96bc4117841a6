# Cartwise: the two set-up commands are `make demo` and `make test`; each installs what it needs.
SHELL := /bin/bash
# uv from PATH, else the uv module that `make uv` installs with pip.
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
PY_SRC := platform/src commerce/src features/src models/src serving/src pipelines/src

.PHONY: help uv sync demo test test-fast lint fmt bench bench-serving bench-analytics serve api clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

uv:  ## Install uv if it is missing
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || \
		(echo "installing uv..." && python3 -m pip install --quiet --user uv 2>/dev/null || \
		 python3 -m pip install --quiet --break-system-packages --user uv)

sync: uv  ## Create or refresh the virtual environment from uv.lock
	@# Bytecode ahead of time: with PYTHONDONTWRITEBYTECODE set (as on this project's CI machine) every process
	@# would otherwise recompile torch, ray, feast... on import (store import 7.9 s -> 3.5 s here).
	@# The first sync compiles for about a minute; later ones only what changed.
	@$(UV) sync --all-packages --locked --quiet --compile-bytecode
	@$(UV) run --no-sync python -m compileall -q $(PY_SRC) tests >/dev/null

demo: sync  ## Migrate, create an admin, load the real sample catalog and serve it with Ray Serve
	$(UV) run cartwise demo

test: sync  ## Run the whole test suite (needs PostgreSQL and Redis on 127.0.0.1)
	$(UV) run pytest

test-fast: sync  ## Tests without the Ray Serve end-to-end ones
	$(UV) run pytest -m "not e2e"

lint: sync  ## ruff (lint + format check) and mypy strict on every member
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy $(PY_SRC)

fmt: sync  ## Format and autofix
	$(UV) run ruff format .
	$(UV) run ruff check --fix .

bench: sync  ## API load benchmark: Ray Serve against plain uvicorn (PostgreSQL + Redis)
	$(UV) run python bench/api_load.py

bench-serving: sync  ## Serving benchmark: the ML endpoints under Ray Serve against uvicorn (trained shop)
	$(UV) run python bench/serving.py

bench-analytics: sync  ## Staff analytics SQL on the full Online Retail import (PostgreSQL) against pandas
	$(UV) run python bench/analytics.py

serve: sync  ## Serve the API with Ray Serve on port 8000 (no migration or sample data)
	$(UV) run cartwise serve

api: sync  ## Serve the API with plain uvicorn on port 8000 (development)
	$(UV) run cartwise api --reload

clean:  ## Remove local state (var/) and caches
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
