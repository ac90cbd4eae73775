import json
from pathlib import Path

import datasets
import pytest

from scale_repro.data.loaders import SubsetRule, iconqa_examples, load_vision_r1, scienceqa_examples
from scale_repro.data.validate import REASONS, DataError

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_dataset(name, features, image_column):
    rows = json.loads((FIXTURES / name).read_text())
    for row in rows:
        row[image_column] = str(FIXTURES / row[image_column])
    return datasets.Dataset.from_list(rows, features=features)


@pytest.fixture
def scienceqa():
    from scale_repro.data.synth import SCIENCEQA_COLUMNS, scienceqa_features

    features = datasets.Features(
        {k: v for k, v in scienceqa_features().items() if k in SCIENCEQA_COLUMNS[:13]}
    )
    return fixture_dataset("scienceqa_rows.json", features, "image")


@pytest.fixture
def iconqa():
    from scale_repro.data.synth import ICONQA_COLUMNS, iconqa_features

    features = datasets.Features({k: v for k, v in iconqa_features().items() if k in ICONQA_COLUMNS[:8]})
    return fixture_dataset("iconqa_rows.json", features, "query_image")


def test_vision_r1_shape_a_keeps_valid_and_counts_every_rejection():
    result = load_vision_r1(FIXTURES / "vision_r1_shape_a.json", FIXTURES / "images")
    assert [e.id for e in result.examples] == ["sqa-1", "icon-1"]
    first = result.examples[0]
    assert first.reasoning == "The square fills the picture and it is red."
    assert first.answer == "A"
    assert first.images == [str(FIXTURES / "images" / "ScienceQA" / "red.png")]
    assert (result.report.total, result.report.selected, result.report.valid) == (15, 15, 2)
    assert dict(result.report.rejected) == {
        "image_too_large": 1,  # a PNG whose header claims 20000 x 20000 pixels
        "bad_field": 1,  # "image": 7
        "missing_tag": 1,
        "repeated_tag": 1,
        "misordered_tags": 1,
        "empty_reasoning": 1,
        "empty_answer": 1,
        "missing_image_file": 1,
        "unreadable_image": 1,
        "missing_field": 1,
        "empty_question": 1,
        "ambiguous_answer": 1,
        "bad_turn_order": 1,
    }
    assert result.report.first_rejected["missing_field"][0] == {
        "record": "bad-no-conversations",
        "field": "conversations",
        "message": "no 'conversations' list",
    }


def test_vision_r1_shape_b_with_role_content_turns():
    result = load_vision_r1(FIXTURES / "vision_r1_shape_b.json", FIXTURES / "images")
    assert [(e.id, e.answer) for e in result.examples] == [("0", "red"), ("1", "blue")]
    assert result.examples[1].question == "<image>Which colour is shown?"


def test_subset_rule_selects_by_source_folder():
    result = load_vision_r1(
        FIXTURES / "vision_r1_shape_a.json", FIXTURES / "images", SubsetRule(sources=["iconqa"])
    )
    assert [e.id for e in result.examples] == ["icon-1"]
    # Records outside the subset are read but neither selected, kept nor rejected.
    assert (result.report.total, result.report.selected, dict(result.report.rejected)) == (15, 1, {})
    assert dict(result.report.sources) == {"iconqa": 1}


def test_strict_mode_names_file_record_and_field():
    with pytest.raises(DataError) as info:
        load_vision_r1(FIXTURES / "vision_r1_shape_a.json", FIXTURES / "images", strict=True)
    message = str(info.value)
    assert (
        "vision_r1_shape_a.json" in message
        and "record bad-missing-tag" in message
        and "field 'conversations'" in message
    )


def test_not_json_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json: not valid JSON"):
        load_vision_r1(bad)


def test_scienceqa_rows(scienceqa):
    result = scienceqa_examples(scienceqa, "fixture")
    assert [e.answer for e in result.examples] == ["B", "A"]
    assert result.examples[0].question == (
        "Context: The picture shows one square.\nWhich colour is the square?\nChoices:\n(A) blue\n(B) red"
    )
    assert result.examples[0].choices == ["blue", "red"]
    assert dict(result.report.rejected) == {"bad_answer_index": 1}


def test_iconqa_keeps_fill_in_blank_and_choose_txt_only(iconqa):
    result = iconqa_examples(iconqa, "fixture")
    assert [(e.id, e.answer, e.choices) for e in result.examples] == [
        ("1001", "1", None),
        ("1002", "blue", ["red", "blue", "green"]),
    ]
    # choose_img rows are read, not selected, not rejected.
    assert (result.report.total, result.report.selected, result.report.valid) == (4, 3, 2)
    assert dict(result.report.rejected) == {"empty_answer": 1}


def test_iconqa_split_without_answers_stops_with_a_message(iconqa):
    no_answers = iconqa.map(lambda row: {"answer": ""})
    with pytest.raises(DataError, match="no answers"):
        iconqa_examples(no_answers, "fixture")


def test_missing_columns_are_named(scienceqa):
    with pytest.raises(DataError, match="missing column"):
        scienceqa_examples(scienceqa.remove_columns(["choices"]), "fixture")


