from pathlib import Path

import pytest

from scale_repro.pipeline import experiment_path, load_experiment, plan
from scale_repro.rundir import Manifest


@pytest.fixture
def experiment(tmp_path):
    return load_experiment(experiment_path(name="demo"), {"SYNTH": str(tmp_path / "synth")})


def test_plan_expands_configurations_into_shared_stages(experiment, tmp_path):
    experiment.models = ["tiny-gemma3"]
    stages = plan(experiment, tmp_path / "runs")
    kinds = [s.kind for s in stages]
    # 3 SFT losses, 3 GRPO runs, and 7 configurations x 2 data sets evaluated.
    assert kinds.count("sft") == 3 and kinds.count("grpo") == 3 and kinds.count("eval") == 14
    assert kinds == sorted(kinds, key=["sft", "grpo", "eval"].index)
    grpo = next(s for s in stages if s.kind == "grpo" and "sft-scale" in str(s.run_dir))
    assert grpo.config.model == str(tmp_path / "runs" / "tiny-gemma3" / "synth" / "sft-scale" / "seed0")
    assert grpo.needs == [Path(grpo.config.model)]
    labels = {tuple(sorted(s.config.labels.items())) for s in stages if s.kind == "eval"}
    assert len(labels) == 14


def test_finished_stage_with_same_config_is_skipped_and_changed_config_is_not(experiment, tmp_path):
    experiment.models = ["tiny-gemma3"]
    stages = plan(experiment, tmp_path / "runs")
    sft = stages[0]
    assert not sft.finished()
    config = {k: v for k, v in vars(sft.config).items()}
    from scale_repro.config import to_dict

    data = {k: v for k, v in to_dict(sft.config).items() if k != "output_dir"}
    Manifest(sft.run_dir, "sft", data).finish()
    assert sft.finished()
    experiment.sft["set"] = list(experiment.sft.get("set", [])) + ["max_steps=41"]
    changed = plan(experiment, tmp_path / "runs")[0]
    assert changed.run_dir == sft.run_dir and not changed.finished()
    assert config  # the original config was read, not mutated


def test_paper_tables_plan_without_running(tmp_path):
    for table, n_eval in ((1, 3 * 2 * 5), (2, 3 * 2 * 4), (3, 1 * 2 * 5)):
        stages = plan(load_experiment(experiment_path(table)), tmp_path)
        assert sum(s.kind == "eval" for s in stages) == n_eval
