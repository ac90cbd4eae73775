"""The staged curriculum's data: the released EasyR1 records, synthetic data per capability,
and the difficulty order."""

import dataclasses
import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from scale_repro.cli import app
from scale_repro.config import GRPOConfig, SFTConfig, load_config
from scale_repro.data.sources import load_training_examples
from scale_repro.data.validate import DataError

runner = CliRunner()


def write_released(tmp_path):
    """Records as VLM-CapCurriculum's data and scripts have them: problem / images / answer /
    pass_rate (data.prompt_key=problem, data.image_key=images), and its perception formatter's
    option_A..D; text-reasoning records have no image."""
    (tmp_path / "images").mkdir()
    Image.new("RGB", (40, 30), (9, 9, 9)).save(tmp_path / "images" / "train_00009.jpg")
    rows = [
        {
            "index": "0",
            "problem": "<image>In the image, what is the colour of the car?\nOptions:\nA: red\nB: blue\nC: green\n"
            "D: black\nRespond using only the letter corresponding to the correct answer.\n",
            "images": ["train_00009.jpg"],
            "answer": "D",
            "option_A": "red",
            "option_B": "blue",
            "option_C": "green",
            "option_D": "black",
            "pass_rate": 0.4,
        },
        {"id": "orz-17", "problem": "What is $3+4$?", "answer": "7", "pass_rate": 1.0},
        {
            "id": "geo-3",
            "problem": "<image>Find x.",
            "images": ["missing.png"],
            "answer": "\\boxed{12}",
            "pass_rate": 0.2,
        },
        {"id": "bad-rate", "problem": "What is 1+1?", "answer": "2", "pass_rate": 3},
        {"id": "no-answer", "problem": "What is 2+2?"},
    ]
    path = tmp_path / "stage.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_released_curriculum_records_load_with_counts(tmp_path):
    result = load_training_examples(str(write_released(tmp_path)), image_root=str(tmp_path / "images"))
    assert [(e.id, e.answer, e.choices, e.meta) for e in result.examples] == [
        ("0", "D", ["red", "blue", "green", "black"], {"pass_rate": 0.4}),
        ("orz-17", "7", None, {"pass_rate": 1.0}),
    ]
    assert result.examples[0].images == [str(tmp_path / "images" / "train_00009.jpg")]
    assert result.examples[1].images == [] and result.examples[1].reasoning == ""
    assert dict(result.report.rejected) == {"missing_image_file": 1, "missing_field": 2}
    assert [f["record"] for f in result.report.first_rejected["missing_field"]] == ["bad-rate", "no-answer"]


def test_difficulty_order_sorts_by_pass_rate_with_seeded_ties(tmp_path):
    from scale_repro.data.records import Example
    from scale_repro.stages.training import order_examples

    examples = [
        Example(str(i), [], "q", "a", meta={"pass_rate": rate})
        for i, rate in enumerate([0.2, 1.0, 0.6, 0.2, 0.6])
    ]
    easy_first = [e.id for e in order_examples(examples, "easy_to_hard", seed=0, where="d")]
    assert [examples[int(i)].meta["pass_rate"] for i in easy_first] == [1.0, 0.6, 0.6, 0.2, 0.2]
    assert easy_first == [
        e.id for e in order_examples(examples, "easy_to_hard", seed=0, where="d")
    ]  # deterministic
    hard_first = [
        examples[int(e.id)].meta["pass_rate"] for e in order_examples(examples, "hard_to_easy", 0, "d")
    ]
    assert hard_first == [0.2, 0.2, 0.6, 0.6, 1.0]
    examples.append(Example("no-rate", [], "q", "a"))
    with pytest.raises(
        DataError, match=r"d, record no-rate, field 'pass_rate': data.order=easy_to_hard needs"
    ):
        order_examples(examples, "easy_to_hard", 0, "d")


def test_difficulty_order_reaches_grpo_unshuffled_and_is_refused_for_sft(tmp_path):
    from scale_repro.config import ConfigError
    from scale_repro.stages.grpo import trl_args

    config = load_config(GRPOConfig, None, ["data.order=easy_to_hard", "per_device_train_batch_size=8"])
    assert trl_args(config, tmp_path, bf16=False, use_vllm=False).shuffle_dataset is False
    config = load_config(GRPOConfig, None, ["per_device_train_batch_size=8"])
    assert trl_args(config, tmp_path, bf16=False, use_vllm=False).shuffle_dataset is True
    with pytest.raises(ConfigError, match="data.order orders GRPO stages only"):
        load_config(SFTConfig, None, ["data.order=easy_to_hard"])


