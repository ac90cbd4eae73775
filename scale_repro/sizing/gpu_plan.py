"""`scale plan`: what an experiment's matrix needs before anyone rents a GPU.

For every training stage of a table (the same stages `scale reproduce` runs): parameters,
trainable parameters, estimated peak memory per GPU and whether it fits, tokens to process,
and GPU-hours at an assumed throughput. Everything here is an estimate from the model's shape
and the stage's settings, stated with its assumptions; `scale bench` measures the throughput.

Memory per GPU, bf16 mixed precision under DeepSpeed ZeRO-2 (weights replicated; gradients
and optimizer state partitioned over the GPUs; the ZeRO paper's model states, 2 + (2 + 12) / N
bytes per parameter for N GPUs, counting only trainable parameters in the second term):
- weights: 2 bytes x parameters;
- trainable parameters (LoRA adapters, or the language model and projector in full
  fine-tuning): gradients 2 bytes and AdamW state 12 bytes (fp32 master, m, v) per
  parameter, divided by the number of GPUs;
- activations at ``max_length`` and the micro-batch: with gradient checkpointing, each
  layer's input (2 bytes x hidden) plus one layer recomputed (about 2 bytes x (8 x hidden +
  3 x intermediate) per token, forward and backward); without, every layer's;
- GRPO with colocated vLLM: ``vllm_gpu_memory_utilization`` of the GPU reserved for it;
- 10% fragmentation and 1.5 GiB for the CUDA context.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scale_repro.data.benchmarks import BENCHMARKS

GIB = 1024**3
CONTEXT_BYTES = 1.5 * GIB
FRAGMENTATION = 1.10
# Per-GPU throughput assumed when no `scale bench` result exists (tokens/s; bf16, LoRA,
# gradient checkpointing, a 3-7B model on one H100): a planning figure, not a measurement.
ASSUMED_TRAIN_TOKENS_PER_S = 2500.0
ASSUMED_ROLLOUT_TOKENS_PER_S = 1500.0
BENCH_RESULT = Path("results/bench/gpu.json")


@dataclass(frozen=True)
class Shape:
    """A model's size and its language model's shape (from its config.json)."""

    parameters: float  # all of them, vision tower included
    vision_parameters: float
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    source: str


# The paper's three models, from their hub repositories' config.json and parameter counts,
# so a plan needs no download.
PAPER_SHAPES = {
    "Qwen/Qwen2.5-VL-3B-Instruct": Shape(
        3.75e9, 0.67e9, 2048, 11008, 36, 16, 2, 128, 151936, "Qwen/Qwen2.5-VL-3B-Instruct config.json"
    ),
    "google/gemma-3-4b-it": Shape(
        4.30e9, 0.42e9, 2560, 10240, 34, 8, 4, 256, 262208, "google/gemma-3-4b-it config.json"
    ),
    "llava-hf/llava-v1.6-mistral-7b-hf": Shape(
        7.57e9, 0.32e9, 4096, 14336, 32, 32, 8, 128, 32064, "llava-hf/llava-v1.6-mistral-7b-hf config.json"
    ),
    # The curriculum's backbones: counted from the widths vendored in scale_repro.models.tiny
    # (PAPER_WIDTHS; tests/test_tiny_models.py holds the exact counts), vision with its projector.
    "Qwen/Qwen3-VL-8B-Instruct": Shape(
        8.767e9, 0.576e9, 4096, 12288, 36, 32, 8, 128, 151936, "Qwen/Qwen3-VL-8B-Instruct config.json"
    ),
    "Qwen/Qwen2.5-VL-7B-Instruct": Shape(
        8.292e9, 0.677e9, 3584, 18944, 28, 28, 4, 128, 152064, "Qwen/Qwen2.5-VL-7B-Instruct config.json"
    ),
    "OpenGVLab/InternVL3-8B-hf": Shape(
        7.944e9, 0.332e9, 3584, 18944, 28, 28, 4, 128, 151674, "OpenGVLab/InternVL3-8B-hf config.json"
    ),
    "OpenGVLab/InternVL3_5-8B-HF": Shape(
        8.528e9, 0.338e9, 4096, 12288, 36, 32, 8, 128, 151936, "OpenGVLab/InternVL3_5-8B-HF config.json"
    ),
}


def shape_of(model_path: str) -> Shape:
    """The shape of a paper model, or of a local checkpoint (counted on the meta device)."""
    if model_path in PAPER_SHAPES:
        return PAPER_SHAPES[model_path]
    import re

    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from scale_repro.stages.training import VISION_MODULE_PATTERN

    try:
        config = AutoConfig.from_pretrained(model_path)
    except OSError as exc:
        from scale_repro.config import ConfigError

        raise ConfigError(f"{model_path}: cannot read its config.json to size it ({exc})") from exc
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for n, p in model.named_parameters() if re.search(VISION_MODULE_PATTERN, n))
    text = config.get_text_config()
    heads = text.num_attention_heads
    return Shape(
        total,
        vision,
        text.hidden_size,
        text.intermediate_size,
        text.num_hidden_layers,
        heads,
        getattr(text, "num_key_value_heads", heads),
        getattr(text, "head_dim", None) or text.hidden_size // heads,
        text.vocab_size,
        f"{model_path}/config.json",
    )


def lora_parameters(shape: Shape, r: int, target_modules: list[str]) -> int:
    """Adapter parameters on the language model's projections: r x (in + out) each."""
    q_out, kv_out = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    h, i = shape.hidden, shape.intermediate
    sizes = {
        "q_proj": (h, q_out),
        "k_proj": (h, kv_out),
        "v_proj": (h, kv_out),
        "o_proj": (q_out, h),
        "gate_proj": (h, i),
        "up_proj": (h, i),
        "down_proj": (i, h),
    }
    per_layer = sum(r * sum(sizes[m]) for m in target_modules if m in sizes)
    return per_layer * shape.layers


