"""Trainer checkpoints that are safe to resume from.

Two things the Trainer does not guarantee, and a resumed run depends on:

- **Completeness.** A process killed while saving leaves ``checkpoint-N/`` half written, and
  the Trainer's own "last checkpoint" picks it and fails for good. ``trainer_state.json`` is
  the last file the Trainer writes into a checkpoint, after the weights, optimizer,
  scheduler and RNG states, so a checkpoint is complete when that file parses and the
  weights and optimizer are there. Resuming picks the newest complete one.
- **Every tensor loaded.** transformers saves full checkpoints in the architectures'
  original key layout (``language_model.model.*``) but the Trainer loads them back with a
  plain ``load_state_dict`` into the renamed modules (``model.language_model.*``): nothing
  matches, it warns, and training goes on from the base weights. :func:`load_full_state`
  applies the model's own key conversion and refuses a checkpoint that does not cover the
  whole model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"
FULL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
ADAPTER_WEIGHTS = ("adapter_model.safetensors",)
OPTIMIZER = "optimizer.pt"


class ResumeError(RuntimeError):
    """A checkpoint that cannot be resumed from without losing trained weights."""


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    step: int
    max_steps: int | None
    problem: str | None  # None: complete

    @property
    def complete(self) -> bool:
        return self.problem is None


def _safetensors_readable(path: Path) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception:  # noqa: BLE001 - any failure to read the header means a broken file
        return False
    return True


def inspect_checkpoint(path: Path) -> CheckpointInfo:
    """Whether ``path`` holds everything a resume needs, and if not, what is missing."""
    match = CHECKPOINT_PATTERN.match(path.name)
    step = int(match.group(1)) if match else -1
    try:
        state = json.loads((path / TRAINER_STATE).read_text())
    except FileNotFoundError:
        return CheckpointInfo(path, step, None, f"no {TRAINER_STATE} (saving was interrupted)")
    except (OSError, json.JSONDecodeError) as exc:
        return CheckpointInfo(path, step, None, f"{TRAINER_STATE} unreadable ({exc})")
    max_steps = state.get("max_steps")
    weights = [path / name for name in (*FULL_WEIGHTS, *ADAPTER_WEIGHTS) if (path / name).is_file()]
    if not weights:
        return CheckpointInfo(path, step, max_steps, "no model or adapter weights")
    for file in weights:
        if file.suffix == ".safetensors" and not _safetensors_readable(file):
            return CheckpointInfo(path, step, max_steps, f"{file.name} is truncated or unreadable")
    deepspeed_state = (path / "latest").is_file()
    if not (path / OPTIMIZER).is_file() and not deepspeed_state:
        return CheckpointInfo(
            path, step, max_steps, f"no {OPTIMIZER}: resuming would restart the optimizer from scratch"
        )
    return CheckpointInfo(path, step, max_steps, None)


def list_checkpoints(folder: Path) -> list[CheckpointInfo]:
    """Every ``checkpoint-N`` below ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = [
        inspect_checkpoint(p) for p in folder.iterdir() if p.is_dir() and CHECKPOINT_PATTERN.match(p.name)
    ]
    return sorted(found, key=lambda c: c.step)


def newest_complete(folder: Path) -> tuple[CheckpointInfo | None, list[CheckpointInfo]]:
    """The newest complete checkpoint, and the incomplete ones newer than it."""
    checkpoints = list_checkpoints(folder)
    broken: list[CheckpointInfo] = []
    for info in reversed(checkpoints):
        if info.complete:
            return info, list(reversed(broken))
        broken.append(info)
    return None, list(reversed(broken))


def _tied_to_loaded(model, missing: set[str], loaded: set[str]) -> set[str]:
    """Missing keys whose parameter is the same tensor as a loaded one (tied embeddings)."""
    state = model.state_dict(keep_vars=True)
    loaded_storage = {state[name].data_ptr() for name in loaded if name in state}
    return {name for name in missing if state[name].data_ptr() in loaded_storage}


def renamed_state_dict(model, state_dict: dict[str, Any]) -> dict[str, Any]:
    """Checkpoint keys in the layout of the live model, by the model's own conversion rules
    (the inverse of what ``save_pretrained`` applied)."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    own = set(model.state_dict())
    if set(state_dict) <= own:
        return state_dict
    conversions = get_model_conversion_mapping(model)
    renamings = [c for c in conversions if isinstance(c, WeightRenaming)]
    converters = [c for c in conversions if isinstance(c, WeightConverter)]
    meta = dict.fromkeys(own)
    renamed = {}
    for key, tensor in state_dict.items():
        new_key, converter = rename_source_key(key, renamings, converters, model.base_model_prefix, meta)
        if converter is not None:
            raise ResumeError(
                f"checkpoint key {key!r} needs a tensor conversion ({converter}); resume supports renamed keys only"
            )
        renamed[new_key] = tensor
    return renamed


def load_full_state(model, checkpoint: str | Path) -> int:
    """Load a full (non-LoRA) checkpoint into ``model``; every tensor of the model must be set.

    Returns the number of tensors loaded. Raises :class:`ResumeError` naming the first
    missing and unexpected keys otherwise: a partial resume must stop, never warn and go on.
    """
    from safetensors.torch import load_file

    checkpoint = Path(checkpoint)
    index = checkpoint / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    state_dict: dict[str, Any] = {}
    for name in files:
        state_dict.update(load_file(str(checkpoint / name), device="cpu"))
    state_dict = renamed_state_dict(model, state_dict)
    result = model.load_state_dict(state_dict, strict=False)
    missing = set(result.missing_keys) - _tied_to_loaded(model, set(result.missing_keys), set(state_dict))
    unexpected = set(result.unexpected_keys)
    if missing or unexpected:
        raise ResumeError(
            f"{checkpoint}: the checkpoint does not match the model ({len(missing)} tensors missing, e.g. "
            f"{sorted(missing)[:3]}; {len(unexpected)} unexpected, e.g. {sorted(unexpected)[:3]}); "
            "refusing to resume from partly loaded weights"
        )
    return len(state_dict)
