"""Loaders for the real data sets and the synthetic ones, all producing :class:`Example`.

- Vision-R1 cold-start SFT data: sharegpt-style JSON, in either of its two shapes
  ``{id, image, conversations: [{from, value}]}`` or ``{images, conversations: [{role|from, content|value}]}``,
  images resolved against an image root. Each file is loaded on its own (their columns differ).
- lmms-lab/ScienceQA (config ScienceQA-IMG) and lmms-lab/ICON-QA, by hub id or from a local
  ``save_to_disk`` copy.
Every record goes through :mod:`scale_repro.data.validate`; rejected ones are counted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scale_repro.answers import LETTERS, parse_choices
from scale_repro.data.records import Example, format_question
from scale_repro.data.validate import DataError, Rejection, ValidationReport, check_completion, check_image

ICONQA_QUESTION_TYPES = ("fill_in_blank", "choose_txt")


@dataclass
class SubsetRule:
    """Which Vision-R1 records to keep: image path prefixes and/or substrings of the record id."""

    image_prefixes: list[str] = field(default_factory=list)
    id_contains: list[str] = field(default_factory=list)

    def keep(self, image_paths: list[str], record_id: str) -> bool:
        if not self.image_prefixes and not self.id_contains:
            return True
        by_image = (
            any(p.startswith(tuple(self.image_prefixes)) for p in image_paths)
            if self.image_prefixes
            else False
        )
        by_id = any(s in record_id for s in self.id_contains)
        return by_image or by_id


@dataclass
class LoadResult:
    examples: list[Example]
    report: ValidationReport


def _turns(record: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, text) of each conversation turn; roles normalised to user/assistant."""
    roles = {
        "human": "user",
        "user": "user",
        "gpt": "assistant",
        "assistant": "assistant",
        "system": "system",
    }
    out = []
    for turn in record["conversations"]:
        role = roles.get(str(turn.get("from", turn.get("role", ""))).lower())
        text = turn.get("value", turn.get("content"))
        if isinstance(text, list):  # structured content
            text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
        out.append((role, text))
    return out


def load_vision_r1(
    path: str | Path,
    image_root: str | Path | None = None,
    subset: SubsetRule | None = None,
    strict: bool = False,
    check_images: bool = True,
) -> LoadResult:
    """Load one Vision-R1 JSON (or JSON-lines) file. ``image_root`` defaults to the file's folder."""
    path = Path(path)
    if path.is_dir():
        raise DataError(path, None, None, "is a folder; the vision-r1 format is one JSON or JSON-lines file")
    if not path.is_file():
        raise DataError(path, None, None, "file not found")
    root = Path(image_root) if image_root else path.parent
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            path, None, None, f"not a text file (byte {exc.start} is not UTF-8): not JSON"
        ) from None
    try:
        if path.suffix == ".jsonl":
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(path, None, None, f"not valid JSON: {exc}") from exc
    if not isinstance(records, list):
        raise DataError(path, None, None, "expected a JSON list of records")

    report = ValidationReport(path=str(path))
    examples = []
    for index, record in enumerate(records):
        record_id = str(record.get("id", index)) if isinstance(record, dict) else str(index)
        image_paths = _image_paths(record) if isinstance(record, dict) else []
        # Records outside the subset are not ours to count, valid or not.
        if subset and isinstance(record, dict) and not subset.keep([str(p) for p in image_paths], record_id):
            continue
        rejection = _vision_r1_rejection(record, record_id, root, check_images)
        report.total += 1
        if rejection is not None:
            if strict:
                raise DataError(path, record_id, rejection.field, rejection.message)
            report.add(rejection)
            continue
        report.valid += 1
        turns = _turns(record)
        question = next(text for role, text in turns if role == "user")
        completion = next(text for role, text in turns if role == "assistant")
        think_close = completion.index("</think>")
        reasoning = completion[completion.index("<think>") + len("<think>") : think_close]
        answer = completion[completion.index("<answer>") + len("<answer>") : completion.index("</answer>")]
        examples.append(
            Example(
                id=record_id,
                images=[str(root / p) for p in image_paths],
                question=question,
                answer=answer.strip(),
                reasoning=reasoning.strip(),
                choices=record.get("choices"),
                source=f"vision-r1:{path.name}",
            )
        )
    return LoadResult(examples, report)


def _image_paths(record: dict[str, Any]) -> list[str]:
    if "images" in record and record["images"] is not None:
        images = record["images"]
        return [images] if isinstance(images, str) else list(images)
    if "image" in record and record["image"] is not None:
        return [record["image"]] if isinstance(record["image"], str) else list(record["image"])
    return []


def _vision_r1_rejection(record: Any, record_id: str, root: Path, check_images: bool) -> Rejection | None:
    if not isinstance(record, dict):
        return Rejection("missing_field", record_id, None, "record is not a JSON object")
    if "conversations" not in record or not isinstance(record["conversations"], list):
        return Rejection("missing_field", record_id, "conversations", "no 'conversations' list")
    if "image" not in record and "images" not in record:
        return Rejection("missing_field", record_id, "image", "no 'image' or 'images' field")
    try:
        turns = _turns(record)
    except (AttributeError, TypeError):
        return Rejection(
            "missing_field", record_id, "conversations", "a turn is not an object with from/value"
        )
    questions = [text for role, text in turns if role == "user"]
    answers = [text for role, text in turns if role == "assistant"]
    if not questions or not isinstance(questions[0], str):
        return Rejection("missing_field", record_id, "conversations", "no human/user turn")
    if not answers or not isinstance(answers[0], str):
        return Rejection("missing_field", record_id, "conversations", "no gpt/assistant turn")
    if not questions[0].replace("<image>", "").strip():
        return Rejection("empty_question", record_id, "conversations", "the user turn has no text")
    problem = check_completion(answers[0])
    if problem:
        return Rejection(problem[0], record_id, "conversations", problem[1])
    paths = _image_paths(record)
    if not paths:
        return Rejection("missing_field", record_id, "image", "no image path")
    if check_images:
        for p in paths:
            problem = check_image(root / p)
            if problem:
                return Rejection(problem[0], record_id, "image", problem[1])
    return None


