"""The perceiving base: a tiny model after an SFT perception stage, checked by lmms-eval on
held-out scenes, cached, and refused when it does not see."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from scale_repro.data.synth import cell_shade, draw_scene, random_scene
from scale_repro.experiments.perception_base import build_perceiving, ensure_perceiving
from scale_repro.models import perceiving
from scale_repro.models.registry import ModelNotFound, perceiving_model_path, resolve_model

pytestmark = pytest.mark.slow


def test_quick_base_is_built_once_and_records_its_perception(isolated_cache):
    ensure_perceiving("tiny-llava-next-seeing-quick", echo=lambda *_: None)
    resolved = resolve_model("tiny-llava-next-seeing-quick")
    path = perceiving_model_path("tiny-llava-next-seeing-quick")
    assert resolved.path == str(path) and resolved.kind == "tiny"
    record = perceiving.perceiving_record(path)
    assert record["built_from"] == "tiny-llava-next"
    assert record["family"] == "llava_next"
    assert record["perception"]["task"] == "synthetic-scienceqa"
    assert record["perception"]["n"] == 8  # the held-out split of the quick world
    assert 0.0 <= record["perception"]["accuracy"] <= 1.0
    # The stage that made it is an ordinary finished SFT run from the tiny model.
    manifest = json.loads(
        (Path(record["perception"]["runs"]) / "perception-sft" / "manifest.json").read_text()
    )
    assert manifest["status"] == "finished" and manifest["global_step"] == 4
    assert manifest["config"]["lora"] == {
        **manifest["config"]["lora"],
        "enabled": False,
        "freeze_vision": False,
    }
    weights = path / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert resolve_model("tiny-llava-next-seeing-quick").path == str(path)
    assert weights.stat().st_mtime_ns == stamp  # cached, not rebuilt

    from transformers import AutoModelForImageTextToText

    assert (
        type(AutoModelForImageTextToText.from_pretrained(path)).__name__
        == "LlavaNextForConditionalGeneration"
    )


def test_a_base_below_its_accuracy_floor_is_refused_and_not_cached(isolated_cache, monkeypatch, tmp_path):
    spec = perceiving.PERCEIVING_MODELS["tiny-llava-next-seeing-quick"]
    monkeypatch.setitem(perceiving.PERCEIVING_MODELS, spec.name, replace(spec, min_accuracy=1.01))
    with pytest.raises(perceiving.PerceptionFloorError, match=r"below 101%: the base does not see"):
        build_perceiving(spec.name, tmp_path / "base")
    assert not (tmp_path / "base").exists()


def test_every_cell_has_its_own_shade():
    import random

    shades = {cell_shade(r, c, 2) for r in range(2) for c in range(2)}
    assert shades == {(250, 250, 250), (217, 217, 217), (183, 183, 183), (150, 150, 150)}
    scene = random_scene(random.Random(0), grid=2)
    image = draw_scene(scene, 64, shaded_cells=True)
    # A corner pixel of each cell shows its shade (shapes are drawn inside a margin).
    assert [image.getpixel((c * 32 + 1, r * 32 + 1)) for r in range(2) for c in range(2)] == [
        cell_shade(r, c, 2) for r in range(2) for c in range(2)
    ]
    assert draw_scene(scene, 64).getpixel((1, 1)) == (255, 255, 255)


def test_an_unbuilt_base_is_a_one_line_error_not_a_silent_build(isolated_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("SCALE_CACHE", str(tmp_path))
    with pytest.raises(
        ModelNotFound, match=r"tiny-llava-next-seeing is not built yet: run `scale models build"
    ):
        resolve_model("tiny-llava-next-seeing")
    assert not any(tmp_path.iterdir())
