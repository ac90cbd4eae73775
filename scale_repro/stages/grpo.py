"""`scale grpo`: GRPO on TRL's GRPOTrainer with the format and accuracy rewards.

Rollouts go through vLLM in colocate mode when vLLM is installed and CUDA is present (TRL's
own integration), otherwise through the trainer's own generation (CPU). The rewards are
plain functions from :mod:`scale_repro.method.rewards`; their parser is the evaluator's.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from trl import GRPOConfig as TRLGRPOConfig
from trl import GRPOTrainer

from scale_repro.config import ConfigError, GRPOConfig
from scale_repro.data.records import Example, prompt_text, tagged_completion
from scale_repro.method.formats import FORMATS
from scale_repro.method.rewards import completion_text, reward_function
from scale_repro.method.segments import THINK_OPEN
from scale_repro.models.registry import resolve_model
from scale_repro.runs.rundir import CHECKPOINTS_DIR
from scale_repro.stages.budget import ImageCost, sample_budget
from scale_repro.stages.callbacks import SafeResumeMixin, StageCallbacks
from scale_repro.stages.export import train_and_export
from scale_repro.stages.lifecycle import StageRun
from scale_repro.stages.training import (
    apply_pixel_bounds,
    check_trl_section,
    distributed_teardown,
    load_examples,
    load_for_training,
    peft_config,
    resolve_bf16,
    to_dataset,
    to_rows,
    trl_arguments,
)

log = logging.getLogger("scale_repro")


class PreflightError(ValueError):
    """A problem found before the first step, with what to change."""


# What `scale grpo` reports in one line besides the errors every stage shares.
USER_ERRORS = (PreflightError,)


class ScaleGRPOTrainer(SafeResumeMixin, GRPOTrainer):
    """TRL's GRPOTrainer; resuming a full fine-tuning run loads every tensor or stops, and the
    train log times the rollouts on their own (``rollout/generation_s``, ``rollout/tokens``),
    which TRL's profiling sends to W&B, MLflow and Trackio but not to the log: `scale bench`
    divides rollout tokens by generation time, not by the whole step."""

    def _generate_single_turn(
        self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False
    ):
        started = time.perf_counter()
        completion_ids, logprobs = super()._generate_single_turn(
            prompt_ids, images, multimodal_fields, num_generations, has_tool_images
        )
        # With vLLM this includes the weight sync before generation: a rollout cannot start without it.
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["rollout/generation_s"].append(time.perf_counter() - started)
        self._metrics[mode]["rollout/tokens"].append(float(sum(len(ids) for ids in completion_ids)))
        return completion_ids, logprobs


def generation_batch(config: GRPOConfig, processes: int | None = None) -> int:
    """Completions per generation batch. TRL samples ``num_generations`` completions per
    prompt out of one batch that must also split into whole optimizer steps of
    ``per_device_train_batch_size x processes`` completions; when it does not, TRL stops with
    a traceback after loading the model. Checked (and, unset, chosen) before anything loads."""
    processes = processes or int(os.environ.get("WORLD_SIZE", "1"))
    step_batch = config.per_device_train_batch_size * processes
    if config.generation_batch_size is None:
        default = step_batch * config.gradient_accumulation_steps
        return math.lcm(default, config.num_generations)
    size = config.generation_batch_size
    if size % step_batch or size % config.num_generations:
        raise ConfigError(
            f"generation_batch_size {size} must be a multiple of num_generations {config.num_generations} and of "
            f"per_device_train_batch_size {config.per_device_train_batch_size} x {processes} process(es) = "
            f"{step_batch}; the least that is: {math.lcm(step_batch, config.num_generations)} (or leave it unset)"
        )
    return size


def group_by_modality(examples: list[Example], prompts_per_batch: int) -> tuple[list[Example], int]:
    """The examples ordered so that every run of ``prompts_per_batch`` (one generation batch)
    holds only prompts with images or only text-only prompts, keeping their order otherwise;
    returns them with the number of examples repeated to fill a modality's last group.

    TRL's GRPOTrainer hands a generation batch's images to the processor as one list, with
    None for a text-only prompt, and the processor stops there (transformers' fetch_images:
    "only a single or a list of entries is supported but got type=<class 'NoneType'>"), at
    the first mixed batch, after the model has loaded. The curriculum's merged baseline pools
    text-only and image records. A modality's last, partial group is filled with that
    modality's first examples (seen twice in an epoch), so no group straddles the two.
    """
    with_images = [bool(e.images) for e in examples]
    if prompts_per_batch <= 1 or all(with_images) or not any(with_images):
        return examples, 0
    ordered: list[Example] = []
    pending: dict[bool, list[Example]] = {True: [], False: []}
    for example, kind in zip(examples, with_images, strict=True):
        pending[kind].append(example)
        if len(pending[kind]) == prompts_per_batch:
            ordered += pending[kind]
            pending[kind] = []
    filled = 0
    for kind, group in pending.items():
        if group:
            pool = [e for e, k in zip(examples, with_images, strict=True) if k == kind]
            extra = [pool[i % len(pool)] for i in range(prompts_per_batch - len(group))]
            ordered += group + extra
            filled += len(extra)
    return ordered, filled


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
            {"type": "text", "text": prompt_text(example.question, FORMATS[config.answer_format].instruction)}
        ]
        text = processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
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
            add_generation_prompt=True,
            tokenize=False,
        )
        try:
            processor(
                images=[[Image.new("RGB", (w1, h1))], [Image.new("RGB", (w2, h2))]],
                text=[text, text],
                return_tensors="pt",
                padding=True,
            )
        except Exception as exc:  # noqa: BLE001 - any failure here means mixed sizes cannot be batched
            raise PreflightError(
                f"images come in {len(sizes)} sizes (e.g. {w1}x{h1} and {w2}x{h2}) and this model's processor "
                f"cannot batch them ({exc}); resize the images to one size first"
            ) from exc
    traces = trace_lengths(checked, processor)
    over = sum(n > config.max_completion_length for n in traces)
    if traces and over / len(traces) > TRACE_OVER_LIMIT_WARN:
        log.warning(
            "%d of %d reference traces are longer than max_completion_length %d: completions that long are cut, "
            "earn no format reward and teach the model to stop early; raise max_completion_length",
            over,
            len(traces),
            config.max_completion_length,
        )
    return {
        "longest_prompt_tokens": longest,
        "image_sizes": sorted(sizes)[:10],
        "checked_examples": len(checked),
        "reference_trace_tokens_max": max(traces, default=None),
        "reference_traces_over_max_completion_length": over,
    }


def prompt_budget(config: GRPOConfig, examples: list[Example], resolved) -> dict[str, Any]:
    """Every prompt's tokens with the model's own processor, before the model loads: the text
    tokenized, each image counted by its size (read from the file's header; the processor is run
    once per size). A prompt that leaves no room for ``max_completion_length`` within
    ``max_length`` stops the run here, naming it, not hours in."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(resolved.path, trust_remote_code=config.trust_remote_code)
    apply_pixel_bounds(processor, config)
    cost = ImageCost(processor)
    rows = to_rows(examples, config.system_prompt, FORMATS[config.answer_format].instruction)
    lengths = []
    for row in rows:
        row = {**row, "completion": [{"role": "assistant", "content": "."}]}  # sized: the prompt only
        lengths.append(sample_budget(row, processor, cost).prompt_tokens)
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    budget = config.max_length
    if budget is not None and lengths[longest] + config.max_completion_length > budget:
        over = sum(n + config.max_completion_length > budget for n in lengths)
        raise PreflightError(
            f"{over} of {len(lengths)} prompts leave no room for max_completion_length {config.max_completion_length} "
            f"within max_length {budget} (longest: example {examples[longest].id}, {lengths[longest]} tokens with "
            "its images). Raise max_length, lower max_completion_length, or shrink the images (max_pixels)"
        )
    return {
        "prompts": len(lengths),
        "longest_prompt_tokens": lengths[longest],
        "longest": examples[longest].id,
    }


