import json
import math
from pathlib import Path

import pytest

from scale_repro.experiments.evidence import (
    load_evidence,
    plan_evidence,
    prepare_capabilities,
    prepare_data,
    shorten,
)
from scale_repro.experiments.planner import experiment_path
from scale_repro.experiments.reports.stats import paired_interval
from scale_repro.experiments.runner import chains

# scipy.stats.t.ppf(0.975, df): the two-sided 95 % quantiles used below.
T975 = {2: 4.302652729749464, 4: 2.7764451051977987}


def test_paired_interval_on_fixed_inputs():
    treatment = {0: 0.50, 1: 0.60, 2: 0.70}
    control = {0: 0.40, 1: 0.40, 2: 0.50}
    interval = paired_interval(treatment, control)
    assert interval.n == 3
    assert interval.differences == pytest.approx((0.1, 0.2, 0.2))
    assert interval.mean == pytest.approx(1 / 6)
    sd = math.sqrt(((0.1 - 1 / 6) ** 2 + 2 * (0.2 - 1 / 6) ** 2) / 2)
    assert interval.sd == pytest.approx(sd)
    half = T975[2] * sd / math.sqrt(3)
    assert (interval.low, interval.high) == pytest.approx((1 / 6 - half, 1 / 6 + half))
    assert (interval.low, interval.high) == pytest.approx((0.0232449, 0.3100884), abs=1e-6)
    assert interval.verdict() == "higher (interval above 0)"
    assert interval.text() == "+16.7 [+2.3, +31.0]"


def test_paired_interval_pairs_by_seed_only():
    # Seed 9 ran only under the treatment: it must not count.
    treatment = {0: 0.30, 1: 0.35, 2: 0.40, 3: 0.30, 4: 0.25, 9: 1.0}
    control = {0: 0.30, 1: 0.30, 2: 0.45, 3: 0.30, 4: 0.30}
    interval = paired_interval(treatment, control)
    assert interval.n == 5 and interval.differences == pytest.approx((0.0, 0.05, -0.05, 0.0, -0.05))
    assert interval.mean == pytest.approx(-0.01)
    sd = math.sqrt((0.01**2 * 2 + 0.06**2 + 0.04**2 * 2) / 4)
    assert interval.sd == pytest.approx(sd)
    assert interval.low == pytest.approx(-0.01 - T975[4] * sd / math.sqrt(5))
    assert interval.verdict() == "no clear difference (interval includes 0)"


def test_paired_interval_edge_cases():
    one = paired_interval({0: 0.5}, {0: 0.25})
    assert (one.n, one.mean, one.sd, one.low, one.high) == (1, 0.25, None, None, None)
    assert one.verdict() == "too few seeds for an interval"
    assert paired_interval({0: 0.5}, {1: 0.5}) is None
    lower = paired_interval({0: 0.1, 1: 0.2, 2: 0.15}, {0: 0.5, 1: 0.5, 2: 0.5})
    assert lower.mean == pytest.approx(-0.35) and lower.sd == pytest.approx(0.05)
    assert lower.high == pytest.approx(-0.35 + T975[2] * 0.05 / math.sqrt(3))
    assert lower.verdict() == "lower (interval below 0)"
    same = paired_interval({0: 0.4, 1: 0.4, 2: 0.4}, {0: 0.4, 1: 0.4, 2: 0.4})
    assert (same.mean, same.sd, same.low, same.high) == (0.0, 0.0, 0.0, 0.0)


