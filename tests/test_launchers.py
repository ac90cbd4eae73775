"""`--launcher accelerate`: each stage in its own `accelerate launch` (two CPU processes, gloo,
here) reaches the weights the in-process runner reaches with the same global batch, and the run
directory is written once, by the first rank."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# SCALe-SFT then GRPO then an evaluation on tiny-llava-next, a few steps: the global batch is
# 4 samples a step either way, as 2 processes x 2 or as 1 process x 2 x 2 accumulated.
EXPERIMENT = {
    "name": "launch-check",
    "models": ["tiny-llava-next"],
    "data": {"synth": {"seed": 0, "n_train": 24, "n_test": 4}},
    "datasets": [
        {"name": "ScienceQA", "train": "${SYNTH}", "task": "synthetic-scienceqa", "data": "${SYNTH}"},
    ],
    "recipes_from": "configs/recipes/balanced-thinking.yaml",
    "recipes": ["SCALe-GRPO"],
    "seeds": [0],
    "sft": {"set": ["max_steps=3", "per_device_train_batch_size=2", "save_steps=100", "logging_steps=1"]},
    "grpo": {
        "set": [
            "max_steps=1",
            "per_device_train_batch_size=2",
            "num_generations=2",
            "max_completion_length=8",
            "logging_steps=1",
        ]
    },
    "eval": {"set": ["max_new_tokens=8", "limit=3"]},
}
SFT = Path("runs/tiny-llava-next/synth/seed0/1-sft-scale")


def write_experiment(path: Path, accumulation: int) -> Path:
    spec = json.loads(json.dumps(EXPERIMENT))
    spec["sft"]["set"].append(f"gradient_accumulation_steps={accumulation}")
    spec["grpo"]["set"].append(f"gradient_accumulation_steps={accumulation}")
    path.write_text(yaml.safe_dump(spec))
    return path


def scale(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "scale_repro.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_two_launched_processes_reach_the_in_process_weights(tmp_path, tiny_paths):
    from safetensors.torch import load_file

    launched = tmp_path / "launched"
    result = scale(
        "reproduce",
        "--experiment",
        str(write_experiment(tmp_path / "two.yaml", 1)),
        "--launcher",
        "accelerate",
        "--cpu-processes",
        "2",
        "--out",
        str(launched),
    )
    assert "ran 3, skipped 0, failed 0, blocked 0" in result.stdout, result.stdout
    in_process = tmp_path / "in-process"
    scale(
        "reproduce", "--experiment", str(write_experiment(tmp_path / "one.yaml", 2)), "--out", str(in_process)
    )

    weights = [load_file(root / SFT / "merged" / "model.safetensors") for root in (launched, in_process)]
    base = load_file(tiny_paths["tiny-llava-next"] / "model.safetensors")
    assert weights[0].keys() == weights[1].keys()
    for name in weights[1]:
        assert weights[0][name].allclose(weights[1][name], rtol=1e-4, atol=1e-6), name
    assert any(not base[name].equal(weights[1][name]) for name in base)  # it trained

    for stage in (SFT, SFT / "2-grpo"):
        run_dir = launched / stage
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["status"] == "finished" and len(manifest["attempts"]) == 1
        # Each step logged once, by one rank: the same entries as the in-process run's log.
        logged = [
            sorted(json.loads(line)) + [json.loads(line)["step"]]
            for line in (run_dir / "train_log.jsonl").read_text().splitlines()
        ]
        alone = [
            sorted(json.loads(line)) + [json.loads(line)["step"]]
            for line in (in_process / stage / "train_log.jsonl").read_text().splitlines()
        ]
        assert logged == alone
        log = (run_dir / "launch.log").read_text()
        assert "launch --main_process_port" in log and "--multi_gpu --num_processes 2" in log
        assert log.count(f"{manifest['stage']} run: ") == 2  # both ranks trained, one wrote
    # The SFT pre-flight (every sample through the processor) ran on one rank; the other read it.
    assert (launched / SFT / "launch.log").read_text().count("pre-flight: 24 samples") == 1
    assert json.loads((launched / SFT / "preflight.json").read_text())["value"]["findings"]["samples"] == 24
    sft_log = [json.loads(line) for line in (launched / SFT / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in sft_log if "loss" in e] == [1, 2, 3]


def test_without_gpus_the_accelerate_launcher_stops_in_one_line_before_anything_is_written(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scale_repro.cli",
            "reproduce",
            "--experiment",
            str(write_experiment(tmp_path / "e.yaml", 1)),
            "--launcher",
            "accelerate",
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: --launcher accelerate: no GPU is visible (CUDA); use --launcher local on this machine, or "
        "--cpu-processes N to run the launch path on CPU processes"
    )
    assert not (tmp_path / "out").exists()


def test_table1_on_slurm_dry_run_shows_each_job_its_dependencies_and_its_launch_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scale_repro.cli",
            "reproduce",
            "--table",
            "1",
            "--launcher",
            "slurm",
            "--dry-run",
            "--out",
            str(tmp_path / "t1"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    jobs = [line for line in result.stdout.splitlines() if line.startswith("job ")]
    assert len(jobs) == 54  # 12 SFT, 12 GRPO, 30 evaluations
    grpo = next(line for line in jobs if " grpo " in line)
    assert grpo.endswith(
        (
            "after 1",
            "after 2",
            "after 3",
            "after 4",
            "after 5",
            "after 6",
            "after 7",
            "after 8",
            "after 9",
            "after 10",
            "after 11",
            "after 12",
        )
    )
    launches = [line.strip() for line in result.stdout.splitlines() if "accelerate launch" in line]
    assert len(launches) == 24 and all("--num_processes 8" in line for line in launches)
    assert not (tmp_path / "t1").exists()
