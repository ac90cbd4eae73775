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

import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from scale_repro.data.capabilities import CapabilityConfig, write_capability_data
from scale_repro.data.synth import SynthConfig, write_synthetic
from scale_repro.experiments.planner import (
    Experiment,
    Stage,
    StageSpec,
    chains,
    load_recipe_library,
    parse_recipes,
    plan,
    run_stages,
)
from scale_repro.experiments.reports.evidence import COMPARISONS, ratio_label, write_evidence_report
from scale_repro.models.perceiving import PERCEIVING_MODELS, perceiving_record
from scale_repro.runs.rundir import CHECKPOINTS_DIR, package_versions, read_manifest, write_once
from scale_repro.yaml_files import read_yaml

EVIDENCE_KIND = "evidence"
QUICK_OVERRIDES = {
    # save_steps=2: one checkpoint before the end, so the learning curves are exercised too.
    "sft": ["max_steps=3", "per_device_train_batch_size=2", "save_steps=2", "logging_steps=1"],
    "grpo": ["max_steps=1", "per_device_train_batch_size=2", "num_generations=2", "max_completion_length=8"],
    "eval": ["max_new_tokens=8", "limit=4"],
}
QUICK_DATA = {"n_train": 16, "n_test": 4}
QUICK_CAPABILITIES = {"n_per_capability": 4}
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
        spec.data = dict(spec.data, **QUICK_DATA)
        spec.capabilities = dict(spec.capabilities, **QUICK_CAPABILITIES)
        for section, extra in QUICK_OVERRIDES.items():
            block = getattr(spec, section)
            block["set"] = list(block.get("set", [])) + extra
    return spec


def prepare_data(spec: EvidenceSpec, data_root: Path, echo=print, write: bool = True) -> dict[float, Path]:
    """One synthetic data directory per ratio; an existing one is reused only if made the same
    way. ``write=False`` (a dry run) only names the directories."""
    dirs = {}
    for ratio in spec.ratios():
        if not write:
            dirs[ratio] = data_root / f"ratio{ratio:g}"
            continue
        dirs[ratio] = write_once(
            data_root / f"ratio{ratio:g}",
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


def evidence_stages(spec: EvidenceSpec, out: Path, echo=print, write: bool = True) -> list[Stage]:
    """The data for every ratio (written if missing; named only when ``write`` is False, as a
    dry run writes nothing), then every stage of the experiment."""
    out = Path(out).resolve()
    data_dirs = prepare_data(spec, out / "data", echo=echo, write=write)
    capabilities = prepare_capabilities(spec, out / "data", echo=echo, write=write)
    return plan_evidence(spec, out, data_dirs, capabilities)


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


def run_evidence(
    spec: EvidenceSpec, out: Path, results: Path, jobs: int = 1, command: str = "", echo=print
) -> dict[str, Any]:
    started = time.time()
    out, results = Path(out).resolve(), Path(results).resolve()
    from scale_repro.experiments.perception_base import ensure_perceiving  # trains: imports torch

    # Perceiving bases are built here, once, before any worker needs them.
    bases = {
        m: perceiving_record(ensure_perceiving(m, echo=echo)) for m in spec.models if m in PERCEIVING_MODELS
    }
    stages = evidence_stages(spec, out, echo=echo)
    echo(
        f"{len(stages)} stages ({len(chains(stages))} independent chains) for {', '.join(spec.models)}, "
        f"ratios {', '.join(ratio_label(r) for r in spec.ratios())}; {jobs} worker(s); runs under {out / 'runs'}"
    )
    summary = run_stages(stages, jobs=jobs, echo=echo)
    elapsed = time.time() - started
    # A rerun that finds every stage done only rewrites the report: keep the wall clock of the
    # invocation that did the work.
    previous = results / "run.json"
    wall_clock = elapsed
    if not summary["ran"] and previous.is_file():
        wall_clock = json.loads(previous.read_text()).get("wall_clock_s", elapsed)
    report = write_evidence_report(
        spec,
        out / "runs",
        results,
        # Only this plan's evaluations: runs left in the same folder by other settings stay out.
        evaluations={str(s.run_dir) for s in stages if s.kind == "eval"},
        run_info={
            "command": command,
            "wall_clock_s": round(wall_clock, 1),
            "this_invocation_s": round(elapsed, 1),
            # What the whole plan costs from scratch, whichever invocations did the work.
            "stage_time_s": round(
                sum((read_manifest(s.run_dir) or {}).get("wall_clock_s") or 0 for s in stages), 1
            ),
            "jobs": jobs,
            "stages": {k: len(v) for k, v in summary.items()},
            "bases": bases,
            "environment": environment(),
        },
    )
    echo(f"evidence finished in {elapsed:.0f}s: {report['report']}")
    return {"summary": summary, **report}
