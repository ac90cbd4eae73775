"""What `scale sft` and `scale grpo` share: model loading, LoRA, data sets, run directories,
resuming, the per-step log file and the merged checkpoint the next stage loads."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from scale_repro.config import LoraConfig, TrainConfig
from scale_repro.data.records import Example, to_conversation
from scale_repro.data.sources import load_training_examples
from scale_repro.data.validate import DataError
from scale_repro.method.formats import INSTRUCTION
from scale_repro.models.registry import MERGED_DIR, resolve_model
from scale_repro.runs.checkpoints import CheckpointInfo, load_full_state, newest_complete
from scale_repro.runs.faults import kill_point
from scale_repro.runs.rundir import (
    CHECKPOINTS_DIR,
    TRAIN_LOG,
    Manifest,
    StageInterrupted,
    atomic_write_text,
    fingerprint,
    publishing,
    read_train_log,
)
from scale_repro.stages.lifecycle import run_stage

log = logging.getLogger("scale_repro")

ADAPTER_DIR = "adapter"
# Vision towers of the three families; LoRA never targets them.
VISION_MODULE_PATTERN = r"(visual|vision_tower|vision_model|multi_modal_projector|merger)"


class SafeResumeMixin:
    """Trainer methods that keep a resume from losing trained weights (see
    :mod:`scale_repro.runs.checkpoints`): full checkpoints load with the model's key conversion
    and must cover every tensor; a kill inside a checkpoint save can be injected for tests."""

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        from peft import PeftModel

        model = self.model if model is None else model
        if isinstance(model, PeftModel) or self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        loaded = load_full_state(model, resume_from_checkpoint)
        log.info("resumed %d tensors from %s", loaded, resume_from_checkpoint)

    def _save_rng_state(self, output_dir):
        # Weights and optimizer are on disk, trainer_state.json is not yet: a half-written checkpoint.
        kill_point("checkpoint-save", self.state.global_step)
        return super()._save_rng_state(output_dir)


def use_cuda() -> bool:
    return torch.cuda.is_available()


def resolve_bf16(config: TrainConfig) -> bool:
    return use_cuda() if config.bf16 is None else bool(config.bf16)


def load_model_and_processor(model_path: str, bf16: bool, trust_remote_code: bool = False):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    dtype = torch.bfloat16 if bf16 else torch.float32
    model = AutoModelForImageTextToText.from_pretrained(
        model_path, dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True
    )
    processor = AutoProcessor.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    return model, processor


def lora_target_regex(lora: LoraConfig) -> str:
    """Target the named projections of the language model only (the vision tower shares names)."""
    names = "|".join(lora.target_modules)
    if lora.freeze_vision:
        return rf"^(?!.*{VISION_MODULE_PATTERN}).*\.({names})$"
    return rf".*\.({names})$"


def peft_config(lora: LoraConfig):
    if not lora.enabled:
        return None
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora_target_regex(lora),
        task_type="CAUSAL_LM",
    )


def freeze_vision_tower(model) -> int:
    """Full fine-tuning with a frozen vision tower; returns how many tensors were frozen."""
    import re

    pattern = re.compile(VISION_MODULE_PATTERN)
    frozen = 0
    for name, parameter in model.named_parameters():
        if pattern.search(name):
            parameter.requires_grad_(False)
            frozen += 1
    return frozen


def load_examples(config: TrainConfig) -> tuple[list[Example], dict[str, Any]]:
    """Training examples and the data section of the manifest (counts, rejections, fingerprint)."""
    result = load_training_examples(
        config.data.spec,
        image_root=config.data.image_root,
        strict=config.data.strict,
        sources=config.data.sources,
        id_contains=config.data.id_contains,
    )
    examples = order_examples(result.examples, config.data.order, config.seed, config.data.spec)
    if config.data.max_examples is not None:
        examples = examples[: config.data.max_examples]
    if not examples:
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(result.report.rejected.items())) or "none rejected"
        raise DataError(
            config.data.spec,
            None,
            None,
            f"no valid training examples ({result.report.total} records, {result.report.selected} selected; {reasons})",
        )
    if result.report.rejected:
        log.warning("skipped rejected records:\n%s", result.report.summary())
    info = {
        "spec": config.data.spec,
        "examples": len(examples),
        "records_total": result.report.total,
        "records_selected": result.report.selected,
        "records_valid": result.report.valid,
        "rejected": dict(result.report.rejected),
        "references_rewritten": result.report.rewritten,
        "turns_split": result.report.turns_split,
        "sources": dict(result.report.sources),
        "fingerprint": fingerprint(
            [(e.id, e.question, e.reasoning, e.answer, e.answer_text, e.context, e.images) for e in examples]
        ),
    }
    return examples, info


def order_examples(examples: list[Example], order: str, seed: int, where: str) -> list[Example]:
    """Examples by pass rate for the difficulty axis: easy (high pass rate) to hard, or the
    reverse; equal pass rates in a seeded random order (as VLM-CapCurriculum's
    generate_curriculum_per_stage.py sorts). "shuffle" leaves them as they are."""
    if order == "shuffle":
        return examples
    import random

    missing = next((e for e in examples if "pass_rate" not in e.meta), None)
    if missing is not None:
        raise DataError(
            where,
            missing.id,
            "pass_rate",
            f"data.order={order} needs a pass rate for every example; `scale data pass-rate` estimates them",
        )
    shuffled = list(examples)
    random.Random(seed).shuffle(shuffled)
    return sorted(shuffled, key=lambda e: e.meta["pass_rate"], reverse=order == "easy_to_hard")


def to_rows(
    examples: list[Example], system_prompt: str | None = None, instruction: str = INSTRUCTION
) -> list[dict[str, Any]]:
    """Conversational prompt-completion rows with image paths (PIL images kept as they are)."""
    return [
        to_conversation(
            e, [p if hasattr(p, "size") else str(p) for p in e.images], system_prompt, instruction
        )
        for e in examples
    ]


def to_dataset(examples: list[Example], system_prompt: str | None = None, instruction: str = INSTRUCTION):
    """A `datasets.Dataset` of conversational prompt-completion rows; images decode lazily."""
    import datasets

    rows = to_rows(examples, system_prompt, instruction)
    for row in rows:
        row["choices"] = row["choices"] or []
    features = datasets.Features(
        {
            "prompt": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
            "completion": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
            "images": datasets.Sequence(datasets.Image()),
            "answer": datasets.Value("string"),
            "choices": datasets.Sequence(datasets.Value("string")),
            "id": datasets.Value("string"),
        }
    )
    if not all("completion" in r for r in rows):
        features.pop("completion")
        rows = [{k: v for k, v in r.items() if k != "completion"} for r in rows]
    return datasets.Dataset.from_list(rows, features=features)


def trainer_arguments(config: TrainConfig, run_dir: Path, bf16: bool) -> dict[str, Any]:
    """The `transformers.TrainingArguments` both stages set from a :class:`TrainConfig`."""
    return dict(
        output_dir=str(run_dir / CHECKPOINTS_DIR),
        seed=config.seed,
        data_seed=config.seed,
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        warmup_steps=config.warmup_steps,
        lr_scheduler_type=config.lr_scheduler_type,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        bf16=bf16,
        gradient_checkpointing=config.gradient_checkpointing,
        logging_steps=config.logging_steps,
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        deepspeed=config.deepspeed,
        dataloader_num_workers=config.dataloader_num_workers,
        report_to=config.report_to or "none",
        use_cpu=not torch.cuda.is_available(),
        # The Trainer would log a NaN step's loss as the mean of the earlier ones; show it as it
        # is, so that DivergenceGuard sees it and the log tells the truth.
        logging_nan_inf_filter=False,
    )


def resume_point(run_dir: Path) -> CheckpointInfo | None:
    """The newest complete checkpoint of the run; newer, half-written ones are removed (they
    would otherwise be picked up or overwritten piecemeal) and named in the log."""
    newest, broken = newest_complete(run_dir / CHECKPOINTS_DIR)
    for info in broken:
        log.warning("ignoring incomplete %s: %s", info.path, info.problem)
        shutil.rmtree(info.path, ignore_errors=True)
    return newest


class JsonlLogCallback(TrainerCallback):
    """Appends every trainer log entry to ``train_log.jsonl``; on resume, entries past the
    checkpoint's step are dropped first so the file reads as one uninterrupted run."""

    def __init__(self, path: Path):
        self.path = path

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= state.global_step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue
        atomic_write_text(self.path, "".join(k + "\n" for k in kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        entry = {"step": state.global_step, "epoch": state.epoch, **logs}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")


class TrainingDiverged(RuntimeError):
    """The loss, the gradient norm or the weights are no longer finite numbers."""


class SkipNonfiniteSteps(TrainerCallback):
    """``nonfinite_steps: skip``: a step whose gradients hold NaN or inf makes no update (its
    gradients are dropped before the optimizer runs, so AdamW leaves weights and moments as
    they were), is logged with its step and counted for the manifest."""

    def __init__(self):
        self.skipped: list[int] = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        gradients = [p.grad for p in model.parameters() if p.grad is not None]
        if gradients and not all(torch.isfinite(g).all() for g in gradients):
            model.zero_grad(set_to_none=True)
            self.skipped.append(state.global_step + 1)
            log.warning(
                "step %d: gradients are NaN or inf; the step is skipped (nonfinite_steps: skip)",
                state.global_step + 1,
            )


class DivergenceGuard(TrainerCallback):
    """Stops the run at the first logged step whose loss or gradient norm is NaN or inf, with the
    step in the message: a diverged run must never finish and export NaN weights. The
    checkpoints saved before it stay, so a rerun with other settings can resume from them."""

    WATCHED = ("loss", "grad_norm")

    def __init__(self, skipping: bool = False):
        self.skipping = skipping  # NaN steps are skipped, not fatal: only the weights are checked

    def on_save(self, args, state, control, model=None, **kwargs):
        """A checkpoint saved between logged steps could hold NaN weights and become the resume
        point: check what was saved, and remove it if it is not finite."""
        broken = nonfinite_weights(model) if model is not None else []
        if broken:
            shutil.rmtree(Path(args.output_dir) / f"checkpoint-{state.global_step}", ignore_errors=True)
            raise TrainingDiverged(
                f"training diverged by step {state.global_step}: {len(broken)} weight tensors are NaN or inf "
                f"(first: {broken[0]}); that checkpoint was removed and nothing was exported"
            )

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.skipping:
            return
        for key in self.WATCHED:
            value = (logs or {}).get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                raise TrainingDiverged(
                    f"training diverged at step {state.global_step}: {key} is {value} "
                    f"(learning_rate {args.learning_rate}, max_grad_norm {args.max_grad_norm}); "
                    "nothing was exported. Lower the learning rate or check the data, then run again"
                )


class StopOnSigterm(TrainerCallback):
    """SIGTERM (what Slurm sends at a job's time limit, and what a preemption sends) ends the
    current step, saves a checkpoint and stops training; the stage then marks its attempt
    interrupted, so running the same command again resumes and loses no step. Under several
    processes the request is shared at each step end, so every rank stops at the same step
    (one rank leaving while the others wait in the next all-reduce would hang the job)."""

    def __init__(self):
        self.requested = False
        self.stopped_early = False

    @contextlib.contextmanager
    def listening(self):
        """The SIGTERM handler, installed for the block and restored however it ends."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGTERM, self._request)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _request(self, signum, frame):
        self.requested = True

    def on_step_end(self, args, state, control, **kwargs):
        requested = self.requested
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = torch.tensor([float(requested)], device=args.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            requested = bool(flag.item())
        if requested and state.global_step < state.max_steps:  # after the last step: just finish
            control.should_save = True
            control.should_training_stop = True
            self.stopped_early = True


def nonfinite_weights(model) -> list[str]:
    """Names of the parameters holding NaN or inf."""
    return [name for name, weight in model.named_parameters() if not torch.isfinite(weight).all()]


def export_final(trainer, processor, run_dir: Path) -> dict[str, str]:
    """Save the LoRA adapter (if any) and a merged full checkpoint that transformers, vLLM
    and lmms-eval load as they are. Written to a staging folder, then renamed."""
    from peft import PeftModel

    outputs = {}
    model = trainer.accelerator.unwrap_model(trainer.model)
    broken = nonfinite_weights(model)
    if broken:  # whatever the logs said (logging_steps > 1 can step over a NaN)
        raise TrainingDiverged(
            f"{len(broken)} weight tensors are NaN or inf after step {trainer.state.global_step} "
            f"(first: {broken[0]}); nothing was exported"
        )
    if trainer.accelerator.is_main_process:
        if isinstance(model, PeftModel):
            with publishing(run_dir / ADAPTER_DIR) as staging:
                model.save_pretrained(staging)
            outputs["adapter"] = ADAPTER_DIR
            model = model.merge_and_unload()
        with publishing(run_dir / MERGED_DIR) as staging:
            # The fused LM head patches `forward` on the instance; the saved weights are untouched.
            model.save_pretrained(staging, safe_serialization=True)
            processor.save_pretrained(staging)
            kill_point("export")
        outputs["merged"] = MERGED_DIR
    trainer.accelerator.wait_for_everyone()
    return outputs


# build(model, processor, examples, run_dir, bf16, callbacks, manifest) -> a TRL trainer
TrainerBuilder = Callable[..., Any]
# (examples, resolved model) -> (examples to train on, findings for the manifest); raises to stop.
Preflight = Callable[[list[Example], Any], tuple[list[Example], dict[str, Any]]]


class ManifestHeartbeat(TrainerCallback):
    """Keeps the manifest's wall-clock time current while training, so a killed attempt
    still counts in the run's total time."""

    def __init__(self, manifest: Manifest, every_s: float = 2.0):
        self.manifest, self.every_s, self._last = manifest, every_s, time.time()

    def on_step_end(self, args, state, control, **kwargs):
        kill_point("step", state.global_step)
        if state.is_world_process_zero and time.time() - self._last >= self.every_s:
            self.manifest.heartbeat()
            self._last = time.time()

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.manifest.heartbeat()
            self._last = time.time()


def finished_training(trainer, checkpoint: CheckpointInfo, run_dir: Path) -> float | None:
    """A rerun after the last step was saved (killed during export, say): load the final
    checkpoint's weights instead of training again; returns the logged training loss."""
    trainer._load_from_checkpoint(str(checkpoint.path))
    trainer.state.global_step = checkpoint.step
    losses = [e["train_loss"] for e in read_train_log(run_dir) if "train_loss" in e]
    return losses[-1] if losses else None


def run_training_stage(
    stage: str,
    config: TrainConfig,
    build: TrainerBuilder,
    force: bool = False,
    callbacks: list | None = None,
    preflight: Preflight | None = None,
) -> Path:
    """What every training stage does around its trainer.

    Before anything is written: check the run directory (a finished identical run is
    skipped; another stage's or another config's run is refused), resolve the model and
    load and validate the data, and run the stage's ``preflight`` on it (it may drop examples
    or stop the run, and its findings go to the manifest). Then lock the directory, train (resuming from the newest
    complete checkpoint), export the merged checkpoint, and keep the manifest up to date.
    The run directory's life (skip, refuse, lock, mark failed) is :func:`scale_repro.stages.lifecycle.run_stage`.
    """
    run_dir = Path(config.output_dir or ".")

    def prepare():
        resolved = resolve_model(config.model)
        examples, data_info = load_examples(config)
        if preflight is not None:
            examples, data_info["preflight"] = preflight(examples, resolved)
        return resolved, examples, data_info

    def work(manifest: Manifest, prepared) -> None:
        resolved, examples, data_info = prepared
        _train(manifest, config, build, run_dir, resolved, examples, data_info, callbacks)

    try:
        return run_stage(stage, config, prepare, work, force=force, checkpoints=CHECKPOINTS_DIR)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _train(
    manifest: Manifest,
    config: TrainConfig,
    build: TrainerBuilder,
    run_dir,
    resolved,
    examples,
    data_info,
    callbacks,
) -> None:
    manifest.update(
        model={"name": config.model, "path": resolved.path, "kind": resolved.kind},
        seed=config.seed,
        data=data_info,
    )
    bf16 = resolve_bf16(config)
    model, processor = load_model_and_processor(resolved.path, bf16, config.trust_remote_code)
    if not config.lora.enabled and config.lora.freeze_vision:
        freeze_vision_tower(model)
    stop, skip = StopOnSigterm(), SkipNonfiniteSteps()
    callbacks = [
        JsonlLogCallback(run_dir / TRAIN_LOG),
        DivergenceGuard(skipping=config.nonfinite_steps == "skip"),
        ManifestHeartbeat(manifest),
        stop,
        *(callbacks or []),
        *([skip] if config.nonfinite_steps == "skip" else []),  # last: it sees the final gradients
    ]
    trainer = build(model, processor, examples, run_dir, bf16, callbacks, manifest)
    resume = resume_point(run_dir)
    started = time.time()
    if resume and resume.max_steps is not None and resume.step >= resume.max_steps:
        log.info("%s holds the final step: exporting it without training again", resume.path)
        train_loss = finished_training(trainer, resume, run_dir)
    else:
        if resume:
            log.info("resuming from %s", resume.path)
        with stop.listening():
            train_loss = trainer.train(
                resume_from_checkpoint=str(resume.path) if resume else None
            ).training_loss
        if stop.stopped_early:
            step = trainer.state.global_step
            raise StageInterrupted(
                f"{run_dir}: stopped by SIGTERM after step {step}, checkpoint saved; "
                "run the same command to resume"
            )
    outputs = export_final(trainer, processor, run_dir)
    manifest.finish(
        outputs=outputs,
        resumed_from=str(resume.path) if resume else None,
        train_runtime_s=time.time() - started,
        global_step=trainer.state.global_step,
        train_loss=train_loss,
        skipped_nonfinite_steps=skip.skipped,
    )