def model_states_bytes(parameters: float, trainable: float, gpus: int) -> float:
    """ZeRO-2 with bf16 weights: every weight on every GPU (2 bytes), the trainable ones'
    gradients (2) and AdamW state (12: fp32 master, m, v) partitioned over the GPUs."""
    return 2 * parameters + (2 + 12) * trainable / gpus


def activation_bytes(shape: Shape, tokens: int, checkpointing: bool) -> float:
    per_token_layer_input = 2 * shape.hidden
    per_token_layer = 2 * (8 * shape.hidden + 3 * shape.intermediate) * 2  # forward and backward
    if checkpointing:
        return tokens * (shape.layers * per_token_layer_input + per_token_layer)
    return tokens * shape.layers * (per_token_layer_input + per_token_layer)


# Questions of each benchmark's test split (lmms-lab/ScienceQA ScienceQA-IMG test, the dataset
# card of lmms-lab/ICON-QA test: 21,489 examples), what an evaluation generates for.
BENCHMARK_QUESTIONS = {
    "scienceqa": 2017,
    "iconqa": 21489,
    **{name: bench.questions for name, bench in BENCHMARKS.items()},
}


@dataclass
class EvalPlan:
    run: str
    task: str
    questions: int
    tokens: float  # generated
    gpu_hours: float


def plan_evaluation(stage, rollout_tps: float) -> EvalPlan | None:
    """One evaluation on one GPU: its questions times half the completion limit, generated at
    the rollout throughput (greedy, batched: generation is what it costs)."""
    questions = BENCHMARK_QUESTIONS.get(stage.config.task)
    if questions is None:
        return None
    if stage.config.limit:
        questions = min(questions, stage.config.limit)
    tokens = questions * stage.config.max_new_tokens / 2
    return EvalPlan(str(stage.run_dir), stage.config.task, questions, tokens, tokens / rollout_tps / 3600)


@dataclass
class StagePlan:
    stage: str
    run: str
    model: str
    parameters: float
    trainable: float
    lora: bool
    memory_gib: float
    fits: bool
    tokens: float
    gpu_hours: float
    assumptions: list[str]


def throughputs(train: float | None, rollout: float | None) -> tuple[float, float, str]:
    """Tokens/s per GPU: given, else measured by `scale bench` on a GPU, else assumed."""
    if train and rollout:
        return train, rollout, "given"
    if BENCH_RESULT.is_file():
        measured = json.loads(BENCH_RESULT.read_text())
        if measured.get("device", "cpu") != "cpu":
            return (
                train or measured["sft_tokens_per_s"],
                rollout or measured["rollout_tokens_per_s"],
                f"measured ({BENCH_RESULT})",
            )
    return train or ASSUMED_TRAIN_TOKENS_PER_S, rollout or ASSUMED_ROLLOUT_TOKENS_PER_S, "assumed"


