import pytest

from scale_repro.method.answers import is_correct, normalize_answer, parse_completion


def test_parse_a_well_formed_completion():
    parsed = parse_completion("<think>two circles</think><answer>2</answer>")
    assert (parsed.think, parsed.answer, parsed.valid) == ("two circles", "2", True)


@pytest.mark.parametrize(
    "text, think, answer, valid",
    [
        ("<think>loops forever", None, None, False),  # no closing </think>
        ("<think>a</think>no answer block", "a", None, False),
        ("<think>a</think><answer>B", "a", None, False),  # unclosed answer
        ("<think>a</think><answer>B</answer><answer>C</answer>", "a", None, False),  # two blocks
        ("prefilled reasoning</think><answer>B</answer>", "prefilled reasoning", "B", True),
        ("<answer>B</answer>", None, None, False),  # no </think>: no answer, by the one rule
        ("<think>a<answer>B</answer></think>", "a<answer>B</answer>", None, False),  # answer inside think
        ("<think>a<answer>B</answer></think><answer>C</answer>", "a<answer>B</answer>", None, False),
        ("< think >a</ think >< answer >B</ answer >", "a", "B", True),  # spaced tags are tags
        ("<Think>a</THINK><Answer>B</Answer>", "a", "B", True),
    ],
)
def test_parse_malformed_completions(text, think, answer, valid):
    parsed = parse_completion(text)
    assert (parsed.think, parsed.answer, parsed.valid) == (think, answer, valid)


@pytest.mark.parametrize(
    "answer",
    ["B", "B.", "(B)", "B) yes", "B. yes", " b ", "Answer: B", "Final Answer: B.", "final answer: (b)"],
)
def test_letter_forms_all_mean_b(answer):
    assert is_correct(answer, "B")
    assert not is_correct(answer, "A")


def test_choice_text_means_its_letter():
    choices = ["red", "blue", "green"]
    assert is_correct("blue", "B", choices)
    assert is_correct("Blue.", "B", choices)
    assert is_correct("The answer is blue", "B", choices)
    assert is_correct("B", "blue", choices)  # IconQA choose_txt: the reference is the choice text
    assert is_correct("blue", "blue", "red,blue,green")  # IconQA ships choices as one string
    assert not is_correct("D", "B", choices)  # no such choice


def test_numbers_compare_by_value():
    assert is_correct("12", "12.0")
    assert is_correct("1,000", "1000")
    assert is_correct("Answer: 3.", "3")
    assert not is_correct("13", "12")


def test_free_text_is_case_and_space_insensitive():
    assert is_correct("  Left   Side ", "left side")
    assert not is_correct("left", "left side")
    assert not is_correct(None, "x")


def test_normalize_answer():
    assert normalize_answer("Final Answer: (C).", ["a", "b", "c"]) == "C"
    assert normalize_answer("12.0") == "12"
    assert normalize_answer("2.5") == "2.5"
    assert normalize_answer("  Hello   World. ") == "hello world"


CAPITALS = ["Boston", "Juneau", "Denver", "Austin"]


@pytest.mark.parametrize(
    "answer",
    [
        "Final Answer:option B",  # Vision-R1 / Mulberry references
        "Final Answer: B",
        "\\boxed{B}",  # R1-style models and the staged-curriculum prompt
        "\\boxed{\\text{B}}",
        "option B",
        "Option (B)",
        "The answer is B.",
        "The final answer is: option (B)",
        "B: Juneau",
        "(B) Juneau",
        "Juneau",
    ],
)
def test_real_answer_forms_score_right(answer):
    assert is_correct(answer, "B", CAPITALS)
    assert is_correct(answer, "Juneau", CAPITALS)  # IconQA choose_txt references are the choice text
    assert not is_correct(answer, "A", CAPITALS)


@pytest.mark.parametrize(
    "answer, reference",
    [("Final Answer:7", "7"), ("\\boxed{7}", "7"), ("The answer is 7.", "7"), ("Answer: 1,000", "1000")],
)
def test_real_numeric_answer_forms_score_right(answer, reference):
    assert is_correct(answer, reference)


