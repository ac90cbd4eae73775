"""lmms-eval hooks for the reasoning versions of ScienceQA-IMG and IconQA.

The prompt is the training prompt (question, choices, the answer format's instruction);
scoring uses the answer format's parser (:mod:`scale_repro.method.formats`), the one behind the GRPO
rewards. The ``*_boxed`` hooks are the staged curriculum's think-then-\\boxed{} format
(the ``*_boxed.yaml`` task variants).
"""

from __future__ import annotations

from scale_repro.data.loaders import ICONQA_QUESTION_TYPES
from scale_repro.data.records import format_question, prompt_text
from scale_repro.method.answers import LETTERS, is_correct, parse_choices
from scale_repro.method.formats import FORMATS


def scienceqa_doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def scienceqa_doc_to_text(doc, lmms_eval_specific_kwargs=None, answer_format="tags"):
    question = format_question(doc["question"], list(doc["choices"]), doc.get("hint"))
    return prompt_text(question, FORMATS[answer_format].instruction)


def scienceqa_doc_to_text_boxed(doc, lmms_eval_specific_kwargs=None):
    return scienceqa_doc_to_text(doc, lmms_eval_specific_kwargs, "think_boxed")


def scienceqa_doc_to_target(doc):
    return LETTERS[doc["answer"]]


def scienceqa_choices(doc):
    return list(doc["choices"])


def iconqa_process_docs(dataset):
    return dataset.filter(lambda doc: doc["ques_type"] in ICONQA_QUESTION_TYPES)


def iconqa_doc_to_visual(doc):
    return [doc["query_image"].convert("RGB")]


def _iconqa_choices(doc):
    return parse_choices(doc["choices"]) if doc["ques_type"] == "choose_txt" else None


def iconqa_doc_to_text(doc, lmms_eval_specific_kwargs=None, answer_format="tags"):
    return prompt_text(
        format_question(doc["question"], _iconqa_choices(doc)), FORMATS[answer_format].instruction
    )


def iconqa_doc_to_text_boxed(doc, lmms_eval_specific_kwargs=None):
    return iconqa_doc_to_text(doc, lmms_eval_specific_kwargs, "think_boxed")


def iconqa_doc_to_target(doc):
    return str(doc["answer"]).strip()


def _score(completion: str, target: str, choices, answer_format: str = "tags") -> dict:
    parsed = FORMATS[answer_format].parse(completion)
    correct = parsed.answer is not None and is_correct(parsed.answer, target, choices)
    return {"accuracy": float(correct), "invalid_rate": float(not parsed.valid)}


def scienceqa_process_results(doc, results):
    return _score(results[0], scienceqa_doc_to_target(doc), scienceqa_choices(doc))


def iconqa_process_results(doc, results):
    return _score(results[0], iconqa_doc_to_target(doc), _iconqa_choices(doc))


def scienceqa_process_results_boxed(doc, results):
    return _score(results[0], scienceqa_doc_to_target(doc), scienceqa_choices(doc), "think_boxed")


def iconqa_process_results_boxed(doc, results):
    return _score(results[0], iconqa_doc_to_target(doc), _iconqa_choices(doc), "think_boxed")


def stock_score(schema: str, answer: str | None, target: str, choices) -> float:
    """What lmms-eval's own rule gives our extracted answer, to line our accuracy up with
    published lmms-eval figures: ScienceQA-IMG's letter match (``sqa_process_results``: the
    answer is the letter, or starts with "B."), IconQA's ANLS (``anls``, threshold 0.5: the
    answer's edit distance to the reference text, so a letter for a choose_txt question or
    "7 cars" for "7" earns little or nothing)."""
    answer = answer or ""
    if schema == "scienceqa":
        from lmms_eval.tasks.scienceqa.utils import sqa_process_results

        doc = {"choices": list(choices), "answer": LETTERS.index(target)}
        return float(sqa_process_results(doc, [answer])["exact_match"])
    from lmms_eval.api.metrics import anls

    return float(anls([str(target)], [answer])["anls"])