def test_experiment_file_plans_independent_chains(tmp_path):
    spec = load_evidence(experiment_path(name="synthetic"))
    assert len(spec.seeds) >= 5 and {
        "SFT",
        "SFT-FW",
        "SCALe-SFT",
        "GRPO",
        "SCALe-GRPO",
        "Staged",
        "Merged",
    } <= set(spec.configurations)
    spec = shorten(spec, seeds=2, quick=True)
    data_dirs = prepare_data(spec, tmp_path / "data", echo=lambda m: None)
    assert sorted(data_dirs) == [5.0, 20.0, 80.0]
    stages = plan_evidence(
        spec, tmp_path, data_dirs, prepare_capabilities(spec, tmp_path / "data", echo=print)
    )
    # Main ratio, 2 seeds: 3 SFT modes; GRPO from vanilla and from SCALe; Merged (1 GRPO stage)
    # and Staged (3) after the same vanilla SFT; one evaluation for each of the 7 configurations.
    # Sweep: 5x and 80x, 2 modes x 2 seeds; truncation: 80x, 2 modes x 2 seeds; each SFT + eval.
    # Curves: SFT and SCALe-SFT, seeds 0 and 1, the checkpoint of step 2 (quick: 3 steps, saved every 2).
    kinds = [s.kind for s in stages]
    assert (kinds.count("sft"), kinds.count("grpo"), kinds.count("eval")) == (
        6 + 4 + 8,
        4 + 2 + 6,
        14 + 4 + 8 + 4,
    )
    groups = chains(stages)
    assert len(groups) == kinds.count("sft")
    assert sorted(id(s) for g in groups for s in g) == sorted(id(s) for s in stages)
    for group in groups:
        assert group[0].kind == "sft"
        inside = {s.run_dir for s in group}
        assert all(need in inside for s in group for need in s.needs)
    # Staged and Merged start from the very SFT run the SFT configuration evaluates.
    by_dir = {s.run_dir: s for s in stages}
    staged = [
        s for s in stages if s.kind == "grpo" and s.config.labels["configuration"] in ("Staged", "Merged")
    ]
    assert {s.run_dir.parent.name for s in staged if s.run_dir.name in ("2-perception", "2-merged")} == {
        "1-sft-vanilla"
    }
    perception = next(s for s in staged if s.run_dir.name == "2-perception")
    assert perception.config.data.spec == str(tmp_path / "data" / "capabilities" / "perception.jsonl")
    assert by_dir[perception.needs[0]].config.loss.mode == "vanilla"
    # The truncation arm: its own SFT runs, cut by max_length and trained cut.
    cut = [s for s in stages if s.kind == "sft" and s.run_dir.name.endswith("-cut272")]
    assert sorted(s.run_dir.name for s in cut) == ["1-sft-scale-cut272"] * 2 + ["1-sft-vanilla-cut272"] * 2
    assert all((s.config.max_length, s.config.cut_answers) == (272, "keep") for s in cut)
    assert all(s.run_dir.parent.parent.name == "ratio80" for s in cut)
    # Learning curves: a saved checkpoint evaluated like the final model.
    curves = [s for s in stages if s.kind == "eval" and "step" in s.config.labels]
    assert sorted(s.run_dir.name for s in curves) == ["eval-20x-step2"] * 4
    for curve in curves:
        run = curve.needs[0]
        assert curve.config.model == str(run / "checkpoints" / "checkpoint-2")
        assert curve.config.labels["step"] == 2 and curve.config.labels["seed"] in (0, 1)
        assert (curve.config.task, curve.config.data) == (
            by_dir[run / "eval-20x"].config.task,
            by_dir[run / "eval-20x"].config.data,
        )
    # Every ratio shares the test questions: only the training traces differ.
    tests = {r: (d / "iconqa_test").is_dir() for r, d in data_dirs.items()}
    assert all(tests.values())
    import datasets

    questions = {
        r: datasets.load_from_disk(str(d / "iconqa_test"))["test"]["question"] for r, d in data_dirs.items()
    }
    assert questions[5.0] == questions[20.0] == questions[80.0]
    lengths = {
        r: len(json.loads((d / "train.json").read_text())[0]["conversations"][1]["value"].split())
        for r, d in data_dirs.items()
    }
    assert lengths[5.0] < lengths[20.0] < lengths[80.0]


def test_bad_experiment_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    text = experiment_path(name="synthetic").read_text()
    path.write_text(
        text.replace("configurations: [SFT, SCALe-SFT, SFT-FW,", "configurations: [SFT, SFT-XX, SFT-FW,")
    )
    with pytest.raises(ValueError, match=r"bad.yaml: unknown configuration\(s\) \['SFT-XX'\]"):
        load_evidence(path)
    path.write_text(text.replace("  grid: 2", "  grids: 2"))
    with pytest.raises(ValueError, match="bad.yaml: data: .*grids"):
        load_evidence(path)
    path.write_text(text.replace("recipes:\n  Merged:", "recipes:\n  SFT:"))
    with pytest.raises(ValueError, match=r"bad.yaml: synthetic: recipes \['SFT'\] are already the paper's"):
        load_evidence(path)
    path.write_text(text.replace("[Staged, Merged]]", "[Staged, Merged-XX]]"))
    with pytest.raises(ValueError, match=r"bad.yaml: unknown configuration\(s\) \['Merged-XX'\]"):
        load_evidence(path)
    path.write_text(text.replace("truncation: {ratio: 80, max_length: 272,", "truncation: {ratio: 80,"))
    with pytest.raises(ValueError, match="bad.yaml: truncation needs max_length"):
        load_evidence(path)