@pytest.mark.parametrize(
    "hedge, reference, choices",
    [
        ("A or B", "A", CAPITALS),
        ("A or B", "B", None),
        ("A, B, C, D", "A", CAPITALS),
        ("A. B. C. D.", "A", CAPITALS),
        ("(A) or (B)", "A", CAPITALS),
        ("A and B", "B", CAPITALS),
        ("yes or no", "yes", None),
        ("7 or 8", "7", None),
        ("\\boxed{A or B}", "A", CAPITALS),
    ],
)
def test_hedges_never_score(hedge, reference, choices):
    assert not is_correct(hedge, reference, choices)


def test_a_choice_whose_text_has_or_in_it_is_no_hedge():
    choices = ["sunny", "rain or snow"]
    assert is_correct("rain or snow", "B", choices)


@pytest.mark.parametrize(
    "text",
    [
        "<think>a</think><answer><answer>A</answer></answer>",  # nested blocks
        "<think>a</think><think>b</think><answer>A</answer>",  # two reasoning blocks
        "<answer>A</answer><think>a</think>",  # answer before the reasoning
        "<think>a</think></answer>A<answer>",  # closing before opening
    ],
)
def test_ambiguous_structure_is_never_valid(text):
    assert not parse_completion(text).valid


def test_parsing_is_linear_in_the_completion_length():
    import time

    text = "<think>x</think>" + "<answer>A " * 25_000  # 256 KB of unclosed answer blocks
    started = time.perf_counter()
    parsed = parse_completion(text)
    assert parsed.answer is None and not parsed.valid
    assert time.perf_counter() - started < 1.0  # a quadratic scan takes close to a minute here


def test_ten_thousand_fuzzed_completions_raise_nothing():
    import random

    from scale_repro.method.rewards import accuracy_reward, format_reward

    pieces = [
        "<think>",
        "</think>",
        "<answer>",
        "</answer>",
        "\\boxed{",
        "}",
        "A",
        "B",
        " or ",
        "Final Answer:",
        "option ",
        "(",
        ")",
        ".",
        ",",
        "7",
        "1e309",
        "nan",
        " ",
        "\n",
        "é",
        "\x00",
        "<",
        ">",
        "/",
    ]
    rng = random.Random(0)
    completions = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 40))) for _ in range(10_000)]
    for text in completions:
        parsed = parse_completion(text)
        if parsed.answer is not None:
            is_correct(parsed.answer, "B", CAPITALS)
            is_correct(parsed.answer, "7")
            normalize_answer(parsed.answer, CAPITALS)
    rewards = accuracy_reward(completions, ["B"] * len(completions), choices=[CAPITALS] * len(completions))
    assert len(format_reward(completions)) == len(rewards) == 10_000
    assert all(r in (0.0, 1.0) for r in rewards)


@pytest.mark.parametrize(
    ("reference", "choices", "canonical"),
    [
        ("Final Answer:option B", None, "B"),  # Vision-R1 / Mulberry multiple choice
        ("Final Answer:7", None, "7"),  # Vision-R1 / Mulberry numbers
        ("Final Answer: 3.50", None, "3.50"),
        ("7.0", None, "7"),
        ("\\boxed{B}", None, "B"),  # R1-style and the curriculum's recipes
        ("\\boxed{\\frac{3}{4}}", None, "\\frac{3}{4}"),
        ("Option (B)", None, "B"),
        ("The answer is B.", None, "B"),
        ("B: Juneau", None, "B"),
        ("Final Answer:Juneau", ["Anchorage", "Juneau"], "B"),
        ("Final Answer:Juneau", None, "Juneau"),
        ("B", None, "B"),
    ],
)
def test_references_reduce_to_their_canonical_answer(reference, choices, canonical):
    from scale_repro.method.answers import canonical_reference

    assert canonical_reference(reference, choices) == canonical
    # Whatever the form, a model answering the canonical form scores against the original one.
    assert is_correct(canonical, reference, choices)


@pytest.mark.parametrize(
    ("question", "choices"),
    [
        (
            "What is the capital?\nChoices:\nA: Anchorage\nB: Juneau\nC: Sitka",
            ["Anchorage", "Juneau", "Sitka"],
        ),
        ("Which shape?\n(A) circle\n(B) square", ["circle", "square"]),
        ("Which?\nA. red\nB. blue\nC) green", ["red", "blue", "green"]),
        ("Is A: the first letter?", None),  # one line is no list
        ("Options:\nB: two\nC: three", None),  # a list starts at A
        ("How many dots are there?", None),
    ],
)
def test_choices_listed_in_a_question(question, choices):
    from scale_repro.method.answers import choices_from_question

    assert choices_from_question(question) == choices


