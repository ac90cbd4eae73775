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
