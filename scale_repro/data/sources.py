"""What a ``--data`` argument names, and how each kind is loaded.

Accepted: a directory written by ``scale data synth``; a Vision-R1 JSON/JSON-lines file
(images under ``--image-root``); a preset name from ``configs/data/`` (or a path to such a
YAML); a local ``save_to_disk`` copy of ScienceQA-IMG or ICON-QA; a hub id.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from scale_repro.data.loaders import (
    LoadResult,
    SubsetRule,
    iconqa_examples,
    load_vision_r1,
    open_dataset,
    scienceqa_examples,
)
from scale_repro.data.synth import SYNTH_KIND
from scale_repro.data.validate import DataError
from scale_repro.rundir import read_manifest

CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"


def synth_manifest(path: str | Path) -> dict[str, Any] | None:
    manifest = read_manifest(path) if Path(path).is_dir() else None
    return manifest if manifest and manifest.get("kind") == SYNTH_KIND else None


def preset(name: str) -> dict[str, Any] | None:
    """A data preset: ``configs/data/NAME.yaml`` or a YAML path; ``${VAR}`` expands from the environment."""
    candidates = [Path(name)] if name.endswith((".yaml", ".yml")) else [CONFIGS_DIR / "data" / f"{name}.yaml"]
    for path in candidates:
        if path.is_file():
            data = yaml.safe_load(os.path.expandvars(path.read_text())) or {}
            data["_preset"] = str(path)
            return data
    return None


def load_training_examples(
    spec: str,
    image_root: str | None = None,
    strict: bool = False,
    image_prefixes: list[str] | None = None,
    id_contains: list[str] | None = None,
) -> LoadResult:
    """Training examples (with reasoning traces) from any accepted ``--data`` form."""
    if not spec:
        raise DataError("--data", None, None, "no training data given")
    subset = SubsetRule(list(image_prefixes or []), list(id_contains or []))
    synth = synth_manifest(spec)
    if synth:
        root = Path(spec)
        return load_vision_r1(
            root / synth["files"]["train"], root / synth["files"]["image_root"], subset, strict
        )
    path = Path(spec)
    if path.is_file() and path.suffix in (".json", ".jsonl"):
        return load_vision_r1(path, image_root, subset, strict)
    found = preset(spec)
    if found:
        if found.get("format") != "vision-r1":
            raise DataError(found["_preset"], None, "format", "training presets must have format: vision-r1")
        rule = found.get("subset") or {}
        return load_training_examples(
            found["path"],
            image_root=found.get("image_root") or image_root,
            strict=strict,
            image_prefixes=rule.get("image_prefixes", image_prefixes),
            id_contains=rule.get("id_contains", id_contains),
        )
    if path.exists():
        raise DataError(
            path, None, None, "not training data: expected a synth directory or a Vision-R1 JSON file"
        )
    raise DataError(spec, None, None, "no such file, directory or data preset")


TEST_TASKS = {
    "scienceqa": ("scienceqa", "lmms-lab/ScienceQA", "test"),
    "iconqa": ("iconqa", "lmms-lab/ICON-QA", "test"),
    "synthetic-scienceqa": ("scienceqa", None, "test"),
    "synthetic-iconqa": ("iconqa", None, "test"),
}


def load_test_examples(
    task: str, data: str | None = None, split: str | None = None, strict: bool = False
) -> LoadResult:
    """Test examples for an evaluation task; ``data`` overrides where they come from."""
    if task not in TEST_TASKS:
        raise DataError("--task", None, None, f"unknown task {task!r}; choose from {', '.join(TEST_TASKS)}")
    schema, hub_id, default_split = TEST_TASKS[task]
    source = data or hub_id
    if source is None:
        raise DataError(
            "--data", None, None, f"task {task} needs --data DIR (a directory written by `scale data synth`)"
        )
    synth = synth_manifest(source)
    if synth:
        source = str(Path(source) / synth["files"][schema])
    dataset = open_dataset(
        source, split or default_split, config="ScienceQA-IMG" if schema == "scienceqa" else None
    )
    if schema == "scienceqa":
        return scienceqa_examples(dataset, str(source), strict=strict)
    return iconqa_examples(dataset, str(source), strict=strict)
