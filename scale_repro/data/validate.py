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

from PIL import Image, ImageFile

from scale_repro.method.segments import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN

# Every reason a record can be rejected for.
REASONS = (
    "missing_field",
    "empty_question",
    "missing_image_file",
    "unreadable_image",  # the file does not decode (truncated, corrupt pixel data, not an image)
    "image_too_large",  # more pixels than Pillow decodes safely (a decompression bomb)
    "bad_field",  # a field of the wrong type (an image that is not a file path)
    "missing_tag",
    "repeated_tag",
    "misordered_tags",
    "empty_reasoning",
    "empty_answer",
    "bad_answer_index",
    "ambiguous_answer",  # the reference offers several options ("A or B"): no reward could score it
    "bad_turn_order",  # a multi-turn record whose user and assistant turns do not alternate
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
    """What loading one source did to its records. ``total`` records were read, ``selected``
    of them belong to the requested subset, ``valid`` of those were kept; the rest are counted
    in ``rejected`` by reason. ``examples`` is ``valid`` plus ``turns_split``, one more per
    later assistant turn of a multi-turn record; ``rewritten`` references were reduced to
    their canonical answer ("Final Answer:option B" -> "B"). ``parts`` holds the report of
    each file when a preset reads several."""

    path: str
    total: int = 0
    selected: int = 0
    valid: int = 0
    rejected: Counter = field(default_factory=Counter)
    first_rejected: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    rewritten: int = 0
    turns_split: int = 0
    sources: Counter = field(default_factory=Counter)
    parts: list[ValidationReport] = field(default_factory=list)

    @property
    def examples(self) -> int:
        return self.valid + self.turns_split

    def add(self, rejection: Rejection) -> None:
        self.rejected[rejection.reason] += 1
        bucket = self.first_rejected.setdefault(rejection.reason, [])
        if len(bucket) < MAX_EXAMPLES_PER_REASON:
            bucket.append(
                {"record": rejection.record, "field": rejection.field, "message": rejection.message}
            )

    @classmethod
    def combined(cls, path: str, parts: list[ValidationReport]) -> ValidationReport:
        report = cls(path=path, parts=parts)
        for part in parts:
            for name in ("total", "selected", "valid", "rewritten", "turns_split"):
                setattr(report, name, getattr(report, name) + getattr(part, name))
            report.rejected.update(part.rejected)
            report.sources.update(part.sources)
            for reason, found in part.first_rejected.items():
                bucket = report.first_rejected.setdefault(reason, [])
                bucket.extend(found[: MAX_EXAMPLES_PER_REASON - len(bucket)])
        return report

    def to_dict(self) -> dict[str, Any]:
        out = {
            "path": self.path,
            "total": self.total,
            "selected": self.selected,
            "valid": self.valid,
            "examples": self.examples,
            "rewritten": self.rewritten,
            "turns_split": self.turns_split,
            "rejected": dict(sorted(self.rejected.items())),
            "first_rejected": self.first_rejected,
            "sources": dict(sorted(self.sources.items())),
        }
        if self.parts:
            out["parts"] = [part.to_dict() for part in self.parts]
        return out

    def summary(self) -> str:
        lines = []
        for part in self.parts:
            lines.append(part._counts_line())
        if self.parts:
            lines.append(f"all: {self._counts_line(named=False)}")
        else:
            lines.append(self._counts_line())
        for reason, count in sorted(self.rejected.items()):
            first = self.first_rejected[reason]
            records = ", ".join(str(f["record"]) for f in first)
            lines.append(f"  rejected {reason}: {count} (first: {records}; {first[0]['message']})")
        return "\n".join(lines)

    def _counts_line(self, named: bool = True) -> str:
        line = f"{self.path}: " if named else ""
        line += f"{self.total} records, {self.selected} selected, {self.valid} valid"
        if self.sources:
            line += " (" + ", ".join(f"{k}: {v}" for k, v in sorted(self.sources.items())) + ")"
        line += f"; {self.rewritten} references rewritten, {self.turns_split} turns split"
        line += f" -> {self.examples} examples"
        return line


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
    """Why an image cannot be trained on, or None. The pixels are decoded, as training will
    decode them: ``verify()`` alone checks only the file's structure, so a PNG with valid chunks
    but corrupt pixel data would pass it and stop training after the model has loaded."""
    if not path.is_file():
        return "missing_image_file", f"image file not found: {path}"
    # lmms-eval sets Pillow's LOAD_TRUNCATED_IMAGES on import (lmms_eval/api/task.py), after
    # which a damaged file "decodes" to garbage without an error: check with it off.
    truncated_ok, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            image.load()
    except Image.DecompressionBombError as exc:
        return "image_too_large", f"image {path} is too large to decode safely ({exc})"
    except Exception as exc:  # noqa: BLE001 - zlib, struct and codec errors all mean "cannot decode"
        return "unreadable_image", f"cannot read image {path}: {type(exc).__name__}: {exc}"
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated_ok
    return None


def write_report(report: ValidationReport, path: str | Path) -> None:
    from scale_repro.runs.rundir import atomic_write_text

    atomic_write_text(path, json.dumps(report.to_dict(), indent=2) + "\n")
