"""`scale bench`: what a training step costs on this machine, through the real stages.

SFT: step time, tokens per second (prompt, image and completion tokens, counted by the
pre-flight), model FLOPs utilisation and peak memory, from `scale sft` on synthetic data at the
chosen image size. GRPO: rollout tokens per second from `scale grpo`, with transformers
generation and, where vLLM and CUDA are present, with vLLM colocated. The first steps are
warm-up and not counted.

A paper model whose weights are not on this machine is benchmarked random-init
(``--random-init``): its ``-random`` counterpart, built on the GPU at the widths vendored in
:mod:`scale_repro.models.tiny` (no download); the speed of a step does not depend on the values
of the weights. Every run uses the model recipe's settings (LoRA, batch, accumulation,
``max_length``, gradient checkpointing, DeepSpeed).
On a CPU the default model is a tiny one, so the code path is exercised everywhere.

MFU is the model FLOPs a step needs (:func:`train_flops_per_token`, from the architecture: the
language model's matmuls at 6 FLOPs per weight and token, 4 under LoRA, whose frozen weights get
no gradient; causal attention at 12 x layers x heads x head dim x sequence length (PaLM's count);
the vision tower on image tokens only) per second, against the device's dense bf16 peak from an
exact table of data-sheet figures. Gradient checkpointing recomputes a forward pass: hardware
FLOPs, not model FLOPs, so it does not count.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

log = logging.getLogger("scale_repro")
WARMUP_STEPS = 2
# Dense bf16 peak FLOP/s (no sparsity) by the exact name torch reports, from NVIDIA's data sheets.
# A name not here gets no MFU rather than another card's peak (an H100 PCIe is not an SXM).
PEAK_BF16_FLOPS = {
    "NVIDIA H100 80GB HBM3": 989.4e12,  # H100 SXM5
    "NVIDIA H100 PCIe": 756.4e12,
    "NVIDIA H100 NVL": 835.4e12,
    "NVIDIA H200": 989.4e12,  # H200 SXM, the H100 SXM's compute
    "NVIDIA A100-SXM4-80GB": 312e12,
    "NVIDIA A100-SXM4-40GB": 312e12,
    "NVIDIA A100 80GB PCIe": 312e12,
    "NVIDIA A100-PCIE-40GB": 312e12,
    "NVIDIA L40S": 362.05e12,
}


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step."""

    def __init__(self):
        self.times: list[float] = []
        self._started = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._started)


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def peak_flops(name: str) -> float | None:
    return PEAK_BF16_FLOPS.get(name.strip())


def train_flops_per_token(
    shape, sequence: float, lora: bool, vision_trained: bool, vision_patches: float = 0.0
) -> float:
    """Model FLOPs of one training step per token of a sequence of ``sequence`` tokens.

    Language model: 2 FLOPs per weight and token forward, 4 backward (activation and weight
    gradients), so 6; under LoRA the frozen weights get no weight gradient, so 4 (the adapters'
    own are negligible). Attention: 12 x layers x heads x head dim x sequence (forward and
    backward, causal, as PaLM counts it). Vision tower: its weights on the ``vision_patches``
    patches of the sequence's images (not on text tokens), forward (2) or forward and backward
    (6) as it trains, spread over the sequence's tokens.
    """
    language = shape.parameters - shape.vision_parameters
    dense = (4 if lora else 6) * language
    attention = 12 * shape.layers * shape.heads * shape.head_dim * sequence
    vision = (6 if vision_trained and not lora else 2) * shape.vision_parameters * vision_patches / sequence
    return dense + attention + vision


def vision_patches(model_path: str, pixels: float) -> float:
    """Patches the vision tower runs on for ``pixels`` pixels (per channel), by its patch size."""
    from transformers import AutoConfig

    vision = getattr(AutoConfig.from_pretrained(model_path), "vision_config", None)
    patch = getattr(vision, "patch_size", None)
    if not patch:
        return 0.0
    height, width = patch if isinstance(patch, (list, tuple)) else (patch, patch)  # InternVL: (14, 14)
    return pixels / (height * width)


