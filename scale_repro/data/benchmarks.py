"""The staged curriculum's benchmark suite ("From Seeing to Thinking", Table 1; VLM-CapCurriculum
``evaluation/run_eval.sh``: MathVista_MINI MathVision_MINI MathVerse_MINI_Vision_Intensive WeMath
A-OKVQA RealWorldQA MMStar POPE), one row schema each, as :class:`Example` s.

Each benchmark reads the hub copy lmms-eval 0.7.3's own task reads (its ``dataset_path``,
``dataset_name`` and ``test_split``, named below), with the columns that task's ``utils.py``
reads; A-OKVQA, which lmms-eval does not ship (its ``ok_vqa`` is OK-VQA), reads
HuggingFaceM4/A-OKVQA's validation split as multiple choice, as VLMEvalKit's ``A-OKVQA`` does.

The reference is a letter for multiple choice (the scorer reduces both sides to one letter),
else the answer as the data set states it (a number, an expression, yes/no: compared by value,
mathematical equivalence or words, :func:`scale_repro.method.answers.is_correct`). The paper
scores through VLMEvalKit with an LLM judge (Claude Haiku 4.5) that extracts answers from free
text; here the rules read the answer from ``\\boxed{}`` or the answer tags, and a completion
they cannot read counts as wrong (the evaluation reports that share).

A row the schema cannot read stops the evaluation in one line naming the file, record and
field: lmms-eval scores rows by their index, so a skipped row would shift every answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scale_repro.data.records import Example, format_question
from scale_repro.data.validate import DataError
from scale_repro.method.answers import LETTERS


@dataclass(frozen=True)
class Benchmark:
    """Where a benchmark's rows are and how one becomes an :class:`Example`."""

    title: str  # as the paper's table names it
    hub_id: str
    split: str
    config: str | None  # the data set's configuration (``dataset_name``)
    image_column: str
    read: Callable[[dict[str, Any]], tuple[str, list[str] | None, str]]  # question, choices, reference
    source: str  # where the layout was checked
    questions: int  # in the split scored (for `scale plan`)


def _text(row: dict[str, Any], column: str) -> str:
    value = row.get(column)
    if value is None or not str(value).strip():
        raise KeyError(column)
    return str(value).strip()


# MathVista's own hint of the answer's form (its ``query`` column says the same in its words), so a
# float is given to the precision the reference has.
MATHVISTA_FORMS = {
    "integer": "Answer with an integer.",
    "list": "Answer with a Python list.",
}


def read_mathvista(row):
    # lmms-eval tasks/mathvista/utils.py: question, choices (None for free_form), answer (the
    # option's text for multi_choice), question_type, answer_type, precision, unit.
    question, answer = _text(row, "question"), _text(row, "answer")
    if row.get("question_type") == "multi_choice":
        choices = [str(c) for c in row.get("choices") or []]
        if answer not in choices:
            raise ValueError(f"answer: {answer!r} is none of the {len(choices)} choices")
        return question, choices, answer
    unit = str(row.get("unit") or "").strip()
    if unit:
        question += f" (Unit: {unit})"
    form = MATHVISTA_FORMS.get(str(row.get("answer_type")))
    if row.get("answer_type") == "float" and row.get("precision") is not None:
        places = int(row["precision"])
        form = f"Answer with a number with {places} decimal place{'s' if places != 1 else ''}."
    return (f"{question}\n{form}" if form else question), None, answer


def read_mathvision(row):
    # lmms-eval tasks/mathvision/utils.py: question, options (empty for free-form), answer (a letter
    # when there are options).
    options = [str(o) for o in row.get("options") or []]
    return _text(row, "question"), (options or None), _text(row, "answer")


def read_mathverse(row):
    # lmms-eval tasks/mathverse (CaraJ/MathVerse-lmmseval): question (multi-choice options inline),
    # answer (a letter for multi-choice), question_type multi-choice | free-form.
    return _text(row, "question"), None, _text(row, "answer")


def read_wemath(row):
    # lmms-eval tasks/wemath/reasoning/utils.py: question + "\n" + option (one string of lettered
    # options), answer a letter.
    return f"{_text(row, 'question')}\n{_text(row, 'option')}", None, _text(row, "answer")


def read_aokvqa(row):
    # HuggingFaceM4/A-OKVQA: question, choices (4), correct_choice_idx; multiple choice.
    choices = [str(c) for c in row.get("choices") or []]
    index = row.get("correct_choice_idx")
    if not isinstance(index, int) or not 0 <= index < len(choices):
        raise ValueError(f"correct_choice_idx: {index!r} is not an index into {len(choices)} choices")
    return _text(row, "question"), choices, choices[index]