@pytest.mark.parametrize(
    ("think", "stated"),
    [
        ("I look at each cell. So the answer is green, which is option B.", "B"),
        ("So the answer is 3. Checking again: the answer is 4.", "4"),  # the last conclusion counts
        ("the final answer is (C)", "C"),
        ("So the answer is 2.5.", "2.5"),
        ("So the answer is red, because the cell is red.", "red"),
        ("The top left cell holds a red square.", None),  # no conclusion (e.g. cut short)
        ("", None),
        (None, None),
    ],
)
def test_the_conclusion_a_trace_states(think, stated):
    from scale_repro.method.answers import trace_conclusion

    assert trace_conclusion(think) == stated


# --- The grader, case by case: what a careful teacher credits, and what never scores ---------

CITIES = ["Boston", "Juneau", "Denver", "Austin"]
TIMES = ["7:00 A.M.", "7:30 A.M.", "8:00 P.M."]  # IconQA choose_txt options end in punctuation
SENTENCES = ["The ball moves faster.", "The ball moves slower.", "The ball does not move."]  # ScienceQA

GRADED = [
    # Several answers in one: never credited, whatever the reference.
    ("\\boxed{A} or \\boxed{B}", "A", CITIES, False),
    ("\\boxed{D}\\boxed{C}\\boxed{B}\\boxed{A}", "A", CITIES, False),
    ("\\boxed{yes}\\boxed{no}", "yes", None, False),
    ("\\boxed{A} \\boxed{B}", "B", CITIES, False),
    ("\\boxed{A or B}", "A", CITIES, False),
    ("7,8", "78", None, False),  # two numbers, not seventy-eight
    ("7,8", "7", None, False),
    ("7, 8", "8", None, False),
    ("7-8", "7", None, False),
    ("between 7 and 8", "7", None, False),
    ("A or B", "A", CITIES, False),
    ("A, B, C, D", "A", CITIES, False),
    ("A. B. C. D.", "A", CITIES, False),
    ("(A) or (B)", "A", CITIES, False),
    ("A and B", "B", CITIES, False),
    ("B/C", "B", CITIES, False),
    ("either B or C", "B", CITIES, False),
    ("Juneau or Denver", "B", CITIES, False),
    ("yes or no", "yes", None, False),
    ("yes/no", "yes", None, False),
    ("7 or 8", "7", None, False),
    ("B: Denver", "B", CITIES, False),  # the letter and the text name two choices
    # A number with a unit or noun after it, or in a sentence.
    ("7 cars", "7", None, True),
    ("1,000 cubes", "1000", None, True),
    ("3 in.", "3", None, True),
    ("1.75 dollars", "1.75", None, True),
    ("$1.75", "1.75", None, True),
    ("\\boxed{7 \\text{ cars}}", "7", None, True),
    ("There are 7 cars.", "7", None, True),
    ("x = 7", "7", None, True),
    ("2 + 5 = 7", "7", None, True),
    ("seven", "7", None, True),
    ("8 cars", "7", None, False),
    ("There are 8 cars.", "7", None, False),
    # Sentences and lead-ins.
    ("Therefore, the answer is B.", "B", CITIES, True),
    ("The answer is B because Juneau is the capital", "B", CITIES, True),
    ("B, because Juneau is the capital.", "B", CITIES, True),
    ("I'd go with B.", "B", CITIES, True),
    ("The capital is Juneau.", "B", CITIES, True),
    ("B - Juneau", "B", CITIES, True),
    ("No, because the ball stops.", "no", None, True),
    ("No, because the ball stops.", "B", ["yes", "no"], True),
    ("Yes.", "yes", None, True),
    ("It is a triangle.", "triangle", None, True),
    ("It is a circle.", "triangle", None, False),
    # Equivalent mathematics (math-verify).
    ("\\frac{2}{5}", "2/5", None, True),
    ("\\frac{2}{5}", "2 / 5", None, True),
    ("2/5", "\\frac{2}{5}", None, True),
    ("0.4", "\\frac{2}{5}", None, True),
    ("\\frac{1}{2}", "0.5", None, True),
    ("\\dfrac{3}{4}", "0.75", None, True),
    ("$\\frac{1}{2}$", "1/2", None, True),
    ("\\(7\\)", "7", None, True),
    ("3\\sqrt{2}", "\\sqrt{18}", None, True),
    ("\\frac{2}{3}", "2/5", None, False),
    # Options that end in punctuation, and sentence options.
    ("7:00 A.M.", "A", TIMES, True),
    ("7:00 a.m.", "A", TIMES, True),
    ("A", "7:00 A.M.", TIMES, True),
    ("7:30 A.M.", "A", TIMES, False),
    ("The ball moves slower.", "B", SENTENCES, True),
    ("The ball moves slower", "B", SENTENCES, True),
    ("B", "The ball moves slower.", SENTENCES, True),
    ("B. The ball moves slower.", "B", SENTENCES, True),
    ("The ball moves faster.", "B", SENTENCES, False),
    # A reference of any shape matches itself (ratios, times, units with a slash, lists).
    ("1:2", "1:2", None, True),
    ("7:00 A.M.", "7:00 A.M.", None, True),
    ("1, 2, 3", "1, 2, 3", None, True),
    ("60 km/h", "60 km/h", None, True),
    ("60 km/h", "60", None, True),
    ("9.8 m/s^2", "9.8", None, True),
    ("1 hour 30 minutes", "1 hour 30 minutes", None, True),
    ("D: both A and B", "D", ["x", "y", "z", "both A and B"], True),
    # Boxes agree only when they say the same, sign and brackets included.
    ("\\boxed{1} or \\boxed{-1}", "-1", None, False),
    ("\\boxed{x > 2} or \\boxed{x < 2}", "x<2", None, False),
    ("\\boxed{(1,2)} \\boxed{[1,2]}", "[1,2]", None, False),
    ("-3", "3", None, False),
    # A letter and another option, letters apart, a disowned option: never credited.
    ("A or Juneau", "B", CITIES, False),
    ("Juneau, A", "B", CITIES, False),
    ("Juneau C", "B", CITIES, False),
    ("Denver or B", "A", CITIES, False),
    ("A - B", "A", None, False),
    ("A, but B is possible", "A", None, False),
    ("A B", "B", None, False),
    ("A then B", "B", None, False),
    ("not B", "B", None, False),
    ("not Juneau", "B", CITIES, False),
    ("B is wrong", "B", ["red", "blue", "green"], False),
    ("The ball does not move.", "C", SENTENCES, True),  # "not" inside the option's own text
    ("B. The ball does not move.", "C", SENTENCES, False),
    ("yes, no", "yes", None, False),
    ("Yes. No.", "yes", None, False),
    ("triangle (square)", "triangle", None, False),
    # Free-form references are words, not option letters.
    ("vitamin c", "Vitamin C", None, True),
    ("C", "Vitamin C", None, False),
    ("B", "B-cell", None, False),
    ("E", "E. coli", None, False),
    ("e. coli", "E. coli", None, True),
    ("I would pick a red one", "B", ["blue", "red"], True),  # "a" is the article
    ("The answer is a cat.", "A", ["cat", "dog"], True),
]


