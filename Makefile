# Two commands for a newcomer: `make run` (the gateway on http://127.0.0.1:7071) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
AZURITE := node_modules/.bin/azurite

.PHONY: install run test lint typecheck pytest bench schema clean

install: $(STAMP) $(AZURITE)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

$(AZURITE): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

## run: Azurite + dev host + outbox transport; prints a ready-to-paste curl. Ctrl-C stops all.
run: install
	$(BIN)/python scripts/run_local.py

## test: everything: lint, types, schema freshness, unit, integration (Azurite), end-to-end (dev host).
test: install lint typecheck pytest

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy

pytest:
	$(BIN)/python -m pytest

## bench: benchmarks that print ratios against a baseline measured in the same run.
bench: install
	$(BIN)/python bench/intake.py
	$(BIN)/python bench/delivery.py

## schema: regenerate docs/send-request.schema.json after changing mailgw/models.py.
schema: $(STAMP)
	$(BIN)/python -m mailgw.schema

clean:
	rm -rf $(VENV) node_modules .azurite .mypy_cache .ruff_cache .pytest_cache
