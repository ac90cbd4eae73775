import json

import pytest
from PIL import Image

from conftest import TINY, interrupt_at
from scale_repro.config import GRPOConfig, SFTConfig, load_config
from scale_repro.data.records import Example
from scale_repro.runs.rundir import read_manifest
from scale_repro.stages.grpo import PreflightError, make_rewards, preflight, run_grpo, template_prefills_think
from scale_repro.stages.sft import run_sft


@pytest.fixture(scope="module")
def sft_runs(tmp_path_factory, tiny_paths, synth_dir):
    root = tmp_path_factory.mktemp("sft-runs")
    runs = {}
    for model in TINY:
        config = load_config(
            SFTConfig,
            None,
            [
                f"model={model}",
                f"data.spec={synth_dir}",
                f"output_dir={root / model}",
                "max_steps=1",
                "per_device_train_batch_size=2",
            ],
        )
        runs[model] = run_sft(config)
    return runs


def grpo_overrides(synth_dir, out, model, **extra):
    return [
        f"model={model}",
        f"data.spec={synth_dir}",
        f"output_dir={out}",
        "max_steps=2",
        "per_device_train_batch_size=2",
        "num_generations=2",
        "max_completion_length=12",
        "save_steps=1",
        "lora.enabled=false",
    ] + [f"{k}={v}" for k, v in extra.items()]


# A reward that differs within each group (tests/spread_rewards.py): a 1-step SFT model never
# writes the answer format, so format and accuracy alone give every completion the same reward,
# zero advantages and no update at all. With it, GRPO must move the weights.
SPREAD = ["reward_funcs=[format,accuracy,'spread_rewards:vowel_share']", "reward_weights=[1.0,1.0,1.0]"]


def changed_tensors(before, after) -> int:
    """How many of the merged checkpoints' tensors differ."""
    from safetensors.torch import load_file

    first, second = (
        load_file(before / "merged" / "model.safetensors"),
        load_file(after / "merged" / "model.safetensors"),
    )
    assert sorted(first) == sorted(second)
    return sum(not first[key].equal(second[key]) for key in first)


@pytest.mark.slow
@pytest.mark.parametrize("model", TINY)
def test_two_step_grpo_from_an_sft_run(tmp_path, synth_dir, sft_runs, model):
    config = load_config(
        GRPOConfig,
        None,
        grpo_overrides(synth_dir, tmp_path / "grpo", str(sft_runs[model]))
        + SPREAD
        + ["report_to=[tensorboard]"],
    )
    run_dir = run_grpo(config)
    manifest = read_manifest(run_dir)
    assert manifest["status"] == "finished" and manifest["global_step"] == 2
    # GRPO learned something: rewards differed within groups, the gradient was not zero, and
    # the weights moved from the SFT run it started from.
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert all(e["reward_std"] > 0 and e["grad_norm"] > 0 for e in log if "reward_std" in e)
    assert changed_tensors(sft_runs[model], run_dir) > 0
    assert manifest["model"]["kind"] == "run"
    assert manifest["rollouts"] == "transformers-generate"
    assert manifest["preflight"]["image_sizes"] == [[64, 64]]
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    steps = [e for e in log if "reward" in e]
    assert [e["step"] for e in steps] == [1, 2]
    for key in (
        "rewards/format_reward/mean",
        "rewards/accuracy_reward/mean",
        "completions/full_format_share",
        "completions/valid_share",
        "completions/mean_length",
    ):
        assert key in steps[0]
    assert (run_dir / "merged" / "model.safetensors").is_file()
    # The policy's drift from its start grows as it trains; the same diagnostics stream to TensorBoard.
    drift = [e["policy/weight_drift"] for e in steps]
    assert 0 < drift[0] < drift[1]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("train/policy/weight_drift")] == [1, 2]
    assert [e.value for e in events.Scalars("train/policy/weight_drift")] == pytest.approx(drift)
    for tag in ("train/reward", "train/reward_std", "train/frac_reward_zero_std", "train/entropy"):
        assert [e.step for e in events.Scalars(tag)] == [1, 2], tag
    assert [e.value for e in events.Scalars("train/reward")] == pytest.approx([e["reward"] for e in steps])


