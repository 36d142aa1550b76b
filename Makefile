# fleetlens developer commands. Everything runs from a project-local virtualenv (.venv),
# made on first use from the pinned versions in pyproject.toml.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help venv demo test lint bench clean promtool

help:
	@echo "make demo   - run the whole pipeline on the embedded broker over a simulated week"
	@echo "make test   - run the test suite (unit + end-to-end through a real Kafka broker)"
	@echo "make lint   - ruff"
	@echo "make bench  - benchmarks (prints figures)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/fleetlens demo --store var/demo/store

# promtool (Debian's prometheus package) checks and unit-tests dashboards/alerts/*.yml;
# installed when missing, else those tests are skipped with a reason.
promtool:
	@command -v promtool >/dev/null 2>&1 || \
	  apt-get install -y --no-install-recommends prometheus >/dev/null 2>&1 || \
	  { apt-get update >/dev/null 2>&1 && \
	    apt-get install -y --no-install-recommends prometheus >/dev/null 2>&1; } || \
	  echo "promtool unavailable (apt-get install prometheus): its tests will be skipped"

test: $(STAMP) promtool
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf var .pytest_cache .ruff_cache
