"""The GRPO diagnostics of every GRPO run under a folder, as one figure: what an RL researcher
looks at first when a reward curve is flat. Torch-free: it reads ``train_log.jsonl`` files.

Panels (one line per run): the total reward, the accuracy reward, the share of groups with no
reward spread (no learning signal), completion length, entropy, and the policy's weight drift
from its start (``policy/weight_drift``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scale_repro.runs.rundir import read_manifest, read_train_log

PANELS = (
    ("reward", "reward (mean)"),
    ("rewards/accuracy_reward/mean", "accuracy reward (mean)"),
    ("frac_reward_zero_std", "groups with no reward spread"),
    ("completions/mean_length", "completion length (tokens)"),
    ("entropy", "entropy"),
    ("policy/weight_drift", "weight drift from start"),
)
FIGURE = "grpo_diagnostics.png"


def grpo_logs(runs: Path) -> dict[str, list[dict[str, Any]]]:
    """Each GRPO run's logged steps, by its path under ``runs``."""
    logs = {}
    for manifest_path in sorted(Path(runs).rglob("manifest.json")):
        manifest = read_manifest(manifest_path.parent)
        if manifest and manifest.get("stage") == "grpo":
            entries = [e for e in read_train_log(manifest_path.parent) if "reward" in e and "step" in e]
            if entries:
                logs[str(manifest_path.parent.relative_to(runs))] = entries
    return logs


def plot_grpo_diagnostics(runs: str | Path, out: str | Path) -> list[str]:
    """``grpo_diagnostics.png`` in ``out`` when any GRPO run has logged a step; returns what it wrote."""
    logs = grpo_logs(Path(runs))
    if not logs:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(12, 6), sharex=True)
    for (key, title), ax in zip(PANELS, axes.flat, strict=True):
        for i, (run, entries) in enumerate(sorted(logs.items())):
            points = [(e["step"], e[key]) for e in entries if e.get(key) is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, color=f"C{i % 10}", alpha=0.7, label=run if len(logs) <= 8 else None)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
    if len(logs) <= 8:
        axes.flat[0].legend(fontsize=5)
    fig.tight_layout()
    Path(out).mkdir(parents=True, exist_ok=True)  # a report folder not written yet
    fig.savefig(Path(out) / FIGURE, dpi=120)
    plt.close(fig)
    return [FIGURE]
