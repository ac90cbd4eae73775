"""The life of one stage's run directory, written once for every stage (SFT, GRPO, pass rates,
evaluation) and for the planner that decides what to skip.

1. Identity: a run is "the same run" when its config, without where it is written and
   without its report labels, fingerprints the same (:func:`config_hash`, defined once in
   :mod:`scale_repro.runs.rundir`, which the manifest records). The stage, the
   planner's skip test and the recipes' shared-prefix check all use this one definition.
2. Before anything is written: the output directory is checked (a finished identical run is
   skipped, another stage's or another config's run refused), then the stage's own
   ``prepare`` runs (resolve the model, load and validate data, pre-flight checks). A bad
   setting fails here, with nothing on disk and no model loaded.
3. Under the directory's lock: checked again (another process may have finished it), the
   manifest opened with ``status: running``, the stage's ``work`` done, and the manifest marked
   finished by the work or failed with the error, which is raised again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from scale_repro.config import ConfigError, to_dict
from scale_repro.runs.rundir import (
    DiskFull,
    Manifest,
    StageInterrupted,
    StageSkipped,
    check_output_dir,
    claimed_run_dir,
    config_hash,
    disk_full_cause,
    disk_full_message,
    is_finished,
    process_started_at,
)

log = logging.getLogger("scale_repro")

Prepared = TypeVar("Prepared")


def manifest_config(config: Any) -> dict[str, Any]:
    """The config as the manifest records it (everything but the output directory)."""
    return {k: v for k, v in to_dict(config).items() if k != "output_dir"}


def stage_finished(config: Any) -> bool:
    """True when ``config.output_dir`` holds a finished run of this same config."""
    return is_finished(Path(config.output_dir), config_hash(config))


_charge_process_start = False


def charge_process_start() -> None:
    """Count the next stage's wall clock from this process's start: what `scale sft`, `scale
    grpo` and `scale eval` call, since their start-up (imports, checks) is that stage's cost.
    Experiments, notebooks and tests leave it off: their processes did other work first."""
    global _charge_process_start
    _charge_process_start = True


def _stage_clock_start() -> float:
    global _charge_process_start
    if not _charge_process_start:
        return time.time()
    _charge_process_start = False
    return process_started_at()


def run_stage(
    stage: str,
    config: Any,
    prepare: Callable[[], Prepared],
    work: Callable[[Manifest, Prepared], None],
    force: bool = False,
    checkpoints: str | None = None,
) -> Path:
    """Run one stage in ``config.output_dir``; returns the directory.

    ``prepare()`` does every read-only check and load the stage needs and returns what
    ``work`` takes; ``work(manifest, prepared)`` does the stage and calls
    ``manifest.finish(...)``. ``checkpoints`` names the subfolder whose complete checkpoints
    mean progress a changed config must not overwrite.
    """
    started = _stage_clock_start()
    if not config.output_dir:
        raise ConfigError("--output-dir is required")
    run_dir = Path(config.output_dir)
    key = config_hash(config)
    try:
        check_output_dir(run_dir, stage, key, force, checkpoints)
    except StageSkipped:
        log.info("%s: finished with the same config, not run again", run_dir)
        return run_dir
    prepared = prepare()
    with claimed_run_dir(run_dir, stage, key, force, checkpoints) as to_run:
        if not to_run:
            log.info("%s: finished meanwhile by another process", run_dir)
            return run_dir
        manifest = Manifest(run_dir, stage, manifest_config(config), started=started)
        try:
            work(manifest, prepared)
        except StageInterrupted as exc:
            manifest.interrupt(str(exc))
            raise
        except KeyboardInterrupt:
            manifest.interrupt("interrupted (SIGINT)")
            raise
        except BaseException as exc:
            try:
                manifest.fail(f"{type(exc).__name__}: {exc}")
            except OSError as unwritable:  # a full disk takes the manifest's update too
                log.warning("%s: could not record the failure (%s)", manifest.path, unwritable)
            if disk_full_cause(exc):
                raise DiskFull(disk_full_message(exc, run_dir)) from None
            raise
        if manifest.data.get("status") != "finished":
            manifest.fail("the stage ended without marking its run finished")
            raise RuntimeError(f"{stage} in {run_dir} ended without marking its run finished")
    return run_dir
