# cbir: `make demo` sets everything up and runs the main job; `make test` sets up and tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CIFAR-10 for development and CI lives in ../shared/data when that folder exists.
CBIR_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
export CBIR_DATA_DIR
PYTEST_ARGS ?= -m "not slow"

.PHONY: setup test demo lint format clean

setup: $(VENV)/.installed

# Re-install only when the dependency list changes; safe to run again and again.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: setup
	$(BIN)/cbir benchmark cifar10 --extractor gch --out runs/cifar10-gch

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: setup
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache build src/*.egg-info
