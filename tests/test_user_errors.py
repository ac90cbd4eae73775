"""A user's mistake ends in one line naming the bad value and where it came from, exits
non-zero before any model loads, and leaves nothing on disk."""

import json
import os
import stat

import pytest
from typer.testing import CliRunner

from scale_repro.cli import app
from scale_repro.config import ConfigError, EvalConfig, GRPOConfig, SFTConfig, load_config
from scale_repro.rundir import atomic_write_json, atomic_write_text

runner = CliRunner()


def one_line_error(args: list[str]) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[-1]


@pytest.fixture
def no_model_load(monkeypatch):
    """Any attempt to load a model fails the test: every check must come first."""
    import scale_repro.training as training

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the settings were checked")

    monkeypatch.setattr(training, "load_model_and_processor", refuse)


def bad_data_file(tmp_path, kind: str):
    path = tmp_path / "data.json"
    if kind == "binary":
        path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    else:  # records that all fail validation
        path.write_text(json.dumps([{"id": "r1", "image": "a.png", "conversations": [
            {"from": "human", "value": "<image>q"}, {"from": "gpt", "value": "no tags at all"}]}]))  # fmt: skip
    return path


SFT = ["sft", "--model", "tiny-llava-next"]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--set", "lora.r=abc"], "--set lora.r=abc: lora.r must be int, got 'abc'"),
        (
            ["--set", "loss.mode=scal"],
            "--set loss.mode=scal: loss.mode must be 'scale' | 'fixed' | 'vanilla'",
        ),
        (["--loss", "scal"], "option --mode=scal: loss.mode must be"),
        (["--set", "nonsense=1"], "--set nonsense=1: unknown setting 'nonsense'"),
        (["--max-steps", "0"], "option --max-steps=0: max_steps must be a positive number of steps"),
        (["--max-steps", "-5"], "option --max-steps=-5: max_steps must be a positive number of steps"),
        (["--set", "learning_rate=-1e-4"], "--set learning_rate=-1e-4: learning_rate must be positive"),
        (["--set", "lr_scheduler_type=cosin"], "lr_scheduler_type must be 'linear' | 'cosine'"),
    ],
)
def test_bad_settings_name_the_value_and_its_source(tmp_path, synth_dir, no_model_load, args, expected):
    out = tmp_path / "run"
    line = one_line_error([*SFT, "--data", synth_dir, "--output-dir", out, *args])
    assert expected in line
    assert not out.exists()