def test_learning_curves_need_every_checkpoint_kept(tmp_path):
    spec = shorten(load_evidence(experiment_path(name="synthetic")), seeds=1, quick=True)
    # After --quick's settings, which come after every stage's own.
    spec.overlay["sft"] = [*spec.overlay["sft"], "max_steps=9", "save_steps=2", "save_total_limit=3"]
    data_dirs = prepare_data(spec, tmp_path / "data", echo=lambda m: None)
    with pytest.raises(ValueError, match=r"curves need all 5 checkpoints .* set save_total_limit >= 5"):
        plan_evidence(spec, tmp_path, data_dirs, prepare_capabilities(spec, tmp_path / "data", echo=print))


def test_capability_data_lives_in_the_task_world_and_avoids_its_test_scenes(tmp_path):
    from PIL import Image

    from scale_repro.data.capabilities import describe_scene
    from scale_repro.data.synth import cell_shade, generate_items

    spec = load_evidence(experiment_path(name="synthetic"))
    spec.capabilities = {"n_per_capability": 200}
    config = spec.capability_config()
    assert (config.grid, config.shaded_cells, config.shuffle_choices, tuple(config.shapes)) == (
        2,
        True,
        False,
        ("circle", "square", "triangle"),
    )
    folder = Path(prepare_capabilities(spec, tmp_path, echo=lambda m: None)["CAP"])
    records = [json.loads(line) for line in (folder / "merged.jsonl").read_text().splitlines()]
    assert len(records) == 600
    # The evaluation data's own test scenes (drawn with its settings) are never trained on.
    items = generate_items(spec.synth_config(spec.ratio))
    test = {describe_scene(scene) for split in ("scienceqa", "iconqa") for scene, _ in items[split]}
    assert len(test) == 2 * spec.data["n_test"]
    assert not test & {r["description"] for r in records}
    assert all(r["description"].startswith("A 2x2 grid.") for r in records)
    # Multiple-choice options in the task's fixed order; images on shaded cells.
    perception = [r for r in records if r["capability"] == "perception" and r["kind"] == "color_at"]
    assert all("(A) red\n(B) green\n(C) blue\n(D) yellow" in r["problem"] for r in perception)
    image = Image.open(folder / perception[0]["images"][0]).convert("RGB")
    assert image.getpixel((1, 1)) == cell_shade(0, 0, 2)


def _row(ratio, configuration, seed, accuracy, invalid=0.0, tokens=30.0, step=None):
    return {
        "model": "m",
        "ratio": ratio,
        "configuration": configuration,
        "seed": seed,
        "step": step,
        "accuracy": accuracy,
        "invalid_rate": invalid,
        "inconsistent_rate": 0.0,
        "accuracy_multiple_choice": None,
        "accuracy_fill_in": None,
        "mean_completion_tokens": tokens,
        "train_time_s": None,
        "eval_dir": "x",
    }


def test_report_pairs_every_ratio_and_sizes_the_main_interval():
    from scale_repro.experiments.reports.evidence import summarise, verdicts

    spec = load_evidence(experiment_path(name="synthetic"))
    rows = [_row("20x", "SFT", s, a, tokens=30.0) for s, a in enumerate((0.50, 0.60, 0.70))]
    rows += [
        _row("20x", "SCALe-SFT", s, a, tokens=t)
        for s, (a, t) in enumerate(((0.55, 27.0), (0.62, 27.0), (0.75, 30.0)))
    ]
    rows += [_row("80x", "SFT-cut", s, 0.4, invalid=i) for s, i in enumerate((0.10, 0.20))]
    rows += [_row("80x", "SCALe-SFT-cut", s, 0.4, invalid=i) for s, i in enumerate((0.05, 0.05))]
    curves = [
        _row("20x", "SFT", 0, 0.30, invalid=0.5, step=80),
        _row("20x", "SFT", 1, 0.50, invalid=0.1, step=80),
    ]
    summary = summarise(spec, rows, curves)
    model = summary["models"]["m"]
    assert list(model["ratios"]) == ["20x", "80x"] and list(model["configurations"]) == ["SFT", "SCALe-SFT"]
    found = {(c["ratio"], c["treatment"], c["metric"]): c for c in model["comparisons"]}
    assert sorted({(r, t) for r, t, _ in found}) == [("20x", "SCALe-SFT"), ("80x", "SCALe-SFT-cut")]
    assert found[("20x", "SCALe-SFT", "accuracy")]["mean"] == pytest.approx(0.04)
    assert found[("20x", "SCALe-SFT", "mean_completion_tokens")]["mean"] == pytest.approx(-2.0)
    assert found[("80x", "SCALe-SFT-cut", "invalid_rate")]["differences"] == pytest.approx([-0.05, -0.15])
    # Learning curves: the checkpoints' mean over the seeds with curves, then those seeds' final models.
    assert model["curves"]["SFT"] == [
        {"step": 80, "n": 2, "accuracy": pytest.approx(0.4), "invalid_rate": pytest.approx(0.3)},
        {"step": None, "n": 2, "accuracy": pytest.approx(0.55), "invalid_rate": 0.0},
    ]
    # sd of (0.05, 0.02, 0.05) is sqrt(0.0003); half-width t(2) * sd / sqrt(3) = 4.3 points.
    assert verdicts(summary)[0] == (
        "m, 20x: SCALe-SFT − SFT accuracy +4.0 [-0.3, +8.3] points over 3 seeds: no clear difference "
        "(interval includes 0); half-width 4.3 points, wider than the ±3 the experiment is sized for."
    )


