"""A user's mistake ends in one line naming the bad value and where it came from, exits
non-zero before any model loads, and leaves nothing on disk."""

import json
import os
import stat

import pytest
from typer.testing import CliRunner

from scale_repro.cli import app
from scale_repro.config import ConfigError, EvalConfig, GRPOConfig, SFTConfig, load_config
from scale_repro.runs.rundir import atomic_write_json, atomic_write_text

runner = CliRunner()


def one_line_error(args: list[str]) -> str:
    """The one ``error:`` line a failed command printed (training progress may surround it)."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    errors = [line[line.index("error: ") :] for line in result.output.splitlines() if "error: " in line]
    assert len(errors) == 1, result.output
    assert "Traceback" not in result.output
    return errors[0]


@pytest.fixture
def no_model_load(monkeypatch):
    """Any attempt to load a model fails the test: every check must come first."""
    import scale_repro.stages.training as training

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the settings were checked")

    monkeypatch.setattr(training, "load_model_and_processor", refuse)


def bad_data_file(tmp_path, kind: str):
    path = tmp_path / "data.json"
    if kind == "binary":
        path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    else:  # records that all fail validation
        path.write_text(
            json.dumps(
                [
                    {
                        "id": "r1",
                        "image": "a.png",
                        "conversations": [
                            {"from": "human", "value": "<image>q"},
                            {"from": "gpt", "value": "no tags at all"},
                        ],
                    }
                ]
            )
        )
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
        (["--max-steps", "0"], "--max-steps must be a positive number of optimizer steps, got 0"),
        (["--max-steps", "-5"], "--max-steps must be a positive number of optimizer steps, got -5"),
        (["--max-steps", "-1"], "--max-steps must be a positive number of optimizer steps, got -1"),
        (["--set", "max_steps=0"], "--set max_steps=0: max_steps must be a positive number of steps"),
        # Every float is finite: inf and nan train to NaN or never end.
        (
            ["--set", "learning_rate=.inf"],
            "--set learning_rate=.inf: learning_rate must be a finite number, got inf",
        ),
        (["--set", "learning_rate=1e999"], "learning_rate must be a finite number, got '1e999'"),
        (
            ["--set", "max_grad_norm=.nan"],
            "--set max_grad_norm=.nan: max_grad_norm must be a finite number, got nan",
        ),
        (["--set", "num_train_epochs=.inf"], "num_train_epochs must be a finite number, got inf"),
        (["--set", "loss.think_start=-.inf"], "loss.think_start must be a finite number, got -inf"),
        (
            ["--set", "learning_rate=1" + "0" * 400],
            "learning_rate must be a finite number",
        ),  # overflows a float
        (
            ["--set", "nonfinite_steps=skip", "--set", "deepspeed=configs/deepspeed/zero2.json"],
            "--set nonfinite_steps=skip: nonfinite_steps skip needs the gradients in this process; under DeepSpeed use stop",
        ),
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
    line = one_line_error(
        [
            "eval",
            "--model",
            "tiny-gemma3",
            "--task",
            "synthetic-iconqa",
            "--data",
            synth_dir,
            "--limit",
            limit,
            "--output-dir",
            out,
        ]
    )
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
    atomic_write_json(
        path / "manifest.json", {"stage": stage, "status": status, "config_hash": config_hash, "config": {}}
    )


def test_rerun_with_a_changed_config_refuses(tmp_path, synth_dir, no_model_load):
    fake_run(tmp_path / "run", "sft")
    line = one_line_error([*SFT, "--data", synth_dir, "--output-dir", tmp_path / "run"])
    assert "holds a run made with a different config" in line and "--force" in line


def test_grpo_into_an_sft_run_refuses(tmp_path, synth_dir, no_model_load):
    fake_run(tmp_path / "run", "sft")
    line = one_line_error(
        [
            "grpo",
            "--model",
            "tiny-llava-next",
            "--data",
            synth_dir,
            "--output-dir",
            tmp_path / "run",
            "--set",
            "num_generations=8",
        ]
    )
    assert "holds a 'sft' run, not 'grpo'" in line


def test_an_unreadable_manifest_is_never_overwritten(tmp_path, synth_dir, no_model_load):
    atomic_write_text(tmp_path / "run" / "manifest.json", '{"stage": "sft", "status": "fini')
    line = one_line_error([*SFT, "--data", synth_dir, "--output-dir", tmp_path / "run"])
    assert "manifest.json is unreadable" in line and "--force" in line
    assert (tmp_path / "run" / "manifest.json").read_text() == '{"stage": "sft", "status": "fini'


def test_a_bad_generation_batch_is_checked_first(tmp_path, synth_dir, no_model_load):
    line = one_line_error(
        [
            "grpo",
            "--model",
            tmp_path / "sft-run",
            "--data",
            synth_dir,
            "--output-dir",
            tmp_path / "g",
            "--set",
            "generation_batch_size=12",
        ]
    )
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


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("recipe", "{path}: not valid YAML: line 3, column 1: expected ',' or ']', but got '<stream end>'"),
        ("data preset", "{path}: not valid YAML: line 3, column 1: expected ',' or ']'"),
        ("experiment", "{path}: not valid YAML: line 3, column 1: expected ',' or ']'"),
    ],
)
def test_yaml_that_does_not_parse_is_one_line_with_its_line(
    tmp_path, synth_dir, no_model_load, kind, expected
):
    path = tmp_path / "broken.yaml"
    path.write_text("model: tiny-qwen2.5-vl\nlora: [r: 16\n")
    args = {
        "recipe": [*SFT, "--data", synth_dir, "--config", path, "--output-dir", tmp_path / "run"],
        "data preset": [*SFT, "--data", path, "--output-dir", tmp_path / "run"],
        "experiment": ["reproduce", "--experiment", path, "--dry-run", "--out", tmp_path / "runs"],
    }[kind]
    line = one_line_error(args)
    assert line.startswith("error: " + expected.format(path=path)), line
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_settings_are_checked_before_torch_is_imported(tmp_path):
    """A bad setting answers in well under a second: no torch, transformers or TRL first."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from scale_repro.cli import app\n"
        "try:\n"
        "    app(['sft', '--set', 'learning_rate=.inf', '--output-dir', sys.argv[1]])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('torch' in sys.modules, 'trl' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True
    )
    assert "learning_rate must be a finite number" in result.stderr
    assert result.stdout.split() == ["False", "False"]


