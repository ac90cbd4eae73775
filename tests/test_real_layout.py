"""The released Vision-R1-cold layout, written as its README describes it (Osilly/Vision-R1,
"Data preparation"): two JSON files beside ``llava_cot_images/`` and ``mulberry_images/``.

The LLaVA-CoT file has ``{"id", "image": str, "conversations": [{"from": "human"|"gpt"}]}``;
the Mulberry file ``{"images": str, "conversations": [{"from": "user"|"assistant"}]}`` (the
``dataset_info.json`` entries in that README). Image paths appear in both conventions:
relative to the dataset dir ("llava_cot_images/sqa/...", as LLaMA-Factory resolves them) and
relative to the image folder ("sqa/...", as in LLaVA-CoT-100k's own file). References use the
released answer forms ("Final Answer:option B", "Final Answer:7").
"""

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from scale_repro.cli import app
from scale_repro.data.records import to_conversation
from scale_repro.data.sources import load_training_examples
from scale_repro.data.validate import DataError

runner = CliRunner()

CAPITAL = "<image>\nWhat is the capital of Alaska?\nChoices:\nA: Anchorage\nB: Juneau"


def _image(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 24), (200, 30, 30)).save(path)
    return str(path)


def _llava_turns(*rounds):
    turns = []
    for question, completion in rounds:
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": completion}]
    return turns


def write_vision_r1_cold(root: Path) -> Path:
    for image in (
        "llava_cot_images/sqa/train/101/image.png",
        "llava_cot_images/sqa/train/102/image.png",
        "llava_cot_images/sqa/train/103/image.png",
        "llava_cot_images/coco/train2017/0001.jpg",
        "mulberry_images/IconQA/images/7.png",
        "mulberry_images/IconQA/images/8.png",
        "mulberry_images/ScienceQA/images/5.png",
        "mulberry_images/AI2D/images/4506.png",
    ):
        _image(root / image)
    llava = [
        # Relative to the image folder, as in LLaVA-CoT-100k's own file.
        {
            "id": "sqa-101",
            "image": "sqa/train/101/image.png",
            "conversations": _llava_turns(
                (CAPITAL, "<think>Juneau is the capital.</think><answer>Final Answer:option B</answer>")
            ),
        },
        # Relative to the dataset dir, as LLaMA-Factory resolves it.
        {
            "id": "sqa-102",
            "image": "llava_cot_images/sqa/train/102/image.png",
            "conversations": _llava_turns(
                (CAPITAL, "<think>Juneau, not Anchorage.</think><answer>B: Juneau</answer>")
            ),
        },
        {
            "id": "coco-1",
            "image": "coco/train2017/0001.jpg",
            "conversations": _llava_turns(
                ("<image>\nWhat is shown?", "<think>A red picture.</think><answer>red</answer>")
            ),
        },
        # Two rounds: two examples, the second with the first as context.
        {
            "id": "sqa-103",
            "image": "sqa/train/103/image.png",
            "conversations": _llava_turns(
                (
                    "<image>\nHow many legs do 2 birds have?",
                    "<think>2 legs each, 2 birds.</think><answer>Final Answer:4</answer>",
                ),
                ("And 4 birds?", "<think>Twice as many.</think><answer>\\boxed{8}</answer>"),
            ),
        },
        {
            "id": "sqa-104",
            "image": "sqa/train/104/image.png",
            "conversations": _llava_turns((CAPITAL, "<think>Juneau.</think><answer>B</answer>")),
        },
    ]
    mulberry = [
        {
            "images": "mulberry_images/IconQA/images/7.png",
            "conversations": [
                {"from": "user", "value": "<image>How many dots are there?"},
                {
                    "from": "assistant",
                    "value": "<think>I count 7 dots.</think><answer>Final Answer:7</answer>",
                },
            ],
        },
        {
            "images": "IconQA/images/8.png",
            "conversations": [
                {"from": "user", "value": "<image>Which shape is shown?\n(A) circle\n(B) square"},
                {
                    "from": "assistant",
                    "value": "<think>It is round.</think><answer>Final Answer:option (A)</answer>",
                },
            ],
        },
        {
            "images": "mulberry_images/ScienceQA/images/5.png",
            "conversations": [
                {"from": "user", "value": CAPITAL},
                {"from": "assistant", "value": "<think>Juneau.</think><answer>The answer is B.</answer>"},
            ],
        },
        {
            "images": "mulberry_images/AI2D/images/4506.png",
            "conversations": [
                {"from": "user", "value": "<image>Which stage comes first?"},
                {"from": "assistant", "value": "<think>The egg.</think><answer>egg</answer>"},
            ],
        },
    ]
    (root / "vision_r1_llava_cot_full.json").write_text(json.dumps(llava, indent=1))
    (root / "vision_r1_mulberry_sft_full.json").write_text(json.dumps(mulberry, indent=1))
    return root


@pytest.fixture
def cold(tmp_path, monkeypatch):
    root = write_vision_r1_cold(tmp_path / "vision_r1_cold")
    monkeypatch.setenv("VISION_R1_DIR", str(root))
    return root


