# Two entry points: `make run` (the platform end to end) and `make test` (lint + all tests).
# Everything is installed by these targets; nothing is installed by hand.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LIANFANG := $(BIN)/lianfang
INSTALLED := $(VENV)/.installed
DEMO_DIR := .lianfang/demo
# Personal-data masking needs a key; a local one is generated once (mode 0600) unless
# LIANFANG_MASKING_KEY is already set.
MASKING_KEY_FILE := .lianfang/masking.key
WITH_KEY = LIANFANG_MASKING_KEY="$${LIANFANG_MASKING_KEY:-$$(cat $(MASKING_KEY_FILE))}"

.PHONY: install run test test-fast lint format es-start es-stop demo benchmarks clean

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

install: $(INSTALLED)

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(INSTALLED)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The test session starts the local Elasticsearch node when LIANFANG_ES_URL is not set
# and stops it afterwards if it started it (tests/conftest.py).
test: lint
	$(BIN)/python -m pytest

test-fast: $(INSTALLED)
	$(BIN)/python -m pytest -m "not integration"

es-start: $(INSTALLED)
	$(LIANFANG) es start

es-stop: $(INSTALLED)
	$(LIANFANG) es stop

$(MASKING_KEY_FILE):
	mkdir -p $(dir $@)
	umask 077 && $(PYTHON) -c "import secrets; print(secrets.token_urlsafe(32))" > $@

demo: es-start $(MASKING_KEY_FILE)
	$(WITH_KEY) $(LIANFANG) demo load --out $(DEMO_DIR)

run: demo
	$(WITH_KEY) $(LIANFANG) serve

benchmarks: es-start
	for script in benchmarks/*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
