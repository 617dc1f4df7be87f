# The two set-up commands: `make run` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint format install install-test frontend system-packages-run system-packages-test clean

run: install
	$(BIN)/arkhiv init
	$(BIN)/arkhiv serve

# Test files are spread over PYTEST_WORKERS processes (0: all in this one), a whole file to a
# worker so that the files' shared set-ups are made once.
PYTEST_WORKERS ?= 2

test: install-test
	$(BIN)/ruff check arkhiv tests bench
	$(BIN)/ruff format --check arkhiv tests bench
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: install-test
	$(BIN)/ruff check arkhiv tests bench
	$(BIN)/ruff format --check arkhiv tests bench

format: install-test
	$(BIN)/ruff format arkhiv tests bench
	$(BIN)/ruff check --fix arkhiv tests bench

install: $(VENV)/.installed-run system-packages-run frontend
install-test: $(VENV)/.installed-test system-packages-test frontend

# The pages' browser code: npm packages (package-lock.json) bundled by esbuild into the
# package's static folder. Node.js comes from Debian when the machine has none.
FRONTEND_BUILT := arkhiv/web/static/dist/.built
frontend: $(FRONTEND_BUILT)
$(FRONTEND_BUILT): frontend/package.json frontend/package-lock.json frontend/build.mjs $(wildcard frontend/src/*)
	@command -v npm >/dev/null || bash scripts/ensure-debian-packages.sh nodejs npm
	cd frontend && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build
	@touch $@

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Arkhiv needs Python 3.11 or newer; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[postgres,formats,s3,reconstruct,dissemination]'
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[postgres,formats,s3,reconstruct,dissemination,test]'
	@touch $@ $(VENV)/.installed-run

# Debian packages, installed with apt when missing and running as root.
system-packages-run:
	@bash scripts/ensure-debian-packages.sh $(shell grep -v '^#' scripts/debian-packages-run.txt)

system-packages-test:
	@bash scripts/ensure-debian-packages.sh $(shell grep -hv '^#' scripts/debian-packages-run.txt scripts/debian-packages-test.txt)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-results frontend/node_modules arkhiv/web/static/dist
