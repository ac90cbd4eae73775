import json

import pytest
import torch

from conftest import TINY, interrupt_at
from scale_repro.config import SFTConfig, load_config
from scale_repro.method.segments import ANSWER, IGNORED, THINK
from scale_repro.runs.rundir import read_manifest
from scale_repro.stages.sft import ScaleSFTTrainer, SegmentCollator, run_sft, trl_args
from scale_repro.stages.training import load_examples, load_model_and_processor, to_dataset


def sft_config(tmp_path, model, mode, **extra):
    overrides = [
        f"model={model}",
        f"output_dir={tmp_path / f'{model}-{mode}'}",
        f"loss.mode={mode}",
        "max_steps=2",
        "per_device_train_batch_size=2",
        "save_steps=1",
        "logging_steps=1",
    ] + [f"{k}={v}" for k, v in extra.items()]
    return overrides


@pytest.mark.slow
@pytest.mark.parametrize("model", TINY)
@pytest.mark.parametrize("mode", ["scale", "fixed", "vanilla"])
def test_two_step_training_on_each_architecture_and_loss(tmp_path, tiny_paths, synth_dir, model, mode):
    config = load_config(SFTConfig, None, sft_config(tmp_path, model, mode) + [f"data.spec={synth_dir}"])
    run_dir = run_sft(config)
    manifest = read_manifest(run_dir)
    assert manifest["status"] == "finished" and manifest["global_step"] == 2
    assert manifest["data"]["examples"] == 24 and manifest["data"]["rejected"] == {}
    assert manifest["config"]["loss"]["mode"] == mode
    assert {"torch", "transformers", "trl"} <= set(manifest["versions"])
    assert (run_dir / "merged" / "model.safetensors").is_file()
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    steps = [entry for entry in log if "loss_think" in entry]
    assert [entry["step"] for entry in steps] == [1, 2]
    expected_w = {"scale": [2.0, 1.5], "fixed": [1.0, 1.0], "vanilla": [1.0, 1.0]}[mode]
    assert [entry["w_think"] for entry in steps] == expected_w
    assert all(entry["tokens_think"] > entry["tokens_answer"] > 0 for entry in steps)
    if mode == "scale":
        first = steps[0]
        assert first["loss"] == pytest.approx(2.0 * first["loss_think"] + first["loss_answer"], rel=1e-4)


def build_trainer(tmp_path, synth_dir, model_path, mode, batch, accumulation, n_examples=4, **arg_overrides):
    config = load_config(
        SFTConfig,
        None,
        [
            f"data.spec={synth_dir}",
            f"data.max_examples={n_examples}",
            f"loss.mode={mode}",
            "lora.enabled=false",
            f"per_device_train_batch_size={batch}",
            f"gradient_accumulation_steps={accumulation}",
            "max_steps=1",
        ],
    )
    examples, _ = load_examples(config)
    model, processor = load_model_and_processor(str(model_path), bf16=False)
    args = trl_args(config, tmp_path / f"ga-{batch}-{accumulation}", bf16=False)
    for key, value in arg_overrides.items():
        setattr(args, key, value)
    return ScaleSFTTrainer(
        model=model,
        args=args,
        train_dataset=to_dataset(examples),
        processing_class=processor,
        data_collator=SegmentCollator(processor=processor, max_length=None, completion_only_loss=True),
        loss_config=config.loss,
    )


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["scale", "fixed"])
def test_gradient_accumulation_gives_the_same_update(tmp_path, tiny_paths, synth_dir, mode):
    updates = []
    for batch, accumulation in ((4, 1), (1, 4)):
        trainer = build_trainer(
            tmp_path,
            synth_dir,
            tiny_paths["tiny-qwen2.5-vl"],
            mode,
            batch,
            accumulation,
            optim="sgd",
            learning_rate=1.0,
            max_grad_norm=0.0,
            lr_scheduler_type="constant",
        )
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        trainer.train()
        updates.append({n: p.detach() - before[n] for n, p in trainer.model.named_parameters()})
    big = max(updates[0][n].abs().max().item() for n in updates[0])
    assert big > 0
    for name in updates[0]:
        torch.testing.assert_close(updates[0][name], updates[1][name], rtol=1e-3, atol=1e-5 * big)


