"""`scale bench`: what a training step costs on this machine, through the real stages.

SFT: step time, tokens per second (prompt, image and completion tokens, counted by the
pre-flight), model FLOPs utilisation and peak memory, from `scale sft` on synthetic data at the
chosen image size. GRPO: rollout tokens per second from `scale grpo`, with transformers
generation and, where vLLM and CUDA are present, with vLLM colocated. The first steps are
warm-up and not counted.

A paper model whose weights are not on this machine is benchmarked random-init from its
config (``--random-init``): the speed of a step does not depend on the values of the weights.
On a CPU the default model is a tiny one, so the code path is exercised everywhere.

MFU counts 6 x parameters FLOPs per token (forward and backward, the usual convention; LoRA
and gradient checkpointing change what is computed, not this figure) against the device's
dense bf16 peak.
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
# Dense bf16 peak FLOP/s by device name (vendor data sheets), for MFU.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}


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
    return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)


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
    batch: int = 2,
    image_size: int = 448,
    random_init: bool = False,
    generations: int = 4,
    completion_tokens: int = 64,
    work_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Benchmark SFT and GRPO steps; returns the figures (see the module docstring)."""
    import torch

    from scale_repro.config import GRPOConfig, SFTConfig, load_config
    from scale_repro.data.synth import SynthConfig, write_synthetic
    from scale_repro.models.registry import resolve_model
    from scale_repro.runs.rundir import package_versions, read_manifest, read_train_log
    from scale_repro.sizing.gpu_plan import shape_of
    from scale_repro.stages.grpo import run_grpo, vllm_available
    from scale_repro.stages.sft import run_sft

    on_gpu = torch.cuda.is_available()
    model = model or ("qwen2.5-vl-3b" if on_gpu else "tiny-qwen2.5-vl")
    own_dir = work_dir is None
    work = Path(work_dir or tempfile.mkdtemp(prefix="scale-bench-"))
    try:
        path = random_init_copy(resolve_model(model).path, work / "random-init") if random_init else model
        data = write_synthetic(
            work / "data",
            SynthConfig(seed=0, n_train=batch * (steps + 1) * 2, n_test=2, image_size=image_size),
        )
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
            None,
            [
                *common,
                f"output_dir={work / 'sft'}",
                f"per_device_train_batch_size={batch}",
                "gradient_accumulation_steps=1",
                "cut_answers=keep",
            ],
        )
        run_sft(sft, callbacks=[timer])
        manifest = read_manifest(work / "sft")
        tokens_per_sample = manifest["data"]["preflight"]["tokens"]["median"]
        step_s = statistics.median(_warm(timer.times))
        tokens_per_s = batch * tokens_per_sample / step_s
        parameters = shape_of(resolve_model(path).path).parameters
        name = device_name()
        peak = peak_flops(name)
        result: dict[str, Any] = {
            "device": "cpu" if not on_gpu else name,
            "model": model,
            "random_init": random_init,
            "parameters": parameters,
            "lora": sft.lora.enabled,
            "image_size": image_size,
            "batch": batch,
            "steps": steps,
            "sft_step_s": step_s,
            "sft_tokens_per_sample": tokens_per_sample,
            "sft_tokens_per_s": tokens_per_s,
            "mfu": 6 * parameters * tokens_per_s / peak if peak else None,
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
                None,
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
            lengths = [
                e["completions/mean_length"] for e in read_train_log(out) if "completions/mean_length" in e
            ]
            # One log entry per step.
            pairs = list(zip(timer.times, lengths, strict=False))
            pairs = pairs[WARMUP_STEPS:] or pairs
            tokens = sum(generations * length for _, length in pairs)
            seconds = sum(t for t, _ in pairs)
            result["rollouts"][engine] = {
                "step_s": statistics.median(t for t, _ in pairs),
                "rollout_tokens_per_s": tokens / seconds,
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
        f"| SFT step (batch {result['batch']}, {result['image_size']} px images) | {result['sft_step_s']:.3f} s |",
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
    lines += ["", f"Median over steps after {WARMUP_STEPS} warm-up steps."]
    return "\n".join(lines) + "\n"


def write(result: dict[str, Any], out: Path) -> None:
    from scale_repro.runs.rundir import atomic_write_text

    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".md"), render(result))
