"""The `scale` command line: parse, load a typed config, call one stage function."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from scale_repro.method.formats import ANSWER_FORMATS
from scale_repro.method.schedule import LOSS_MODES

app = typer.Typer(
    help="SCALe reproduction: segment-aware SFT, GRPO, lmms-eval evaluation and reports.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="Model names and tiny offline models.", no_args_is_help=True)
data_app = typer.Typer(help="Synthetic data and data validation.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")

Overrides = Annotated[
    list[str] | None, typer.Option("--set", help="Override any config field: key.sub=value (YAML).")
]
Recipe = Annotated[
    list[Path] | None, typer.Option("--config", help="YAML recipe (see configs/); repeat to layer several.")
]


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _user_errors():
    """Errors that are the user's to fix: reported in one line, never as a traceback."""
    from scale_repro.config import ConfigError
    from scale_repro.data.validate import DataError
    from scale_repro.models.registry import ModelNotFound
    from scale_repro.runs.checkpoints import ResumeError
    from scale_repro.runs.rundir import RunDirError, StageInterrupted
    from scale_repro.stages.lifecycle import TrainingDiverged

    return (
        ConfigError,
        DataError,
        ModelNotFound,
        RunDirError,
        ResumeError,
        FileNotFoundError,
        StageInterrupted,
        TrainingDiverged,
    )


DataOption = Annotated[
    str | None, typer.Option("--data", help="Synth dir, Vision-R1 JSON, preset name or local copy.")
]
OutputDir = Annotated[str | None, typer.Option("--output-dir", help="Run directory.")]
MaxSteps = Annotated[int | None, typer.Option("--max-steps", help="Stop after this many optimizer steps.")]
ImageRoot = Annotated[
    str | None, typer.Option("--image-root", help="Folder the data's image paths are relative to.")
]
Seed = Annotated[int | None, typer.Option("--seed")]
Strict = Annotated[
    bool, typer.Option("--strict", help="Stop at the first bad record instead of skipping it.")
]
Force = Annotated[bool, typer.Option("--force", help="Discard an existing run directory.")]


def _train(stage: str, config_cls, recipes, overrides, force: bool, fields: dict) -> None:
    """Load the stage's config (recipes, --set, flags), then import the stage (torch,
    transformers, TRL: seconds) and run it; user errors end in one line."""
    import importlib

    from scale_repro.config import load_config

    _setup_logging()
    if fields.get("max_steps") is not None and fields["max_steps"] < 1:
        _fail(f"--max-steps must be a positive number of optimizer steps, got {fields['max_steps']}")
    try:
        config = load_config(config_cls, recipes, overrides, **fields)
    except _user_errors() as exc:
        _fail(str(exc))
    module = importlib.import_module(f"scale_repro.stages.{stage}")
    from scale_repro.stages.lifecycle import charge_process_start

    charge_process_start()
    try:
        run_dir = getattr(module, f"run_{stage}")(config, force=force)
    except (*_user_errors(), *module.USER_ERRORS) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail(f"{config.output_dir}: interrupted; run the same command to resume from its newest checkpoint")
    typer.echo(f"{stage} run: {run_dir}")


@app.command()
def sft(
    model: Annotated[
        str | None, typer.Option(help="Short name, hub id, checkpoint or run directory.")
    ] = None,
    data: DataOption = None,
    loss: Annotated[str | None, typer.Option(help=" | ".join(LOSS_MODES))] = None,
    output_dir: OutputDir = None,
    max_steps: MaxSteps = None,
    image_root: ImageRoot = None,
    seed: Seed = None,
    strict: Strict = False,
    force: Force = False,
    config: Recipe = None,
    overrides: Overrides = None,
) -> None:
    """Supervised fine-tuning with the SCALe, fixed-weight or vanilla loss."""
    from scale_repro.config import SFTConfig

    fields = {
        "model": model,
        "output_dir": output_dir,
        "max_steps": max_steps,
        "seed": seed,
        "loss.mode": loss,
        "data.spec": data,
        "data.image_root": image_root,
        "data.strict": strict or None,
    }
    _train("sft", SFTConfig, config, overrides, force, fields)


