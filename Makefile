# Two commands set everything up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

# the pip of any Python 3.11 installs an editable pyproject project (PEP 660): no upgrade
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fedtally demo

lint: $(STAMP)
	$(BIN)/ruff check .

# one worker per core (pytest-xdist); tests that need a federation start their own processes
# on ports the OS picks, so workers never share one
# tmp_path in memory where the machine has /dev/shm: the federations the tests start
# fsync their ledgers at every commit, and on a disk that waiting was a tenth of the run
# (tests about the disk itself ask for disk_path); removed afterwards, pass, fail or Ctrl-C
TEST_TMP := $(if $(wildcard /dev/shm/.),/dev/shm/fedtally-tests-$(shell id -u)-$(notdir $(CURDIR)))

test: $(STAMP) lint
	$(if $(TEST_TMP),trap 'rm -rf $(TEST_TMP); exit 130' INT TERM;) \
	$(BIN)/python -m pytest -q -n auto --dist worksteal $(if $(TEST_TMP),--basetemp=$(TEST_TMP)); \
	status=$$?; $(if $(TEST_TMP),rm -rf $(TEST_TMP);) exit $$status

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
