"""The staged curriculum's benchmark suite, each on fixture rows in its exact schema (the
columns lmms-eval 0.7.3's own task reads, or the dataset card's for A-OKVQA): the loader, the
lmms-eval task's hooks, and the scorer grading completions as a careful grader would."""

import pytest
from PIL import Image

from scale_repro.data.benchmarks import BENCHMARKS, REALWORLDQA_INSTRUCTION
from scale_repro.data.validate import DataError


def image():
    return Image.new("RGB", (32, 24), (30, 120, 200))


# One or two rows per benchmark, with every column its source has (types as the hub's).
ROWS = {
    "mathvista": [
        {"pid": "1", "question": "What is the length of side a?", "image": "images/1.jpg",
         "decoded_image": image(), "choices": None, "unit": "cm", "precision": 1.0, "answer": "1.5",
         "question_type": "free_form", "answer_type": "float", "query": "Hint: ... Question: ...",
         "metadata": {"language": "english", "skills": ["geometry reasoning"]}},
        {"pid": "2", "question": "How many cubes are left?", "image": "images/2.jpg",
         "decoded_image": image(), "choices": ["3", "4", "5"], "unit": None, "precision": None,
         "answer": "4", "question_type": "multi_choice", "answer_type": "text", "query": "...",
         "metadata": {"language": "english", "skills": ["arithmetic reasoning"]}},
    ],
    "mathvision": [
        {"id": "7", "question": "Which number is missing?", "options": ["2", "4", "6", "8", "10"],
         "image": "images/7.jpg", "decoded_image": image(), "answer": "B", "solution": None,
         "level": 2, "subject": "arithmetic"},
        {"id": "8", "question": "What fraction of the square is shaded?", "options": [],
         "image": "images/8.jpg", "decoded_image": image(), "answer": "\\frac{1}{2}", "solution": None,
         "level": 3, "subject": "metric geometry - area"},
    ],
    "mathverse": [
        {"sample_index": "1", "problem_index": "1", "problem_version": "Vision Intensive",
         "question": "As shown in the figure, find the angle.\nChoices:\nA:30°\nB:45°\nC:60°\nD:90°",
         "image": image(), "answer": "B", "question_type": "multi-choice",
         "metadata": {"split": "testmini", "source": "GeoQA"}, "query_wo": "...", "query_cot": "...",
         "question_for_eval": "..."},
        {"sample_index": "2", "problem_index": "2", "problem_version": "Vision Intensive",
         "question": "Find the area of the triangle.", "image": image(), "answer": "12",
         "question_type": "free-form", "metadata": {"split": "testmini", "source": "Geometry3K"},
         "query_wo": "...", "query_cot": "...", "question_for_eval": "..."},
    ],
    "wemath": [
        {"ID": "2steps_1", "split": "testmini", "knowledge concept": "Area of a circle",
         "question": "What is the area of the circle?", "option": "A. 3π; B. 4π; C. 8π; D. 16π; E. No correct answer",
         "answer": "B", "image_path": image(), "key": "2steps_1", "question number": 1,
         "knowledge concept description": "..."},
    ],
    "aokvqa": [
        {"question_id": "22MexNkBPpdZGX6sxbxVBH", "image": image(), "question": "What is the man by the bags awaiting?",
         "choices": ["skateboarder", "train", "delivery", "cab"], "correct_choice_idx": 3,
         "direct_answers": ["ride", "ride", "bus", "taxi", "travelling", "traffic", "taxi", "cab", "cab", "his ride"],
         "difficult_direct_answer": False, "rationales": ["A train would not be on the street."]},
    ],
    "realworldqa": [
        {"image": image(), "question": f"Which object is closer?\nA. The car\nB. The tree\n{REALWORLDQA_INSTRUCTION}",
         "answer": "A"},
    ],
    "mmstar": [
        {"index": 0, "question": "Which option describes the object?\nOptions: A: a cup, B: a ball, C: a pen, D: a key",
         "image": image(), "answer": "C", "category": "coarse perception", "l2_category": "image scene and topic",
         "meta_info": {"source": "MMBench"}},
    ],
    "pope": [
        {"id": "0", "question_id": "1", "question": "Is there a dog in the image?", "answer": "no",
         "image_source": "COCO_val2014_000000310196", "image": image(), "category": "adversarial"},
    ],
}  # fmt: skip