@pytest.mark.parametrize(("answer", "reference", "choices", "expected"), GRADED)
def test_the_grader_credits_as_a_careful_teacher(answer, reference, choices, expected):
    assert is_correct(answer, reference, choices) is expected


def _completion(answer_format: str, answer: str) -> str:
    if answer_format == "tags":
        return f"<think>I look at the picture.</think><answer>{answer}</answer>"
    return (
        f"<think>I look at the picture.</think> So the answer is {answer}."
        if "boxed" in answer
        else (f"<think>I look at the picture.</think> \\boxed{{{answer}}}")
    )


@pytest.mark.parametrize("answer_format", ["tags", "think_boxed"])
@pytest.mark.parametrize(("answer", "reference", "choices", "expected"), GRADED)
def test_the_reward_and_the_evaluation_grade_alike(answer_format, answer, reference, choices, expected):
    """Every graded case, in both answer formats, through the accuracy reward and lmms-eval's
    scoring hook: the same verdict as the grader."""
    from scale_repro.method.rewards import make_accuracy_reward
    from scale_repro.stages.lmms_tasks.utils import _score

    completion = _completion(answer_format, answer)
    reward = make_accuracy_reward(answer_format)([completion], answer=[reference], choices=[choices])
    assert reward == [float(expected)]
    assert _score(completion, reference, choices, answer_format)["accuracy"] == float(expected)


