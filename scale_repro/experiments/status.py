"""Where every stage of a plan stands (``scale reproduce ... --status``), read from the run
directories and, for Slurm jobs, from ``squeue``: done; running (step / total and the time left,
from its log and its wall clock); queued (job id); failed (the last error line and the log);
interrupted (resumes when the command runs again); blocked (by which stage); to run.
"""

from __future__ import annotations

import platform
import shutil
from dataclasses import dataclass
from pathlib import Path

from scale_repro.experiments import slurm
from scale_repro.experiments.planner import Stage
from scale_repro.runs.rundir import process_alive, read_manifest, read_train_log


@dataclass
class StageStatus:
    stage: Stage
    state: str  # done | running | queued | failed | interrupted | blocked | to run
    detail: str = ""


def _progress(stage: Stage, manifest: dict) -> str:
    """Step / total and an estimate of the time left, from the log and the attempt's clock."""
    total = getattr(stage.config, "max_steps", None)
    steps = [e["step"] for e in read_train_log(stage.run_dir) if isinstance(e.get("step"), int)]
    if not steps or not total or total < 1:
        return ""
    step = max(steps)
    spent = float((manifest.get("attempts") or [{}])[-1].get("wall_clock_s") or 0.0)
    left = f", about {spent / step * (total - step) / 60:.0f} min left" if step and spent else ""
    return f"step {step}/{total}{left}"


def _alive(manifest: dict) -> bool:
    """Whether the attempt the manifest says is running still has a live process: its pid on
    this host; on another host it is taken at its word (Slurm's view decides there)."""
    attempt = (manifest.get("attempts") or [{}])[-1]
    if attempt.get("host") != platform.node():
        return True
    pid = attempt.get("pid")
    return isinstance(pid, int) and pid > 0 and process_alive(pid)


def plan_status(stages: list[Stage]) -> list[StageStatus]:
    jobs = {s.run_dir: slurm.recorded_job(s) for s in stages}
    queue = slurm.queue_states([j["job_id"] for j in jobs.values() if j]) if shutil.which("squeue") else {}
    by_dir: dict[Path, StageStatus] = {}
    for stage in stages:
        manifest = read_manifest(stage.run_dir) or {}
        job = jobs[stage.run_dir]
        state, reason = queue.get(job["job_id"], ("", "")) if job else ("", "")
        log = (
            next(iter(sorted(stage.run_dir.glob("slurm-*.log"))[-1:]), None)
            if stage.run_dir.is_dir()
            else None
        )
        blocker = next(
            (by_dir[n] for n in stage.needs if n in by_dir and by_dir[n].state in ("failed", "blocked")), None
        )
        if stage.finished():
            status = StageStatus(stage, "done", f"{manifest.get('wall_clock_s', 0):.0f}s")
        elif state == "RUNNING" or (manifest.get("status") == "running" and _alive(manifest)):
            parts = [
                f"job {job['job_id']}" if state == "RUNNING" else "",
                _progress(stage, manifest) or "starting",
            ]
            status = StageStatus(stage, "running", ", ".join(part for part in parts if part))
        elif state in slurm.WAITING and reason not in slurm.NEVER_STARTS:
            status = StageStatus(stage, "queued", f"job {job['job_id']} ({reason or state.lower()})")
        elif manifest.get("status") == "failed":
            error = str(manifest.get("error", "")).strip().splitlines()[-1:] or [""]
            status = StageStatus(
                stage, "failed", f"{error[0][:160]} (log: {log or stage.run_dir / 'manifest.json'})"
            )
        elif blocker is not None:
            status = StageStatus(stage, "blocked", f"by {blocker.stage.run_dir}")
        elif manifest.get("status") in ("running", "interrupted"):
            status = StageStatus(stage, "interrupted", "resumes from its newest checkpoint when run again")
        else:
            status = StageStatus(stage, "to run")
        by_dir[stage.run_dir] = status
    return list(by_dir.values())


def render_status(statuses: list[StageStatus], relative_to: Path | None = None) -> str:
    counts: dict[str, int] = {}
    lines = []
    for i, s in enumerate(statuses, 1):
        counts[s.state] = counts.get(s.state, 0) + 1
        where = s.stage.run_dir.relative_to(relative_to) if relative_to else s.stage.run_dir
        lines.append(
            f"[{i:>3}/{len(statuses)}] {s.stage.kind:<9} {s.state:<11} {where}"
            + (f"  {s.detail}" if s.detail else "")
        )
    lines.append(", ".join(f"{n} {state}" for state, n in counts.items()))
    return "\n".join(lines)
