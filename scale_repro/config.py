"""Typed stage configs, read from YAML recipes under ``configs/`` with command-line overrides.

A recipe is a YAML mapping whose keys are the fields of a config dataclass; nested
``lora:`` / ``loss:`` blocks map to nested dataclasses. ``--set key.sub=value`` overrides
any field, parsed as YAML (so ``--set lora.r=16`` gives an int). Unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from scale_repro.method.formats import AnswerFormatName
from scale_repro.method.schedule import LossMode
from scale_repro.yaml_files import CONFIGS_DIR, ConfigError, read_yaml, yaml_problem

# transformers' scheduler names (transformers.SchedulerType), checked before anything loads.
SchedulerName = Literal[
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
]


def _at_least(value: float | None, low: float, what: str = "") -> str | None:
    if value is not None and value < low:
        return f"must be at least {low}{what}, got {value}"
    return None


@dataclass
class LoraConfig:
    enabled: bool = True
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    # Vision towers stay frozen: adapters go on the language model only.
    freeze_vision: bool = True

    def problems(self) -> list[tuple[str, str]]:
        found = [("r", _at_least(self.r, 1)), ("alpha", _at_least(self.alpha, 1))]
        if not 0.0 <= self.dropout < 1.0:
            found.append(("dropout", f"must be in [0, 1), got {self.dropout}"))
        if not self.target_modules:
            found.append(("target_modules", "must name at least one module"))
        return [(k, v) for k, v in found if v]


@dataclass
class LossConfig:
    """SCALe loss settings. The paper's numeric weights were lost from our copy; these
    defaults are this project's choice: think 2.0 -> 1.0, answer 1.0 -> 1.0; FW = 1.0/1.0."""

    mode: LossMode = "scale"
    think_start: float = 2.0
    think_end: float = 1.0
    answer_start: float = 1.0
    answer_end: float = 1.0
    fixed_think: float = 1.0
    fixed_answer: float = 1.0


@dataclass
class DataConfig:
    spec: str = ""  # synth dir, Vision-R1 JSON file, preset name (configs/data/) or preset YAML
    image_root: str | None = None  # folder a JSON file's image paths are relative to (default: its folder)
    strict: bool = False  # stop at the first bad record instead of skipping and counting it
    max_examples: int | None = None  # keep the first N examples (after validation)
    sources: list[str] = field(default_factory=list)  # keep records with an image under these folders
    id_contains: list[str] = field(default_factory=list)  # ... or whose id contains one of these
    # Order of the examples in a GRPO stage: shuffled, or by the base model's pass rate (the
    # difficulty axis; needs a pass_rate per example: released curriculum data has one, or
    # `scale data pass-rate` writes it). Ties keep a seeded random order, as the curriculum does.
    order: Literal["shuffle", "easy_to_hard", "hard_to_easy"] = "shuffle"


# transformers' tracker integrations (transformers.integrations.INTEGRATION_TO_CALLBACK; a test
# keeps the two lists equal), checked before a model loads.
TRACKERS = (
    "azure_ml",
    "comet_ml",
    "mlflow",
    "neptune",
    "tensorboard",
    "trackio",
    "wandb",
    "codecarbon",
    "clearml",
    "dagshub",
    "flyte",
    "dvclive",
    "swanlab",
    "kubeflow",
)


