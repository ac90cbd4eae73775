"""Which segment of a completion each supervised token belongs to.

THINK runs from the start of the completion (``<think>`` included) up to, not including,
the first ``</think>``. ANSWER is ``</think>`` itself and everything after it: the answer
block and whatever end-of-turn tokens the chat template appends. The closing tag goes with
the answer on purpose: the paper wants the model to be pushed to *end* its reasoning.

Tags are plain text in most tokenizers and BPE may merge them with their neighbours, so
assignment works on character offsets rather than token ids: a token whose span ends after
the start of ``</think>`` is ANSWER.
"""

from __future__ import annotations

from collections.abc import Sequence

IGNORED = 0
THINK = 1
ANSWER = 2

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"


def answer_start(text: str) -> int:
    """Character index where the ANSWER segment starts: the first ``</think>``.

    A completion without ``</think>`` is all reasoning, so ANSWER starts past its end.
    """
    index = text.find(THINK_CLOSE)
    return len(text) if index < 0 else index


def label_segments(text: str, offsets: Sequence[tuple[int, int]]) -> list[int]:
    """Label each token of ``text`` THINK or ANSWER from its character span ``(start, end)``.

    A token that spans no characters (special tokens such as EOS, which tokenizers report
    as ``(0, 0)`` or ``(n, n)``) takes the segment of the token before it; a zero-width
    first token is THINK.
    """
    boundary = answer_start(text)
    labels: list[int] = []
    for start, end in offsets:
        if end <= start:
            labels.append(labels[-1] if labels else THINK)
        elif end > boundary:
            labels.append(ANSWER)
        else:
            labels.append(THINK)
    return labels