# RealWorldQA's questions end with lmms-eval's answer instruction, which the answer format replaces.
REALWORLDQA_INSTRUCTION = (
    "Please answer directly with only the letter of the correct option and nothing else."
)


def read_realworldqa(row):
    # lmms-eval tasks/realworldqa/utils.py: question (options inline), answer (mostly a letter).
    question = _text(row, "question").replace(REALWORLDQA_INSTRUCTION, "").strip()
    return question, None, _text(row, "answer")


def read_mmstar(row):
    # lmms-eval tasks/mmstar/utils.py: question (options inline), answer a letter A-D.
    return _text(row, "question"), None, _text(row, "answer")


def read_pope(row):
    # lmms-eval tasks/pope/utils.py: question, answer "yes" | "no".
    return _text(row, "question"), None, _text(row, "answer").lower()


BENCHMARKS: dict[str, Benchmark] = {
    "mathvista": Benchmark(
        "MathVista", "AI4Math/MathVista", "testmini", None, "decoded_image", read_mathvista,
        "lmms-eval tasks/mathvista/mathvista_testmini_*.yaml",
        1000,  # AI4Math/MathVista card: testmini 1,000
    ),
    "mathvision": Benchmark(
        "MathVision", "MathLLMs/MathVision", "testmini", None, "decoded_image", read_mathvision,
        "lmms-eval tasks/mathvision/mathvision_testmini.yaml",
        304,  # MathLLMs/MathVision card: testmini 304
    ),
    "mathverse": Benchmark(
        "MathVerse-VI", "CaraJ/MathVerse-lmmseval", "vision_intensive", "testmini_version_split", "image",
        read_mathverse, "lmms-eval tasks/mathverse/mathverse_testmini_vision_intensive.yaml",
        788,  # 788 problems per version
    ),
    "wemath": Benchmark(
        "WeMath", "We-Math/We-Math", "testmini", None, "image_path", read_wemath,
        "lmms-eval tasks/wemath/reasoning/wemath_testmini_thinking.yaml",
        1740,  # We-Math testmini 1,740
    ),
    "aokvqa": Benchmark(
        "A-OKVQA", "HuggingFaceM4/A-OKVQA", "validation", None, "image", read_aokvqa,
        "HuggingFaceM4/A-OKVQA dataset card; VLMEvalKit vlmeval/dataset/image_mcq.py (A-OKVQA, MCQ)",
        1145,  # A-OKVQA validation 1,145
    ),
    "realworldqa": Benchmark(
        "RealWorldQA", "lmms-lab-encoder/RealWorldQA", "test", None, "image", read_realworldqa,
        "lmms-eval tasks/realworldqa/realworldqa.yaml",
        765,  # RealWorldQA 765
    ),
    "mmstar": Benchmark(
        "MMStar", "Lin-Chen/MMStar", "val", None, "image", read_mmstar,
        "lmms-eval tasks/mmstar/_default_template_yaml",
        1500,  # MMStar 1,500
    ),
    "pope": Benchmark(
        "POPE", "lmms-lab-encoder/POPE", "test", None, "image", read_pope, "lmms-eval tasks/pope/pope.yaml",
        9000,  # POPE test 9,000
    ),
}  # fmt: skip


def benchmark_example(name: str, row: dict[str, Any], index: int, where: str) -> Example:
    """One row of benchmark ``name`` as an Example, or a one-line DataError naming the field."""
    benchmark = BENCHMARKS[name]
    record = str(row.get("question_id") or row.get("pid") or row.get("index") or row.get("id") or index)
    try:
        question, choices, reference = benchmark.read(row)
    except KeyError as missing:
        field = missing.args[0]
        raise DataError(where, record, field, f"{benchmark.title} rows need a non-empty {field}") from None
    except ValueError as problem:
        field, _, message = str(problem).partition(": ")
        raise DataError(where, record, field, message) from None
    image = row.get(benchmark.image_column)
    if image is None or image == "":
        raise DataError(where, record, benchmark.image_column, f"{benchmark.title} rows all have an image")
    if choices and len(choices) > len(LETTERS):
        # More options than letters (some MathVista questions): listed as they are; the reference
        # is the option's text, compared as words or by value.
        question, choices = f"{question}\nChoices: " + "; ".join(choices), None
    elif choices and reference in choices:
        reference = LETTERS[choices.index(reference)]  # the option's text as its letter
    return Example(
        id=record,
        images=[image],
        question=format_question(question, choices),
        answer=reference,
        choices=choices,
        source=name,
    )


def benchmark_examples(name: str, dataset, where: str) -> list[Example]:
    return [benchmark_example(name, row, index, where) for index, row in enumerate(dataset)]
