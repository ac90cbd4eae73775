"""Reproduction matrices: an experiment file -> a plan of stages -> run directories.

An experiment (``configs/experiments/*.yaml``) names models, data sets (training data and
evaluation task), the paper's configurations (Base, SFT, SFT-FW, SCALe-SFT, GRPO, GRPO-FW,
SCALe-GRPO) and seeds. Each configuration expands into stages (SFT, then GRPO from it, then
evaluation). Stages run in one process through the Python APIs; a stage whose manifest says
it finished with the same config is skipped, a failed or interrupted one runs again.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scale_repro.config import (
    CONFIGS_DIR,
    INHERITED_FROM_RUN,
    EvalConfig,
    GRPOConfig,
    SFTConfig,
    load_config,
    to_dict,
)
from scale_repro.rundir import fingerprint, is_finished

log = logging.getLogger("scale_repro")

# configuration -> (SFT loss mode or None for the base model, whether GRPO follows)
CONFIGURATIONS = {
    "Base": (None, False),
    "SFT": ("vanilla", False),
    "SFT-FW": ("fixed", False),
    "SCALe-SFT": ("scale", False),
    "GRPO": ("vanilla", True),
    "GRPO-FW": ("fixed", True),
    "SCALe-GRPO": ("scale", True),
}


def configuration_of(mode: str, with_grpo: bool) -> str:
    """The configuration a chain of SFT with ``mode`` (then GRPO, if ``with_grpo``) amounts to."""
    return next(name for name, chain in CONFIGURATIONS.items() if chain == (mode, with_grpo))


@dataclass
class Stage:
    kind: str  # sft | grpo | eval
    run_dir: Path
    config: Any
    needs: list[Path] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.kind} {self.run_dir}"

    def finished(self) -> bool:
        data = {k: v for k, v in to_dict(self.config).items() if k != "output_dir"}
        return is_finished(self.run_dir, fingerprint(data))


@dataclass
class Experiment:
    name: str
    models: list[str]
    datasets: list[dict[str, Any]]
    configurations: list[str]
    seeds: list[int]
    sft: dict[str, Any] = field(default_factory=dict)
    grpo: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)


def expand_variables(text: str, variables: dict[str, str] | None) -> str:
    """``${KEY}`` replaced by ``variables[KEY]`` (the data directories an experiment writes)."""
    for key, value in (variables or {}).items():
        text = text.replace("${" + key + "}", value)
    return text


def load_experiment(path: str | Path, variables: dict[str, str] | None = None) -> Experiment:
    text = expand_variables(Path(path).read_text(), variables)
    data = yaml.safe_load(os.path.expandvars(text))
    unknown = [c for c in data["configurations"] if c not in CONFIGURATIONS]
    if unknown:
        raise ValueError(f"{path}: unknown configuration(s) {unknown}; known: {list(CONFIGURATIONS)}")
    return Experiment(**data)


def experiment_path(table: int | None = None, name: str | None = None) -> Path:
    return CONFIGS_DIR / "experiments" / (f"table{table}.yaml" if table else f"{name}.yaml")


def recipe_paths(section: dict[str, Any]) -> list[Path]:
    """The recipe files an experiment section names, relative to the repository root."""
    return [Path(p) if Path(p).is_absolute() else CONFIGS_DIR.parent / p for p in section.get("config", [])]


def plan(experiment: Experiment, out: str | Path) -> list[Stage]:
    """Every stage of the experiment, in an order that respects dependencies, without duplicates."""
    out = Path(out)
    stages: dict[Path, Stage] = {}

    def add(stage: Stage) -> None:
        stages.setdefault(stage.run_dir, stage)

    for model in experiment.models:
        for dataset in experiment.datasets:
            for configuration in experiment.configurations:
                mode, with_grpo = CONFIGURATIONS[configuration]
                for seed in experiment.seeds if mode else [experiment.seeds[0]]:
                    labels = {
                        "model": model,
                        "dataset": dataset["name"],
                        "configuration": configuration,
                        "seed": seed,
                    }
                    if mode is None:
                        evaluated, evaluated_dir = model, out / model / "base"
                    else:
                        train_key = Path(str(dataset["train"])).name
                        sft_dir = out / model / train_key / f"sft-{mode}" / f"seed{seed}"
                        sft_labels = {**labels, "configuration": configuration_of(mode, with_grpo=False)}
                        sft = load_config(
                            SFTConfig, recipe_paths(experiment.sft), experiment.sft.get("set", []),
                            model=model, output_dir=str(sft_dir), seed=seed,
                            **{"loss.mode": mode, "data.spec": str(dataset["train"])},
                        )  # fmt: skip
                        sft.labels = sft_labels
                        add(Stage("sft", sft_dir, sft))
                        evaluated, evaluated_dir = str(sft_dir), sft_dir
                        if with_grpo:
                            grpo_dir = sft_dir / "grpo"
                            # The SFT run does not exist yet: inherit from its config, as a
                            # run started from its directory later would.
                            inherited = {k: v for k, v in to_dict(sft).items() if k in INHERITED_FROM_RUN}
                            grpo = load_config(
                                GRPOConfig, recipe_paths(experiment.grpo), experiment.grpo.get("set", []),
                                inherit=inherited, model=str(sft_dir), output_dir=str(grpo_dir), seed=seed,
                                **{"data.spec": str(dataset["train"])},
                            )  # fmt: skip
                            grpo.labels = labels
                            add(Stage("grpo", grpo_dir, grpo, needs=[sft_dir]))
                            evaluated, evaluated_dir = str(grpo_dir), grpo_dir
                    eval_dir = evaluated_dir / f"eval-{dataset['task']}"
                    evaluation = load_config(
                        EvalConfig, recipe_paths(experiment.eval), experiment.eval.get("set", []),
                        model=evaluated, task=dataset["task"], data=dataset.get("data"), output_dir=str(eval_dir),
                        seed=seed,
                    )  # fmt: skip
                    evaluation.labels = labels
                    needs = [] if mode is None else [evaluated_dir]
                    add(Stage("eval", eval_dir, evaluation, needs=needs))
    order = {"sft": 0, "grpo": 1, "eval": 2}
    return sorted(stages.values(), key=lambda s: order[s.kind])


def describe(stages: list[Stage]) -> str:
    lines = []
    for i, stage in enumerate(stages, 1):
        state = "done" if stage.finished() else "to run"
        lines.append(f"[{i:>3}/{len(stages)}] {stage.kind:<4} {state:<6} {stage.run_dir}")
    return "\n".join(lines)


def execute(stages: list[Stage], echo=print) -> dict[str, list[str]]:
    """Run every stage not yet finished; a failed stage's dependants are skipped, the rest go on."""
    from scale_repro.evaluate import run_eval
    from scale_repro.grpo import run_grpo
    from scale_repro.sft import run_sft

    runners = {"sft": run_sft, "grpo": run_grpo, "eval": run_eval}
    failed: set[Path] = set()
    summary: dict[str, list[str]] = {"ran": [], "skipped": [], "failed": [], "blocked": []}
    started = time.time()
    for i, stage in enumerate(stages, 1):
        prefix = f"[{i:>3}/{len(stages)} {time.time() - started:6.0f}s]"
        if any(dep in failed for dep in stage.needs):
            failed.add(stage.run_dir)
            summary["blocked"].append(str(stage.run_dir))
            echo(f"{prefix} {stage.kind:<4} blocked (an earlier stage failed): {stage.run_dir}")
            continue
        if stage.finished():
            summary["skipped"].append(str(stage.run_dir))
            echo(f"{prefix} {stage.kind:<4} finished earlier: {stage.run_dir}")
            continue
        echo(f"{prefix} {stage.kind:<4} running: {stage.run_dir}")
        try:
            runners[stage.kind](stage.config)
            summary["ran"].append(str(stage.run_dir))
        except Exception as exc:  # noqa: BLE001 - one failed cell must not stop the matrix
            log.exception("stage failed: %s", stage.name)
            failed.add(stage.run_dir)
            summary["failed"].append(str(stage.run_dir))
            echo(f"{prefix} {stage.kind:<4} FAILED ({type(exc).__name__}: {exc}): {stage.run_dir}")
    return summary


