# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
# PyTorch build: CUDA where nvidia-smi works, otherwise the CPU build (never CUDA wheels).
# Override with e.g. `make TORCH_SPEC="torch==2.5.1" TORCH_PIP_ARGS="--index-url URL" test`.
TORCH_CPU_SPEC  ?= torch==2.13.0+cpu
TORCH_CUDA_SPEC ?= torch
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_PIP_ARGS  ?=
DEMO_MINUTES ?= 3
DEMO_DATA    ?= data/python-stdlib
DEMO_RUN     ?= checkpoints/demo

.PHONY: install test test-fast lint format demo bench clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if $(PY) -c "import torch" 2>/dev/null; then \
		echo "torch already installed: $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	elif [ -n "$(TORCH_SPEC)" ]; then \
		$(PIP) install -q "$(TORCH_SPEC)" $(TORCH_PIP_ARGS); \
	elif nvidia-smi >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: installing a CUDA build of torch"; \
		$(PIP) install -q "$(TORCH_CUDA_SPEC)" $(TORCH_PIP_ARGS); \
	else \
		echo "no NVIDIA GPU: installing the CPU build of torch"; \
		$(PIP) install -q "$(TORCH_CPU_SPEC)" $(TORCH_PIP_ARGS) 2>/dev/null || \
		$(PIP) install -q torch --index-url $(TORCH_CPU_INDEX); \
	fi
	$(PIP) install -q -e ".[test,syntax,tensorboard,svg,lint]"  # the extras too, so the tests cover them
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q

# The suite without the tests marked slow (those that start processes).
test-fast: install
	$(PY) -m pytest -q -m "not slow"

# ruff as pyproject.toml configures it: the linter, and the formatter as a check (CI runs this before the tests).
lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Rewrite the code to pass `make lint` where a tool can: the linter's safe fixes (import order, pyupgrade),
# then the formatter; what is left (a long string, zip without strict=) the linter lists for a person to fix.
format: install
	$(PY) -m ruff check --fix --exit-zero .
	$(PY) -m ruff format .

demo: install
	DEMO_MINUTES=$(DEMO_MINUTES) DEMO_DATA=$(DEMO_DATA) DEMO_RUN=$(DEMO_RUN) PY=$(PY) bash scripts/demo.sh

bench: install
	$(PY) bench/ingest_speed.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
