# fleetlens developer commands. Everything runs from a project-local virtualenv (.venv),
# made on first use from the pinned versions in pyproject.toml.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help venv demo test lint bench clean

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

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf var .pytest_cache .ruff_cache
