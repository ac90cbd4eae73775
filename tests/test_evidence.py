import json
import math

import pytest

from scale_repro.evidence import chains, load_evidence, plan_evidence, prepare_data, shorten
from scale_repro.evidence_report import paired_interval
from scale_repro.pipeline import experiment_path

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
    assert len(spec.seeds) >= 5 and {"SFT", "SFT-FW", "SCALe-SFT", "GRPO", "SCALe-GRPO"} <= set(
        spec.configurations
    )
    spec = shorten(spec, seeds=2, quick=True)
    data_dirs = prepare_data(spec, tmp_path / "data", echo=lambda m: None)
    assert sorted(data_dirs) == [5.0, 20.0, 80.0]
    stages = plan_evidence(spec, tmp_path, data_dirs)
    # Main ratio: 3 SFT modes x 2 seeds, GRPO from vanilla and SCALe, one evaluation each of the
    # 5 configurations; sweep: 2 ratios x 2 modes x 2 seeds, each SFT + evaluation.
    kinds = [s.kind for s in stages]
    assert (kinds.count("sft"), kinds.count("grpo"), kinds.count("eval")) == (6 + 8, 4, 10 + 8)
    groups = chains(stages)
    assert len(groups) == kinds.count("sft")
    assert sorted(id(s) for g in groups for s in g) == sorted(id(s) for s in stages)
    for group in groups:
        assert group[0].kind == "sft"
        inside = {s.run_dir for s in group}
        assert all(need in inside for s in group for need in s.needs)
    # Every ratio shares the test questions: only the training traces differ.
    tests = {r: (d / "iconqa_test").is_dir() for r, d in data_dirs.items()}
    assert all(tests.values())
    import datasets

    questions = {
        r: datasets.load_from_disk(str(d / "iconqa_test"))["test"]["question"] for r, d in data_dirs.items()
    }
    assert questions[5.0] == questions[20.0] == questions[80.0]
    lengths = {r: len(json.loads((d / "train.json").read_text())[0]["conversations"][1]["value"].split())
               for r, d in data_dirs.items()}  # fmt: skip
    assert lengths[5.0] < lengths[20.0] < lengths[80.0]


def test_bad_experiment_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    text = experiment_path(name="synthetic").read_text()
    path.write_text(text.replace("configurations: [SFT, SFT-FW,", "configurations: [SFT, SFT-XX,"))
    with pytest.raises(ValueError, match=r"bad.yaml: unknown configuration\(s\) \['SFT-XX'\]"):
        load_evidence(path)
    path.write_text(text.replace("  grid: 2", "  grids: 2"))
    with pytest.raises(ValueError, match="bad.yaml: data: .*grids"):
        load_evidence(path)


@pytest.mark.slow
def test_one_seed_few_steps_experiment_runs_in_parallel_workers(tmp_path, tiny_paths):
    from typer.testing import CliRunner

    from scale_repro.cli import app

    result = CliRunner().invoke(
        app,
        ["reproduce", "--experiment", "synthetic", "--quick", "--seeds", "1", "--jobs", "2",
         "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "results")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    results = tmp_path / "results"
    summary = json.loads((results / "summary.json").read_text())
    model = summary["models"]["tiny-llava-next-seeing-quick"]  # --quick: the base's 4-step counterpart
    assert list(model["configurations"]) == ["SFT", "SFT-FW", "SCALe-SFT", "GRPO", "SCALe-GRPO"]
    assert all(c["accuracy"]["n"] == 1 for c in model["configurations"].values())
    assert [s["ratio"] for s in model["sweep"]] == [5.0, 20.0, 80.0]
    assert {(c["treatment"], c["control"]) for c in model["comparisons"]} == {
        ("SCALe-SFT", "SFT"), ("SFT-FW", "SFT"), ("SCALe-SFT", "SFT-FW"), ("SCALe-GRPO", "GRPO")
    }  # fmt: skip
    rows = (results / "runs.csv").read_text().splitlines()
    assert len(rows) == 1 + 5 + 4  # header, main configurations, sweep (2 ratios x 2 modes)
    run = json.loads((results / "run.json").read_text())
    assert run["command"].startswith("scale reproduce --experiment synthetic") and run["jobs"] == 2
    assert run["stages"]["failed"] == 0 and run["environment"]["packages"]["torch"]
    assert run["bases"]["tiny-llava-next-seeing-quick"]["perception"]["n"] == 8
    markdown = (results / "evidence.md").read_text()
    assert "Base `tiny-llava-next-seeing-quick`: the perceiving recipe for 4 steps" in markdown
    assert "| answer contradicts trace (%) |" in markdown
    assert "| SCALe-SFT − SFT | accuracy | 1 |" in markdown
    for plot in ("segment_losses.png", "accuracy.png", "ratio_sweep.png"):
        assert (results / plot).stat().st_size > 0
    # Running the same command again finds every stage finished.
    again = CliRunner().invoke(
        app,
        ["reproduce", "--experiment", "synthetic", "--quick", "--seeds", "1", "--jobs", "1",
         "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "results")],
    )  # fmt: skip
    assert again.exit_code == 0
    assert json.loads((results / "run.json").read_text())["stages"]["ran"] == 0


def test_quick_runs_swap_a_perceiving_base_for_its_few_step_counterpart():
    spec = load_evidence(experiment_path(name="synthetic"))
    spec.models = ["small-llava-next-seeing", "tiny-llava-next-seeing", "tiny-gemma3"]
    assert shorten(spec, quick=True).models == [
        "tiny-llava-next-seeing-quick", "tiny-llava-next-seeing-quick", "tiny-gemma3"
    ]  # fmt: skip
