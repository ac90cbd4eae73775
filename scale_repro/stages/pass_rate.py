"""The data steps that ask a model: pass rates (difficulty) and the perception filter; and
the ``pass_rate`` stage of a recipe.

- :func:`estimate_pass_rates`: each example's share of correct answers in K sampled completions
  of a model, the difficulty axis (VLM-CapCurriculum's ``passK``: easy = high pass rate).
- :func:`perception_filter`: keep the questions a model gets wrong from the image but right
  from a description of it: their failure is one of seeing, which a perception stage trains
  (VLM-CapCurriculum's ``filter_perception.py``, with a caption in place of the image).

Completions are sampled with transformers' ``generate`` on the model's own chat template and
processor, and scored by the answer parser the rewards and the evaluator use. Results are
written as EasyR1 records (``problem``, ``images``, ``answer``, ``pass_rate``), which
:func:`scale_repro.data.loaders.load_easyr1` reads and a GRPO stage can order by difficulty.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from scale_repro.data.difficulty import RATED_FILE, easyr1_record, write_records
from scale_repro.data.records import Example, to_conversation
from scale_repro.method.answers import is_correct
from scale_repro.method.formats import FORMATS
from scale_repro.models.registry import resolve_model
from scale_repro.stages.lifecycle import StageRun
from scale_repro.stages.training import load_examples, load_model_and_processor

log = logging.getLogger("scale_repro")


def _load(model_path: str):
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, processor = load_model_and_processor(model_path, bf16=device == "cuda")
    model = model.to(device).eval()
    processor.tokenizer.padding_side = "left"  # generation continues every row from its end
    return model, processor, device


def _batches(examples: list[Example], size: int) -> list[list[int]]:
    """Indices in batches of up to ``size`` that either all have images or all have none
    (a processor call takes images for every row or for none)."""
    batches: list[list[int]] = []
    for index, example in enumerate(examples):
        if (
            batches
            and len(batches[-1]) < size
            and bool(examples[batches[-1][0]].images) == bool(example.images)
        ):
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


def sample_completions(
    model_path: str,
    examples: list[Example],
    k: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    answer_format: str = "tags",
    batch_size: int = 8,
    progress: bool = True,
) -> list[list[str]]:
    """``k`` completions per example (greedy when ``temperature`` is 0)."""
    import torch
    from PIL import Image
    from tqdm.auto import tqdm
    from trl.data_utils import prepare_multimodal_messages

    model, processor, device = _load(model_path)
    instruction = FORMATS[answer_format].instruction
    outputs: list[list[str]] = [[] for _ in examples]
    for batch in tqdm(_batches(examples, batch_size), desc="sampling", disable=not progress):
        texts, images = [], []
        for index in batch:
            example = examples[index]
            loaded = [
                Image.open(p).convert("RGB") if isinstance(p, (str, Path)) else p for p in example.images
            ]
            row = to_conversation(example, loaded, instruction=instruction)
            messages = prepare_multimodal_messages(row["prompt"], images=loaded)
            texts.append(processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
            images.append(loaded)
        kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True}
        if images[0]:
            kwargs["images"] = images
        inputs = processor(**kwargs).to(device)
        with torch.no_grad():
            generated = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                num_return_sequences=k,
                do_sample=temperature > 0,
                temperature=temperature if temperature > 0 else None,
                top_p=1.0 if temperature > 0 else None,
            )
        decoded = processor.batch_decode(
            generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
        for position, index in enumerate(batch):
            outputs[index] = decoded[position * k : (position + 1) * k]
    return outputs


def score(
    completions: list[list[str]], examples: list[Example], answer_format: str = "tags"
) -> list[list[bool]]:
    parse = FORMATS[answer_format].parse
    return [
        [(answer := parse(c).answer) is not None and is_correct(answer, e.answer, e.choices) for c in row]
        for row, e in zip(completions, examples, strict=True)
    ]


def estimate_pass_rates(
    model_path: str,
    examples: list[Example],
    k: int,
    max_new_tokens: int,
    answer_format: str = "tags",
    temperature: float = 1.0,
) -> list[float]:
    completions = sample_completions(model_path, examples, k, max_new_tokens, temperature, answer_format)
    return [sum(row) / k for row in score(completions, examples, answer_format)]


def perception_filter(
    model_path: str,
    examples: list[Example],
    descriptions: list[str],
    max_new_tokens: int,
    answer_format: str = "tags",
) -> list[tuple[bool, bool]]:
    """(right from the image, right from the description) per example, greedy."""
    from_image = score(
        sample_completions(model_path, examples, 1, max_new_tokens, 0.0, answer_format),
        examples,
        answer_format,
    )
    described = [
        Example(
            e.id,
            [],
            f"{d}\n{e.question.replace('<image>', '').replace('in the picture', 'in the grid')}",
            e.answer,
            choices=e.choices,
        )
        for e, d in zip(examples, descriptions, strict=True)
    ]
    from_text = score(
        sample_completions(model_path, described, 1, max_new_tokens, 0.0, answer_format),
        described,
        answer_format,
    )
    return [(image[0], text[0]) for image, text in zip(from_image, from_text, strict=True)]


def run_pass_rate(config, force: bool = False) -> Path:
    """A recipe's ``pass_rate`` stage (:class:`scale_repro.config.PassRateConfig`): rate every
    example with the current model and write ``rated.jsonl`` into the run directory, with the
    same run-directory life as training and evaluation (skip when finished, lock, manifest)."""
    run = StageRun("pass_rate", config, force)
    if run.finished_before():
        return run.run_dir
    resolved = resolve_model(config.model)
    examples, data_info = load_examples(config)
    with run.running() as manifest:
        if manifest is None:  # finished meanwhile by another process
            return run.run_dir
        manifest.update(
            model={"name": config.model, "path": resolved.path, "kind": resolved.kind}, data=data_info
        )
        torch.manual_seed(config.seed)  # sampling draws from torch's generator
        completions = sample_completions(
            resolved.path,
            examples,
            config.k,
            config.max_new_tokens,
            config.temperature,
            config.answer_format,
            config.batch_size,
        )
        rates = [sum(row) / config.k for row in score(completions, examples, config.answer_format)]
        records = [easyr1_record(e, pass_rate=r, k=config.k) for e, r in zip(examples, rates, strict=True)]
        write_records(records, run.run_dir / RATED_FILE)
        n = len(rates)
        manifest.finish(
            outputs={"rated": RATED_FILE},
            examples=n,
            mean_pass_rate=sum(rates) / n,
            never_solved=sum(r == 0 for r in rates),
            always_solved=sum(r == 1 for r in rates),
        )
    return run.run_dir
