"""The SCALe loss: length-independent segment cross-entropy, weighted by the cosine schedule of
:mod:`scale_repro.method.schedule`.

Pure tensor code with no trainer imports, so it can be dropped into any training loop.
"""

from __future__ import annotations

import torch

from scale_repro.method.schedule import cosine_weight  # noqa: F401 - the schedule, beside the loss it weights
from scale_repro.method.segments import ANSWER, THINK


def segment_means(token_logps: torch.Tensor, segments: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample mean cross-entropy of each segment and the token counts behind it.

    Returns ``think``/``answer`` (B,) mean CE (0 where the sample has no such token) and
    ``think_tokens``/``answer_tokens`` (B,) counts.
    """
    nll = -token_logps
    out: dict[str, torch.Tensor] = {}
    for name, label in (("think", THINK), ("answer", ANSWER)):
        mask = (segments == label).to(nll.dtype)
        count = mask.sum(dim=-1)
        total = (nll * mask).sum(dim=-1)
        out[name] = total / count.clamp(min=1)
        out[f"{name}_tokens"] = count
    return out


def per_sample_scale_loss(
    token_logps: torch.Tensor, segments: torch.Tensor, w_think: float, w_answer: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample losses ``w_think * L_think + w_answer * L_answer`` and which samples count.

    A sample with only one segment contributes that segment alone; a sample with no
    supervised token is marked as not counting (its loss is 0).
    """
    return weighted_segments(segment_means(token_logps, segments), w_think, w_answer)


def weighted_segments(
    parts: dict[str, torch.Tensor], w_think: float, w_answer: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`per_sample_scale_loss` from already computed :func:`segment_means`."""
    loss = w_think * parts["think"] + w_answer * parts["answer"]
    counts = (parts["think_tokens"] + parts["answer_tokens"]) > 0
    return loss, counts


def scale_loss(
    token_logps: torch.Tensor, segments: torch.Tensor, w_think: float, w_answer: float
) -> torch.Tensor:
    """Mean over samples (with at least one supervised token) of the weighted segment loss.

    ``token_logps`` (B, T): log-probability of each target token. ``segments`` (B, T):
    0 = not supervised, 1 = THINK, 2 = ANSWER.
    """
    loss, counts = per_sample_scale_loss(token_logps, segments, w_think, w_answer)
    n = counts.sum()
    if n == 0:
        # Keep the graph so a batch of empty samples still yields a (zero) gradient.
        return (token_logps * 0.0).sum()
    return (loss * counts).sum() / n
