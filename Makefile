# Two commands a newcomer needs (see README.md):
#   make lab    set everything up and open JupyterLab on notebooks/
#   make test   set everything up and run the whole test suite (unit, notebooks, browser, ruff)
# Notebooks are written from their sources: edit notebooks/src/NN_name.py (jupytext percent format), then
#   make notebooks-sync   write notebooks/NN_name.ipynb from it (no outputs); notebooks/src/sync.py says more
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.labkit-installed
# JupyterLab refuses to run as root unless told to; it stays bound to 127.0.0.1 either way.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: setup lab test test-fast bench notebooks notebooks-sync clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

lab: setup
	$(BIN)/jupyter lab --ip=127.0.0.1 --notebook-dir=notebooks $(ROOT_FLAG)

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# Unit tests only: no notebooks, no browser.
test-fast: setup
	$(BIN)/python -m pytest -m "not notebook and not browser and not colab"

# Every notebook in quick mode with its time and peak memory.
notebooks: setup
	$(BIN)/python -m labkit.run_notebooks

# Every notebooks/NN_name.ipynb from notebooks/src/NN_name.py; tests/test_notebook_sources.py fails until this runs.
notebooks-sync: setup
	$(BIN)/python notebooks/src/sync.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache outputs
