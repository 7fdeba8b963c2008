# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench chaos completions clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# compat mode: a plain .pth path entry, so start-up pays for no import hook
	$(PY) -m pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
	$(PY) -m compileall -q kctl
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/kctl demo

test: $(STAMP)
	$(VENV)/bin/ruff check kctl tests benchmarks
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check kctl tests benchmarks

bench: $(STAMP)
	$(PY) -m compileall -q kctl
	$(PY) benchmarks/run.py

chaos: $(STAMP)
	$(PY) -m pytest -q -m slow tests/chaos

completions: $(STAMP)
	$(PY) -m kctl.cli.completion_gen completions
	$(PY) -m kctl.cli.completion_gen --commands docs/COMMANDS.md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
