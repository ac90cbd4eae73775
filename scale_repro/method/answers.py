"""What a completion answers, and whether that answer is right.

One rule says what a completion's final answer is, in both answer formats, and one grader says
whether it is right; the format rewards, the accuracy reward, the invalid rate and the
evaluation all go through them.

**The rule.** Tags may carry spaces or capitals (``< think >``, ``</ Answer>``). The reasoning
ends at the one ``</think>`` (a chat template may have opened ``<think>`` already); the answer is
read after it and only there:

- ``tags`` (the SCALe paper): the one ``<answer>...</answer>`` block after ``</think>``;
- ``think_boxed`` (the staged curriculum): the ``\\boxed{}`` after ``</think>``; several boxes
  must all say the same.

A completion without that structure is invalid and has no answer: an answer block inside the
reasoning, a second ``</think>``, two answer blocks, two different boxes.

**The grader** (:func:`is_correct`) credits an answer as a careful teacher would, and never one
that names two:

- multiple choice: the letter in any of its dresses (``B``, ``(B)``, ``option B``, ``B: Juneau``,
  ``B - Juneau``, ``\\boxed{B}``, ``Therefore, the answer is B.``) or the option's text, matched
  without regard to case, spacing or punctuation (``7:00 A.M.``, sentence options), also inside
  a sentence that names no other option;
- numbers: by value, with a unit or noun after them or in a sentence (``7 cars``, ``1,000
  cubes``, ``There are 7 cars.``), and mathematical equivalence (``\\frac{2}{5}`` = ``2/5`` =
  ``0.4``) through math-verify (:mod:`scale_repro.method.math_equivalence`);
- words: case-, space- and punctuation-insensitive, with lead-ins (``It is a triangle.``) and a
  trailing reason (``No, because ...``) set aside;
- a hedge never scores: ``A or B``, ``A, B, C, D``, ``7 or 8``, ``7,8``, ``yes/no``, several
  different ``\\boxed{}``.

Everything here runs in time linear in the text (possessive quantifiers, single scans), since a
GRPO reward meets degenerate completions of hundreds of kilobytes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from scale_repro.method.math_equivalence import math_equal
from scale_repro.method.segments import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN

LETTERS = "ABCDE"

# ---------------------------------------------------------------------------------------------
# Structure: where the reasoning ends and the answer is
# ---------------------------------------------------------------------------------------------

# "< think >", "</ think >", "< /Answer>": the tags with any spacing or case. Possessive
# quantifiers keep the scan linear on long runs of "<" and whitespace.
_TAG = re.compile(r"<\s*+(/?+)\s*+(think|answer)\s*+>", re.IGNORECASE)


def normalize_tags(text: str) -> str:
    """The completion with its four tags written canonically."""
    if "<" not in text:
        return text
    return _TAG.sub(lambda m: f"<{m.group(1)}{m.group(2).lower()}>", text)


@dataclass(frozen=True)
class ParsedCompletion:
    """A completion read by the rule: ``answer`` is None unless ``valid``."""

    think: str | None
    answer: str | None
    valid: bool
    has_think_close: bool = False
    answer_blocks: int = 0  # complete answer blocks (tags) or boxes (think_boxed) after </think>


def _split_reasoning(text: str) -> tuple[str | None, str, bool]:
    """(reasoning, text after it, well nested): the reasoning ends at the one ``</think>``."""
    close = text.find(THINK_CLOSE)
    if close < 0:
        return None, "", False
    head, tail = text[:close], text[close + len(THINK_CLOSE) :]
    open_at = head.find(THINK_OPEN)
    think = (head[open_at + len(THINK_OPEN) :] if open_at >= 0 else head).strip()
    well_nested = (
        THINK_CLOSE not in tail
        and head.count(THINK_OPEN) <= 1
        and THINK_OPEN not in tail
        and ANSWER_OPEN not in head
        and ANSWER_CLOSE not in head
    )
    return think, tail, well_nested


def parse_completion(text: str) -> ParsedCompletion:
    """Read a ``<think>REASONING</think><answer>ANSWER</answer>`` completion by the rule."""
    think, tail, well_nested = _split_reasoning(normalize_tags(text))
    opens, closes = tail.count(ANSWER_OPEN), tail.count(ANSWER_CLOSE)
    open_at, close_at = tail.find(ANSWER_OPEN), tail.find(ANSWER_CLOSE)
    one_block = opens == closes == 1 and close_at > open_at
    blocks = 1 if one_block else (0 if opens == closes == 1 else min(opens, closes))
    valid = think is not None and well_nested and one_block
    answer = tail[open_at + len(ANSWER_OPEN) : close_at].strip() if valid else None
    return ParsedCompletion(think, answer, valid, think is not None, blocks)


def boxed_contents(text: str) -> list[str]:
    """The contents of every ``\\boxed{...}`` and ``\\fbox{...}`` (braces may nest), in one scan."""
    found: list[str] = []
    found_end = -1
    for match in re.finditer(r"\\(?:boxed|fbox)\s*+\{", text):
        begin, depth = match.end(), 0
        if begin <= found_end:  # a box inside the last one: it is part of that answer
            continue
        for i in range(begin, len(text)):
            char = text[i]
            if char == "{":
                depth += 1
            elif char == "}":
                if depth == 0:
                    found.append(text[begin:i])
                    found_end = i
                    break
                depth -= 1
        else:
            break  # unclosed: this and every later box run to the end of the text
    return found


def _agreed(answers: list[str]) -> str | None:
    """The one answer several boxes give, or None when they differ."""
    if not answers:
        return None
    keys = {_box_key(a) for a in answers}
    return answers[-1].strip() if len(keys) == 1 else None


def _box_key(answer: str) -> str:
    """What must match for two boxes to say the same: case, spaces, ``\\text{}`` and a letter's
    brackets aside, but signs, operators and brackets kept (``-1`` is not ``1``)."""
    key = "".join(_LATEX_TEXT.sub(r"\1", answer).lower().split()).rstrip(".")
    return key[1] if len(key) == 3 and key[0] in "([" and key[2] in ")]" else key


def parse_boxed_completion(text: str) -> ParsedCompletion:
    """Read a ``<think>REASONING</think> ... \\boxed{ANSWER}`` completion by the rule."""
    think, tail, well_nested = _split_reasoning(normalize_tags(text))
    boxes = boxed_contents(tail) if think is not None else []
    answer = _agreed(boxes)
    valid = think is not None and well_nested and answer is not None
    return ParsedCompletion(think, answer if valid else None, valid, think is not None, len(boxes))


# ---------------------------------------------------------------------------------------------
# Reading an answer: wrappers, lead-ins, hedges
# ---------------------------------------------------------------------------------------------

# A lead-in before the answer itself: "Final Answer:", "Therefore, the correct answer is",
# "So the answer would be", "I think it's", "It is", "There are". Applied at the start only.
_LEAD_IN = re.compile(
    r"^(?:(?:so|thus|hence|therefore|then|finally|overall|in\s+conclusion)\b[,:]?\s*+)?"
    r"(?:(?:the\s+)?(?:final\s+|correct\s+|right\s+|best\s+)?(?:answer|option|choice)"
    r"(?:\s+(?:is|would\s+be|should\s+be|will\s+be))?\s*+[:：\-–—]?\s*+"
    r"|i\s+(?:think|believe|choose|pick|would\s+choose|would\s+say)\s+(?:it\s+is\s+|it'?s\s+)?"
    r"|(?:it|this|that)\s+(?:is|'s)\s+|it'?s\s+"
    r"|there\s+(?:are|is|were|was)\s+)",
    re.IGNORECASE,
)
_OPTION_WORD = re.compile(r"^(?:option|choice)\s*+[:：]?\s*+", re.IGNORECASE)
_SURROUNDING = " \t\r\n\"'`*“”‘’,;:!?"
_MATH_DELIMITERS = re.compile(r"\\\(|\\\)|\\\[|\\\]")
_LATEX_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mathbf|operatorname)\s*+\{([^{}]*+)\}")
_SPACING = re.compile(r"\\[,;:! ]|\\quad|\\qquad|~")
_DEGREE = re.compile(r"\^\s*+\{?\\circ\}?|\\circ|\\degree")


def _unbox(text: str) -> str:
    """The answer inside its wrappers: the boxes (when they agree; "" when they conflict),
    ``\\text{}``, math delimiters, markdown, quotes, surrounding punctuation."""
    text = text.strip()
    if "\\boxed" in text or "\\fbox" in text:
        boxes = boxed_contents(text)
        if boxes:
            agreed = _agreed(boxes)
            if agreed is None:
                return ""  # several different boxes name several answers
            text = agreed
    if "\\" in text:
        text = _DEGREE.sub("°", text)
        text = _SPACING.sub(" ", _LATEX_TEXT.sub(r" \1 ", _MATH_DELIMITERS.sub(" ", text)))
    text = text.strip()
    if text.startswith("$") and text.endswith("$") and text.strip("$"):  # "$7$", "$$7$$"
        text = text.strip("$")
    elif text.endswith("$"):
        text = text.rstrip("$")  # but the currency in "$1.75" stays for the number reader
    return " ".join(text.strip(_SURROUNDING).split())


def _unwrap(text: str) -> str:
    """The answer itself: :func:`_unbox`, then without "Final Answer:"-style lead-ins."""
    return _without_lead_in(_unbox(text))


def _without_lead_in(text: str) -> str:
    for _ in range(3):  # "Therefore, the final answer is: option (B)"
        stripped = _OPTION_WORD.sub("", _LEAD_IN.sub("", text)).strip(_SURROUNDING)
        if stripped == text:
            break
        text = stripped
    return text


def _plain(text: str) -> str:
    """Text for comparing words: lower case, punctuation as spaces, one space between words."""
    return " ".join(re.sub(r"[^\w%]+", " ", text.lower()).split())


_ARTICLE = re.compile(r"^(?:the|a|an)\s+")
_HEDGE_WORDS = re.compile(
    r"\b(?:or|and/or)\b|\b(?:yes|no|true|false)\s*+/\s*+(?:yes|no|true|false)\b", re.IGNORECASE
)
# Disowning an option: "not B", "B is wrong", "isn't Juneau".
_NEGATION = re.compile(r"\b(?:not|isn'?t|wrong|incorrect|except|never)\b", re.IGNORECASE)
# Two letters offered anywhere: "A and B", "B, C", "C/D", "(A) & (B)".
_LETTER_PAIR = re.compile(r"(?<![\w'’])\(?[A-E]\)?\s*+(?:,|/|&|\band\b|\bor\b)\s*+\(?[A-E]\)?(?![\w'’])")


def _words(text: str) -> str:
    return _ARTICLE.sub("", _plain(text))


# ---------------------------------------------------------------------------------------------
# Multiple choice
# ---------------------------------------------------------------------------------------------


def parse_choices(choices: Sequence[str] | str | None) -> list[str] | None:
    """Choices as a list; IconQA ships them as one comma-separated string."""
    if choices is None:
        return None
    if isinstance(choices, str):
        return [c.strip() for c in choices.split(",") if c.strip()]
    return [str(c) for c in choices]


# A letter at the start of an answer: "(B)", "[B]" before anything; a bare "B" at the end or
# before punctuation ("B.", "B: Juneau", "B - Juneau", "B, because"), never "A dog".
_LEADING_LETTER = re.compile(
    r"^(?:[(\[]([A-Ea-e])[)\]]"
    r"|([A-E])(?=$|[:),;]|\.(?:\s++[^a-z]|\s*+$)|\s++[-–—]\s|\s++(?:because|since|as|is)\b)"
    r"|([a-e])(?=[.)]?$))"  # a lone lower-case "b" or "b." is the letter too; "B-cell", "E. coli" are not
)
# After a leading letter: another letter offered ("A or B", "A, B", "A. B. C.", "A/B", "A & B").
_ANOTHER_LETTER = re.compile(
    r"^[.:)]?\s*+(?:(?:,|/|&|;|-|–|—|\bor\b|\band\b|\band/or\b)\s*+(?:option\s++|choice\s++)?[(\[]?[A-E][)\]]?\b"
    r"|[(\[]?[A-E][)\]]?(?:[.,;)]|\s*+$))"
)
# A letter named explicitly anywhere: "(B)", "option B", "answer is B", "choose B".
_NAMED_LETTER = re.compile(
    r"\(([A-E])\)|\b(?i:option|choice|answer\s++is|answer:|choose|pick|go\s++with)\s*+\(?([A-E])\b(?![’'\w])"
)
# A capital letter standing alone ("Juneau C", "A then B"); "A" followed by a lower-case word is
# the article ("A ball moves"), unless that word is "or"/"and".
_STANDALONE_LETTER = re.compile(r"(?<![\w'’\\])(?:([B-E])|(A)(?!\s++(?!or\b|and\b|then\b)[a-z]))(?![\w'’])")


def _without_options(text: str, options: list[str]) -> str:
    """``text`` with every option's text taken out (so "Vitamin C" names no letter C)."""
    for option in sorted(options, key=len, reverse=True):
        if option.strip():
            text = re.sub(re.escape(option.strip().rstrip(".")), " ", text, flags=re.IGNORECASE)
    return text


