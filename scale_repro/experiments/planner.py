"""Experiments: an experiment file -> a plan of stages -> run directories, on one runner.

An experiment (``configs/experiments/*.yaml``) names models, seeds, data sets and *recipes*.
A recipe is an ordered list of stages; each stage names its method (``sft``, ``grpo``, or
``pass_rate``, which rates the data with the model trained so far), its data, and its settings
(``set``: loss, rewards, answer format, which parts train through ``lora.*``, steps). A
training stage starts from the checkpoint of the recipe's previous training stage, the first
from the model; every recipe's final model is evaluated on every evaluation target. A recipe
with no stages evaluates the model as it is (the paper's "Base").

The paper's configurations (Base, SFT, SFT-FW, SCALe-SFT, GRPO, GRPO-FW, SCALe-GRPO) are
recipes in ``configs/recipes/balanced-thinking.yaml``; an experiment picks them by name with
``recipes_from`` and a list, or defines its recipes in place (the staged curriculum).

A stage's run directory depends only on the stages up to it
(``MODEL/[TRAIN/]seedN/1-a/2-b/eval-TARGET``), so recipes that share a prefix share its runs
(GRPO trains from the same SFT run as the SFT configuration); one prefix planned with two
different configs is an error before anything runs. Stages run in one process or, with
``jobs``, independent chains in parallel; a stage whose manifest says it finished with the same
config is skipped, a failed or interrupted one runs again, a failed stage's dependants are
blocked. Every experiment (``scale reproduce``, the demo, the evidence and the curriculum)
goes through :func:`plan` and :func:`run_stages`.

Variables: ``${TRAIN}`` is the data set's training data (a stage's default data), ``${RATED}``
the file the recipe's latest ``pass_rate`` stage wrote; others (``${SYNTH}``, ``${CAP}``: data
directories an experiment writes) come from the caller, then from the environment.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scale_repro.config import (
    INHERITED_FROM_RUN,
    EvalConfig,
    GRPOConfig,
    PassRateConfig,
    SFTConfig,
    load_config,
    to_dict,
)
from scale_repro.data.difficulty import RATED_FILE
from scale_repro.runs.rundir import StageInterrupted, config_hash
from scale_repro.stages.lifecycle import stage_finished
from scale_repro.yaml_files import CONFIGS_DIR, parse_yaml, read_yaml

log = logging.getLogger("scale_repro")

METHODS = {"sft": SFTConfig, "grpo": GRPOConfig, "pass_rate": PassRateConfig}
TRAINING_METHODS = ("sft", "grpo")
PAPER_RECIPES = CONFIGS_DIR / "recipes" / "balanced-thinking.yaml"
# Filled in by the planner or by the command that writes the data, never from the environment
# (a shell's $TRAIN must not leak into a plan).
PLANNER_VARIABLES = ("TRAIN", "RATED", "SYNTH", "CAP")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class Stage:
    kind: str  # sft | grpo | pass_rate | eval
    run_dir: Path
    config: Any
    needs: list[Path] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.kind} {self.run_dir}"

    def finished(self) -> bool:
        return stage_finished(self.config)


@dataclass
class StageSpec:
    """One stage of a recipe, as an experiment file writes it."""

    name: str  # its folder is N-name; recipes that share stages up to here share the runs
    method: str  # sft | grpo | pass_rate
    data: str = "${TRAIN}"  # any training data --data takes; ${TRAIN}: the data set's
    set: list[str] = field(default_factory=list)  # settings of this stage, after the file's defaults

    def describe(self) -> str:
        settings = f", {', '.join(self.set)}" if self.set else ""
        return f"{self.name} ({self.method}, {self.data.rstrip('/').split('/')[-1]}{settings})"


@dataclass
class Experiment:
    name: str
    models: list[str]
    seeds: list[int]
    recipes: dict[str, list[StageSpec]]
    # Tracks of training data and evaluation: {name, train, task, data?, hub_id?}; the planner
    # runs every recipe on each, with ${TRAIN} = train, evaluated on its task. None: one track,
    # evaluated on `evaluate`.
    datasets: list[dict[str, Any]] = field(default_factory=list)
    evaluate: list[dict[str, Any]] = field(default_factory=list)  # {name, task, data?, hub_id?}
    # Defaults of every stage of a method, before the stage's own settings: {config: [recipes], set: [...]}.
    sft: dict[str, Any] = field(default_factory=dict)
    grpo: dict[str, Any] = field(default_factory=dict)
    pass_rate: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    # Curriculum experiments: the recipe the others are compared with, paired by seed, and the
    # synthetic data they write ({capabilities: CapabilityConfig, synth: SynthConfig}).
    baseline: str | None = None
    data: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The paper's own figures shown beside ours, labelled as such: {source, accuracy: {recipe:
    # value}, deltas: {what: value}}; for the layout a real run gets, never compared as equals.
    published: dict[str, Any] = field(default_factory=dict)
    kind: str = "reproduce"  # reproduce | curriculum (evidence files have their own loader)
    description: str = ""
    recipes_from: str | None = None  # the file the recipes list was picked from

    def tracks(self) -> list[dict[str, Any]]:
        if self.datasets:
            return [dict(d, evaluate=d.get("evaluate") or [_target(d)]) for d in self.datasets]
        return [{"name": None, "train": None, "evaluate": self.evaluate}]


def _target(dataset: dict[str, Any]) -> dict[str, Any]:
    target = {"name": dataset["name"], "task": dataset["task"]}
    for key in ("data", "hub_id"):
        if dataset.get(key) is not None:
            target[key] = dataset[key]
    return target


def expand_variables(text: str, variables: dict[str, str] | None, environment: bool = False) -> str:
    """``${KEY}`` replaced by ``variables[KEY]``, then (``environment``) by the environment
    variable of that name, unless the planner fills it in; anything else is left as it is."""

    def value(match: re.Match) -> str:
        key = match.group(1)
        if variables and key in variables:
            return str(variables[key])
        if environment and key not in PLANNER_VARIABLES and key in os.environ:
            return os.environ[key]
        return match.group(0)

    return _VARIABLE.sub(value, text)


def parse_recipes(recipes: Any, where: str) -> dict[str, list[StageSpec]]:
    """``{name: [stage, ...]}`` from a file's mapping, every stage checked."""
    if not isinstance(recipes, dict) or not recipes:
        raise ValueError(f"{where}: recipes must be a mapping of recipe name -> list of stages")
    parsed: dict[str, list[StageSpec]] = {}
    for recipe, stages in recipes.items():
        if not isinstance(stages, list):
            raise ValueError(
                f"{where}: recipe {recipe} must be a list of stages (an empty list: the model as it is)"
            )
        specs = []
        for index, stage in enumerate(stages, 1):
            try:
                spec = StageSpec(**stage)
            except TypeError as exc:
                raise ValueError(f"{where}: recipe {recipe}, stage {index}: {exc}") from exc
            if spec.method not in METHODS:
                raise ValueError(
                    f"{where}: recipe {recipe}, stage {index}: method must be one of "
                    f"{', '.join(METHODS)}, got {spec.method!r}"
                )
            if not isinstance(spec.set, list) or not all(isinstance(s, str) for s in spec.set):
                raise ValueError(f"{where}: recipe {recipe}, stage {index}: set must be a list of key=value")
            specs.append(spec)
        if specs and specs[-1].method == "pass_rate":
            raise ValueError(f"{where}: recipe {recipe} ends with a pass_rate stage, which trains nothing")
        parsed[recipe] = specs
    return parsed