def open_dataset(source: str | Path, split: str, config: str | None = None):
    """A local ``save_to_disk`` copy (Dataset or DatasetDict) or a hub data set."""
    import datasets

    local = Path(source)
    if local.exists():
        try:
            loaded = datasets.load_from_disk(str(local))
        except (FileNotFoundError, ValueError, NotADirectoryError) as exc:
            raise DataError(local, None, None, f"not a data set saved with save_to_disk: {exc}") from exc
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataError(local, None, None, f"no split '{split}' (has: {', '.join(loaded)})")
            return loaded[split]
        return loaded
    return datasets.load_dataset(str(source), config, split=split)


def _require_columns(dataset, columns: Iterable[str], where: str) -> None:
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise DataError(where, None, missing[0], f"missing column(s) {missing}; has {dataset.column_names}")


SCIENCEQA_REQUIRED = ("image", "question", "choices", "answer")
ICONQA_REQUIRED = ("question", "choices", "answer", "ques_type", "query_image")


def scienceqa_examples(dataset, where: str, strict: bool = False) -> LoadResult:
    """ScienceQA-IMG rows: image, question, choices (list), answer (int index), hint."""
    _require_columns(dataset, SCIENCEQA_REQUIRED, where)
    report = ValidationReport(path=where)
    examples = []
    for index, row in enumerate(dataset):
        record_id = str(row.get("id") or index)
        report.total += 1
        rejection = None
        choices = list(row["choices"] or [])
        if row["image"] is None:
            rejection = Rejection(
                "missing_field", record_id, "image", "no image (ScienceQA-IMG rows all have one)"
            )
        elif not str(row["question"] or "").strip():
            rejection = Rejection("empty_question", record_id, "question", "empty question")
        elif not isinstance(row["answer"], int) or not 0 <= row["answer"] < min(len(choices), len(LETTERS)):
            rejection = Rejection(
                "bad_answer_index",
                record_id,
                "answer",
                f"answer {row['answer']!r} is not an index into {len(choices)} choices",
            )
        if rejection:
            if strict:
                raise DataError(where, record_id, rejection.field, rejection.message)
            report.add(rejection)
            continue
        report.valid += 1
        examples.append(
            Example(
                id=record_id,
                images=[row["image"]],
                question=format_question(row["question"], choices, row.get("hint")),
                answer=LETTERS[row["answer"]],
                reasoning=str(row.get("solution") or "") if row.get("solution") else "",
                choices=choices,
                source="scienceqa",
            )
        )
    return LoadResult(examples, report)


def iconqa_examples(
    dataset, where: str, question_types: Iterable[str] = ICONQA_QUESTION_TYPES, strict: bool = False
) -> LoadResult:
    """ICON-QA rows of the given question types; choose_img is left out, as in the paper."""
    _require_columns(dataset, ICONQA_REQUIRED, where)
    question_types = tuple(question_types)
    answers = [a for a, t in zip(dataset["answer"], dataset["ques_type"], strict=True) if t in question_types]
    if answers and not any(str(a or "").strip() for a in answers):
        raise DataError(
            where, None, "answer", "this split has no answers; use a split that does (e.g. 'val')"
        )
    report = ValidationReport(path=where)
    examples = []
    for index, row in enumerate(dataset):
        if row["ques_type"] not in question_types:
            continue
        record_id = str(row.get("question_id") or index)
        report.total += 1
        rejection = None
        if row["query_image"] is None:
            rejection = Rejection("missing_field", record_id, "query_image", "no image")
        elif not str(row["question"] or "").strip():
            rejection = Rejection("empty_question", record_id, "question", "empty question")
        elif not str(row["answer"] or "").strip():
            rejection = Rejection("empty_answer", record_id, "answer", "empty answer")
        if rejection:
            if strict:
                raise DataError(where, record_id, rejection.field, rejection.message)
            report.add(rejection)
            continue
        report.valid += 1
        choices = parse_choices(row["choices"]) if row["ques_type"] == "choose_txt" else None
        examples.append(
            Example(
                id=record_id,
                images=[row["query_image"]],
                question=format_question(row["question"], choices),
                answer=str(row["answer"]).strip(),
                choices=choices,
                source=f"iconqa:{row['ques_type']}",
            )
        )
    return LoadResult(examples, report)


def load_scienceqa(
    source: str | Path = "lmms-lab/ScienceQA", split: str = "test", strict: bool = False
) -> LoadResult:
    dataset = open_dataset(source, split, config="ScienceQA-IMG")
    return scienceqa_examples(dataset, str(source), strict=strict)


def load_iconqa(
    source: str | Path = "lmms-lab/ICON-QA",
    split: str = "test",
    question_types: Iterable[str] = ICONQA_QUESTION_TYPES,
    strict: bool = False,
) -> LoadResult:
    dataset = open_dataset(source, split)
    return iconqa_examples(dataset, str(source), question_types, strict=strict)