@pytest.mark.slow
@pytest.mark.parametrize("logging_steps", [1, 10])
def test_a_run_that_diverges_stops_and_exports_nothing(tmp_path, synth_dir, logging_steps):
    """A finite setting that still trains to NaN (lr 1e30) stops with one line naming the step,
    whether or not the NaN step is a logged one; the manifest says failed, nothing is exported."""
    out = tmp_path / "run"
    line = one_line_error(
        [
            *SFT,
            "--data",
            synth_dir,
            "--output-dir",
            out,
            "--max-steps",
            "4",
            "--set",
            "learning_rate=1e30",
            "--set",
            f"logging_steps={logging_steps}",
        ]
    )
    if logging_steps == 1:
        assert line.startswith("error: training diverged at step 2: loss is nan (learning_rate 1e+30"), line
    else:  # the NaN step was not logged: the checkpoint saved after it is checked and removed
        assert (
            line.startswith("error: training diverged by step 4: ")
            and "weight tensors are NaN or inf" in line
        )
        assert not (out / "checkpoints" / "checkpoint-4").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "TrainingDiverged" in manifest["error"]
    assert not (out / "merged").exists() and not (out / "adapter").exists()


def test_a_checkpoint_without_its_processor_is_one_line(tmp_path, synth_dir, tiny_paths, no_model_load):
    """`sft --model DIR` with config.json and weights but no processor: refused before loading."""
    import shutil

    checkpoint = tmp_path / "weights-only"
    checkpoint.mkdir()
    for file in tiny_paths["tiny-qwen2.5-vl"].iterdir():
        if file.name == "config.json" or file.suffix == ".safetensors":
            shutil.copy(file, checkpoint / file.name)
    out = tmp_path / "run"
    line = one_line_error(["sft", "--model", checkpoint, "--data", synth_dir, "--output-dir", out])
    assert (
        line
        == f"error: {checkpoint}: no processor (processor_config.json / preprocessor_config.json) beside the weights"
    )
    assert not out.exists()


@pytest.fixture
def small_disk(tmp_path):
    """A real 600 KB filesystem (tmpfs), where the machine lets us mount one."""
    import subprocess

    mount = tmp_path / "small-disk"
    mount.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("mounting a small tmpfs needs root")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.slow
def test_a_full_disk_is_one_line(small_disk, synth_dir, tiny_paths):
    """A checkpoint save that fills the disk: one line naming the run directory, the manifest
    says failed, no traceback; generated data that fills it: the same."""
    import subprocess
    import sys

    def scale(*args):
        return subprocess.run(
            [sys.executable, "-m", "scale_repro.cli", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=600,
        )

    run = small_disk / "run"
    result = scale(
        "sft",
        "--model",
        "tiny-qwen2.5-vl",
        "--data",
        synth_dir,
        "--max-steps",
        "3",
        "--set",
        "save_steps=2",
        "--output-dir",
        run,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: disk full while writing {run}; free space, then run the same command to resume"
    ]
    assert json.loads((run / "manifest.json").read_text())["status"] == "failed"

    result = scale("data", "synth", "--out", small_disk / "synth")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: disk full while writing ")
