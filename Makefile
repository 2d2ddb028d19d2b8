# Two commands a newcomer needs: `make demo` and `make test`.
# Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# One venv, two stamps: the demo's extras are a subset of the test extras, so either
# order works; `make demo` alone installs only the server and CLI (syncline[standard]).
STAMP      := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: demo test docs docs-strict lint typecheck jstest browser pytest screenshots clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[standard]'
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/syncline demo

test: lint typecheck jstest docs-strict browser pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy syncline

# The browser client: typed with JSDoc (tsc --checkJs), tested with node's test runner
# against the same protocol fixtures as the Python client. Its npm package's type
# declarations are made from the JSDoc (tsconfig.d.json, into syncline/static/types/),
# and an application's script (test/consumer.ts) must compile against them.
NODE_STAMP := node_modules/.package-lock.json

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

jstest: $(NODE_STAMP)
	npx tsc -p tsconfig.json
	npx tsc -p syncline/static/tsconfig.d.json
	npx tsc -p syncline/static/test/tsconfig.consumer.json
	node --test syncline/static/test/

# Browser tests drive Debian's Chromium; install it when missing and we are root.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = "0" ]; then \
			echo "installing chromium (browser tests need /usr/bin/chromium)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		else \
			echo "browser tests need Chromium: sudo apt-get install -y chromium"; \
		fi; \
	fi

# pytest exits with status 5 when it collects no tests, so an empty run fails.
pytest: $(STAMP)
	$(BIN)/pytest

# The documentation site (mkdocs.yml) into site/; under `make test` a broken link,
# anchor or API reference fails the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build

docs-strict: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# Refresh docs/screenshots/ from the real board in Chromium.
screenshots: $(STAMP) browser
	SYNCLINE_SCREENSHOTS=1 $(BIN)/pytest -q tests/e2e/test_screenshots.py

clean:
	rm -rf $(VENV) node_modules site .mypy_cache .ruff_cache .pytest_cache .hypothesis
