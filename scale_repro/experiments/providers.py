"""The data an experiment file asks to be written before it is planned.

An experiment's ``data`` section names generators and their settings; each writes a folder
under the experiment's ``OUT/data`` once (reused when made the same way, replaced when made
otherwise) and fills in the variable its recipes use:

- ``synth`` (:class:`~scale_repro.data.synth.SynthConfig`) -> ``${SYNTH}``: the synthetic
  grid-world task, training data and both test sets;
- ``capabilities`` (:class:`~scale_repro.data.capabilities.CapabilityConfig`) -> ``${CAP}``:
  the curriculum's perception, text-reasoning and visual-reasoning data.

The evidence experiment adds its own provider (one synthetic folder per reasoning ratio; see
:mod:`scale_repro.experiments.evidence`).
"""

from __future__ import annotations

from pathlib import Path

from scale_repro.experiments.planner import Experiment
from scale_repro.runs.rundir import write_once


def write_data_sections(spec: Experiment, root: Path, echo=print, write: bool = True) -> dict[str, str]:
    """The data directories ``${CAP}`` and ``${SYNTH}`` stand for, for the file's ``data``
    sections that name them (``capabilities``, ``synth``), written if missing or made with other
    settings (unless ``write`` is false: a dry run names them only)."""
    from scale_repro.data.capabilities import CapabilityConfig, write_capability_data
    from scale_repro.data.synth import SynthConfig, write_synthetic

    known = {
        "capabilities": ("CAP", CapabilityConfig, write_capability_data),
        "synth": ("SYNTH", SynthConfig, write_synthetic),
    }
    unknown = sorted(set(spec.data) - set(known))
    if unknown:
        raise ValueError(f"{spec.name}: unknown data section(s) {unknown}; known: {sorted(known)}")
    variables = {}
    for section, (variable, config_class, writer) in known.items():
        if section not in spec.data:
            continue
        try:
            config = config_class(**spec.data[section])
        except TypeError as exc:
            raise ValueError(f"{spec.name}: data.{section}: {exc}") from exc
        folder = root / section
        if write:
            write_once(folder, config, writer, echo, f"{section} data")
        variables[variable] = str(folder)
    return variables
