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
# "Final Answer:", "The correct answer is", "Answer -", then "option"/"choice": the wrappers
# Vision-R1 and Mulberry references ("Final Answer:option B") and models put around an answer.
_ANSWER_PREFIX = re.compile(
    r"^\s*(the\s+)?(final\s+|correct\s+|best\s+)?answer\s*(is|would\s+be|should\s+be)?\s*[:：\-]?\s*",
    re.IGNORECASE,
)
_OPTION_PREFIX = re.compile(r"^\s*(option|choice)\s*[:：]?\s*", re.IGNORECASE)
_SURROUNDING_PUNCT = " \t\r\n\"'`*“”‘’,;:!?$"
_BARE_LETTER = re.compile(r"^\(?([A-Ea-e])\)?[.:]?$")
# "B: Juneau", "B. Juneau", "B) Juneau", "(B) Juneau": a letter that names its choice's text.
_LETTER_WITH_TEXT = re.compile(r"^(?:\(([A-E])\)|([A-E])[.:)])\s+\S")
# More than one option offered: "A or B", "A, B, C, D", "A. B. C. D.", "(A) or (B)", "7 or 8".
_HEDGE_WORD = re.compile(r"\s(or|and/or)\s|\s/\s", re.IGNORECASE)
_LETTER_LIST = re.compile(
    r"^\(?[A-E]\)?(?:[.:)]?\s*(?:[,;/&]|\s)\s*(?:and\s+|or\s+)?\(?[A-E]\)?)+[.:)]?$", re.IGNORECASE
)
_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")


@dataclass(frozen=True)
class ParsedCompletion:
    think: str | None
    answer: str | None
    answer_blocks: int
    has_think_close: bool
    well_nested: bool = True

    @property
    def valid(self) -> bool:
        return self.has_think_close and self.answer_blocks == 1 and self.well_nested


def parse_completion(text: str) -> ParsedCompletion:
    """Split a completion into its reasoning and its answer, in time linear in its length.

    ``think`` is the text before the first ``</think>`` (after ``<think>`` when present; a
    template may have prefilled it). ``answer`` is the content of the answer block when
    there is exactly one ``<answer>`` and one ``</answer>`` after it, else None: several or
    nested blocks are ambiguous. ``valid`` also needs one ``</think>``, at most one
    ``<think>``, and the answer after the reasoning.
    """
    close = text.find(THINK_CLOSE)
    think = None
    if close >= 0:
        head = text[:close]
        open_at = head.find(THINK_OPEN)
        think = (head[open_at + len(THINK_OPEN) :] if open_at >= 0 else head).strip()
    opens, closes = text.count(ANSWER_OPEN), text.count(ANSWER_CLOSE)
    open_at, close_at = text.find(ANSWER_OPEN), text.find(ANSWER_CLOSE)
    complete = min(opens, closes)
    answer = None
    if opens == 1 and closes == 1 and close_at > open_at:
        answer = text[open_at + len(ANSWER_OPEN) : close_at].strip()
    elif opens == closes == 1:
        complete = 0  # "</answer>...<answer>": no block at all
    well_nested = (
        text.count(THINK_CLOSE) <= 1
        and text.count(THINK_OPEN) <= 1
        and (open_at < 0 or close < 0 or open_at > close)
    )
    return ParsedCompletion(
        think=think,
        answer=answer,
        answer_blocks=complete,
        has_think_close=close >= 0,
        well_nested=well_nested,
    )


def _boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (braces may nest), as R1-style models answer."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for i in range(begin, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            if depth == 0:
                return text[begin:i]
            depth -= 1
    return None


def _clean(text: str) -> str:
    """The answer itself: inside ``\\boxed{}``, without "Final Answer:"/"option" wrappers,
    surrounding quotes and punctuation, with collapsed whitespace."""
    text = text.strip()
    boxed = _boxed(text)
    if boxed is not None:
        text = boxed
    text = text.replace("\\text{", "").replace("\\mathrm{", "") if "\\" in text else text
    for _ in range(2):  # "The final answer is: option (B)"
        text = _OPTION_PREFIX.sub("", _ANSWER_PREFIX.sub("", text.strip(_SURROUNDING_PUNCT)))
    text = text.strip(_SURROUNDING_PUNCT)
    while text.endswith("}") and text.count("}") > text.count("{"):  # left by "\\text{B}" above
        text = text[:-1]
    if text.endswith(".") and not _BARE_LETTER.match(text):
        text = text[:-1]
    text = text.strip(_SURROUNDING_PUNCT)
    return " ".join(text.split())


def is_hedge(text: str, choices: Sequence[str] | str | None = None) -> bool:
    """Whether an answer offers several options ("A or B", "A, B, C, D", "7 or 8"): such an
    answer never scores, whatever the reference (unless it is itself one choice's text)."""
    cleaned = _clean(text)
    options = parse_choices(choices) or []
    if any(cleaned.lower() == " ".join(o.split()).lower() for o in options):
        return False
    return bool(_HEDGE_WORD.search(f" {cleaned} ") or _LETTER_LIST.match(cleaned))


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
    """The letter an answer stands for: "B", "B.", "(B)", "option B", "B: text", "B. text",
    "\\boxed{B}", or the choice's text; None for a hedge or anything else."""
    if is_hedge(text, choices):
        return None
    cleaned = _clean(text)
    options = parse_choices(choices)
    if options:
        lowered = cleaned.lower()
        for index, option in enumerate(options[: len(LETTERS)]):
            if lowered == " ".join(option.split()).lower():
                return LETTERS[index]
    match = _BARE_LETTER.match(cleaned) or _LETTER_WITH_TEXT.match(cleaned)
    if match:
        letter = next(g for g in match.groups() if g).upper()
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
    """The letter a reference names: "B", or a wrapped one ("Final Answer:option B", "B: Juneau")."""
    ref = reference.strip()
    if len(ref) == 1 and ref.upper() in LETTERS:
        return ref.upper()
    return choice_letter(ref, choices)


