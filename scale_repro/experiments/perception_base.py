"""Build a perceiving base (:mod:`scale_repro.models.perceiving`): its perception SFT stage, the
lmms-eval check on held-out scenes, and the cached checkpoint."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

from scale_repro.config import EvalConfig, SFTConfig, load_config
from scale_repro.data.synth import write_synthetic
from scale_repro.models.perceiving import (
    PERCEIVING_BUILD_VERSION,
    PERCEIVING_MODELS,
    PERCEPTION_TASK,
    PerceptionFloorError,
)
from scale_repro.models.registry import MERGED_DIR, perceiving_model_path, tiny_model_path
from scale_repro.runs.rundir import fingerprint, publishing, write_once
from scale_repro.stages.evaluate import run_eval
from scale_repro.stages.sft import run_sft


def ensure_perceiving(name: str, seed: int = 0, echo=print) -> Path:
    """The base's cached directory, built first if it is not there yet."""
    path = perceiving_model_path(name, seed)
    if not (path / "config.json").is_file():
        build_perceiving(name, path, seed=seed, echo=echo)
    return path


def build_perceiving(name: str, out_dir: str | Path, seed: int = 0, echo=print) -> Path:
    """Train ``name``'s perception stage, check it on held-out scenes, keep the merged
    checkpoint in ``out_dir`` (replaced atomically). The stage's run directory and its
    evaluation stay beside it (``out_dir``.build) for inspection."""
    spec = PERCEIVING_MODELS[name]
    out = Path(out_dir)
    # One work folder per recipe: a changed recipe trains afresh instead of meeting the old run.
    recipe = fingerprint([spec.tiny, list(spec.settings), asdict(spec.data), seed])
    work = out.with_name(f"{out.name}.build") / recipe
    data = write_once(work / "data", spec.data, write_synthetic, echo, f"{name}: perception data")
    echo(f"{name}: perception stage from {spec.tiny} ({spec.description})")
    sft = load_config(
        SFTConfig,
        None,
        list(spec.settings),
        model=spec.tiny,
        seed=seed,
        output_dir=str(work / "perception-sft"),
        **{"data.spec": str(data)},
    )
    sft.labels = {"model": name, "stage": "perception"}
    run_dir = run_sft(sft)
    evaluation = load_config(
        EvalConfig,
        None,
        ["max_new_tokens=48"],
        model=str(run_dir),
        task=PERCEPTION_TASK,
        data=str(data),
        output_dir=str(work / "perception-eval"),
        seed=seed,
    )
    metrics = json.loads((run_eval(evaluation) / "metrics.json").read_text())
    accuracy = metrics["accuracy"]
    echo(f"{name}: perception accuracy on {metrics['n']} held-out scenes {100 * accuracy:.1f}%")
    if accuracy < spec.min_accuracy:
        raise PerceptionFloorError(
            f"{name}: perception accuracy {100 * accuracy:.1f}% on held-out scenes is below "
            f"{100 * spec.min_accuracy:.0f}%: the base does not see (runs in {work})"
        )
    tiny_record = json.loads((tiny_model_path(spec.tiny, seed) / "scale_tiny.json").read_text())
    record = {
        **tiny_record,
        "name": name,
        "built_from": spec.tiny,
        "description": spec.description,
        "perception": {
            "task": PERCEPTION_TASK,
            "n": metrics["n"],
            "accuracy": accuracy,
            "invalid_rate": metrics["invalid_rate"],
            "data": asdict(spec.data),
            "settings": list(spec.settings),
            "runs": str(work),
        },
        "version": PERCEIVING_BUILD_VERSION,
    }
    with publishing(out) as staging:
        shutil.copytree(run_dir / MERGED_DIR, staging, dirs_exist_ok=True)
        (staging / "scale_tiny.json").write_text(json.dumps(record, indent=2) + "\n")
    return out
