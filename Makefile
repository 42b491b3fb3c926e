# The two commands of the README:
#   make demo   shows the operator scaling a Deployment 0 -> N -> 0 on a real Redis backlog,
#               against a real kube-apiserver, all on this machine
#   make test   everything CI runs: venv + dev extra, the test bench, ruff, mypy, pytest
# Both install what is missing first; a warm machine starts in seconds.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: test demo venv bench lint typecheck pytest clean

test: bench lint typecheck pytest

demo: bench
	$(PY) -m tests.testbed demo

venv: $(INSTALLED)

# Re-install whenever pyproject.toml changes; pip's own cache keeps that quick.
$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "autoscale needs Python 3.11 or later; set PYTHON=")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

bench: $(INSTALLED)
	$(PY) -m tests.testbed install

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(INSTALLED)
	$(VENV)/bin/mypy

# Two workers (pytest-xdist): most of the suite waits on real processes, not on the CPU.
# tests/conftest.py says which tests share a worker.
pytest: $(INSTALLED)
	$(PY) -m pytest -n 2 --dist loadgroup

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
