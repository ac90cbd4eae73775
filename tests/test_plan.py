"""`scale plan`: the arithmetic against real counts, and the table a user sees."""

import json

import pytest
from typer.testing import CliRunner

from conftest import TINY
from scale_repro.cli import app
from scale_repro.sizing.gpu_plan import PAPER_SHAPES, lora_parameters, shape_of

runner = CliRunner()


@pytest.mark.parametrize("model", TINY)
def test_counts_match_the_model_and_peft(tiny_paths, model):
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText

    from scale_repro.config import LoraConfig
    from scale_repro.stages.training import peft_config

    shape = shape_of(str(tiny_paths[model]))
    loaded = AutoModelForImageTextToText.from_pretrained(tiny_paths[model])
    assert shape.parameters == sum(p.numel() for p in loaded.parameters())
    lora = LoraConfig(r=4)
    peft_model = get_peft_model(loaded, peft_config(lora))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert lora_parameters(shape, lora.r, lora.target_modules) == trainable


def test_paper_shapes_give_the_lora_sizes_of_the_paper_models():
    # r=16 on q,k,v,o,gate,up,down of every language-model layer.
    modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    sizes = {hub: lora_parameters(shape, 16, modules) for hub, shape in PAPER_SHAPES.items()}
    assert sizes == {
        "Qwen/Qwen2.5-VL-3B-Instruct": 36 * 16 * (2 * 4096 + 2 * 2304 + 3 * 13056),
        "google/gemma-3-4b-it": 34 * 16 * (2 * (2560 + 2048) + 2 * (2560 + 1024) + 3 * 12800),
        "llava-hf/llava-v1.6-mistral-7b-hf": 32 * 16 * (2 * 8192 + 2 * 5120 + 3 * 18432),
        # The curriculum's backbones: Qwen3-8B-shaped and Qwen2.5-7B-shaped language models.
        "Qwen/Qwen3-VL-8B-Instruct": 36 * 16 * (2 * 8192 + 2 * 5120 + 3 * 16384),
        "Qwen/Qwen2.5-VL-7B-Instruct": 28 * 16 * (2 * 7168 + 2 * 4096 + 3 * 22528),
        "OpenGVLab/InternVL3-8B-hf": 28 * 16 * (2 * 7168 + 2 * 4096 + 3 * 22528),
        "OpenGVLab/InternVL3_5-8B-HF": 36 * 16 * (2 * 8192 + 2 * 5120 + 3 * 16384),
    }