def chains(stages: list[Stage]) -> list[list[Stage]]:
    """Independent chains: an SFT run with the GRPO run and evaluations that depend on it.

    Chains share nothing, so they can run in separate processes; the longest go first.
    """
    root_of: dict[Path, Path] = {}
    grouped: dict[Path, list[Stage]] = defaultdict(list)
    for stage in stages:  # plan() orders SFT before GRPO before evaluation
        root = root_of.get(stage.needs[0], stage.needs[0]) if stage.needs else stage.run_dir
        root_of[stage.run_dir] = root
        grouped[root].append(stage)

    def cost(chain: list[Stage]) -> tuple[int, int]:
        steps = sum(getattr(s.config, "max_steps", 0) or 0 for s in chain)
        return (-len(chain), -steps)

    return sorted(grouped.values(), key=cost)


def _run_chain(chain: list[Stage]) -> dict[str, list[str]]:
    """Worker: one chain, one thread (the workers share the machine's cores).

    The libraries' progress output goes to ``worker.log`` in the chain's first run
    directory, so parallel chains do not interleave on the terminal.
    """
    import contextlib

    import torch

    torch.set_num_threads(1)
    for name in ("transformers", "lmms-eval", "datasets", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    log_path = chain[0].run_dir / "worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(log_path, "a") as stream,
        contextlib.redirect_stdout(stream),
        contextlib.redirect_stderr(stream),
    ):
        return execute(chain, echo=lambda message: print(message, flush=True))


def run_stages(stages: list[Stage], jobs: int = 1, echo=print) -> dict[str, list[str]]:
    """Run every stage; with ``jobs`` > 1, independent chains run in that many processes."""
    if jobs <= 1:
        return execute(stages, echo=echo)
    import multiprocessing

    work = chains(stages)
    summary: dict[str, list[str]] = {"ran": [], "skipped": [], "failed": [], "blocked": []}
    started = time.time()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {pool.submit(_run_chain, chain): chain for chain in work}
        for done, future in enumerate(as_completed(futures), 1):
            chain = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 - a crashed worker fails its chain only
                result = {"failed": [str(s.run_dir) for s in chain]}
                echo(f"chain {chain[0].run_dir} crashed: {type(exc).__name__}: {exc}")
            for key, items in result.items():
                summary[key].extend(items)
            state = "FAILED" if result.get("failed") or result.get("blocked") else "done"
            echo(f"[{done:>3}/{len(work)} chains {time.time() - started:6.0f}s] {state}: {chain[0].run_dir} "
                 f"({len(chain)} stages)")  # fmt: skip
    return summary
