"""LoRA, as the paper trains: adapters on the language model of all three architectures, the
vision tower untouched, a merged checkpoint that loads as it is, GRPO from it, and resume."""

import json
import re

import pytest
from safetensors.torch import load_file

from conftest import TINY, interrupt_at
from scale_repro.config import GRPOConfig, SFTConfig, load_config
from scale_repro.runs.rundir import read_manifest
from scale_repro.stages.grpo import run_grpo
from scale_repro.stages.sft import run_sft
from scale_repro.stages.training import VISION_MODULE_PATTERN

pytestmark = pytest.mark.slow


def lora_sft(model, synth_dir, out, **extra):
    overrides = [
        f"model={model}",
        f"data.spec={synth_dir}",
        f"output_dir={out}",
        "max_steps=2",
        "save_steps=1",
        "per_device_train_batch_size=2",
        "lora.enabled=true",
        "lora.freeze_vision=true",
        "lora.r=4",
        "lora.alpha=8",
        "lora.dropout=0.0",
        "learning_rate=0.01",
    ]
    return load_config(SFTConfig, None, overrides + [f"{k}={v}" for k, v in extra.items()])


def weights(path):
    return load_file(str(path / "model.safetensors"))


@pytest.fixture(scope="module")
def lora_runs(tmp_path_factory, tiny_paths, synth_dir):
    root = tmp_path_factory.mktemp("lora")
    return {model: run_sft(lora_sft(model, synth_dir, root / model)) for model in TINY}


@pytest.mark.parametrize("model", TINY)
def test_lora_sft_saves_an_adapter_and_a_merged_checkpoint_with_the_vision_tower_untouched(
    lora_runs, tiny_paths, model
):
    from transformers import AutoModelForImageTextToText

    run = lora_runs[model]
    manifest = read_manifest(run)
    assert manifest["status"] == "finished" and manifest["outputs"] == {
        "adapter": "adapter",
        "merged": "merged",
    }
    adapter_config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["r"] == 4
    adapter = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    assert not [k for k in adapter if re.search(VISION_MODULE_PATTERN, k)]  # the language model only

    base, merged = weights(tiny_paths[model]), weights(run / "merged")
    assert sorted(base) == sorted(merged)  # no adapter keys left, nothing renamed
    vision = [k for k in base if re.search(VISION_MODULE_PATTERN, k)]
    language = [
        k for k in base if k not in vision and re.search(r"\.(q|k|v|o|gate|up|down)_proj\.weight$", k)
    ]
    assert vision and language
    assert all(base[k].equal(merged[k]) for k in vision)
    assert sum(not base[k].equal(merged[k]) for k in language) == len(
        language
    )  # every adapted projection moved
    AutoModelForImageTextToText.from_pretrained(run / "merged")  # loads as it is


@pytest.mark.parametrize("model", TINY)
def test_grpo_with_lora_from_a_merged_lora_sft_run(lora_runs, synth_dir, tmp_path, model):
    config = load_config(
        GRPOConfig,
        None,
        [
            f"model={lora_runs[model]}",
            f"data.spec={synth_dir}",
            f"output_dir={tmp_path / 'grpo'}",
            "max_steps=1",
            "per_device_train_batch_size=2",
            "num_generations=2",
            "max_completion_length=8",
            "lora.enabled=true",
            "lora.r=4",
            "lora.alpha=8",
            # A reward that differs within each group (tests/spread_rewards.py), so the adapter trains.
            "reward_funcs=[format,accuracy,'spread_rewards:vowel_share']",
            "reward_weights=[1.0,1.0,1.0]",
        ],
    )
    run = run_grpo(config)
    manifest = read_manifest(run)
    assert manifest["status"] == "finished" and manifest["model"]["kind"] == "run"
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    base, merged = weights(lora_runs[model] / "merged"), weights(run / "merged")
    assert sorted(base) == sorted(merged)
    # The adapter moved the language model's projections it sits on, and nothing else.
    moved = [k for k in base if not base[k].equal(merged[k])]
    assert moved and all(re.search(r"_proj\.weight$", k) for k in moved), moved
    assert all(base[k].equal(merged[k]) for k in base if re.search(VISION_MODULE_PATTERN, k))


@pytest.mark.parametrize("model", TINY)
def test_lora_resume_matches_an_uninterrupted_run(lora_runs, synth_dir, tmp_path, model):
    config = lora_sft(model, synth_dir, tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        run_sft(config, callbacks=[interrupt_at(2)])
    run_sft(config)
    manifest = read_manifest(tmp_path / "killed")
    assert manifest["status"] == "finished" and manifest["global_step"] == 2
    assert manifest["resumed_from"].endswith("checkpoint-1")
    resumed = load_file(str(tmp_path / "killed" / "adapter" / "adapter_model.safetensors"))
    straight = load_file(str(lora_runs[model] / "adapter" / "adapter_model.safetensors"))
    assert sorted(resumed) == sorted(straight)
    for key in straight:
        assert resumed[key].allclose(straight[key], rtol=1e-4, atol=1e-6), key
