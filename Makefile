# scale-repro: the two commands a fresh machine needs are `make demo` and `make test`.
SHELL := /bin/bash
UV_VERSION := 0.13.9
VENV := .venv
PY := $(VENV)/bin/python
SCALE := $(VENV)/bin/scale
# uv reads only uv.lock: no find-links folder or pip.conf can slip a different torch build in.
export UV_PYTHON_DOWNLOADS := never
export UV_NO_CONFIG := 1
export PIP_FIND_LINKS :=
# Offline by design: nothing below reaches the model hub.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")

.PHONY: setup setup-gpu test test-fast demo lint reproduce-table1 reproduce-table2 reproduce-table3 evidence bench bench-gpu gpu-check gpu-check-cpu gpu-wheels clean

$(VENV)/.synced: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) sync --frozen
	@touch $@

setup: $(VENV)/.synced

# GPU machines: the same lock plus vLLM.
setup-gpu:
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) sync --frozen --extra vllm

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check scale_repro tests scripts
	$(VENV)/bin/ruff format --check scale_repro tests scripts

demo: setup
	$(SCALE) demo

reproduce-table1: setup
	$(SCALE) reproduce --table 1

reproduce-table2: setup
	$(SCALE) reproduce --table 2

reproduce-table3: setup
	$(SCALE) reproduce --table 3

# The controlled CPU experiment (configs/experiments/synthetic.yaml); report in results/evidence/.
evidence: setup
	$(SCALE) reproduce --experiment synthetic --jobs 2 --out runs/evidence --results results/evidence

bench: setup
	$(PY) scripts/bench_sft_loss.py
	$(PY) scripts/bench_grpo.py
	$(PY) -m scale_repro.cli bench

# On a GPU machine (`make setup-gpu`): the paper's Qwen2.5-VL-3B at full size, random-init from its
# vendored widths (no download), at its model recipe's settings and 448 px; `scale plan` then uses
# the measured throughput.
bench-gpu:
	$(PY) -m scale_repro.cli bench --model qwen2.5-vl-3b --random-init --out results/bench/gpu.json

# The GPU check (scripts/gpu_check.sh): SFT with ZeRO-2, GRPO, batched evaluation and the bench on
# one GPU, one JSON out; gpu-check-cpu is its CPU mode (the test suite runs it too). gpu-wheels
# fills ./wheels with what a GPU machine without network lacks.
gpu-check:
	scripts/gpu_check.sh

gpu-check-cpu: setup
	scripts/gpu_check.sh --cpu --out results/bench/gpu_check_cpu

gpu-wheels: setup
	scripts/gpu_wheels.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