def _option_mentions(text: str, options: list[str]) -> set[int]:
    """Indices of the options whose whole text appears in ``text`` as whole words; an option
    inside a longer mentioned option ("red" in "red and blue") is not counted on its own."""
    haystack = f" {_plain(text)} "
    plain = [_words(o) for o in options]
    found = {i for i, option in enumerate(plain) if option and f" {option} " in haystack}
    return {i for i in found if not any(j != i and f" {plain[i]} " in f" {plain[j]} " for j in found)}


def _leading_letter(answer: str) -> tuple[str, str] | None:
    """(letter, what follows it) when the answer starts with a letter."""
    match = _LEADING_LETTER.match(answer)
    if not match:
        return None
    return next(g for g in match.groups() if g).upper(), answer[match.end() :]


def choice_letter(text: str, choices: Sequence[str] | str | None = None) -> str | None:
    """The one letter an answer stands for, or None: no choice named, more than one named
    ("A or Juneau", "A then B"), or one disowned ("not B", "B is wrong")."""
    options = (parse_choices(choices) or [])[: len(LETTERS)]
    unboxed = _unbox(text)
    answer = _without_lead_in(unboxed)
    if not answer:
        return None
    # The whole answer is one option's text (also when that text has "or" or "not" in it).
    for candidate in (unboxed, answer):
        for index, option in enumerate(options):
            if _words(option) and _words(candidate) == _words(option):
                return LETTERS[index]
    if _NEGATION.search(_without_options(answer, options)):
        return None
    named: set[str] = set()
    leading = _leading_letter(answer)
    if leading:
        letter, rest = leading
        if _ANOTHER_LETTER.match(rest):
            return None  # "A or B", "A, B, C, D", "A. B.", "A - B"
        named.add(letter)
        named |= {LETTERS[i] for i in _option_mentions(rest, options)}
        named |= {
            m.group(1) or m.group(2) for m in _STANDALONE_LETTER.finditer(_without_options(rest, options))
        }
    else:
        named |= {m.group(1) or m.group(2) for m in _NAMED_LETTER.finditer(unboxed)}
        named |= {LETTERS[i] for i in _option_mentions(unboxed, options)}
        named |= {
            m.group(1) or m.group(2) for m in _STANDALONE_LETTER.finditer(_without_options(unboxed, options))
        }
    if len(named) != 1:
        return None
    letter = named.pop()
    if options and LETTERS.index(letter) >= len(options):
        return None
    return letter


