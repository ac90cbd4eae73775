"""Experiments as recipes, each an ordered list of stages: the staged capability curriculum.

A curriculum experiment file (``kind: curriculum``) names recipes; a recipe is a list of
training stages, each naming its method (``sft`` or ``grpo``), its data, its settings
(``set``: rewards, answer format, which parts train through ``lora.*``, steps) and starting
from the previous stage's checkpoint (the first from the model). Every recipe's final model
is evaluated on every ``evaluate`` entry, and the report compares each recipe with the
``baseline`` recipe, paired by seed.

The run directory of a stage depends only on the stages up to it (``MODEL/seedN/1-a/2-b``),
so recipes that share a prefix share its runs (staged and its "1+3" ablation train stage 1
once); a prefix planned with two different configs is an error before anything runs.
Stages are :class:`scale_repro.pipeline.Stage` and run on the one runner
(:func:`scale_repro.pipeline.run_stages`, with ``--jobs``).

Data: ``${CAP}`` is a `scale data capabilities` directory and ``${SYNTH}`` a `scale data synth`
one, both written on first use with the file's ``data`` settings.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scale_repro.config import (
    INHERITED_FROM_RUN,
    EvalConfig,
    GRPOConfig,
    SFTConfig,
    load_config,
    to_dict,
)
from scale_repro.pipeline import Stage, expand_variables, recipe_paths, run_stages
from scale_repro.rundir import atomic_write_json, atomic_write_text, fingerprint

CURRICULUM_KIND = "curriculum"
METHODS = {"sft": SFTConfig, "grpo": GRPOConfig}


@dataclass
class StageSpec:
    name: str
    method: str  # sft | grpo
    data: str
    set: list[str] = field(default_factory=list)


@dataclass
class CurriculumSpec:
    name: str
    models: list[str]
    seeds: list[int]
    recipes: dict[str, list[StageSpec]]
    evaluate: list[dict[str, str]]
    baseline: str | None = None
    data: dict[str, dict[str, Any]] = field(default_factory=dict)
    sft: dict[str, Any] = field(default_factory=dict)
    grpo: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    kind: str = CURRICULUM_KIND
    description: str = ""


def is_curriculum_file(path: str | Path) -> bool:
    data = yaml.safe_load(Path(path).read_text()) or {}
    return isinstance(data, dict) and data.get("kind") == CURRICULUM_KIND


def load_curriculum(path: str | Path) -> CurriculumSpec:
    data = yaml.safe_load(Path(path).read_text()) or {}
    recipes = {}
    for recipe, stages in (data.pop("recipes", None) or {}).items():
        if not stages:
            raise ValueError(f"{path}: recipe {recipe} has no stages")
        parsed = []
        for index, stage in enumerate(stages, 1):
            try:
                spec = StageSpec(**stage)
            except TypeError as exc:
                raise ValueError(f"{path}: recipe {recipe}, stage {index}: {exc}") from exc
            if spec.method not in METHODS:
                raise ValueError(
                    f"{path}: recipe {recipe}, stage {index}: method must be sft or grpo, got {spec.method!r}"
                )
            parsed.append(spec)
        recipes[recipe] = parsed
    try:
        spec = CurriculumSpec(recipes=recipes, **data)
    except TypeError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    if spec.baseline is not None and spec.baseline not in spec.recipes:
        raise ValueError(f"{path}: baseline {spec.baseline!r} is not one of the recipes {list(spec.recipes)}")
    return spec


def prepare_data(spec: CurriculumSpec, root: Path, echo=print) -> dict[str, str]:
    """The data directories the file's ``${CAP}`` and ``${SYNTH}`` stand for, written if missing."""
    from scale_repro.data.capabilities import CAPABILITY_KIND, CapabilityConfig, write_capability_data
    from scale_repro.data.sources import synth_manifest
    from scale_repro.data.synth import SynthConfig, write_synthetic
    from scale_repro.rundir import read_manifest

    variables = {}
    cap = root / "capabilities"
    if (read_manifest(cap) or {}).get("kind") != CAPABILITY_KIND:
        echo(f"writing capability data to {cap}")
        write_capability_data(cap, CapabilityConfig(**spec.data.get("capabilities", {})))
    variables["CAP"] = str(cap)
    synth = root / "synth"
    if not synth_manifest(synth):
        echo(f"writing synthetic evaluation data to {synth}")
        write_synthetic(synth, SynthConfig(**spec.data.get("synth", {})))
    variables["SYNTH"] = str(synth)
    return variables


