import json

import pytest


@pytest.mark.slow
def test_quick_demo_runs_end_to_end(tmp_path, tiny_paths):
    from scale_repro.experiments.demo import run_demo

    summary = run_demo(tmp_path / "demo", ["tiny-llava-next"], quick=True, echo=lambda *_: None)
    assert summary["failed"] == [] and summary["blocked"] == []
    # Matrix: 3 SFT, 3 GRPO, 14 evaluations; shortened evidence: SFT and SCALe-SFT, each evaluated.
    assert len(summary["ran"]) == 3 + 3 + 14 + 4
    report = (tmp_path / "demo" / "report" / "report.md").read_text()
    assert "| tiny-llava-next | ScienceQA |" in report
    assert "![grpo_diagnostics.png](grpo_diagnostics.png)" in report  # its 3 GRPO runs' diagnostics
    assert (tmp_path / "demo" / "report" / "grpo_diagnostics.png").stat().st_size > 0
    metrics = json.loads(next((tmp_path / "demo" / "runs").rglob("metrics.json")).read_text())
    assert metrics["n"] == 3
    evidence = (tmp_path / "demo" / "evidence" / "report" / "evidence.md").read_text()
    assert "| SCALe-SFT − SFT | accuracy | 1 |" in evidence
    again = run_demo(tmp_path / "demo", ["tiny-llava-next"], quick=True, echo=lambda *_: None)
    assert again["ran"] == [] and len(again["skipped"]) == 24