@app.command()
def grpo(
    model: Annotated[
        str | None, typer.Option(help="SFT run directory, short name, hub id or checkpoint.")
    ] = None,
    data: DataOption = None,
    output_dir: OutputDir = None,
    max_steps: MaxSteps = None,
    image_root: ImageRoot = None,
    seed: Seed = None,
    strict: Strict = False,
    force: Force = False,
    config: Recipe = None,
    overrides: Overrides = None,
) -> None:
    """GRPO with the format and accuracy rewards (vLLM colocated rollouts on GPU machines)."""
    from scale_repro.config import GRPOConfig

    fields = {
        "model": model,
        "output_dir": output_dir,
        "max_steps": max_steps,
        "seed": seed,
        "data.spec": data,
        "data.image_root": image_root,
        "data.strict": strict or None,
    }
    _train("grpo", GRPOConfig, config, overrides, force, fields)


@app.command("eval")
def evaluate(
    model: Annotated[
        str | None, typer.Option(help="Run directory, short name, hub id or checkpoint.")
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="scienceqa | iconqa | synthetic-scienceqa | synthetic-iconqa")
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="`scale data synth` directory or a local copy of the real set.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate the first N questions only.")] = None,
    output_dir: Annotated[str | None, typer.Option(help="Evaluation run directory.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option()] = None,
    use_vllm: Annotated[
        bool, typer.Option(help="Generate with vLLM through lmms-eval (GPU machines).")
    ] = False,
    force: Annotated[bool, typer.Option(help="Rerun even if finished.")] = False,
    label: Annotated[
        list[str] | None,
        typer.Option(
            help="Report label key=value (model, dataset, configuration, seed); repeatable. "
            "Unset labels are derived from the manifests."
        ),
    ] = None,
    config: Recipe = None,
    overrides: Overrides = None,
) -> None:
    """Evaluate with lmms-eval on ScienceQA-IMG / IconQA (answers parsed from <answer> tags)."""
    from scale_repro.config import ConfigError, EvalConfig, load_config
    from scale_repro.stages.evaluate import EvalError, run_eval

    _setup_logging()
    try:
        labels = [f"labels.{item}" for item in label or []]
        for item in label or []:
            if "=" not in item:
                raise ConfigError(f"--label {item}: a label must look like key=value")
        cfg = load_config(
            EvalConfig,
            config,
            [*(overrides or []), *labels],
            model=model,
            task=task,
            data=data,
            limit=limit,
            output_dir=output_dir,
            max_new_tokens=max_new_tokens,
            use_vllm=use_vllm or None,
        )
        from scale_repro.stages.lifecycle import charge_process_start

        charge_process_start()
        out = run_eval(cfg, force=force)
    except (*_user_errors(), EvalError) as exc:
        _fail(str(exc))
    metrics = json.loads((out / "metrics.json").read_text())
    typer.echo(
        f"{metrics['task']}: n={metrics['n']} accuracy={metrics['accuracy']:.4f} "
        f"invalid_rate={metrics['invalid_rate']:.4f} -> {out}"
    )


@app.command()
def report(
    runs: Annotated[Path, typer.Option(help="Folder of run directories.")] = Path("runs"),
    out: Annotated[Path, typer.Option(help="Where the tables and plots go.")] = Path("results/report"),
) -> None:
    """Tables 1-3 from run directories, beside the paper's numbers (Markdown, LaTeX, CSV, PNG)."""
    from scale_repro.experiments.reports.tables import write_report

    if not runs.is_dir():
        _fail(f"{runs}: no such folder of runs")
    summary = write_report(runs, out)
    typer.echo((out / "report.md").read_text())
    for skipped in summary["skipped"]:
        typer.secho(f"skipped {skipped['dir']}: {skipped['reason']}", fg=typer.colors.YELLOW, err=True)
    typer.echo(
        f"report: {summary['report']} ({summary['evaluations']} evaluations, {len(summary['skipped'])} skipped, "
        f"plots: {', '.join(summary['plots'])})"
    )


@app.command()
def reproduce(
    table: Annotated[int | None, typer.Option(help="Paper table 1, 2 or 3.")] = None,
    experiment: Annotated[
        str | None, typer.Option(help="An experiment name from configs/experiments/ or a YAML path.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Its folder: OUT/data, OUT/runs, OUT/report (default runs/NAME).")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the plan only; nothing is written.")] = False,
    results: Annotated[Path | None, typer.Option(help="Where the report goes (default OUT/report).")] = None,
    jobs: Annotated[int, typer.Option(help="Independent stage chains run in this many processes.")] = 1,
    seeds: Annotated[int | None, typer.Option(help="Only the experiment's first N seeds.")] = None,
    models: Annotated[
        list[str] | None, typer.Option("--model", help="Model(s) instead of the file's.")
    ] = None,
    recipes: Annotated[
        list[str] | None, typer.Option("--recipe", help="Only these of the file's recipes (repeatable).")
    ] = None,
    quick: Annotated[bool, typer.Option(help="A few steps on a few examples (a smoke test).")] = False,
    status: Annotated[
        bool, typer.Option(help="Where every stage stands (done, running, queued, ...).")
    ] = False,
    launcher: Annotated[
        str,
        typer.Option(
            help="local: stages in processes of this one | accelerate: each stage `accelerate launch`ed on "
            "its own GPUs of this node | slurm: one sbatch job per stage, after those it needs."
        ),
    ] = "local",
    gpus: Annotated[
        int | None, typer.Option(help="accelerate: GPUs of this node to use (default: all).")
    ] = None,
    gpus_per_stage: Annotated[int, typer.Option(help="accelerate: GPUs of a training stage.")] = 8,
    cpu_processes: Annotated[
        int, typer.Option(help="accelerate: no GPUs; training stages as N CPU processes (gloo).")
    ] = 0,
    wait: Annotated[bool, typer.Option(help="slurm: wait for the jobs, then write the report.")] = False,
    nodes: Annotated[int, typer.Option(help="slurm: nodes per training stage.")] = 1,
    gpus_per_node: Annotated[
        int, typer.Option(help="slurm: GPUs per node of a training stage (0: no GPUs, one process).")
    ] = 8,
    eval_gpus: Annotated[int, typer.Option(help="slurm: GPUs of an evaluation or pass-rate stage.")] = 1,
    time_limit: Annotated[str, typer.Option("--time", help="slurm: each job's time limit.")] = "24:00:00",
    partition: Annotated[str | None, typer.Option(help="slurm: partition.")] = None,
    account: Annotated[str | None, typer.Option(help="slurm: account.")] = None,
    sbatch: Annotated[
        list[str] | None, typer.Option(help="slurm: another #SBATCH option, e.g. --sbatch=--qos=high.")
    ] = None,
) -> None:
    """Run an experiment (a paper table, the staged curriculum, the evidence experiment): its
    data, every recipe's stages (finished ones skipped), its report. --dry-run prints the plan,
    --status where each stage stands."""
    from scale_repro.experiments.planner import experiment_path
    from scale_repro.experiments.runner import RunOptions, load, reproduce_command, run_experiment
    from scale_repro.yaml_files import CONFIGS_DIR

    _setup_logging()
    if jobs < 1:
        _fail("--jobs must be at least 1")
    if (table is None) == (experiment is None):
        _fail("give one of --table N or --experiment NAME")
    if table is not None and table not in (1, 2, 3):
        _fail("--table must be 1, 2 or 3")
    if seeds is not None and seeds < 1:
        _fail("--seeds must be at least 1")
    path = experiment_path(table, experiment)
    if not path.is_file():
        _fail(f"{path}: no such experiment file")
    name = path.stem if path.parent == CONFIGS_DIR / "experiments" else str(path)
    if launcher not in ("local", "accelerate", "slurm"):
        _fail(f"--launcher must be local, accelerate or slurm, got {launcher!r}")
    from scale_repro.experiments.one_node import NodeResources
    from scale_repro.experiments.slurm import SlurmResources

    options = RunOptions(
        out=out or Path("runs") / path.stem,
        results=results,
        jobs=jobs,
        dry_run=dry_run,
        quick=quick,
        seeds=seeds,
        models=models,
        recipes=recipes,
        launcher=launcher,
        wait=wait,
        status=status,
        node=NodeResources(gpus=gpus, gpus_per_stage=gpus_per_stage, cpu_processes=cpu_processes),
        slurm=SlurmResources(
            nodes=nodes,
            gpus_per_node=gpus_per_node,
            eval_gpus=eval_gpus,
            time=time_limit,
            partition=partition,
            account=account,
            extra=sbatch or [],
        ),
    )
    options.command = reproduce_command(name, options)
    try:
        _, spec = load(path, options)
        result = run_experiment(path, options, echo=typer.echo, spec=spec)
    except (ValueError, *_user_errors()) as exc:
        _fail(str(exc))
    summary = result.get("summary")
    if summary and (summary["failed"] or summary["blocked"]):
        raise typer.Exit(1)


@app.command("stage")
def stage_command(
    run_dir: Annotated[
        Path, typer.Argument(help="A run directory `scale reproduce` planned (its stage.json).")
    ],
) -> None:
    """Run one planned stage in its run directory, exactly as planned: what a Slurm job or an
    `accelerate launch` of `scale reproduce --launcher ...` runs. Run again to resume."""
    from scale_repro.experiments.planner import read_stage_file

    _setup_logging()
    try:
        stage = read_stage_file(run_dir)
    except _user_errors() as exc:
        _fail(str(exc))
    from scale_repro.experiments.runner import stage_function
    from scale_repro.stages.lifecycle import charge_process_start

    run = stage_function(stage.kind)
    module = sys.modules[run.__module__]
    charge_process_start()
    try:
        run(stage.config)
    except (*_user_errors(), *getattr(module, "USER_ERRORS", ())) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail(f"{run_dir}: interrupted; run the same command to resume")
    typer.echo(f"{stage.kind} run: {run_dir}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("demo_out"),
    models: Annotated[
        str | None, typer.Option(help="Comma-separated tiny models (default: all three).")
    ] = None,
    quick: Annotated[bool, typer.Option(help="A few steps and questions only (a smoke test).")] = False,
    jobs: Annotated[
        int,
        typer.Option(help="Independent stage chains run in this many processes (default: the CPU count)."),
    ] = 0,
) -> None:
    """The whole chain on tiny models and synthetic data, offline, on a CPU: Tables 1-3 and a report."""
    from scale_repro.experiments.demo import run_demo

    _setup_logging()
    if jobs < 0:
        _fail("--jobs must be at least 1 (or 0 for the CPU count)")
    jobs = jobs or max(1, os.cpu_count() or 1)
    result = run_demo(out, models.split(",") if models else None, quick=quick, echo=typer.echo, jobs=jobs)
    if result["failed"]:
        raise typer.Exit(1)


@app.command("bench")
def bench_command(
    model: Annotated[
        str | None,
        typer.Option(help="Model to time (default: qwen2.5-vl-3b on a GPU, tiny-qwen2.5-vl on a CPU)."),
    ] = None,
    steps: Annotated[int, typer.Option(help="Optimizer steps per stage (the first 2 are warm-up).")] = 6,
    batch: Annotated[
        int | None, typer.Option(help="SFT samples per device and micro-step (default: the model recipe's).")
    ] = None,
    image_size: Annotated[int, typer.Option(help="Side of the synthetic images, in pixels.")] = 448,
    random_init: Annotated[
        bool, typer.Option(help="Random weights from the model's config: no weight download needed.")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(help="JSON to write (and a .md beside it); default results/bench/{gpu,cpu}.json"),
    ] = None,
) -> None:
    """SFT step time, tokens/s, MFU and peak memory; GRPO rollout tokens/s (transformers, vLLM)."""
    from scale_repro.sizing.bench import render, run_bench, write

    for name, value in (("--steps", steps), ("--batch", batch), ("--image-size", image_size)):
        if value is not None and value < 1:
            _fail(f"{name} must be at least 1, got {value}")
    try:
        result = run_bench(model, steps, batch, image_size, random_init)
    except _user_errors() as exc:
        _fail(str(exc))
    target = out or Path("results/bench") / ("cpu.json" if result["device"] == "cpu" else "gpu.json")
    write(result, target)
    typer.echo(render(result), nl=False)
    typer.echo(f"bench: {target}")


@app.command("plan")
def plan_command(
    table: Annotated[int | None, typer.Option(help="Which table's matrix: 1, 2 or 3.")] = None,
    experiment: Annotated[
        str | None,
        typer.Option(help="Or an experiment from configs/experiments/ (staged, ...) or a YAML path."),
    ] = None,
    model: Annotated[list[str] | None, typer.Option(help="Model(s) instead of the file's.")] = None,
    gpus: Annotated[
        int, typer.Option(help="GPUs per stage (ZeRO-2 shards gradients and optimizer over them).")
    ] = 8,
    gpu_memory: Annotated[float, typer.Option("--gpu-memory", help="GiB per GPU.")] = 80.0,
    samples: Annotated[
        int, typer.Option(help="Training samples per stage (`scale data validate` counts them).")
    ] = 10_000,
    tokens_per_sample: Annotated[
        float | None,
        typer.Option(help="Mean tokens per sample, images included (the SFT pre-flight prints it)."),
    ] = None,
    train_throughput: Annotated[float | None, typer.Option(help="Training tokens/s per GPU.")] = None,
    rollout_throughput: Annotated[float | None, typer.Option(help="GRPO rollout tokens/s per GPU.")] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the plan as JSON.")] = None,
) -> None:
    """Memory per GPU, tokens and GPU-hours of every stage of a table or an experiment, before renting GPUs."""
    from scale_repro.experiments.planner import experiment_path
    from scale_repro.runs.rundir import atomic_write_json
    from scale_repro.sizing.gpu_plan import plan_table, render

    if (table is None) == (experiment is None):
        _fail("name one of --table (1, 2 or 3) or --experiment")
    if table is not None and table not in (1, 2, 3):
        _fail(f"--table must be 1, 2 or 3, got {table}")
    if experiment is not None and not experiment_path(None, experiment).is_file():
        _fail(f"--experiment {experiment}: no such file ({experiment_path(None, experiment)})")
    for name, value in (("--gpus", gpus), ("--gpu-memory", gpu_memory), ("--samples", samples)):
        if value <= 0:
            _fail(f"{name} must be positive, got {value}")
    try:
        result = plan_table(
            table,
            gpus,
            gpu_memory,
            samples,
            tokens_per_sample,
            train_throughput,
            rollout_throughput,
            experiment=experiment,
            models=model,
        )
    except (*_user_errors(), ValueError) as exc:
        _fail(str(exc))
    typer.echo(render(result), nl=False)
    if out:
        atomic_write_json(out, result)
        typer.echo(f"plan: {out}")


@models_app.command("list")
def models_list() -> None:
    """Short names of the paper's models and the tiny offline models."""
    from scale_repro.models.registry import catalogue

    typer.echo(f"{'name':<28} {'kind':<10} checkpoint")
    for entry in catalogue().values():
        typer.echo(f"{entry.name:<28} {entry.kind:<10} {entry.description}")


@models_app.command("build-tiny")
def models_build_tiny(
    name: Annotated[
        str, typer.Argument(help="tiny-qwen2.5-vl | tiny-gemma3 | tiny-llava-next (or NAME-real)")
    ],
    out: Annotated[Path, typer.Option(help="Checkpoint directory to write.")],
    seed: Annotated[int, typer.Option()] = 0,
    vocab_size: Annotated[
        int | None, typer.Option(help="Widen the embedding (e.g. 262144 for Gemma-3's).")
    ] = None,
    geometry: Annotated[
        str | None,
        typer.Option(
            help="tiny: 64-px images (fast); real: the real checkpoint's image processor settings and chat "
            "template (same as NAME-real). Default: the name's own."
        ),
    ] = None,
) -> None:
    """Build a tiny random-init model with its processor."""
    from scale_repro.models.tiny import GEOMETRIES, TINY_MODELS, build_tiny, tiny_name

    if geometry is not None and geometry not in GEOMETRIES:
        _fail(f"unknown geometry {geometry!r}; choose from {', '.join(GEOMETRIES)}")
    if name not in TINY_MODELS:
        _fail(f"unknown tiny model {name!r}; choose from {', '.join(TINY_MODELS)}")
    name = tiny_name(name, geometry) if geometry else name
    path = build_tiny(name, out, seed=seed, vocab_size=vocab_size)
    info = json.loads((path / "scale_tiny.json").read_text())
    typer.echo(f"{name}: {info['parameters']:,} parameters -> {path}")


@models_app.command("build")
def models_build(
    name: Annotated[
        str,
        typer.Argument(
            help="A tiny model, a perceiving base (small-llava-next-seeing, ...) or a full-size random-init "
            "paper model (qwen2.5-vl-3b-random, ...; GPU): see `scale models list`."
        ),
    ],
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Build a tiny model, a tiny base that sees (its perception SFT stage, then lmms-eval on
    held-out scenes; refused below the base's accuracy floor), or a paper model at full size,
    random-init, on a GPU. All are cached; where, is printed."""
    from scale_repro.models.perceiving import PERCEIVING_MODELS, PerceptionFloorError, perceiving_record
    from scale_repro.models.registry import catalogue, resolve_model

    entry = catalogue().get(name)
    if entry and entry.kind in ("tiny", "random"):
        try:
            typer.echo(f"{name} -> {resolve_model(name, seed).path}")
        except _user_errors() as exc:
            _fail(str(exc))
        return
    if name not in PERCEIVING_MODELS:
        buildable = [n for n, e in catalogue().items() if e.kind in ("tiny", "random", "perceiving")]
        _fail(f"unknown model to build {name!r}; choose from {', '.join(buildable)}")
    from scale_repro.experiments.perception_base import ensure_perceiving

    try:
        path = ensure_perceiving(name, seed=seed, echo=typer.echo)
    except (*_user_errors(), PerceptionFloorError) as exc:
        _fail(str(exc))
    seen = perceiving_record(path)["perception"]
    typer.echo(
        f"{name}: perception accuracy {100 * seen['accuracy']:.1f}% on {seen['n']} held-out scenes -> {path}"
    )


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(help="Directory to write.")],
    seed: Annotated[int, typer.Option()] = 0,
    n_train: Annotated[int, typer.Option()] = 256,
    n_test: Annotated[int, typer.Option()] = 64,
    reasoning_ratio: Annotated[float, typer.Option(help="Reasoning words per answer word.")] = 20.0,
    image_size: Annotated[int, typer.Option()] = 64,
) -> None:
    """Write synthetic train (Vision-R1 JSON) and test sets (ScienceQA-IMG, ICON-QA schemas)."""
    from scale_repro.data.synth import SynthConfig, write_synthetic

    config = SynthConfig(
        seed=seed, n_train=n_train, n_test=n_test, reasoning_ratio=reasoning_ratio, image_size=image_size
    )
    path = write_synthetic(out, config)
    typer.echo(f"synthetic data: {n_train} train, {n_test}+{n_test} test -> {path}")


@data_app.command("capabilities")
def data_capabilities(
    out: Annotated[Path, typer.Option(help="Directory to write.")],
    seed: Annotated[int, typer.Option()] = 0,
    n: Annotated[int, typer.Option(help="Records per capability.")] = 128,
    image_size: Annotated[int, typer.Option()] = 64,
) -> None:
    """Write synthetic perception, text-reasoning and visual-reasoning data (EasyR1 JSON lines)
    for the staged curriculum, disjoint from `scale data synth`'s test scenes for the same seed."""
    from scale_repro.data.capabilities import CapabilityConfig, write_capability_data

    if n < 1:
        _fail(f"--n must be at least 1, got {n}")
    path = write_capability_data(out, CapabilityConfig(seed=seed, n_per_capability=n, image_size=image_size))
    typer.echo(f"capability data: {n} perception, {n} text-reasoning, {n} visual-reasoning records -> {path}")


@data_app.command("pass-rate")
def data_pass_rate(
    model: Annotated[
        str, typer.Option(help="The model whose difficulty it is (short name, checkpoint, run).")
    ],
    data: Annotated[str, typer.Option(help="Any training data --data takes.")],
    k: Annotated[int, typer.Option(help="Completions sampled per example.")] = 8,
    max_new_tokens: Annotated[int, typer.Option()] = 1024,
    temperature: Annotated[float, typer.Option()] = 1.0,
    answer_format: Annotated[str, typer.Option(help=" | ".join(ANSWER_FORMATS))] = "tags",
    out: Annotated[
        Path | None, typer.Option(help="Default: DATA_STEM.pass_rate.jsonl beside the data.")
    ] = None,
) -> None:
    """Each example's pass rate over K samples of a model, written as EasyR1 records with
    ``pass_rate`` (a GRPO stage orders them with data.order=easy_to_hard)."""
    from scale_repro.data.difficulty import easyr1_record, write_records
    from scale_repro.data.sources import load_training_examples
    from scale_repro.models.registry import resolve_model
    from scale_repro.stages.pass_rate import estimate_pass_rates

    if k < 1 or max_new_tokens < 1:
        _fail("--k and --max-new-tokens must be at least 1")
    if answer_format not in ANSWER_FORMATS:
        _fail(f"unknown --answer-format {answer_format!r}; choose from {', '.join(ANSWER_FORMATS)}")
    try:
        examples = load_training_examples(data).examples
        path = resolve_model(model).path
    except _user_errors() as exc:
        _fail(str(exc))
    rates = estimate_pass_rates(path, examples, k, max_new_tokens, answer_format, temperature)
    source = Path(data)
    target = out or (
        source.with_name(f"{source.stem}.pass_rate.jsonl")
        if source.is_file()
        else Path(f"{data}.pass_rate.jsonl")
    )
    write_records(
        [easyr1_record(e, pass_rate=r, model=model, k=k) for e, r in zip(examples, rates, strict=True)],
        target,
    )
    n = len(rates)
    typer.echo(
        f"{n} examples, mean pass rate {sum(rates) / n:.3f}; {sum(r == 0 for r in rates)} never solved, "
        f"{sum(r == 1 for r in rates)} always solved -> {target}"
    )


@data_app.command("perception-filter")
def data_perception_filter(
    model: Annotated[str, typer.Option(help="The model to probe.")],
    data: Annotated[Path, typer.Option(help="EasyR1 records with a 'description' of each image.")],
    max_new_tokens: Annotated[int, typer.Option()] = 1024,
    answer_format: Annotated[str, typer.Option(help=" | ".join(ANSWER_FORMATS))] = "tags",
    out: Annotated[
        Path | None, typer.Option(help="Default: DATA_STEM.perception.jsonl beside the data.")
    ] = None,
) -> None:
    """Keep the questions the model gets wrong from the image but right from its description:
    what it fails to see (the curriculum's perception data)."""
    import json as _json

    from scale_repro.data.difficulty import easyr1_record, write_records
    from scale_repro.data.sources import load_training_examples
    from scale_repro.models.registry import resolve_model
    from scale_repro.stages.pass_rate import perception_filter

    try:
        examples = load_training_examples(str(data)).examples
        path = resolve_model(model).path
    except _user_errors() as exc:
        _fail(str(exc))
    raw = [_json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    described = {str(r.get("id", r.get("index", i))): r.get("description") for i, r in enumerate(raw)}
    missing = [e.id for e in examples if not described.get(e.id)]
    if missing:
        _fail(
            f"{data}, record {missing[0]}, field 'description': {len(missing)} record(s) have no description"
        )
    verdicts = perception_filter(
        path, examples, [described[e.id] for e in examples], max_new_tokens, answer_format
    )
    kept = [e for e, (image, text) in zip(examples, verdicts, strict=True) if not image and text]
    target = out or data.with_name(f"{data.stem}.perception.jsonl")
    write_records([easyr1_record(e, description=described[e.id]) for e in kept], target)
    right_image = sum(image for image, _ in verdicts)
    right_text = sum(text for _, text in verdicts)
    typer.echo(
        f"{len(examples)} questions: {right_image} right from the image, {right_text} right from the "
        f"description; kept {len(kept)} (wrong from the image, right from the description) -> {target}"
    )


@data_app.command("validate")
def data_validate(
    spec: Annotated[
        str,
        typer.Argument(
            help="What --data takes: a preset (vision-r1-science, vision-r1-iconqa; needs VISION_R1_DIR), "
            "a Vision-R1 JSON file, a `scale data synth` directory, a save_to_disk copy of ScienceQA-IMG "
            "or ICON-QA, or a task name (scienceqa, iconqa) for the hub copy."
        ),
    ],
    data_format: Annotated[
        str | None, typer.Option("--format", help="Force a format: vision-r1 | scienceqa | iconqa.")
    ] = None,
    image_root: Annotated[
        Path | None, typer.Option(help="Folder a JSON file's image paths are relative to.")
    ] = None,
    report_path: Annotated[Path | None, typer.Option("--report", help="Write the report as JSON.")] = None,
    split: Annotated[str | None, typer.Option(help="Split of a DatasetDict (default: test).")] = None,
    hub_id: Annotated[str | None, typer.Option(help="Hub id for a task name (default: lmms-eval's).")] = None,
) -> None:
    """Check every record: totals, selected, valid, each rejection reason with a count and the
    first records, references rewritten and turns split (exit 1 when any record is rejected)."""
    from scale_repro.data.sources import validate_spec
    from scale_repro.data.validate import DataError, ValidationReport, write_report

    try:
        results = validate_spec(spec, str(image_root) if image_root else None, split, data_format, hub_id)
    except DataError as exc:
        _fail(str(exc))
    for result in results:
        typer.echo(result.report.summary())
    if report_path:
        reports = [r.report for r in results]
        write_report(
            reports[0] if len(reports) == 1 else ValidationReport.combined(spec, reports), report_path
        )
        typer.echo(f"report: {report_path}")
    if any(r.report.rejected for r in results):
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover - the `scale` console script
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from scale_repro.runs.rundir import disk_full_cause, disk_full_message

    try:
        app()
    except KeyboardInterrupt:
        typer.secho("error: interrupted; run the same command to resume", fg=typer.colors.RED, err=True)
        sys.exit(130)
    except Exception as exc:
        if disk_full_cause(exc) is None:
            raise
        typer.secho(f"error: {disk_full_message(exc, 'the output folder')}", fg=typer.colors.RED, err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
