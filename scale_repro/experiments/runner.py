"""One runner for every experiment: an experiment file -> data -> a plan of stages -> run
directories -> a report.

``scale reproduce`` (the paper's tables, the staged curriculum, the controlled evidence
experiment) and ``scale demo`` are calls of :func:`run_experiment`. An experiment file's
``kind`` says which of three it is, and the kind names the four things that differ:

============  =================================  ========================  ====================
kind          loads                              writes data               reports
============  =================================  ========================  ====================
reproduce     :class:`planner.Experiment`        its ``data`` sections     Tables 1-3
curriculum    :class:`planner.Experiment`        its ``data`` sections     recipes vs baseline
evidence      :class:`evidence.EvidenceSpec`     one folder per ratio      paired intervals
============  =================================  ========================  ====================

Everything else is one sequence: shorten (``--seeds``, ``--model``, ``--quick``), write the
data, plan, build the tiny models and perceiving bases it names (once, before the worker
processes would race to build them), run every stage not yet finished (:func:`run_stages`,
independent chains in parallel), report. Every experiment lays out its folder the same way:
``OUT/data``, ``OUT/runs`` and ``OUT/report`` (or ``--results``).

Stages run in one process or, with ``jobs``, in worker processes, each as soon as the stages it
needs have finished; a stage whose manifest says it finished with the same config is skipped, a
failed or interrupted one runs again, a failed stage's dependants are blocked.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scale_repro.experiments import evidence, providers, slurm
from scale_repro.experiments.one_node import NodeResources, run_on_node, visible_gpus
from scale_repro.experiments.planner import (
    QUICK_DATA,
    Experiment,
    Stage,
    add_quick_settings,
    describe,
    describe_recipes,
    load_experiment,
    plan,
)
from scale_repro.experiments.reports.curriculum import write_curriculum_report
from scale_repro.experiments.reports.evidence import write_evidence_report
from scale_repro.experiments.reports.tables import write_report
from scale_repro.experiments.slurm import SlurmResources
from scale_repro.experiments.status import plan_status, render_status
from scale_repro.runs.rundir import StageInterrupted, package_versions, read_manifest
from scale_repro.yaml_files import ConfigError, read_yaml

log = logging.getLogger("scale_repro")

# Libraries whose own chatter would bury the progress lines.
CHATTY_LIBRARIES = ("transformers", "lmms-eval", "datasets", "accelerate")


@dataclass
class RunOptions:
    """How to run an experiment file (``scale reproduce``'s options)."""

    out: Path  # OUT/data, OUT/runs and (unless results is set) OUT/report
    results: Path | None = None  # where the report goes; default OUT/report
    jobs: int = 1  # stages run at once, in worker processes when more than 1
    dry_run: bool = False  # plan and print only; nothing is written
    quick: bool = False  # a few steps on a few examples (QUICK_SETTINGS, QUICK_DATA)
    seeds: int | None = None  # only the file's first N seeds
    models: list[str] | None = None  # instead of the file's models
    recipes: list[str] | None = None  # only these of the file's recipes (configurations)
    main_only: bool = False  # evidence: no ratio sweep, truncation arm or learning curves
    command: str = ""  # the command that reproduces this run, recorded in the report
    # local: stages in worker processes of this one | accelerate: each stage launched on its own
    # GPUs of this node | slurm: one sbatch job per stage
    launcher: str = "local"
    node: NodeResources = field(default_factory=NodeResources)  # what --launcher accelerate uses
    slurm: SlurmResources = field(default_factory=SlurmResources)  # what each Slurm job asks for
    wait: bool = False  # slurm: wait for the jobs, then write the report
    status: bool = False  # print where every stage stands; run nothing

    @property
    def report_dir(self) -> Path:
        return Path(self.results or Path(self.out) / "report").resolve()


def _check_recipes(spec: Any, known: list[str], options: RunOptions) -> None:
    unknown = [name for name in options.recipes or [] if name not in known]
    if unknown:
        raise ConfigError(
            f"{spec.name}: --recipe {', '.join(unknown)}: not among its recipes ({', '.join(known)})"
        )


def _shorten_experiment(spec: Any, options: RunOptions) -> Any:
    _check_recipes(spec, list(spec.recipes), options)
    if options.seeds:
        spec.seeds = spec.seeds[: options.seeds]
    if options.models:
        spec.models = list(options.models)
    if options.recipes:
        spec.recipes = {name: stages for name, stages in spec.recipes.items() if name in options.recipes}
    if options.quick:
        add_quick_settings(spec)
        spec.data = {name: dict(values, **QUICK_DATA.get(name, {})) for name, values in spec.data.items()}
    return spec


def _shorten_evidence(spec: Any, options: RunOptions) -> Any:
    _check_recipes(spec, spec.configurations, options)
    return evidence.shorten(
        spec, options.seeds, options.models, options.quick, options.recipes, sweep=not options.main_only
    )


def _plan_experiment(spec: Any, out: Path, variables: dict[str, str]) -> list[Stage]:
    return plan(spec, out / "runs", variables)


def _report_tables(spec, stages, out: Path, results: Path, info: dict[str, Any]) -> dict[str, Any]:
    return write_report(out / "runs", results)


def _report_curriculum(spec, stages, out: Path, results: Path, info: dict[str, Any]) -> dict[str, Any]:
    return write_curriculum_report(spec, stages, results, info)


def _report_evidence(spec, stages, out: Path, results: Path, info: dict[str, Any]) -> dict[str, Any]:
    return write_evidence_report(
        spec,
        out / "runs",
        results,
        run_info=info,
        # Only this plan's evaluations: runs left by other settings stay out.
        evaluations={str(s.run_dir) for s in stages if s.kind == "eval"},
    )


@dataclass(frozen=True)
class ExperimentKind:
    """What differs between kinds of experiment file; the runner does the rest."""

    load: Callable[[Path], Any]
    shorten: Callable[[Any, RunOptions], Any]
    write_data: Callable[[Any, Path, Callable, bool], dict[str, str]]  # -> ${VARIABLES}
    plan: Callable[[Any, Path, dict[str, str]], list[Stage]]
    report: Callable[[Any, list[Stage], Path, Path, dict[str, Any]], dict[str, Any]]


KINDS = {
    "reproduce": ExperimentKind(
        load_experiment, _shorten_experiment, providers.write_data_sections, _plan_experiment, _report_tables
    ),
    "curriculum": ExperimentKind(
        load_experiment,
        _shorten_experiment,
        providers.write_data_sections,
        _plan_experiment,
        _report_curriculum,
    ),
    "evidence": ExperimentKind(
        evidence.load_evidence,
        _shorten_evidence,
        evidence.write_data,
        evidence.plan_stages,
        _report_evidence,
    ),
}


def experiment_kind(path: str | Path) -> str:
    """The ``kind`` an experiment file declares (``reproduce`` when it declares none)."""
    data = read_yaml(path) or {}
    kind = data.get("kind", "reproduce") if isinstance(data, dict) else None
    if kind not in KINDS:
        raise ConfigError(f"{path}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return kind


def load(path: str | Path, options: RunOptions) -> tuple[ExperimentKind, Any]:
    """The experiment file, checked and shortened as ``options`` say."""
    kind = KINDS[experiment_kind(path)]
    return kind, kind.shorten(kind.load(path), options)


def environment() -> dict[str, Any]:
    import torch

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
        "torch_threads": torch.get_num_threads(),
        "packages": package_versions(),
    }


def build_models(models: list[str], echo=print) -> dict[str, Any]:
    """The tiny models and perceiving bases among ``models``, built (and cached) here, once,
    before parallel workers would race to build them; returns each perceiving base's record."""
    from scale_repro.experiments.perception_base import ensure_perceiving
    from scale_repro.models.perceiving import perceiving_record
    from scale_repro.models.registry import catalogue, tiny_model_path

    bases = {}
    for model in models:
        kind = catalogue()[model].kind if model in catalogue() else None
        if kind == "perceiving":
            bases[model] = perceiving_record(ensure_perceiving(model, echo=echo))
        elif kind in ("tiny", "random"):
            tiny_model_path(model)
    return bases


def run_experiment(path: str | Path, options: RunOptions, echo=print, spec: Any = None) -> dict[str, Any]:
    """Run an experiment file (or an already loaded and shortened ``spec`` of it) as ``options``
    say; returns ``stages`` on a dry run, else the run summary (``ran``, ``skipped``, ``failed``,
    ``blocked``) and what the report wrote."""
    started = time.time()
    if options.launcher == "slurm" and not (options.dry_run or options.status):
        slurm.check_slurm()  # before any data is written or anything submitted
    if options.launcher == "accelerate" and not (options.dry_run or options.status):
        visible_gpus(options.node)  # no GPUs: one line, before anything is written
    kind = KINDS[experiment_kind(path)]
    spec = spec if spec is not None else kind.shorten(kind.load(path), options)
    out, results = Path(options.out).resolve(), options.report_dir
    variables = kind.write_data(spec, out / "data", echo, not options.dry_run)  # a dry run writes nothing
    stages = kind.plan(spec, out, variables)
    training = sum(s.kind != "eval" for s in stages)
    if isinstance(spec, Experiment):  # the evidence file's arms are listed by the stages below
        echo(describe_recipes(spec))
    echo(
        f"{spec.name}: {len(stages)} stages ({training} training or rating, {len(stages) - training} "
        f"evaluations; {len(chains(stages))} independent chains) for {', '.join(spec.models)}, "
        f"{len(spec.seeds)} seed(s); runs under {out / 'runs'}"
    )
    if options.status:
        echo(render_status(plan_status(stages), relative_to=out))
        return {"stages": stages}
    echo(describe(stages, relative_to=out))
    if options.launcher == "slurm" and options.dry_run:
        echo(describe_jobs(stages, options.slurm, out))
    if options.dry_run:
        return {"stages": stages}
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.ERROR)
    bases = build_models(spec.models, echo)
    if options.launcher == "slurm":
        finished_before = {s.run_dir for s in stages if s.finished()}
        jobs = slurm.submit(stages, out, options.slurm, echo)
        if not options.wait:
            echo(
                f"{len(jobs)} job(s) queued or running; `scale reproduce ... --status` shows each stage, "
                "the same command again resubmits what is left, --wait writes the report when they end"
            )
            return {"summary": None, "jobs": jobs}
        slurm.wait(jobs, echo)
        summary = summary_from_run_dirs(stages, finished_before)
    elif options.launcher == "accelerate":
        summary = run_on_node(stages, options.node, echo)
    else:
        summary = run_stages(stages, jobs=options.jobs, echo=echo)
    elapsed = time.time() - started
    # A rerun that finds every stage done only rewrites the report: keep the wall clock of the
    # invocation that did the work.
    previous = results / "run.json"
    wall_clock = elapsed
    if not summary["ran"] and previous.is_file():
        wall_clock = json.loads(previous.read_text()).get("wall_clock_s", elapsed)
    info = {
        "command": options.command,
        "wall_clock_s": round(wall_clock, 1),
        "this_invocation_s": round(elapsed, 1),
        # What the whole plan costs from scratch, whichever invocations did the work.
        "stage_time_s": round(
            sum((read_manifest(s.run_dir) or {}).get("wall_clock_s") or 0 for s in stages), 1
        ),
        "jobs": options.jobs,
        "stages": {k: len(v) for k, v in summary.items()},
        "bases": bases,
        "environment": environment(),
    }
    report = kind.report(spec, stages, out, results, info)
    echo(
        f"ran {len(summary['ran'])}, skipped {len(summary['skipped'])}, failed {len(summary['failed'])}, "
        f"blocked {len(summary['blocked'])} in {elapsed:.0f}s; report: {report['report']}"
    )
    return {"summary": summary, **report}


