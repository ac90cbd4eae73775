import json

import datasets
import numpy as np
from PIL import Image

from scale_repro.data.loaders import iconqa_examples, load_vision_r1, scienceqa_examples
from scale_repro.data.synth import COLORS, SynthConfig, generate_items, reasoning_trace, write_synthetic
from scale_repro.method.answers import LETTERS


def scene_from_pixels(image: Image.Image, grid: int = 3):
    """Read each cell's colour back from the rendered pixels (independently of the generator)."""
    pixels = np.asarray(image.convert("RGB"))
    step = pixels.shape[0] / grid
    cells = {}
    for row in range(grid):
        for col in range(grid):
            y, x = int((row + 0.6) * step), int((col + 0.5) * step)  # below centre: triangles are wide there
            colour = tuple(int(v) for v in pixels[y, x])
            cells[(row, col)] = next((name for name, rgb in COLORS.items() if rgb == colour), None)
    return cells


def test_answers_are_right_by_construction_checked_from_pixels(synth_dir):
    rows = json.loads((synth_dir / "train.json").read_text())
    checked = 0
    for row in rows:
        if row["question_kind"] != "count_color":
            continue
        colours = scene_from_pixels(Image.open(synth_dir / row["image"]))
        expected = sum(c == row["target"]["color"] for c in colours.values())
        answer = row["conversations"][1]["value"].split("<answer>")[1].split("</answer>")[0]
        assert answer == str(expected)
        checked += 1
    assert checked >= 4

    sqa = datasets.load_from_disk(str(synth_dir / "scienceqa_test"))["test"]
    for row in sqa:
        if row["topic"] == "color_at":
            target = json.loads(row["target"])
            colour = scene_from_pixels(row["image"])[(target["row"], target["col"])]
            assert row["choices"][row["answer"]] == colour


def test_splits_do_not_overlap(synth_dir):
    train = {
        json.dumps(r["scene"], sort_keys=True) for r in json.loads((synth_dir / "train.json").read_text())
    }
    sqa = {
        json.dumps(json.loads(s), sort_keys=True)
        for s in datasets.load_from_disk(str(synth_dir / "scienceqa_test"))["test"]["scene"]
    }
    icon = {
        json.dumps(json.loads(s), sort_keys=True)
        for s in datasets.load_from_disk(str(synth_dir / "iconqa_test"))["test"]["scene"]
    }
    assert not train & sqa and not train & icon and not sqa & icon


def test_round_trip_synth_save_load_validate(synth_dir):
    train = load_vision_r1(synth_dir / "train.json")
    assert train.report.valid == train.report.total == 24 and not train.report.rejected
    sqa = scienceqa_examples(datasets.load_from_disk(str(synth_dir / "scienceqa_test"))["test"], "sqa")
    icon = iconqa_examples(datasets.load_from_disk(str(synth_dir / "iconqa_test"))["test"], "icon")
    assert sqa.report.valid == 9 and icon.report.valid == 9
    assert all(e.answer in LETTERS for e in sqa.examples)
    assert {e.source for e in icon.examples} == {"iconqa:fill_in_blank", "iconqa:choose_txt"}


def test_deterministic_for_a_seed(tmp_path):
    a = write_synthetic(tmp_path / "a", SynthConfig(seed=3, n_train=5, n_test=3))
    b = write_synthetic(tmp_path / "b", SynthConfig(seed=3, n_train=5, n_test=3))
    c = write_synthetic(tmp_path / "c", SynthConfig(seed=4, n_train=5, n_test=3))
    assert (a / "train.json").read_text() == (b / "train.json").read_text()
    assert (a / "train.json").read_text() != (c / "train.json").read_text()
    assert (a / "images" / "train_00000.png").read_bytes() == (b / "images" / "train_00000.png").read_bytes()


def test_reasoning_ratio_controls_trace_length():
    items = generate_items(SynthConfig(seed=1, n_train=20, n_test=0))["train"]
    lengths = {}
    for ratio in (5, 20, 80):
        lengths[ratio] = np.mean(
            [len(reasoning_trace(s, q, ratio).split()) / len(q.answer.split()) for s, q in items]
        )
    assert lengths[5] < lengths[20] < lengths[80]
    assert abs(lengths[80] - 80) < 15


def test_small_grid_with_fixed_choices_is_right_from_pixels(tmp_path):
    config = SynthConfig(
        seed=2,
        n_train=60,
        n_test=16,
        grid=2,
        shapes=("square",),
        shuffle_choices=False,
        train_kinds=("color_at", "count_color"),
        iconqa_kinds=("color_at", "count_color"),
    )
    out = write_synthetic(tmp_path / "small", config)
    icon = datasets.load_from_disk(str(out / "iconqa_test"))["test"]
    assert sorted(set(icon["ques_type"])) == ["choose_txt", "fill_in_blank"]
    for row in icon:
        colours = scene_from_pixels(row["query_image"], grid=2)
        target = json.loads(row["target"])
        if row["ques_type"] == "choose_txt":
            assert row["choices"] == ",".join(COLORS)  # one fixed order
            assert row["answer"] == colours[(target["row"], target["col"])]
        else:
            assert row["answer"] == str(sum(c == target["color"] for c in colours.values()))
        assert "middle" not in row["question"] and "centre" not in row["question"]
    train = json.loads((out / "train.json").read_text())
    test_scenes = {json.dumps(json.loads(s), sort_keys=True) for s in icon["scene"]}
    sqa = datasets.load_from_disk(str(out / "scienceqa_test"))["test"]
    test_scenes |= {json.dumps(json.loads(s), sort_keys=True) for s in sqa["scene"]}
    assert len(test_scenes) == 32  # every test scene is different
    assert not {json.dumps(r["scene"], sort_keys=True) for r in train} & test_scenes
    for row in train:
        assert all(c["shape"] in (None, "square") for c in row["scene"]["cells"])
        if row["question_kind"] == "color_at":
            answer = row["conversations"][1]["value"].split("<answer>")[1].split("</answer>")[0]
            cell = row["scene"]["cells"][row["target"]["row"] * 2 + row["target"]["col"]]
            assert answer == LETTERS[list(COLORS).index(cell["color"])]


def test_unsupported_grid_or_shape_is_a_clear_error():
    import pytest

    with pytest.raises(ValueError, match=r"grid 4 not supported; choose from \[2, 3\]"):
        generate_items(SynthConfig(grid=4, n_train=1, n_test=1))
    with pytest.raises(ValueError, match=r"shapes \['hexagon'\]"):
        generate_items(SynthConfig(shapes=("hexagon",), n_train=1, n_test=1))
