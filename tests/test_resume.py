"""A killed run, rerun with the same command, ends where an uninterrupted one does.

Every kill here is a real SIGKILL of a real `scale` process: at a chosen point through
``SCALE_KILL_AT`` (scale_repro.runs.faults), which kills the process exactly as ``kill -9`` would.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from scale_repro.runs.rundir import CHECKPOINTS_DIR, RunLock, read_manifest

pytestmark = pytest.mark.slow
NOISE_ELEMENTS = 8  # weights allowed beyond rtol 1e-3 / atol 1e-4 (see assert_same_weights)
SFT_ARGS = ["--max-steps", "4", "--set", "save_steps=2", "--set", "per_device_train_batch_size=2"]


def scale(*args, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), env.get("PYTHONPATH")]))
    env.pop("SCALE_KILL_AT", None)
    if kill_at:
        env["SCALE_KILL_AT"] = kill_at
    return subprocess.run(
        [sys.executable, "-m", "scale_repro.cli", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "merged" / "model.safetensors")


def elements_apart(a: Path, b: Path) -> tuple[int, int]:
    """How many weights of two runs differ beyond float noise (rtol 1e-3, atol 1e-4), of how many."""
    first, second = weights(a), weights(b)
    assert set(first) == set(second)
    apart = sum(int((~torch.isclose(first[k], second[k], rtol=1e-3, atol=1e-4)).sum()) for k in first)
    return apart, sum(t.numel() for t in first.values())


def assert_same_weights(a: Path, b: Path) -> None:
    """Equal up to float noise in a handful of elements. Two processes training the same steps may
    sum in another order (thread scheduling), and AdamW's m / sqrt(v) amplifies that where v is
    tiny: CI saw one element of the whole model 2.2e-4 apart in two uninterrupted runs. A lost or
    repeated step moves nearly every weight by about the learning rate (2e-3 here), which
    `test_a_lost_step_is_far_outside_the_noise_bound` checks against this same bound."""
    apart, total = elements_apart(a, b)
    assert apart <= NOISE_ELEMENTS, f"{apart} of {total} weights differ beyond float noise"


def logged_steps(run: Path) -> list[int]:
    lines = (run / "train_log.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines if "loss" in json.loads(line)]


@pytest.fixture(scope="module")
def straight_sft(tmp_path_factory, tiny_paths, synth_dir):
    """Full fine-tuning (tiny-llava-next's recipe turns LoRA off), never interrupted."""
    run = tmp_path_factory.mktemp("straight") / "sft"
    done = scale("sft", "--model", "tiny-llava-next", "--data", synth_dir, "--output-dir", run, *SFT_ARGS)
    assert done.returncode == 0, done.stderr[-2000:]
    assert read_manifest(run)["config"]["lora"]["enabled"] is False
    return run


def test_a_lost_step_is_far_outside_the_noise_bound(tmp_path, straight_sft):
    """The power of assert_same_weights: the straight run's weights two steps before its end
    (its kept checkpoint-2) differ from its final weights in most elements, not in a handful."""
    earlier = tmp_path / "earlier"
    (earlier / "merged").mkdir(parents=True)
    shutil.copy(straight_sft / CHECKPOINTS_DIR / "checkpoint-2" / "model.safetensors", earlier / "merged")
    apart, total = elements_apart(earlier, straight_sft)
    assert apart > total // 2 > NOISE_ELEMENTS
    with pytest.raises(AssertionError, match="differ beyond float noise"):
        assert_same_weights(earlier, straight_sft)


@pytest.mark.parametrize(
    "kill_at, resumed_from",
    [
        ("step:3", "checkpoint-2"),  # between checkpoints
        ("checkpoint-save:4", "checkpoint-2"),  # inside a checkpoint save: checkpoint-4 is half written
        ("export", None),  # after the last step, while writing merged/: nothing is retrained
    ],
)
def test_killed_full_finetuning_sft_resumes_to_the_same_weights(
    tmp_path, synth_dir, straight_sft, kill_at, resumed_from
):
    run = tmp_path / "sft"
    command = ["sft", "--model", "tiny-llava-next", "--data", synth_dir, "--output-dir", run, *SFT_ARGS]
    killed = scale(*command, kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL
    assert read_manifest(run)["status"] == "running"

    rerun = scale(*command)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    manifest = read_manifest(run)
    assert manifest["status"] == "finished" and manifest["global_step"] == 4
    if resumed_from:
        assert manifest["resumed_from"].endswith(resumed_from)
        assert "resumed 65 tensors" in rerun.stderr
    else:
        assert "holds the final step: exporting it without training again" in rerun.stderr
    assert_same_weights(run, straight_sft)
    assert logged_steps(run) == [1, 2, 3, 4]
    assert [a["status"] for a in manifest["attempts"]] == ["interrupted", "finished"]
    assert manifest["wall_clock_s"] == pytest.approx(
        sum(a["wall_clock_s"] for a in manifest["attempts"]), abs=1e-3
    )
    assert all(a["wall_clock_s"] > 0 for a in manifest["attempts"])
    if kill_at.startswith("checkpoint-save"):
        assert "ignoring incomplete" in rerun.stderr and "checkpoint-4" in rerun.stderr


def test_killed_grpo_resumes_to_the_same_weights(tmp_path, synth_dir, straight_sft):
    # The test reward (tests/spread_rewards.py) differs within every group, so each step trains:
    # the comparison is between runs that moved, not two copies of the starting weights.
    args = [
        "--model",
        straight_sft,
        "--data",
        synth_dir,
        "--max-steps",
        "3",
        "--set",
        "save_steps=1",
        "--set",
        "per_device_train_batch_size=2",
        "--set",
        "num_generations=2",
        "--set",
        "max_completion_length=8",
        "--set",
        "lora.enabled=false",
        "--set",
        "reward_funcs=[format,accuracy,'spread_rewards:vowel_share']",
        "--set",
        "reward_weights=[1.0,1.0,1.0]",
    ]
    straight = scale("grpo", *args, "--output-dir", tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-2000:]
    start, trained = weights(straight_sft), weights(tmp_path / "straight")
    assert sum(not start[k].equal(trained[k]) for k in start) > 0
    killed = scale("grpo", *args, "--output-dir", tmp_path / "run", kill_at="step:2")
    assert killed.returncode == -signal.SIGKILL
    rerun = scale("grpo", *args, "--output-dir", tmp_path / "run")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert read_manifest(tmp_path / "run")["resumed_from"].endswith("checkpoint-1")
    assert_same_weights(tmp_path / "run", tmp_path / "straight")
    assert logged_steps(tmp_path / "run") == [1, 2, 3]


def test_killed_evaluation_generates_only_what_is_missing(tmp_path, synth_dir, straight_sft):
    args = [
        "--model",
        straight_sft,
        "--task",
        "synthetic-iconqa",
        "--data",
        synth_dir,
        "--limit",
        "8",
        "--max-new-tokens",
        "8",
        "--set",
        "batch_size=1",  # stored in chunks of 4 requests
    ]
    assert scale("eval", *args, "--output-dir", tmp_path / "straight").returncode == 0
    killed = scale("eval", *args, "--output-dir", tmp_path / "run", kill_at="generation:4")
    assert killed.returncode == -signal.SIGKILL
    rerun = scale("eval", *args, "--output-dir", tmp_path / "run")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    manifest = read_manifest(tmp_path / "run")
    assert (manifest["generated"], manifest["reused"]) == (4, 4)
    completions = [
        [
            json.loads(line)["completion"]
            for line in (tmp_path / name / "samples.jsonl").read_text().splitlines()
        ]
        for name in ("run", "straight")
    ]
    assert completions[0] == completions[1]
    # A complete store: a forced rerun regenerates, a plain rerun is skipped as finished.
    os.remove(tmp_path / "run" / "manifest.json")
    again = scale("eval", *args, "--output-dir", tmp_path / "run")
    assert again.returncode == 0
    assert (read_manifest(tmp_path / "run")["generated"], read_manifest(tmp_path / "run")["reused"]) == (0, 8)


def test_a_second_run_into_a_busy_directory_refuses_naming_the_holder(tmp_path, synth_dir):
    run = tmp_path / "run"
    lock = RunLock(run).acquire()
    try:
        second = scale(
            "sft", "--model", "tiny-llava-next", "--data", synth_dir, "--output-dir", run, "--max-steps", "1"
        )
    finally:
        lock.release()
    assert second.returncode == 1
    assert (
        second.stderr.strip().splitlines()[-1].startswith(f"error: {run} is in use by process {os.getpid()}")
    )
    assert not (run / "manifest.json").exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from scale_repro.runs.rundir import RunLock; lock = RunLock(sys.argv[1]).acquire(); "
                "print('locked', flush=True); time.sleep(600)"
            ),
            str(tmp_path / "run"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match=f"in use by process {holder.pid}"):
            RunLock(tmp_path / "run").acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock = RunLock(tmp_path / "run").acquire()  # the kernel released the dead holder's lock
    assert f"process {os.getpid()}" in (tmp_path / "run" / ".lock").read_text()
    lock.release()


@pytest.mark.parametrize(
    ("sent", "message", "resumed_from"),
    [
        # Slurm's time limit: the step ends, a checkpoint is saved, nothing is lost.
        (
            "TERM",
            "stopped by SIGTERM after step 3, checkpoint saved; run the same command to resume",
            "checkpoint-3",
        ),
        # Ctrl-C: one line; the rerun resumes from the last regular checkpoint.
        ("INT", "interrupted; run the same command to resume from its newest checkpoint", "checkpoint-2"),
    ],
)
def test_a_signalled_run_says_so_in_one_line_and_resumes(
    tmp_path, synth_dir, straight_sft, sent, message, resumed_from
):
    run = tmp_path / "sft"
    command = ["sft", "--model", "tiny-llava-next", "--data", synth_dir, "--output-dir", run, *SFT_ARGS]
    stopped = scale(*command, kill_at=f"step:3:{sent}")
    assert stopped.returncode == 1, stopped.stderr[-2000:]
    assert "Traceback" not in stopped.stderr
    errors = [line[line.index("error: ") :] for line in stopped.stderr.splitlines() if "error: " in line]
    assert errors == [f"error: {run}: {message}"]
    manifest = read_manifest(run)
    assert manifest["status"] == "interrupted" and manifest["attempts"][0]["status"] == "interrupted"
    assert (run / "checkpoints" / resumed_from).is_dir()

    rerun = scale(*command)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    manifest = read_manifest(run)
    assert manifest["status"] == "finished" and manifest["resumed_from"].endswith(resumed_from)
    assert [a["status"] for a in manifest["attempts"]] == ["interrupted", "finished"]
    assert_same_weights(run, straight_sft)
    assert logged_steps(run) == [1, 2, 3, 4]