def test_a_bad_value_in_a_recipe_names_the_recipe(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("lora:\n  r: sixteen\n")
    with pytest.raises(ConfigError, match=rf"recipe {recipe}: lora.r must be int, got 'sixteen'"):
        load_config(SFTConfig, [recipe])


def test_values_yaml_reads_as_text_are_taken_when_they_spell_the_type():
    # YAML 1.1 reads 1e-4 (the README's own value) as a string; it is a float.
    assert load_config(SFTConfig, None, ["learning_rate=1e-4"]).learning_rate == 1e-4
    assert load_config(GRPOConfig, None, ["temperature=1"]).temperature == 1.0
    with pytest.raises(ConfigError, match="seed must be int, got 1.5"):
        load_config(SFTConfig, None, ["seed=1.5"])
    with pytest.raises(ConfigError, match="data.strict must be bool, got 'yes please'"):
        load_config(SFTConfig, None, ["data.strict=yes please"])


def test_the_model_recipe_applies_whichever_way_the_model_is_named():
    by_option = load_config(SFTConfig, None, [], model="tiny-llava-next")
    by_set = load_config(SFTConfig, None, ["model=tiny-llava-next"])
    assert by_option.lora.enabled is False and by_set.lora.enabled is False
    assert by_option == by_set


@pytest.mark.parametrize("limit", ["0", "-3"])
def test_eval_limit_must_be_positive(tmp_path, synth_dir, limit):
    out = tmp_path / "eval"
    line = one_line_error(["eval", "--model", "tiny-gemma3", "--task", "synthetic-iconqa", "--data", synth_dir,
                           "--limit", limit, "--output-dir", out])  # fmt: skip
    assert f"option --limit={limit}: limit must be at least 1" in line
    assert not out.exists()
    with pytest.raises(ConfigError):
        load_config(EvalConfig, None, [f"limit={limit}"])


def test_missing_output_dir(synth_dir, no_model_load):
    assert one_line_error([*SFT, "--data", synth_dir]) == "error: --output-dir is required"


@pytest.mark.parametrize(
    "kind, expected", [("binary", "not a text file"), ("invalid", "no valid training examples")]
)
def test_unusable_data_files(tmp_path, no_model_load, kind, expected):
    data = bad_data_file(tmp_path, kind)
    out = tmp_path / "run"
    line = one_line_error([*SFT, "--data", data, "--output-dir", out])
    assert str(data) in line and expected in line
    assert not out.exists()


def test_output_dir_that_is_a_file_or_under_one(tmp_path, synth_dir, no_model_load):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert "is a file, not a directory" in one_line_error(
        [*SFT, "--data", synth_dir, "--output-dir", blocker]
    )
    line = one_line_error([*SFT, "--data", synth_dir, "--output-dir", blocker / "run"])
    assert f"{blocker} is a file, not a directory" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_output_dir_not_writable(tmp_path, synth_dir, no_model_load):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    assert "cannot write in" in one_line_error([*SFT, "--data", synth_dir, "--output-dir", folder / "run"])


def fake_run(path, stage: str, status: str = "finished", config_hash: str = "0123456789abcdef"):
    atomic_write_json(path / "manifest.json", {"stage": stage, "status": status, "config_hash": config_hash,
                                              "config": {}})  # fmt: skip


def test_rerun_with_a_changed_config_refuses(tmp_path, synth_dir, no_model_load):
    fake_run(tmp_path / "run", "sft")
    line = one_line_error([*SFT, "--data", synth_dir, "--output-dir", tmp_path / "run"])
    assert "holds a run made with a different config" in line and "--force" in line


def test_grpo_into_an_sft_run_refuses(tmp_path, synth_dir, no_model_load):
    fake_run(tmp_path / "run", "sft")
    line = one_line_error(["grpo", "--model", "tiny-llava-next", "--data", synth_dir, "--output-dir", tmp_path / "run",
                           "--set", "num_generations=8"])  # fmt: skip
    assert "holds a 'sft' run, not 'grpo'" in line


def test_an_unreadable_manifest_is_never_overwritten(tmp_path, synth_dir, no_model_load):
    atomic_write_text(tmp_path / "run" / "manifest.json", '{"stage": "sft", "status": "fini')
    line = one_line_error([*SFT, "--data", synth_dir, "--output-dir", tmp_path / "run"])
    assert "manifest.json is unreadable" in line and "--force" in line
    assert (tmp_path / "run" / "manifest.json").read_text() == '{"stage": "sft", "status": "fini'


def test_a_bad_generation_batch_is_checked_first(tmp_path, synth_dir, no_model_load):
    line = one_line_error(["grpo", "--model", tmp_path / "sft-run", "--data", synth_dir, "--output-dir",
                           tmp_path / "g", "--set", "generation_batch_size=12"])  # fmt: skip
    assert line == (
        "error: generation_batch_size 12 must be a multiple of num_generations 8 and of "
        "per_device_train_batch_size 4 x 1 process(es) = 4; the least that is: 8 (or leave it unset)"
    )
    assert not (tmp_path / "g").exists()


def test_validate_on_a_folder_says_it_is_a_folder(tmp_path):
    line = one_line_error(["data", "validate", tmp_path, "--format", "vision-r1"])
    assert "is a folder" in line


def test_files_get_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o644
