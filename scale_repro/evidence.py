"""The controlled experiment: SCALe-SFT against vanilla SFT on a synthetic task, with seeds.

``configs/experiments/synthetic.yaml`` names the task (a :class:`SynthConfig`), the tiny
models, the configurations, the seeds, the main reasoning-to-answer ratio and a sweep over
other ratios. This module turns it into ordinary reproduction stages (SFT, GRPO, ``scale
eval`` through lmms-eval; see :mod:`scale_repro.pipeline`), runs independent chains of
stages in parallel worker processes, and writes the evidence report: accuracy and invalid
rate per configuration (mean, standard deviation), the SCALe minus SFT difference paired by
seed with a 95 % t interval, the ratio sweep, and the THINK/ANSWER loss curves.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scale_repro.data.synth import SynthConfig, write_synthetic
from scale_repro.evidence_report import ratio_label, write_evidence_report
from scale_repro.perceiving import PERCEIVING_MODELS, perceiving_record
from scale_repro.perception_base import ensure_perceiving
from scale_repro.pipeline import Experiment, Stage, chains, load_recipe_library, plan, run_stages
from scale_repro.rundir import package_versions, write_once

EVIDENCE_KIND = "evidence"
QUICK_OVERRIDES = {
    "sft": ["max_steps=3", "per_device_train_batch_size=2", "save_steps=1000", "logging_steps=1"],
    "grpo": ["max_steps=1", "per_device_train_batch_size=2", "num_generations=2", "max_completion_length=8"],
    "eval": ["max_new_tokens=8", "limit=4"],
}
QUICK_DATA = {"n_train": 16, "n_test": 4}


@dataclass
class EvidenceSpec:
    name: str
    models: list[str]
    configurations: list[str]
    seeds: list[int]
    task: str
    data: dict[str, Any]
    ratio: float
    sweep: dict[str, Any] = field(default_factory=dict)
    sft: dict[str, Any] = field(default_factory=dict)
    grpo: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    kind: str = EVIDENCE_KIND

    def synth_config(self, ratio: float) -> SynthConfig:
        values = dict(self.data, reasoning_ratio=float(ratio))
        for key in ("shapes", "train_kinds", "scienceqa_kinds", "iconqa_kinds"):
            if key in values:
                values[key] = tuple(values[key])
        return SynthConfig(**values)

    def ratios(self) -> list[float]:
        return [float(self.ratio)] + [
            float(r) for r in self.sweep.get("ratios", []) if float(r) != float(self.ratio)
        ]

    def arms(self, ratio: float) -> tuple[list[str], list[int]]:
        """Configurations and seeds run at ``ratio``."""
        if float(ratio) == float(self.ratio):
            return self.configurations, self.seeds
        return self.sweep.get("configurations", ["SFT", "SCALe-SFT"]), self.sweep.get("seeds", self.seeds)


def is_evidence_file(path: str | Path) -> bool:
    data = yaml.safe_load(Path(path).read_text()) or {}
    return isinstance(data, dict) and data.get("kind") == EVIDENCE_KIND


def load_evidence(path: str | Path) -> EvidenceSpec:
    data = yaml.safe_load(Path(path).read_text()) or {}
    try:
        spec = EvidenceSpec(**data)
    except TypeError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    known = load_recipe_library()
    unknown = [c for c in spec.configurations + spec.sweep.get("configurations", []) if c not in known]
    if unknown:
        raise ValueError(f"{path}: unknown configuration(s) {unknown}; known: {list(known)}")
    try:
        spec.synth_config(spec.ratio)
    except TypeError as exc:
        raise ValueError(f"{path}: data: {exc}") from exc
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
    or (quick) a few steps on a few examples."""
    if models:
        spec.models = list(models)
    if quick:  # a perceiving base's few-step counterpart: plumbing, not a base that sees
        spec.models = [
            (PERCEIVING_MODELS[m].quick or m) if m in PERCEIVING_MODELS else m for m in spec.models
        ]
    if seeds is not None:
        spec.seeds = spec.seeds[:seeds]
        spec.sweep = dict(spec.sweep, seeds=spec.sweep.get("seeds", spec.seeds)[:seeds])
    if configurations:
        spec.configurations = [c for c in spec.configurations if c in configurations]
    if not sweep:
        spec.sweep = {}
    if quick:
        spec.data = dict(spec.data, **QUICK_DATA)
        for section, extra in QUICK_OVERRIDES.items():
            block = getattr(spec, section)
            block["set"] = list(block.get("set", [])) + extra
    return spec


def prepare_data(spec: EvidenceSpec, data_root: Path, echo=print) -> dict[float, Path]:
    """One synthetic data directory per ratio; an existing one is reused only if made the same way."""
    dirs = {}
    for ratio in spec.ratios():
        dirs[ratio] = write_once(data_root / f"ratio{ratio:g}", spec.synth_config(ratio), write_synthetic, echo,
                                 f"synthetic data (ratio {ratio_label(ratio)})")  # fmt: skip
    return dirs


def plan_evidence(spec: EvidenceSpec, out: Path, data_dirs: dict[float, Path]) -> list[Stage]:
    """The paper's recipes (configs/recipes/balanced-thinking.yaml) at every ratio, on the one planner."""
    stages: list[Stage] = []
    library = load_recipe_library()
    for ratio, data_dir in data_dirs.items():
        configurations, seeds = spec.arms(ratio)
        experiment = Experiment(
            name=f"{spec.name}-{ratio_label(ratio)}",
            models=spec.models,
            datasets=[
                {"name": ratio_label(ratio), "train": str(data_dir), "task": spec.task, "data": str(data_dir)}
            ],
            recipes={c: library[c] for c in configurations},
            seeds=list(seeds),
            sft=spec.sft,
            grpo=spec.grpo,
            eval=spec.eval,
        )
        stages.extend(plan(experiment, out / "runs"))
    return stages


def evidence_stages(spec: EvidenceSpec, out: Path, echo=print) -> list[Stage]:
    """The data for every ratio (written if missing), then every stage of the experiment."""
    out = Path(out).resolve()
    return plan_evidence(spec, out, prepare_data(spec, out / "data", echo=echo))


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
    # Perceiving bases are built here, once, before any worker needs them.
    bases = {
        m: perceiving_record(ensure_perceiving(m, echo=echo)) for m in spec.models if m in PERCEIVING_MODELS
    }
    stages = evidence_stages(spec, out, echo=echo)
    echo(f"{len(stages)} stages ({len(chains(stages))} independent chains) for {', '.join(spec.models)}, "
         f"ratios {', '.join(ratio_label(r) for r in spec.ratios())}; {jobs} worker(s); runs under {out / 'runs'}")  # fmt: skip
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
            "jobs": jobs,
            "stages": {k: len(v) for k, v in summary.items()},
            "bases": bases,
            "environment": environment(),
        },
    )
    echo(f"evidence finished in {elapsed:.0f}s: {report['report']}")
    return {"summary": summary, **report}