@pytest.mark.parametrize(
    ("completion", "answer_format", "valid", "answer"),
    [
        # One rule for both formats: the answer is read after the one </think>, and only there.
        ("<think>a</think><answer>B</answer>", "tags", True, "B"),
        ("<think>a</think>\\boxed{B}", "think_boxed", True, "B"),
        ("<answer>B</answer>", "tags", False, None),  # no </think>
        ("\\boxed{B}", "think_boxed", False, None),
        ("<think>a <answer>B</answer></think>", "tags", False, None),  # the answer inside the reasoning
        ("<think>a \\boxed{B}</think>", "think_boxed", False, None),
        ("<think>a</think><answer>A</answer><answer>B</answer>", "tags", False, None),
        ("<think>a</think>\\boxed{A} then \\boxed{B}", "think_boxed", False, None),  # two answers
        ("<think>a</think>\\boxed{B}. So \\boxed{B}", "think_boxed", True, "B"),  # one answer, repeated
        ("< think >a</ think >< answer >B</ answer >", "tags", True, "B"),  # spaced tags
        ("< think >a</ think > \\boxed{B}", "think_boxed", True, "B"),
        ("<think>a</think><think>b</think>\\boxed{B}", "think_boxed", False, None),
    ],
)
def test_one_rule_for_the_final_answer(completion, answer_format, valid, answer):
    from scale_repro.method.formats import FORMATS

    parsed = FORMATS[answer_format].parse(completion)
    assert (parsed.valid, parsed.answer) == (valid, answer)


def test_the_format_rewards_read_tags_as_the_parser_does():
    from scale_repro.method.rewards import tag_score, think_boxed_score

    assert tag_score("< think >a</ think >< answer >B</ answer >") == 1.0
    assert think_boxed_score("< think >a</ think > \\boxed{B}") == 1.0
    # The boxed format reward is the parser's validity: two different boxes are no format.
    assert think_boxed_score("<think>a</think>\\boxed{A}\\boxed{B}") == 0.0
    assert think_boxed_score("<think>a</think>\\boxed{B} or \\boxed{B}") == 1.0


@pytest.mark.parametrize(
    ("completion", "reference", "choices"),
    [
        ("<think>a<answer>B</answer></think>", "B", CITIES),  # invalid, yet the answer is right
        ("<think>a</think><answer>B</answer><answer>B</answer>", "B", CITIES),
        ("<answer>7</answer>", "7", None),
    ],
)
def test_an_invalid_completion_never_earns_accuracy(completion, reference, choices):
    from scale_repro.method.rewards import accuracy_reward
    from scale_repro.stages.lmms_tasks.utils import _score

    assert accuracy_reward([completion], answer=[reference], choices=[choices]) == [0.0]
    assert _score(completion, reference, choices) == {"accuracy": 0.0, "invalid_rate": 1.0}


# --- Time: every parser and reward is linear, and math-verify is bounded -----------------------

DEGENERATE = {
    "unclosed answer blocks": "<think>x</think>" + "<answer>A " * 100_000,
    "think-close and open boxes": "<think>" + "</think>\\boxed{" * 60_000,
    "a whitespace run": "<think>a</think>" + " " * 1_000_000 + "\\boxed{B}",
    "spaced tag openers": "< " * 500_000,
    "nested boxes": "<think>a</think>" + "\\boxed{" * 100_000 + "}" * 100_000,
    "many boxes": "<think>a</think>" + "\\boxed{A}" * 100_000,
    "a long choice line": "A: " + "x " * 500_000,
}