@dataclass
class TrainConfig:
    """Settings shared by `scale sft` and `scale grpo`."""

    model: str = "tiny-qwen2.5-vl"
    output_dir: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    seed: int = 0
    learning_rate: float = 1e-4
    num_train_epochs: float = 1.0
    max_steps: int = -1  # -1: num_train_epochs decides; otherwise a positive number of optimizer steps
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    warmup_steps: float = 0.0  # an int: steps; a float in [0, 1): share of the total
    lr_scheduler_type: SchedulerName = "cosine"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int | None = 2048
    bf16: bool | None = None  # None: bf16 on CUDA, fp32 on CPU
    gradient_checkpointing: bool = False
    logging_steps: int = 1
    save_steps: int = 50
    save_total_limit: int = 2
    deepspeed: str | None = None
    dataloader_num_workers: int = 0
    # A step whose gradients hold NaN or inf: "stop" the run there (one line naming the step), or
    # "skip" it (no optimizer update; counted in the manifest and the log) and train on.
    nonfinite_steps: Literal["stop", "skip"] = "stop"
    # Trackers that get every log entry as it is written, by transformers' names (TRACKERS, or
    # "all" installed, "none"): tensorboard (into RUN/tensorboard), trackio, wandb (WANDB_MODE=offline).
    report_to: list[str] = field(default_factory=list)
    trust_remote_code: bool = False
    # Free-form tags the report groups by (model, configuration, data set, seed).
    labels: dict[str, Any] = field(default_factory=dict)
    # A system turn before every prompt; None leaves it to the chat template. Training and
    # evaluation must agree: lmms-eval's Gemma-3 model always sends one (see configs/models/).
    system_prompt: str | None = None
    # Image size bounds in pixels for processors that resize to a pixel budget (Qwen2.5-VL): an
    # image above max_pixels is scaled down, one below min_pixels up. Applied to the processor in
    # training, the pre-flight and GRPO rollouts, and saved with the exported checkpoint, which
    # evaluation (and vLLM) read. None: the checkpoint's own (Qwen2.5-VL's 12.8 MP allows ~16k
    # tokens an image).
    min_pixels: int | None = None
    max_pixels: int | None = None
    # Any other field of TRL's SFTConfig / GRPOConfig (and transformers' TrainingArguments), by
    # its TRL name, passed as it is: e.g. trl: {optim: adamw_torch_fused, torch_compile: true}.
    # Fields this config has are passed under their own names already (set them there).
    trl: dict[str, Any] = field(default_factory=dict)

    def problems(self) -> list[tuple[str, str]]:
        found = [
            (
                "learning_rate",
                None if self.learning_rate > 0 else f"must be positive, got {self.learning_rate}",
            ),
            (
                "num_train_epochs",
                None if self.num_train_epochs > 0 else f"must be positive, got {self.num_train_epochs}",
            ),
            (
                "max_steps",
                None
                if self.max_steps == -1 or self.max_steps > 0
                else f"must be a positive number of steps, or -1 for num_train_epochs; got {self.max_steps}",
            ),
            ("per_device_train_batch_size", _at_least(self.per_device_train_batch_size, 1)),
            ("gradient_accumulation_steps", _at_least(self.gradient_accumulation_steps, 1)),
            ("warmup_steps", _at_least(self.warmup_steps, 0)),
            ("weight_decay", _at_least(self.weight_decay, 0)),
            ("max_grad_norm", _at_least(self.max_grad_norm, 0)),
            ("max_length", _at_least(self.max_length, 1)),
            ("logging_steps", _at_least(self.logging_steps, 1)),
            ("save_steps", _at_least(self.save_steps, 1)),
            (
                "save_total_limit",
                _at_least(self.save_total_limit, 1, " (the newest checkpoint is what a rerun resumes from)"),
            ),
            ("dataloader_num_workers", _at_least(self.dataloader_num_workers, 0)),
            ("min_pixels", _at_least(self.min_pixels, 1)),
            ("max_pixels", _at_least(self.max_pixels, self.min_pixels or 1)),
        ]
        unknown = [name for name in self.report_to if name not in (*TRACKERS, "all", "none")]
        if unknown:
            found.append(("report_to", f"unknown tracker {unknown[0]!r}; choose from {', '.join(TRACKERS)}"))
        if self.deepspeed and not Path(self.deepspeed).is_file():
            found.append(("deepspeed", f"config file {self.deepspeed} not found"))
        if self.deepspeed and self.nonfinite_steps == "skip":
            found.append(
                ("nonfinite_steps", "skip needs the gradients in this process; under DeepSpeed use stop")
            )
        return [(k, v) for k, v in found if v]


