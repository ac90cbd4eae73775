"""Loaders for the real data sets and the synthetic ones, all producing :class:`Example`.

- Vision-R1 cold-start SFT data (Osilly/Vision-R1-cold). Its README's layout::

      DATASET_DIR/vision_r1_llava_cot_full.json     {"image": str, "conversations": [{"from": "human"|"gpt", "value"}]}
      DATASET_DIR/vision_r1_mulberry_sft_full.json  {"images": str|list, "conversations": [{"from": "user"|"assistant", "value"}]}
      DATASET_DIR/llava_cot_images/<source>/...     images from Xkev/LLaVA-CoT-100k (sqa, coco, chartqa, ...)
      DATASET_DIR/mulberry_images/<source>/...      images from HuanjinYao/Mulberry-SFT (AI2D, IconQA, ...)

  An image path in a file may be relative to the dataset dir ("llava_cot_images/sqa/..", as
  LLaMA-Factory resolves it with ``dataset_dir``) or to the file's image folder ("sqa/..", as
  in LLaVA-CoT's own release); both are tried. A subset is chosen by source folder, wherever
  it sits in the path. Records with several user/assistant rounds give one example per
  assistant turn, the earlier turns as context.
- lmms-eval's ScienceQA (config ScienceQA-IMG) and ICON-QA (lmms-lab-encoder/ScienceQA and
  lmms-lab-encoder/ICON-QA, formerly under lmms-lab), by hub id or from a local ``save_to_disk`` copy.
Every record goes through :mod:`scale_repro.data.validate`; rejected ones are counted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from scale_repro.data.records import Example, format_question, tagged_completion
from scale_repro.data.validate import DataError, Rejection, ValidationReport, check_completion, check_image
from scale_repro.method.answers import (
    LETTERS,
    canonical_reference,
    choices_from_question,
    is_hedge,
    parse_choices,
)

ICONQA_QUESTION_TYPES = ("fill_in_blank", "choose_txt")

# The image folder each released Vision-R1 file's images live in (Vision-R1 README, "Data preparation").
VISION_R1_IMAGE_DIRS = {
    "vision_r1_llava_cot_full.json": "llava_cot_images",
    "vision_r1_mulberry_sft_full.json": "mulberry_images",
}


@dataclass
class SubsetRule:
    """Which Vision-R1 records to keep: those with an image under one of ``sources`` (a folder
    name anywhere in the image path, any case: "sqa" keeps "llava_cot_images/sqa/train/1/image.png"
    and "sqa/train/1/image.png") or whose id contains one of ``id_contains``. Empty: keep all."""

    sources: list[str] = field(default_factory=list)
    id_contains: list[str] = field(default_factory=list)

    def source_of(self, image_paths: list[str]) -> str | None:
        """The first of ``sources`` that one of the paths passes through, as the rule spells it."""
        wanted = {s.strip("/").lower(): s.strip("/") for s in self.sources}
        for path in image_paths:
            for part in PurePosixPath(str(path).replace("\\", "/")).parts[:-1]:
                if part.lower() in wanted:
                    return wanted[part.lower()]
        return None

    def keep(self, image_paths: list[str], record_id: str) -> str | None:
        """Why the record is kept (its source folder, "id", or "all"), or None to leave it out."""
        if not self.sources and not self.id_contains:
            return "all"
        source = self.source_of(image_paths) if self.sources else None
        if source:
            return source
        return "id" if any(s in record_id for s in self.id_contains) else None


@dataclass
class LoadResult:
    examples: list[Example]
    report: ValidationReport


_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def _turns(record: dict[str, Any]) -> list[tuple[str | None, Any]]:
    """(role, text) of each conversation turn; roles normalised to user/assistant/system."""
    out = []
    for turn in record["conversations"]:
        role = _ROLES.get(str(turn.get("from", turn.get("role", ""))).lower())
        text = turn.get("value", turn.get("content"))
        if isinstance(text, list):  # structured content
            text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
        out.append((role, text))
    return out


def _rounds(turns: list[tuple[str | None, Any]]) -> list[tuple[str, str]] | str:
    """(question, completion) per round of a dialogue, or why the turns are not one."""
    body = [(role, text) for role, text in turns if role != "system"]
    if any(role is None for role, _ in body):
        return "a turn's role is not human/user or gpt/assistant"
    if not body:
        return "no turns"
    rounds = []
    for index in range(0, len(body), 2):
        pair = body[index : index + 2]
        for offset, expected in enumerate(("user", "assistant")):
            role = pair[offset][0] if offset < len(pair) else "nothing"
            if role != expected:
                return f"turns must alternate user, assistant; turn {index + offset + 1} is {role}"
        rounds.append((pair[0][1], pair[1][1]))
    return rounds


def _resolve_image(path: str, roots: list[Path]) -> list[Path]:
    """Where an image may be, most likely first: absolute, or under each root in turn."""
    candidate = Path(path)
    if candidate.is_absolute():
        return [candidate]
    return [root / candidate for root in roots]


def image_roots(path: Path, image_root: str | Path | None, image_dir: str | None = None) -> list[Path]:
    """The folders a file's image paths may be relative to: the image root given (default:
    the file's folder), then its image folder inside it (``llava_cot_images`` for the
    LLaVA-CoT file, ``mulberry_images`` for the Mulberry one, or ``image_dir``)."""
    root = Path(image_root) if image_root else path.parent
    folder = image_dir or VISION_R1_IMAGE_DIRS.get(path.name)
    return [root, root / folder] if folder else [root]


def _read_records(path: Path) -> list[Any]:
    if path.is_dir():
        raise DataError(path, None, None, "is a folder; the vision-r1 format is one JSON or JSON-lines file")
    if not path.is_file():
        raise DataError(path, None, None, "file not found")
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
    return records


def load_vision_r1(
    path: str | Path,
    image_root: str | Path | None = None,
    subset: SubsetRule | None = None,
    strict: bool = False,
    check_images: bool = True,
    image_dir: str | None = None,
) -> LoadResult:
    """Load one Vision-R1 JSON (or JSON-lines) file.

    Image paths are tried against ``image_root`` (default: the file's folder) and then its
    image folder (see :func:`image_roots`). References are reduced to their canonical
    answer; a record with several rounds gives one example per assistant turn.
    """
    path = Path(path)
    records = _read_records(path)
    roots = image_roots(path, image_root, image_dir)
    report = ValidationReport(path=str(path), total=len(records))
    examples = []
    for index, record in enumerate(records):
        record_id = str(record.get("id", index)) if isinstance(record, dict) else str(index)
        image_paths = _image_paths(record) if isinstance(record, dict) else []
        # Records outside the subset are not ours to count, valid or not.
        kept_as = (subset or SubsetRule()).keep([str(p) for p in image_paths], record_id)
        if kept_as is None:
            continue
        report.selected += 1
        parsed = _vision_r1_record(record, record_id, roots, check_images)
        if isinstance(parsed, Rejection):
            if strict:
                raise DataError(path, record_id, parsed.field, parsed.message)
            report.add(parsed)
            continue
        resolved, rounds = parsed
        report.valid += 1
        if kept_as != "all":  # with no subset there is nothing to break down
            report.sources[kept_as] += 1
        report.turns_split += len(rounds) - 1
        context: list[dict[str, str]] = []
        for turn, (question, reasoning, answer_text, answer, choices) in enumerate(rounds):
            report.rewritten += answer != answer_text
            examples.append(
                Example(
                    id=record_id if len(rounds) == 1 else f"{record_id}#turn{turn + 1}",
                    images=resolved,
                    question=question,
                    answer=answer,
                    reasoning=reasoning,
                    choices=choices,
                    source=f"vision-r1:{path.name}:{kept_as}",
                    answer_text=answer_text,
                    context=list(context),
                )
            )
            context += [
                {"role": "user", "content": question},
                {"role": "assistant", "content": tagged_completion(reasoning, answer_text)},
            ]
    return LoadResult(examples, report)


def _image_paths(record: dict[str, Any]) -> list[Any]:
    """The record's image field as a list (one path or several); its items are checked later."""
    for key in ("images", "image"):
        value = record.get(key)
        if value is not None:
            return list(value) if isinstance(value, list | tuple) else [value]
    return []


def _vision_r1_record(record: Any, record_id: str, roots: list[Path], check_images: bool):
    """(image paths, [(question, reasoning, answer text, canonical answer, choices) per round])
    or why the record is rejected."""
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
    if not any(role == "user" for role, _ in turns):
        return Rejection("missing_field", record_id, "conversations", "no human/user turn")
    if not any(role == "assistant" for role, _ in turns):
        return Rejection("missing_field", record_id, "conversations", "no gpt/assistant turn")
    rounds = _rounds(turns)
    if isinstance(rounds, str):
        return Rejection("bad_turn_order", record_id, "conversations", rounds)
    parsed = []
    for number, (question, completion) in enumerate(rounds, start=1):
        where = f"turn {2 * number - 1}: " if len(rounds) > 1 else ""
        if not isinstance(question, str) or not isinstance(completion, str):
            return Rejection("missing_field", record_id, "conversations", f"{where}a turn has no text")
        if not question.replace("<image>", "").strip():
            return Rejection(
                "empty_question", record_id, "conversations", f"{where}the user turn has no text"
            )
        problem = check_completion(completion)
        if problem:
            where = f"turn {2 * number}: " if len(rounds) > 1 else ""
            return Rejection(problem[0], record_id, "conversations", where + problem[1])
        think_close = completion.index("</think>")
        reasoning = completion[completion.index("<think>") + len("<think>") : think_close].strip()
        answer_text = completion[
            completion.index("<answer>") + len("<answer>") : completion.index("</answer>")
        ].strip()
        listed = record.get("choices")
        choices = parse_choices(listed) if listed else choices_from_question(question)
        if is_hedge(answer_text, choices):
            return Rejection(
                "ambiguous_answer",
                record_id,
                "conversations",
                f"the reference {answer_text!r} offers several answers",
            )
        parsed.append((question, reasoning, answer_text, canonical_reference(answer_text, choices), choices))
    paths = _image_paths(record)
    if not paths:
        return Rejection("missing_field", record_id, "image", "no image path")
    if not all(isinstance(p, str) for p in paths):
        wrong = next(p for p in paths if not isinstance(p, str))
        return Rejection("bad_field", record_id, "image", f"an image must be a file path, got {wrong!r}")
    resolved = []
    for p in paths:
        candidates = _resolve_image(str(p), roots)
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            tried = " or ".join(str(c) for c in candidates)
            return Rejection("missing_image_file", record_id, "image", f"image file not found: {tried}")
        if check_images:
            problem = check_image(found)
            if problem:
                return Rejection(problem[0], record_id, "image", problem[1])
        resolved.append(str(found))
    return resolved, parsed


# Keys of EasyR1-style RL data, as the staged curriculum's data and scripts use them
# (VLM-CapCurriculum: data.prompt_key=problem, data.image_key=images; its perception formatter
# writes prompt / image_path): the question, its images, the reference, and optionally the
# base model's pass rate (the difficulty axis).
EASYR1_QUESTION_KEYS = ("problem", "prompt")
EASYR1_IMAGE_KEYS = ("images", "image_path", "image")


def is_easyr1_record(record: Any) -> bool:
    return (
        isinstance(record, dict)
        and any(k in record for k in EASYR1_QUESTION_KEYS)
        and "conversations" not in record
    )


def load_easyr1(path: str | Path, image_root: str | Path | None = None, strict: bool = False) -> LoadResult:
    """RL data without traces (GRPO only): ``{"problem", "images", "answer", "pass_rate"?}``
    per line (JSON lines or a JSON list). Text-only records have no images. References are
    reduced to their canonical answer as for Vision-R1 data."""
    path = Path(path)
    records = _read_records(path)
    root = Path(image_root) if image_root else path.parent
    report = ValidationReport(path=str(path), total=len(records), selected=len(records))
    examples = []
    for index, record in enumerate(records):
        record_id = (
            str(record.get("id", record.get("index", index))) if isinstance(record, dict) else str(index)
        )
        parsed = _easyr1_record(record, record_id, root)
        if isinstance(parsed, Rejection):
            if strict:
                raise DataError(path, record_id, parsed.field, parsed.message)
            report.add(parsed)
            continue
        question, images, answer_text, choices, pass_rate = parsed
        report.valid += 1
        answer = canonical_reference(answer_text, choices)
        report.rewritten += answer != answer_text
        examples.append(
            Example(
                id=record_id,
                images=images,
                question=question,
                answer=answer,
                choices=choices,
                source=f"easyr1:{path.name}",
                answer_text=answer_text,
                meta={} if pass_rate is None else {"pass_rate": pass_rate},
            )
        )
    return LoadResult(examples, report)


def _easyr1_record(record: Any, record_id: str, root: Path):
    if not isinstance(record, dict):
        return Rejection("missing_field", record_id, None, "record is not a JSON object")
    key = next((k for k in EASYR1_QUESTION_KEYS if k in record), None)
    if key is None:
        return Rejection("missing_field", record_id, "problem", "no 'problem' (or 'prompt') field")
    question = record[key]
    if not isinstance(question, str) or not question.replace("<image>", "").strip():
        return Rejection("empty_question", record_id, key, "the question has no text")
    if "answer" not in record:
        return Rejection("missing_field", record_id, "answer", "no 'answer' field")
    answer_text = str(record["answer"]).strip()
    if not answer_text:
        return Rejection("empty_answer", record_id, "answer", "empty answer")
    options = [record[f"option_{letter}"] for letter in LETTERS if f"option_{letter}" in record]
    choices = options or choices_from_question(question)
    if is_hedge(answer_text, choices):
        return Rejection(
            "ambiguous_answer", record_id, "answer", f"the reference {answer_text!r} offers several answers"
        )
    image_key = next((k for k in EASYR1_IMAGE_KEYS if record.get(k)), None)
    paths = record.get(image_key) if image_key else []
    paths = [paths] if isinstance(paths, str) else list(paths or [])
    images = []
    for p in paths:
        if not isinstance(p, str):
            return Rejection("missing_field", record_id, image_key, "an image is not a file path")
        problem = check_image(Path(p) if Path(p).is_absolute() else root / p)
        if problem:
            return Rejection(problem[0], record_id, image_key, problem[1])
        images.append(str(Path(p) if Path(p).is_absolute() else root / p))
    pass_rate = record.get("pass_rate")
    if pass_rate is not None and not (isinstance(pass_rate, (int, float)) and 0.0 <= pass_rate <= 1.0):
        return Rejection(
            "missing_field", record_id, "pass_rate", f"pass_rate must be in [0, 1], got {pass_rate!r}"
        )
    return question, images, answer_text, choices, None if pass_rate is None else float(pass_rate)


def open_dataset(source: str | Path, split: str, config: str | None = None, other_place: str | None = None):
    """A local ``save_to_disk`` copy (Dataset or DatasetDict) or a hub data set. When the hub
    fails, the error names ``other_place`` (where the data set was before it moved, or is now)."""
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
    try:
        return datasets.load_dataset(str(source), config, split=split)
    except Exception as exc:  # offline, moved, gated, misspelt: all end here, each with its own type
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = (
            f"; it may be at {other_place} (--set hub_id={other_place}, or a local copy with --data)"
            if other_place
            else ""
        )
        raise DataError(source, None, None, f"cannot load from the hub: {reason}{hint}") from exc


def _require_columns(dataset, columns: Iterable[str], where: str) -> None:
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise DataError(where, None, missing[0], f"missing column(s) {missing}; has {dataset.column_names}")


SCIENCEQA_REQUIRED = ("image", "question", "choices", "answer")
ICONQA_REQUIRED = ("question", "choices", "answer", "ques_type", "query_image")


def scienceqa_examples(dataset, where: str, strict: bool = False) -> LoadResult:
    """ScienceQA-IMG rows: image, question, choices (list), answer (int index), hint."""
    _require_columns(dataset, SCIENCEQA_REQUIRED, where)
    report = ValidationReport(path=where, total=len(dataset), selected=len(dataset))
    examples = []
    for index, row in enumerate(dataset):
        record_id = str(row.get("id") or index)
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
    report = ValidationReport(path=where, total=len(dataset))
    examples = []
    for index, row in enumerate(dataset):
        if row["ques_type"] not in question_types:
            continue
        record_id = str(row.get("question_id") or index)
        report.selected += 1
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
    source: str | Path = "lmms-lab-encoder/ScienceQA", split: str = "test", strict: bool = False
) -> LoadResult:
    dataset = open_dataset(source, split, config="ScienceQA-IMG")
    return scienceqa_examples(dataset, str(source), strict=strict)


def load_iconqa(
    source: str | Path = "lmms-lab-encoder/ICON-QA",
    split: str = "test",
    question_types: Iterable[str] = ICONQA_QUESTION_TYPES,
    strict: bool = False,
) -> LoadResult:
    dataset = open_dataset(source, split)
    return iconqa_examples(dataset, str(source), question_types, strict=strict)
