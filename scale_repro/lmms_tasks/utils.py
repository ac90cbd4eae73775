"""lmms-eval hooks for the reasoning versions of ScienceQA-IMG and IconQA.

The prompt is the training prompt (question, choices, the paper's instruction); scoring
uses :mod:`scale_repro.answers`, the parser behind the GRPO rewards.
"""

from __future__ import annotations

from scale_repro.answers import LETTERS, is_correct, parse_choices, parse_completion
from scale_repro.data.loaders import ICONQA_QUESTION_TYPES
from scale_repro.data.records import format_question, prompt_text


def scienceqa_doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def scienceqa_doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return prompt_text(format_question(doc["question"], list(doc["choices"]), doc.get("hint")))


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


def iconqa_doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return prompt_text(format_question(doc["question"], _iconqa_choices(doc)))


def iconqa_doc_to_target(doc):
    return str(doc["answer"]).strip()


def _score(completion: str, target: str, choices) -> dict:
    parsed = parse_completion(completion)
    correct = parsed.answer is not None and is_correct(parsed.answer, target, choices)
    return {"accuracy": float(correct), "invalid_rate": float(not parsed.valid)}


def scienceqa_process_results(doc, results):
    return _score(results[0], scienceqa_doc_to_target(doc), scienceqa_choices(doc))


def iconqa_process_results(doc, results):
    return _score(results[0], iconqa_doc_to_target(doc), _iconqa_choices(doc))
