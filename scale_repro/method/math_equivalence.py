"""Whether two short answers are the same mathematics, through math-verify, in bounded time.

math-verify (huggingface/Math-Verify, what open-r1 and TRL's examples score with) parses LaTeX
and plain expressions into sympy and compares them: ``\\frac{2}{5}`` = ``2/5`` = ``0.4``,
``\\frac{1}{2}`` = ``0.5``, ``\\(7\\)`` = ``7``, equations, tuples, sets, intervals.

sympy can take minutes on an answer a policy may well write (``9999999999^9999999999`` is one
big-integer power, which no signal interrupts), and math-verify's own time limit uses
``signal.alarm``, which works only in a main thread. So comparisons run in one helper process
(``python -m scale_repro.method.math_equivalence``, started on first use, one per process) that is
killed and replaced when a comparison overruns ``TIME_LIMIT_S``: a reward function, a reward
thread, a data-loader worker or an evaluation never waits longer than that. Should no helper
start, the comparison runs in-process behind a screen that refuses the inputs known to be
slow (huge exponents and factorials, long digit runs).
Answers longer than ``MAX_ANSWER_CHARS`` are never parsed: a final answer is short.

Results are cached, since a GRPO group repeats the same few answers many times. A comparison
that times out or fails to parse is "not equal", never an exception.
"""

from __future__ import annotations

import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
from functools import lru_cache

MAX_ANSWER_CHARS = 160
TIME_LIMIT_S = 2.0
STARTUP_LIMIT_S = 120.0  # the helper imports sympy and math-verify once

# An exponent or factorial big enough to stall sympy, or a number no answer has.
_SLOW = re.compile(r"(?:\^|\*\*)\s*+\{?\s*+[\d(]{3,}|\d{3,}\s*+!|\d{40,}")

logger = logging.getLogger(__name__)


def _verify(predicted: str, reference: str) -> bool:
    """The comparison itself (in the helper process, or in-process as a fallback)."""
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # it logs each unparsable input
    logging.getLogger("latex2sympy2_extended").setLevel(logging.CRITICAL)
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    def as_latex(text: str) -> str:  # math-verify reads LaTeX inside math delimiters
        return text if "$" in text or "\\(" in text or "\\[" in text else f"${text}$"

    targets = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())
    try:
        gold = parse(as_latex(reference), targets, parsing_timeout=None)
        pred = parse(as_latex(predicted), targets, parsing_timeout=None)
        return bool(gold and pred and verify(gold, pred, timeout_seconds=None))
    except Exception:  # noqa: BLE001 - sympy raises anything on odd input; it is "not equal"
        return False


class _Helper:
    """``python -m scale_repro.method.math_equivalence``: one JSON pair per line in, a verdict out."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "scale_repro.method.math_equivalence"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
                text=True,
                bufsize=1,
            )
        except OSError as error:
            raise OSError(f"the math-verify helper did not start ({error})") from None
        if self.ask("1", "1", STARTUP_LIMIT_S) is not True:
            self.close()
            raise OSError("the math-verify helper did not start")

    def ask(self, predicted: str, reference: str, limit: float) -> bool | None:
        """The verdict, or None when the helper overran ``limit`` or died (it is then closed)."""
        try:
            self.process.stdin.write(json.dumps([predicted, reference]) + "\n")
            self.process.stdin.flush()
            ready, _, _ = select.select([self.process.stdout], [], [], limit)
            line = self.process.stdout.readline() if ready else ""
        except (OSError, ValueError):
            line = ""
        if line.strip() not in ("true", "false"):
            self.close()
            return None
        return line.strip() == "true"

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass


_helper: _Helper | None = None
_helper_pid: int | None = None  # a forked child must start its own helper
_no_helper_in: int | None = None  # the process where no helper could start: never tried again
_lock = threading.Lock()  # one request at a time on the helper's pipes


def _ask_helper(predicted: str, reference: str) -> bool | None:
    global _helper, _helper_pid, _no_helper_in
    with _lock:
        if _no_helper_in == os.getpid():
            return None
        if _helper is None or _helper_pid != os.getpid() or _helper.process.poll() is not None:
            try:
                _helper, _helper_pid = _Helper(), os.getpid()
            except OSError as error:
                logger.warning("math equivalence runs in-process from now on: %s", error)
                _helper, _no_helper_in = None, os.getpid()
                return None
        verdict = _helper.ask(predicted, reference, TIME_LIMIT_S)
        if verdict is None:
            _helper = None  # overran or died: the next comparison starts a fresh one
            return False
        return verdict


@lru_cache(maxsize=65536)
def math_equal(predicted: str, reference: str) -> bool:
    """``predicted`` states the same mathematical object as ``reference``."""
    if not predicted or not reference or max(len(predicted), len(reference)) > MAX_ANSWER_CHARS:
        return False
    verdict = _ask_helper(predicted, reference)
    if verdict is None:  # no helper could be started here
        return not _SLOW.search(predicted + " " + reference) and _verify(predicted, reference)
    return verdict


if __name__ == "__main__":
    for request in sys.stdin:
        predicted, reference = json.loads(request)
        print("true" if _verify(predicted, reference) else "false", flush=True)
