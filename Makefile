# atmospec: two commands on a fresh machine with Python 3.11 —
#   make demo   set up, simulate a small LATISS night and reduce it
#   make test   set up and run the test suite
# One virtual environment, installed in steps: the demo needs atmospec alone; the tests add
# the test and Gen3 extras (pytest, Selenium, the Rubin middleware: ~1 GB), the benchmarks
# the bench extra (and the Gen3 one, for bench_gen3.py). Each step leaves a stamp, redone
# when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BASE_STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: setup demo test bench lint clean

$(BASE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): $(BASE_STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,gen3]"
	touch $@

$(BENCH_STAMP): $(BASE_STAMP)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	touch $@

setup: $(TEST_STAMP) $(BENCH_STAMP)

demo: $(BASE_STAMP)
	$(BIN)/atmospec demo --out atmospec-demo

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -n auto --dist loadgroup

bench: $(TEST_STAMP) $(BENCH_STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lint: $(TEST_STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) atmospec-demo .pytest_cache
