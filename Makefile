# torchxc developer commands. `make bench` and `make test` set everything up on a fresh machine.
#   TORCH_SPEC   the torch to install into .venv (default torch==2.13.0; a CUDA build comes from your index)
#   PYTHON       use this interpreter instead of creating .venv (e.g. one that already has a CUDA torch)
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
PYTHON ?= $(VENV)/bin/python
STAMP := $(dir $(PYTHON)).torchxc-deps

.PHONY: setup build test bench bench-cpu lint device-prep gpu-check cuda-compile-check cmake-check sanitize-check ci clean

setup: $(STAMP) build

$(STAMP): requirements-dev.txt
	@if [ "$(PYTHON)" = "$(VENV)/bin/python" ] && [ ! -x $(PYTHON) ]; then python3 -m venv $(VENV); fi
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "$(TORCH_SPEC)"
	$(PYTHON) -m pip install -r requirements-dev.txt
	@touch $@

# Incremental: ninja reuses ./build, so an unchanged tree rebuilds in seconds.
build: $(STAMP)
	$(PYTHON) -m pip install --no-build-isolation --no-deps -q .

test: setup
	$(PYTHON) -m pytest tests -q -p no:cacheprovider

# The benchmark suite against pure-PyTorch baselines: CPU, plus CUDA when a GPU is present.
bench: setup
	$(PYTHON) benchmarks/run_all.py

bench-cpu: setup
	$(PYTHON) benchmarks/run_all.py --device cpu

# Static checks of the Python code: undefined names, unused imports, syntax errors.
lint: $(STAMP)
	$(PYTHON) -m ruff check --select F,E9 --line-length 120 python benchmarks tests tools

# Here, before a device call (no GPU needed): the CUDA library for the device's torch into .prebuilt/, wheels into .whl/.
device-prep:
	tools/build_for_device.sh

# On a GPU machine: build with CUDA, full tests, compute-sanitizer, benchmarks; results under $$OUT.
gpu-check:
	PYTHON=$(if $(filter $(VENV)/bin/python,$(PYTHON)),python3,$(PYTHON)) tools/gpu_check.sh

# Compile (not run) every .cu file against the installed torch headers; needs nvcc, no GPU.
cuda-compile-check: $(STAMP)
	PYTHON=$(PYTHON) tools/check_cuda_compile.sh

# Build the same sources as a LibTorch library with CMake (C++ users).
cmake-check: $(STAMP)
	PYTHON=$(PYTHON) tools/cmake_check.sh

# The CPU tests against an AddressSanitizer + UBSan build of the kernels (a copy under build/sanitize; no GPU needed).
sanitize-check: $(STAMP)
	PYTHON=$(PYTHON) tools/sanitize_check.sh

ci: test lint cuda-compile-check cmake-check sanitize-check

clean:
	rm -rf build dist *.egg-info python/torchxc/*.so gpu-check-out