@dataclass
class SFTConfig(TrainConfig):
    loss: LossConfig = field(default_factory=LossConfig)
    # What to do with samples whose ANSWER segment max_length would cut (the pre-flight counts
    # them with the model's processor before training): stop with their ids, drop them (counted
    # and named in the manifest), or keep them (they train with part or none of their answer).
    cut_answers: Literal["stop", "drop", "keep"] = "stop"

    def problems(self) -> list[tuple[str, str]]:
        found = super().problems()
        if self.data.order != "shuffle":
            found.append(
                (
                    "data.order",
                    f"orders GRPO stages only (SFT samples its batches at random), got {self.data.order!r}",
                )
            )
        return found


@dataclass
class GRPOConfig(TrainConfig):
    """Sampling settings were lost from our copy of the paper; these defaults are this
    project's: 8 generations per prompt, 1024 completion tokens, temperature 1.0, top-p 1.0."""

    num_generations: int = 8
    max_completion_length: int = 1024
    temperature: float = 1.0
    top_p: float = 1.0
    beta: float = 0.0
    # How completions state their answer: the paper's <think>/<answer> tags, or the staged
    # curriculum's <think> then \boxed{} (the instruction and the parser follow; see formats.py).
    answer_format: AnswerFormatName = "tags"
    # Rewards by name (rewards.REWARDS, or MODULE:FUNCTION for a reward of your own with TRL's
    # signature) and their weights: the paper's 4-tag format and answer accuracy, equally
    # weighted; the curriculum uses think_boxed_format 0.1 and accuracy 0.9.
    reward_funcs: list[str] = field(default_factory=lambda: ["format", "accuracy"])
    reward_weights: list[float] = field(default_factory=lambda: [1.0, 1.0])
    use_vllm: bool | None = None  # None: when vLLM is installed and CUDA is present
    vllm_gpu_memory_utilization: float = 0.3
    vllm_enable_sleep_mode: bool = False
    # The colocated engine's context; None: max_length (TRL would size it for the model's full
    # 32k-128k context and reserve KV cache for it, a known out-of-memory on first runs).
    vllm_max_model_length: int | None = None
    learning_rate: float = 1e-5
    # Completions sampled per optimizer step and process group; None: the global batch
    # (per_device_train_batch_size x processes x gradient_accumulation_steps), raised to the
    # least common multiple with num_generations when it is not a multiple of it.
    generation_batch_size: int | None = None
    # Set here, not left to TRL, whose defaults have changed between versions (see configs/grpo/default.yaml).
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = "dapo"
    scale_rewards: Literal["group", "batch", "none"] = "group"
    mask_truncated_completions: bool = False
    vllm_importance_sampling_correction: bool = True
    vllm_importance_sampling_mode: Literal[
        "token_truncate", "token_mask", "sequence_truncate", "sequence_mask"
    ] = "sequence_mask"
    vllm_importance_sampling_clip_max: float = 3.0

    def problems(self) -> list[tuple[str, str]]:
        found = super().problems() + [
            (
                "num_generations",
                _at_least(self.num_generations, 2, " (GRPO compares completions within a group)"),
            ),
            ("max_completion_length", _at_least(self.max_completion_length, 1)),
            ("temperature", None if self.temperature > 0 else f"must be positive, got {self.temperature}"),
            ("beta", _at_least(self.beta, 0)),
            ("vllm_max_model_length", _at_least(self.vllm_max_model_length, 1)),
            ("generation_batch_size", _at_least(self.generation_batch_size, 1)),
        ]
        from scale_repro.method.rewards import REWARDS, reward_function

        unknown = [name for name in self.reward_funcs if name not in REWARDS and ":" not in name]
        if unknown:
            found.append(
                ("reward_funcs", f"unknown reward(s) {unknown}; known: {sorted(REWARDS)}, or MODULE:FUNCTION")
            )
        elif not self.reward_funcs:
            found.append(("reward_funcs", "name at least one reward"))
        for name in self.reward_funcs:
            if ":" in name:
                try:
                    reward_function(name)
                except ValueError as exc:
                    found.append(("reward_funcs", str(exc)))
        if len(self.reward_weights) != len(self.reward_funcs):
            found.append(
                (
                    "reward_weights",
                    f"one weight per reward: {len(self.reward_funcs)} rewards, "
                    f"{len(self.reward_weights)} weights",
                )
            )
        if not 0.0 < self.top_p <= 1.0:
            found.append(("top_p", f"must be in (0, 1], got {self.top_p}"))
        if not 0.0 < self.vllm_gpu_memory_utilization <= 1.0:
            found.append(
                ("vllm_gpu_memory_utilization", f"must be in (0, 1], got {self.vllm_gpu_memory_utilization}")
            )
        return [(k, v) for k, v in found if v]


