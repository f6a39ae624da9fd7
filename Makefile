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
# The dashboard (web/): its libraries come from the npm registry through web/package.json
# and web/package-lock.json; the build goes to web/dist (git-ignored), served at /.
WEB := web
WEB_MODULES := $(WEB)/node_modules/.package-lock.json
WEB_PAGE := $(WEB)/dist/index.html
# The browser test drives Debian's chromium (never a browser downloaded by Playwright);
# the CJK font makes Chinese labels legible in its screenshots.
BROWSER_PACKAGES := chromium fonts-wqy-zenhei
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install run test test-fast lint format es-start es-stop demo benchmarks clean web web-test browser

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

# No network for npm means no page: the build fails here rather than fall back to a CDN.
$(WEB_MODULES): $(WEB)/package.json $(wildcard $(WEB)/package-lock.json)
	@command -v npm >/dev/null || { echo "npm (Node.js) is needed to build the dashboard"; exit 1; }
	cd $(WEB) && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
	touch $@

$(WEB_PAGE): $(WEB_MODULES) $(WEB)/build.mjs $(wildcard $(WEB)/src/*)
	cd $(WEB) && npm run --silent build

web: $(WEB_PAGE)

web-test: $(WEB_MODULES)
	cd $(WEB) && node --test test/*.test.mjs

# Installs only what is missing (dpkg answers in milliseconds when all is there).
browser:
	@dpkg -s $(BROWSER_PACKAGES) >/dev/null 2>&1 || { \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $(BROWSER_PACKAGES); }

# The test session starts the local Elasticsearch node when LIANFANG_ES_URL is not set
# and stops it afterwards if it started it (tests/conftest.py).
test: lint web browser web-test
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

# The demo day is yesterday (UTC); detection then runs over that day so alerts are waiting.
# Anomaly detection needs models: one story-free baseline day (the latest day before the demo
# day of its kind, working day or weekend) is loaded too, so entities seen then are not "first
# seen", and one model per feature set over all departments is trained on its files (not on
# an Elasticsearch range, which may still hold earlier demo days and their attacks), alerting
# above the 0.9999 quantile of the baseline's scores.
DEMO_BASELINE_DAYS := 1
DEMO_BASELINE_FILES = $(DEMO_DIR)/baseline/*/*/auth.log $(DEMO_DIR)/baseline/*/*/events.ndjson
demo: es-start $(MASKING_KEY_FILE)
	$(WITH_KEY) $(LIANFANG) demo load --out $(DEMO_DIR) --baseline-days $(DEMO_BASELINE_DAYS)
	$(WITH_KEY) LIANFANG_ANOMALY='{"per_department": false}' $(LIANFANG) detect train \
		--threshold-quantile 0.9999 $$(printf -- '--input %s ' $(DEMO_BASELINE_FILES))
	$(WITH_KEY) $(LIANFANG) detect run --from "$$(date -u -d yesterday +%Y-%m-%dT00:00:00Z)" \
		--to "$$(date -u +%Y-%m-%dT00:00:00Z)"

# While serving, the API keeps detecting: the scheduler's passes run every
# detection_rules.every in the background (merged with any [detection_rules] of lianfang.toml).
run: web demo
	$(WITH_KEY) LIANFANG_DETECTION_RULES='{"schedule_in_serve": true}' $(LIANFANG) serve

# Benchmarks that ingest mask personal data as the platform does, so they need the key too.
benchmarks: es-start $(MASKING_KEY_FILE)
	for script in benchmarks/*.py; do $(WITH_KEY) $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache $(WEB)/node_modules $(WEB)/dist test-artifacts
