import pytest

from scale_repro.method.segments import ANSWER, THINK, answer_start, label_segments

TEXT = "<think>ab</think><answer>C</answer>"


def spans(pieces):
    out, at = [], 0
    for piece in pieces:
        out.append((at, at + len(piece)))
        at += len(piece)
    return out


def test_close_tag_starts_the_answer_segment():
    assert answer_start(TEXT) == TEXT.index("</think>")
    assert label_segments(TEXT, spans(["<think>", "ab", "</think>", "<answer>", "C", "</answer>"])) == [
        THINK,
        THINK,
        ANSWER,
        ANSWER,
        ANSWER,
        ANSWER,
    ]


def test_token_merged_across_the_boundary_is_answer():
    # "b</" straddles the start of </think>: its span ends after the boundary.
    assert label_segments(TEXT, spans(["<think>a", "b</", "think>", "<answer>C</answer>"])) == [
        THINK,
        ANSWER,
        ANSWER,
        ANSWER,
    ]


def test_token_ending_exactly_at_the_boundary_is_think():
    assert label_segments(TEXT, spans(["<think>ab", "</think><answer>C</answer>"])) == [THINK, ANSWER]


def test_zero_width_tokens_take_the_previous_segment():
    offsets = [(0, 9), (9, 9), (9, len(TEXT)), (len(TEXT), len(TEXT))]
    assert label_segments(TEXT, offsets) == [THINK, THINK, ANSWER, ANSWER]
    assert label_segments(TEXT, [(0, 0), (0, 9)]) == [THINK, THINK]


def test_text_without_close_tag_is_all_think():
    text = "<think>never ends"
    assert label_segments(text, spans(["<think>", "never", " ends"])) == [THINK, THINK, THINK]


def test_only_the_first_close_tag_counts():
    text = "<think>a</think>b</think><answer>x</answer>"
    labels = label_segments(text, spans(["<think>a", "</think>b", "</think>", "<answer>x</answer>"]))
    assert labels == [THINK, ANSWER, ANSWER, ANSWER]


@pytest.mark.parametrize("name", ["tiny-qwen2.5-vl", "tiny-gemma3", "tiny-llava-next"])
def test_labels_on_each_tiny_tokenizer_put_close_tag_in_answer(tiny_paths, name):
    from transformers import AutoProcessor

    tokenizer = AutoProcessor.from_pretrained(tiny_paths[name]).tokenizer
    text = "<think>I count two red circles.</think><answer>2</answer>"
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    labels = label_segments(text, encoded["offset_mapping"])
    boundary = text.index("</think>")
    for (start, end), label in zip(encoded["offset_mapping"], labels, strict=True):
        expected = ANSWER if end > boundary else THINK
        assert label == expected, (text[start:end], label)
    # Every character of "</think>" is covered by ANSWER tokens.
    answer_chars = {
        i
        for (s, e), lab in zip(encoded["offset_mapping"], labels, strict=True)
        if lab == ANSWER
        for i in range(s, e)
    }
    assert set(range(boundary, boundary + len("</think>"))) <= answer_chars
    assert labels.count(THINK) > 0 and labels[-1] == ANSWER