def test_every_reason_is_exercised_by_the_fixtures(scienceqa, iconqa):
    seen = set(load_vision_r1(FIXTURES / "vision_r1_shape_a.json", FIXTURES / "images").report.rejected)
    seen |= set(scienceqa_examples(scienceqa, "f").report.rejected)
    seen |= set(iconqa_examples(iconqa, "f").report.rejected)
    assert seen == set(REASONS)


def _png_bytes(size=(8, 8)) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _rechunk(png: bytes, chunk: bytes, data: bytes) -> bytes:
    """``png`` with the first ``chunk``'s data replaced by ``data`` and its CRC recomputed, so
    the file's structure stays valid (Pillow's verify() passes)."""
    import struct
    import zlib

    at = png.index(chunk) - 4
    length = struct.unpack(">I", png[at : at + 4])[0]
    end = at + 8 + length + 4
    crc = struct.pack(">I", zlib.crc32(chunk + data) & 0xFFFFFFFF)
    return png[:at] + struct.pack(">I", len(data)) + chunk + data + crc + png[end:]


def bad_images(folder: Path) -> dict[str, Path]:
    """Real bad images: a header claiming 20000x20000 pixels, valid chunks around pixel data
    that does not decompress, and a truncated file."""
    import struct

    png = _png_bytes()
    ihdr = png[png.index(b"IHDR") + 4 : png.index(b"IHDR") + 17]
    bomb = _rechunk(png, b"IHDR", struct.pack(">II", 20000, 20000) + ihdr[8:])
    idat = png[png.index(b"IDAT") + 4 : png.index(b"IEND") - 8]
    corrupt = _rechunk(png, b"IDAT", idat[:2] + bytes(b ^ 0x5A for b in idat[2:]))
    files = {"bomb": bomb, "corrupt": corrupt, "truncated": png[: len(png) // 2]}
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / f"{name}.png").write_bytes(data)
    return {name: folder / f"{name}.png" for name in files}


def test_bad_images_are_counted_by_what_is_wrong_with_them(tmp_path):
    from PIL import Image

    from scale_repro.data.validate import check_image

    images = bad_images(tmp_path / "images")
    with Image.open(images["corrupt"]) as image:
        image.verify()  # the structure is fine: only decoding finds the damage
    assert check_image(images["bomb"])[0] == "image_too_large"
    assert check_image(images["corrupt"])[0] == "unreadable_image"
    assert check_image(images["truncated"])[0] == "unreadable_image"
    conversations = [
        {"from": "human", "value": "<image>How many?"},
        {"from": "gpt", "value": "<think>one</think><answer>1</answer>"},
    ]
    records = [{"id": name, "image": f"images/{name}.png", "conversations": conversations} for name in images]
    records += [
        {"id": "typed", "image": 7, "conversations": conversations},
        {"id": "typed-list", "images": [{"path": "a.png"}], "conversations": conversations},
    ]
    (tmp_path / "data.json").write_text(json.dumps(records))
    result = load_vision_r1(tmp_path / "data.json", tmp_path)
    assert result.examples == []
    assert dict(result.report.rejected) == {"image_too_large": 1, "unreadable_image": 2, "bad_field": 2}
    assert result.report.first_rejected["bad_field"][0]["record"] == "typed"
    assert "an image must be a file path, got 7" in result.report.first_rejected["bad_field"][0]["message"]


def test_validate_decodes_what_training_will_decode(tmp_path):
    """`scale data validate` rejects a PNG whose pixels do not decode, with the record named;
    `scale sft` on the same file stops before any model loads."""
    from typer.testing import CliRunner

    from scale_repro.cli import app

    images = bad_images(tmp_path / "images")
    conversations = [
        {"from": "human", "value": "<image>How many?"},
        {"from": "gpt", "value": "<think>one</think><answer>1</answer>"},
    ]
    (tmp_path / "data.json").write_text(
        json.dumps([{"id": "corrupt-1", "image": "images/corrupt.png", "conversations": conversations}])
    )
    result = CliRunner().invoke(app, ["data", "validate", str(tmp_path / "data.json")])
    assert result.exit_code != 0
    assert "rejected unreadable_image: 1 (first: corrupt-1; cannot read image" in result.output
    assert images["corrupt"].name in result.output
    result = CliRunner().invoke(
        app,
        [
            "sft",
            "--model",
            "tiny-qwen2.5-vl",
            "--data",
            str(tmp_path / "data.json"),
            "--output-dir",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'data.json'}: no valid training examples (1 records, 1 selected; unreadable_image: 1)"
    )
    assert not (tmp_path / "run").exists()


def test_a_damaged_image_is_caught_even_after_lmms_eval_relaxed_pillow(tmp_path):
    """lmms-eval turns on Pillow's LOAD_TRUNCATED_IMAGES when imported; validation must not."""
    import lmms_eval.api.task  # noqa: F401 - sets ImageFile.LOAD_TRUNCATED_IMAGES = True
    from PIL import ImageFile

    from scale_repro.data.validate import check_image

    assert ImageFile.LOAD_TRUNCATED_IMAGES is True
    images = bad_images(tmp_path / "images")
    assert check_image(images["corrupt"])[0] == "unreadable_image"
    assert check_image(images["truncated"])[0] == "unreadable_image"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # left as lmms-eval set it