def peak_memory_gib() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1024**3
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def random_init_copy(model: str, out: Path) -> str:
    """A random-init checkpoint with ``model``'s config and processor (no weights downloaded)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    config = AutoConfig.from_pretrained(model)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        network = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    network.save_pretrained(out, safe_serialization=True)
    AutoProcessor.from_pretrained(model).save_pretrained(out)
    del network
    return str(out)


def _warm(times: list[float]) -> list[float]:
    return times[WARMUP_STEPS:] or times


def run_bench(
    model: str | None = None,
    steps: int = 6,
    batch: int | None = None,
    image_size: int = 448,
    random_init: bool = False,
    generations: int = 4,
    completion_tokens: int = 64,
    work_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Benchmark SFT and GRPO steps at the model recipe's settings (its LoRA, batch, accumulation,
    ``max_length``, gradient checkpointing and DeepSpeed config; ``batch`` replaces its per-device
    batch); returns the figures (see the module docstring)."""
    import torch

    from scale_repro.config import GRPOConfig, SFTConfig, load_config, model_recipe
    from scale_repro.data.synth import SynthConfig, write_synthetic
    from scale_repro.models.registry import catalogue, resolve_model
    from scale_repro.runs.rundir import package_versions, read_manifest, read_train_log
    from scale_repro.sizing.gpu_plan import shape_of
    from scale_repro.stages.grpo import run_grpo, vllm_available
    from scale_repro.stages.sft import run_sft

    on_gpu = torch.cuda.is_available()
    model = model or ("qwen2.5-vl-3b" if on_gpu else "tiny-qwen2.5-vl")
    # A random-init copy lives in a temporary folder: name the recipe of the model it copies.
    recipes = [recipe] if (recipe := model_recipe(model)) else []
    own_dir = work_dir is None
    work = Path(work_dir or tempfile.mkdtemp(prefix="scale-bench-"))
    try:
        path = model
        if random_init and f"{model}-random" in catalogue():  # a paper model: its vendored widths
            path = resolve_model(f"{model}-random").path
        elif random_init:
            path = random_init_copy(resolve_model(model).path, work / "random-init")
        data = work / "data"
        common = [
            f"model={path}",
            f"data.spec={data}",
            f"max_steps={steps}",
            "save_steps=100000",
            "logging_steps=1",
        ]
        timer = StepTimer()
        sft = load_config(
            SFTConfig,
            recipes,
            [
                *common,
                f"output_dir={work / 'sft'}",
                *([f"per_device_train_batch_size={batch}"] if batch else []),
                "cut_answers=keep",
            ],
        )
        samples_per_step = sft.per_device_train_batch_size * sft.gradient_accumulation_steps
        write_synthetic(
            data, SynthConfig(seed=0, n_train=samples_per_step * (steps + 1), n_test=2, image_size=image_size)
        )
        run_sft(sft, callbacks=[timer])
        manifest = read_manifest(work / "sft")
        tokens_per_sample = manifest["data"]["preflight"]["tokens"]["median"]
        step_s = statistics.median(_warm(timer.times))
        tokens_per_s = samples_per_step * tokens_per_sample / step_s
        shape = shape_of(resolve_model(path).path)
        parameters = shape.parameters
        name = device_name()
        peak = peak_flops(name)
        images = manifest["data"]["preflight"]["images"]
        patches = vision_patches(resolve_model(path).path, images["pixels_median"])
        flops_per_token = train_flops_per_token(
            shape, tokens_per_sample, sft.lora.enabled, not sft.lora.freeze_vision, patches
        )
        result: dict[str, Any] = {
            "device": "cpu" if not on_gpu else name,
            "model": model,
            "random_init": random_init,
            "parameters": parameters,
            "lora": sft.lora.enabled,
            "image_size": image_size,
            "batch": sft.per_device_train_batch_size,
            "gradient_accumulation_steps": sft.gradient_accumulation_steps,
            "max_length": sft.max_length,
            "gradient_checkpointing": sft.gradient_checkpointing,
            "deepspeed": sft.deepspeed,
            "recipe": str(recipe) if recipe else None,
            "steps": steps,
            "sft_step_s": step_s,
            "sft_tokens_per_sample": tokens_per_sample,
            "sft_tokens_per_s": tokens_per_s,
            "sft_image_tokens_per_sample": images["tokens_median"],
            "sft_vision_patches_per_sample": patches,
            "train_flops_per_token": flops_per_token,
            "mfu": flops_per_token * tokens_per_s / peak if peak else None,
            "peak_memory_gib": peak_memory_gib(),
            "rollouts": {},
        }
        for engine in ("transformers", "vllm"):
            if engine == "vllm" and not vllm_available():
                result["rollouts"]["vllm"] = None  # needs CUDA and the vllm package
                continue
            timer = StepTimer()
            out = work / f"grpo-{engine}"
            grpo = load_config(
                GRPOConfig,
                recipes,
                [
                    *common,
                    f"output_dir={out}",
                    f"per_device_train_batch_size={generations}",
                    f"num_generations={generations}",
                    f"max_completion_length={completion_tokens}",
                    f"use_vllm={'true' if engine == 'vllm' else 'false'}",
                ],
            )
            run_grpo(grpo, callbacks=[timer])
            # Generation alone (ScaleGRPOTrainer logs it), not the whole step with its backward.
            timed = [
                (e["rollout/tokens"], e["rollout/generation_s"])
                for e in read_train_log(out)
                if e.get("rollout/generation_s")
            ]
            timed = timed[WARMUP_STEPS:] or timed
            result["rollouts"][engine] = {
                "step_s": statistics.median(_warm(timer.times)),
                "generation_s": statistics.median(seconds for _, seconds in timed),
                "rollout_tokens_per_s": sum(t for t, _ in timed) / sum(s for _, s in timed),
            }
        fastest = result["rollouts"].get("vllm") or result["rollouts"]["transformers"]
        result["rollout_tokens_per_s"] = fastest["rollout_tokens_per_s"]
        result["versions"] = package_versions()
        result["cpus"] = os.cpu_count()
        return result
    finally:
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)


