# fleetlens developer commands. Everything runs from a project-local virtualenv (.venv),
# made on first use from the pinned versions in pyproject.toml.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help venv demo test lint bench clean dashboards promtool browser

help:
	@echo "make demo   - run the whole pipeline on the embedded broker over a simulated week"
	@echo "make test   - run the test suite (unit + end-to-end through a real Kafka broker)"
	@echo "make lint   - ruff"
	@echo "make bench  - benchmarks (prints figures)"
	@echo "make dashboards - regenerate the Grafana dashboards (dashboards/json/)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/fleetlens demo --store var/demo/store

# Headless Chromium for the API's browser test (Debian package `chromium`), installed only when
# missing; if it cannot be installed (no root, no apt), tests/test_api_browser.py skips and says so.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  { apt-cache policy chromium 2>/dev/null | grep -q 'Candidate: [0-9]' || apt-get update -qq; } && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "make browser: chromium could not be installed; the browser test will skip"

test: $(STAMP) promtool browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf var .pytest_cache .ruff_cache

dashboards: $(STAMP)
	$(BIN)/python dashboards/generate.py

# promtool (Debian's prometheus package) lets tests/test_compose.py run `promtool check config`
# on deploy/prometheus/; installed only when missing, and only where apt-get can run as root.
promtool:
	@command -v promtool >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends prometheus >/dev/null) \
	      || echo "promtool: install failed; its test will be skipped"; \
	  else echo "promtool: not installed and cannot apt-get; its test will be skipped"; fi; }
