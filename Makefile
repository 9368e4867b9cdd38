# facelink — `make demo` and `make test` set everything up on a fresh machine, then run. `make help` lists the targets.
# Research recipes (training the ladders, benchmarking them) live in benchmarks/research.mk:
# `make -f benchmarks/research.mk help`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The venv is (re)installed when the dependency list changes, and only then.
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# BENCH_ARGS adds options to `make bench`, e.g. BENCH_ARGS="--workers 8", or BENCH_ARGS="--limit 20" for a quick run.
BENCH_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install system-deps demo test lint proto verify-bitexact bench clean edge-binary fuzz

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) \
	  | awk 'BEGIN {FS = ":.*## "} !seen[$$1]++ {printf "  %-27s %s\n", $$1, $$2}'
	@echo "Research recipes (training and benchmarking the ladders): make -f benchmarks/research.mk help"

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 'setuptools>=69,<81' wheel
	# torch first, pinned: pip takes 2.14.1 from this machine's disk where it lies there
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP) system-deps ## the virtual environment in .venv (facelink[test]: edge, cloud, bench) and system-deps

system-deps: ## ffmpeg (Debian package), the classical codecs' encoder: HEVC/x265 for the benchmarks and tests
	@if command -v ffmpeg >/dev/null && ffmpeg -hide_banner -encoders 2>/dev/null | grep -q libx265; then \
	  echo "system-deps: ffmpeg with libx265 is installed"; \
	elif command -v apt-get >/dev/null; then \
	  echo "system-deps: installing ffmpeg (libx265, libaom, libsvtav1, libjxl, libwebp) for the classical codecs"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq ffmpeg >/dev/null; \
	else \
	  echo "system-deps: install ffmpeg built with libx265 (the HEVC baseline of the benchmarks and tests)" >&2; \
	  exit 1; \
	fi

demo: $(STAMP) ## the whole pipeline on loopback: enrol the demo faces; facelink-edge run sends the probes via its outbox
	$(BIN)/facelink demo

test: install ## the test suite
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP) ## ruff (its configuration is in pyproject.toml)
	$(BIN)/ruff check .

proto: $(STAMP) ## regenerate the gRPC Python modules from proto/facelink/v1/facelink.proto
	$(BIN)/python proto/generate.py

verify-bitexact: $(STAMP) ## every LFW image through the edge path and back through the cloud path: 0 mismatches
	$(BIN)/facelink verify-bitexact --dataset lfw --workers 2 --out benchmarks/results/bitexact_lfw.json

# Accuracy versus bytes: LFW View 2 + CelebA test, every classical codec, both protocols and settings, MobileFaceNet
# and SFace -> benchmarks/results/full. About 4 h with --workers 2 on 2 cores (see benchmarks/README.md); resumable
# (cache: runs/bench/cache.sqlite), and with everything cached it only rewrites the report (about 40 s).
bench: install ## the accuracy-versus-bytes benchmark of the classical codecs (hours; BENCH_ARGS="--limit 20": quick)
	$(BIN)/facelink bench run --datasets lfw celeba --recognizers mobilefacenet sface --no-flip-for sface $(BENCH_ARGS)

# The one-file edge binary for a device (build it on the device's architecture: PyInstaller does not cross-build):
# the default rate point and YuNet inside, torch and the cloud excluded, its archive checked for both.
edge-binary: $(STAMP) ## the one-file edge binary dist/facelink-edge (PyInstaller; no torch inside), checked
	@test -x $(BIN)/pyinstaller || $(BIN)/python -m pip install -q -e '.[build]'
	$(BIN)/pyinstaller --noconfirm --clean --log-level WARN --distpath build/edge-binary/dist \
	  --workpath build/edge-binary/work edge/packaging/facelink-edge.spec
	$(BIN)/python edge/packaging/selfextract.py build/edge-binary/dist/facelink-edge dist/facelink-edge
	$(BIN)/python edge/packaging/check_binary.py dist/facelink-edge

# FUZZ_ITERATIONS / FUZZ_SECONDS bound the run; a bounded run is part of make test (tests/test_fuzz_containers.py).
fuzz: $(STAMP) ## fuzz the container parser and entropy decoder at length -> benchmarks/results/fuzz.json
	nice -n 10 $(BIN)/python -m facelink.benchmarks.fuzz_containers --iterations $(or $(FUZZ_ITERATIONS),1000000) \
	  $(if $(FUZZ_SECONDS),--seconds $(FUZZ_SECONDS)) --out benchmarks/results/fuzz.json

clean: ## remove the virtual environment and build leftovers (not runs/ or the benchmark cache)
	rm -rf $(VENV) build *.egg-info .pytest_cache
