"""The one planner: experiments as recipes of stages (the paper's tables from YAML recipes),
shared prefixes, the skip identity, and the stage lifecycle's refusals."""

from pathlib import Path

import pytest
import yaml

from scale_repro.experiments.planner import (
    PAPER_RECIPES,
    describe_recipes,
    experiment_path,
    load_experiment,
    load_recipe_library,
    paper_configuration,
    plan,
)
from scale_repro.runs.rundir import Manifest, config_hash


@pytest.fixture
def experiment(tmp_path):
    return load_experiment(experiment_path(name="demo"), {"SYNTH": str(tmp_path / "synth")})


def test_paper_recipes_expand_into_shared_stages(experiment, tmp_path):
    experiment.models = ["tiny-gemma3"]
    stages = plan(experiment, tmp_path / "runs")
    kinds = [s.kind for s in stages]
    # 3 SFT losses, 3 GRPO runs, and 7 configurations x 2 data sets evaluated.
    assert (kinds.count("sft"), kinds.count("grpo"), kinds.count("eval")) == (3, 3, 14)
    seed_dir = tmp_path / "runs" / "tiny-gemma3" / "synth" / "seed0"
    grpo = next(s for s in stages if s.kind == "grpo" and "sft-scale" in str(s.run_dir))
    assert grpo.run_dir == seed_dir / "1-sft-scale" / "2-grpo"
    assert grpo.config.model == str(seed_dir / "1-sft-scale") and grpo.needs == [seed_dir / "1-sft-scale"]
    sft = next(s for s in stages if s.run_dir == seed_dir / "1-sft-fixed")
    assert sft.config.loss.mode == "fixed" and sft.config.data.spec == str(tmp_path / "synth")
    # Every stage comes after the one it needs.
    position = {s.run_dir: i for i, s in enumerate(stages)}
    assert all(position[need] < position[s.run_dir] for s in stages for need in s.needs)
    evaluations = {
        (s.config.labels["configuration"], s.config.labels["dataset"]): s for s in stages if s.kind == "eval"
    }
    assert len(evaluations) == 14
    assert evaluations["Base", "IconQA"].run_dir == tmp_path / "runs" / "tiny-gemma3" / "base" / "eval-IconQA"
    assert evaluations["Base", "IconQA"].config.model == "tiny-gemma3"
    assert evaluations["SCALe-GRPO", "ScienceQA"].config.model == str(seed_dir / "1-sft-scale" / "2-grpo")
    assert evaluations["SCALe-GRPO", "ScienceQA"].config.task == "synthetic-scienceqa"


def test_finished_stage_with_same_config_is_skipped_and_changed_config_is_not(experiment, tmp_path):
    experiment.models = ["tiny-gemma3"]
    sft = next(s for s in plan(experiment, tmp_path / "runs") if s.kind == "sft")
    assert not sft.finished()
    from scale_repro.stages.lifecycle import manifest_config

    Manifest(sft.run_dir, "sft", manifest_config(sft.config)).finish()
    assert sft.finished()
    # Labels say how a report names the run, not what it computes.
    sft.config.labels = {"configuration": "renamed"}
    assert sft.finished()
    experiment.sft["set"] = list(experiment.sft.get("set", [])) + ["max_steps=41"]
    changed = next(s for s in plan(experiment, tmp_path / "runs") if s.run_dir == sft.run_dir)
    assert not changed.finished()
    assert config_hash(changed.config) != config_hash(sft.config)


def test_paper_tables_plan_from_yaml_recipes(tmp_path):
    for table, n_eval, n_sft, n_grpo in (
        (1, 3 * 2 * 5, 3 * 2 * 2, 3 * 2 * 2),
        (2, 3 * 2 * 4, 3 * 2 * 2, 3 * 2 * 2),
        (3, 1 * 2 * 5, 1 * 2 * 3, 1 * 2 * 2),
    ):
        experiment = load_experiment(experiment_path(table))
        stages = plan(experiment, tmp_path)
        kinds = [s.kind for s in stages]
        assert (kinds.count("eval"), kinds.count("sft"), kinds.count("grpo")) == (n_eval, n_sft, n_grpo)
    text = describe_recipes(load_experiment(experiment_path(1)))
    assert text.splitlines()[0] == "Base: the model as it is (evaluated only)"
    assert "SCALe-GRPO: sft-scale (sft, ${TRAIN}, loss.mode=scale) -> grpo (grpo, ${TRAIN})" in text


def test_chains_of_stages_name_the_paper_configuration():
    assert list(load_recipe_library(PAPER_RECIPES)) == [
        "Base",
        "SFT",
        "SFT-FW",
        "SCALe-SFT",
        "GRPO",
        "GRPO-FW",
        "SCALe-GRPO",
    ]
    assert paper_configuration([]) == "Base"
    assert paper_configuration([("sft", "fixed")]) == "SFT-FW"
    assert paper_configuration([("sft", "scale"), ("grpo", None)]) == "SCALe-GRPO"
    assert paper_configuration([("grpo", None)]) is None