T = "<think>The figure shows it.</think>"
# (benchmark, row, completion, what a careful grader says)
GRADED = [
    ("mathvista", 0, f"{T}<answer>1.50</answer>", True),  # 1.5 cm, written 1.50
    ("mathvista", 0, f"{T}<answer>15</answer>", False),
    ("mathvista", 1, f"{T}<answer>B</answer>", True),  # the letter of the option "4"
    ("mathvista", 1, f"{T}<answer>4</answer>", True),  # the option's text
    ("mathvista", 1, f"{T}<answer>A or B</answer>", False),  # a hedge
    ("mathvision", 0, f"{T}<answer>(B) 4</answer>", True),
    ("mathvision", 1, f"{T}<answer>0.5</answer>", True),  # \frac{1}{2} by value
    ("mathvision", 1, f"{T}<answer>1/3</answer>", False),
    ("mathverse", 0, f"{T}<answer>B:45°</answer>", True),
    ("mathverse", 1, f"{T}<answer>12</answer>", True),
    ("mathverse", 1, f"{T}<answer>13</answer>", False),
    ("wemath", 0, f"{T}<answer>B</answer>", True),
    ("wemath", 0, f"{T}<answer>D</answer>", False),
    ("aokvqa", 0, f"{T}<answer>D. cab</answer>", True),
    ("aokvqa", 0, f"{T}<answer>train</answer>", False),
    ("realworldqa", 0, f"{T}<answer>A</answer>", True),
    ("mmstar", 0, f"{T}<answer>C: a pen</answer>", True),
    ("pope", 0, f"{T}<answer>No.</answer>", True),
    ("pope", 0, f"{T}<answer>Yes</answer>", False),
]


def save(tmp_path, name):
    import datasets

    folder = tmp_path / name
    datasets.DatasetDict({BENCHMARKS[name].split: datasets.Dataset.from_list(ROWS[name])}).save_to_disk(
        folder
    )
    return folder


def test_every_benchmark_has_fixture_rows():
    assert sorted(ROWS) == sorted(BENCHMARKS)


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_each_benchmark_loads_from_its_schema(tmp_path, name):
    from scale_repro.data.sources import load_test_examples

    examples = load_test_examples(name, str(save(tmp_path, name))).examples
    assert len(examples) == len(ROWS[name])
    assert all(len(e.images) == 1 and e.question for e in examples)
    expected = {
        "mathvista": ["1.5", "B"],
        "mathvision": ["B", "\\frac{1}{2}"],
        "mathverse": ["B", "12"],
        "wemath": ["B"],
        "aokvqa": ["D"],
        "realworldqa": ["A"],
        "mmstar": ["C"],
        "pope": ["no"],
    }[name]
    assert [e.answer for e in examples] == expected


def test_the_prompts_carry_choices_units_and_not_lmms_evals_own_instruction(tmp_path):
    from scale_repro.stages.lmms_tasks import benchmarks as hooks

    vista = hooks.mathvista_doc_to_text(ROWS["mathvista"][1])
    assert vista.startswith("How many cubes are left?\nChoices:\n(A) 3\n(B) 4\n(C) 5\n")
    assert "(Unit: cm)" in hooks.mathvista_doc_to_text(ROWS["mathvista"][0])
    world = hooks.realworldqa_doc_to_text(ROWS["realworldqa"][0])
    assert REALWORLDQA_INSTRUCTION not in world and "B. The tree" in world
    assert "\\boxed{}" in hooks.pope_doc_to_text_boxed(ROWS["pope"][0])
    assert [image.size for image in hooks.wemath_doc_to_visual(ROWS["wemath"][0])] == [(32, 24)]


