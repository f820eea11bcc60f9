# omnibyte: `make demo` sets everything up and runs the main job; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEB_PACKAGES := bible-kjv-text dataset-fashion-mnist espeak-ng sox wamerican chromium

.PHONY: setup system demo test lint clean

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

test: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf runs data $(VENV)
