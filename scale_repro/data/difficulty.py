"""The curriculum's difficulty records: examples written back as EasyR1 records with what a
model made of them (``pass_rate``, ``description``), in the layout
:func:`scale_repro.data.loaders.load_easyr1` reads and a GRPO stage orders by difficulty
(``data.order=easy_to_hard``). The stage that rates them is :mod:`scale_repro.stages.pass_rate`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scale_repro.data.records import Example
from scale_repro.runs.rundir import atomic_write_text

# What a recipe's pass_rate stage writes into its run directory (a later stage reads ${RATED}).
RATED_FILE = "rated.jsonl"


def easyr1_record(example: Example, **extra: Any) -> dict[str, Any]:
    prefix = "<image>" * len(example.images)
    return {
        "id": example.id,
        "problem": prefix + example.question.replace("<image>", ""),
        "images": [str(p) for p in example.images],
        "answer": example.answer,
        **extra,
    }


def write_records(records: list[dict[str, Any]], out: Path) -> None:
    atomic_write_text(out, "".join(json.dumps(r) + "\n" for r in records))