@dataclass
class EvalConfig:
    model: str = "tiny-qwen2.5-vl"
    task: str = "synthetic-scienceqa"
    data: str | None = None  # a local copy (save_to_disk or `scale data synth` dir); None: the hub
    # Where the task's test set is on the hub; None: where lmms-eval reads it now
    # (lmms-lab-encoder/ScienceQA, lmms-lab-encoder/ICON-QA; formerly under lmms-lab).
    hub_id: str | None = None
    limit: int | None = None
    output_dir: str = ""
    max_new_tokens: int = 2048
    # Requests generated together; None: 16 on the transformers path (1 for LLaVA-NeXT, whose
    # lmms-eval class takes one at a time), 256 on vLLM (which schedules them itself).
    batch_size: int | None = None
    device: str | None = None
    use_vllm: bool | None = None  # None: vLLM when it is installed and CUDA is present
    seed: int = 0
    labels: dict[str, Any] = field(default_factory=dict)
    # lmms-eval's model classes log a failed generation and answer "" (scored as invalid); an empty
    # completion therefore stops the evaluation unless the model is known to answer nothing at times.
    allow_empty_completions: bool = False
    # Passed to lmms-eval's Gemma-3 model, which always sends a system turn (its default text when None).
    system_prompt: str | None = None
    # How the model was trained to state its answer (GRPOConfig.answer_format): the prompt's
    # instruction and the parser follow it, as in training.
    answer_format: AnswerFormatName = "tags"
    # Image budget in pixels for a pixel-budget processor (Qwen); None: the checkpoint's own (a
    # trained run saves its recipe's). A paper model named by its short name is evaluated at its
    # model recipe's budget, so the instruct model sees images as its trained runs do.
    min_pixels: int | None = None
    max_pixels: int | None = None

    def problems(self) -> list[tuple[str, str]]:
        found = [
            ("min_pixels", _at_least(self.min_pixels, 1)),
            ("max_pixels", _at_least(self.max_pixels, self.min_pixels or 1)),
            ("limit", _at_least(self.limit, 1, " question (leave it unset to evaluate all)")),
            ("max_new_tokens", _at_least(self.max_new_tokens, 1)),
            ("batch_size", _at_least(self.batch_size, 1)),
        ]
        return [(k, v) for k, v in found if v]


@dataclass
class PassRateConfig:
    """A ``method: pass_rate`` stage of a recipe: each example's pass rate over ``k`` samples of
    the model the recipe has trained so far (the difficulty axis; VLM-CapCurriculum rates its
    data with the base model it trains next). Writes ``rated.jsonl`` (EasyR1 records with
    ``pass_rate``), which a later stage reads as ``${RATED}``; the model is not changed."""

    model: str = ""
    output_dir: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    seed: int = 0
    k: int = 4  # completions sampled per example
    max_new_tokens: int = 256
    temperature: float = 1.0  # sampling temperature (0: greedy, which makes every rate 0 or 1)
    answer_format: AnswerFormatName = "tags"  # how the completions are parsed
    batch_size: int = 8  # examples per generate call
    labels: dict[str, Any] = field(default_factory=dict)

    def problems(self) -> list[tuple[str, str]]:
        found = [
            ("k", _at_least(self.k, 1)),
            ("max_new_tokens", _at_least(self.max_new_tokens, 1)),
            ("temperature", _at_least(self.temperature, 0)),
            ("batch_size", _at_least(self.batch_size, 1)),
        ]
        return [(k, v) for k, v in found if v]


