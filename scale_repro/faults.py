"""Fault injection for the kill tests: ``SCALE_KILL_AT=POINT`` (or ``POINT:STEP``) makes the
process kill itself with SIGKILL when it reaches that point, exactly as ``kill -9`` would,
so a test can stop a real run at a chosen place (inside a checkpoint save, during export).
Unset, every call is a no-op."""

from __future__ import annotations

import os
import signal

ENV = "SCALE_KILL_AT"


def kill_point(name: str, step: int | None = None) -> None:
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    point, _, at = wanted.partition(":")
    if point == name and (not at or (step is not None and int(at) == step)):
        os.kill(os.getpid(), signal.SIGKILL)
