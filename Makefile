# The two commands of the README. Both set everything up themselves and are idempotent:
#   make quickstart   # venv + install + Fashion-MNIST, then the quickstart benchmark into local_results/,
#                     # compared with the published results/ (publish: fpbench run ... paths.results_dir=results)
#   make test         # venv + install, ruff, mypy (make typecheck), then the default test suite, then its numerics-sensitive part
#                     # again on other CPU kernels (test-cpu-capability)
# On a machine with a GPU nothing changes: Lightning's accelerator=auto picks it up.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup data quickstart test typecheck test-cpu-capability test-all perf lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# Fashion-MNIST: Debian's package installs the standard IDX files; elsewhere put them in data/fashion_mnist/
# or pass data.download=true to let torchvision fetch them.
data:
	@if [ -f $(FMNIST) ] || [ -f data/fashion_mnist/train-images-idx3-ubyte.gz ]; then \
		echo "Fashion-MNIST: found"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -q dataset-fashion-mnist >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null); \
	else \
		echo "Fashion-MNIST not found: run 'sudo apt-get install dataset-fashion-mnist', copy the IDX files into data/fashion_mnist/, or add data.download=true"; \
	fi

quickstart: setup data
	$(BIN)/fpbench run recipes/quickstart.yaml

test: setup data
	$(BIN)/ruff check bench datamodules tests
	@$(MAKE) --no-print-directory typecheck
	$(BIN)/python -m pytest -q
	@$(MAKE) --no-print-directory test-cpu-capability

# The tests whose outcomes come from trained weights, again with the CPU kernels least like the host's:
# PyTorch's own without SIMD, oneDNN's convolutions at SSE4.1, MKL's matrix products in its compatible
# mode. Floats differ with the CPU (AVX2 vs AVX-512, Intel vs AMD), so an outcome that sits on a float
# edge passes on one machine and fails on another: a second kernel set shows it here. Any x86-64 CPU
# runs these (oneDNN at SSE4.1 reproduced the AVX-512 Xeon's ADV-TRA failure of issue 24; ATen's alone did not).
CPU_KERNELS := ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_CBWR=COMPATIBLE
CPU_KERNEL_TESTS := tests/methods tests/zoo tests/test_training.py

test-cpu-capability: setup data
	$(CPU_KERNELS) $(BIN)/python -m pytest -q $(CPU_KERNEL_TESTS)

test-all: setup data
	$(BIN)/python -m pytest -q -m "slow or not slow"

perf: setup data
	$(BIN)/python -m pytest -q -m perf -s

lint: setup
	$(BIN)/ruff check bench datamodules tests

# mypy on the public modules pyproject.toml's [tool.mypy] lists (docs/architecture.md, style rule 8).
typecheck: setup
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .cache zoo