def plan_curriculum(spec: CurriculumSpec, out: Path, variables: dict[str, str]) -> list[Stage]:
    """Every stage of every recipe, model and seed, then the evaluations; shared prefixes once."""
    stages: dict[Path, Stage] = {}
    identity: dict[Path, tuple[str, str]] = {}  # run dir -> (config fingerprint, recipe that planned it)

    def add(stage: Stage, recipe: str) -> None:
        data = {k: v for k, v in to_dict(stage.config).items() if k not in ("output_dir", "labels")}
        key = fingerprint(data)
        if stage.run_dir in identity and identity[stage.run_dir][0] != key:
            raise ValueError(
                f"{stage.run_dir}: recipes {identity[stage.run_dir][1]} and {recipe} name the same stages "
                "with different settings; give one of the stages another name"
            )
        identity.setdefault(stage.run_dir, (key, recipe))
        stages.setdefault(stage.run_dir, stage)

    for model in spec.models:
        for seed in spec.seeds:
            for recipe, recipe_stages in spec.recipes.items():
                previous: Path | None = None
                run_dir = out / model / f"seed{seed}"
                for index, stage_spec in enumerate(recipe_stages, 1):
                    run_dir = run_dir / f"{index}-{stage_spec.name}"
                    defaults = getattr(spec, stage_spec.method)
                    cls = METHODS[stage_spec.method]
                    inherited = None
                    if previous is not None:  # the previous stage does not exist yet: inherit from its config
                        inherited = {
                            k: v
                            for k, v in to_dict(stages[previous].config).items()
                            if k in INHERITED_FROM_RUN
                        }
                    config = load_config(
                        cls, recipe_paths(defaults), [*defaults.get("set", []), *stage_spec.set], inherit=inherited,
                        model=str(previous) if previous else model, output_dir=str(run_dir), seed=seed,
                        **{"data.spec": expand_variables(stage_spec.data, variables)},
                    )  # fmt: skip
                    config.labels = {
                        "model": model,
                        "configuration": recipe,
                        "stage": stage_spec.name,
                        "seed": seed,
                    }
                    add(
                        Stage(stage_spec.method, run_dir, config, needs=[previous] if previous else []),
                        recipe,
                    )
                    previous = run_dir
                for target in spec.evaluate:
                    eval_dir = previous / f"eval-{target['name']}"
                    evaluation = load_config(
                        EvalConfig, recipe_paths(spec.eval), spec.eval.get("set", []), model=str(previous),
                        task=target["task"], data=expand_variables(target.get("data", "${SYNTH}"), variables),
                        output_dir=str(eval_dir), seed=seed,
                    )  # fmt: skip
                    evaluation.labels = {"model": model, "dataset": target["name"], "configuration": recipe,
                                         "seed": seed}  # fmt: skip
                    add(Stage("eval", eval_dir, evaluation, needs=[previous]), recipe)
    order = {"sft": 0, "grpo": 1, "eval": 2}
    # Earlier stages of a chain first; within a depth, SFT before GRPO before evaluation.
    return sorted(stages.values(), key=lambda s: (len(s.run_dir.parts), order[s.kind]))


def _rows(stages: list[Stage]) -> list[dict[str, Any]]:
    rows = []
    for stage in stages:
        if stage.kind != "eval":
            continue
        metrics_path = stage.run_dir / "metrics.json"
        if not metrics_path.is_file():
            continue
        metrics = json.loads(metrics_path.read_text())
        rows.append({**stage.config.labels, "accuracy": metrics["accuracy"], "invalid_rate": metrics["invalid_rate"],
                     "mean_completion_tokens": metrics.get("mean_completion_tokens"),
                     "eval_dir": str(stage.run_dir)})  # fmt: skip
    return rows