def test_science_preset_reads_both_files_and_both_path_conventions(cold):
    result = load_training_examples("vision-r1-science")
    llava, mulberry = result.report.parts
    assert (llava.total, llava.selected, llava.valid, llava.turns_split, llava.rewritten) == (5, 4, 3, 1, 4)
    assert dict(llava.rejected) == {"missing_image_file": 1}
    assert (mulberry.total, mulberry.selected, mulberry.valid, mulberry.rewritten) == (4, 1, 1, 1)
    assert dict(result.report.sources) == {"sqa": 3, "ScienceQA": 1}
    assert [(e.id, e.answer, e.answer_text) for e in result.examples] == [
        ("sqa-101", "B", "Final Answer:option B"),
        ("sqa-102", "B", "B: Juneau"),
        ("sqa-103#turn1", "4", "Final Answer:4"),
        ("sqa-103#turn2", "8", "\\boxed{8}"),
        ("2", "B", "The answer is B."),
    ]
    assert result.examples[0].images == [str(cold / "llava_cot_images/sqa/train/101/image.png")]
    assert result.examples[1].images == [str(cold / "llava_cot_images/sqa/train/102/image.png")]
    assert result.examples[0].choices == ["Anchorage", "Juneau"]
    missing = llava.first_rejected["missing_image_file"][0]
    assert missing["record"] == "sqa-104"
    assert str(cold / "sqa/train/104/image.png") in missing["message"]
    assert str(cold / "llava_cot_images/sqa/train/104/image.png") in missing["message"]


def test_iconqa_preset_reads_the_mulberry_file(cold):
    result = load_training_examples("vision-r1-iconqa")
    (mulberry,) = result.report.parts
    assert (mulberry.total, mulberry.selected, mulberry.valid, mulberry.rewritten) == (4, 2, 2, 2)
    assert [(e.id, e.answer) for e in result.examples] == [("0", "7"), ("1", "A")]
    assert result.examples[1].images == [str(cold / "mulberry_images/IconQA/images/8.png")]


def test_multi_turn_record_trains_every_assistant_turn_with_its_context(cold):
    examples = {e.id: e for e in load_training_examples("vision-r1-science").examples}
    row = to_conversation(examples["sqa-103#turn2"], ["image.png"])
    roles = [m["role"] for m in row["prompt"]]
    assert roles == ["user", "assistant", "user"]
    assert (
        row["prompt"][1]["content"] == "<think>2 legs each, 2 birds.</think><answer>Final Answer:4</answer>"
    )
    assert row["prompt"][2]["content"].startswith("And 4 birds?\nFirst think")
    # SFT learns the answer as the trace states it; rewards compare with the canonical one.
    assert row["completion"][0]["content"] == "<think>Twice as many.</think><answer>\\boxed{8}</answer>"
    assert row["answer"] == "8"


def test_cli_validate_preset_prints_per_file_counts(cold):
    result = runner.invoke(app, ["data", "validate", "vision-r1-science"])
    assert result.exit_code == 1, result.output  # one record is rejected
    lines = result.output.splitlines()
    assert lines[0] == (
        f"{cold}/vision_r1_llava_cot_full.json: 5 records, 4 selected, 3 valid (sqa: 3); "
        "4 references rewritten, 1 turns split -> 4 examples"
    )
    assert lines[1] == (
        f"{cold}/vision_r1_mulberry_sft_full.json: 4 records, 1 selected, 1 valid (ScienceQA: 1); "
        "1 references rewritten, 0 turns split -> 1 examples"
    )
    assert lines[2].startswith("all: 9 records, 5 selected, 4 valid")
    assert lines[3].startswith("  rejected missing_image_file: 1 (first: sqa-104; image file not found: ")
    result = runner.invoke(app, ["data", "validate", "vision-r1-iconqa"])
    assert result.exit_code == 0, result.output


def test_preset_without_its_environment_variable_is_one_clear_line(monkeypatch):
    monkeypatch.delenv("VISION_R1_DIR", raising=False)
    with pytest.raises(DataError, match="set the environment variable VISION_R1_DIR"):
        load_training_examples("vision-r1-science")
    result = runner.invoke(app, ["data", "validate", "vision-r1-iconqa"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "VISION_R1_DIR" in result.output


def test_sources_setting_replaces_the_presets(cold):
    result = load_training_examples("vision-r1-science", sources=["AI2D"])
    assert [e.answer for e in result.examples] == ["egg"]


def test_hub_failure_names_the_other_place(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from scale_repro.data.sources import load_test_examples

    with pytest.raises(DataError) as info:
        load_test_examples("scienceqa")
    message = str(info.value)
    assert message.startswith("lmms-lab-encoder/ScienceQA: cannot load from the hub")
    assert "it may be at lmms-lab/ScienceQA" in message
    with pytest.raises(DataError, match="it may be at lmms-lab-encoder/ICON-QA"):
        load_test_examples("iconqa", hub_id="lmms-lab/ICON-QA")


def test_validate_takes_a_synth_dir_and_a_save_to_disk_copy(synth_dir):
    result = runner.invoke(app, ["data", "validate", str(synth_dir)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].endswith(
        "24 records, 24 selected, 24 valid; 0 references rewritten, 0 turns split -> 24 examples"
    )
    assert lines[1].endswith(
        "9 records, 9 selected, 9 valid; 0 references rewritten, 0 turns split -> 9 examples"
    )
    assert "scienceqa" in lines[1] and "iconqa" in lines[2]
    # A save_to_disk copy is told apart by its columns.
    result = runner.invoke(app, ["data", "validate", str(synth_dir / "iconqa_test")])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{synth_dir / 'iconqa_test'}: ")