def describe_jobs(stages: list[Stage], resources: SlurmResources, out: Path) -> str:
    """What ``--launcher slurm`` would submit: each stage not yet done, the stages it waits for,
    and the command its job runs."""
    numbers = {s.run_dir: i for i, s in enumerate(stages, 1)}
    lines = []
    for stage in stages:
        if stage.finished():
            continue
        after = [f"{numbers[n]}" for n in stage.needs if n in numbers]
        lines.append(
            f"job {numbers[stage.run_dir]:>3}: {stage.kind:<9} {stage.run_dir.relative_to(out)}"
            + (f"  after {', '.join(after)}" if after else "")
        )
        lines.append("         " + " ".join(f"#SBATCH {line}" for line in slurm.job_lines(stage, resources)))
        lines.append("         " + slurm.launch_line(stage, resources))
    return "\n".join(lines)


def summary_from_run_dirs(stages: list[Stage], finished_before: set[Path]) -> dict[str, list[str]]:
    """The runner's summary of stages another process ran (Slurm jobs), from their manifests."""
    summary: dict[str, list[str]] = {"ran": [], "skipped": [], "failed": [], "blocked": []}
    failed: set[Path] = set()
    for stage in stages:
        if stage.run_dir in finished_before:
            summary["skipped"].append(str(stage.run_dir))
        elif stage.finished():
            summary["ran"].append(str(stage.run_dir))
        elif any(n in failed for n in stage.needs):
            failed.add(stage.run_dir)
            summary["blocked"].append(str(stage.run_dir))
        else:
            failed.add(stage.run_dir)
            summary["failed"].append(str(stage.run_dir))
    return summary


