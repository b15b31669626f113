# The two set-up commands: `make run` and `make test`. Each creates or refreshes .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format venv bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[mrml,test]'
	touch $(STAMP)

venv: $(STAMP)

## run: fetch the sample CT, apply a bundled protocol headlessly, write a Slicer-loadable case to ./var/
run: $(STAMP)
	$(BIN)/medannot demo --data-dir var

## test: the whole test suite (slow tests included)
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## bench: our consensus engine against its peers; writes docs/benchmarks.md (minutes)
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[mrml,test,bench]'
	$(BIN)/python bench/consensus.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