# Share of reference traces longer than max_completion_length above which GRPO warns.
TRACE_OVER_LIMIT_WARN = 0.05


def trace_lengths(examples: list[Example], processor) -> list[int]:
    """Tokens of each example's reference completion (when the data has traces)."""
    tokenizer = getattr(processor, "tokenizer", processor)
    texts = [tagged_completion(e.reasoning, e.answer_text or e.answer) for e in examples if e.reasoning]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []


class ClippedCompletionsWarning(TrainerCallback):
    """Warns once when most completions of the first logged steps hit max_completion_length."""

    def __init__(self, first_steps: int = 5, threshold: float = 0.5):
        self.first_steps, self.threshold, self.warned = first_steps, threshold, False

    def on_log(self, args, state, control, logs=None, **kwargs):
        clipped = (logs or {}).get("completions/clipped_ratio")
        if clipped is None or self.warned or state.global_step > self.first_steps:
            return
        if clipped > self.threshold:
            self.warned = True
            log.warning(
                "step %d: %.0f%% of completions hit max_completion_length %d and get no format reward; "
                "raise it if that persists",
                state.global_step,
                100 * clipped,
                args.max_completion_length,
            )


class LearningSignalWarning(TrainerCallback):
    """Says, once each, what an RL run with a flat reward curve needs to hear: most groups
    carry no learning signal (every completion of a prompt earned the same reward, so every
    advantage is 0 and the step changes nothing), or the policy has collapsed (entropy near
    0, or completions shrunk to under ``min_length_share`` of their first logged length). Read
    from what TRL logs each step (``frac_reward_zero_std``, ``entropy``,
    ``completions/mean_length``)."""

    def __init__(
        self,
        window: int = 5,
        no_signal: float = 0.9,
        min_entropy: float = 0.05,
        min_length_share: float = 0.25,
    ):
        self.window, self.no_signal, self.min_entropy = window, no_signal, min_entropy
        self.min_length_share = min_length_share
        self.zero_std: list[float] = []
        self.first_length: float | None = None
        self.warned: set[str] = set()

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "frac_reward_zero_std" in logs:
            self.zero_std = (self.zero_std + [float(logs["frac_reward_zero_std"])])[-self.window :]
            share = sum(self.zero_std) / len(self.zero_std)
            if len(self.zero_std) == self.window and share >= self.no_signal and "signal" not in self.warned:
                self.warned.add("signal")
                log.warning(
                    "steps %d-%d: %.0f%% of groups had the same reward for every completion, so GRPO "
                    "learned nothing from them; sample more or more varied completions (num_generations, "
                    "temperature) or start from a model that is sometimes right",
                    state.global_step - self.window + 1,
                    state.global_step,
                    100 * share,
                )
        length = logs.get("completions/mean_length")
        if length is not None and self.first_length is None:
            self.first_length = float(length)
        elif length is not None and self.first_length and "length" not in self.warned:
            if length < self.min_length_share * self.first_length:
                self.warned.add("length")
                log.warning(
                    "step %d: completions average %.0f tokens, down from %.0f at the start: the policy is "
                    "collapsing onto short answers (a reward that pays for brevity or format alone?)",
                    state.global_step,
                    length,
                    self.first_length,
                )
        entropy = logs.get("entropy")
        if entropy is not None and entropy < self.min_entropy and "entropy" not in self.warned:
            self.warned.add("entropy")
            log.warning(
                "step %d: the policy's entropy is %.3f: it has collapsed onto near-deterministic "
                "completions; lower the learning rate or add a KL penalty (beta)",
                state.global_step,
                entropy,
            )