@pytest.mark.parametrize("name", DEGENERATE)
def test_every_reward_and_parser_is_linear_on_a_megabyte(name):
    import time

    from scale_repro.method.answers import choices_from_question, parse_boxed_completion
    from scale_repro.method.rewards import REWARDS

    text = DEGENERATE[name]
    started = time.perf_counter()
    parse_completion(text)
    parse_boxed_completion(text)
    choices_from_question(text)
    for reward in ("format", "think_boxed_format", "accuracy"):
        for answer_format in ("tags", "think_boxed"):
            REWARDS[reward](answer_format, False)([text], answer=["B"], choices=[CITIES])
    assert time.perf_counter() - started < 10.0  # a super-linear pattern takes minutes here


@pytest.mark.parametrize(
    "answer",
    ["7" + " ab" * 200_000 + " c", "a" + "$" * 1_000_000 + "x", "answer is " * 100_000, "A " * 500_000],
)
def test_the_grader_is_linear_on_a_megabyte_answer(answer):
    import time

    started = time.perf_counter()
    is_correct(answer, "7")
    is_correct(answer, "B", CITIES)
    assert time.perf_counter() - started < 10.0


def test_math_equivalence_is_bounded_and_never_raises():
    import time

    from scale_repro.method.math_equivalence import MAX_ANSWER_CHARS, math_equal

    started = time.perf_counter()
    assert not math_equal("9" * 10 + "^" + "9" * 10, "1")  # a huge power: the time limit ends it
    assert not math_equal("\\frac{" * 20, "1")  # malformed LaTeX: not equal, no exception
    assert not math_equal("1" + "+1" * MAX_ANSWER_CHARS, "1")  # too long to be an answer
    assert time.perf_counter() - started < 5.0


def test_ten_thousand_rewards_in_seconds():
    import random
    import time

    from scale_repro.method.rewards import accuracy_reward

    rng = random.Random(0)
    answers = ["B", "Juneau", "7 cars", "\\frac{2}{5}", "A or B", "There are 7 cars.", "\\boxed{B}"]
    completions = [f"<think>t</think><answer>{rng.choice(answers)}</answer>" for _ in range(10_000)]
    started = time.perf_counter()
    accuracy_reward(completions, answer=["B"] * 10_000, choices=[CITIES] * 10_000)
    accuracy_reward(completions, answer=["2/5"] * 10_000)
    assert time.perf_counter() - started < 20.0


def test_lmms_eval_stock_rule_beside_ours():
    """What lmms-eval's own rules give the extracted answer: ScienceQA-IMG's letter match
    (a letter or "B. ..."), IconQA's ANLS against the reference text."""
    from scale_repro.stages.lmms_tasks.utils import stock_score

    assert stock_score("scienceqa", "B", "B", CITIES) == 1.0
    assert stock_score("scienceqa", "B. Juneau", "B", CITIES) == 1.0
    assert stock_score("scienceqa", "Juneau", "B", CITIES) == 0.0  # ours credits the option's text
    assert stock_score("iconqa", "7", "7", None) == 1.0
    assert stock_score("iconqa", "7 cars", "7", None) == 0.0  # ANLS 1 - 5/6 is under its 0.5 threshold
    assert stock_score("iconqa", "7:00 A.M", "7:00 A.M.", TIMES) == pytest.approx(1 - 1 / 9)
    assert stock_score("iconqa", None, "7", None) == 0.0


def test_an_independently_graded_set_is_scored_as_its_graders_did():
    """305 completions (ScienceQA-IMG, IconQA, math, adversarial), graded by hand by a reader
    who never saw this grader: the reward and the evaluation agree with every verdict."""
    import json
    from pathlib import Path

    from scale_repro.method.formats import FORMATS
    from scale_repro.method.rewards import make_accuracy_reward
    from scale_repro.stages.lmms_tasks.utils import _score

    cases = [
        json.loads(line) for line in (Path(__file__).parent / "fixtures/graded_completions.jsonl").open()
    ]
    disagreements = []
    for case in cases:
        reward = make_accuracy_reward(case["format"])(
            [case["completion"]], answer=[case["reference"]], choices=[case["choices"]]
        )[0]
        evaluated = _score(case["completion"], case["reference"], case["choices"], case["format"])["accuracy"]
        assert reward == evaluated
        if reward != float(case["correct"]):
            disagreements.append((case["category"], FORMATS[case["format"]].parse(case["completion"]).answer))
    assert len(cases) == 305
    assert disagreements == []
