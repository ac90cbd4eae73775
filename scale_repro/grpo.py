"""`scale grpo`: GRPO on TRL's GRPOTrainer with the format and accuracy rewards.

Rollouts go through vLLM in colocate mode when vLLM is installed and CUDA is present (TRL's
own integration), otherwise through the trainer's own generation (CPU). The rewards are
plain functions from :mod:`scale_repro.rewards`; their parser is the evaluator's.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

import torch
from trl import GRPOConfig as TRLGRPOConfig
from trl import GRPOTrainer

from scale_repro.answers import parse_completion
from scale_repro.config import ConfigError, GRPOConfig
from scale_repro.data.records import Example, prompt_text
from scale_repro.rewards import accuracy_reward, completion_text, make_format_reward
from scale_repro.segments import THINK_OPEN
from scale_repro.training import (
    SafeResumeMixin,
    peft_config,
    run_training_stage,
    to_dataset,
    trainer_arguments,
)

log = logging.getLogger("scale_repro")


class PreflightError(ValueError):
    """A problem found before the first step, with what to change."""


class ScaleGRPOTrainer(SafeResumeMixin, GRPOTrainer):
    """TRL's GRPOTrainer; resuming a full fine-tuning run loads every tensor or stops."""


def check_generation_batch(config: GRPOConfig, processes: int | None = None) -> None:
    """TRL samples ``num_generations`` completions per prompt out of one generation batch of
    ``per_device_train_batch_size x processes x gradient_accumulation_steps`` completions, and
    stops with a traceback after loading the model when that is not a multiple; say it first."""
    processes = processes or int(os.environ.get("WORLD_SIZE", "1"))
    batch, accumulation = config.per_device_train_batch_size, config.gradient_accumulation_steps
    generation_batch = batch * processes * accumulation
    if generation_batch % config.num_generations:
        raise ConfigError(
            f"GRPO generation batch = per_device_train_batch_size {batch} x {processes} process(es) x "
            f"gradient_accumulation_steps {accumulation} = {generation_batch}, not a multiple of num_generations "
            f"{config.num_generations}: set per_device_train_batch_size or gradient_accumulation_steps so the "
            "product is a multiple, or lower num_generations"
        )


def vllm_available() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None


def template_prefills_think(processor) -> bool:
    """Whether the chat template opens ``<think>`` itself at the start of the assistant turn."""
    messages = [{"role": "user", "content": [{"type": "text", "text": "?"}]}]
    rendered = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return rendered.rstrip().endswith(THINK_OPEN)


def preflight(examples: list[Example], processor, config: GRPOConfig, sample: int = 256) -> dict[str, Any]:
    """Checks that would otherwise fail hours into a run: prompt length and image sizes."""
    from PIL import Image

    checked = examples[:sample]
    longest, longest_id, sizes = 0, None, set()
    for example in checked:
        images = [Image.open(p).convert("RGB") if isinstance(p, (str, Path)) else p for p in example.images]
        sizes.update(image.size for image in images)
        content = [{"type": "image"} for _ in images] + [
            {"type": "text", "text": prompt_text(example.question)}
        ]
        text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                             tokenize=False)  # fmt: skip
        length = processor(images=images or None, text=[text], return_tensors="pt")["input_ids"].shape[1]
        if length > longest:
            longest, longest_id = length, example.id
    budget = config.max_length
    if budget is not None and longest + config.max_completion_length > budget:
        raise PreflightError(
            f"prompt of example {longest_id} is {longest} tokens with its image(s); with max_completion_length "
            f"{config.max_completion_length} that exceeds max_length {budget}. Raise max_length, lower "
            "max_completion_length, or shrink the images (the processor's max_pixels)."
        )
    if len(sizes) > 1:
        # Try a batch of two differently sized images through the processor: some rollout paths need one size.
        (w1, h1), (w2, h2) = sorted(sizes)[:2]
        text = processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]}],
            add_generation_prompt=True, tokenize=False,
        )  # fmt: skip
        try:
            processor(images=[[Image.new("RGB", (w1, h1))], [Image.new("RGB", (w2, h2))]], text=[text, text],
                      return_tensors="pt", padding=True)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - any failure here means mixed sizes cannot be batched
            raise PreflightError(
                f"images come in {len(sizes)} sizes (e.g. {w1}x{h1} and {w2}x{h2}) and this model's processor "
                f"cannot batch them ({exc}); resize the images to one size first"
            ) from exc
    return {
        "longest_prompt_tokens": longest,
        "image_sizes": sorted(sizes)[:10],
        "checked_examples": len(checked),
    }


def make_rewards(think_prefilled: bool):
    """The reward functions, with diagnostics logged through TRL's ``log_metric`` hook."""
    tag_reward = make_format_reward(think_prefilled)

    def format_reward(completions, **kwargs):
        scores = tag_reward(completions, **kwargs)
        if "log_metric" in kwargs and scores:
            texts = [completion_text(c) for c in completions]
            kwargs["log_metric"]("completions/full_format_share", sum(s == 1.0 for s in scores) / len(scores))
            kwargs["log_metric"](
                "completions/valid_share", sum(parse_completion(t).valid for t in texts) / len(texts)
            )
        return scores

    return [format_reward, accuracy_reward]


def trl_args(config: GRPOConfig, run_dir: Path, bf16: bool, use_vllm: bool) -> TRLGRPOConfig:
    kwargs: dict[str, Any] = {}
    if use_vllm:
        kwargs.update(
            use_vllm=True,
            vllm_mode="colocate",
            vllm_gpu_memory_utilization=config.vllm_gpu_memory_utilization,
            vllm_enable_sleep_mode=config.vllm_enable_sleep_mode,
        )
    return TRLGRPOConfig(
        **trainer_arguments(config, run_dir, bf16),
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        top_p=config.top_p,
        beta=config.beta,
        reward_weights=[config.rewards.format_weight, config.rewards.accuracy_weight],
        **kwargs,
    )


def run_grpo(config: GRPOConfig, force: bool = False, callbacks: list | None = None) -> Path:
    """Refine a model with GRPO; returns the run directory."""
    check_generation_batch(config)

    def build(model, processor, examples, run_dir, bf16, callbacks, manifest):
        prefilled = template_prefills_think(processor)
        if prefilled:
            log.info("the chat template prefills <think>: the format reward counts it as present")
        checks = preflight(examples, processor, config)
        use_vllm = vllm_available() if config.use_vllm is None else config.use_vllm
        manifest.update(preflight=checks, think_prefilled=prefilled,
                        rollouts="vllm-colocate" if use_vllm else "transformers-generate")  # fmt: skip
        dataset = to_dataset(examples, config.system_prompt)
        if "completion" in dataset.column_names:  # GRPO samples its own completions
            dataset = dataset.remove_columns("completion")
        return ScaleGRPOTrainer(
            model=model,
            reward_funcs=make_rewards(prefilled),
            args=trl_args(config, run_dir, bf16, use_vllm),
            train_dataset=dataset,
            processing_class=processor,
            peft_config=peft_config(config.lora),
            callbacks=callbacks,
        )

    return run_training_stage("grpo", config, build, force=force, callbacks=callbacks)
