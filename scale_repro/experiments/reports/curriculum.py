"""The curriculum report: every recipe against the experiment's ``baseline`` recipe, paired by
seed, per evaluation: accuracy (points, 95 % t interval) and mean completion length (tokens),
with the paper's published figures beside ours, labelled as the paper's.

Writes ``summary.json`` and ``report.md`` to the results folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from scale_repro.experiments.planner import Experiment, Stage, describe_recipes
from scale_repro.experiments.reports.grpo_curves import plot_grpo_diagnostics
from scale_repro.experiments.reports.stats import mean_sd, paired_interval
from scale_repro.runs.rundir import atomic_write_json, atomic_write_text


def _rows(stages: list[Stage]) -> list[dict[str, Any]]:
    rows = []
    for stage in stages:
        if stage.kind != "eval":
            continue
        metrics_path = stage.run_dir / "metrics.json"
        if not metrics_path.is_file():
            continue
        metrics = json.loads(metrics_path.read_text())
        rows.append(
            {
                **stage.config.labels,
                "accuracy": metrics["accuracy"],
                "invalid_rate": metrics["invalid_rate"],
                "unreadable_rate": metrics.get("unreadable_rate"),
                "mean_completion_tokens": metrics.get("mean_completion_tokens"),
                "eval_dir": str(stage.run_dir),
            }
        )
    return rows


def accuracy_interval(interval) -> dict[str, Any] | None:
    """A paired accuracy interval as the summary stores it."""
    if interval is None:
        return None
    return {
        "n": interval.n,
        "mean": interval.mean,
        "low": interval.low,
        "high": interval.high,
        "text": interval.text(),
        "verdict": interval.verdict(),
    }


def summarise(spec: Experiment, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean accuracy and completion length per recipe and evaluation, and each recipe minus the
    baseline paired by seed (accuracy in points, length in tokens)."""

    def per_seed(model, dataset, recipe, metric) -> dict[int, float]:
        return {
            r["seed"]: r[metric]
            for r in rows
            if (r["model"], r["dataset"], r["configuration"]) == (model, dataset, recipe)
            and r[metric] is not None
        }

    cells, comparisons = [], []
    for model in spec.models:
        for target in spec.evaluate:
            dataset = target["name"]
            for recipe in spec.recipes:
                accuracy = per_seed(model, dataset, recipe, "accuracy")
                length = per_seed(model, dataset, recipe, "mean_completion_tokens")
                unreadable = per_seed(model, dataset, recipe, "unreadable_rate")
                mean, sd = mean_sd(list(accuracy.values()))
                cells.append(
                    {
                        "model": model,
                        "dataset": dataset,
                        "recipe": recipe,
                        "seeds": len(accuracy),
                        "accuracy": mean,
                        "accuracy_sd": sd,
                        "mean_completion_tokens": mean_sd(list(length.values()))[0],
                        # Answers the rules could not read (a judge might still credit them).
                        "unreadable_rate": mean_sd(list(unreadable.values()))[0],
                    }
                )
                if spec.baseline and recipe != spec.baseline:
                    acc = paired_interval(accuracy, per_seed(model, dataset, spec.baseline, "accuracy"))
                    tokens = paired_interval(
                        length, per_seed(model, dataset, spec.baseline, "mean_completion_tokens")
                    )
                    comparisons.append(
                        {
                            "model": model,
                            "dataset": dataset,
                            "recipe": recipe,
                            "baseline": spec.baseline,
                            "accuracy": accuracy_interval(acc),
                            "completion_tokens": None
                            if tokens is None
                            else {"mean": tokens.mean, "low": tokens.low, "high": tokens.high},
                        }
                    )
    averages = group_averages(spec, rows)
    return {"cells": cells + averages["cells"], "comparisons": comparisons + averages["comparisons"]}


