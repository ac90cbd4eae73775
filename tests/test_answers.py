import pytest

from scale_repro.answers import is_correct, normalize_answer, parse_completion


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
        ("<answer>B</answer>", None, "B", False),  # answer but no </think>
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

    from scale_repro.rewards import accuracy_reward, format_reward

    pieces = ["<think>", "</think>", "<answer>", "</answer>", "\\boxed{", "}", "A", "B", " or ", "Final Answer:",
              "option ", "(", ")", ".", ",", "7", "1e309", "nan", " ", "\n", "é", "\x00", "<", ">", "/"]  # fmt: skip
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
    from scale_repro.answers import canonical_reference

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
    from scale_repro.answers import choices_from_question

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
    from scale_repro.answers import trace_conclusion

    assert trace_conclusion(think) == stated
