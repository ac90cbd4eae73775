import json

import pytest
from PIL import Image

from conftest import TINY
from scale_repro.config import GRPOConfig, SFTConfig, load_config
from scale_repro.data.records import Example
from scale_repro.grpo import PreflightError, make_rewards, preflight, run_grpo, template_prefills_think
from scale_repro.rundir import read_manifest
from scale_repro.sft import run_sft


@pytest.fixture(scope="module")
def sft_runs(tmp_path_factory, tiny_paths, synth_dir):
    root = tmp_path_factory.mktemp("sft-runs")
    runs = {}
    for model in TINY:
        config = load_config(SFTConfig, None, [f"model={model}", f"data.spec={synth_dir}", f"output_dir={root / model}",
                                               "max_steps=1", "per_device_train_batch_size=2"])  # fmt: skip
        runs[model] = run_sft(config)
    return runs


def grpo_overrides(synth_dir, out, model, **extra):
    return [f"model={model}", f"data.spec={synth_dir}", f"output_dir={out}", "max_steps=2",
            "per_device_train_batch_size=2", "num_generations=2", "max_completion_length=12",
            "save_steps=1", "lora.enabled=false"] + [f"{k}={v}" for k, v in extra.items()]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("model", TINY)
def test_two_step_grpo_from_an_sft_run(tmp_path, synth_dir, sft_runs, model):
    config = load_config(GRPOConfig, None, grpo_overrides(synth_dir, tmp_path / "grpo", str(sft_runs[model])))
    run_dir = run_grpo(config)
    manifest = read_manifest(run_dir)
    assert manifest["status"] == "finished" and manifest["global_step"] == 2
    assert manifest["model"]["kind"] == "run"
    assert manifest["rollouts"] == "transformers-generate"
    assert manifest["preflight"]["image_sizes"] == [[64, 64]]
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    steps = [e for e in log if "reward" in e]
    assert [e["step"] for e in steps] == [1, 2]
    for key in ("rewards/format_reward/mean", "rewards/accuracy_reward/mean", "completions/full_format_share",
                "completions/valid_share", "completions/mean_length"):  # fmt: skip
        assert key in steps[0]
    assert (run_dir / "merged" / "model.safetensors").is_file()


class Interrupt:
    def __init__(self):
        from transformers import TrainerCallback

        class _Stop(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == 2:
                    raise KeyboardInterrupt("simulated kill")

        self.callback = _Stop()


@pytest.mark.slow
def test_grpo_resumes_after_a_kill(tmp_path, synth_dir, tiny_paths):
    config = load_config(
        GRPOConfig, None, grpo_overrides(synth_dir, tmp_path / "run", "tiny-gemma3", max_steps=3)
    )
    with pytest.raises(KeyboardInterrupt):
        run_grpo(config, callbacks=[Interrupt().callback])
    run_grpo(config)
    manifest = read_manifest(tmp_path / "run")
    assert manifest["status"] == "finished" and manifest["global_step"] == 3
    # Killed inside step 2, before its checkpoint was written: the last one is step 1's.
    assert manifest["resumed_from"].endswith("checkpoint-1")


def test_prefilled_think_is_detected(tiny_paths):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_paths["tiny-qwen2.5-vl"])
    assert template_prefills_think(processor) is False
    processor.chat_template = processor.chat_template.replace(
        "<|im_start|>assistant\n{% endif %}", "<|im_start|>assistant\n<think>{% endif %}"
    )
    assert "<think>{% endif %}" in processor.chat_template
    assert template_prefills_think(processor) is True


def test_preflight_rejects_prompts_longer_than_the_budget(tiny_paths, synth_dir):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_paths["tiny-llava-next"])
    example = Example(id="q1", images=[Image.new("RGB", (64, 64))], question="How many?", answer="1")
    config = load_config(GRPOConfig, None, ["max_length=64", "max_completion_length=16"])
    with pytest.raises(PreflightError, match="prompt of example q1 is .* tokens"):
        preflight([example], processor, config)
    config = load_config(GRPOConfig, None, ["max_length=1024", "max_completion_length=16"])
    assert preflight([example], processor, config)["longest_prompt_tokens"] < 1024 - 16


def test_reward_diagnostics_are_logged():
    logged = {}
    format_reward, accuracy_reward = make_rewards(think_prefilled=False)
    completions = ["<think>a</think><answer>1</answer>", "<think>a</think>", "no tags"]
    scores = format_reward(completions, log_metric=lambda name, value: logged.__setitem__(name, value))
    assert scores == [1.0, 0.5, 0.0]
    assert logged == {"completions/full_format_share": 1 / 3, "completions/valid_share": 1 / 3}
    assert accuracy_reward(completions, answer=["1", "1", "1"], choices=[[], [], []]) == [1.0, 0.0, 0.0]
