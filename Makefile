# omnibyte: `make demo` sets everything up and runs the main job; `make test` runs the tests;
# `make multimodal` trains and scores the one early-fusion model of every task (about 3 hours on 2 cores).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEB_PACKAGES := bible-kjv-text dataset-fashion-mnist espeak-ng sox wamerican chromium

.PHONY: setup system demo multimodal multimodal-smoke test lint clean

setup: system $(VENV)/.installed

# Debian packages the default data and the task suites come from, and chromium, the browser the web
# page's tests drive (root or sudo needed once).
system:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  echo "installing Debian packages:$$missing"; \
	  $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# torch is pinned to the CPU wheel first so that the package's `torch>=2.4` pulls nothing else.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/omnibyte prepare
	@if [ -d runs/demo/checkpoint ]; then $(BIN)/omnibyte train --resume runs/demo; \
	 else $(BIN)/omnibyte train configs/demo.toml --out runs/demo; fi
	$(BIN)/omnibyte eval runs/demo
	$(BIN)/omnibyte generate runs/demo --prompt "And God said" --max-bytes 300 --seed 0

# The one early-fusion model (issue 22): one mix made by one `omnibyte prepare --mix`, one config, one
# run of 120 training minutes on 2 cores, scored once on the held-out test split (report page:
# runs/mm-cpu-s$(SEED)/report/index.html; results: benchmarks/results_multimodal.md). The step count
# that fills MM_MINUTES here comes from a probe of a few steps, run once (data/mm.steps) and shared by
# every seed; SEED=1 trains the second seed on the same data; an interrupted run continues where it stopped.
# Every MM_ variable can be set on the command line; `make multimodal-smoke` sets them all to a
# few-minute run of the same pipeline (data/mm-smoke, runs/mm-smoke-cpu-s0) that checks it end to end.
SEED ?= 0
MM_NAME ?= mm
MM_MINUTES ?= 120
MM_STEPS ?=
MM_TEXT_SHARE ?= kjv:1.0
MM_TASKS ?= clocks:20000,shapes:12000,fashion:40000,speech:16000
MM_HELDOUT ?= clocks:500,shapes:1000,fashion:5000,speech:1000
MM_TRAIN_ARGS ?=
MM_SCORE_ARGS ?=
MM_RESULTS ?= benchmarks/results_multimodal.md
MM_OPTS := --task-opt clocks.question_last=true --task-opt shapes.question_last=true --task-opt shapes.describe=true \
	--task-opt shapes.locate=true --task-opt fashion.question_last=true --task-opt speech.question_last=true
MM_PREPARE := $(BIN)/omnibyte prepare --mix $(MM_TEXT_SHARE),$(MM_TASKS) --heldout $(MM_HELDOUT) $(MM_OPTS) \
	--out data/$(MM_NAME)
# the mix's very text (the same chapters in train, val and test): the text-only baseline's data
MM_TEXT := $(BIN)/omnibyte prepare --mix $(MM_TEXT_SHARE) --out data/$(MM_NAME)-text
MM_RUN := runs/$(MM_NAME)-cpu-s$(SEED)

multimodal: setup
	@if [ "$$(cat data/$(MM_NAME).cmd 2>/dev/null)" != '$(MM_PREPARE)' ]; then \
	  $(MM_PREPARE) && echo '$(MM_PREPARE)' > data/$(MM_NAME).cmd; fi
	@if [ "$$(cat data/$(MM_NAME)-text.cmd 2>/dev/null)" != '$(MM_TEXT)' ]; then \
	  $(MM_TEXT) && echo '$(MM_TEXT)' > data/$(MM_NAME)-text.cmd; fi
	@if [ -n "$(MM_STEPS)" ]; then echo $(MM_STEPS) > data/$(MM_NAME).steps; \
	 elif [ ! -s data/$(MM_NAME).steps ]; then $(BIN)/python -m benchmarks.multimodal_run --steps-for $(MM_MINUTES) \
	  configs/multimodal-cpu.toml --data data/$(MM_NAME) > data/$(MM_NAME).steps; fi
	@if [ -d $(MM_RUN)/checkpoint ]; then $(BIN)/omnibyte train --resume $(MM_RUN); \
	 else steps=$$(cat data/$(MM_NAME).steps); $(BIN)/omnibyte train configs/multimodal-cpu.toml --out $(MM_RUN) \
	  --data data/$(MM_NAME) --train.seed $(SEED) --train.steps $$steps \
	  --train.task_eval_every $$(( steps >= 8 ? steps / 8 : steps )) $(MM_TRAIN_ARGS); fi
	$(BIN)/python -m benchmarks.multimodal_run $(MM_RUN) --text-data data/$(MM_NAME)-text \
	  --results $(MM_RESULTS) $(MM_SCORE_ARGS)

# The same pipeline at smoke size (nothing is learned; an untrained model's answers run to their
# length limit, so most of its minutes go to answering): small task counts, 4 steps, one task-curve
# point of 1 validation example per kind, 1 test example per kind, 2 drawings, a judge trained on
# 2,000 images (cached apart from the real one), results in the run folder, not in benchmarks/.
multimodal-smoke:
	$(MAKE) multimodal MM_NAME=mm-smoke MM_TEXT_SHARE=kjv:0.01 MM_TASKS=clocks:30,shapes:30,fashion:60,speech:20 \
	  MM_HELDOUT=clocks:4,shapes:8,fashion:16,speech:8 MM_STEPS=4 \
	  MM_TRAIN_ARGS="--train.task_eval_n 1 --train.eval_every 2 --train.eval_batches 1 --train.save_every 2 \
	  --train.warmup_steps 1" \
	  MM_SCORE_ARGS="--limit 1 --draws 2 --show 1 --judge-images 2000" MM_RESULTS=runs/mm-smoke-cpu-s$(SEED)/results.md

test: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf runs data $(VENV)
