"""Run directories: atomic writes and the manifest every stage leaves behind.

A stage writes ``manifest.json`` with ``status: running`` when it starts and
``status: finished`` (with its outputs) when it ends, so the next stage, the report and a
rerun of the same command can tell a finished run from a killed one.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from scale_repro.runs.checkpoints import newest_complete

MANIFEST = "manifest.json"
TRACKED_PACKAGES = (
    "scale-repro",
    "torch",
    "torchvision",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "datasets",
    "deepspeed",
    "lmms-eval",
    "vllm",
    "tokenizers",
)


def main_process() -> bool:
    """False on every rank but the first of a launched job (``RANK``, which torchrun and
    ``accelerate launch`` set): those ranks read the run directory and never write it."""
    return int(os.environ.get("RANK", "0")) == 0


class RunDirError(ValueError):
    """A run directory that cannot be used as asked (busy, another stage's, another config's)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write through a temporary file and rename, so a reader never sees half a file. The file
    gets the permissions a plain ``open`` would give (mkstemp's are 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
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
    root = Path(__file__).resolve().parents[2]
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
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def fingerprint(items: Any) -> str:
    """A short stable hash of JSON-serialisable content (configs, example ids and texts)."""
    digest = hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()
    return digest[:16]


# Fields that say where a run is written and how reports name it, not what it computes.
NOT_IDENTITY = ("output_dir", "labels")


def config_hash(config: Any) -> str:
    """The identity of a run: its config's (a dataclass or its dict) fingerprint without output
    directory and labels. The one definition the stages, the planner's skip test, the recipes'
    checks and the evaluation cache use."""
    data = config if isinstance(config, dict) else dataclasses.asdict(config)
    return fingerprint({k: v for k, v in data.items() if k not in NOT_IDENTITY})


@contextmanager
def exclusive(lock_path: Path):
    """Wait for, then hold, an ``flock`` on ``lock_path`` (released when the block ends or the
    holder dies)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def publishing(out: str | Path):
    """A staging folder of this process's own beside ``out``; when the block ends without
    error it takes ``out``'s place (the old folder is moved aside, the new one renamed in, the
    old one deleted), so ``out`` is never half written, and two processes writing the same
    folder never share or delete each other's staging. Replacing a folder that another
    process is reading is the caller's to prevent (``write_once`` and the tiny-model cache do,
    with a lock). On error the staging folder is removed and ``out`` is left as it was."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    host = platform.node()
    for stale in [
        *out.parent.glob(f".{out.name}.partial-{host}-*"),
        *out.parent.glob(f".{out.name}.old-{host}-*"),
    ]:
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    staging = out.with_name(f".{out.name}.partial-{host}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    aside = out.with_name(f".{out.name}.old-{host}-{os.getpid()}")
    with exclusive(out.with_name(f".{out.name}.publish.lock")):
        if out.exists():
            out.rename(aside)
        staging.rename(out)
    shutil.rmtree(aside, ignore_errors=True)


TRAIN_LOG = "train_log.jsonl"
CHECKPOINTS_DIR = "checkpoints"  # under a training run directory: checkpoint-STEP/ folders


def read_train_log(run_dir: str | Path, problems: list[str] | None = None) -> list[dict[str, Any]]:
    """A training run's log entries (torch-free, for reports). A line that does not decode
    (the last one, cut by a kill mid-write) is left out and described in ``problems``."""
    path = Path(run_dir) / TRAIN_LOG
    if not path.is_file():
        return []
    entries = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            entry = None
        if isinstance(entry, dict):
            entries.append(entry)
        elif problems is not None:
            problems.append(f"{path}: line {number} is not a log entry")
    return entries


def computed_once(path: Path, key: str, compute, wait_s: float = 3600.0, poll_s: float = 0.5) -> Any:
    """``compute()``'s JSON result, worked out once per ``key`` and kept in ``path``: by the main
    process of a launched job while the other ranks wait for the file (instead of all repeating
    minutes of work while the GPUs idle), and read back by a rerun with the same key."""

    def stored() -> Any:
        try:
            data = read_json(path)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("key") == key else None

    found = stored()
    if found is not None:
        return found["value"]
    if main_process():
        value = compute()
        atomic_write_json(path, {"key": key, "value": value})
        return value
    deadline = time.time() + wait_s
    while (found := stored()) is None:
        if time.time() > deadline:
            raise RunDirError(f"{path}: the main process did not write it within {wait_s:.0f}s")
        time.sleep(poll_s)
    return found["value"]


def write_once(folder: Path, config: Any, write, echo=print, what: str = "data") -> Path:
    """``write(folder, config)`` unless ``folder``'s manifest says it was written with this same
    config (a dataclass): generated data is reused only if made the same way. Two processes
    asking for the same folder at once write it once: the second waits, then reuses it."""
    wanted = json.loads(json.dumps(dataclasses.asdict(config)))
    folder = Path(folder)
    with exclusive(folder.with_name(f".{folder.name}.lock")):
        if (read_manifest(folder) or {}).get("config") != wanted:
            echo(f"writing {what} to {folder}")
            write(folder, config)
    return folder


def read_manifest(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's manifest, or None when there is none or it cannot be read."""
    try:
        return read_manifest_strict(run_dir)
    except RunDirError:
        return None


def read_manifest_strict(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's manifest, None when there is none; an unreadable one is an error, since it may
    describe a finished run whose outputs a rerun would otherwise overwrite."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(
            f"{path} is unreadable ({exc}); it may describe a finished run. Restore or remove it "
            "(the run then resumes from its newest complete checkpoint), or rerun with --force to start over"
        ) from exc
    if not isinstance(data, dict):
        raise RunDirError(
            f"{path} is not a manifest (a JSON object expected); restore or remove it, or use --force"
        )
    return data


def is_finished(run_dir: str | Path, config_hash: str | None = None) -> bool:
    """True when the run's manifest says it finished (with the same config, when one is given)."""
    manifest = read_manifest(run_dir)
    if not manifest or manifest.get("status") != "finished":
        return False
    return config_hash is None or manifest.get("config_hash") == config_hash


class Manifest:
    """The manifest of one stage's run directory, rewritten atomically at each change.

    Every attempt at the same run (same config) is kept in ``attempts`` with its own
    wall-clock time, refreshed by :meth:`heartbeat` while it runs, so a killed attempt still
    counts; ``wall_clock_s`` is their sum.
    """

    def __init__(self, run_dir: str | Path, stage: str, config: dict[str, Any], started: float | None = None):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / MANIFEST
        self._started = started or time.time()
        key = config_hash(config)
        previous = read_manifest(self.run_dir) or {}
        attempts = list(previous.get("attempts") or []) if previous.get("config_hash") == key else []
        for earlier in attempts:
            if earlier.get("status") == "running":  # its process was killed before it could say so
                earlier["status"] = "interrupted"
        self.attempt: dict[str, Any] = {
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "pid": os.getpid(),
            "host": platform.node(),
            "status": "running",
            "wall_clock_s": 0.0,
        }
        self.data: dict[str, Any] = {
            "stage": stage,
            "status": "running",
            "config": config,
            "config_hash": key,
            "versions": package_versions(),
            "git_commit": git_commit(),
            "host": platform.node(),
            "started_at": self.attempt["started_at"],
            "attempts": [*attempts, self.attempt],
            "wall_clock_s": 0.0,
        }
        self._refresh_clock()

    def _refresh_clock(self) -> None:
        self.attempt["wall_clock_s"] = round(time.time() - self._started, 3)
        self.data["wall_clock_s"] = round(
            sum(float(a.get("wall_clock_s") or 0.0) for a in self.data["attempts"]), 3
        )

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self._refresh_clock()
        if main_process():  # under a launcher every rank holds the manifest; one writes it
            atomic_write_json(self.path, self.data)

    def heartbeat(self) -> None:
        """Record the time spent so far, so a kill loses at most the time since the last beat."""
        self.update()

    def finish(self, **fields: Any) -> None:
        self.attempt["status"] = "finished"
        self.update(status="finished", finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields)

    def fail(self, error: str) -> None:
        self.attempt["status"] = "failed"
        self.update(status="failed", error=error)

    def interrupt(self, reason: str) -> None:
        """A stop asked for from outside (SIGTERM at a time limit, Ctrl-C): the run resumes."""
        self.attempt["status"] = "interrupted"
        self.update(status="interrupted", error=reason)


class StageInterrupted(Exception):
    """The stage was stopped from outside (SIGTERM, SIGINT); what it saved lets a rerun resume."""


def process_started_at() -> float:
    """When this process started (Linux: from /proc), so a stage's clock includes the start-up
    and the checks before its manifest exists; now, where that cannot be read."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


class StageSkipped(Exception):
    """The run directory already holds a finished run of the same config."""


def check_output_dir(
    run_dir: Path, stage: str, config_hash: str, force: bool, checkpoints: str | None = None
) -> None:
    """Read-only checks of the run directory, before anything is written.

    Raises :class:`StageSkipped` for a finished run of the same config, and
    :class:`RunDirError` for a directory that cannot take this run.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"--output-dir {run_dir} is a file, not a directory")
    ancestor = run_dir
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise RunDirError(f"--output-dir {run_dir}: {ancestor} is a file, not a directory")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as exc:
        raise RunDirError(f"--output-dir {run_dir}: cannot write in {ancestor} ({exc.strerror})") from None
    previous = None if force else read_manifest_strict(run_dir)
    if previous is None:
        return
    if previous.get("stage") != stage:
        raise RunDirError(
            f"{run_dir} holds a '{previous.get('stage')}' run, not '{stage}'; choose another --output-dir"
        )
    if previous.get("config_hash") == config_hash:
        if previous.get("status") == "finished":
            raise StageSkipped(str(run_dir))
        return
    has_progress = checkpoints is not None and newest_complete(run_dir / checkpoints)[0] is not None
    if previous.get("status") == "finished" or has_progress:
        raise RunDirError(
            f"{run_dir} holds a run made with a different config (config hash {previous.get('config_hash')}, "
            f"now {config_hash}); choose another --output-dir, or --force to discard it"
        )


@contextmanager
def claimed_run_dir(run_dir: Path, stage: str, config_hash: str, force: bool, checkpoints: str | None = None):
    """Hold the run directory for one stage: lock it (on the main process), empty it for
    ``--force``, and check it again under the lock, since another process may have finished
    the run meanwhile. Yields False when it did (nothing to do), True otherwise."""
    lock = RunLock(run_dir).acquire() if main_process() else None
    try:
        if force and lock is not None:
            clear_run_dir(run_dir)
        try:
            check_output_dir(run_dir, stage, config_hash, False, checkpoints)
        except StageSkipped:
            yield False
            return
        yield True
    finally:
        if lock is not None:
            lock.release()


def clear_run_dir(run_dir: Path) -> None:
    """``--force``: remove what the directory holds, except the lock this process holds."""
    if not run_dir.is_dir():
        return
    for child in run_dir.iterdir():
        if child.name != RunLock.NAME:
            shutil.rmtree(child) if child.is_dir() else child.unlink()


class DiskFull(RunDirError):
    """The disk filled up while a stage wrote its run directory."""


def disk_full_cause(exc: BaseException) -> BaseException | None:
    """The "no space left on device" error behind ``exc``, if that is what it is: an OSError
    with ENOSPC, or a library's own error that says so (safetensors, torch.save)."""
    import errno

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return exc
        if "No space left on device" in str(exc) or "os error 28" in str(exc):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def disk_full_message(exc: BaseException, where: str | Path) -> str:
    cause = disk_full_cause(exc) or exc
    target = getattr(cause, "filename", None) or where
    return f"disk full while writing {target}; free space, then run the same command to resume"


class RunDirInUse(RunDirError):
    """Another live process holds the run directory's lock."""


class RunLock:
    """An exclusive lock on a run directory, held for the life of the process that took it.

    The lock is an ``flock`` on ``.lock``, which the kernel releases when the holder exits or
    is killed, so a stale lock is taken over without anyone deleting it. The file names the
    holder, so the refusal can say which process to wait for.
    """

    NAME = ".lock"

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / self.NAME
        self._handle = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunDirInUse(
                f"{self.path.parent} is in use by {holder}; wait for it to end or choose another --output-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))
        handle.write(f"process {os.getpid()} on {platform.node()} ({command})\n")
        handle.flush()
        self._handle = handle
        return self

    @classmethod
    def wait(cls, run_dir: str | Path) -> None:
        """Block until no process holds ``run_dir``'s lock (its holder ended or died)."""
        path = Path(run_dir) / cls.NAME
        with open(path, "a+", encoding="utf-8") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
