import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from scale_repro.runs.rundir import read_manifest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def zero2_sft(tmp_path, synth_dir) -> list[str]:
    """`scale sft` arguments: 2 steps of tiny-qwen2.5-vl with the ZeRO-2 config."""
    return [
        "-m",
        "scale_repro.cli",
        "sft",
        "--model",
        "tiny-qwen2.5-vl",
        "--data",
        str(synth_dir),
        "--output-dir",
        str(tmp_path / "run"),
        "--max-steps",
        "2",
        "--set",
        f"deepspeed={ROOT / 'configs' / 'deepspeed' / 'zero2.json'}",
        "--set",
        "per_device_train_batch_size=2",
    ]


@pytest.mark.slow
def test_zero2_sft_with_two_cpu_processes(tmp_path, tiny_paths, synth_dir):
    """The ZeRO-2 config drives a real 2-process DeepSpeed run (gloo on CPU), as on 8 GPUs."""
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1"}
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    command = [sys.executable, *launcher, *zero2_sft(tmp_path, synth_dir)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_manifest(tmp_path / "run")
    assert manifest["status"] == "finished" and manifest["global_step"] == 2
    assert (tmp_path / "run" / "merged" / "model.safetensors").is_file()


@pytest.mark.slow
def test_zero2_sft_in_one_process_without_a_launcher(tmp_path, tiny_paths, synth_dir):
    """`scale sft` with the ZeRO-2 config and no launcher (one GPU, or `scale bench`): DeepSpeed
    finds no RANK / WORLD_SIZE and would fall back to MPI discovery (mpi4py, not installed); the
    stage gives it a process group of one."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")
    }
    command = [sys.executable, *zero2_sft(tmp_path, synth_dir)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_manifest(tmp_path / "run")
    assert manifest["status"] == "finished" and manifest["global_step"] == 2
