"""SFT step time and peak memory, SCALe loss vs vanilla, on CPU (figures to results/bench/).

Each run is a fresh process, so peak resident memory is its own. Runs are interleaved and
repeated (vanilla, scale, scale, vanilla, vanilla, scale, ...: each pair in alternating order,
so drift in the machine's speed falls on both sides equally); the figure is the median of
the per-pair ratios, with their range. Also run with a tiny model widened to Gemma-3's
262,144-token vocabulary, where materialising the full logits would dominate: both losses go
through TRL's fused LM head, so neither does.
Targets: step-time ratio <= 1.03, peak-memory ratio <= 1.0.

    python scripts/bench_sft_loss.py [--steps 30] [--repeats 5] [--out results/bench]
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
    from scale_repro.config import SFTConfig, load_config
    from scale_repro.sizing.bench import StepTimer
    from scale_repro.stages.sft import run_sft

    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(
            SFTConfig,
            None,
            [
                f"model={model}",
                f"data.spec={data}",
                f"loss.mode={mode}",
                f"output_dir={tmp}/run",
                f"max_steps={steps}",
                f"per_device_train_batch_size={batch}",
                "save_steps=100000",
                "logging_steps=1000",
                "lora.enabled=false",
                "seed=0",
            ],
        )
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
    parser.add_argument(
        "--wide-steps", type=int, default=8, help="steps for the 262k-vocabulary model (slow)"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--models",
        nargs="*",
        help="only these rows (labels as in the table); the others are kept "
        "from the last results/bench/sft_loss.json",
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", default="results/bench")
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "DATA", "MODE"))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.steps, args.batch)))
        return

    from scale_repro.data.synth import SynthConfig, write_synthetic
    from scale_repro.models.registry import cache_dir, tiny_model_path
    from scale_repro.models.tiny import build_tiny

    data = cache_dir() / "bench" / "synth"
    if not (data / "manifest.json").is_file():
        write_synthetic(data, SynthConfig(seed=0, n_train=256, n_test=8, reasoning_ratio=80.0))
    wide = cache_dir() / "bench" / "tiny-gemma3-vocab262144"
    if not (wide / "config.json").is_file():
        build_tiny("tiny-gemma3", wide, vocab_size=262_144)
    models = {
        "tiny-gemma3": (str(tiny_model_path("tiny-gemma3")), args.steps),
        "tiny-gemma3 (262k vocab)": (str(wide), args.wide_steps),
        "tiny-qwen2.5-vl": (str(tiny_model_path("tiny-qwen2.5-vl")), args.steps),
    }

    def run(path: str, mode: str, steps: int) -> dict:
        output = subprocess.run(
            [
                sys.executable,
                __file__,
                "--worker",
                path,
                str(data),
                mode,
                "--steps",
                str(steps),
                "--batch",
                str(args.batch),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return json.loads(output.strip().splitlines()[-1])

    previous_path = Path(args.out) / "sft_loss.json"
    previous = (
        json.loads(previous_path.read_text())["rows"] if args.models and previous_path.is_file() else []
    )
    rows = [r for r in previous if r["model"] not in (args.models or [])]
    for label, (path, steps) in models.items():
        if args.models and label not in args.models:
            continue
        pairs = []
        for repeat in range(args.repeats):
            order = ("vanilla", "scale") if repeat % 2 == 0 else ("scale", "vanilla")
            pair = {mode: run(path, mode, steps) for mode in order}
            pairs.append(pair)
            print(
                json.dumps(
                    {"model": label, "repeat": repeat, **{m: pair[m]["median_step_s"] for m in order}}
                ),
                flush=True,
            )
        time_ratios = [p["scale"]["median_step_s"] / p["vanilla"]["median_step_s"] for p in pairs]
        memory_ratios = [p["scale"]["peak_rss_mb"] / p["vanilla"]["peak_rss_mb"] for p in pairs]
        rows.append(
            {
                "model": label,
                "steps": steps,
                "repeats": args.repeats,
                "vanilla_step_s": statistics.median(p["vanilla"]["median_step_s"] for p in pairs),
                "scale_step_s": statistics.median(p["scale"]["median_step_s"] for p in pairs),
                "step_time_ratio": statistics.median(time_ratios),
                "step_time_ratios": time_ratios,
                "vanilla_peak_mb": statistics.median(p["vanilla"]["peak_rss_mb"] for p in pairs),
                "scale_peak_mb": statistics.median(p["scale"]["peak_rss_mb"] for p in pairs),
                "peak_memory_ratio": statistics.median(memory_ratios),
                "peak_memory_ratios": memory_ratios,
            }
        )

    from scale_repro.runs.rundir import atomic_write_json, atomic_write_text, package_versions

    out = Path(args.out)
    atomic_write_json(
        out / "sft_loss.json",
        {
            "device": "cpu",
            "cpus": os.cpu_count(),
            "versions": package_versions(),
            "targets": {"step_time_ratio": 1.03, "peak_memory_ratio": 1.0},
            "rows": rows,
        },
    )
    lines = [
        "# SFT loss benchmark (CPU)",
        "",
        f"Batch {args.batch}, reasoning ratio 80x; each run a fresh process, median step after 3 warm-up "
        "steps, peak resident memory. Interleaved vanilla/scale pairs per model (order alternating; "
        "`pairs` column); ratio = scale / vanilla, median over pairs [min, max].",
        "",
        "| model | steps | pairs | vanilla step (s) | scale step (s) | step ratio [min, max] | vanilla peak (MB) | "
        "scale peak (MB) | memory ratio [min, max] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows.sort(key=lambda r: list(models).index(r["model"]))
    for r in rows:
        t, m = r["step_time_ratios"], r["peak_memory_ratios"]
        lines.append(
            f"| {r['model']} | {r['steps']} | {r['repeats']} | {r['vanilla_step_s']:.4f} | {r['scale_step_s']:.4f} | "
            f"{r['step_time_ratio']:.3f} [{min(t):.3f}, {max(t):.3f}] | {r['vanilla_peak_mb']:.0f} | "
            f"{r['scale_peak_mb']:.0f} | {r['peak_memory_ratio']:.3f} [{min(m):.3f}, {max(m):.3f}] |"
        )
    lines += ["", "Targets: step-time ratio <= 1.03, peak-memory ratio <= 1.0."]
    atomic_write_text(out / "sft_loss.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
