# Every target creates .venv and installs the pinned environment when it is missing or out of date.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONHASHSEED := 0
# Installation byte-compiles no installed file (uv's default; pip's --no-compile, for uv itself and wherever pip
# installs); Python writes the byte-code of what is imported on first import instead, which an inherited
# PYTHONDONTWRITEBYTECODE would forbid (each of the test suite's ~100 processes would then recompile its imports, ~3 s
# each).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: test test-fast reproduce claims figures bench lint clean

# uv (pinned in the lock) installs the pinned environment: ~4 s from its cache against pip's ~23 s, the same packages
# at the same versions. Files are copied, not hard-linked to uv's cache, so that editing an installed file cannot
# change the cache. uv reads none of pip's settings (an index mirror, find-links, constraints, certificates): wherever
# it cannot install, pip does, saying so; `make UV= test` (or any target) installs with pip alone where it installs
# (no .venv, or a changed lock or pyproject.toml), for a machine whose pip settings must be followed.
UV ?= $(VENV)/bin/uv
PIP := $(PY) -m pip install -q --disable-pip-version-check --no-compile
install = { test -x "$(UV)" && $(UV) pip install -q --link-mode=copy --python $(PY) $(1); } \
	|| { echo "pip installs $(1)"; $(PIP) $(1); }
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(if $(UV),uv=$$(grep -m1 '^uv==' requirements.lock) && $(PIP) "$$uv" || echo "uv not installed")
	$(call install,-r requirements.lock)
	$(call install,--no-deps -e .)
	touch $@

# The whole suite on both cores: whole files per worker, the longest end-to-end files first (tests/conftest.py). A
# worker that dies (a crash, or pyproject's time limit) is not replaced: under --dist loadfile, pytest-xdist 3.8 gives
# a replacement the test its predecessor died on, again, until the restarts run out (tests/test_harness.py).
test: $(STAMP)
	$(PY) -m pytest -n 2 --max-worker-restart=0 --dist loadfile --no-loadscope-reorder

# The unit tests alone (no experiment run end to end), about 2 minutes.
test-fast: $(STAMP)
	$(PY) -m pytest -n 2 --max-worker-restart=0 -m "not slow"

# Every experiment of the registry into results/, scheduled on two lanes (tvtheory/reproduce.py), then every verdict
# merged into results/claims.json, results/CLAIMS.md and the README's table.
reproduce: $(STAMP)
	$(PY) -m tvtheory.reproduce results

claims: $(STAMP)
	$(PY) -m tvtheory.claims results

figures: $(STAMP)
	$(PY) -m tvtheory.plots results

# W1-W3 against the PyTorch baseline in one run (torch is installed here when missing, so the ratio is always there;
# each of its three runs next to one of W1's), the matmul peak and each workload's share of it.
bench: $(STAMP)
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) -c requirements.lock torch==2.13.0
	$(PY) bench/run.py

lint: $(STAMP)
	$(PY) -m ruff check tvtheory experiments tests bench conf

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
