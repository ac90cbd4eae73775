"""What a ``--data`` argument names, and how each kind is loaded.

Accepted: a directory written by ``scale data synth``; a Vision-R1 JSON/JSON-lines file
(images under ``--image-root``); a preset name from ``configs/data/`` (or a path to such a
YAML); a local ``save_to_disk`` copy of ScienceQA-IMG or ICON-QA; a hub id.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scale_repro.data.benchmarks import BENCHMARKS, benchmark_examples
from scale_repro.data.loaders import (
    LoadResult,
    SubsetRule,
    iconqa_examples,
    is_easyr1_record,
    load_easyr1,
    load_vision_r1,
    open_dataset,
    scienceqa_examples,
)
from scale_repro.data.synth import SYNTH_KIND
from scale_repro.data.validate import DataError, ValidationReport
from scale_repro.runs.rundir import read_manifest
from scale_repro.yaml_files import CONFIGS_DIR, parse_yaml


def synth_manifest(path: str | Path) -> dict[str, Any] | None:
    manifest = read_manifest(path) if Path(path).is_dir() else None
    return manifest if manifest and manifest.get("kind") == SYNTH_KIND else None


def preset(name: str) -> dict[str, Any] | None:
    """A data preset: ``configs/data/NAME.yaml`` or a YAML path; ``${VAR}`` expands from the environment."""
    candidates = [Path(name)] if name.endswith((".yaml", ".yml")) else [CONFIGS_DIR / "data" / f"{name}.yaml"]
    for path in candidates:
        if path.is_file():
            data = parse_yaml(os.path.expandvars(path.read_text()), path) or {}
            data["_preset"] = str(path)
            return data
    return None


def preset_names() -> list[str]:
    return sorted(p.stem for p in (CONFIGS_DIR / "data").glob("*.yaml"))


def is_easyr1_file(path: Path) -> bool:
    """Whether a JSON(-lines) file holds EasyR1-style RL records (its first record tells)."""
    with path.open(encoding="utf-8", errors="replace") as handle:
        head = handle.read(65536).lstrip()
    if head.startswith("["):
        head = head[1:].lstrip()
    try:
        first, _ = json.JSONDecoder().raw_decode(head)
    except json.JSONDecodeError:
        return False  # the Vision-R1 loader reports what is wrong with the file
    return is_easyr1_record(first)


def _preset_files(found: dict[str, Any]) -> tuple[Path, list[tuple[Path, str | None]]]:
    """The dataset dir and (file, image folder) pairs a vision-r1 preset names."""
    where = found["_preset"]
    if found.get("format") != "vision-r1":
        raise DataError(where, None, "format", "training presets must have format: vision-r1")
    dataset_dir = _preset_value(
        found,
        "dataset_dir",
        "the folder Vision-R1-cold was downloaded to (it holds "
        "vision_r1_llava_cot_full.json and llava_cot_images/)",
    )
    if not dataset_dir:
        raise DataError(where, None, "dataset_dir", "no dataset_dir")
    files = []
    for entry in found.get("files") or []:
        if isinstance(entry, dict):
            files.append((Path(dataset_dir) / entry["file"], entry.get("image_dir")))
        else:
            files.append((Path(dataset_dir) / str(entry), None))
    if not files:
        raise DataError(where, None, "files", "no files listed")
    return Path(dataset_dir), files


_UNSET_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


def _preset_value(found: dict[str, Any], key: str, meaning: str) -> str:
    """A preset's value, or one clear line when it still names an unset environment variable."""
    value = str(found.get(key) or "")
    unset = _UNSET_VARIABLE.search(value)
    if unset:
        raise DataError(
            found["_preset"], None, key, f"set the environment variable {unset.group(1)} to {meaning}"
        )
    return value


def load_training_examples(
    spec: str,
    image_root: str | None = None,
    strict: bool = False,
    sources: list[str] | None = None,
    id_contains: list[str] | None = None,
) -> LoadResult:
    """Training examples (with reasoning traces) from any accepted ``--data`` form.

    A preset reads each of its files on its own (their columns differ) and reports the
    records each file gave; ``sources``/``id_contains`` given here replace the preset's.
    """
    if not spec:
        raise DataError("--data", None, None, "no training data given")
    subset = SubsetRule(list(sources or []), list(id_contains or []))
    synth = synth_manifest(spec)
    if synth:
        root = Path(spec)
        return load_vision_r1(
            root / synth["files"]["train"], root / synth["files"]["image_root"], subset, strict
        )
    path = Path(spec)
    if path.is_file() and path.suffix in (".json", ".jsonl"):
        if is_easyr1_file(path):
            return load_easyr1(path, image_root, strict)
        return load_vision_r1(path, image_root, subset, strict)
    found = preset(spec)
    if found and found.get("format") == "easyr1":
        # One file, or several pooled (``parts``: each its own path and image folder).
        meaning = "the folder the data was downloaded to (see the preset's comment)"
        results = []
        for part in found.get("parts") or [found]:
            part = {**part, "_preset": found["_preset"]}
            path, images = _preset_value(part, "path", meaning), _preset_value(part, "image_root", meaning)
            results.append(load_easyr1(path, image_root or images or None, strict))
        if len(results) == 1:
            return results[0]
        examples = [e for r in results for e in r.examples]
        return LoadResult(examples, ValidationReport.combined(found["_preset"], [r.report for r in results]))
    if found:
        dataset_dir, files = _preset_files(found)
        rule = SubsetRule(
            list(sources or found.get("sources") or []), list(id_contains or found.get("id_contains") or [])
        )
        results = [load_vision_r1(f, image_root or dataset_dir, rule, strict, image_dir=d) for f, d in files]
        examples = [e for r in results for e in r.examples]
        return LoadResult(examples, ValidationReport.combined(found["_preset"], [r.report for r in results]))
    if path.exists():
        raise DataError(
            path, None, None, "not training data: expected a synth directory or a Vision-R1 JSON file"
        )
    raise DataError(
        spec, None, None, f"no such file, directory or data preset (presets: {', '.join(preset_names())})"
    )


