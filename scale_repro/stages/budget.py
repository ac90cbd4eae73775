"""What each SFT sample costs in tokens, and whether ``max_length`` cuts its answer.

TRL's vision-language collator tokenizes the prompt (with its images expanded into image
tokens) and the completion separately, concatenates them and keeps the first ``max_length``
tokens. A long trace after a large image therefore loses its end: ``</think><answer>...``.
Such a sample trains with no ANSWER token at all, the imbalance the SCALe loss exists to
fix, and nothing in TRL says so. This module counts, before any model is loaded, exactly
what the collator will see.

Counting runs the tokenizer on the rendered text and adds, for each image, what the
processor expands it into; that cost depends only on the image's size, so it is measured
once per size (``tests/test_budget.py`` checks the sum against the processor on whole
samples, for all three architectures at both geometries).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scale_repro.method.segments import ANSWER, label_segments

# Ids listed per kind of cut in messages and manifests.
MAX_IDS = 20


@dataclass(frozen=True)
class SampleBudget:
    id: str
    prompt_tokens: int  # image tokens included
    completion_tokens: int
    answer_offset: int  # index in the completion of its first ANSWER token (completion_tokens: none)
    image_tokens: int = 0  # of prompt_tokens, the images' placeholders the language model reads
    image_pixels: int = 0  # pixels the vision tower sees (every crop and tile), per channel

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def cut(self, max_length: int | None) -> str | None:
        """How ``max_length`` cuts this sample: None (not at all, or only after its end),
        "prompt" (image or prompt tokens lost: TRL cannot even run it), "answer" (no ANSWER
        token left), or "answer_part" (the answer loses its end)."""
        if max_length is None or self.total <= max_length:
            return None
        if self.prompt_tokens >= max_length:
            return "prompt"
        if self.prompt_tokens + self.answer_offset >= max_length:
            return "answer"
        return "answer_part"


def render(row: dict[str, Any], processor) -> dict[str, str]:
    """The prompt and completion text of a conversational row, as TRL's collator renders them."""
    from trl.data_utils import apply_chat_template, prepare_multimodal_messages

    messages = {
        "prompt": prepare_multimodal_messages(row["prompt"], images=row.get("images") or []),
        "completion": prepare_multimodal_messages(row["completion"]),
    }
    return apply_chat_template(messages, processor)


def _tokenizer(processor):
    return getattr(processor, "tokenizer", processor)


class ImageCost:
    """Tokens one image adds to a prompt, by image size, measured once per size; and the pixels
    the vision tower then sees (:attr:`pixels`: LLaVA-NeXT's crops and Qwen's resized grid, not
    the file's size), from which `scale bench` counts the vision tower's FLOPs."""

    def __init__(self, processor):
        self.processor = processor
        self.by_size: dict[tuple[int, int], int] = {}
        self.pixels: dict[tuple[int, int], int] = {}

    def __call__(self, size: tuple[int, int]) -> int:
        if size not in self.by_size:
            from PIL import Image

            probe = render(
                {
                    "prompt": [{"role": "user", "content": "?"}],
                    "completion": [{"role": "assistant", "content": "."}],
                    "images": ["placeholder"],
                },
                self.processor,
            )["prompt"]
            encoded = self.processor(
                images=[Image.new("RGB", size)], text=[probe], add_special_tokens=False, return_tensors="np"
            )
            text_only = _tokenizer(self.processor)(probe, add_special_tokens=False)["input_ids"]
            self.by_size[size] = len(encoded["input_ids"][0]) - len(text_only)
            # Qwen2-VL's processors repeat each image along a time axis of temporal_patch_size frames.
            frames = (
                getattr(getattr(self.processor, "image_processor", None), "temporal_patch_size", None) or 1
            )
            self.pixels[size] = int(encoded["pixel_values"].size) // (3 * frames)
        return self.by_size[size]


def image_size(image: Any) -> tuple[int, int]:
    """Width and height of a PIL image or an image file (read from its header only)."""
    if isinstance(image, (str, Path)):
        from PIL import Image

        with Image.open(image) as opened:
            return opened.size
    return image.size