@pytest.mark.parametrize("name, row, completion, correct", GRADED)
def test_the_scorer_grades_as_a_careful_grader_would(name, row, completion, correct):
    from scale_repro.stages.lmms_tasks import benchmarks as hooks

    scores = getattr(hooks, f"{name}_process_results")(ROWS[name][row], [completion])
    assert scores == {"accuracy": float(correct), "invalid_rate": 0.0}
    boxed = completion.replace("<answer>", "\\boxed{").replace("</answer>", "}")
    assert getattr(hooks, f"{name}_process_results_boxed")(ROWS[name][row], [boxed])["accuracy"] == float(
        correct
    )


def test_answers_the_rules_cannot_read_are_told_apart():
    from scale_repro.method.answers import is_readable

    assert is_readable("B", "B", ["3", "4", "5"]) and is_readable("4", "B", ["3", "4", "5"])
    assert not is_readable("the second one looks right", "B", ["3", "4", "5"])
    assert is_readable("x = 12", "12") and not is_readable("about a dozen", "12")
    assert is_readable("No.", "no") and not is_readable(None, "no")


def test_a_row_the_schema_cannot_read_is_named_in_one_line(tmp_path):
    from scale_repro.data.benchmarks import benchmark_example

    row = dict(ROWS["mathvista"][1], answer="7")
    with pytest.raises(DataError, match=r"^x.json, record 2, field 'answer': '7' is none of the 3 choices$"):
        benchmark_example("mathvista", row, 0, "x.json")
    with pytest.raises(DataError, match=r"^x.json, record 0, field 'correct_choice_idx': 4 is not an index"):
        benchmark_example(
            "aokvqa", dict(ROWS["aokvqa"][0], correct_choice_idx=4, question_id=None), 0, "x.json"
        )
    with pytest.raises(
        DataError, match=r"^x.json, record 1, field 'question': POPE rows need a non-empty question$"
    ):
        benchmark_example("pope", dict(ROWS["pope"][0], question=""), 0, "x.json")


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_lmms_eval_reads_each_task_file_on_the_fixture(tmp_path, name):
    """lmms-eval's own task loader on the task file the evaluator writes: the docs, prompts,
    targets and scores come out of lmms-eval as from the hooks."""
    from lmms_eval.tasks import TaskManager, get_task_dict

    from scale_repro.config import EvalConfig, load_config
    from scale_repro.stages.evaluate import write_task_yaml

    config = load_config(
        EvalConfig, None, [f"task={name}", f"data={save(tmp_path, name)}", "answer_format=think_boxed"]
    )
    task_name, tasks_dir = write_task_yaml(config, tmp_path / "run")
    task = get_task_dict([task_name], TaskManager(include_path=str(tasks_dir)))[task_name]
    docs = list(task.test_docs())
    assert len(docs) == len(ROWS[name])
    assert "\\boxed" in task.doc_to_text(docs[0])
    target = task.doc_to_target(docs[0])
    assert task.process_results(docs[0], [f"<think>.</think>\\boxed{{{target}}}"])["accuracy"] == 1.0


def test_mathvista_asks_for_its_precision_and_lists_more_options_than_letters():
    from scale_repro.data.benchmarks import benchmark_example
    from scale_repro.stages.lmms_tasks import benchmarks as hooks

    # precision 1.0 (float64 on the hub): one decimal place, as MathVista's own query hint asks.
    assert hooks.mathvista_doc_to_text(ROWS["mathvista"][0]).startswith(
        "What is the length of side a? (Unit: cm)\nAnswer with a number with 1 decimal place.\n"
    )
    six = dict(ROWS["mathvista"][1], choices=["1", "2", "3", "4", "5", "6"], answer="6")
    example = benchmark_example("mathvista", six, 0, "x")
    assert (example.choices, example.answer) == (None, "6")
    assert "Choices: 1; 2; 3; 4; 5; 6" in example.question
    assert hooks.mathvista_process_results(six, ["<think>.</think><answer>6</answer>"])["accuracy"] == 1.0
    assert hooks.mathvista_process_results(six, ["<think>.</think><answer>5</answer>"])["accuracy"] == 0.0