@dataclass(frozen=True)
class TestTask:
    """An evaluation task: its row schema, where lmms-eval's copy is on the hub (None: local
    data only), where that copy used to be, and the split scored."""

    schema: str
    hub_id: str | None
    former_hub_id: str | None
    split: str = "test"
    config: str | None = None  # the hub data set's configuration


# lmms-eval moved its copies from lmms-lab to lmms-lab-encoder ("migrate dataset paths to new
# orgs"); its own task files (tasks/scienceqa/scienceqa_img.yaml, tasks/iconqa/) read the new place.
TEST_TASKS = {
    "scienceqa": TestTask("scienceqa", "lmms-lab-encoder/ScienceQA", "lmms-lab/ScienceQA"),
    "iconqa": TestTask("iconqa", "lmms-lab-encoder/ICON-QA", "lmms-lab/ICON-QA"),
    "synthetic-scienceqa": TestTask("scienceqa", None, None),
    "synthetic-iconqa": TestTask("iconqa", None, None),
    # The staged curriculum's suite (scale_repro.data.benchmarks): the schema is the benchmark's name.
    **{
        name: TestTask(name, bench.hub_id, None, bench.split, bench.config)
        for name, bench in BENCHMARKS.items()
    },
}


def open_test_set(task: str, data: str | None = None, split: str | None = None, hub_id: str | None = None):
    """The rows an evaluation task scores, and where they came from (for messages)."""
    if task not in TEST_TASKS:
        raise DataError("--task", None, None, f"unknown task {task!r}; choose from {', '.join(TEST_TASKS)}")
    spec = TEST_TASKS[task]
    source = data or hub_id or spec.hub_id
    if source is None:
        raise DataError(
            "--data", None, None, f"task {task} needs --data DIR (a directory written by `scale data synth`)"
        )
    synth = synth_manifest(source)
    if synth:
        source = str(Path(source) / synth["files"][spec.schema])
    config = "ScienceQA-IMG" if spec.schema == "scienceqa" else spec.config
    former = (
        spec.former_hub_id if source == spec.hub_id else spec.hub_id if source == spec.former_hub_id else None
    )
    return open_dataset(source, split or spec.split, config=config, other_place=former), str(source)


def load_test_examples(
    task: str,
    data: str | None = None,
    split: str | None = None,
    strict: bool = False,
    hub_id: str | None = None,
) -> LoadResult:
    """Test examples for an evaluation task; ``data`` (a local copy) or ``hub_id`` overrides
    where they come from."""
    dataset, source = open_test_set(task, data, split, hub_id)
    schema = TEST_TASKS[task].schema
    if schema == "scienceqa":
        return scienceqa_examples(dataset, source, strict=strict)
    if schema == "iconqa":
        return iconqa_examples(dataset, source, strict=strict)
    examples = benchmark_examples(schema, dataset, source)  # a bad row stops: rows are scored by index
    report = ValidationReport(path=source, total=len(dataset), selected=len(dataset))
    report.valid = len(examples)
    return LoadResult(examples, report)


def _schema_of(dataset) -> str | None:
    columns = set(dataset.column_names)
    if {"ques_type", "query_image"} <= columns:
        return "iconqa"
    if {"image", "choices", "answer"} <= columns:
        return "scienceqa"
    return None


def validate_spec(
    spec: str,
    image_root: str | None = None,
    split: str | None = None,
    data_format: str | None = None,
    hub_id: str | None = None,
) -> list[LoadResult]:
    """Load whatever ``spec`` names and report on every record: a preset, a Vision-R1 file,
    a `scale data synth` directory (its train file and both test sets), a ``save_to_disk``
    copy of ScienceQA-IMG or ICON-QA (told apart by their columns), or a task name
    (``scienceqa``, ``iconqa``) for the hub copy."""
    if data_format == "vision-r1":
        return [load_vision_r1(spec, image_root)]
    if data_format in ("scienceqa", "iconqa"):
        dataset = open_dataset(spec, split or "test")
        examples = scienceqa_examples if data_format == "scienceqa" else iconqa_examples
        return [examples(dataset, spec)]
    if data_format is not None:
        raise DataError(
            "--format", None, None, f"unknown format {data_format!r}; choose vision-r1, scienceqa or iconqa"
        )
    synth = synth_manifest(spec)
    if synth:
        return [
            load_training_examples(spec),
            load_test_examples("synthetic-scienceqa", spec, split),
            load_test_examples("synthetic-iconqa", spec, split),
        ]
    if spec in TEST_TASKS and TEST_TASKS[spec].hub_id:
        return [load_test_examples(spec, split=split, hub_id=hub_id)]
    path = Path(spec)
    if path.is_dir():
        dataset = open_dataset(path, split or "test")
        schema = _schema_of(dataset)
        if schema is None:
            raise DataError(
                path, None, None, f"columns {dataset.column_names} are neither ScienceQA-IMG's nor ICON-QA's"
            )
        examples = scienceqa_examples if schema == "scienceqa" else iconqa_examples
        return [examples(dataset, str(path))]
    return [load_training_examples(spec, image_root=image_root)]
