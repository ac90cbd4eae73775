#!/usr/bin/env bash
# The GPU check: one script for one lent GPU (H200, 141 GB; no network; its own torch), at most
# about 8 minutes. It runs, in order:
#   1. the gpu-check experiment (configs/experiments/gpu-check.yaml) under the accelerate launcher:
#      Qwen2.5-VL-3B at full size, random-init from vendored widths (no download), SCALe-SFT at its
#      model recipe (LoRA, bf16, gradient checkpointing, DeepSpeed ZeRO-2), SCALe-GRPO (vLLM
#      colocated if it imports, else transformers generation), batched evaluation of both;
#   2. `scale bench` of the same model at its recipe's settings;
# and writes one JSON (OUT/gpu_check.json) with every step's status and seconds and every stage's
# figures; the bench result goes to results/bench/gpu.json, which `scale plan` then uses.
#
#   scripts/gpu_check.sh [--cpu] [--out DIR]
#
# --cpu: the same steps on tiny-qwen2.5-vl with one CPU process per training stage, as the test
# suite runs it so the script does not rot (DeepSpeed on CPUs: tests/test_deepspeed.py).
# Packages the GPU machine lacks (TRL, PEFT, DeepSpeed without compiled ops, lmms-eval) are
# installed from ./wheels when they do not import (`make gpu-wheels` fills that folder).
set -uo pipefail
cd "$(dirname "$0")/.."

mode=gpu
out=results/bench/gpu_check
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) mode=cpu; shift ;;
    --out) [ $# -ge 2 ] || { echo "usage: scripts/gpu_check.sh [--cpu] [--out DIR]" >&2; exit 2; }; out=$2; shift 2 ;;
    *) echo "usage: scripts/gpu_check.sh [--cpu] [--out DIR]" >&2; exit 2 ;;
  esac
done

PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 DS_BUILD_OPS=0
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$(dirname "$PY"):$PATH"  # the launcher's `accelerate` beside the interpreter

if ! "$PY" -c "import trl, peft, deepspeed, lmms_eval, accelerate" 2>/dev/null && ls wheels/*.whl >/dev/null 2>&1; then
  # --no-deps: what is left out of ./wheels is either there already or not imported by the check.
  "$PY" -m pip install --quiet --no-index --no-deps wheels/*.whl || exit 1
fi

mkdir -p "$out"
steps="$out/steps.tsv"
: > "$steps"
step() {  # step NAME COMMAND...: run it, log to OUT/NAME.log, record exit status and seconds
  local name=$1 started status
  shift
  started=$(date +%s%N)
  echo "== $name: $*"
  "$@" > "$out/$name.log" 2>&1
  status=$?
  printf '%s\t%s\t%s\n' "$name" "$status" "$(( ($(date +%s%N) - started) / 1000000 ))e-3" >> "$steps"
  [ "$status" -eq 0 ] || tail -n 20 "$out/$name.log"
}

if [ "$mode" = gpu ]; then
  model=qwen2.5-vl-3b-random
  launcher=(--launcher accelerate --gpus 1 --gpus-per-stage 1)
  bench=(--model qwen2.5-vl-3b --random-init --steps 4 --out results/bench/gpu.json)
  bench_json=results/bench/gpu.json
else
  model=tiny-qwen2.5-vl
  launcher=(--launcher accelerate --cpu-processes 1)
  bench=(--model tiny-qwen2.5-vl --steps 3 --image-size 64 --out "$out/bench.json")
  bench_json=$out/bench.json
fi

step imports "$PY" -c "import torch, transformers, trl, peft, deepspeed, lmms_eval, scale_repro; print(torch.__version__, transformers.__version__, trl.__version__)"
step build "$PY" -m scale_repro.cli models build "$model"
step experiment "$PY" -m scale_repro.cli reproduce --experiment gpu-check --model "$model" "${launcher[@]}" --out "$out/experiment"
rm -f "$bench_json"  # a failed bench must not leave an older result in the summary (or in `scale plan`)
step bench "$PY" -m scale_repro.cli bench "${bench[@]}"
"$PY" -m scale_repro.sizing.gpu_check "$steps" "$out/experiment" "$bench_json" "$out/gpu_check.json"
