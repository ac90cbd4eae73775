"""The Slurm launcher on a real one-node Slurm cluster (Debian's slurmctld, slurmd and munge,
started by scripts/local_slurm.sh when this machine has none): one sbatch job per stage after
the jobs of the stages it needs, the same tables as the local runner, a scancel'd chain finished
by running the same command again with nothing trained twice, and two commands at once
submitting each stage once."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCALE = [sys.executable, "-m", "scale_repro.cli"]
# A chain of three dependent stages and a fourth: SFT -> GRPO -> two evaluations, a few steps each.
TINY_CHAIN = [
    "reproduce",
    "--experiment",
    "demo",
    "--model",
    "tiny-llava-next",
    "--recipe",
    "GRPO",
    "--quick",
]
ON_SLURM = ["--launcher", "slurm", "--gpus-per-node", "0", "--eval-gpus", "0"]


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running Slurm cluster: this machine's own, or a one-node cluster started for the tests
    (as root) and stopped afterwards."""
    started = False
    if shutil.which("sbatch") is None or subprocess.run(["sinfo"], capture_output=True).returncode != 0:
        if os.geteuid() != 0:
            pytest.skip("no Slurm cluster here, and starting one needs root")
        subprocess.run(["bash", str(REPO / "scripts" / "local_slurm.sh"), "start"], check=True)
        started = True
    yield
    subprocess.run(["scancel", "--user", "root"], check=False, capture_output=True)
    if started:
        subprocess.run(["bash", str(REPO / "scripts" / "local_slurm.sh"), "stop"], check=False)


def scale(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([*SCALE, *args], cwd=REPO, capture_output=True, text=True, timeout=900)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def tables(out: Path) -> str:
    """The report's Tables 1-3 (not the timing table, which differs between any two runs)."""
    report = (out / "report" / "report.md").read_text()
    return report.split("### Table 1")[1].split("### Training wall-clock time")[0]


def attempts(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "manifest.json").read_text())["attempts"]


def job_of(run_dir: Path) -> str:
    return json.loads((run_dir / "job.json").read_text())["job_id"]


