"""How a completion is asked to state its answer, and how it is read back.

One entry per format: the instruction appended to each question, and the parser that the
format reward, the accuracy reward and the evaluator share.

- ``tags``: the SCALe paper's ``<think>...</think><answer>...</answer>``.
- ``think_boxed``: the staged curriculum's unified prompt (VLM-CapCurriculum,
  ``training/README.md``): ``<think> reasoning </think> \\boxed{answer}``.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from scale_repro.method.answers import ParsedCompletion, parse_boxed_completion, parse_completion

# The answer formats, spelled once: every module that names them imports these.
AnswerFormatName = Literal["tags", "think_boxed"]
ANSWER_FORMATS: tuple[str, ...] = typing.get_args(AnswerFormatName)

# The SCALe paper's instruction after each question.
INSTRUCTION = (
    "First think about the reasoning process, then provide the answer. The reasoning process and answer "
    "are enclosed within <think>...</think> and <answer>...</answer> tags."
)
# VLM-CapCurriculum's system/format prompt, used for every stage of its training and evaluation.
CURRICULUM_INSTRUCTION = (
    "You FIRST think about the reasoning process as an internal monologue and then provide the final answer. "
    "The reasoning process MUST BE enclosed within <think> </think> tags. The final answer MUST BE put in "
    "\\boxed{}."
)


@dataclass(frozen=True)
class AnswerFormat:
    name: str
    instruction: str
    parse: Callable[[str], ParsedCompletion]


FORMATS = {
    "tags": AnswerFormat("tags", INSTRUCTION, parse_completion),
    "think_boxed": AnswerFormat("think_boxed", CURRICULUM_INSTRUCTION, parse_boxed_completion),
}
