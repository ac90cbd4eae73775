"""What the training stages add to TRL's trainers: resuming that never loses trained weights, a
per-step log file, a stop at the first non-finite step (or a skip of it), a clean stop on
SIGTERM, and a manifest kept current while training."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainerCallback

from scale_repro.config import TrainConfig
from scale_repro.runs.checkpoints import load_full_state
from scale_repro.runs.faults import kill_point
from scale_repro.runs.rundir import TRAIN_LOG, Manifest, atomic_write_text
from scale_repro.stages.lifecycle import TrainingDiverged

log = logging.getLogger("scale_repro")


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


class WeightDrift(TrainerCallback):
    """``policy/weight_drift`` in every training log: how far the trained weights have moved from
    where this attempt started, as ||w - w0|| / ||w0|| over the trainable tensors (LoRA: the
    adapters, whose B starts at 0, so the ratio is against A's norm; full fine-tuning: every
    trained weight). A cheap stand-in for the policy's KL from its start, which TRL logs as ``kl``
    only with a reference model (``beta`` > 0). A resumed attempt measures from its checkpoint.
    The first process alone keeps the start (on the CPU) and measures, tensor by tensor on the
    weights' device; a tensor a ZeRO-3 shard leaves empty here is not counted."""

    KEY = "policy/weight_drift"

    def __init__(self):
        self.start: dict[str, torch.Tensor] = {}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None and state.is_world_process_zero:
            self.start = {
                name: p.detach().to("cpu", copy=True)
                for name, p in model.named_parameters()
                if p.requires_grad and p.numel() > 0
            }

    @torch.no_grad()
    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if logs is None or model is None or not self.start or "loss" not in logs:
            return
        moved = base = 0.0
        for name, p in model.named_parameters():
            start = self.start.get(name)
            if start is None or p.numel() != start.numel():
                continue
            start = start.to(p.device).float()
            moved += float((p.detach().float() - start).pow(2).sum())
            base += float(start.pow(2).sum())
        if base > 0:
            logs[self.KEY] = math.sqrt(moved / base)


def trackers_last(trainer) -> None:
    """The trackers named in ``report_to`` (TensorBoard, Trackio, W&B, ...) get each log after the
    stage's own callbacks have added to it (weight drift, say): the trainer puts them first."""
    from transformers.integrations import INTEGRATION_TO_CALLBACK

    trackers = tuple(
        INTEGRATION_TO_CALLBACK[name] for name in trainer.args.report_to if name in INTEGRATION_TO_CALLBACK
    )
    trainer.callback_handler.callbacks.sort(key=lambda callback: isinstance(callback, trackers))


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


def nonfinite_weights(model) -> list[str]:
    """Names of the parameters holding NaN or inf."""
    return [name for name, weight in model.named_parameters() if not torch.isfinite(weight).all()]


@dataclass
class StageCallbacks:
    """Every training stage's callbacks, in the order they run, and the two the stage asks
    afterwards (did SIGTERM stop it; which steps were skipped)."""

    stop: StopOnSigterm
    skip: SkipNonfiniteSteps
    all: list = field(default_factory=list)

    @classmethod
    def for_stage(cls, config: TrainConfig, manifest: Manifest, run_dir: Path, extra: list | None = None):
        stop, skip = StopOnSigterm(), SkipNonfiniteSteps()
        skipping = config.nonfinite_steps == "skip"
        callbacks = [
            WeightDrift(),  # first: the log file and the trackers get what it adds
            JsonlLogCallback(run_dir / TRAIN_LOG),
            DivergenceGuard(skipping=skipping),
            ManifestHeartbeat(manifest),
            stop,
            *(extra or []),
            *([skip] if skipping else []),  # last: it sees the final gradients
        ]
        return cls(stop, skip, callbacks)
