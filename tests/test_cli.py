import json

from typer.testing import CliRunner

from scale_repro.cli import app

runner = CliRunner()


# Every command's --help: tests/test_layout.py::test_every_command_has_help.


def test_models_list_names_the_paper_and_tiny_models():
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0
    for name in (
        "gemma-3-4b",
        "google/gemma-3-4b-it",
        "qwen2.5-vl-3b",
        "Qwen/Qwen2.5-VL-3B-Instruct",
        "llava-v1.6-mistral-7b",
        "llava-hf/llava-v1.6-mistral-7b-hf",
        "tiny-gemma3",
        "tiny-llava-next-seeing",
    ):
        assert name in result.output


def test_evidence_dry_run_prints_the_plan(tmp_path):
    result = runner.invoke(
        app,
        [
            "reproduce",
            "--experiment",
            "synthetic",
            "--dry-run",
            "--quick",
            "--seeds",
            "2",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "tiny-llava-next-seeing-quick/ratio80/seed1/1-sft-scale/eval-80x" in result.output
    assert "18 independent chains" in result.output  # SFT runs: 6 at 20x, 4 at 5x, 8 at 80x (4 cut)
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing
    result = runner.invoke(
        app, ["reproduce", "--experiment", "synthetic", "--dry-run", "--seeds", "0", "--out", str(tmp_path)]
    )
    assert result.exit_code == 1 and "--seeds must be at least 1" in result.output
    result = runner.invoke(
        app, ["reproduce", "--experiment", "synthetic", "--jobs", "0", "--out", str(tmp_path)]
    )
    assert result.exit_code == 1 and "--jobs must be at least 1" in result.output


def test_validate_writes_a_report_and_fails_on_rejections(tmp_path):
    from pathlib import Path

    fixtures = Path(__file__).parent / "fixtures"
    report = tmp_path / "report.json"
    result = runner.invoke(
        app,
        [
            "data",
            "validate",
            str(fixtures / "vision_r1_shape_a.json"),
            "--format",
            "vision-r1",
            "--image-root",
            str(fixtures / "images"),
            "--report",
            str(report),
        ],
    )
    assert result.exit_code == 1
    data = json.loads(report.read_text())
    assert (data["total"], data["selected"], data["valid"]) == (15, 15, 2)
    assert data["rejected"]["missing_image_file"] == 1


def test_bad_config_and_missing_data_are_clear_errors(tmp_path):
    result = runner.invoke(
        app,
        [
            "sft",
            "--model",
            "tiny-gemma3",
            "--data",
            str(tmp_path / "nowhere"),
            "--output-dir",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 1
    assert "no such file, directory or data preset" in result.output
    result = runner.invoke(app, ["sft", "--set", "lora.rank=4", "--output-dir", str(tmp_path / "run2")])
    assert result.exit_code == 1 and "--set lora.rank=4: unknown setting 'lora.rank'" in result.output
    result = runner.invoke(
        app, ["eval", "--model", "no-such-model", "--task", "scienceqa", "--output-dir", str(tmp_path / "e")]
    )
    assert result.exit_code == 1 and "unknown model 'no-such-model'" in result.output


def test_reproduce_dry_run_prints_the_plan():
    result = runner.invoke(app, ["reproduce", "--table", "3", "--dry-run", "--out", "/tmp/nonexistent-plan"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    # Table 3's recipes in order, a count, then its stages (under OUT/runs, as in every experiment).
    assert lines[:5] == [
        "SFT: sft-vanilla (sft, ${TRAIN}, loss.mode=vanilla)",
        "SFT-FW: sft-fixed (sft, ${TRAIN}, loss.mode=fixed)",
        "SCALe-SFT: sft-scale (sft, ${TRAIN}, loss.mode=scale)",
        "GRPO-FW: sft-fixed (sft, ${TRAIN}, loss.mode=fixed) -> grpo (grpo, ${TRAIN})",
        "SCALe-GRPO: sft-scale (sft, ${TRAIN}, loss.mode=scale) -> grpo (grpo, ${TRAIN})",
    ]
    assert lines[5] == (
        "table3: 20 stages (10 training or rating, 10 evaluations; 6 independent chains) for qwen2.5-vl-3b, "
        "1 seed(s); runs under /tmp/nonexistent-plan/runs"
    )
    assert lines[6] == "[  1/20] sft       to run runs/qwen2.5-vl-3b/vision-r1-science/seed0/1-sft-vanilla"
    assert len(lines) == 6 + 20


def test_reproduce_shortens_any_experiment_by_recipe_and_refuses_an_unknown_one(tmp_path):
    result = runner.invoke(
        app,
        [
            "reproduce",
            "--table",
            "3",
            "--recipe",
            "SFT",
            "--recipe",
            "SCALe-SFT",
            "--dry-run",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[:2] == [
        "SFT: sft-vanilla (sft, ${TRAIN}, loss.mode=vanilla)",
        "SCALe-SFT: sft-scale (sft, ${TRAIN}, loss.mode=scale)",
    ]
    assert "table3: 8 stages (4 training or rating, 4 evaluations; 4 independent chains)" in result.output
    result = runner.invoke(
        app, ["reproduce", "--table", "3", "--recipe", "SCALE-SFT", "--dry-run", "--out", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: table3: --recipe SCALE-SFT: not among its recipes (SFT, SFT-FW, SCALe-SFT, GRPO-FW, SCALe-GRPO)"
    )
    assert not tmp_path.joinpath("runs").exists()


def test_quick_shortens_every_stage_of_any_experiment_even_a_recipe_that_sets_its_steps(tmp_path):
    """staged-tiny's recipes set max_steps per stage; --quick's settings come after them."""
    from scale_repro.experiments.planner import experiment_path
    from scale_repro.experiments.runner import RunOptions, load, run_experiment

    options = RunOptions(tmp_path, dry_run=True, quick=True, seeds=1)
    path = experiment_path(name="staged-tiny")
    _, spec = load(path, options)
    stages = run_experiment(path, options, echo=lambda *_: None, spec=spec)["stages"]
    steps = {(s.kind, s.config.max_steps) for s in stages if s.kind in ("sft", "grpo")}
    assert steps == {("sft", 3), ("grpo", 1)}
    assert {s.config.limit for s in stages if s.kind == "eval"} == {3}
    assert {s.config.k for s in stages if s.kind == "pass_rate"} == {2}
    assert spec.data["synth"]["n_train"] == 16 and spec.data["capabilities"]["n_per_capability"] == 4