def make_rewards(names: list[str], answer_format: str = "tags", think_prefilled: bool = False) -> list:
    """The stage's reward functions by name (``rewards.REWARDS``), the first of them with the
    format diagnostics logged through TRL's ``log_metric`` hook: the share of completions with a
    full format score, and the share the evaluator would count as valid."""
    parse = FORMATS[answer_format].parse
    functions = [reward_function(name, answer_format, think_prefilled) for name in names]
    first = functions[0]

    def with_diagnostics(completions, **kwargs):
        scores = first(completions, **kwargs)
        if "log_metric" in kwargs and scores:
            texts = [completion_text(c) for c in completions]
            kwargs["log_metric"]("completions/full_format_share", sum(s == 1.0 for s in scores) / len(scores))
            kwargs["log_metric"]("completions/valid_share", sum(parse(t).valid for t in texts) / len(texts))
        return scores

    with_diagnostics.__name__ = first.__name__  # TRL logs each reward under its function's name
    return [with_diagnostics, *functions[1:]]


def trl_args(config: GRPOConfig, run_dir: Path, bf16: bool, use_vllm: bool) -> TRLGRPOConfig:
    return trl_arguments(
        config,
        TRLGRPOConfig,
        run_dir,
        bf16,
        use_vllm=use_vllm,
        # Colocated: the engine shares the training GPUs (TRL's own integration).
        **({"vllm_mode": "colocate"} if use_vllm else {}),
        # TRL would size the engine for the model's full 32k-128k context.
        vllm_max_model_length=config.vllm_max_model_length or config.max_length,
        generation_batch_size=generation_batch(config),
        # A difficulty order must reach the trainer as it is: TRL shuffles unless told not to.
        shuffle_dataset=config.data.order == "shuffle",
    )


