"""Record validation shared by `scale data validate` and every stage that reads data.

A bad record never raises deep inside a run: it is rejected with a reason, counted, and
either skipped (the default, counts go to the run manifest) or turned into one clear error
naming the file, the record and the field (``strict``).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from scale_repro.segments import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN

# Every reason a record can be rejected for.
REASONS = (
    "missing_field",
    "empty_question",
    "missing_image_file",
    "unreadable_image",
    "missing_tag",
    "repeated_tag",
    "misordered_tags",
    "empty_reasoning",
    "empty_answer",
    "bad_answer_index",
)
MAX_EXAMPLES_PER_REASON = 5


class DataError(ValueError):
    """Bad input data, with where it is: file, record and field."""

    def __init__(self, path: str | Path, record: str | int | None, field_name: str | None, message: str):
        self.path, self.record, self.field_name, self.reason = str(path), record, field_name, message
        where = f"{path}"
        if record is not None:
            where += f", record {record}"
        if field_name is not None:
            where += f", field '{field_name}'"
        super().__init__(f"{where}: {message}")


@dataclass
class Rejection:
    reason: str
    record: str | int
    field: str | None
    message: str


@dataclass
class ValidationReport:
    path: str
    total: int = 0
    valid: int = 0
    rejected: Counter = field(default_factory=Counter)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, rejection: Rejection) -> None:
        self.rejected[rejection.reason] += 1
        bucket = self.examples.setdefault(rejection.reason, [])
        if len(bucket) < MAX_EXAMPLES_PER_REASON:
            bucket.append(
                {"record": rejection.record, "field": rejection.field, "message": rejection.message}
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "total": self.total,
            "valid": self.valid,
            "rejected": dict(sorted(self.rejected.items())),
            "examples": self.examples,
        }

    def summary(self) -> str:
        lines = [f"{self.path}: {self.valid} of {self.total} records valid"]
        for reason, count in sorted(self.rejected.items()):
            first = self.examples[reason][0]
            lines.append(f"  {reason}: {count} (first: record {first['record']}: {first['message']})")
        return "\n".join(lines)


def check_completion(text: str) -> tuple[str, str] | None:
    """Reason and message when a ``<think>..</think><answer>..</answer>`` completion is malformed."""
    tags = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
    for tag in tags:
        count = text.count(tag)
        if count == 0:
            return "missing_tag", f"no {tag} tag"
        if count > 1:
            return "repeated_tag", f"{tag} occurs {count} times"
    positions = [text.find(tag) for tag in tags]
    if positions != sorted(positions):
        return "misordered_tags", "tags are not in the order <think></think><answer></answer>"
    reasoning = text[positions[0] + len(THINK_OPEN) : positions[1]]
    answer = text[positions[2] + len(ANSWER_OPEN) : positions[3]]
    if not reasoning.strip():
        return "empty_reasoning", "nothing between <think> and </think>"
    if not answer.strip():
        return "empty_answer", "nothing between <answer> and </answer>"
    return None


def check_image(path: Path) -> tuple[str, str] | None:
    if not path.is_file():
        return "missing_image_file", f"image file not found: {path}"
    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        return "unreadable_image", f"cannot read image {path}: {exc}"
    return None


def write_report(report: ValidationReport, path: str | Path) -> None:
    from scale_repro.rundir import atomic_write_text

    atomic_write_text(path, json.dumps(report.to_dict(), indent=2) + "\n")