def reproduce_command(experiment: str, options: RunOptions) -> str:
    """The ``scale reproduce`` command line that runs ``experiment`` with ``options`` again."""
    parts = ["scale reproduce --experiment", experiment, f"--jobs {options.jobs}", f"--out {options.out}"]
    parts += [f"--results {options.results}"] if options.results else []
    parts += [f"--seeds {options.seeds}"] if options.seeds is not None else []
    parts += [f"--model {m}" for m in options.models or []]
    parts += [f"--recipe {r}" for r in options.recipes or []]
    parts += [f"--launcher {options.launcher}"] if options.launcher != "local" else []
    return " ".join(parts + (["--quick"] if options.quick else []))


def stage_function(kind: str):
    """The function that runs a stage of ``kind`` from its config (imports torch)."""
    from scale_repro.stages.evaluate import run_eval
    from scale_repro.stages.grpo import run_grpo
    from scale_repro.stages.pass_rate import run_pass_rate
    from scale_repro.stages.sft import run_sft

    return {"sft": run_sft, "grpo": run_grpo, "pass_rate": run_pass_rate, "eval": run_eval}[kind]


def execute(stages: list[Stage], echo=print) -> dict[str, list[str]]:
    """Run every stage not yet finished; a failed stage's dependants are skipped, the rest go on."""
    failed: set[Path] = set()
    summary: dict[str, list[str]] = {"ran": [], "skipped": [], "failed": [], "blocked": []}
    started = time.time()
    for i, stage in enumerate(stages, 1):
        prefix = f"[{i:>3}/{len(stages)} {time.time() - started:6.0f}s]"
        if any(dep in failed for dep in stage.needs):
            failed.add(stage.run_dir)
            summary["blocked"].append(str(stage.run_dir))
            echo(f"{prefix} {stage.kind:<9} blocked (an earlier stage failed): {stage.run_dir}")
            continue
        if stage.finished():
            summary["skipped"].append(str(stage.run_dir))
            echo(f"{prefix} {stage.kind:<9} finished earlier: {stage.run_dir}")
            continue
        echo(f"{prefix} {stage.kind:<9} running: {stage.run_dir}")
        try:
            ran_here = _run_or_wait(stage_function(stage.kind), stage, echo, f"{prefix} {stage.kind:<9}")
            summary["ran" if ran_here else "skipped"].append(str(stage.run_dir))
        except StageInterrupted:
            raise  # SIGTERM: the whole experiment stops; the same command resumes it
        except Exception as exc:  # noqa: BLE001 - one failed cell must not stop the matrix
            log.exception("stage failed: %s", stage.name)
            failed.add(stage.run_dir)
            summary["failed"].append(str(stage.run_dir))
            echo(f"{prefix} {stage.kind:<9} FAILED ({type(exc).__name__}: {exc}): {stage.run_dir}")
    return summary


