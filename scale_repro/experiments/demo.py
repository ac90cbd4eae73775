"""`scale demo`: the embedded default, the whole chain on tiny models and synthetic data.

Two calls of the one experiment runner (:mod:`scale_repro.experiments.runner`):
``configs/experiments/demo.yaml`` (the Table 1-3 matrix on the three tiny architectures, its
synthetic data written first), whose Table 1 is printed; then a shortened evidence experiment
(``configs/experiments/synthetic.yaml``: one seed, vanilla SFT against SCALe-SFT at the main
ratio, on the one tiny architecture that learns the task).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from scale_repro.experiments.planner import experiment_path
from scale_repro.experiments.runner import RunOptions, run_experiment

DEMO_EVIDENCE_MODEL = "tiny-llava-next"
DEMO_EVIDENCE_RECIPES = ["SFT", "SCALe-SFT"]


def run_demo(
    out: str | Path, models: list[str] | None = None, quick: bool = False, echo=print, jobs: int = 1
) -> dict[str, Any]:
    """Both experiments under ``out`` (``out/report``, ``out/evidence/report``); returns the
    stages of both, as the runner counts them (``ran``, ``skipped``, ``failed``, ``blocked``)."""
    started = time.time()
    out = Path(out).resolve()
    matrix = run_experiment(
        experiment_path(name="demo"), RunOptions(out, models=models, quick=quick, jobs=jobs), echo
    )
    echo((out / "report" / "report.md").read_text().split("### Table 2")[0])

    # From the plain tiny model: the demo shows the chain; the perceiving base is make evidence's.
    echo("shortened evidence experiment (full version: make evidence)")
    shortened = RunOptions(
        out / "evidence",
        seeds=1,
        models=[DEMO_EVIDENCE_MODEL],
        recipes=DEMO_EVIDENCE_RECIPES,
        main_only=True,
        quick=quick,
        jobs=jobs,
        command="scale demo",
    )
    evidence = run_experiment(experiment_path(name="synthetic"), shortened, echo)
    summary = {key: matrix["summary"][key] + evidence["summary"][key] for key in matrix["summary"]}
    echo(
        f"demo finished in {time.time() - started:.0f}s: report {matrix['report']}, plots in {out / 'report'}, "
        f"evidence {evidence['report']}"
    )
    return summary
