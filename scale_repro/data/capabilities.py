"""Synthetic data for each capability of the staged curriculum, in the synthetic grid world.

Written as EasyR1 records (``{"id", "problem", "images", "answer", "description", "kind"}``),
the format the released curriculum data uses and :func:`scale_repro.data.loaders.load_easyr1`
reads, one JSON-lines file per capability:

- ``perception.jsonl``: what is in the image (the colour or shape in a named cell), multiple
  choice, answer a letter: seeing, no reasoning;
- ``text_reasoning.jsonl``: counting and comparing over a scene *described in words*, no image:
  reasoning, no seeing;
- ``visual_reasoning.jsonl``: the same counting and comparing about the image: both;
- ``merged.jsonl``: the three pooled (the merged baseline's data);
- ``perception_captions.json``: the perception questions as SFT data in the Vision-R1 shape,
  the caption (the scene in words) as the trace and the letter as the answer: the paper's
  "caption SFT instead of RL for perception" ablation.

Every record carries ``description``, the scene in words, so the perception filter can ask a
model the same question from the description instead of the image. Scenes of the three files
are disjoint, and none occurs in the evaluation sets of ``scale data synth`` with the same seed
(they are drawn after them from the same generator). Deterministic for a seed.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scale_repro.data.records import format_question, tagged_completion
from scale_repro.data.synth import (
    SHAPES,
    Question,
    Scene,
    SynthConfig,
    draw_scene,
    generate_items,
    make_question,
    random_scene,
)
from scale_repro.runs.rundir import atomic_write_json, atomic_write_text, publishing

CAPABILITY_KIND = "scale-capabilities"
CAPABILITIES = {
    "perception": ("color_at", "shape_at"),
    "text_reasoning": ("count_color", "count_shape", "compare"),
    "visual_reasoning": ("count_color", "count_shape", "compare"),
}


@dataclass(frozen=True)
class CapabilityConfig:
    seed: int = 0
    n_per_capability: int = 128
    image_size: int = 64
    grid: int = 3
    shapes: tuple[str, ...] = SHAPES
    shaded_cells: bool = False  # each cell on a grey of its own, as SynthConfig.shaded_cells
    shuffle_choices: bool = True  # as SynthConfig.shuffle_choices
    # Held-out evaluation scenes of `scale data synth` with this seed are never used here...
    n_test_reserved: int = 64
    # ...drawn with these SynthConfig settings (the evaluation data's own, so that the very
    # scenes it holds are reserved; its n_test replaces n_test_reserved).
    reserve_like: dict[str, Any] = field(default_factory=dict)

    def evaluation_world(self) -> SynthConfig:
        """The settings of the `scale data synth` data whose test scenes are reserved."""
        values = {
            "seed": self.seed,
            "n_test": self.n_test_reserved,
            "grid": self.grid,
            "shapes": self.shapes,
            **self.reserve_like,
            "n_train": 0,
        }
        return SynthConfig.from_values(values)


def describe_scene(scene: Scene) -> str:
    """The scene in words, cell by cell (what a caption would say)."""
    parts = []
    for cell in scene.cells:
        parts.append(f"{cell.name}: {cell.color} {cell.shape}" if cell.shape else f"{cell.name}: empty")
    return f"A {scene.grid}x{scene.grid} grid. " + "; ".join(parts) + "."


def _problem(question: Question, with_image: bool, scene: Scene) -> str:
    text = format_question(question.text, list(question.choices) if question.choices else None)
    if with_image:
        return "<image>" + text
    return f"{describe_scene(scene)}\n{text.replace('in the picture', 'in the grid')}"


def write_capability_data(out_dir: str | Path, config: CapabilityConfig = CapabilityConfig()) -> Path:
    """Write the three capability files (and images) to ``out_dir``, replaced atomically."""
    out = Path(out_dir)
    with publishing(out) as staging:
        _write_capabilities(staging, config)
    return out


def _write_capabilities(staging: Path, config: CapabilityConfig) -> None:
    (staging / "images").mkdir(parents=True)
    # Draw the evaluation scenes of `scale data synth` first, so none is reused here.
    reserved = generate_items(config.evaluation_world())
    seen = {scene.signature() for split in ("scienceqa", "iconqa") for scene, _ in reserved[split]}
    rng = random.Random(f"capabilities-{config.seed}")
    counts = {}
    captions: list[dict[str, Any]] = []
    for capability, kinds in CAPABILITIES.items():
        records: list[dict[str, Any]] = []
        for i in range(config.n_per_capability):
            scene = random_scene(rng, config.grid, tuple(config.shapes))
            while scene.signature() in seen:
                scene = random_scene(rng, config.grid, tuple(config.shapes))
            seen.add(scene.signature())
            question = make_question(scene, kinds[i % len(kinds)], rng, config.shuffle_choices)
            with_image = capability != "text_reasoning"
            images = []
            if with_image:
                name = f"images/{capability}_{i:05d}.png"
                draw_scene(scene, config.image_size, config.shaded_cells).save(staging / name)
                images = [name]
            records.append(
                {
                    "id": f"{capability}-{i:05d}",
                    "problem": _problem(question, with_image, scene),
                    "images": images,
                    "answer": question.answer,
                    "description": describe_scene(scene),
                    "kind": question.kind,
                    "capability": capability,
                }
            )
            if capability == "perception":
                captions.append(
                    {
                        "id": f"caption-{i:05d}",
                        "image": images[0],
                        "conversations": [
                            {
                                "from": "human",
                                "value": "<image>\n" + format_question(question.text, list(question.choices)),
                            },
                            {
                                "from": "gpt",
                                "value": tagged_completion(describe_scene(scene), question.answer),
                            },
                        ],
                    }
                )
        text = "".join(json.dumps(r) + "\n" for r in records)
        atomic_write_text(staging / f"{capability}.jsonl", text)
        counts[capability] = len(records)
    # The merged baseline pools all three, interleaved (GRPO shuffles them anyway).
    pooled = [(staging / f"{name}.jsonl").read_text().splitlines() for name in CAPABILITIES]
    merged = [line for group in zip(*pooled, strict=True) for line in group]
    atomic_write_text(staging / "merged.jsonl", "".join(line + "\n" for line in merged))
    counts["merged"] = len(merged)
    atomic_write_text(staging / "perception_captions.json", json.dumps(captions, indent=1) + "\n")
    counts["perception_captions"] = len(captions)
    files = {name: f"{name}.jsonl" for name in [*CAPABILITIES, "merged"]}
    files["perception_captions"] = "perception_captions.json"
    atomic_write_json(
        staging / "manifest.json",
        {"kind": CAPABILITY_KIND, "config": asdict(config), "files": files, "counts": counts},
    )