# ---------------------------------------------------------------------------------------------
# Numbers and mathematics
# ---------------------------------------------------------------------------------------------

# A number as a person writes it: "1,000" (groups of three), "-3", "1.75", ".5", "2/5", "50%".
# "7,8" is two numbers, never 78.
_NUMBER = re.compile(
    r"(?<![\w.])[-+−]?(?:\d{1,3}(?:,\d{3})++(?!\d)|\d++)(?:\.\d++)?(?:\s*+/\s*+\d++(?:\.\d++)?)?%?"
    r"|(?<![\w.])[-+]?\.\d++"
)
_WORD_NUMBERS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
}
_LATEX_MATH = re.compile(r"\\(?:frac|dfrac|tfrac|sqrt|pi|cdot|times|div|pm|infty|circ|le|ge|neq)|\^|_\{")


def _number_value(token: str) -> float | None:
    """The value of one number as a person writes it ("1,000", "2/5", "50%"); None for anything
    else ("7,8" is two numbers, not 78)."""
    if not _NUMBER.fullmatch(token.strip()):
        return None
    token = token.replace(",", "").replace("−", "-").replace(" ", "").rstrip("%")
    try:
        if "/" in token:
            numerator, denominator = token.split("/")
            return float(numerator) / float(denominator) if float(denominator) else None
        return float(token)
    except ValueError:
        return None


