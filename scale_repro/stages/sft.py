"""`scale sft`: supervised fine-tuning with the SCALe loss on TRL's SFTTrainer.

Two pieces change TRL's behaviour, nothing else:
- :class:`SegmentCollator` adds a ``segments`` tensor (THINK / ANSWER per supervised token)
  to TRL's vision-language collator, from character offsets of the completion text;
- :class:`ScaleSFTTrainer` overrides ``compute_loss`` with the length-independent,
  cosine-scheduled segment loss (and defines an "item" for gradient-accumulation
  normalisation as a sample rather than a token).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from trl import SFTConfig as TRLSFTConfig
from trl import SFTTrainer
from trl.data_utils import is_conversational
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from scale_repro.config import LossConfig, SFTConfig
from scale_repro.data.records import Example
from scale_repro.data.validate import DataError
from scale_repro.method.loss import segment_means, weighted_segments
from scale_repro.method.schedule import LOSS_MODES, segment_weights
from scale_repro.method.segments import IGNORED, label_segments
from scale_repro.models.registry import resolve_model
from scale_repro.runs.rundir import CHECKPOINTS_DIR, computed_once, fingerprint
from scale_repro.stages.budget import budget_report, measure, render
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


class SegmentCollator(DataCollatorForVisionLanguageModeling):
    """TRL's vision-language collator plus a ``segments`` tensor aligned with ``labels``."""

    def _collate_prompt_completion(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        rendered = []
        for example in examples:
            images = example.get("images") or ([example["image"]] if "image" in example else [])
            if is_conversational(example):
                # Render the chat template here (as TRL would) so the completion text is known.
                text = render({**example, "images": images}, self.processor)
            else:
                text = {"prompt": example["prompt"], "completion": example["completion"]}
            rendered.append({**text, "images": images})
        completions = [r["completion"] for r in rendered]
        batch = super()._collate_prompt_completion(rendered)
        batch["segments"] = self.segments_for(completions, batch["labels"])
        return batch

    def segments_for(self, completions: list[str], labels: torch.Tensor) -> torch.Tensor:
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        encoded = tokenizer(completions, add_special_tokens=False, return_offsets_mapping=True)
        segments = torch.full_like(labels, IGNORED)
        for row, (text, offsets) in enumerate(zip(completions, encoded["offset_mapping"], strict=True)):
            positions = (labels[row] != -100).nonzero(as_tuple=True)[0]
            row_labels = label_segments(text, offsets)
            if len(positions) > len(row_labels):
                raise ValueError(
                    f"completion {row} has {len(positions)} supervised tokens but its text tokenizes to "
                    f"{len(row_labels)}: the processor tokenizes completions differently from its tokenizer"
                )
            # Truncation (max_length) cuts the end of the completion, never its start.
            segments[row, positions] = torch.tensor(row_labels[: len(positions)], dtype=segments.dtype)
        return segments


class ScaleSFTTrainer(SafeResumeMixin, SFTTrainer):
    """SFTTrainer with the SCALe loss (``scale``), its fixed-weight ablation (``fixed``) or
    TRL's token-mean cross-entropy (``vanilla``); segment losses are logged in every mode."""

    def __init__(self, *args, loss_config: LossConfig, **kwargs):
        if loss_config.mode not in LOSS_MODES:
            raise ValueError(f"loss mode must be one of {LOSS_MODES}, got {loss_config.mode!r}")
        self.loss_config = loss_config
        super().__init__(*args, **kwargs)
        if self.segment_loss:
            # The loss below is already the mean over the samples of the whole accumulated,
            # all-process batch, so the Trainer must not divide it again, and must count the
            # accumulated batch's items (our _get_num_items_in_batch) for it. transformers 5.17
            # reads both from model_accepts_loss_kwargs; later releases read loss_is_scaled_for_ga.
            self.model_accepts_loss_kwargs = True
            self.loss_is_scaled_for_ga = True

    @property
    def segment_loss(self) -> bool:
        return self.loss_config.mode != "vanilla"

    def segment_weights(self) -> tuple[float, float]:
        return segment_weights(self.loss_config, self.state.global_step, self.state.max_steps)

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device):
        """For the segment loss an item is a sample with at least one supervised token."""
        if not self.segment_loss:
            return super()._get_num_items_in_batch(batch_samples, device)
        count = sum(int((batch["labels"][..., 1:] != -100).any(dim=-1).sum()) for batch in batch_samples)
        count = torch.tensor(count, device=device)
        if self.args.world_size > 1:
            count = self.accelerator.gather(count).sum()
        return count

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        segments = inputs.pop("segments")[:, 1:]
        inputs["use_cache"] = False
        try:
            outputs = model(**inputs, fused_lm_head=True)
        except ValueError as exc:
            # TRL's own translation of this error lives in the compute_loss replaced here.
            if (
                "Image features and image tokens do not match" in str(exc)
                and self.args.max_length is not None
            ):
                raise ValueError(
                    f"max_length ({self.args.max_length}) cuts image tokens of a prompt while the image "
                    "features stay whole: raise max_length or shrink the images (the processor's max_pixels); "
                    "`scale sft` runs a pre-flight that names such samples"
                ) from exc
            raise
        log_probs = outputs.log_probs  # (B, T-1), zero where the label is ignored
        segments = segments.to(log_probs.device) * outputs.label_mask  # drop anything TRL does not supervise
        w_think, w_answer = self.segment_weights()

        # The segment means, computed once: the loss (SCALe, FW) and the logged L_think/L_answer (all modes).
        parts = segment_means(log_probs if self.segment_loss else log_probs.detach(), segments)
        if self.segment_loss:
            sample_loss, counts = weighted_segments(parts, w_think, w_answer)
            denominator = counts.sum() if num_items_in_batch is None else num_items_in_batch
            loss = (sample_loss * counts).sum() / torch.as_tensor(denominator).clamp(min=1)
            if num_items_in_batch is not None:
                # DDP/DeepSpeed average gradients over processes; the denominator already counts all of them.
                loss = loss * self.accelerator.num_processes
        else:
            # TRL's own reduction: summed token NLL over the (accumulated) token count.
            num_tokens = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = -log_probs.sum() / torch.as_tensor(num_tokens).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes

        self._log_segments(
            mode, {k: v.detach() for k, v in parts.items()}, segments, w_think, w_answer, outputs
        )
        return (loss, outputs) if return_outputs else loss

    def _log_segments(self, mode, parts, segments, w_think, w_answer, outputs) -> None:
        metrics = self._metrics[mode]
        for name in ("think", "answer"):
            has = parts[f"{name}_tokens"] > 0
            total = self.accelerator.gather_for_metrics((parts[name] * has).sum().reshape(1)).sum()
            samples = self.accelerator.gather_for_metrics(has.sum().reshape(1)).sum()
            tokens = self.accelerator.gather_for_metrics(parts[f"{name}_tokens"].sum().reshape(1)).sum()
            if samples > 0:
                metrics[f"loss_{name}"].append((total / samples).item())
            metrics[f"tokens_{name}"].append(tokens.item())
        # Samples that train with no ANSWER token (max_length cut it): what SCALe guards against.
        no_answer = (parts["think_tokens"] > 0) & (parts["answer_tokens"] == 0)
        metrics["samples_without_answer"].append(
            self.accelerator.gather_for_metrics(no_answer.sum().reshape(1)).sum().item()
        )
        metrics["w_think"].append(w_think)
        metrics["w_answer"].append(w_answer)
        valid = self.accelerator.gather_for_metrics(outputs.label_mask.sum().reshape(1)).sum()
        correct = self.accelerator.gather_for_metrics(outputs.is_top1.sum().reshape(1)).sum()
        metrics["mean_token_accuracy"].append((correct / valid).item() if valid > 0 else 0.0)
        if mode == "train":
            self._total_train_tokens += int(segments.ne(IGNORED).sum())
            metrics["num_tokens"] = [self._total_train_tokens]


