import pytest

from scale_repro.method.rewards import accuracy_reward, format_reward, make_format_reward, tag_score

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
        "<answer>B</answer>",  # no </think>: invalid, so no answer (one rule for reward and evaluation)
    ]
    answers = ["B", "B", "12", "B", "B", "B"]
    choices = [None, ["red", "blue"], None, None, None, None]
    assert accuracy_reward(completions, answer=answers, choices=choices) == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<think>two dots</think> The answer is \\boxed{2}.", 1.0),
        ("<think>a</think>\\boxed{B}", 1.0),
        (
            "< think >a</ think >\\boxed{B}",
            1.0,
        ),  # spaces inside tags are tolerated, as in the curriculum's grader
        ("Sure. <think>a</think>\\boxed{B}", 0.0),  # text before <think>
        ("<think>a</think> B", 0.0),  # no \\boxed{}
        ("\\boxed{B}<think>a</think>", 0.0),  # answer before the reasoning
        ("<think>a \\boxed{B}", 0.0),  # never closed
    ],
)
def test_think_boxed_format_follows_the_curriculum_grader(completion, expected):
    from scale_repro.method.rewards import think_boxed_score

    assert think_boxed_score(completion) == expected


def test_rewards_by_name_for_each_answer_format():
    from scale_repro.method.rewards import REWARDS

    completions = [
        "<think>a</think>\\boxed{B}",
        "<think>a</think><answer>B</answer>",
        "<think>a</think>\\boxed{A or B}",
    ]
    boxed_accuracy = REWARDS["accuracy"]("think_boxed", False)
    tags_accuracy = REWARDS["accuracy"]("tags", False)
    assert boxed_accuracy(completions, answer=["B"] * 3) == [1.0, 0.0, 0.0]  # a hedge never scores
    assert tags_accuracy(completions, answer=["B"] * 3) == [0.0, 1.0, 0.0]
    assert REWARDS["think_boxed_format"]("think_boxed", False)(completions) == [1.0, 0.0, 1.0]
    assert REWARDS["format"]("tags", False)(completions) == [0.5, 1.0, 0.5]
    assert REWARDS["think_boxed_format"]("think_boxed", False).__name__ == "think_boxed_format_reward"


def test_reward_names_and_weights_are_checked():
    from scale_repro.config import ConfigError, GRPOConfig, load_config

    with pytest.raises(
        ConfigError,
        match=r"--set reward_funcs=\[format,lenght\]: reward_funcs unknown reward\(s\) \['lenght'\]",
    ):
        load_config(GRPOConfig, None, ["reward_funcs=[format,lenght]"])
    with pytest.raises(
        ConfigError,
        match=r"reward 'no_such_module:f' does not import: ModuleNotFoundError: No module named 'no_such_module'",
    ):
        load_config(GRPOConfig, None, ["reward_funcs=[format,'no_such_module:f']"])
    # A reward of one's own, by import path (as TRL's GRPO script takes them).
    config = load_config(GRPOConfig, None, ["reward_funcs=[format,'spread_rewards:vowel_share']"])
    from scale_repro.method.rewards import reward_function

    assert reward_function(config.reward_funcs[1])(["aeb"]) == [2 / 3]
    with pytest.raises(ConfigError, match="one weight per reward: 2 rewards, 1 weights"):
        load_config(GRPOConfig, None, ["reward_weights=[1.0]"])
    config = load_config(GRPOConfig, "configs/grpo/default.yaml", [])
    assert (config.answer_format, config.reward_funcs, config.reward_weights) == (
        "tags",
        ["format", "accuracy"],
        [1.0, 1.0],
    )


def test_a_prefilled_think_may_be_repeated_in_the_boxed_format():
    """With a template that opens <think>, the completion may or may not repeat it; the format
    reward and the parser agree either way."""
    from scale_repro.method.answers import parse_boxed_completion
    from scale_repro.method.rewards import think_boxed_score

    for completion in ("a</think> \\boxed{B}", "<think>a</think> \\boxed{B}"):
        assert think_boxed_score(completion, think_prefilled=True) == 1.0
        assert parse_boxed_completion(completion).valid
    assert think_boxed_score("a</think> \\boxed{B}", think_prefilled=False) == 0.0