def squeue_state(job: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout
    return out.strip()


@pytest.mark.slow
def test_a_chain_on_slurm_gives_the_local_runners_tables(slurm_cluster, tmp_path, tiny_paths):
    dry = scale(*TINY_CHAIN, *ON_SLURM, "--dry-run", "--out", str(tmp_path / "slurm"))
    assert "job   2: grpo      runs/tiny-llava-next/synth/seed0/1-sft-vanilla/2-grpo  after 1" in dry.stdout
    assert not (tmp_path / "slurm" / "runs").exists()

    on_slurm = scale(*TINY_CHAIN, *ON_SLURM, "--wait", "--out", str(tmp_path / "slurm"))
    assert "ran 4, skipped 0, failed 0, blocked 0" in on_slurm.stdout
    sft = tmp_path / "slurm" / "runs" / "tiny-llava-next" / "synth" / "seed0" / "1-sft-vanilla"
    grpo = sft / "2-grpo"
    # Each job waited for the one before it, and ran the stage exactly as planned.
    assert json.loads((grpo / "job.json").read_text())["after"] == [job_of(sft)]
    assert "#SBATCH --dependency" not in (grpo / "job.sbatch").read_text()  # given on the command line
    assert (grpo / f"slurm-{job_of(grpo)}.log").is_file()
    assert len(attempts(sft)) == 1 and len(attempts(grpo)) == 1

    local = scale(*TINY_CHAIN, "--out", str(tmp_path / "local"))
    assert "ran 4, skipped 0, failed 0, blocked 0" in local.stdout
    assert tables(tmp_path / "slurm") == tables(tmp_path / "local")
    # The same weights, not only the same (tiny, quick) scores; and SFT did train.
    from safetensors.torch import load_file

    base = load_file(tiny_paths["tiny-llava-next"] / "model.safetensors")
    for stage in ("1-sft-vanilla", "1-sft-vanilla/2-grpo"):
        merged = Path("runs/tiny-llava-next/synth/seed0") / stage / "merged" / "model.safetensors"
        on_slurm, here = load_file(tmp_path / "slurm" / merged), load_file(tmp_path / "local" / merged)
        assert on_slurm.keys() == here.keys() and all(on_slurm[k].equal(here[k]) for k in here), stage
        assert any(not base[k].equal(here[k]) for k in here)

    again = scale(*TINY_CHAIN, *ON_SLURM, "--wait", "--out", str(tmp_path / "slurm"))
    assert "0 job(s)" not in again.stdout and "ran 0, skipped 4" in again.stdout


@pytest.mark.slow
def test_a_cancelled_chain_finishes_when_the_same_command_runs_again(slurm_cluster, tmp_path, tiny_paths):
    out = tmp_path / "out"
    scale(*TINY_CHAIN, *ON_SLURM, "--out", str(out))  # submits and returns
    sft = out / "runs" / "tiny-llava-next" / "synth" / "seed0" / "1-sft-vanilla"
    grpo = sft / "2-grpo"
    first_grpo_job = job_of(grpo)
    deadline = time.time() + 600
    while squeue_state(first_grpo_job) != "RUNNING" and time.time() < deadline:
        time.sleep(1)
    time.sleep(3)  # mid-way: loading or training
    subprocess.run(["scancel", first_grpo_job], check=True)
    while squeue_state(first_grpo_job) and time.time() < deadline:
        time.sleep(1)

    status = scale(*TINY_CHAIN, "--status", "--out", str(out))
    assert "sft       done" in status.stdout
    assert "grpo      interrupted" in status.stdout or "grpo      to run" in status.stdout

    again = scale(*TINY_CHAIN, *ON_SLURM, "--wait", "--out", str(out))
    assert "ran 3, skipped 1, failed 0, blocked 0" in again.stdout
    assert job_of(grpo) != first_grpo_job
    assert len(attempts(sft)) == 1  # nothing trained twice
    assert [a["status"] for a in attempts(grpo)][-1] == "finished"
    status = scale(*TINY_CHAIN, "--status", "--out", str(out))
    assert status.stdout.strip().endswith("4 done")


@pytest.mark.slow
def test_two_commands_at_once_submit_each_stage_once(slurm_cluster, tmp_path, tiny_paths):
    out = tmp_path / "out"
    command = [*SCALE, *TINY_CHAIN, *ON_SLURM, "--out", str(out)]
    both = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=600)[0] for process in both]
    assert all(process.returncode == 0 for process in both), outputs
    submitted = [line for text in outputs for line in text.splitlines() if " submitted (job " in line]
    kept = [
        line
        for text in outputs
        for line in text.splitlines()
        if "(job " in line and " submitted " not in line
    ]
    assert len(submitted) == 4 and len(kept) == 4, outputs
    assert len({job_of(p.parent) for p in (out / "runs").rglob("job.json")}) == 4
    subprocess.run(["scancel", *(job_of(p.parent) for p in (out / "runs").rglob("job.json"))], check=False)


def test_without_sbatch_the_slurm_launcher_stops_in_one_line_before_anything_is_written(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    result = subprocess.run(
        [*SCALE, *TINY_CHAIN, *ON_SLURM, "--out", str(tmp_path / "out")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: --launcher slurm: sbatch, squeue, scancel not found on this machine; run from a Slurm login node"
    )
    assert not (tmp_path / "out").exists()


def test_the_job_of_a_training_stage_launches_accelerate_on_every_node():
    from scale_repro.experiments.planner import experiment_path, load_experiment, plan
    from scale_repro.experiments.slurm import SlurmResources, job_script

    stages = plan(load_experiment(experiment_path(table=1)), Path("/runs"))
    sft = next(s for s in stages if s.kind == "sft")
    script = job_script(sft, SlurmResources(nodes=2, gpus_per_node=8, partition="gpu", account="lab"))
    assert "#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=1\n" in script
    assert "#SBATCH --gres=gpu:8\n#SBATCH --partition=gpu\n#SBATCH --account=lab\n" in script
    launch = script.strip().splitlines()[-1]
    assert launch.startswith("srun bash -c ")
    for part in (
        "launch --config_file",
        "configs/accelerate/8gpu_zero2.yaml",
        "--num_machines 2",
        "--num_processes 16",
        "--machine_rank $SLURM_NODEID",
        "-m scale_repro.cli stage",
    ):
        assert part in launch, part
    evaluation = next(s for s in stages if s.kind == "eval")
    eval_script = job_script(evaluation, SlurmResources(nodes=2, gpus_per_node=8))
    assert "#SBATCH --nodes=1\n" in eval_script and "#SBATCH --gres=gpu:1\n" in eval_script
    assert "accelerate" not in eval_script