def resolved_grpo_settings(args: TRLGRPOConfig) -> dict[str, Any]:
    """Every GRPO setting as TRL resolved it (the fields GRPOConfig adds to TrainingArguments),
    for the manifest: a run says what it ran with, whatever TRL's defaults were that day."""
    from transformers import TrainingArguments

    base = {f.name for f in dataclasses.fields(TrainingArguments)}
    settings = {}
    for f in dataclasses.fields(args):
        if f.name in base or f.name.startswith("_"):
            continue
        value = getattr(args, f.name)
        settings[f.name] = (
            value if isinstance(value, (bool, int, float, str, type(None), list)) else repr(value)
        )
    return settings


def run_grpo(config: GRPOConfig, force: bool = False, callbacks: list | None = None) -> Path:
    """Refine a model with GRPO; returns the run directory."""
    generation_batch(config)  # a bad explicit value stops here, before anything loads
    run = StageRun("grpo", config, force, checkpoints=CHECKPOINTS_DIR)
    if run.finished_before():
        return run.run_dir
    check_trl_section(config, TRLGRPOConfig)
    resolved = resolve_model(config.model)
    examples, data_info = load_examples(config)
    data_info["prompt_budget"] = prompt_budget(config, examples, resolved)  # every prompt, before loading
    with run.running() as manifest, distributed_teardown():
        if manifest is None:  # finished meanwhile by another process
            return run.run_dir
        model, processor = load_for_training(config, resolved, manifest, data_info)
        prefilled = template_prefills_think(processor)
        if prefilled:
            log.info("the chat template prefills <think>: the format reward counts it as present")
        checks = preflight(examples, processor, config)
        use_vllm = vllm_available() if config.use_vllm is None else config.use_vllm
        rollouts = "vllm-colocate" if use_vllm else "transformers-generate"
        manifest.update(preflight=checks, think_prefilled=prefilled, rollouts=rollouts)
        args = trl_args(config, run.run_dir, resolve_bf16(config), use_vllm)
        examples = modality_batches(examples, args, config, manifest)
        dataset = to_dataset(examples, config.system_prompt, FORMATS[config.answer_format].instruction)
        if "completion" in dataset.column_names:  # GRPO samples its own completions
            dataset = dataset.remove_columns("completion")
        manifest.update(grpo_settings=resolved_grpo_settings(args))
        log.info(
            "generation batch %d completions (%d prompts x %d), %d optimizer step(s) per generation",
            args.generation_batch_size,
            args.generation_batch_size // args.num_generations,
            args.num_generations,
            args.steps_per_generation,
        )
        stage_callbacks = StageCallbacks.for_stage(
            config,
            manifest,
            run.run_dir,
            [*(callbacks or []), ClippedCompletionsWarning(), LearningSignalWarning()],
        )
        trainer = ScaleGRPOTrainer(
            model=model,
            reward_funcs=make_rewards(config.reward_funcs, config.answer_format, prefilled),
            args=args,
            train_dataset=dataset,
            processing_class=processor,
            peft_config=peft_config(config.lora),
            callbacks=stage_callbacks.all,
        )
        train_and_export(trainer, processor, manifest, run.run_dir, stage_callbacks)
    return run.run_dir


def modality_batches(
    examples: list[Example], args: TRLGRPOConfig, config: GRPOConfig, manifest
) -> list[Example]:
    """Text-only and image prompts in generation batches of their own (see
    :func:`group_by_modality`), recorded in the manifest; the examples as they are otherwise."""
    prompts_per_batch = args.generation_batch_size // args.num_generations
    if len({bool(e.images) for e in examples}) < 2 or prompts_per_batch < 2:
        return examples
    if config.data.order == "shuffle":  # shuffled here (seeded), so the grouping survives
        examples = random.Random(config.seed).sample(examples, len(examples))
    examples, filled = group_by_modality(examples, prompts_per_batch)
    args.shuffle_dataset = False
    text_only = sum(not e.images for e in examples)
    log.info(
        "text-only and image prompts in separate generation batches of %d prompts (%d text-only, "
        "%d with images; %d repeated to fill the last groups)",
        prompts_per_batch,
        text_only,
        len(examples) - text_only,
        filled,
    )
    groups = {"prompts_per_batch": prompts_per_batch, "text_only": text_only}
    manifest.update(modality_groups={**groups, "with_images": len(examples) - text_only, "filled": filled})
    return examples