def trl_args(config: SFTConfig, run_dir: Path, bf16: bool) -> TRLSFTConfig:
    # completion_only_loss and max_length set deliberately: the segments are the completion's,
    # and TRL defaults to 1024 tokens, where cutting an image-token run in half breaks the batch.
    return trl_arguments(
        config, TRLSFTConfig, run_dir, bf16, completion_only_loss=True, remove_unused_columns=True
    )


class AnswerBudgetError(ValueError):
    """max_length would cut the answer of some samples and the config says to stop."""


# What `scale sft` reports in one line besides the errors every stage shares.
USER_ERRORS = (AnswerBudgetError,)


def answer_budget_preflight(
    config: SFTConfig, examples: list[Example], resolved
) -> tuple[list[Example], dict[str, Any]]:
    """The SFT pre-flight: every sample's token count with the model's own processor, and what
    ``max_length`` would cut, handled as ``config.cut_answers`` says; returns the examples to
    train on and the findings for the manifest."""
    from transformers import AutoProcessor

    untraced = [e.id for e in examples if not e.reasoning]
    if untraced:
        raise DataError(
            config.data.spec,
            untraced[0],
            "reasoning",
            f"{len(untraced)} of {len(examples)} examples have no reasoning trace (RL data): SFT needs "
            "<think>...</think><answer>...</answer> completions; use this data for GRPO",
        )

    processor = AutoProcessor.from_pretrained(resolved.path, trust_remote_code=config.trust_remote_code)
    apply_pixel_bounds(processor, config)  # counted at the size it will train at
    budgets = measure(to_rows(examples, config.system_prompt), processor)
    report = budget_report(budgets, config.max_length)
    log.info("%s", report.summary())
    findings = {**report.to_dict(), "action": config.cut_answers}
    if not report.cut_answers or config.cut_answers == "keep":
        return examples, findings
    if config.cut_answers == "stop":
        first = next(ids[0] for ids in report.cut.values())
        raise AnswerBudgetError(
            f"max_length {config.max_length} cuts the answer of {report.cut_answers} of {report.samples} samples "
            f"(first: {first}; longest: {report.longest['id']}, {report.longest['tokens']} tokens). Raise "
            "max_length, shrink the images, or --set cut_answers=drop (skip them) or keep (train them cut)"
        )
    kept = [e for e, b in zip(examples, budgets, strict=True) if b.cut(config.max_length) is None]
    log.warning("pre-flight: dropped %d samples whose answer max_length cuts", len(examples) - len(kept))
    if not kept:
        raise AnswerBudgetError(f"max_length {config.max_length} cuts the answer of every sample")
    return kept, {**findings, "dropped": len(examples) - len(kept)}