def _single_number(answer: str) -> str | None:
    """The one number an answer states ("7 cars", "There are 7 cars.", "x = 7", "$1.75"), or None
    when it states none or several ("7 or 8", "7,8", "7-8")."""
    if "=" in answer:  # "2 + 5 = 7", "x = 7": the value after the last equals sign
        answer = answer.rsplit("=", 1)[1]
    numbers = _NUMBER.findall(answer.replace("$", " "))
    values = {_number_value(n) for n in numbers}
    if len(numbers) == 1 or (numbers and len(values) == 1 and None not in values):
        return numbers[-1]
    if not numbers:
        words = [w for w in _plain(answer).split() if w in _WORD_NUMBERS]
        if len(set(words)) == 1:
            return str(_WORD_NUMBERS[words[0]])
    return None


# A tuple, interval or set is one answer: "(2, 3)", "[1, 2)", "\\{1, 2\\}".
_BRACKETED = re.compile(r"^(?:\\left)?[(\[]|^\\\{")
_UNIT_WORD = re.compile(r"[A-Za-z°]++(?:/[A-Za-z]++)*+\.?(?:\^\{?\d\}?)?")
_ROOT = re.compile(r"√\s*+(\d++|[a-z]|\([^()]*+\))")


_EXPRESSION = re.compile(r"[+*^]|\d\s*+[a-z]\b")


