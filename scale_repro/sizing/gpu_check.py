"""The GPU check's one JSON (``scripts/gpu_check.sh``): what each step ran, how long it took and
whether it passed, with the figures of every stage it ran and of `scale bench`.

``python -m scale_repro.sizing.gpu_check STEPS_TSV EXPERIMENT_OUT BENCH_JSON OUT_JSON`` reads the
script's step log (name, exit status, seconds), the experiment's run directories and the bench
result, and writes one summary; it exits 1 when any step failed, so the script does too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from scale_repro.runs.rundir import atomic_write_json, package_versions, read_manifest, read_train_log


def stage_figures(run_dir: Path) -> dict[str, Any]:
    """What one stage of the experiment did, from its manifest and train log."""
    manifest = read_manifest(run_dir) or {}
    figures: dict[str, Any] = {
        "stage": manifest.get("stage"),
        "status": manifest.get("status"),
        "wall_clock_s": manifest.get("wall_clock_s"),
    }
    if manifest.get("stage") in ("sft", "grpo"):
        log = read_train_log(run_dir)
        figures["global_step"] = manifest.get("global_step")
        figures["deepspeed"] = (manifest.get("config") or {}).get("deepspeed")
        figures["train_loss"] = next((e["train_loss"] for e in reversed(log) if "train_loss" in e), None)
        rollouts = [e for e in log if e.get("rollout/generation_s")]
        if rollouts:
            figures["rollout_tokens_per_s"] = sum(e["rollout/tokens"] for e in rollouts) / sum(
                e["rollout/generation_s"] for e in rollouts
            )
            figures["use_vllm"] = (manifest.get("grpo_settings") or {}).get("use_vllm")
    else:
        metrics = manifest.get("metrics") or {}
        figures.update(
            accuracy=metrics.get("accuracy"),
            questions=metrics.get("n"),
            batch_size=manifest.get("batch_size"),
            use_vllm=manifest.get("use_vllm"),
        )
    return figures


def summary(steps_tsv: Path, experiment_out: Path, bench_json: Path) -> dict[str, Any]:
    steps = []
    for line in steps_tsv.read_text().splitlines():
        name, status, seconds = line.split("\t")
        steps.append({"step": name, "exit_status": int(status), "seconds": float(seconds)})
    runs = experiment_out / "runs"
    stages = {
        str(path.parent.relative_to(runs)): stage_figures(path.parent)
        for path in sorted(runs.rglob("manifest.json"))
    }
    import torch

    return {
        "passed": bool(steps) and all(s["exit_status"] == 0 for s in steps),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "steps": steps,
        "stages": stages,
        "bench": json.loads(bench_json.read_text()) if bench_json.is_file() else None,
        "versions": package_versions(),
    }


def main(argv: list[str]) -> int:
    steps_tsv, experiment_out, bench_json, out = map(Path, argv)
    result = summary(steps_tsv, experiment_out, bench_json)
    atomic_write_json(out, result)
    for step in result["steps"]:
        print(f"{step['step']:<12} {'ok' if step['exit_status'] == 0 else 'FAILED'}  {step['seconds']:.0f} s")
    print(f"gpu check {'passed' if result['passed'] else 'FAILED'}: {out}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
