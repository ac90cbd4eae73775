"""The one-node launcher (``--launcher accelerate``): every stage in a process of its own on the
GPUs it asks for, stages that do not depend on each other side by side while GPUs are free.

A training stage runs ``accelerate launch -m scale_repro.cli stage RUN_DIR`` on
``gpus_per_stage`` GPUs (the ZeRO-2 config when the stage's recipe names DeepSpeed, so one GPU
with DeepSpeed needs no MPI); an evaluation or a pass-rate stage runs on one GPU
(``CUDA_VISIBLE_DEVICES``). Each stage's output goes to ``launch.log`` in its run directory.
``cpu_processes`` runs the same path on a machine without GPUs (N processes in one gloo group),
one stage at a time: what the tests use.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from scale_repro.experiments.planner import TRAINING_METHODS, Stage, write_stage_file
from scale_repro.yaml_files import CONFIGS_DIR, REPO_ROOT, ConfigError

LAUNCH_LOG = "launch.log"


@dataclass
class NodeResources:
    """What ``--launcher accelerate`` uses of this machine."""

    gpus: int | None = None  # GPUs to use; None: every GPU CUDA sees
    gpus_per_stage: int = 8  # GPUs of a training stage (at most ``gpus``)
    cpu_processes: int = 0  # >0: no GPUs, training stages as this many CPU processes (gloo)


def visible_gpus(resources: NodeResources) -> list[int]:
    """The GPU indices to share out; one line, before anything runs, when there are none."""
    if resources.cpu_processes > 0:
        return []
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ConfigError(
            "--launcher accelerate: no GPU is visible (CUDA); use --launcher local on this machine, or "
            "--cpu-processes N to run the launch path on CPU processes"
        )
    if resources.gpus is not None and resources.gpus > count:
        raise ConfigError(f"--gpus {resources.gpus}: this machine has {count} GPU(s)")
    return list(range(resources.gpus or count))


def _gpus_of(stage: Stage, resources: NodeResources, total: int) -> int:
    if resources.cpu_processes > 0:
        return 0
    return resources.gpus_per_stage if stage.kind in TRAINING_METHODS else 1


def launch_command(stage: Stage, resources: NodeResources, gpus: list[int], port: int) -> list[str]:
    """The command that runs one stage (``scale stage RUN_DIR``), under accelerate when it trains."""
    scale = ["-m", "scale_repro.cli", "stage", str(stage.run_dir)]
    if stage.kind not in TRAINING_METHODS:
        return [sys.executable, *scale]
    accelerate = [
        str(Path(sys.executable).with_name("accelerate")),
        "launch",
        "--main_process_port",
        str(port),
    ]
    if resources.cpu_processes == 1:  # accelerate refuses --multi_gpu below 2 processes
        return [*accelerate, "--cpu", "--num_processes", "1", *scale]
    if resources.cpu_processes > 1:
        # accelerate's --cpu starts one process; its torchrun launcher (--multi_gpu) starts N, which
        # find no CUDA and join one gloo group (accelerate's MULTI_CPU).
        return [*accelerate, "--multi_gpu", "--num_processes", str(resources.cpu_processes), *scale]
    if getattr(stage.config, "deepspeed", None):
        accelerate += ["--config_file", str(CONFIGS_DIR / "accelerate" / "8gpu_zero2.yaml")]
    elif len(gpus) > 1:
        accelerate += ["--multi_gpu"]
    return [*accelerate, "--num_processes", str(len(gpus)), "--num_machines", "1", *scale]


def run_on_node(stages: list[Stage], resources: NodeResources, echo=print) -> dict[str, list[str]]:
    """Every stage not yet finished, each in its own launched process as soon as the stages it
    needs have finished and its GPUs are free; a failed stage blocks what depends on it."""
    gpus = visible_gpus(resources)
    if gpus and resources.gpus_per_stage > len(gpus):
        # Fewer GPUs would shrink every step's global batch: a different run, never a silent one.
        raise ConfigError(
            f"--gpus-per-stage {resources.gpus_per_stage}: this machine has {len(gpus)} GPU(s); ask for at most "
            "that many (the global batch is per_device_train_batch_size x GPUs x gradient_accumulation_steps)"
        )
    summary: dict[str, list[str]] = {"ran": [], "skipped": [], "failed": [], "blocked": []}
    free = list(gpus)
    pending = list(stages)
    done: set[Path] = set()
    failed: set[Path] = set()
    started = time.time()
    slots = max(1, len(gpus)) if gpus else 1
    with ThreadPoolExecutor(max_workers=slots) as pool:
        running: dict = {}
        while pending or running:
            for stage in list(pending):
                if any(n in failed for n in stage.needs):
                    pending.remove(stage)
                    failed.add(stage.run_dir)
                    summary["blocked"].append(str(stage.run_dir))
                    echo(
                        f"[{time.time() - started:6.0f}s] {stage.kind:<9} blocked (an earlier stage failed): {stage.run_dir}"
                    )
                    continue
                if not all(n in done for n in stage.needs if n in {s.run_dir for s in stages}):
                    continue
                if stage.finished():
                    pending.remove(stage)
                    done.add(stage.run_dir)
                    summary["skipped"].append(str(stage.run_dir))
                    continue
                want = _gpus_of(stage, resources, len(gpus))
                if (gpus and want > len(free)) or (not gpus and running):
                    continue
                taken, free = free[:want], free[want:]
                pending.remove(stage)
                port = 29500 + (len(summary["ran"]) + len(running)) % 1000
                running[pool.submit(_launch, stage, launch_command(stage, resources, taken, port), taken)] = (
                    stage,
                    taken,
                )
                echo(
                    f"[{time.time() - started:6.0f}s] {stage.kind:<9} launched on {_devices(taken)}: {stage.run_dir}"
                )
            if not running:
                if pending:
                    raise RuntimeError(f"{pending[0].run_dir}: waits on a stage that cannot run")
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                stage, taken = running.pop(future)
                free = sorted(free + taken)
                ok = future.result() == 0 and stage.finished()
                (done if ok else failed).add(stage.run_dir)
                summary["ran" if ok else "failed"].append(str(stage.run_dir))
                state = "done" if ok else f"FAILED (see {stage.run_dir / LAUNCH_LOG})"
                echo(f"[{time.time() - started:6.0f}s] {stage.kind:<9} {state}: {stage.run_dir}")
    return summary


def _devices(gpus: list[int]) -> str:
    return f"GPU {','.join(map(str, gpus))}" if gpus else "CPU"


def _launch(stage: Stage, command: list[str], gpus: list[int]) -> int:
    import os

    stage.run_dir.mkdir(parents=True, exist_ok=True)
    write_stage_file(stage)
    env = dict(os.environ)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
    with open(stage.run_dir / LAUNCH_LOG, "a", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        return subprocess.run(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        ).returncode