def _is_math(text: str) -> bool:
    return (
        bool(_LATEX_MATH.search(text))
        or bool(re.fullmatch(r"[\d\s.+\-*/^()πe√%]+", text))
        or bool(_BRACKETED.match(text) and text[-1:] in ")]}")
    )


def _math_form(answer: str) -> str:
    """An answer as math-verify should read it: without a unit after it ("24 cm^2", "25\\pi cm"),
    with "√2" written as LaTeX."""
    words = answer.replace(" ^", "^").split()
    kept = len(words)
    while kept > 1 and _UNIT_WORD.fullmatch(words[kept - 1]):  # one pass from the end: linear
        kept -= 1
    if kept < len(words) and re.search(r"[\d})]$|\\pi$", words[kept - 1]):  # a quantity, then its unit
        words = words[:kept]
    return _ROOT.sub(r"\\sqrt{\1}", " ".join(words)).strip()


def _numbers_equal(predicted: str, reference: str) -> bool:
    a, b = _number_value(predicted), _number_value(reference)
    if a is not None and b is not None:
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    return math_equal(predicted, reference)


# ---------------------------------------------------------------------------------------------
# The grader
# ---------------------------------------------------------------------------------------------


def _reference_letter(reference: str, options: list[str] | None) -> str | None:
    """The letter a reference names. With choices, any form an answer may take; without, only
    a capital letter in its own right ("B", "(B)", "Final Answer:option B", "B: Juneau"), so
    "Vitamin C", "B-cell", "E. coli" and a free-form "a" stay words."""
    ref = reference.strip()
    if len(ref) == 1 and ref in LETTERS:
        return ref
    if options:
        return choice_letter(ref, options)
    unwrapped = _unwrap(ref)
    leading = _leading_letter(unwrapped)
    return leading[0] if leading and unwrapped.lstrip("([")[:1] in LETTERS else None


def is_hedge(text: str, choices: Sequence[str] | str | None = None) -> bool:
    """Whether an answer offers several answers ("A or B", "A, B, C, D", "Juneau or Denver",
    "7 or 8", "yes/no", two different boxes); such an answer never scores, and a training
    reference like it is rejected. One option's own text ("rain or snow") is no hedge; several
    numbers are the grader's business ("7,8" states no single number; "1:2" may be the answer)."""
    unboxed = _unbox(text)
    if not unboxed:
        return bool(text.strip())  # only conflicting boxes unwrap to nothing
    options = parse_choices(choices) or []
    answer = _without_lead_in(unboxed)
    if any(_words(candidate) == _words(o) for o in options for candidate in (unboxed, answer)):
        return False
    leading = _leading_letter(answer)
    if leading:
        letter, rest = leading
        if _ANOTHER_LETTER.match(rest):
            return True
        index = LETTERS.index(letter)
        if index < len(options) and _words(rest.lstrip(" .:)-–—,;")) == _words(options[index]):
            return False  # "D: both A and B" is option D's own text
    if _HEDGE_WORDS.search(answer) and len(_option_mentions(answer, options)) != 1:
        return True
    return bool(_LETTER_PAIR.search(_without_options(answer, options)))