def group_averages(spec: Experiment, rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each recipe's accuracy averaged over each group of evaluations and over all of them
    ("Overall"), per seed (a seed counts where it has every evaluation of the group), then as
    cells and paired comparisons with the baseline like a single evaluation's."""
    names = [t["name"] for t in spec.evaluate]
    groups = {**spec.groups, "Overall": names} if len(names) > 1 else {}
    cells, comparisons = [], []

    def averaged(model, recipe, members) -> dict[int, float]:
        by_seed: dict[int, dict[str, float]] = {}
        for r in rows:
            if (r["model"], r["configuration"]) == (model, recipe) and r["dataset"] in members:
                by_seed.setdefault(r["seed"], {})[r["dataset"]] = r["accuracy"]
        return {seed: sum(v.values()) / len(v) for seed, v in by_seed.items() if len(v) == len(members)}

    for model in spec.models:
        for group, members in groups.items():
            label = f"{group} average"
            for recipe in spec.recipes:
                accuracy = averaged(model, recipe, members)
                mean, sd = mean_sd(list(accuracy.values()))
                cells.append(
                    {
                        "model": model,
                        "dataset": label,
                        "recipe": recipe,
                        "seeds": len(accuracy),
                        "accuracy": mean,
                        "accuracy_sd": sd,
                        "mean_completion_tokens": None,
                        "unreadable_rate": None,
                    }
                )
                if spec.baseline and recipe != spec.baseline:
                    acc = paired_interval(accuracy, averaged(model, spec.baseline, members))
                    comparisons.append(
                        {
                            "model": model,
                            "dataset": label,
                            "recipe": recipe,
                            "baseline": spec.baseline,
                            "accuracy": accuracy_interval(acc),
                            "completion_tokens": None,
                        }
                    )
    return {"cells": cells, "comparisons": comparisons}


def render(spec: Experiment, summary: dict[str, Any], info: dict[str, Any]) -> str:
    lines = [f"# {spec.name}", "", spec.description.strip(), "", "## Recipes", ""]
    lines += [f"- {line}" for line in describe_recipes(spec).splitlines()]
    lines += [
        "",
        "## Accuracy (%) and mean completion length (tokens), mean over seeds",
        "",
        "| model | evaluation | recipe | seeds | accuracy | tokens | unreadable (%) |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in summary["cells"]:
        accuracy = (
            "not run"
            if c["accuracy"] is None
            else f"{100 * c['accuracy']:.1f}"
            + (f" ± {100 * c['accuracy_sd']:.1f}" if c["accuracy_sd"] is not None else "")
        )
        tokens = "" if c["mean_completion_tokens"] is None else f"{c['mean_completion_tokens']:.1f}"
        unreadable = "" if c.get("unreadable_rate") is None else f"{100 * c['unreadable_rate']:.1f}"
        lines.append(
            f"| {c['model']} | {c['dataset']} | {c['recipe']} | {c['seeds']} | {accuracy} | {tokens} | {unreadable} |"
        )
    if summary["comparisons"]:
        lines += [
            "",
            f"## Each recipe minus {spec.baseline}, paired by seed (95% t interval)",
            "",
            "| model | evaluation | recipe | accuracy (points) | verdict | tokens |",
            "|---|---|---|---|---|---|",
        ]
        for c in summary["comparisons"]:
            acc = c["accuracy"]
            tokens = c["completion_tokens"]
            token_text = "" if tokens is None else f"{tokens['mean']:+.1f}"
            lines.append(
                f"| {c['model']} | {c['dataset']} | {c['recipe']} | {acc['text'] if acc else 'not run'} | "
                f"{acc['verdict'] if acc else ''} | {token_text} |"
            )
    lines += render_published(spec, summary)
    lines += [
        "",
        f"Wall clock {info['wall_clock_s']:.0f} s, {info['jobs']} worker(s); stages: {info['stages']}.",
    ]
    return "\n".join(lines) + "\n"


def render_published(spec: Experiment, summary: dict[str, Any]) -> list[str]:
    """The paper's figures for the recipes it ran, beside this run's (first evaluation), labelled
    as the paper's: other models and benchmarks, so the layout of a real run, not a comparison."""
    published = spec.published
    if not published:
        return []
    lines = [
        "",
        f"## Published figures ({published.get('source', 'the paper')}), beside this run",
        "",
        "These are the paper's numbers for its own models and benchmarks, shown where a real run's "
        "results will stand; this run's model and data are not those.",
        "",
    ]
    accuracy = published.get("accuracy") or {}
    # The paper's figures are for one model (published.model): beside that model's results alone.
    model = published.get("model")
    cells = [c for c in summary["cells"] if model is None or c["model"] == model]
    if model is not None and model not in spec.models:
        lines.append(f"This run does not train {model}, the model these figures are for.\n")
    if accuracy and all(isinstance(v, dict) for v in accuracy.values()):
        # Per group of evaluations ({recipe: {group: value}}), beside this run's group averages.
        columns = list(next(iter(accuracy.values())))
        ours = {(c["recipe"], c["dataset"]): c["accuracy"] for c in cells}
        lines += [
            "| recipe | " + " | ".join(f"{g}: paper | {g}: this run" for g in columns) + " |",
            "|---|" + "---|---|" * len(columns),
        ]
        for recipe, values in accuracy.items():
            row = []
            for group in columns:
                mine = ours.get((recipe, f"{group} average"))
                row += [str(values.get(group, "")), "not run" if mine is None else f"{100 * mine:.1f}"]
            lines.append(f"| {recipe} | " + " | ".join(row) + " |")
    elif accuracy:
        first = spec.evaluate[0]["name"] if spec.evaluate else None
        ours = {c["recipe"]: c["accuracy"] for c in cells if c["dataset"] == first}
        lines += [f"| recipe | published accuracy | this run ({first}) |", "|---|---|---|"]
        for recipe, value in accuracy.items():
            mine = ours.get(recipe)
            lines.append(f"| {recipe} | {value} | {'not run' if mine is None else f'{100 * mine:.1f}'} |")
    for what, value in (published.get("deltas") or {}).items():
        lines.append(f"- {what}: {value}")
    return lines


def write_curriculum_report(
    spec: Experiment, stages: list[Stage], out: Path, info: dict[str, Any]
) -> dict[str, Any]:
    """``summary.json`` and ``report.md`` in ``out`` from the evaluations among ``stages``."""
    report = summarise(spec, _rows(stages))
    runs = Path(os.path.commonpath([str(s.run_dir) for s in stages])) if stages else out
    plots = plot_grpo_diagnostics(runs, out)
    atomic_write_json(out / "summary.json", {**report, "run": info})
    markdown = render(spec, report, info) + "".join(f"\n![{p}]({p})\n" for p in plots)
    atomic_write_text(out / "report.md", markdown)
    return {"report": str(out / "report.md"), "plots": plots, **report}
