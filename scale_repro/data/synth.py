"""Synthetic visual-reasoning data in the real data sets' schemas.

Each image is a grid of cells, some holding a coloured shape. Every question is about what
is in the image (counts, colours, positions), so its answer cannot be guessed from the
text. The reasoning trace walks through the image cell by cell and is many times longer
than the answer (``reasoning_ratio``, in words), like the Vision-R1 traces the paper trains on.

Written to a directory:
- ``train.json`` + ``images/``: training set in the Vision-R1 sharegpt shape;
- ``scienceqa_test/``: multiple-choice test set in lmms-lab/ScienceQA (ScienceQA-IMG) columns;
- ``iconqa_test/``: fill-in-the-blank and choose-text test set in lmms-lab/ICON-QA columns;
  both saved with ``save_to_disk`` as a DatasetDict with a ``test`` split, as the hub sets have;
- ``manifest.json``: how it was made.
Test scenes never occur in training. Everything is deterministic for a seed.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from scale_repro.data.records import format_question, tagged_completion
from scale_repro.method.answers import LETTERS
from scale_repro.runs.rundir import atomic_write_json, atomic_write_text, publishing

COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30)}
SHAPES = ("circle", "square", "triangle")
# Row and column names for each grid size the generator supports.
ROWS = {2: ("top", "bottom"), 3: ("top", "middle", "bottom")}
COLUMNS = {2: ("left", "right"), 3: ("left", "centre", "right")}
BACKGROUND = (255, 255, 255)
SYNTH_KIND = "scale-synth"


@dataclass(frozen=True)
class Cell:
    row: int
    col: int
    shape: str | None = None
    color: str | None = None
    grid: int = 3

    @property
    def name(self) -> str:
        return f"{ROWS[self.grid][self.row]} {COLUMNS[self.grid][self.col]}"


@dataclass(frozen=True)
class Scene:
    grid: int
    cells: tuple[Cell, ...]

    def signature(self) -> str:
        return "|".join(f"{c.shape or '-'}:{c.color or '-'}" for c in self.cells)

    def occupied(self) -> list[Cell]:
        return [c for c in self.cells if c.shape]


@dataclass(frozen=True)
class Question:
    kind: str  # count_color | count_shape | color_at | shape_at | compare
    text: str
    answer: str  # letter for multiple choice, else the text
    choices: tuple[str, ...] | None
    target: dict[str, Any]


def cell_shade(row: int, col: int, grid: int) -> tuple[int, int, int]:
    """A grey, one per cell position, lightest at the top left: the picture then tells each
    patch where it is, as a real photograph's content does (a tiny vision tower cannot learn
    it from the grid alone). Greys never clash with the saturated shape colours."""
    level = 250 - round(100 * (row * grid + col) / (grid * grid - 1))
    return (level, level, level)


def draw_scene(scene: Scene, size: int, shaded_cells: bool = False) -> Image.Image:
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    step = size / scene.grid
    if shaded_cells:
        for cell in scene.cells:
            box = (cell.col * step, cell.row * step, (cell.col + 1) * step - 1, (cell.row + 1) * step - 1)
            draw.rectangle(box, fill=cell_shade(cell.row, cell.col, scene.grid))
    pad = step * 0.18
    for cell in scene.occupied():
        x0, y0 = cell.col * step + pad, cell.row * step + pad
        x1, y1 = (cell.col + 1) * step - pad, (cell.row + 1) * step - pad
        fill = COLORS[cell.color]
        if cell.shape == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif cell.shape == "square":
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        else:
            draw.polygon(((x0 + x1) / 2, y0, x1, y1, x0, y1), fill=fill)
    return image


def random_scene(rng: random.Random, grid: int = 3, shapes: tuple[str, ...] = SHAPES) -> Scene:
    cells = []
    n_cells = grid * grid
    # Small grids may be anywhere from one object to full; larger ones keep two cells free.
    n_objects = rng.randint(1, n_cells) if grid == 2 else rng.randint(2, n_cells - 2)
    filled = set(rng.sample(range(n_cells), n_objects))
    for index in range(n_cells):
        row, col = divmod(index, grid)
        if index in filled:
            cells.append(Cell(row, col, rng.choice(shapes), rng.choice(list(COLORS)), grid))
        else:
            cells.append(Cell(row, col, grid=grid))
    return Scene(grid, tuple(cells))


def _plural(shape: str) -> str:
    return shape + "s"


def make_question(scene: Scene, kind: str, rng: random.Random, shuffle_choices: bool = True) -> Question:
    occupied = scene.occupied()
    if kind == "count_color":
        color = rng.choice(list(COLORS))
        n = sum(c.color == color for c in occupied)
        return Question(kind, f"How many {color} shapes are in the picture?", str(n), None, {"color": color})
    if kind == "count_shape":
        shape = rng.choice(SHAPES)
        n = sum(c.shape == shape for c in occupied)
        return Question(
            kind, f"How many {_plural(shape)} are in the picture?", str(n), None, {"shape": shape}
        )
    if kind == "color_at":
        cell = rng.choice(occupied)
        choices = list(COLORS)
        if shuffle_choices:
            rng.shuffle(choices)
        letter = LETTERS[choices.index(cell.color)]
        text = f"What colour is the shape in the {cell.name} cell?"
        return Question(kind, text, letter, tuple(choices), {"row": cell.row, "col": cell.col})
    if kind == "shape_at":
        cell = rng.choice(occupied)
        choices = list(SHAPES)
        if shuffle_choices:
            rng.shuffle(choices)
        letter = LETTERS[choices.index(cell.shape)]
        text = f"Which shape is in the {cell.name} cell?"
        return Question(kind, text, letter, tuple(choices), {"row": cell.row, "col": cell.col})
    if kind == "compare":
        a, b = rng.sample(list(COLORS), 2)
        more = sum(c.color == a for c in occupied) > sum(c.color == b for c in occupied)
        choices = ("yes", "no")
        text = f"Are there more {a} shapes than {b} shapes?"
        return Question(kind, text, LETTERS[0 if more else 1], choices, {"first": a, "second": b})
    raise ValueError(f"unknown question kind {kind!r}")


def answer_from_scene(scene: Scene, question: Question) -> str:
    """The answer recomputed from the scene alone (used to check the generator)."""
    occupied = scene.occupied()
    t = question.target
    if question.kind == "count_color":
        return str(sum(c.color == t["color"] for c in occupied))
    if question.kind == "count_shape":
        return str(sum(c.shape == t["shape"] for c in occupied))
    cell = next((c for c in scene.cells if (c.row, c.col) == (t.get("row"), t.get("col"))), None)
    if question.kind == "color_at":
        return LETTERS[question.choices.index(cell.color)]
    if question.kind == "shape_at":
        return LETTERS[question.choices.index(cell.shape)]
    more = sum(c.color == t["first"] for c in occupied) > sum(c.color == t["second"] for c in occupied)
    return "A" if more else "B"


def _cell_sentence(cell: Scene | Cell, question: Question, running: dict[str, int]) -> str:
    if not cell.shape:
        return f"The {cell.name} cell is empty."
    base = f"The {cell.name} cell holds a {cell.color} {cell.shape}."
    t = question.target
    if question.kind == "count_color":
        if cell.color == t["color"]:
            running["n"] += 1
            return f"{base} It is {t['color']}, so the {t['color']} count becomes {running['n']}."
        return f"{base} It is not {t['color']}, so the count stays {running['n']}."
    if question.kind == "count_shape":
        if cell.shape == t["shape"]:
            running["n"] += 1
            return f"{base} It is a {t['shape']}, so the {t['shape']} count becomes {running['n']}."
        return f"{base} It is not a {t['shape']}, so the count stays {running['n']}."
    if question.kind == "compare":
        for key in ("first", "second"):
            if cell.color == t[key]:
                running[key] = running.get(key, 0) + 1
                return f"{base} That adds one {t[key]} shape, making {running[key]}."
        return f"{base} It is neither {t['first']} nor {t['second']}."
    if (cell.row, cell.col) == (t["row"], t["col"]):
        return f"{base} This is the cell the question asks about."
    return base


def _summary(scene: Scene, question: Question) -> str:
    """The one observation the answer rests on."""
    occupied, t = scene.occupied(), question.target

    def where(cells: list[Cell]) -> str:
        return ", ".join(c.name for c in cells)

    if question.kind in ("count_color", "count_shape"):
        key, value = ("color", t["color"]) if question.kind == "count_color" else ("shape", t["shape"])
        matches = [c for c in occupied if getattr(c, key) == value]
        label = f"{value} shapes" if key == "color" else _plural(value)
        if not matches:
            return f"I see no {label} in any cell."
        return f"I see {label} in these cells: {where(matches)}. That is {len(matches)} in total."
    if question.kind == "compare":
        n_first = sum(c.color == t["first"] for c in occupied)
        n_second = sum(c.color == t["second"] for c in occupied)
        return f"I count {n_first} {t['first']} shapes and {n_second} {t['second']} shapes."
    cell = next(c for c in scene.cells if (c.row, c.col) == (t["row"], t["col"]))
    return f"The {cell.name} cell holds a {cell.color} {cell.shape}."


def reasoning_trace(scene: Scene, question: Question, ratio: float) -> str:
    """A trace about ``ratio`` times longer (in words) than the answer.

    The shortest trace is the conclusion alone, the next states the one observation the
    answer rests on; longer ones first
    walk through the grid cell by cell, then walk through it again as a check, and so on.
    The candidate closest to the asked-for length is kept.
    """
    target_words = ratio * max(1, len(question.answer.split()))
    choice_text = f" The options are {', '.join(question.choices)}." if question.choices else ""
    intro = f"I need to answer: {question.text}{choice_text} I will look at each cell of the grid in turn."
    ending = [_summary(scene, question), _conclusion(scene, question)]
    candidates = [ending[-1], " ".join(ending)]
    walks: list[str] = []
    for passes in range(8):
        running = {"n": 0}
        opener = "Going through the cells again to check." if passes else "Starting from the top left cell."
        steps = [opener] + [_cell_sentence(cell, question, running) for cell in scene.cells]
        # Walking part of the grid gives traces of every length between the full passes.
        for k in range(1, len(steps) + 1):
            candidates.append(" ".join([intro, *walks, *steps[:k], *ending]))
        walks.append(" ".join(steps))
        if len(candidates[-1].split()) >= target_words:
            break
    return min(candidates, key=lambda text: abs(len(text.split()) - target_words))


def _conclusion(scene: Scene, question: Question) -> str:
    answer = question.answer
    if question.choices:
        option = question.choices[LETTERS.index(answer)]
        return f"So the answer is {option}, which is option {answer}."
    return f"So the answer is {answer}."


@dataclass(frozen=True)
class SynthConfig:
    seed: int = 0
    n_train: int = 256
    n_test: int = 64
    image_size: int = 64
    grid: int = 3
    reasoning_ratio: float = 20.0
    train_kinds: tuple[str, ...] = ("count_color", "count_shape", "color_at", "shape_at", "compare")
    # Multiple-choice kinds for the ScienceQA-shaped test set; counts (fill in the blank)
    # and choose-text kinds for the ICON-QA-shaped one.
    scienceqa_kinds: tuple[str, ...] = ("color_at", "shape_at", "compare")
    iconqa_kinds: tuple[str, ...] = ("count_color", "count_shape", "shape_at")
    shapes: tuple[str, ...] = SHAPES
    # False keeps options in one fixed order, so a letter always means the same colour/shape.
    shuffle_choices: bool = True
    # Each cell's background a grey of its own (cell_shade), so where a shape is can be seen.
    shaded_cells: bool = False

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> SynthConfig:
        """From a mapping as YAML gives it: lists become the tuples the fields hold."""
        tuples = {f.name for f in fields(cls) if isinstance(f.default, tuple)}
        return cls(**{k: tuple(v) if k in tuples else v for k, v in values.items()})


def generate_items(config: SynthConfig) -> dict[str, list[tuple[Scene, Question]]]:
    """Scenes and questions for every split.

    Test scenes are drawn first, are all different, and never occur in training. Training
    scenes may repeat with other questions (one picture, several questions, as in the real
    data sets), which small grids with few colours need.
    """
    if config.grid not in ROWS:
        raise ValueError(f"grid {config.grid} not supported; choose from {sorted(ROWS)}")
    unknown = sorted(set(config.shapes) - set(SHAPES))
    if unknown or not config.shapes:
        raise ValueError(f"shapes {list(config.shapes)}: choose one or more of {list(SHAPES)}")
    rng = random.Random(config.seed)
    splits: dict[str, list[tuple[Scene, Question]]] = {"scienceqa": [], "iconqa": [], "train": []}
    test_scenes: set[str] = set()

    def draw_scene_for(split: str) -> Scene:
        for _ in range(10_000):
            scene = random_scene(rng, config.grid, config.shapes)
            if scene.signature() not in test_scenes:
                if split != "train":
                    test_scenes.add(scene.signature())
                return scene
        raise RuntimeError("could not draw enough distinct test scenes; lower n_test or enlarge the grid")

    plan = (
        ("scienceqa", config.n_test, config.scienceqa_kinds),
        ("iconqa", config.n_test, config.iconqa_kinds),
        ("train", config.n_train, config.train_kinds),
    )
    for split, n, kinds in plan:
        for i in range(n):
            scene = draw_scene_for(split)
            splits[split].append(
                (scene, make_question(scene, kinds[i % len(kinds)], rng, config.shuffle_choices))
            )
    return splits


def _scene_json(scene: Scene) -> dict[str, Any]:
    return {"grid": scene.grid, "cells": [asdict(c) for c in scene.cells]}


def scene_from_json(data: dict[str, Any]) -> Scene:
    return Scene(data["grid"], tuple(Cell(**c) for c in data["cells"]))


def write_synthetic(out_dir: str | Path, config: SynthConfig = SynthConfig()) -> Path:
    """Write the three splits and a manifest; replaces ``out_dir`` atomically."""
    out = Path(out_dir)
    with publishing(out) as staging:
        _write_splits(staging, config)
    return out


def _write_splits(staging: Path, config: SynthConfig) -> None:
    import datasets

    (staging / "images").mkdir(parents=True)
    splits = generate_items(config)

    train_records = []
    for i, (scene, q) in enumerate(splits["train"]):
        name = f"images/train_{i:05d}.png"
        draw_scene(scene, config.image_size, config.shaded_cells).save(staging / name)
        human = "<image>\n" + format_question(q.text, list(q.choices) if q.choices else None)
        train_records.append(
            {
                "id": f"synth-train-{i:05d}",
                "image": name,
                "conversations": [
                    {"from": "human", "value": human},
                    {
                        "from": "gpt",
                        "value": tagged_completion(
                            reasoning_trace(scene, q, config.reasoning_ratio), q.answer
                        ),
                    },
                ],
                "question_kind": q.kind,
                "scene": _scene_json(scene),
                "target": q.target,
                "choices": list(q.choices) if q.choices else None,
            }
        )
    atomic_write_text(staging / "train.json", json.dumps(train_records, indent=1) + "\n")

    sqa_rows: dict[str, list[Any]] = {k: [] for k in SCIENCEQA_COLUMNS}
    for i, (scene, q) in enumerate(splits["scienceqa"]):
        row = {
            "image": draw_scene(scene, config.image_size, config.shaded_cells),
            "question": q.text,
            "choices": list(q.choices),
            "answer": LETTERS.index(q.answer),
            "hint": "",
            "task": "closed choice",
            "grade": "grade3",
            "subject": "synthetic",
            "topic": q.kind,
            "category": "synthetic grids",
            "skill": q.kind,
            "lecture": "",
            "solution": reasoning_trace(scene, q, config.reasoning_ratio),
            "id": f"synth-sqa-{i:05d}",
            "scene": json.dumps(_scene_json(scene)),
            "target": json.dumps(q.target),
        }
        for key in sqa_rows:
            sqa_rows[key].append(row[key])
    sqa = datasets.Dataset.from_dict(sqa_rows, features=scienceqa_features())
    datasets.DatasetDict({"test": sqa}).save_to_disk(str(staging / "scienceqa_test"))

    icon_rows: dict[str, list[Any]] = {k: [] for k in ICONQA_COLUMNS}
    for i, (scene, q) in enumerate(splits["iconqa"]):
        if q.choices:  # choose_txt: the answer is the choice text, as in ICON-QA
            ques_type, answer, choices = "choose_txt", q.choices[LETTERS.index(q.answer)], ",".join(q.choices)
        else:
            ques_type, answer, choices = "fill_in_blank", q.answer, ""
        row = {
            "question_id": f"synth-icon-{i:05d}",
            "question": q.text,
            "choices": choices,
            "answer": answer,
            "ques_type": ques_type,
            "grade": "grade1",
            "label": q.kind,
            "query_image": draw_scene(scene, config.image_size, config.shaded_cells),
            "scene": json.dumps(_scene_json(scene)),
            "target": json.dumps(q.target),
        }
        for key in icon_rows:
            icon_rows[key].append(row[key])
    icon = datasets.Dataset.from_dict(icon_rows, features=iconqa_features())
    datasets.DatasetDict({"test": icon}).save_to_disk(str(staging / "iconqa_test"))

    manifest = {
        "kind": SYNTH_KIND,
        "config": asdict(config),
        "splits": {
            "train": len(train_records),
            "scienceqa_test": config.n_test,
            "iconqa_test": config.n_test,
        },
        "files": {
            "train": "train.json",
            "image_root": ".",
            "scienceqa": "scienceqa_test",
            "iconqa": "iconqa_test",
        },
    }
    atomic_write_json(staging / "manifest.json", manifest)


SCIENCEQA_COLUMNS = (
    "image",
    "question",
    "choices",
    "answer",
    "hint",
    "task",
    "grade",
    "subject",
    "topic",
    "category",
    "skill",
    "lecture",
    "solution",
    "id",
    "scene",
    "target",
)
ICONQA_COLUMNS = (
    "question_id",
    "question",
    "choices",
    "answer",
    "ques_type",
    "grade",
    "label",
    "query_image",
    "scene",
    "target",
)


def scienceqa_features():
    import datasets

    features = {k: datasets.Value("string") for k in SCIENCEQA_COLUMNS}
    features["image"] = datasets.Image()
    features["choices"] = datasets.Sequence(datasets.Value("string"))
    features["answer"] = datasets.Value("int64")
    return datasets.Features(features)


def iconqa_features():
    import datasets

    features = {k: datasets.Value("string") for k in ICONQA_COLUMNS}
    features["query_image"] = datasets.Image()
    return datasets.Features(features)


def tokenizer_corpus() -> list[str]:
    """Text the tiny tokenizers are trained on: the synthetic task's language, the prompt,
    the tags and plain digits and letters (anything else falls back to bytes)."""
    from scale_repro.data.records import INSTRUCTION

    config = SynthConfig(seed=12345, n_train=300, n_test=0)
    lines = [
        INSTRUCTION,
        "<think></think><answer></answer>",
        " ".join(LETTERS),
        " ".join(map(str, range(100))),
    ]
    for scene, q in generate_items(config)["train"]:
        lines.append(format_question(q.text, list(q.choices) if q.choices else None))
        lines.append(tagged_completion(reasoning_trace(scene, q, 40.0), q.answer))
    return lines
