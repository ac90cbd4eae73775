"""Summarise scripts/grpo_probe.sh: each seed's held-out accuracy before GRPO (its SFT start) and
after, overall and on the fill-in questions, and GRPO minus its start paired by seed (95 % t
interval). Writes OUT/summary.json and prints a table.

    .venv/bin/python scripts/grpo_probe.py [OUT]        (OUT defaults to runs/grpo-probe)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from scale_repro.experiments.reports.stats import mean_sd, paired_interval
from scale_repro.runs.rundir import atomic_write_json


def scores(eval_dir: Path) -> dict[str, float] | None:
    samples = eval_dir / "samples.jsonl"
    if not samples.is_file():
        return None
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    fill_in = [r for r in rows if not r["choices"]]
    return {
        "accuracy": sum(r["correct"] for r in rows) / len(rows),
        "fill_in_accuracy": sum(r["correct"] for r in fill_in) / len(fill_in),
        "invalid_rate": sum(not r["valid"] for r in rows) / len(rows),
    }


def main(out: Path) -> dict:
    seeds = {}
    for seed_dir in sorted(out.glob("seed*")):
        before, after = scores(seed_dir / "sft" / "eval"), scores(seed_dir / "sft" / "grpo" / "eval")
        if before and after:
            seeds[int(seed_dir.name.removeprefix("seed"))] = {"sft": before, "grpo": after}
    summary = {"seeds": seeds, "metrics": {}}
    for metric in ("accuracy", "fill_in_accuracy", "invalid_rate"):
        start = {s: v["sft"][metric] for s, v in seeds.items()}
        end = {s: v["grpo"][metric] for s, v in seeds.items()}
        interval = paired_interval(end, start)
        summary["metrics"][metric] = {
            "sft": mean_sd(list(start.values()))[0],
            "grpo": mean_sd(list(end.values()))[0],
            "grpo_minus_sft": None
            if interval is None
            else {"n": interval.n, "mean": interval.mean, "low": interval.low, "high": interval.high},
        }
    atomic_write_json(out / "summary.json", summary)
    print(f"{len(seeds)} seeds: {sorted(seeds)}")
    for metric, m in summary["metrics"].items():
        d = m["grpo_minus_sft"]
        diff = "" if d is None else f"{100 * d['mean']:+.1f}"
        if d is not None and d["low"] is not None:  # an interval needs two seeds
            diff += f" [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
        print(f"{metric:<18} SFT {100 * m['sft']:.1f}  GRPO {100 * m['grpo']:.1f}  GRPO - SFT {diff}")
    return summary


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/grpo-probe"))
