# Every target creates .venv and installs the pinned environment when it is missing or out of date.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONHASHSEED := 0

.PHONY: test reproduce figures bench lint clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile

EXPERIMENTS := arithmetic ood corollaries scaling digits

reproduce: $(STAMP)
	@for e in $(EXPERIMENTS); do echo "== $$e"; $(PY) experiments/$$e.py out_dir=results/$$e || exit 1; done
	$(PY) -m tvtheory.results results

figures: $(STAMP)
	$(PY) -m tvtheory.plots results

bench: $(STAMP)
	$(PY) bench/run.py

lint: $(STAMP)
	@if $(PY) -m ruff --version >/dev/null 2>&1; then $(PY) -m ruff check tvtheory experiments tests; \
	else echo "lint: ruff is not installed (pip install ruff); nothing to run"; fi

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