def load_recipe_library(path: str | Path = PAPER_RECIPES) -> dict[str, list[StageSpec]]:
    path = _repo_path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such recipe file")
    return parse_recipes((read_yaml(path) or {}).get("recipes"), str(path))


@functools.cache
def _paper_signatures() -> dict[tuple[tuple[str, str | None], ...], str]:
    signatures = {}
    for name, specs in load_recipe_library().items():
        signature = []
        for spec in specs:
            settings = dict(s.split("=", 1) for s in spec.set if "=" in s)
            signature.append((spec.method, settings.get("loss.mode") if spec.method == "sft" else None))
        signatures.setdefault(tuple(signature), name)
    return signatures


def paper_configuration(chain: list[tuple[str, str | None]]) -> str | None:
    """The paper recipe a chain of training stages amounts to: ``chain`` is ``(method, SFT loss
    mode or None)`` per stage, in order (``[]`` is Base); None when no recipe matches."""
    return _paper_signatures().get(tuple(chain))


def _repo_path(path: str | Path) -> Path:
    return Path(path) if Path(path).is_absolute() else CONFIGS_DIR.parent / path


def load_experiment(path: str | Path, variables: dict[str, str] | None = None) -> Experiment:
    """An experiment file, checked: unknown keys, recipes, stages and baseline are one-line
    errors. ``${NAME}`` values come from ``variables``, then the environment; the planner's own
    (``${TRAIN}``, ``${RATED}``) and the caller's data directories stay for :func:`plan`."""
    text = expand_variables(Path(path).read_text(), variables, environment=True)
    data = parse_yaml(text, path) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: an experiment file must be a mapping")
    recipes = data.pop("recipes", None)
    source = data.get("recipes_from")
    if isinstance(recipes, list):
        if not source:
            raise ValueError(f"{path}: a list of recipes needs recipes_from: the file that defines them")
        library = load_recipe_library(source)
        unknown = [r for r in recipes if r not in library]
        if unknown:
            raise ValueError(f"{path}: unknown recipe(s) {unknown}; {source} defines {list(library)}")
        parsed = {r: library[r] for r in recipes}
    else:
        parsed = parse_recipes(recipes, str(path))
    try:
        experiment = Experiment(recipes=parsed, **data)
    except TypeError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    if experiment.baseline is not None and experiment.baseline not in experiment.recipes:
        raise ValueError(
            f"{path}: baseline {experiment.baseline!r} is not one of the recipes {list(experiment.recipes)}"
        )
    for index, dataset in enumerate(experiment.datasets, 1):
        missing = [k for k in ("name", "train") if not dataset.get(k)]
        if missing or not (dataset.get("task") or dataset.get("evaluate")):
            raise ValueError(f"{path}: datasets entry {index} needs name, train and task (or evaluate)")
    if not experiment.datasets and not experiment.evaluate:
        raise ValueError(f"{path}: name datasets (training data and task) or evaluate targets")
    from scale_repro.data.sources import TEST_TASKS

    for track in experiment.tracks():
        for target in track["evaluate"]:
            if not target.get("name") or target.get("task") not in TEST_TASKS:
                raise ValueError(
                    f"{path}: evaluation {target} needs a name and a task, one of {', '.join(TEST_TASKS)}"
                )
            if TEST_TASKS[target["task"]].hub_id is None and not target.get("data"):
                raise ValueError(
                    f"{path}: evaluation {target['name']}: task {target['task']} has no copy on the hub; "
                    "give its data (a `scale data synth` directory, e.g. ${SYNTH})"
                )
    return experiment