def plan_stage(
    stage,
    base_model: str,
    gpus: int,
    gpu_memory_gib: float,
    samples: int,
    tokens_per_sample: float | None,
    train_tps: float,
    rollout_tps: float,
) -> StagePlan:
    """One training stage; ``base_model`` is the model its chain starts from (GRPO's SFT run
    has the same architecture)."""
    from scale_repro.models.registry import resolve_model

    config = stage.config
    shape = shape_of(resolve_model(base_model).path)
    assumptions = []
    lora = config.lora.enabled
    if lora:
        trainable = lora_parameters(shape, config.lora.r, config.lora.target_modules)
    else:
        trainable = shape.parameters - (shape.vision_parameters if config.lora.freeze_vision else 0)
    length = config.max_length or 4096
    per_sample = tokens_per_sample or length / 2
    if tokens_per_sample is None:
        assumptions.append(f"{per_sample:.0f} tokens per sample (half of max_length)")
    micro = config.per_device_train_batch_size
    memory = model_states_bytes(shape.parameters, trainable, gpus)
    memory += activation_bytes(shape, micro * length, config.gradient_checkpointing)
    epochs = config.num_train_epochs if config.max_steps in (None, -1) else None
    # A stage with max_steps trains that many global batches (per device x accumulation x GPUs);
    # GRPO's per-device batch counts completions, so a batch holds that over num_generations prompts.
    global_batch = micro * config.gradient_accumulation_steps * gpus
    if stage.kind == "sft":
        seen = samples * epochs if epochs is not None else config.max_steps * global_batch
        steps_tokens = seen * per_sample
        hours = steps_tokens / train_tps / 3600
    else:
        completion = config.max_completion_length / 2
        assumptions.append(f"completions average {completion:.0f} tokens (half of max_completion_length)")
        if epochs is not None:
            rollouts = samples * epochs * config.num_generations
        else:
            rollouts = config.max_steps * global_batch
        steps_tokens = rollouts * (per_sample + completion)
        train_seconds = steps_tokens / train_tps
        if config.beta > 0:
            # The KL term's reference model: one more forward pass per sequence (a training step is
            # about three), and, in full fine-tuning, a bf16 copy of the weights on every GPU (TRL
            # loads it beside the policy; ZeRO-2 does not shard it; LoRA reads the base with its
            # adapters off instead).
            train_seconds *= 4 / 3
            if not lora:
                memory += 2 * shape.parameters
            assumptions.append(
                f"beta {config.beta}: a reference model's forward pass"
                + ("" if lora else " and its bf16 weights on every GPU")
            )
        hours = (rollouts * completion / rollout_tps + train_seconds) / 3600
        if config.use_vllm is not False:
            memory += config.vllm_gpu_memory_utilization * gpu_memory_gib * GIB
            assumptions.append(f"vLLM colocated, {config.vllm_gpu_memory_utilization:.0%} of the GPU")
    if epochs is None:
        assumptions.append(f"max_steps: steps x global batch {global_batch} ({gpus} GPUs), not --samples")
    memory = memory * FRAGMENTATION + CONTEXT_BYTES
    return StagePlan(
        stage.kind,
        str(stage.run_dir),
        config.model,
        shape.parameters,
        trainable,
        lora,
        memory / GIB,
        memory / GIB <= gpu_memory_gib,
        steps_tokens,
        hours,
        assumptions,
    )


