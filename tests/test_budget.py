"""The SFT pre-flight: token counts equal what TRL's collator builds, at the tiny and the real
image geometry, and a trace cut before its answer is reported before training."""

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from scale_repro.cli import app
from scale_repro.method.segments import ANSWER
from scale_repro.stages.budget import SampleBudget, budget_report, measure
from scale_repro.stages.sft import SegmentCollator

runner = CliRunner()
ALL_TINY = [
    f"{name}{suffix}"
    for name in ("tiny-qwen2.5-vl", "tiny-gemma3", "tiny-llava-next", "tiny-qwen3-vl", "tiny-internvl")
    for suffix in ("", "-real")
]


@pytest.mark.parametrize(
    ("prompt", "completion", "answer_offset", "max_length", "cut"),
    [
        (100, 50, 40, None, None),
        (100, 50, 40, 150, None),  # exactly fits
        (100, 50, 40, 149, "answer_part"),  # the last answer token goes
        (100, 50, 40, 141, "answer_part"),  # one answer token left
        (100, 50, 40, 140, "answer"),  # </think> is the first token lost
        (100, 50, 40, 101, "answer"),
        (100, 50, 40, 100, "prompt"),  # image or prompt tokens would be cut
    ],
)
def test_where_max_length_cuts(prompt, completion, answer_offset, max_length, cut):
    assert SampleBudget("s", prompt, completion, answer_offset).cut(max_length) == cut


def _rows(tmp_path):
    sizes = [(640, 480), (64, 64), (1000, 300)]
    rows = []
    for i, size in enumerate(sizes):
        Image.new("RGB", size, (60 * i, 90, 0)).save(tmp_path / f"{i}.png")
        context = [
            {"role": "user", "content": "How many?"},
            {"role": "assistant", "content": "<think>two</think><answer>2</answer>"},
        ]
        rows.append(
            {
                "id": f"s{i}",
                "images": [str(tmp_path / f"{i}.png")],
                "prompt": (context if i == 2 else [])
                + [{"role": "user", "content": "What is the capital?\nA: Anchorage\nB: Juneau"}],
                "completion": [
                    {
                        "role": "assistant",
                        "content": "<think>"
                        + "Juneau is. " * (i + 1)
                        + "</think><answer>Final Answer:option B</answer>",
                    }
                ],
            }
        )
    return rows


@pytest.mark.parametrize("name", ALL_TINY)
def test_counts_equal_the_collators_batch(name, tmp_path):
    from transformers import AutoProcessor

    from scale_repro.models.registry import tiny_model_path

    processor = AutoProcessor.from_pretrained(tiny_model_path(name))
    rows = _rows(tmp_path)
    collator = SegmentCollator(processor=processor, max_length=None, completion_only_loss=True)
    for row, budget in zip(rows, measure(rows, processor), strict=True):
        batch = collator([{**row, "images": [Image.open(p).convert("RGB") for p in row["images"]]}])
        assert budget.total == int(batch["attention_mask"].sum())
        assert budget.completion_tokens == int((batch["labels"] != -100).sum())
        assert budget.completion_tokens - budget.answer_offset == int((batch["segments"] == ANSWER).sum())


def test_real_geometry_costs_what_the_real_processors_do(tmp_path):
    """Tokens one 640x480 image adds to a prompt beyond its placeholder, at the real settings."""
    from transformers import AutoProcessor

    from scale_repro.models.registry import tiny_model_path
    from scale_repro.stages.budget import ImageCost

    costs = {
        name: ImageCost(AutoProcessor.from_pretrained(tiny_model_path(name)))((640, 480))
        for name in (
            "tiny-qwen2.5-vl-real",
            "tiny-gemma3-real",
            "tiny-llava-next-real",
            "tiny-qwen3-vl-real",
            "tiny-internvl-real",
        )
    }
    # Qwen: 640x480 resized to 644x476 (multiples of 28) -> 23*17 = 391 image tokens in place of 1.
    assert costs["tiny-qwen2.5-vl-real"] == 390
    # Gemma-3: 256 soft tokens plus the begin/end-of-image wrappers the processor adds.
    assert 256 < costs["tiny-gemma3-real"] <= 262
    assert 1500 <= costs["tiny-llava-next-real"] <= 2500
    # Qwen3-VL: 16-px patches merged 2 x 2, so one token per 32 x 32 pixels: 20 x 15 = 300 in place of 1.
    assert costs["tiny-qwen3-vl-real"] == 299
    # InternVL: 640x480 (4:3) cut into a 4 x 3 grid of 448-px tiles plus a thumbnail, 256 tokens a
    # tile, inside <img> ... </img>: 13 x 256 + 2, in place of 1.
    assert costs["tiny-internvl-real"] == 3329