def summarise(spec: CurriculumSpec, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean accuracy and completion length per recipe and evaluation, and each recipe minus the
    baseline paired by seed (accuracy in points, length in tokens)."""
    from scale_repro.evidence_report import mean_sd, paired_interval

    def per_seed(model, dataset, recipe, metric) -> dict[int, float]:
        return {r["seed"]: r[metric] for r in rows if (r["model"], r["dataset"], r["configuration"]) == (model, dataset, recipe)
                and r[metric] is not None}  # fmt: skip

    cells, comparisons = [], []
    for model in spec.models:
        for target in spec.evaluate:
            dataset = target["name"]
            for recipe in spec.recipes:
                accuracy = per_seed(model, dataset, recipe, "accuracy")
                length = per_seed(model, dataset, recipe, "mean_completion_tokens")
                mean, sd = mean_sd(list(accuracy.values()))
                cells.append({"model": model, "dataset": dataset, "recipe": recipe, "seeds": len(accuracy),
                              "accuracy": mean, "accuracy_sd": sd,
                              "mean_completion_tokens": mean_sd(list(length.values()))[0]})  # fmt: skip
                if spec.baseline and recipe != spec.baseline:
                    acc = paired_interval(accuracy, per_seed(model, dataset, spec.baseline, "accuracy"))
                    tokens = paired_interval(
                        length, per_seed(model, dataset, spec.baseline, "mean_completion_tokens")
                    )
                    comparisons.append({
                        "model": model, "dataset": dataset, "recipe": recipe, "baseline": spec.baseline,
                        "accuracy": None if acc is None else {"n": acc.n, "mean": acc.mean, "low": acc.low,
                                                              "high": acc.high, "text": acc.text(),
                                                              "verdict": acc.verdict()},
                        "completion_tokens": None if tokens is None else {"mean": tokens.mean, "low": tokens.low,
                                                                          "high": tokens.high},
                    })  # fmt: skip
    return {"cells": cells, "comparisons": comparisons}


def render(spec: CurriculumSpec, summary: dict[str, Any], info: dict[str, Any]) -> str:
    lines = [f"# {spec.name}", "", spec.description.strip(), "", "## Recipes", ""]
    for recipe, stages in spec.recipes.items():
        chain = " -> ".join(f"{s.name} ({s.method}, {s.data.split('/')[-1]}{', ' + ', '.join(s.set) if s.set else ''})"
                            for s in stages)  # fmt: skip
        lines.append(f"- **{recipe}**: {chain}")
    lines += ["", "## Accuracy (%) and mean completion length (tokens), mean over seeds", "",
              "| model | evaluation | recipe | seeds | accuracy | tokens |", "|---|---|---|---|---|---|"]  # fmt: skip
    for c in summary["cells"]:
        accuracy = "not run" if c["accuracy"] is None else f"{100 * c['accuracy']:.1f}" + (
            f" ± {100 * c['accuracy_sd']:.1f}" if c["accuracy_sd"] is not None else "")  # fmt: skip
        tokens = "" if c["mean_completion_tokens"] is None else f"{c['mean_completion_tokens']:.1f}"
        lines.append(
            f"| {c['model']} | {c['dataset']} | {c['recipe']} | {c['seeds']} | {accuracy} | {tokens} |"
        )
    if summary["comparisons"]:
        lines += ["", f"## Each recipe minus {spec.baseline}, paired by seed (95% t interval)", "",
                  "| model | evaluation | recipe | accuracy (points) | verdict | tokens |", "|---|---|---|---|---|---|"]  # fmt: skip
        for c in summary["comparisons"]:
            acc = c["accuracy"]
            tokens = c["completion_tokens"]
            token_text = "" if tokens is None else f"{tokens['mean']:+.1f}"
            lines.append(f"| {c['model']} | {c['dataset']} | {c['recipe']} | {acc['text'] if acc else 'not run'} | "
                         f"{acc['verdict'] if acc else ''} | {token_text} |")  # fmt: skip
    lines += [
        "",
        f"Wall clock {info['wall_clock_s']:.0f} s, {info['jobs']} worker(s); stages: {info['stages']}.",
    ]
    return "\n".join(lines) + "\n"


def run_curriculum(spec: CurriculumSpec, out: Path, results: Path, jobs: int = 1, dry_run: bool = False,
                   echo=print) -> dict[str, Any]:  # fmt: skip
    started = time.time()
    out, results = Path(out).resolve(), Path(results).resolve()
    variables = prepare_data(spec, out / "data", echo=echo)
    from scale_repro.models import tiny_model_path
    from scale_repro.tiny import TINY_MODELS

    for model in spec.models:  # built here, once, before parallel workers would race to build them
        if model in TINY_MODELS:
            tiny_model_path(model)
    stages = plan_curriculum(spec, out / "runs", variables)
    training = sum(s.kind != "eval" for s in stages)
    echo(f"{len(stages)} stages ({training} training, {len(stages) - training} evaluations) for "
         f"{len(spec.recipes)} recipes x {len(spec.models)} model(s) x {len(spec.seeds)} seed(s); runs under {out / 'runs'}")  # fmt: skip
    if dry_run:
        for stage in stages:
            echo(f"  {stage.kind:<4} {stage.run_dir.relative_to(out)}")
        return {"stages": stages}
    summary = run_stages(stages, jobs=jobs, echo=echo)
    info = {
        "wall_clock_s": time.time() - started,
        "jobs": jobs,
        "stages": {k: len(v) for k, v in summary.items()},
    }
    report = summarise(spec, _rows(stages))
    atomic_write_json(results / "summary.json", {**report, "run": info})
    atomic_write_text(results / "report.md", render(spec, report, info))
    echo(f"curriculum finished in {info['wall_clock_s']:.0f}s: {results / 'report.md'}")
    return {"summary": summary, "report": str(results / "report.md"), **report}
