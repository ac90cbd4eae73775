"""One answer parser for the GRPO rewards and the evaluator alike.

A completion is expected to look like ``<think>REASONING</think><answer>ANSWER</answer>``.
``valid`` is what the paper's Table 2 counts the complement of: a closing ``</think>``
and exactly one complete answer block.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from scale_repro.segments import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN

LETTERS = "ABCDE"
_ANSWER_BLOCK = re.compile(re.escape(ANSWER_OPEN) + r"(.*?)" + re.escape(ANSWER_CLOSE), re.DOTALL)
_ANSWER_PREFIX = re.compile(r"^\s*(final\s+answer|answer)\s*[:：]\s*", re.IGNORECASE)
_SURROUNDING_PUNCT = " \t\r\n\"'`*“”‘’,;:!?"
_BARE_LETTER = re.compile(r"^\(?([A-Ea-e])\)?\.?$")
_LETTER_WITH_TEXT = re.compile(r"^\(?([A-E])[.)]\s+\S")
_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")


@dataclass(frozen=True)
class ParsedCompletion:
    think: str | None
    answer: str | None
    answer_blocks: int
    has_think_close: bool

    @property
    def valid(self) -> bool:
        return self.has_think_close and self.answer_blocks == 1


def parse_completion(text: str) -> ParsedCompletion:
    """Split a completion into its reasoning and its answer.

    ``think`` is the text before the first ``</think>`` (after ``<think>`` when present; a
    template may have prefilled it). ``answer`` is the content of the answer block when
    there is exactly one complete block, else None: several blocks are ambiguous.
    """
    close = text.find(THINK_CLOSE)
    think = None
    if close >= 0:
        head = text[:close]
        open_at = head.find(THINK_OPEN)
        think = (head[open_at + len(THINK_OPEN) :] if open_at >= 0 else head).strip()
    blocks = _ANSWER_BLOCK.findall(text)
    answer = blocks[0].strip() if len(blocks) == 1 else None
    return ParsedCompletion(think=think, answer=answer, answer_blocks=len(blocks), has_think_close=close >= 0)


def _clean(text: str) -> str:
    text = _ANSWER_PREFIX.sub("", text.strip())
    text = text.strip(_SURROUNDING_PUNCT)
    if text.endswith("."):
        text = text[:-1]
    text = text.strip(_SURROUNDING_PUNCT)
    return " ".join(text.split())


def _as_number(text: str) -> float | None:
    candidate = text.replace(",", "")
    if _NUMBER.match(candidate):
        value = float(candidate)
        return value if math.isfinite(value) else None
    return None


def parse_choices(choices: Sequence[str] | str | None) -> list[str] | None:
    """Choices as a list; IconQA ships them as one comma-separated string."""
    if choices is None:
        return None
    if isinstance(choices, str):
        return [c.strip() for c in choices.split(",") if c.strip()]
    return [str(c) for c in choices]


def choice_letter(text: str, choices: Sequence[str] | str | None = None) -> str | None:
    """The letter an answer stands for: "B", "B.", "(B)", "B) text", "B. text", or the choice text."""
    cleaned = _clean(text)
    options = parse_choices(choices)
    if options:
        lowered = cleaned.lower()
        for index, option in enumerate(options[: len(LETTERS)]):
            if lowered == " ".join(option.split()).lower():
                return LETTERS[index]
    match = _BARE_LETTER.match(cleaned) or _LETTER_WITH_TEXT.match(cleaned)
    if match:
        letter = match.group(1).upper()
        if options is None or LETTERS.index(letter) < len(options):
            return letter
    return None


def normalize_answer(text: str, choices: Sequence[str] | str | None = None) -> str:
    """Canonical form of an answer: a letter for a recognised choice, a number's value, or
    lower-cased text with collapsed whitespace."""
    if choices is not None:
        letter = choice_letter(text, choices)
        if letter is not None:
            return letter
    cleaned = _clean(text)
    number = _as_number(cleaned)
    if number is not None:
        return repr(int(number)) if number.is_integer() else repr(number)
    return cleaned.lower()


def _reference_letter(reference: str, choices: list[str] | None) -> str | None:
    ref = reference.strip()
    if len(ref) == 1 and ref.upper() in LETTERS:
        return ref.upper()
    return choice_letter(ref, choices) if choices else None


def is_correct(answer_text: str | None, reference: str, choices: Sequence[str] | str | None = None) -> bool:
    """Exact match after normalisation.

    Multiple choice (choices given, or a reference letter A-E): both sides are mapped to a
    letter. Otherwise numbers compare by value and text case-insensitively.
    """
    if answer_text is None:
        return False
    options = parse_choices(choices)
    reference = str(reference)
    ref_letter = _reference_letter(reference, options)
    if options is not None or (len(reference.strip()) == 1 and ref_letter is not None):
        predicted = choice_letter(answer_text, options)
        if ref_letter is not None and predicted is not None:
            return predicted == ref_letter
        if ref_letter is not None:
            return False
    predicted_clean, reference_clean = _clean(answer_text), _clean(reference)
    a, b = _as_number(predicted_clean), _as_number(reference_clean)
    if a is not None and b is not None:
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return predicted_clean.lower() == reference_clean.lower()
