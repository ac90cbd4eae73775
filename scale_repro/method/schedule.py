"""The SCALe weight schedule: how much the reasoning and the answer segment count at each step.

The loss of a sample is ``w_think * L_think + w_answer * L_answer`` (each a per-sample mean
cross-entropy; see :mod:`scale_repro.method.loss`). The weights move along a cosine from their
start to their end values over the run, from reasoning towards the answer; the fixed-weight
ablation (FW) holds them constant, and vanilla SFT is TRL's token-mean cross-entropy.

Pure Python: the trainer, the reports' schedule plot and the tests share it without torch.
"""

from __future__ import annotations

import math
import typing
from typing import Literal

# The SFT loss modes, spelled once: every module that names them imports these.
LossMode = Literal["scale", "fixed", "vanilla"]
LOSS_MODES: tuple[str, ...] = typing.get_args(LossMode)


def cosine_weight(step: float, total_steps: float, start: float, end: float) -> float:
    """Cosine interpolation from ``start`` at step 0 to ``end`` at ``total_steps``.

    ``w(t) = end + 0.5 * (start - end) * (1 + cos(pi * t / T))``; ``t`` is clipped to
    ``[0, T]`` so a run that overshoots its planned steps keeps the final weight.
    """
    if total_steps <= 0:
        return float(end)
    t = min(max(float(step), 0.0), float(total_steps))
    return float(end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * t / total_steps)))


def segment_weights(loss: typing.Any, step: float, total_steps: float) -> tuple[float, float]:
    """``(w_think, w_answer)`` at ``step`` of ``total_steps`` for a
    :class:`~scale_repro.config.LossConfig`: cosine-scheduled (``scale``), constant
    (``fixed``), or 1 and 1 (``vanilla``, where they are only logged)."""
    if loss.mode == "fixed":
        return loss.fixed_think, loss.fixed_answer
    if loss.mode == "vanilla":
        return 1.0, 1.0
    return (
        cosine_weight(step, total_steps, loss.think_start, loss.think_end),
        cosine_weight(step, total_steps, loss.answer_start, loss.answer_end),
    )
