"""The controlled experiment: SCALe-SFT against vanilla SFT on a synthetic task, with seeds.

``configs/experiments/synthetic.yaml`` names the task (a :class:`SynthConfig`), the tiny
models, the configurations, the seeds, the main reasoning-to-answer ratio, a sweep over other
ratios, a truncation arm (SFT with a ``max_length`` that cuts part of the answers), the
learning curves (saved checkpoints evaluated) and recipes written in place (the staged
curriculum against its merged baseline, on capability data of the same world). This module
turns it into ordinary reproduction stages (SFT, GRPO, ``scale eval`` through lmms-eval; see
:mod:`scale_repro.experiments.planner`), runs them in parallel worker processes, and writes the evidence
report: accuracy, invalid and contradiction rates and completion length per configuration,
treatment minus control paired by seed with a 95 % t interval, the ratio sweep, the
learning curves and the THINK/ANSWER loss curves.

Every training seed sees the same data in the same budget; the synthetic data for each
ratio shares its test questions (the ratio only changes the length of the training traces),
so results at different ratios are measured on the same questions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from scale_repro.data.capabilities import CapabilityConfig, write_capability_data
from scale_repro.data.synth import SynthConfig, write_synthetic
from scale_repro.experiments.planner import (
    QUICK_DATA,
    Experiment,
    Stage,
    StageSpec,
    add_quick_settings,
    load_recipe_library,
    parse_recipes,
    plan,
)
from scale_repro.experiments.reports.evidence import COMPARISONS, ratio_label
from scale_repro.models.perceiving import PERCEIVING_MODELS
from scale_repro.runs.rundir import CHECKPOINTS_DIR, write_once
from scale_repro.yaml_files import read_yaml

EVIDENCE_KIND = "evidence"
CURVE_EVAL = "eval-{target}-step{step}"  # a checkpoint's evaluation, beside the run's final one


@dataclass
class EvidenceSpec:
    name: str
    models: list[str]
    configurations: list[str]  # run at the main ratio with every seed
    seeds: list[int]
    task: str
    data: dict[str, Any]  # SynthConfig fields; reasoning_ratio comes from the ratios
    ratio: float  # the main reasoning-to-answer ratio (words)
    # {configuration: N}: at the main ratio these run with the first N seeds only (the
    # comparison the seeds were counted for needs them all; the others are looked at, not sized).
    seeds_for: dict[str, int] = field(default_factory=dict)
    # {ratios, configurations, seeds}: the same task at other ratios.
    sweep: dict[str, Any] = field(default_factory=dict)
    # {ratio, max_length, configurations, seeds}: SFT whose max_length cuts part of the answers
    # (cut_answers=keep: trained cut), as "NAME-cut" configurations.
    truncation: dict[str, Any] = field(default_factory=dict)
    # {configurations, seeds}: every checkpoint the SFT stage saves (sft save_steps; keep
    # save_total_limit above max_steps / save_steps) evaluated too, at the main ratio.
    curves: dict[str, Any] = field(default_factory=dict)
    # Recipes written in place, beside the paper's (configs/recipes/balanced-thinking.yaml).
    recipes: dict[str, Any] = field(default_factory=dict)
    # CapabilityConfig fields for ${CAP} (the curriculum's data in this task's world).
    capabilities: dict[str, Any] = field(default_factory=dict)
    # [treatment, control] pairs compared by seed at every ratio that ran both.
    comparisons: list[list[str]] = field(default_factory=lambda: [list(pair) for pair in COMPARISONS])
    sft: dict[str, Any] = field(default_factory=dict)
    grpo: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    # Settings after every stage's own, per method (sft, grpo, eval): what --quick sets.
    overlay: dict[str, list[str]] = field(default_factory=dict)
    kind: str = EVIDENCE_KIND

    def synth_config(self, ratio: float) -> SynthConfig:
        return SynthConfig.from_values(dict(self.data, reasoning_ratio=float(ratio)))

    def capability_config(self) -> CapabilityConfig:
        """The curriculum's data in the same world: grid, shapes, shading, choice order, image
        size and seed of the task, its test scenes reserved."""
        world = self.synth_config(self.ratio)
        values = {
            "seed": world.seed,
            "grid": world.grid,
            "shapes": world.shapes,
            "shaded_cells": world.shaded_cells,
            "shuffle_choices": world.shuffle_choices,
            "image_size": world.image_size,
            **self.capabilities,
            "reserve_like": {k: v for k, v in self.data.items() if k != "n_train"},
        }
        return CapabilityConfig(**values)

    def ratios(self) -> list[float]:
        ratios = [float(self.ratio)]
        for r in [*self.sweep.get("ratios", []), *([self.truncation["ratio"]] if self.truncation else [])]:
            if float(r) not in ratios:
                ratios.append(float(r))
        return ratios

    def arms(self, ratio: float) -> list[tuple[list[str], list[int]]]:
        """The groups of (configurations, seeds) run at ``ratio``."""
        groups = []
        if float(ratio) == float(self.ratio):
            counts: dict[int, list[str]] = {}
            for configuration in self.configurations:
                counts.setdefault(self.seeds_for.get(configuration, len(self.seeds)), []).append(
                    configuration
                )
            groups += [(configurations, self.seeds[:n]) for n, configurations in counts.items()]
        elif float(ratio) in [float(r) for r in self.sweep.get("ratios", [])]:
            groups.append(
                (self.sweep.get("configurations", ["SFT", "SCALe-SFT"]), self.sweep.get("seeds", self.seeds))
            )
        if self.truncation and float(ratio) == float(self.truncation["ratio"]):
            groups.append(
                (
                    [f"{c}-cut" for c in self.truncation["configurations"]],
                    self.truncation.get("seeds", self.seeds),
                )
            )
        return groups

    def library(self) -> dict[str, list[StageSpec]]:
        """Every recipe this experiment can name: the paper's, those written in place, and the
        truncation arm's ("NAME-cut": NAME with its SFT stages cut by max_length)."""
        library = dict(load_recipe_library())
        if self.recipes:
            in_place = parse_recipes(self.recipes, f"{self.name}: recipes")
            clash = sorted(set(in_place) & set(library))
            if clash:
                raise ValueError(f"{self.name}: recipes {clash} are already the paper's; name them otherwise")
            library.update(in_place)
        if self.truncation:
            length = self.truncation["max_length"]
            for name in self.truncation["configurations"]:
                library[f"{name}-cut"] = [
                    StageSpec(
                        f"{s.name}-cut{length}",
                        s.method,
                        s.data,
                        [*s.set, f"max_length={length}", "cut_answers=keep"],
                    )
                    if s.method == "sft"
                    else s
                    for s in library[name]
                ]
        return library

    def all_comparisons(self) -> list[tuple[str, str]]:
        """The file's pairs, and each pair again between the truncation arm's configurations."""
        pairs = [(t, c) for t, c in self.comparisons]
        cut = set(self.truncation.get("configurations", [])) if self.truncation else set()
        return pairs + [(f"{t}-cut", f"{c}-cut") for t, c in pairs if t in cut and c in cut]


