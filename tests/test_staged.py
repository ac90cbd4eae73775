"""Experiments as recipes of stages: planning (shared prefixes, inherited settings, conflicts)
and a whole staged-vs-merged run on a tiny model."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from scale_repro.cli import app
from scale_repro.experiments.planner import load_experiment, plan

runner = CliRunner()


def write_spec(tmp_path, recipes, **extra):
    spec = {
        "kind": "curriculum",
        "name": "t",
        "models": ["tiny-llava-next"],
        "seeds": [0, 1],
        "data": {"capabilities": {"n_per_capability": 8}, "synth": {"n_train": 16, "n_test": 6}},
        "evaluate": [{"name": "Visual", "task": "synthetic-iconqa", "data": "${SYNTH}"}],
        "baseline": "Merged",
        "sft": {"set": ["per_device_train_batch_size=2"]},
        "grpo": {"set": ["per_device_train_batch_size=2", "num_generations=2", "max_completion_length=8"]},
        "eval": {"set": ["max_new_tokens=8", "limit=3"]},
        "recipes": recipes,
        **extra,
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


WARMUP = {"name": "warmup", "method": "sft", "data": "${SYNTH}", "set": ["max_steps=2"]}
RECIPES = {
    "Merged": [
        WARMUP,
        {"name": "merged", "method": "grpo", "data": "${CAP}/merged.jsonl", "set": ["max_steps=2"]},
    ],
    "Staged": [
        WARMUP,
        {"name": "perception", "method": "grpo", "data": "${CAP}/perception.jsonl", "set": ["max_steps=1"]},
        {
            "name": "text",
            "method": "grpo",
            "data": "${CAP}/text_reasoning.jsonl",
            "set": ["max_steps=1", "lora.freeze_vision=true"],
        },
    ],
}


def test_recipes_share_prefixes_and_chain_checkpoints(tmp_path):
    spec = load_experiment(write_spec(tmp_path, RECIPES))
    stages = plan(spec, tmp_path / "runs", {"CAP": "/cap", "SYNTH": "/synth"})
    training = [s for s in stages if s.kind != "eval"]
    # Per seed: one shared warm-up, merged, perception, text.
    assert sorted(
        str(s.run_dir.relative_to(tmp_path / "runs")) for s in training if "seed0" in str(s.run_dir)
    ) == [
        "tiny-llava-next/seed0/1-warmup",
        "tiny-llava-next/seed0/1-warmup/2-merged",
        "tiny-llava-next/seed0/1-warmup/2-perception",
        "tiny-llava-next/seed0/1-warmup/2-perception/3-text",
    ]
    text = next(s for s in training if s.run_dir.name == "3-text" and "seed1" in str(s.run_dir))
    assert text.config.model == str(tmp_path / "runs/tiny-llava-next/seed1/1-warmup/2-perception")
    assert text.needs == [tmp_path / "runs/tiny-llava-next/seed1/1-warmup/2-perception"]
    assert text.config.lora.freeze_vision is True and text.config.data.spec == "/cap/text_reasoning.jsonl"
    assert text.config.seed == 1
    perception = next(s for s in training if s.run_dir.name == "2-perception" and "seed1" in str(s.run_dir))
    # The GRPO stage inherits how the tiny model is held from its SFT warm-up: full fine-tuning.
    assert perception.config.lora.enabled is False and perception.config.lora.freeze_vision is False
    evaluations = [s for s in stages if s.kind == "eval"]
    assert len(evaluations) == 2 * 2  # recipes x seeds, one evaluation each
    assert {s.config.labels["configuration"] for s in evaluations} == {"Merged", "Staged"}


def test_one_prefix_with_two_configs_is_refused_before_running(tmp_path):
    other = dict(
        RECIPES,
        Other=[
            WARMUP,
            {"name": "merged", "method": "grpo", "data": "${CAP}/merged.jsonl", "set": ["max_steps=5"]},
        ],
    )
    spec = load_experiment(write_spec(tmp_path, other))
    with pytest.raises(
        ValueError, match="recipes Merged and Other name the same stages with different settings"
    ):
        plan(spec, tmp_path / "runs", {"CAP": "/cap", "SYNTH": "/synth"})
    with pytest.raises(ValueError, match="method must be one of sft, grpo, pass_rate"):
        load_experiment(write_spec(tmp_path, {"Merged": [{"name": "x", "method": "dpo", "data": "d"}]}))


def test_difficulty_recipe_rates_with_the_model_so_far_and_trains_from_it(tmp_path):
    recipes = {
        "Easy-to-hard": [
            WARMUP,
            {"name": "rate", "method": "pass_rate", "data": "${CAP}/merged.jsonl", "set": ["k=3"]},
            {
                "name": "merged",
                "method": "grpo",
                "data": "${RATED}",
                "set": ["max_steps=2", "data.order=easy_to_hard"],
            },
        ]
    }
    spec = load_experiment(write_spec(tmp_path, recipes, baseline=None))
    stages = {
        s.run_dir.relative_to(tmp_path / "runs").as_posix(): s
        for s in plan(spec, tmp_path / "runs", {"CAP": "/cap", "SYNTH": "/synth"})
    }
    warmup = tmp_path / "runs/tiny-llava-next/seed0/1-warmup"
    rate = stages["tiny-llava-next/seed0/1-warmup/2-rate"]
    assert (rate.kind, rate.config.model, rate.config.k, rate.needs) == (
        "pass_rate",
        str(warmup),
        3,
        [warmup],
    )
    assert rate.config.data.spec == "/cap/merged.jsonl"
    grpo = stages["tiny-llava-next/seed0/1-warmup/2-rate/3-merged"]
    # It trains from the warm-up (rating changes no weights), on the rated data, after the rating.
    assert grpo.config.model == str(warmup) and grpo.needs == [rate.run_dir]
    assert (
        grpo.config.data.spec == str(rate.run_dir / "rated.jsonl")
        and grpo.config.data.order == "easy_to_hard"
    )
    evaluation = stages["tiny-llava-next/seed0/1-warmup/2-rate/3-merged/eval-Visual"]
    assert evaluation.config.model == str(grpo.run_dir) and evaluation.needs == [grpo.run_dir]


@pytest.mark.slow
def test_staged_and_merged_run_and_report_paired_by_seed(tmp_path, tiny_paths):
    path = write_spec(tmp_path, RECIPES)
    result = runner.invoke(
        app, ["reproduce", "--experiment", str(path), "--out", str(tmp_path / "out"), "--jobs", "2"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "report" / "summary.json").read_text())
    cells = {(c["recipe"], c["dataset"]): c for c in summary["cells"]}
    assert set(cells) == {("Merged", "Visual"), ("Staged", "Visual")}
    assert all(c["seeds"] == 2 and 0.0 <= c["accuracy"] <= 1.0 for c in cells.values())
    (comparison,) = summary["comparisons"]
    assert (comparison["recipe"], comparison["baseline"], comparison["accuracy"]["n"]) == (
        "Staged",
        "Merged",
        2,
    )
    report = (tmp_path / "out" / "report" / "report.md").read_text()
    assert "![grpo_diagnostics.png](grpo_diagnostics.png)" in report  # every GRPO run's diagnostics
    assert (tmp_path / "out" / "report" / "grpo_diagnostics.png").stat().st_size > 0
    assert "## Each recipe minus Merged, paired by seed" in report
    # Rerunning finds every stage finished.
    again = runner.invoke(app, ["reproduce", "--experiment", str(path), "--out", str(tmp_path / "out")])
    assert again.exit_code == 0 and "finished earlier" in again.output
