"""The Slurm launcher: each stage of a plan one ``sbatch`` job, after the jobs of the stages it
needs (``--dependency=afterok:``).

A job runs ``scale stage RUN_DIR``, which reads the stage the planner wrote into its run
directory (``stage.json``) and runs it exactly as planned: a training stage through
``accelerate launch`` on the GPUs it asks for (one task per node, the node's rank from Slurm),
an evaluation on one GPU, and on a cluster without GPUs (``gpus_per_node: 0``) as one process.

Submitting is idempotent. Under one lock per experiment folder, each stage that is neither
finished nor queued nor running is submitted, and its job id kept in ``job.json`` beside its
manifest; a queued or running job is left as it is; a job that can never start (its dependency
failed or was cancelled) is cancelled and submitted again after the stages it needs. Running
the same command again therefore submits only what is left, resumes what was interrupted
(``scancel``, a time limit, a preempted node) from its last checkpoint, and never submits a
stage twice, even when two such commands run at once.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scale_repro.experiments.planner import TRAINING_METHODS, Stage, write_stage_file
from scale_repro.runs.rundir import atomic_write_json, atomic_write_text, exclusive, read_json
from scale_repro.yaml_files import CONFIGS_DIR, REPO_ROOT, ConfigError

JOB_FILE = "job.json"
JOB_SCRIPT = "job.sbatch"
# Job states in which a job will still run (squeue's long names).
WAITING = {"PENDING", "CONFIGURING", "REQUEUED", "RESIZING", "SUSPENDED"}
ACTIVE = WAITING | {"RUNNING", "COMPLETING", "STAGE_OUT"}
# squeue reasons that mean a pending job will never start.
NEVER_STARTS = {"DependencyNeverSatisfied", "JobHeldUser", "JobHeldAdmin"}


@dataclass
class SlurmResources:
    """What each job asks Slurm for (``scale reproduce --launcher slurm`` options, or the
    experiment file's ``slurm:`` section)."""

    nodes: int = 1  # nodes per training stage (accelerate's machine rank is each node's SLURM_NODEID)
    gpus_per_node: int = 8  # GPUs per node for a training stage; 0: a cluster without GPUs (one process)
    eval_gpus: int = 1  # GPUs of an evaluation or pass-rate stage
    time: str = "24:00:00"  # each job's time limit; a stage stopped by it resumes when resubmitted
    partition: str | None = None
    account: str | None = None
    cpus_per_task: int | None = None
    # The accelerate config of a training stage; None: configs/accelerate/8gpu_zero2.yaml with
    # DeepSpeed when the stage's config names one, else accelerate's multi-GPU defaults.
    accelerate_config: str | None = None
    extra: list[str] = field(default_factory=list)  # further #SBATCH lines, e.g. ["--qos=high"]

    def problems(self) -> list[str]:
        found = []
        if self.nodes < 1:
            found.append(f"nodes must be at least 1, got {self.nodes}")
        if self.gpus_per_node < 0 or self.eval_gpus < 0:
            found.append("gpus_per_node and eval_gpus must be 0 or more")
        if self.nodes > 1 and self.gpus_per_node == 0:
            found.append("several nodes need GPUs (gpus_per_node) for accelerate to spread a stage over")
        return found


def check_slurm() -> None:
    """``sbatch`` and ``squeue`` on the PATH, before anything is submitted."""
    missing = [tool for tool in ("sbatch", "squeue", "scancel") if shutil.which(tool) is None]
    if missing:
        raise ConfigError(
            f"--launcher slurm: {', '.join(missing)} not found on this machine; run from a Slurm login node"
        )


def _training(stage: Stage) -> bool:
    return stage.kind in TRAINING_METHODS


def job_lines(stage: Stage, resources: SlurmResources) -> list[str]:
    """The ``#SBATCH`` lines of one stage's job."""
    gpus = resources.gpus_per_node if _training(stage) else resources.eval_gpus
    nodes = resources.nodes if _training(stage) else 1
    name = "scale-" + stage.kind + "-" + "-".join(stage.run_dir.parts[-4:])
    lines = [
        f"--job-name={name[:120]}",
        f"--output={stage.run_dir / 'slurm-%j.log'}",
        f"--nodes={nodes}",
        "--ntasks-per-node=1",
        f"--time={resources.time}",
    ]
    lines += [f"--gres=gpu:{gpus}"] if gpus else []
    lines += [f"--partition={resources.partition}"] if resources.partition else []
    lines += [f"--account={resources.account}"] if resources.account else []
    lines += [f"--cpus-per-task={resources.cpus_per_task}"] if resources.cpus_per_task else []
    return lines + list(resources.extra)


def launch_line(stage: Stage, resources: SlurmResources) -> str:
    """The command a stage's job runs."""
    scale = f"{shlex.quote(sys.executable)} -m scale_repro.cli stage {shlex.quote(str(stage.run_dir))}"
    gpus = resources.gpus_per_node
    if not _training(stage) or gpus == 0:
        return scale
    config = resources.accelerate_config
    if config is None and getattr(stage.config, "deepspeed", None):
        config = str(CONFIGS_DIR / "accelerate" / "8gpu_zero2.yaml")
    accelerate = [
        shlex.quote(str(Path(sys.executable).with_name("accelerate"))),
        "launch",
        *(["--config_file", shlex.quote(config)] if config else ["--multi_gpu"]),
        f"--num_machines {resources.nodes}",
        f"--num_processes {resources.nodes * gpus}",
        "--machine_rank $SLURM_NODEID",
        '--main_process_ip "$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)"',
        # Two jobs on one node must not share a rendezvous port.
        "--main_process_port $((29500 + SLURM_JOB_ID % 2000))",
        "-m scale_repro.cli stage",
        shlex.quote(str(stage.run_dir)),
    ]
    # One task per node; each evaluates its own SLURM_NODEID.
    return "srun bash -c " + shlex.quote(" ".join(accelerate))


def job_script(stage: Stage, resources: SlurmResources) -> str:
    header = "\n".join(f"#SBATCH {line}" for line in job_lines(stage, resources))
    return (
        "#!/usr/bin/env bash\n"
        f"# {stage.kind} stage planned by scale reproduce; rerunning the same command resubmits it if needed.\n"
        f"{header}\n"
        "set -euo pipefail\n"
        f"cd {shlex.quote(str(REPO_ROOT))}\n"
        f"{launch_line(stage, resources)}\n"
    )


def queue_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """``{job id: (state, reason)}`` for the jobs Slurm still knows as queued or running."""
    if not job_ids:
        return {}
    result = subprocess.run(
        ["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i|%T|%r"], capture_output=True, text=True
    )
    states = {}
    for line in result.stdout.splitlines():
        job, state, reason = (line.split("|") + ["", ""])[:3]
        states[job.strip()] = (state.strip(), reason.strip())
    return states


def recorded_job(stage: Stage) -> dict[str, Any] | None:
    path = stage.run_dir / JOB_FILE
    try:
        return read_json(path) if path.is_file() else None
    except (OSError, ValueError):
        return None


def submit(stages: list[Stage], out: Path, resources: SlurmResources, echo=print) -> dict[Path, str]:
    """Submit every stage that is neither finished nor queued nor running, each after the jobs
    of the stages it needs; returns the job id of every stage that has one now."""
    check_slurm()
    problems = resources.problems()
    if problems:
        raise ConfigError(f"--launcher slurm: {problems[0]}")
    jobs: dict[Path, str] = {}
    with exclusive(Path(out) / ".slurm-submit.lock"):
        recorded = {s.run_dir: recorded_job(s) for s in stages}
        states = queue_states([r["job_id"] for r in recorded.values() if r])
        for stage in stages:  # the plan puts every stage after the ones it needs
            if stage.finished():
                continue
            record = recorded[stage.run_dir]
            state, reason = states.get(record["job_id"], ("", "")) if record else ("", "")
            needs_resubmitted = any(n in jobs and jobs[n] != _job_of(recorded.get(n)) for n in stage.needs)
            if state in ACTIVE and reason not in NEVER_STARTS and not needs_resubmitted:
                jobs[stage.run_dir] = record["job_id"]
                echo(f"{stage.kind:<9} {state.lower()} (job {record['job_id']}): {stage.run_dir}")
                continue
            if state in ACTIVE:  # it would wait forever on a job that failed or was cancelled
                subprocess.run(["scancel", record["job_id"]], check=False)
            jobs[stage.run_dir] = _submit_one(stage, resources, [jobs[n] for n in stage.needs if n in jobs])
            echo(f"{stage.kind:<9} submitted (job {jobs[stage.run_dir]}): {stage.run_dir}")
    return jobs


def _job_of(record: dict[str, Any] | None) -> str | None:
    return record["job_id"] if record else None


def _submit_one(stage: Stage, resources: SlurmResources, after: list[str]) -> str:
    stage.run_dir.mkdir(parents=True, exist_ok=True)
    write_stage_file(stage)
    script = stage.run_dir / JOB_SCRIPT
    atomic_write_text(script, job_script(stage, resources))
    command = [
        "sbatch",
        "--parsable",
        *([f"--dependency=afterok:{':'.join(after)}"] if after else []),
        str(script),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise ConfigError(f"sbatch refused {script}: {result.stderr.strip() or result.stdout.strip()}")
    job_id = result.stdout.strip().split(";")[0]
    atomic_write_json(stage.run_dir / JOB_FILE, {"job_id": job_id, "after": after, "script": str(script)})
    return job_id


def wait(jobs: dict[Path, str], echo=print, poll_s: float = 5.0) -> None:
    """Until none of ``jobs`` is queued or running (what ``--wait`` does before the report)."""
    ids = list(jobs.values())
    reported = None
    while True:
        states = queue_states(ids)
        active = {
            job: state for job, state in states.items() if state[0] in ACTIVE and state[1] not in NEVER_STARTS
        }
        if not active:
            return
        summary = f"{len(active)} job(s) queued or running"
        if summary != reported:
            echo(summary)
            reported = summary
        time.sleep(poll_s)