def is_evidence_file(path: str | Path) -> bool:
    data = read_yaml(path) or {}
    return isinstance(data, dict) and data.get("kind") == EVIDENCE_KIND


def load_evidence(path: str | Path) -> EvidenceSpec:
    data = read_yaml(path) or {}
    try:
        spec = EvidenceSpec(**data)
    except TypeError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    if spec.truncation:
        missing = [k for k in ("ratio", "max_length", "configurations") if k not in spec.truncation]
        if missing:
            raise ValueError(f"{path}: truncation needs {', '.join(missing)}")
    try:
        known = spec.library()
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    named = [
        *spec.configurations,
        *spec.seeds_for,
        *spec.sweep.get("configurations", []),
        *spec.curves.get("configurations", []),
        *(c for pair in spec.comparisons for c in pair),
    ]
    unknown = sorted({c for c in named if c not in known})
    if unknown:
        raise ValueError(f"{path}: unknown configuration(s) {unknown}; known: {list(known)}")
    if any(not isinstance(n, int) or n < 1 for n in spec.seeds_for.values()):
        raise ValueError(f"{path}: seeds_for gives each configuration a number of seeds (at least 1)")
    if any(len(pair) != 2 for pair in spec.comparisons):
        raise ValueError(f"{path}: comparisons must be [treatment, control] pairs")
    try:
        spec.synth_config(spec.ratio)
    except TypeError as exc:
        raise ValueError(f"{path}: data: {exc}") from exc
    try:
        spec.capability_config()
    except TypeError as exc:
        raise ValueError(f"{path}: capabilities: {exc}") from exc
    return spec


def shorten(
    spec: EvidenceSpec,
    seeds: int | None = None,
    models: list[str] | None = None,
    quick: bool = False,
    configurations: list[str] | None = None,
    sweep: bool = True,
) -> EvidenceSpec:
    """The same experiment with fewer seeds or configurations, other models, no ratio sweep,
    truncation arm or learning curves (``sweep`` false), or (quick) a few steps on a few examples."""
    if models:
        spec.models = list(models)
    if quick:  # a perceiving base's few-step counterpart: plumbing, not a base that sees
        spec.models = [
            (PERCEIVING_MODELS[m].quick or m) if m in PERCEIVING_MODELS else m for m in spec.models
        ]
    if seeds is not None:
        spec.seeds = spec.seeds[:seeds]
        spec.sweep = dict(spec.sweep, seeds=spec.sweep.get("seeds", spec.seeds)[:seeds])
        for extra in ("truncation", "curves"):
            block = getattr(spec, extra)
            if block:
                setattr(spec, extra, dict(block, seeds=block.get("seeds", spec.seeds)[:seeds]))
    if configurations:
        spec.configurations = [c for c in spec.configurations if c in configurations]
    if not sweep:
        spec.sweep, spec.truncation, spec.curves = {}, {}, {}
    if quick:
        add_quick_settings(spec)
        spec.data = dict(spec.data, **QUICK_DATA["synth"])
        spec.capabilities = dict(spec.capabilities, **QUICK_DATA["capabilities"])
    return spec


