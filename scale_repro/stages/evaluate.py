"""`scale eval`: lmms-eval on the reasoning versions of ScienceQA-IMG and IconQA.

lmms-eval does the generation (greedy, through its model class for the architecture, or
vLLM on GPU machines) and the scoring hooks in ``lmms_tasks/`` call the same answer parser
as the GRPO rewards. This module only points lmms-eval at the right task and data, checks
that it really produced every sample (lmms-eval exits 0 even when it failed), and writes:

- ``samples.jsonl``: one line per question, with the raw completion;
- ``lmms_eval_results.json``: lmms-eval's own aggregate results and task config;
- ``metrics.json``: task, n, accuracy, invalid_rate, inconsistent_rate (answers that contradict
  their own trace's conclusion), mean_completion_tokens, model and run
  identity, every figure recomputable from ``samples.jsonl``.
Responses are stored as they are generated (:mod:`scale_repro.stages.lmms_model`), so an
interrupted evaluation generates only what is missing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import yaml

from scale_repro.config import EvalConfig
from scale_repro.data.benchmarks import BENCHMARKS
from scale_repro.data.sources import TEST_TASKS, load_test_examples, synth_manifest
from scale_repro.method.answers import agrees_with_trace, is_correct, is_readable
from scale_repro.method.formats import FORMATS
from scale_repro.models.registry import PROCESSOR_FILES, resolve_model
from scale_repro.runs.rundir import (
    Manifest,
    atomic_write_json,
    atomic_write_text,
    config_hash,
    fingerprint,
    read_manifest,
)
from scale_repro.stages.lifecycle import StageRun

log = logging.getLogger("scale_repro")
TASKS_DIR = Path(__file__).parent / "lmms_tasks"
BASE_TASK = {
    "scienceqa": "scienceqa_img_cot",
    "iconqa": "iconqa_cot",
    **{name: f"bench_{name}" for name in BENCHMARKS},  # the curriculum's suite
}
# The task variant of each answer format (lmms_tasks/*_boxed.yaml: think, then \boxed{}).
FORMAT_SUFFIX = {"tags": "", "think_boxed": "_boxed"}
LMMS_MODEL = {
    "qwen2_5_vl": "qwen2_5_vl",
    "gemma3": "gemma3",
    "llava_next": "llava_hf",
    "qwen3_vl": "qwen3_vl",
    "internvl": "internvl_hf",  # the transformers-native class (lmms-eval's internvl3 loads remote code)
}
# lmms-eval classes that generate one request at a time and assert so at their first generation,
# after the model has loaded (chat/llava_hf.py: "Do not support batch_size_per_gpu > 1";
# chat/internvl_hf.py: "Batch size should be 1 for InternVLHf").
ONE_AT_A_TIME = {"llava_next": "llava_hf", "internvl": "internvl_hf"}
# Families whose processor resizes to a pixel budget that lmms-eval's class takes as min/max_pixels.
PIXEL_BUDGET = ("qwen2_5_vl", "qwen3_vl")


class EvalError(RuntimeError):
    pass


# What `scale eval` reports in one line besides the errors every stage shares.
USER_ERRORS = (EvalError,)


def model_family(path: str) -> str:
    local = Path(path)
    if local.is_dir():
        config = json.loads((local / "config.json").read_text())
        model_type = config.get("model_type")
        if not any((local / name).is_file() for name in PROCESSOR_FILES):
            raise EvalError(
                f"{local}: no processor (processor_config.json / preprocessor_config.json) beside the weights"
            )
    else:
        from transformers import AutoConfig

        model_type = AutoConfig.from_pretrained(path).model_type
    if model_type not in LMMS_MODEL:
        raise EvalError(
            f"{path}: model type {model_type!r} not supported; supported: {', '.join(LMMS_MODEL)}"
        )
    return model_type


def lmms_model(path: str, family: str, config: EvalConfig, out: Path | None = None) -> tuple[str, str]:
    """lmms-eval model name and model_args for this checkpoint (files they name go to ``out``)."""
    import torch

    if config.use_vllm:
        return "vllm", vllm_model_args(path, family, config, out)
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    # Its Qwen model moves inputs to CUDA unless device_map names the device.
    args = f"pretrained={path},device={device},device_map={device}"
    if family in PIXEL_BUDGET:
        # lmms-eval resizes Qwen images with its own pixel bounds; use the config's or the
        # checkpoint's, so the model sees images at the resolution it was trained on.
        bounds = pixel_bounds(path, config)
        if bounds:
            args += f",min_pixels={bounds[0]},max_pixels={bounds[1]}"
    if family == "gemma3" and config.system_prompt:
        args += f",system_prompt={config.system_prompt}"
    return LMMS_MODEL[family], args


def vllm_model_args(path: str, family: str, config: EvalConfig, out: Path | None = None) -> str:
    """lmms-eval's vLLM model set to see what the transformers path sees.

    Same greedy decoding (the task files ask for temperature 0) and completion limit; the
    checkpoint's own pixel bounds for Qwen (lmms-eval's vLLM default is 1,605,632 pixels);
    no remote code (lmms-eval's vLLM default trusts it). Gemma-3's system turn, which lmms-eval's
    transformers class sends and its vLLM class cannot, goes in through the chat template
    (:func:`system_folded_template`, written to ``out``), so both send the same prompt.
    """
    args = f"model={path},max_new_tokens={config.max_new_tokens},trust_remote_code=False,batch_size={config.batch_size}"
    if family in PIXEL_BUDGET:
        bounds = pixel_bounds(path, config)
        if bounds:
            args += f",min_image_pixels={bounds[0]},max_pixels={bounds[1]}"
    if family == "gemma3" and config.system_prompt and out is not None:
        from transformers import AutoProcessor

        template = out / "chat_template_with_system.jinja"
        own = AutoProcessor.from_pretrained(path).chat_template
        atomic_write_text(template, system_folded_template(own, config.system_prompt))
        args += f",chat_template={template}"
    return args


def system_folded_template(template: str, system_prompt: str) -> str:
    """``template`` with ``system_prompt`` as the system turn of every conversation that has none.
    Gemma-3's own template folds a system turn into the first user turn; lmms-eval's vLLM class
    sends user turns only, so the turn is added where the template reads it."""
    literal = json.dumps(system_prompt)  # a JSON string is a Jinja string literal
    return (
        "{%- if messages[0]['role'] != 'system' -%}"
        f"{{%- set messages = [{{'role': 'system', 'content': {literal}}}] + messages -%}}"
        "{%- endif -%}" + template
    )


# Requests generated together when the config leaves it open, and per stored chunk (what a
# killed evaluation loses at most): vLLM schedules hundreds at once; lmms-eval's transformers
# classes pad a batch to its longest prompt.
HF_BATCH = 16
VLLM_BATCH = 256
HF_BATCHES_PER_CHUNK = 4


def vllm_available() -> bool:
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None


def effective_settings(config: EvalConfig, family: str) -> EvalConfig:
    """The config with ``use_vllm`` and ``batch_size`` decided where it leaves them open."""
    use_vllm = vllm_available() if config.use_vllm is None else config.use_vllm
    batch = config.batch_size
    if batch is None:
        batch = VLLM_BATCH if use_vllm else (1 if family in ONE_AT_A_TIME else HF_BATCH)
    return dataclasses.replace(config, use_vllm=use_vllm, batch_size=batch)


def check_batch_size(family: str, config: EvalConfig) -> None:
    """lmms-eval's LLaVA and InternVL models answer one request at a time and assert so at the
    first generation, after the model has loaded: refuse the setting before anything loads."""
    if family in ONE_AT_A_TIME and not config.use_vllm and config.batch_size > 1:
        raise EvalError(
            f"batch_size {config.batch_size}: lmms-eval's {ONE_AT_A_TIME[family]} model generates one request "
            f"at a time; set batch_size=1 for {family} checkpoints (or evaluate with --use-vllm on a GPU)"
        )


def check_vllm_ready() -> None:
    """--use-vllm runs only where vLLM can: fail before anything loads, never fall back quietly."""
    import importlib.util

    import torch

    if not torch.cuda.is_available() or importlib.util.find_spec("vllm") is None:
        raise EvalError(
            "--use-vllm needs CUDA and the vllm package (`make setup-gpu`); this machine has "
            f"{'no CUDA device' if not torch.cuda.is_available() else 'no vllm'}"
        )


def pixel_bounds(path: str, config: EvalConfig) -> tuple[int, int] | None:
    """The config's image budget where it sets one, else the checkpoint's."""
    own_low, own_high = qwen_pixel_bounds(path) or (None, None)
    low = config.min_pixels if config.min_pixels is not None else own_low
    high = config.max_pixels if config.max_pixels is not None else own_high
    return (low, high) if low is not None and high is not None else None


def qwen_pixel_bounds(path: str) -> tuple[int, int] | None:
    from transformers import AutoImageProcessor

    size = getattr(AutoImageProcessor.from_pretrained(path), "size", None) or {}
    if "shortest_edge" in size and "longest_edge" in size:
        return int(size["shortest_edge"]), int(size["longest_edge"])
    return None


def write_task_yaml(config: EvalConfig, out_dir: Path) -> tuple[str, Path]:
    """A task file in the run directory that includes the shipped task, pointed at the data."""
    schema = TEST_TASKS[config.task].schema
    base = TASKS_DIR / f"{BASE_TASK[schema]}{FORMAT_SUFFIX[config.answer_format]}.yaml"
    name = f"scale_{config.task.replace('-', '_')}"
    task: dict[str, Any] = {
        "include": str(base),
        "task": name,
        "generation_kwargs": {
            "max_new_tokens": config.max_new_tokens,
            "temperature": 0,
            "do_sample": False,
            "until": [],
        },
    }
    if config.data:
        source = Path(config.data)
        manifest = synth_manifest(source)
        if manifest:
            source = source / manifest["files"][schema]
        task.update(dataset_path=str(source.resolve()), dataset_kwargs={"load_from_disk": True})
        task.pop("dataset_name", None)
    elif config.hub_id:
        task["dataset_path"] = config.hub_id
    tasks_dir = out_dir / "tasks"
    tasks_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(tasks_dir / f"{name}.yaml", yaml.safe_dump(task, sort_keys=False))
    return name, tasks_dir


def score_samples(
    samples: list[dict[str, Any]],
    examples: list,
    tokenizer=None,
    answer_format: str = "tags",
    schema: str | None = None,
) -> list[dict[str, Any]]:
    """Per-question rows. Completion length is counted with the model's tokenizer on the
    decoded text, the same way for every architecture (lmms-eval's models differ in
    whether they report it). With the test set's ``schema``, each row also holds what
    lmms-eval's stock rule gives the same extracted answer (``stock_score``)."""
    from scale_repro.stages.lmms_tasks.utils import stock_score

    rows = []
    for sample in sorted(samples, key=lambda s: s["doc_id"]):
        completion = sample["resps"][0][0] if isinstance(sample["resps"][0], list) else sample["resps"][0]
        example = examples[sample["doc_id"]]  # lmms-eval's doc_id is the row index
        parsed = FORMATS[answer_format].parse(completion)
        if tokenizer is not None:
            tokens = len(tokenizer(completion, add_special_tokens=False)["input_ids"])
        else:
            tokens = ((sample.get("token_counts") or [None])[0] or {}).get("output_tokens")
        rows.append(
            {
                "doc_id": sample["doc_id"],
                "id": example.id,
                "target": sample["target"],
                "choices": example.choices,
                "completion": completion,
                "parsed_answer": parsed.answer,
                "valid": parsed.valid,
                "correct": parsed.answer is not None
                and is_correct(parsed.answer, sample["target"], example.choices),
                # False: the answer contradicts the conclusion the trace states; None: one is missing.
                "agrees_with_trace": agrees_with_trace(parsed, example.choices),
                # Whether the rules could read an answer of the asked kind (what a judge might still credit).
                "readable": is_readable(parsed.answer, sample["target"], example.choices),
                "completion_tokens": tokens,
                "lmms_accuracy": sample.get("accuracy"),
                "stock_score": stock_score(schema, parsed.answer, sample["target"], example.choices)
                if schema in ("scienceqa", "iconqa")  # the benchmarks' own rules need a judge or differ
                else None,
            }
        )
    return rows


def metrics_from_samples(rows: list[dict[str, Any]]) -> dict[str, float]:
    n = len(rows)
    tokens = [r["completion_tokens"] for r in rows if r["completion_tokens"] is not None]
    stock = [r.get("stock_score") for r in rows]
    return {
        "n": n,
        "accuracy": sum(r["correct"] for r in rows) / n if n else 0.0,
        "invalid_rate": sum(not r["valid"] for r in rows) / n if n else 0.0,
        # Answers the rules could not read as the kind asked for (README: "Benchmarks").
        "unreadable_rate": sum(not r.get("readable", True) for r in rows) / n if n else 0.0,
        # Questions whose answer contradicts its own trace's conclusion, over all questions.
        "inconsistent_rate": sum(r["agrees_with_trace"] is False for r in rows) / n if n else 0.0,
        "mean_completion_tokens": sum(tokens) / len(tokens) if tokens else None,
        # lmms-eval's stock rule on the same extracted answers (README: "Scoring").
        "stock_accuracy": sum(stock) / n if n and None not in stock else None,
    }


def cache_key(config: EvalConfig, model_path: str) -> str:
    """Cached responses are reused only for the same config and the same weights on disk."""
    weights = sorted(Path(model_path).glob("*.safetensors")) if Path(model_path).is_dir() else []
    identity = [(w.name, w.stat().st_size, w.stat().st_mtime_ns) for w in weights]
    return fingerprint([config_hash(config), model_path, identity])


@contextlib.contextmanager
def lmms_errors():
    """The ERROR messages lmms-eval logs (through loguru) while the block runs: its model
    classes log a failed generation or image and carry on with an empty answer."""
    from loguru import logger

    errors: list[str] = []
    sink = logger.add(
        lambda message: errors.append(message.record["message"].splitlines()[0]),
        level="ERROR",
        filter=lambda record: record["name"].startswith("lmms_eval"),
    )
    try:
        yield errors
    finally:
        logger.remove(sink)


def trained_answer_format(model: str) -> str | None:
    """The answer format a GRPO run directory was trained with (None for anything else)."""
    manifest = read_manifest(model) if Path(model).is_dir() else None
    if not manifest or manifest.get("stage") != "grpo":
        return None
    return (manifest.get("config") or {}).get("answer_format")


def run_eval(config: EvalConfig, force: bool = False) -> Path:
    """Evaluate one model on one task; returns the run directory.

    Everything a user can get wrong (task, model, data, output directory) is checked before
    anything is written; the directory is then locked for the evaluation.
    """
    if config.task not in TEST_TASKS:
        raise EvalError(f"unknown task {config.task!r}; choose from {', '.join(TEST_TASKS)}")

    trained = trained_answer_format(config.model)
    if trained is not None and trained != config.answer_format:
        raise EvalError(
            f"{config.model} was trained to answer in the {trained!r} format; evaluating it with answer_format="
            f"{config.answer_format!r} would score every answer invalid (--set answer_format={trained})"
        )

    run = StageRun("eval", config, force)
    if run.finished_before():
        return run.run_dir
    if config.use_vllm:
        check_vllm_ready()
    resolved = resolve_model(config.model)
    family = model_family(resolved.path)
    # What "unset" means on this machine, for this model (the run's identity stays the config's).
    config = effective_settings(config, family)
    check_batch_size(family, config)
    if family not in PIXEL_BUDGET and (config.min_pixels is not None or config.max_pixels is not None):
        raise EvalError(
            f"min_pixels / max_pixels: {family} checkpoints do not resize to a pixel budget "
            "(Qwen's processors do); leave them unset for this model"
        )
    # Our own loader checks the columns and tells which questions lmms-eval must answer.
    examples = load_test_examples(config.task, config.data, hub_id=config.hub_id).examples
    with run.running() as manifest:
        if manifest is not None:  # None: finished meanwhile by another process
            _evaluate(manifest, config, resolved, family, examples)
    return run.run_dir


def _evaluate(manifest: Manifest, config: EvalConfig, resolved, family: str, examples: list) -> None:
    out = Path(config.output_dir)
    expected = len(examples) if config.limit is None else min(config.limit, len(examples))
    task_name, tasks_dir = write_task_yaml(config, out)
    model_name, model_args = lmms_model(resolved.path, family, config, out)
    manifest.update(
        model={"name": config.model, "path": resolved.path, "kind": resolved.kind, "family": family},
        lmms_model=model_name,
        lmms_model_args=model_args,
        lmms_task=task_name,
    )

    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from scale_repro.stages.lmms_model import ResumableModel

    store = out / "cache" / f"responses-{cache_key(config, resolved.path)}.jsonl"
    chunk = config.batch_size if config.use_vllm else config.batch_size * HF_BATCHES_PER_CHUNK
    manifest.update(batch_size=config.batch_size, chunk=chunk, use_vllm=config.use_vllm)
    lm = ResumableModel.create(model_name, model_args, config.batch_size, store, chunk)
    with lmms_errors() as errors:
        results = simple_evaluate(
            model=lm,
            model_args=model_args,
            tasks=[task_name],
            task_manager=TaskManager(include_path=str(tasks_dir)),
            batch_size=config.batch_size,
            limit=config.limit,
            log_samples=True,
            random_seed=config.seed,
        )
    manifest.update(generated=lm.generated, reused=lm.reused)
    if errors:
        raise EvalError(
            f"lmms-eval logged {len(errors)} error(s) while evaluating (first: {errors[0]}); its model classes "
            "answer such questions with an empty completion, which would count as invalid"
        )
    if not results or task_name not in results.get("samples", {}):
        raise EvalError(
            f"lmms-eval returned no samples for {task_name}: the evaluation failed (see its log above)"
        )
    samples = results["samples"][task_name]
    if len(samples) != expected:
        raise EvalError(f"lmms-eval answered {len(samples)} of {expected} questions of {task_name}")
    from transformers import AutoTokenizer

    rows = score_samples(
        samples,
        examples,
        AutoTokenizer.from_pretrained(resolved.path),
        config.answer_format,
        schema=TEST_TASKS[config.task].schema,
    )
    empty = [r["id"] for r in rows if not r["completion"].strip()]
    if empty and not config.allow_empty_completions:
        raise EvalError(
            f"{len(empty)} of {len(rows)} completions are empty (first: question {empty[0]}): lmms-eval answers "
            "a failed generation with an empty completion. If the model really answers nothing, "
            "--set allow_empty_completions=true scores them as invalid"
        )
    atomic_write_text(out / "samples.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_json(out / "lmms_eval_results.json", {k: v for k, v in results.items() if k != "samples"})
    metrics = {
        "task": config.task,
        **metrics_from_samples(rows),
        "empty_completions": len(empty),
        "model": config.model,
        "model_path": resolved.path,
        "model_kind": resolved.kind,
    }
    lmms_accuracy = results["results"][task_name].get("accuracy,none")
    if lmms_accuracy is not None and abs(lmms_accuracy - metrics["accuracy"]) > 1e-9:
        raise EvalError(
            f"lmms-eval's accuracy {lmms_accuracy} differs from the samples' {metrics['accuracy']}"
        )
    atomic_write_json(out / "metrics.json", metrics)
    manifest.finish(metrics=metrics, generated=lm.generated, reused=lm.reused)
