import json
from pathlib import Path

import pytest

from scale_repro.experiments.reports.tables import build_table, collect, render, write_report
from scale_repro.runs.rundir import atomic_write_json


def make_eval(
    root: Path,
    name: str,
    labels: dict,
    accuracy: float | None,
    invalid: float = 0.0,
    status: str = "finished",
    model: str = "base",
) -> None:
    run = root / name
    atomic_write_json(
        run / "manifest.json",
        {"stage": "eval", "status": status, "config": {"labels": labels, "model": model}},
    )
    if accuracy is not None:
        atomic_write_json(
            run / "metrics.json", {"task": "x", "n": 10, "accuracy": accuracy, "invalid_rate": invalid}
        )


def make_train(root: Path, name: str, stage: str, wall: float, model: str = "tiny") -> Path:
    run = root / name
    atomic_write_json(
        run / "manifest.json",
        {
            "stage": stage,
            "status": "finished",
            "wall_clock_s": wall,
            "config": {"model": model, "loss": {"mode": "scale"}},
        },
    )
    return run


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    m = "gemma-3-4b"
    lab = lambda cfg, seed=0, ds="ScienceQA": {"model": m, "dataset": ds, "configuration": cfg, "seed": seed}  # noqa: E731
    make_eval(root, "base", lab("Base"), 0.70, 0.10)
    make_eval(root, "sft0", lab("SFT", 0), 0.80, 0.05)
    make_eval(root, "sft1", lab("SFT", 1), 0.90, 0.03)
    make_eval(root, "scale0", lab("SCALe-SFT", 0), 0.86, 0.02)
    make_eval(root, "grpo-failed", lab("GRPO", 0), None, status="failed")
    make_eval(root, "icon", lab("SFT", 0, "IconQA"), 0.5, 0.0)
    sft = make_train(root, "train-sft", "sft", 100.0)
    grpo = make_train(root, "train-grpo", "grpo", 600.0, model=str(sft))
    make_eval(root, "timed", lab("SCALe-GRPO", 0, "IconQA"), 0.6, 0.0, model=str(grpo))
    return root


def test_table1_cells_with_seeds_missing_and_failed(runs):
    table = build_table(collect(runs), 1)
    row = table[("gemma-3-4b", "ScienceQA")]
    assert row["Base"].text() == "70.00"
    assert row["SFT"].text() == "85.00 ± 7.07"
    assert row["SCALe-SFT"].text() == "86.00"
    assert row["GRPO"].text() == "failed"
    assert row["SCALe-GRPO"].text() == "not run"


def test_paper_numbers_stand_beside_ours(runs):
    paper = json.loads((Path(__file__).parents[1] / "results" / "paper" / "tables.json").read_text())
    markdown, latex, table_csv = render(collect(runs), 1, paper)
    assert (
        "| gemma-3-4b | ScienceQA | 70.00 (77.68, -7.68) | 85.00 ± 7.07 (85.77, -0.77) | 86.00 (85.92, +0.08) | failed (85.18, –) | not run (86.37, –) |"
        in markdown
    )
    assert r"85.00 $\pm$ 7.07" in latex
    lines = table_csv.splitlines()
    assert lines[0].startswith("model,dataset,configuration,ours_mean")
    assert "gemma-3-4b,ScienceQA,SFT,85.0,7.0710678118654755,2,ok,85.77," in table_csv


def test_table2_reports_invalid_percent(runs):
    row = build_table(collect(runs), 2)[("gemma-3-4b", "ScienceQA")]
    assert row["SFT"].text() == "4.00 ± 1.41"
    assert row["SCALe-SFT"].text() == "2.00"


def test_training_time_adds_sft_under_grpo(runs):
    timed = [r for r in collect(runs) if r["labels"]["configuration"] == "SCALe-GRPO"]
    assert timed[0]["train_time_s"] == 700.0


def test_write_report_outputs(runs, tmp_path):
    summary = write_report(runs, tmp_path / "out")
    assert summary["evaluations"] == 7
    for name in (
        "report.md",
        "table1.tex",
        "table2.csv",
        "table3.csv",
        "weight_schedule.png",
        "accuracy.png",
    ):
        assert (tmp_path / "out" / name).is_file(), name
    assert "| gemma-3-4b | SCALe-GRPO | 700.0 |" in (tmp_path / "out" / "report.md").read_text()