def _run_or_wait(run, stage: Stage, echo, prefix: str) -> bool:
    """Run the stage; when another live process holds its run directory (a second
    ``scale reproduce`` over the same runs), wait for that process, then take the finished run
    as it is (False) or run what it left unfinished. True when this process ran it."""
    from scale_repro.runs.rundir import RunDirInUse, RunLock

    while True:
        try:
            run(stage.config)
            return True
        except RunDirInUse as exc:
            echo(f"{prefix} running elsewhere, waiting ({str(exc).split('; ')[0]}): {stage.run_dir}")
            RunLock.wait(stage.run_dir)
            if stage.finished():
                echo(f"{prefix} finished elsewhere: {stage.run_dir}")
                return False


def chains(stages: list[Stage]) -> list[list[Stage]]:
    """Independent chains: a first stage with every stage that depends on it (they share
    nothing; the plan's summary counts them)."""
    root_of: dict[Path, Path] = {}
    grouped: dict[Path, list[Stage]] = defaultdict(list)
    for stage in stages:  # plan() orders every stage after the one it needs
        root = root_of.get(stage.needs[0], stage.needs[0]) if stage.needs else stage.run_dir
        root_of[stage.run_dir] = root
        grouped[root].append(stage)
    return list(grouped.values())


def _run_in_worker(stage: Stage) -> dict[str, list[str]]:
    """Worker: one stage, one thread (the workers share the machine's cores).

    The libraries' progress output goes to ``worker.log`` in the stage's run directory, so
    parallel stages do not interleave on the terminal.
    """
    import contextlib

    import torch

    torch.set_num_threads(1)
    for name in ("transformers", "lmms-eval", "datasets", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    log_path = stage.run_dir / "worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(log_path, "a") as stream,
        contextlib.redirect_stdout(stream),
        contextlib.redirect_stderr(stream),
    ):
        return execute([stage], echo=lambda message: print(message, flush=True))