@pytest.mark.slow
def test_vanilla_loss_equals_trl_sft_trainer(tmp_path, tiny_paths, synth_dir):
    from trl import SFTTrainer

    ours = build_trainer(tmp_path, synth_dir, tiny_paths["tiny-gemma3"], "vanilla", 4, 1)
    batch = ours.data_collator([ours.train_dataset[i] for i in range(4)])
    assert set(batch["segments"].unique().tolist()) == {IGNORED, THINK, ANSWER}
    # On the device the Trainer put the model on (a GPU where there is one), as training does.
    batch = {k: v.to(ours.model.device) for k, v in batch.items()}
    reference = SFTTrainer(
        model=ours.model,
        args=ours.args,
        train_dataset=ours.train_dataset,
        processing_class=ours.processing_class,
    )
    trl_batch = {k: v for k, v in batch.items() if k != "segments"}
    ours.model.eval()
    with torch.no_grad():
        loss_ours = ours.compute_loss(ours.model, dict(batch))
        loss_trl = reference.compute_loss(reference.model, dict(trl_batch))
    assert loss_ours.item() == pytest.approx(loss_trl.item(), rel=1e-6)


def test_segments_align_with_supervised_tokens(tmp_path, tiny_paths, synth_dir):
    trainer = build_trainer(tmp_path, synth_dir, tiny_paths["tiny-llava-next"], "scale", 2, 1)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    supervised = batch["labels"] != -100
    assert torch.equal(batch["segments"] != IGNORED, supervised)
    tokenizer = trainer.processing_class.tokenizer
    for row in range(2):
        ids = batch["input_ids"][row][batch["segments"][row] == ANSWER]
        answer_text = tokenizer.decode(ids)
        # BPE may merge the last reasoning character into the tag's token (".</"): that token is ANSWER.
        assert "</think><answer>" in answer_text and answer_text.endswith("</answer></s>")
        assert len(answer_text.split("</think>")[0]) <= 1
        think_text = tokenizer.decode(batch["input_ids"][row][batch["segments"][row] == THINK])
        assert think_text.lstrip().startswith("<think>") and "</think>" not in think_text


@pytest.mark.slow
def test_killed_run_resumes_with_the_same_command(tmp_path, tiny_paths, synth_dir):
    overrides = [
        f"data.spec={synth_dir}",
        "model=tiny-qwen2.5-vl",
        "max_steps=4",
        "save_steps=2",
        "per_device_train_batch_size=2",
        f"output_dir={tmp_path / 'run'}",
    ]
    config = load_config(SFTConfig, None, overrides)
    with pytest.raises(KeyboardInterrupt):
        run_sft(config, callbacks=[interrupt_at(3)])
    # Ctrl-C: a stop from outside, not a failure
    assert read_manifest(tmp_path / "run")["status"] == "interrupted"
    run_sft(config)
    manifest = read_manifest(tmp_path / "run")
    assert manifest["status"] == "finished" and manifest["global_step"] == 4
    assert manifest["resumed_from"].endswith("checkpoint-2")
    entries = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    steps = [entry["step"] for entry in entries if "loss_think" in entry]
    assert steps == [1, 2, 3, 4]

    uninterrupted = load_config(SFTConfig, None, overrides[:-1] + [f"output_dir={tmp_path / 'straight'}"])
    run_sft(uninterrupted)
    from safetensors.torch import load_file

    resumed = load_file(tmp_path / "run" / "merged" / "model.safetensors")
    straight = load_file(tmp_path / "straight" / "merged" / "model.safetensors")
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=1e-4, atol=1e-6)

    finished_at = manifest["finished_at"]
    run_sft(config)  # finished with the same config: not retrained
    assert read_manifest(tmp_path / "run")["finished_at"] == finished_at


