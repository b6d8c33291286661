# cbir: `make demo` sets everything up and runs the main job; `make test` sets up and tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CIFAR-10 for development and CI lives in ../shared/data when that folder exists.
CBIR_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
export CBIR_DATA_DIR
PYTEST_ARGS ?= -m "not slow"

.PHONY: setup chromium test test-vision demo lint format clean

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

# User-supplied torchvision / timm networks. PyPI's torchvision fails to load beside the CPU
# torch 2.13.0 of .venv, so they are tested in an environment of their own: torch 2.14.1 and
# torchvision 0.29.1 (pip takes both from this machine's disk, ~5.5 GB), timm, and the
# project's other dependencies (everything but torch, read from pyproject.toml).
VISION_VENV := .venv-vision
$(VISION_VENV)/.installed: pyproject.toml
	test -x $(VISION_VENV)/bin/python || $(PYTHON) -m venv $(VISION_VENV)
	$(VISION_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VISION_VENV)/bin/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1 timm
	$(VISION_VENV)/bin/python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
	  print("\n".join(r for r in p["dependencies"] if not r.startswith("torch")))' \
	  > $(VISION_VENV)/requirements.txt
	$(VISION_VENV)/bin/python -m pip install --quiet -r $(VISION_VENV)/requirements.txt pytest
	$(VISION_VENV)/bin/python -m pip install --quiet --no-deps -e .
	touch $@

test-vision: $(VISION_VENV)/.installed
	CBIR_EXPECT_TORCHVISION=1 $(VISION_VENV)/bin/python -m pytest -p no:cacheprovider \
	  tests/features/cnn/test_zoo_models.py

# The demo: CIFAR-10's training set indexed with its best committed setting (the first run
# takes about two minutes on 2 cores; later runs find every image already indexed), then the
# search page.
DEMO_EXTRACTOR ?= cnn-committee
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
	rm -rf $(VENV) $(VISION_VENV) runs .pytest_cache build src/*.egg-info