def sample_budget(row: dict[str, Any], processor, cost: ImageCost) -> SampleBudget:
    text = render(row, processor)
    tokenizer = _tokenizer(processor)
    prompt = len(tokenizer(text["prompt"], add_special_tokens=False)["input_ids"])
    sizes = [image_size(image) for image in row.get("images") or []]
    image_tokens = sum(cost(size) for size in sizes)
    prompt += image_tokens
    encoded = tokenizer(text["completion"], add_special_tokens=False, return_offsets_mapping=True)
    labels = label_segments(text["completion"], encoded["offset_mapping"])
    answer_offset = next((i for i, label in enumerate(labels) if label == ANSWER), len(labels))
    pixels = sum(cost.pixels[size] for size in sizes)
    return SampleBudget(str(row.get("id", "")), prompt, len(labels), answer_offset, image_tokens, pixels)


@dataclass
class BudgetReport:
    """Token counts over the samples and what ``max_length`` cuts."""

    max_length: int | None
    samples: int = 0
    tokens: dict[str, float] = field(default_factory=dict)  # total per sample: median, p95, max
    images: dict[str, float] = field(default_factory=dict)  # per sample, medians: tokens, pixels
    longest: dict[str, Any] = field(default_factory=dict)
    cut: dict[str, list[str]] = field(default_factory=dict)  # kind -> ids (all of them)

    def count(self, kind: str) -> int:
        return len(self.cut.get(kind, []))

    @property
    def cut_answers(self) -> int:
        return sum(self.count(k) for k in ("prompt", "answer", "answer_part"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "max_length": self.max_length,
            "tokens": self.tokens,
            "images": self.images,
            "longest": self.longest,
            "cut": {
                kind: {"count": len(ids), "first": ids[:MAX_IDS]} for kind, ids in sorted(self.cut.items())
            },
        }

    def summary(self) -> str:
        t = self.tokens
        lines = [
            f"pre-flight: {self.samples} samples, tokens per sample (images included) median {t['median']:.0f}, "
            f"p95 {t['p95']:.0f}, max {t['max']:.0f} (sample {self.longest['id']}); max_length {self.max_length}"
        ]
        described = {
            "prompt": "prompt alone reaches max_length (image tokens would be cut)",
            "answer": "lose their whole ANSWER segment",
            "answer_part": "lose the end of their ANSWER segment",
        }
        for kind, words in described.items():
            if self.count(kind):
                ids = self.cut[kind]
                more = f" and {len(ids) - 5} more" if len(ids) > 5 else ""
                lines.append(f"  {self.count(kind)} {words}: {', '.join(ids[:5])}{more}")
        if not self.cut_answers:
            lines.append("  every sample keeps its whole answer")
        return "\n".join(lines)


def budget_report(budgets: Iterable[SampleBudget], max_length: int | None) -> BudgetReport:
    budgets = list(budgets)
    report = BudgetReport(max_length=max_length, samples=len(budgets))
    if not budgets:
        return report
    totals = sorted(b.total for b in budgets)
    report.tokens = {
        "median": statistics.median(totals),
        "p95": totals[min(len(totals) - 1, int(0.95 * len(totals)))],
        "max": totals[-1],
    }
    report.images = {
        "tokens_median": statistics.median(b.image_tokens for b in budgets),
        "pixels_median": statistics.median(b.image_pixels for b in budgets),
    }
    longest = max(budgets, key=lambda b: b.total)
    report.longest = {"id": longest.id, "tokens": longest.total, "prompt_tokens": longest.prompt_tokens}
    for budget in budgets:
        kind = budget.cut(max_length)
        if kind:
            report.cut.setdefault(kind, []).append(budget.id)
    return report


def measure(rows: list[dict[str, Any]], processor, progress: bool = True) -> list[SampleBudget]:
    """Budgets of conversational prompt-completion rows (images as paths or PIL images)."""
    from tqdm.auto import tqdm

    cost = ImageCost(processor)
    return [
        sample_budget(row, processor, cost)
        for row in tqdm(rows, desc="pre-flight token count", disable=not progress or len(rows) < 500)
    ]
