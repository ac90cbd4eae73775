"""Trainer set-up both training stages share: the examples, the model and its processor, LoRA
or a frozen vision tower, and TRL's arguments.

A training stage's own module (:mod:`scale_repro.stages.sft`, :mod:`scale_repro.stages.grpo`)
calls these in order; the callbacks are :mod:`scale_repro.stages.callbacks`, training with
resume and the export of the merged checkpoint :mod:`scale_repro.stages.export`.

Settings reach TRL without being copied: every field of our config that TRL's config class
also has passes under its own name (:func:`trl_arguments`), and ``trl:`` passes any other field
of TRL's config as it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import torch

from scale_repro.config import LoraConfig, TrainConfig
from scale_repro.data.records import Example, to_conversation
from scale_repro.data.sources import load_training_examples
from scale_repro.data.validate import DataError
from scale_repro.method.formats import INSTRUCTION
from scale_repro.runs.rundir import CHECKPOINTS_DIR, Manifest, fingerprint
from scale_repro.yaml_files import ConfigError

log = logging.getLogger("scale_repro")

# Vision towers of the three families; LoRA never targets them.
VISION_MODULE_PATTERN = r"(visual|vision_tower|vision_model|multi_modal_projector|merger)"


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


def load_for_training(config: TrainConfig, resolved, manifest: Manifest, data_info: dict[str, Any]):
    """The model and processor a stage trains, in its precision, with the vision tower frozen
    for full fine-tuning when the config says so; what was loaded goes to the manifest."""
    manifest.update(
        model={"name": config.model, "path": resolved.path, "kind": resolved.kind},
        seed=config.seed,
        data=data_info,
    )
    model, processor = load_model_and_processor(resolved.path, resolve_bf16(config), config.trust_remote_code)
    apply_pixel_bounds(processor, config)
    if not config.lora.enabled and config.lora.freeze_vision:
        freeze_vision_tower(model)
    return model, processor


def apply_pixel_bounds(processor, config: TrainConfig) -> None:
    """``min_pixels`` / ``max_pixels`` on a processor that resizes to a pixel budget (its
    ``size`` holds ``shortest_edge`` / ``longest_edge`` in pixels, as Qwen2.5-VL's does); saved
    with the processor, so the exported checkpoint carries them to evaluation and vLLM."""
    if config.min_pixels is None and config.max_pixels is None:
        return
    image_processor = getattr(processor, "image_processor", None)
    size = getattr(image_processor, "size", None)
    if size is None or "longest_edge" not in size or "shortest_edge" not in size:
        raise ConfigError(
            f"min_pixels / max_pixels: {type(image_processor).__name__} does not resize to a pixel budget "
            "(Qwen2.5-VL's processor does); leave them unset for this model"
        )
    for key, value in (("shortest_edge", config.min_pixels), ("longest_edge", config.max_pixels)):
        if value is not None:
            if isinstance(size, dict):
                size[key] = value
            else:  # transformers' SizeDict
                setattr(size, key, value)


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


# Fields TRL's config shares with ours that the stage sets itself, from the run directory and the
# machine (every other shared field passes as the config holds it).
SET_BY_THE_STAGE = ("output_dir", "seed", "bf16", "report_to")
TENSORBOARD_DIR = "tensorboard"  # under a training run directory, with report_to: [tensorboard]


def trl_field_names(trl_class) -> set[str]:
    return {f.name for f in dataclasses.fields(trl_class) if f.init}


def check_trl_section(config: TrainConfig, trl_class) -> None:
    """``trl:`` names fields of TRL's config that ours does not have; checked before any model
    loads (a typo would otherwise stop the run after loading, in TRL's own words)."""
    known = trl_field_names(trl_class)
    ours = {f.name for f in dataclasses.fields(config)}
    for key in config.trl:
        if key in ours:
            raise ConfigError(
                f"trl.{key}: {key} is a setting of its own here; set it as {key}, not trl.{key}"
            )
        if key not in known:
            raise ConfigError(f"trl.{key}: not a field of TRL's {trl_class.__name__} (see its documentation)")


def single_process_rendezvous() -> None:
    """DeepSpeed started without a launcher (`scale sft` on one GPU, `scale bench`) finds no
    RANK / WORLD_SIZE and falls back to MPI discovery, which needs mpi4py: give it a process group
    of one instead, as transformers' DeepSpeed guide does for a notebook ("Deployment in
    Notebooks"). Under a launcher the variables are set already and nothing changes."""
    if "WORLD_SIZE" in os.environ or "RANK" in os.environ:
        return
    import socket

    with socket.socket() as probe:  # a free port for the one-process rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(
        RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )


def trl_arguments(config: TrainConfig, trl_class, run_dir: Path, bf16: bool, **stage_settings: Any):
    """TRL's config for a stage: every field our config shares with ``trl_class`` as the config
    holds it, then ``config.trl``, then what the stage sets (``stage_settings`` last)."""
    names = trl_field_names(trl_class)
    if config.deepspeed:
        single_process_rendezvous()
    if "tensorboard" in config.report_to or "all" in config.report_to:
        # transformers' TensorBoardCallback reads its folder from the environment only (else it
        # nests one per date and host under the checkpoints): the run directory's tensorboard/.
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / TENSORBOARD_DIR)
    shared = {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if f.name in names and f.name not in SET_BY_THE_STAGE
    }
    settings = {
        **shared,
        **config.trl,
        "output_dir": str(run_dir / CHECKPOINTS_DIR),
        "seed": config.seed,
        "data_seed": config.seed,
        "bf16": bf16,
        "report_to": config.report_to or "none",
        "use_cpu": not torch.cuda.is_available(),
        # The Trainer would log a NaN step's loss as the mean of the earlier ones; show it as it
        # is, so that DivergenceGuard sees it and the log tells the truth.
        "logging_nan_inf_filter": False,
        **stage_settings,
    }
    return trl_class(**settings)


@contextlib.contextmanager
def distributed_teardown():
    """The process group a launcher started ends with the stage, however it ends."""
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
