"""`scale demo`: the embedded default, the whole chain on tiny models and synthetic data.

Builds the tiny models and the synthetic data if missing, runs the Table 1-3 matrix of
``configs/experiments/demo.yaml`` in one process, evaluates, reports, and prints Table 1.
Then a shortened evidence experiment (``configs/experiments/synthetic.yaml``: one seed, vanilla
SFT against SCALe-SFT at the main ratio, on the one tiny architecture that learns the task).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from scale_repro.data.sources import synth_manifest
from scale_repro.data.synth import SynthConfig, write_synthetic
from scale_repro.experiments.evidence import load_evidence, run_evidence, shorten
from scale_repro.experiments.planner import experiment_path, load_experiment, plan, run_stages
from scale_repro.experiments.reports.tables import write_report
from scale_repro.models.registry import tiny_model_path

DEMO_EVIDENCE_MODEL = "tiny-llava-next"
DEMO_SYNTH = SynthConfig(seed=0, n_train=320, n_test=48, reasoning_ratio=20.0)
QUICK_OVERRIDES = {
    "sft": ["max_steps=2", "per_device_train_batch_size=2"],
    "grpo": ["max_steps=1", "per_device_train_batch_size=2", "num_generations=2", "max_completion_length=8"],
    "eval": ["max_new_tokens=8", "limit=3"],
}


def run_demo(
    out: str | Path, models: list[str] | None = None, quick: bool = False, echo=print, jobs: int = 1
) -> dict[str, Any]:
    started = time.time()
    out = Path(out).resolve()
    data = out / "data"
    if not synth_manifest(data):
        config = SynthConfig(seed=0, n_train=24, n_test=6) if quick else DEMO_SYNTH
        echo(f"writing synthetic data to {data}")
        write_synthetic(data, config)
    experiment = load_experiment(experiment_path(name="demo"), {"SYNTH": str(data)})
    if models:
        experiment.models = models
    if quick:
        for section, extra in QUICK_OVERRIDES.items():
            block = getattr(experiment, section)
            block["set"] = list(block.get("set", [])) + extra
    # Libraries' own chatter would bury the progress lines.
    for name in ("transformers", "lmms-eval", "datasets", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for model in experiment.models:  # built once, here, before parallel workers would race to build them
        tiny_model_path(model)
    stages = plan(experiment, out / "runs")
    echo(f"{len(stages)} stages for {', '.join(experiment.models)}; run directories under {out / 'runs'}")
    summary = run_stages(stages, jobs=jobs, echo=echo)
    result = write_report(out / "runs", out / "report")
    table1 = (out / "report" / "report.md").read_text().split("### Table 2")[0]
    echo(table1)

    # From the plain tiny model: the demo shows the chain; the perceiving base is make evidence's.
    evidence = shorten(
        load_evidence(experiment_path(name="synthetic")),
        seeds=1,
        quick=quick,
        models=[DEMO_EVIDENCE_MODEL],
        configurations=["SFT", "SCALe-SFT"],
        sweep=False,
    )
    echo("shortened evidence experiment (full version: make evidence)")
    evidence_result = run_evidence(
        evidence, out / "evidence", out / "evidence" / "report", jobs=jobs, command="scale demo", echo=echo
    )
    for key, items in evidence_result["summary"].items():
        summary[key] = summary.get(key, []) + items
    echo(
        f"demo finished in {time.time() - started:.0f}s: report {result['report']}, plots in {out / 'report'}, "
        f"evidence {evidence_result['report']}"
    )
    return summary
