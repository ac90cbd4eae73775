"""GRPO rewards with TRL's reward-function signature: ``f(completions, **columns) -> list[float]``.

Every reward reads completions through :mod:`scale_repro.method.answers`, the rule and the grader the
evaluator uses, so a reward and a reported accuracy can never disagree about what an answer is.
All of them run in time linear in the completion.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from scale_repro.method.answers import is_correct, normalize_tags, parse_boxed_completion
from scale_repro.method.formats import FORMATS
from scale_repro.method.segments import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN

TAG_CREDIT = 0.25


def completion_text(completion: Any) -> str:
    """Text of a completion given as a string or as chat messages (TRL's conversational form)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    parts: list[str] = []
    for message in completion:
        content = message.get("content", "") if isinstance(message, dict) else message
        if isinstance(content, str):
            parts.append(content)
        else:
            parts.extend(
                p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
            )
    return "".join(parts)


def tag_score(text: str, think_prefilled: bool = False) -> float:
    """0.25 for each correctly placed tag; a repeated tag earns nothing.

    ``think_prefilled``: the chat template already opened ``<think>`` at the start of the
    assistant turn, so the tag counts as present when the completion does not repeat it.
    Tags are read as the answer parser reads them (``< think >`` is ``<think>``).
    """
    text = normalize_tags(text)
    counts = {tag: text.count(tag) for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)}
    score = 0.0

    if think_prefilled:
        think_open_ok = counts[THINK_OPEN] == 0
        think_open_at = -1
    else:
        think_open_ok = counts[THINK_OPEN] == 1 and text.lstrip().startswith(THINK_OPEN)
        think_open_at = text.find(THINK_OPEN)
    score += TAG_CREDIT * think_open_ok

    think_close_at = text.find(THINK_CLOSE)
    think_close_ok = counts[THINK_CLOSE] == 1 and (think_open_at < 0 or think_close_at > think_open_at)
    score += TAG_CREDIT * think_close_ok

    answer_open_at = text.find(ANSWER_OPEN)
    answer_open_ok = counts[ANSWER_OPEN] == 1 and think_close_at >= 0 and answer_open_at > think_close_at
    score += TAG_CREDIT * answer_open_ok

    answer_close_at = text.find(ANSWER_CLOSE)
    answer_close_ok = (
        counts[ANSWER_CLOSE] == 1
        and answer_open_at >= 0
        and answer_close_at > answer_open_at
        and text.rstrip().endswith(ANSWER_CLOSE)
    )
    score += TAG_CREDIT * answer_close_ok
    return score


def make_format_reward(think_prefilled: bool = False) -> Callable[..., list[float]]:
    """The format reward for a chat template that does (or does not) prefill ``<think>``."""

    def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        return [tag_score(completion_text(c), think_prefilled) for c in completions]

    return format_reward


format_reward = make_format_reward(think_prefilled=False)


def accuracy_reward(completions: Sequence[Any], answer: Sequence[str], **kwargs: Any) -> list[float]:
    """1.0 when the completion has exactly one complete answer block and it matches ``answer``."""
    return make_accuracy_reward("tags")(completions, answer, **kwargs)


def make_accuracy_reward(answer_format: str = "tags") -> Callable[..., list[float]]:
    """Answer accuracy for completions in ``answer_format`` (see :mod:`scale_repro.method.formats`)."""
    parse = FORMATS[answer_format].parse

    def accuracy_reward(completions: Sequence[Any], answer: Sequence[str], **kwargs: Any) -> list[float]:
        choices = kwargs.get("choices") or [None] * len(completions)
        scores = []
        for completion, reference, options in zip(completions, answer, choices, strict=True):
            parsed = parse(completion_text(completion))
            # An empty choices list (a data set column with no choices for this row) means free text.
            scores.append(
                float(parsed.answer is not None and is_correct(parsed.answer, reference, options or None))
            )
        return scores

    return accuracy_reward


def think_boxed_score(text: str, think_prefilled: bool = False) -> float:
    r"""1.0 when the completion is ``<think>...</think> ... \boxed{...}``, else 0.0.

    VLM-CapCurriculum's format reward (training/reward_functions/math.py) is the pattern
    ``<think>.*</think>.*\\boxed\{.*\}.*`` over the whole completion, spaces inside tags
    tolerated. Here the completion must start with ``<think>`` (unless the template opened
    it) and be valid by the answer rule, which that pattern implies, and more: one
    ``</think>``, boxes after it that all say the same. A regular expression with three
    ``.*`` also takes super-linear time on long degenerate completions; this does not.
    """
    text = normalize_tags(text).strip()
    starts_right = think_prefilled or text.startswith(THINK_OPEN)  # a prefilled <think> may be repeated
    return float(starts_right and parse_boxed_completion(text).valid)


def make_think_boxed_format_reward(think_prefilled: bool = False) -> Callable[..., list[float]]:
    def think_boxed_format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        return [think_boxed_score(completion_text(c), think_prefilled) for c in completions]

    return think_boxed_format_reward


def reward_function(
    name: str, answer_format: str = "tags", think_prefilled: bool = False
) -> Callable[..., list[float]]:
    """A reward by its registry name (:data:`REWARDS`), or any TRL-style reward function by its
    import path (``my_project.rewards:length_reward``, as TRL's GRPO script takes them). A path
    that does not import is a ValueError naming it."""
    if name in REWARDS:
        return REWARDS[name](answer_format, think_prefilled)
    module_name, _, attribute = name.partition(":")
    if not attribute:
        raise ValueError(f"unknown reward {name!r}; known: {sorted(REWARDS)}, or MODULE:FUNCTION")
    import importlib

    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except Exception as exc:  # noqa: BLE001 - the user's module: any error in it is "does not import"
        raise ValueError(f"reward {name!r} does not import: {type(exc).__name__}: {exc}") from None
    if not callable(function):
        raise ValueError(f"reward {name!r} is not a function")
    return function


# Reward functions by the name a stage's config gives them (``reward_funcs``), as open-r1 does:
# each entry builds the function for the stage's answer format and chat template.
REWARDS: dict[str, Callable[[str, bool], Callable[..., list[float]]]] = {
    "format": lambda answer_format, think_prefilled: make_format_reward(think_prefilled),
    "think_boxed_format": lambda answer_format, think_prefilled: make_think_boxed_format_reward(
        think_prefilled
    ),
    "accuracy": lambda answer_format, think_prefilled: make_accuracy_reward(answer_format),
}
