import pytest

from scale_repro.rewards import accuracy_reward, format_reward, make_format_reward, tag_score

GOOD = "<think>I see two.</think><answer>2</answer>"


@pytest.mark.parametrize(
    "completion, expected",
    [
        (GOOD, 1.0),
        ("  \n" + GOOD + "\n", 1.0),  # surrounding whitespace is fine
        ("I think <think>a</think><answer>2</answer>", 0.75),  # text before <think>
        ("<think>a</think>text<answer>2</answer>", 1.0),  # text between blocks is not a tag error
        ("<think>a</think><answer>2</answer> trailing", 0.75),  # </answer> must end the completion
        ("<think>a<answer>2</answer>", 0.5),  # no </think>: <answer> earns nothing; <think> and </answer> do
        ("<think>a</think>2", 0.5),  # missing answer block
        ("a</think><answer>2</answer>", 0.75),  # missing <think>
        ("<think><think>a</think></think><answer>2</answer>", 0.5),  # nested/repeated think tags
        ("<think>a</think><answer>1</answer><answer>2</answer>", 0.5),  # stacked answer blocks farm nothing
        (
            "<answer>2</answer><think>a</think>",
            0.25,
        ),  # misordered: only </think> (after <think>) is placed right
        (
            "</think><think>a<answer>2</answer>",
            0.5,
        ),  # </think> before <think> earns nothing; the answer tags follow it
        ("", 0.0),
    ],
)
def test_format_reward_table(completion, expected):
    assert tag_score(completion) == expected
    assert format_reward([completion]) == [expected]


def test_prefilled_think_counts_as_present():
    prefilled = make_format_reward(think_prefilled=True)
    assert prefilled(["reasoning</think><answer>B</answer>"]) == [1.0]
    assert prefilled(["<think>again</think><answer>B</answer>"]) == [0.75]  # a second <think> is a repeat


def test_chat_message_completions():
    messages = [
        [{"role": "assistant", "content": GOOD}],
        [{"role": "assistant", "content": [{"type": "text", "text": GOOD}]}],
    ]
    assert format_reward(messages) == [1.0, 1.0]
    assert accuracy_reward(messages, answer=["2", "3"]) == [1.0, 0.0]


def test_accuracy_reward_table():
    completions = [
        "<think>a</think><answer>Final Answer: B.</answer>",
        "<think>a</think><answer>blue</answer>",  # choice text for letter B
        "<think>a</think><answer>12.0</answer>",
        "<think>a</think><answer>B</answer><answer>B</answer>",  # two blocks: ambiguous
        "<think>a</think><answer>B",  # unclosed
        "<answer>B</answer>",  # no think, one complete block: accuracy still judged
    ]
    answers = ["B", "B", "12", "B", "B", "B"]
    choices = [None, ["red", "blue"], None, None, None, None]
    assert accuracy_reward(completions, answer=answers, choices=choices) == [1.0, 1.0, 1.0, 0.0, 0.0, 1.0]
