"""`scale report`: the paper's Tables 1-3 from run directories, beside the paper's numbers.

Reads manifests and ``metrics.json`` only (never re-types a number): evaluation runs carry
labels (model, data set, configuration, seed) and point at the training run they evaluated,
whose manifest gives the wall-clock time. Writes Markdown, LaTeX and CSV tables and PNG plots.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scale_repro.experiments.planner import paper_configuration
from scale_repro.experiments.reports.grpo_curves import plot_grpo_diagnostics
from scale_repro.runs.rundir import (
    RunDirError,
    atomic_write_text,
    read_json,
    read_manifest,
    read_manifest_strict,
)
from scale_repro.yaml_files import PAPER_TABLES

TABLES = {
    1: ("accuracy", ["Base", "SFT", "SCALe-SFT", "GRPO", "SCALe-GRPO"], "table1_accuracy"),
    2: ("invalid_rate", ["SFT", "SCALe-SFT", "GRPO", "SCALe-GRPO"], "table2_invalid_percent"),
    3: ("accuracy", ["SFT", "SFT-FW", "SCALe-SFT", "GRPO-FW", "SCALe-GRPO"], "table3_ablation_qwen2.5-vl-3b"),
}
TITLES = {1: "Table 1: accuracy (%)", 2: "Table 2: invalid outputs (%)", 3: "Table 3: ablation, accuracy (%)"}


@dataclass
class Cell:
    values: list[float] = field(default_factory=list)
    status: str = "not run"  # not run | failed | ok

    def text(self) -> str:
        if not self.values:
            return self.status
        mean = statistics.fmean(self.values)
        if len(self.values) > 1:
            return f"{mean:.2f} ± {statistics.stdev(self.values):.2f}"
        return f"{mean:.2f}"

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None


DATASET_OF_TASK = {"scienceqa": "ScienceQA", "iconqa": "IconQA"}


def training_chain(model: str | Path) -> list[dict[str, Any]]:
    """Manifests of the training runs a model came from, newest first (GRPO, then its SFT)."""
    chain = []
    while Path(str(model)).is_dir():
        manifest = read_manifest(model)
        if (
            not manifest
            or manifest.get("stage") not in ("sft", "grpo")
            or not isinstance(manifest.get("config"), dict)
        ):
            break
        chain.append(manifest)
        model = str(manifest["config"].get("model", ""))
    return chain


def derived_labels(manifest: dict[str, Any]) -> dict[str, Any]:
    """Labels of an evaluation made without them (plain ``scale eval``), from the manifests:
    the base model at the root of the training chain, the data set of the task, and the
    configuration the chain of training stages amounts to."""
    config = manifest.get("config", {})
    task = str(config.get("task", ""))
    chain = training_chain(str(config.get("model", "")))
    root = chain[-1]["config"].get("model", "") if chain else config.get("model", "")
    stages = [m["stage"] for m in reversed(chain)]
    signature = [
        (m["stage"], m["config"].get("loss", {}).get("mode") if m["stage"] == "sft" else None)
        for m in reversed(chain)
    ]
    configuration = paper_configuration(signature) or "+".join(stages)
    return {
        "model": str(root),
        "dataset": DATASET_OF_TASK.get(task.removeprefix("synthetic-"), task),
        "configuration": configuration,
        "seed": config.get("seed", 0),
    }


def collect(runs: str | Path, skipped: list[dict[str, str]] | None = None) -> list[dict[str, Any]]:
    """Every evaluation run below ``runs``: labels (given, or derived from the manifests),
    metrics (or why there are none), training time. A run that cannot be read is added to
    ``skipped`` with the reason, never dropped silently."""
    records = []
    skipped = [] if skipped is None else skipped
    for manifest_path in sorted(Path(runs).rglob("manifest.json")):
        run = manifest_path.parent
        try:
            manifest = read_manifest_strict(run)
        except RunDirError as exc:
            skipped.append({"dir": str(run), "reason": f"manifest unreadable ({str(exc).split(';')[0]})"})
            continue
        if not manifest or manifest.get("stage") != "eval":
            continue
        if not isinstance(manifest.get("config"), dict):
            skipped.append({"dir": str(run), "reason": "manifest unreadable (no config in it)"})
            continue
        labels = {**derived_labels(manifest), **(manifest.get("config", {}).get("labels") or {})}
        record = {"labels": labels, "status": manifest.get("status"), "dir": str(run)}
        metrics_path = run / "metrics.json"
        if manifest.get("status") == "finished":
            try:
                metrics = read_json(metrics_path)
                float(metrics["accuracy"]), float(metrics["invalid_rate"])
            except (OSError, ValueError, TypeError, KeyError) as exc:
                skipped.append(
                    {"dir": str(run), "reason": f"metrics.json unreadable ({type(exc).__name__}: {exc})"}
                )
                continue
            record["metrics"] = metrics
        model_path = Path(str(manifest.get("config", {}).get("model", "")))
        record["train_time_s"] = training_time(model_path)
        records.append(record)
    return records


def training_time(run_dir: Path) -> float | None:
    """Wall-clock time of a training run and everything it started from (GRPO includes its SFT)."""
    chain = training_chain(run_dir)
    return sum(float(m.get("wall_clock_s") or 0.0) for m in chain) if chain else None


def build_table(records: list[dict[str, Any]], table: int) -> dict[tuple[str, str], dict[str, Cell]]:
    metric, columns, _ = TABLES[table]
    rows: dict[tuple[str, str], dict[str, Cell]] = defaultdict(lambda: {c: Cell() for c in columns})
    for record in records:
        labels = record["labels"]
        if labels.get("configuration") not in columns:
            continue
        cell = rows[(labels["model"], labels["dataset"])][labels["configuration"]]
        if "metrics" in record:
            cell.values.append(100.0 * record["metrics"][metric])
            cell.status = "ok"
        elif cell.status != "ok":
            cell.status = "failed" if record["status"] == "failed" else "not run"
    return dict(rows)


def paper_value(paper: dict[str, Any], table: int, model: str, dataset: str, column: str) -> float | None:
    _, columns, key = TABLES[table]
    data = paper.get(key, {})
    rows = data.get("rows", {})
    if table == 3:
        values = rows.get(dataset) if model == "qwen2.5-vl-3b" else None
    else:
        values = rows.get(model, {}).get(dataset)
    if not values:
        return None
    return values[data["columns"].index(column)]


def render(records: list[dict[str, Any]], table: int, paper: dict[str, Any]) -> tuple[str, str, str]:
    """Markdown, LaTeX and CSV of one table; each cell: ours (paper, difference)."""
    _, columns, _ = TABLES[table]
    rows = build_table(records, table)
    header = ["model", "data set", *columns]
    md = [f"### {TITLES[table]}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    tex = [
        r"\begin{tabular}{ll" + "r" * len(columns) + "}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        [
            "model",
            "dataset",
            "configuration",
            "ours_mean",
            "ours_std",
            "n_seeds",
            "status",
            "paper",
            "difference",
        ]
    )
    for (model, dataset), cells in sorted(rows.items()):
        texts = []
        for column in columns:
            cell = cells[column]
            reference = paper_value(paper, table, model, dataset, column)
            text = cell.text()
            if reference is not None:
                diff = f"{cell.mean - reference:+.2f}" if cell.mean is not None else "–"
                text += f" ({reference:.2f}, {diff})"
            texts.append(text)
            std = statistics.stdev(cell.values) if len(cell.values) > 1 else None
            writer.writerow(
                [
                    model,
                    dataset,
                    column,
                    cell.mean,
                    std,
                    len(cell.values),
                    cell.status,
                    reference,
                    None if reference is None or cell.mean is None else cell.mean - reference,
                ]
            )
        md.append("| " + " | ".join([model, dataset, *texts]) + " |")
        tex.append(
            " & ".join([model, dataset, *(t.replace("±", r"$\pm$") for t in texts)]).replace("%", r"\%")
            + r" \\"
        )
    tex += [r"\bottomrule", r"\end{tabular}"]
    md.append("")
    md.append("Cells: ours (paper, ours minus paper); mean ± std over seeds where several ran.")
    return "\n".join(md) + "\n", "\n".join(tex) + "\n", buffer.getvalue()


def timing_table(records: list[dict[str, Any]]) -> str:
    """Training wall-clock per configuration, to check 'SCALe-SFT costs ~1/7 of SFT + GRPO'."""
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    for record in records:
        if record.get("train_time_s") is not None:
            labels = record["labels"]
            times[(labels["model"], labels["configuration"])].append(record["train_time_s"])
    lines = [
        "### Training wall-clock time (s, SFT + GRPO where GRPO ran)",
        "",
        "| model | configuration | time (s) |",
        "|---|---|---|",
    ]
    for (model, configuration), values in sorted(times.items()):
        lines.append(f"| {model} | {configuration} | {statistics.fmean(values):.1f} |")
    return "\n".join(lines) + "\n"


def plot(records: list[dict[str, Any]], runs: Path, out: Path, skipped: list[dict[str, str]]) -> list[str]:
    """Weight schedule, THINK/ANSWER loss curves (vanilla vs SCALe), accuracy and invalid rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scale_repro.config import LossConfig
    from scale_repro.method.schedule import cosine_weight
    from scale_repro.runs.rundir import read_train_log

    written = []
    c = LossConfig()
    steps = list(range(101))
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(
        steps, [cosine_weight(t, 100, c.think_start, c.think_end) for t in steps], label="w_think (SCALe)"
    )
    ax.plot(
        steps, [cosine_weight(t, 100, c.answer_start, c.answer_end) for t in steps], label="w_answer (SCALe)"
    )
    ax.plot(steps, [c.fixed_think] * len(steps), "--", label="w (FW)")
    (
        ax.set_xlabel("training progress (%)"),
        ax.set_ylabel("weight"),
        ax.legend(),
        ax.set_title("Segment weights"),
    )
    fig.tight_layout(), fig.savefig(out / "weight_schedule.png", dpi=120), plt.close(fig)
    written.append("weight_schedule.png")

    curves = defaultdict(list)
    for manifest_path in sorted(Path(runs).rglob("manifest.json")):
        manifest = read_manifest(manifest_path.parent)
        if manifest and manifest.get("stage") == "sft" and manifest.get("status") == "finished":
            problems: list[str] = []
            mode = ((manifest.get("config") or {}).get("loss") or {}).get("mode")
            entries = read_train_log(manifest_path.parent, problems)
            if mode:
                curves[mode].append(entries)  # the lines that decode
            if problems or not mode:
                skipped.append(
                    {
                        "dir": str(manifest_path.parent),
                        "reason": problems[0] if problems else "manifest has no loss mode",
                    }
                )
    if curves:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharex=True)
        for mode, logs in sorted(curves.items()):
            for segment, ax in zip(("think", "answer"), axes, strict=True):
                for i, entries in enumerate(logs):
                    points = [
                        (e["step"], e[f"loss_{segment}"])
                        for e in entries
                        if f"loss_{segment}" in e and "step" in e
                    ]
                    if points:
                        xs, ys = zip(*points, strict=True)
                        ax.plot(
                            xs,
                            ys,
                            color={"vanilla": "C0", "fixed": "C2", "scale": "C1"}.get(mode, "C3"),
                            alpha=0.6,
                            label=mode if i == 0 else None,
                        )
                ax.set_title(f"L_{segment} (mean CE)"), ax.set_xlabel("step")
        if axes[0].get_legend_handles_labels()[0]:
            axes[0].legend()
        fig.tight_layout(), fig.savefig(out / "segment_losses.png", dpi=120), plt.close(fig)
        written.append("segment_losses.png")

    for table, metric, name in ((1, "accuracy", "accuracy.png"), (2, "invalid_rate", "invalid_rate.png")):
        rows = build_table(records, table)
        if not rows:
            continue
        _, columns, _ = TABLES[table]
        fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(rows)), 3.4))
        width = 0.8 / len(columns)
        for j, column in enumerate(columns):
            means = [rows[key][column].mean or 0.0 for key in sorted(rows)]
            ax.bar([i + j * width for i in range(len(rows))], means, width, label=column)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))])
        ax.set_xticklabels([f"{m}\n{d}" for m, d in sorted(rows)], fontsize=7)
        ax.set_ylabel(f"{metric} (%)"), ax.legend(fontsize=7), ax.set_title(TITLES[table])
        fig.tight_layout(), fig.savefig(out / name, dpi=120), plt.close(fig)
        written.append(name)
    return written + plot_grpo_diagnostics(runs, out)


def write_report(runs: str | Path, out: str | Path, paper_path: Path = PAPER_TABLES) -> dict[str, Any]:
    runs, out = Path(runs), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paper = json.loads(paper_path.read_text()) if paper_path.is_file() else {}
    skipped: list[dict[str, str]] = []
    records = collect(runs, skipped)
    plots = plot(records, runs, out, skipped)
    markdown = [
        f"# SCALe reproduction report\n\nRuns: `{runs}` ({len(records)} evaluations, {len(skipped)} skipped)\n"
    ]
    if skipped:
        markdown.append("### Skipped runs\n\n| run | why |\n|---|---|")
        markdown.append("\n".join(f"| `{s['dir']}` | {s['reason']} |" for s in skipped) + "\n")
    for table in TABLES:
        md, tex, table_csv = render(records, table, paper)
        markdown.append(md)
        atomic_write_text(out / f"table{table}.tex", tex)
        atomic_write_text(out / f"table{table}.csv", table_csv)
    markdown.append(timing_table(records))
    markdown.append("\n".join(f"![{p}]({p})" for p in plots) + "\n")
    atomic_write_text(out / "report.md", "\n".join(markdown))
    return {"evaluations": len(records), "skipped": skipped, "plots": plots, "report": str(out / "report.md")}
