"""The evidence report: seeds, paired intervals, the ratio sweep and the segment loss curves.

Reads only what the stages wrote (manifests, ``metrics.json``, ``samples.jsonl``,
``train_log.jsonl``) and writes to the results folder:

- ``evidence.md``: the tables below, each sentence of the verdict computed from them;
- ``summary.json``: every figure in the tables; ``runs.csv``: one row per evaluation;
- ``run.json``: the exact command, wall-clock time and environment;
- ``segment_losses.png``, ``accuracy.png``, ``ratio_sweep.png``, ``learning_curves.png``
  (accuracy and invalid rate of the saved checkpoints), ``forest.png`` (every paired accuracy
  difference with its interval).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from dataclasses import asdict
from itertools import pairwise
from pathlib import Path
from typing import Any

from scale_repro.experiments.planner import sft_loss_modes
from scale_repro.experiments.reports.grpo_curves import plot_grpo_diagnostics
from scale_repro.experiments.reports.stats import PairedInterval, mean_sd, paired_interval, signed
from scale_repro.experiments.reports.tables import collect
from scale_repro.runs.rundir import atomic_write_json, atomic_write_text, read_train_log

# ``spec`` below is an evidence.EvidenceSpec (typed Any: evidence imports this module, not the reverse).
EvidenceSpec = Any

# The comparisons an experiment makes unless its file names others, each paired by seed:
# (treatment, control).
COMPARISONS = (("SCALe-SFT", "SFT"), ("SFT-FW", "SFT"), ("SCALe-SFT", "SFT-FW"), ("SCALe-GRPO", "GRPO"))
# The half-width (percentage points) the SCALe-SFT - SFT interval at the main ratio should reach.
TARGET_HALF_WIDTH = 3.0


def ratio_label(ratio: float) -> str:
    return f"{ratio:g}x"


METRICS = (
    "accuracy",
    "invalid_rate",
    "inconsistent_rate",
    "accuracy_multiple_choice",
    "accuracy_fill_in",
    "mean_completion_tokens",
)
COMPARED = ("accuracy", "invalid_rate", "inconsistent_rate", "mean_completion_tokens")
RATES = ("invalid_rate", "inconsistent_rate")  # lower is better


def question_type_accuracy(eval_dir: Path) -> dict[str, float]:
    """Accuracy on multiple-choice and fill-in-the-blank questions, from ``samples.jsonl``."""
    path = eval_dir / "samples.jsonl"
    if not path.is_file():
        return {}
    groups: dict[str, list[bool]] = defaultdict(list)
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            groups["multiple_choice" if row.get("choices") else "fill_in"].append(bool(row.get("correct")))
    return {f"accuracy_{kind}": sum(hits) / len(hits) for kind, hits in groups.items() if hits}


def gather(runs: Path, evaluations: set[str] | None = None) -> list[dict[str, Any]]:
    """One row per finished evaluation (of ``evaluations`` if given): labels, metrics, evaluated run."""
    rows = []
    for record in collect(runs):
        if "metrics" not in record or (evaluations is not None and record["dir"] not in evaluations):
            continue
        labels = record["labels"]
        metrics = dict(record["metrics"])
        metrics.update(question_type_accuracy(Path(record["dir"])))
        rows.append(
            {
                "model": labels["model"],
                "ratio": labels["dataset"],
                "configuration": labels["configuration"],
                "seed": int(labels["seed"]),
                "step": labels.get("step"),  # a saved checkpoint's evaluation (learning curves)
                **{m: metrics.get(m) for m in METRICS},
                "train_time_s": record.get("train_time_s"),
                "eval_dir": record["dir"],
            }
        )
    return sorted(rows, key=lambda r: (r["model"], r["ratio"], r["configuration"], r["seed"], r["step"] or 0))


def by_seed(
    rows: list[dict[str, Any]], model: str, ratio: str, configuration: str, metric: str
) -> dict[int, float]:
    return {
        r["seed"]: r[metric]
        for r in rows
        if (r["model"], r["ratio"], r["configuration"]) == (model, ratio, configuration)
        and r[metric] is not None
    }


def _tokens(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _pct(value: float | None, sd: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}" + (f" ± {100 * sd:.1f}" if sd is not None else "")


def _ratio_value(label: str) -> float:
    return float(label.rstrip("x"))


def summarise(
    spec: EvidenceSpec, rows: list[dict[str, Any]], curve_rows: list[dict[str, Any]] = ()
) -> dict[str, Any]:
    """Per model: each ratio's configurations (mean, sd over seeds), every paired comparison
    at every ratio that ran both sides, the SCALe-SFT - SFT sweep and the learning curves."""
    main = ratio_label(float(spec.ratio))
    summary: dict[str, Any] = {"main_ratio": main, "models": {}}
    pairs = spec.all_comparisons()
    library = list(spec.library())  # the recipe order tables follow (reads the recipe file once)
    for model in sorted({r["model"] for r in rows}):
        ratios = sorted(
            {r["ratio"] for r in rows if r["model"] == model}, key=lambda x: (x != main, _ratio_value(x))
        )
        per_model: dict[str, Any] = {"ratios": {}, "comparisons": [], "sweep": [], "curves": {}}
        for ratio in ratios:
            present = {r["configuration"] for r in rows if (r["model"], r["ratio"]) == (model, ratio)}
            cells = {}
            for configuration in [c for c in library if c in present]:
                cell = {}
                for metric in METRICS:
                    values = list(by_seed(rows, model, ratio, configuration, metric).values())
                    mean, sd = mean_sd(values)
                    cell[metric] = {"n": len(values), "mean": mean, "sd": sd}
                cells[configuration] = cell
            per_model["ratios"][ratio] = cells
            for treatment, control in pairs:
                if treatment not in cells or control not in cells:
                    continue
                for metric in COMPARED:
                    interval = paired_interval(
                        by_seed(rows, model, ratio, treatment, metric),
                        by_seed(rows, model, ratio, control, metric),
                    )
                    if interval:
                        per_model["comparisons"].append(
                            {
                                "ratio": ratio,
                                "treatment": treatment,
                                "control": control,
                                "metric": metric,
                                **asdict(interval),
                            }
                        )
        per_model["configurations"] = per_model["ratios"].get(main, {})
        for ratio in sorted(ratios, key=_ratio_value):
            sft = by_seed(rows, model, ratio, "SFT", "accuracy")
            scale = by_seed(rows, model, ratio, "SCALe-SFT", "accuracy")
            interval = paired_interval(scale, sft)
            if interval:
                per_model["sweep"].append(
                    {
                        "ratio": _ratio_value(ratio),
                        "sft": mean_sd(list(sft.values())),
                        "scale": mean_sd(list(scale.values())),
                        **asdict(interval),
                    }
                )
        per_model["curves"] = learning_curves(rows, curve_rows, model, main, library)
        summary["models"][model] = per_model
    return summary


def learning_curves(
    rows: list[dict[str, Any]], curve_rows: list[dict[str, Any]], model: str, ratio: str, order: list[str]
) -> dict[str, list[dict[str, Any]]]:
    """Per configuration: accuracy and invalid rate at each evaluated checkpoint, mean over the
    seeds that have curves, the final model (``step`` None: the run's last step) last."""
    curves: dict[str, list[dict[str, Any]]] = {}
    present = {r["configuration"] for r in curve_rows if r["model"] == model}
    for configuration in [c for c in order if c in present]:
        mine = [
            r
            for r in curve_rows
            if (r["model"], r["ratio"], r["configuration"]) == (model, ratio, configuration)
        ]
        seeds = {r["seed"] for r in mine}
        finals = [
            r
            for r in rows
            if (r["model"], r["ratio"], r["configuration"]) == (model, ratio, configuration)
            and r["seed"] in seeds
        ]
        points = []
        for step in sorted({r["step"] for r in mine}):
            at = [r for r in mine if r["step"] == step]
            points.append(
                {
                    "step": step,
                    "n": len(at),
                    "accuracy": statistics.fmean(r["accuracy"] for r in at),
                    "invalid_rate": statistics.fmean(r["invalid_rate"] for r in at),
                }
            )
        if finals:
            points.append(
                {
                    "step": None,
                    "n": len(finals),
                    "accuracy": statistics.fmean(r["accuracy"] for r in finals),
                    "invalid_rate": statistics.fmean(r["invalid_rate"] for r in finals),
                }
            )
        curves[configuration] = points
    return curves


def _interval(c: dict[str, Any]) -> PairedInterval:
    return PairedInterval(c["n"], c["mean"], c["sd"], c["low"], c["high"], tuple(c["differences"]))


def _reading(c: dict[str, Any]) -> str:
    interval = _interval(c)
    reading = interval.verdict()
    if c["metric"] == "mean_completion_tokens":
        reading = reading.replace("higher", "longer").replace("lower", "shorter")
    if c["metric"] in RATES and "higher" in reading:
        reading += "; more invalid outputs" if c["metric"] == "invalid_rate" else "; more contradictions"
    return reading


def verdicts(summary: dict[str, Any]) -> list[str]:
    """One sentence per accuracy comparison, computed from its interval; and whether the main
    comparison reached the half-width it was sized for."""
    main = summary["main_ratio"]
    sentences = []
    for model, data in summary["models"].items():
        for c in data["comparisons"]:
            if c["metric"] != "accuracy":
                continue
            interval = _interval(c)
            sentence = (
                f"{model}, {c['ratio']}: {c['treatment']} − {c['control']} accuracy {interval.text()} points "
                f"over {c['n']} seed{'s' if c['n'] != 1 else ''}: {interval.verdict()}"
            )
            sized = (c["treatment"], c["control"], c["ratio"]) == ("SCALe-SFT", "SFT", main)
            if sized and interval.half_width is not None:
                half = 100 * interval.half_width
                reached = "within" if half <= TARGET_HALF_WIDTH else "wider than"
                sentence += f"; half-width {half:.1f} points, {reached} the ±{TARGET_HALF_WIDTH:g} the experiment is sized for"
            sentences.append(sentence + ".")
    return sentences


def render_markdown(
    spec: EvidenceSpec, summary: dict[str, Any], run_info: dict[str, Any], plots: list[str]
) -> str:
    main = summary["main_ratio"]
    lines = [
        f"# Evidence: SCALe-SFT against vanilla SFT on a synthetic task ({spec.name})",
        "",
        f"Task: {spec.task} on synthetic scenes (`{json.dumps(spec.data)}`); "
        f"main reasoning-to-answer ratio {main}. Command: `{run_info.get('command', '')}`; "
        f"wall clock {run_info.get('wall_clock_s', 0):.0f} s with {run_info.get('jobs', 1)} worker(s) (the last "
        f"invocation that ran stages); every stage's wall clock summed: {run_info.get('stage_time_s', 0):.0f} s. "
        "Stages: "
        + ", ".join(f"{k} {v}" for k, v in run_info.get("stages", {}).items())
        + " (a failed or blocked stage leaves its seed out of the tables below).",
        "",
    ]
    for model, base in (run_info.get("bases") or {}).items():
        seen = base["perception"]
        lines += [
            f"Base `{model}`: {base['description']}; perception accuracy on {seen['n']} held-out "
            f"scenes {_pct(seen['accuracy'])} %.",
            "",
        ]
    lines += ["## Verdicts", "", *(f"- {v}" for v in verdicts(summary)), ""]
    for model, data in summary["models"].items():
        for ratio, cells in data["ratios"].items():
            lines += [
                f"## {model}, ratio {ratio}{' (main)' if ratio == main else ''}",
                "",
                "| configuration | seeds | accuracy (%) | multiple choice (%) | fill in (%) | invalid (%) "
                "| answer contradicts trace (%) | completion tokens |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for configuration, cell in cells.items():
                acc, tokens = cell["accuracy"], cell["mean_completion_tokens"]
                lines.append(
                    f"| {configuration} | {acc['n']} | {_pct(acc['mean'], acc['sd'])} "
                    f"| {_pct(cell['accuracy_multiple_choice']['mean'], cell['accuracy_multiple_choice']['sd'])} "
                    f"| {_pct(cell['accuracy_fill_in']['mean'], cell['accuracy_fill_in']['sd'])} "
                    f"| {_pct(cell['invalid_rate']['mean'], cell['invalid_rate']['sd'])} "
                    f"| {_pct(cell['inconsistent_rate']['mean'], cell['inconsistent_rate']['sd'])} "
                    f"| {_tokens(tokens['mean'])} |"
                )
            lines += ["", "Mean ± standard deviation over seeds.", ""]
        lines += [
            "### Paired by seed: treatment minus control, 95 % t interval",
            "",
            "Rates in percentage points; completion length in tokens.",
            "",
            "| ratio | treatment − control | metric | seeds | difference [95 % CI] | reading |",
            "|---|---|---|---|---|---|",
        ]
        for c in data["comparisons"]:
            scale = 1.0 if c["metric"] == "mean_completion_tokens" else 100.0
            lines.append(
                f"| {c['ratio']} | {c['treatment']} − {c['control']} | {c['metric']} | {c['n']} "
                f"| {_interval(c).text(scale)} | {_reading(c)} |"
            )
        if data["sweep"]:
            lines += [
                "",
                "### Ratio sweep: SCALe-SFT − SFT accuracy by reasoning-to-answer ratio",
                "",
                "| ratio | seeds | SFT (%) | SCALe-SFT (%) | difference [95 % CI] | reading |",
                "|---|---|---|---|---|---|",
            ]
            for s in data["sweep"]:
                interval = _interval(s)
                lines.append(
                    f"| {s['ratio']:g}x | {s['n']} | {_pct(*s['sft'])} | {_pct(*s['scale'])} "
                    f"| {interval.text()} | {interval.verdict()} |"
                )
            means = [s["mean"] for s in data["sweep"]]
            growing = len(means) > 1 and all(later > earlier for earlier, later in pairwise(means))
            steps = ", ".join(f"{s['ratio']:g}x {signed(s['mean'])}" for s in data["sweep"])
            lines += [
                "",
                f"The paper's argument predicts the gain grows with the ratio. Measured mean gain (pp): "
                f"{steps}; it {'does' if growing else 'does not'} grow with the ratio here.",
            ]
        if data["curves"]:
            lines += [
                "",
                f"### Learning curves at {main}: accuracy / invalid (%) of the saved checkpoints",
                "",
                "| configuration | seeds | "
                + " | ".join(_step(p["step"]) for p in next(iter(data["curves"].values())))
                + " |",
                "|---|---|" + "---|" * len(next(iter(data["curves"].values()))),
            ]
            for configuration, points in data["curves"].items():
                lines.append(
                    f"| {configuration} | {points[0]['n']} | "
                    + " | ".join(f"{_pct(p['accuracy'])} / {_pct(p['invalid_rate'])}" for p in points)
                    + " |"
                )
        lines.append("")
    lines += [f"![{p}]({p})" for p in plots]
    env = run_info.get("environment", {})
    lines += [
        "",
        "## Environment",
        "",
        f"Python {env.get('python')}, {env.get('platform')}, {env.get('cpu_count')} CPUs, "
        f"CUDA: {env.get('cuda')}. Packages: "
        + ", ".join(f"{k} {v}" for k, v in sorted(env.get("packages", {}).items()))
        + ".",
    ]
    return "\n".join(lines) + "\n"


def _step(step: int | None) -> str:
    return "final" if step is None else f"step {step}"


def runs_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    fields = ["model", "ratio", "configuration", "seed", "step", *METRICS, "train_time_s", "eval_dir"]
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def loss_curves(
    spec: EvidenceSpec, rows: list[dict[str, Any]]
) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Mean L_think and L_answer over seeds at each logged step, per SFT loss mode, main ratio."""
    main = ratio_label(float(spec.ratio))
    samples: dict[str, dict[str, dict[int, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for row in rows:
        if row["ratio"] != main or row["configuration"] not in sft_loss_modes():
            continue
        run_dir = Path(row["eval_dir"]).parent
        for entry in read_train_log(run_dir):
            for segment in ("think", "answer"):
                if f"loss_{segment}" in entry:
                    samples[row["configuration"]][segment][entry["step"]].append(entry[f"loss_{segment}"])
    return {
        configuration: {
            segment: [(step, statistics.fmean(v)) for step, v in sorted(points.items())]
            for segment, points in segments.items()
        }
        for configuration, segments in samples.items()
    }


def plot(spec: EvidenceSpec, rows: list[dict[str, Any]], summary: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    colours = {
        "SFT": "C0",
        "SFT-FW": "C2",
        "SCALe-SFT": "C1",
        "GRPO": "C4",
        "SCALe-GRPO": "C3",
        "Merged": "C5",
        "Staged": "C6",
        "SFT-cut": "C7",
        "SCALe-SFT-cut": "C8",
    }
    curves = loss_curves(spec, rows)
    if curves:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharex=True)
        for configuration, segments in sorted(curves.items()):
            for segment, ax in zip(("think", "answer"), axes, strict=True):
                if segments.get(segment):
                    xs, ys = zip(*segments[segment], strict=True)
                    ax.plot(xs, ys, color=colours.get(configuration), label=configuration)
                ax.set_title(f"L_{segment.upper()} (per-sample mean CE), mean over seeds", fontsize=9)
                ax.set_xlabel("step"), ax.set_yscale("log")
        axes[0].legend()
        fig.tight_layout(), fig.savefig(out / "segment_losses.png", dpi=120), plt.close(fig)
        written.append("segment_losses.png")

    main = summary["main_ratio"]
    for model in summary["models"]:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        for i, configuration in enumerate(spec.configurations):  # the main ratio's
            values = list(by_seed(rows, model, main, configuration, "accuracy").values())
            if values:
                ax.scatter(
                    [i] * len(values), [100 * v for v in values], color=colours.get(configuration), alpha=0.6
                )
                ax.errorbar(
                    [i + 0.15],
                    [100 * statistics.fmean(values)],
                    fmt="_",
                    markersize=14,
                    color=colours.get(configuration),
                )
        ax.set_xticks(range(len(spec.configurations)), spec.configurations, fontsize=8)
        ax.set_ylabel("accuracy (%)"), ax.set_title(f"{model}, ratio {main}: one dot per seed", fontsize=9)
        fig.tight_layout(), fig.savefig(out / "accuracy.png", dpi=120), plt.close(fig)
        written.append("accuracy.png")
        break  # one architecture per figure; the tables hold the others

    sweeps = {m: d["sweep"] for m, d in summary["models"].items() if d["sweep"]}
    if sweeps:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for model, sweep in sweeps.items():
            xs = [s["ratio"] for s in sweep]
            ys = [100 * s["mean"] for s in sweep]
            errors = [
                [100 * (s["mean"] - s["low"]) if s["low"] is not None else 0 for s in sweep],
                [100 * (s["high"] - s["mean"]) if s["high"] is not None else 0 for s in sweep],
            ]
            ax.errorbar(xs, ys, yerr=errors, marker="o", capsize=4, label=model)
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_xscale("log"), ax.set_xlabel("reasoning-to-answer ratio (words)")
        ax.set_ylabel("SCALe-SFT − SFT accuracy (pp)"), ax.legend(fontsize=7)
        ax.set_title("Gain by ratio, 95 % CI", fontsize=9)
        fig.tight_layout(), fig.savefig(out / "ratio_sweep.png", dpi=120), plt.close(fig)
        written.append("ratio_sweep.png")

    curves = {m: d["curves"] for m, d in summary["models"].items() if d["curves"]}
    if curves:
        model, by_configuration = next(iter(curves.items()))
        last = max(
            (p["step"] for points in by_configuration.values() for p in points if p["step"] is not None),
            default=0,
        )
        final_step = _final_step(rows, model, main) or last + 1
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharex=True)
        for configuration, points in by_configuration.items():
            xs = [final_step if p["step"] is None else p["step"] for p in points]
            for metric, ax in zip(("accuracy", "invalid_rate"), axes, strict=True):
                ax.plot(
                    xs,
                    [100 * p[metric] for p in points],
                    marker="o",
                    color=colours.get(configuration),
                    label=configuration,
                )
        axes[0].set_ylabel("accuracy (%)"), axes[1].set_ylabel("invalid (%)")
        for ax in axes:
            ax.set_xlabel("SFT step")
        axes[0].legend(fontsize=7)
        axes[0].set_title(f"{model}, {main}: checkpoints, mean over seeds", fontsize=9)
        fig.tight_layout(), fig.savefig(out / "learning_curves.png", dpi=120), plt.close(fig)
        written.append("learning_curves.png")

    forest = [
        (m, c)
        for m, d in summary["models"].items()
        for c in d["comparisons"]
        if c["metric"] == "accuracy" and c["low"] is not None
    ]
    if forest:
        fig, ax = plt.subplots(figsize=(7, 0.45 * len(forest) + 1.2))
        for y, (_, c) in enumerate(reversed(forest)):
            ax.errorbar(
                [100 * c["mean"]],
                [y],
                xerr=[[100 * (c["mean"] - c["low"])], [100 * (c["high"] - c["mean"])]],
                fmt="o",
                capsize=3,
                color="C3" if c["low"] > 0 or c["high"] < 0 else "C0",
            )
        labels = [
            f"{c['treatment']} − {c['control']} ({c['ratio']}, n={c['n']})" for _, c in reversed(forest)
        ]
        ax.set_yticks(range(len(forest)), labels, fontsize=8)
        ax.axvline(0, color="grey", linewidth=0.8)
        ax.set_xlabel("accuracy difference, percentage points (95 % t interval, paired by seed)")
        fig.tight_layout(), fig.savefig(out / "forest.png", dpi=120), plt.close(fig)
        written.append("forest.png")
    return written


def _final_step(rows: list[dict[str, Any]], model: str, ratio: str) -> int | None:
    """The last step of the main ratio's SFT runs, from their training logs."""
    for row in rows:
        if (row["model"], row["ratio"]) == (model, ratio) and row["configuration"] in sft_loss_modes():
            steps = [e["step"] for e in read_train_log(Path(row["eval_dir"]).parent) if "step" in e]
            if steps:
                return max(steps)
    return None


def write_evidence_report(
    spec: EvidenceSpec,
    runs: str | Path,
    out: str | Path,
    run_info: dict[str, Any],
    evaluations: set[str] | None = None,
) -> dict[str, Any]:
    runs, out = Path(runs), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    evaluated = gather(runs, evaluations)
    rows = [r for r in evaluated if r["step"] is None]  # the final models
    summary = summarise(spec, rows, [r for r in evaluated if r["step"] is not None])
    plots = plot(spec, rows, summary, out) + plot_grpo_diagnostics(runs, out)
    atomic_write_json(out / "summary.json", summary)
    atomic_write_json(out / "run.json", {**run_info, "spec": asdict(spec)})
    atomic_write_text(out / "runs.csv", runs_csv(evaluated))
    atomic_write_text(out / "evidence.md", render_markdown(spec, summary, run_info, plots))
    return {"evaluations": len(rows), "plots": plots, "report": str(out / "evidence.md")}
