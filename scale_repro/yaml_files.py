"""Where the project's files are, and YAML read with one-line errors.

The lowest layer of the package: the data loaders, the typed configs and the experiment
planner all read recipes and presets through :func:`read_yaml`, so a broken file is one line
naming the file and the line, wherever it is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS_DIR = REPO_ROOT / "configs"
# The paper's Tables 1-3 (shown beside ours in every report).
PAPER_TABLES = REPO_ROOT / "results" / "paper" / "tables.json"


class ConfigError(ValueError):
    """A setting, recipe or experiment file the user must fix (reported in one line)."""


def yaml_problem(exc: Exception) -> str:
    """A YAML or decoding error in one line: what is wrong and on which line."""
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte {exc.start})"
    mark = getattr(exc, "problem_mark", None)
    problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def parse_yaml(text: str, where: str | Path) -> Any:
    """YAML text's content; text that is not YAML is a one-line ConfigError naming ``where``
    (the file) and the line."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {yaml_problem(exc)}") from None


def read_yaml(path: str | Path) -> Any:
    """A YAML file's content, or a one-line ConfigError naming the file and the line."""
    try:
        text = Path(path).read_text()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
    return parse_yaml(text, path)
