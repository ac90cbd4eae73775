"""SFT step time and peak memory, SCALe loss vs vanilla, on CPU (figures to results/bench/).

Each configuration runs in a fresh process so peak resident memory is its own. Also run with
a tiny model widened to Gemma-3's 262,144-token vocabulary, where materialising the full
logits would dominate: both losses go through TRL's fused LM head, so neither does.
Targets: step-time ratio <= 1.03, peak-memory ratio <= 1.0.

    python scripts/bench_sft_loss.py [--steps 30] [--out results/bench]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def worker(model: str, data: str, mode: str, steps: int, batch: int) -> dict:
    from _timing import StepTimer

    from scale_repro.config import SFTConfig, load_config
    from scale_repro.sft import run_sft

    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(SFTConfig, None, [
            f"model={model}", f"data.spec={data}", f"loss.mode={mode}", f"output_dir={tmp}/run",
            f"max_steps={steps}", f"per_device_train_batch_size={batch}", "save_steps=100000", "logging_steps=1000",
            "lora.enabled=false", "seed=0",
        ])  # fmt: skip
        run_sft(config, callbacks=[timer])
    warm = timer.times[3:] or timer.times
    return {
        "mode": mode,
        "median_step_s": statistics.median(warm),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "steps": steps,
        "batch": batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", default="results/bench")
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "DATA", "MODE"))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.steps, args.batch)))
        return

    from scale_repro.data.synth import SynthConfig, write_synthetic
    from scale_repro.models import cache_dir, tiny_model_path
    from scale_repro.tiny import build_tiny

    data = cache_dir() / "bench" / "synth"
    if not (data / "manifest.json").is_file():
        write_synthetic(data, SynthConfig(seed=0, n_train=256, n_test=8, reasoning_ratio=80.0))
    wide = cache_dir() / "bench" / "tiny-gemma3-vocab262144"
    if not (wide / "config.json").is_file():
        build_tiny("tiny-gemma3", wide, vocab_size=262_144)
    models = {"tiny-gemma3": str(tiny_model_path("tiny-gemma3")), "tiny-gemma3 (262k vocab)": str(wide),
              "tiny-qwen2.5-vl": str(tiny_model_path("tiny-qwen2.5-vl"))}  # fmt: skip
    rows = []
    for label, path in models.items():
        results = {}
        for mode in ("vanilla", "scale"):
            output = subprocess.run(
                [sys.executable, __file__, "--worker", path, str(data), mode, "--steps", str(args.steps),
                 "--batch", str(args.batch)],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            results[mode] = json.loads(output.strip().splitlines()[-1])
        rows.append({
            "model": label,
            "vanilla": results["vanilla"],
            "scale": results["scale"],
            "step_time_ratio": results["scale"]["median_step_s"] / results["vanilla"]["median_step_s"],
            "peak_memory_ratio": results["scale"]["peak_rss_mb"] / results["vanilla"]["peak_rss_mb"],
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)

    from scale_repro.rundir import atomic_write_json, atomic_write_text, package_versions

    out = Path(args.out)
    atomic_write_json(out / "sft_loss.json", {"device": "cpu", "cpus": os.cpu_count(), "versions": package_versions(),
                                              "targets": {"step_time_ratio": 1.03, "peak_memory_ratio": 1.0},
                                              "rows": rows})  # fmt: skip
    lines = ["# SFT loss benchmark (CPU)", "",
             f"{args.steps} steps, batch {args.batch}, reasoning ratio 80x, median step after 3 warm-up steps; "
             "peak resident memory of a fresh process.", "",
             "| model | vanilla step (s) | scale step (s) | step ratio | vanilla peak (MB) | scale peak (MB) | memory ratio |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['model']} | {r['vanilla']['median_step_s']:.4f} | {r['scale']['median_step_s']:.4f} | "
                     f"{r['step_time_ratio']:.3f} | {r['vanilla']['peak_rss_mb']:.0f} | {r['scale']['peak_rss_mb']:.0f} | "
                     f"{r['peak_memory_ratio']:.3f} |")  # fmt: skip
    lines += ["", "Targets: step-time ratio <= 1.03, peak-memory ratio <= 1.0."]
    atomic_write_text(out / "sft_loss.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
