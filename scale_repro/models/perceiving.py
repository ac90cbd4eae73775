"""Tiny bases that see: a tiny or small model after a perception stage, built once and cached.

The paper fine-tunes VLMs that already see; a random-init tiny model does not, so a
comparison of SFT losses from it measures nothing but its blindness. A perceiving base is a
model of ``tiny.py`` after one ordinary SFT stage (``scale sft``: TRL's SFTTrainer, full
fine-tuning, vision tower trainable) on synthetic perception questions ("what colour is the
shape in the top left cell?"), then scored by lmms-eval (``scale eval``) on held-out scenes.
``scale models build NAME`` (or the first experiment that names it) builds it with
:mod:`scale_repro.experiments.perception_base`. Its directory holds the merged checkpoint (loaded by
transformers, vLLM and lmms-eval as it is) and ``scale_tiny.json`` with the perception accuracy
it reached, which the evidence report quotes. Deterministic for a seed.

What shaped the recipe (measured, see README "Evidence"):
- the language model must find the cell the question names; the perception trace names it right
  before its colour ("The top left cell holds a red square. So the answer is red, ..."), as the
  reasoning traces do, so the lookup is local;
- the vision towers do not tell the high-resolution tiles apart, so each cell has a grey of its
  own (``SynthConfig.shaded_cells``), as positions in a photograph have content of their own;
- even so the tiny widths stop near 52 % (``tiny-llava-next-seeing`` fails its floor), while
  ``small-llava-next`` (twice as wide and deep) reaches 100 % on 200 held-out scenes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from scale_repro.data.synth import SynthConfig

PERCEIVING_BUILD_VERSION = 1
PERCEPTION_TASK = "synthetic-scienceqa"  # its test split holds the held-out perception questions


class PerceptionFloorError(RuntimeError):
    """The perception stage ended below the base's accuracy floor: the base does not see."""


@dataclass(frozen=True)
class PerceivingSpec:
    name: str
    tiny: str  # the tiny model the perception stage starts from
    data: SynthConfig  # perception questions; the scienceqa_test split is the held-out check
    settings: tuple[str, ...]  # the SFT stage's settings (key=value, as --set takes)
    min_accuracy: float  # below this on held-out scenes the build fails: the base does not see
    description: str = ""
    quick: str | None = "tiny-llava-next-seeing-quick"  # what --quick runs instead (plumbing only)


# The world the evidence reasons about: 2x2 grids, four colours, three shapes, shaded cells.
PERCEPTION_WORLD = SynthConfig(
    seed=0,
    n_train=40000,
    n_test=200,
    grid=2,
    reasoning_ratio=15.0,
    shaded_cells=True,
    train_kinds=("color_at",),
    scienceqa_kinds=("color_at",),
    iconqa_kinds=("count_color",),
    shuffle_choices=False,
)
# Every base's stage: vanilla loss, full fine-tuning with the vision tower trainable; each spec adds
# its learning rate and length.
_SFT = (
    "loss.mode=vanilla",
    "lora.enabled=false",
    "lora.freeze_vision=false",
    "per_device_train_batch_size=16",
    "warmup_steps=0.0",
    "logging_steps=100",
    "save_steps=500",
)

PERCEIVING_MODELS = {
    spec.name: spec
    for spec in (
        PerceivingSpec(
            "tiny-llava-next-seeing",
            "tiny-llava-next",
            PERCEPTION_WORLD,
            (*_SFT, "learning_rate=0.003", "max_steps=2500"),
            0.9,
            "tiny-llava-next after 2,500 steps of perception SFT (colour of a named cell)",
        ),
        PerceivingSpec(
            "small-llava-next-seeing",
            "small-llava-next",
            PERCEPTION_WORLD,
            (*_SFT, "learning_rate=0.001", "max_steps=3000"),
            0.9,
            "small-llava-next (tiny-llava-next twice as wide and deep) after 3,000 steps of perception SFT",
        ),
        # For tests and `--quick`: the same recipe for a few steps; it does not see.
        PerceivingSpec(
            "tiny-llava-next-seeing-quick",
            "tiny-llava-next",
            replace(PERCEPTION_WORLD, n_train=32, n_test=8),
            (*_SFT, "learning_rate=0.003", "max_steps=4", "per_device_train_batch_size=4", "logging_steps=1"),
            0.0,
            "the perceiving recipe for 4 steps (plumbing only: it does not see)",
            quick=None,
        ),
    )
}


def perceiving_record(path: str | Path) -> dict[str, Any] | None:
    """What ``scale_tiny.json`` of a perceiving base says (None for any other model)."""
    file = Path(path) / "scale_tiny.json"
    if not file.is_file():
        return None
    record = json.loads(file.read_text())
    return record if "perception" in record else None