def test_sft_on_rl_data_is_one_clear_line(tmp_path, tiny_paths):
    data = write_released(tmp_path)
    result = runner.invoke(
        app,
        [
            "sft",
            "--model",
            "tiny-gemma3",
            "--data",
            str(data),
            "--image-root",
            str(tmp_path / "images"),
            "--output-dir",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 1
    assert "2 of 2 examples have no reasoning trace (RL data)" in result.output
    assert not (tmp_path / "run").exists()


def test_capability_data_separates_seeing_from_reasoning(tmp_path):
    from scale_repro.data.synth import SynthConfig, generate_items

    result = runner.invoke(app, ["data", "capabilities", "--out", str(tmp_path / "cap"), "--n", "12"])
    assert result.exit_code == 0, result.output
    loaded = {
        name: load_training_examples(str(tmp_path / "cap" / f"{name}.jsonl")).examples
        for name in ("perception", "text_reasoning", "visual_reasoning")
    }
    assert {name: len(examples) for name, examples in loaded.items()} == {
        "perception": 12,
        "text_reasoning": 12,
        "visual_reasoning": 12,
    }
    assert all(e.choices and len(e.images) == 1 for e in loaded["perception"])  # what is in a cell: a letter
    assert all(not e.images and "A 3x3 grid." in e.question for e in loaded["text_reasoning"])  # no image
    assert all(len(e.images) == 1 and "grid." not in e.question for e in loaded["visual_reasoning"])
    # No scene of the evaluation sets `scale data synth` writes with the same seed is used here.
    records = [
        json.loads(line)
        for name in loaded
        for line in (tmp_path / "cap" / f"{name}.jsonl").read_text().splitlines()
    ]
    descriptions = {r["description"] for r in records}
    assert len(descriptions) == 36  # every scene different
    from scale_repro.data.capabilities import describe_scene

    held_out = generate_items(SynthConfig(seed=0, n_train=0, n_test=64))
    assert not descriptions & {
        describe_scene(s) for split in ("scienceqa", "iconqa") for s, _ in held_out[split]
    }


def test_pass_rate_and_perception_filter_from_sampled_answers(tmp_path, tiny_paths, monkeypatch):
    """The bookkeeping, with the model's answers fixed: pass rate = correct / K; the filter keeps
    what is wrong from the image and right from the description."""
    from scale_repro.stages import pass_rate

    runner.invoke(app, ["data", "capabilities", "--out", str(tmp_path / "cap"), "--n", "4"])
    perception = tmp_path / "cap" / "perception.jsonl"
    examples = load_training_examples(str(perception)).examples
    right = {e.id: f"<think>x</think><answer>{e.answer}</answer>" for e in examples}

    def fake_sample(
        model_path, batch, k, max_new_tokens, temperature=1.0, answer_format="tags", *args, **kwargs
    ):
        # Image prompts: right for the first two questions only; described (imageless) prompts: always right.
        rows = []
        for e in batch:
            ok = (not e.images) or e.id in (examples[0].id, examples[1].id)
            rows.append(
                [
                    right[e.id] if ok and (k == 1 or j < k - 1) else "<think>x</think><answer>Z</answer>"
                    for j in range(k)
                ]
            )
        return rows

    monkeypatch.setattr(pass_rate, "sample_completions", fake_sample)
    result = runner.invoke(
        app, ["data", "pass-rate", "--model", "tiny-gemma3", "--data", str(perception), "--k", "4"]
    )
    assert result.exit_code == 0, result.output
    rates = [
        json.loads(line)["pass_rate"]
        for line in (tmp_path / "cap" / "perception.pass_rate.jsonl").read_text().splitlines()
    ]
    assert rates == [0.75, 0.75, 0.0, 0.0]
    reloaded = load_training_examples(str(tmp_path / "cap" / "perception.pass_rate.jsonl")).examples
    assert [(e.id, e.answer, e.meta["pass_rate"]) for e in reloaded] == [
        (e.id, e.answer, r) for e, r in zip(examples, rates, strict=True)
    ]

    result = runner.invoke(
        app, ["data", "perception-filter", "--model", "tiny-gemma3", "--data", str(perception)]
    )
    assert result.exit_code == 0, result.output
    assert "4 questions: 2 right from the image, 4 right from the description; kept 2" in result.output
    kept = [
        json.loads(line)["id"]
        for line in (tmp_path / "cap" / "perception.perception.jsonl").read_text().splitlines()
    ]
    assert kept == [examples[2].id, examples[3].id]


@pytest.mark.slow
def test_sampling_runs_the_model_on_image_and_text_only_examples(tmp_path, tiny_paths):
    from scale_repro.stages.pass_rate import sample_completions

    runner.invoke(app, ["data", "capabilities", "--out", str(tmp_path / "cap"), "--n", "2"])
    examples = (
        load_training_examples(str(tmp_path / "cap" / "text_reasoning.jsonl")).examples
        + load_training_examples(str(tmp_path / "cap" / "visual_reasoning.jsonl")).examples
    )
    completions = sample_completions(
        str(tiny_paths["tiny-qwen2.5-vl"]), examples, k=3, max_new_tokens=4, progress=False
    )
    assert [len(row) for row in completions] == [3, 3, 3, 3]
    assert all(isinstance(c, str) for row in completions for c in row)
    greedy = sample_completions(
        str(tiny_paths["tiny-qwen2.5-vl"]), examples, k=1, max_new_tokens=4, temperature=0.0, progress=False
    )
    again = sample_completions(
        str(tiny_paths["tiny-qwen2.5-vl"]),
        examples,
        k=1,
        max_new_tokens=4,
        temperature=0.0,
        batch_size=1,
        progress=False,
    )
    assert greedy == again  # batching does not change greedy answers


def test_released_layout_presets_and_the_merged_pool(tmp_path, monkeypatch):
    """$CAPCURRICULUM_DIR laid out as the curriculum's training/_env.sh expects: one folder per
    capability, each file's images in its own folder; the merged preset pools all three."""
    root = tmp_path / "capcurriculum"
    for folder, name, with_image in (
        ("Perception", "perception", True),
        ("TextReasoning", "textual_reasoning", False),
        ("VisualReasoning", "visual_reasoning", True),
    ):
        (root / folder / "images").mkdir(parents=True)
        row = {"id": f"{folder}-0", "problem": "What is 3+4?", "answer": "7", "pass_rate": 0.5}
        if with_image:
            Image.new("RGB", (8, 8)).save(root / folder / "images" / "a.png")
            row.update(problem="<image>What is 3+4?", images=["a.png"])
        (root / folder / f"{name}_difficulty_curriculum.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(
        DataError,
        match=r"capcurriculum-merged.yaml, field 'path': set the environment variable CAPCURRICULUM_DIR",
    ):
        load_training_examples("capcurriculum-merged")
    monkeypatch.setenv("CAPCURRICULUM_DIR", str(root))
    merged = load_training_examples("capcurriculum-merged")
    assert [(e.id, e.images) for e in merged.examples] == [
        ("Perception-0", [str(root / "Perception" / "images" / "a.png")]),
        ("TextReasoning-0", []),
        ("VisualReasoning-0", [str(root / "VisualReasoning" / "images" / "a.png")]),
    ]
    assert merged.report.valid == 3
    for name, expected in (
        ("perception", "Perception-0"),
        ("text-reasoning", "TextReasoning-0"),
        ("visual-reasoning", "VisualReasoning-0"),
    ):
        assert [e.id for e in load_training_examples(f"capcurriculum-{name}").examples] == [expected]


def test_group_averages_pair_recipes_by_seed_and_sit_beside_the_papers():
    """Per seed, a recipe's average over a group of evaluations (a seed counts only with all of
    them), its paired difference with the baseline, and the paper's group figures beside ours."""
    from scale_repro.experiments.planner import Experiment
    from scale_repro.experiments.reports.curriculum import render_published, summarise

    spec = Experiment(
        name="t",
        models=["m"],
        seeds=[0, 1],
        recipes={"Merged": [], "Staged": []},
        evaluate=[
            {"name": "A", "task": "pope"},
            {"name": "B", "task": "pope"},
            {"name": "C", "task": "pope"},
        ],
        groups={"AB": ["A", "B"]},
        baseline="Merged",
        published={"source": "paper", "model": "m", "accuracy": {"Staged": {"AB": 60.0, "Overall": 55.0}}},
    )
    accuracy = {  # (recipe, seed) -> A, B, C
        ("Merged", 0): (0.5, 0.7, 0.3),
        ("Merged", 1): (0.4, 0.6, 0.2),
        ("Staged", 0): (0.6, 0.8, 0.3),
        ("Staged", 1): (0.6, 0.6, None),  # seed 1 misses C: left out of Overall, kept in AB
    }
    rows = [
        {"model": "m", "configuration": recipe, "seed": seed, "dataset": name, "accuracy": value,
         "mean_completion_tokens": 10.0, "unreadable_rate": 0.0}
        for (recipe, seed), values in accuracy.items()
        for name, value in zip("ABC", values, strict=True)
        if value is not None
    ]  # fmt: skip
    summary = summarise(spec, rows)
    cells = {(c["dataset"], c["recipe"]): c for c in summary["cells"]}
    assert cells[("AB average", "Staged")]["accuracy"] == pytest.approx((0.7 + 0.6) / 2)
    assert cells[("AB average", "Staged")]["seeds"] == 2
    assert cells[("Overall average", "Staged")]["seeds"] == 1
    assert cells[("Overall average", "Merged")]["accuracy"] == pytest.approx((0.5 + 0.4) / 2)
    ab = next(c for c in summary["comparisons"] if c["dataset"] == "AB average")
    assert ab["accuracy"]["n"] == 2 and ab["accuracy"]["mean"] == pytest.approx(
        ((0.7 - 0.6) + (0.6 - 0.5)) / 2
    )
    table = "\n".join(render_published(spec, summary))
    assert "| recipe | AB: paper | AB: this run | Overall: paper | Overall: this run |" in table
    assert "| Staged | 60.0 | 65.0 | 55.0 | 56.7 |" in table
    other = render_published(dataclasses.replace(spec, published={**spec.published, "model": "x"}), summary)
    assert "This run does not train x, the model these figures are for.\n" in other
    assert "| Staged | 60.0 | not run | 55.0 | not run |" in "\n".join(other)
