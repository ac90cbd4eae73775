import math

import pytest
import torch

from scale_repro.method.loss import cosine_weight, scale_loss, segment_means
from scale_repro.method.segments import ANSWER, IGNORED, THINK


def test_cosine_end_points_and_midpoint():
    assert cosine_weight(0, 100, 2.0, 1.0) == 2.0
    assert cosine_weight(100, 100, 2.0, 1.0) == 1.0
    assert cosine_weight(50, 100, 2.0, 1.0) == pytest.approx(1.5)
    assert cosine_weight(25, 100, 2.0, 1.0) == pytest.approx(1.0 + 0.5 * (1 + math.cos(math.pi / 4)))


def test_cosine_clips_the_step():
    assert cosine_weight(-5, 10, 3.0, 1.0) == 3.0
    assert cosine_weight(15, 10, 3.0, 1.0) == 1.0
    assert cosine_weight(3, 0, 3.0, 1.0) == 1.0


def test_constant_schedule_is_constant():
    assert {cosine_weight(t, 7, 1.0, 1.0) for t in range(8)} == {1.0}


def reference(logps, segments, w_think, w_answer):
    """Direct loop over samples: the formula from the paper."""
    losses = []
    for lp, seg in zip(logps.tolist(), segments.tolist(), strict=True):
        think = [-x for x, s in zip(lp, seg, strict=True) if s == THINK]
        answer = [-x for x, s in zip(lp, seg, strict=True) if s == ANSWER]
        if not think and not answer:
            continue
        loss = 0.0
        if think:
            loss += w_think * sum(think) / len(think)
        if answer:
            loss += w_answer * sum(answer) / len(answer)
        losses.append(loss)
    return sum(losses) / len(losses)


def test_scale_loss_matches_the_reference_with_padding_and_missing_segments():
    torch.manual_seed(0)
    logps = -torch.rand(4, 9) * 3
    segments = torch.tensor(
        [
            [IGNORED, THINK, THINK, THINK, THINK, THINK, ANSWER, ANSWER, IGNORED],  # long think, short answer
            [IGNORED, IGNORED, THINK, ANSWER, ANSWER, ANSWER, IGNORED, IGNORED, IGNORED],
            [IGNORED, ANSWER, ANSWER, IGNORED, IGNORED, IGNORED, IGNORED, IGNORED, IGNORED],  # answer only
            [IGNORED] * 9,  # nothing supervised: not counted
        ]
    )
    got = scale_loss(logps, segments, 2.0, 0.5)
    assert got.item() == pytest.approx(reference(logps, segments, 2.0, 0.5), rel=1e-6)


def test_length_independence_a_longer_trace_does_not_weigh_more():
    one = torch.tensor([[-1.0, -1.0, -3.0]])
    seg_one = torch.tensor([[THINK, THINK, ANSWER]])
    long = torch.tensor([[-1.0] * 50 + [-3.0]])
    seg_long = torch.tensor([[THINK] * 50 + [ANSWER]])
    assert scale_loss(one, seg_one, 1.0, 1.0).item() == pytest.approx(4.0)
    assert scale_loss(long, seg_long, 1.0, 1.0).item() == pytest.approx(4.0)


def test_segment_means_counts_tokens():
    parts = segment_means(
        torch.tensor([[-2.0, -4.0, -1.0, 0.0]]), torch.tensor([[THINK, THINK, ANSWER, IGNORED]])
    )
    assert parts["think"].tolist() == [3.0]
    assert parts["answer"].tolist() == [1.0]
    assert parts["think_tokens"].tolist() == [2.0]
    assert parts["answer_tokens"].tolist() == [1.0]


def test_gradient_flows_to_both_segments_with_their_weights():
    logps = torch.tensor([[-1.0, -2.0, -3.0]], requires_grad=True)
    scale_loss(logps, torch.tensor([[THINK, THINK, ANSWER]]), 2.0, 1.0).backward()
    assert logps.grad.tolist() == [[-1.0, -1.0, -1.0]]  # 2.0 * (-1/2), 2.0 * (-1/2), 1.0 * (-1/1)


def test_all_ignored_batch_gives_zero_with_a_graph():
    logps = torch.zeros(2, 3, requires_grad=True)
    loss = scale_loss(logps, torch.zeros(2, 3, dtype=torch.long), 1.0, 1.0)
    assert loss.item() == 0.0
    loss.backward()
