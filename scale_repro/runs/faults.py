"""Fault injection for the kill tests: ``SCALE_KILL_AT=POINT`` (or ``POINT:STEP``) makes the
process kill itself with SIGKILL when it reaches that point, exactly as ``kill -9`` would,
so a test can stop a real run at a chosen place (inside a checkpoint save, during export).
``POINT:STEP:TERM`` (or ``:INT``) sends that signal instead, as Slurm at a time limit or a
Ctrl-C would. Unset, every call is a no-op."""

from __future__ import annotations

import os
import signal

ENV = "SCALE_KILL_AT"


def kill_point(name: str, step: int | None = None) -> None:
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    point, _, rest = wanted.partition(":")
    at, _, signal_name = rest.partition(":")
    if point == name and (not at or (step is not None and int(at) == step)):
        os.kill(os.getpid(), getattr(signal, f"SIG{signal_name}") if signal_name else signal.SIGKILL)