def test_trackers_are_transformers_own_and_checked_before_a_model_loads():
    from transformers.integrations import INTEGRATION_TO_CALLBACK

    from scale_repro.config import TRACKERS, ConfigError

    assert TRACKERS == tuple(INTEGRATION_TO_CALLBACK)
    for accepted in ("all", "none", "tensorboard"):  # transformers' own words too
        assert load_config(GRPOConfig, None, [f"report_to=[{accepted}]"]).report_to == [accepted]
    with pytest.raises(
        ConfigError,
        match=r"^--set report_to=\[tensorbord\]: report_to unknown tracker 'tensorbord'; choose from azure_ml, ",
    ):
        load_config(GRPOConfig, None, ["model=tiny-qwen2.5-vl", "report_to=[tensorbord]"])


@pytest.mark.slow
def test_default_grpo_runs_on_one_cpu_process_and_records_every_setting(tmp_path, synth_dir, sft_runs):
    """`scale grpo` with the shipped defaults (8 generations) from an SFT run of per-device batch
    2, which it keeps, on one process: the generation batch is raised to 8 (4 optimizer steps per
    generation) instead of stopping."""
    from typer.testing import CliRunner

    from scale_repro.cli import app

    out = tmp_path / "grpo"
    result = CliRunner().invoke(
        app,
        [
            "grpo",
            "--model",
            str(sft_runs["tiny-llava-next"]),
            "--data",
            str(synth_dir),
            "--output-dir",
            str(out),
            "--max-steps",
            "1",
            "--set",
            "max_completion_length=16",
        ],
    )
    assert result.exit_code == 0, result.output
    settings = read_manifest(out)["grpo_settings"]
    assert {
        k: settings[k]
        for k in (
            "num_generations",
            "generation_batch_size",
            "steps_per_generation",
            "loss_type",
            "scale_rewards",
            "mask_truncated_completions",
            "vllm_importance_sampling_correction",
            "vllm_importance_sampling_mode",
            "beta",
            "temperature",
            "top_p",
        )
    } == {
        "num_generations": 8,
        "generation_batch_size": 8,
        "steps_per_generation": 4,
        "loss_type": "dapo",
        "scale_rewards": "group",
        "mask_truncated_completions": False,
        "vllm_importance_sampling_correction": True,
        "vllm_importance_sampling_mode": "sequence_mask",
        "beta": 0.0,
        "temperature": 1.0,
        "top_p": 1.0,
    }
    assert len(settings) > 40  # every field GRPOConfig adds to TrainingArguments


@pytest.mark.slow
def test_grpo_resumes_after_a_kill(tmp_path, synth_dir, tiny_paths):
    config = load_config(
        GRPOConfig, None, grpo_overrides(synth_dir, tmp_path / "run", "tiny-gemma3", max_steps=3)
    )
    with pytest.raises(KeyboardInterrupt):
        run_grpo(config, callbacks=[interrupt_at(2)])
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
    format_reward, accuracy_reward = make_rewards(["format", "accuracy"], "tags", think_prefilled=False)
    completions = ["<think>a</think><answer>1</answer>", "<think>a</think>", "no tags"]
    scores = format_reward(completions, log_metric=lambda name, value: logged.__setitem__(name, value))
    assert scores == [1.0, 0.5, 0.0]
    assert logged == {"completions/full_format_share": 1 / 3, "completions/valid_share": 1 / 3}
    assert accuracy_reward(completions, answer=["1", "1", "1"], choices=[[], [], []]) == [1.0, 0.0, 0.0]


def test_clipped_completions_warn_once_in_the_first_steps(caplog):
    from types import SimpleNamespace

    from scale_repro.stages.grpo import ClippedCompletionsWarning

    callback = ClippedCompletionsWarning(first_steps=5, threshold=0.5)
    args = SimpleNamespace(max_completion_length=16)
    with caplog.at_level("WARNING", logger="scale_repro"):
        for step, clipped in [(1, 0.4), (2, 0.75), (3, 0.9), (7, 1.0)]:
            callback.on_log(
                args, SimpleNamespace(global_step=step), None, logs={"completions/clipped_ratio": clipped}
            )
    assert [r.getMessage() for r in caplog.records] == [
        "step 2: 75% of completions hit max_completion_length 16 and get no format reward; raise it if that persists"
    ]


