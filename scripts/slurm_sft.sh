#!/usr/bin/env bash
# SCALe SFT on one node of 8 GPUs with DeepSpeed ZeRO-2.
# Usage: sbatch scripts/slurm_sft.sh MODEL LOSS DATA [extra scale sft options]
#SBATCH --job-name=scale-sft
#SBATCH --nodes=1
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=64
#SBATCH --time=24:00:00
#SBATCH --output=logs/%x-%j.out
set -euo pipefail
MODEL=${1:?model}; LOSS=${2:?loss}; DATA=${3:?data}; shift 3
RUN_DIR=${RUN_DIR:-runs/${MODEL}-${LOSS}-sft}
# Re-running the same job resumes from the run directory's last checkpoint.
srun .venv/bin/accelerate launch --config_file configs/accelerate/8gpu_zero2.yaml \
    --num_machines "${SLURM_NNODES}" --machine_rank "${SLURM_NODEID}" \
    --main_process_ip "$(scontrol show hostnames "${SLURM_JOB_NODELIST}" | head -n1)" --main_process_port 29500 \
    -m scale_repro.cli sft --model "${MODEL}" --loss "${LOSS}" --data "${DATA}" --output-dir "${RUN_DIR}" "$@"
