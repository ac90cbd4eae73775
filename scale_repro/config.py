"""Typed stage configs, read from YAML recipes under ``configs/`` with command-line overrides.

A recipe is a YAML mapping whose keys are the fields of a config dataclass; nested
``lora:`` / ``loss:`` blocks map to nested dataclasses. ``--set key.sub=value`` overrides
any field, parsed as YAML (so ``--set lora.r=16`` gives an int). Unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"


class ConfigError(ValueError):
    pass


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


@dataclass
class LossConfig:
    """SCALe loss settings. The paper's numeric weights were lost from our copy; these
    defaults are this project's choice: think 2.0 -> 1.0, answer 1.0 -> 1.0; FW = 1.0/1.0."""

    mode: str = "scale"  # scale | fixed | vanilla
    think_start: float = 2.0
    think_end: float = 1.0
    answer_start: float = 1.0
    answer_end: float = 1.0
    fixed_think: float = 1.0
    fixed_answer: float = 1.0


@dataclass
class DataConfig:
    spec: str = ""  # synth dir, Vision-R1 JSON, preset name, local copy or hub id
    image_root: str | None = None
    strict: bool = False
    max_examples: int | None = None
    image_prefixes: list[str] = field(default_factory=list)
    id_contains: list[str] = field(default_factory=list)


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
    max_steps: int = -1
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    warmup_steps: float = 0.0  # an int: steps; a float in [0, 1): share of the total
    lr_scheduler_type: str = "cosine"
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
    report_to: list[str] = field(default_factory=list)
    trust_remote_code: bool = False
    # Free-form tags the report groups by (model, configuration, data set, seed).
    labels: dict[str, Any] = field(default_factory=dict)
    # A system turn before every prompt; None leaves it to the chat template. Training and
    # evaluation must agree: lmms-eval's Gemma-3 model always sends one (see configs/models/).
    system_prompt: str | None = None


@dataclass
class SFTConfig(TrainConfig):
    loss: LossConfig = field(default_factory=LossConfig)


@dataclass
class RewardConfig:
    format_weight: float = 1.0
    accuracy_weight: float = 1.0


@dataclass
class GRPOConfig(TrainConfig):
    """Sampling settings were lost from our copy of the paper; these defaults are this
    project's: 8 generations per prompt, 1024 completion tokens, temperature 1.0, top-p 1.0."""

    num_generations: int = 8
    max_completion_length: int = 1024
    temperature: float = 1.0
    top_p: float = 1.0
    beta: float = 0.0
    rewards: RewardConfig = field(default_factory=RewardConfig)
    use_vllm: bool | None = None  # None: when vLLM is installed and CUDA is present
    vllm_gpu_memory_utilization: float = 0.3
    vllm_enable_sleep_mode: bool = False
    learning_rate: float = 1e-5


@dataclass
class EvalConfig:
    model: str = "tiny-qwen2.5-vl"
    task: str = "synthetic-scienceqa"
    data: str | None = None
    limit: int | None = None
    output_dir: str = ""
    max_new_tokens: int = 2048
    batch_size: int = 1
    device: str | None = None
    use_vllm: bool = False
    seed: int = 0
    labels: dict[str, Any] = field(default_factory=dict)
    # Passed to lmms-eval's Gemma-3 model, which always sends a system turn (its default text when None).
    system_prompt: str | None = None


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls, values: dict[str, Any], where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    hints = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {}
    for key, value in values.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value or {}, f"{where}.{key}")
        else:
            kwargs[key] = value
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {exc}") from exc
    return key.strip(), value


def model_recipe(model: str | None) -> Path | None:
    """``configs/models/NAME.yaml`` for a short model name, applied before any other recipe."""
    if not model:
        return None
    path = CONFIGS_DIR / "models" / f"{model}.yaml"
    return path if path.is_file() else None


def load_config(cls, recipes: str | Path | list[str | Path] | None = None, overrides: list[str] | None = None,
                **fields: Any):  # fmt: skip
    """Recipes in order (later keys win), then ``--set`` overrides, then explicit fields (not None).

    The per-model recipe of ``fields['model']`` (if any) comes first of all.
    """
    if recipes is None:
        recipes = []
    elif isinstance(recipes, (str, Path)):
        recipes = [recipes]
    recipes = [Path(r) for r in recipes]
    # Per-model recipes hold training settings; evaluation has its own few fields.
    auto = model_recipe(fields.get("model")) if issubclass(cls, TrainConfig) else None
    if auto is not None and auto not in recipes:
        recipes.insert(0, auto)
    tree: dict[str, Any] = {}
    where = cls.__name__
    for path in recipes:
        if not path.is_file():
            raise ConfigError(f"recipe {path} not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a recipe must be a mapping of config fields")
        _merge(tree, data)
        where = str(path)
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    for key, value in fields.items():
        if value is not None:
            _set_dotted(tree, key, value)
    return _build(cls, tree, where)


def _merge(tree: dict[str, Any], data: dict[str, Any]) -> None:
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            _merge(tree[key], value)
        else:
            tree[key] = value


def to_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)