def prepare_data(spec: EvidenceSpec, data_root: Path, echo=print, write: bool = True) -> dict[float, Path]:
    """One synthetic data directory per ratio; an existing one is reused only if made the same
    way. ``write=False`` (a dry run) only names the directories."""
    dirs = ratio_dirs(spec, data_root)
    for ratio, folder in dirs.items():
        if not write:
            continue
        write_once(
            folder,
            spec.synth_config(ratio),
            write_synthetic,
            echo,
            f"synthetic data (ratio {ratio_label(ratio)})",
        )
    return dirs


def prepare_capabilities(
    spec: EvidenceSpec, data_root: Path, echo=print, write: bool = True
) -> dict[str, str]:
    """``${CAP}``: the curriculum's capability data in the task's world, when a recipe needs it."""
    if not spec.capabilities or not set(spec.recipes) & set(spec.configurations):
        return {}
    folder = data_root / "capabilities"
    if write:
        write_once(folder, spec.capability_config(), write_capability_data, echo, "capability data")
    return {"CAP": str(folder)}


def plan_evidence(
    spec: EvidenceSpec, out: Path, data_dirs: dict[float, Path], variables: dict[str, str] | None = None
) -> list[Stage]:
    """Every arm at every ratio on the one planner, then the learning-curve evaluations."""
    stages: dict[Path, Stage] = {}
    library = spec.library()
    for ratio, data_dir in data_dirs.items():
        for configurations, seeds in spec.arms(ratio):
            experiment = Experiment(
                name=f"{spec.name}-{ratio_label(ratio)}",
                models=spec.models,
                datasets=[
                    {
                        "name": ratio_label(ratio),
                        "train": str(data_dir),
                        "task": spec.task,
                        "data": str(data_dir),
                    }
                ],
                recipes={c: library[c] for c in configurations},
                seeds=list(seeds),
                sft=spec.sft,
                grpo=spec.grpo,
                eval=spec.eval,
                overlay=spec.overlay,
            )
            for stage in plan(experiment, out / "runs", variables):
                stages.setdefault(stage.run_dir, stage)
    planned = list(stages.values())
    return planned + curve_evaluations(spec, planned)


def curve_evaluations(spec: EvidenceSpec, stages: list[Stage]) -> list[Stage]:
    """The learning curves: each checkpoint the SFT stage of a curve configuration saved before
    its last step, evaluated like its final model (same task, data and settings)."""
    if not spec.curves:
        return []
    by_dir = {s.run_dir: s for s in stages}
    main = ratio_label(float(spec.ratio))
    wanted_seeds = set(spec.curves.get("seeds", spec.seeds))
    curves = []
    for final in stages:
        labels = getattr(final.config, "labels", {}) or {}
        if (
            final.kind != "eval"
            or labels.get("dataset") != main
            or labels.get("seed") not in wanted_seeds
            or labels.get("configuration") not in spec.curves["configurations"]
        ):
            continue
        training = by_dir[final.needs[0]].config
        steps = list(range(training.save_steps, training.max_steps, training.save_steps))
        if len(steps) + 1 > training.save_total_limit:
            raise ValueError(
                f"{spec.name}: curves need all {len(steps) + 1} checkpoints of {training.output_dir}; "
                f"set save_total_limit >= {len(steps) + 1} in the sft settings (save_steps {training.save_steps}, "
                f"max_steps {training.max_steps})"
            )
        target = Path(final.config.output_dir).name.removeprefix("eval-")
        for step in steps:
            run_dir = Path(training.output_dir) / CURVE_EVAL.format(target=target, step=step)
            config = replace(
                final.config,
                model=str(Path(training.output_dir) / CHECKPOINTS_DIR / f"checkpoint-{step}"),
                output_dir=str(run_dir),
            )
            config.labels = {**labels, "step": step}
            curves.append(Stage("eval", run_dir, config, needs=[Path(training.output_dir)]))
    return curves


def ratio_dirs(spec: EvidenceSpec, data_root: Path) -> dict[float, Path]:
    """The synthetic data folder of each ratio the experiment runs."""
    return {ratio: data_root / f"ratio{ratio:g}" for ratio in spec.ratios()}


def write_data(spec: EvidenceSpec, data_root: Path, echo=print, write: bool = True) -> dict[str, str]:
    """The runner's data step: a folder per ratio (see :func:`prepare_data`), then ``${CAP}``."""
    prepare_data(spec, data_root, echo=echo, write=write)
    return prepare_capabilities(spec, data_root, echo=echo, write=write)


def plan_stages(spec: EvidenceSpec, out: Path, variables: dict[str, str]) -> list[Stage]:
    """The runner's plan step: every arm under ``out/runs`` on the data of ``out/data``."""
    return plan_evidence(spec, Path(out), ratio_dirs(spec, Path(out) / "data"), variables)
