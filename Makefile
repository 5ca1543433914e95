# Everything a fresh machine needs, from Python 3.11 (to 3.13) and make alone: the package with
# every extra, at the exact versions of requirements.lock.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "make needs Python 3.11 to 3.13 (requirements.lock)"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[all,test]'
	cp $(LOCK) $(STAMP)   # tests/test_packaging.py: this venv holds the lock

demo: $(STAMP)
	$(BIN)/camfabric demo $(DEMO_ARGS)

# The suite mostly waits (real clocks, sockets, child processes), so it runs in TEST_WORKERS
# processes side by side even on 2 cores; `make test TEST_WORKERS=0` runs it in one.
TEST_WORKERS ?= 4
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/e2e.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
