#!/usr/bin/env bash
# Does GRPO raise held-out accuracy above the SFT model it starts from, on the synthetic world?
# One seed: the evidence experiment's data and vanilla SFT (small-llava-next-seeing, 320 steps),
# then GRPO from it at the settings that learn there (100 steps of 8 prompts x 8 completions,
# temperature 0.7, lr 3e-5), each evaluated greedily on the 96 held-out ICON-QA-shaped questions.
# `scripts/grpo_probe.py` summarises the seeds (paired by seed). About 12 minutes a seed on 2 cores.
#   scripts/grpo_probe.sh SEED [OUT]        (OUT defaults to runs/grpo-probe)
set -euo pipefail
cd "$(dirname "$0")/.."
seed=${1:?usage: scripts/grpo_probe.sh SEED [OUT]}
out=${2:-runs/grpo-probe}
export HF_HUB_OFFLINE=1
scale=(.venv/bin/python -m scale_repro.cli)
data=$out/data
mkdir -p "$out"
exec 9>"$out/.data.lock"
flock 9  # seeds started together write the data once
if [ ! -f "$data/manifest.json" ]; then  # the evidence experiment's task (configs/experiments/synthetic.yaml)
  .venv/bin/python -c "
from scale_repro.data.synth import SynthConfig, write_synthetic
write_synthetic('$data', SynthConfig(seed=0, n_train=2048, n_test=96, grid=2, shapes=['circle', 'square', 'triangle'],
    shuffle_choices=False, shaded_cells=True, train_kinds=['color_at', 'count_color'],
    iconqa_kinds=['color_at', 'count_color'], reasoning_ratio=20.0))"
fi
flock -u 9
sft=$out/seed$seed/sft
"${scale[@]}" sft --model small-llava-next-seeing --data "$data" --output-dir "$sft" --set loss.mode=vanilla \
  --set max_steps=320 --set per_device_train_batch_size=8 --set learning_rate=0.0003 --set warmup_steps=0.0 \
  --set save_steps=1000 --set logging_steps=20 --set seed="$seed"
"${scale[@]}" eval --model "$sft" --task synthetic-iconqa --data "$data" --output-dir "$sft/eval" --set max_new_tokens=200
grpo=$sft/grpo
"${scale[@]}" grpo --model "$sft" --data "$data" --output-dir "$grpo" --max-steps 100 \
  --set per_device_train_batch_size=64 --set num_generations=8 --set temperature=0.7 --set learning_rate=3.0e-5 \
  --set max_completion_length=64 --set logging_steps=5 --set save_steps=1000 --set max_length=1024 --set seed="$seed"
"${scale[@]}" eval --model "$grpo" --task synthetic-iconqa --data "$data" --output-dir "$grpo/eval" --set max_new_tokens=200
