# atmospec: two commands on a fresh machine with Python 3.11 —
#   make demo   set up, simulate a small LATISS night and reduce it
#   make test   set up and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,bench,gen3]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/atmospec demo --out atmospec-demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist loadgroup

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) atmospec-demo .pytest_cache
