# Two entry points: `make report` (the main job) and `make test` (CI). Both build .venv first.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PRESET ?= quick
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONUNBUFFERED := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv data test unit report book clean-quick

venv: $(STAMP)

# Recreated whenever the dependency files change; the lock pins every package.
$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $@

data: $(STAMP)
	$(PY) -m planner data

unit: $(STAMP)
	$(PY) -m pytest -q

test: $(STAMP) data unit

book: $(STAMP)
	$(VENV)/bin/jupyter-book build . -W --keep-going

report: $(STAMP) data book

clean-quick:
	rm -rf results/quick
