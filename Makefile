# cbir: `make demo` sets everything up and runs the main job; `make test` sets up and tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CIFAR-10 for development and CI lives in ../shared/data when that folder exists.
CBIR_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
export CBIR_DATA_DIR
PYTEST_ARGS ?= -m "not slow"

.PHONY: setup chromium test demo lint format clean

setup: $(VENV)/.installed chromium

# The browser tests drive Debian's chromium (`playwright install` downloads a browser of its
# own, which cannot work here). Installed once, when missing; where it cannot be installed
# (no root, no apt-get) the browser tests are skipped and say why.
chromium:
	@test -x /usr/bin/chromium || { echo "installing chromium for the browser tests (~30 s)" \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	  >/dev/null; } || echo "warning: could not install chromium; browser tests will be skipped"

# Re-install only when the dependency list changes; safe to run again and again.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,tune,ray]'
	touch $@

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The demo: CIFAR-10's training set indexed with the default extractor (the first run takes
# about a minute; later runs find every image already indexed), then the search page.
DEMO_EXTRACTOR ?= gch
demo: setup
	$(BIN)/cbir index cifar10 -c runs/cifar10-$(DEMO_EXTRACTOR) --extractor $(DEMO_EXTRACTOR)
	$(BIN)/cbir serve -c runs/cifar10-$(DEMO_EXTRACTOR)

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: setup
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache build src/*.egg-info