# Where each setting came from ("recipe configs/sft/scale.yaml", "--set lora.r=abc", "--max-steps"),
# so a bad value is reported with its origin.
Sources = dict[str, str]
_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if origin is not None:
        return str(hint).replace("typing.", "")
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


class _Mismatch(Exception):
    pass


class _NotFinite(_Mismatch):
    """inf or nan where a number is wanted: ``.inf``, ``1e999`` and ``.nan`` all read as floats,
    and each trains to NaN or never ends."""


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` as an instance of ``hint``, or :class:`_Mismatch`. Only lossless conversions:
    an int where a float is wanted, and a YAML string such as ``1e-4`` (YAML 1.1 reads it as
    text) that spells a float."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin is typing.Literal:
        if value in typing.get_args(hint):
            return value
        raise _Mismatch
    if origin in (types.UnionType, typing.Union):
        options = typing.get_args(hint)
        if value is None:
            if type(None) in options:
                return None
            raise _Mismatch
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        if not isinstance(value, list):
            raise _Mismatch
        return [_coerce(v, item) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an integer of 400 digits
                raise _NotFinite from None
        elif isinstance(value, str) and _FLOAT.match(value.strip()):
            number = float(value)
        else:
            raise _Mismatch
        if not math.isfinite(number):
            raise _NotFinite
        return number
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    return value


def _origin(sources: Sources, dotted: str, default: str) -> str:
    """Where a key was set: its own entry, else its nearest section's, else ``default``."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in sources:
            return sources[key]
    return default


def _build(cls, values: dict[str, Any], where: str, sources: Sources | None = None, prefix: str = ""):
    sources = sources or {}
    section = prefix.rstrip(".") or cls.__name__
    if not isinstance(values, dict):
        raise ConfigError(
            f"{_origin(sources, prefix.rstrip('.'), where)}: {section} must be a mapping, got {values!r}"
        )
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in sorted(set(values) - names):
        raise ConfigError(
            f"{_origin(sources, prefix + key, where)}: unknown setting {prefix + key!r}; "
            f"{section} has {', '.join(sorted(names))}"
        )
    kwargs = {}
    for key, value in values.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value if value is not None else {}, where, sources, f"{prefix}{key}.")
            continue
        try:
            kwargs[key] = _coerce(value, hint)
        except _NotFinite:
            raise ConfigError(
                f"{_origin(sources, prefix + key, where)}: {prefix + key} must be a finite number, got {value!r}"
            ) from None
        except _Mismatch:
            raise ConfigError(
                f"{_origin(sources, prefix + key, where)}: {prefix + key} must be {_type_name(hint)}, "
                f"got {value!r}"
            ) from None
    config = cls(**kwargs)
    for dotted, problem in config.problems() if hasattr(config, "problems") else []:
        raise ConfigError(f"{_origin(sources, prefix + dotted, where)}: {prefix + dotted} {problem}")
    return config


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any, where: str = "") -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{where or dotted}: {part!r} is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text}: an override must look like key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text}: the value is not valid YAML ({yaml_problem(exc)})") from None
    return key.strip(), value


# What a stage started from a run directory carries over from that run: how the model is held
# and fed (precision, memory, parallelism, adapters, system turn, sequence budget, the per-device
# batch and accumulation its model recipe sized for the hardware), not the run's own optimisation
# settings (learning rate, steps, schedule). Without it a GRPO stage started from a LoRA, bf16,
# ZeRO-2, gradient-checkpointed SFT run of LLaVA-NeXT would fall back to the class defaults:
# max_length 2048, which the model's 1.5k-2.9k-token image prompts plus 1024 completion tokens
# overflow, and one micro-batch per step, which gives vLLM a handful of prompts per weight sync.
INHERITED_FROM_RUN = (
    "bf16",
    "gradient_checkpointing",
    "deepspeed",
    "lora",
    "system_prompt",
    "trust_remote_code",
    "max_length",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
)


def inherited_settings(model: str) -> dict[str, Any]:
    """The INHERITED_FROM_RUN settings of a finished or running training run directory."""
    manifest_path = Path(model) / "manifest.json"
    if not manifest_path.is_file():
        return {}
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}  # resolving the model reports an unreadable manifest
    config = manifest.get("config") if manifest.get("stage") in ("sft", "grpo") else None
    if not isinstance(config, dict):
        return {}
    return {key: config[key] for key in INHERITED_FROM_RUN if key in config}


def model_recipe(model: str | None) -> Path | None:
    """``configs/models/NAME.yaml`` for a short model name, applied before any other recipe."""
    if not model:
        return None
    from scale_repro.models.registry import catalogue

    entry = catalogue().get(model)
    path = CONFIGS_DIR / "models" / f"{entry.trains_like if entry else model}.yaml"
    return path if path.is_file() else None


def _flatten(data: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in data.items():
        keys.append(prefix + key)
        if isinstance(value, dict):
            keys.extend(_flatten(value, f"{prefix}{key}."))
    return keys


def load_config(
    cls,
    recipes: str | Path | list[str | Path] | None = None,
    overrides: list[str] | None = None,
    inherit: dict[str, Any] | None = None,
    **fields: Any,
):
    """Recipes in order (later keys win), then ``--set`` overrides, then explicit fields (not None).

    First of all come the settings a training stage inherits from the run it starts from
    (``inherit``, or read from the model's run directory; see INHERITED_FROM_RUN), then the
    per-model recipe of the model (from ``fields`` or ``--set model=``).
    Every value is checked against its field's declared type and allowed values; an error
    names the file or option the bad value came from.
    """
    if recipes is None:
        recipes = []
    elif isinstance(recipes, (str, Path)):
        recipes = [recipes]
    recipes = [Path(r) for r in recipes]
    parsed = [(text, *parse_override(text)) for text in overrides or []]
    model = fields.get("model") or next((v for _, k, v in parsed if k == "model"), None)
    # Per-model recipes hold training settings; evaluation has its own few fields.
    auto = model_recipe(model if isinstance(model, str) else None) if issubclass(cls, TrainConfig) else None
    if auto is not None and auto not in recipes:
        recipes.insert(0, auto)
    tree: dict[str, Any] = {}
    sources: Sources = {}
    if cls is EvalConfig and isinstance(model, str) and (own := model_recipe(model)) is not None:
        # Of the model's training recipe, evaluation takes the image budget alone.
        budget = {k: v for k, v in (read_yaml(own) or {}).items() if k in ("min_pixels", "max_pixels")}
        _merge(tree, budget)
        sources.update(dict.fromkeys(budget, f"recipe {own}"))
    if issubclass(cls, TrainConfig) and isinstance(model, str):
        inherited = inherit if inherit is not None else inherited_settings(model)
        if inherited:
            _merge(tree, inherited)
            sources.update(dict.fromkeys(_flatten(inherited), f"run {model}"))
    for path in recipes:
        if not path.is_file():
            raise ConfigError(f"recipe {path} not found")
        data = read_yaml(path) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a recipe must be a mapping of config fields")
        _merge(tree, data)
        sources.update(dict.fromkeys(_flatten(data), f"recipe {path}"))
    for text, key, value in parsed:
        _set_dotted(tree, key, value, f"--set {text}")
        sources[key] = f"--set {text}"
    for key, value in fields.items():
        if value is not None:
            _set_dotted(tree, key, value, f"option {key}")
            sources[key] = f"option --{key.split('.')[-1].replace('_', '-')}={value}"
    return _build(cls, tree, cls.__name__, sources)


def _merge(tree: dict[str, Any], data: dict[str, Any]) -> None:
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            _merge(tree[key], value)
        else:
            tree[key] = value


def from_dict(cls, values: dict[str, Any], where: str):
    """A config from a mapping that holds every field (a planned stage's file), checked like a
    recipe; nothing is added from model recipes or runs."""
    return _build(cls, values, where, {key: where for key in values})


def to_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)
