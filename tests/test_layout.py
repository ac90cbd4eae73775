"""What a newcomer leans on: every shipped YAML loads, every command's --help works, the
package's layers import only downwards, the reports run without torch, and every TRL setting a
recipe makes reaches TRL's own arguments."""

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.main import get_command
from typer.testing import CliRunner

from scale_repro.cli import app
from scale_repro.config import GRPOConfig, SFTConfig, load_config
from scale_repro.yaml_files import CONFIGS_DIR, REPO_ROOT

PACKAGE = REPO_ROOT / "scale_repro"
runner = CliRunner()


def shipped(folder: str, suffix: str = ".yaml") -> list[Path]:
    return sorted((CONFIGS_DIR / folder).glob(f"*{suffix}"))


def test_every_shipped_config_file_is_one_a_test_below_loads():
    """A new file under configs/ must be added to one of the loaders below."""
    loaded = {"experiments", "recipes", "models", "sft", "grpo", "data", "accelerate", "deepspeed"}
    assert {p.name for p in CONFIGS_DIR.iterdir() if p.is_dir()} == loaded


@pytest.mark.parametrize("path", shipped("experiments"), ids=lambda p: p.stem)
def test_every_experiment_file_loads_and_plans(path, tmp_path, monkeypatch):
    from scale_repro.experiments.runner import RunOptions, load, run_experiment

    monkeypatch.setenv("VISION_R1_DIR", str(tmp_path / "vision-r1"))
    monkeypatch.setenv("CAPCURRICULUM_DIR", str(tmp_path / "capcurriculum"))
    options = RunOptions(tmp_path / "out", dry_run=True, seeds=1)
    _, spec = load(path, options)
    result = run_experiment(path, options, echo=lambda *_: None, spec=spec)
    assert result["stages"] and all(stage.config.output_dir for stage in result["stages"])
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_the_paper_recipes_load():
    from scale_repro.experiments.planner import load_recipe_library

    assert list(load_recipe_library()) == [
        "Base",
        "SFT",
        "SFT-FW",
        "SCALe-SFT",
        "GRPO",
        "GRPO-FW",
        "SCALe-GRPO",
    ]


@pytest.mark.parametrize(
    "path", [*shipped("models"), *shipped("sft"), *shipped("grpo")], ids=lambda p: f"{p.parent.name}/{p.stem}"
)
def test_every_training_recipe_loads_with_its_stage(path):
    stages = {"sft": [SFTConfig], "grpo": [GRPOConfig], "models": [SFTConfig, GRPOConfig]}[path.parent.name]
    for config_class in stages:
        config = load_config(config_class, [path])
        recipe = yaml.safe_load(path.read_text())
        for key, value in recipe.items():
            if not isinstance(value, dict):
                assert getattr(config, key) == value or str(getattr(config, key)) == str(value), key


@pytest.mark.parametrize("path", shipped("data"), ids=lambda p: p.stem)
def test_every_data_preset_parses_with_a_known_format(path):
    from scale_repro.data.sources import preset

    found = preset(path.stem)
    assert found["format"] in ("vision-r1", "easyr1") and found["_preset"] == str(path)


@pytest.mark.parametrize("path", shipped("accelerate"), ids=lambda p: p.stem)
def test_every_accelerate_config_loads_with_accelerate(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    deepspeed_file = (config.deepspeed_config or {}).get("deepspeed_config_file")
    assert deepspeed_file is None or (REPO_ROOT / deepspeed_file).is_file()


@pytest.mark.parametrize("path", shipped("deepspeed", ".json"), ids=lambda p: p.stem)
def test_every_deepspeed_config_is_json_deepspeed_reads(path):
    from deepspeed.runtime.config import DeepSpeedConfig  # noqa: F401 - importable where it is used

    config = json.loads(path.read_text())
    assert config["zero_optimization"]["stage"] in (0, 1, 2, 3)


def test_every_lmms_eval_task_file_loads_with_lmms_eval():
    from lmms_eval.utils import load_yaml_config

    tasks = sorted((PACKAGE / "stages" / "lmms_tasks").glob("*.yaml"))
    assert (
        len(tasks) == 4 + 2 * 8
    )  # ScienceQA and IconQA, and the curriculum's eight benchmarks, each in two formats
    for path in tasks:
        config = load_yaml_config(str(path))
        assert callable(config["process_results"]) and config["task"] == path.stem


def _commands(group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name)
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))


COMMANDS = list(_commands(get_command(app)))


