"""Model names: the paper's checkpoints by short name, tiny offline models, paths and run directories.

``resolve_model`` turns whatever a user passes to ``--model`` into something
``from_pretrained`` loads: a hub id, a local checkpoint directory, the merged weights of a
finished ``scale sft``/``scale grpo`` run, or a tiny model built on first use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from scale_repro.models.perceiving import PERCEIVING_BUILD_VERSION, PERCEIVING_MODELS
from scale_repro.models.tiny import TINY_BUILD_VERSION, TINY_MODELS, build_tiny
from scale_repro.runs.rundir import read_manifest

PAPER_MODELS = {
    "gemma-3-4b": "google/gemma-3-4b-it",
    "qwen2.5-vl-3b": "Qwen/Qwen2.5-VL-3B-Instruct",
    "llava-v1.6-mistral-7b": "llava-hf/llava-v1.6-mistral-7b-hf",
    # The staged curriculum's backbones, as VLM-CapCurriculum's training/_env.sh names them: the
    # transformers-native checkpoints (InternVL's "-hf"/"-HF"; no remote code).
    "qwen3-vl-8b": "Qwen/Qwen3-VL-8B-Instruct",
    "qwen2.5-vl-7b": "Qwen/Qwen2.5-VL-7B-Instruct",
    "internvl3-8b": "OpenGVLab/InternVL3-8B-hf",
    "internvl3.5-8b": "OpenGVLab/InternVL3_5-8B-HF",
}
MERGED_DIR = "merged"


@dataclass(frozen=True)
class ModelEntry:
    """One short model name, whatever table defines it."""

    name: str
    kind: str  # paper (a hub checkpoint) | tiny (random-init, built offline) | random (a paper model at
    # full size, random-init, built on a GPU) | perceiving (a tiny base that sees)
    description: str  # the checkpoint, or what it is built from
    trains_like: str  # whose recipe in configs/models/ it trains with


def catalogue() -> dict[str, ModelEntry]:
    """Every short name ``--model`` takes: the one list `scale models list` prints."""
    entries = [ModelEntry(name, "paper", hub_id, name) for name, hub_id in PAPER_MODELS.items()]
    for name, spec in TINY_MODELS.items():
        if spec.paper:  # the paper model at full size, random-init: trains with its recipe
            description = f"{spec.real_counterpart} at full size, random-init, no download (GPU only)"
            entries.append(ModelEntry(name, "random", description, name.removesuffix("-random")))
            continue
        description = f"random-init {spec.family}, {spec.geometry} image geometry (stands in for {spec.real_counterpart})"
        entries.append(ModelEntry(name, "tiny", description, name))
    for name, seeing in PERCEIVING_MODELS.items():
        # A tiny model after a perception stage trains like the tiny model it was built from.
        entries.append(
            ModelEntry(name, "perceiving", f"{seeing.description} (scale models build {name})", seeing.tiny)
        )
    return {entry.name: entry for entry in entries}


def cache_dir() -> Path:
    return Path(os.environ.get("SCALE_CACHE", Path.home() / ".cache" / "scale-repro"))


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # what the user asked for
    path: str  # what from_pretrained loads
    kind: str  # paper | tiny | hub | local | run


# What a local checkpoint needs beside its weights to be trained or evaluated.
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


class ModelNotFound(ValueError):
    pass


def tiny_model_path(name: str, seed: int = 0) -> Path:
    """The tiny model's directory, built on first use: once, when several processes ask at
    once (the others wait, then load it), and never replaced under a process loading it."""
    from scale_repro.runs.rundir import exclusive

    path = _tiny_path(name, seed)
    if not (path / "config.json").is_file():
        with exclusive(path.with_name(f".{path.name}.lock")):
            if not (path / "config.json").is_file():
                build_tiny(name, path, seed=seed)
    return path


def _tiny_path(name: str, seed: int) -> Path:
    return cache_dir() / "tiny" / f"{name}-seed{seed}-v{TINY_BUILD_VERSION}"


def perceiving_model_path(name: str, seed: int = 0) -> Path:
    """Where a tiny base that sees (:mod:`scale_repro.models.perceiving`) is cached."""
    return cache_dir() / "perceiving" / f"{name}-seed{seed}-v{TINY_BUILD_VERSION}.{PERCEIVING_BUILD_VERSION}"


def resolve_model(name: str, seed: int = 0) -> ResolvedModel:
    if name in PAPER_MODELS:
        return ResolvedModel(name, PAPER_MODELS[name], "paper")
    if name in TINY_MODELS:
        spec = TINY_MODELS[name]
        if spec.paper and not (_tiny_path(name, seed) / "config.json").is_file():
            import torch

            if not torch.cuda.is_available():
                raise ModelNotFound(
                    f"{name} is {spec.real_counterpart} at full size, random-init, built on a GPU: "
                    "no CUDA here; on a CPU use a tiny model (scale models list)"
                )
        return ResolvedModel(name, str(tiny_model_path(name, seed)), "random" if spec.paper else "tiny")
    if name in PERCEIVING_MODELS:
        path = perceiving_model_path(name, seed)
        if not (path / "config.json").is_file():
            # Building it trains and evaluates a model (minutes): an explicit step, never a side effect.
            raise ModelNotFound(
                f"{name} is not built yet: run `scale models build {name}` first (minutes of training)"
            )
        return ResolvedModel(name, str(path), "tiny")
    path = Path(name)
    if path.is_dir():
        manifest = read_manifest(path)
        if manifest and manifest.get("stage") in ("sft", "grpo"):
            if manifest.get("status") != "finished":
                raise ModelNotFound(
                    f"{path}: run directory has not finished (status: {manifest.get('status')})"
                )
            merged = path / MERGED_DIR
            if not (merged / "config.json").is_file():
                raise ModelNotFound(f"{path}: finished run has no merged checkpoint in {merged}")
            return ResolvedModel(name, str(merged), "run")
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"{path}: not a checkpoint directory (no config.json) nor a run directory")
        if not any((path / file).is_file() for file in PROCESSOR_FILES):
            raise ModelNotFound(
                f"{path}: no processor (processor_config.json / preprocessor_config.json) beside the weights"
            )
        return ResolvedModel(name, str(path), "local")
    if name.count("/") == 1 and not name.startswith((".", "/")):
        return ResolvedModel(name, name, "hub")
    raise ModelNotFound(
        f"unknown model {name!r}: use a short name ({', '.join([*PAPER_MODELS, *TINY_MODELS, *PERCEIVING_MODELS])}), "
        "a hub id (org/name), a checkpoint directory or a run directory"
    )
