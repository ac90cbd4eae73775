"""The one internal record for an example, and its conversion to the paper's prompt.

Every loader (Vision-R1 JSON, ScienceQA-IMG, IconQA, synthetic) produces :class:`Example`;
every stage consumes it. The prompt is the question followed by the paper's instruction;
the completion is ``<think>REASONING</think><answer>ANSWER</answer>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scale_repro.method.answers import LETTERS
from scale_repro.method.formats import INSTRUCTION


@dataclass
class Example:
    """One question about one or more images, with its reasoning trace and reference answer.

    ``images`` holds file paths or PIL images. ``reasoning`` is empty for test sets, which
    have no trace. ``answer`` is the reference the rewards and the evaluator compare with: a
    letter for multiple choice, else the text. ``answer_text`` is the answer as the trace
    states it ("Final Answer:option B"), which SFT learns verbatim; empty when it is
    ``answer``. ``context`` holds the earlier turns of a multi-turn record, as chat messages.
    """

    id: str
    images: list[Any]
    question: str
    answer: str
    reasoning: str = ""
    choices: list[str] | None = None
    source: str = ""
    answer_text: str = ""
    context: list[dict[str, str]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def format_question(question: str, choices: list[str] | None = None, hint: str | None = None) -> str:
    """Question text with an optional context line and lettered choices."""
    lines = []
    if hint:
        lines.append(f"Context: {hint.strip()}")
    lines.append(question.strip())
    if choices:
        lines.append("Choices:")
        lines.extend(f"({LETTERS[i]}) {choice}" for i, choice in enumerate(choices))
    return "\n".join(lines)


def prompt_text(question: str, instruction: str = INSTRUCTION) -> str:
    """The user turn: the question, then the instruction (the paper's by default; added once)."""
    question = question.replace("<image>", "").strip()
    if instruction in question:
        return question
    return f"{question}\n{instruction}"


def tagged_completion(reasoning: str, answer: str) -> str:
    """A reference completion in the paper's format: ``<think>reasoning</think><answer>answer</answer>``."""
    return f"<think>{reasoning.strip()}</think><answer>{answer.strip()}</answer>"


def to_conversation(
    example: Example, images: list[Any], system_prompt: str | None = None, instruction: str = INSTRUCTION
) -> dict[str, Any]:
    """A TRL conversational prompt-completion row with its images (TRL inserts the image slots)."""
    prompt = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for turn in example.context:  # earlier rounds, with the instruction after each question
        content = prompt_text(turn["content"], instruction) if turn["role"] == "user" else turn["content"]
        prompt.append({"role": turn["role"], "content": content})
    prompt.append({"role": "user", "content": prompt_text(example.question, instruction)})
    row: dict[str, Any] = {
        "prompt": prompt,
        "images": images,
        "answer": example.answer,
        "choices": example.choices,
        "id": example.id,
    }
    if example.reasoning:
        row["completion"] = [
            {
                "role": "assistant",
                "content": tagged_completion(example.reasoning, example.answer_text or example.answer),
            }
        ]
    return row