def test_unreadable_runs_are_listed_with_the_reason(runs, tmp_path):
    from scale_repro.runs.rundir import atomic_write_text

    atomic_write_text(runs / "broken-manifest" / "manifest.json", '{"stage": "ev')
    make_eval(
        runs, "broken-metrics", {"model": "m", "dataset": "IconQA", "configuration": "SFT", "seed": 0}, 0.5
    )
    atomic_write_text(runs / "broken-metrics" / "metrics.json", "{not json")
    atomic_write_json(
        runs / "null-config" / "manifest.json", {"stage": "eval", "status": "finished", "config": None}
    )
    # A finished SFT run whose log was cut mid-line by a kill.
    atomic_write_text(
        runs / "train-sft" / "train_log.jsonl", '{"step": 1, "loss_think": 2.0}\n{"step": 2, "lo'
    )
    summary = write_report(runs, tmp_path / "out")
    reasons = {Path(s["dir"]).name: s["reason"] for s in summary["skipped"]}
    assert set(reasons) == {"broken-manifest", "broken-metrics", "null-config", "train-sft"}
    assert reasons["broken-manifest"].startswith("manifest unreadable")
    assert reasons["broken-metrics"].startswith("metrics.json unreadable (JSONDecodeError")
    assert reasons["null-config"] == "manifest unreadable (no config in it)"
    assert reasons["train-sft"].endswith("train_log.jsonl: line 2 is not a log entry")
    text = (tmp_path / "out" / "report.md").read_text()
    assert "4 skipped" in text and "broken-metrics" in text and "null-config" in text


def test_plain_eval_runs_get_labels_from_their_manifests(tmp_path):
    root = tmp_path / "runs"
    sft = root / "sft"
    atomic_write_json(
        sft / "manifest.json",
        {
            "stage": "sft",
            "status": "finished",
            "wall_clock_s": 5.0,
            "config": {"model": "gemma-3-4b", "loss": {"mode": "scale"}},
        },
    )
    grpo = root / "grpo"
    atomic_write_json(
        grpo / "manifest.json",
        {"stage": "grpo", "status": "finished", "wall_clock_s": 7.0, "config": {"model": str(sft)}},
    )
    for name, model, labels in (
        ("e1", sft, {}),
        ("e2", grpo, {}),
        ("e3", "gemma-3-4b", {}),
        ("e4", sft, {"configuration": "SFT-FW"}),
    ):
        atomic_write_json(
            root / name / "manifest.json",
            {
                "stage": "eval",
                "status": "finished",
                "config": {"model": str(model), "task": "scienceqa", "seed": 3, "labels": labels},
            },
        )
        atomic_write_json(root / name / "metrics.json", {"accuracy": 0.5, "invalid_rate": 0.0})
    records = {Path(r["dir"]).name: r for r in collect(root)}
    expected = {"model": "gemma-3-4b", "dataset": "ScienceQA", "seed": 3}
    assert records["e1"]["labels"] == {**expected, "configuration": "SCALe-SFT"}
    assert records["e2"]["labels"] == {**expected, "configuration": "SCALe-GRPO"}
    assert records["e3"]["labels"] == {**expected, "configuration": "Base"}
    assert records["e4"]["labels"] == {**expected, "configuration": "SFT-FW"}  # a given label wins
    assert records["e2"]["train_time_s"] == 12.0


def test_grpo_diagnostics_are_plotted_from_the_train_logs(tmp_path):
    """One figure from every GRPO run's train_log.jsonl; nothing when no GRPO run has logged a step."""
    import json

    from scale_repro.experiments.reports.grpo_curves import grpo_logs, plot_grpo_diagnostics

    assert plot_grpo_diagnostics(tmp_path, tmp_path) == []
    for name, stage in (("a/grpo", "grpo"), ("a/sft", "sft")):
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        (run / "manifest.json").write_text(json.dumps({"stage": stage, "status": "finished"}))
        lines = [
            {"step": s, "reward": 0.1 * s, "entropy": 1.0, "policy/weight_drift": 0.01 * s} for s in (1, 2)
        ]
        (run / "train_log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert list(grpo_logs(tmp_path / "runs")) == ["a/grpo"]
    assert plot_grpo_diagnostics(tmp_path / "runs", tmp_path) == ["grpo_diagnostics.png"]
    assert (tmp_path / "grpo_diagnostics.png").stat().st_size > 0