def _words_match(answer: str, reference: str) -> bool:
    """A worded answer against a worded reference: equal as words, or the reference is what the
    answer's first clause says and the rest gives a reason, not another answer ("No, because
    ...", "It is a triangle."; not "yes, no" or "triangle (square)")."""
    target = _words(reference)
    if not target:
        return False
    if _words(answer) == target:
        return True
    first, *rest = re.split(r"[,;:.!?(]|\s[-–—]\s|\b(?=because\b|since\b)", answer, maxsplit=1)
    rest_words = _plain(rest[0]).split() if rest else []
    names_another = len(rest_words) == 1 or (rest_words[:1] and rest_words[0] in _ANSWER_WORDS)
    return _words(_unwrap(first)) == target and not names_another and not _HEDGE_WORDS.search(answer)


# Words that start another answer rather than a reason.
_ANSWER_WORDS = {"yes", "no", "true", "false", "or", "and", "maybe"}


def _exact_key(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".")


def is_correct(answer_text: str | None, reference: str, choices: Sequence[str] | str | None = None) -> bool:
    """Whether ``answer_text`` (an answer block's or a box's content) gives ``reference``.

    Multiple choice (``choices`` given, or a reference that is a letter A-E): both sides are
    reduced to one letter. Otherwise a numeric or mathematical reference compares by value and
    mathematical equivalence, and a worded one as words.
    """
    if answer_text is None:
        return False
    reference = str(reference)
    options = parse_choices(choices)
    answer, ref = _unwrap(answer_text), _unwrap(reference)
    if ref and _exact_key(answer) == _exact_key(ref):
        return True  # the reference itself, whatever its shape ("1:2", "60 km/h", "3 and 4")
    if is_hedge(answer_text, options):
        return False
    ref_letter = _reference_letter(reference, options)
    if ref_letter is not None:
        return choice_letter(answer_text, options) == ref_letter
    if not answer or not ref:
        return False
    if _number_value(ref) is not None or _is_math(ref) or "=" in ref or _EXPRESSION.search(ref):
        answer = _math_form(answer)
        if _number_value(answer) is not None and _number_value(ref) is not None:
            return _numbers_equal(answer, ref)
        if "=" in ref or _is_math(answer) or (_is_math(ref) and _single_number(answer) is None):
            return math_equal(answer, _math_form(ref))
        number = _single_number(answer)
        return number is not None and _numbers_equal(number, ref)
    return _words_match(answer, ref)


def is_readable(answer_text: str | None, reference: str, choices: Sequence[str] | str | None = None) -> bool:
    """Whether the rules can read an answer of the kind ``reference`` asks for from
    ``answer_text``: one option for multiple choice, a number or an expression for a numeric or
    mathematical reference, any words otherwise. What they cannot read an LLM judge (the
    curriculum paper's scoring) might still credit; the evaluation reports the share."""
    if answer_text is None or not _unwrap(answer_text):
        return False
    options = parse_choices(choices)
    if _reference_letter(str(reference), options) is not None:
        return choice_letter(answer_text, options) is not None
    ref = _unwrap(str(reference))
    if _number_value(ref) is not None:
        answer = _math_form(_unwrap(answer_text))
        return _single_number(answer) is not None or _is_math(answer)
    return True


def normalize_answer(text: str, choices: Sequence[str] | str | None = None) -> str:
    """A canonical key for an answer: its letter for a recognised choice, a number's value, or
    its words."""
    if choices is not None:
        letter = choice_letter(text, choices)
        if letter is not None:
            return letter
    answer = _unwrap(text)
    number = _single_number(answer) if _NUMBER.fullmatch(answer) or not _is_math(answer) else None
    value = _number_value(number) if number is not None else None
    if value is not None:
        return repr(int(value)) if value.is_integer() else repr(value)
    return _words(answer)