def experiment_path(table: int | None = None, name: str | None = None) -> Path:
    """``configs/experiments/table{N}.yaml``, ``configs/experiments/NAME.yaml``, or NAME itself
    when it is a YAML path."""
    if name and name.endswith((".yaml", ".yml")):
        return Path(name)
    return CONFIGS_DIR / "experiments" / (f"table{table}.yaml" if table else f"{name}.yaml")


def recipe_paths(section: dict[str, Any]) -> list[Path]:
    """The recipe files an experiment section names, relative to the repository root."""
    return [_repo_path(p) for p in section.get("config", [])]


def _expanded(text: str, variables: dict[str, str], where: str) -> str:
    value = expand_variables(text, variables)
    left = _VARIABLE.search(value)
    if left:
        raise ValueError(
            f"{where}: ${{{left.group(1)}}} is not set here (known: {', '.join(sorted(variables))})"
        )
    return value


def plan(experiment: Experiment, out: str | Path, variables: dict[str, str] | None = None) -> list[Stage]:
    """Every stage of every model, data set, recipe and seed, then the evaluations, in an order
    that respects dependencies; shared prefixes once."""
    out = Path(out)
    stages: dict[Path, Stage] = {}
    identity: dict[Path, tuple[str, str]] = {}  # run dir -> (config hash, recipe that planned it)

    def add(stage: Stage, recipe: str) -> None:
        key = config_hash(stage.config)
        if stage.run_dir in identity and identity[stage.run_dir][0] != key:
            raise ValueError(
                f"{stage.run_dir}: recipes {identity[stage.run_dir][1]} and {recipe} name the same stages "
                "with different settings; give one of the stages another name"
            )
        identity.setdefault(stage.run_dir, (key, recipe))
        stages.setdefault(stage.run_dir, stage)

    def evaluate(
        model: str,
        track: dict[str, Any],
        recipe: str,
        seed: int,
        evaluated: str,
        where: Path,
        needs: list[Path],
        scope: dict[str, str],
        answer_format: str | None = None,
    ) -> None:
        for target in track["evaluate"]:
            eval_dir = where / f"eval-{target['name']}"
            data = target.get("data")
            evaluation = load_config(
                EvalConfig,
                recipe_paths(experiment.eval),
                experiment.eval.get("set", []),
                model=evaluated,
                task=target["task"],
                hub_id=target.get("hub_id"),
                output_dir=str(eval_dir),
                seed=seed,
                answer_format=answer_format,
                data=None if data is None else _expanded(str(data), scope, f"evaluate {target['name']}"),
            )
            evaluation.labels = {
                "model": model,
                "dataset": target["name"],
                "configuration": recipe,
                "seed": seed,
            }
            add(Stage("eval", eval_dir, evaluation, needs=needs), recipe)

    for model in experiment.models:
        for track in experiment.tracks():
            scope = dict(variables or {})
            if track["train"] is not None:
                scope["TRAIN"] = _expanded(str(track["train"]), scope, f"data set {track['name']}")
            for recipe, specs in experiment.recipes.items():
                if not specs:  # the model as it is, once: greedy decoding does not depend on the seed
                    evaluate(
                        model, track, recipe, experiment.seeds[0], model, out / model / "base", [], scope
                    )
                    continue
                for seed in experiment.seeds:
                    run_dir = out / model
                    if track["train"] is not None:
                        run_dir = run_dir / Path(scope["TRAIN"].rstrip("/")).name
                    run_dir = run_dir / f"seed{seed}"
                    current_model, last_training, previous = model, None, None
                    local = dict(scope)
                    for index, spec in enumerate(specs, 1):
                        where = f"recipe {recipe}, stage {index} ({spec.name})"
                        run_dir = run_dir / f"{index}-{spec.name}"
                        defaults = getattr(experiment, spec.method)
                        inherited = None
                        if last_training is not None:  # not trained yet: inherit from its config
                            inherited = {
                                k: v
                                for k, v in to_dict(stages[last_training].config).items()
                                if k in INHERITED_FROM_RUN
                            }
                        config = load_config(
                            METHODS[spec.method],
                            recipe_paths(defaults),
                            [*defaults.get("set", []), *spec.set],
                            inherit=inherited,
                            model=current_model,
                            output_dir=str(run_dir),
                            seed=seed,
                            **{"data.spec": _expanded(spec.data, local, where)},
                        )
                        config.labels = {
                            "model": model,
                            "configuration": recipe,
                            "stage": spec.name,
                            "seed": seed,
                            **({"dataset": track["name"]} if track["name"] else {}),
                        }
                        add(Stage(spec.method, run_dir, config, needs=[previous] if previous else []), recipe)
                        previous = run_dir
                        if spec.method in TRAINING_METHODS:
                            current_model, last_training = str(run_dir), run_dir
                        else:
                            local["RATED"] = str(run_dir / RATED_FILE)
                    # Asked and parsed as the last training stage answered (a GRPO stage's format).
                    answer_format = getattr(stages[last_training].config, "answer_format", None)
                    evaluate(
                        model,
                        track,
                        recipe,
                        seed,
                        current_model,
                        Path(current_model),
                        [previous],
                        scope,
                        answer_format,
                    )
    order = {"sft": 0, "grpo": 1, "pass_rate": 2, "eval": 3}
    # Earlier stages of a chain first; within a depth, training before rating before evaluation.
    return sorted(stages.values(), key=lambda s: (len(s.run_dir.parts), order[s.kind]))