def is_correct(answer_text: str | None, reference: str, choices: Sequence[str] | str | None = None) -> bool:
    """Exact match after normalisation.

    Multiple choice (choices given, or a reference letter A-E): both sides are mapped to a
    letter. Otherwise numbers compare by value and text case-insensitively.
    """
    if answer_text is None or is_hedge(answer_text, choices):
        return False
    options = parse_choices(choices)
    reference = str(reference)
    ref_letter = _reference_letter(reference, options)
    if options is not None or ref_letter is not None:
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


# A lettered choice line in a question: "A: 2π", "A. red", "(A) red", "A) red".
_CHOICE_LINE = re.compile(r"^\s*(?:\(([A-E])\)|([A-E])[.:)])\s*(.+?)\s*$")


def choices_from_question(question: str) -> list[str] | None:
    """The choices a question lists as lettered lines starting at A ("A: 2π", "(B) red"), as
    Vision-R1 and Mulberry questions do (they have no separate choices field); None when it
    lists none. Lines must run A, B, C, ... without a gap."""
    found: list[str] = []
    for line in question.splitlines():
        match = _CHOICE_LINE.match(line)
        if not match:
            continue
        letter = match.group(1) or match.group(2)
        if letter == LETTERS[len(found) % len(LETTERS)] and len(found) < len(LETTERS):
            found.append(match.group(3))
        elif letter == "A":  # a second list restarts: keep the last one
            found = [match.group(3)]
    return found if len(found) >= 2 else None


def canonical_reference(answer: str, choices: Sequence[str] | str | None = None) -> str:
    """A training reference reduced to what an exact-match reward compares against.

    "Final Answer:option B" -> "B", "Final Answer:7" -> "7", "\\boxed{3/4}" -> "3/4",
    "B: Juneau" -> "B", "The answer is Juneau." -> "Juneau" (its letter when ``choices``
    lists it). Text keeps its case; only wrappers and surrounding punctuation go.
    """
    options = parse_choices(choices)
    letter = choice_letter(answer, options)
    if letter is not None:
        return letter
    cleaned = _clean(answer)
    number = _as_number(cleaned)
    if number is not None and "," not in cleaned:
        return repr(int(number)) if number.is_integer() else cleaned
    return cleaned


def parse_boxed_completion(text: str) -> ParsedCompletion:
    """Split a ``<think>REASONING</think> ... \\boxed{ANSWER}`` completion, the format of the
    staged-curriculum recipes (VLM-CapCurriculum's unified prompt). ``answer`` is the last
    ``\\boxed{}`` after the reasoning; ``valid`` also needs one ``</think>`` and at most one
    ``<think>`` before it."""
    close = text.find(THINK_CLOSE)
    think = None
    after = ""
    if close >= 0:
        head = text[:close]
        open_at = head.find(THINK_OPEN)
        think = (head[open_at + len(THINK_OPEN) :] if open_at >= 0 else head).strip()
        after = text[close + len(THINK_CLOSE) :]
    boxed = _boxed(after) if close >= 0 else None
    well_nested = text.count(THINK_CLOSE) <= 1 and text.count(THINK_OPEN) <= 1 and THINK_OPEN not in after
    return ParsedCompletion(
        think=think,
        answer=boxed.strip() if boxed is not None else None,
        answer_blocks=int(boxed is not None),
        has_think_close=close >= 0,
        well_nested=well_nested,
    )


# "So the answer is green, which is option B.", "the answer is 3.", "Therefore, the final
# answer is (B)": the conclusion a reasoning trace states. "which is option X" names the letter.
_STATES_ANSWER = re.compile(r"\banswer\s+(?:is|would\s+be|should\s+be)\s*:?\s*", re.IGNORECASE)
_STATED_OPTION = re.compile(r"\b(?:option|choice)\s*\(?([A-E])\)?(?![A-Za-z])")
# A sentence ends at ".", ";" or a line break, but not at a decimal point ("2.5").
_SENTENCE_END = re.compile(r"(?<!\d)\.|\.(?!\d)|[;\n]")


def trace_conclusion(think: str | None) -> str | None:
    """The answer a reasoning trace itself concludes with: what follows its last "the answer
    is", up to the end of that sentence or clause (the option letter when it names one); None
    when the trace states no answer (e.g. it was cut before its conclusion)."""
    if not think:
        return None
    matches = list(_STATES_ANSWER.finditer(think))
    if not matches:
        return None
    stated = _SENTENCE_END.split(think[matches[-1].end() :], maxsplit=1)[0]
    option = _STATED_OPTION.search(stated)
    if option:
        return option.group(1)
    stated = stated.split(",")[0].strip()
    letter = _BARE_LETTER.match(stated)
    return (letter.group(1).upper() if letter else stated) or None


def agrees_with_trace(parsed: ParsedCompletion, choices: Sequence[str] | str | None = None) -> bool | None:
    """Whether the answer block says what the trace concluded; None when either is missing.

    The failure SCALe targets is an answer that does not follow from its own reasoning; this
    counts it without a reference answer."""
    if parsed.answer is None:
        return None
    stated = trace_conclusion(parsed.think)
    if stated is None:
        return None
    return normalize_answer(stated, choices) == normalize_answer(parsed.answer, choices)