def test_reference_traces_longer_than_the_completion_limit_are_counted(tiny_paths, synth_dir, caplog):
    from transformers import AutoProcessor

    from scale_repro.data.sources import load_training_examples

    processor = AutoProcessor.from_pretrained(tiny_paths["tiny-gemma3"])
    examples = load_training_examples(str(synth_dir)).examples
    config = load_config(GRPOConfig, None, ["max_completion_length=8", "max_length=4096"])
    with caplog.at_level("WARNING", logger="scale_repro"):
        checks = preflight(examples, processor, config)
    assert checks["reference_traces_over_max_completion_length"] == len(examples)
    assert (
        f"{len(examples)} of {len(examples)} reference traces are longer than max_completion_length 8"
        in caplog.text
    )


def test_text_only_and_image_prompts_are_grouped_per_generation_batch():
    from scale_repro.stages.grpo import group_by_modality

    def ex(name, image):
        return Example(name, ["a.png"] if image else [], "?", "A")

    # i = image, t = text-only, in the given (already shuffled or difficulty) order.
    examples = [ex(n, n.startswith("i")) for n in ["i0", "t0", "i1", "t1", "t2", "i2", "i3", "t3", "i4"]]
    ordered, filled = group_by_modality(examples, 2)
    assert [e.id for e in ordered] == ["i0", "i1", "t0", "t1", "i2", "i3", "t2", "t3", "i4", "i0"]
    assert filled == 1  # i4's group is completed with the first image prompt
    groups = [ordered[i : i + 2] for i in range(0, len(ordered), 2)]
    assert all(len({bool(e.images) for e in group}) == 1 for group in groups)
    assert group_by_modality(examples, 1) == (examples, 0)
    only_images = [ex(f"i{i}", True) for i in range(3)]
    assert group_by_modality(only_images, 2) == (only_images, 0)


@pytest.mark.slow
def test_grpo_on_pooled_text_only_and_image_data(tmp_path, sft_runs):
    """The curriculum's merged baseline pools text-only and image records; two prompts per
    generation batch put both kinds in one batch, which stopped TRL's processor call."""
    from typer.testing import CliRunner

    from scale_repro.cli import app

    cap = tmp_path / "cap"
    assert CliRunner().invoke(app, ["data", "capabilities", "--out", str(cap), "--n", "6"]).exit_code == 0
    overrides = grpo_overrides(
        cap / "merged.jsonl",
        tmp_path / "grpo",
        str(sft_runs["tiny-llava-next"]),
        per_device_train_batch_size=4,
        max_steps=3,
    )
    run_dir = run_grpo(load_config(GRPOConfig, None, overrides))
    manifest = read_manifest(run_dir)
    assert manifest["status"] == "finished" and manifest["global_step"] == 3
    # 18 records, 6 of them text-only, in groups of 2 prompts: nothing to fill.
    assert manifest["modality_groups"] == {
        "prompts_per_batch": 2,
        "text_only": 6,
        "with_images": 12,
        "filled": 0,
    }


