"""Run directories: atomic writes and the manifest every stage leaves behind.

A stage writes ``manifest.json`` with ``status: running`` when it starts and
``status: finished`` (with its outputs) when it ends, so the next stage, the report and a
rerun of the same command can tell a finished run from a killed one.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
TRACKED_PACKAGES = (
    "scale-repro", "torch", "torchvision", "transformers", "trl", "peft", "accelerate",
    "datasets", "deepspeed", "lmms-eval", "vllm", "tokenizers",
)  # fmt: skip


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write through a temporary file and rename, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> str | None:
    """Commit of the source tree the package runs from, with '+dirty' for local changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def fingerprint(items: Any) -> str:
    """A short stable hash of JSON-serialisable content (configs, example ids and texts)."""
    digest = hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()
    return digest[:16]


def read_manifest(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except (OSError, json.JSONDecodeError):
        return None


def is_finished(run_dir: str | Path, config_hash: str | None = None) -> bool:
    """True when the run's manifest says it finished (with the same config, when one is given)."""
    manifest = read_manifest(run_dir)
    if not manifest or manifest.get("status") != "finished":
        return False
    return config_hash is None or manifest.get("config_hash") == config_hash


class Manifest:
    """The manifest of one stage's run directory, rewritten atomically at each change."""

    def __init__(self, run_dir: str | Path, stage: str, config: dict[str, Any]):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / MANIFEST
        self._started = time.time()
        previous = read_manifest(self.run_dir) or {}
        self.data: dict[str, Any] = {
            "stage": stage,
            "status": "running",
            "config": config,
            "config_hash": fingerprint(config),
            "versions": package_versions(),
            "git_commit": git_commit(),
            "host": platform.node(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            # Wall-clock time accumulates over resumed attempts of the same run.
            "previous_wall_clock_s": float(previous.get("wall_clock_s", 0.0))
            if previous.get("config_hash") == fingerprint(config)
            else 0.0,
        }

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        atomic_write_json(self.path, self.data)

    def finish(self, **fields: Any) -> None:
        wall = time.time() - self._started + self.data.get("previous_wall_clock_s", 0.0)
        self.update(
            status="finished", finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), wall_clock_s=wall, **fields
        )

    def fail(self, error: str) -> None:
        wall = time.time() - self._started + self.data.get("previous_wall_clock_s", 0.0)
        self.update(status="failed", error=error, wall_clock_s=wall)