# The pre-flight's findings and the samples it kept, in the run directory, keyed by what decides them.
PREFLIGHT_FILE = "preflight.json"


def preflight_once(config: SFTConfig, examples: list[Example], resolved, data_fingerprint: str):
    """:func:`answer_budget_preflight` once per data, model and budget: on the first rank of a
    launched job (the others wait for its file), and not again when the run resumes."""
    decided_by = [
        data_fingerprint,
        resolved.path,
        config.max_length,
        config.system_prompt,
        config.cut_answers,
    ]
    key = fingerprint([*decided_by, config.min_pixels, config.max_pixels])

    def compute() -> dict[str, Any]:
        kept, findings = answer_budget_preflight(config, examples, resolved)
        return {"kept": [e.id for e in kept], "findings": findings}

    result = computed_once(Path(config.output_dir) / PREFLIGHT_FILE, key, compute)
    kept = set(result["kept"])
    return [e for e in examples if e.id in kept], result["findings"]


def run_sft(config: SFTConfig, force: bool = False, callbacks: list | None = None) -> Path:
    """Train, export the merged checkpoint and finish the manifest; returns the run directory."""
    run = StageRun("sft", config, force, checkpoints=CHECKPOINTS_DIR)
    if run.finished_before():
        return run.run_dir
    check_trl_section(config, TRLSFTConfig)
    resolved = resolve_model(config.model)
    examples, data_info = load_examples(config)
    examples, data_info["preflight"] = preflight_once(config, examples, resolved, data_info["fingerprint"])
    with run.running() as manifest, distributed_teardown():
        if manifest is None:  # finished meanwhile by another process
            return run.run_dir
        model, processor = load_for_training(config, resolved, manifest, data_info)
        stage_callbacks = StageCallbacks.for_stage(config, manifest, run.run_dir, callbacks)
        trainer = ScaleSFTTrainer(
            model=model,
            args=trl_args(config, run.run_dir, resolve_bf16(config)),
            train_dataset=to_dataset(examples, config.system_prompt),
            processing_class=processor,
            data_collator=SegmentCollator(
                processor=processor, max_length=config.max_length, completion_only_loss=True
            ),
            peft_config=peft_config(config.lora),
            callbacks=stage_callbacks.all,
            loss_config=config.loss,
        )
        train_and_export(trainer, processor, manifest, run.run_dir, stage_callbacks)
    return run.run_dir