# ---------------------------------------------------------------------------------------------
# Training references and questions
# ---------------------------------------------------------------------------------------------

# The start of a lettered choice line: "A: 2π", "A. red", "(A) red", "A) red".
_CHOICE_LINE = re.compile(r"\s*+(?:\(([A-E])\)|([A-E])[.:)])")


def choices_from_question(question: str) -> list[str] | None:
    """The choices a question lists as lettered lines starting at A ("A: 2π", "(B) red"), as
    Vision-R1 and Mulberry questions do (they have no separate choices field); None when it
    lists none. Lines must run A, B, C, ... without a gap."""
    found: list[str] = []
    for line in question.splitlines():
        match = _CHOICE_LINE.match(line)
        text = line[match.end() :].strip() if match else ""
        if not match or not text:
            continue
        letter = match.group(1) or match.group(2)
        if letter == LETTERS[len(found) % len(LETTERS)] and len(found) < len(LETTERS):
            found.append(text)
        elif letter == "A":  # a second list restarts: keep the last one
            found = [text]
    return found if len(found) >= 2 else None


def canonical_reference(answer: str, choices: Sequence[str] | str | None = None) -> str:
    """A training reference reduced to what the accuracy reward compares against.

    "Final Answer:option B" -> "B", "Final Answer:7" -> "7", "\\boxed{3/4}" -> "3/4",
    "B: Juneau" -> "B", "The answer is Juneau." -> "Juneau" (its letter when ``choices``
    lists it). Text keeps its case; only wrappers and surrounding punctuation go.
    """
    options = parse_choices(choices)
    letter = choice_letter(answer, options)
    if letter is not None and (options or _LEADING_LETTER.match(_unwrap(answer))):
        return letter
    cleaned = _unwrap(answer)
    if cleaned.endswith(".") and not re.search(r"\d\.$", cleaned[-3:] + "x"):
        cleaned = cleaned[:-1]
    value = _number_value(cleaned) if _NUMBER.fullmatch(cleaned) else None
    if value is not None and "," not in cleaned and "/" not in cleaned:
        return repr(int(value)) if value.is_integer() else cleaned
    return cleaned


# ---------------------------------------------------------------------------------------------
# The trace's own conclusion
# ---------------------------------------------------------------------------------------------

# "So the answer is green, which is option B.", "the answer is 3.", "Therefore, the final
# answer is (B)": the conclusion a reasoning trace states. "which is option X" names the letter.
_STATES_ANSWER = re.compile(r"\banswer\s++(?:is|would\s++be|should\s++be)\s*+:?\s*+", re.IGNORECASE)
_STATED_OPTION = re.compile(r"\b(?:option|choice)\s*+\(?([A-E])\)?(?![A-Za-z])")
_BARE_LETTER = re.compile(r"^\(?([A-Ea-e])\)?[.:]?$")
# A sentence ends at ".", ";" or a line break, but not at a decimal point ("2.5").
_SENTENCE_END = re.compile(r"(?<!\d)\.|\.(?!\d)|[;\n]")


def trace_conclusion(think: str | None) -> str | None:
    """The answer a reasoning trace itself concludes with: what follows its last "the answer
    is", up to the end of that sentence or clause (the option letter when it names one); None
    when the trace states no answer (e.g. it was cut before its conclusion)."""
    if not think:
        return None
    last = None
    for last in _STATES_ANSWER.finditer(think):  # noqa: B007 - the last one counts
        pass
    if last is None:
        return None
    stated = _SENTENCE_END.split(think[last.end() :], maxsplit=1)[0]
    option = _STATED_OPTION.search(stated)
    if option:
        return option.group(1)
    stated = stated.split(",")[0].strip()
    letter = _BARE_LETTER.match(stated)
    return (letter.group(1).upper() if letter else stated) or None


def agrees_with_trace(parsed: ParsedCompletion, choices: Sequence[str] | str | None = None) -> bool | None:
    """Whether the answer says what the trace concluded; None when either is missing.

    The failure SCALe targets is an answer that does not follow from its own reasoning; this
    counts it without a reference answer."""
    if parsed.answer is None:
        return None
    stated = trace_conclusion(parsed.think)
    if stated is None:
        return None
    return normalize_answer(stated, choices) == normalize_answer(parsed.answer, choices)
