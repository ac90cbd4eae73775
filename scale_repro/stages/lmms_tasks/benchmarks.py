"""lmms-eval hooks for the staged curriculum's benchmark suite (scale_repro.data.benchmarks).

Every benchmark's ``bench_NAME.yaml`` (answer in tags) and ``bench_NAME_boxed.yaml`` (the
curriculum's think-then-\\boxed{} format) name these hooks: the row becomes the same Example the
evaluator's loader builds, the prompt is the training prompt (the question, its lettered choices,
the answer format's instruction), and scoring is the project's one scorer, as for ScienceQA.
"""

from __future__ import annotations

from scale_repro.data.benchmarks import BENCHMARKS, benchmark_example
from scale_repro.data.records import prompt_text
from scale_repro.method.answers import is_correct
from scale_repro.method.formats import FORMATS


def _example(name: str, doc):
    return benchmark_example(name, doc, 0, BENCHMARKS[name].hub_id)


def _hooks(name: str) -> dict:
    def doc_to_visual(doc):
        return [image.convert("RGB") for image in _example(name, doc).images]

    def doc_to_text(doc, lmms_eval_specific_kwargs=None, answer_format="tags"):
        return prompt_text(_example(name, doc).question, FORMATS[answer_format].instruction)

    def doc_to_text_boxed(doc, lmms_eval_specific_kwargs=None):
        return doc_to_text(doc, lmms_eval_specific_kwargs, "think_boxed")

    def doc_to_target(doc):
        return _example(name, doc).answer

    def process_results(doc, results, answer_format="tags"):
        example = _example(name, doc)
        parsed = FORMATS[answer_format].parse(results[0])
        correct = parsed.answer is not None and is_correct(parsed.answer, example.answer, example.choices)
        return {"accuracy": float(correct), "invalid_rate": float(not parsed.valid)}

    def process_results_boxed(doc, results):
        return process_results(doc, results, "think_boxed")

    return {
        f"{name}_doc_to_visual": doc_to_visual,
        f"{name}_doc_to_text": doc_to_text,
        f"{name}_doc_to_text_boxed": doc_to_text_boxed,
        f"{name}_doc_to_target": doc_to_target,
        f"{name}_process_results": process_results,
        f"{name}_process_results_boxed": process_results_boxed,
    }


# lmms-eval finds a task file's `!function benchmarks.NAME_doc_to_text` as a module attribute.
for _name in BENCHMARKS:
    globals().update(_hooks(_name))