@pytest.mark.slow
def test_one_seed_few_steps_experiment_runs_in_parallel_workers(tmp_path, tiny_paths):
    from typer.testing import CliRunner

    from scale_repro.cli import app

    result = CliRunner().invoke(
        app,
        [
            "reproduce",
            "--experiment",
            "synthetic",
            "--quick",
            "--seeds",
            "1",
            "--jobs",
            "2",
            "--out",
            str(tmp_path / "runs"),
            "--results",
            str(tmp_path / "results"),
        ],
    )
    assert result.exit_code == 0, result.output
    results = tmp_path / "results"
    summary = json.loads((results / "summary.json").read_text())
    model = summary["models"]["tiny-llava-next-seeing-quick"]  # --quick: the base's 4-step counterpart
    assert list(model["configurations"]) == [
        "SFT",
        "SFT-FW",
        "SCALe-SFT",
        "GRPO",
        "SCALe-GRPO",
        "Merged",
        "Staged",
    ]
    assert all(c["accuracy"]["n"] == 1 for c in model["configurations"].values())
    assert list(model["ratios"]["80x"]) == ["SFT", "SCALe-SFT", "SFT-cut", "SCALe-SFT-cut"]
    assert [s["ratio"] for s in model["sweep"]] == [5.0, 20.0, 80.0]
    assert {(c["ratio"], c["treatment"], c["control"]) for c in model["comparisons"]} == {
        ("20x", "SCALe-SFT", "SFT"),
        ("20x", "SFT-FW", "SFT"),
        ("20x", "SCALe-SFT", "SFT-FW"),
        ("20x", "SCALe-GRPO", "GRPO"),
        ("20x", "Staged", "Merged"),
        ("5x", "SCALe-SFT", "SFT"),
        ("80x", "SCALe-SFT", "SFT"),
        ("80x", "SCALe-SFT-cut", "SFT-cut"),
    }
    assert [p["step"] for p in model["curves"]["SCALe-SFT"]] == [2, None]
    rows = (results / "runs.csv").read_text().splitlines()
    # header, 7 configurations at 20x, 2 at 5x, 4 at 80x, 2 checkpoints (learning curves)
    assert len(rows) == 1 + 7 + 2 + 4 + 2
    run = json.loads((results / "run.json").read_text())
    assert run["command"].startswith("scale reproduce --experiment synthetic") and run["jobs"] == 2
    assert run["stages"]["failed"] == 0 and run["environment"]["packages"]["torch"]
    assert run["bases"]["tiny-llava-next-seeing-quick"]["perception"]["n"] == 8
    markdown = (results / "evidence.md").read_text()
    assert "Base `tiny-llava-next-seeing-quick`: the perceiving recipe for 4 steps" in markdown
    assert "| answer contradicts trace (%) | completion tokens |" in markdown
    assert "| 20x | SCALe-SFT − SFT | accuracy | 1 |" in markdown
    assert "| 20x | Staged − Merged | mean_completion_tokens | 1 |" in markdown
    assert "### Learning curves at 20x" in markdown
    plots = (
        "segment_losses.png",
        "accuracy.png",
        "ratio_sweep.png",
        "learning_curves.png",
        "grpo_diagnostics.png",
    )
    for plot in plots:
        assert (results / plot).stat().st_size > 0
    # Running the same command again finds every stage finished.
    again = CliRunner().invoke(
        app,
        [
            "reproduce",
            "--experiment",
            "synthetic",
            "--quick",
            "--seeds",
            "1",
            "--jobs",
            "1",
            "--out",
            str(tmp_path / "runs"),
            "--results",
            str(tmp_path / "results"),
        ],
    )
    assert again.exit_code == 0
    assert json.loads((results / "run.json").read_text())["stages"]["ran"] == 0


def test_quick_runs_swap_a_perceiving_base_for_its_few_step_counterpart():
    spec = load_evidence(experiment_path(name="synthetic"))
    spec.models = ["small-llava-next-seeing", "tiny-llava-next-seeing", "tiny-gemma3"]
    assert shorten(spec, quick=True).models == [
        "tiny-llava-next-seeing-quick",
        "tiny-llava-next-seeing-quick",
        "tiny-gemma3",
    ]
