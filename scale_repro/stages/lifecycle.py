"""The life of one stage's run directory, written once for every stage (SFT, GRPO, pass rates,
evaluation) and for the planner that decides what to skip.

1. Identity: a run is "the same run" when its config, without where it is written and
   without its report labels, fingerprints the same (:func:`config_hash`, defined once in
   :mod:`scale_repro.runs.rundir`, which the manifest records). The stage, the
   planner's skip test and the recipes' shared-prefix check all use this one definition.
2. Before anything is written: the output directory is checked (a finished identical run is
   skipped, another stage's or another config's run refused), then the stage's read-only
   checks run (resolve the model, load and validate data, pre-flight checks). A bad setting
   fails here, with nothing on disk and no model loaded.
3. Under the directory's lock: checked again (another process may have finished it), the
   manifest opened with ``status: running``, the stage's work done, and the manifest marked
   finished by the work or failed with the error, which is raised again.

Each stage's ``run_*`` function reads in that order, with :class:`StageRun` for steps 2 and 3.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


class TrainingDiverged(RuntimeError):
    """The loss, the gradient norm or the weights are no longer finite numbers."""


class StageRun:
    """One attempt at a stage in ``config.output_dir``, in the order a stage reads::

        run = StageRun("sft", config, force, checkpoints=CHECKPOINTS_DIR)
        if run.finished_before():          # the same run, finished: nothing to do
            return run.run_dir
        ...read-only checks and loads...   # a bad setting fails here, nothing written
        with run.running() as manifest:    # locked; manifest running -> finished / failed
            if manifest is None:           # finished meanwhile by another process
                return run.run_dir
            ...the stage's work, ending in manifest.finish(...)...

    ``checkpoints`` names the subfolder whose complete checkpoints mean progress a changed
    config must not overwrite.
    """

    def __init__(self, stage: str, config: Any, force: bool = False, checkpoints: str | None = None):
        self.started = _stage_clock_start()
        if not config.output_dir:
            raise ConfigError("--output-dir is required")
        self.stage, self.config, self.force, self.checkpoints = stage, config, force, checkpoints
        self.run_dir = Path(config.output_dir)
        self.key = config_hash(config)

    def finished_before(self) -> bool:
        """True when the directory holds this run, finished; another stage's or another config's
        run is refused (:class:`~scale_repro.runs.rundir.RunDirError`)."""
        try:
            check_output_dir(self.run_dir, self.stage, self.key, self.force, self.checkpoints)
        except StageSkipped:
            log.info("%s: finished with the same config, not run again", self.run_dir)
            return True
        return False

    @contextlib.contextmanager
    def running(self) -> Iterator[Manifest | None]:
        """The directory locked and its manifest open (``None`` when another process finished
        the run meanwhile). The body must call ``manifest.finish``; an error marks the run
        failed, SIGTERM or Ctrl-C interrupted, and is raised again."""
        with claimed_run_dir(self.run_dir, self.stage, self.key, self.force, self.checkpoints) as to_run:
            if not to_run:
                log.info("%s: finished meanwhile by another process", self.run_dir)
                yield None
                return
            manifest = Manifest(self.run_dir, self.stage, manifest_config(self.config), started=self.started)
            try:
                yield manifest
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
                    raise DiskFull(disk_full_message(exc, self.run_dir)) from None
                raise
            if manifest.data.get("status") != "finished":
                manifest.fail("the stage ended without marking its run finished")
                raise RuntimeError(f"{self.stage} in {self.run_dir} ended without marking its run finished")
