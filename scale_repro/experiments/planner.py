"""The one planner: an experiment file -> recipes -> a plan of stages and their run directories.

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
different configs is an error before anything runs. The runner
(:mod:`scale_repro.experiments.runner`) runs the plan; nothing here trains or imports torch.

Variables: ``${TRAIN}`` is the data set's training data (a stage's default data), ``${RATED}``
the file the recipe's latest ``pass_rate`` stage wrote; others (``${SYNTH}``, ``${CAP}``: data
directories an experiment writes) come from the caller, then from the environment.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scale_repro.config import (
    INHERITED_FROM_RUN,
    EvalConfig,
    GRPOConfig,
    PassRateConfig,
    SFTConfig,
    from_dict,
    load_config,
    to_dict,
)
from scale_repro.data.difficulty import RATED_FILE
from scale_repro.runs.rundir import atomic_write_json, config_hash, read_json
from scale_repro.stages.lifecycle import stage_finished
from scale_repro.yaml_files import CONFIGS_DIR, ConfigError, parse_yaml, read_yaml

log = logging.getLogger("scale_repro")

METHODS = {"sft": SFTConfig, "grpo": GRPOConfig, "pass_rate": PassRateConfig}
STAGE_CONFIGS = {**METHODS, "eval": EvalConfig}
# A planned stage as a file in its run directory: what `scale stage RUN_DIR` runs in another
# process (a Slurm job, an accelerate launch), with exactly the planner's config.
STAGE_FILE = "stage.json"
TRAINING_METHODS = ("sft", "grpo")
PAPER_RECIPES = CONFIGS_DIR / "recipes" / "balanced-thinking.yaml"
# Filled in by the planner or by the command that writes the data, never from the environment
# (a shell's $TRAIN must not leak into a plan).
PLANNER_VARIABLES = ("TRAIN", "RATED", "SYNTH", "CAP")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


# --quick: a few steps on a few examples for any experiment (plumbing, not results).
# save_steps=2: one checkpoint before the end, so resuming and learning curves are exercised.
QUICK_SETTINGS = {
    "sft": ["max_steps=3", "per_device_train_batch_size=2", "save_steps=2", "logging_steps=1"],
    "grpo": ["max_steps=1", "per_device_train_batch_size=2", "num_generations=2", "max_completion_length=8"],
    "pass_rate": ["k=2", "max_new_tokens=8"],
    "eval": ["max_new_tokens=8", "limit=3"],
}
QUICK_DATA = {"synth": {"n_train": 16, "n_test": 4}, "capabilities": {"n_per_capability": 4}}


def add_quick_settings(spec: Any) -> None:
    """``--quick``: QUICK_SETTINGS after every stage's own settings (the last word wins, so a
    recipe's ``max_steps=150`` becomes 3 as well)."""
    spec.overlay = {
        method: [*spec.overlay.get(method, []), *extra] for method, extra in QUICK_SETTINGS.items()
    } | {method: extra for method, extra in spec.overlay.items() if method not in QUICK_SETTINGS}


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
    # Curriculum experiments: averages over named sets of evaluations ({name: [evaluation, ...]}),
    # reported beside every evaluation and "Overall" (all of them), as the paper reports its suite.
    groups: dict[str, list[str]] = field(default_factory=dict)
    kind: str = "reproduce"  # reproduce | curriculum (evidence files have their own loader)
    description: str = ""
    recipes_from: str | None = None  # the file the recipes list was picked from
    # Settings after every stage's own, per method (sft, grpo, pass_rate, eval): what --quick sets.
    overlay: dict[str, list[str]] = field(default_factory=dict)

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


def sft_loss_modes() -> dict[str, str]:
    """The paper's recipes that are one SFT stage, with the loss mode each trains with
    (``{"SFT": "vanilla", "SFT-FW": "fixed", "SCALe-SFT": "scale"}``), read from the recipes."""
    return {
        name: chain[0][1]
        for chain, name in _paper_signatures().items()
        if len(chain) == 1 and chain[0][0] == "sft"
    }


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
    evaluation_names = [t.get("name") for t in experiment.evaluate]
    for group, members in experiment.groups.items():
        unknown = [m for m in members if m not in evaluation_names]
        if unknown or not members:
            raise ValueError(f"{path}: group {group!r} names no evaluation or unknown ones {unknown}")
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
                [*experiment.eval.get("set", []), *experiment.overlay.get("eval", [])],
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
                            [*defaults.get("set", []), *spec.set, *experiment.overlay.get(spec.method, [])],
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


def write_stage_file(stage: Stage) -> Path:
    path = stage.run_dir / STAGE_FILE
    atomic_write_json(
        path, {"kind": stage.kind, "config": to_dict(stage.config), "needs": [str(n) for n in stage.needs]}
    )
    return path


def read_stage_file(run_dir: str | Path) -> Stage:
    """The stage planned into ``run_dir``; a missing or altered file is a one-line error."""
    path = Path(run_dir) / STAGE_FILE
    if not path.is_file():
        raise ConfigError(
            f"{path}: no planned stage here (`scale reproduce` writes it when it launches the stage)"
        )
    try:
        data = read_json(path)
        config_class = STAGE_CONFIGS[data["kind"]]
        config = from_dict(config_class, data["config"], str(path))
        needs = [Path(n) for n in data.get("needs", [])]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a planned stage ({exc})") from None
    return Stage(data["kind"], Path(config.output_dir), config, needs)


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
