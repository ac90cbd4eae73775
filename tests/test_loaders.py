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
    assert (result.report.total, result.report.selected, result.report.valid) == (13, 13, 2)
    assert dict(result.report.rejected) == {
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
        "record": "bad-no-conversations", "field": "conversations", "message": "no 'conversations' list",
    }  # fmt: skip


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
    assert (result.report.total, result.report.selected, dict(result.report.rejected)) == (13, 1, {})
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
