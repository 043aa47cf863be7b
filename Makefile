# Two commands for a newcomer: `make run` (the gateway on http://127.0.0.1:7071) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
AZURITE := node_modules/.bin/azurite
# Infrastructure checkers (pycep-parser, checkov, shellcheck) live in their own venv: checkov's ~95
# pinned dependencies must not meet the app's. tests/infra runs them by subprocess.
INFRA_VENV  := .venv-infra
INFRA_STAMP := $(INFRA_VENV)/.installed-stamp
INFRA_REQS  := tests/infra/requirements-infra.txt
# The mail viewer's browser test drives Debian's Chromium with Playwright (Playwright's own browser
# download is never used).
CHROMIUM := /usr/bin/chromium

.PHONY: install browser smtp-tools run test lint typecheck pytest bench schema clean infra-check

install: $(STAMP) $(AZURITE) $(INFRA_STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

# Every package is pinned in $(INFRA_REQS), so --no-deps installs exactly that set (see its header).
$(INFRA_STAMP): $(INFRA_REQS)
	test -x $(INFRA_VENV)/bin/python || $(PYTHON) -m venv $(INFRA_VENV)
	echo '*' > $(INFRA_VENV)/.gitignore
	$(INFRA_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r $(INFRA_REQS)
	touch $@

$(AZURITE): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

## browser: Debian's Chromium, installed only if missing (apt-get needs root: CI runs as root).
browser:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing Debian's chromium for the browser test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "The browser test needs Chromium at $(CHROMIUM): sudo apt-get install -y chromium" >&2; \
	    exit 1; \
	  fi; }

## smtp-tools: Debian's swaks and msmtp, the real SMTP clients the SMTP intake is tested with,
## installed only if missing (apt-get needs root: CI runs as root).
smtp-tools:
	@{ command -v swaks && command -v msmtp; } >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing Debian's swaks and msmtp for the SMTP intake tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq swaks msmtp >/dev/null; \
	  else \
	    echo "The SMTP intake tests need swaks and msmtp: sudo apt-get install -y swaks msmtp" >&2; \
	    exit 1; \
	  fi; }

## run: Azurite + dev host + outbox transport, and the SMTP intake on 127.0.0.1:2587/2465; prints a
## ready-to-paste curl and swaks. Ctrl-C stops all.
run: $(STAMP) $(AZURITE)
	$(BIN)/python scripts/run_local.py

## test: everything: lint, types, schema freshness, unit, integration (Azurite), end-to-end (dev host),
## the mail viewer in a browser. About 11 minutes on 2 cores, plus the installs the first time.
test: install browser smtp-tools lint typecheck pytest

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## typecheck: the code, then the tests: pytest imports each test folder's helpers as top-level
## modules (and every folder has its own conftest), so each folder is checked on its own path.
typecheck:
	$(BIN)/mypy
	MYPYPATH=tests $(BIN)/mypy --strict --explicit-package-bases tests/*.py
	MYPYPATH=tests $(BIN)/mypy --strict -p standins
	for dir in $(filter-out tests/standins/,$(wildcard tests/*/)); do \
	  MYPYPATH=tests:$$dir $(BIN)/mypy --strict --explicit-package-bases $$dir || exit 1; \
	done

pytest:
	$(BIN)/python -m pytest

## infra-check: only the infrastructure checks (Bicep parse, checkov, infra <-> app consistency).
infra-check: $(STAMP) $(INFRA_STAMP)
	$(BIN)/python -m pytest tests/infra

## bench: benchmarks that print ratios against a baseline measured in the same run, and the soak
## (exactly once at volume, through faults, Exchange's submission lag and a killed worker).
bench: $(STAMP) $(AZURITE)
	$(BIN)/python bench/storage_requests.py
	$(BIN)/python bench/intake.py
	$(BIN)/python bench/batch.py
	$(BIN)/python bench/delivery.py
	$(BIN)/python bench/soak.py
	$(BIN)/python bench/smtp_intake.py
	$(BIN)/python -m pytest -q -m soak

## schema: regenerate docs/send-request.schema.json and docs/openapi.json after changing the models
## or the routes (functions/routes.py).
schema: $(STAMP)
	$(BIN)/python -m mailgw.schema
	$(BIN)/python -m functions.openapi

clean:
	rm -rf $(VENV) $(INFRA_VENV) node_modules .azurite .mypy_cache .ruff_cache .pytest_cache