def plan_table(
    table: int | None,
    gpus: int,
    gpu_memory_gib: float,
    samples: int,
    tokens_per_sample: float | None = None,
    train_tps: float | None = None,
    rollout_tps: float | None = None,
    experiment: str | None = None,
    models: list[str] | None = None,
) -> dict[str, Any]:
    """The plan of a paper table (``table``) or of an experiment file (``experiment``: a name in
    configs/experiments/ or a path; the staged curriculum, say), on its models or ``models``."""
    import dataclasses

    from scale_repro.experiments.planner import experiment_path, load_experiment
    from scale_repro.experiments.planner import plan as plan_stages

    spec = load_experiment(experiment_path(table, experiment))
    if models:
        spec = dataclasses.replace(spec, models=list(models))
    train, rollout, source = throughputs(train_tps, rollout_tps)
    planned = plan_stages(spec, "runs")
    stages = [s for s in planned if s.kind in ("sft", "grpo")]
    evaluations = [e for e in (plan_evaluation(s, rollout) for s in planned if s.kind == "eval") if e]
    # The model each training chain starts from: an SFT stage's, or a first GRPO stage's own.
    base: dict[Path, str] = {}
    for s in stages:
        base[s.run_dir] = base.get(s.needs[0], s.config.model) if s.needs else s.config.model
    rows = [
        plan_stage(s, base[s.run_dir], gpus, gpu_memory_gib, samples, tokens_per_sample, train, rollout)
        for s in stages
    ]
    return {
        "table": table,
        "experiment": spec.name,
        "gpus": gpus,
        "gpu_memory_gib": gpu_memory_gib,
        "samples_per_stage": samples,
        "throughput": {"train_tokens_per_s": train, "rollout_tokens_per_s": rollout, "source": source},
        "stages": [asdict(r) for r in rows],
        "evaluations": [asdict(e) for e in evaluations],
        "training_gpu_hours": sum(r.gpu_hours for r in rows),
        "evaluation_gpu_hours": sum(e.gpu_hours for e in evaluations),
        "gpu_hours": sum(r.gpu_hours for r in rows) + sum(e.gpu_hours for e in evaluations),
        "all_fit": all(r.fits for r in rows),
    }


def render(result: dict[str, Any]) -> str:
    t = result["throughput"]
    what = f"Table {result['table']}" if result["table"] else f"Experiment {result['experiment']}"
    runs = [str(Path(s["run"]).relative_to("runs")) for s in result["stages"]]
    width = max(len(r) for r in runs)
    lines = [
        f"{what} on {result['gpus']} GPU(s) of {result['gpu_memory_gib']:g} GiB, "
        f"{result['samples_per_stage']:,} samples per stage; throughput per GPU {t['train_tokens_per_s']:,.0f} "
        f"train / {t['rollout_tokens_per_s']:,.0f} rollout tokens/s ({t['source']})",
        "",
        f"| stage | {'run':<{width}} | params | trainable | GiB/GPU | fits | tokens | GPU-h |",
        f"|---|{'-' * (width + 2)}|---|---|---|---|---|---|",
    ]
    for s, run in zip(result["stages"], runs, strict=True):
        trainable = f"{s['trainable'] / 1e6:,.1f}M" + (" (LoRA)" if s["lora"] else "")
        lines.append(
            f"| {s['stage']} | {run:<{width}} | {s['parameters'] / 1e9:.2f}B | {trainable} | {s['memory_gib']:.1f} | "
            f"{'yes' if s['fits'] else 'NO'} | {s['tokens'] / 1e6:.1f}M | {s['gpu_hours']:.2f} |"
        )
    assumptions = sorted({a for s in result["stages"] for a in s["assumptions"]})
    evaluations = result.get("evaluations", [])
    if evaluations:
        questions = sum(e["questions"] for e in evaluations)
        lines += [
            "",
            f"Evaluation: {len(evaluations)} runs, {questions:,} questions, "
            f"{sum(e['tokens'] for e in evaluations) / 1e6:.1f}M generated tokens, "
            f"{result['evaluation_gpu_hours']:.1f} GPU-hours (one GPU each, at the rollout throughput).",
        ]
    lines += [
        "",
        f"Total {result['gpu_hours']:.1f} GPU-hours: training {result['training_gpu_hours']:.1f}, evaluation "
        f"{result['evaluation_gpu_hours']:.1f} ({result['gpu_hours'] / result['gpus']:.1f} h on "
        f"{result['gpus']} GPU(s)); {'every stage fits' if result['all_fit'] else 'some stages do NOT fit'}.",
    ]
    if assumptions:
        lines.append("Assumed: " + "; ".join(assumptions) + ".")
    return "\n".join(lines) + "\n"