def test_plan_table_one_prints_every_training_stage(tmp_path):
    out = tmp_path / "plan.json"
    result = runner.invoke(
        app,
        [
            "plan",
            "--table",
            "1",
            "--gpus",
            "8",
            "--gpu-memory",
            "80",
            "--samples",
            "5000",
            "--tokens-per-sample",
            "1500",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(out.read_text())
    stages = plan["stages"]
    # 3 models x 2 data sets x (SFT, SCALe-SFT, GRPO, SCALe-GRPO)
    assert len(stages) == 24 and sum(s["stage"] == "sft" for s in stages) == 12
    assert all(s["fits"] for s in stages)
    sft = next(s for s in stages if s["stage"] == "sft")
    assert sft["tokens"] == 5000 * 1500  # one epoch
    assert sft["gpu_hours"] == pytest.approx(5000 * 1500 / 2500 / 3600)
    grpo = next(s for s in stages if s["stage"] == "grpo")
    assert grpo["lora"] is True  # inherited from the LoRA SFT run it starts from
    rows = [
        line for line in result.output.splitlines() if line.startswith("| sft") or line.startswith("| grpo")
    ]
    assert len(rows) == 24
    assert "Total" in result.output and "every stage fits" in result.output


def test_a_small_gpu_does_not_fit_and_says_so():
    result = runner.invoke(app, ["plan", "--table", "1", "--gpus", "1", "--gpu-memory", "16"])
    assert result.exit_code == 0
    assert "some stages do NOT fit" in result.output
    assert "| NO |" in result.output


def test_grpo_from_a_run_directory_inherits_how_the_model_is_held(tmp_path):
    from scale_repro.config import GRPOConfig, load_config
    from scale_repro.runs.rundir import atomic_write_json

    atomic_write_json(
        tmp_path / "sft" / "manifest.json",
        {
            "stage": "sft",
            "status": "finished",
            "config": {
                "bf16": True,
                "gradient_checkpointing": True,
                "deepspeed": "configs/deepspeed/zero2.json",
                "lora": {"enabled": True, "r": 64, "alpha": 128},
                "learning_rate": 1e-4,
                "max_length": 8192,
                "system_prompt": "Be brief.",
            },
        },
    )
    config = load_config(GRPOConfig, "configs/grpo/default.yaml", [], model=str(tmp_path / "sft"))
    assert (config.bf16, config.gradient_checkpointing, config.deepspeed) == (
        True,
        True,
        "configs/deepspeed/zero2.json",
    )
    assert (config.lora.enabled, config.lora.r, config.lora.alpha) == (True, 64, 128)
    assert config.system_prompt == "Be brief."
    # Its sequence budget comes along (the model's image prompts need it); its learning rate does not.
    assert (config.learning_rate, config.max_length) == (1e-5, 8192)
    # A recipe or --set still wins over what is inherited.
    config = load_config(GRPOConfig, None, ["lora.r=8"], model=str(tmp_path / "sft"))
    assert config.lora.r == 8


def test_zero2_model_states_follow_the_zero_papers_formula():
    """Rajbhandari et al. (ZeRO), mixed-precision Adam: 2 bytes of weights on every GPU, and
    (2 + 12) bytes of gradients and optimizer state per trainable parameter over N GPUs. A full
    fine-tune of Qwen2.5-VL-3B (3.75B, vision tower of 0.67B frozen) on 8 GPUs: 12.0 GiB."""
    from scale_repro.sizing.gpu_plan import GIB, PAPER_SHAPES, model_states_bytes

    qwen = PAPER_SHAPES["Qwen/Qwen2.5-VL-3B-Instruct"]
    trainable = qwen.parameters - qwen.vision_parameters
    assert model_states_bytes(qwen.parameters, trainable, 8) == 2 * 3.75e9 + 14 * 3.08e9 / 8
    assert round(model_states_bytes(qwen.parameters, trainable, 8) / GIB, 1) == 12.0
    assert round(model_states_bytes(qwen.parameters, trainable, 1) / GIB, 1) == 47.1  # nothing to share


def test_the_plan_counts_evaluation_and_totals():
    result = runner.invoke(
        app, ["plan", "--table", "1", "--gpus", "8", "--gpu-memory", "80", "--out", "/dev/null"]
    )
    assert result.exit_code == 0, result.output
    # Table 1: 30 evaluations, ScienceQA-IMG (2,017 questions) and IconQA (21,489) at 1,024 tokens each.
    assert "Evaluation: 30 runs, 352,590 questions, 361.1M generated tokens" in result.output
    assert "Total " in result.output and "training " in result.output and ", evaluation " in result.output


def test_plan_covers_the_curriculum_on_each_backbone(tmp_path):
    """`scale plan --experiment staged`: every GRPO stage at its max_steps x global batch 640
    (2 per device x 40 accumulated x 8 GPUs), full fine-tuning, and the eight benchmarks' evaluations;
    Qwen3-VL-8B's stages do not fit 80 GB GPUs beside colocated vLLM and the KL's reference model."""
    import json

    for model, parameters in [("qwen3-vl-8b", 8.767e9), ("internvl3-8b", 7.944e9)]:
        out = tmp_path / f"{model}.json"
        result = runner.invoke(app, ["plan", "--experiment", "staged", "--model", model, "--out", str(out)])
        assert result.exit_code == 0, result.output
        plan = json.loads(out.read_text())
        assert plan["experiment"] == "staged" and plan["table"] is None
        merged = next(s for s in plan["stages"] if s["run"].endswith(f"{model}/seed0/1-merged"))
        assert (merged["parameters"], merged["lora"]) == (parameters, False)
        # 930 steps x 640 completions (EasyR1's 128 prompts x 5) of 3,072 prompt + 1,024 completion tokens.
        assert merged["tokens"] == 930 * 640 * (3072 + 1024)
        # KL 0.01 with full fine-tuning: the reference model's bf16 weights on every GPU too.
        assert (
            "beta 0.01: a reference model's forward pass and its bf16 weights on every GPU"
            in merged["assumptions"]
        )
        assert {e["task"] for e in plan["evaluations"]} == {
            "mathvista", "mathvision", "mathverse", "wemath", "aokvqa", "realworldqa", "mmstar", "pope"
        }  # fmt: skip
        assert len(plan["evaluations"]) == 11 * 8  # every recipe (Base included) on every benchmark
    small = runner.invoke(
        app, ["plan", "--experiment", "staged", "--gpu-memory", "80", "--out", str(tmp_path / "80.json")]
    )
    assert small.exit_code == 0 and not json.loads((tmp_path / "80.json").read_text())["all_fit"]
    large = runner.invoke(
        app, ["plan", "--experiment", "staged", "--gpu-memory", "141", "--out", str(tmp_path / "141.json")]
    )
    assert large.exit_code == 0 and json.loads((tmp_path / "141.json").read_text())["all_fit"]
    refused = runner.invoke(app, ["plan", "--table", "1", "--experiment", "staged"])
    assert refused.exit_code == 1 and "name one of --table (1, 2 or 3) or --experiment" in refused.output