def _long_trace_data(tmp_path):
    Image.new("RGB", (640, 480), (10, 200, 10)).save(tmp_path / "a.png")
    Image.new("RGB", (64, 64), (200, 10, 10)).save(tmp_path / "b.png")
    question = "<image>\nWhat colour is the picture?\nChoices:\nA: red\nB: green"
    records = [
        {
            "id": "long-1",
            "image": "a.png",
            "conversations": [
                {"from": "human", "value": question},
                {
                    "from": "gpt",
                    "value": "<think>"
                    + "The picture is green all over. " * 60
                    + "</think><answer>Final Answer:option B</answer>",
                },
            ],
        },
        {
            "id": "short-1",
            "image": "b.png",
            "conversations": [
                {"from": "human", "value": question},
                {"from": "gpt", "value": "<think>It is red.</think><answer>Final Answer:option A</answer>"},
            ],
        },
    ]
    path = tmp_path / "train.json"
    path.write_text(json.dumps(records))
    return path


def _sft(data, out, *settings):
    args = [
        "sft",
        "--model",
        "tiny-qwen2.5-vl-real",
        "--data",
        str(data),
        "--output-dir",
        str(out),
        "--max-steps",
        "1",
        "--set",
        "max_length=800",
        "--set",
        "per_device_train_batch_size=2",
    ]
    for setting in settings:
        args += ["--set", setting]
    return runner.invoke(app, args)


def test_sft_stops_before_training_when_a_long_trace_loses_its_answer(tmp_path):
    data = _long_trace_data(tmp_path)
    result = _sft(data, tmp_path / "run")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "error: max_length 800 cuts the answer of 1 of 2 samples (first: long-1; longest: long-1, 1114 tokens). "
        "Raise max_length, shrink the images, or --set cut_answers=drop (skip them) or keep (train them cut)"
    )
    assert not (tmp_path / "run").exists()


def test_sft_drops_or_keeps_cut_samples_and_logs_samples_without_answer(tmp_path):
    data = _long_trace_data(tmp_path)
    result = _sft(data, tmp_path / "drop", "cut_answers=drop")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "drop" / "manifest.json").read_text())
    preflight = manifest["data"]["preflight"]
    assert preflight["cut"] == {"answer": {"count": 1, "first": ["long-1"]}}
    assert (preflight["dropped"], preflight["longest"]) == (
        1,
        {"id": "long-1", "tokens": 1114, "prompt_tokens": 488},
    )
    log = [json.loads(line) for line in (tmp_path / "drop" / "train_log.jsonl").read_text().splitlines()]
    assert [r["samples_without_answer"] for r in log if "samples_without_answer" in r] == [0.0]

    result = _sft(data, tmp_path / "keep", "cut_answers=keep")
    assert result.exit_code == 0, result.output
    log = [json.loads(line) for line in (tmp_path / "keep" / "train_log.jsonl").read_text().splitlines()]
    assert [r["samples_without_answer"] for r in log if "samples_without_answer" in r] == [1.0]


def test_budget_report_summary_names_the_cut_samples():
    budgets = [SampleBudget(f"s{i}", 100, 50, 40) for i in range(8)] + [SampleBudget("big", 200, 50, 40)]
    report = budget_report(budgets, 145)
    assert report.count("answer_part") == 8 and report.count("prompt") == 1
    assert report.summary().splitlines()[1:] == [
        "  1 prompt alone reaches max_length (image tokens would be cut): big",
        "  8 lose the end of their ANSWER segment: s0, s1, s2, s3, s4 and 3 more",
    ]
