# Two commands for a fresh machine with Python 3.11: `make demo` and `make test`.
# Both create .venv on first use and reuse it while pyproject.toml and constraints.txt are unchanged.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.emoflow-installed

.PHONY: install demo test test-all lint sheet clean-data

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: install           ## generate the sample recordings and reproduce every stage
	$(BIN)/dvc repro

test: install lint      ## fast tests (slow, service and gpu tests excluded)
	$(BIN)/pytest

test-all: install lint  ## everything this machine can run (CI)
	$(BIN)/pytest -m "not gpu"

lint: install
	$(BIN)/ruff check .

sheet: install          ## the README's contact sheet of one sample participant
	$(BIN)/emoflow contact-sheet --participant p001 --out docs/img/sample_contact_sheet.png

clean-data:
	rm -rf data/ .dvc/tmp/runs
