# ImageQuant: `make demo` runs the whole chain on generated sample data; `make test` runs the tests.
# Both set up what they need on a fresh Debian machine (as root): Tesseract and Java via apt when
# missing, a virtualenv in .venv with the pinned Python packages. A second run installs nothing.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml 2>/dev/null | sha1sum | cut -c1-12)
DEMO_DIR ?= demo-output
DEMO_IMAGES ?= 240
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export OMP_THREAD_LIMIT ?= 1
export PYSPARK_PYTHON := $(abspath $(PY))

.PHONY: setup system-deps venv demo test lint bench clean help

help:
	@echo "make demo   - set up, then extract/train/predict/evaluate on generated sample data"
	@echo "make test   - set up, then run the test suite"
	@echo "make lint   - ruff check"
	@echo "make bench  - run the benchmarks and refresh the README table"

setup: system-deps venv

# apt only when a tool is missing, so a second run starts at once.
system-deps:
	@missing=""; \
	command -v tesseract >/dev/null 2>&1 || missing="$$missing tesseract-ocr tesseract-ocr-eng"; \
	command -v java >/dev/null 2>&1 || missing="$$missing JAVA"; \
	$(PYTHON) -c 'import venv, ensurepip' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "[setup] installing with apt:$$missing"; \
	  $(SUDO) apt-get update -q || exit 1; \
	  pkgs=$$(echo $$missing | sed 's/JAVA//'); \
	  if echo "$$missing" | grep -q JAVA; then \
	    if apt-cache show openjdk-17-jre-headless >/dev/null 2>&1; then pkgs="$$pkgs openjdk-17-jre-headless"; \
	    else pkgs="$$pkgs default-jre-headless"; fi; \
	  fi; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$pkgs || exit 1; \
	fi

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@[ -x $(PY) ] || { echo "[setup] creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "[setup] installing Python packages (pinned in requirements.txt)"
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# RapidOCR without its opencv-python requirement: opencv-python-headless (in requirements.txt) needs no libGL.
	$(PY) -m pip install -q --no-deps rapidocr-onnxruntime==1.4.4
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

demo: setup
	@bash scripts/demo.sh "$(DEMO_DIR)" "$(DEMO_IMAGES)"

test: setup
	$(PY) -m pytest -q tests

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) bench/run_all.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache build
