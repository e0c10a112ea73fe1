# Set-up and entry points. Every target is idempotent: the install step re-runs
# only when pyproject.toml changes (or the venv is missing).
PYTHON ?= python3
VENV ?= .venv
# Which torch to install. The default is the CPU wheel these CPU machines carry;
# on a GPU machine set e.g. TORCH_SPEC='torch==2.13.0' from a CUDA index.
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.install-stamp
PYTEST_ARGS ?=

.PHONY: install demo serve test test-slow lint bench clean-home

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[orchestrate,dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/mmr1 demo

# Prefect server + UI, a process worker, the deployments and an MLflow server (Ctrl-C stops).
serve: install
	$(VENV)/bin/mmr1 serve

test: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# pytest exits 5 when no test is marked slow: not a failure.
test-slow: install
	$(PY) -m pytest -m slow $(PYTEST_ARGS) || [ $$? -eq 5 ]

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: install
	for script in bench/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done