def _descendants(stages: list[Stage]) -> dict[Path, int]:
    """How many stages wait, directly or not, on each stage (the longest work goes first)."""
    children: dict[Path, list[Path]] = defaultdict(list)
    for stage in stages:
        for need in stage.needs:
            children[need].append(stage.run_dir)
    counts: dict[Path, int] = {}
    for stage in reversed(stages):  # plan() puts every stage after the ones it needs
        counts[stage.run_dir] = sum(1 + counts.get(child, 0) for child in children[stage.run_dir])
    return counts


def run_stages(stages: list[Stage], jobs: int = 1, echo=print) -> dict[str, list[str]]:
    """Run every stage; with ``jobs`` > 1, up to that many at once in worker processes, each as
    soon as the stages it needs have finished (those with the most work waiting on them first)."""
    if jobs <= 1:
        return execute(stages, echo=echo)
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, wait

    summary: dict[str, list[str]] = {"ran": [], "skipped": [], "failed": [], "blocked": []}
    weight = _descendants(stages)
    pending = sorted(stages, key=lambda s: -weight[s.run_dir])
    planned = {s.run_dir for s in stages}
    done: set[Path] = set()
    failed: set[Path] = set()
    started = time.time()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        running: dict[Any, Stage] = {}
        while pending or running:
            for stage in list(pending):
                if any(need in failed for need in stage.needs):
                    pending.remove(stage)
                    failed.add(stage.run_dir)
                    summary["blocked"].append(str(stage.run_dir))
                    echo(
                        f"[{time.time() - started:6.0f}s] {stage.kind:<9} blocked (an earlier stage failed): "
                        f"{stage.run_dir}"
                    )
                elif len(running) < jobs and all(n in done or n not in planned for n in stage.needs):
                    pending.remove(stage)
                    running[pool.submit(_run_in_worker, stage)] = stage
            if not running:
                if pending:  # plan() never does this: every stage's needs are planned before it
                    raise RuntimeError(f"{pending[0].run_dir}: waits on a stage that cannot run")
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                stage = running.pop(future)
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - a crashed worker fails its stage only
                    result = {"failed": [str(stage.run_dir)]}
                    echo(f"{stage.run_dir}: worker crashed: {type(exc).__name__}: {exc}")
                for key, items in result.items():
                    summary[key].extend(items)
                state = "FAILED" if result.get("failed") else "skipped" if result.get("skipped") else "done"
                (failed if state == "FAILED" else done).add(stage.run_dir)
                count = sum(len(v) for v in summary.values())
                echo(
                    f"[{count:>3}/{len(stages)} {time.time() - started:6.0f}s] {stage.kind:<9} {state}: {stage.run_dir}"
                )
    return summary