def test_a_run_without_learning_signal_or_with_a_collapsed_policy_is_told_so(caplog):
    """From what TRL logs: most groups with zero reward spread over the window, and entropy near 0."""
    import logging
    from types import SimpleNamespace

    from scale_repro.stages.grpo import LearningSignalWarning

    callback = LearningSignalWarning(window=3)
    caplog.set_level(logging.WARNING, logger="scale_repro")
    for step, zero_std in enumerate([1.0, 0.5, 1.0, 1.0, 1.0], 1):
        callback.on_log(
            None, SimpleNamespace(global_step=step), None, logs={"frac_reward_zero_std": zero_std}
        )
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "steps 3-5: 100% of groups had the same reward for every completion, so GRPO learned "
        "nothing from them; sample more or more varied completions (num_generations, temperature) "
        "or start from a model that is sometimes right"
    ]
    callback.on_log(None, SimpleNamespace(global_step=6), None, logs={"entropy": 0.01})
    callback.on_log(None, SimpleNamespace(global_step=7), None, logs={"entropy": 0.001})  # said once
    assert [r.getMessage() for r in caplog.records][1:] == [
        "step 6: the policy's entropy is 0.010: it has collapsed onto near-deterministic completions; "
        "lower the learning rate or add a KL penalty (beta)"
    ]
    for step, length in [(8, 120.0), (9, 40.0), (10, 29.0), (11, 10.0)]:  # under a quarter: said once
        callback.on_log(
            None, SimpleNamespace(global_step=step), None, logs={"completions/mean_length": length}
        )
    assert [r.getMessage() for r in caplog.records][2:] == [
        "step 10: completions average 29 tokens, down from 120 at the start: the policy is collapsing "
        "onto short answers (a reward that pays for brevity or format alone?)"
    ]


def test_grpo_from_a_llava_next_sft_run_keeps_its_recipe_budget_and_passes_its_preflight(tmp_path, synth_dir):
    """LLaVA-NeXT's image prompts (anyres tiles) run 1.5k-2.9k tokens: GRPO from its SFT run must
    keep the model recipe's max_length 4096, batch and accumulation, not fall back to 2048."""
    from transformers import AutoProcessor

    from scale_repro.config import to_dict
    from scale_repro.data.sources import load_training_examples
    from scale_repro.models.registry import tiny_model_path
    from scale_repro.runs.rundir import atomic_write_json
    from scale_repro.yaml_files import CONFIGS_DIR

    recipe = CONFIGS_DIR / "models" / "llava-v1.6-mistral-7b.yaml"
    sft = load_config(SFTConfig, [recipe], model="llava-v1.6-mistral-7b", output_dir=str(tmp_path / "sft"))
    atomic_write_json(
        tmp_path / "sft" / "manifest.json", {"stage": "sft", "status": "finished", "config": to_dict(sft)}
    )
    config = load_config(GRPOConfig, [CONFIGS_DIR / "grpo" / "default.yaml"], [], model=str(tmp_path / "sft"))
    assert (config.max_length, config.per_device_train_batch_size, config.gradient_accumulation_steps) == (
        4096,
        2,
        8,
    )
    assert config.learning_rate == 1e-5  # GRPO's own, not the SFT run's

    processor = AutoProcessor.from_pretrained(tiny_model_path("tiny-llava-next-real"))
    examples = load_training_examples(str(synth_dir)).examples[:4]
    checks = preflight(examples, processor, config)
    # 1,249 tokens for these small images (more for larger ones): too many for 2048 with 1024 to
    # complete, well within the recipe's 4096.
    assert (
        2048 - config.max_completion_length
        < checks["longest_prompt_tokens"]
        <= 4096 - config.max_completion_length
    )
    with pytest.raises(PreflightError, match="exceeds max_length 2048"):
        preflight(examples, processor, load_config(GRPOConfig, [CONFIGS_DIR / "grpo" / "default.yaml"], []))


def test_every_prompt_is_sized_before_the_model_loads(tmp_path, synth_dir, monkeypatch):
    """tiny-gemma3's longest prompt here is 127 tokens with its image, so 64 completion tokens
    do not fit in 180: the pre-flight sizes every prompt (images by their size) and stops before
    any model loads, with nothing written."""
    import scale_repro.stages.training as training

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the prompts were sized")

    monkeypatch.setattr(training, "load_model_and_processor", refuse)
    config = load_config(
        GRPOConfig,
        None,
        ["max_length=180", "max_completion_length=64", "max_steps=1"],
        model="tiny-gemma3",
        output_dir=str(tmp_path / "grpo"),
        **{"data.spec": str(synth_dir)},
    )
    with pytest.raises(
        PreflightError, match=r"prompts leave no room for max_completion_length 64 within max_length 180"
    ):
        run_grpo(config)
    assert not (tmp_path / "grpo").exists()
