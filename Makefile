# Two commands from a fresh clone: `make demo` (prepare -> train adamw/ema/pace -> compare,
# on CPU or GPU) and `make test` (the whole suite, CPU-only; the tests need no network).
PYTHON ?= python3
VENV ?= .venv

$(VENV)/installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

# the tests need more: pytest, matplotlib for the plots, transformers for the reference model
$(VENV)/installed-dev: $(VENV)/installed requirements-dev.txt
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

# the demo draws its curves with matplotlib, which training does not need
$(VENV)/installed-plots: $(VENV)/installed
	$(VENV)/bin/pip install --quiet "matplotlib>=3.7"
	touch $@

.PHONY: test
test: $(VENV)/installed-dev
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile  # two workers, each test file in one of them

.PHONY: demo
demo: $(VENV)/installed-plots
	$(VENV)/bin/python demo.py

# Not part of `make test`: downloads every torch release (GBs) and runs the pace and compile
# tests under each, one virtual environment at a time.
.PHONY: torch-versions
torch-versions:
	$(PYTHON) -m tools.torch_versions
