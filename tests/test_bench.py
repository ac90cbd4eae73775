"""`scale bench` on a CPU (the GPU figures come from the same code) and its use by `scale plan`."""

import json

import pytest
from typer.testing import CliRunner

from scale_repro.cli import app

runner = CliRunner()


@pytest.mark.slow
def test_bench_times_sft_and_grpo_through_the_real_stages(tmp_path, tiny_paths):
    out = tmp_path / "bench.json"
    result = runner.invoke(
        app,
        [
            "bench",
            "--model",
            "tiny-gemma3",
            "--random-init",
            "--steps",
            "3",
            "--batch",
            "2",
            "--image-size",
            "64",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert (figures["device"], figures["model"], figures["random_init"], figures["steps"]) == (
        "cpu",
        "tiny-gemma3",
        True,
        3,
    )
    assert figures["sft_step_s"] > 0 and figures["sft_tokens_per_s"] > 0 and figures["peak_memory_gib"] > 0
    assert figures["sft_tokens_per_s"] == pytest.approx(
        2 * figures["sft_tokens_per_sample"] / figures["sft_step_s"]
    )
    assert figures["mfu"] is None  # no known peak for a CPU
    assert figures["rollouts"]["vllm"] is None  # no CUDA here
    assert figures["rollout_tokens_per_s"] == figures["rollouts"]["transformers"]["rollout_tokens_per_s"] > 0
    assert "| SFT tokens/s |" in result.output and (tmp_path / "bench.md").is_file()


def test_plan_uses_a_gpu_benchmark_when_there_is_one(tmp_path, monkeypatch):
    from scale_repro.sizing.gpu_plan import ASSUMED_TRAIN_TOKENS_PER_S, throughputs

    monkeypatch.chdir(tmp_path)
    assert throughputs(None, None)[2] == "assumed"
    (tmp_path / "results" / "bench").mkdir(parents=True)
    (tmp_path / "results" / "bench" / "gpu.json").write_text(
        json.dumps(
            {"device": "NVIDIA H100 80GB HBM3", "sft_tokens_per_s": 4100.0, "rollout_tokens_per_s": 2300.0}
        )
    )
    assert throughputs(None, None) == (4100.0, 2300.0, "measured (results/bench/gpu.json)")
    assert throughputs(3000.0, None)[0] == 3000.0
    assert ASSUMED_TRAIN_TOKENS_PER_S == 2500.0
