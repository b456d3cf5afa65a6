# archsearch: two commands on a fresh machine.
#   make demo   set everything up and run an end-to-end search on embedded defaults
#   make test   set everything up and run the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint proto clean

setup: $(STAMP)

# torch first, pinned: a CPU wheel lies on disk; any other version downloads a CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	# py-irt, for the check of the worker's 1PL fit against it (tests/worker/test_irt.py): its
	# pins (typer<0.15, rich<14, pandas<3) would downgrade this environment, so no deps
	$(PIP) install -q pyro-ppl==1.9.2
	$(PIP) install -q --no-deps py-irt==0.7.1 toml ordered-set
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/archsearch demo

# The suite in TEST_PROCS processes (pytest-xdist), each on one thread: most tests wait on
# servers and workers they start, so two processes halve the wall time on two cores.
TEST_PROCS ?= 2

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -ra -n $(TEST_PROCS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Regenerate the gRPC stubs after editing proto/archsearch/v1/*.proto (tests check they match).
proto: $(STAMP)
	$(PY) -m archsearch.server._protogen

clean:
	rm -rf $(VENV) build *.egg-info
