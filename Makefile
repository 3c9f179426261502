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
	$(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder

# Two lanes of experiments run side by side: each process leaves a core idle while XLA compiles or runs small ops,
# and assumptions and corollaries (after arithmetic in its lane) reuse the fine-tunes it cached. Each process keeps
# XLA's default threads, so the numbers are the bytes a one-at-a-time run writes.
LANE_A := arithmetic assumptions corollaries
LANE_B := ood scaling digits

reproduce: $(STAMP)
	@lane() { for e in "$$@"; do echo "== $$e"; $(PY) experiments/$$e.py out_dir=results/$$e || return 1; done; }; \
	lane $(LANE_A) & a=$$!; lane $(LANE_B) & b=$$!; \
	wait $$a; ra=$$?; wait $$b; rb=$$?; [ $$ra -eq 0 ] && [ $$rb -eq 0 ]
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
