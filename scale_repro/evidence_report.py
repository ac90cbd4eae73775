"""The evidence report: seeds, paired intervals, the ratio sweep and the segment loss curves.

Reads only what the stages wrote (manifests, ``metrics.json``, ``samples.jsonl``,
``train_log.jsonl``) and writes to the results folder:

- ``evidence.md``: the tables below, each sentence of the verdict computed from them;
- ``summary.json``: every figure in the tables; ``runs.csv``: one row per evaluation;
- ``run.json``: the exact command, wall-clock time and environment;
- ``segment_losses.png``, ``accuracy.png``, ``ratio_sweep.png``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from scale_repro.report import collect
from scale_repro.rundir import atomic_write_json, atomic_write_text
from scale_repro.training import read_train_log

# ``spec`` below is an evidence.EvidenceSpec (typed Any: evidence imports this module, not the reverse).
EvidenceSpec = Any

# The comparisons the report makes, each paired by seed: (treatment, control).
COMPARISONS = (("SCALe-SFT", "SFT"), ("SFT-FW", "SFT"), ("SCALe-SFT", "SFT-FW"), ("SCALe-GRPO", "GRPO"))


def ratio_label(ratio: float) -> str:
    return f"{ratio:g}x"


METRICS = ("accuracy", "invalid_rate", "inconsistent_rate", "accuracy_multiple_choice", "accuracy_fill_in")
SFT_CONFIGURATIONS = {"SFT": "vanilla", "SFT-FW": "fixed", "SCALe-SFT": "scale"}


def signed(fraction: float) -> str:
    """A difference of two rates in percentage points, signed; never "-0.0"."""
    text = f"{100 * fraction:+.1f}"
    return "+0.0" if text == "-0.0" else text


@dataclass(frozen=True)
class PairedInterval:
    """Mean of treatment minus control over the seeds both ran, with a two-sided t interval."""

    n: int
    mean: float
    sd: float | None
    low: float | None
    high: float | None
    differences: tuple[float, ...]

    def text(self) -> str:
        if self.low is None:
            return f"{signed(self.mean)} (n={self.n}, no interval)"
        return f"{signed(self.mean)} [{signed(self.low)}, {signed(self.high)}]"

    def verdict(self) -> str:
        if self.low is None:
            return "too few seeds for an interval"
        if self.low > 0:
            return "higher (interval above 0)"
        if self.high < 0:
            return "lower (interval below 0)"
        return "no clear difference (interval includes 0)"


def paired_interval(
    treatment: dict[int, float], control: dict[int, float], confidence: float = 0.95
) -> PairedInterval | None:
    """Paired by seed: only seeds present in both count. None when no seed is shared."""
    from scipy.stats import t

    seeds = sorted(set(treatment) & set(control))
    if not seeds:
        return None
    differences = tuple(treatment[s] - control[s] for s in seeds)
    mean = statistics.fmean(differences)
    if len(seeds) < 2:
        return PairedInterval(1, mean, None, None, None, differences)
    sd = statistics.stdev(differences)
    half = float(t.ppf(0.5 + confidence / 2, len(seeds) - 1)) * sd / math.sqrt(len(seeds))
    return PairedInterval(len(seeds), mean, sd, mean - half, mean + half, differences)


def mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


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
                **{m: metrics.get(m) for m in METRICS},
                "train_time_s": record.get("train_time_s"),
                "eval_dir": record["dir"],
            }
        )
    return sorted(rows, key=lambda r: (r["model"], r["ratio"], r["configuration"], r["seed"]))


def by_seed(
    rows: list[dict[str, Any]], model: str, ratio: str, configuration: str, metric: str
) -> dict[int, float]:
    return {
        r["seed"]: r[metric]
        for r in rows
        if (r["model"], r["ratio"], r["configuration"]) == (model, ratio, configuration)
        and r[metric] is not None
    }


def _pct(value: float | None, sd: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}" + (f" ± {100 * sd:.1f}" if sd is not None else "")


def summarise(spec: EvidenceSpec, rows: list[dict[str, Any]]) -> dict[str, Any]:
    main = ratio_label(float(spec.ratio))
    summary: dict[str, Any] = {"main_ratio": main, "models": {}}
    for model in sorted({r["model"] for r in rows}):
        per_model: dict[str, Any] = {"configurations": {}, "comparisons": [], "sweep": []}
        for configuration in spec.configurations:
            cell = {}
            for metric in METRICS:
                values = list(by_seed(rows, model, main, configuration, metric).values())
                mean, sd = mean_sd(values)
                cell[metric] = {"n": len(values), "mean": mean, "sd": sd}
            per_model["configurations"][configuration] = cell
        for treatment, control in COMPARISONS:
            if treatment not in spec.configurations or control not in spec.configurations:
                continue
            for metric in ("accuracy", "invalid_rate", "inconsistent_rate"):
                interval = paired_interval(
                    by_seed(rows, model, main, treatment, metric), by_seed(rows, model, main, control, metric)
                )
                if interval:
                    per_model["comparisons"].append(
                        {"treatment": treatment, "control": control, "metric": metric, **asdict(interval)}
                    )
        for ratio in sorted({float(r["ratio"].rstrip("x")) for r in rows if r["model"] == model}):
            label = ratio_label(ratio)
            sft = by_seed(rows, model, label, "SFT", "accuracy")
            scale = by_seed(rows, model, label, "SCALe-SFT", "accuracy")
            interval = paired_interval(scale, sft)
            if interval:
                per_model["sweep"].append(
                    {
                        "ratio": ratio,
                        "sft": mean_sd(list(sft.values())),
                        "scale": mean_sd(list(scale.values())),
                        **asdict(interval),
                    }
                )
        summary["models"][model] = per_model
    return summary


def render_markdown(
    spec: EvidenceSpec, summary: dict[str, Any], run_info: dict[str, Any], plots: list[str]
) -> str:
    main = summary["main_ratio"]
    lines = [
        f"# Evidence: SCALe-SFT against vanilla SFT on a synthetic task ({spec.name})",
        "",
        f"Task: {spec.task} on synthetic scenes (`{json.dumps(spec.data)}`); "
        f"main reasoning-to-answer ratio {main}. Command: `{run_info.get('command', '')}`; "
        f"wall clock {run_info.get('wall_clock_s', 0):.0f} s with {run_info.get('jobs', 1)} worker(s). "
        "Stages: "
        + ", ".join(f"{k} {v}" for k, v in run_info.get("stages", {}).items())
        + " (a failed or blocked stage leaves its seed out of the tables below).",
        "",
    ]
    for model, base in (run_info.get("bases") or {}).items():
        seen = base["perception"]
        lines += [f"Base `{model}`: {base['description']}; perception accuracy on {seen['n']} held-out "
                  f"scenes {_pct(seen['accuracy'])} %.", ""]  # fmt: skip
    for model, data in summary["models"].items():
        lines += [f"## {model}, ratio {main}", "",
                  "| configuration | seeds | accuracy (%) | multiple choice (%) | fill in (%) | invalid (%) "
                  "| answer contradicts trace (%) |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for configuration, cell in data["configurations"].items():
            acc = cell["accuracy"]
            lines.append(
                f"| {configuration} | {acc['n']} | {_pct(acc['mean'], acc['sd'])} "
                f"| {_pct(cell['accuracy_multiple_choice']['mean'], cell['accuracy_multiple_choice']['sd'])} "
                f"| {_pct(cell['accuracy_fill_in']['mean'], cell['accuracy_fill_in']['sd'])} "
                f"| {_pct(cell['invalid_rate']['mean'], cell['invalid_rate']['sd'])} "
                f"| {_pct(cell['inconsistent_rate']['mean'], cell['inconsistent_rate']['sd'])} |"
            )
        lines += ["", "Mean ± standard deviation over seeds.", "",
                  "### Paired by seed: treatment minus control, percentage points, 95 % t interval", "",
                  "| treatment − control | metric | seeds | difference [95 % CI] | reading |", "|---|---|---|---|---|"]  # fmt: skip
        for c in data["comparisons"]:
            interval = PairedInterval(
                c["n"], c["mean"], c["sd"], c["low"], c["high"], tuple(c["differences"])
            )
            reading = interval.verdict()
            if c["metric"] in ("invalid_rate", "inconsistent_rate") and "higher" in reading:
                reading += (
                    "; more invalid outputs" if c["metric"] == "invalid_rate" else "; more contradictions"
                )
            lines.append(
                f"| {c['treatment']} − {c['control']} | {c['metric']} | {c['n']} | {interval.text()} | {reading} |"
            )
        if data["sweep"]:
            lines += ["", "### Ratio sweep: SCALe-SFT − SFT accuracy by reasoning-to-answer ratio", "",
                      "| ratio | seeds | SFT (%) | SCALe-SFT (%) | difference [95 % CI] | reading |",
                      "|---|---|---|---|---|---|"]  # fmt: skip
            for s in data["sweep"]:
                interval = PairedInterval(
                    s["n"], s["mean"], s["sd"], s["low"], s["high"], tuple(s["differences"])
                )
                lines.append(
                    f"| {s['ratio']:g}x | {s['n']} | {_pct(*s['sft'])} | {_pct(*s['scale'])} "
                    f"| {interval.text()} | {interval.verdict()} |"
                )
            means = [s["mean"] for s in data["sweep"]]
            growing = len(means) > 1 and all(later > earlier for earlier, later in pairwise(means))
            steps = ", ".join(f"{s['ratio']:g}x {signed(s['mean'])}" for s in data["sweep"])
            lines += ["", f"The paper's argument predicts the gain grows with the ratio. Measured mean gain (pp): "
                      f"{steps}; it {'does' if growing else 'does not'} grow with the ratio here."]  # fmt: skip
        lines.append("")
    lines += [f"![{p}]({p})" for p in plots]
    env = run_info.get("environment", {})
    lines += ["", "## Environment", "",
              f"Python {env.get('python')}, {env.get('platform')}, {env.get('cpu_count')} CPUs, "
              f"CUDA: {env.get('cuda')}. Packages: "
              + ", ".join(f"{k} {v}" for k, v in sorted(env.get("packages", {}).items())) + "."]  # fmt: skip
    return "\n".join(lines) + "\n"


def runs_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    fields = ["model", "ratio", "configuration", "seed", *METRICS, "train_time_s", "eval_dir"]
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
        if row["ratio"] != main or row["configuration"] not in SFT_CONFIGURATIONS:
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
    colours = {"SFT": "C0", "SFT-FW": "C2", "SCALe-SFT": "C1", "GRPO": "C4", "SCALe-GRPO": "C3"}
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
        for i, configuration in enumerate(spec.configurations):
            values = list(by_seed(rows, model, main, configuration, "accuracy").values())
            if values:
                ax.scatter(
                    [i] * len(values), [100 * v for v in values], color=colours.get(configuration), alpha=0.6
                )
                ax.errorbar([i + 0.15], [100 * statistics.fmean(values)], fmt="_", markersize=14,
                            color=colours.get(configuration))  # fmt: skip
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
            errors = [[100 * (s["mean"] - s["low"]) if s["low"] is not None else 0 for s in sweep],
                      [100 * (s["high"] - s["mean"]) if s["high"] is not None else 0 for s in sweep]]  # fmt: skip
            ax.errorbar(xs, ys, yerr=errors, marker="o", capsize=4, label=model)
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_xscale("log"), ax.set_xlabel("reasoning-to-answer ratio (words)")
        ax.set_ylabel("SCALe-SFT − SFT accuracy (pp)"), ax.legend(fontsize=7)
        ax.set_title("Gain by ratio, 95 % CI", fontsize=9)
        fig.tight_layout(), fig.savefig(out / "ratio_sweep.png", dpi=120), plt.close(fig)
        written.append("ratio_sweep.png")
    return written


def write_evidence_report(
    spec: EvidenceSpec,
    runs: str | Path,
    out: str | Path,
    run_info: dict[str, Any],
    evaluations: set[str] | None = None,
) -> dict[str, Any]:
    runs, out = Path(runs), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = gather(runs, evaluations)
    summary = summarise(spec, rows)
    plots = plot(spec, rows, summary, out)
    atomic_write_json(out / "summary.json", summary)
    atomic_write_json(out / "run.json", {**run_info, "spec": asdict(spec)})
    atomic_write_text(out / "runs.csv", runs_csv(rows))
    atomic_write_text(out / "evidence.md", render_markdown(spec, summary, run_info, plots))
    return {"evaluations": len(rows), "plots": plots, "report": str(out / "evidence.md")}