def describe_recipes(experiment: Experiment) -> str:
    """Every recipe's stages in order, one line each."""
    lines = []
    for recipe, specs in experiment.recipes.items():
        chain = " -> ".join(spec.describe() for spec in specs) or "the model as it is (evaluated only)"
        lines.append(f"{recipe}: {chain}")
    return "\n".join(lines)


def describe(stages: list[Stage], relative_to: Path | None = None) -> str:
    """One line per stage, in the order they run: kind, done or to run, run directory."""
    lines = []
    for i, stage in enumerate(stages, 1):
        state = "done" if stage.finished() else "to run"
        where = stage.run_dir.relative_to(relative_to) if relative_to else stage.run_dir
        lines.append(f"[{i:>3}/{len(stages)}] {stage.kind:<9} {state:<6} {where}")
    return "\n".join(lines)


def execute(stages: list[Stage], echo=print) -> dict[str, list[str]]:
    """Run every stage not yet finished; a failed stage's dependants are skipped, the rest go on."""
    from scale_repro.data.difficulty import run_pass_rate
    from scale_repro.stages.evaluate import run_eval
    from scale_repro.stages.grpo import run_grpo
    from scale_repro.stages.sft import run_sft

    runners = {"sft": run_sft, "grpo": run_grpo, "pass_rate": run_pass_rate, "eval": run_eval}
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
            ran_here = _run_or_wait(runners[stage.kind], stage, echo, f"{prefix} {stage.kind:<9}")
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