def write(tmp_path, **data):
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_experiment_file_errors_name_the_file_and_the_recipe(tmp_path):
    base = {
        "name": "x",
        "models": ["tiny-gemma3"],
        "seeds": [0],
        "datasets": [{"name": "D", "train": "/data", "task": "synthetic-iconqa", "data": "/data"}],
    }
    with pytest.raises(ValueError, match=r"experiment.yaml: a list of recipes needs recipes_from"):
        load_experiment(write(tmp_path, **base, recipes=["SFT"]))
    with pytest.raises(
        ValueError, match=r"unknown recipe\(s\) \['SFT-XX'\]; .*balanced-thinking.yaml defines"
    ):
        load_experiment(write(tmp_path, **base, recipes=["SFT-XX"], recipes_from=str(PAPER_RECIPES)))
    with pytest.raises(
        ValueError, match="recipe R, stage 1: method must be one of sft, grpo, pass_rate, got 'dpo'"
    ):
        load_experiment(write(tmp_path, **base, recipes={"R": [{"name": "a", "method": "dpo"}]}))
    with pytest.raises(ValueError, match="recipe R ends with a pass_rate stage"):
        load_experiment(write(tmp_path, **base, recipes={"R": [{"name": "a", "method": "pass_rate"}]}))
    with pytest.raises(ValueError, match="baseline 'M' is not one of the recipes"):
        load_experiment(write(tmp_path, **base, baseline="M", recipes={"R": []}))
    no_data = dict(base, datasets=[{"name": "D", "train": "/data", "task": "synthetic-iconqa"}])
    with pytest.raises(
        ValueError, match="evaluation D: task synthetic-iconqa has no copy on the hub; give its data"
    ):
        load_experiment(write(tmp_path, **no_data, recipes={"R": []}))
    unset = load_experiment(
        write(tmp_path, **base, recipes={"R": [{"name": "a", "method": "sft", "data": "${NOPE}"}]})
    )
    with pytest.raises(ValueError, match=r"recipe R, stage 1 \(a\): \$\{NOPE\} is not set here"):
        plan(unset, tmp_path / "runs")


def test_planner_variables_do_not_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAIN", "/from/the/shell")
    monkeypatch.setenv("MY_DATA", "/my/data")
    path = write(
        tmp_path,
        name="x",
        models=["tiny-gemma3"],
        seeds=[0],
        datasets=[{"name": "D", "train": "${MY_DATA}", "task": "synthetic-iconqa", "data": "${MY_DATA}"}],
        recipes={"R": [{"name": "a", "method": "sft"}]},
    )
    (sft, _) = plan(load_experiment(path), tmp_path / "runs")
    assert sft.config.data.spec == "/my/data" and sft.run_dir == tmp_path / "runs/tiny-gemma3/data/seed0/1-a"
    assert Path(sft.config.output_dir) == sft.run_dir


def test_no_import_cycle_between_modules():
    """Every scale_repro import, at module level or inside a function, follows one direction."""
    import ast

    package = Path(__file__).resolve().parents[1] / "scale_repro"
    graph: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        name = ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__")
        graph[name] = {
            node.module
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("scale_repro")
        }
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for dependency in sorted(graph.get(module, ())):
            assert state.get(dependency) != "open", " -> ".join([*trail, dependency])
            if dependency not in state:
                visit(dependency, [*trail, dependency])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


@pytest.mark.slow
def test_two_experiments_over_one_runs_directory_both_end_well(tmp_path, synth_dir, tiny_paths):
    """Two `scale reproduce` over one --out, a moment apart: neither fails; a stage the other
    holds is waited for and taken as finished, so every stage is trained once."""
    import os
    import subprocess
    import sys
    import time

    from scale_repro.runs.rundir import read_manifest

    experiment = tmp_path / "race.yaml"
    experiment.write_text(
        yaml.safe_dump(
            {
                "name": "race",
                "models": ["tiny-qwen2.5-vl"],
                "datasets": [
                    {
                        "name": "ScienceQA",
                        "train": str(synth_dir),
                        "task": "synthetic-scienceqa",
                        "data": str(synth_dir),
                    }
                ],
                "recipes_from": "configs/recipes/balanced-thinking.yaml",
                "recipes": ["SCALe-SFT"],
                "seeds": [0],
                "sft": {"set": ["max_steps=12", "per_device_train_batch_size=2", "save_steps=1000"]},
                "eval": {"set": ["max_new_tokens=16", "limit=3"]},
            }
        )
    )
    command = [
        sys.executable,
        "-m",
        "scale_repro.cli",
        "reproduce",
        "--experiment",
        str(experiment),
        "--out",
        str(tmp_path / "runs"),
        "--results",
        str(tmp_path / "report"),
    ]
    first = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ
    )
    time.sleep(2.0)
    second = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ
    )
    outputs = [p.communicate(timeout=900)[0] for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs[1][-3000:] + outputs[0][-3000:]
    assert not any("FAILED" in o or "Traceback" in o for o in outputs)
    sft = next((tmp_path / "runs").rglob("1-sft-scale"))
    manifest = read_manifest(sft)
    assert manifest["status"] == "finished" and len(manifest["attempts"]) == 1  # trained once
    assert any("running elsewhere, waiting" in o for o in outputs), outputs