def test_the_commands_are_the_ones_the_readme_lists():
    top = sorted(c[0] for c in COMMANDS if len(c) == 1)
    assert top == sorted(
        ["sft", "grpo", "eval", "report", "reproduce", "stage", "demo", "bench", "plan", "models", "data"]
    )
    readme = (REPO_ROOT / "README.md").read_text()
    assert all(f"scale {' '.join(c)}" in readme for c in COMMANDS), [
        c for c in COMMANDS if f"scale {' '.join(c)}" not in readme
    ]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and "Traceback" not in result.output


# The package's layers, lowest first: a module may import its own layer and the ones below.
LAYERS = [
    {"yaml_files", "runs", "method"},
    {"data"},
    {"models"},
    {"config"},
    {"stages"},
    {"experiments"},
    {"sizing"},
    {"cli"},
]


def _layer(module: str) -> int:
    top = module.split(".")[1] if module.startswith("scale_repro.") else module
    return next(i for i, names in enumerate(LAYERS) if top in names)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("scale_repro."):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("scale_repro."))
    return names


def test_no_module_imports_a_layer_above_its_own():
    """The map in the README, held to the code: imports (lazy ones too) only go down."""
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
        if module == "scale_repro":
            continue
        for imported in _imports(path):
            if _layer(imported) > _layer(module):
                upward.append(f"{module} -> {imported}")
    assert upward == []


def test_the_reports_and_the_planner_import_no_torch(tmp_path):
    """Reports read JSON files: they must work (and start fast) without torch."""
    code = (
        "import sys\n"
        "from scale_repro.experiments.reports import curriculum, evidence, stats, tables\n"
        "from scale_repro.experiments import planner\n"
        f"tables.write_report({str(tmp_path)!r}, {str(tmp_path / 'report')!r})\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# TRL's config fields the stage sets itself (run directory, machine), not from the recipe.
SET_BY_THE_STAGE = {"output_dir", "seed", "bf16", "report_to", "deepspeed"}


@pytest.mark.parametrize(
    "stage,recipes",
    [
        ("sft", ["models/qwen2.5-vl-3b.yaml", "sft/scale.yaml"]),
        ("sft", ["models/gemma-3-4b.yaml", "sft/fixed.yaml"]),
        ("grpo", ["models/qwen2.5-vl-3b.yaml", "grpo/default.yaml"]),
        ("grpo", ["models/llava-v1.6-mistral-7b.yaml", "grpo/default.yaml"]),
    ],
)
def test_every_trl_field_a_recipe_sets_reaches_trls_arguments(stage, recipes, tmp_path):
    """Each setting of ours that TRL also has arrives under its name; `trl:` passes the rest."""
    from trl import GRPOConfig as TRLGRPOConfig
    from trl import SFTConfig as TRLSFTConfig

    from scale_repro.stages import grpo, sft

    config_class, trl_class = {"sft": (SFTConfig, TRLSFTConfig), "grpo": (GRPOConfig, TRLGRPOConfig)}[stage]
    extra = ["trl.optim=adafactor", "trl.dataloader_pin_memory=false", "deepspeed=null"]
    config = load_config(config_class, [CONFIGS_DIR / r for r in recipes], extra)
    if stage == "sft":
        args = sft.trl_args(config, tmp_path, bf16=False)
    else:
        args = grpo.trl_args(config, tmp_path, bf16=False, use_vllm=False)
    trl_fields = {f.name for f in dataclasses.fields(trl_class)}
    set_in_recipes = {k for r in recipes for k in yaml.safe_load((CONFIGS_DIR / r).read_text())}
    reaching = sorted(
        (set_in_recipes & trl_fields) - SET_BY_THE_STAGE - {"generation_batch_size", "use_vllm"}
    )
    assert reaching  # the recipes do set TRL fields
    for name in reaching:
        expected = getattr(config, name)
        if name == "vllm_max_model_length" and expected is None:
            expected = config.max_length  # None: the stage's own sequence budget
        assert getattr(args, name) == expected, name
    assert (args.optim, args.dataloader_pin_memory) == ("adafactor", False)  # OptimizerNames is a str enum


def test_a_trl_setting_that_trl_lacks_or_that_has_its_own_name_is_refused(tmp_path):
    from trl import SFTConfig as TRLSFTConfig

    from scale_repro.stages.training import check_trl_section
    from scale_repro.yaml_files import ConfigError

    with pytest.raises(ConfigError, match=r"^trl.optimiser: not a field of TRL's SFTConfig"):
        check_trl_section(load_config(SFTConfig, None, ["trl.optimiser=adamw"]), TRLSFTConfig)
    with pytest.raises(ConfigError, match=r"^trl.learning_rate: learning_rate is a setting of its own here"):
        check_trl_section(load_config(SFTConfig, None, ["trl.learning_rate=0.1"]), TRLSFTConfig)
