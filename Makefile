# ecgret: one entry point per job. Each target makes the virtual environment it needs.
PYTHON ?= python3.11
DEV := .venv
DEVICE := .venv-device
TFLITE := .venv-tflite
PIP_FLAGS ?= -q

.PHONY: demo test test-fast test-tflite lint lint-all teacher bundle evaluate bench wheel pi-check clean

# --- environments -------------------------------------------------------------------------
$(DEVICE)/.ok: pyproject.toml
	$(PYTHON) -m venv $(DEVICE)
	$(DEVICE)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(DEVICE)/bin/pip install $(PIP_FLAGS) -e .
	touch $@

# The workstation/test environment: device runtime + convert (TensorFlow) + text (CPU torch) + test tools.
# torch is pinned to a CPU build first so that sentence-transformers does not pull CUDA wheels.
$(DEV)/.ok: pyproject.toml
	$(PYTHON) -m venv $(DEV)
	$(DEV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(DEV)/bin/pip install $(PIP_FLAGS) "torch==2.13.0" || $(DEV)/bin/pip install $(PIP_FLAGS) "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
	$(DEV)/bin/pip install $(PIP_FLAGS) -e ".[convert,text,test,bench]"
	touch $@

# The classic interpreter (what 32-bit Pi OS uses): tflite-runtime 2.14 with numpy<2.
$(TFLITE)/.ok: pyproject.toml
	$(PYTHON) -m venv $(TFLITE)
	$(TFLITE)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(TFLITE)/bin/pip install $(PIP_FLAGS) "tflite-runtime==2.14.0" "numpy<2" scipy annoy pyserial click pytest
	$(TFLITE)/bin/pip install $(PIP_FLAGS) --no-deps -e .
	touch $@

# --- jobs ---------------------------------------------------------------------------------
demo: $(DEVICE)/.ok            ## the main job: simulated board -> 10 s of a real ECG -> retrieval
	$(DEVICE)/bin/ecgret demo

test: $(DEV)/.ok $(TFLITE)/.ok ## the whole test suite, both interpreters
	$(DEV)/bin/python -m pytest -q tests
	$(TFLITE)/bin/python -m pytest -q -p no:cacheprovider tests/test_tflite_runtime.py tests/test_golden_answers.py

test-fast: $(DEV)/.ok
	$(DEV)/bin/python -m pytest -q -x -m "not slow" tests

# the package code CI keeps clean (.ci/run runs this before the tests); `make lint-all` adds tests/ and benchmarks/
LINT_PATHS := edge firmware_bridge convert
lint: $(DEV)/.ok               ## ruff (lint, format) and mypy on the package code, as configured in pyproject.toml
	$(DEV)/bin/ruff check $(LINT_PATHS)
	$(DEV)/bin/ruff format --check $(LINT_PATHS)
	$(DEV)/bin/mypy

lint-all: $(DEV)/.ok           ## ruff over everything (tests and benchmarks are not yet clean)
	$(DEV)/bin/ruff check $(LINT_PATHS) tests benchmarks

teacher: $(DEV)/.ok            ## train the default teacher -> runs/teacher/rhythm (resumes if interrupted)
	$(DEV)/bin/ecgret-convert train-teacher --config configs/teacher.toml

bundle: $(DEV)/.ok             ## teacher (reused if trained) -> student -> int8 -> index -> edge/bundles/default
	$(DEV)/bin/ecgret-convert pipeline --config configs/default.toml

bench: $(DEVICE)/.ok           ## the latency benchmark of EVALUATION.md on the default bundle
	$(DEVICE)/bin/ecgret bench

evaluate: $(DEV)/.ok
	$(DEV)/bin/ecgret-convert evaluate

wheel: $(DEVICE)/.ok           ## the wheel a Pi installs (bundle, sample records, configs inside) -> dist/
	$(DEVICE)/bin/pip wheel $(PIP_FLAGS) . --no-deps -w dist

# Release check (root, x86_64 Debian host, 17.5 min with the root filesystems cached, +15 min to build them; README "Emulated Raspberry Pi check"): the wheel on Debian 12
# arm64 and armhf under qemu-user must give the x86 answers bit for bit. Root filesystems cached in /var/cache/ecgret-pi.
pi-check: $(DEVICE)/.ok wheel  ## the wheel on emulated Pi userlands (arm64, armhf, 32-bit on a 64-bit kernel) vs x86
	$(DEVICE)/bin/python benchmarks/pi_check.py     # installs the newest dist/ecgret-*.whl (just written)

clean:
	rm -rf $(DEV) $(DEVICE) $(TFLITE) build dist *.egg-info .pytest_cache
