"""Training with resume, and the merged checkpoint the next stage loads.

:func:`train_and_export` resumes from the newest complete checkpoint (a final one is exported
without training again), stops cleanly on SIGTERM, refuses to export NaN weights, and writes the
LoRA adapter and the merged full checkpoint (transformers, vLLM and lmms-eval load it as it is)
through a staging folder that is renamed into place.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from scale_repro.models.registry import MERGED_DIR
from scale_repro.runs.checkpoints import CheckpointInfo, newest_complete
from scale_repro.runs.faults import kill_point
from scale_repro.runs.rundir import CHECKPOINTS_DIR, Manifest, StageInterrupted, publishing, read_train_log
from scale_repro.stages.callbacks import StageCallbacks, nonfinite_weights, trackers_last
from scale_repro.stages.lifecycle import TrainingDiverged

log = logging.getLogger("scale_repro")

ADAPTER_DIR = "adapter"


def resume_point(run_dir: Path) -> CheckpointInfo | None:
    """The newest complete checkpoint of the run; newer, half-written ones are removed (they
    would otherwise be picked up or overwritten piecemeal) and named in the log."""
    newest, broken = newest_complete(run_dir / CHECKPOINTS_DIR)
    for info in broken:
        log.warning("ignoring incomplete %s: %s", info.path, info.problem)
        shutil.rmtree(info.path, ignore_errors=True)
    return newest


def finished_training(trainer, checkpoint: CheckpointInfo, run_dir: Path) -> float | None:
    """A rerun after the last step was saved (killed during export, say): load the final
    checkpoint's weights instead of training again; returns the logged training loss."""
    trainer._load_from_checkpoint(str(checkpoint.path))
    trainer.state.global_step = checkpoint.step
    losses = [e["train_loss"] for e in read_train_log(run_dir) if "train_loss" in e]
    return losses[-1] if losses else None


def train_and_export(
    trainer, processor, manifest: Manifest, run_dir: Path, callbacks: StageCallbacks
) -> None:
    """Train (resuming from the newest complete checkpoint), export, finish the manifest."""
    resume = resume_point(run_dir)
    trackers_last(trainer)
    started = time.time()
    if resume and resume.max_steps is not None and resume.step >= resume.max_steps:
        log.info("%s holds the final step: exporting it without training again", resume.path)
        train_loss = finished_training(trainer, resume, run_dir)
    else:
        if resume:
            log.info("resuming from %s", resume.path)
        with callbacks.stop.listening():
            result = trainer.train(resume_from_checkpoint=str(resume.path) if resume else None)
        train_loss = result.training_loss
        if callbacks.stop.stopped_early:
            raise StageInterrupted(
                f"{run_dir}: stopped by SIGTERM after step {trainer.state.global_step}, checkpoint saved; "
                "run the same command to resume"
            )
    outputs = export_final(trainer, processor, run_dir)
    manifest.finish(
        outputs=outputs,
        resumed_from=str(resume.path) if resume else None,
        train_runtime_s=time.time() - started,
        global_step=trainer.state.global_step,
        train_loss=train_loss,
        skipped_nonfinite_steps=callbacks.skip.skipped,
    )


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