def render(result: dict[str, Any]) -> str:
    mfu = (
        f"{100 * result['mfu']:.1f}%" if result["mfu"] is not None else "n/a (no known peak for this device)"
    )
    lines = [
        f"# Benchmark: {result['model']}{' (random-init)' if result['random_init'] else ''} on {result['device']}",
        "",
        "| measure | value |",
        "|---|---|",
        f"| parameters | {result['parameters']:,.0f}{' (LoRA)' if result['lora'] else ''} |",
        f"| SFT optimizer step (batch {result['batch']} x {result['gradient_accumulation_steps']} accumulated, "
        f"{result['image_size']} px images) | {result['sft_step_s']:.3f} s |",
        f"| SFT tokens per sample (images included) | {result['sft_tokens_per_sample']:.0f} |",
        f"| SFT tokens/s | {result['sft_tokens_per_s']:,.0f} |",
        f"| MFU | {mfu} |",
        f"| peak memory | {result['peak_memory_gib']:.2f} GiB |",
    ]
    for engine, figures in result["rollouts"].items():
        value = (
            f"{figures['rollout_tokens_per_s']:,.0f}" if figures else "not available (needs CUDA and vllm)"
        )
        lines.append(f"| GRPO rollout tokens/s, {engine} | {value} |")
    settings = ", ".join(
        f"{key} {result[key]}"
        for key in ("max_length", "gradient_checkpointing", "deepspeed")
        if result.get(key)
    )
    lines += [
        "",
        f"Median over steps after {WARMUP_STEPS} warm-up steps, at the settings of "
        f"{result.get('recipe') or 'the defaults'}{f' ({settings})' if settings else ''}.",
    ]
    return "\n".join(lines) + "\n"


def write(result: dict[str, Any], out: Path) -> None:
    from scale_repro.runs.rundir import atomic_write_text

    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".md"), render(result))
