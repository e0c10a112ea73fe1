# Set-up and entry points. Every target is idempotent: the install step re-runs
# only when pyproject.toml changes (or the venv is missing).
PYTHON ?= python3
VENV ?= .venv
# The torch put into a venv that has none; a torch already there (say a CUDA build
# installed first) is kept, and the project install then only holds it to pyproject's
# range. torch==2.13.0 is a CPU wheel on the reference machines' local disk (their pip
# configuration finds it); plain PyPI serves a CUDA build for Linux under that version.
# TORCH_INDEX, if set, is the index for this one install, e.g.
# https://download.pytorch.org/whl/cpu (CPU) or https://download.pytorch.org/whl/cu128.
# Nothing here installs torchvision (docs/STACK.md).
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.install-stamp
PYTEST_ARGS ?=

.PHONY: install demo serve test test-slow lint bench

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c 'import importlib.metadata as m; print("keeping torch", m.version("torch"))' \
		2>/dev/null || $(PY) -m pip install --quiet \
		$(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)") "$(TORCH_SPEC)"
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
