# `make test` and `make demo` work on a fresh machine: they create .venv, install, and run.
PYTHON ?= python3
# pytest-xdist workers: two keep both cores of the CI machine busy (each test module runs whole in one worker, so
# its module fixtures are built once); the compiled-program cache (tests/conftest.py) is shared by the workers.
TEST_WORKERS ?= 2
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# the demo needs the library only (no torch, no test tools): 1 min 27 s to install with pip's cache warm, against
# 2 min 15 s for the dev install (2-core CPU machine, 2026-12-07)
CORE_STAMP := $(VENV)/.installed-core

.PHONY: test demo install lint clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: it is the CPU build on this machine, so pip never pulls a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

$(CORE_STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $(CORE_STAMP)

install: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

demo: $(CORE_STAMP)
	$(VENV)/bin/insightv-demo --workdir=demo_out

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) demo_out .pytest_cache
