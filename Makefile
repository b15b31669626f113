# The two set-up commands: `make run` and `make test`. Each creates or refreshes .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-monailabel lint format venv bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[mrml,server,test]'
	touch $(STAMP)

venv: $(STAMP)

## run: the whole product on this machine (loopback only): the task-queue server on SQLite in ./var/demo/, a demo
## project with the sample CTs pre-segmented by the CT engine, demo users, and the browser annotator; Ctrl-C stops it
run: $(STAMP)
	$(BIN)/medannot run --data-dir var

## test: the whole test suite (slow tests included)
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## test-monailabel: the MONAI Label engine against a real MONAI Label server (builds var/monailabel-venv, several GB)
MONAILABEL_VENV := var/monailabel-venv
test-monailabel: $(STAMP)
	test -x $(MONAILABEL_VENV)/bin/python || $(PYTHON) -m venv $(MONAILABEL_VENV)
	$(MONAILABEL_VENV)/bin/python -m pip install --quiet monailabel==0.8.5 'pydicom<3' 'dicomweb-client<0.60' 'pynetdicom<3'
	MEDANNOT_MONAILABEL_PYTHON=$(MONAILABEL_VENV)/bin/python $(BIN)/python -m pytest -m monailabel_server Testing/presegment

## bench: the CT engine, consensus, DICOM, the task queue, its consensus job and the workstation's claim to case
## in the scene; writes docs/benchmarks.md (~60 min)
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[mrml,server,test,bench]'
	$(BIN)/python -m bench.presegment
	$(BIN)/python -m bench.consensus
	$(BIN)/python -m bench.dicom
	$(BIN)/python -m bench.queue
	$(BIN)/python -m bench.consensus_job
	$(BIN)/python -m bench.client
	$(BIN)/python -m bench.web

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
