"""GRPO step time and rollout throughput on CPU for each tiny architecture (figures to results/bench/).

Rollouts use the trainer's own generation (no vLLM on CPU). Throughput counts the completion
tokens sampled per step (generations x mean completion length) over the step's wall time.

    python scripts/bench_grpo.py [--steps 6] [--out results/bench]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from scale_repro.sizing.bench import StepTimer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--completion-tokens", type=int, default=64)
    parser.add_argument("--out", default="results/bench")
    args = parser.parse_args()

    from scale_repro.config import GRPOConfig, load_config
    from scale_repro.data.synth import SynthConfig, write_synthetic
    from scale_repro.models.registry import cache_dir
    from scale_repro.runs.rundir import atomic_write_json, atomic_write_text, package_versions, read_train_log
    from scale_repro.stages.grpo import run_grpo

    data = cache_dir() / "bench" / "synth-grpo"
    if not (data / "manifest.json").is_file():
        write_synthetic(data, SynthConfig(seed=0, n_train=64, n_test=4))
    rows = []
    for model in ("tiny-qwen2.5-vl", "tiny-gemma3", "tiny-llava-next"):
        timer = StepTimer()
        with tempfile.TemporaryDirectory() as tmp:
            config = load_config(
                GRPOConfig,
                None,
                [
                    f"model={model}",
                    f"data.spec={data}",
                    f"output_dir={tmp}/run",
                    f"max_steps={args.steps}",
                    f"per_device_train_batch_size={args.generations}",
                    f"num_generations={args.generations}",
                    f"max_completion_length={args.completion_tokens}",
                    "save_steps=100000",
                    "logging_steps=1",
                    "lora.enabled=false",
                ],
            )
            run_grpo(config, callbacks=[timer])
            log = [e for e in read_train_log(Path(tmp) / "run") if "completions/mean_length" in e]
        warm = list(zip(timer.times, log, strict=False))[1:]
        tokens = [args.generations * e["completions/mean_length"] for _, e in warm]
        seconds = [t for t, _ in warm]
        rows.append(
            {
                "model": model,
                "median_step_s": statistics.median(seconds),
                "rollout_tokens_per_s": sum(tokens) / sum(seconds),
                "generations": args.generations,
                "max_completion_length": args.completion_tokens,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    atomic_write_json(
        out / "grpo.json",
        {"device": "cpu", "cpus": os.cpu_count(), "versions": package_versions(), "rows": rows},
    )
    lines = [
        "# GRPO benchmark (CPU, transformers generation)",
        "",
        f"{args.steps} steps ({args.generations} generations of up to {args.completion_tokens} tokens per step), "
        "first step excluded.",
        "",
        "| model | median step (s) | rollout tokens/s |",
        "|---|---|---|",
    ]
    lines += [f"| {r['model']} | {r['median_step_s']:.3f} | {r['rollout_tokens_per_s']:.0f} |" for r in rows]
    atomic_write_text(out / "grpo.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
