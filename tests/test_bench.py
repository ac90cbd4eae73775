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
    # Rollouts are timed on generation alone, which is a part of the step.
    rollout = figures["rollouts"]["transformers"]
    assert 0 < rollout["generation_s"] < rollout["step_s"]
    # The vision tower is charged on its own patches: Gemma-3's processor resizes every image to
    # its fixed square, which the tower cuts into patches (tiny-gemma3's own sizes, read back).
    from transformers import AutoConfig, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_paths["tiny-gemma3"])
    side, patch = (
        processor.image_processor.size["height"],
        AutoConfig.from_pretrained(tiny_paths["tiny-gemma3"]).vision_config.patch_size,
    )
    assert figures["sft_vision_patches_per_sample"] == (side // patch) ** 2
    assert figures["sft_image_tokens_per_sample"] >= processor.image_seq_length
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


def test_training_flops_per_token_match_a_hand_count():
    """Qwen2.5-VL-3B (3.75B parameters, 0.67B of them the vision tower; 36 layers, 16 heads of
    128) at 2,048 tokens: 6 x 3.08e9 + 12 x 36 x 16 x 128 x 2048 = 20.29 GFLOPs per token in full
    fine-tuning; 4 x 3.08e9 + the same attention = 14.13 under LoRA; + 2 x 0.67e9 per patch
    of the images, spread over the sequence, with the tower frozen."""
    from scale_repro.sizing.bench import train_flops_per_token
    from scale_repro.sizing.gpu_plan import PAPER_SHAPES

    qwen = PAPER_SHAPES["Qwen/Qwen2.5-VL-3B-Instruct"]
    attention = 12 * 36 * 16 * 128 * 2048
    assert train_flops_per_token(qwen, 2048, lora=False, vision_trained=False) == 6 * 3.08e9 + attention
    assert train_flops_per_token(qwen, 2048, lora=True, vision_trained=False) == 4 * 3.08e9 + attention
    # One 448 x 448 image: 1,024 patches of 14 x 14 for the tower (256 tokens for the language model).
    with_image = train_flops_per_token(qwen, 2048, lora=True, vision_trained=False, vision_patches=1024)
    assert with_image == 4 * 3.08e9 + attention + 2 * 0.67e9 * 1024 / 2048
    assert round(train_flops_per_token(qwen, 2048, lora=False, vision_trained=False) / 1e9, 2) == 20.29


def test_a_device_gets_its_own_peak_or_none():
    from scale_repro.sizing.bench import peak_flops

    assert peak_flops("NVIDIA H100 80GB HBM3") == 989.4e12
    assert peak_flops("NVIDIA H100 PCIe") == 756.4e12  # not the SXM's
    assert peak_flops("NVIDIA GeForce RTX 4090") is None  # no guess from a substring