def nan_gradients_at(step: int):
    """A callback that turns every gradient of ``step`` into NaN, as an overflow would."""
    from transformers import TrainerCallback

    class NaNGradients(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            if state.global_step + 1 == step:
                for weight in model.parameters():
                    if weight.grad is not None:
                        weight.grad.fill_(float("nan"))

    return NaNGradients()


@pytest.mark.slow
def test_nonfinite_gradients_stop_the_run_or_are_skipped_when_asked(tmp_path, tiny_paths, synth_dir):
    from safetensors.torch import load_file

    from scale_repro.stages.lifecycle import TrainingDiverged

    base = [
        f"data.spec={synth_dir}",
        "model=tiny-qwen2.5-vl",
        "max_steps=4",
        "save_steps=100",
        "per_device_train_batch_size=2",
        "lora.enabled=false",
    ]
    stopping = load_config(SFTConfig, None, [*base, f"output_dir={tmp_path / 'stop'}"])
    with pytest.raises(TrainingDiverged, match="training diverged at step 3: loss is nan"):
        run_sft(stopping, callbacks=[nan_gradients_at(2)])
    assert read_manifest(tmp_path / "stop")["status"] == "failed"

    skipping = load_config(
        SFTConfig, None, [*base, "nonfinite_steps=skip", f"output_dir={tmp_path / 'skip'}"]
    )
    run = run_sft(skipping, callbacks=[nan_gradients_at(2)])
    manifest = read_manifest(run)
    assert manifest["status"] == "finished" and manifest["skipped_nonfinite_steps"] == [2]
    weights = load_file(run / "merged" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


@pytest.mark.slow
def test_max_pixels_shrinks_qwen_images_in_training_and_travels_with_the_checkpoint(tmp_path):
    """Qwen2.5-VL at its real pixel budget (12.8 MP): a 448 px image is 256 image tokens; at
    max_pixels 200x200 it is resized down (49 tokens after the 2x2 merge), in the pre-flight's
    count, in training, and in the exported processor that evaluation and vLLM read."""
    from scale_repro.data.synth import SynthConfig, write_synthetic
    from scale_repro.stages.evaluate import qwen_pixel_bounds

    data = write_synthetic(tmp_path / "data", SynthConfig(seed=0, n_train=8, n_test=2, image_size=448))
    counts = {}
    for name, extra in (("native", []), ("capped", ["max_pixels=40000"])):
        config = load_config(
            SFTConfig,
            None,
            ["max_steps=1", "per_device_train_batch_size=2", "save_steps=100", *extra],
            model="tiny-qwen2.5-vl-real",
            output_dir=str(tmp_path / name),
            **{"data.spec": str(data)},
        )
        run = run_sft(config)
        manifest = json.loads((run / "manifest.json").read_text())
        counts[name] = manifest["data"]["preflight"]["tokens"]["median"]
    assert counts["native"] - counts["capped"] == 256 - 49
    assert qwen_pixel_bounds(str(tmp_path / "capped" / "merged"))[1] == 40000
    assert qwen_pixel_bounds(str(tmp_path / "native" / "merged"))[1] == 12845056


def test_max_pixels_on_a_processor_without_a_pixel_budget_is_refused():
    from scale_repro.stages.training import apply_pixel_bounds
    from scale_repro.yaml_files import ConfigError

    class FixedSize:
        size = {"height": 336, "width": 336}

    class Processor:
        image_processor = FixedSize()

    config = load_config(SFTConfig, None, ["max_pixels=40000"])
    with pytest.raises(
        ConfigError, match="^min_pixels / max_pixels: FixedSize does not resize to a pixel budget"
    ):
        apply_pixel_bounds(Processor(), config)
